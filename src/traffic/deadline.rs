//! When the generator stops: at a fixed instant (the end of the traffic window plus the drain),
//! or earlier when the run is stopped by hand (Ctrl-C, SIGTERM). One type for both, so every
//! place that waits on the deadline also wakes on a stop.

use tokio::sync::watch;
use tokio::time::Instant;

/// The generator's hard stop. Cloned into every task that waits on it.
#[derive(Debug, Clone)]
pub struct Deadline {
    at: Instant,
    cut: watch::Receiver<bool>,
}

/// Cuts a [`Deadline`] short: from then on it has passed.
#[derive(Debug)]
pub struct Cutter(watch::Sender<bool>);

impl Cutter {
    pub fn cut(&self) {
        self.0.send_replace(true);
    }
}

/// A deadline nothing can cut short: time alone ends it.
impl From<Instant> for Deadline {
    fn from(at: Instant) -> Deadline {
        Deadline::new(at).0
    }
}

impl Deadline {
    /// A deadline at `at` and the handle that can bring it forward to now.
    pub fn new(at: Instant) -> (Deadline, Cutter) {
        let (tx, cut) = watch::channel(false);
        (Deadline { at, cut }, Cutter(tx))
    }

    /// The planned instant (ignores a cut).
    pub fn at(&self) -> Instant {
        self.at
    }

    /// Reached by time or cut short.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.at || *self.cut.borrow()
    }

    /// Resolves when the deadline is reached or cut; at once if it has passed.
    pub async fn reached(&self) {
        tokio::select! {
            _ = tokio::time::sleep_until(self.at) => {}
            _ = self.cut_signal() => {}
        }
    }

    /// Resolves when the deadline is cut; never if its [`Cutter`] is gone uncut.
    async fn cut_signal(&self) {
        let mut cut = self.cut.clone();
        if cut.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Cut short by hand (not merely reached by time).
    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    /// Sleeps until `t` unless the deadline is cut first; `false` if it was.
    pub async fn sleep_unless_cut(&self, t: Instant) -> bool {
        tokio::select! {
            _ = tokio::time::sleep_until(t) => !self.is_cut(),
            _ = self.cut_signal() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_cut_wakes_waiters_and_passes_the_deadline() {
        let (d, cutter) = Deadline::new(Instant::now() + Duration::from_secs(3600));
        assert!(!d.passed());
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.sleep_unless_cut(Instant::now() + Duration::from_secs(3600)).await }
        });
        cutter.cut();
        let slept = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(!slept, "the cut ended the sleep");
        assert!(d.passed());
    }

    #[tokio::test]
    async fn reached_by_time_even_without_a_cutter() {
        let (d, cutter) = Deadline::new(Instant::now() + Duration::from_millis(20));
        drop(cutter);
        assert!(!d.passed(), "a dropped cutter is no cut");
        tokio::time::timeout(Duration::from_secs(5), d.reached()).await.unwrap();
        assert!(d.passed());
    }
}
