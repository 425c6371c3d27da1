//! What a capacity probe's run says about *why* it passed or failed: the signals SPEC §10 asks
//! for, read from the probe's run directory over its judged window (after the warm-up, to the
//! end of traffic), and one sentence naming what saturated first.
//!
//! - CPU per process (`cpu.json`): cores each used, and how busy the machine was;
//! - MTA queue growth: recipients accepted minus recipients the MTAs finished, from the start
//!   to the end of the window, per second;
//! - generator backlog: how late submissions started after their intended time (p99) — the
//!   difference between corrected and uncorrected delivery time — and how long submissions
//!   themselves took (a slow MTA ingress holds the generator's connections);
//! - deferrals per provider, with the reply that came most often, the egress addresses it
//!   came to, and the provider's rule that gives that reply, if it is a limit (replies that
//!   name the address or the recipient are grouped as one, with `{ip}` and `{rcpt}`).
//!
//! The sentence weighs them in causal order: a provider's limit makes the queue grow, and a
//! saturated CPU makes submissions late, so the cause is named, not its consequences.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::events::{self, Kind};
use crate::inbox::rules::{Limit, RuleSet};
use crate::measure::Dist;
use crate::report::format::r3;
use crate::run::cpu::{CpuLog, ProcKind};
use crate::scenario::Scenario;

/// What stands for the egress address in a reply grouped over several addresses.
const IP_MARK: &str = "{ip}";
/// What stands for the recipient in a reply that names it.
const RCPT_MARK: &str = "{rcpt}";

/// A provider is capped when the share of delivery attempts to it that were deferred in the
/// window, above its share at the search's lowest rate, is at least the SLO's error budget
/// (1 − target: a deferral waits for its retry, so that many alone can miss the SLO) — and
/// at least this much, for SLO targets so strict that noise would reach their budget.
pub const MIN_DEFERRAL_SHARE: f64 = 0.002;
/// The machine is saturated when its processes use at least this share of all cores. Not
/// lower: at 85% on two cores, smoke's submissions still took 4 ms while its generator fell
/// 2.4 s behind on its 8 connections — the connections were the limit, not the CPU.
pub const BUSY: f64 = 0.9;
/// The MTA queue grows when it gains at least this share of the offered rate per second: the
/// nodes finish less than 99% of what they accept. (A failed region-failover probe at
/// 1,467/s grew by 2.6% of its rate; the passing one below it by 1.4%, within its SLO.)
pub const GROWTH_SHARE: f64 = 0.01;
/// Submissions are behind when they start this late (p99), or a quarter of the SLO if less.
pub const BACKLOG_MS: f64 = 250.0;

/// One process's CPU over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuLine {
    pub process: String,
    pub kind: ProcKind,
    /// CPU seconds per second of wall time.
    pub cores: f64,
}

/// One provider's deferrals over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderLine {
    pub provider: String,
    /// MTA delivery attempts' outcomes: delivered, bounced and deferred recipients.
    pub attempts: u64,
    pub deferrals: u64,
    /// deferrals / attempts.
    pub share: f64,
    /// The reply most deferrals got, and the egress addresses it came to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_reply: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    /// The provider's limit that gives that reply, in words (`per-source-IP rate limit 100/s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// How fast the MTA queue of its recipients grew over the window, per second.
    #[serde(default)]
    pub queue_growth_per_s: f64,
}

/// Everything one probe says about saturation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// The judged window, seconds since the schedule's start.
    pub window_s: [f64; 2],
    /// Cores of the machine; `cpu` in descending order of use (empty without `/proc`).
    pub cores: usize,
    pub cpu: Vec<CpuLine>,
    /// Share of all cores the run's processes used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<f64>,
    /// MTA queue depth (recipients) at the window's start and end, and its growth per second.
    pub queue_start: i64,
    pub queue_end: i64,
    pub queue_growth_per_s: f64,
    /// p99 of (submission start − intended send time), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog_p99_ms: Option<f64>,
    /// p99 of one submission's own time (its start to the MTA's final reply), ms: a slow
    /// ingress holds the generator's connections and so makes the backlog too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_p99_ms: Option<f64>,
    pub providers: Vec<ProviderLine>,
    /// `provider`, `cpu`, `ingress`, `generator`, `queue` or `none`.
    pub saturated: String,
    /// What saturated first, in one sentence.
    pub bottleneck: String,
}

/// The probe being read.
pub struct Probe<'a> {
    pub dir: &'a Path,
    pub scenario: &'a Scenario,
    pub rules: &'a [RuleSet],
    /// The offered rate, msg/s.
    pub rate: f64,
    pub warmup_s: f64,
    /// It held its SLO and thresholds: nothing is named as saturated, whatever its signals
    /// (greylisting defers at any rate; a backlog within the SLO is not a limit).
    pub passed: bool,
}

