//! A node's events file: buffered appends, flushed every [`FLUSH_EVERY`] and at shutdown.
//!
//! Events are observations, not the source of truth — the spool is. A SIGKILL may lose the last
//! few hundred milliseconds of events; the harness then finds the messages in the spool (queued)
//! or in the inbox receipts, so accounting stays complete.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use crate::events::{self, Event};

pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

pub struct EventLog {
    node: String,
    region: String,
    out: Mutex<BufWriter<File>>,
}

impl EventLog {
    pub fn open(path: &Path, node: &str, region: &str) -> std::io::Result<EventLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog {
            node: node.to_string(),
            region: region.to_string(),
            out: Mutex::new(BufWriter::with_capacity(256 * 1024, f)),
        })
    }

    /// Stamps node and region and appends.
    pub fn emit(&self, mut e: Event) {
        e.node = Some(self.node.clone());
        e.region = Some(self.region.clone());
        let mut w = crate::sync::lock(&self.out);
        if let Err(err) = events::write_line(&mut *w, &e) {
            tracing::warn!("events file write failed: {err}");
        }
    }

    pub fn flush(&self) {
        let mut w = crate::sync::lock(&self.out);
        if let Err(err) = w.flush() {
            tracing::warn!("events file flush failed: {err}");
        }
    }
}
