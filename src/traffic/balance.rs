//! Client-side load balancing of submissions over MTA nodes, the way Shivneri spreads mail over
//! providers (../shared/background: heartbeats, eviction on failure, re-admission on recovery,
//! weights): the generator keeps a health view of every node and sends only to healthy ones.
//!
//! - **Eviction** is immediate on evidence: a failed submission connection or transaction, or
//!   a failed heartbeat. A dead node costs at most one failed attempt per connection.
//! - **Re-admission** needs [`ADMIT_AFTER`] heartbeats in a row to pass, so a node that is
//!   still starting (recovering its spool) is not flooded the moment it accepts a TCP
//!   connection.
//! - **Weights**: each node carries its region's weight divided by the region's node count;
//!   a connection worker maps to a point on the cumulative weight of the healthy nodes, so
//!   load spreads by weight and moves only when the healthy set changes.
//!
//! Every eviction and re-admission is an `evicted`/`admitted` event: the failover metrics'
//! detection time is measured from them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::target::Target;
use crate::events::{now_ns, Event, Kind};
use crate::smtp::{Client, ClientConfig};
use crate::sync::lock;

/// Heartbeat period per node.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
/// A heartbeat that takes longer than this fails (a blackholed or wedged node).
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive passing heartbeats before an evicted node gets traffic again.
pub const ADMIT_AFTER: u32 = 2;

#[derive(Debug, Clone)]
struct Slot {
    target: Target,
    weight: f64,
    healthy: bool,
    passes: u32,
}

/// The generator's view of which nodes may take submissions.
pub struct Balancer {
    slots: Mutex<Vec<Slot>>,
    /// Bumped on every health change, so workers notice cheaply that they should re-pick.
    epoch: AtomicU64,
    /// Evict on failure only while heartbeats run: without them nothing would re-admit a
    /// node, and `gen`'s single target must never be dropped for one failed connection.
    evicting: AtomicBool,
    events: mpsc::UnboundedSender<Event>,
}

impl Balancer {
    /// `weights[i]` is target i's share (e.g. region weight / nodes in the region).
    pub fn new(targets: Vec<Target>, weights: Vec<f64>, events: mpsc::UnboundedSender<Event>) -> Arc<Balancer> {
        let slots = targets
            .into_iter()
            .zip(weights.into_iter().chain(std::iter::repeat(1.0)))
            .map(|(target, weight)| Slot {
                target,
                weight: if weight.is_finite() && weight > 0.0 {
                    weight
                } else {
                    1.0
                },
                healthy: true,
                passes: 0,
            })
            .collect();
        Arc::new(Balancer {
            slots: Mutex::new(slots),
            epoch: AtomicU64::new(0),
            evicting: AtomicBool::new(false),
            events,
        })
    }

