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
    /// Harness: a chaos action began (`text`: e.g. `kill region/us-east`; `node`, `region` or
    /// `provider` name its target). Not a message event: `id` is `fault.<n>`.
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

/// Reads every well-formed event line of a file. A torn last line (a node killed mid-write) is
/// skipped, not fatal; the count of skipped lines is returned so reports can mention it.
pub fn read_file(path: &Path) -> io::Result<(Vec<Event>, usize)> {
    let f = std::fs::File::open(path)?;
    let mut out = Vec::new();
    let mut bad = 0;
    for line in io::BufReader::new(f).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(&line) {
            Ok(e) => out.push(e),
            Err(_) => bad += 1,
        }
    }
    Ok((out, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.jsonl");
        let mut f = std::fs::File::create(&p).unwrap();
        let mut e = Event::new(5, "r.1", Kind::Accepted);
        e.node = Some("us-east-1".into());
        write_line(&mut f, &e).unwrap();
        f.write_all(b"{\"t\": 7, \"id\": \"r.2\", \"ev").unwrap();
        drop(f);
        let (evs, bad) = read_file(&p).unwrap();
        assert_eq!(evs, vec![e]);
        assert_eq!(bad, 1);
    }

    #[test]
    fn rfc3339_format() {
        assert_eq!(rfc3339(1_500_000_000_123_456_789), "2017-07-14T02:40:00.123456Z");
    }
}
