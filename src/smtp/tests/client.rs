//! Client tests, against the real server and against a scripted fake server for behaviours
//! our server never shows (no PIPELINING, EHLO refused, silent or vanishing peers).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::support::*;
use crate::smtp::server::Decision;
use crate::smtp::{Client, ClientConfig, ClientError, Reply};

fn cfg() -> ClientConfig {
    ClientConfig {
        helo: "gen.test".into(),
        connect_timeout: WAIT,
        command_timeout: WAIT,
        data_timeout: WAIT,
        ..ClientConfig::default()
    }
}

fn rcpts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn hundred_messages_over_one_pipelined_connection() {
    let srv = TestServer::default_server().await;
    let mut c = Client::connect(srv.addr, &cfg()).await.unwrap();
    assert!(c.pipelining());
    assert_eq!(c.max_size(), Some(32 * 1024 * 1024));
    let to = rcpts(&["u@d.test"]);
    for i in 0..100 {
        let body = format!("Subject: {i}\r\n\r\n.\r\n..two dots\r\nend {i}\r\n");
        let out = c.send("s@g.test", &to, body.as_bytes()).await.unwrap();
        assert!(out.accepted(), "{}", out.final_reply());
        assert_eq!(out.rcpts.len(), 1);
    }
    assert!(c.is_usable());
    c.quit().await;
    let got = srv.policy.received();
    assert_eq!(got.len(), 100);
    assert_eq!(got[42].body, b"Subject: 42\r\n\r\n.\r\n..two dots\r\nend 42\r\n");
    // The client declared SIZE since the server advertises it.
    assert_eq!(got[0].env.size_hint, Some(got[0].body.len()));
    srv.eventually(|s| s.stats.snapshot().connections_active == 0).await;
    assert_eq!(srv.stats.snapshot().protocol_errors, 0);
}

#[tokio::test]
async fn one_of_two_recipients_rejected() {
    let policy = TestPolicy {
        rcpt_rules: vec![(
            "bad@d".into(),
            Decision::reply(Reply::new(550, Some("5.1.1"), "no such user")),
        )],
        ..TestPolicy::default()
    };
    let srv = TestServer::start(policy, test_limits()).await;
    let mut c = Client::connect(srv.addr, &cfg()).await.unwrap();
    let out = c.send("a@b", &rcpts(&["good@d", "bad@d"]), b"hi\r\n").await.unwrap();
    assert_eq!(out.rcpts.iter().map(|r| r.code).collect::<Vec<_>>(), vec![250, 550]);
    assert_eq!(out.data.as_ref().map(|r| r.code), Some(250));
    assert!(out.accepted());
    assert_eq!(srv.policy.received()[0].env.rcpts, vec!["good@d"]);

    // All refused: no DATA outcome, RSET sent, connection reusable.
    let out = c.send("a@b", &rcpts(&["bad@d", "bad@d"]), b"hi\r\n").await.unwrap();
    assert!(out.data.is_none());
    assert!(!out.accepted());
    assert_eq!(out.final_reply().code, 550);
    assert!(c.is_usable());
    let out = c.send("a@b", &rcpts(&["good@d"]), b"again\r\n").await.unwrap();
    assert!(out.accepted());
    assert_eq!(srv.policy.received().len(), 2);
}

#[tokio::test]
async fn refused_mail_is_the_final_reply() {
    let policy = TestPolicy {
        mail_nth: Some((1, Decision::reply(Reply::new(550, Some("5.7.1"), "sender blocked")))),
        ..TestPolicy::default()
    };
    let srv = TestServer::start(policy, test_limits()).await;
    let mut c = Client::connect(srv.addr, &cfg()).await.unwrap();
    let out = c.send("a@b", &rcpts(&["x@y", "z@y"]), b"hi\r\n").await.unwrap();
    assert_eq!(out.final_reply().code, 550);
    assert_eq!(out.rcpts.len(), 2);
    assert!(out.data.is_none());
    let out = c.send("a@b", &rcpts(&["x@y"]), b"hi\r\n").await.unwrap();
    assert!(out.accepted());
    // The 503s a pipelining client gets after a refused MAIL are not its errors.
    assert_eq!(srv.stats.snapshot().protocol_errors, 0);
}

