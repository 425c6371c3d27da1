//! The scenario file's shape (SPEC §2), as serde types with unknown keys denied.
//!
//! These types are what the file says, before cross-checks; [`super::load`] turns them into a
//! validated [`super::Scenario`]. Units parse through [`crate::units`], regexes and threshold
//! expressions inside their own `Deserialize` impls so errors carry the YAML position.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::units::{Dur, Pattern, Percent, Rate, Size};

use super::threshold::Threshold;
pub use super::tls::{MtaTls, SubmitAuth, SubmitTls, TlsMode};

/// The top level of a scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub name: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Traffic window; generation stops after it.
    pub duration: Dur,
    /// How long to wait after the traffic window for queues to empty.
    #[serde(default = "default_drain")]
    pub drain: Dur,
    /// The first part of the window that is not judged: accounted for, charted, but left out
    /// of percentiles, the SLO and latency/throughput thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Dur>,
    pub slo: Slo,
    #[serde(default)]
    pub thresholds: Vec<Threshold>,
    /// Conditions that stop the run early (`abort:`, SPEC §12): threshold syntax, read the
    /// other way round — the run aborts when one *holds*. Only live metrics (see
    /// [`super::abort`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abort: Vec<Threshold>,
    /// Reference-MTA nodes by region; may be left out when the MTA is external.
    #[serde(default)]
    pub regions: Vec<Region>,
    #[serde(default)]
    pub mta: Mta,
    pub providers: Vec<Provider>,
    pub traffic: Traffic,
    #[serde(default)]
    pub chaos: Vec<ChaosAction>,
    /// `mailsurge capacity`'s gate: the knee must reach the peak × `headroom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityGate>,
    /// Where a distributed run (`run --cluster`) puts each part; see [`super::placement`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<super::placement::Placement>,
    /// Addresses beyond loopback and real recipient domains (SPEC §12); left out, a run stays
    /// on loopback. A run's own `scenario.yaml` records the effective list, `--allow-network`
    /// included, so rerunning its directory is allowed what the run was.
    #[serde(default, skip_serializing_if = "Network::is_default")]
    pub network: Network,
}

/// `network: { allow: [10.0.0.0/24], real_domains: false }`: what a run may reach beyond
/// loopback (see [`super::network`], where the rule lives).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// CIDRs whose addresses may be listened on, submitted to, routed to or sent from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<ipnet::IpNet>,
    /// Keep the scenario's recipient domains as written even where they would get the
    /// `.mailsurge.test` suffix (an external or distributed system under test): for an MTA
    /// whose routes cannot be changed, at the risk of mail reaching the real domain.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub real_domains: bool,
    /// Set by a distributed run's coordinator (SPEC §12), not a key of the file: its system
    /// under test is on other hosts, so recipient domains get the suffix as with an external
    /// MTA (see [`super::network::suffixed`]).
    #[serde(skip)]
    pub distributed: bool,
}

impl Network {
    fn is_default(&self) -> bool {
        self.allow.is_empty() && !self.real_domains
    }
}

/// `capacity: { headroom: 1.5 }` — "we still carry 1.5× last year's peak".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityGate {
    pub headroom: f64,
}

