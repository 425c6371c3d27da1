//! Time series derived from control and message events alone (so a report re-rendered from
//! `events.jsonl` draws the same charts): chaos-action markers and MTA queue depth.

use std::collections::{BTreeMap, HashMap};

use super::accounting::{Ledger, Name, Record, Step};
use crate::events::{Event, Kind};

const NS: u64 = 1_000_000_000;

/// What a chart marker stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// A chaos action began (`fault` event).
    Fault,
    /// A timed chaos action ended (`fault_end` event).
    FaultEnd,
    /// The generator's balancer stopped sending to a node (`evicted`).
    Evicted,
    /// The generator's balancer sends to a node again (`admitted`).
    Admitted,
}

impl MarkKind {
    /// Balancer reactions are consequences of actions, drawn lighter than the actions.
    pub fn is_minor(self) -> bool {
        matches!(self, MarkKind::Evicted | MarkKind::Admitted)
    }
}

/// A moment every chart marks with a labelled vertical line.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// Seconds since the run's offset 0 (`Inputs.start_ns`); negative if before it.
    pub at_s: f64,
    pub label: String,
    pub kind: MarkKind,
}

/// Chart markers from the control events, in time order.
///
/// Every `fault` and `fault_end` gets a marker labelled with its text (`kill region/us-east`,
/// `end block provider/comcast`). Balancer reactions can be many — every node of a killed
/// region is evicted, and health checks may flap — so between two consecutive actions only the
/// *first* eviction and the *first* admission are marked, at their own time (so the gap to the
/// action is the detection delay, SPEC §5); the other nodes reacting in the same span are
/// counted in the label: `evict us-east-1 +2`.
pub fn marks(events: &[Event], start_ns: u64) -> Vec<Mark> {
    let mut control: Vec<&Event> = events.iter().filter(|e| e.event.is_control()).collect();
    control.sort_by_key(|e| e.t); // stable: equal times keep file order
    let at = |e: &Event| (i128::from(e.t) - i128::from(start_ns)) as f64 / NS as f64;
    let mut out: Vec<Mark> = Vec::new();
    let mut fault_text: HashMap<&str, &str> = HashMap::new();
    // Per span between actions: (marker index, first node, other nodes) per reaction kind.
    let mut span: [Option<(usize, String, Vec<String>)>; 2] = [None, None];
    for e in control {
        let text = e.text.as_deref().filter(|t| !t.trim().is_empty());
        let (kind, label) = match e.event {
            Kind::Fault => {
                if let Some(t) = text {
                    fault_text.insert(&e.id, t);
                }
                span = [None, None];
                (
                    MarkKind::Fault,
                    text.map_or_else(|| format!("fault {}", e.id), str::to_string),
                )
            }
            Kind::FaultEnd => {
                span = [None, None];
                let label = match (text, fault_text.get(e.id.as_str())) {
                    (Some(t), _) => t.to_string(),
                    (None, Some(f)) => format!("end {f}"),
                    (None, None) => format!("end {}", e.id),
                };
                (MarkKind::FaultEnd, label)
            }
            Kind::Evicted | Kind::Admitted => {
                let (slot, verb, kind) = match e.event {
                    Kind::Evicted => (0, "evict", MarkKind::Evicted),
                    _ => (1, "admit", MarkKind::Admitted),
                };
                let node = e
                    .node
                    .clone()
                    .or_else(|| e.region.clone())
                    .unwrap_or_else(|| "?".into());
                match &mut span[slot] {
                    Some((i, first, others)) => {
                        if *first != node && !others.contains(&node) {
                            others.push(node);
                            out[*i].label = format!("{verb} {first} +{}", others.len());
                        }
                        continue;
                    }
                    None => {
                        span[slot] = Some((out.len(), node.clone(), Vec::new()));
                        (kind, format!("{verb} {node}"))
                    }
                }
            }
            _ => continue,
        };
        out.push(Mark {
            at_s: at(e),
            label,
            kind,
        });
    }
    out
}

/// MTA queue depth per 1 s bucket of wall time since the run's offset 0.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueDepth {
    /// Mean number of queued messages over each second, all nodes.
    pub overall: Vec<f64>,
    /// The same per region (of the node whose `accepted` event queued the copy).
    pub by_region: BTreeMap<String, Vec<f64>>,
}

/// One copy of a recipient queued at one node.
struct Copy {
    node: Name,
    region: Name,
    start: u64,
    end: Option<u64>,
}