/// Reads a probe's run directory. `baseline` is the search's lowest-rate probe: a provider's
/// deferrals count as a cap only above its share there (greylisting and scripted deferrals
/// happen at any rate).
pub fn attribute(p: &Probe<'_>, baseline: Option<&Attribution>) -> std::io::Result<Attribution> {
    let f = &p.scenario.file;
    let run = crate::run::RunRecord::read(p.dir).map_err(std::io::Error::other)?;
    let from = p.warmup_s;
    let to = f.duration.0.as_secs_f64();
    let at = |s: f64| run.start_ns.saturating_add((s * 1e9) as u64);
    let (t0, t1) = (at(from), at(to));
    let providers = crate::run::provider_map(f);

    let mut depth = [0i64; 2];
    let (mut backlog, mut submit) = (Dist::new(), Dist::new());
    let mut by_provider: BTreeMap<String, Tally> = BTreeMap::new();
    events::each_in_file(&crate::run::events_file(p.dir), |mut e| {
        e.expand(&|r| crate::measure::provider_of(&providers, r));
        match e.event {
            Kind::Accepted | Kind::Delivered | Kind::Bounced | Kind::Expired | Kind::Dropped => {
                let n = if e.event == Kind::Accepted { 1 } else { -1 };
                bump(&mut depth, e.t, [t0, t1], n);
                if let Some(p) = &e.provider {
                    bump(&mut by_provider.entry(p.clone()).or_default().depth, e.t, [t0, t1], n);
                }
            }
            Kind::Submitted => {
                if let (Some(i), Some(s)) = (e.intended, e.submitted) {
                    if (t0..t1).contains(&i) {
                        backlog.record(Some(s.saturating_sub(i) / 1000));
                        if let Some(a) = e.acked {
                            submit.record(Some(a.saturating_sub(s) / 1000));
                        }
                    }
                }
            }
            _ => {}
        }
        let attempt = matches!(e.event, Kind::Delivered | Kind::Bounced | Kind::Deferred);
        if attempt && (t0..t1).contains(&e.t) {
            if let Some(provider) = e.provider {
                let t = by_provider.entry(provider).or_default();
                t.attempts += 1;
                if e.event == Kind::Deferred {
                    t.deferrals += 1;
                    let reply = e
                        .text
                        .clone()
                        .unwrap_or_else(|| e.code.map_or(String::new(), |c| c.to_string()));
                    // Providers often name the address in the reply; one reply per address
                    // would split one limit into as many "top replies".
                    let reply = match e.source_ip.as_deref() {
                        Some(ip) if !ip.is_empty() => reply.replace(ip, IP_MARK),
                        _ => reply,
                    };
                    // Likewise the recipient (greylisting names it).
                    let reply = match e.rcpt.as_deref() {
                        Some(r) if !r.is_empty() => reply.replace(r, RCPT_MARK),
                        _ => reply,
                    };
                    let r = t.replies.entry(reply).or_default();
                    r.0 += 1;
                    if let Some(ip) = e.source_ip {
                        *r.1.entry(ip).or_default() += 1;
                    }
                }
            }
        }
        Ok(())
    })?;

    let span = (to - from).max(1e-9);
    let cpu_log = CpuLog::read(p.dir).unwrap_or_default();
    let cpu_span = cpu_log.span(from, to);
    let mut cpu: Vec<CpuLine> = match cpu_span > 0.0 {
        true => cpu_log
            .used(from, to)
            .into_iter()
            .map(|(process, s)| CpuLine {
                kind: cpu_log.processes.get(&process).copied().unwrap_or(ProcKind::Node),
                process,
                cores: r3(s / cpu_span),
            })
            .collect(),
        false => Vec::new(),
    };
    cpu.sort_by(|a, b| b.cores.total_cmp(&a.cores));
    let busy = (!cpu.is_empty() && cpu_log.cores > 0)
        .then(|| r3(cpu.iter().map(|c| c.cores).sum::<f64>() / cpu_log.cores as f64));
    let backlog_p99_ms = backlog.quantile_ms(0.99).map(r3);
    let submit_p99_ms = submit.quantile_ms(0.99).map(r3);
    let rules_of = |name: &str| {
        p.scenario
            .providers
            .iter()
            .position(|x| x.spec.name == name)
            .and_then(|i| p.rules.get(i))
    };
    let providers: Vec<ProviderLine> = by_provider
        .into_iter()
        .map(|(provider, t)| t.line(provider.clone(), rules_of(&provider), span))
        .collect();
    let mut a = Attribution {
        window_s: [r3(from), r3(to)],
        cores: cpu_log.cores,
        cpu,
        busy,
        queue_start: depth[0],
        queue_end: depth[1],
        queue_growth_per_s: r3((depth[1] - depth[0]) as f64 / span),
        backlog_p99_ms,
        submit_p99_ms,
        providers,
        saturated: String::new(),
        bottleneck: String::new(),
    };
    let load = Load {
        rate: p.rate,
        slo_ms: f.slo.delivery_time.0.as_secs_f64() * 1e3,
        slo_target: f.slo.target.0,
        connections: f.traffic.connections,
    };
    let (kind, sentence) = match p.passed {
        true => nothing_saturated(&a),
        false => verdict(&a, &load, baseline),
    };
    (a.saturated, a.bottleneck) = (kind.into(), sentence);
    Ok(a)
}

