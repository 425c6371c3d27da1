//! `mailsurge gen`: load any SMTP server with the same generator `run` uses — open-loop at a
//! rate (intended times, coordinated-omission-correct) or closed-loop `max` like Postfix's
//! `smtp-source`, for a count or a duration — and write a small summary.json with submission
//! latency.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::events::{now_ns, Event, Kind};
use crate::measure::Dist;
use crate::scenario::{Arrival, RateSpec, SizeSpec, Traffic};
use crate::traffic::balance::Balancer;
use crate::traffic::message::{Builder, Mix};
use crate::traffic::schedule::{RateCurve, Schedule};
use crate::traffic::submit::{self, Arrivals, Counters, Plan, Target};
use crate::units::{Percent, Rate, Size};

/// Upper bound on any `gen` run, so a load loop always stops by itself.
pub const MAX_GEN_TIME: Duration = Duration::from_secs(3600);
/// After the `--duration` window, how long queued (open loop) or under-way (closed loop)
/// submissions may still finish.
pub const GEN_DRAIN: Duration = Duration::from_secs(30);

/// `--rate`: messages per second, or `max` (closed loop).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GenRate {
    Max,
    PerSecond(Rate),
}

impl std::str::FromStr for GenRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(GenRate::Max);
        }
        let r: Rate = s.parse().map_err(|e| format!("{e}"))?;
        if r.0 <= 0.0 {
            return Err("rate must be above 0/s".into());
        }
        Ok(GenRate::PerSecond(r))
    }
}

#[derive(Debug, Clone)]
pub struct GenOptions {
    pub target: SocketAddr,
    pub rate: GenRate,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub connections: u32,
    pub size: Size,
    pub domain: String,
    pub seed: u64,
    /// Where `target` may be: loopback, or inside `--allow-network`.
    pub allow: crate::scenario::Allow,
    /// STARTTLS on every connection (unverified, as load clients do).
    pub starttls: bool,
    /// AUTH on every connection.
    pub auth: Option<crate::smtp::Credentials>,
}

