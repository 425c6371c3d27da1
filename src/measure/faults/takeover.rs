//! Who held a message on a shared queue (`spool: nats`, SPEC §9) when a node died, and when a
//! survivor took it over.
//!
//! On a shared queue a message is a node's only while that node holds its lease: from its
//! `leased` (or `taken_over`) event until that node's next `deferred` (the job went back to the
//! queue to wait for its retry) or terminal event. A node that dies stops renewing its leases,
//! and each of its messages goes to the next node that pulls once the lease ran out — whose
//! event is then `taken_over` (the queue's delivery count says so).
//!
//! - **held at a kill**: recipients whose lease a node of the target held at the kill, by the
//!   killed node's own log; or — its log's last lines die with it — whose next hold after the
//!   kill is a `taken_over` before the next kill of a node, while no other node held them. A
//!   recipient the inbox received before the kill and nobody held again is not held: its
//!   holder's end line died with it, its acknowledgement did not.
//! - **takeover** (`takeover_s`): kill → the last of those picked up again (the first hold
//!   after the kill, by any node); `None` when nothing was held or some of it was never picked
//!   up (it is then `held_undelivered`, and stranded or lost at the end).

use super::context::Ctx;
use crate::events::Kind;
use crate::measure::accounting::{Name, Record};

/// The node holding `r`'s lease at `t` by the logs, if any (`None` also for mail never
/// leased: a local spool's, or a queue's not yet taken).
pub fn holder_at(r: &Record, t: u64) -> Option<Name> {
    let mut holder = None;
    let mut steps: Vec<_> = r
        .steps
        .iter()
        .filter(|s| s.t < t && (s.kind.is_lease() || s.kind == Kind::Deferred || s.kind.is_mta_end()))
        .collect();
    steps.sort_by_key(|s| s.t);
    for s in steps {
        match s.kind {
            k if k.is_lease() => holder = Some(s.node),
            // The holder's own deferral or end lets go; another node's line says nothing of it.
            _ if holder == Some(s.node) => holder = None,
            _ => {}
        }
    }
    holder
}

/// Whether fault `i` (a kill of a region or node, on a shared queue) held `r` at the kill, and
/// if so when it was picked up again (`Some(None)`: never).
pub fn held(cx: &Ctx, r: &Record, i: usize) -> Option<Option<u64>> {
    let a = &cx.faults[i];
    let t0 = a.ev.t;
    let holder = holder_at(r, t0);
    let by_target = holder.is_some_and(|h| cx.covers(a.f, cx.ledger.names.get(h), None));
    let mut after: Vec<_> = r.steps.iter().filter(|s| s.kind.is_lease() && s.t >= t0).collect();
    after.sort_by_key(|s| s.t);
    let next = after.first();
    // Delivered before the kill with the holder's end line lost in it (its log's last lines
    // die with it), and not handed out again: the ack got out, nothing was left to take over.
    let done_before = r.first_received.is_some_and(|t| t < t0);
    if by_target && !(done_before && next.is_none()) {
        return Some(next.map(|s| s.t));
    }
    // The kill's own log may have lost the hold: a takeover after it (before another kill
    // could be the cause) of mail no surviving node was holding is this kill's.
    let next_kill = cx.next_kill_after(i).unwrap_or(u64::MAX);
    match next {
        Some(s) if holder.is_none() && s.kind == Kind::TakenOver && s.t < next_kill => Some(Some(s.t)),
        _ => None,
    }
}
