//! `run.log` in the report directory: the run's own log lines through `tracing`, so what a
//! person saw scroll by (and the warnings they did not) is kept with the report.
//!
//! The subscriber is installed once at start-up, before the report directory exists; the
//! file is attached later with [`open`]. Until then — and in every other subcommand — the
//! writer is a sink.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::fmt::MakeWriter;

static FILE: Mutex<Option<File>> = Mutex::new(None);

/// Starts writing the run log to `path` (truncating it).
pub fn open(path: &Path) -> io::Result<()> {
    let f = File::create(path)?;
    *crate::sync::lock(&FILE) = Some(f);
    Ok(())
}

/// Stops writing (the report directory is complete).
pub fn close() {
    if let Some(mut f) = crate::sync::lock(&FILE).take() {
        let _ = f.flush();
    }
}

/// The `MakeWriter` for the file layer of the subscriber.
#[derive(Clone, Copy, Default)]
pub struct RunLog;

/// One log record's writer: appends to the file if one is open.
pub struct RunLogWriter;

impl Write for RunLogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match crate::sync::lock(&FILE).as_mut() {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match crate::sync::lock(&FILE).as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for RunLog {
    type Writer = RunLogWriter;
    fn make_writer(&'a self) -> RunLogWriter {
        RunLogWriter
    }
}
