//! The node's TLS toward providers (SPEC §13): opportunistic STARTTLS wherever it is offered,
//! and verified TLS for the domains that require it — what a connection to a domain's MX asks
//! of [`crate::smtp::Client`], and what its failure means.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::config::NodeTls;
use crate::smtp::client::ClientTls;
use crate::smtp::{ClientError, Reply};

/// How the node's egress does TLS, from its config's `tls:`.
#[derive(Debug, Clone, Default)]
pub struct EgressTls {
    /// Unauthenticated, for opportunistic STARTTLS.
    any: Option<Arc<rustls::ClientConfig>>,
    /// Verified against the config's `ca`, for the required domains.
    verified: Option<Arc<rustls::ClientConfig>>,
    required: BTreeSet<String>,
}

impl EgressTls {
    pub fn new(t: Option<&NodeTls>) -> Result<EgressTls, crate::tls::TlsError> {
        let Some(t) = t else { return Ok(EgressTls::default()) };
        Ok(EgressTls {
            any: t.opportunistic.then(crate::tls::client_unverified).transpose()?,
            verified: t.ca.as_deref().map(crate::tls::load_client).transpose()?,
            required: t.required.iter().map(|d| d.to_ascii_lowercase()).collect(),
        })
    }

    /// What a connection for `domain` asks for.
    pub fn for_domain(&self, domain: &str) -> ClientTls {
        if self.required.contains(&domain.to_ascii_lowercase()) {
            if let Some(v) = &self.verified {
                return ClientTls::Required(v.clone());
            }
        }
        match &self.any {
            Some(c) => ClientTls::Opportunistic(c.clone()),
            None => ClientTls::Off,
        }
    }

    /// The deferral of a required domain's connection that TLS failed: the error says why,
    /// so the response table (and a reader of the events) can tell it from other failures.
    pub fn failure(domain: &str, e: &ClientError) -> Reply {
        Reply::new(451, Some("4.7.5"), &format!("TLS required for {domain} failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_domains_verify_the_rest_is_opportunistic() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::tls::Pki::new("t").unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, pki.ca_pem()).unwrap();
        let t = NodeTls {
            ca: Some(ca),
            required: vec!["Gmail.com".into()],
            ..NodeTls::default()
        };
        let off = EgressTls::new(Some(&t)).unwrap();
        assert!(matches!(off.for_domain("gmail.com"), ClientTls::Required(_)));
        assert!(
            matches!(off.for_domain("yahoo.com"), ClientTls::Off),
            "opportunistic is off"
        );
        let on = EgressTls::new(Some(&NodeTls {
            opportunistic: true,
            ..t
        }))
        .unwrap();
        assert!(matches!(on.for_domain("yahoo.com"), ClientTls::Opportunistic(_)));
        assert!(matches!(
            EgressTls::new(None).unwrap().for_domain("gmail.com"),
            ClientTls::Off
        ));
        let r = EgressTls::failure("gmail.com", &ClientError::Tls("certificate expired".into()));
        assert_eq!((r.code, r.enhanced.as_deref()), (451, Some("4.7.5")));
        assert!(r.lines[0].contains("gmail.com") && r.lines[0].contains("expired"));
    }

    /// A TLS policy failure is a reply like any other to the response table: the shipped one
    /// defers it, and a rule of the user's can send the retry through another pool.
    #[test]
    fn the_response_table_defers_or_reroutes_a_tls_failure() {
        use crate::mta::responses::{Action, ResponseTable};
        let r = EgressTls::failure(
            "gmail.com",
            &ClientError::Tls("invalid peer certificate: Expired".into()),
        );
        assert_eq!(ResponseTable::shipped().classify(&r).action, Action::Defer);
        let src = crate::config::Source {
            name: "r.yaml".into(),
            text: "- { match: { code: 4xx, enhanced: '4.7.5', text: '(?i)TLS' }, action: reroute, pool: tls-ok }\n"
                .into(),
            dir: None,
        };
        let v = ResponseTable::from_source(&src).unwrap().classify(&r);
        assert_eq!((v.action, v.pool.as_deref()), (Action::Reroute, Some("tls-ok")));
    }
}
