//! A mock provider's rule table (SPEC §3): for each SMTP stage, the first matching rule decides
//! the reply; no match means `250`. Per-stage latency models how long a provider takes to answer.
//!
//! This is the policy half of the inbox; the protocol half is [`crate::smtp::server`]. Rules are
//! pure data plus compiled regexes, so they can be swapped at runtime without touching sessions.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rand::Rng;
use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{ConfigError, Source};
use crate::smtp::Reply;
use crate::units::Dur;

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

/// A regex that parses inside `Deserialize`, so a bad pattern is reported at its YAML position
/// with the regex crate's own explanation.
#[derive(Clone)]
pub struct Pattern(pub Regex);

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::config::de_parsed(d, |s| {
            Regex::new(s).map(Pattern).map_err(|e| format!("bad regex `{s}`: {e}"))
        })
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
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

/// One rule of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub stage: Stage,
    /// Matches if any envelope recipient matches (for `rcpt`: the recipient being added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcpt: Option<Pattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Pattern>,
    pub reply: ReplySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<Then>,
}

/// The file format of `mock-inboxes/*.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub provider: String,
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

/// What a session knows when asking the rules.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub stage: Stage,
    pub sender: &'a str,
    /// The recipient being added (rcpt stage) or all recipients (data/message).
    pub rcpts: &'a [String],
    pub ip: std::net::IpAddr,
    pub helo: &'a str,
}

/// The rules' answer: a reply and what to do with it.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub reply: Reply,
    pub close: bool,
    pub delay: Duration,
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

    /// First matching rule for this stage, or `None` (accept).
    pub fn decide(&self, ctx: &Context<'_>, rng: &mut impl Rng) -> Option<Verdict> {
        let rule = self.file.rules.iter().find(|r| {
            r.stage == ctx.stage
                && r.sender.as_ref().is_none_or(|p| p.0.is_match(ctx.sender))
                && r.rcpt
                    .as_ref()
                    .is_none_or(|p| ctx.rcpts.iter().any(|x| p.0.is_match(x)))
        })?;
        Some(Verdict {
            reply: render(&rule.reply.0, ctx),
            close: rule.then == Some(Then::Close),
            delay: self.latency(ctx.stage, rng),
        })
    }

    /// Sampled reply latency for a stage (zero when the profile sets none).
    pub fn latency(&self, stage: Stage, rng: &mut impl Rng) -> Duration {
        self.file.latency.get(&stage).map_or(Duration::ZERO, |l| l.sample(rng))
    }
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
    fn first_match_wins_and_placeholders_fill() {
        let rs = RuleSet::from_source(&src(
            "provider: t\nrules:\n  - { stage: rcpt, rcpt: '^nouser', reply: \"550 5.1.1 <{rcpt}>: no such user\" }\n  - { stage: rcpt, reply: \"451 4.3.0 later\", then: close }\n",
        ))
        .unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let rcpts = ["nouser@x.test".to_string()];
        let ctx = Context {
            stage: Stage::Rcpt,
            sender: "a@b",
            rcpts: &rcpts,
            ip: "127.0.0.1".parse().unwrap(),
            helo: "h",
        };
        let v = rs.decide(&ctx, &mut rng).unwrap();
        assert_eq!(v.reply.code, 550);
        assert_eq!(v.reply.lines[0], "<nouser@x.test>: no such user");
        assert!(!v.close);
        let rcpts = ["ok@x.test".to_string()];
        let v = rs.decide(&Context { rcpts: &rcpts, ..ctx }, &mut rng).unwrap();
        assert_eq!(v.reply.code, 451);
        assert!(v.close);
        assert!(rs
            .decide(
                &Context {
                    stage: Stage::Mail,
                    ..ctx
                },
                &mut rng
            )
            .is_none());
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
