//! Message events: one JSON line per thing that happened to a message (SPEC §6), written by
//! the generator, every MTA node and the inboxes, merged into the report's `events.jsonl`.
//!
//! Events are the raw data every count and percentile is computed from, so a report can be
//! re-rendered from them and the accounting identity checked by anyone with `jq`.

use std::io::{self, BufRead, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Generator: the MTA answered 250 to the submission (carries intended/submitted times).
    Submitted,
    /// Generator: the MTA refused the submission (or the connection failed); terminal.
    Rejected,
    /// Generator: the schedule intended it but the traffic window plus drain ended first.
    Unsubmitted,
    /// MTA: spooled durably and answered 250.
    Accepted,
    /// MTA, shared queue (`spool: nats`): the node took the message from the queue and holds
    /// it under a lease (`attempt`: the times the queue has handed it out). After a node dies,
    /// a survivor's `leased` is the takeover.
    Leased,
    /// MTA, shared queue: as `leased`, for a message whose earlier holder's lease ran out
    /// without an end (that node died, or stopped and handed it back): the takeover.
    TakenOver,
    /// MTA: a delivery attempt got a transient failure; will retry.
    Deferred,
    /// MTA: the inbox answered 250.
    Delivered,
    /// MTA: permanent failure; terminal.
    Bounced,
    /// MTA: retries gave up; terminal.
    Expired,
    /// MTA: dropped after acceptance by policy (bounce/unsubscribe list, over limit, unparseable).
    Dropped,
    /// Inbox: a receipt (the message arrived).
    Received,
    /// Harness: a chaos action began (`fault`: its typed fields; `text`: the chart label, e.g.
    /// `kill region/us-east`; `node`, `region` or `provider` name its target). Not a message
    /// event: `id` is `fault.<n>`.
    Fault,
    /// Harness: a timed chaos action (`for:`) ended; same `id` as its `fault`.
    FaultEnd,
    /// Generator: its balancer stopped sending to a node (failed health check or submission).
    Evicted,
    /// Generator: its balancer sends to a node again (health checks pass).
    Admitted,
}

impl Kind {
    /// Events about the run itself (faults, balancer changes), not about one message.
    pub fn is_control(self) -> bool {
        matches!(self, Kind::Fault | Kind::FaultEnd | Kind::Evicted | Kind::Admitted)
    }

    /// A node's hold on a shared-queue message began (`leased`, `taken_over`).
    pub fn is_lease(self) -> bool {
        matches!(self, Kind::Leased | Kind::TakenOver)
    }

    /// An MTA's last word on a recipient at one node.
    pub fn is_mta_end(self) -> bool {
        matches!(self, Kind::Delivered | Kind::Bounced | Kind::Expired | Kind::Dropped)
    }
}

/// One event line. Optional fields are omitted when empty to keep the file small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Wall-clock time, nanoseconds since the Unix epoch (every process shares this clock).
    pub t: u64,
    /// `X-Mailsurge-Id` (`<run>.<seq>`), or the Message-ID for foreign mail.
    pub id: String,
    pub event: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcpt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Delivery attempt number (MTA events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The open-loop schedule's intended submit time, ns since epoch (submitted/received).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intended: Option<u64>,
    /// When submission actually started, ns since epoch (submitted/received).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted: Option<u64>,
    /// When the submission's final reply arrived, ns since epoch (submitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked: Option<u64>,
    /// Egress or client source address (delivered/received).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// The hop went over TLS (`submitted`: generator → MTA; `received`: MTA → inbox): the
    /// session's handshake time in µs on its first message, 0 on the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<u64>,
    /// `fault` / `fault_end`: the chaos action as typed fields (boxed: one pointer on every
    /// other event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Box<Fault>>,
}

/// What a chaos action targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Region,
    Node,
    Provider,
    /// The shared queue's nats-server (`spool: nats`).
    Nats,
    /// An agent of a distributed run that stopped answering: not a chaos action but a fault
    /// of the harness itself, marked so the report shows when its share went dark.
    Agent,
    /// A target an old run's text named in a form this version does not know.
    #[serde(other)]
    Other,
}

impl TargetKind {
    /// The kind a `kind/name` target names (`region`, `node`, `provider`; anything else is
    /// `Other`).
    pub fn parse(kind: &str) -> TargetKind {
        match kind {
            "region" => TargetKind::Region,
            "node" => TargetKind::Node,
            "provider" => TargetKind::Provider,
            "nats" => TargetKind::Nats,
            "agent" => TargetKind::Agent,
            _ => TargetKind::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Region => "region",
            TargetKind::Node => "node",
            TargetKind::Provider => "provider",
            TargetKind::Nats => "nats",
            TargetKind::Agent => "agent",
            TargetKind::Other => "",
        }
    }
}

