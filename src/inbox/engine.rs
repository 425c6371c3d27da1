//! The rule engine: evaluates a provider's rule table for one SMTP stage, with the state it
//! keeps ([`super::state`]) and the runtime overlays the chaos timeline drives.
//!
//! First matching rule wins; no match means the stage's normal success reply, after the
//! stage's latency. Overlays (block a pool, add latency, refuse connections) sit in front of
//! the rules and can be set and cleared at any time without touching rule state.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use super::rules::{Behaviour, Limit, Rule, RuleSet, Stage};
use super::state::State;
use crate::smtp::Reply;

/// What a session knows when asking the rules.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub stage: Stage,
    pub conn_id: u64,
    pub ip: IpAddr,
    pub helo: &'a str,
    pub sender: &'a str,
    /// The recipient being added (rcpt stage) or all recipients (data/message).
    pub rcpts: &'a [String],
    /// SIZE= at mail, the received size at message.
    pub size: Option<usize>,
    /// Messages completed on this connection before this one.
    pub transactions: u32,
}

/// The engine's answer for one stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `None`: send nothing (see `behaviour`).
    pub reply: Option<Reply>,
    pub delay: Duration,
    pub close: bool,
    pub behaviour: Option<Behaviour>,
}

/// Runtime changes to a provider, applied on top of its rules.
#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    /// Refuse `sources` (all if `None`) with `reply`, then close — an IP reputation block of
    /// one egress pool. New connections are refused at connect, open ones at their next
    /// command: a sender reusing a connection is blocked as soon as a fresh one would be.
    Block { sources: Option<Vec<IpAddr>>, reply: Reply },
    /// Add this much to every reply.
    Latency(Duration),
    /// Provider down: every connection gets this behaviour (reset or blackhole) — new ones at
    /// connect, open ones at their next command.
    Down(Behaviour),
}

/// Rules + state + overlays of one provider.
pub struct Engine {
    rules: RwLock<Arc<RuleSet>>,
    /// Egress pool name → addresses, to resolve `pool:` conditions.
    pools: BTreeMap<String, Vec<IpAddr>>,
    seed: u64,
    start: Instant,
    state: State,
    /// Swapped whole on change, so a decision takes one cheap `Arc` clone, not a `Vec` copy.
    overlays: RwLock<Arc<Vec<Overlay>>>,
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    // A poisoned lock only means a panic elsewhere during a swap of plain data.
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

impl Engine {
    pub fn new(rules: RuleSet, pools: BTreeMap<String, Vec<IpAddr>>, seed: u64) -> Engine {
        Engine::new_at(rules, pools, seed, Instant::now())
    }

    /// An engine whose clock starts at `start`: `mailsurge sim` runs it on virtual time and
    /// asks with [`Engine::decide_at`], so its windows, rate limits and greylist are the ones a
    /// real inbox applies.
    pub fn new_at(rules: RuleSet, pools: BTreeMap<String, Vec<IpAddr>>, seed: u64, start: Instant) -> Engine {
        Engine {
            rules: RwLock::new(Arc::new(rules)),
            pools,
            seed,
            start,
            state: State::default(),
            overlays: RwLock::new(Arc::new(Vec::new())),
        }
    }

    pub fn rules(&self) -> Arc<RuleSet> {
        read(&self.rules)
    }

    /// Swaps the rule table (SIGHUP reload); state tables are kept.
    pub fn set_rules(&self, rules: RuleSet) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
    }

    pub fn add_overlay(&self, o: Overlay) {
        let mut g = self.overlays.write().unwrap_or_else(|p| p.into_inner());
        let mut v = (**g).clone();
        v.push(o);
        *g = Arc::new(v);
    }

    /// Removes overlays matching `pred` (a chaos `restore` or the end of a `for:`).
    pub fn remove_overlays(&self, pred: impl Fn(&Overlay) -> bool) {
        let mut g = self.overlays.write().unwrap_or_else(|p| p.into_inner());
        *g = Arc::new(g.iter().filter(|o| !pred(o)).cloned().collect());
    }

