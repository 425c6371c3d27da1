//! The live view of a run by **intended second**: what abort conditions (SPEC §12) are judged
//! on while the run plays, before any event file is final.
//!
//! Fed with events as they happen — a submission accepted (with its intended time), an inbox
//! receipt (intended and receive time), an MTA's terminal failure — it keeps, per second of
//! intended time, four counters (16 bytes a second, so a day is 1.4 MB), and for the last few
//! seconds that windowed latency conditions need, a delivery-time histogram. Never a list of
//! messages: memory is bounded by the run's length, not by its volume.
//!
//! Judgeable: a message intended at `t` is known to have met or missed the SLO at
//! `t + delivery_time`, so for the SLO a second is judged only once that deadline has passed for
//! all of it ([`Recent::judged_until`]); from then on its undelivered mail is a miss. Likewise a
//! message is known to be slower than a latency limit `L` at `t + L`: for a latency condition a
//! second is judged once `L` has passed, and its undelivered mail then counts at its age (now −
//! the second's end, a lower bound, itself ≥ `L`) — so a blackhole shows as a latency at least
//! the limit, never as a gap, and mail merely in flight is never counted as slow.
//!
//! What a live view cannot know exactly: the MTAs' terminal events do not carry the intended
//! time, so a failure that leaves a message out of the SLO (a bounce, a drop) is counted in
//! the second it was *reported*, a close stand-in for the second it was intended (most bounce
//! at once) — clamped so a second never excludes more than it accepted. Expiries stay in: an
//! expired message is eligible and late. Receipts must be counted once per (id, recipient) by
//! the caller (the run's `LiveStats` does).

use std::collections::{BTreeMap, VecDeque};

use hdrhistogram::Histogram;

/// Nanoseconds per second: buckets are whole unix seconds of intended time.
pub const NS: u64 = 1_000_000_000;

/// Longest delivery time a live histogram tells apart (ms): a day; longer is clamped.
const MAX_TRACKABLE_MS: u64 = 86_400_000;

/// Live histograms are for a stop decision, not the report: 2 significant digits keep one
/// second's histogram near 20 KB.
const LIVE_SIGFIG: u8 = 2;

/// A bounce or drop reported this far before the earliest intended second still counts in
/// that second; anything older is clock trouble and is ignored.
const MAX_BACKFILL_SECS: u64 = 3600;

/// One second of intended time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Second {
    /// Accepted at submission.
    pub accepted: u32,
    /// Received by an inbox, however late.
    pub delivered: u32,
    /// Received within the SLO's delivery time.
    pub hits: u32,
    /// Left out of the SLO by a failure reported in this second (bounce, drop).
    pub excluded: u32,
}

impl Second {
    /// Eligible for the SLO: accepted and not bounced or dropped.
    pub fn eligible(&self) -> u32 {
        self.accepted.saturating_sub(self.excluded)
    }

    /// Eligible and not (yet) received: late, once the second is judgeable.
    pub fn undelivered(&self) -> u32 {
        self.eligible().saturating_sub(self.delivered)
    }
}

/// How an accepted message ended without a receipt, as the MTA (or a DSN) reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Bounced,
    Expired,
    /// Suppressed by design after acceptance (bounce list, unsubscribed, tenant limit).
    Dropped,
}

/// Running totals over the whole run, for count conditions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub accepted: u64,
    pub rejected_at_submit: u64,
    pub delivered: u64,
    pub bounced: u64,
    pub expired: u64,
    pub suppressed: u64,
}

impl Totals {
    /// Accepted and not yet settled (received, or failed by an MTA).
    pub fn queued(&self) -> u64 {
        self.accepted
            .saturating_sub(self.delivered + self.bounced + self.expired + self.suppressed)
    }
}

/// The per-second view; see the module doc.
#[derive(Debug, Clone)]
pub struct Recent {
    slo_ms: u64,
    /// How many of the latest seconds keep their own histogram (0: no latency kept at all).
    hist_secs: u64,
    /// Seconds below this have been folded into `all`.
    retired_below: u64,
    /// Unix second of `secs[0]`.
    base: u64,
    secs: VecDeque<Second>,
    /// Delivery times (ms) by intended second, for the last `hist_secs` seconds.
    hists: BTreeMap<u64, Histogram<u64>>,
    /// Delivery times (ms) of every older second, folded together.
    all: Histogram<u64>,
    pub totals: Totals,
}

impl Default for Recent {
    fn default() -> Self {
        Recent::new(0, 0)
    }
}

fn histogram() -> Histogram<u64> {
    // Invariant: 1..MAX with 2 significant digits are valid bounds.
    Histogram::new_with_bounds(1, MAX_TRACKABLE_MS, LIVE_SIGFIG).expect("valid histogram bounds")
}