/// A chaos action as the `fault` and `fault_end` events carry it: typed fields, so measurement
/// reads what was done without re-parsing the human label in `text`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// `kill`, `restore`, `block` or `latency`.
    pub action: String,
    pub target_kind: TargetKind,
    /// The target's name (`us-east`, `us-east-1`, `gmail`).
    pub target: String,
    /// Provider kills: `refuse`, `blackhole` or `reset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `block`: the egress pool the provider blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Provider kills: the one MX host hit (1-based); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mx: Option<u32>,
    /// `latency`: the added delay as written (`500ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<String>,
}

impl Fault {
    /// `region/<name>`, `node/<name>` or `provider/<name>` (an unknown target as written).
    pub fn target_path(&self) -> String {
        match self.target_kind {
            TargetKind::Other => self.target.clone(),
            TargetKind::Nats => "nats".into(),
            k => format!("{}/{}", k.as_str(), self.target),
        }
    }

    /// A region or node: the MTA's own machines.
    pub fn is_mta(&self) -> bool {
        matches!(self.target_kind, TargetKind::Region | TargetKind::Node)
    }

    /// Reads the typed fields back out of the sentence that runs written before typed fields
    /// carried (`kill provider/yahoo mx2 refuse`, `block provider/comcast pool shared`,
    /// `latency provider/gmail +500ms`, older `… mode refuse` / `… add 500ms`). Without a target
    /// in the text, the event's `node` / `provider` / `region` name it. Only [`read_file`] calls
    /// it, so old committed runs re-render as they did.
    pub fn from_legacy_text(e: &Event) -> Fault {
        let words: Vec<&str> = e.text.as_deref().unwrap_or("").split_whitespace().collect();
        let action = words
            .first()
            .map_or_else(|| "fault".to_string(), |w| w.to_ascii_lowercase());
        let (target_kind, target) = match words.get(1).filter(|w| w.contains('/')) {
            Some(w) => match w.split_once('/').map(|(k, n)| (TargetKind::parse(k), n)) {
                Some((TargetKind::Other, _)) | None => (TargetKind::Other, w.to_string()),
                Some((kind, n)) => (kind, n.to_string()),
            },
            None => match (&e.node, &e.provider, &e.region) {
                (Some(n), _, _) => (TargetKind::Node, n.clone()),
                (None, Some(p), _) => (TargetKind::Provider, p.clone()),
                (None, None, Some(r)) => (TargetKind::Region, r.clone()),
                _ => (TargetKind::Other, String::new()),
            },
        };
        let mut f = Fault {
            action,
            target_kind,
            target,
            mode: None,
            pool: None,
            mx: None,
            add: None,
        };
        let mut rest = words.iter().skip(2).copied();
        while let Some(w) = rest.next() {
            match w {
                "mode" => f.mode = rest.next().map(str::to_string),
                "pool" => f.pool = rest.next().map(str::to_string),
                "add" => f.add = rest.next().map(str::to_string),
                "mx" => f.mx = rest.next().and_then(|n| n.parse().ok()),
                "for" => {
                    rest.next();
                }
                "refuse" | "blackhole" | "reset" => f.mode = Some(w.to_string()),
                _ => {
                    if let Some(d) = w.strip_prefix('+') {
                        f.add = Some(d.to_string());
                    } else if let Some(n) = w.strip_prefix("mx").and_then(|n| n.parse().ok()) {
                        f.mx = Some(n);
                    }
                }
            }
        }
        f
    }
}

impl Event {
    /// An event with only the required fields set.
    pub fn new(t: u64, id: impl Into<String>, event: Kind) -> Event {
        Event {
            t,
            id: id.into(),
            event,
            node: None,
            region: None,
            provider: None,
            rcpt: None,
            code: None,
            text: None,
            attempt: None,
            intended: None,
            submitted: None,
            acked: None,
            source_ip: None,
            tls: None,
            fault: None,
        }
    }
}

/// Now, as nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    to_ns(SystemTime::now())
}

