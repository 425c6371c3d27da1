//! Cross-checks serde cannot express, one function per section of the scenario file: names
//! unique, references resolve, numbers in range; addresses are the network rule's
//! (`super::network`).
//!
//! Every error points at the offending text (`file:line:col`, searched from the section's top
//! key), so a typo costs a second, not a three-minute run. What needs a runtime part to check
//! (a rule table's regexes, a chaos `reply:`) is checked where that part compiles its share of
//! the plan; this file needs only the plan itself.

use std::collections::{BTreeMap, BTreeSet};

use super::model::*;
use super::network;
use super::threshold::Scope;
use crate::config::{ConfigError, Source};
use crate::units::{Dur, Size};

/// Upper bound on MTA node processes per region: each is a real process on a 2-core box.
pub const MAX_NODES_PER_REGION: u32 = 16;

/// Most MX hosts a provider may have.
const MAX_MX: u32 = 4;

/// What one run can carry: a plan beyond these is refused before anything starts (exit 2),
/// rather than found out as an out-of-memory abort minutes in.
pub mod limits {
    use std::time::Duration;

    /// Largest message: the reference MTA's and the inboxes' SIZE limit (32 MiB); the
    /// generator holds each message it sends whole, one per connection.
    pub const MAX_MESSAGE_SIZE: u64 = 32 << 20;
    /// Shortest lease on the shared queue: it is renewed every third of itself, and a
    /// renewal must get through a busy node's event loop in time.
    pub const MIN_LEASE: Duration = Duration::from_millis(300);
    /// Largest message on the shared queue (`spool: nats`): nats-server's file store keeps
    /// records of at most 32 MiB, and 1 MiB of each publish is kept for the envelope.
    pub const MAX_SHARED_QUEUE_MESSAGE: u64 = 31 << 20;
    /// Highest rate one generator schedules (about 10× what the benchmarks show it sending on
    /// loopback); a higher peak needs several agents.
    pub const MAX_RATE: f64 = 200_000.0;
    /// Highest peak `mailsurge sim` models: 114× the 87,500/s of a 4.1 B day, and a day of it
    /// still counts exactly in a double.
    pub const MAX_MODEL_RATE: f64 = 10_000_000.0;
    /// Most messages one run's schedule may hold (peak × traffic window): the generator keeps
    /// 32 bytes per message it has released and not yet sent.
    pub const MAX_PLANNED: f64 = 50_000_000.0;
    /// Submission connections: the reference MTA's connection limit.
    pub const MAX_CONNECTIONS: u32 = 1024;
    /// Recipients per message: what an SMTP server must accept (RFC 5321 §4.5.3.1.8), and the
    /// reference MTA's limit.
    pub const MAX_RECIPIENTS: u32 = 100;
    pub const MAX_TENANTS: u32 = 1_000_000;
    /// Longest traffic window, and longest drain.
    pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
    /// Widest lognormal size spread (sigma); beyond it the sizes are all `max` or tiny.
    pub const MAX_SIGMA: f64 = 5.0;
}
use limits::*;

/// Lower-cased recipient domain → the provider that serves it.
type DomainOwners<'a> = BTreeMap<String, &'a str>;

/// Where errors point: the section's top key, then the first occurrence of a needle after it.
pub(super) struct At<'a>(pub(super) &'a Source);

impl At<'_> {
    pub(super) fn err(&self, needle: &str, section: &str, msg: String) -> ConfigError {
        self.0.error_at(needle, self.0.top_key_line(section), msg)
    }
}

/// Who carries the plan: a run (its generator holds the schedule) or the model of
/// `mailsurge sim` (any rate and length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Run,
    Model,
}

/// Every check, section by section, for a run.
pub fn check(src: &Source, f: &ScenarioFile) -> Result<(), ConfigError> {
    check_for(src, f, Reach::Run)
}

pub fn check_for(src: &Source, f: &ScenarioFile, reach: Reach) -> Result<(), ConfigError> {
    let at = At(src);
    basics(&at, f)?;
    regions(&at, f)?;
    let owners = providers(&at, f)?;
    mta(&at, f, &owners)?;
    network::addresses(&at, f)?;
    traffic(&at, &f.traffic, &owners)?;
    capacity(&at, f, reach)?;
    super::chaos::check(&at, f)?;
    thresholds(&at, f, &owners)?;
    super::abort::check(src, f)?;
    capacity_gate(&at, f)?;
    super::placement::check(src, f)?;
    external(&at, f)
}