    pub fn overlays(&self) -> Vec<Overlay> {
        read(&self.overlays).as_ref().clone()
    }

    /// Addresses of an egress pool, for overlays that block one.
    pub fn pool(&self, name: &str) -> Option<&[IpAddr]> {
        self.pools.get(name).map(Vec::as_slice)
    }

    pub fn connected(&self, ip: IpAddr) -> u32 {
        self.state.connected(ip)
    }

    pub fn disconnected(&self, ip: IpAddr, conn_id: u64) {
        self.state.disconnected(ip, conn_id)
    }

    /// Decides a stage: overlays first, then the first matching rule, else `default` (the
    /// stage's normal reply) after the stage's latency.
    pub fn decide(&self, ctx: &Context<'_>, default: Reply) -> Verdict {
        self.decide_at(ctx, default, Instant::now())
    }

    /// [`Engine::decide`] at a given time (virtual in `mailsurge sim`).
    pub fn decide_at(&self, ctx: &Context<'_>, default: Reply, now: Instant) -> Verdict {
        let overlays = read(&self.overlays);
        let extra = self.extra_delay(&overlays, ctx.conn_id);
        for o in overlays.iter() {
            match o {
                Overlay::Down(b) => {
                    return Verdict {
                        reply: None,
                        delay: Duration::ZERO,
                        close: true,
                        behaviour: Some(*b),
                    }
                }
                Overlay::Block { sources, reply } if sources.as_ref().is_none_or(|s| s.contains(&ctx.ip)) => {
                    return Verdict {
                        reply: Some(render(reply, ctx)),
                        delay: extra,
                        close: true,
                        behaviour: None,
                    }
                }
                _ => {}
            }
        }
        let rules = self.rules();
        let Some((idx, rule)) = rules
            .file
            .rules
            .iter()
            .enumerate()
            .find(|(i, r)| self.matches(*i, r, ctx, now))
        else {
            return Verdict {
                reply: Some(default),
                delay: self.stage_latency(&rules, usize::MAX, ctx) + extra,
                close: false,
                behaviour: None,
            };
        };
        let delay = match &rule.delay {
            Some(l) => l.sample(&mut self.latency_rng(idx, ctx)),
            None => self.stage_latency(&rules, idx, ctx),
        };
        if rule.behaviour == Some(Behaviour::Tarpit) {
            self.state.set_tarpit(ctx.conn_id, delay);
        }
        Verdict {
            reply: rule.reply.as_ref().map(|r| render(r, ctx)),
            delay: delay + extra,
            close: rule.close || matches!(rule.behaviour, Some(Behaviour::Disconnect | Behaviour::Reset)),
            behaviour: rule.behaviour,
        }
    }

    /// The stage's configured latency; the RNG is only built when there is one to sample.
    fn stage_latency(&self, rules: &RuleSet, idx: usize, ctx: &Context<'_>) -> Duration {
        rules
            .file
            .latency
            .get(&ctx.stage)
            .map_or(Duration::ZERO, |l| l.sample(&mut self.latency_rng(idx, ctx)))
    }

    fn extra_delay(&self, overlays: &[Overlay], conn_id: u64) -> Duration {
        let added: Duration = overlays
            .iter()
            .map(|o| match o {
                Overlay::Latency(d) => *d,
                _ => Duration::ZERO,
            })
            .sum();
        added + self.state.tarpit(conn_id).unwrap_or_default()
    }