/// Adds `n` to the depth at each time in `at` the event happened by.
fn bump(depth: &mut [i64; 2], t: u64, at: [u64; 2], n: i64) {
    for (d, &limit) in depth.iter_mut().zip(&at) {
        if t <= limit {
            *d += n;
        }
    }
}

#[derive(Default)]
struct Tally {
    attempts: u64,
    deferrals: u64,
    /// Reply text → (count, source address → count).
    replies: BTreeMap<String, (u64, BTreeMap<String, u64>)>,
    /// Queue depth of its recipients at the window's start and end.
    depth: [i64; 2],
}

impl Tally {
    /// `span_s`: the window's length (above 0).
    fn line(self, provider: String, rules: Option<&RuleSet>, span_s: f64) -> ProviderLine {
        let queue_growth_per_s = r3((self.depth[1] - self.depth[0]) as f64 / span_s);
        let top = self.replies.into_iter().max_by_key(|(_, (n, _))| *n);
        let (top_reply, source_ips): (Option<String>, Vec<String>) = match top {
            Some((reply, (_, ips))) => (Some(reply), ips.into_keys().collect()),
            None => (None, Vec::new()),
        };
        let limit = top_reply.as_deref().and_then(|r| rules.and_then(|rs| limit_for(rs, r)));
        // With one address the reply reads as it came; with several, `{ip}` stands for each.
        let top_reply = match source_ips.as_slice() {
            [ip] => top_reply.map(|r| r.replace(IP_MARK, ip)),
            _ => top_reply,
        };
        ProviderLine {
            provider,
            attempts: self.attempts,
            deferrals: self.deferrals,
            share: match self.attempts {
                0 => 0.0,
                n => r3(self.deferrals as f64 / n as f64),
            },
            top_reply,
            source_ips,
            limit,
            queue_growth_per_s,
        }
    }
}

/// The provider's limit rule whose reply `observed` is, in words.
fn limit_for(rules: &RuleSet, observed: &str) -> Option<String> {
    rules.file.rules.iter().find_map(|rule| {
        let (limit, reply) = (rule.limit.as_ref()?, rule.reply.as_ref()?);
        if !reply_matches(reply, observed) {
            return None;
        }
        Some(match limit {
            Limit::Rate { rate, burst } => {
                format!(
                    "per-source-IP rate limit {}/s (burst {burst})",
                    crate::report::format::num(*rate, 1)
                )
            }
            Limit::Concurrency(n) => format!("per-source-IP connection limit {n}"),
            Limit::Messages(n) => format!("per-connection message limit {n}"),
        })
    })
}

/// Whether an observed reply (as an event writes it: `421 4.7.0 text / more`) is this rule's
/// reply: the same code, and every literal piece of its first line, between `{…}`
/// placeholders, in order.
fn reply_matches(rule: &crate::smtp::Reply, observed: &str) -> bool {
    let Some(rest) = observed.strip_prefix(&rule.code.to_string()) else {
        return false;
    };
    let first = rule.lines.first().map_or("", String::as_str);
    let mut at = 0;
    for piece in first.split('{').map(|p| p.split_once('}').map_or(p, |(_, lit)| lit)) {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        match rest[at..].find(piece) {
            Some(i) => at += i + piece.len(),
            None => return false,
        }
    }
    true
}

/// What a probe offered and was judged by.
#[derive(Clone, Copy)]
struct Load {
    rate: f64,
    slo_ms: f64,
    slo_target: f64,
    connections: u32,
}