/// A `SystemTime` as nanoseconds since the Unix epoch (0 before it).
pub fn to_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Nanoseconds since the epoch back to a `SystemTime`.
pub fn from_ns(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// RFC 3339 with microseconds, for human-facing timestamps.
pub fn rfc3339(ns: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from(from_ns(ns)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Appends events as JSON lines.
pub fn write_line(w: &mut impl Write, e: &Event) -> io::Result<()> {
    serde_json::to_writer(&mut *w, e).map_err(io::Error::other)?;
    w.write_all(b"\n")
}

/// The run directory's merged events: zstd-compressed JSON lines (`zstdcat`, DuckDB's
/// `read_json`, pandas' `read_json(..., lines=True, compression="zstd")` read it).
pub const RUN_EVENTS_FILE: &str = "events.jsonl.zst";
/// The same, uncompressed, as runs before the compressed form wrote it (still read).
pub const LEGACY_EVENTS_FILE: &str = "events.jsonl";

/// zstd level of the merged file: 19 keeps a one-recipient message under 60 bytes on disk
/// (black-friday: 57 B; level 3 would be 84 B). It costs about 0.16 s per 1,000 messages on
/// two threads, once, after the run.
pub const ZSTD_LEVEL: i32 = 19;

impl Event {
    /// Leaves out what a reader rebuilds exactly ([`Event::expand`]) or never needs: the
    /// provider when it is the recipient domain's, a `submitted` event's `submitted` (its `t`),
    /// and a receipt's copies of the identity header's times (measurement takes those from the
    /// generator's own `submitted` event; the live progress line has read them already).
    pub fn compact<'m>(&mut self, provider_of: &dyn Fn(&str) -> Option<&'m str>) {
        if self.provider.is_some() && self.provider.as_deref() == self.rcpt.as_deref().and_then(provider_of) {
            self.provider = None;
        }
        match self.event {
            Kind::Submitted if self.submitted == Some(self.t) => self.submitted = None,
            Kind::Received => (self.intended, self.submitted) = (None, None),
            _ => {}
        }
    }

    /// Rebuilds what [`Event::compact`] left out; a no-op on a full event.
    pub fn expand<'m>(&mut self, provider_of: &dyn Fn(&str) -> Option<&'m str>) {
        if self.provider.is_none() {
            self.provider = self.rcpt.as_deref().and_then(provider_of).map(str::to_string);
        }
        if self.event == Kind::Submitted && self.submitted.is_none() {
            self.submitted = Some(self.t);
        }
    }
}

/// A zstd-compressed JSON-lines event file being written (the run directory's merged
/// events). Every error names the file.
pub struct CompressedWriter {
    path: std::path::PathBuf,
    z: zstd::stream::write::Encoder<'static, io::BufWriter<std::fs::File>>,
    line: Vec<u8>,
}

impl CompressedWriter {
    /// Creates `path`, compressing at `level` (the merged file: [`ZSTD_LEVEL`], on up to four
    /// threads; scratch files: a fast level on one).
    pub fn create(path: &Path, level: i32) -> io::Result<CompressedWriter> {
        let at = |e| crate::files::at(path, e);
        let f = std::fs::File::create(path).map_err(at)?;
        let mut z = zstd::stream::write::Encoder::new(io::BufWriter::with_capacity(1 << 20, f), level).map_err(at)?;
        if level >= ZSTD_LEVEL {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) as u32;
            z.multithread(threads).map_err(at)?;
        }
        Ok(CompressedWriter {
            path: path.to_path_buf(),
            z,
            line: Vec::with_capacity(512),
        })
    }

    pub fn write(&mut self, e: &Event) -> io::Result<()> {
        self.line.clear();
        write_line(&mut self.line, e).map_err(|e| crate::files::at(&self.path, e))?;
        self.z
            .write_all(&self.line)
            .map_err(|e| crate::files::at(&self.path, e))
    }

    pub fn finish(self) -> io::Result<()> {
        let at = |e| crate::files::at(&self.path, e);
        self.z.finish().map_err(at)?.flush().map_err(at)
    }
}

/// Reads every well-formed event line of a file, plain or zstd-compressed (by its `.zst`
/// name). A torn last line (a node killed mid-write) is skipped, not fatal; the count of
/// skipped lines is returned so reports can mention it.
pub fn read_file(path: &Path) -> io::Result<(Vec<Event>, usize)> {
    let mut out = Vec::new();
    let bad = each_in_file(path, |e| {
        out.push(e);
        Ok(())
    })?;
    Ok((out, bad))
}

/// [`read_file`] one event at a time, without holding the file's events: `f` gets each in file
/// order; returns the count of lines that are not events.
pub fn each_in_file(path: &Path, mut f: impl FnMut(Event) -> io::Result<()>) -> io::Result<usize> {
    let mut bad = 0;
    for line in EventReader::open(path)? {
        match line? {
            Ok(e) => f(e)?,
            Err(_) => bad += 1,
        }
    }
    Ok(bad)
}

/// An event file read a line at a time, plain or zstd-compressed (by its `.zst` name): each
/// item is an event, or why its line is not one. Blank lines are skipped; fault lines written
/// before the typed fields get them from their text.
pub struct EventReader {
    lines: io::Split<Box<dyn BufRead>>,
}

impl EventReader {
    pub fn open(path: &Path) -> io::Result<EventReader> {
        let file = std::fs::File::open(path)?;
        let reader: Box<dyn BufRead> = if path.extension().is_some_and(|x| x == "zst") {
            Box::new(io::BufReader::new(zstd::stream::read::Decoder::with_buffer(
                io::BufReader::new(file),
            )?))
        } else {
            Box::new(io::BufReader::new(file))
        };
        // Bytes, not `lines()`: a line torn inside a multi-byte character is one bad line, not
        // an error that would end the file.
        Ok(EventReader {
            lines: reader.split(b'\n'),
        })
    }
}

