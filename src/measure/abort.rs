//! Judging abort conditions (SPEC §12) while a run plays: each tick, every condition of the
//! scenario's `abort:` is read from the live [`Recent`] view at a clock, and the first that
//! holds stops the run.
//!
//! Pure: the input is a [`Recent`] (fed with events) and a time in unix nanoseconds, never a
//! running topology, so a second play loop (a distributed coordinator fed from JetStream) calls
//! the same [`Watch::read`] on the same events and gets the same decision.
//!
//! How each metric is read:
//! - `slo` (and `slo … over W windows`): hits ÷ eligible over the judgeable seconds (see
//!   [`super::recent`]) — the whole run so far, or the latest whole window of `W` seconds that
//!   ends where judgement ends (`now − slo.delivery_time`). Late undelivered mail is a miss.
//! - `p50` … `max` (and windowed): delivery-time quantiles over the seconds judgeable at the
//!   condition's own limit `L` (the window ends at `now − L`: by then undelivered mail is known
//!   to be at least `L` old, and counts at its age); without a window, the run so far.
//! - counts: running totals; `queued` = accepted − (received + bounced + expired + dropped).
//!
//! A window (or a run so far) with no eligible mail has no value, and no value never holds.

use std::time::Duration;

use thiserror::Error;

use super::recent::{Recent, NS};
use crate::scenario::abort::problem;
use crate::scenario::threshold::{CountMetric, Metric};
use crate::scenario::Threshold;

/// A condition that cannot be judged live (the scenario check refuses these first; this is
/// for callers that build a watch from conditions of their own).
#[derive(Debug, Error)]
#[error("{0}")]
pub struct NotLive(pub String);

/// The scenario's abort conditions and the SLO they are judged against.
#[derive(Debug, Clone)]
pub struct Watch {
    conds: Vec<Threshold>,
    slo_ms: u64,
}

/// One condition's value at one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// In the metric's unit (ms, fraction, count); `None`: no eligible mail to judge yet.
    pub value: Option<f64>,
    /// The intended seconds judged, `[from, to)` in unix seconds, for windowed conditions.
    pub window: Option<(u64, u64)>,
    pub holds: bool,
}

/// The first condition that held, in words and as data.
#[derive(Debug, Clone, PartialEq)]
pub struct Trip {
    /// Index into the scenario's `abort:` list.
    pub index: usize,
    pub reading: Reading,
    /// `abort condition "slo < 50% over 5s windows" held at t=12.0s (slo 31.2% in 5.0–10.0s)`.
    pub reason: String,
}

