//! AUTH (RFC 4954) between our server and a raw socket or our client: PLAIN and LOGIN, the
//! replies RFC 4954 names (235, 334, 501, 503, 504, 535, 538), TLS-only offers, a password
//! guesser closed by the error limit, and our client's PLAIN and LOGIN.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::support::*;
use crate::smtp::client::ClientTls;
use crate::smtp::sasl::{encode, Credentials};
use crate::smtp::{AuthOffer, Client, ClientError, Limits, StartTls};
use crate::tls::{server_config, Pki, Validity};

fn alice() -> Credentials {
    Credentials::parse("alice:pa ss:word").unwrap()
}

async fn server(offer: AuthOffer, starttls: Option<StartTls>, limits: Limits) -> TestServer {
    TestServer::start(
        TestPolicy {
            auth: Some((offer, alice())),
            starttls,
            ..TestPolicy::default()
        },
        limits,
    )
    .await
}

#[tokio::test]
async fn plain_and_login_authenticate_and_the_policy_sees_the_user() {
    let srv = server(AuthOffer::Offered, None, test_limits()).await;
    let mut raw = srv.raw().await;
    raw.expect(220).await;
    let ehlo = raw.cmd("EHLO c.test", 250).await;
    assert!(ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"), "{ehlo}");
    let r = raw.cmd(&format!("AUTH PLAIN {}", alice().plain_response()), 235).await;
    assert_eq!(r.enhanced.as_deref(), Some("2.7.0"));
    // Once in, AUTH is out of sequence and EHLO stops offering it (RFC 4954 §4).
    raw.cmd(&format!("AUTH PLAIN {}", alice().plain_response()), 503).await;
    let ehlo = raw.cmd("EHLO c.test", 250).await;
    assert!(!ehlo.lines.iter().any(|l| l.starts_with("AUTH")), "{ehlo}");
    raw.cmd("MAIL FROM:<alice@x.test>", 250).await;
    raw.cmd("RCPT TO:<b@y.test>", 250).await;
    raw.cmd("DATA", 354).await;
    raw.cmd("Subject: t\r\n\r\nhi\r\n.", 250).await;

    // LOGIN through both prompts, and PLAIN without an initial response.
    let mut raw = srv.raw().await;
    raw.hello().await;
    let r = raw.cmd("AUTH LOGIN", 334).await;
    assert_eq!(r.lines, ["VXNlcm5hbWU6"]);
    let r = raw.cmd(&encode(b"alice"), 334).await;
    assert_eq!(r.lines, ["UGFzc3dvcmQ6"]);
    raw.cmd(&encode(b"pa ss:word"), 235).await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    raw.cmd("AUTH PLAIN", 334).await;
    raw.cmd(&alice().plain_response(), 235).await;

    let got = srv.policy.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].auth.as_deref(), Some("alice"));
    let s = srv.stats.snapshot();
    assert_eq!((s.auth_successes, s.auth_failures), (3, 0));
}

#[tokio::test]
async fn every_refusal_has_its_rfc_4954_reply() {
    let srv = server(AuthOffer::Offered, None, test_limits()).await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    let wrong = Credentials::parse("alice:guess").unwrap().plain_response();
    let r = raw.cmd(&format!("AUTH PLAIN {wrong}"), 535).await;
    assert_eq!(r.enhanced.as_deref(), Some("5.7.8"));
    raw.cmd("AUTH CRAM-MD5", 504).await;
    raw.cmd("AUTH PLAIN not-base64!", 501).await;
    raw.cmd("AUTH PLAIN", 334).await;
    raw.cmd("*", 501).await;
    raw.cmd("AUTH LOGIN", 334).await;
    raw.cmd(&encode(b"alice"), 334).await;
    raw.cmd("*", 501).await;
    // An over-long response line inside the exchange.
    raw.cmd("AUTH PLAIN", 334).await;
    raw.cmd(&"A".repeat(5000), 500).await;
    // Not inside a transaction.
    raw.cmd("MAIL FROM:<a@x.test>", 250).await;
    raw.cmd(&format!("AUTH PLAIN {}", alice().plain_response()), 503).await;
    raw.cmd("RSET", 250).await;
    // Still usable after all that: the right password works.
    raw.cmd(&format!("AUTH PLAIN {}", alice().plain_response()), 235).await;
    let s = srv.stats.snapshot();
    assert_eq!((s.auth_successes, s.auth_failures), (1, 5));
}

