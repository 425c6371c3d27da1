//! Certificates for a run's TLS (SPEC §13): a private CA made when the run starts, and the
//! certificates it issues — to each inbox and MTA node, and an expired one for the
//! `expired-cert` chaos mode — with the rustls configurations that serve and verify them.
//!
//! Nothing here touches OpenSSL or the host's trust store: clients of a run trust that run's CA
//! and nothing else, so a run can never vouch for a real server, and a certificate the run
//! did not issue fails verification like a real misconfiguration would.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make a certificate: {0}")]
    Make(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("{path}: {why}")]
    File { path: String, why: String },
}

/// The CA's own parameters: its name, and that it signs certificates.
fn ca_params(name: &str) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("mailsurge CA {name}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(2);
    params.not_after = now + time::Duration::days(30);
    Ok(params)
}

/// How long an issued certificate is valid, from an hour before it is made.
const VALID_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether a certificate is current or long expired (the `expired-cert` fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Current,
    /// Ended a day ago.
    Expired,
}

/// A certificate chain and its key, as a server presents them.
pub struct Issued {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The same, as PEM (for a node's files).
    pub cert_pem: String,
    pub key_pem: String,
}

/// A run's certificate authority.
pub struct Pki {
    params: CertificateParams,
    key: KeyPair,
    der: CertificateDer<'static>,
    pem: String,
}

impl Pki {
    /// A fresh self-signed CA named `name` (the run's id).
    pub fn new(name: &str) -> Result<Pki, TlsError> {
        let params = ca_params(name)?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Pki {
            der: cert.der().clone(),
            pem: cert.pem(),
            params,
            key,
        })
    }

    /// The CA `Pki::new(name)` made elsewhere, from its certificate and key: a distributed
    /// run's agents issue their inboxes' and nodes' certificates with the coordinator's CA, so
    /// every certificate of the run chains to the one `tls/ca.pem`. The issuer is the same
    /// name and key, which is all a certificate it signs records of it.
    pub fn from_parts(name: &str, cert_pem: &str, key_pem: &str) -> Result<Pki, TlsError> {
        let bad = |why: String| TlsError::File {
            path: "the run's CA".into(),
            why,
        };
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        Ok(Pki {
            params: ca_params(name)?,
            key: KeyPair::from_pem(key_pem)?,
            der,
            pem: cert_pem.to_owned(),
        })
    }

    /// Writes the CA certificate to `<run_dir>/tls/ca.pem`, where clients that verify (swaks
    /// `--tls-ca-path`) find it; one place for the path on one host and in a cluster.
    pub fn write_ca(&self, run_dir: &Path) -> std::io::Result<()> {
        let dir = run_dir.join("tls");
        std::fs::create_dir_all(&dir).map_err(|e| crate::files::at(&dir, e))?;
        crate::files::write(&dir.join("ca.pem"), self.ca_pem())
    }

    /// The CA's private key as PEM, for [`Pki::from_parts`] on an agent. It signs only this
    /// run's certificates and dies with the run.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The CA certificate as PEM: what a node's `tls.ca` file holds.
    pub fn ca_pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `names` (host names or IP addresses), signed by this CA.
    pub fn issue(&self, names: &[String], validity: Validity) -> Result<Issued, TlsError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        let now = OffsetDateTime::now_utc();
        (params.not_before, params.not_after) = match validity {
            Validity::Current => (now - time::Duration::hours(1), now + VALID_FOR),
            Validity::Expired => (now - time::Duration::days(30), now - time::Duration::days(1)),
        };
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued {
            chain: vec![cert.der().clone(), self.der.clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            cert_pem: cert.pem() + &self.pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Clients of this run: they trust this CA alone.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        client_config(std::slice::from_ref(&self.der))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server presenting `chain` with `key`.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let c = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(c))
}

/// A client trusting `roots` alone.
pub fn client_config(roots: &[CertificateDer<'static>]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone())?;
    }
    let c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(c))
}

/// A client that encrypts without authenticating the server: opportunistic TLS, as Postfix's
/// `smtp_tls_security_level = may` does — a certificate that is expired, self-signed or for
/// another name still gets the mail encrypted, where no TLS would send it in the clear.
pub fn client_unverified() -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth();
    Ok(Arc::new(c))
}

/// Takes any certificate, but still checks the handshake's signatures with the provider's
/// algorithms, so the session is a real TLS session, just unauthenticated.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The generator's STARTTLS: required, encrypting without verifying the server, as swaks and
/// other load clients do — it measures what TLS costs the system under test, not whom it trusts.
pub fn submission(starttls: bool) -> Result<crate::smtp::client::ClientTls, TlsError> {
    Ok(if starttls {
        crate::smtp::client::ClientTls::Required(client_unverified()?)
    } else {
        crate::smtp::client::ClientTls::Off
    })
}