/// What saturated first, as (kind, sentence).
fn verdict(a: &Attribution, load: &Load, baseline: Option<&Attribution>) -> (&'static str, String) {
    let Load {
        rate,
        slo_ms,
        slo_target,
        connections,
    } = *load;
    let capped_at = (1.0 - slo_target).max(MIN_DEFERRAL_SHARE);
    let base_share = |name: &str| {
        baseline
            .and_then(|b| b.providers.iter().find(|p| p.provider == name))
            .map_or(0.0, |p| p.share)
    };
    let capped = a
        .providers
        .iter()
        .filter(|p| p.share >= capped_at && p.share - base_share(&p.provider) >= capped_at)
        .max_by(|x, y| x.deferrals.cmp(&y.deferrals));
    if let Some(p) = capped {
        let reply = p.top_reply.as_deref().unwrap_or("deferrals");
        let reply = match reply.chars().count() > 80 {
            true => format!("{}…", reply.chars().take(79).collect::<String>()),
            false => reply.to_string(),
        };
        let from = match p.source_ips.is_empty() {
            true => String::new(),
            false => format!(" from {}", p.source_ips.join(", ")),
        };
        let why = p.limit.as_deref().map_or(String::new(), |l| format!(" — {l}"));
        return (
            "provider",
            format!(
                "provider {} capped: {reply}{from}{why} ({:.0}% of attempts deferred)",
                p.provider,
                p.share * 100.0
            ),
        );
    }
    if let (Some(busy), Some(top)) = (a.busy, a.cpu.first()) {
        if busy >= BUSY {
            let what = match top.kind {
                ProcKind::Node => format!("node {} CPU", top.process),
                ProcKind::Generator => "generator CPU".into(),
                ProcKind::Inboxes => "inboxes CPU".into(),
                ProcKind::Queue => "nats-server CPU".into(),
            };
            return (
                "cpu",
                format!(
                    "{what} ({:.2} cores; the machine's {} cores {:.0}% busy)",
                    top.cores,
                    a.cores,
                    busy * 100.0
                ),
            );
        }
    }
    let backlog_limit = BACKLOG_MS.min(slo_ms / 4.0);
    if let Some(b) = a.backlog_p99_ms.filter(|b| *b >= backlog_limit) {
        // Behind schedule because each submission waited on the MTA, or because there were
        // too few connections for quick ones.
        if let Some(s) = a.submit_p99_ms.filter(|s| *s >= backlog_limit) {
            return (
                "ingress",
                format!(
                    "MTA ingress slow: a submission took {s:.0} ms to be answered (p99), so submissions fell {b:.0} ms behind their schedule (p99) on {connections} connections"
                ),
            );
        }
        return (
            "generator",
            format!(
                "generator backlog: submissions started {b:.0} ms after their intended time (p99) on {connections} connections (traffic.connections)"
            ),
        );
    }
    if a.queue_growth_per_s >= GROWTH_SHARE * rate {
        let most = a
            .providers
            .iter()
            .filter(|p| p.queue_growth_per_s > 0.0)
            .max_by(|x, y| x.queue_growth_per_s.total_cmp(&y.queue_growth_per_s))
            .map_or(String::new(), |p| {
                format!(", most of it for {} (+{:.0}/s)", p.provider, p.queue_growth_per_s)
            });
        return (
            "queue",
            format!(
                "MTA queue growing: +{:.0} recipients/s over the step{most} — the nodes deliver slower than they accept",
                a.queue_growth_per_s
            ),
        );
    }
    nothing_saturated(a)
}