fn default_seed() -> u64 {
    1
}
fn default_drain() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// A message meets the SLO if delivered within this.
    pub delivery_time: Dur,
    /// Share of eligible messages that must meet it.
    pub target: Percent,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub name: String,
    #[serde(default = "one")]
    pub nodes: u32,
    /// Share of submissions relative to other regions, split evenly over the region's healthy
    /// nodes. Default: its node count, so every node gets the same share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MtaKind {
    #[default]
    Reference,
    External,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SpoolKind {
    #[default]
    Local,
    Nats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mta {
    #[serde(default)]
    pub kind: MtaKind,
    #[serde(default)]
    pub spool: SpoolKind,
    #[serde(default)]
    pub retry: Retry,
    /// Named pools of egress source addresses (127.x.y.z).
    #[serde(default)]
    pub egress_pools: BTreeMap<String, Vec<std::net::IpAddr>>,
    /// MTA response table: shipped name or path (SPEC §4).
    #[serde(default = "default_responses")]
    pub responses: String,
    /// Post-acceptance screening passed to every node.
    #[serde(default)]
    pub screen: ScreenConfig,
    /// `kind: external`: where the generator submits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit: Option<std::net::SocketAddr>,
    /// `kind: external`: the harness-owned bounce domain and its inbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounces: Option<Bounces>,
    /// `spool: nats`: an existing server or cluster (`nats://host:port`) instead of the one
    /// `run` starts under the report directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<String>,
    /// `spool: nats`: how long a node's hold on a message lasts unless it renews it — what
    /// survivors wait before taking over a dead node's mail. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<crate::units::Dur>,
    /// Every node's ingress and delivery limits (outbound connections per domain, rates,
    /// timeouts); unset keys keep the node defaults.
    #[serde(default)]
    pub limits: NodeLimits,
    /// The nodes' STARTTLS toward providers (SPEC §13); ingress STARTTLS is always offered.
    #[serde(default, skip_serializing_if = "MtaTls::is_default")]
    pub tls: MtaTls,
}

impl Default for Mta {
    fn default() -> Self {
        Mta {
            kind: MtaKind::Reference,
            spool: SpoolKind::Local,
            retry: Retry::default(),
            egress_pools: BTreeMap::new(),
            responses: default_responses(),
            screen: Default::default(),
            submit: None,
            bounces: None,
            nats: None,
            lease: None,
            limits: NodeLimits::default(),
            tls: MtaTls::default(),
        }
    }
}

fn default_responses() -> String {
    "deliverability".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounces {
    pub domain: String,
    pub listen: std::net::SocketAddr,
}

impl Default for Bounces {
    /// `bounces.mailsurge.test` on 127.0.2.250:2525, the address SPEC §2's example uses.
    fn default() -> Self {
        Bounces {
            domain: crate::events::BOUNCE_DOMAIN.to_string(),
            listen: std::net::SocketAddr::from(([127, 0, 2, 250], 2525)),
        }
    }
}

/// Default burst for tenant limits: a campaign starts with a short spike.
const DEFAULT_TENANT_BURST: u32 = 100;

/// Post-acceptance screening rules (`mta: screen:`), passed to every node; the MTA's
/// `Screen` applies them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScreenConfig {
    /// Recipients known to bounce. Every bounce with `suppress: true` joins this list at
    /// run time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounce_list: Option<Pattern>,
    /// Recipients who unsubscribed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsubscribed: Option<Pattern>,
    /// Most messages per second per tenant (envelope sender); unlimited when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_rate: Option<Rate>,
    pub tenant_burst: u32,
    /// Also drop messages without a `From:` header (RFC 5322 requires one). Off by default:
    /// like Postfix, which adds missing headers rather than refusing, the reference MTA only
    /// drops header blocks that do not parse at all.
    pub require_from: bool,
}

impl Default for ScreenConfig {
    fn default() -> Self {
        ScreenConfig {
            bounce_list: None,
            unsubscribed: None,
            tenant_rate: None,
            tenant_burst: DEFAULT_TENANT_BURST,
            require_from: false,
        }
    }
}

/// Retry schedule: exponential backoff with jitter, given up after `give_up` → `expired`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub initial: Dur,
    pub factor: f64,
    pub max_delay: Dur,
    pub jitter: Percent,
    pub give_up: Dur,
}

