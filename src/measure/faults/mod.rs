//! Failover metrics per chaos action (SPEC §5 "Failover metrics per chaos action", summary.json
//! `faults`, SPEC §6), computed from the run's events alone like every other number.
//!
//! The chaos levers record each action as a `fault` control event (`id` `fault.<n>`, its typed
//! fields in `fault`: action, target kind and name, mode, pool, mx, add) and the end of a `for:`
//! window as a `fault_end` with the same id; the generator's balancer records `evicted` /
//! `admitted` per node. Where SPEC §5 is silent the definitions below are ours:
//!
//! - **detection** (`detection_s`): fault → the first evidence that the system reacted, at or
//!   after the fault; `None` if there never was any.
//!   - `kill` (or any other action) of `region/R` / `node/N`: the first `evicted` of a node of the
//!     target (the balancer stopped sending there).
//!   - `kill` / `block` / `latency` of `provider/P`: the first `deferred` for P (the event's
//!     `provider`, else the recipient domain's provider) — any deferral after the fault counts as
//!     the MTA noticing.
//!   - `restore region/R` / `restore node/N`: the first `admitted` of a node of the target;
//!     `restore provider/P`: the first `received` at P.
//! - **recovery** (`recovery_s`): fault → start of the first run of 10 consecutive 1 s intervals
//!   (by intended time, the run's per-second series) whose SLO compliance is ≥ the target
//!   (1e-9 tolerance), searching from the interval that contains the fault. An interval with no
//!   eligible messages complies. If the first 10 intervals already comply (compliance never
//!   dipped) it is 0; a run starting in the fault's own interval counts from the fault, so never
//!   below 0. With fewer than 10 intervals left before the end of the traffic window, the run is
//!   the remaining intervals, which must all comply. `None` if compliance never came back, or if
//!   the fault happened after the traffic window (no intended-time interval to judge by). A dip
//!   that starts only after 10 compliant seconds is not attributed to the fault.
//! - **window**: intended times in `[fault, fault + recovery_s)`; to the end of the traffic
//!   window if `recovery_s` is `None`; and at least until the action's end — its `fault_end`, or
//!   for an action without one the first later `restore` of the same target (for a killed node,
//!   also a `restore` of its region).
//! - For a `provider/X` target every count below covers mail to that provider only.
//! - **delayed**: eligible recipients delivered later than the SLO (delivery time from intended
//!   time > `slo.delivery_time`) or not at all, that were intended in the window or — for a
//!   `kill` — held unfinished by a killed node when it died.
//! - **lost**: recipients of class `lost` intended in the window, plus — for a `kill` of a region
//!   or node — `lost` recipients owned by (first accepted by) a node of the target before the
//!   kill, whichever their intended time. Each is counted once per action; a recipient owned by
//!   a node killed twice is attributed to the first kill after its acceptance.
//! - **duplicates**: extra receipts (receipts − 1) of recipients intended in the window or —
//!   for a `kill` — accepted by a killed node before it died (delivered, but not yet struck
//!   from its spool, so the restarted node delivers them again).
//! - **held** (`kill` of a region or node only) — mail the killed node's spool held at the
//!   kill: recipients accepted by a node of the target before the kill (and after any earlier
//!   kill of that node) with no terminal event (`delivered`, `received`, `bounced`, `expired`,
//!   `dropped`) before it. On a shared queue (`spool: nats`): recipients whose lease a node of
//!   the target held at the kill (`takeover.rs`).
//! - **takeover** (`takeover_s`, shared queue, `kill` of a region or node): kill → the last of
//!   the held recipients picked up again by a node (its first `leased` after the kill); `None`
//!   if nothing was held or some of it never was. **held_delivered_after_restore**: of those, first received only
//!   after the matching `restore`. **held_undelivered**: never received nor any terminal event
//!   (still queued in a spool, or lost). Not `counts.stranded`, which is mail still in a *dead*
//!   node's spool at the end of the run.

mod context;
mod recovery;
mod takeover;
mod window;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

use context::{Action, Ctx};
pub use recovery::{recovery, RECOVERY_RUN_S};

use super::fold::Fold;
use super::{Inputs, Point};
use crate::events::{Kind, TargetKind};

