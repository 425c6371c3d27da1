//! One pass over a run's events, keeping only what measurement reads: a record per
//! recipient ([`Ledger`]), the few control events whole, 16 bytes per deferral or receipt for
//! failover detection, and per-second counters. The events themselves are never held, so a
//! report costs memory per *recipient* (a few hundred bytes), not per event — a 20-minute soak
//! measures in a bounded fraction of what its event list would take.

use std::collections::HashMap;

use super::accounting::{Ledger, Name, Spooled};
use super::Inputs;
use crate::events::{Event, Kind};

/// A deferral or a receipt: when, and for which provider (the event's own, else its recipient
/// domain's) — what detecting a provider fault looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaction {
    pub t: u64,
    pub kind: Kind,
    pub provider: Name,
}

/// Per-second counts by wall time (a vector grows as later seconds appear).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rates {
    pub generated: Vec<u64>,
    pub accepted: Vec<u64>,
    pub delivered: Vec<u64>,
    pub bounced: Vec<u64>,
}

impl Rates {
    /// Cut or padded to `n` seconds; anything later counts in the last.
    pub fn fit(mut self, n: usize) -> Rates {
        for v in [
            &mut self.generated,
            &mut self.accepted,
            &mut self.delivered,
            &mut self.bounced,
        ] {
            let late: u64 = v.iter().skip(n).sum();
            v.resize(n, 0);
            if let Some(last) = v.last_mut() {
                *last += late;
            }
        }
        self
    }
}

fn bump(v: &mut Vec<u64>, i: usize) {
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] += 1;
}

/// What measurement keeps of a run's events.
pub struct Fold<'i> {
    inp: &'i Inputs,
    pub ledger: Ledger,
    /// `fault`, `fault_end`, `evicted`, `admitted`: few, kept whole (charts mark them).
    pub control: Vec<Event>,
    /// Deferrals and receipts: in the order read, then by time ([`Fold::settle`]).
    pub reactions: Vec<Reaction>,
    /// Node → region, from any event naming both.
    pub node_region: HashMap<Name, Name>,
    rates: Rates,
    /// The latest event time seen.
    pub last_t: Option<u64>,
    /// TLS per hop.
    pub tls: super::tls::Tally,
}

impl<'i> Fold<'i> {
    pub fn new(inp: &'i Inputs) -> Fold<'i> {
        Fold {
            inp,
            ledger: Ledger::default(),
            control: Vec::new(),
            reactions: Vec::new(),
            node_region: HashMap::new(),
            rates: Rates::default(),
            last_t: None,
            tls: super::tls::Tally::default(),
        }
    }

    /// Every event of a slice (tests, and callers that have them in memory anyway).
    pub fn of(events: &[Event], inp: &'i Inputs) -> Fold<'i> {
        let mut f = Fold::new(inp);
        for e in events {
            f.add(e);
        }
        f
    }

    pub fn add(&mut self, e: &Event) {
        self.last_t = Some(self.last_t.map_or(e.t, |t| t.max(e.t)));
        self.ledger.add(e);
        self.count_rate(e);
        self.tls.add(e);
        if let (Some(n), Some(r)) = (&e.node, &e.region) {
            let names = &mut self.ledger.names;
            let (n, r) = (names.id(Some(n)), names.id(Some(r)));
            self.node_region.entry(n).or_insert(r);
        }
        match e.event {
            k if k.is_control() => self.control.push(e.clone()),
            Kind::Deferred | Kind::Received => {
                let provider = e
                    .provider
                    .as_deref()
                    .or_else(|| self.inp.provider_of(e.rcpt.as_deref()?));
                self.reactions.push(Reaction {
                    t: e.t,
                    kind: e.event,
                    provider: self.ledger.names.id(provider),
                });
            }
            _ => {}
        }
    }

    fn count_rate(&mut self, e: &Event) {
        let idx = |t: u64| (t.saturating_sub(self.inp.start_ns) / 1_000_000_000) as usize;
        let r = &mut self.rates;
        match e.event {
            Kind::Submitted | Kind::Rejected | Kind::Unsubmitted => {
                bump(&mut r.generated, idx(e.intended.unwrap_or(e.t)));
                if e.event == Kind::Submitted {
                    bump(&mut r.accepted, idx(e.t));
                }
            }
            Kind::Received => bump(&mut r.delivered, idx(e.t)),
            Kind::Bounced => bump(&mut r.bounced, idx(e.t)),
            _ => {}
        }
    }

    /// Done reading: puts the reactions in time order (once, for every fault's detection).
    pub fn settle(&mut self) {
        self.reactions.sort_by_key(|r| r.t);
    }

    /// Seconds of wall time the by-time series cover: past the traffic window into the
    /// drain, up to the last event.
    pub fn wall_buckets(&self, intervals: usize) -> usize {
        let last = self.last_t.unwrap_or(self.inp.start_ns);
        let n = (last.saturating_sub(self.inp.start_ns) / 1_000_000_000) as usize + 1;
        n.max(intervals)
    }

    /// The per-second rates over `n` seconds.
    pub fn rates(&self, n: usize) -> Rates {
        self.rates.clone().fit(n)
    }

    /// What an external MTA still holds: recipients whose last word was a delay notice (a
    /// `deferred` DSN) — never received, bounced or expired. mailsurge cannot look into its
    /// queue; this is what the DSNs say is there.
    pub fn still_deferred(&self, node: &str) -> Vec<Spooled> {
        self.ledger
            .records
            .iter()
            .filter(|(_, r)| r.deferrals > 0 && r.receipts == 0 && !r.bounced && !r.expired)
            .map(|((msg_id, rcpt), _)| Spooled {
                msg_id: msg_id.clone(),
                rcpt: rcpt.clone(),
                node: node.into(),
                node_alive: true,
            })
            .collect()
    }
}
