//! The network rule (SPEC §12): which addresses mailsurge may listen on, submit to, route to or
//! send from, and how generated recipient domains are kept off the real internet.
//!
//! Loopback (127.0.0.0/8, ::1) is always allowed: a run on one box needs nothing else, and
//! nothing it does there can leave the machine. Any other address must be inside a CIDR of the
//! scenario's `network.allow` or of a command line's `--allow-network`; otherwise it is
//! refused before anything starts (exit 2), naming the address, where it came from and how to
//! allow it. Every command and file that names an address asks one [`Allow`], so the rule
//! cannot drift between the scenario, `gen`, the standalone inbox, queue and node.
//!
//! Once mail may leave loopback, a misrouted message could reach a real provider. So with a
//! system under test that mailsurge does not run on this host (an external MTA, or a
//! distributed run), generated recipient domains carry the RFC 2606 suffix [`TEST_SUFFIX`]
//! (`gmail.com` → `gmail.com.mailsurge.test`) unless `network.real_domains: true`:
//! [`sut_domain`] adds it where the plan meets the system under test (the generator's
//! recipients, the routes, the bounce domain), and [`bare_domain`] takes it off where
//! measurement maps recipients back to the scenario's providers and domain scopes.

use std::net::IpAddr;

use ipnet::IpNet;

use super::check::At;
use super::model::{MtaKind, ScenarioFile};
use crate::config::ConfigError;

/// The reserved suffix (RFC 2606 `.test`) of recipient domains an external or distributed
/// system under test sees: no real MX exists under it.
pub const TEST_SUFFIX: &str = ".mailsurge.test";

/// The addresses a run may use beyond loopback: the scenario's `network.allow` plus any
/// `--allow-network` CIDRs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allow {
    cidrs: Vec<IpNet>,
}

impl Allow {
    pub fn new(cidrs: impl IntoIterator<Item = IpNet>) -> Self {
        let mut a = Allow::default();
        a.extend(cidrs);
        a
    }

    /// Loopback and nothing else: the default of every command and file.
    pub fn loopback_only() -> Self {
        Allow::default()
    }

    /// The scenario's `network.allow` plus `extra` (the command line's `--allow-network`).
    pub fn for_scenario(f: &ScenarioFile, extra: &[IpNet]) -> Self {
        Allow::new(f.network.allow.iter().chain(extra).copied())
    }

    /// Adds CIDRs not already present (in order, so a file that records them reads the same).
    pub fn extend(&mut self, cidrs: impl IntoIterator<Item = IpNet>) {
        for c in cidrs {
            if !self.cidrs.contains(&c) {
                self.cidrs.push(c);
            }
        }
    }

    /// The CIDRs beyond loopback.
    pub fn cidrs(&self) -> &[IpNet] {
        &self.cidrs
    }

