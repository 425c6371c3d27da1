//! The MTA's deliverability response table (SPEC §4): what a remote reply means for the
//! message — deliver, retry later, bounce, suppress the recipient, slow down, or go elsewhere.
//!
//! Matching is pure (reply in, [`Verdict`] out) so the table can be tested without sockets and
//! the delivery code only acts on verdicts.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{ConfigError, Source};
use crate::smtp::Reply;
use crate::units::Dur;
use crate::units::Pattern;

/// A reply-code pattern: `421`, `4xx`, `55x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodePattern([Option<u8>; 3]);

impl CodePattern {
    pub fn matches(&self, code: u16) -> bool {
        let digits = [(code / 100) as u8, (code / 10 % 10) as u8, (code % 10) as u8];
        self.0.iter().zip(digits).all(|(p, d)| p.is_none_or(|p| p == d))
    }
}

impl std::str::FromStr for CodePattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        let ok = b.len() == 3 && matches!(b[0], b'2'..=b'5');
        if !ok {
            return Err(format!("code pattern `{s}` must look like 421, 4xx or 55x"));
        }
        let mut out = [None; 3];
        for (i, c) in b.iter().enumerate() {
            out[i] = match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'x' | b'X' => None,
                _ => return Err(format!("code pattern `{s}` must look like 421, 4xx or 55x")),
            };
        }
        Ok(CodePattern(out))
    }
}

impl<'de> Deserialize<'de> for CodePattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML reads `421` as a number and `4xx` as a string; accept both.
        crate::config::de_number_or_string(d, str::parse)
    }
}

impl Serialize for CodePattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t: String = self.0.iter().map(|d| d.map_or('x', |d| char::from(b'0' + d))).collect();
        s.serialize_str(&t)
    }
}

/// What a rule matches on. All given parts must match.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    pub code: CodePattern,
    /// Enhanced status code, exact (`5.1.1`) or with `x` components (`5.7.x`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhanced: Option<String>,
    /// Regex over the reply text (all lines joined with `\n`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Pattern>,
}

/// What the MTA does about a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Deliver,
    Defer,
    Bounce,
    /// Cut the rate for the domain and pool, and defer.
    Throttle,
    /// Retry through another egress pool (`pool`).
    Reroute,
    /// Retry at the domain's next route address (next provider).
    Failover,
}

/// A rate multiplier such as `0.5x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factor(pub f64);

impl<'de> Deserialize<'de> for Factor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::config::de_number_or_string(d, |s| {
            let n: f64 = s
                .trim_end_matches('x')
                .parse()
                .map_err(|_| format!("`{s}` is not a factor such as 0.5x"))?;
            if n > 0.0 && n <= 1.0 {
                Ok(Factor(n))
            } else {
                Err(format!("factor `{s}` must be above 0 and at most 1"))
            }
        })
    }
}

impl Serialize for Factor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}x", self.0))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseRule {
    #[serde(rename = "match")]
    pub matches: Match,
    pub action: Action,
    /// Also add the recipient to the suppression list (never attempted again).
    #[serde(default)]
    pub suppress: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_rate: Option<Factor>,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// The decision for one reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub action: Action,
    pub suppress: bool,
    pub pool: Option<String>,
    pub domain_rate: Option<f64>,
    pub hold: Option<Duration>,
}

/// A loaded response table.
#[derive(Debug, Clone, Default)]
pub struct ResponseTable {
    pub rules: Vec<ResponseRule>,
}

impl ResponseTable {
    pub fn from_source(src: &Source) -> Result<ResponseTable, ConfigError> {
        let rules: Vec<ResponseRule> = src.parse()?;
        for r in &rules {
            if r.action == Action::Reroute && r.pool.is_none() {
                return Err(src.error_at("reroute", 1, "a `reroute` rule needs `pool:`"));
            }
            if let Some(e) = &r.matches.enhanced {
                if !valid_enhanced(e) {
                    return Err(src.error_at(e, 1, format!("enhanced code `{e}` must look like 5.1.1 or 5.7.x")));
                }
            }
        }
        Ok(ResponseTable { rules })
    }

