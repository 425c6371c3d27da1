//! GCRA (the generic cell rate algorithm, virtual-scheduling form): the one rate-limit check
//! used wherever mailsurge limits a rate with a burst — mock-inbox `limit: {rate, burst}` rules
//! per source IP and the MTA's per-tenant sending limit. State is a single instant per key
//! (the theoretical arrival time), so a limiter table costs one entry per key.

use std::time::Duration;

use tokio::time::Instant;

/// Decides one request against a `rate`/s limit allowing `burst` at once. Returns true when
/// the request is over the limit (and leaves `tat` alone); a conforming request advances the
/// theoretical arrival time by one emission interval.
pub fn over_limit(tat: &mut Instant, now: Instant, rate: f64, burst: u32) -> bool {
    let interval = interval(rate);
    let tolerance = interval * burst.saturating_sub(1);
    let t = (*tat).max(now);
    if t > now + tolerance {
        return true;
    }
    *tat = t + interval;
    false
}

/// The emission interval of `rate`/s. A rate of 0 (or one so small its interval overflows)
/// allows one event per longest duration a file may give (a year): in effect none, and never
/// a panic.
pub fn interval(rate: f64) -> Duration {
    let longest = crate::units::Dur::MAX;
    if rate > 0.0 {
        Duration::try_from_secs_f64(1.0 / rate).map_or(longest, |d| d.min(longest))
    } else {
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let now = Instant::now();
        let mut tat = now;
        // 10/s with a burst of 5: five at once pass, the sixth does not.
        assert_eq!((0..6).filter(|_| !over_limit(&mut tat, now, 10.0, 5)).count(), 5);
        // One emission interval later exactly one more passes.
        let later = now + Duration::from_millis(100);
        assert!(!over_limit(&mut tat, later, 10.0, 5));
        assert!(over_limit(&mut tat, later, 10.0, 5));
    }

    #[test]
    fn zero_and_tiny_rates_limit_without_panicking() {
        let now = Instant::now();
        let mut tat = now;
        assert!(!over_limit(&mut tat, now, 0.0, 1), "the first event fits the burst");
        assert!(over_limit(&mut tat, now, 0.0, 1), "then none for a year");
        assert_eq!(interval(1e-300), interval(0.0));
        assert_eq!(interval(1000.0), Duration::from_millis(1));
    }
}
