//! The scenario's TLS and AUTH keys (SPEC §13): a provider's `tls:`, `mta.tls`, `traffic.tls`
//! and `traffic.auth`, as plain data like the rest of the plan.

use serde::{Deserialize, Serialize};

/// Whether an SMTP server offers STARTTLS, and whether it insists on it (a mock inbox's
/// `tls:`, SPEC §13).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Not offered.
    #[default]
    None,
    /// Offered; plaintext mail is taken too.
    Optional,
    /// Offered, and MAIL before it gets `530 5.7.0`.
    Required,
}

/// `mta: tls: { opportunistic: true, required: [gmail.com] }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtaTls {
    /// STARTTLS whenever a provider offers it, unauthenticated (Postfix's `may`).
    #[serde(default = "yes")]
    pub opportunistic: bool,
    /// Domains delivered only over TLS verified against the run's CA; a failure is a
    /// `451 4.7.5` deferral carrying the TLS error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for MtaTls {
    fn default() -> Self {
        MtaTls {
            opportunistic: true,
            required: Vec::new(),
        }
    }
}

impl MtaTls {
    pub(crate) fn is_default(&self) -> bool {
        *self == MtaTls::default()
    }
}

/// `traffic.tls`: how the generator submits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubmitTls {
    /// Plaintext.
    #[default]
    None,
    /// STARTTLS on every connection; a server that does not offer it is a submission error.
    Starttls,
}

impl SubmitTls {
    pub(crate) fn is_none(&self) -> bool {
        *self == SubmitTls::None
    }
}

/// `traffic.auth: user:password`: the generator logs in on every submission connection (after
/// STARTTLS, if any), and the run's reference nodes accept only that account — they relay for
/// authenticated clients alone, so every message of the run proves AUTH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitAuth(pub crate::units::Credentials);

impl Serialize for SubmitAuth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}:{}", self.0.user, self.0.password))
    }
}

impl<'de> Deserialize<'de> for SubmitAuth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::config::de_parsed(d, |s| crate::units::Credentials::parse(s).map(SubmitAuth))
    }
}
