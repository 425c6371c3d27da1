//! One probe of a capacity search as a scenario: the base scenario's topology, mix, rules,
//! SLO and thresholds, played at a constant rate for a warm-up plus one step, without its
//! chaos timeline — only the `--down` targets, killed at the start (the N+1 question: do two
//! of three regions carry the peak?). It is checked like any scenario, so a `--down` target
//! that does not exist is an error naming it, before anything runs.

use std::time::Duration;

use crate::config::ConfigError;
use crate::scenario::{ChaosAction, ChaosKind, RateSpec, Scenario};
use crate::units::{Dur, Rate};

/// The rate one generator connection is asked to carry in a probe: a submission takes a few
/// ms on loopback (3–5 ms at smoke's knee), so 200/s leaves it idle part of the time.
pub const PER_CONNECTION: f64 = 200.0;

/// How a probe is played.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbePlan {
    /// The constant rate, msg/s.
    pub rate: f64,
    /// Time at the rate before the step (the queues and connections fill).
    pub warmup: Duration,
    /// The measured step.
    pub step: Duration,
    /// Targets killed at the start (`region/X`, `node/X`, `provider/X`).
    pub down: Vec<String>,
}

/// The scenario of one probe: `base` with its traffic at `plan.rate` for warm-up plus step, its
/// drain at most one step, and `plan.down` killed at 0 s instead of its chaos timeline.
pub fn scenario(base: &Scenario, plan: &ProbePlan) -> Result<Scenario, ConfigError> {
    let mut s = base.clone();
    let f = &mut s.file;
    f.name = format!("{}-at-{}", base.file.name, rate_label(plan.rate));
    f.traffic.rate = RateSpec::Constant(Rate(plan.rate));
    // The search measures the system, not the generator's connection pool: an open-loop
    // generator with too few sessions falls behind its schedule whatever the MTA does
    // (smoke's 8 connections set its knee at ~4,700/s; with 32 the nodes' CPU set it at
    // ~8,900/s). Each connection carries at most PER_CONNECTION msg/s.
    let needed = (plan.rate / PER_CONNECTION).ceil() as u32;
    f.traffic.connections = f.traffic.connections.max(needed);
    f.duration = Dur(plan.warmup + plan.step);
    // Judged on the step alone: the warm-up fills queues and connections.
    f.warmup = (!plan.warmup.is_zero()).then_some(Dur(plan.warmup));
    f.drain = Dur(f.drain.0.min(plan.step));
    f.chaos = plan
        .down
        .iter()
        .map(|target| ChaosAction {
            at: Dur(Duration::ZERO),
            action: ChaosKind::Kill,
            target: target.clone(),
            pool: None,
            reply: None,
            for_: None,
            mode: None,
            add: None,
            mx: None,
        })
        .collect();
    s.recheck()?;
    Ok(s)
}

/// A rate as a directory-friendly label: `1250`, `37.5`.
pub fn rate_label(rate: f64) -> String {
    let r = (rate * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Scenario {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/region-failover.yaml");
        crate::scenario::load(std::path::Path::new(path)).unwrap()
    }

    #[test]
    fn a_probe_is_the_scenario_at_a_constant_rate_without_its_chaos() {
        let b = base();
        let plan = ProbePlan {
            rate: 1234.56,
            warmup: Duration::from_secs(5),
            step: Duration::from_secs(20),
            down: vec!["region/us-east".into()],
        };
        let p = scenario(&b, &plan).unwrap();
        assert_eq!(p.file.name, "region-failover-at-1234.6");
        assert!(matches!(p.file.traffic.rate, RateSpec::Constant(r) if (r.0 - 1234.56).abs() < 1e-9));
        assert_eq!(p.file.duration.0, Duration::from_secs(25));
        assert_eq!(
            p.file.warmup.map(|w| w.0),
            Some(Duration::from_secs(5)),
            "judged on the step"
        );
        assert_eq!(p.file.drain.0, Duration::from_secs(20), "at most one step of drain");
        assert_eq!(p.file.chaos.len(), 1, "the timeline's kill and restore are gone");
        assert_eq!(
            p.file.traffic.connections,
            b.file.traffic.connections.max(7),
            "1234.56/s needs 7"
        );
        assert_eq!(
            (p.file.chaos[0].target.as_str(), p.file.chaos[0].at.0),
            ("region/us-east", Duration::ZERO)
        );
        assert_eq!(
            p.file.thresholds.len(),
            b.file.thresholds.len(),
            "judged as the scenario is"
        );
        assert_eq!(p.file.regions.len(), b.file.regions.len());
    }

    #[test]
    fn a_down_target_that_is_not_in_the_topology_is_refused() {
        let plan = ProbePlan {
            rate: 100.0,
            warmup: Duration::from_secs(5),
            step: Duration::from_secs(20),
            down: vec!["region/mars".into()],
        };
        let e = scenario(&base(), &plan).unwrap_err().to_string();
        assert!(e.contains("region/mars"), "{e}");
    }

    #[test]
    fn rate_labels_are_short() {
        assert_eq!(rate_label(1000.0), "1000");
        assert_eq!(rate_label(37.5), "37.5");
        assert_eq!(rate_label(99.96), "100");
    }
}
