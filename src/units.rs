//! Human units used in scenario and config files: durations (`250ms`), rates (`2000/s`),
//! percentages (`99.5%`), sizes (`12KiB`), regex patterns and `user:password` credentials.
//!
//! Each unit is a small newtype that parses from a string (and, where it is unambiguous, from a
//! bare YAML number) and prints back in the same notation, so a resolved scenario written to a
//! report reads like the file the user wrote. Parsing lives here once so every file format
//! (scenario, node config, rule table) accepts exactly the same spellings.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use regex::Regex;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A parse failure, worded for a person reading a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{input}`: {why}")]
pub struct UnitError {
    kind: &'static str,
    input: String,
    why: &'static str,
}

impl UnitError {
    fn new(kind: &'static str, input: &str, why: &'static str) -> Self {
        UnitError {
            kind,
            input: input.to_string(),
            why,
        }
    }
}

/// Splits `"12.5KiB"` into `(12.5, "KiB")`; the unit may be empty. Scientific notation
/// (`1e3s`) is read as a number, so an absurd value is refused for its size, not its unit.
fn split_number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let is_num = |c: char| c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == '_';
    let mut end = s.find(|c: char| !is_num(c)).unwrap_or(s.len());
    // An exponent: `e` or `E` after a digit, then an optional sign and at least one digit.
    let rest = &s[end..];
    if end > 0 && (rest.starts_with('e') || rest.starts_with('E')) {
        let exp = rest[1..].strip_prefix(['+', '-']).unwrap_or(&rest[1..]);
        let digits = exp.find(|c: char| !c.is_ascii_digit()).unwrap_or(exp.len());
        if digits > 0 {
            end += rest.len() - exp.len() + digits;
        }
    }
    let (num, unit) = s.split_at(end);
    let num: f64 = num.replace('_', "").parse().ok()?;
    num.is_finite().then_some((num, unit.trim()))
}

/// Wall-clock duration of the run, e.g. `250ms`, `30s`, `1.5s`, `10m`, `2h`.
///
/// A bare number is rejected: `5` could mean seconds or milliseconds, and guessing wrong would
/// silently change a scenario by a factor of a thousand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// The longest duration any file may give: a year. Longer is a typo (or a probe), and
    /// arithmetic on it (a run's end, a retry's due time) must never overflow.
    pub const MAX: Duration = Duration::from_secs(366 * 24 * 3600);

    pub fn as_secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl FromStr for Dur {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        const KIND: &str = "duration";
        let (n, unit) = split_number(s).ok_or_else(|| UnitError::new(KIND, s, "expected e.g. 250ms, 30s, 10m"))?;
        if n < 0.0 {
            return Err(UnitError::new(KIND, s, "must not be negative"));
        }
        let secs = match unit {
            "us" | "µs" => n / 1e6,
            "ms" => n / 1e3,
            "s" => n,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            "" => return Err(UnitError::new(KIND, s, "needs a unit: us, ms, s, m or h")),
            _ => {
                return Err(UnitError::new(
                    KIND,
                    s,
                    "unknown unit (use us, ms, s, m or h, e.g. 30s)",
                ))
            }
        };
        if secs.is_nan() || secs > Dur::MAX.as_secs_f64() {
            return Err(UnitError::new(KIND, s, "out of range: at most 366 days (e.g. 24h)"));
        }
        Ok(Dur(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_secs_f64() * 1e3;
        if ms == 0.0 {
            write!(f, "0s")
        } else if ms < 1.0 {
            write!(f, "{}us", self.0.as_micros())
        } else if ms % 60_000.0 == 0.0 {
            write!(f, "{}m", trim_float(ms / 60_000.0))
        } else if ms % 1000.0 == 0.0 || ms >= 10_000.0 {
            write!(f, "{}s", trim_float(ms / 1000.0))
        } else {
            write!(f, "{}ms", trim_float(ms))
        }
    }
}

/// Events per second, e.g. `2000/s`, `120/m`, `50000/h`; a bare number means per second.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Rate(pub f64);

impl Rate {
    /// Above any rate a file may mean (a billion per second); what one run can carry is
    /// checked by the plan.
    pub const MAX: f64 = 1e9;
}

impl FromStr for Rate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        const KIND: &str = "rate";
        let (num, per) = match s.split_once('/') {
            Some((n, p)) => (n, p.trim()),
            None => (s, "s"),
        };
        let (n, unit) = split_number(num).ok_or_else(|| UnitError::new(KIND, s, "expected e.g. 2000/s"))?;
        if !unit.is_empty() {
            return Err(UnitError::new(KIND, s, "expected e.g. 2000/s"));
        }
        if n < 0.0 {
            return Err(UnitError::new(KIND, s, "must not be negative"));
        }
        let per_secs = match per {
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(UnitError::new(
                    KIND,
                    s,
                    "unknown period (use /s, /m or /h, e.g. 2000/s)",
                ))
            }
        };
        if n / per_secs > Rate::MAX {
            return Err(UnitError::new(KIND, s, "out of range: at most 1000000000/s"));
        }
        Ok(Rate(n / per_secs))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", trim_float(self.0))
    }
}

