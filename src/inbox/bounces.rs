//! The harness-owned bounce inbox: the mailbox behind the generator's envelope-sender domain.
//!
//! When the system under test is an external MTA (Postfix, KumoMTA, …) mailsurge cannot read
//! its queue or logs; the one portable signal of a bounce or an expiry is the delivery status
//! notification it mails back to the envelope sender. This inbox accepts those DSNs over SMTP,
//! parses them ([`crate::dsn`]) and turns each per-recipient status into the same events the
//! reference MTA writes — `bounced`, `expired`, `deferred` — so black-box runs get the same
//! accounting identity as white-box ones.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::dsn::{self, Action};
use crate::events::{now_ns, Event, Kind};
use crate::smtp::{Decision, Envelope, Policy, Reply, SessionInfo};

pub use crate::events::EXTERNAL_NODE;

/// What the bounce inbox has seen so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BounceStats {
    /// Messages received (DSNs or not).
    pub messages: u64,
    /// Per-recipient permanent failures attributed to a generated message.
    pub bounced: u64,
    /// Per-recipient failures with a transient status: the MTA gave up (expiry).
    pub expired: u64,
    /// Per-recipient delay notices.
    pub delayed: u64,
    /// DSNs (or other mail) whose original message could not be identified.
    pub unattributed: u64,
}

/// SMTP policy of the bounce inbox.
pub struct BounceInbox {
    domain: String,
    events: mpsc::UnboundedSender<Event>,
    /// Hashes of (id, rcpt) already reported failed: the drain check's count of terminal
    /// outcomes, 8 bytes per bounced recipient. A repeated DSN is not counted twice.
    terminal: Mutex<HashSet<u64>>,
    messages: AtomicU64,
    bounced: AtomicU64,
    expired: AtomicU64,
    delayed: AtomicU64,
    unattributed: AtomicU64,
}

impl BounceInbox {
    pub fn new(domain: &str, events: mpsc::UnboundedSender<Event>) -> BounceInbox {
        BounceInbox {
            domain: domain.to_ascii_lowercase(),
            events,
            terminal: Mutex::new(HashSet::new()),
            messages: AtomicU64::new(0),
            bounced: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            unattributed: AtomicU64::new(0),
        }
    }

    /// Distinct (message, recipient) pairs reported bounced or expired so far.
    pub fn terminal(&self) -> u64 {
        crate::sync::lock(&self.terminal).len() as u64
    }

    pub fn stats(&self) -> BounceStats {
        BounceStats {
            messages: self.messages.load(Ordering::Relaxed),
            bounced: self.bounced.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            unattributed: self.unattributed.load(Ordering::Relaxed),
        }
    }

    /// Turns one received message into events.
    fn account(&self, body: &[u8]) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        let d = dsn::parse(body);
        let Some(id) = d.mailsurge_id().map(str::to_string) else {
            self.unattributed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if d.recipients.is_empty() {
            self.unattributed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let t = now_ns();
        for r in &d.recipients {
            let kind = match r.action {
                Action::Failed if r.is_expiry() => Kind::Expired,
                Action::Failed => Kind::Bounced,
                Action::Delayed => Kind::Deferred,
                // Success notices (NOTIFY=SUCCESS) add nothing: receipts prove delivery.
                Action::Delivered | Action::Relayed | Action::Expanded => continue,
            };
            let counter = match kind {
                Kind::Expired => &self.expired,
                Kind::Bounced => &self.bounced,
                _ => &self.delayed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if kind != Kind::Deferred {
                let key = super::engine::hash(&(id.as_str(), r.recipient.to_ascii_lowercase()));
                crate::sync::lock(&self.terminal).insert(key);
            }
            let mut e = Event::new(t, id.clone(), kind);
            e.node = Some(EXTERNAL_NODE.into());
            e.rcpt = Some(r.recipient.clone());
            e.code = r
                .diagnostic
                .as_deref()
                .and_then(|s| s.get(..3))
                .and_then(|c| c.parse().ok());
            e.text = Some(match &r.diagnostic {
                Some(diag) => format!("DSN {} {diag}", r.status),
                None => format!("DSN {}", r.status),
            });
            e.intended = d.original.intended_ns;
            // The harness's writer only goes away at shutdown, when a late event is moot.
            let _ = self.events.send(e);
        }
    }
}

impl Policy for BounceInbox {
    async fn connect(&self, _s: &SessionInfo) -> Decision {
        Decision::reply(Reply::new(
            220,
            None,
            &format!("{} ESMTP mailsurge bounce inbox", self.domain),
        ))
    }

    async fn helo(&self, _s: &SessionInfo, _helo: &str) -> Decision {
        Decision::reply(Reply::new(250, None, "ok"))
    }

    async fn mail(&self, _s: &SessionInfo, _from: &str, _size: Option<usize>) -> Decision {
        // DSNs come from the null sender, but auto-replies and forwarded bounces may not.
        Decision::reply(Reply::new(250, Some("2.1.0"), "Ok"))
    }

    async fn rcpt(&self, _s: &SessionInfo, _env: &Envelope, rcpt: &str) -> Decision {
        let domain = crate::events::domain_of(rcpt);
        if domain.eq_ignore_ascii_case(&self.domain) {
            Decision::reply(Reply::new(250, Some("2.1.5"), "Ok"))
        } else {
            Decision::reply(Reply::new(
                550,
                Some("5.1.1"),
                &format!("<{rcpt}>: not a bounce address of {}", self.domain),
            ))
        }
    }

    async fn data(&self, _s: &SessionInfo, _env: &Envelope) -> Decision {
        Decision::reply(Reply::new(354, None, "Go ahead"))
    }

    async fn message(&self, _s: &SessionInfo, _env: &Envelope, body: Vec<u8>) -> Decision {
        self.account(&body);
        Decision::reply(Reply::new(250, Some("2.0.0"), "Ok: DSN recorded"))
    }

    fn disconnected(&self, _s: &SessionInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dsn(id: &str, blocks: &str) -> Vec<u8> {
        format!(
            "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n\
--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n{blocks}\r\n\
--b\r\nContent-Type: text/rfc822-headers\r\n\r\nX-Mailsurge-Id: {id}\r\n\r\n--b--\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn failures_become_terminal_events_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let b = BounceInbox::new("Bounces.Test", tx);
        let blocks = "Final-Recipient: rfc822; a@x\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no\r\n\r\n\
Final-Recipient: rfc822; b@x\r\nAction: failed\r\nStatus: 4.4.7\r\n\r\n\
Final-Recipient: rfc822; c@x\r\nAction: delayed\r\nStatus: 4.2.0\r\n";
        b.account(&dsn("r.1", blocks));
        b.account(&dsn("r.1", blocks)); // the same DSN again
        b.account(b"Subject: auto-reply\r\n\r\naway\r\n");
        let s = b.stats();
        assert_eq!(
            (s.messages, s.bounced, s.expired, s.delayed, s.unattributed),
            (3, 2, 2, 2, 1)
        );
        assert_eq!(b.terminal(), 2, "a@x bounced and b@x expired, each counted once");
        let first: Vec<(Kind, String, Option<u16>)> = std::iter::from_fn(|| rx.try_recv().ok())
            .take(3)
            .map(|e| (e.event, e.rcpt.unwrap(), e.code))
            .collect();
        assert_eq!(
            first,
            vec![
                (Kind::Bounced, "a@x".into(), Some(550)),
                (Kind::Expired, "b@x".into(), None),
                (Kind::Deferred, "c@x".into(), None),
            ]
        );
    }
}
