//! Jobs waiting for their next attempt, in one structure.
//!
//! A timer task per deferred job costs a task's allocation for every waiting message, and a
//! provider blackholed for minutes parks hundreds of thousands of them. Here they wait in one
//! min-heap ordered by due time, and one task sleeps until the earliest is due and hands the
//! due ones back to their domain queues.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use rand::Rng;

use super::job::Parked;
use crate::scenario::Retry;
use crate::sync::lock;

/// A job and when it is due; ordered so the heap's top is the earliest (ties: first parked).
struct Due {
    at: Instant,
    seq: u64,
    job: Parked,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        // Reversed: BinaryHeap is a max-heap, the earliest must come out first.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// The wait after failed attempt number `attempt` (1 for the first): `initial × factor^(attempt
/// − 1)`, at most `max_delay`, then moved by up to ± `jitter` of itself (drawn from `rng`, so
/// nodes retrying the same outage spread out) — never below zero.
pub fn backoff(r: &Retry, attempt: u32, rng: &mut impl Rng) -> std::time::Duration {
    let exp = r.factor.powi(attempt.saturating_sub(1).min(64) as i32);
    let base = (r.initial.as_secs_f64() * exp).min(r.max_delay.as_secs_f64());
    let jitter = r.jitter.0 * base;
    let delay = if jitter > 0.0 {
        base + rng.random_range(-jitter..=jitter)
    } else {
        base
    };
    std::time::Duration::try_from_secs_f64(delay.max(0.0)).unwrap_or(r.max_delay.0)
}

/// The waiting jobs of one node.
#[derive(Default)]
pub struct Waiting {
    heap: Mutex<BinaryHeap<Due>>,
    /// Woken when a job is parked ahead of everything else (the sleeper must wake sooner).
    sooner: Notify,
    seq: AtomicU64,
}

impl Waiting {
    /// Parks `job` until `at`.
    pub fn park(&self, job: Parked, at: Instant) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut heap = lock(&self.heap);
        let first = heap.peek().is_none_or(|d| at < d.at);
        heap.push(Due { at, seq, job });
        drop(heap);
        if first {
            self.sooner.notify_one();
        }
    }

    /// Jobs waiting now.
    pub fn len(&self) -> usize {
        lock(&self.heap).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands every due job to `due`, until `stopping` turns true. Jobs still waiting then stay
    /// in the spool; a restart recovers them.
    pub async fn run(&self, mut stopping: watch::Receiver<bool>, due: impl Fn(Parked)) {
        loop {
            let next = {
                let mut heap = lock(&self.heap);
                let now = Instant::now();
                let mut ready = Vec::new();
                while heap.peek().is_some_and(|d| d.at <= now) {
                    if let Some(d) = heap.pop() {
                        ready.push(d.job);
                    }
                }
                drop(heap);
                for j in ready {
                    due(j);
                }
                lock(&self.heap).peek().map(|d| d.at)
            };
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.sooner.notified() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::sync::Arc;
    use std::time::Duration;

    fn job(n: u64) -> Parked {
        Parked::new(n, [0], "d.test", &crate::mta::job::Names::default())
    }

    fn retry(yaml: &str) -> Retry {
        serde_norway::from_str(yaml).unwrap()
    }

    /// Exponential from `initial`, capped at `max_delay`, exact without jitter.
    #[test]
    fn backoff_grows_by_the_factor_up_to_max_delay() {
        let r = retry("{ initial: 1s, factor: 2, max_delay: 10s, jitter: 0%, give_up: 1h }");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let secs: Vec<f64> = (1..=7).map(|a| backoff(&r, a, &mut rng).as_secs_f64()).collect();
        assert_eq!(secs, [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]);
        assert_eq!(backoff(&r, u32::MAX, &mut rng), Duration::from_secs(10), "no overflow");
        let flat = retry("{ initial: 500ms, factor: 1, max_delay: 20s, jitter: 0%, give_up: 1h }");
        assert_eq!(backoff(&flat, 9, &mut rng), Duration::from_millis(500));
    }

    /// Jitter moves each delay by at most ± its share, to both sides, and averages out.
    #[test]
    fn jitter_spreads_within_its_share() {
        let r = retry("{ initial: 4s, factor: 2, max_delay: 20s, jitter: 25%, give_up: 1h }");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let d: Vec<f64> = (0..2000).map(|_| backoff(&r, 2, &mut rng).as_secs_f64()).collect();
        let (lo, hi) = d.iter().fold((f64::MAX, 0.0f64), |(l, h), x| (l.min(*x), h.max(*x)));
        assert!(lo >= 6.0 && hi <= 10.0, "8 s ± 25%: {lo}..{hi}");
        assert!(lo < 6.5 && hi > 9.5, "both sides reached: {lo}..{hi}");
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        assert!((mean - 8.0).abs() < 0.1, "{mean}");
        // At the cap, jitter applies to max_delay itself.
        let capped: Vec<f64> = (0..200).map(|_| backoff(&r, 10, &mut rng).as_secs_f64()).collect();
        assert!(capped.iter().all(|x| (15.0..=25.0).contains(x)), "{capped:?}");
    }

    /// SPEC §14's budget: a waiting job's tracked state is at most 64 bytes.
    #[test]
    fn a_waiting_job_fits_the_budget() {
        assert!(std::mem::size_of::<Due>() <= 64, "{} bytes", std::mem::size_of::<Due>());
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_come_out_in_due_order_from_one_task() {
        let w = Arc::new(Waiting::default());
        let (stop, stopping) = watch::channel(false);
        let out = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        for (n, ms) in [(1, 300), (2, 100), (3, 200), (4, 100)] {
            w.park(job(n), t0 + Duration::from_millis(ms));
        }
        let runner = {
            let (w, out) = (w.clone(), out.clone());
            tokio::spawn(async move { w.run(stopping, |j| lock(&out).push(j.spool_id)).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(*lock(&out), vec![2, 4], "the two due at 100 ms, in parking order");
        // One parked ahead of everything wakes the sleeper early.
        w.park(job(5), Instant::now() + Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(*lock(&out), vec![2, 4, 5]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(*lock(&out), vec![2, 4, 5, 3, 1]);
        assert!(w.is_empty());
        stop.send_replace(true);
        runner.await.unwrap();
    }
}
