//! Live view of a running scenario: harness events written as they happen, node event files
//! followed for the drain check, and the progress line.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::events::{self, Event, Kind};
use crate::inbox::Receipt;
use crate::measure;

/// Live figures for the progress line and the drain check.
#[derive(Default)]
pub struct LiveStats {
    inner: Mutex<LiveInner>,
}

#[derive(Default)]
struct LiveInner {
    delivered: HashSet<(String, String)>,
    dist: measure::Dist,
}

impl LiveStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, LiveInner> {
        crate::sync::lock(&self.inner)
    }
    pub fn delivered_keys(&self) -> u64 {
        self.lock().delivered.len() as u64
    }
    pub fn p50_text(&self) -> String {
        self.lock()
            .dist
            .quantile_ms(0.5)
            .map_or("-".into(), |v| format!("{v:.0}ms"))
    }
    pub fn slo_text(&self, slo_ms: f64) -> String {
        self.lock()
            .dist
            .share_within(slo_ms)
            .map_or("-".into(), |v| format!("{:.2}%", v * 100.0))
    }
}

/// Turns inbox receipts into `received` events (one per recipient).
pub async fn receipts_to_events(mut rx: mpsc::UnboundedReceiver<Receipt>, tx: mpsc::UnboundedSender<Event>) {
    while let Some(r) = rx.recv().await {
        let Some(id) = r.key().map(str::to_string) else {
            continue;
        };
        for rcpt in &r.rcpt {
            let mut e = Event::new(r.t_ns, id.clone(), Kind::Received);
            e.provider = Some(r.provider.clone());
            e.rcpt = Some(rcpt.clone());
            e.intended = r.intended_ns;
            e.submitted = r.submitted_ns;
            e.source_ip = Some(r.source_ip.clone());
            if tx.send(e).is_err() {
                return;
            }
        }
    }
}

/// Writes harness events to a file and keeps live stats.
pub async fn write_events(
    mut rx: mpsc::UnboundedReceiver<Event>,
    path: PathBuf,
    live: Arc<LiveStats>,
) -> anyhow::Result<()> {
    let f = tokio::fs::File::create(&path)
        .await
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = tokio::io::BufWriter::with_capacity(256 * 1024, f);
    let mut line = Vec::with_capacity(512);
    while let Some(e) = rx.recv().await {
        if e.event == Kind::Received {
            let mut l = live.lock();
            let key = (e.id.clone(), e.rcpt.clone().unwrap_or_default());
            if l.delivered.insert(key) {
                let us = e.intended.map(|i| e.t.saturating_sub(i) / 1000);
                l.dist.record(us);
            }
        }
        line.clear();
        events::write_line(&mut line, &e)?;
        w.write_all(&line).await?;
    }
    w.flush().await?;
    Ok(())
}

/// Follows node event files as they grow, counting terminal MTA events for the drain check.
pub struct Tail {
    files: Vec<(PathBuf, u64, Vec<u8>)>,
    pub terminal: HashSet<(String, String)>,
    pub bounced: u64,
}

impl Tail {
    pub fn new(paths: Vec<PathBuf>) -> Tail {
        Tail {
            files: paths.into_iter().map(|p| (p, 0, Vec::new())).collect(),
            terminal: HashSet::new(),
            bounced: 0,
        }
    }

    pub fn poll(&mut self) {
        use std::io::{Read, Seek, SeekFrom};
        for (path, offset, partial) in &mut self.files {
            let Ok(mut f) = std::fs::File::open(&*path) else {
                continue;
            };
            if f.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut buf = Vec::new();
            let Ok(n) = f.read_to_end(&mut buf) else { continue };
            *offset += n as u64;
            partial.extend_from_slice(&buf);
            let Some(last_nl) = partial.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            let complete: Vec<u8> = partial.drain(..=last_nl).collect();
            for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let Ok(e) = serde_json::from_slice::<Event>(line) else {
                    continue;
                };
                if matches!(e.event, Kind::Bounced | Kind::Expired | Kind::Dropped) {
                    if e.event == Kind::Bounced {
                        self.bounced += 1;
                    }
                    self.terminal.insert((e.id, e.rcpt.unwrap_or_default()));
                }
            }
        }
    }
}

/// Human output: progress lines on stderr (rewritten in place on a TTY).
pub struct Log {
    pub quiet: bool,
}

impl Log {
    fn tty(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }
    pub fn line(&self, s: &str) {
        eprintln!("{s}");
    }
    pub fn progress(&self, s: &str) {
        if self.tty() {
            eprint!("\r\x1b[2K{s}");
        } else {
            eprintln!("{s}");
        }
    }
    pub fn finish_progress(&self) {
        if self.tty() {
            eprintln!();
        }
    }
}
