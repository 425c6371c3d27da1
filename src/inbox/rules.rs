//! A mock provider's rule table (SPEC §3): for each SMTP stage, the first matching rule decides
//! the reply; no match means `250`. Per-stage latency models how long a provider takes to answer.
//!
//! This is the policy half of the inbox; the protocol half is [`crate::smtp::server`]. Rules are
//! pure data plus compiled regexes, so they can be swapped at runtime without touching sessions.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{ConfigError, Source};
use crate::smtp::Reply;
use crate::units::Dur;
pub use crate::units::Pattern;

/// The SMTP stage a rule answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Connect,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    /// After the final dot of DATA.
    Message,
}

/// A reply as written in a rule file (`"554 5.7.1 text"`), validated at load.
#[derive(Debug, Clone)]
pub struct ReplySpec(pub Reply);

impl<'de> Deserialize<'de> for ReplySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::config::de_parsed(d, |s| {
            Reply::parse_spec(s)
                .map(ReplySpec)
                .map_err(|e| format!("bad reply `{s}`: {e}"))
        })
    }
}

impl Serialize for ReplySpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// What to do after sending a rule's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Then {
    /// Drop the connection.
    Close,
}

/// Ways a provider misbehaves instead of (or besides) answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Behaviour {
    /// Close the connection without a reply.
    Disconnect,
    /// Abort the connection with a TCP RST.
    Reset,
    /// Never answer; hold the connection open until the client gives up.
    Blackhole,
    /// Answer after `delay`, and delay every later reply on the connection the same way.
    Tarpit,
}

/// What a rate/concurrency/message limit is counted per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitPer {
    SourceIp,
    Connection,
}

/// A state-keeping limit; the rule matches when the limit is exceeded.
#[derive(Debug, Clone, PartialEq)]
pub enum Limit {
    /// GCRA per source IP: `rate` sustained, `burst` extra at once.
    Rate { rate: f64, burst: u32 },
    /// Concurrent connections per source IP (counting this one).
    Concurrency(u32),
    /// Messages per connection: matches from the `n+1`-th transaction on.
    Messages(u32),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitSpec {
    per: LimitPer,
    #[serde(default)]
    rate: Option<crate::units::Rate>,
    #[serde(default)]
    burst: Option<u32>,
    #[serde(default)]
    concurrency: Option<u32>,
    #[serde(default)]
    messages: Option<u32>,
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let l = LimitSpec::deserialize(d)?;
        let err = serde::de::Error::custom;
        match (l.per, l.rate, l.concurrency, l.messages) {
            (LimitPer::SourceIp, Some(r), None, None) if r.0 > 0.0 => Ok(Limit::Rate {
                rate: r.0,
                burst: l.burst.unwrap_or(1).max(1),
            }),
            (LimitPer::SourceIp, None, Some(c), None) if l.burst.is_none() => Ok(Limit::Concurrency(c)),
            (LimitPer::Connection, None, None, Some(m)) if l.burst.is_none() => Ok(Limit::Messages(m)),
            _ => Err(err(
                "limit must be one of { per: source_ip, rate: R/s, burst: N }, { per: source_ip, concurrency: N } \
                 or { per: connection, messages: N }",
            )),
        }
    }
}

/// Greylisting: the first attempt of a (client network, sender, recipient) triple is deferred,
/// and so is every retry until `retry_after` has passed since the first one. The network is
/// the source's /24 (IPv6 /64), as Postgrey and most greylisters key it, so a sender whose
/// pool spreads retries over neighbouring addresses is not greylisted again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Greylist {
    pub retry_after: Dur,
}

/// Message size bounds (SIZE= at `mail`, the real size at `message`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeRange {
    #[serde(default)]
    pub min: Option<crate::units::Size>,
    #[serde(default)]
    pub max: Option<crate::units::Size>,
}

/// A time window of the run, measured from when the inbox started.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    #[serde(default)]
    pub from: Option<Dur>,
    #[serde(default)]
    pub until: Option<Dur>,
}

/// A source-address match: one address or CIDR block, or a list of them (`127.0.1.1`,
/// `127.0.1.0/24`).
#[derive(Debug, Clone)]
pub struct Sources(pub Vec<ipnet::IpNet>);

impl<'de> Deserialize<'de> for Sources {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let items = match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        items
            .iter()
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an IP address or CIDR block")))
            })
            .collect::<Result<_, _>>()
            .map(Sources)
    }
}

impl Sources {
    pub fn contains(&self, ip: &std::net::IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }
}

/// A latency distribution for one stage's reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub enum Latency {
    Fixed {
        value: Dur,
    },
    Uniform {
        min: Dur,
        max: Dur,
    },
    /// Long-tailed, like real provider answers; `max` caps the tail.
    Lognormal {
        median: Dur,
        sigma: f64,
        #[serde(default)]
        max: Option<Dur>,
    },
}