/// Queue depth over `buckets` seconds: a message is queued at a node from its acceptance until
/// the same node's first `delivered`, `bounced`, `expired` or `dropped` for it.
///
/// The acceptance is the node's `accepted` line or the generator's `submitted` (the node's 250,
/// at its `acked` time), whichever came first; the ledger counts the 250 too, because an
/// `accepted` line can die unflushed with a SIGKILLed node, and an external MTA writes none.
///
/// The end is the MTA's own view (`delivered` = it saw the inbox's 250), not the inbox receipt
/// (`received`): the receipt is logged before the 250 reaches the MTA, and if the connection
/// breaks in between the MTA keeps the message queued and retries — it is still in its queue.
/// Copies are tracked per node, so a message accepted twice (resubmitted to another node after
/// an unanswered DATA) is two queued copies, and mail in the spool of a killed node stays
/// queued (stranded) to the end of the series. On a shared queue a copy moves to the node that
/// leases it (a `leased` or `taken_over` event), whose end then closes it. Only for a recipient with no `delivered` event
/// at all — an external MTA, whose deliveries mailsurge sees only as receipts — does the first
/// `received` end its open copies.
///
/// Each bucket holds the time-weighted mean depth over its second (message-seconds queued in
/// it), so a fast MTA reads as rate × latency (Little's law) instead of a sampled 0 or 1.
pub fn queue_depth(ledger: &Ledger, start_ns: u64, buckets: usize) -> QueueDepth {
    let span_end = start_ns.saturating_add(buckets as u64 * NS);
    let mut acc = Accumulator::new(buckets);
    let mut regions: BTreeMap<String, Accumulator> = BTreeMap::new();
    for r in ledger.records.values() {
        let delivered_by_mta = r.steps.iter().any(|s| s.kind == Kind::Delivered);
        for copy in copies(r) {
            let receipt = r.first_received.filter(|x| !delivered_by_mta && *x >= copy.start);
            let end = copy.end.or(receipt).unwrap_or(span_end);
            let (a, b) = (copy.start.saturating_sub(start_ns), end.saturating_sub(start_ns));
            acc.add(a, b);
            if let Some(name) = ledger.names.get(copy.region) {
                let region = regions
                    .entry(name.to_string())
                    .or_insert_with(|| Accumulator::new(buckets));
                region.add(a, b);
            }
        }
    }
    QueueDepth {
        overall: acc.finish(),
        by_region: regions.into_iter().map(|(r, a)| (r, a.finish())).collect(),
    }
}

/// One recipient's queued copies with the ends the MTA reported. Per node, the n-th `accepted`
/// and the n-th `submitted` are the same copy; a 250 without a node (not written by this
/// generator) pairs with any node's acceptance.
fn copies(r: &Record) -> Vec<Copy> {
    let of = |kind: Kind| {
        let mut v: Vec<&Step> = r.steps.iter().filter(|s| s.kind == kind).collect();
        v.sort_by_key(|s| s.t);
        v
    };
    let (accepted, submitted) = (of(Kind::Accepted), of(Kind::Submitted));
    let mut out: Vec<Copy> = accepted
        .iter()
        .map(|a| Copy {
            node: a.node,
            region: a.region,
            start: a.t,
            end: None,
        })
        .collect();
    let mut paired = vec![false; accepted.len()];
    for s in &submitted {
        let same = |i: usize| s.node == Name::NONE || accepted[i].node == s.node;
        match (0..accepted.len()).find(|&i| !paired[i] && same(i)) {
            Some(i) => {
                paired[i] = true;
                out[i].start = out[i].start.min(s.t);
            }
            None => out.push(Copy {
                node: s.node,
                region: s.region,
                start: s.t,
                end: None,
            }),
        }
    }
    out.sort_by_key(|c| c.start);
    let mut ends: Vec<&Step> = r
        .steps
        .iter()
        .filter(|s| s.kind.is_mta_end() || s.kind.is_lease())
        .collect();
    ends.sort_by_key(|s| s.t);
    for e in ends {
        if e.kind.is_lease() {
            // A shared queue's copy is where its lease is: the node that took it (from the
            // queue, or over from a dead node) holds the oldest open copy no other lease moved.
            if !out.iter().any(|c| c.end.is_none() && c.node == e.node) {
                if let Some(c) = out.iter_mut().find(|c| c.end.is_none()) {
                    (c.node, c.region) = (e.node, e.region);
                }
            }
            continue;
        }
        // The node's own oldest open copy; an end without a node closes the oldest of any.
        let mut open = out.iter_mut().filter(|c| c.end.is_none());
        if let Some(c) = open.find(|c| e.node == Name::NONE || c.node == e.node) {
            c.end = Some(e.t.max(c.start));
        }
    }
    out
}

/// Sums intervals into per-second mean occupancy: partial seconds directly, whole seconds
/// through a difference array so a long-stranded message costs O(1).
struct Accumulator {
    partial: Vec<f64>,
    whole: Vec<i64>,
}

