//! Threshold expressions from a scenario's `thresholds:` list (SPEC §2, §7):
//!
//! ```text
//! p99 < 20s                      latency metric, duration value
//! slo >= 99%                     SLO compliance, percentage value
//! lost == 0                      count metric, integer value
//! p50 < 3s over 10s windows      every window of that length must hold
//! region us-east: p99 < 10s      scoped to a region, provider or domain
//! ```
//!
//! Parsed inside `Deserialize`, so a bad expression is reported at its YAML position.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::units::{Dur, Percent};

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// A delivery-time percentile, as a quantile (0.5, 0.99, …) or `max` (1.0).
    Latency(Quantile),
    /// SLO compliance (fraction).
    Slo,
    /// A count from the accounting.
    Count(CountMetric),
    /// Delivered messages per second over the traffic window.
    Throughput,
}

/// A quantile in millionths so `Metric` stays `Eq` (0.999 → 999_000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantile(pub u32);

impl Quantile {
    pub fn quantile(self) -> f64 {
        f64::from(self.0) / 1e6
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountMetric {
    Lost,
    Duplicates,
    Bounced,
    Expired,
    Stranded,
    Queued,
    Suppressed,
    Delivered,
    RejectedAtSubmit,
}

impl CountMetric {
    const ALL: &'static [(&'static str, CountMetric)] = &[
        ("lost", CountMetric::Lost),
        ("duplicates", CountMetric::Duplicates),
        ("bounced", CountMetric::Bounced),
        ("expired", CountMetric::Expired),
        ("stranded", CountMetric::Stranded),
        ("queued", CountMetric::Queued),
        ("suppressed", CountMetric::Suppressed),
        ("delivered", CountMetric::Delivered),
        ("rejected_at_submit", CountMetric::RejectedAtSubmit),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl Op {
    pub fn holds(self, observed: f64, limit: f64) -> bool {
        match self {
            Op::Lt => observed < limit,
            Op::Le => observed <= limit,
            Op::Gt => observed > limit,
            Op::Ge => observed >= limit,
            Op::Eq => observed == limit,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
        }
    }
}

/// Which slice of the traffic a threshold looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Region(String),
    Provider(String),
    Domain(String),
}

/// One parsed threshold. `limit` is in the metric's natural unit: milliseconds for latency,
/// a fraction for SLO, a count for counts, messages/s for throughput.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub expr: String,
    pub scope: Scope,
    pub metric: Metric,
    pub op: Op,
    pub limit: f64,
    /// `over 10s windows`: the condition must hold in every window of this length.
    pub window: Option<Dur>,
}

impl Threshold {
    /// Whether an observed value passes. A latency of `None` (some eligible message never
    /// delivered, i.e. +∞) passes only `>`/`>=` comparisons.
    pub fn holds(&self, observed: Option<f64>) -> bool {
        match observed {
            Some(v) => self.op.holds(v, self.limit),
            None => self.op.holds(f64::INFINITY, self.limit),
        }
    }
}

impl FromStr for Threshold {
    type Err = String;
    fn from_str(expr: &str) -> Result<Self, String> {
        let mut rest = expr.trim();
        let mut scope = Scope::All;
        if let Some((head, tail)) = rest.split_once(':') {
            let mut words = head.split_whitespace();
            let (kind, name) = (words.next(), words.next());
            if words.next().is_some() {
                return Err(format!(
                    "threshold `{expr}`: scope must be `region NAME:`, `provider NAME:` or `domain NAME:`"
                ));
            }
            scope = match (kind, name) {
                (Some("region"), Some(n)) => Scope::Region(n.to_string()),
                (Some("provider"), Some(n)) => Scope::Provider(n.to_string()),
                (Some("domain"), Some(n)) => Scope::Domain(n.to_string()),
                _ => {
                    return Err(format!(
                        "threshold `{expr}`: scope must be `region NAME:`, `provider NAME:` or `domain NAME:`"
                    ))
                }
            };
            rest = tail.trim();
        }
        let mut window = None;
        if let Some((cond, over)) = rest.split_once(" over ") {
            let over = over.trim();
            let len = over
                .strip_suffix("windows")
                .or_else(|| over.strip_suffix("window"))
                .ok_or_else(|| format!("threshold `{expr}`: expected `over <duration> windows`"))?;
            let d: Dur = len.trim().parse().map_err(|e| format!("threshold `{expr}`: {e}"))?;
            if d.0.is_zero() {
                return Err(format!("threshold `{expr}`: window must be longer than 0s"));
            }
            window = Some(d);
            rest = cond.trim();
        }
        let parts: Vec<&str> = rest.split_whitespace().collect();
        let [metric, op, value] = parts[..] else {
            return Err(format!(
                "threshold `{expr}`: expected `<metric> <op> <value>`, e.g. `p99 < 20s`"
            ));
        };
        let op = match op {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "==" => Op::Eq,
            _ => {
                return Err(format!(
                    "threshold `{expr}`: unknown operator `{op}` (use < <= > >= ==)"
                ))
            }
        };
        let metric = parse_metric(metric).ok_or_else(|| {
            format!(
                "threshold `{expr}`: unknown metric `{metric}` (use p50 p90 p95 p99 p999 max slo throughput {})",
                CountMetric::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" ")
            )
        })?;
        let limit = match metric {
            Metric::Latency(_) => {
                value
                    .parse::<Dur>()
                    .map_err(|e| format!("threshold `{expr}`: {e}"))?
                    .as_secs_f64()
                    * 1e3
            }
            Metric::Slo => {
                value
                    .parse::<Percent>()
                    .map_err(|e| format!("threshold `{expr}`: {e}"))?
                    .0
            }
            Metric::Count(_) => value
                .parse::<u64>()
                .map_err(|_| format!("threshold `{expr}`: `{value}` is not a whole number"))?
                as f64,
            Metric::Throughput => {
                value
                    .parse::<crate::units::Rate>()
                    .map_err(|e| format!("threshold `{expr}`: {e}"))?
                    .0
            }
        };
        if window.is_some() && matches!(metric, Metric::Count(_)) {
            return Err(format!(
                "threshold `{expr}`: windows apply to p50..max, slo and throughput, not counts"
            ));
        }
        Ok(Threshold {
            expr: expr.trim().to_string(),
            scope,
            metric,
            op,
            limit,
            window,
        })
    }
}