impl Default for Retry {
    fn default() -> Self {
        use std::time::Duration;
        Retry {
            initial: Dur(Duration::from_secs(1)),
            factor: 2.0,
            max_delay: Dur(Duration::from_secs(20)),
            jitter: Percent(0.2),
            give_up: Dur(Duration::from_secs(120)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    pub domains: Vec<String>,
    /// Inbox rule table: shipped profile name or path (SPEC §3).
    #[serde(default = "default_rules")]
    pub rules: String,
    /// Fixed listen address (of the first MX); default chosen by the harness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<std::net::SocketAddr>,
    /// MX hosts (1..=4): the MTA routes to them in order and fails over down the list.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub mx: u32,
    /// STARTTLS at this provider, over what its rule table says (`tls:` there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsMode>,
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn default_rules() -> String {
    "generic".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    pub rate: RateSpec,
    #[serde(default)]
    pub arrival: Arrival,
    /// Recipient domain → weight (`40%` or a bare number); each must map to a provider.
    pub domains: BTreeMap<String, Percent>,
    #[serde(default)]
    pub size: SizeSpec,
    #[serde(default = "one")]
    pub tenants: u32,
    #[serde(default = "one")]
    pub recipients_per_message: u32,
    /// Shares of recipients whose local part starts with a prefix the shipped provider profiles
    /// script (`nouser: 2%` → `nouser-<N>@…`, an unknown user); the rest are `user<N>`. Keys:
    /// [`RECIPIENT_PREFIXES`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recipients: BTreeMap<String, Percent>,
    /// Submission connections, each reused for many messages.
    #[serde(default = "default_connections")]
    pub connections: u32,
    /// `starttls`: every submission connection upgrades to TLS before it sends (SPEC §13).
    #[serde(default, skip_serializing_if = "SubmitTls::is_none")]
    pub tls: SubmitTls,
    /// `user:password`: every submission connection logs in with AUTH (SPEC §13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<SubmitAuth>,
}

/// Local-part prefixes the shipped provider profiles script (`rcpt: '^nouser[-.+]'` …): an
/// unknown user, a full mailbox, a temporary failure, greylisting, a spam refusal, a slow
/// acceptance.
pub const RECIPIENT_PREFIXES: [&str; 6] = ["nouser", "full", "tempfail", "greylist", "spam", "slow"];

fn default_connections() -> u32 {
    16
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    #[default]
    Poisson,
    Uniform,
}

/// `rate: 300/s` (constant) or `{ peak: 2000/s, curve: … }`. Read by hand
/// (`super::rate`) so a mistake is told what was expected, where.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RateSpec {
    Constant(Rate),
    Curve { peak: Rate, curve: Curve },
}

impl RateSpec {
    /// The highest rate it plays, msg/s: the constant rate, or the curve's peak.
    pub fn peak(&self) -> f64 {
        match self {
            RateSpec::Constant(r) => r.0,
            RateSpec::Curve { peak, .. } => peak.0,
        }
    }
}

/// A named curve or a list of `[at, weight]` points, linearly interpolated and stretched over
/// the traffic window. `at` is a duration into the window or a share (`50%`) of it; weights are
/// relative to `peak` (the largest weight plays at `peak`). `[at, rate]` points (`[20s,
/// 300/s]`) are read as weights under a peak of their largest rate.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Curve {
    Named(NamedCurve),
    Points(Vec<(CurveAt, f64)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NamedCurve {
    /// Constant at peak.
    Flat,
    /// A compressed retail peak day: hourly weights, evening peak.
    BlackFriday,
    /// Three bursts over a low base (a marathon's start, halfway and finish notifications).
    Waves,
}

/// Where a curve point sits: a duration into the window or a share of it.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum CurveAt {
    Share(Percent),
    At(Dur),
}

/// Message size: `12KiB` (fixed) or a distribution.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum SizeSpec {
    Fixed(Size),
    Dist(SizeDist),
}

impl Default for SizeSpec {
    fn default() -> Self {
        SizeSpec::Fixed(Size(4096))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub enum SizeDist {
    Fixed {
        size: Size,
    },
    Uniform {
        min: Size,
        max: Size,
    },
    Lognormal {
        median: Size,
        sigma: f64,
        #[serde(default = "default_max_size")]
        max: Size,
    },
}

fn default_max_size() -> Size {
    Size(10 << 20)
}

/// One step of the chaos timeline (SPEC §2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosAction {
    pub at: Dur,
    pub action: ChaosKind,
    /// `region/<name>`, `node/<name>` or `provider/<name>`.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<KillMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<Dur>,
    /// `kill provider/X`: only this MX host (1-based); default every MX.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mx: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChaosKind {
    Kill,
    Restore,
    Block,
    Latency,
    /// A provider's TLS breaks (`mode: handshake-fail | expired-cert`).
    Tls,
}

/// How a `kill` takes a provider down (`refuse`, `blackhole`, `reset`), or how a `tls` fault
/// breaks its TLS (`handshake-fail`, `expired-cert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KillMode {
    Refuse,
    Blackhole,
    Reset,
    /// STARTTLS answered 220, then the connection closes instead of a handshake.
    HandshakeFail,
    /// The provider presents a certificate that expired a day ago.
    ExpiredCert,
}

impl KillMode {
    /// As the scenario writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            KillMode::Refuse => "refuse",
            KillMode::Blackhole => "blackhole",
            KillMode::Reset => "reset",
            KillMode::HandshakeFail => "handshake-fail",
            KillMode::ExpiredCert => "expired-cert",
        }
    }