    /// First matching rule's verdict; without a match: 2xx deliver, 4xx defer, else bounce.
    /// The table every scenario gets unless it names another (`deliverability`), for tests.
    #[cfg(test)]
    pub(crate) fn shipped() -> ResponseTable {
        let here = Source {
            name: "shipped".into(),
            text: String::new(),
            dir: None,
        };
        let src = crate::config::resolve(&here, "deliverability", crate::config::Shipped::Scenario).unwrap();
        ResponseTable::from_source(&src).unwrap()
    }

    pub fn classify(&self, reply: &Reply) -> Verdict {
        let text = reply.text();
        let rule = self.rules.iter().find(|r| {
            r.matches.code.matches(reply.code)
                && r.matches
                    .enhanced
                    .as_deref()
                    .is_none_or(|p| reply.enhanced.as_deref().is_some_and(|e| enhanced_matches(p, e)))
                && r.matches.text.as_ref().is_none_or(|p| p.0.is_match(&text))
        });
        match rule {
            Some(r) => Verdict {
                action: r.action,
                suppress: r.suppress,
                pool: r.pool.clone(),
                domain_rate: r.domain_rate.map(|f| f.0),
                hold: r.for_.map(|d| d.0),
            },
            None => Verdict {
                action: match reply.code {
                    200..=299 => Action::Deliver,
                    400..=499 => Action::Defer,
                    _ => Action::Bounce,
                },
                suppress: false,
                pool: None,
                domain_rate: None,
                hold: None,
            },
        }
    }
}

fn valid_enhanced(p: &str) -> bool {
    let parts: Vec<&str> = p.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5" | "x")
        && parts[1..]
            .iter()
            .all(|c| *c == "x" || (!c.is_empty() && c.len() <= 3 && c.bytes().all(|b| b.is_ascii_digit())))
}