impl Iterator for EventReader {
    type Item = io::Result<Result<Event, serde_json::Error>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.lines.next()? {
                Ok(l) => l,
                Err(e) => return Some(Err(e)),
            };
            if line.trim_ascii().is_empty() {
                continue;
            }
            return Some(Ok(serde_json::from_slice::<Event>(&line).map(|mut e| {
                if matches!(e.event, Kind::Fault | Kind::FaultEnd) && e.fault.is_none() {
                    e.fault = Some(Box::new(Fault::from_legacy_text(&e)));
                }
                e
            })));
        }
    }
}

/// The harness-owned domain of every generated envelope sender, so bounces and DSNs come back
/// to mailsurge's bounce inbox and never to a real mailbox (RFC 2606 `.test`).
pub const BOUNCE_DOMAIN: &str = "bounces.mailsurge.test";

/// `node` of events derived from delivery status notifications (the bounce inbox's): they say
/// what an MTA reported by mail, a witness apart from the MTA's own event log.
pub const EXTERNAL_NODE: &str = "external";

/// What the reference MTA puts in the id of a delivery status notification it queues
/// (`<node>.dsn.<spool id>.<ns>`): mail of its own, not a generated message.
pub const NOTICE_ID_MARK: &str = ".dsn.";

/// The domain part of an address (lower-cased by callers where it matters).
pub fn domain_of(addr: &str) -> &str {
    addr.rsplit_once('@').map_or("", |(_, d)| d)
}

/// Only the header block is scanned; bodies can be megabytes and never hold our headers.
const MAX_HEADER_SCAN: usize = 64 * 1024;

/// The identity a generated message carries through every SMTP hop (SPEC §5): `Message-ID`,
/// `X-Mailsurge-Id: <run>.<seq>`, `X-Mailsurge-Intended` and `X-Mailsurge-Submitted` (ns since
/// the epoch).
///
/// Written by the generator ([`Identity::headers`]) and read back by whoever holds the DATA —
/// the MTA's ingress (to name the spooled message), the inboxes (receipts) and the DSN parser
/// (returned headers) — so the header names live here once. Measurement takes the intended
/// time from the generator's own events, not from these headers; the headers let a receipt and
/// a DSN name the message they belong to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub message_id: Option<String>,
    pub mailsurge_id: Option<String>,
    pub intended_ns: Option<u64>,
    pub submitted_ns: Option<u64>,
}

impl Identity {
    /// Parses the identity headers from the header block (up to the first empty line). Folded
    /// continuation lines are ignored: none of these headers is long enough to be folded by a
    /// sane client.
    pub fn parse(msg: &[u8]) -> Identity {
        let head = &msg[..msg.len().min(MAX_HEADER_SCAN)];
        let mut id = Identity::default();
        for line in head.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            let value = String::from_utf8_lossy(value).trim().to_string();
            if name.eq_ignore_ascii_case(b"message-id") {
                id.message_id = Some(value);
            } else if name.eq_ignore_ascii_case(b"x-mailsurge-id") {
                id.mailsurge_id = Some(value);
            } else if name.eq_ignore_ascii_case(b"x-mailsurge-intended") {
                id.intended_ns = value.parse().ok();
            } else if name.eq_ignore_ascii_case(b"x-mailsurge-submitted") {
                id.submitted_ns = value.parse().ok();
            }
        }
        id
    }

    /// Ours if present, else the Message-ID: the id accounting and duplicate checks key on.
    pub fn key(self) -> Option<String> {
        self.mailsurge_id.or(self.message_id)
    }

    /// The header lines a generated message carries, CRLF-terminated: what [`Identity::parse`]
    /// reads back.
    pub fn headers(run: &str, seq: u64, intended_ns: u64, submitted_ns: u64) -> IdentityHeaders<'_> {
        IdentityHeaders {
            run,
            seq,
            intended_ns,
            submitted_ns,
        }
    }
}

/// [`Identity::headers`], written without an intermediate string.
pub struct IdentityHeaders<'a> {
    run: &'a str,
    seq: u64,
    intended_ns: u64,
    submitted_ns: u64,
}

impl std::fmt::Display for IdentityHeaders<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (run, seq) = (self.run, self.seq);
        write!(
            f,
            "Message-ID: <{seq}.{run}@mailsurge.test>\r\n\
             X-Mailsurge-Id: {run}.{seq}\r\n\
             X-Mailsurge-Intended: {}\r\n\
             X-Mailsurge-Submitted: {}\r\n",
            self.intended_ns, self.submitted_ns
        )
    }
}

#[cfg(test)]
mod tests;
