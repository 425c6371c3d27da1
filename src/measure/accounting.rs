//! Per-recipient accounting from events and spool scans (SPEC §5): every message ends in
//! exactly one class, and `lost` is *computed* — accepted, no terminal event, not in any spool —
//! never assumed to be zero.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::events::{domain_of, Event, Kind, EXTERNAL_NODE, NOTICE_ID_MARK};

/// A message recipient still in a node's spool after the run.
#[derive(Debug, Clone)]
pub struct Spooled {
    pub msg_id: String,
    pub rcpt: String,
    pub node: String,
    /// Whether that node was alive at the end (dead ⇒ the mail is `stranded`).
    pub node_alive: bool,
}

/// Where a recipient's message ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    RejectedAtSubmit,
    Delivered,
    Bounced,
    Suppressed,
    Expired,
    Queued,
    Lost,
}

/// What is known about one (message id, recipient): all measurement keeps of its events, so a
/// run's events are read once, in a stream, and never held (SPEC §14: a soak's millions of
/// messages).
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub intended: Option<u64>,
    pub submitted: Option<u64>,
    pub generated: bool,
    pub accepted: bool,
    /// Region and node of the first acceptance (shared names: one allocation per node).
    pub region: Option<Arc<str>>,
    pub node: Option<Arc<str>>,
    pub first_received: Option<u64>,
    pub receipts: u32,
    pub bounced: bool,
    pub dropped: bool,
    pub expired: bool,
    /// The schedule intended it, but the run ended before it was submitted.
    pub unsubmitted: bool,
    /// Its submission got no SMTP reply (a `rejected` without a code).
    pub submit_error: bool,
    /// An MTA's own event log says bounced or expired.
    pub mta_failed: bool,
    /// A delivery status notice mailed back says it failed (bounced or expired).
    pub notice_failed: bool,
    pub deferrals: u32,
    pub spooled: bool,
    pub stranded: bool,
    /// Its path through the MTAs: acceptances (the node's line and the generator's record of
    /// the 250) and the MTA's terminal events, in the order read; on a shared queue also its
    /// leases and the deferrals that ended them.
    pub steps: Vec<Step>,
}

/// One step of a recipient through an MTA, as much of its event as the queue-depth series
/// and the failover metrics read: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The event's time; for `submitted`, when the 250 arrived (`acked`).
    pub t: u64,
    /// `Accepted`, `Submitted`, `Delivered`, `Bounced`, `Expired` or `Dropped`; on a shared
    /// queue also `Leased` and `Deferred`.
    pub kind: Kind,
    pub node: Name,
    pub region: Name,
}

/// A node, region or provider name as a small number ([`Names`]); [`Name::NONE`] for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name(u16);

impl Name {
    pub const NONE: Name = Name(u16::MAX);
}

/// Node, region and provider names seen in a run's events, numbered: there are as many as
/// the topology has, never one per message. (More than 65,535 distinct names — not written by
/// mailsurge — share [`Name::NONE`].)
#[derive(Debug, Default)]
pub struct Names {
    ids: HashMap<Arc<str>, Name>,
    list: Vec<Arc<str>>,
}

impl Names {
    pub fn id(&mut self, name: Option<&str>) -> Name {
        let Some(name) = name else { return Name::NONE };
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        if self.list.len() >= usize::from(u16::MAX) {
            return Name::NONE;
        }
        let id = Name(self.list.len() as u16);
        let name: Arc<str> = name.into();
        self.list.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    /// The shared copy of a name.
    pub fn shared(&mut self, name: Option<&str>) -> Option<Arc<str>> {
        let id = self.id(name);
        self.list.get(usize::from(id.0)).cloned()
    }

    pub fn get(&self, id: Name) -> Option<&str> {
        self.list.get(usize::from(id.0)).map(|n| &**n)
    }
}

impl Record {
    pub fn class(&self) -> Class {
        if !self.accepted {
            Class::RejectedAtSubmit
        } else if self.receipts > 0 {
            Class::Delivered
        } else if self.bounced {
            Class::Bounced
        } else if self.dropped {
            Class::Suppressed
        } else if self.expired {
            Class::Expired
        } else if self.spooled {
            Class::Queued
        } else {
            Class::Lost
        }
    }

