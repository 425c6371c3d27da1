//! Post-acceptance screening: checks made *after* a message was accepted and spooled, whose
//! failures become `dropped` events and never SMTP rejects — as the relay service in the
//! background article does it (JangoSMTP): recipients on the bounce list or the unsubscribe
//! list, a tenant over its sending limit, a message that does not parse.
//!
//! Rejecting these at SMTP time would push the problem back to the sender's MTA, which would
//! retry or bounce to an address nobody reads; dropping with a reported reason is what the
//! platform's customers can act on.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::time::Instant;

pub use crate::scenario::ScreenConfig;
use crate::sync::lock;

/// Why a recipient was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drop {
    BounceList,
    Unsubscribed,
    TenantOverLimit(String),
    Unparseable(&'static str),
}

impl std::fmt::Display for Drop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drop::BounceList => f.write_str("recipient is on the bounce list"),
            Drop::Unsubscribed => f.write_str("recipient unsubscribed"),
            Drop::TenantOverLimit(t) => write!(f, "tenant {t} is over its sending limit"),
            Drop::Unparseable(why) => write!(f, "message does not parse: {why}"),
        }
    }
}

/// Screening state of one node.
pub struct Screen {
    cfg: ScreenConfig,
    /// Recipients learned from `suppress: true` bounces (lower-cased).
    suppressed: Mutex<HashSet<String>>,
    /// Tenant → GCRA theoretical arrival time.
    tenants: Mutex<HashMap<String, Instant>>,
}

impl Screen {
    pub fn new(cfg: ScreenConfig) -> Screen {
        Screen {
            cfg,
            suppressed: Mutex::new(HashSet::new()),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// Adds a recipient to the bounce list (after a permanent failure with `suppress`).
    pub fn suppress(&self, rcpt: &str) {
        lock(&self.suppressed).insert(rcpt.to_ascii_lowercase());
    }

    /// Checks a whole message; `Some` drops every recipient.
    pub fn message(&self, sender: &str, body: &[u8], now: Instant) -> Option<Drop> {
        if let Err(why) = check_headers(body, self.cfg.require_from) {
            return Some(Drop::Unparseable(why));
        }
        let rate = self.cfg.tenant_rate?.0;
        if rate <= 0.0 {
            return None;
        }
        let mut t = lock(&self.tenants);
        let tat = t.entry(sender.to_ascii_lowercase()).or_insert(now);
        if crate::gcra::over_limit(tat, now, rate, self.cfg.tenant_burst) {
            return Some(Drop::TenantOverLimit(sender.to_string()));
        }
        None
    }

    /// Checks one recipient.
    pub fn recipient(&self, rcpt: &str) -> Option<Drop> {
        if lock(&self.suppressed).contains(&rcpt.to_ascii_lowercase())
            || self.cfg.bounce_list.as_ref().is_some_and(|p| p.0.is_match(rcpt))
        {
            return Some(Drop::BounceList);
        }
        if self.cfg.unsubscribed.as_ref().is_some_and(|p| p.0.is_match(rcpt)) {
            return Some(Drop::Unsubscribed);
        }
        None
    }
}

/// Most header bytes examined; a header block longer than this is malformed for our purposes.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// A minimal RFC 5322 header check: every line of the header block is a field (`name:`) or a
/// folded continuation, and, with `require_from`, there is a `From:` field.
pub fn check_headers(body: &[u8], require_from: bool) -> Result<(), &'static str> {
    let mut seen_from = false;
    let mut first = true;
    for line in body[..body.len().min(MAX_HEADER_BLOCK)].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return if seen_from || !require_from {
                Ok(())
            } else {
                Err("no From: header")
            };
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if first {
                return Err("header block starts with a continuation line");
            }
            continue;
        }
        first = false;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err("a header line has no colon");
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|b| (33..=126).contains(b) && *b != b':') {
            return Err("a header field name is not printable ASCII");
        }
        seen_from |= name.eq_ignore_ascii_case(b"from");
    }
    // No blank line: the whole message is headers (the body is optional).
    if seen_from || !require_from {
        Ok(())
    } else {
        Err("no From: header")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{Pattern, Rate};

    #[test]
    fn header_check() {
        assert!(check_headers(b"From: a@b\r\nSubject: x\r\n\r\nbody\r\n", true).is_ok());
        assert!(check_headers(b"Subject: folded\r\n more\r\nFrom: a@b\r\n", true).is_ok());
        assert_eq!(
            check_headers(b"Subject: x\r\n\r\nFrom: in body\r\n", true),
            Err("no From: header")
        );
        assert!(check_headers(b"Subject: x\r\n\r\nno From needed\r\n", false).is_ok());
        assert_eq!(
            check_headers(b"this is not a header\r\n\r\n", false),
            Err("a header line has no colon")
        );
        assert!(check_headers(b" From: a\r\n\r\n", false).is_err());
        assert!(check_headers(b"Fr om: a\r\n\r\n", false).is_err());
    }

    #[test]
    fn lists_and_learned_suppressions() {
        let cfg = ScreenConfig {
            unsubscribed: Some(Pattern(regex::Regex::new("^unsub[-.+]").unwrap())),
            bounce_list: Some(Pattern(regex::Regex::new("^bad@").unwrap())),
            ..ScreenConfig::default()
        };
        let s = Screen::new(cfg);
        assert_eq!(s.recipient("unsub-1@x.test"), Some(Drop::Unsubscribed));
        assert_eq!(s.recipient("bad@x.test"), Some(Drop::BounceList));
        assert_eq!(s.recipient("ok@x.test"), None);
        s.suppress("OK@x.test");
        assert_eq!(s.recipient("ok@x.test"), Some(Drop::BounceList));
    }

    #[test]
    fn tenant_limit() {
        let cfg = ScreenConfig {
            tenant_rate: Some(Rate(10.0)),
            tenant_burst: 3,
            ..ScreenConfig::default()
        };
        let s = Screen::new(cfg);
        let now = Instant::now();
        let msg = b"From: a@b\r\n\r\nx\r\n";
        let dropped = (0..5).filter(|_| s.message("t1@x", msg, now).is_some()).count();
        assert_eq!(dropped, 2);
        assert!(s.message("t2@x", msg, now).is_none(), "tenants are separate");
        assert!(matches!(
            s.message("t1@x", b"no headers here", now),
            Some(Drop::Unparseable(_))
        ));
    }
}