#[tokio::test]
async fn a_421_mid_session_makes_the_client_unusable() {
    let policy = TestPolicy {
        mail_nth: Some((
            3,
            Decision::reply(Reply::new(421, Some("4.7.0"), "too busy")).then_close(),
        )),
        ..TestPolicy::default()
    };
    let srv = TestServer::start(policy, test_limits()).await;
    let mut c = Client::connect(srv.addr, &cfg()).await.unwrap();
    let to = rcpts(&["x@y", "z@y"]);
    for _ in 0..2 {
        assert!(c.send("a@b", &to, b"hi\r\n").await.unwrap().accepted());
    }
    let out = c.send("a@b", &to, b"hi\r\n").await.unwrap();
    assert_eq!(out.mail.code, 421);
    assert_eq!(out.rcpts.len(), 2);
    assert!(!out.accepted());
    assert!(!c.is_usable());
    assert!(matches!(
        c.send("a@b", &to, b"hi\r\n").await,
        Err(ClientError::Closed { .. })
    ));
}

#[tokio::test]
async fn source_ip_is_the_peer_address_on_the_server() {
    let srv = TestServer::default_server().await;
    let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut c = Client::connect(
        srv.addr,
        &ClientConfig {
            source_ip: Some(src),
            ..cfg()
        },
    )
    .await
    .unwrap();
    assert_eq!(c.local_addr().ip(), src);
    assert_eq!(c.peer_addr(), srv.addr);
    assert!(c.send("a@b", &rcpts(&["x@y"]), b"hi\r\n").await.unwrap().accepted());
    assert_eq!(srv.policy.received()[0].peer.ip(), src);
    assert_eq!(srv.policy.peers.lock().unwrap()[0], src);
}

#[tokio::test]
async fn connect_failures_are_connect_errors() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let e = Client::connect(addr, &cfg()).await.err().unwrap();
    assert!(e.is_connect(), "{e}");
}

// --- scripted fake server -----------------------------------------------------------------------

/// Serves one connection: sends `greeting`, then answers each command line with
/// `answer(line)` (`None` closes the connection). Between DATA's 354 and the final dot, lines
/// are collected, not answered. Returns everything received and whether the client ever
/// sent a command before the previous one was answered.
async fn scripted(
    greeting: &'static str,
    answer: fn(&str) -> Option<&'static str>,
) -> (SocketAddr, JoinHandle<(String, bool)>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut seen = String::new();
        let mut pipelined = false;
        if greeting.is_empty() {
            tokio::time::sleep(WAIT).await;
            return (seen, pipelined);
        }
        w.write_all(greeting.as_bytes()).await.unwrap();
        let mut in_data = false;
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                break;
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            seen.push_str(&line);
            if in_data {
                if line != ".\r\n" {
                    continue;
                }
            } else if !r.buffer().is_empty() {
                pipelined = true;
            }
            match answer(line.trim_end()) {
                Some(reply) => {
                    in_data = reply.starts_with("354");
                    w.write_all(reply.as_bytes()).await.unwrap();
                }
                None => break,
            }
        }
        (seen, pipelined)
    });
    (addr, task)
}

fn old_server(line: &str) -> Option<&'static str> {
    Some(match line.split(' ').next().unwrap_or("") {
        "EHLO" => "502 5.5.2 Error: command not recognized\r\n",
        "HELO" => "250 old.test\r\n",
        "MAIL" | "RSET" => "250 ok\r\n",
        "RCPT" if line.contains("bad") => "550 no\r\n",
        "RCPT" => "250 ok\r\n",
        "DATA" => "354 go\r\n",
        "." => "250 queued\r\n",
        "QUIT" => "221 bye\r\n",
        _ => "500 what\r\n",
    })
}