/// Cap on any sampled latency: a mock inbox that stalls for minutes by accident ruins a run.
const MAX_SAMPLED_LATENCY: Duration = Duration::from_secs(60);

impl Latency {
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        let d = match self {
            Latency::Fixed { value } => value.0,
            Latency::Uniform { min, max } => {
                let (a, b) = (min.as_secs_f64(), max.as_secs_f64().max(min.as_secs_f64()));
                Duration::from_secs_f64(if b > a { rng.random_range(a..b) } else { a })
            }
            Latency::Lognormal { median, sigma, max } => {
                let z: f64 = rng.sample(rand_distr::StandardNormal);
                let secs = median.as_secs_f64() * (sigma * z).exp();
                let d = Duration::from_secs_f64(secs.clamp(0.0, MAX_SAMPLED_LATENCY.as_secs_f64()));
                max.map_or(d, |m| d.min(m.0))
            }
        };
        d.min(MAX_SAMPLED_LATENCY)
    }

    fn check(&self) -> Result<(), String> {
        match self {
            Latency::Lognormal { sigma, .. } if !(0.0..=5.0).contains(sigma) => {
                Err(format!("lognormal sigma must be within 0..=5, not {sigma}"))
            }
            Latency::Uniform { min, max } if min > max => Err("uniform min must not exceed max".into()),
            _ => Ok(()),
        }
    }
}

/// One rule of the table, as written. Conditions are ANDed; the cheap ones are checked first
/// and the state-keeping ones (`limit`, `greylist`, `probability`) last, so state only changes
/// for traffic the rule is about.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    stage: Stage,
    #[serde(default)]
    rcpt: Option<Pattern>,
    #[serde(default)]
    sender: Option<Pattern>,
    #[serde(default)]
    helo: Option<Pattern>,
    #[serde(default)]
    source: Option<Sources>,
    #[serde(default)]
    pool: Option<String>,
    #[serde(default)]
    size: Option<SizeRange>,
    #[serde(default)]
    window: Option<Window>,
    #[serde(default)]
    probability: Option<crate::units::Percent>,
    #[serde(default)]
    limit: Option<Limit>,
    #[serde(default)]
    greylist: Option<Greylist>,
    #[serde(default)]
    reply: Option<ReplySpec>,
    #[serde(default)]
    delay: Option<Latency>,
    #[serde(default)]
    then: Option<Then>,
    #[serde(default, alias = "behavior")]
    behaviour: Option<Behaviour>,
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub stage: Stage,
    /// Matches if any envelope recipient matches (for `rcpt`: the recipient being added).
    pub rcpt: Option<Pattern>,
    pub sender: Option<Pattern>,
    pub helo: Option<Pattern>,
    pub source: Option<Sources>,
    /// An egress pool name of the scenario; resolved to addresses when the inbox starts.
    pub pool: Option<String>,
    pub size: Option<SizeRange>,
    pub window: Option<Window>,
    pub probability: Option<f64>,
    pub limit: Option<Limit>,
    pub greylist: Option<Greylist>,
    /// `None` only for behaviours that send nothing (disconnect, reset, blackhole).
    pub reply: Option<Reply>,
    pub delay: Option<Latency>,
    pub close: bool,
    pub behaviour: Option<Behaviour>,
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RuleSpec::deserialize(d)?;
        let err = serde::de::Error::custom;
        let silent = matches!(
            r.behaviour,
            Some(Behaviour::Disconnect | Behaviour::Reset | Behaviour::Blackhole)
        );
        if r.reply.is_none() && !silent {
            return Err(err(
                "a rule needs `reply:` (or `behaviour: disconnect | reset | blackhole`)",
            ));
        }
        if r.reply.is_some() && silent {
            return Err(err(
                "`behaviour: disconnect | reset | blackhole` sends no reply; remove `reply:`",
            ));
        }
        if r.behaviour == Some(Behaviour::Tarpit) && r.delay.is_none() {
            return Err(err("`behaviour: tarpit` needs `delay:`"));
        }
        if let Some(l) = &r.delay {
            l.check().map_err(serde::de::Error::custom)?;
        }
        match (&r.limit, r.stage) {
            (Some(Limit::Concurrency(_)), s) if s != Stage::Connect => {
                return Err(err(
                    "a concurrency limit is checked when a connection opens: use `stage: connect`",
                ));
            }
            (Some(Limit::Messages(_)), Stage::Connect | Stage::Ehlo) => {
                return Err(err("a messages-per-connection limit needs a stage of mail or later"));
            }
            _ => {}
        }
        if r.greylist.is_some() && !matches!(r.stage, Stage::Rcpt | Stage::Data | Stage::Message) {
            return Err(err(
                "greylisting keys on (ip, sender, recipient): use stage rcpt, data or message",
            ));
        }
        if r.rcpt.is_some() && matches!(r.stage, Stage::Connect | Stage::Ehlo | Stage::Mail) {
            return Err(err("`rcpt:` can only match from `stage: rcpt` on"));
        }
        if r.sender.is_some() && matches!(r.stage, Stage::Connect | Stage::Ehlo) {
            return Err(err("`sender:` can only match from `stage: mail` on"));
        }
        Ok(Rule {
            stage: r.stage,
            rcpt: r.rcpt,
            sender: r.sender,
            helo: r.helo,
            source: r.source,
            pool: r.pool,
            size: r.size,
            window: r.window,
            probability: r.probability.map(|p| p.0),
            limit: r.limit,
            greylist: r.greylist,
            reply: r.reply.map(|r| r.0),
            delay: r.delay,
            close: r.then == Some(Then::Close),
            behaviour: r.behaviour,
        })
    }
}

