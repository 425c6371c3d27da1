//! Cross-witness consistency: where two independent records of the same recipient disagree.
//!
//! The accounting identity cannot fail — every record falls into exactly one class by
//! construction — so it proves nothing on its own. What can fail is agreement between the
//! witnesses a run has: the generator (what it submitted and which 250s it got), each MTA's
//! event log (what it accepted, delivered, bounced), the mock inboxes' receipts (what really
//! arrived), the delivery status notices mailed back (what an MTA *said* by mail), and the
//! spools left at the end. A contradiction is one recipient for which two of them cannot both
//! be right. Every kind is counted and must be 0 for a run to pass.

use serde::{Deserialize, Serialize};

use super::accounting::Ledger;
use crate::events::{Kind, NOTICE_ID_MARK};

/// Recipients on which witnesses disagree, by kind (summary.json `contradictions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Contradictions {
    /// The sum of the kinds below.
    pub total: u64,
    /// An inbox received a message that was never generated, or whose submission no MTA
    /// accepted (neither the generator's 250 nor an MTA's `accepted`).
    pub received_unaccepted: u64,
    /// An MTA logged it bounced or expired, yet an inbox received it.
    pub failed_and_received: u64,
    /// An MTA logged it delivered (the inbox's 250), yet no inbox has a receipt.
    pub delivered_unseen: u64,
    /// Still in a spool at the end, yet received.
    pub spooled_and_received: u64,
    /// In a spool at the end, but never accepted — or no generated message at all.
    pub spooled_unaccepted: u64,
    /// A failure notice (DSN) for a recipient an MTA logged delivered or an inbox received.
    pub notice_for_delivered: u64,
}

impl Contradictions {
    /// Each kind, named as in summary.json, with its count.
    pub fn kinds(&self) -> [(&'static str, u64); 6] {
        [
            ("received_unaccepted", self.received_unaccepted),
            ("failed_and_received", self.failed_and_received),
            ("delivered_unseen", self.delivered_unseen),
            ("spooled_and_received", self.spooled_and_received),
            ("spooled_unaccepted", self.spooled_unaccepted),
            ("notice_for_delivered", self.notice_for_delivered),
        ]
    }

    /// `"2 failed_and_received, 1 delivered_unseen"`: the kinds that are not 0.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .kinds()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        parts.join(", ")
    }
}

/// Counts every contradiction in a ledger whose spool leftovers are in.
pub fn contradictions(ledger: &Ledger) -> Contradictions {
    let mut c = Contradictions {
        spooled_unaccepted: ledger.unknown_spooled,
        ..Contradictions::default()
    };
    for ((id, _), r) in &ledger.records {
        // The MTA's own notices (to the bounce inbox) are its mail, not a generated message.
        if id.contains(NOTICE_ID_MARK) {
            continue;
        }
        let received = r.receipts > 0;
        let mta_delivered = r.steps.iter().any(|s| s.kind == Kind::Delivered);
        c.received_unaccepted += u64::from(received && !r.accepted);
        c.failed_and_received += u64::from(received && r.mta_failed);
        c.delivered_unseen += u64::from(mta_delivered && !received);
        c.spooled_and_received += u64::from(r.spooled && received);
        c.spooled_unaccepted += u64::from(r.spooled && !r.accepted);
        c.notice_for_delivered += u64::from(r.notice_failed && (mta_delivered || received));
    }
    c.total = c.kinds().iter().map(|(_, n)| n).sum();
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, EXTERNAL_NODE};
    use crate::measure::Spooled;

    fn ev(id: &str, k: Kind) -> Event {
        let mut e = Event::new(1, id, k);
        e.rcpt = Some("u@a.test".into());
        e.node = Some("n-1".into());
        e
    }

    /// A clean message: submitted, accepted, delivered by the MTA, received.
    fn clean(id: &str) -> Vec<Event> {
        let mut s = ev(id, Kind::Submitted);
        s.intended = Some(1);
        vec![
            s,
            ev(id, Kind::Accepted),
            ev(id, Kind::Delivered),
            ev(id, Kind::Received),
        ]
    }

    fn count(events: &[Event], spooled: &[Spooled]) -> Contradictions {
        contradictions(&Ledger::build(events, spooled))
    }

    fn spooled(id: &str) -> Spooled {
        Spooled {
            msg_id: id.into(),
            rcpt: "u@a.test".into(),
            node: "n-1".into(),
            node_alive: true,
        }
    }

    #[test]
    fn agreeing_witnesses_are_no_contradiction() {
        let mut events = clean("r.1");
        // Bounced with its notice, never received; delayed then delivered.
        let mut s = ev("r.2", Kind::Submitted);
        s.intended = Some(1);
        let mut dsn = ev("r.2", Kind::Bounced);
        dsn.node = Some(EXTERNAL_NODE.into());
        events.extend([s, ev("r.2", Kind::Accepted), ev("r.2", Kind::Bounced), dsn]);
        let mut delay = ev("r.1", Kind::Deferred);
        delay.node = Some(EXTERNAL_NODE.into());
        events.push(delay);
        // The MTA's own notice, delivered to the bounce inbox (no receipt there).
        events.push(ev("n-1.dsn.1f.5", Kind::Delivered));
        assert_eq!(count(&events, &[spooled("n-1.dsn.20.6")]), Contradictions::default());
    }

    #[test]
    fn each_kind_is_counted() {
        let mut events = Vec::new();
        // A receipt for a message never generated, and one whose submission was refused.
        events.push(ev("ghost.1", Kind::Received));
        let mut rej = ev("r.2", Kind::Rejected);
        rej.intended = Some(1);
        events.extend([rej, ev("r.2", Kind::Received)]);
        // Bounced by the MTA and received.
        events.extend(clean("r.3"));
        events.push(ev("r.3", Kind::Bounced));
        // Delivered per the MTA, never received.
        events.extend(clean("r.4").into_iter().filter(|e| e.event != Kind::Received));
        // Received and still spooled; spooled but never accepted; spooled and unknown.
        events.extend(clean("r.5"));
        let mut s6 = ev("r.6", Kind::Rejected);
        s6.intended = Some(1);
        events.push(s6);
        // A failure notice for a delivered message.
        events.extend(clean("r.7"));
        let mut dsn = ev("r.7", Kind::Expired);
        dsn.node = Some(EXTERNAL_NODE.into());
        events.push(dsn);
        let c = count(&events, &[spooled("r.5"), spooled("r.6"), spooled("nobody.9")]);
        assert_eq!(c.received_unaccepted, 2, "{c:?}");
        assert_eq!(c.failed_and_received, 1, "{c:?}");
        assert_eq!(c.delivered_unseen, 1, "{c:?}");
        assert_eq!(c.spooled_and_received, 1, "{c:?}");
        assert_eq!(c.spooled_unaccepted, 2, "{c:?}");
        assert_eq!(c.notice_for_delivered, 1, "{c:?}");
        assert_eq!(c.total, 8);
        assert_eq!(
            c.describe(),
            "2 received_unaccepted, 1 failed_and_received, 1 delivered_unseen, \
             1 spooled_and_received, 2 spooled_unaccepted, 1 notice_for_delivered"
        );
    }
}