    /// Every CIDR this permits, loopback (`127.0.0.0/8`, `::1/128`) first: what a node lists
    /// as the networks its submitters may come from.
    pub fn networks(&self) -> Vec<IpNet> {
        let v4 = IpNet::V4(ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(127, 0, 0, 0), 8));
        let v6 = IpNet::V6(ipnet::Ipv6Net::new_assert(std::net::Ipv6Addr::LOCALHOST, 128));
        [v4, v6].into_iter().chain(self.cidrs.iter().copied()).collect()
    }

    /// Whether `ip` may be used: loopback always, anything else inside one of the CIDRs. An
    /// IPv4-mapped IPv6 address (`::ffff:10.0.0.5`) is judged as the IPv4 address it is.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback() || self.cidrs.iter().any(|n| n.contains(&ip))
    }

    /// Why `ip`, named by `what` (`mta: submit`, `--target`), is refused, and how to allow it.
    pub fn refusal(&self, what: &str, ip: IpAddr) -> String {
        let now = match self.cidrs.as_slice() {
            [] => String::new(),
            c => format!(
                " ({})",
                c.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
        };
        format!(
            "`{ip}` ({what}) is not loopback and not inside network.allow{now}; add a CIDR to network.allow or pass --allow-network {}",
            suggestion(ip)
        )
    }

    /// `Err(refusal)` unless `ip` is permitted.
    pub fn check(&self, what: &str, ip: IpAddr) -> Result<(), String> {
        if self.permits(ip) {
            Ok(())
        } else {
            Err(self.refusal(what, ip))
        }
    }

    /// `Err(refusal)` unless every address of `net` is permitted (an agent's `--addresses`):
    /// the range lies in loopback or inside one allowed CIDR.
    pub fn check_net(&self, what: &str, net: IpNet) -> Result<(), String> {
        let loopback: [IpNet; 2] = [
            IpNet::new(IpAddr::from([127, 0, 0, 0]), 8).expect("valid prefix"),
            IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
        ];
        if loopback.iter().chain(&self.cidrs).any(|c| c.contains(&net)) {
            return Ok(());
        }
        let outside = [net.network(), net.broadcast()]
            .into_iter()
            .find(|ip| !self.permits(*ip))
            .unwrap_or(net.addr());
        Err(format!("{} (the range {net})", self.refusal(what, outside)))
    }

    /// `Err(why)` unless `url` names a server (`nats://10.0.0.5:4222`) by a permitted IP
    /// address. A host name is refused too: it is not looked up, so where it leads is unknown.
    pub fn check_url(&self, what: &str, url: &str) -> Result<(), String> {
        match crate::units::url_host_ip(url) {
            Some(ip) => self.check(what, ip),
            None => Err(format!(
                "`{url}` ({what}) is not nats://<IP address>:<port> (a host name is not looked up)"
            )),
        }
    }
}

/// The CIDR a refusal suggests: the address's /24 (IPv4) or /64 (IPv6), as a network.
fn suggestion(ip: IpAddr) -> IpNet {
    let prefix = if ip.is_ipv4() { 24 } else { 64 };
    IpNet::new(ip, prefix).map_or(IpNet::from(ip), |n| n.trunc())
}

/// Parses a `--allow-network` value: a CIDR (`10.0.0.0/24`) or one address (`10.0.0.5`).
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not a CIDR such as 10.0.0.0/24 (or one address)"))
}

/// Whether generated recipient domains get [`TEST_SUFFIX`]: the system under test is not the
/// reference MTA on this host (`mta.kind: external`, or a distributed run whose coordinator
/// sets `network.distributed`), and the scenario did not ask for `real_domains`. A
/// single-host run of the reference MTA keeps its domains as written: it routes only to its
/// own inboxes.
pub fn suffixed(f: &ScenarioFile) -> bool {
    !f.network.real_domains && (f.mta.kind == MtaKind::External || f.network.distributed)
}

/// `domain` as the system under test sees it: with the suffix when [`suffixed`] (once: a
/// domain already under it, such as the default bounce domain, stays as it is).
pub fn sut_domain(f: &ScenarioFile, domain: &str) -> String {
    if suffixed(f) && bare_domain(domain).len() == domain.len() {
        format!("{domain}{TEST_SUFFIX}")
    } else {
        domain.to_string()
    }
}

/// `domain` without [`TEST_SUFFIX`], as the scenario names it (`gmail.com.mailsurge.test` →
/// `gmail.com`); a domain without the suffix, or the bare suffix itself, is returned as is.
pub fn bare_domain(domain: &str) -> &str {
    let cut = domain.len().saturating_sub(TEST_SUFFIX.len());
    match domain.get(cut..) {
        Some(tail) if cut > 0 && tail.eq_ignore_ascii_case(TEST_SUFFIX) => &domain[..cut],
        _ => domain,
    }
}

