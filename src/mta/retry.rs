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

use super::job::Parked;
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
    use std::sync::Arc;
    use std::time::Duration;

    fn job(n: u64) -> Parked {
        Parked::new(n, [0], "d.test", &crate::mta::job::Names::default())
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
