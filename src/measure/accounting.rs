//! Per-recipient accounting from events and spool scans (SPEC §5): every message ends in
//! exactly one class, and `lost` is *computed* — accepted, no terminal event, not in any spool —
//! never assumed to be zero.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::events::{domain_of, Event, Kind};

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

/// What is known about one (message id, recipient).
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub intended: Option<u64>,
    pub submitted: Option<u64>,
    pub generated: bool,
    pub accepted: bool,
    pub region: Option<String>,
    pub node: Option<String>,
    pub first_received: Option<u64>,
    pub receipts: u32,
    pub bounced: bool,
    pub dropped: bool,
    pub expired: bool,
    pub deferrals: u32,
    pub spooled: bool,
    pub stranded: bool,
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
}

impl Counts {
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
}

impl Ledger {
    /// Folds events (any order) and spool leftovers into per-recipient records.
    pub fn build(events: &[Event], spooled: &[Spooled]) -> Ledger {
        let mut records: HashMap<(String, String), Record> = HashMap::new();
        for e in events.iter().filter(|e| !e.event.is_control()) {
            let rcpt = e.rcpt.clone().unwrap_or_default();
            let r = records.entry((e.id.clone(), rcpt)).or_default();
            match e.event {
                Kind::Submitted => {
                    r.generated = true;
                    r.intended = r.intended.or(e.intended);
                    r.submitted = r.submitted.or(e.submitted);
                    // The MTA's 250 is the acceptance. Its own `accepted` line can die in a
                    // SIGKILL before it is flushed; the generator's record of the 250 cannot.
                    if !r.accepted {
                        r.region = e.region.clone();
                        r.node = e.node.clone();
                    }
                    r.accepted = true;
                }
                Kind::Rejected | Kind::Unsubmitted => {
                    r.generated = true;
                    r.intended = r.intended.or(e.intended);
                }
                Kind::Accepted => {
                    // The first acceptance names the region that owns the message.
                    if !r.accepted {
                        r.region = e.region.clone();
                        r.node = e.node.clone();
                    }
                    r.accepted = true;
                }
                Kind::Deferred => r.deferrals += 1,
                Kind::Delivered => {}
                Kind::Bounced => r.bounced = true,
                Kind::Expired => r.expired = true,
                Kind::Dropped => r.dropped = true,
                Kind::Fault | Kind::FaultEnd | Kind::Evicted | Kind::Admitted => {}
                Kind::Received => {
                    r.receipts += 1;
                    // Intended and submitted times come from the generator's own events only;
                    // a receipt's copy of the header is not a second source to reconcile.
                    r.first_received = Some(r.first_received.map_or(e.t, |f| f.min(e.t)));
                }
            }
        }
        for s in spooled {
            if let Some(r) = records.get_mut(&(s.msg_id.clone(), s.rcpt.clone())) {
                r.spooled = true;
                r.stranded |= !s.node_alive;
            }
        }
        Ledger {
            records,
            events: events.len() as u64,
        }
    }

    /// Records of generated messages (foreign mail seen only at an inbox is left out).
    pub fn generated(&self) -> impl Iterator<Item = (&(String, String), &Record)> {
        self.records.iter().filter(|(_, r)| r.generated)
    }

    pub fn counts(&self, events: &[Event]) -> Counts {
        let mut c = Counts {
            events: self.events,
            ..Counts::default()
        };
        let unsubmitted: HashSet<(&str, &str)> = events
            .iter()
            .filter(|e| e.event == Kind::Unsubmitted)
            .map(|e| (e.id.as_str(), e.rcpt.as_deref().unwrap_or("")))
            .collect();
        for ((id, rcpt), r) in self.generated() {
            c.generated += 1;
            c.deferrals += u64::from(r.deferrals);
            c.duplicates += u64::from(r.receipts.saturating_sub(1));
            if r.accepted {
                c.accepted += 1;
            }
            match r.class() {
                Class::RejectedAtSubmit => {
                    c.rejected_at_submit += 1;
                    if unsubmitted.contains(&(id.as_str(), rcpt.as_str())) {
                        c.unsubmitted += 1;
                    }
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
        let c = l.counts(&events);
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
