//! Scenario files (SPEC §2): load YAML, resolve referenced rule/response files, cross-check,
//! and hand the rest of mailsurge one validated [`Scenario`].
//!
//! Nothing is started until a scenario has passed every check here, so a typo costs a second,
//! not a three-minute run. Every error names `file:line:col` (see [`crate::config`]).

pub mod model;
pub mod threshold;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

pub use model::*;
pub use threshold::Threshold;

use crate::config::{self, ConfigError, Shipped, Source};
use crate::inbox::rules::RuleSet;
use crate::mta::responses::ResponseTable;

/// Upper bound on MTA node processes per region: each is a real process on a 2-core box.
pub const MAX_NODES_PER_REGION: u32 = 16;

/// A provider with its rule table loaded.
#[derive(Debug, Clone)]
pub struct ResolvedProvider {
    pub spec: Provider,
    pub rules: RuleSet,
}

/// A scenario that passed every check.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file as written (with CLI overrides applied); re-serialised into the report.
    pub file: ScenarioFile,
    pub source: Source,
    pub providers: Vec<ResolvedProvider>,
    /// The response table source, so node configs can point at the same file.
    pub responses_source: Source,
    pub responses: ResponseTable,
}

impl Scenario {
    /// The provider that receives mail for `domain`.
    pub fn provider_for(&self, domain: &str) -> Option<&ResolvedProvider> {
        self.providers
            .iter()
            .find(|p| p.spec.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)))
    }

    /// The resolved scenario as YAML, for `scenario.yaml` in the report (seed included).
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(&self.file).unwrap_or_else(|e| format!("# cannot serialise scenario: {e}\n"))
    }
}

/// Loads and validates a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ConfigError> {
    let source = Source::read(path)?;
    from_source(source)
}

/// Validates an already-read scenario.
pub fn from_source(source: Source) -> Result<Scenario, ConfigError> {
    let file: ScenarioFile = source.parse()?;
    check(&source, &file)?;

    let mut providers = Vec::new();
    for p in &file.providers {
        let line = source
            .find(&format!("name: {}", p.name), source.top_key_line("providers"))
            .map_or(1, |p| p.0);
        let rules_src = config::resolve(&source, &p.rules, Shipped::Inbox)
            .map_err(|m| source.error_at(&p.rules, line, format!("providers: rules: {m}")))?;
        let rules = RuleSet::from_source(&rules_src)?;
        providers.push(ResolvedProvider { spec: p.clone(), rules });
    }
    let mta_line = source.top_key_line("mta");
    let responses_source = config::resolve(&source, &file.mta.responses, Shipped::Scenario)
        .map_err(|m| source.error_at(&file.mta.responses, mta_line, format!("mta: responses: {m}")))?;
    let responses = ResponseTable::from_source(&responses_source)?;
    Ok(Scenario {
        file,
        source,
        providers,
        responses_source,
        responses,
    })
}