fn parse_metric(s: &str) -> Option<Metric> {
    let q = match s {
        "p50" => 0.5,
        "p90" => 0.9,
        "p95" => 0.95,
        "p99" => 0.99,
        "p999" => 0.999,
        "max" => 1.0,
        "slo" => return Some(Metric::Slo),
        "throughput" => return Some(Metric::Throughput),
        _ => {
            return CountMetric::ALL
                .iter()
                .find(|(n, _)| *n == s)
                .map(|(_, m)| Metric::Count(*m))
        }
    };
    Some(Metric::Latency(Quantile((q * 1e6_f64).round() as u32)))
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl Threshold {
    /// An observed value in the metric's unit, for people (`5.98 ms`, `99.900%`, `0`);
    /// `None` is +∞ for latencies (undelivered mail) and "no data" otherwise.
    pub fn format_value(&self, v: Option<f64>) -> String {
        match (self.metric, v) {
            (Metric::Latency(_), None) => "∞ (undelivered mail)".into(),
            (_, None) => "no data".into(),
            (Metric::Latency(_), Some(ms)) => format!("{ms:.2} ms"),
            (Metric::Slo, Some(f)) => format!("{:.3}%", f * 100.0),
            (Metric::Count(_), Some(n)) => format!("{n}"),
            (Metric::Throughput, Some(r)) => format!("{r:.1}/s"),
        }
    }

    pub fn op_str(&self) -> &'static str {
        self.op.as_str()
    }
}

impl<'de> Deserialize<'de> for Threshold {
    /// A string, or the scoped form written without quotes — `- region us-east: p99 < 10s` —
    /// which YAML reads as a one-key map (SPEC §2 writes it that way). A visitor rather than
    /// an untagged enum, so an error keeps the threshold's own line and column.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Threshold;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a threshold such as `p99 < 10s` or `region us-east: p99 < 10s`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Threshold, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Threshold, A::Error> {
                use serde::de::Error as _;
                let Some((scope, expr)) = m.next_entry::<String, String>()? else {
                    return Err(A::Error::custom("empty threshold"));
                };
                if m.next_key::<String>()?.is_some() {
                    return Err(A::Error::custom(
                        "a scoped threshold is one `scope name: expression` pair",
                    ));
                }
                format!("{scope}: {expr}").parse().map_err(A::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Threshold {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let t: Threshold = "p50 < 2s".parse().unwrap();
        assert_eq!(t.metric, Metric::Latency(Quantile(500_000)));
        assert_eq!(t.limit, 2000.0);
        let t: Threshold = "slo >= 99%".parse().unwrap();
        assert_eq!(t.metric, Metric::Slo);
        assert!((t.limit - 0.99).abs() < 1e-12);
        let t: Threshold = "lost == 0".parse().unwrap();
        assert_eq!(t.metric, Metric::Count(CountMetric::Lost));
        let t: Threshold = "p50 < 3s over 10s windows".parse().unwrap();
        assert_eq!(t.window.unwrap().as_secs_f64(), 10.0);
        let t: Threshold = "region us-east: p99 < 10s".parse().unwrap();
        assert_eq!(t.scope, Scope::Region("us-east".into()));
    }

    #[test]
    fn rejects_bad() {
        for bad in [
            "p50 2s",
            "p42 < 2s",
            "p50 ~ 2s",
            "lost == 0.5",
            "p50 < 2",
            "planet mars: p50 < 1s",
            "lost == 0 over 10s windows",
        ] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad}");
        }
    }

    #[test]
    fn infinite_latency_fails_upper_bounds() {
        let t: Threshold = "p99 < 20s".parse().unwrap();
        assert!(!t.holds(None));
        assert!(t.holds(Some(100.0)));
    }
}