impl Recent {
    /// A view judging the SLO at `slo_ms`, keeping one latency histogram per second for the
    /// latest `hist_secs` seconds and older ones folded together (0: no latency conditions,
    /// nothing kept). A latency condition needs its window plus its limit, plus slack.
    pub fn new(slo_ms: u64, hist_secs: u64) -> Recent {
        Recent {
            slo_ms,
            hist_secs,
            retired_below: 0,
            base: 0,
            secs: VecDeque::new(),
            hists: BTreeMap::new(),
            all: histogram(),
            totals: Totals::default(),
        }
    }

    /// The SLO's delivery time (ms).
    pub fn slo_ms(&self) -> u64 {
        self.slo_ms
    }

    fn slot(&mut self, sec: u64) -> &mut Second {
        if self.secs.is_empty() {
            self.base = sec;
        }
        while sec < self.base {
            self.secs.push_front(Second::default());
            self.base -= 1;
        }
        let i = (sec - self.base) as usize;
        if i >= self.secs.len() {
            self.secs.resize(i + 1, Second::default());
        }
        &mut self.secs[i]
    }

    /// A recipient accepted at submission, intended at `intended_ns`.
    pub fn accepted(&mut self, intended_ns: u64) {
        self.totals.accepted += 1;
        self.slot(intended_ns / NS).accepted += 1;
        self.prune();
    }

    /// A recipient refused at submission.
    pub fn rejected(&mut self) {
        self.totals.rejected_at_submit += 1;
    }

    /// A recipient's first receipt.
    pub fn delivered(&mut self, intended_ns: u64, received_ns: u64) {
        self.totals.delivered += 1;
        let ms = (received_ns.saturating_sub(intended_ns) / 1_000_000).clamp(1, MAX_TRACKABLE_MS);
        let sec = intended_ns / NS;
        let hit = ms <= self.slo_ms;
        let s = self.slot(sec);
        s.delivered += 1;
        s.hits += u32::from(hit);
        if self.hist_secs == 0 {
            return;
        }
        if sec < self.retired_below {
            self.all.saturating_record(ms);
        } else {
            self.hists.entry(sec).or_insert_with(histogram).saturating_record(ms);
        }
    }

    /// An accepted recipient's terminal failure, reported at `at_ns` (see the module doc).
    pub fn failed(&mut self, at_ns: u64, how: Failure) {
        let t = &mut self.totals;
        match how {
            Failure::Bounced => t.bounced += 1,
            Failure::Expired => t.expired += 1,
            Failure::Dropped => t.suppressed += 1,
        }
        let sec = at_ns / NS;
        let known = !self.secs.is_empty() && sec + MAX_BACKFILL_SECS >= self.base;
        if how != Failure::Expired && known {
            // Clamp into the seconds that exist: a failure is never reported before its
            // message was intended, only (slightly) before the harness saw the acceptance.
            let sec = sec.max(self.base).min(self.newest());
            self.slot(sec).excluded += 1;
        }
    }

    /// The latest intended second seen.
    fn newest(&self) -> u64 {
        self.base + self.secs.len().saturating_sub(1) as u64
    }

    /// Folds the seconds older than the kept ones into `all`.
    fn prune(&mut self) {
        let Some(oldest) = self.newest().checked_sub(self.hist_secs) else {
            return;
        };
        self.retired_below = self.retired_below.max(oldest);
        while let Some(e) = self.hists.first_entry().filter(|e| *e.key() < oldest) {
            // Same bounds by construction, so the addition cannot fail.
            let _ = self.all.add(e.remove());
        }
    }

    /// The first unix second not yet judgeable at `now_ns` when a message is decided
    /// `horizon_ms` after its intended time (the SLO's delivery time, or a latency limit):
    /// the exclusive end of what can be judged.
    pub fn judged_until(&self, now_ns: u64, horizon_ms: u64) -> u64 {
        now_ns.saturating_sub(horizon_ms * 1_000_000) / NS
    }

    /// The seconds `[from, to)` that exist.
    fn range(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, &Second)> {
        let base = self.base;
        self.secs
            .iter()
            .enumerate()
            .map(move |(i, s)| (base + i as u64, s))
            .filter(move |(sec, _)| (from..to).contains(sec))
    }

    /// SLO compliance over the intended seconds `[from, to)`: hits ÷ eligible; `None` when
    /// nothing eligible was intended there.
    pub fn slo(&self, from: u64, to: u64) -> Option<f64> {
        let (hits, eligible) = self.range(from, to).fold((0u64, 0u64), |(h, e), (_, s)| {
            (h + u64::from(s.hits), e + u64::from(s.eligible()))
        });
        (eligible > 0).then(|| (hits as f64 / eligible as f64).min(1.0))
    }