/// Cross-checks serde cannot express: names unique, references resolve, addresses on loopback.
fn check(src: &Source, f: &ScenarioFile) -> Result<(), ConfigError> {
    let err = |needle: &str, section: &str, msg: String| src.error_at(needle, src.top_key_line(section), msg);

    if f.name.trim().is_empty() || f.name.contains(['/', '\\']) {
        return Err(err(
            "name",
            "name",
            "name: must be non-empty and contain no path separators".into(),
        ));
    }
    if f.duration.0.is_zero() {
        return Err(err("duration", "duration", "duration: must be longer than 0s".into()));
    }
    let external = f.mta.kind == MtaKind::External;
    if f.regions.is_empty() && !external {
        return Err(err(
            "regions",
            "regions",
            "regions: at least one region is needed".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for r in &f.regions {
        if !seen.insert(r.name.as_str()) {
            return Err(err(
                &r.name,
                "regions",
                format!("regions: duplicate region `{}`", r.name),
            ));
        }
        if r.nodes == 0 || r.nodes > MAX_NODES_PER_REGION {
            return Err(err(
                &r.name,
                "regions",
                format!(
                    "regions: `{}` needs 1..={MAX_NODES_PER_REGION} nodes, not {}",
                    r.name, r.nodes
                ),
            ));
        }
    }
    if f.providers.is_empty() {
        return Err(err(
            "providers",
            "providers",
            "providers: at least one provider is needed".into(),
        ));
    }
    let mut names = BTreeSet::new();
    let mut domain_owner: BTreeMap<String, &str> = BTreeMap::new();
    for p in &f.providers {
        if !names.insert(p.name.as_str()) {
            return Err(err(
                &p.name,
                "providers",
                format!("providers: duplicate provider `{}`", p.name),
            ));
        }
        if p.domains.is_empty() {
            return Err(err(
                &p.name,
                "providers",
                format!("providers: `{}` has no domains", p.name),
            ));
        }
        for d in &p.domains {
            if let Some(other) = domain_owner.insert(d.to_ascii_lowercase(), &p.name) {
                return Err(err(
                    d,
                    "providers",
                    format!("providers: domain `{d}` belongs to both `{other}` and `{}`", p.name),
                ));
            }
        }
        if let Some(addr) = p.listen {
            if !addr.ip().is_loopback() {
                return Err(err(
                    &addr.to_string(),
                    "providers",
                    format!("providers: `{}` listen {addr} is not a loopback address (mailsurge only uses 127.0.0.0/8 and ::1)", p.name),
                ));
            }
        }
    }
    for (pool, ips) in &f.mta.egress_pools {
        if ips.is_empty() {
            return Err(err(pool, "mta", format!("mta: egress_pools: pool `{pool}` is empty")));
        }
        if let Some(ip) = ips.iter().find(|ip| !ip.is_loopback()) {
            return Err(err(
                &ip.to_string(),
                "mta",
                format!("mta: egress_pools: {ip} is not a loopback address (mailsurge only uses 127.0.0.0/8 and ::1)"),
            ));
        }
    }
    let r = &f.mta.retry;
    if r.factor < 1.0 || !r.factor.is_finite() {
        return Err(err(
            "factor",
            "mta",
            format!("mta: retry: factor must be >= 1, not {}", r.factor),
        ));
    }
    if r.initial.0.is_zero() {
        return Err(err(
            "initial",
            "mta",
            "mta: retry: initial must be longer than 0s".into(),
        ));
    }

    let t = &f.traffic;
    if t.domains.is_empty() {
        return Err(err(
            "domains",
            "traffic",
            "traffic: domains: at least one domain is needed".into(),
        ));
    }
    for d in t.domains.keys() {
        if !domain_owner.contains_key(&d.to_ascii_lowercase()) {
            return Err(err(
                d,
                "traffic",
                format!(
                    "traffic: domains: `{d}` is not served by any provider (known: {})",
                    domain_owner.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    if t.domains.values().map(|w| w.0).sum::<f64>() <= 0.0 {
        return Err(err(
            "domains",
            "traffic",
            "traffic: domains: weights must not all be 0".into(),
        ));
    }
    if t.connections == 0 || t.recipients_per_message == 0 || t.tenants == 0 {
        return Err(err(
            "traffic",
            "traffic",
            "traffic: connections, tenants and recipients_per_message must be at least 1".into(),
        ));
    }
    match &t.rate {
        RateSpec::Constant(r) if r.0 <= 0.0 => {
            return Err(err("rate", "traffic", "traffic: rate must be above 0/s".into()));
        }
        RateSpec::Curve { peak, curve } => {
            if peak.0 <= 0.0 {
                return Err(err("peak", "traffic", "traffic: rate: peak must be above 0/s".into()));
            }
            if let Curve::Points(points) = curve {
                if points.len() < 2 || points.iter().any(|(_, w)| *w < 0.0 || !w.is_finite()) {
                    return Err(err(
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
            return Err(err("min", "traffic", "traffic: size: min must not exceed max".into()));
        }
    }

    for c in &f.chaos {
        let (kind, name) = c.target.split_once('/').unwrap_or(("", ""));
        let known = match kind {
            "region" => f.regions.iter().any(|r| r.name == name),
            "provider" => f.providers.iter().any(|p| p.name == name),
            "node" => f
                .regions
                .iter()
                .any(|r| (1..=r.nodes).any(|i| format!("{}-{i}", r.name) == name)),
            _ => false,
        };
        if !known {
            return Err(err(
                &c.target,
                "chaos",
                format!(
                    "chaos: target `{}` is not a known region/<name>, node/<name> or provider/<name>",
                    c.target
                ),
            ));
        }
        let bad = |msg: String| {
            Err(err(
                &c.target,
                "chaos",
                format!("chaos: {} at {}: {msg}", c.target, c.at),
            ))
        };
        let provider = f.providers.iter().find(|p| kind == "provider" && p.name == name);
        match c.action {
            ChaosKind::Block | ChaosKind::Latency if provider.is_none() => {
                return bad(format!("{:?} applies to provider/<name> targets only", c.action).to_lowercase());
            }
            ChaosKind::Block => match &c.pool {
                None => return bad("block needs `pool:` (the egress pool the provider blocks)".into()),
                Some(pool) if !f.mta.egress_pools.contains_key(pool) => {
                    return bad(format!("pool `{pool}` is not in mta: egress_pools"));
                }
                _ => {}
            },
            ChaosKind::Latency if c.add.is_none() => return bad("latency needs `add:` (e.g. 500ms)".into()),
            ChaosKind::Kill if provider.is_none() && c.mode.is_some() => {
                return bad("`mode:` applies to provider kills only (nodes are SIGKILLed)".into());
            }
            _ => {}
        }
        if let Some(mx) = c.mx {
            if provider.is_none_or(|p| mx == 0 || mx > p.mx) {
                return bad(format!("mx {mx} is not an MX of the target (1..=its `mx:`)"));
            }
        }
        if let Some(r) = &c.reply {
            if let Err(e) = crate::smtp::Reply::parse_spec(r) {
                return bad(format!("reply: {e}"));
            }
        }
    }
    for t in &f.thresholds {
        let (known, what, name) = match &t.scope {
            threshold::Scope::All => (true, "", ""),
            threshold::Scope::Region(r) => (f.regions.iter().any(|x| &x.name == r), "region", r.as_str()),
            threshold::Scope::Provider(p) => (f.providers.iter().any(|x| &x.name == p), "provider", p.as_str()),
            threshold::Scope::Domain(d) => (domain_owner.contains_key(&d.to_ascii_lowercase()), "domain", d.as_str()),
        };
        if !known {
            return Err(err(
                &t.expr,
                "thresholds",
                format!("thresholds: `{}`: there is no {what} `{name}` in this scenario", t.expr),
            ));
        }
    }
    for p in &f.providers {
        if p.mx == 0 || p.mx > 4 {
            return Err(err(
                &p.name,
                "providers",
                format!("providers: `{}` mx must be 1..=4", p.name),
            ));
        }
    }
    if let Some(r) = f
        .regions
        .iter()
        .find(|r| r.weight.is_some_and(|w| !(w.is_finite() && w > 0.0)))
    {
        return Err(err(
            &r.name,
            "regions",
            format!("regions: `{}` weight must be above 0", r.name),
        ));
    }
    if let Some(ip) = f.mta.submit.map(|a| a.ip()).filter(|ip: &IpAddr| !ip.is_loopback()) {
        return Err(err(
            "submit",
            "mta",
            format!("mta: submit: {ip} is not a loopback address"),
        ));
    }
    if let Some(b) = &f.mta.bounces {
        if !b.listen.ip().is_loopback() {
            return Err(err(
                "bounces",
                "mta",
                format!("mta: bounces: listen {} is not a loopback address", b.listen),
            ));
        }
        if b.domain.trim().is_empty()
            || b.domain.contains(['@', ' '])
            || domain_owner.contains_key(&b.domain.to_ascii_lowercase())
        {
            return Err(err(
                "bounces",
                "mta",
                format!(
                    "mta: bounces: domain `{}` must be a bare domain that no provider serves",
                    b.domain
                ),
            ));
        }
    }
    if external {
        if f.mta.submit.is_none() {
            return Err(err(
                "external",
                "mta",
                "mta: kind: external needs `submit: HOST:PORT` (where the generator submits)".into(),
            ));
        }
        // The external MTA routes by a transport map the user writes; a harness-chosen
        // address would change every run, so each provider needs a fixed one.
        if let Some(p) = f.providers.iter().find(|p| p.listen.is_none()) {
            return Err(err(
                &p.name,
                "providers",
                format!(
                    "providers: `{}` needs a fixed `listen: 127.x.y.z:PORT` with mta kind: external (the external MTA's transport map points at it)",
                    p.name
                ),
            ));
        }
        if !f.chaos.is_empty()
            && f.chaos
                .iter()
                .any(|c| c.target.starts_with("region/") || c.target.starts_with("node/"))
        {
            return Err(err(
                "chaos",
                "chaos",
                "chaos: region/ and node/ targets need the reference MTA; with kind: external only provider/ targets apply".into(),
            ));
        }
    }
    Ok(())
}

/// Overrides from the command line (`--seed`, `--duration`, `--rate-scale`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub seed: Option<u64>,
    pub duration: Option<crate::units::Dur>,
    pub rate_scale: Option<f64>,
}

impl Scenario {
    /// Applies CLI overrides; the report's scenario.yaml shows the values actually used.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(s) = o.seed {
            self.file.seed = s;
        }
        if let Some(d) = o.duration {
            self.file.duration = d;
        }
        if let Some(x) = o.rate_scale {
            let scale = |r: &mut crate::units::Rate| r.0 *= x;
            match &mut self.file.traffic.rate {
                RateSpec::Constant(r) => scale(r),
                RateSpec::Curve { peak, .. } => scale(peak),
            }
        }
    }
}
