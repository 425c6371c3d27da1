//! Calibration: the measured times and rates the model's servers run on, read from a real
//! run's events or a capacity search, and written beside every simulation
//! (`calibration.json`, `mailsurge.calibration/v1`) so a reader knows what it stood on.
//!
//! What is measured, and what is not:
//! - **submission time** — a 250 to a submission (acked − submitted), as the generator saw it;
//! - **MTA-added time** — a first-attempt delivery's time from the submission's 250 to the
//!   inbox's 250, less what the provider's rule table scripts. Taken from providers whose rule
//!   table scripts no latency when the run had enough of their mail; otherwise the scripted
//!   part is subtracted quantile by quantile;
//! - **node service rate** — messages per second one node carries: a capacity search's knee
//!   over its live nodes. A single run cannot show it (it ran below it); the shipped value is
//!   then used and the report says so;
//! - **restart time** — a restored node's restart until the balancer can admit it.
//!
//! Provider reply latency is not a calibrated number: it is the rule table's, sampled by the
//! same engine the inboxes run.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use super::provider::SimProvider;
use super::quantiles::Quantiles;
use crate::events::Kind;
use crate::run::Compiled;

pub const CALIBRATION_SCHEMA: &str = "mailsurge.calibration/v1";
pub const CALIBRATION_FILE: &str = "calibration.json";

/// Shipped defaults: measured on the 2-core development box (see `calibration/default.json`).
const SHIPPED: &str = include_str!("../../calibration/default.json");

/// Fewest first-attempt deliveries of unscripted providers to take the MTA-added time from them
/// alone.
const MIN_PLAIN_SAMPLES: usize = 200;

/// Longest intended → submission gap read as timer lateness rather than queueing.
pub const MAX_LATENESS_MS: f64 = 5.0;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Calibration {
    pub schema: String,
    /// What it was measured from, in words (a run or capacity directory, or the shipped file).
    pub source: String,
    /// How late the generator starts a submission its worker was free for (timer lateness:
    /// intended → submission start, from gaps under [`MAX_LATENESS_MS`]; longer gaps are
    /// queueing, which the model makes itself).
    pub release_ms: Quantiles,
    pub submit_ms: Quantiles,
    pub mta_added_ms: Quantiles,
    /// How `mta_added_ms` was found.
    pub mta_added_from: String,
    pub node_rate_per_s: f64,
    pub node_rate_from: String,
    pub restart_s: f64,
}

impl Calibration {
    /// The defaults shipped with mailsurge.
    pub fn shipped() -> Calibration {
        // Invariant: the embedded file is checked by a unit test.
        let mut c: Calibration = serde_json::from_str(SHIPPED).expect("calibration/default.json parses");
        c.source = format!("defaults shipped with mailsurge ({})", c.source);
        c
    }

    /// From a run directory (`summary.json` and events) or a capacity directory
    /// (`capacity.json`: timings from its lowest passing probe, the node rate from its knee).
    pub fn from_dir(dir: &Path, c: &Compiled) -> anyhow::Result<Calibration> {
        if dir.join("capacity.json").is_file() {
            return from_capacity(dir, c);
        }
        if !dir.join(crate::run::RUN_FILE).is_file() {
            bail!(
                "{}: neither a run directory (run.json) nor a capacity directory (capacity.json)",
                dir.display()
            );
        }
        let mut cal = from_run(dir, c)?;
        let shipped = Calibration::shipped();
        cal.node_rate_per_s = shipped.node_rate_per_s;
        cal.node_rate_from = format!(
            "shipped ({}): a run below its knee cannot show it",
            shipped.node_rate_from
        );
        Ok(cal)
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)? + "\n";
        Ok(crate::files::write(&dir.join(CALIBRATION_FILE), json)?)
    }
}

