//! What a provider does to mail, asked of its own rule engine before a fluid simulation: the
//! fluid model moves thousands of messages per step and cannot ask per message, so it asks a
//! sample, the way the discrete model asks every one.
//!
//! - **outcomes by attempt**: a sample of the scenario's own recipients for this provider is
//!   sent through a fresh engine at a gentle pace; what is deferred is tried again after the
//!   retry schedule's backoff, up to [`ATTEMPTS`] times. Each attempt's shares (delivered,
//!   bounced, deferred) and the deferral's verdict in the response table are kept;
//! - **scripted latency** of the delivered sample;
//! - **per-address rate ceiling**: one source address sends as fast as it can for two
//!   seconds of virtual time; what the second second lets through is the ceiling (its
//!   burst spent in the first), with the reply the rest got.

use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use super::super::provider::SimProvider;
use super::super::quantiles::Quantiles;
use crate::mta::responses::{Action, ResponseTable, Verdict};
use crate::smtp::Reply;
use crate::traffic::message::Mix;

/// Attempts profiled; later attempts behave as the last.
pub const ATTEMPTS: usize = 4;
/// Recipients sampled per provider.
const SAMPLE: usize = 3000;
/// Drafts drawn at most to find the sample (a provider with a tiny share gets fewer).
const MAX_DRAFTS: u64 = 400_000;
/// Pace of the outcome sample: 50 msg/s, under any shipped rate limit.
const GENTLE: Duration = Duration::from_millis(20);
/// Offered rate of the ceiling probe: a per-address ceiling above it counts as none (the shipped
/// tables script 120–600/s).
const PROBE_RATE: f64 = 5_000.0;

/// Shares of one attempt's outcomes (they sum to 1).
#[derive(Debug, Clone, Copy, Default)]
pub struct Shares {
    pub deliver: f64,
    pub bounce: f64,
    pub defer: f64,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub attempts: Vec<Shares>,
    /// What a deferral does (defer, throttle, reroute, failover) and its reply.
    pub defer: Option<(Verdict, Reply)>,
    /// Scripted latency of a delivered attempt.
    pub latency: Quantiles,
    /// Messages per second one source address gets through; `None`: no ceiling found.
    pub ip_rate: Option<f64>,
    /// What mail over the ceiling is told, and what the response table makes of it.
    pub over: Option<(Verdict, Reply)>,
}

/// Profiles every provider of a scenario: `domains[i]` are provider i's domains; `fresh(i)`
/// makes provider i with no state.
pub fn profile_all(
    domains: &[Vec<String>],
    mix: &Mix,
    seed: u64,
    responses: &ResponseTable,
    retry: &crate::scenario::Retry,
    fresh: impl Fn(usize) -> SimProvider,
) -> Vec<Profile> {
    // The scenario's own recipients, per provider.
    let mut samples: Vec<Vec<String>> = vec![Vec::new(); domains.len()];
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0f1d);
    for seq in 0..MAX_DRAFTS {
        if samples.iter().all(|s| s.len() >= SAMPLE) {
            break;
        }
        let d = mix.draft(seq, 0, &mut rng);
        for r in mix.recipients(&d) {
            let dom = crate::events::domain_of(&r).to_ascii_lowercase();
            if let Some(i) = domains
                .iter()
                .position(|ds| ds.iter().any(|x| x.eq_ignore_ascii_case(&dom)))
            {
                if samples[i].len() < SAMPLE {
                    samples[i].push(r);
                }
            }
        }
    }
    (0..domains.len())
        .map(|i| {
            let mut p = fresh(i);
            let mut out = outcomes(&mut p, &samples[i], responses, retry);
            let mut q = fresh(i);
            let probe = samples[i].iter().find(|r| r.starts_with("user")).cloned();
            (out.ip_rate, out.over) = match probe {
                Some(r) => ceiling(&mut q, &r, responses),
                None => (None, None),
            };
            out
        })
        .collect()
}

fn outcomes(
    p: &mut SimProvider,
    sample: &[String],
    responses: &ResponseTable,
    retry: &crate::scenario::Retry,
) -> Profile {
    let start = Instant::now();
    let ip: std::net::IpAddr = std::net::Ipv4Addr::new(127, 0, 1, 1).into();
    let mut t = Duration::ZERO;
    let mut pending: Vec<String> = sample.to_vec();
    let mut attempts = Vec::new();
    let mut defer = None;
    let mut latency = Vec::new();
    for k in 0..ATTEMPTS {
        if pending.is_empty() {
            break;
        }
        let mut next = Vec::new();
        let mut s = Shares::default();
        for r in &pending {
            // A fresh connection each time, as a node whose pool rotates its addresses opens.
            let a = p.attempt(
                None,
                ip,
                "profile@mailsurge.test",
                std::slice::from_ref(r),
                12 << 10,
                start + t,
                Duration::from_secs(30),
            );
            if let Some(c) = a.conn {
                p.close(c);
            }
            t += GENTLE;
            let reply = &a.replies[0];
            let v = responses.classify(reply);
            match v.action {
                Action::Deliver => {
                    s.deliver += 1.0;
                    latency.push(a.took.as_secs_f64() * 1e3);
                }
                Action::Bounce => s.bounce += 1.0,
                _ => {
                    s.defer += 1.0;
                    defer.get_or_insert((v, reply.clone()));
                    next.push(r.clone());
                }
            }
        }
        let n = pending.len() as f64;
        attempts.push(Shares {
            deliver: s.deliver / n,
            bounce: s.bounce / n,
            defer: s.defer / n,
        });
        // The retry comes after the backoff (no jitter: the mean).
        t += Duration::from_secs_f64(super::mean_backoff(retry, k as u32 + 1));
        pending = next;
    }
    if attempts.is_empty() {
        attempts.push(Shares {
            deliver: 1.0,
            ..Shares::default()
        });
    }
    Profile {
        attempts,
        defer,
        latency: Quantiles::of(latency).unwrap_or_else(|| Quantiles::constant(0.0)),
        ip_rate: None,
        over: None,
    }
}

/// One address offering [`PROBE_RATE`] for two virtual seconds: the second second's passes.
fn ceiling(p: &mut SimProvider, rcpt: &str, responses: &ResponseTable) -> (Option<f64>, Option<(Verdict, Reply)>) {
    let start = Instant::now();
    let ip: std::net::IpAddr = std::net::Ipv4Addr::new(127, 0, 1, 1).into();
    let gap = Duration::from_secs_f64(1.0 / PROBE_RATE);
    let n = (2.0 * PROBE_RATE) as usize;
    let mut passed = 0usize;
    let mut over = None;
    let mut conn = None;
    for k in 0..n {
        let a = p.attempt(
            conn.take(),
            ip,
            "probe@mailsurge.test",
            &[rcpt.to_string()],
            4096,
            start + gap * k as u32,
            Duration::from_secs(30),
        );
        conn = a.conn;
        let v = responses.classify(&a.replies[0]);
        if k >= n / 2 {
            if v.action == Action::Deliver {
                passed += 1;
            } else if over.is_none() {
                over = Some((v, a.replies[0].clone()));
            }
        }
    }
    if passed as f64 >= 0.99 * PROBE_RATE {
        (None, None)
    } else {
        (Some(passed as f64), over)
    }
}
