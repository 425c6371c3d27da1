//! Live view of a running scenario: harness events written as they happen, node event files
//! followed for the drain check, and the progress line.
//!
//! Finished messages are remembered only as 8-byte hashes of (id, recipient) — enough to count
//! each once when receipts or terminal events repeat, as the inbox's duplicate check does —
//! never as strings, so a long run's live state stays within SPEC §8's per-message budget.
//! What abort conditions judge is kept by intended second ([`Recent`]), never per message.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::events::{self, Event, Kind};
use crate::measure;
use crate::measure::recent::{Failure, Recent};

/// Live figures for the progress line, the drain check and the abort conditions.
#[derive(Default)]
pub struct LiveStats {
    inner: Mutex<LiveInner>,
}

#[derive(Default)]
struct LiveInner {
    /// [`key`]s of delivered (id, recipient) pairs.
    delivered: HashSet<u64>,
    dist: measure::Dist,
    /// By intended second, for abort conditions.
    recent: Recent,
    /// TLS per hop: (messages, of them over TLS) submitted and received.
    tls: [(u64, u64); 2],
}

/// An (id, recipient) pair as 8 bytes (SipHash, as the inbox's duplicate check). Two pairs
/// share a key with probability ~n²/2⁶⁵ — about 3 in a million for ten million messages — and
/// a shared key only makes the progress line and the drain check count one message short; the
/// report counts from the event files, not from these.
fn key(id: &str, rcpt: Option<&str>) -> u64 {
    crate::inbox::engine::hash(&(id, rcpt.unwrap_or_default()))
}

impl LiveStats {
    /// Live stats keeping `recent` (sized for the run's abort conditions) up to date.
    pub fn new(recent: Recent) -> LiveStats {
        LiveStats {
            inner: Mutex::new(LiveInner {
                recent,
                ..LiveInner::default()
            }),
        }
    }

    /// Reads the per-second view (for abort conditions) under the lock.
    pub fn recent<R>(&self, f: impl FnOnce(&Recent) -> R) -> R {
        f(&self.lock().recent)
    }

    /// An MTA's first terminal event for an (id, recipient) pair ([`Tail`] finds them once):
    /// failures settle mail for the abort conditions; a delivery is counted from its receipt.
    pub fn mta_end(&self, e: &Event) {
        let how = match e.event {
            Kind::Bounced => Failure::Bounced,
            Kind::Expired => Failure::Expired,
            Kind::Dropped => Failure::Dropped,
            _ => return,
        };
        self.lock().recent.failed(e.t, how);
    }

    /// Failures an external MTA reported by DSN (counts only: a DSN carries no intended time),
    /// settled as bounces at `now_ns`.
    pub fn dsn_failures(&self, n: u64, now_ns: u64) {
        let mut l = self.lock();
        for _ in 0..n {
            l.recent.failed(now_ns, Failure::Bounced);
        }
    }

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

    /// `· tls in 100% out 62%` (submissions, deliveries over TLS so far), or nothing while no
    /// message has gone over TLS.
    pub fn tls_text(&self) -> String {
        let l = self.lock();
        let [(sub, sub_tls), (rec, rec_tls)] = l.tls;
        if sub_tls + rec_tls == 0 {
            return String::new();
        }
        let pct = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 * 100.0 / of as f64 };
        format!(" · tls in {:.0}% out {:.0}%", pct(sub_tls, sub), pct(rec_tls, rec))
    }

    /// Counts a `received` event once per (id, recipient), recording its delivery time; and
    /// submission outcomes, for the abort conditions.
    pub fn record(&self, e: &Event) {
        let mut l = self.lock();
        let hop = match e.event {
            Kind::Submitted => Some(0),
            Kind::Received => Some(1),
            _ => None,
        };
        if let Some(h) = hop {
            l.tls[h].0 += 1;
            l.tls[h].1 += u64::from(e.tls.is_some());
        }
        match (e.event, e.intended) {
            (Kind::Submitted, Some(i)) => l.recent.accepted(i),
            (Kind::Rejected, _) => l.recent.rejected(),
            // A repeated receipt (a duplicate) counts once.
            (Kind::Received, intended) if l.delivered.insert(key(&e.id, e.rcpt.as_deref())) => {
                l.dist.record(intended.map(|i| e.t.saturating_sub(i) / 1000));
                if let Some(i) = intended {
                    l.recent.delivered(i, e.t);
                }
            }
            _ => {}
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
        live.record(&e);
        line.clear();
        events::write_line(&mut line, &e)?;
        w.write_all(&line).await.map_err(|e| crate::files::at(&path, e))?;
    }
    w.flush().await.map_err(|e| crate::files::at(&path, e))?;
    Ok(())
}