fn basics(at: &At, f: &ScenarioFile) -> Result<(), ConfigError> {
    if f.name.trim().is_empty() || f.name.contains(['/', '\\']) {
        return Err(at.err(
            "name",
            "name",
            "name: must be non-empty and contain no path separators".into(),
        ));
    }
    if f.duration.0.is_zero() {
        return Err(at.err("duration", "duration", "duration: must be longer than 0s".into()));
    }
    for (key, d) in [("duration", f.duration), ("drain", f.drain)] {
        if d.0 > MAX_WINDOW {
            return Err(at.err(
                key,
                key,
                format!("{key}: {d} is longer than a run may be (at most 24h, e.g. {key}: 30m)"),
            ));
        }
    }
    if let Some(w) = f.warmup.filter(|w| w.0 >= f.duration.0) {
        return Err(at.err(
            "warmup",
            "warmup",
            format!(
                "warmup: {w} leaves nothing of the {} window to judge (it must be shorter, e.g. warmup: 5s)",
                f.duration
            ),
        ));
    }
    Ok(())
}

fn regions(at: &At, f: &ScenarioFile) -> Result<(), ConfigError> {
    if f.regions.is_empty() && f.mta.kind != MtaKind::External {
        return Err(at.err("regions", "regions", "regions: at least one region is needed".into()));
    }
    let mut seen = BTreeSet::new();
    for r in &f.regions {
        if !seen.insert(r.name.as_str()) {
            return Err(at.err(&r.name, "regions", format!("regions: duplicate region `{}`", r.name)));
        }
        if r.nodes == 0 || r.nodes > MAX_NODES_PER_REGION {
            return Err(at.err(
                &r.name,
                "regions",
                format!(
                    "regions: `{}` needs 1..={MAX_NODES_PER_REGION} nodes, not {}",
                    r.name, r.nodes
                ),
            ));
        }
        if r.weight.is_some_and(|w| !(w.is_finite() && w > 0.0)) {
            return Err(at.err(
                &r.name,
                "regions",
                format!("regions: `{}` weight must be above 0", r.name),
            ));
        }
    }
    Ok(())
}

/// Checks the providers and returns which provider serves each domain.
fn providers<'f>(at: &At, f: &'f ScenarioFile) -> Result<DomainOwners<'f>, ConfigError> {
    if f.providers.is_empty() {
        return Err(at.err(
            "providers",
            "providers",
            "providers: at least one provider is needed".into(),
        ));
    }
    let mut names = BTreeSet::new();
    let mut owners: DomainOwners = BTreeMap::new();
    for p in &f.providers {
        if !names.insert(p.name.as_str()) {
            return Err(at.err(
                &p.name,
                "providers",
                format!("providers: duplicate provider `{}`", p.name),
            ));
        }
        if p.domains.is_empty() {
            return Err(at.err(&p.name, "providers", format!("providers: `{}` has no domains", p.name)));
        }
        for d in &p.domains {
            if let Some(other) = owners.insert(d.to_ascii_lowercase(), &p.name) {
                return Err(at.err(
                    d,
                    "providers",
                    format!("providers: domain `{d}` belongs to both `{other}` and `{}`", p.name),
                ));
            }
        }
        if p.mx == 0 || p.mx > MAX_MX {
            return Err(at.err(
                &p.name,
                "providers",
                format!("providers: `{}` mx must be 1..={MAX_MX}", p.name),
            ));
        }
    }
    Ok(owners)
}

fn mta(at: &At, f: &ScenarioFile, owners: &DomainOwners) -> Result<(), ConfigError> {
    for (pool, ips) in &f.mta.egress_pools {
        if ips.is_empty() {
            return Err(at.err(pool, "mta", format!("mta: egress_pools: pool `{pool}` is empty")));
        }
    }
    let r = &f.mta.retry;
    if r.factor < 1.0 || !r.factor.is_finite() {
        return Err(at.err(
            "factor",
            "mta",
            format!("mta: retry: factor must be >= 1, not {}", r.factor),
        ));
    }
    if r.initial.0.is_zero() {
        return Err(at.err("initial", "mta", "mta: retry: initial must be longer than 0s".into()));
    }
    if let Some((key, why)) = f.mta.limits.problem() {
        return Err(at.err(key, "mta", format!("mta: {why}")));
    }
    shared_queue(at, f)?;
    if let Some(b) = &f.mta.bounces {
        if b.domain.trim().is_empty()
            || b.domain.contains(['@', ' '])
            || owners.contains_key(&b.domain.to_ascii_lowercase())
        {
            return Err(at.err(
                "bounces",
                "mta",
                format!(
                    "mta: bounces: domain `{}` must be a bare domain that no provider serves",
                    b.domain
                ),
            ));
        }
    }
    Ok(())
}