    /// Eligible for delivery-time statistics: accepted and not bounced/suppressed by design.
    pub fn eligible(&self) -> bool {
        !matches!(
            self.class(),
            Class::RejectedAtSubmit | Class::Bounced | Class::Suppressed
        )
    }

    /// Delivery time from the intended send time, µs; `None` = not delivered (+∞).
    pub fn delivery_us(&self) -> Option<u64> {
        let (r, i) = (self.first_received?, self.intended?);
        Some(r.saturating_sub(i) / 1000)
    }

    /// Delivery time from the actual submission start, µs (the coordinated-omission-blind view).
    pub fn uncorrected_us(&self) -> Option<u64> {
        let (r, s) = (self.first_received?, self.submitted?);
        Some(r.saturating_sub(s) / 1000)
    }

    /// Its MTAs' `accepted` steps: (time, node, region).
    pub fn accepts(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| s.kind == Kind::Accepted)
    }

    /// The first `delivered`, `received`, `bounced`, `expired` or `dropped`.
    pub fn first_terminal(&self) -> Option<u64> {
        let mta = self.steps.iter().filter(|s| s.kind.is_mta_end()).map(|s| s.t).min();
        match (mta, self.first_received) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The accounting counts of summary.json.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Counts {
    pub generated: u64,
    pub rejected_at_submit: u64,
    pub accepted: u64,
    pub delivered: u64,
    pub bounced: u64,
    pub suppressed: u64,
    pub expired: u64,
    pub queued: u64,
    pub stranded: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub deferrals: u64,
    pub events: u64,
    /// Part of `rejected_at_submit`: intended but never submitted before the run ended.
    pub unsubmitted: u64,
    /// Part of `rejected_at_submit`: submissions that got no SMTP reply at all (connection
    /// refused, reset or timed out) — the system under test was not there to refuse them.
    pub submit_errors: u64,
}

/// Submissions that got no SMTP reply beyond this share of those generated make a run
/// unjudgeable: the system under test was mostly not there, and what little it accepted says
/// nothing about it under the planned load.
pub const MAX_SUBMIT_ERROR_SHARE: f64 = 0.10;

impl Counts {
    /// Why a run cannot be judged, if it cannot: the system under test accepted nothing, or most
    /// submissions never reached it. Either is a broken set-up, not a verdict on the system.
    pub fn unjudgeable(&self) -> Option<String> {
        let c = self;
        if c.generated == 0 {
            return None;
        }
        if c.accepted == 0 {
            return Some(format!(
                "nothing was measured: the system under test accepted none of the {} messages generated \
                 ({} submissions got no SMTP reply to a message: connection refused, reset or timed \
                 out, or STARTTLS or AUTH failed — the `rejected` events carry each error); is it \
                 running at the submit address?",
                c.generated, c.submit_errors
            ));
        }
        let share = c.submit_errors as f64 / c.generated as f64;
        (share > MAX_SUBMIT_ERROR_SHARE).then(|| {
            format!(
                "{} of {} submissions ({:.1}%) got no SMTP reply to a message (connection refused, \
                 reset or timed out, or STARTTLS or AUTH failed), more than the {:.0}% a run can be \
                 judged with",
                c.submit_errors,
                c.generated,
                share * 100.0,
                MAX_SUBMIT_ERROR_SHARE * 100.0
            )
        })
    }

    /// Both identities of SPEC §5; `Err` names the one that does not hold.
    pub fn check_identity(&self) -> Result<(), String> {
        if self.generated != self.rejected_at_submit + self.accepted {
            return Err(format!(
                "generated {} != rejected_at_submit {} + accepted {}",
                self.generated, self.rejected_at_submit, self.accepted
            ));
        }
        let sum = self.delivered + self.bounced + self.suppressed + self.expired + self.queued + self.lost;
        if self.accepted != sum {
            return Err(format!(
                "accepted {} != delivered {} + bounced {} + suppressed {} + expired {} + queued {} + lost {}",
                self.accepted, self.delivered, self.bounced, self.suppressed, self.expired, self.queued, self.lost
            ));
        }
        Ok(())
    }
}

/// All records of a run, keyed by (id, rcpt).
#[derive(Debug, Default)]
pub struct Ledger {
    pub records: HashMap<(String, String), Record>,
    pub events: u64,
    pub names: Names,
    /// Spool leftovers that match no record and are not an MTA's own notice: a message in a
    /// spool that nobody generated (a contradiction, see `witness`).
    pub unknown_spooled: u64,
}

impl Ledger {
    /// Folds events (any order) and spool leftovers into per-recipient records.
    pub fn build(events: &[Event], spooled: &[Spooled]) -> Ledger {
        let mut l = Ledger::default();
        for e in events {
            l.add(e);
        }
        l.add_spooled(spooled);
        l
    }

    /// Folds one event in (control events are only counted).
    pub fn add(&mut self, e: &Event) {
        self.events += 1;
        if e.event.is_control() {
            return;
        }
        let key = (e.id.clone(), e.rcpt.clone().unwrap_or_default());
        let names = &mut self.names;
        let r = self.records.entry(key).or_default();
        let step = |names: &mut Names, t: u64| Step {
            t,
            kind: e.event,
            node: names.id(e.node.as_deref()),
            region: names.id(e.region.as_deref()),
        };
        // The first acceptance names the region that owns the message.
        let own = |r: &mut Record, names: &mut Names| {
            if !r.accepted {
                r.region = names.shared(e.region.as_deref());
                r.node = names.shared(e.node.as_deref());
            }
            r.accepted = true;
        };
        match e.event {
            Kind::Submitted => {
                r.generated = true;
                r.intended = r.intended.or(e.intended);
                r.submitted = r.submitted.or(e.submitted);
                // The MTA's 250 is the acceptance. Its own `accepted` line can die in a
                // SIGKILL before it is flushed; the generator's record of the 250 cannot.
                own(r, names);
                r.steps.push(step(names, e.acked.unwrap_or(e.t)));
            }
            Kind::Rejected | Kind::Unsubmitted => {
                r.generated = true;
                r.intended = r.intended.or(e.intended);
                r.unsubmitted |= e.event == Kind::Unsubmitted;
                r.submit_error |= e.event == Kind::Rejected && e.code.is_none();
            }
            Kind::Accepted => {
                own(r, names);
                r.steps.push(step(names, e.t));
            }
            Kind::Deferred => {
                r.deferrals += 1;
                // In a shared queue a deferral hands the message back to the queue: its lease
                // ends there (takeover reads it). Only then, so a local spool's deferrals cost
                // no memory.
                if r.steps.iter().any(|s| s.kind.is_lease()) {
                    r.steps.push(step(names, e.t));
                }
            }
            Kind::Leased | Kind::TakenOver => r.steps.push(step(names, e.t)),
            Kind::Delivered | Kind::Bounced | Kind::Expired | Kind::Dropped => {
                r.bounced |= e.event == Kind::Bounced;
                r.expired |= e.event == Kind::Expired;
                if matches!(e.event, Kind::Bounced | Kind::Expired) {
                    match e.node.as_deref() == Some(EXTERNAL_NODE) {
                        true => r.notice_failed = true,
                        false => r.mta_failed = true,
                    }
                }
                r.dropped |= e.event == Kind::Dropped;
                r.steps.push(step(names, e.t));
            }
            Kind::Fault | Kind::FaultEnd | Kind::Evicted | Kind::Admitted => {}
            Kind::Received => {
                r.receipts += 1;
                // Intended and submitted times come from the generator's own events only;
                // a receipt's copy of the header is not a second source to reconcile.
                r.first_received = Some(r.first_received.map_or(e.t, |f| f.min(e.t)));
            }
        }
    }

    /// Marks what was left in the spools (after every event is in).
    pub fn add_spooled(&mut self, spooled: &[Spooled]) {
        for s in spooled {
            match self.records.get_mut(&(s.msg_id.clone(), s.rcpt.clone())) {
                Some(r) => {
                    r.spooled = true;
                    r.stranded |= !s.node_alive;
                }
                None if !s.msg_id.contains(NOTICE_ID_MARK) => self.unknown_spooled += 1,
                None => {}
            }
        }
    }

    /// Records of generated messages (foreign mail seen only at an inbox is left out).
    pub fn generated(&self) -> impl Iterator<Item = (&(String, String), &Record)> {
        self.records.iter().filter(|(_, r)| r.generated)
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            events: self.events,
            ..Counts::default()
        };
        for (_, r) in self.generated() {
            c.generated += 1;
            c.deferrals += u64::from(r.deferrals);
            c.duplicates += u64::from(r.receipts.saturating_sub(1));
            if r.accepted {
                c.accepted += 1;
            }
            match r.class() {
                Class::RejectedAtSubmit => {
                    c.rejected_at_submit += 1;
                    c.unsubmitted += u64::from(r.unsubmitted);
                    c.submit_errors += u64::from(r.submit_error);
                }
                Class::Delivered => c.delivered += 1,
                Class::Bounced => c.bounced += 1,
                Class::Suppressed => c.suppressed += 1,
                Class::Expired => c.expired += 1,
                Class::Queued => {
                    c.queued += 1;
                    if r.stranded {
                        c.stranded += 1;
                    }
                }
                Class::Lost => c.lost += 1,
            }
        }
        c
    }

    /// Deferral counts per recipient domain.
    pub fn deferrals_by_domain(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for ((_, rcpt), r) in self.generated() {
            *m.entry(domain_of(rcpt).to_string()).or_default() += u64::from(r.deferrals);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u64, id: &str, k: Kind) -> Event {
        let mut e = Event::new(t, id, k);
        e.rcpt = Some("u@a.test".into());
        e
    }

    #[test]
    fn classes_and_identity() {
        let mut sub = ev(10, "r.1", Kind::Submitted);
        sub.intended = Some(5);
        sub.submitted = Some(10);
        let events = vec![
            sub.clone(),
            ev(11, "r.1", Kind::Accepted),
            ev(20, "r.1", Kind::Received),
            ev(21, "r.1", Kind::Received), // duplicate
            Event {
                id: "r.2".into(),
                ..sub.clone()
            },
            ev(11, "r.2", Kind::Accepted),
            ev(12, "r.2", Kind::Bounced),
            Event {
                id: "r.3".into(),
                ..sub.clone()
            },
            ev(11, "r.3", Kind::Accepted), // in spool → queued
            Event {
                id: "r.4".into(),
                ..sub.clone()
            },
            ev(11, "r.4", Kind::Accepted), // nowhere → lost
            ev(9, "r.5", Kind::Rejected),
            ev(9, "r.6", Kind::Unsubmitted),
        ];
        let spooled = vec![Spooled {
            msg_id: "r.3".into(),
            rcpt: "u@a.test".into(),
            node: "n".into(),
            node_alive: false,
        }];
        let l = Ledger::build(&events, &spooled);
        let c = l.counts();
        assert_eq!(c.generated, 6);
        assert_eq!(c.accepted, 4);
        assert_eq!(c.rejected_at_submit, 2);
        assert_eq!(c.unsubmitted, 1);
        assert_eq!(
            (c.delivered, c.bounced, c.queued, c.stranded, c.lost, c.duplicates),
            (1, 1, 1, 1, 1, 1)
        );
        c.check_identity().unwrap();
        let r1 = &l.records[&("r.1".to_string(), "u@a.test".to_string())];
        assert_eq!(r1.delivery_us(), Some(0)); // (20-5) ns → 0 µs
    }
}