/// A share, stored as a fraction 0..=1: `99.5%` or a bare fraction `0.995`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Percent(pub f64);

impl FromStr for Percent {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        const KIND: &str = "percentage";
        let (n, unit) = split_number(s).ok_or_else(|| UnitError::new(KIND, s, "expected e.g. 99.5%"))?;
        let frac = match unit {
            "%" => n / 100.0,
            "" => n,
            _ => return Err(UnitError::new(KIND, s, "expected e.g. 99.5%")),
        };
        if !(0.0..=1.0).contains(&frac) {
            return Err(UnitError::new(KIND, s, "must be between 0% and 100%"));
        }
        Ok(Percent(frac))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", trim_float(self.0 * 100.0))
    }
}

/// Bytes, e.g. `1024`, `12KiB`, `10MiB`, `1.5MB` (SI and binary prefixes both accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Size(pub u64);

impl Size {
    /// Above any size a file may mean; what a message may be is checked by the plan.
    pub const MAX: u64 = 1 << 40;
}

impl FromStr for Size {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        const KIND: &str = "size";
        let (n, unit) = split_number(s).ok_or_else(|| UnitError::new(KIND, s, "expected e.g. 12KiB"))?;
        if n < 0.0 {
            return Err(UnitError::new(KIND, s, "must not be negative"));
        }
        let mult = match unit {
            "" | "B" => 1.0,
            "KiB" | "K" => 1024.0,
            "MiB" | "M" => 1024.0 * 1024.0,
            "GiB" | "G" => 1024.0 * 1024.0 * 1024.0,
            "kB" | "KB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            _ => {
                return Err(UnitError::new(
                    KIND,
                    s,
                    "unknown unit (use B, KiB, MiB, GiB, kB, MB, e.g. 12KiB)",
                ))
            }
        };
        if n * mult > Size::MAX as f64 {
            return Err(UnitError::new(KIND, s, "out of range: at most 1TiB"));
        }
        Ok(Size((n * mult).round() as u64))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", b >> 30)
        } else if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", b >> 20)
        } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}")
        }
    }
}

/// Prints a float without a trailing `.0` and without float noise (`0.30000000000000004`).
fn trim_float(x: f64) -> String {
    let s = format!("{:.6}", x);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Implements serde for a unit: strings always, bare numbers only where `from_number` allows.
macro_rules! serde_unit {
    ($ty:ty, $expecting:literal, $from_number:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                        self.visit_f64(v as f64)
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                        self.visit_f64(v as f64)
                    }
                    fn visit_f64<E: de::Error>(self, v: f64) -> Result<$ty, E> {
                        let from_number: fn(f64) -> Result<$ty, UnitError> = $from_number;
                        from_number(v).map_err(E::custom)
                    }
                }
                d.deserialize_any(V)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

serde_unit!(Dur, "a duration such as 250ms, 30s or 10m", |n| {
    Err(UnitError::new(
        "duration",
        &n.to_string(),
        "needs a unit: us, ms, s, m or h",
    ))
});
serde_unit!(Rate, "a rate such as 2000/s", |n| (n.to_string() + "/s").parse());
serde_unit!(Percent, "a percentage such as 99.5%", |n| n.to_string().parse());
serde_unit!(Size, "a size such as 1024 or 12KiB", |n| n.to_string().parse());

/// A regex as written in a rule or response table or a scenario (`^unsub[-.+]`). It parses
/// inside `Deserialize`, so a bad pattern is reported at its YAML position with the regex
/// crate's own explanation; inbox rules, the MTA's response table and its screening all read
/// this one type.
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

/// The host of a `scheme://host:port` URL (`nats://127.0.5.1:4222`, `[::1]:4222`), if it is an
/// IP address: what the network rule (`scenario::network::Allow::check_url`) checks of a server
/// named by URL.
pub fn url_host_ip(url: &str) -> Option<std::net::IpAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.rsplit('@').next()?.split('/').next()?;
    if let Ok(sa) = hostport.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    hostport
        .rsplit_once(':')
        .map_or(hostport, |(h, _)| h)
        .trim_matches(['[', ']'])
        .parse()
        .ok()
}

