//! A reference-MTA node's config file (SPEC §4), as `mailsurge mta --config node.yaml` reads it
//! and as `run` writes one per node.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Source};
use crate::scenario::{Allow, NodeLimits, Retry};

/// Where the node keeps accepted messages until they are done.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SpoolConfig {
    /// One directory on local disk; relative to the config file.
    Local { dir: PathBuf },
    /// The shared queue (SPEC §9): one JetStream stream that every node of a run stores into
    /// and delivers from.
    Nats {
        /// `nats://IP:port` of the server (loopback, or inside `network.allow`).
        url: String,
        /// The stream's name; every node of one run names the same one.
        #[serde(default = "default_stream")]
        stream: String,
        /// How long a taken message stays this node's without being extended: what survivors
        /// wait before they take over the messages of a node that died.
        #[serde(default = "default_lease")]
        lease: crate::units::Dur,
    },
}

fn default_stream() -> String {
    "mailsurge".into()
}

fn default_lease() -> crate::units::Dur {
    crate::units::Dur(super::spool::nats::DEFAULT_LEASE)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node: String,
    pub region: String,
    /// Port 0 picks a free port; the node prints the bound address on stdout (`READY <addr>`).
    pub listen: SocketAddr,
    /// Clients allowed to relay; anything else gets `554 5.7.1` at RCPT (never an open relay).
    pub relay_networks: Vec<IpNet>,
    pub spool: SpoolConfig,
    /// Domain → inbox addresses; `"*"` is the fallback route.
    pub routes: BTreeMap<String, Vec<SocketAddr>>,
    #[serde(default)]
    pub egress_pools: BTreeMap<String, Vec<IpAddr>>,
    /// Pool used for deliveries unless a response rule reroutes; default: the first pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_pool: Option<String>,
    #[serde(default)]
    pub retry: Retry,
    /// Response table: shipped name or path relative to this file.
    #[serde(default = "default_responses")]
    pub responses: String,
    /// Events file, relative to this file.
    pub events: PathBuf,
    #[serde(default)]
    pub limits: NodeLimits,
    /// Post-acceptance screening (bounce/unsubscribe lists, tenant limits, parse checks).
    #[serde(default)]
    pub screen: crate::scenario::ScreenConfig,
    /// Seed for retry jitter.
    #[serde(default)]
    pub seed: u64,
    /// Mail an RFC 3464 delivery status notification to the envelope sender when recipients
    /// bounce or expire, as a production MTA does. Off by default: in `mailsurge run` the
    /// harness reads this node's events instead; on when the node stands in for an external
    /// MTA whose bounces the harness counts through its bounce inbox.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dsn: bool,
    /// Addresses beyond loopback this node may listen on, route to, send from or keep its
    /// queue on (SPEC §12); `run` writes its scenario's effective `network.allow` here.
    #[serde(default, skip_serializing_if = "NodeNetwork::is_empty")]
    pub network: NodeNetwork,
    /// STARTTLS (SPEC §13): offered at ingress with `cert`/`key`, used at egress whenever a
    /// provider offers it, and required — verified against `ca` — for the `required` domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<NodeTls>,
    /// SMTP AUTH at ingress (SPEC §13): clients that log in relay from any allowed network;
    /// others outside `relay_networks` get `530 5.7.0` at MAIL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<NodeAuth>,
}

/// A node config's `auth:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAuth {
    /// `user:password` lines; relative to the config file.
    pub users: PathBuf,
    /// Offer AUTH only after STARTTLS (Postfix's `smtpd_tls_auth_only`); needs `tls.cert`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_only: bool,
}

/// A node config's `tls:`. Paths are relative to the config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeTls {
    /// Ingress certificate chain (PEM); with `key`, the node offers STARTTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Roots (PEM) a `required` domain's server must be verified against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Egress STARTTLS whenever offered, unauthenticated (Postfix's `may`); a failed handshake
    /// falls back to plaintext on a new connection.
    #[serde(default = "yes")]
    pub opportunistic: bool,
    /// Domains delivered only over TLS verified against `ca` (Postfix's `secure`); anything
    /// less is a `451 4.7.5` deferral carrying the TLS error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
}

fn yes() -> bool {
    true
}

/// A node config's `network: { allow: [CIDR, ...] }`: the scenario's key, without the
/// recipient-domain setting (a node routes the domains it is given).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeNetwork {
    #[serde(default)]
    pub allow: Vec<IpNet>,
}

impl NodeNetwork {
    fn is_empty(&self) -> bool {
        self.allow.is_empty()
    }
}

fn default_responses() -> String {
    "deliverability".into()
}