    /// A mode of the `tls` action rather than of `kill`.
    pub fn is_tls(self) -> bool {
        matches!(self, KillMode::HandshakeFail | KillMode::ExpiredCert)
    }
}

/// A reference-MTA node's ingress and delivery limits (its config's `limits:`, and the
/// scenario's `mta.limits:` for every node of a run); defaults suit a loopback test bed.
/// Plain data here so the scenario can size its nodes; the node enforces them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeLimits {
    pub max_message_size: crate::units::Size,
    pub max_recipients: usize,
    pub max_connections: usize,
    /// Outbound connections per destination domain.
    pub domain_connections: usize,
    /// Messages per second per destination domain; unlimited when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_rate: Option<crate::units::Rate>,
    /// Outbound connections per egress pool, over all domains; 0 = unlimited.
    pub pool_connections: usize,
    /// Messages per second per egress pool, over all domains; unlimited when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_rate: Option<crate::units::Rate>,
    /// Inbound connections per client IP.
    pub connections_per_ip: usize,
    /// Messages sent on one outbound connection before it is recycled.
    pub messages_per_connection: u32,
    /// Outbound connect, reply and DATA timeout. RFC 5321 suggests minutes (Postfix: 30 s
    /// connect, 300 s replies); a day compressed into minutes needs the same proportion in
    /// seconds, or one blackholed provider parks mail past the whole run.
    pub delivery_timeout: crate::units::Dur,
}

impl Default for NodeLimits {
    fn default() -> Self {
        NodeLimits {
            max_message_size: crate::units::Size(super::limits::MAX_MESSAGE_SIZE),
            max_recipients: 100,
            max_connections: 1024,
            domain_connections: 8,
            domain_rate: None,
            pool_connections: 0,
            pool_rate: None,
            connections_per_ip: 256,
            messages_per_connection: 1000,
            delivery_timeout: crate::units::Dur(std::time::Duration::from_secs(30)),
        }
    }
}

/// Most recipients a node takes per message: a parked job keeps its recipients as bits.
pub const MAX_NODE_RECIPIENTS: usize = 128;

impl NodeLimits {
    /// The first limit that would leave a node unable to work (no outbound connection, no
    /// message per connection, no time to deliver), as (key, why): the scenario check and the
    /// node's config loader both refuse it.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        let zero = |key: &'static str| Some((key, format!("limits: {key} must be at least 1")));
        if self.domain_connections == 0 {
            return zero("domain_connections");
        }
        if self.messages_per_connection == 0 {
            return zero("messages_per_connection");
        }
        if self.max_connections == 0 {
            return zero("max_connections");
        }
        if self.max_recipients > MAX_NODE_RECIPIENTS {
            return Some((
                "max_recipients",
                format!(
                    "limits: max_recipients {} is more than a queued job tracks (at most {MAX_NODE_RECIPIENTS})",
                    self.max_recipients
                ),
            ));
        }
        if self.delivery_timeout.0.is_zero() {
            return Some((
                "delivery_timeout",
                "limits: delivery_timeout must be longer than 0s".into(),
            ));
        }
        None
    }
}