fn from_capacity(dir: &Path, c: &Compiled) -> anyhow::Result<Calibration> {
    let path = dir.join("capacity.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path)?).with_context(|| format!("{}", path.display()))?;
    let probes = v["probes"].as_array().cloned().unwrap_or_default();
    let passing: Vec<&serde_json::Value> = probes.iter().filter(|p| p["pass"] == true).collect();
    let lowest = passing
        .iter()
        .min_by(|a, b| {
            a["rate_per_s"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b["rate_per_s"].as_f64().unwrap_or(0.0))
        })
        .with_context(|| format!("{}: no passing probe to calibrate from", path.display()))?;
    let knee = v["knee_per_s"]
        .as_f64()
        .filter(|k| *k > 0.0)
        .with_context(|| format!("{}: no knee", path.display()))?;
    let knee_probe = passing
        .iter()
        .find(|p| p["rate_per_s"].as_f64() == Some(knee))
        .copied()
        .unwrap_or(lowest);
    let probe_dir = |p: &serde_json::Value| dir.join(p["dir"].as_str().unwrap_or_default());
    let run = crate::run::RunRecord::read(&probe_dir(knee_probe)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let live = run.nodes.iter().filter(|n| n.alive).count().max(1);
    let mut cal = from_run(&probe_dir(lowest), c)?;
    cal.source = format!("capacity search {}", dir.display());
    cal.node_rate_per_s = knee / live as f64;
    cal.node_rate_from = format!("knee {knee}/s over {live} live node(s)");
    Ok(cal)
}

/// Timings from one run's events.
fn from_run(dir: &Path, c: &Compiled) -> anyhow::Result<Calibration> {
    let f = &c.scenario.file;
    let providers = crate::run::provider_map(f);
    let mut submit = Vec::new();
    let mut release = Vec::new();
    // (id, rcpt) → acked ns, whether it was deferred since, and its node and region.
    let mut acked: HashMap<(String, String), (u64, bool, String, String)> = HashMap::new();
    // Kills of nodes or regions: (time, target name).
    let mut kills: Vec<(u64, String)> = Vec::new();
    let mut delivered: Vec<(String, String, f64)> = Vec::new();
    let mut restores: Vec<(u64, String)> = Vec::new();
    let mut restart = Vec::new();
    let path = crate::run::events_file(dir);
    crate::events::each_in_file(&path, |mut e| {
        e.expand(&|rcpt| crate::measure::provider_of(&providers, rcpt));
        let key = || (e.id.clone(), e.rcpt.clone().unwrap_or_default());
        match e.event {
            Kind::Submitted => {
                if let (Some(s), Some(a)) = (e.submitted, e.acked) {
                    submit.push(a.saturating_sub(s) as f64 / 1e6);
                    let late = e.intended.map_or(0.0, |i| s.saturating_sub(i) as f64 / 1e6);
                    if late < MAX_LATENESS_MS {
                        release.push(late);
                    }
                    let (node, region) = (e.node.clone().unwrap_or_default(), e.region.clone().unwrap_or_default());
                    acked.insert(key(), (a, false, node, region));
                }
            }
            Kind::Deferred => {
                if let Some(x) = acked.get_mut(&key()) {
                    x.1 = true;
                }
            }
            Kind::Received => {
                // Mail whose node was killed while it held it waited for the restore: that
                // is the outage's time, not the MTA's.
                let outage = |a: u64, node: &str, region: &str| {
                    kills
                        .iter()
                        .any(|(t, target)| *t >= a && (target == node || target == region))
                };
                if let Some((a, false, _, _)) = acked.remove(&key()).filter(|x| !outage(x.0, &x.2, &x.3)) {
                    let p = e.provider.clone().unwrap_or_default();
                    delivered.push((
                        p,
                        e.rcpt.clone().unwrap_or_default(),
                        e.t.saturating_sub(a) as f64 / 1e6,
                    ));
                }
            }
            Kind::Fault => {
                if let Some(fl) = e.fault.as_deref().filter(|fl| fl.is_mta()) {
                    match fl.action.as_str() {
                        "restore" => restores.push((e.t, fl.target.clone())),
                        "kill" => kills.push((e.t, fl.target.clone())),
                        _ => {}
                    }
                }
            }
            Kind::Admitted => {
                let (node, region) = (e.node.clone().unwrap_or_default(), e.region.clone().unwrap_or_default());
                if let Some((t, _)) = restores
                    .iter()
                    .rev()
                    .find(|(_, target)| *target == node || *target == region)
                {
                    let hb = crate::traffic::balance::HEARTBEAT_EVERY.as_secs_f64()
                        * f64::from(crate::traffic::balance::ADMIT_AFTER);
                    restart.push((e.t.saturating_sub(*t) as f64 / 1e9 - hb).max(0.05));
                }
            }
            _ => {}
        }
        Ok(())
    })
    .with_context(|| format!("cannot read {}", path.display()))?;
    let submit_ms =
        Quantiles::of(submit).with_context(|| format!("{}: no submissions to calibrate from", dir.display()))?;
    let (mta_added_ms, mta_added_from) = mta_added(c, &delivered)
        .with_context(|| format!("{}: no first-attempt deliveries to calibrate from", dir.display()))?;
    let shipped_restart = serde_json::from_str::<Calibration>(SHIPPED).map_or(0.3, |s| s.restart_s);
    Ok(Calibration {
        schema: CALIBRATION_SCHEMA.into(),
        source: format!("run {}", dir.display()),
        release_ms: Quantiles::of(release).unwrap_or_else(|| Quantiles::constant(0.0)),
        submit_ms,
        mta_added_ms,
        mta_added_from,
        node_rate_per_s: 0.0,
        node_rate_from: String::new(),
        restart_s: if restart.is_empty() {
            shipped_restart
        } else {
            restart.iter().sum::<f64>() / restart.len() as f64
        },
    })
}

/// The MTA-added time from first-attempt deliveries `(provider, rcpt, ms from 250 to 250)`.
fn mta_added(c: &Compiled, delivered: &[(String, String, f64)]) -> Option<(Quantiles, String)> {
    let start = tokio::time::Instant::now();
    let mut scripted: HashMap<&str, SimProvider> = HashMap::new();
    for (p, rules) in c.scenario.file.providers.iter().zip(&c.rules) {
        scripted.insert(
            p.name.as_str(),
            SimProvider::new(
                &p.name,
                rules.clone(),
                c.scenario.file.mta.egress_pools.clone(),
                c.scenario.file.seed,
                p.mx,
                start,
            ),
        );
    }
    // The scripted part of each delivery, from the provider's own rules (a fresh engine: the
    // limits and greylist of the real run are not replayed, only its latency is sampled).
    let ip: std::net::IpAddr = std::net::Ipv4Addr::LOCALHOST.into();
    // (provider, whole ms, scripted ms)
    let mut pairs: Vec<(&str, f64, f64)> = Vec::new();
    for (i, (p, rcpt, ms)) in delivered.iter().enumerate() {
        let Some(sp) = scripted.get_mut(p.as_str()) else {
            continue;
        };
        // A fresh connection each time, as a node whose pool rotates its addresses opens.
        let at = start + std::time::Duration::from_millis(i as u64);
        let a = sp.attempt(
            None,
            ip,
            "calibration@mailsurge.test",
            std::slice::from_ref(rcpt),
            4096,
            at,
            std::time::Duration::ZERO,
        );
        if let Some(c) = a.conn {
            sp.close(c);
        }
        pairs.push((p.as_str(), *ms, a.took.as_secs_f64() * 1e3));
    }
    // Providers that script nothing for (nearly) all of this mail: their delivery time is
    // the MTA's alone.
    let mut zero: HashMap<&str, (usize, usize)> = HashMap::new();
    for (p, _, l) in &pairs {
        let z = zero.entry(p).or_default();
        z.0 += usize::from(*l == 0.0);
        z.1 += 1;
    }
    let plain = |p: &str| zero.get(p).is_some_and(|(z, n)| *z as f64 >= 0.99 * *n as f64);
    // ...and of those, the mail no rule delayed (a `slow-` mailbox's 5 s is the rule's).
    let plain_ms: Vec<f64> = pairs.iter().filter(|x| plain(x.0) && x.2 == 0.0).map(|x| x.1).collect();
    if plain_ms.len() >= MIN_PLAIN_SAMPLES {
        let n = plain_ms.len();
        return Some((
            Quantiles::of(plain_ms)?,
            format!("{n} first-attempt deliveries to providers that script no latency"),
        ));
    }
    let n = pairs.len();
    let whole = Quantiles::of(pairs.iter().map(|x| x.1).collect())?;
    let part = Quantiles::of(pairs.iter().map(|x| x.2).collect())?;
    Some((
        whole.minus(&part),
        format!("{n} first-attempt deliveries less their rule tables' scripted latency"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_calibration_parses() {
        let c = Calibration::shipped();
        assert_eq!(c.schema, CALIBRATION_SCHEMA);
        assert!(c.node_rate_per_s > 0.0 && c.submit_ms.median() > 0.0);
    }
}