    fn matches(&self, idx: usize, r: &Rule, ctx: &Context<'_>, now: Instant) -> bool {
        if r.stage != ctx.stage {
            return false;
        }
        let cheap = r.sender.as_ref().is_none_or(|p| p.0.is_match(ctx.sender))
            && r.rcpt
                .as_ref()
                .is_none_or(|p| ctx.rcpts.iter().any(|x| p.0.is_match(x)))
            && r.helo.as_ref().is_none_or(|p| p.0.is_match(ctx.helo))
            && r.source.as_ref().is_none_or(|s| s.contains(&ctx.ip))
            && r.pool
                .as_ref()
                .is_none_or(|p| self.pools.get(p).is_some_and(|ips| ips.contains(&ctx.ip)))
            && r.size.as_ref().is_none_or(|s| {
                ctx.size
                    .is_some_and(|n| s.min.is_none_or(|m| n as u64 >= m.0) && s.max.is_none_or(|m| n as u64 <= m.0))
            })
            && r.window.as_ref().is_none_or(|w| {
                let t = now.duration_since(self.start);
                w.from.is_none_or(|f| t >= f.0) && w.until.is_none_or(|u| t < u.0)
            });
        if !cheap {
            return false;
        }
        // State-keeping conditions last, so only traffic the rule is about changes state.
        if let Some(g) = &r.greylist {
            // Postgrey's default (--lookup-by-subnet): the client's /24 (IPv6: /64), so an MTA
            // retrying from another address of its pool is still the same client.
            let net = match ctx.ip {
                IpAddr::V4(a) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a) & 0xffff_ff00)),
                IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) & !((1u128 << 64) - 1))),
            };
            let triple = hash(&(net, ctx.sender, ctx.rcpts.first()));
            if !self.state.greylisted(idx, triple, g.retry_after.0, now) {
                return false;
            }
        }
        let limited = match r.limit {
            None => true,
            Some(Limit::Rate { rate, burst }) => self.state.over_rate(idx, ctx.ip, rate, burst, now),
            Some(Limit::Concurrency(n)) => self.state.open_connections(ctx.ip) > n,
            Some(Limit::Messages(n)) => ctx.transactions >= n,
        };
        if !limited {
            return false;
        }
        match r.probability {
            None => true,
            Some(p) => self.decision_rng(idx, ctx).random::<f64>() < p,
        }
    }

    /// The RNG for a rule's probability: keyed by what is being decided (rule, stage, source,
    /// envelope) and how often that same thing was decided before — so the same seed gives the
    /// same answers whatever order connections arrive in, and a retry draws a fresh number.
    fn decision_rng(&self, idx: usize, ctx: &Context<'_>) -> ChaCha8Rng {
        let key = hash(&(idx, ctx.stage, ctx.ip, ctx.helo, ctx.sender, ctx.rcpts));
        let n = self.state.occurrence(key);
        ChaCha8Rng::seed_from_u64(hash(&(self.seed, key, n)))
    }

    /// The RNG for latency samples: varies per connection, message and stage without shared
    /// state (timing is not reproducible anyway, so there is nothing to gain from a lock here).
    fn latency_rng(&self, idx: usize, ctx: &Context<'_>) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(hash(&(
            self.seed,
            idx,
            ctx.conn_id,
            ctx.transactions,
            ctx.stage,
            ctx.rcpts,
        )))
    }
}

/// SipHash with fixed keys: stable within a build, which is what seeded decisions and the
/// duplicate check need.
pub(crate) fn hash(v: &impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Fills `{rcpt} {sender} {ip} {helo}` placeholders, as real providers echo them back.
fn render(reply: &Reply, ctx: &Context<'_>) -> Reply {
    if !reply.lines.iter().any(|l| l.contains('{')) {
        return reply.clone();
    }
    let rcpt = ctx.rcpts.last().map(String::as_str).unwrap_or("");
    let ip = ctx.ip.to_string();
    let mut r = reply.clone();
    for l in &mut r.lines {
        *l = l
            .replace("{rcpt}", rcpt)
            .replace("{sender}", ctx.sender)
            .replace("{ip}", &ip)
            .replace("{helo}", ctx.helo);
    }
    r
}