    pub fn len(&self) -> usize {
        lock(&self.slots).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes whenever a node is evicted or admitted.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The healthy target for connection worker `worker` of `workers`: index and address.
    /// `None` while every node is evicted.
    pub fn pick(&self, worker: usize, workers: usize) -> Option<(usize, SocketAddr)> {
        let slots = lock(&self.slots);
        let i = pick_weighted(slots.iter().map(|s| (s.weight, s.healthy)), worker, workers)?;
        Some((i, slots[i].target.addr))
    }

    /// The node and region of target `i`.
    pub fn target(&self, i: usize) -> Option<Target> {
        lock(&self.slots).get(i).map(|s| s.target.clone())
    }

    /// Evidence that target `i` is down: evict it now.
    pub fn failed(&self, i: usize, why: &str) {
        if !self.evicting.load(Ordering::Acquire) {
            return;
        }
        let mut slots = lock(&self.slots);
        let Some(s) = slots.get_mut(i) else { return };
        s.passes = 0;
        if s.healthy {
            s.healthy = false;
            self.epoch.fetch_add(1, Ordering::AcqRel);
            self.emit(Kind::Evicted, &s.target, why);
        }
    }

    /// A heartbeat to target `i` passed.
    fn passed(&self, i: usize) {
        let mut slots = lock(&self.slots);
        let Some(s) = slots.get_mut(i) else { return };
        if s.healthy {
            return;
        }
        s.passes += 1;
        if s.passes >= ADMIT_AFTER {
            s.healthy = true;
            s.passes = 0;
            self.epoch.fetch_add(1, Ordering::AcqRel);
            self.emit(Kind::Admitted, &s.target, "heartbeats pass");
        }
    }

    fn emit(&self, kind: Kind, t: &Target, why: &str) {
        let mut e = Event::new(now_ns(), format!("lb.{}", t.node), kind);
        e.node = Some(t.node.clone());
        e.region = Some(t.region.clone());
        e.text = Some(why.to_string());
        let _ = self.events.send(e);
    }

    /// Heartbeats every node until `until`: an SMTP greeting and EHLO within
    /// [`HEARTBEAT_TIMEOUT`] pass; anything else evicts.
    pub async fn heartbeats(self: Arc<Self>, until: Instant) {
        let cfg = ClientConfig {
            helo: "heartbeat.mailsurge.test".into(),
            ..ClientConfig::default()
        };
        self.evicting.store(true, Ordering::Release);
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while Instant::now() < until {
            tick.tick().await;
            let addrs: Vec<SocketAddr> = lock(&self.slots).iter().map(|s| s.target.addr).collect();
            let mut checks = tokio::task::JoinSet::new();
            for (i, addr) in addrs.into_iter().enumerate() {
                let cfg = cfg.clone();
                checks.spawn(async move {
                    let ok = match tokio::time::timeout(HEARTBEAT_TIMEOUT, Client::connect(addr, &cfg)).await {
                        Ok(Ok(c)) => {
                            c.quit().await;
                            Ok(())
                        }
                        Ok(Err(e)) => Err(format!("heartbeat: {e}")),
                        Err(_) => Err(format!("heartbeat: no answer within {HEARTBEAT_TIMEOUT:?}")),
                    };
                    (i, ok)
                });
            }
            while let Some(done) = checks.join_next().await {
                // A heartbeat task cannot panic short of a bug; skip it rather than stop.
                let Ok((i, ok)) = done else { continue };
                match ok {
                    Ok(()) => self.passed(i),
                    Err(why) => self.failed(i, &why),
                }
            }
        }
    }
}

/// The target of connection worker `worker` of `workers` among `(weight, healthy)` targets:
/// the worker's point on the cumulative weight of the healthy ones, evenly spaced and offset to
/// sit mid-interval, so load spreads by weight and moves only when the healthy set changes.
/// `None` while none is healthy. (`mailsurge sim` places its workers with the same function.)
pub fn pick_weighted(
    targets: impl Iterator<Item = (f64, bool)> + Clone,
    worker: usize,
    workers: usize,
) -> Option<usize> {
    let total: f64 = targets.clone().filter(|t| t.1).map(|t| t.0).sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = (worker as f64 + 0.5) / workers.max(1) as f64 * total;
    let mut last = None;
    for (i, (w, _)) in targets.enumerate().filter(|(_, t)| t.1) {
        if x < w {
            return Some(i);
        }
        x -= w;
        last = Some(i);
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(node: &str, port: u16) -> Target {
        Target {
            node: node.into(),
            region: node.split('-').next().unwrap().into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    #[test]
    fn weighted_spread_evict_and_admit() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let b = Balancer::new(vec![t("a-1", 1), t("a-2", 2), t("b-1", 3)], vec![0.25, 0.25, 0.5], tx);
        b.evicting.store(true, Ordering::Release);
        let count = |b: &Balancer| {
            let mut n = [0; 3];
            for w in 0..64 {
                n[b.pick(w, 64).unwrap().0] += 1;
            }
            n
        };
        assert_eq!(count(&b), [16, 16, 32]);
        let e0 = b.epoch();
        b.failed(2, "connection refused");
        b.failed(2, "again"); // already evicted: no second event
        assert_ne!(b.epoch(), e0);
        assert_eq!(count(&b), [32, 32, 0]);
        b.passed(2);
        assert_eq!(count(&b)[2], 0, "one heartbeat is not enough to re-admit");
        b.passed(2);
        assert_eq!(count(&b), [16, 16, 32]);
        let kinds: Vec<Kind> = std::iter::from_fn(|| rx.try_recv().ok()).map(|e| e.event).collect();
        assert_eq!(kinds, vec![Kind::Evicted, Kind::Admitted]);
        for i in 0..3 {
            b.failed(i, "down");
        }
        assert_eq!(b.pick(0, 64), None);
    }
}