    /// The q-quantile of delivery time (ms) over `[from, to)` at `now_ns`, late undelivered
    /// mail counted at its age (a lower bound); `None` when nothing eligible was intended
    /// there. `[from, to)` must be judgeable; a window must lie within the kept seconds, and
    /// `from` 0 takes the folded older seconds too (the whole run so far).
    pub fn latency(&self, q: f64, from: u64, to: u64, now_ns: u64) -> Option<f64> {
        let mut h = if from <= self.base {
            self.all.clone()
        } else {
            histogram()
        };
        for (_, s) in self.hists.range(from..to) {
            // Same bounds by construction, so the addition cannot fail.
            let _ = h.add(s);
        }
        for (sec, s) in self.range(from, to) {
            let late = s.undelivered();
            if late > 0 {
                let age_ms = now_ns.saturating_sub((sec + 1) * NS) / 1_000_000;
                h.saturating_record_n(age_ms.clamp(1, MAX_TRACKABLE_MS), u64::from(late));
            }
        }
        if h.is_empty() {
            return None;
        }
        Some(if q >= 1.0 { h.max() } else { h.value_at_quantile(q) } as f64)
    }

    /// The seconds recorded, `(first, end)`; `None` before any traffic.
    pub fn span(&self) -> Option<(u64, u64)> {
        (!self.secs.is_empty()).then(|| (self.base, self.base + self.secs.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn at(s: f64) -> u64 {
        (T0 as f64 * 1e9 + s * 1e9) as u64
    }

    #[test]
    fn seconds_grow_both_ways_and_count() {
        let mut r = Recent::new(1000, 0);
        r.accepted(at(5.2));
        r.accepted(at(3.1));
        r.delivered(at(3.1), at(3.6));
        r.delivered(at(5.2), at(7.0));
        assert_eq!(r.span(), Some((T0 + 3, T0 + 6)));
        assert_eq!(r.slo(T0, T0 + 10), Some(0.5), "one in time, one late");
        assert_eq!(r.slo(T0 + 4, T0 + 5), None, "an empty second has no value");
        assert_eq!(r.totals.queued(), 0);
    }

    #[test]
    fn bounces_leave_the_slo_but_expiries_stay_in() {
        let mut r = Recent::new(1000, 0);
        for _ in 0..4 {
            r.accepted(at(1.0));
        }
        r.delivered(at(1.0), at(1.2));
        r.failed(at(1.05), Failure::Bounced);
        r.failed(at(1.5), Failure::Expired);
        assert_eq!(r.slo(T0, T0 + 2), Some(1.0 / 3.0), "3 eligible, 1 in time");
        assert_eq!(r.totals.queued(), 1);
        assert_eq!((r.totals.bounced, r.totals.expired), (1, 1));
    }

    #[test]
    fn latency_counts_late_undelivered_at_their_age() {
        let mut r = Recent::new(1000, 10);
        for _ in 0..10 {
            r.accepted(at(2.5));
        }
        for _ in 0..8 {
            r.delivered(at(2.5), at(2.6));
        }
        // Two never arrive: at 10 s they are at least 7 s old (the second ended at 3 s).
        let p99 = r.latency(0.99, T0 + 2, T0 + 3, at(10.0)).unwrap();
        assert!((6_900.0..=7_100.0).contains(&p99), "{p99}");
        let p50 = r.latency(0.5, T0 + 2, T0 + 3, at(10.0)).unwrap();
        assert!((99.0..=101.0).contains(&p50), "{p50}");
        assert_eq!(r.latency(0.5, T0 + 5, T0 + 6, at(10.0)), None);
    }

    #[test]
    fn old_histograms_are_folded_together() {
        let mut r = Recent::new(1000, 5);
        for s in 0..100 {
            r.accepted(at(s as f64));
            r.delivered(at(s as f64), at(s as f64 + 0.1));
        }
        assert!(r.hists.len() <= 6, "{} histograms kept", r.hists.len());
        assert_eq!(r.secs.len(), 100);
        assert_eq!(r.all.len() + r.hists.values().map(|h| h.len()).sum::<u64>(), 100);
        // A late receipt for a folded second still counts for the whole run.
        r.accepted(at(1.0));
        r.delivered(at(1.0), at(99.0));
        let max = r.latency(1.0, 0, T0 + 100, at(100.0)).unwrap();
        assert!((97_500.0..=99_000.0).contains(&max), "{max}");
    }
}
