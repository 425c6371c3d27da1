//! STARTTLS (RFC 3207) between our server and our client, and against a raw socket: the
//! upgrade, the fresh session after it, required and opportunistic clients, a broken or expired
//! server certificate, and bytes pipelined behind STARTTLS thrown away unread.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;
use crate::smtp::client::ClientTls;
use crate::smtp::{Client, ClientError, StartTls};
use crate::tls::{server_config, Pki, Validity};

fn offer(pki: &Pki, validity: Validity) -> StartTls {
    let c = pki.issue(&["127.0.0.1".into(), "mx.test".into()], validity).unwrap();
    StartTls::Offer(server_config(c.chain, c.key).unwrap())
}

async fn server(starttls: Option<StartTls>) -> TestServer {
    TestServer::start(
        TestPolicy {
            starttls,
            ..TestPolicy::default()
        },
        test_limits(),
    )
    .await
}

#[tokio::test]
async fn a_required_client_upgrades_and_sends_over_tls() {
    let pki = Pki::new("t").unwrap();
    let srv = server(Some(offer(&pki, Validity::Current))).await;
    let mut c = Client::connect(
        srv.addr,
        &client_cfg(ClientTls::Required(pki.client_config().unwrap()), None),
    )
    .await
    .unwrap();
    let info = c.tls().cloned().expect("TLS negotiated");
    assert!(info.version.starts_with("TLS"), "{info:?}");
    assert!(c.pipelining(), "the EHLO after TLS was read");
    let out = c
        .send("a@x.test", &["b@y.test".into()], b"Subject: t\r\n\r\nhi\r\n")
        .await
        .unwrap();
    assert!(out.accepted());
    let got = srv.policy.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls, "the policy saw the message over TLS");
    assert_eq!(srv.stats.snapshot().tls_sessions, 1);
}

#[tokio::test]
async fn without_tls_offered_opportunistic_stays_plain_and_required_fails() {
    let pki = Pki::new("t").unwrap();
    let srv = server(None).await;
    let c = Client::connect(
        srv.addr,
        &client_cfg(ClientTls::Opportunistic(pki.client_config().unwrap()), None),
    )
    .await
    .unwrap();
    assert!(c.tls().is_none());
    let e = Client::connect(
        srv.addr,
        &client_cfg(ClientTls::Required(pki.client_config().unwrap()), None),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(&e, ClientError::Tls(t) if t.contains("does not offer")), "{e}");
}

#[tokio::test]
async fn an_expired_certificate_or_a_broken_handshake_is_a_tls_error() {
    let pki = Pki::new("t").unwrap();
    let expired = server(Some(offer(&pki, Validity::Expired))).await;
    let e = Client::connect(
        expired.addr,
        &client_cfg(ClientTls::Required(pki.client_config().unwrap()), None),
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(&e, ClientError::Tls(t) if t.to_lowercase().contains("expired")),
        "{e}"
    );
    assert_eq!(expired.stats.snapshot().tls_sessions, 0);

    let broken = server(Some(StartTls::Broken)).await;
    let e = Client::connect(
        broken.addr,
        &client_cfg(ClientTls::Opportunistic(pki.client_config().unwrap()), None),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(e, ClientError::Tls(_)), "{e}");
}

/// Reads one (possibly multi-line) reply's lines.
async fn reply<S: AsyncReadExt + Unpin>(s: &mut S) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = tokio::time::timeout(WAIT, s.read(&mut b)).await.unwrap().unwrap();
        assert_eq!(n, 1, "connection closed; got {:?}", String::from_utf8_lossy(&out));
        out.push(b[0]);
        // The last line of a reply has a space after its code.
        if out.ends_with(b"\r\n") {
            let text = String::from_utf8_lossy(&out).to_string();
            let last = text.trim_end().rsplit("\r\n").next().unwrap_or("").to_string();
            if last.as_bytes().get(3) == Some(&b' ') {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn commands_pipelined_behind_starttls_are_discarded_not_run_inside_tls() {
    let pki = Pki::new("t").unwrap();
    let srv = server(Some(offer(&pki, Validity::Current))).await;
    let mut tcp = TcpStream::connect(srv.addr).await.unwrap();
    assert!(reply(&mut tcp).await.starts_with("220"));
    tcp.write_all(b"EHLO attacker.test\r\n").await.unwrap();
    assert!(reply(&mut tcp).await.contains("STARTTLS"));
    // The classic injection: a command in the same packet as STARTTLS, sent in the clear.
    tcp.write_all(b"STARTTLS\r\nRSET\r\n").await.unwrap();
    assert!(reply(&mut tcp).await.starts_with("220"));
    let name = rustls::pki_types::ServerName::try_from("mx.test").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(pki.client_config().unwrap())
        .connect(name, tcp)
        .await
        .unwrap();
    // Had RSET run inside TLS, its 250 would be waiting now, unasked for.
    let mut b = [0u8; 64];
    let stray = tokio::time::timeout(Duration::from_millis(300), tls.read(&mut b)).await;
    assert!(
        stray.is_err(),
        "a reply nobody asked for over TLS: {:?}",
        stray.map(|r| r.map(|n| String::from_utf8_lossy(&b[..n]).to_string()))
    );
    // And the session started over: MAIL before a new EHLO is out of sequence.
    tls.write_all(b"MAIL FROM:<a@x.test>\r\n").await.unwrap();
    assert!(reply(&mut tls).await.starts_with("503"));
    tls.write_all(b"EHLO attacker.test\r\n").await.unwrap();
    let ehlo = reply(&mut tls).await;
    assert!(ehlo.starts_with("250") && !ehlo.contains("STARTTLS"), "{ehlo}");
    let s = srv.stats.snapshot();
    assert_eq!((s.starttls_injections, s.tls_sessions), (1, 1));
    let _ = Arc::strong_count(&srv.policy);
}