#[tokio::test]
async fn helo_fallback_and_lockstep_without_pipelining() {
    let (addr, task) = scripted("220 old.test ESMTP\r\n", old_server).await;
    let mut c = Client::connect(addr, &cfg()).await.unwrap();
    assert!(!c.pipelining());
    let out = c
        .send("a@b", &rcpts(&["x@y", "bad@y"]), b".hidden\r\nok")
        .await
        .unwrap();
    assert!(out.accepted());
    assert_eq!(out.rcpts[1].code, 550);
    let out = c.send("a@b", &rcpts(&["bad@y"]), b"x\r\n").await.unwrap();
    assert!(out.data.is_none() && !out.accepted());
    c.quit().await;
    let (seen, pipelined) = task.await.unwrap();
    assert!(!pipelined, "client pipelined without PIPELINING:\n{seen}");
    assert_eq!(
        seen,
        "EHLO gen.test\r\nHELO gen.test\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\n\
         RCPT TO:<bad@y>\r\nDATA\r\n..hidden\r\nok\r\n.\r\n\
         MAIL FROM:<a@b>\r\nRCPT TO:<bad@y>\r\nRSET\r\nQUIT\r\n"
    );
}

#[tokio::test]
async fn three_digit_enhanced_codes_survive() {
    fn outlook(line: &str) -> Option<&'static str> {
        if line.starts_with("RCPT") {
            return Some("550 5.7.708 Service unavailable. Access denied\r\n");
        }
        old_server(line)
    }
    let (addr, _task) = scripted("220 x\r\n", outlook).await;
    let mut c = Client::connect(addr, &cfg()).await.unwrap();
    let out = c.send("a@b", &rcpts(&["x@y"]), b"x\r\n").await.unwrap();
    let r = out.final_reply();
    assert_eq!((r.code, r.enhanced.as_deref()), (550, Some("5.7.708")));
    assert_eq!(r.text(), "Service unavailable. Access denied");
    // The next reply (to RSET) parses normally after the re-read.
    assert!(c.is_usable());
}

#[tokio::test]
async fn negative_greeting_is_a_greeting_error() {
    let (addr, _task) = scripted("554 5.7.1 go away\r\n", old_server).await;
    match Client::connect(addr, &cfg()).await {
        Err(ClientError::Greeting(r)) => assert_eq!((r.code, r.text()), (554, "go away".into())),
        other => panic!("unexpected {:?}", other.err()),
    }
}

#[tokio::test]
async fn silent_server_times_out() {
    let (addr, _task) = scripted("", old_server).await;
    let c = ClientConfig {
        command_timeout: Duration::from_millis(100),
        ..cfg()
    };
    let e = Client::connect(addr, &c).await.err().unwrap();
    assert!(matches!(e, ClientError::Timeout { phase: "greeting" }), "{e}");
    assert!(!e.is_connect());
}

#[tokio::test]
async fn server_vanishing_mid_transaction_is_closed() {
    fn vanish_on_rcpt(line: &str) -> Option<&'static str> {
        if line.starts_with("RCPT") {
            None
        } else {
            old_server(line)
        }
    }
    let (addr, _task) = scripted("220 x\r\n", vanish_on_rcpt).await;
    let mut c = Client::connect(addr, &cfg()).await.unwrap();
    let e = c.send("a@b", &rcpts(&["x@y"]), b"x\r\n").await.err().unwrap();
    assert!(
        matches!(e, ClientError::Closed { phase: "rcpt" } | ClientError::Io { .. }),
        "{e}"
    );
    assert!(!c.is_usable());
}

#[tokio::test]
async fn injection_in_arguments_is_refused_locally() {
    let srv = TestServer::default_server().await;
    let mut c = Client::connect(srv.addr, &cfg()).await.unwrap();
    let e = c.send("a@b>\r\nRSET", &rcpts(&["x@y"]), b"x").await.err().unwrap();
    assert!(matches!(e, ClientError::Protocol { phase: "mail", .. }), "{e}");
    // Refused before anything was sent, so the connection is still fine.
    assert!(c.is_usable());
    assert!(c.send("a@b", &rcpts(&["x@y"]), b"x").await.unwrap().accepted());
}
