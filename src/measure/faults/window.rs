//! The counts of one action's window: mail delayed past the SLO, lost and duplicated — and for
//! a kill of a region or node, the mail the killed node's spool held at the kill (module doc of
//! `faults` has the definitions).

use super::context::Ctx;
use super::{is_mta_kill, provider_target, Held};
use crate::measure::accounting::Class;

/// What [`count`] found.
#[derive(Debug, Default)]
pub struct Counts {
    pub delayed: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub held: Option<Held>,
    /// Shared queue: seconds from the kill to the last pick-up of what it held (`None`: it
    /// held nothing, or something was never picked up).
    pub takeover_s: Option<f64>,
}

/// Counts fault `i`'s window `[fault, w_end)`; `restore` is the matching restore's time.
pub fn count(cx: &Ctx, i: usize, w_end: u64, restore: Option<u64>) -> Counts {
    let a = &cx.faults[i];
    let t0 = a.ev.t;
    let slo_us = (cx.inp.slo_ms * 1000.0) as u64;
    let is_kill = is_mta_kill(a.f);
    let provider = provider_target(a.f);
    let mut c = Counts {
        held: is_kill.then(Held::default),
        ..Counts::default()
    };
    // The latest pick-up of shared-queue mail the kill held; `None` inside once one never was.
    let mut last_pickup: Option<Option<u64>> = None;
    for ((_, rcpt), r) in cx.ledger.generated() {
        // A provider's fault is about that provider's mail only; faults overlap in time, and
        // another provider's trouble in the same window is not this one's.
        if provider.is_some_and(|p| cx.inp.provider_of(rcpt) != Some(p)) {
            continue;
        }
        let in_window = r.intended.is_some_and(|t| t >= t0 && t < w_end);
        // A killed node's own mail is the fault's too, whenever it was intended: what it had
        // not finished is delayed until the restore, and what it had delivered but not yet
        // struck from its spool is delivered again (a duplicate).
        // On a shared queue the node held what it had leased; accepted mail went to the queue.
        let held = is_kill
            && match cx.shared {
                true => match super::takeover::held(cx, r, i) {
                    Some(picked) => {
                        last_pickup = Some(match (last_pickup, picked) {
                            (Some(Some(l)), Some(p)) => Some(l.max(p)),
                            (None, p) => p,
                            _ => None,
                        });
                        true
                    }
                    None => false,
                },
                false => r.accepts().any(|s| {
                    let (n, reg) = cx.place(s);
                    s.t < t0 && cx.kill_of(n, reg, s.t) == Some(i)
                }),
            };
        let first_terminal = r.first_terminal();
        let unfinished = held && first_terminal.is_none_or(|t| t >= t0);
        if (in_window || unfinished) && r.eligible() && r.delivery_us().is_none_or(|us| us > slo_us) {
            c.delayed += 1;
        }
        if in_window || held {
            c.duplicates += u64::from(r.receipts.saturating_sub(1));
        }
        let class = r.class();
        if !is_kill {
            c.lost += u64::from(in_window && class == Class::Lost);
            continue;
        }
        // Owned: first accepted by a node this kill was the first to hit after that.
        let owned = class == Class::Lost
            && r.accepts().min_by_key(|s| s.t).is_some_and(|s| {
                let (n, reg) = cx.place(s);
                let node = n.or(r.node.as_deref());
                cx.kill_of(node, reg.or(r.region.as_deref()), s.t) == Some(i)
            });
        c.lost += u64::from((in_window && class == Class::Lost) || owned);
        // Held: accepted by a node of the target, killed before it finished with it.
        if !unfinished {
            continue;
        }
        let s = c.held.as_mut().expect("kill");
        match r.first_received {
            Some(rx) if restore.is_some_and(|rs| rx >= rs) => s.delivered_after_restore += 1,
            Some(_) => {}
            None if first_terminal.is_none() => s.undelivered += 1,
            None => {}
        }
    }
    c.takeover_s = last_pickup.flatten().map(|t| t.saturating_sub(t0) as f64 / super::NS);
    c
}