/// The sentence of a probe where nothing ran out: its busiest process.
fn nothing_saturated(a: &Attribution) -> (&'static str, String) {
    let top = a.cpu.first().map_or(String::new(), |c| {
        format!("; busiest {} at {:.2} cores", c.process, c.cores)
    });
    ("none", format!("nothing saturated{top}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::Reply;

    #[test]
    fn a_rule_reply_with_placeholders_matches_what_the_mta_logged() {
        let rule = Reply::new(421, Some("4.7.0"), "[{ip}] [CAP] rate limit for {ip}, try later");
        assert!(reply_matches(
            &rule,
            "421 4.7.0 [127.0.1.1] [CAP] rate limit for 127.0.1.1, try later"
        ));
        assert!(!reply_matches(&rule, "451 4.7.0 [127.0.1.1] [CAP] rate limit"));
        assert!(!reply_matches(&rule, "421 4.7.0 greylisted"));
    }

    /// A reply that names the address is one reply over all addresses.
    #[test]
    fn replies_that_name_the_address_group_over_addresses() {
        let mut t = Tally::default();
        for (ip, n) in [("127.0.1.1", 30), ("127.0.1.2", 25)] {
            let r = t
                .replies
                .entry(format!("421 4.7.0 [{ip}] [CAP] rate").replace(ip, IP_MARK))
                .or_default();
            r.0 += n;
            r.1.insert(ip.to_string(), n);
        }
        t.replies.insert("450 4.2.0 greylisted".into(), (40, BTreeMap::new()));
        (t.attempts, t.deferrals) = (1000, 95);
        let l = t.line("isp".into(), None, 20.0);
        assert_eq!(l.top_reply.as_deref(), Some("421 4.7.0 [{ip}] [CAP] rate"));
        assert_eq!(l.source_ips, ["127.0.1.1", "127.0.1.2"]);
        let mut one = Tally::default();
        one.replies.insert(
            "421 4.7.0 [{ip}] [CAP] rate".into(),
            (5, [("127.0.1.1".to_string(), 5)].into()),
        );
        let l = one.line("isp".into(), None, 20.0);
        assert_eq!(
            l.top_reply.as_deref(),
            Some("421 4.7.0 [127.0.1.1] [CAP] rate"),
            "one address reads as it came"
        );
    }

    fn attribution(share: f64, busy: Option<f64>, backlog: Option<f64>, growth: f64) -> Attribution {
        Attribution {
            window_s: [5.0, 25.0],
            cores: 2,
            cpu: vec![
                CpuLine {
                    process: "us-east-1".into(),
                    kind: ProcKind::Node,
                    cores: 1.2,
                },
                CpuLine {
                    process: "generator".into(),
                    kind: ProcKind::Generator,
                    cores: 0.5,
                },
            ],
            busy,
            queue_start: 0,
            queue_end: 0,
            queue_growth_per_s: growth,
            backlog_p99_ms: backlog,
            submit_p99_ms: backlog.map(|_| 20.0),
            providers: vec![ProviderLine {
                provider: "gmail".into(),
                attempts: 1000,
                deferrals: (share * 1000.0) as u64,
                share,
                top_reply: Some("421 4.7.0 [CAP] rate limit".into()),
                source_ips: vec!["127.0.1.1".into()],
                limit: Some("per-source-IP rate limit 100/s (burst 10)".into()),
                queue_growth_per_s: growth * 0.75,
            }],
            saturated: String::new(),
            bottleneck: String::new(),
        }
    }

    const LOAD: Load = Load {
        rate: 400.0,
        slo_ms: 1000.0,
        slo_target: 0.99,
        connections: 8,
    };

    #[test]
    fn the_cause_is_named_before_its_consequences() {
        // A capped provider makes the queue grow: the provider is named.
        let (k, s) = verdict(&attribution(0.3, Some(0.5), None, 80.0), &LOAD, None);
        assert_eq!(k, "provider");
        assert!(
            s.contains(
                "provider gmail capped: 421 4.7.0 [CAP] rate limit from 127.0.1.1 — per-source-IP rate limit 100/s"
            ),
            "{s}"
        );
        // The same share at the lowest rate is the provider's habit, not a cap.
        // 1.6% deferred against a 99% target's 1% budget is a cap; 0.5% is not.
        assert_eq!(verdict(&attribution(0.016, None, None, 0.0), &LOAD, None).0, "provider");
        assert_eq!(verdict(&attribution(0.005, None, None, 0.0), &LOAD, None).0, "none");
        let base = attribution(0.295, None, None, 0.0);
        let (k, s) = verdict(&attribution(0.3, Some(0.95), Some(900.0), 80.0), &LOAD, Some(&base));
        assert_eq!((k, s.starts_with("node us-east-1 CPU")), ("cpu", true), "{s}");
        let (k, s) = verdict(&attribution(0.0, Some(0.5), Some(900.0), 80.0), &LOAD, None);
        assert_eq!(k, "generator", "{s}");
        let mut slow = attribution(0.0, Some(0.5), Some(900.0), 80.0);
        slow.submit_p99_ms = Some(700.0);
        let (k, s) = verdict(&slow, &LOAD, None);
        assert!(k == "ingress" && s.contains("took 700 ms to be answered"), "{s}");
        let (k, s) = verdict(&attribution(0.0, Some(0.5), Some(10.0), 80.0), &LOAD, None);
        assert_eq!(k, "queue");
        assert!(
            s.contains("+80 recipients/s over the step, most of it for gmail (+60/s)"),
            "{s}"
        );
        let (k, s) = verdict(&attribution(0.0, Some(0.5), Some(10.0), 1.0), &LOAD, None);
        assert_eq!(
            (k, s.as_str()),
            ("none", "nothing saturated; busiest us-east-1 at 1.20 cores")
        );
    }
}
