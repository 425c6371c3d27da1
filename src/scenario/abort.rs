//! Abort conditions (`abort:`, SPEC §12): expressions in threshold syntax that stop a run when
//! one *holds* — the opposite sense of a threshold, which must hold for the run to pass.
//!
//! ```text
//! abort:
//!   - slo < 50% over 30s windows     the SLO collapsed in the latest judgeable window
//!   - queued > 200000                 mail piles up faster than it leaves
//! ```
//!
//! An abort is judged while the run plays, so it may only use what is known live: delivery
//! times and SLO compliance (by intended time, judged once a message's SLO deadline has
//! passed) and the running counts (`queued` = accepted − settled, `delivered`, `bounced`,
//! `expired`, `suppressed`, `rejected_at_submit`). `lost`, `duplicates` and `stranded` need the
//! final accounting of spools and receipts, and `throughput` is defined over the whole traffic
//! window, so they are refused here, before anything starts. Scoped forms (`provider X:`) are
//! refused too: the live view keeps one set of windows for the whole run.

use super::model::ScenarioFile;
use super::threshold::{CountMetric, Metric, Scope, Threshold};
use crate::config::{ConfigError, Source};

/// The metrics an abort condition can use, as the error message lists them.
pub const LIVE_METRICS: &str =
    "p50 p90 p95 p99 p999 max slo (each also `over <duration> windows`), queued delivered bounced expired suppressed rejected_at_submit";

/// Whether a metric is known while the run plays (see the module doc).
pub fn is_live(m: Metric) -> bool {
    match m {
        Metric::Latency(_) | Metric::Slo => true,
        Metric::Count(c) => matches!(
            c,
            CountMetric::Queued
                | CountMetric::Delivered
                | CountMetric::Bounced
                | CountMetric::Expired
                | CountMetric::Suppressed
                | CountMetric::RejectedAtSubmit
        ),
        Metric::Throughput => false,
    }
}

/// Why one condition cannot be an abort condition, if it cannot.
pub fn problem(t: &Threshold) -> Option<String> {
    if t.scope != Scope::All {
        return Some(format!(
            "abort: `{}`: abort conditions judge the whole run; scoped forms (region/provider/domain) are not supported",
            t.expr
        ));
    }
    if !is_live(t.metric) {
        let name = t.expr.split_whitespace().next().unwrap_or_default();
        return Some(format!(
            "abort: `{}`: `{name}` is only known from the final accounting, not while the run plays; an abort condition can use {LIVE_METRICS}",
            t.expr
        ));
    }
    None
}

/// Refuses (exit 2, at the expression's `file:line:col`) any condition that cannot be judged
/// live.
pub fn check(src: &Source, f: &ScenarioFile) -> Result<(), ConfigError> {
    for t in &f.abort {
        if let Some(why) = problem(t) {
            return Err(src.error_at(&t.expr, src.top_key_line("abort"), why));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_metrics_are_accepted() {
        for ok in [
            "slo < 50% over 30s windows",
            "slo < 90%",
            "p99 > 10s over 5s windows",
            "max > 1m",
            "queued > 200000",
            "bounced > 100",
        ] {
            assert_eq!(problem(&ok.parse().unwrap()), None, "{ok}");
        }
        for bad in [
            "lost > 0",
            "duplicates > 0",
            "stranded > 0",
            "throughput < 10/s",
            "provider g: slo < 50%",
        ] {
            assert!(problem(&bad.parse().unwrap()).is_some(), "{bad}");
        }
        assert!(problem(&"lost > 0".parse().unwrap()).unwrap().contains("queued"));
    }
}