impl Accumulator {
    fn new(buckets: usize) -> Accumulator {
        let n = buckets.max(1);
        Accumulator {
            partial: vec![0.0; n],
            whole: vec![0; n + 1],
        }
    }

    /// Adds occupancy over `[s, e)`, ns since offset 0, clipped to the buckets.
    fn add(&mut self, s: u64, e: u64) {
        let n = self.partial.len();
        let e = e.min(n as u64 * NS);
        if e <= s {
            return;
        }
        let (si, ei) = ((s / NS) as usize, (e / NS) as usize);
        let frac = |ns: u64| ns as f64 / NS as f64;
        if si == ei {
            self.partial[si] += frac(e - s);
            return;
        }
        self.partial[si] += frac((si as u64 + 1) * NS - s);
        self.whole[si + 1] += 1;
        self.whole[ei] -= 1;
        if ei < n {
            self.partial[ei] += frac(e - ei as u64 * NS);
        }
    }

    fn finish(self) -> Vec<f64> {
        let mut level = 0;
        let (partial, whole) = (self.partial, self.whole);
        partial
            .into_iter()
            .zip(whole)
            .map(|(p, w)| {
                level += w;
                p + level as f64
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NS;
    const START: u64 = 1_000 * S;

    fn ev(t: u64, id: &str, k: Kind, node: Option<&str>) -> Event {
        let mut e = Event::new(START + t, id, k);
        e.rcpt = Some("u@a.test".into());
        e.node = node.map(Into::into);
        e.region = node.map(|n| n.trim_end_matches(|c: char| c == '-' || c.is_ascii_digit()).into());
        e
    }

    /// The generator's record of a node's 250, acknowledged at `t`.
    fn submitted(t: u64, id: &str, node: &str) -> Event {
        let mut e = ev(t.saturating_sub(1000), id, Kind::Submitted, Some(node));
        e.acked = Some(START + t);
        e
    }

    fn control(t: u64, id: &str, k: Kind, text: Option<&str>, node: Option<&str>) -> Event {
        let mut e = Event::new(START + t, id, k);
        e.text = text.map(Into::into);
        e.node = node.map(Into::into);
        e
    }

    fn depth_of(events: &[Event], start_ns: u64, buckets: usize) -> QueueDepth {
        queue_depth(&Ledger::build(events, &[]), start_ns, buckets)
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn queue_depth_from_hand_made_events() {
        let h = S / 2;
        let events = vec![
            // r.1 at east-1: 0.5 s .. 2.5 s, delivered (receipt first, the MTA's 250 ends it);
            // the generator's record of the same 250 is the same copy.
            ev(h, "r.1", Kind::Accepted, Some("east-1")),
            submitted(h + 1000, "r.1", "east-1"),
            ev(2 * S, "r.1", Kind::Received, None),
            ev(2 * S + h, "r.1", Kind::Delivered, Some("east-1")),
            // r.2 at west-1: 1 s .. 1.5 s, bounced; the deferral does not end it.
            ev(S, "r.2", Kind::Accepted, Some("west-1")),
            ev(S + h / 2, "r.2", Kind::Deferred, Some("west-1")),
            ev(S + h, "r.2", Kind::Bounced, Some("west-1")),
            // r.3 at east-1 from 1 s, never terminal (stranded in a killed node): to the end.
            ev(S, "r.3", Kind::Accepted, Some("east-1")),
            // r.4 accepted twice: west-1's copy is dropped at 2 s, east-1's expires at 3 s.
            ev(0, "r.4", Kind::Accepted, Some("west-1")),
            ev(S, "r.4", Kind::Accepted, Some("east-1")),
            ev(2 * S, "r.4", Kind::Dropped, Some("west-1")),
            ev(3 * S, "r.4", Kind::Expired, Some("east-1")),
            // r.5 via an external MTA: only the generator saw its 250; no `delivered`, so the
            // receipt at 3.5 s ends it.
            submitted(2 * S, "r.5", "external"),
            ev(3 * S + h, "r.5", Kind::Received, None),
            // r.6 at west-1 from 3 s: its `accepted` line died with the node; the 250 counts.
            submitted(3 * S, "r.6", "west-1"),
            // Control events are not messages.
            control(S, "fault.1", Kind::Fault, Some("kill node/east-1"), Some("east-1")),
        ];
        let q = depth_of(&events, START, 4);
        // Second by second: r.1 0.5|1|0.5|0, r.2 0|0.5|0|0, r.3 0|1|1|1, r.4 west 1|1|0|0,
        // r.4 east 0|1|1|0, r.5 0|0|1|0.5, r.6 0|0|0|1.
        assert!(close(&q.overall, &[1.5, 4.5, 3.5, 2.5]), "{:?}", q.overall);
        assert!(close(&q.by_region["east"], &[0.5, 3.0, 2.5, 1.0]), "{:?}", q.by_region);
        assert!(close(&q.by_region["west"], &[1.0, 1.5, 0.0, 1.0]), "{:?}", q.by_region);
        assert!(
            close(&q.by_region["external"], &[0.0, 0.0, 1.0, 0.5]),
            "{:?}",
            q.by_region
        );
        // Event order in the slice does not matter.
        let mut rev = events.clone();
        rev.reverse();
        assert_eq!(depth_of(&rev, START, 4), q);
        // Long intervals go through the difference array; an empty run still has a bucket.
        let long = [ev(h, "r.9", Kind::Accepted, Some("a-1"))];
        let q = depth_of(&long, START, 1000);
        assert!((q.overall[0] - 0.5).abs() < 1e-9 && q.overall[1..].iter().all(|d| *d == 1.0));
        assert_eq!(depth_of(&[], START, 0).overall, vec![0.0]);
    }

    #[test]
    fn marks_from_faults_ends_and_first_reactions() {
        let events = vec![
            control(60 * S, "fault.1", Kind::Fault, Some("kill region/us-east"), None),
            // Two nodes evicted, one of them twice: one marker naming the first, +1.
            control(60 * S + S / 2, "evict", Kind::Evicted, None, Some("us-east-1")),
            control(60 * S + S / 2, "evict", Kind::Evicted, None, Some("us-east-2")),
            control(61 * S, "evict", Kind::Evicted, None, Some("us-east-1")),
            control(
                90 * S,
                "fault.2",
                Kind::Fault,
                Some("block provider/comcast pool shared"),
                None,
            ),
            control(
                120 * S,
                "fault.2",
                Kind::FaultEnd,
                Some("end block provider/comcast"),
                None,
            ),
            control(121 * S, "fault.3", Kind::Fault, Some("restart region/us-east"), None),
            control(125 * S, "admit", Kind::Admitted, None, Some("us-east-2")),
            control(126 * S, "admit", Kind::Admitted, None, Some("us-east-1")),
            control(150 * S, "fault.1", Kind::FaultEnd, None, None), // no text: derived
            ev(61 * S, "r.1", Kind::Accepted, Some("us-west-1")),    // not a control event
        ];
        let mut shuffled = events.clone();
        shuffled.rotate_left(4);
        let m = marks(&shuffled, START);
        let got: Vec<(f64, &str, MarkKind)> = m.iter().map(|m| (m.at_s, m.label.as_str(), m.kind)).collect();
        assert_eq!(
            got,
            [
                (60.0, "kill region/us-east", MarkKind::Fault),
                (60.5, "evict us-east-1 +1", MarkKind::Evicted),
                (90.0, "block provider/comcast pool shared", MarkKind::Fault),
                (120.0, "end block provider/comcast", MarkKind::FaultEnd),
                (121.0, "restart region/us-east", MarkKind::Fault),
                (125.0, "admit us-east-2 +1", MarkKind::Admitted),
                (150.0, "end kill region/us-east", MarkKind::FaultEnd),
            ]
        );
        assert!(m.iter().filter(|m| m.kind.is_minor()).count() == 2);
        // Before offset 0 is negative (charts leave it out); no control events, no marks.
        assert_eq!(marks(&events[..1], START + 61 * S)[0].at_s, -1.0);
        assert!(marks(&events[10..], START).is_empty());
    }

    #[test]
    fn a_shared_queue_copy_moves_with_its_lease_and_ends_at_the_lessees_end() {
        let events = vec![
            // Accepted by east-1, leased by west-1, which delivers it at 2 s.
            ev(0, "q.1", Kind::Accepted, Some("east-1")),
            ev(S / 2, "q.1", Kind::Leased, Some("west-1")),
            ev(2 * S, "q.1", Kind::Delivered, Some("west-1")),
            // Leased by east-1, which dies; west-1 takes it over and delivers it at 3 s.
            ev(0, "q.2", Kind::Accepted, Some("east-1")),
            ev(S / 2, "q.2", Kind::Leased, Some("east-1")),
            ev(2 * S, "q.2", Kind::TakenOver, Some("west-1")),
            ev(3 * S, "q.2", Kind::Delivered, Some("west-1")),
        ];
        let d = depth_of(&events, START, 5);
        assert!(close(&d.overall, &[2.0, 2.0, 1.0, 0.0, 0.0]), "{:?}", d.overall);
        // Both ended with their lessee's delivery, in the lessee's region.
        assert!(
            close(&d.by_region["west"], &[2.0, 2.0, 1.0, 0.0, 0.0]),
            "{:?}",
            d.by_region
        );
    }
}