impl NodeConfig {
    /// Reads, parses and checks a node config; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<(NodeConfig, Source), ConfigError> {
        Self::load_allowing(path, &[])
    }

    /// [`NodeConfig::load`] with the command line's `--allow-network` CIDRs added to the
    /// config's `network.allow`.
    pub fn load_allowing(path: &Path, extra: &[IpNet]) -> Result<(NodeConfig, Source), ConfigError> {
        let src = Source::read(path)?;
        let mut cfg: NodeConfig = src.parse()?;
        let allow = Allow::new(cfg.network.allow.iter().chain(extra).copied());
        cfg.network.allow = allow.cidrs().to_vec();
        let dir = src.dir.clone().unwrap_or_else(|| PathBuf::from("."));
        match &mut cfg.spool {
            SpoolConfig::Local { dir: spool } => {
                if spool.is_relative() {
                    *spool = dir.join(&*spool);
                }
            }
            SpoolConfig::Nats { url, stream, lease } => {
                if let Err(why) = allow.check_url("spool: url", url) {
                    return Err(src.error_at(url.as_str(), src.top_key_line("spool"), format!("spool: {why}")));
                }
                if stream.is_empty()
                    || !stream
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(src.error_at(
                        stream.as_str(),
                        src.top_key_line("spool"),
                        format!("spool: stream `{stream}` must be letters, digits, `-` or `_`"),
                    ));
                }
                if lease.0 < crate::scenario::limits::MIN_LEASE {
                    return Err(src.error_at(
                        "lease",
                        src.top_key_line("spool"),
                        format!(
                            "spool: lease {lease} is too short to be renewed in time (at least {})",
                            crate::units::Dur(crate::scenario::limits::MIN_LEASE)
                        ),
                    ));
                }
            }
        }
        if cfg.events.is_relative() {
            cfg.events = dir.join(&cfg.events);
        }
        if let Err(why) = allow.check("listen", cfg.listen.ip()) {
            return Err(src.error_at("listen", src.top_key_line("listen"), format!("listen: {why}")));
        }
        if cfg.routes.is_empty() {
            return Err(src.error_at("routes", 1, "routes: at least one route is needed"));
        }
        if let Some((key, why)) = cfg.limits.problem() {
            return Err(src.error_at(key, src.top_key_line("limits"), why));
        }
        for (d, addrs) in &cfg.routes {
            if addrs.is_empty() {
                return Err(src.error_at(d, src.top_key_line("routes"), format!("routes: `{d}` has no addresses")));
            }
            for a in addrs {
                if let Err(why) = allow.check(&format!("routes: {d}"), a.ip()) {
                    return Err(src.error_at(&a.to_string(), src.top_key_line("routes"), format!("routes: {why}")));
                }
            }
        }
        for (p, ips) in &cfg.egress_pools {
            if ips.is_empty() {
                return Err(src.error_at(
                    p,
                    src.top_key_line("egress_pools"),
                    format!("egress_pools: `{p}` lists no addresses"),
                ));
            }
            for ip in ips {
                if let Err(why) = allow.check(&format!("egress_pools: {p}"), *ip) {
                    let at = src.top_key_line("egress_pools");
                    return Err(src.error_at(&ip.to_string(), at, format!("egress_pools: {why}")));
                }
            }
        }
        if let Some(t) = &mut cfg.tls {
            for p in [&mut t.cert, &mut t.key, &mut t.ca].into_iter().flatten() {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
            if t.cert.is_some() != t.key.is_some() {
                return Err(src.error_at("tls", src.top_key_line("tls"), "tls: `cert` and `key` go together"));
            }
            if !t.required.is_empty() && t.ca.is_none() {
                return Err(src.error_at(
                    "required",
                    src.top_key_line("tls"),
                    "tls: `required` domains need `ca:` (the roots their servers are verified against)",
                ));
            }
        }
        if let Some(a) = &mut cfg.auth {
            if a.users.is_relative() {
                a.users = dir.join(&a.users);
            }
            if a.tls_only && cfg.tls.as_ref().is_none_or(|t| t.cert.is_none()) {
                return Err(src.error_at(
                    "tls_only",
                    src.top_key_line("auth"),
                    "auth: `tls_only` needs `tls: { cert, key }` (STARTTLS to offer first)",
                ));
            }
        }
        if let Some(p) = &cfg.default_pool {
            if !cfg.egress_pools.contains_key(p) {
                return Err(src.error_at(p, 1, format!("default_pool: no egress pool named `{p}`")));
            }
        }
        Ok((cfg, src))
    }

    /// The inbox addresses for a domain (exact match, else `*`).
    pub fn route(&self, domain: &str) -> Option<&[SocketAddr]> {
        self.routes
            .get(domain)
            .or_else(|| {
                self.routes
                    .iter()
                    .find(|(d, _)| d.eq_ignore_ascii_case(domain))
                    .map(|(_, a)| a)
            })
            .or_else(|| self.routes.get("*"))
            .map(Vec::as_slice)
    }
}