/// Follows one file as it grows, handing out complete lines only: a line still being written
/// waits for the next read. (The drain check follows node event files with it; an agent of a
/// distributed run, to stream them.)
#[derive(Debug)]
pub struct Follow {
    pub path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Follow {
    pub fn new(path: PathBuf) -> Follow {
        Follow {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The complete lines written since the last read (each ending in `\n`), or nothing.
    pub fn read(&mut self) -> Vec<u8> {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return Vec::new();
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(last_nl) => self.partial.drain(..=last_nl).collect(),
            None => Vec::new(),
        }
    }
}

/// Follows node event files as they grow, counting the MTAs' last words for the drain check.
pub struct Tail {
    files: Vec<Follow>,
    /// [`key`]s of (id, recipient) pairs an MTA has finished with — delivered, bounced, expired
    /// or dropped; a set, because a message recovered from a spool after a crash can end twice.
    /// A receipt alone does not finish a message: until the MTA has read the inbox's 250 and
    /// logged it, the message is still in its spool.
    pub ended: HashSet<u64>,
    /// Pairs whose first end was a failure: with the receipts, the world's view of "done".
    pub failed: u64,
    pub bounced: u64,
}

impl Tail {
    pub fn new(paths: Vec<PathBuf>) -> Tail {
        Tail {
            files: paths.into_iter().map(Follow::new).collect(),
            ended: HashSet::new(),
            failed: 0,
            bounced: 0,
        }
    }

    /// Reads what the files gained; `on_end` sees each pair's first terminal event.
    pub fn poll(&mut self, mut on_end: impl FnMut(&Event)) {
        let mut complete = Vec::new();
        for f in &mut self.files {
            complete.extend(f.read());
        }
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(e) = serde_json::from_slice::<Event>(line) {
                if self.note(&e) {
                    on_end(&e);
                }
            }
        }
    }

    /// Counts one MTA event (anything else is ignored); whether it was the pair's first end.
    pub fn note(&mut self, e: &Event) -> bool {
        if !e.event.is_mta_end() || !self.ended.insert(key(&e.id, e.rcpt.as_deref())) {
            return false;
        }
        self.failed += u64::from(e.event != Kind::Delivered);
        self.bounced += u64::from(e.event == Kind::Bounced);
        true
    }
}

/// Human output. On a terminal: a live progress bar (indicatif) over the run's timeline, with
/// the log lines printed above it. With `--quiet` or without a terminal (CI): plain lines, a
/// progress line every few seconds. Every line also goes to `run.log` through `tracing`.
pub struct Log {
    bar: Option<indicatif::ProgressBar>,
    /// Lines go to `run.log` only.
    silent: bool,
}

impl Log {
    /// `total` is the whole run (traffic window plus the longest drain) for the bar's length.
    pub fn new(quiet: bool, silent: bool, total: std::time::Duration) -> Log {
        let bar = (!quiet && !silent && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::with_draw_target(
                Some(total.as_millis() as u64),
                indicatif::ProgressDrawTarget::stderr_with_hz(4),
            );
            let style = indicatif::ProgressStyle::with_template("{elapsed_precise} {bar:24} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("█▌ ");
            b.set_style(style);
            b
        });
        Log { bar, silent }
    }

    /// Plain periodic progress lines instead of a live bar.
    pub fn plain(&self) -> bool {
        self.bar.is_none()
    }

    pub fn line(&self, s: &str) {
        tracing::info!(target: "run", "{s}");
        match &self.bar {
            Some(b) => b.println(s),
            None if self.silent => {}
            None => eprintln!("{s}"),
        }
    }