/// A user name and password: a scenario's `traffic.auth`, a client's AUTH, a node's account.
/// `Debug` leaves the password out, so a logged config or error never carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Credentials {
    /// `user:password` (the password may itself hold `:`), as `traffic.auth` and `gen --auth`
    /// take it.
    pub fn parse(s: &str) -> Result<Credentials, String> {
        let Some((user, password)) = s.split_once(':') else {
            return Err("expected `user:password`".into());
        };
        if user.is_empty() {
            return Err("the user name before `:` is empty".into());
        }
        if user.chars().any(char::is_whitespace) {
            return Err(format!("the user name `{user}` contains white space"));
        }
        if s.chars().any(|c| c.is_control()) {
            return Err("control characters are not allowed".into());
        }
        Ok(Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!("250ms".parse::<Dur>().unwrap().0, Duration::from_millis(250));
        assert_eq!("1.5s".parse::<Dur>().unwrap().0, Duration::from_millis(1500));
        assert_eq!("10m".parse::<Dur>().unwrap().0, Duration::from_secs(600));
        assert_eq!("2h".parse::<Dur>().unwrap().0, Duration::from_secs(7200));
        assert!("5".parse::<Dur>().is_err());
        assert!("5 parsecs".parse::<Dur>().is_err());
        assert!("-1s".parse::<Dur>().is_err());
        for s in ["250ms", "30s", "10m", "1.5s", "0s", "90s"] {
            let d: Dur = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<Dur>().unwrap(), d, "{s} -> {d}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!("2000/s".parse::<Rate>().unwrap().0, 2000.0);
        assert_eq!("120/m".parse::<Rate>().unwrap().0, 2.0);
        assert_eq!("7200/h".parse::<Rate>().unwrap().0, 2.0);
        assert_eq!("50".parse::<Rate>().unwrap().0, 50.0);
        assert!("50/fortnight".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }

    #[test]
    fn percents() {
        assert!(("99.5%".parse::<Percent>().unwrap().0 - 0.995).abs() < 1e-12);
        assert_eq!("0.5".parse::<Percent>().unwrap().0, 0.5);
        assert!("101%".parse::<Percent>().is_err());
        assert_eq!("99.5%".parse::<Percent>().unwrap().to_string(), "99.5%");
    }

    #[test]
    fn sizes() {
        assert_eq!("12KiB".parse::<Size>().unwrap().0, 12 * 1024);
        assert_eq!("10MiB".parse::<Size>().unwrap().0, 10 << 20);
        assert_eq!("1024".parse::<Size>().unwrap().0, 1024);
        assert_eq!("1.5MB".parse::<Size>().unwrap().0, 1_500_000);
        assert!("12 parsecs".parse::<Size>().is_err());
        assert_eq!(Size(12 * 1024).to_string(), "12KiB");
    }

    #[test]
    fn yaml_numbers() {
        let r: Rate = serde_norway::from_str("300").unwrap();
        assert_eq!(r.0, 300.0);
        let s: Size = serde_norway::from_str("1024").unwrap();
        assert_eq!(s.0, 1024);
        assert!(serde_norway::from_str::<Dur>("5").is_err());
    }

    /// Hostile values are refused with a reason, never a panic (`Duration::from_secs_f64`
    /// panics above u64 seconds).
    #[test]
    fn absurd_values_are_out_of_range_not_a_panic() {
        for s in [
            "18446744073709551615s",
            "99999999999999999999h",
            "1e20s",
            "367d",
            "400000h",
        ] {
            let e = s.parse::<Dur>().unwrap_err().to_string();
            assert!(e.contains("out of range") || e.contains("unit"), "{s}: {e}");
        }
        assert!("1e20s".parse::<Dur>().unwrap_err().to_string().contains("out of range"));
        assert_eq!("1e3ms".parse::<Dur>().unwrap().0, Duration::from_secs(1));
        assert_eq!("2.5e1s".parse::<Dur>().unwrap().0, Duration::from_secs(25));
        assert!("1e10/s"
            .parse::<Rate>()
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        assert!("2TiB".parse::<Size>().is_err() && "99999999999999999999GiB".parse::<Size>().is_err());
        assert!(serde_norway::from_str::<Size>("1e30").is_err());
        let big: Result<Dur, _> = serde_norway::from_str("\"18446744073709551615s\"");
        assert!(big.is_err());
    }

    #[test]
    fn a_urls_host_is_read_as_an_ip_or_not_at_all() {
        let ip = |u: &str| url_host_ip(u).map(|i| i.to_string());
        assert_eq!(ip("nats://127.0.5.1:4222").as_deref(), Some("127.0.5.1"));
        assert_eq!(ip("nats://user:pw@127.0.0.2:4222").as_deref(), Some("127.0.0.2"));
        assert_eq!(ip("nats://[::1]:4222").as_deref(), Some("::1"));
        assert_eq!(ip("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(ip("nats://localhost:4222"), None, "names are not looked up");
        assert_eq!(ip("nats://10.1.2.3:4222").as_deref(), Some("10.1.2.3"));
    }
}