fn enhanced_matches(pattern: &str, code: &str) -> bool {
    let (p, c): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), code.split('.').collect());
    p.len() == c.len() && p.iter().zip(&c).all(|(p, c)| *p == "x" || p == c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ResponseTable {
        let src = Source {
            name: "r.yaml".into(),
            text: r#"
- { match: { code: 5xx, enhanced: '5.1.1' },               action: bounce, suppress: true }
- { match: { code: 421, text: '(?i)rate|volume|too many' }, action: throttle, domain_rate: 0.5x, for: 30s }
- { match: { code: 554, text: '(?i)block|rbl|spamhaus' },   action: reroute, pool: dedicated }
- { match: { code: 4xx },                                   action: defer }
- { match: { code: 5xx },                                   action: bounce }
"#
            .into(),
            dir: None,
        };
        ResponseTable::from_source(&src).unwrap()
    }

    #[test]
    fn classifies_in_order() {
        let t = table();
        let v = t.classify(&Reply::new(550, Some("5.1.1"), "no such user"));
        assert_eq!((v.action, v.suppress), (Action::Bounce, true));
        let v = t.classify(&Reply::new(
            421,
            Some("4.7.0"),
            "Messages temporarily deferred due to unexpected volume",
        ));
        assert_eq!(v.action, Action::Throttle);
        assert_eq!(v.domain_rate, Some(0.5));
        let v = t.classify(&Reply::new(554, Some("5.7.1"), "Client host blocked (RBL)"));
        assert_eq!((v.action, v.pool.as_deref()), (Action::Reroute, Some("dedicated")));
        assert_eq!(t.classify(&Reply::new(451, None, "later")).action, Action::Defer);
        assert_eq!(t.classify(&Reply::new(552, None, "full")).action, Action::Bounce);
        assert_eq!(t.classify(&Reply::new(250, None, "ok")).action, Action::Deliver);
    }

    /// The shipped table against the reply texts the shipped provider profiles send.
    #[test]
    fn shipped_table_understands_shipped_profiles() {
        let t = ResponseTable::shipped();
        let unknown_users = [
            Reply::new(
                550,
                Some("5.1.1"),
                "The email account that you tried to reach does not exist.",
            ),
            Reply::new(
                554,
                None,
                "delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0]",
            ),
            Reply::new(
                550,
                Some("5.5.0"),
                "Requested action not taken: mailbox unavailable (S2017062302)",
            ),
            Reply::new(
                550,
                Some("5.2.1"),
                "<x@att.net>... Addressee unknown, relay=[127.0.1.1]",
            ),
            Reply::new(550, Some("5.1.1"), "Not our Customer"),
        ];
        for r in &unknown_users {
            let v = t.classify(r);
            assert_eq!((v.action, v.suppress), (Action::Bounce, true), "{r}");
        }
        let v = t.classify(&Reply::new(
            421,
            Some("4.7.0"),
            "[TSS04] Messages from 127.0.1.1 temporarily deferred due to unexpected volume or user complaints",
        ));
        assert_eq!(v.action, Action::Throttle);
        let v = t.classify(&Reply::new(
            554,
            Some("5.7.1"),
            "Service unavailable; Client host [127.0.1.1] blocked using zen.spamhaus.org",
        ));
        assert_eq!(v.action, Action::Reroute);
        assert_eq!(
            t.classify(&Reply::new(451, Some("4.3.0"), "Temporary System Problem"))
                .action,
            Action::Defer
        );
    }

    /// Every shipped profile's scripted refusals, read from the profiles themselves: a content
    /// refusal (`spam-` recipients) bounces that message alone — no suppression, no reroute
    /// of the domain, no retries until give-up — and a block of the sending IP (pool `blocked`)
    /// reroutes. Several content refusals say "blocked" or "reputation" too, which once sent
    /// them down the IP-block path.
    #[test]
    fn shipped_table_tells_content_refusals_from_ip_blocks() {
        let t = ResponseTable::shipped();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mock-inboxes");
        let (mut content, mut blocks) = (0, 0);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let doc: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let Some(rules) = doc.get("rules").and_then(|r| r.as_sequence()) else {
                continue;
            };
            for rule in rules {
                let text = |k: &str| rule.get(k).and_then(|v| v.as_str()).unwrap_or_default();
                let reply = text("reply");
                let Some(code) = reply.get(..3).and_then(|c| c.parse::<u16>().ok()) else {
                    continue;
                };
                let rest = reply[3..].trim_start();
                let first = rest.split_whitespace().next().unwrap_or_default();
                let enhanced =
                    (first.split('.').count() == 3 && first.starts_with(|c: char| c.is_ascii_digit())).then_some(first);
                let text_part = enhanced.map_or(rest, |e| rest[e.len()..].trim_start());
                let r = Reply::new(code, enhanced, text_part);
                let v = t.classify(&r);
                let at = format!("{}: {reply}", path.display());
                if text("rcpt").starts_with("^spam") && code >= 500 {
                    assert_eq!((v.action, v.suppress), (Action::Bounce, false), "{at}");
                    content += 1;
                } else if text("pool") == "blocked" && code >= 500 {
                    assert_eq!(v.action, Action::Reroute, "{at}");
                    blocks += 1;
                }
            }
        }
        assert!(
            content >= 8 && blocks >= 6,
            "profiles read: {content} content refusals, {blocks} IP blocks"
        );
    }

    #[test]
    fn bad_tables_fail_with_position() {
        let src = Source {
            name: "r.yaml".into(),
            text: "- { match: { code: 6xx }, action: defer }\n".into(),
            dir: None,
        };
        let e = ResponseTable::from_source(&src).unwrap_err();
        assert_eq!(e.pos.map(|p| p.0), Some(1), "{e}");
        let src = Source {
            name: "r.yaml".into(),
            text: "- { match: { code: 4xx }, action: explode }\n".into(),
            dir: None,
        };
        assert!(ResponseTable::from_source(&src).is_err());
    }
}