    /// The live status: `elapsed` positions the bar; `s` is its message (or the plain line).
    pub fn progress(&self, elapsed: std::time::Duration, s: &str) {
        tracing::info!(target: "run", "{s}");
        match &self.bar {
            Some(b) => {
                b.set_position(elapsed.as_millis() as u64);
                b.set_message(s.to_string());
            }
            None if self.silent => {}
            None => eprintln!("{s}"),
        }
    }

    pub fn finish_progress(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(id: &str, rcpt: &str, t: u64) -> Event {
        let mut e = Event::new(t, id.to_string(), Kind::Received);
        e.rcpt = Some(rcpt.to_string());
        e.intended = Some(t - 2_000_000);
        e
    }

    #[test]
    fn the_tls_share_per_hop_shows_once_there_is_any() {
        let live = LiveStats::default();
        let mut sub = Event::new(1, "run.1", Kind::Submitted);
        live.record(&sub);
        assert_eq!(live.tls_text(), "", "nothing over TLS yet: nothing shown");
        sub.tls = Some(0);
        live.record(&sub);
        let mut rec = received("run.1", "a@x.test", 10_000_000);
        rec.tls = Some(1_500);
        live.record(&rec);
        assert_eq!(live.tls_text(), " · tls in 50% out 100%");
    }

    #[test]
    fn deliveries_count_once_per_recipient() {
        let live = LiveStats::default();
        live.record(&received("run.1", "a@x.test", 10_000_000));
        live.record(&received("run.1", "a@x.test", 20_000_000));
        live.record(&received("run.1", "b@x.test", 10_000_000));
        live.record(&received("run.2", "a@x.test", 10_000_000));
        live.record(&Event::new(1, "run.3", Kind::Submitted));
        assert_eq!(live.delivered_keys(), 3, "a repeated receipt counts once");
        assert_eq!(live.lock().dist.len(), 3);
        assert_eq!(live.p50_text(), "2ms");
    }

    /// SPEC §8's budget for what is kept per finished message, measured by the counting
    /// allocator the library's tests run under.
    #[test]
    fn delivered_set_stays_within_the_per_message_budget() {
        let live = LiveStats::default();
        let n = 100_000u64;
        let events: Vec<Event> = (0..n)
            .map(|i| received(&format!("smoke-20250101T000000.{i}"), "user1@gmail.test", 5_000_000))
            .collect();
        let before = crate::alloc_count::net();
        for e in &events {
            live.record(e);
        }
        let per = (crate::alloc_count::net() - before) as f64 / n as f64;
        assert_eq!(live.lock().delivered.len() as u64, n);
        assert!(per > 0.0, "the counting allocator is installed");
        eprintln!("live: {per:.1} bytes per delivered message");
        assert!(per <= 64.0, "{per:.1} bytes per delivered message");
    }

    #[test]
    fn tail_counts_each_terminal_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut tail = Tail::new(vec![path.clone()]);
        let line = |id: &str, kind: Kind| {
            let mut e = Event::new(1, id, kind);
            e.rcpt = Some("a@x.test".into());
            let mut v = Vec::new();
            events::write_line(&mut v, &e).unwrap();
            v
        };
        let mut text = [
            line("m.1", Kind::Bounced),
            line("m.2", Kind::Expired),
            line("m.1", Kind::Bounced),
            line("m.4", Kind::Delivered),
            line("m.4", Kind::Deferred),
        ]
        .concat();
        // A line still being written is left for the next poll.
        let partial = line("m.3", Kind::Dropped);
        text.extend_from_slice(&partial[..10]);
        std::fs::write(&path, &text).unwrap();
        tail.poll(|_| {});
        assert_eq!(
            (tail.ended.len(), tail.failed, tail.bounced),
            (3, 2, 1),
            "the repeated bounce counts once; a delivery ends without failing"
        );
        text.extend_from_slice(&partial[10..]);
        std::fs::write(&path, &text).unwrap();
        tail.poll(|_| {});
        assert_eq!((tail.ended.len(), tail.failed), (4, 3));
    }
}