impl GenOptions {
    /// What one generator can carry, as for a scenario's traffic (`scenario::limits`); `Err`
    /// says which bound a flag crosses (exit 2 before anything is sent).
    pub fn check(&self) -> Result<(), String> {
        use crate::scenario::limits::{MAX_CONNECTIONS, MAX_MESSAGE_SIZE, MAX_PLANNED, MAX_RATE};
        self.allow
            .check("--target", self.target.ip())
            .map_err(|why| format!("--target {}: {why}", self.target))?;
        if self.duration.is_none() && self.count.is_none() {
            return Err("give --duration D or --count N".into());
        }
        if self.count.is_some() && self.duration.is_some() {
            return Err("--count and --duration together: give one (--count N sends exactly N, \
                        --duration D sends for D)"
                .into());
        }
        if self.size.0 > MAX_MESSAGE_SIZE {
            return Err(format!(
                "--size {} is larger than a message may be (at most 32MiB)",
                self.size
            ));
        }
        if self.connections > MAX_CONNECTIONS {
            return Err(format!(
                "--connections {} is more than a run carries (at most {MAX_CONNECTIONS})",
                self.connections
            ));
        }
        if let GenRate::PerSecond(r) = self.rate {
            if r.0 > MAX_RATE {
                return Err(format!(
                    "--rate {r} is more than one generator schedules (at most {MAX_RATE}/s)"
                ));
            }
            let planned = self
                .count
                .map_or_else(|| r.0 * self.duration.map_or(0.0, |d| d.as_secs_f64()), |n| n as f64);
            if planned > MAX_PLANNED {
                return Err(format!(
                    "{planned:.0} messages are more than one run's schedule holds (at most {MAX_PLANNED:.0})"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GenCounts {
    pub generated: u64,
    pub accepted: u64,
    pub rejected_at_submit: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubmitMs {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub uncorrected_p50: Option<f64>,
    pub uncorrected_p99: Option<f64>,
}

/// `summary.json` of a `gen` run.
#[derive(Debug, Clone, Serialize)]
pub struct GenSummary {
    pub schema: &'static str,
    pub target: String,
    pub mode: String,
    pub wall_s: f64,
    pub counts: GenCounts,
    /// Accepted messages per second of wall time.
    pub accepted_per_s: f64,
    /// Submission latency: from intended time (open loop) or send start (closed loop) to the
    /// final reply; `uncorrected_*` always from send start.
    pub submit_ms: SubmitMs,
    /// The first refusal or submission error, verbatim: why messages were not accepted (a
    /// `535` to `--auth`, a refused STARTTLS, a closed port) without digging through logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_refusal: Option<String>,
}

impl GenSummary {
    /// Writes `summary.json` into `dir` (created); returns its path.
    pub fn write(&self, dir: &std::path::Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let path = dir.join("summary.json");
        std::fs::write(&path, json + "\n")?;
        Ok(path)
    }

    /// Why this load measured nothing, if it did not: a target that accepted none of what
    /// was sent was not there (or refused everything) — not a result (exit 3).
    pub fn unjudged(&self) -> Option<String> {
        (self.counts.generated > 0 && self.counts.accepted == 0).then(|| {
            let why = self
                .first_refusal
                .as_deref()
                .map(|r| format!(" (first: {r})"))
                .unwrap_or_default();
            format!(
                "{} accepted none of the {} messages sent{why}",
                self.target, self.counts.generated
            )
        })
    }

    /// The line `mailsurge gen` prints: counts, wall time, rate and submission latency.
    pub fn one_line(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}ms"));
        format!(
            "gen {}: {} generated, {} accepted, {} rejected in {:.2}s ({}/s); submit p50 {} p99 {} (uncorrected p50 {} p99 {})",
            self.mode,
            self.counts.generated,
            self.counts.accepted,
            self.counts.rejected_at_submit,
            self.wall_s,
            self.accepted_per_s,
            ms(self.submit_ms.p50),
            ms(self.submit_ms.p99),
            ms(self.submit_ms.uncorrected_p50),
            ms(self.submit_ms.uncorrected_p99)
        )
    }
}

/// Runs the generator against `target` and summarises it.
pub async fn run(o: &GenOptions) -> anyhow::Result<GenSummary> {
    // The CLI checks first (exit 2); a library caller is held to the same rule.
    o.check().map_err(anyhow::Error::msg)?;
    let traffic = Traffic {
        rate: RateSpec::Constant(match o.rate {
            GenRate::PerSecond(r) => r,
            GenRate::Max => Rate(1.0),
        }),
        arrival: Arrival::Poisson,
        domains: [(o.domain.clone(), Percent(1.0))].into(),
        size: SizeSpec::Fixed(o.size),
        tenants: 1,
        recipients_per_message: 1,
        recipients: Default::default(),
        connections: o.connections,
        tls: if o.starttls {
            crate::scenario::SubmitTls::Starttls
        } else {
            crate::scenario::SubmitTls::None
        },
        auth: o.auth.clone().map(crate::scenario::SubmitAuth),
    };
    let (arrivals, window) = match (o.rate, o.duration, o.count) {
        (GenRate::Max, None, None) => anyhow::bail!("--rate max needs --duration D or --count N"),
        // Closed loop until the count is sent or the duration is up, whichever comes first.
        // After the duration, sends already under way get GEN_DRAIN to finish.
        (GenRate::Max, d, count) => (
            Arrivals::Closed {
                count,
                duration: d.map(|d| d.min(MAX_GEN_TIME)),
            },
            d.map_or(MAX_GEN_TIME, |d| d + GEN_DRAIN),
        ),
        (GenRate::PerSecond(r), Some(d), _) => {
            let curve = RateCurve::new(&RateSpec::Constant(r), d);
            (
                Arrivals::Open(Box::new(Schedule::new(curve, Arrival::Poisson, o.seed))),
                d + GEN_DRAIN,
            )
        }
        // Exactly n messages at Poisson times: the curve runs far past their expected end
        // (twice it, plus a minute) and the schedule stops at the n-th arrival.
        (GenRate::PerSecond(r), None, n) => {
            let n = n.unwrap_or(0);
            let d = Duration::from_secs_f64(2.0 * n as f64 / r.0 + 60.0);
            let curve = RateCurve::new(&RateSpec::Constant(r), d);
            (
                Arrivals::Open(Box::new(Schedule::new(curve, Arrival::Poisson, o.seed).limited(n))),
                d + GEN_DRAIN,
            )
        }
    };
    let run_id = format!("gen-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"));
    let start = Instant::now() + Duration::from_millis(100);
    let start_ns = now_ns() + 100_000_000;
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let plan = Plan {
        arrivals,
        mix: Mix::new(&traffic),
        builder: Builder::new(&run_id, o.size.0 as usize),
        seed: o.seed,
        connections: o.connections.max(1),
        // One target and no heartbeats: nothing is ever evicted (see Balancer::heartbeats).
        balancer: Balancer::new(
            vec![Target {
                node: "target".into(),
                region: "-".into(),
                addr: o.target,
            }],
            vec![1.0],
            tx.clone(),
        ),
        start_ns,
        start,
        hard_stop: (start + window.min(MAX_GEN_TIME)).into(),
        shard: None,
        tls: crate::tls::submission(o.starttls)?,
        auth: o.auth.clone(),
    };
    let counters = Arc::new(Counters::default());
    let collect = tokio::spawn(async move {
        let (mut corrected, mut uncorrected) = (Dist::new(), Dist::new());
        let mut first_refusal = None;
        while let Some(e) = rx.recv().await {
            if e.event == Kind::Rejected && first_refusal.is_none() {
                first_refusal = e.text;
                continue;
            }
            if let (Kind::Submitted, Some(acked)) = (e.event, e.acked) {
                corrected.record(e.intended.map(|i| acked.saturating_sub(i) / 1000));
                uncorrected.record(e.submitted.map(|s| acked.saturating_sub(s) / 1000));
            }
        }
        (corrected, uncorrected, first_refusal)
    });
    submit::run(plan, tx, counters.clone()).await;
    let wall_s = (now_ns().saturating_sub(start_ns)) as f64 / 1e9;
    let (corrected, uncorrected, first_refusal) = collect.await.context("collector failed")?;
    let c = &counters;
    let accepted = c.accepted.load(Ordering::Relaxed);
    let r3 = |v: Option<f64>| v.map(|x| (x * 1000.0).round() / 1000.0);
    Ok(GenSummary {
        schema: "mailsurge.gen/v1",
        target: o.target.to_string(),
        mode: match o.rate {
            GenRate::Max => "closed-loop".into(),
            GenRate::PerSecond(r) => format!("open-loop {r}"),
        },
        wall_s: (wall_s * 1000.0).round() / 1000.0,
        counts: GenCounts {
            generated: c.generated.load(Ordering::Relaxed),
            accepted,
            rejected_at_submit: c.rejected.load(Ordering::Relaxed) + c.unsubmitted.load(Ordering::Relaxed),
        },
        accepted_per_s: (accepted as f64 / wall_s.max(1e-9)).round(),
        submit_ms: SubmitMs {
            p50: r3(corrected.quantile_ms(0.5)),
            p99: r3(corrected.quantile_ms(0.99)),
            uncorrected_p50: r3(uncorrected.quantile_ms(0.5)),
            uncorrected_p99: r3(uncorrected.quantile_ms(0.99)),
        },
        first_refusal,
    })
}

/// Default output directory of a `gen` run.
pub fn default_out() -> PathBuf {
    PathBuf::from("reports").join(format!("gen-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Allow;

    fn opts(target: &str, allow: Allow) -> GenOptions {
        GenOptions {
            target: target.parse().unwrap(),
            rate: GenRate::Max,
            duration: None,
            count: Some(1),
            connections: 1,
            size: Size(1024),
            domain: "example.com".into(),
            seed: 1,
            allow,
            starttls: false,
            auth: None,
        }
    }

    /// The target passes the network rule as a scenario's addresses do: loopback always,
    /// anything else inside `--allow-network` (checked, never connected to).
    #[test]
    fn the_target_must_be_loopback_or_allowed() {
        assert!(opts("127.0.0.1:25", Allow::loopback_only()).check().is_ok());
        let e = opts("10.1.2.3:25", Allow::loopback_only()).check().unwrap_err();
        assert!(
            e.starts_with("--target 10.1.2.3:25: `10.1.2.3` (--target) is not loopback"),
            "{e}"
        );
        let allow = Allow::new(["10.1.2.0/24".parse().unwrap()]);
        assert!(opts("10.1.2.3:25", allow.clone()).check().is_ok());
        assert!(opts("10.1.3.3:25", allow).check().is_err());
    }
}
