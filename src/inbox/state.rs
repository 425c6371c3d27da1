//! The state a mock provider keeps between decisions: token buckets (GCRA) per source IP,
//! open connections per source IP, the greylist, per-connection tarpits, and occurrence
//! counters that make seeded probabilities independent of connection ordering.
//!
//! Each table sits behind its own mutex and is only touched by rules that need it, so a
//! profile without state-keeping rules costs no locking on the hot path. Tables are bounded:
//! they are pruned when they grow past [`MAX_ENTRIES`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::lock;

/// Largest size of any state table before it is pruned; ~100 bytes per entry.
pub const MAX_ENTRIES: usize = 1_000_000;

#[derive(Default)]
pub struct State {
    /// (rule index, source IP) → GCRA theoretical arrival time.
    gcra: Mutex<HashMap<(usize, IpAddr), Instant>>,
    /// Open connections per source IP.
    conns: Mutex<HashMap<IpAddr, u32>>,
    /// (rule index, triple hash) → first time the triple was seen.
    grey: Mutex<HashMap<(usize, u64), Instant>>,
    /// Connections that hit a tarpit, and by how much their replies are slowed.
    tarpit: Mutex<HashMap<u64, Duration>>,
    /// Entries in `tarpit`, so the common case (none) skips the lock on every reply.
    tarpits: std::sync::atomic::AtomicUsize,
    /// How often a decision key was seen, so a retry draws a fresh random number.
    seen: Mutex<HashMap<u64, u32>>,
}

impl State {
    /// Per-(rule, source IP) GCRA ([`crate::gcra`]): true when the request is over the limit.
    pub fn over_rate(&self, rule: usize, ip: IpAddr, rate: f64, burst: u32, now: Instant) -> bool {
        let mut g = lock(&self.gcra);
        if g.len() >= MAX_ENTRIES {
            g.retain(|_, tat| *tat > now);
        }
        crate::gcra::over_limit(g.entry((rule, ip)).or_insert(now), now, rate, burst)
    }

    /// A connection opened; returns how many are open from that IP now (this one included).
    pub fn connected(&self, ip: IpAddr) -> u32 {
        let mut c = lock(&self.conns);
        let n = c.entry(ip).or_insert(0);
        *n += 1;
        *n
    }

    pub fn open_connections(&self, ip: IpAddr) -> u32 {
        lock(&self.conns).get(&ip).copied().unwrap_or(0)
    }

    pub fn disconnected(&self, ip: IpAddr, conn_id: u64) {
        let mut c = lock(&self.conns);
        if let Some(n) = c.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(&ip);
            }
        }
        drop(c);
        if self.tarpits.load(std::sync::atomic::Ordering::Relaxed) > 0 && lock(&self.tarpit).remove(&conn_id).is_some()
        {
            self.tarpits.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Greylisting: true (defer) on the first sight of a triple and until `retry_after` has
    /// passed since then; false (let through) afterwards.
    pub fn greylisted(&self, rule: usize, triple: u64, retry_after: Duration, now: Instant) -> bool {
        let mut g = lock(&self.grey);
        if g.len() >= MAX_ENTRIES {
            // Forget triples old enough to have passed long ago; they would pass again anyway
            // only after another full retry_after, which errs on the realistic side.
            g.retain(|_, first| now.duration_since(*first) < retry_after * 10);
        }
        let first = *g.entry((rule, triple)).or_insert(now);
        now.duration_since(first) < retry_after
    }

    pub fn set_tarpit(&self, conn_id: u64, d: Duration) {
        if lock(&self.tarpit).insert(conn_id, d).is_none() {
            self.tarpits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn tarpit(&self, conn_id: u64) -> Option<Duration> {
        if self.tarpits.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return None;
        }
        lock(&self.tarpit).get(&conn_id).copied()
    }

    /// Counts one more sighting of a decision key and returns the count before it.
    pub fn occurrence(&self, key: u64) -> u32 {
        let mut s = lock(&self.seen);
        if s.len() >= MAX_ENTRIES {
            s.clear();
        }
        let n = s.entry(key).or_insert(0);
        let before = *n;
        *n += 1;
        before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn gcra_allows_burst_then_rate() {
        let s = State::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let now = Instant::now();
        // 10/s with a burst of 5: five at once pass, the sixth does not.
        let passed = (0..6).filter(|_| !s.over_rate(0, ip, 10.0, 5, now)).count();
        assert_eq!(passed, 5);
        // Other IPs and other rules have their own buckets.
        assert!(!s.over_rate(0, "127.0.0.2".parse().unwrap(), 10.0, 5, now));
        assert!(!s.over_rate(1, ip, 10.0, 5, now));
        // After 100 ms one more token has accrued.
        tokio::time::advance(Duration::from_millis(100)).await;
        let later = Instant::now();
        assert!(!s.over_rate(0, ip, 10.0, 5, later));
        assert!(s.over_rate(0, ip, 10.0, 5, later));
    }

    #[tokio::test(start_paused = true)]
    async fn greylist_defers_until_retry_after() {
        let s = State::default();
        let t0 = Instant::now();
        assert!(s.greylisted(0, 42, Duration::from_secs(2), t0));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.greylisted(0, 42, Duration::from_secs(2), Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!s.greylisted(0, 42, Duration::from_secs(2), Instant::now()));
        assert!(
            s.greylisted(0, 43, Duration::from_secs(2), Instant::now()),
            "another triple starts over"
        );
    }

    #[test]
    fn connections_are_counted_per_ip() {
        let s = State::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(s.connected(a), 1);
        assert_eq!(s.connected(a), 2);
        s.disconnected(a, 1);
        assert_eq!(s.open_connections(a), 1);
        s.disconnected(a, 2);
        assert_eq!(s.open_connections(a), 0);
    }
}