/// The file format of `mock-inboxes/*.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub provider: String,
    /// STARTTLS: `none` (default), `optional` or `required` (SPEC §13); a scenario's provider
    /// `tls:` overrides it.
    #[serde(default)]
    pub tls: crate::scenario::TlsMode,
    #[serde(default)]
    pub latency: BTreeMap<Stage, Latency>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// A loaded rule table.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub file: RuleFile,
    /// Where it came from, for messages.
    pub origin: String,
}

impl RuleSet {
    /// Parses and checks a rule file.
    pub fn from_source(src: &Source) -> Result<RuleSet, ConfigError> {
        let file: RuleFile = src.parse()?;
        for (stage, l) in &file.latency {
            l.check().map_err(|m| {
                src.error_at(
                    &format!("{stage:?}").to_lowercase(),
                    src.top_key_line("latency"),
                    format!("latency: {m}"),
                )
            })?;
        }
        Ok(RuleSet {
            file,
            origin: src.name.clone(),
        })
    }

    /// Pool names the rules refer to, for cross-checks against a scenario's egress pools.
    pub fn pools(&self) -> impl Iterator<Item = &str> {
        self.file.rules.iter().filter_map(|r| r.pool.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn src(text: &str) -> Source {
        Source {
            name: "t.yaml".into(),
            text: text.into(),
            dir: None,
        }
    }

    #[test]
    fn errors_carry_position() {
        let e = RuleSet::from_source(&src(
            "provider: t\nrules:\n  - { stage: rcpt, rcpt: '(', reply: \"550 no\" }\n",
        ))
        .unwrap_err();
        assert_eq!(e.pos.map(|p| p.0), Some(3), "{e}");
        assert!(e.to_string().contains("regex"), "{e}");
        let e = RuleSet::from_source(&src(
            "provider: t\nrules:\n  - { stage: teleport, reply: \"550 no\" }\n",
        ))
        .unwrap_err();
        assert_eq!(e.pos.map(|p| p.0), Some(3), "{e}");
        let e =
            RuleSet::from_source(&src("provider: t\nrules:\n  - { stage: rcpt, reply: \"650 no\" }\n")).unwrap_err();
        assert_eq!(e.pos.map(|p| p.0), Some(3), "{e}");
    }

    #[test]
    fn misused_keys_are_rejected_where_they_stand() {
        let cases = [
            (
                "{ stage: mail, limit: { per: source_ip, concurrency: 5 }, reply: \"421 x\" }",
                "stage: connect",
            ),
            (
                "{ stage: mail, behaviour: tarpit, reply: \"250 ok\" }",
                "needs `delay:`",
            ),
            ("{ stage: rcpt, behaviour: reset, reply: \"550 x\" }", "sends no reply"),
            ("{ stage: rcpt }", "needs `reply:`"),
            ("{ stage: mail, rcpt: 'x', reply: \"550 x\" }", "from `stage: rcpt` on"),
            (
                "{ stage: connect, greylist: { retry_after: 1s }, reply: \"451 x\" }",
                "greylisting",
            ),
            (
                "{ stage: mail, limit: { per: source_ip, rate: 5/s, concurrency: 2 }, reply: \"421 x\" }",
                "limit must be",
            ),
            (
                "{ stage: mail, source: 300.1.1.1, reply: \"550 x\" }",
                "not an IP address",
            ),
            (
                "{ stage: mail, probability: 150%, reply: \"550 x\" }",
                "between 0% and 100%",
            ),
            ("{ stage: mail, reply: \"250 ok\", colour: red }", "colour"),
        ];
        for (rule, want) in cases {
            let e = RuleSet::from_source(&src(&format!("provider: t\nrules:\n  - {rule}\n"))).unwrap_err();
            assert_eq!(e.pos.map(|p| p.0), Some(3), "{rule}: {e}");
            assert!(e.to_string().contains(want), "{rule}: `{e}` lacks `{want}`");
        }
    }

    #[test]
    fn latency_is_bounded_and_seeded() {
        let l = Latency::Lognormal {
            median: "15ms".parse().unwrap(),
            sigma: 0.6,
            max: None,
        };
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..100 {
            let x = l.sample(&mut a);
            assert_eq!(x, l.sample(&mut b));
            assert!(x <= MAX_SAMPLED_LATENCY);
        }
    }
}
