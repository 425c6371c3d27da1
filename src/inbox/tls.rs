//! A mock inbox's STARTTLS (SPEC §13): whether it offers TLS (`tls: none | optional |
//! required`), the certificate it presents — issued by the run's CA for its MX addresses — and
//! the `tls` chaos faults: a handshake that fails, or a certificate that has expired.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::scenario::{KillMode, TlsMode};
use crate::smtp::{Decision, Reply, SessionInfo, StartTls};
use crate::tls::{server_config, Pki, TlsError, Validity};

/// A provider's TLS.
pub struct InboxTls {
    mode: TlsMode,
    current: Arc<rustls::ServerConfig>,
    expired: Arc<rustls::ServerConfig>,
    /// The `tls` fault in force (`handshake-fail` or `expired-cert`).
    fault: Mutex<Option<KillMode>>,
}

impl InboxTls {
    /// Certificates for `provider`'s MX hosts at `addrs`: each address, and the names
    /// `mx<m>.<provider>.mailsurge.test`, in a current one and an expired one.
    pub fn new(pki: &Pki, mode: TlsMode, provider: &str, addrs: &[SocketAddr]) -> Result<InboxTls, TlsError> {
        let mut names: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        names.extend((1..=addrs.len()).map(|m| format!("mx{m}.{provider}.mailsurge.test")));
        let config = |v: Validity| -> Result<Arc<rustls::ServerConfig>, TlsError> {
            let c = pki.issue(&names, v)?;
            server_config(c.chain, c.key)
        };
        Ok(InboxTls {
            mode,
            current: config(Validity::Current)?,
            expired: config(Validity::Expired)?,
            fault: Mutex::new(None),
        })
    }

    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// What STARTTLS does now.
    pub fn starttls(&self) -> StartTls {
        if self.mode == TlsMode::None {
            return StartTls::NotOffered;
        }
        match *crate::sync::lock(&self.fault) {
            Some(KillMode::HandshakeFail) => StartTls::Broken,
            Some(KillMode::ExpiredCert) => StartTls::Offer(self.expired.clone()),
            _ => StartTls::Offer(self.current.clone()),
        }
    }

    /// `530 5.7.0` for MAIL on a plaintext session of a provider that requires TLS (RFC 3207
    /// §4: "Must issue a STARTTLS command first", as Postfix and Gmail word it).
    pub fn refuse_plaintext(&self, s: &SessionInfo) -> Option<Decision> {
        (self.mode == TlsMode::Required && s.tls.is_none())
            .then(|| Decision::reply(Reply::new(530, Some("5.7.0"), "Must issue a STARTTLS command first")))
    }

    /// Puts a `tls` fault in force (`Some`) or lifts it (`None`).
    pub fn set_fault(&self, fault: Option<KillMode>) {
        *crate::sync::lock(&self.fault) = fault.filter(|m| m.is_tls());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(tls: bool) -> SessionInfo {
        SessionInfo {
            conn_id: 1,
            peer: "127.0.0.1:4000".parse().unwrap(),
            local: "127.0.2.1:25".parse().unwrap(),
            helo: Some("c.test".into()),
            transactions: 0,
            tls: tls.then(|| crate::smtp::TlsInfo {
                version: "TLSv1.3".into(),
                cipher: "x".into(),
                handshake_us: 1,
            }),
            auth: None,
        }
    }

    #[test]
    fn faults_change_what_starttls_does_and_required_refuses_plaintext() {
        let pki = Pki::new("t").unwrap();
        let addrs = ["127.0.2.1:2525".parse().unwrap()];
        let t = InboxTls::new(&pki, TlsMode::Required, "gmail", &addrs).unwrap();
        let offered = |t: &InboxTls| match t.starttls() {
            StartTls::Offer(c) if Arc::ptr_eq(&c, &t.current) => "current",
            StartTls::Offer(c) if Arc::ptr_eq(&c, &t.expired) => "expired",
            StartTls::Offer(_) => "other",
            StartTls::Broken => "broken",
            StartTls::NotOffered => "none",
        };
        assert_eq!(offered(&t), "current");
        t.set_fault(Some(KillMode::ExpiredCert));
        assert_eq!(offered(&t), "expired");
        t.set_fault(Some(KillMode::HandshakeFail));
        assert_eq!(offered(&t), "broken");
        t.set_fault(Some(KillMode::Refuse));
        assert_eq!(offered(&t), "current", "a kill mode is not a TLS fault");
        t.set_fault(None);
        assert_eq!(offered(&t), "current");

        let refused = t.refuse_plaintext(&session(false)).unwrap();
        assert_eq!(
            (refused.reply.code, refused.reply.enhanced.as_deref()),
            (530, Some("5.7.0"))
        );
        assert!(t.refuse_plaintext(&session(true)).is_none());
        let optional = InboxTls::new(&pki, TlsMode::Optional, "gmail", &addrs).unwrap();
        assert!(optional.refuse_plaintext(&session(false)).is_none());
        let none = InboxTls::new(&pki, TlsMode::None, "gmail", &addrs).unwrap();
        assert!(matches!(none.starttls(), StartTls::NotOffered));
    }
}