const NS: f64 = 1e9;

/// The failover metrics of one chaos action.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultMetrics {
    /// `fault.<n>`, the id of its control events.
    pub id: String,
    /// Seconds since the run's offset 0 (`Inputs.start_ns`).
    pub at_s: f64,
    /// `kill`, `restore`, `block`, `latency`.
    pub action: String,
    /// `region/<name>`, `node/<name>` or `provider/<name>`.
    pub target: String,
    /// `refuse` / `blackhole` / `reset` of a provider kill.
    pub mode: Option<String>,
    /// Egress pool of a `block`.
    pub pool: Option<String>,
    /// Added latency of a `latency` action, as written (`500ms`).
    pub add: Option<String>,
    /// MX host (1-based) of a provider kill.
    pub mx: Option<u32>,
    /// When the action ended: its `fault_end`, or the matching `restore` (seconds since offset 0).
    pub end_s: Option<f64>,
    pub detection_s: Option<f64>,
    pub recovery_s: Option<f64>,
    /// End of the window the counts cover, seconds since offset 0 (intended time).
    pub window_end_s: f64,
    pub delayed: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// `kill` of a region or node only.
    pub held: Option<Held>,
    /// `kill` of a region or node on a shared queue: kill → the last of what its nodes held
    /// picked up again (`None` if nothing was held or some of it never was).
    pub takeover_s: Option<f64>,
}

/// Mail in a killed node's spool at the kill.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// First received only after the matching `restore`.
    pub delivered_after_restore: u64,
    /// Never received and no terminal event at all (queued or lost at the end).
    pub undelivered: u64,
}

/// The failover metrics of every chaos action of the run, in time order. `series` is the run's
/// overall per-second series by intended time (`Analysis.series`). A `fault` event without
/// typed fields (never written by this version; old files are upgraded when read) is skipped.
pub fn fault_metrics(fold: &Fold<'_>, series: &[Point], inp: &Inputs) -> Vec<FaultMetrics> {
    let mut faults: Vec<Action<'_>> = fold
        .control
        .iter()
        .filter(|e| e.event == Kind::Fault)
        .filter_map(|ev| ev.fault.as_deref().map(|f| Action { ev, f }))
        .collect();
    if faults.is_empty() {
        return Vec::new();
    }
    faults.sort_by_key(|a| a.ev.t);
    let cx = Ctx::new(fold, &faults, inp);
    let traffic_end = inp.start_ns + (inp.duration_s.max(0.0) * NS) as u64;
    (0..faults.len())
        .map(|i| {
            let a = &faults[i];
            let t0 = a.ev.t;
            let restore = cx.restore_after(i);
            let end = cx.end_of(a).or(restore);
            let at_s = cx.offset_s(t0);
            let recovery_s = recovery(series, at_s, inp.slo_target);
            let mut w_end = match recovery_s {
                Some(r) => t0 + (r * NS).round() as u64,
                None => traffic_end.max(t0),
            };
            if let Some(e) = end {
                w_end = w_end.max(e);
            }
            let counts = window::count(&cx, i, w_end, restore);
            FaultMetrics {
                id: a.ev.id.clone(),
                at_s,
                action: a.f.action.clone(),
                target: a.f.target_path(),
                mode: a.f.mode.clone(),
                pool: a.f.pool.clone(),
                add: a.f.add.clone(),
                mx: a.f.mx,
                end_s: end.map(|t| cx.offset_s(t)),
                detection_s: cx.detection(a).map(|t| t.saturating_sub(t0) as f64 / NS),
                recovery_s,
                window_end_s: cx.offset_s(w_end),
                delayed: counts.delayed,
                lost: counts.lost,
                duplicates: counts.duplicates,
                held: counts.held,
                takeover_s: counts.takeover_s,
            }
        })
        .collect()
}

/// A `kill` of a region or node: the faults whose victims' mail is theirs to account for.
fn is_mta_kill(f: &crate::events::Fault) -> bool {
    f.action == "kill" && f.is_mta()
}

/// A provider target's name.
fn provider_target(f: &crate::events::Fault) -> Option<&str> {
    (f.target_kind == TargetKind::Provider).then_some(f.target.as_str())
}
