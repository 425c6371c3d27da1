//! Per-destination pacing: how many connections a domain may have open and how fast messages
//! may go to it, with temporary cuts when a provider pushes back (`throttle` in the response
//! table, e.g. a 421 "unexpected volume").
//!
//! Like Postfix's per-destination concurrency with slow start and KumoMTA's throttles, but
//! simpler: a cut multiplies the limits by a factor until it expires; the strongest active cut
//! wins and a new cut extends it.

use std::time::Duration;

use tokio::time::Instant;

/// Pacing state of one destination domain.
#[derive(Debug, Clone)]
pub struct Pace {
    base_connections: usize,
    base_rate: Option<f64>,
    /// Active cut: factor and when it ends.
    cut: Option<(f64, Instant)>,
    /// GCRA theoretical arrival time for the rate limit.
    tat: Option<Instant>,
}

impl Pace {
    pub fn new(connections: usize, rate: Option<f64>) -> Pace {
        Pace {
            base_connections: connections.max(1),
            base_rate: rate.filter(|r| *r > 0.0),
            cut: None,
            tat: None,
        }
    }

    fn factor(&mut self, now: Instant) -> f64 {
        match self.cut {
            Some((f, until)) if now < until => f,
            Some(_) => {
                self.cut = None;
                1.0
            }
            None => 1.0,
        }
    }

    /// Connections allowed now (at least one, so mail keeps trickling).
    pub fn connections(&mut self, now: Instant) -> usize {
        let f = self.factor(now);
        ((self.base_connections as f64 * f).floor() as usize).max(1)
    }

    /// Messages per second allowed now; `None` = unlimited.
    pub fn rate(&mut self, now: Instant) -> Option<f64> {
        let f = self.factor(now);
        self.base_rate.map(|r| r * f)
    }

    /// Applies a cut; returns true if it made pacing stricter or longer.
    pub fn cut(&mut self, factor: f64, hold: Duration, now: Instant) -> bool {
        let factor = factor.clamp(0.01, 1.0);
        let until = now + hold;
        match self.cut {
            Some((f, u)) if now < u && f <= factor && u >= until => false,
            Some((f, u)) if now < u => {
                self.cut = Some((f.min(factor), u.max(until)));
                true
            }
            _ => {
                self.cut = Some((factor, until));
                true
            }
        }
    }

    /// Reserves the next send slot under the rate limit; returns how long to wait for it.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let Some(rate) = self.rate(now) else {
            return Duration::ZERO;
        };
        let interval = crate::gcra::interval(rate);
        let slot = self.tat.map_or(now, |t| t.max(now));
        self.tat = Some(slot + interval);
        slot - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_scale_and_expire() {
        let t0 = Instant::now();
        let mut p = Pace::new(8, Some(100.0));
        assert_eq!(p.connections(t0), 8);
        assert!(p.cut(0.5, Duration::from_secs(30), t0));
        assert_eq!(p.connections(t0), 4);
        assert_eq!(p.rate(t0), Some(50.0));
        assert!(
            !p.cut(0.5, Duration::from_secs(10), t0),
            "a weaker, shorter cut changes nothing"
        );
        assert!(p.cut(0.25, Duration::from_secs(10), t0));
        assert_eq!(p.connections(t0), 2);
        let later = t0 + Duration::from_secs(31);
        assert_eq!(p.connections(later), 8, "cut expired");
        let mut one = Pace::new(1, None);
        one.cut(0.1, Duration::from_secs(5), t0);
        assert_eq!(one.connections(t0), 1, "never below one connection");
    }

    #[test]
    fn rate_spaces_sends() {
        let t0 = Instant::now();
        let mut p = Pace::new(4, Some(10.0));
        assert_eq!(p.reserve(t0), Duration::ZERO);
        assert_eq!(p.reserve(t0), Duration::from_millis(100));
        assert_eq!(p.reserve(t0), Duration::from_millis(200));
        let mut free = Pace::new(4, None);
        assert_eq!(free.reserve(t0), Duration::ZERO);
        assert_eq!(free.reserve(t0), Duration::ZERO);
    }
}
