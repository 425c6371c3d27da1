//! When a session must have done something: the defence against slow clients.
//!
//! A timer that restarts on every byte lets a client trickling one byte a minute hold a
//! connection slot forever. So besides the idle timeout per read (Postfix's `smtpd_timeout`),
//! a session here has three deadlines that bytes do not push back:
//! - a command line, once begun, must be complete within `line_timeout`;
//! - DATA must end within `data_total_timeout` plus the time its bytes take at `min_data_rate`
//!   (so a large message on a slow link still gets through, a trickle does not);
//! - a session must complete a transaction (or start one) within `progress_timeout` of its
//!   start or its last one, so `NOOP` every few minutes does not squat a slot.

use tokio::time::Instant;

use super::shared::Limits;

/// The deadlines of one session.
#[derive(Debug)]
pub(crate) struct Deadlines {
    /// When the command line being received must be complete.
    line: Option<Instant>,
    /// When the session must have made progress again.
    progress: Instant,
}

impl Deadlines {
    pub fn new(limits: &Limits) -> Deadlines {
        Deadlines {
            line: None,
            progress: Instant::now() + limits.progress_timeout,
        }
    }

    /// A command line has begun (bytes of it are waiting); its clock starts once.
    pub fn line_begun(&mut self, limits: &Limits) {
        self.line.get_or_insert_with(|| Instant::now() + limits.line_timeout);
    }

    /// A whole command line arrived.
    pub fn line_done(&mut self) {
        self.line = None;
    }

    /// A transaction started or ended: the session is doing something useful.
    pub fn progressed(&mut self, limits: &Limits) {
        self.progress = Instant::now() + limits.progress_timeout;
    }

    /// How long to wait for the next bytes of a command: the idle timeout, cut short by the
    /// line and progress deadlines.
    pub fn command_wait(&self, limits: &Limits) -> Instant {
        let idle = Instant::now() + limits.command_timeout;
        self.line.map_or(idle, |l| l.min(idle)).min(self.progress)
    }

    /// How long to wait for more message data, `received` bytes into a DATA that began at
    /// `start`: the idle timeout, cut short by the total allowed for this much data.
    pub fn data_wait(limits: &Limits, start: Instant, received: u64) -> Instant {
        let idle = Instant::now() + limits.data_timeout;
        let rate = limits.min_data_rate.max(1);
        let allowance = limits.data_total_timeout + std::time::Duration::from_secs(received / rate);
        idle.min(start + allowance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> Limits {
        Limits {
            command_timeout: Duration::from_secs(300),
            line_timeout: Duration::from_secs(30),
            progress_timeout: Duration::from_secs(600),
            data_timeout: Duration::from_secs(600),
            data_total_timeout: Duration::from_secs(120),
            min_data_rate: 16 * 1024,
            ..Limits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_begun_line_keeps_its_deadline_however_bytes_trickle() {
        let l = limits();
        let mut d = Deadlines::new(&l);
        let t0 = Instant::now();
        d.line_begun(&l);
        tokio::time::advance(Duration::from_secs(25)).await;
        d.line_begun(&l); // more bytes: the clock does not restart
        assert_eq!(d.command_wait(&l), t0 + Duration::from_secs(30));
        d.line_done();
        assert_eq!(d.command_wait(&l), Instant::now() + Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_bounds_an_idle_session() {
        let l = limits();
        let d = Deadlines::new(&l);
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_secs(500)).await;
        assert_eq!(d.command_wait(&l), t0 + Duration::from_secs(600));
    }

    #[tokio::test(start_paused = true)]
    async fn data_gets_time_for_its_size_but_not_for_a_trickle() {
        let l = limits();
        let start = Instant::now();
        assert_eq!(Deadlines::data_wait(&l, start, 10), start + Duration::from_secs(120));
        // 32 MiB at the minimum rate: 2048 s more.
        assert_eq!(
            Deadlines::data_wait(&l, start, 32 << 20),
            start + Duration::from_secs(600),
            "the idle limit still applies"
        );
        tokio::time::advance(Duration::from_secs(2000)).await;
        assert_eq!(
            Deadlines::data_wait(&l, start, 32 << 20),
            start + Duration::from_secs(120 + 2048)
        );
    }
}