fn file_err(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// A certificate chain and key from PEM files (a node's `tls.cert` and `tls.key`).
pub fn load_server(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(cert, e))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    server_config(chain, key_der)
}

/// Roots from a PEM file (a node's `tls.ca`).
pub fn load_client(ca: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = CertificateDer::pem_file_iter(ca)
        .map_err(|e| file_err(ca, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(ca, e))?;
    if roots.is_empty() {
        return Err(file_err(ca, "no certificate in the file"));
    }
    client_config(&roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;

    /// A handshake over an in-memory pipe; the client's error, if any.
    async fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> Result<(), String> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from(name.to_string()).unwrap();
        let srv = tokio::spawn(async move { tokio_rustls::TlsAcceptor::from(server).accept(a).await.map(drop) });
        let cli = tokio_rustls::TlsConnector::from(client)
            .connect(name, b)
            .await
            .map(drop);
        let _ = srv.await;
        cli.map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_run_trusts_its_own_certificates_and_refuses_an_expired_one() {
        let pki = Pki::new("t").unwrap();
        let client = pki.client_config().unwrap();
        let names = vec!["mx.gmail.test".to_string(), "127.0.2.1".to_string()];
        let good = pki.issue(&names, Validity::Current).unwrap();
        let ok = handshake(
            server_config(good.chain, good.key).unwrap(),
            client.clone(),
            "mx.gmail.test",
        )
        .await;
        assert_eq!(ok, Ok(()));
        let by_ip = pki.issue(&names, Validity::Current).unwrap();
        assert_eq!(
            handshake(
                server_config(by_ip.chain, by_ip.key).unwrap(),
                client.clone(),
                "127.0.2.1"
            )
            .await,
            Ok(())
        );

        let old = pki.issue(&names, Validity::Expired).unwrap();
        let e = handshake(
            server_config(old.chain, old.key).unwrap(),
            client.clone(),
            "mx.gmail.test",
        )
        .await
        .unwrap_err();
        assert!(e.contains("expired"), "{e}");

        // Opportunistic clients take even the expired one: encrypted, not authenticated.
        let old = pki.issue(&names, Validity::Expired).unwrap();
        let any = handshake(
            server_config(old.chain, old.key).unwrap(),
            client_unverified().unwrap(),
            "mx.gmail.test",
        )
        .await;
        assert_eq!(any, Ok(()));

        // Another run's CA is a stranger.
        let other = Pki::new("u").unwrap().issue(&names, Validity::Current).unwrap();
        let e = handshake(server_config(other.chain, other.key).unwrap(), client, "mx.gmail.test")
            .await
            .unwrap_err();
        assert!(e.contains("UnknownIssuer") || e.contains("unknown issuer"), "{e}");
    }

    /// An agent's copy of the coordinator's CA issues certificates the coordinator's clients
    /// trust; a copy under another name does not (the issuer name is part of the chain).
    #[tokio::test]
    async fn a_ca_rebuilt_from_its_parts_issues_certificates_that_chain_to_the_original() {
        let pki = Pki::new("run-1").unwrap();
        let client = pki.client_config().unwrap();
        let copy = Pki::from_parts("run-1", pki.ca_pem(), &pki.key_pem()).unwrap();
        assert_eq!(copy.ca_pem(), pki.ca_pem());
        let c = copy.issue(&["127.0.41.1".into()], Validity::Current).unwrap();
        let ok = handshake(server_config(c.chain, c.key).unwrap(), client.clone(), "127.0.41.1").await;
        assert_eq!(ok, Ok(()));
        let stranger = Pki::from_parts("run-2", pki.ca_pem(), &pki.key_pem()).unwrap();
        let c = stranger.issue(&["127.0.41.1".into()], Validity::Current).unwrap();
        let e = handshake(server_config(c.chain, c.key).unwrap(), client, "127.0.41.1").await;
        assert!(e.is_err(), "a different issuer name must not chain");
        assert!(Pki::from_parts("run-1", "not pem", &pki.key_pem()).is_err());
    }

    #[test]
    fn pem_files_load_back() {
        let pki = Pki::new("t").unwrap();
        let c = pki.issue(&["node.test".to_string()], Validity::Current).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca) = (
            dir.path().join("c.pem"),
            dir.path().join("k.pem"),
            dir.path().join("ca.pem"),
        );
        std::fs::write(&cert, &c.cert_pem).unwrap();
        std::fs::write(&key, &c.key_pem).unwrap();
        std::fs::write(&ca, pki.ca_pem()).unwrap();
        assert!(load_server(&cert, &key).is_ok());
        assert!(load_client(&ca).is_ok());
        let e = load_client(&key).err().unwrap().to_string();
        assert!(client_unverified().is_ok());
        assert!(e.contains("k.pem") && e.contains("no certificate"), "{e}");
    }
}