#[tokio::test]
async fn a_password_guesser_is_closed_by_the_error_limit() {
    let limits = Limits {
        max_errors: 3,
        ..test_limits()
    };
    let srv = server(AuthOffer::Offered, None, limits).await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    for guess in ["a", "b"] {
        let c = Credentials::parse(&format!("alice:{guess}")).unwrap();
        raw.cmd(&format!("AUTH PLAIN {}", c.plain_response()), 535).await;
    }
    let c = Credentials::parse("alice:c").unwrap();
    raw.cmd(&format!("AUTH PLAIN {}", c.plain_response()), 535).await;
    raw.expect(421).await;
    raw.expect_closed().await;
}

#[tokio::test]
async fn tls_only_auth_is_hidden_and_refused_in_the_clear_and_works_after_starttls() {
    let pki = Pki::new("t").unwrap();
    let c = pki.issue(&["127.0.0.1".into()], Validity::Current).unwrap();
    let offer = StartTls::Offer(server_config(c.chain, c.key).unwrap());
    let srv = server(AuthOffer::AfterTls, Some(offer), test_limits()).await;
    let mut raw = srv.raw().await;
    raw.expect(220).await;
    let ehlo = raw.cmd("EHLO c.test", 250).await;
    assert!(!ehlo.lines.iter().any(|l| l.starts_with("AUTH")), "{ehlo}");
    let r = raw.cmd(&format!("AUTH PLAIN {}", alice().plain_response()), 538).await;
    assert_eq!(r.enhanced.as_deref(), Some("5.7.11"));

    // Without TLS our client says why it cannot authenticate.
    let e = Client::connect(srv.addr, &client_cfg(ClientTls::Off, Some(alice())))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&e, ClientError::Auth(w) if w.contains("only after STARTTLS")),
        "{e}"
    );
    // With it, AUTH follows the second EHLO.
    let mut c = Client::connect(
        srv.addr,
        &client_cfg(ClientTls::Required(pki.client_config().unwrap()), Some(alice())),
    )
    .await
    .unwrap();
    let out = c
        .send("alice@x.test", &["b@y.test".into()], b"Subject: t\r\n\r\nhi\r\n")
        .await
        .unwrap();
    assert!(out.accepted());
    let got = srv.policy.received();
    assert_eq!((got[0].tls, got[0].auth.as_deref()), (true, Some("alice")));
}

#[tokio::test]
async fn our_client_reports_refused_credentials_and_a_server_without_auth() {
    let srv = server(AuthOffer::Offered, None, test_limits()).await;
    let bad = Credentials::parse("alice:nope").unwrap();
    let e = Client::connect(srv.addr, &client_cfg(ClientTls::Off, Some(bad)))
        .await
        .err()
        .unwrap();
    assert!(matches!(&e, ClientError::Auth(w) if w.contains("535")), "{e}");
    assert!(!e.to_string().contains("nope"), "the password stays out of errors: {e}");
    let plain = TestServer::default_server().await;
    let e = Client::connect(plain.addr, &client_cfg(ClientTls::Off, Some(alice())))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&e, ClientError::Auth(w) if w.contains("does not offer")),
        "{e}"
    );
}

/// A server that offers only LOGIN (some older MTAs): our client goes through its prompts.
#[tokio::test]
async fn our_client_uses_login_when_plain_is_not_offered() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(b"220 old.test ESMTP\r\n").await.unwrap();
        let mut seen = Vec::new();
        for reply in [
            "250-old.test\r\n250 AUTH LOGIN\r\n",
            "334 UGFzc3dvcmQ6\r\n",
            "235 2.7.0 ok\r\n",
        ] {
            seen.push(lines.next_line().await.unwrap().unwrap());
            w.write_all(reply.as_bytes()).await.unwrap();
        }
        seen
    });
    Client::connect(addr, &client_cfg(ClientTls::Off, Some(alice())))
        .await
        .unwrap();
    let seen = fake.await.unwrap();
    assert_eq!(seen[1], format!("AUTH LOGIN {}", encode(b"alice")));
    assert_eq!(seen[2], encode(b"pa ss:word"));
}