fn traffic(at: &At, t: &Traffic, owners: &DomainOwners) -> Result<(), ConfigError> {
    if t.domains.is_empty() {
        return Err(at.err(
            "domains",
            "traffic",
            "traffic: domains: at least one domain is needed".into(),
        ));
    }
    for d in t.domains.keys() {
        if !owners.contains_key(&d.to_ascii_lowercase()) {
            return Err(at.err(
                d,
                "traffic",
                format!(
                    "traffic: domains: `{d}` is not served by any provider (known: {})",
                    owners.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    if t.domains.values().map(|w| w.0).sum::<f64>() <= 0.0 {
        return Err(at.err(
            "domains",
            "traffic",
            "traffic: domains: weights must not all be 0".into(),
        ));
    }
    for (k, share) in &t.recipients {
        if !RECIPIENT_PREFIXES.contains(&k.as_str()) {
            return Err(at.err(
                k,
                "traffic",
                format!(
                    "traffic: recipients: `{k}` is not a scripted local part (expected one of {}, e.g. `nouser: 2%`)",
                    RECIPIENT_PREFIXES.join(", ")
                ),
            ));
        }
        if !(0.0..=1.0).contains(&share.0) {
            return Err(at.err(
                k,
                "traffic",
                format!("traffic: recipients: {k}: a share from 0% to 100%"),
            ));
        }
    }
    if t.recipients.values().map(|p| p.0).sum::<f64>() > 1.0 + 1e-9 {
        return Err(at.err(
            "recipients",
            "traffic",
            "traffic: recipients: the shares add up to more than 100%".into(),
        ));
    }
    if t.connections == 0 || t.recipients_per_message == 0 || t.tenants == 0 {
        return Err(at.err(
            "traffic",
            "traffic",
            "traffic: connections, tenants and recipients_per_message must be at least 1".into(),
        ));
    }
    match &t.rate {
        RateSpec::Constant(r) if r.0 <= 0.0 => {
            return Err(at.err("rate", "traffic", "traffic: rate must be above 0/s".into()));
        }
        RateSpec::Curve { peak, curve } => {
            if peak.0 <= 0.0 {
                return Err(at.err("peak", "traffic", "traffic: rate: peak must be above 0/s".into()));
            }
            if let Curve::Points(points) = curve {
                if points.len() < 2 || points.iter().any(|(_, w)| *w < 0.0 || !w.is_finite()) {
                    return Err(at.err(
                        "curve",
                        "traffic",
                        "traffic: rate: curve needs at least two [at, weight] points with weights >= 0".into(),
                    ));
                }
            }
        }
        _ => {}
    }
    if let SizeSpec::Dist(SizeDist::Uniform { min, max }) = &t.size {
        if min > max {
            return Err(at.err("min", "traffic", "traffic: size: min must not exceed max".into()));
        }
    }
    Ok(())
}

/// What one run can carry (see [`limits`]): message size, rate, schedule, connections.
fn capacity(at: &At, f: &ScenarioFile, reach: Reach) -> Result<(), ConfigError> {
    let t = &f.traffic;
    let largest = match &t.size {
        SizeSpec::Fixed(s) => s.0,
        SizeSpec::Dist(SizeDist::Fixed { size }) => size.0,
        SizeSpec::Dist(SizeDist::Uniform { max, .. }) => max.0,
        SizeSpec::Dist(SizeDist::Lognormal { max, sigma, .. }) => {
            if !(sigma.is_finite() && (0.0..=MAX_SIGMA).contains(sigma)) {
                return Err(at.err(
                    "sigma",
                    "traffic",
                    format!("traffic: size: sigma must be between 0 and {MAX_SIGMA}, not {sigma} (e.g. sigma: 1.0)"),
                ));
            }
            max.0
        }
    };
    if largest > MAX_MESSAGE_SIZE {
        return Err(at.err(
            "size",
            "traffic",
            format!(
                "traffic: size: {} is larger than a message may be (at most 32MiB, the MTA's SIZE limit)",
                Size(largest)
            ),
        ));
    }
    if f.mta.spool == SpoolKind::Nats && largest > MAX_SHARED_QUEUE_MESSAGE {
        return Err(at.err(
            "size",
            "traffic",
            format!(
                "traffic: size: {} is larger than the shared queue stores (spool: nats: at most 31MiB; nats-server's file store keeps records of at most 32 MiB, 1 MiB of which is the envelope's)",
                Size(largest)
            ),
        ));
    }
    let peak = t.rate.peak();
    if reach == Reach::Model && (peak.is_nan() || peak > MAX_MODEL_RATE) {
        return Err(at.err(
            "rate",
            "traffic",
            format!("traffic: rate: {peak}/s is more than the model counts exactly (at most {MAX_MODEL_RATE}/s)"),
        ));
    }
    if reach == Reach::Run && peak > MAX_RATE {
        return Err(at.err(
            "rate",
            "traffic",
            format!("traffic: rate: {}/s is more than one generator schedules (at most {MAX_RATE}/s); lower it, or spread it over agents", peak),
        ));
    }
    let planned = peak * f.duration.as_secs_f64();
    if reach == Reach::Run && planned > MAX_PLANNED {
        return Err(at.err(
            "rate",
            "traffic",
            format!(
                "traffic: up to {planned:.0} messages (peak {peak}/s × {}) are more than one run's schedule holds (at most {MAX_PLANNED:.0}); shorten the run or lower the rate",
                f.duration
            ),
        ));
    }
    for (key, v, max) in [
        ("connections", t.connections, MAX_CONNECTIONS),
        ("recipients_per_message", t.recipients_per_message, MAX_RECIPIENTS),
        ("tenants", t.tenants, MAX_TENANTS),
    ] {
        if v > max {
            return Err(at.err(
                key,
                "traffic",
                format!("traffic: {key}: {v} is more than a run carries (at most {max})"),
            ));
        }
    }
    Ok(())
}

/// `capacity: { headroom }` is a number above 0.
fn capacity_gate(at: &At, f: &ScenarioFile) -> Result<(), ConfigError> {
    match f.capacity {
        Some(g) if !(g.headroom.is_finite() && g.headroom > 0.0) => Err(at.err(
            "headroom",
            "capacity",
            format!(
                "capacity: headroom must be a number above 0 (e.g. 1.5), not {}",
                g.headroom
            ),
        )),
        _ => Ok(()),
    }
}

/// `spool: nats` and its settings are not given without the shared queue they belong to (the
/// address of a server named by `nats:` is the network rule's).
fn shared_queue(at: &At, f: &ScenarioFile) -> Result<(), ConfigError> {
    let m = &f.mta;
    if m.spool != SpoolKind::Nats {
        for (key, given) in [("nats", m.nats.is_some()), ("lease", m.lease.is_some())] {
            if given {
                return Err(at.err(
                    key,
                    "mta",
                    format!("mta: `{key}:` belongs to the shared queue; it needs `spool: nats`"),
                ));
            }
        }
        return Ok(());
    }
    if m.kind == MtaKind::External {
        return Err(at.err(
            "nats",
            "mta",
            "mta: spool: nats is the reference MTA's shared queue; an external MTA keeps its own".into(),
        ));
    }
    if let Some(l) = m.lease {
        if l.0 < MIN_LEASE {
            return Err(at.err(
                "lease",
                "mta",
                format!(
                    "mta: lease: {l} is too short to be renewed in time (at least {})",
                    Dur(MIN_LEASE)
                ),
            ));
        }
    }
    Ok(())
}

fn thresholds(at: &At, f: &ScenarioFile, owners: &DomainOwners) -> Result<(), ConfigError> {
    for t in &f.thresholds {
        let (known, what, name) = match &t.scope {
            Scope::All => (true, "", ""),
            Scope::Region(r) => (f.regions.iter().any(|x| &x.name == r), "region", r.as_str()),
            Scope::Provider(p) => (f.providers.iter().any(|x| &x.name == p), "provider", p.as_str()),
            Scope::Domain(d) => (owners.contains_key(&d.to_ascii_lowercase()), "domain", d.as_str()),
        };
        if !known {
            return Err(at.err(
                &t.expr,
                "thresholds",
                format!("thresholds: `{}`: there is no {what} `{name}` in this scenario", t.expr),
            ));
        }
    }
    Ok(())
}

/// `mta: kind: external`: the generator needs an address, the inboxes fixed ones.
fn external(at: &At, f: &ScenarioFile) -> Result<(), ConfigError> {
    if f.mta.kind != MtaKind::External {
        return Ok(());
    }
    if f.mta.submit.is_none() {
        return Err(at.err(
            "external",
            "mta",
            "mta: kind: external needs `submit: HOST:PORT` (where the generator submits)".into(),
        ));
    }
    // The external MTA routes by a transport map the user writes; a harness-chosen address
    // would change every run, so each provider needs a fixed one.
    if let Some(p) = f.providers.iter().find(|p| p.listen.is_none()) {
        return Err(at.err(
            &p.name,
            "providers",
            format!(
                "providers: `{}` needs a fixed `listen: IP:PORT` with mta kind: external (the external MTA's transport map points at it)",
                p.name
            ),
        ));
    }
    if f.chaos
        .iter()
        .any(|c| c.target.starts_with("region/") || c.target.starts_with("node/"))
    {
        return Err(at.err(
            "chaos",
            "chaos",
            "chaos: region/ and node/ targets need the reference MTA; with kind: external only provider/ targets apply"
                .into(),
        ));
    }
    Ok(())
}