/// Every address the scenario names is permitted by its `network.allow` (which holds the
/// command line's `--allow-network` too, merged in at load): provider listen addresses, egress
/// pools, the external MTA's `submit` and bounce inbox, the shared queue's server.
pub(super) fn addresses(at: &At, f: &ScenarioFile) -> Result<(), ConfigError> {
    let allow = Allow::for_scenario(f, &[]);
    for p in &f.providers {
        if let Some(addr) = p.listen {
            let what = format!("providers: {} listen", p.name);
            allow
                .check(&what, addr.ip())
                .map_err(|m| at.err(&addr.to_string(), "providers", format!("providers: {m}")))?;
        }
    }
    for (pool, ips) in &f.mta.egress_pools {
        for ip in ips {
            let what = format!("mta: egress_pools: {pool}");
            allow
                .check(&what, *ip)
                .map_err(|m| at.err(&ip.to_string(), "mta", format!("mta: egress_pools: {m}")))?;
        }
    }
    if let Some(a) = f.mta.submit {
        allow
            .check("mta: submit", a.ip())
            .map_err(|m| at.err("submit", "mta", format!("mta: submit: {m}")))?;
    }
    if let Some(b) = &f.mta.bounces {
        allow
            .check("mta: bounces: listen", b.listen.ip())
            .map_err(|m| at.err("bounces", "mta", format!("mta: bounces: {m}")))?;
    }
    if let Some(url) = &f.mta.nats {
        allow
            .check_url("mta: nats", url)
            .map_err(|m| at.err(url, "mta", format!("mta: nats: {m}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_is_always_allowed_and_nothing_else_by_default() {
        let a = Allow::loopback_only();
        for s in ["127.0.0.1", "127.255.255.254", "127.0.6.1", "::1", "::ffff:127.0.0.1"] {
            assert!(a.permits(ip(s)), "{s}");
        }
        for s in [
            "10.0.0.1",
            "192.0.2.7",
            "0.0.0.0",
            "::",
            "2001:db8::1",
            "128.0.0.1",
            "::2",
        ] {
            assert!(!a.permits(ip(s)), "{s}");
        }
        // A list that allows something else still allows loopback.
        assert!(Allow::new([net("10.0.0.0/8")]).permits(ip("127.0.2.1")));
    }

    #[test]
    fn ipv4_cidr_edges() {
        let a = Allow::new([net("10.203.0.0/24")]);
        assert!(a.permits(ip("10.203.0.0")));
        assert!(a.permits(ip("10.203.0.1")));
        assert!(a.permits(ip("10.203.0.255")));
        assert!(!a.permits(ip("10.203.1.0")));
        assert!(!a.permits(ip("10.202.255.255")));
        // Mapped IPv6 spelling of an allowed IPv4 address.
        assert!(a.permits(ip("::ffff:10.203.0.9")));
        // Host bits in the CIDR are the network they lie in.
        assert!(Allow::new([net("10.1.2.3/24")]).permits(ip("10.1.2.200")));
        let host = Allow::new([net("192.0.2.7/32")]);
        assert!(host.permits(ip("192.0.2.7")) && !host.permits(ip("192.0.2.8")));
        // `0.0.0.0` (every interface) only under a CIDR that holds it.
        assert!(!a.permits(ip("0.0.0.0")));
        assert!(Allow::new([net("0.0.0.0/0")]).permits(ip("0.0.0.0")));
    }

    #[test]
    fn ipv6_cidr_edges() {
        let a = Allow::new([net("fd00:ab::/64")]);
        assert!(a.permits(ip("fd00:ab::1")));
        assert!(a.permits(ip("fd00:ab::ffff:ffff:ffff:ffff")));
        assert!(!a.permits(ip("fd00:ab:0:1::1")));
        // Families do not mix: an IPv6 CIDR allows no IPv4 address, and the reverse.
        assert!(!a.permits(ip("10.0.0.1")));
        assert!(!Allow::new([net("10.0.0.0/8")]).permits(ip("fd00:ab::1")));
    }

    #[test]
    fn a_refusal_names_the_address_its_source_and_a_cidr_that_allows_it() {
        let a = Allow::loopback_only();
        let m = a.check("mta: submit", ip("10.0.0.5")).unwrap_err();
        assert_eq!(
            m,
            "`10.0.0.5` (mta: submit) is not loopback and not inside network.allow; add a CIDR to network.allow or pass --allow-network 10.0.0.0/24"
        );
        let suggested = parse_cidr(m.rsplit(' ').next().unwrap()).unwrap();
        assert!(Allow::new([suggested]).permits(ip("10.0.0.5")));
        let m = Allow::new([net("10.9.0.0/16")]).refusal("--target", ip("2001:db8::7"));
        assert!(
            m.contains("(10.9.0.0/16)") && m.ends_with("--allow-network 2001:db8::/64"),
            "{m}"
        );
        let m = a.check_url("mta: nats", "nats://queue.example:4222").unwrap_err();
        assert!(m.contains("host name is not looked up"), "{m}");
        assert!(a.check_url("mta: nats", "nats://127.0.5.1:4222").is_ok());
    }

    #[test]
    fn cidrs_from_the_command_line() {
        assert_eq!(parse_cidr("10.0.0.0/24").unwrap(), net("10.0.0.0/24"));
        assert_eq!(parse_cidr("10.0.0.5").unwrap(), net("10.0.0.5/32"));
        assert_eq!(parse_cidr("::1").unwrap(), net("::1/128"));
        assert!(parse_cidr("10.0.0.0/33").is_err() && parse_cidr("localhost").is_err());
        let mut a = Allow::new([net("10.0.0.0/24")]);
        a.extend([net("10.0.0.0/24"), net("10.1.0.0/24")]);
        assert_eq!(a.cidrs(), [net("10.0.0.0/24"), net("10.1.0.0/24")]);
    }

    /// `--allow-network` CIDRs join the scenario's own list at load, so the run's
    /// self-contained scenario.yaml carries them and validates again without the flag.
    #[test]
    fn command_line_cidrs_are_recorded_with_the_scenario() {
        use crate::config::Source;
        use crate::scenario::{from_source_allowing, Reach};
        let text = "name: x\nduration: 2s\nslo: { delivery_time: 1s, target: 99% }\n\
                    regions: [ { name: r } ]\nnetwork: { allow: [10.9.0.0/16] }\n\
                    providers: [ { name: p, domains: [a.test], listen: 10.203.0.2:2525 } ]\n\
                    traffic: { rate: 5/s, domains: { a.test: 100% } }\n";
        let src = |text: &str| Source {
            name: "x.yaml".into(),
            text: text.into(),
            dir: None,
        };
        let e = from_source_allowing(src(text), Reach::Run, &[]).unwrap_err();
        assert!(e.to_string().contains("`10.203.0.2` (providers: p listen)"), "{e}");
        let s = from_source_allowing(src(text), Reach::Run, &[net("10.203.0.0/24")]).unwrap();
        assert_eq!(s.file.network.allow, [net("10.9.0.0/16"), net("10.203.0.0/24")]);
        let (yaml, _) = s.self_contained();
        assert!(yaml.contains("10.203.0.0/24"), "{yaml}");
        let again = from_source_allowing(src(&yaml), Reach::Run, &[]).unwrap();
        assert_eq!(again.file.network, s.file.network);
    }

    #[test]
    fn the_suffix_is_added_once_and_taken_off_exactly() {
        assert_eq!(bare_domain("gmail.com.mailsurge.test"), "gmail.com");
        assert_eq!(bare_domain("Gmail.COM.MailSurge.Test"), "Gmail.COM");
        assert_eq!(bare_domain("gmail.com"), "gmail.com");
        assert_eq!(bare_domain(".mailsurge.test"), ".mailsurge.test");
        assert_eq!(bare_domain("xmailsurge.test"), "xmailsurge.test");
        assert_eq!(bare_domain("bounces.mailsurge.test"), "bounces");
    }
}
