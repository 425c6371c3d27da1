//! Where a delivery goes and where it comes from: which MX host of a domain's route list,
//! which egress pool, which source address in it — plus what the node has learned from
//! recent failures (hosts that refuse connections, domains that block a pool).
//!
//! Kept apart from the queue manager because these are routing *decisions* with their own
//! small memory; the queue only asks.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::lock;

/// How long a route address that refused a connection is skipped before it is tried again
/// (production MTAs remember a dead MX host for minutes; seconds suit a compressed day).
pub const ROUTE_DOWN_HOLD: Duration = Duration::from_secs(5);

/// How long fresh mail for a domain follows a `reroute` without `for:` before the original pool
/// is tried again.
pub const REROUTE_HOLD: Duration = Duration::from_secs(30);

pub struct Routing {
    egress_pools: BTreeMap<String, Vec<IpAddr>>,
    default_pool: Option<String>,
    /// Round-robin position over a pool's addresses.
    pool_rr: AtomicUsize,
    /// Route addresses that refused a connection, until when to skip them.
    routes_down: Mutex<HashMap<SocketAddr, Instant>>,
    /// Domain → the pool a `reroute` chose, and until when fresh mail goes there directly.
    reroutes: Mutex<HashMap<String, (String, Instant)>>,
}

impl Routing {
    pub fn new(egress_pools: &BTreeMap<String, Vec<IpAddr>>, default_pool: Option<String>) -> Routing {
        Routing {
            egress_pools: egress_pools.clone(),
            default_pool,
            pool_rr: AtomicUsize::new(0),
            routes_down: Mutex::new(HashMap::new()),
            reroutes: Mutex::new(HashMap::new()),
        }
    }

    /// The route address to use: the first from `start` (in list order, wrapping) that has not
    /// refused a connection in the last [`ROUTE_DOWN_HOLD`]; the `start` one if all have.
    pub fn pick_route(&self, addrs: &[SocketAddr], start: usize) -> SocketAddr {
        let now = Instant::now();
        let down = lock(&self.routes_down);
        (0..addrs.len())
            .map(|k| addrs[(start + k) % addrs.len()])
            .find(|a| down.get(a).is_none_or(|until| *until <= now))
            .unwrap_or(addrs[start % addrs.len()])
    }

    /// `addr` refused a connection: skip it for a while.
    pub fn mark_down(&self, addr: SocketAddr) {
        lock(&self.routes_down).insert(addr, Instant::now() + ROUTE_DOWN_HOLD);
    }

    /// A `reroute` moved `domain`'s mail to `pool`; fresh mail follows for `hold`.
    pub fn note_reroute(&self, domain: &str, pool: &str, hold: Duration) {
        self.note_reroute_at(domain, pool, hold, Instant::now())
    }

    /// [`Routing::note_reroute`] at a given time (virtual in `mailsurge sim`).
    pub fn note_reroute_at(&self, domain: &str, pool: &str, hold: Duration, now: Instant) {
        lock(&self.reroutes).insert(domain.to_string(), (pool.to_string(), now + hold));
    }

    /// The pool a recent `reroute` moved this domain's mail to, while it holds: the block that
    /// caused it most likely still stands, so fresh mail skips the detour through a refusal
    /// (as PowerMTA's and KumoMTA's per-destination backoff rules do).
    pub fn reroute_hint(&self, domain: &str) -> Option<String> {
        self.reroute_hint_at(domain, Instant::now())
    }

    /// [`Routing::reroute_hint`] at a given time (virtual in `mailsurge sim`).
    pub fn reroute_hint_at(&self, domain: &str, now: Instant) -> Option<String> {
        let mut hints = lock(&self.reroutes);
        match hints.get(domain) {
            Some((pool, until)) if *until > now => Some(pool.clone()),
            Some(_) => {
                hints.remove(domain);
                None
            }
            None => None,
        }
    }

    /// The pool a job sends from: its override, the configured default, `shared`, or the first.
    pub fn pool_name<'a>(&'a self, pool: Option<&'a str>) -> Option<&'a str> {
        let pools = &self.egress_pools;
        pool.or(self.default_pool.as_deref())
            .or_else(|| pools.contains_key("shared").then_some("shared"))
            .or_else(|| pools.keys().next().map(String::as_str))
    }

    /// The source address for the next connection: round-robin over the pool's addresses.
    pub fn egress_ip(&self, pool: Option<&str>) -> Option<IpAddr> {
        let ips = self.egress_pools.get(self.pool_name(pool)?)?;
        (!ips.is_empty()).then(|| ips[self.pool_rr.fetch_add(1, Ordering::Relaxed) % ips.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refusing_hosts_are_skipped_and_reroutes_remembered() {
        let pools: BTreeMap<String, Vec<IpAddr>> = [
            (
                "shared".to_string(),
                vec!["127.0.1.1".parse().unwrap(), "127.0.1.2".parse().unwrap()],
            ),
            ("dedicated".to_string(), vec!["127.0.1.10".parse().unwrap()]),
        ]
        .into();
        let r = Routing::new(&pools, None);
        let mx: Vec<SocketAddr> = vec!["127.0.2.1:25".parse().unwrap(), "127.0.12.1:25".parse().unwrap()];
        assert_eq!(r.pick_route(&mx, 0), mx[0]);
        r.mark_down(mx[0]);
        assert_eq!(r.pick_route(&mx, 0), mx[1], "the refusing primary is skipped");
        r.mark_down(mx[1]);
        assert_eq!(r.pick_route(&mx, 0), mx[0], "all down: back to the job's own");
        tokio::time::advance(ROUTE_DOWN_HOLD + Duration::from_millis(1)).await;
        assert_eq!(r.pick_route(&mx, 1), mx[1]);

        assert_eq!(r.pool_name(None), Some("shared"));
        let a = r.egress_ip(None).unwrap();
        assert_ne!(r.egress_ip(None).unwrap(), a, "round robin over the pool");
        assert_eq!(r.reroute_hint("comcast.net"), None);
        r.note_reroute("comcast.net", "dedicated", Duration::from_secs(30));
        assert_eq!(r.reroute_hint("comcast.net").as_deref(), Some("dedicated"));
        assert_eq!(r.reroute_hint("att.net"), None);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(r.reroute_hint("comcast.net"), None, "the hold ran out");
    }
}