impl Watch {
    /// A watch over `conds`, judging the SLO at `slo`.
    pub fn new(conds: &[Threshold], slo: Duration) -> Result<Watch, NotLive> {
        if let Some(why) = conds.iter().find_map(problem) {
            return Err(NotLive(why));
        }
        Ok(Watch {
            conds: conds.to_vec(),
            slo_ms: slo.as_millis() as u64,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.conds.is_empty()
    }

    /// A live view sized for these conditions: per-second latency histograms as far back as
    /// the furthest latency condition looks (its window, plus its limit, plus slack), none
    /// without one.
    pub fn recent(&self) -> Recent {
        let hist_secs = self
            .conds
            .iter()
            .filter(|c| matches!(c.metric, Metric::Latency(_)))
            .map(|c| c.window.map_or(0, |w| window_secs(w.0)) + (c.limit / 1000.0).ceil() as u64 + HIST_SLACK_SECS)
            .max()
            .unwrap_or(0);
        Recent::new(self.slo_ms, hist_secs)
    }

    /// Every condition's value at `now_ns`, in scenario order.
    pub fn read(&self, r: &Recent, now_ns: u64) -> Vec<Reading> {
        self.conds.iter().map(|c| read_one(c, r, now_ns)).collect()
    }

    /// The first condition that holds at `now_ns`, if any; `start_ns` is the run's offset 0,
    /// for the times in the reason.
    pub fn check(&self, r: &Recent, now_ns: u64, start_ns: u64) -> Option<Trip> {
        let readings = self.read(r, now_ns);
        let (index, reading) = readings.into_iter().enumerate().find(|(_, x)| x.holds)?;
        let c = &self.conds[index];
        let t = |ns: u64| ns.saturating_sub(start_ns) as f64 / 1e9;
        let mut what = format!("{} {}", metric_name(c), value_text(c, reading.value));
        if let Some((from, to)) = reading.window {
            what.push_str(&format!(" in {:.1}–{:.1}s", t(from * NS), t(to * NS)));
        }
        let reason = format!("abort condition \"{}\" held at t={:.1}s ({what})", c.expr, t(now_ns));
        Some(Trip { index, reading, reason })
    }

    /// The progress line's part: `abort: slo 97.2% (<50%) queued 1,204 (>200000)`.
    pub fn progress(&self, readings: &[Reading]) -> String {
        let parts: Vec<String> = self
            .conds
            .iter()
            .zip(readings)
            .map(|(c, x)| {
                format!(
                    "{} {} ({}{})",
                    metric_name(c),
                    value_text(c, x.value),
                    c.op_str(),
                    limit_text(c)
                )
            })
            .collect();
        format!("abort: {}", parts.join(" "))
    }
}

/// Seconds of latency histograms kept beyond what a condition's window and limit need: the
/// play loop's tick and the intended-to-unix-second rounding.
const HIST_SLACK_SECS: u64 = 3;

/// A window's length in whole seconds (at least one): the live view's resolution.
fn window_secs(w: Duration) -> u64 {
    w.as_secs_f64().ceil().max(1.0) as u64
}

fn read_one(c: &Threshold, r: &Recent, now_ns: u64) -> Reading {
    // When a message is decided: at its SLO deadline, or once it is older than a latency
    // limit (undelivered, it is then known to be at least that slow).
    let horizon_ms = match c.metric {
        Metric::Latency(_) => c.limit.max(0.0) as u64,
        _ => r.slo_ms(),
    };
    let end = r.judged_until(now_ns, horizon_ms);
    let (from, window) = match c.window {
        Some(w) => {
            let from = end.saturating_sub(window_secs(w.0));
            (from, Some((from, end)))
        }
        None => (0, None),
    };
    let t = &r.totals;
    let value = match c.metric {
        Metric::Slo => r.slo(from, end),
        Metric::Latency(q) => r.latency(q.quantile(), from, end, now_ns),
        Metric::Count(k) => Some(match k {
            CountMetric::Queued => t.queued(),
            CountMetric::Delivered => t.delivered,
            CountMetric::Bounced => t.bounced,
            CountMetric::Expired => t.expired,
            CountMetric::Suppressed => t.suppressed,
            CountMetric::RejectedAtSubmit => t.rejected_at_submit,
            // Refused by `Watch::new`.
            _ => return no_value(window),
        } as f64),
        Metric::Throughput => return no_value(window),
    };
    Reading {
        value,
        window,
        holds: value.is_some_and(|v| c.op.holds(v, c.limit)),
    }
}

fn no_value(window: Option<(u64, u64)>) -> Reading {
    Reading {
        value: None,
        window,
        holds: false,
    }
}

/// The metric as written (`slo`, `p99`, `queued`).
fn metric_name(c: &Threshold) -> &str {
    condition(c).split_whitespace().next().unwrap_or("?")
}

/// The limit as written (`50%`, `20s`, `200000`).
fn limit_text(c: &Threshold) -> &str {
    condition(c).split_whitespace().nth(2).unwrap_or("?")
}

/// The expression without its scope and window: `<metric> <op> <value>`.
fn condition(c: &Threshold) -> &str {
    let e = c.expr.rsplit_once(':').map_or(c.expr.as_str(), |(_, e)| e);
    e.split_once(" over ").map_or(e, |(e, _)| e).trim()
}

/// A value for people: `31.2%`, `1.24s`, `850ms`, `1,204`; `-` before there is any.
fn value_text(c: &Threshold, v: Option<f64>) -> String {
    let Some(v) = v else { return "-".into() };
    match c.metric {
        Metric::Slo => format!("{:.1}%", v * 100.0),
        Metric::Latency(_) if v >= 1000.0 => format!("{:.2}s", v / 1000.0),
        Metric::Latency(_) => format!("{v:.0}ms"),
        _ => grouped(v as u64),
    }
}

/// `1204` → `1,204`.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::recent::Failure;
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn at(s: f64) -> u64 {
        (T0 as f64 * 1e9 + s * 1e9) as u64
    }

    fn watch(conds: &[&str]) -> Watch {
        let conds: Vec<Threshold> = conds.iter().map(|c| c.parse().unwrap()).collect();
        Watch::new(&conds, Duration::from_secs(1)).unwrap()
    }

    /// 10 messages a second for `secs`, delivered in 100 ms while `up(second)`, never otherwise.
    fn traffic(r: &mut Recent, secs: std::ops::Range<u64>, up: impl Fn(u64) -> bool) {
        for s in secs {
            for k in 0..10 {
                let i = at(s as f64 + k as f64 / 10.0);
                r.accepted(i);
                if up(s) {
                    r.delivered(i, i + 100_000_000);
                }
            }
        }
    }

    #[test]
    fn a_blackhole_trips_the_windowed_slo_once_its_mail_is_late() {
        let w = watch(&["slo < 50% over 2s windows"]);
        let mut r = w.recent();
        // Up for 4 s, then nothing arrives (a blackholed provider).
        traffic(&mut r, 0..10, |s| s < 4);
        // At 6.5 s the judgeable seconds end at 5: the window is 3–5, half of it dark.
        let x = &w.read(&r, at(6.5))[0];
        assert_eq!(x.window, Some((T0 + 3, T0 + 5)));
        assert_eq!(x.value, Some(0.5));
        assert!(!x.holds, "50% is not below 50%");
        // At 7.0 s the window is 4–6: all dark.
        let trip = w.check(&r, at(7.0), at(0.0)).expect("trips");
        assert_eq!(trip.reading.value, Some(0.0));
        assert_eq!(
            trip.reason,
            "abort condition \"slo < 50% over 2s windows\" held at t=7.0s (slo 0.0% in 4.0–6.0s)"
        );
    }

    #[test]
    fn undelivered_mail_is_not_a_miss_before_its_deadline() {
        let w = watch(&["slo < 50% over 1s windows", "slo < 50%"]);
        let mut r = w.recent();
        // Nothing delivered yet, but all of it intended in the last second.
        traffic(&mut r, 5..6, |_| false);
        let xs = w.read(&r, at(5.9));
        assert!(xs.iter().all(|x| x.value.is_none() && !x.holds), "{xs:?}");
        // A second later its deadline has passed: every message a miss.
        assert!(w.check(&r, at(7.0), at(0.0)).is_some());
    }

    #[test]
    fn an_empty_window_is_not_a_hit() {
        let w = watch(&["slo < 50% over 2s windows", "p99 > 1s over 2s windows"]);
        let mut r = w.recent();
        traffic(&mut r, 0..2, |_| true);
        // Long after traffic stopped: the window has no mail, so no value, so no abort.
        let xs = w.read(&r, at(30.0));
        assert!(xs.iter().all(|x| x.value.is_none() && !x.holds), "{xs:?}");
        assert_eq!(w.progress(&xs), "abort: slo - (<50%) p99 - (>1s)");
    }

    #[test]
    fn latency_is_judged_at_its_limit_with_late_mail_at_its_age() {
        let w = watch(&["p99 > 2s over 2s windows", "p50 > 5s"]);
        let mut r = w.recent();
        traffic(&mut r, 0..10, |s| s < 4);
        // At 6 s the window ends 2 s back (4): seconds 2–4 were all delivered in 100 ms.
        let xs = w.read(&r, at(6.0));
        assert_eq!(xs[0].window, Some((T0 + 2, T0 + 4)));
        assert!((99.0..=101.0).contains(&xs[0].value.unwrap()), "{xs:?}");
        assert!(!xs[0].holds);
        // At 7 s the window is 3–5: second 4 never arrived and is at least 2 s old.
        let xs = w.read(&r, at(7.0));
        assert!(xs[0].value.unwrap() >= 2000.0 && xs[0].holds, "{xs:?}");
        // The whole run at 12 s, judged up to 7 s back: 40 delivered in 100 ms (the oldest
        // folded into one histogram), 30 late by 5–7 s — the median is still fast.
        let xs = w.read(&r, at(12.0));
        assert!((99.0..=101.0).contains(&xs[1].value.unwrap()), "{xs:?}");
        assert!(!xs[1].holds);
        // At 20 s all 60 undelivered are judged, at 10 s or more: the median is slow.
        let xs = w.read(&r, at(20.0));
        assert!(xs[1].value.unwrap() >= 10_000.0 && xs[1].holds, "{xs:?}");
    }

    #[test]
    fn queued_trips_on_the_running_count() {
        let w = watch(&["queued > 25"]);
        let mut r = w.recent();
        traffic(&mut r, 0..3, |s| s == 0);
        r.failed(at(1.5), Failure::Bounced);
        let x = &w.read(&r, at(3.0))[0];
        assert_eq!(x.value, Some(19.0), "30 accepted − 10 received − 1 bounced");
        assert!(!x.holds);
        traffic(&mut r, 3..4, |_| false);
        let trip = w.check(&r, at(4.0), at(0.0)).unwrap();
        assert_eq!(
            trip.reason,
            "abort condition \"queued > 25\" held at t=4.0s (queued 29)"
        );
        assert_eq!(w.progress(&w.read(&r, at(4.0))), "abort: queued 29 (>25)");
    }

    #[test]
    fn final_accounting_metrics_are_refused() {
        let lost: Threshold = "lost > 0".parse().unwrap();
        let e = Watch::new(&[lost], Duration::from_secs(1)).unwrap_err();
        assert!(e.0.contains("final accounting"), "{e}");
        assert_eq!(grouped(1_204), "1,204");
        assert_eq!(grouped(200_000), "200,000");
    }
}
