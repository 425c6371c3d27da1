//! Server tests over real loopback sockets: raw bytes in, exact reply codes out.
//!
//! Tests about timeouts and delays run on tokio's paused clock (`start_paused = true`): the
//! server is in-process and its deadlines are `tokio::time` timers, so time moves only when
//! the runtime is idle, straight to the next timer. Loopback I/O between tasks of the one
//! runtime never leaves it idle with a reply in flight (see `Raw::new` in `support.rs`), so
//! what a test measures is the server's own waiting, never the machine's load.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::codec::Rng;
use super::support::*;
use crate::smtp::server::{Decision, Limits};
use crate::smtp::Reply;

async fn envelope(raw: &mut Raw) {
    raw.cmd("MAIL FROM:<a@b.test>", 250).await;
    raw.cmd("RCPT TO:<c@d.test>", 250).await;
    raw.cmd("DATA", 354).await;
}

#[tokio::test]
async fn happy_path() {
    let srv = TestServer::default_server().await;
    let mut raw = srv.raw().await;
    let greeting = raw.expect(220).await;
    assert_eq!(greeting.text(), "mx.test ESMTP mailsurge");
    let ehlo = raw.cmd("EHLO client.test", 250).await;
    assert_eq!(
        ehlo.lines,
        vec![
            "mx.test",
            "PIPELINING",
            "SIZE 33554432",
            "8BITMIME",
            "ENHANCEDSTATUSCODES"
        ]
    );
    envelope(&mut raw).await;
    raw.send("Subject: hi\r\n\r\n..leading dot\r\nend\r\n.\r\n").await;
    let r = raw.expect(250).await;
    assert_eq!(r.enhanced.as_deref(), Some("2.0.0"));
    raw.cmd("QUIT", 221).await;
    raw.expect_closed().await;
    drop(raw);

    let got = srv.policy.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].env.from, "a@b.test");
    assert_eq!(got[0].env.rcpts, vec!["c@d.test"]);
    assert_eq!(got[0].body, b"Subject: hi\r\n\r\n.leading dot\r\nend\r\n");
    srv.eventually(|s| s.policy.disconnects.load(Ordering::SeqCst) == 1)
        .await;
    let st = srv.stats.snapshot();
    assert_eq!((st.connections_total, st.transactions, st.protocol_errors), (1, 1, 0));
    assert_eq!(st.connections_active, 0);
}

#[tokio::test]
async fn pipelined_group_in_one_write() {
    let srv = TestServer::default_server().await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    raw.send("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nRCPT TO:<z@y>\r\nDATA\r\n")
        .await;
    for code in [250, 250, 250, 354] {
        raw.expect(code).await;
    }
    // Body, next transaction's commands and QUIT all in one write.
    raw.send("one\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<x@y>\r\nDATA\r\n").await;
    for code in [250, 250, 250, 354] {
        raw.expect(code).await;
    }
    raw.send("two\r\n.\r\nQUIT\r\n").await;
    raw.expect(250).await;
    raw.expect(221).await;
    let got = srv.policy.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].env.rcpts, vec!["x@y", "z@y"]);
    assert_eq!(got[1].env.from, "");
    assert_eq!(got[1].body, b"two\r\n");
}

#[tokio::test]
async fn rejection_after_data_leaves_a_usable_session() {
    let policy = TestPolicy::default();
    policy.message_replies.lock().unwrap().extend([
        Decision::reply(Reply::new(451, Some("4.3.0"), "try later")),
        Decision::reply(Reply::new(554, Some("5.7.1"), "spam")),
    ]);
    let srv = TestServer::start(policy, test_limits()).await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    envelope(&mut raw).await;
    raw.send("x\r\n.\r\n").await;
    raw.expect(451).await;
    raw.cmd("RSET", 250).await;
    // The transaction ended with the rejection: RCPT now needs a new MAIL.
    raw.cmd("RCPT TO:<c@d.test>", 503).await;
    envelope(&mut raw).await;
    raw.send("y\r\n.\r\n").await;
    raw.expect(554).await;
    raw.cmd("NOOP", 250).await;
    envelope(&mut raw).await;
    raw.send("z\r\n.\r\n").await;
    raw.expect(250).await;
    raw.cmd("QUIT", 221).await;
    assert_eq!(srv.stats.snapshot().transactions, 3);
}

#[tokio::test]
async fn null_sender_and_size_parameter() {
    let limits = Limits {
        max_message_size: 1000,
        ..test_limits()
    };
    let srv = TestServer::start(TestPolicy::default(), limits).await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    let r = raw.cmd("MAIL FROM:<a@b> SIZE=1001", 552).await;
    assert_eq!(r.enhanced.as_deref(), Some("5.3.4"));
    raw.cmd("MAIL FROM:<> SIZE=1000", 250).await;
    raw.cmd("RCPT TO:<c@d>", 250).await;
    raw.cmd("DATA", 354).await;
    raw.send("bounce\r\n.\r\n").await;
    raw.expect(250).await;
    let got = srv.policy.received();
    assert_eq!((got[0].env.from.as_str(), got[0].env.size_hint), ("", Some(1000)));
    // A body over the limit is read to the end, then refused; the session goes on.
    raw.cmd("MAIL FROM:<a@b>", 250).await;
    raw.cmd("RCPT TO:<c@d>", 250).await;
    raw.cmd("DATA", 354).await;
    raw.send(format!("{}\r\n.\r\n", "x".repeat(2000))).await;
    raw.expect(552).await;
    raw.cmd("NOOP", 250).await;
    assert_eq!(srv.stats.snapshot().oversize, 2);
}

#[tokio::test]
async fn close_at_connect() {
    let policy = TestPolicy {
        connect: Some(Decision::reply(Reply::new(554, Some("5.7.1"), "Client host blocked")).then_close()),
        ..TestPolicy::default()
    };
    let srv = TestServer::start(policy, test_limits()).await;
    let mut raw = srv.raw().await;
    let r = raw.expect(554).await;
    assert_eq!(r.text(), "Client host blocked");
    raw.expect_closed().await;
}

#[tokio::test]
async fn a_policy_greeting_is_sent_as_written() {
    let policy = TestPolicy {
        connect: Some(Decision::reply(Reply::new(220, None, "other.host ESMTP ready"))),
        ..TestPolicy::default()
    };
    let srv = TestServer::start(policy, test_limits()).await;
    let mut raw = srv.raw().await;
    raw.expect(220).await;
    assert_eq!(raw.wire, b"220 other.host ESMTP ready\r\n");
}

#[tokio::test]
async fn negative_greeting_without_close_serves_only_quit() {
    let policy = TestPolicy {
        connect: Some(Decision::reply(Reply::new(554, None, "No SMTP service"))),
        ..TestPolicy::default()
    };
    let srv = TestServer::start(policy, test_limits()).await;
    let mut raw = srv.raw().await;
    raw.expect(554).await;
    raw.cmd("EHLO x", 503).await;
    raw.cmd("QUIT", 221).await;
}

#[tokio::test]
async fn multi_line_policy_reply_on_the_wire() {
    let policy = TestPolicy {
        rcpt_rules: vec![(
            "bad@d".into(),
            Decision::reply(Reply::parse_spec("550 5.1.1 no such user\nreally").unwrap()),
        )],
        ..TestPolicy::default()
    };
    let srv = TestServer::start(policy, test_limits()).await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    raw.cmd("MAIL FROM:<a@b>", 250).await;
    let before = raw.wire.len();
    raw.cmd("RCPT TO:<bad@d>", 550).await;
    assert_eq!(&raw.wire[before..], b"550-5.1.1 no such user\r\n550 5.1.1 really\r\n");
    // No accepted recipient: DATA is refused with 554.
    raw.cmd("DATA", 554).await;
}

#[tokio::test]
async fn long_command_line_is_refused_and_the_session_continues() {
    let srv = TestServer::default_server().await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    let r = raw.cmd(&format!("NOOP {}", "a".repeat(5000)), 500).await;
    assert_eq!(r.enhanced.as_deref(), Some("5.5.2"));
    // Again, arriving in pieces.
    raw.send("MAIL FROM:<").await;
    raw.send("b".repeat(3000)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    raw.send(format!("{}@x>\r\nNOOP\r\n", "c".repeat(3000))).await;
    raw.expect(500).await;
    raw.expect(250).await;
    raw.cmd("MAIL FROM:<a@b>", 250).await;
    assert_eq!(srv.stats.snapshot().too_long_lines, 2);
}

#[tokio::test]
async fn bad_sequences_get_503_and_unknown_commands_500() {
    let srv = TestServer::default_server().await;
    let mut raw = srv.raw().await;
    raw.expect(220).await;
    raw.cmd("MAIL FROM:<a@b>", 503).await;
    let helo = raw.cmd("HELO x", 250).await;
    assert_eq!(helo.lines, vec!["mx.test"]);
    raw.cmd("RCPT TO:<a@b>", 503).await;
    raw.cmd("DATA", 503).await;
    raw.cmd("MAIL FROM:<a@b>", 250).await;
    raw.cmd("MAIL FROM:<a@b>", 503).await;
    raw.cmd("DATA", 554).await;
    let r = raw.cmd("XYZZY", 500).await;
    assert_eq!(r.enhanced.as_deref(), Some("5.5.1"));
    raw.cmd("STARTTLS", 502).await;
    raw.cmd("AUTH PLAIN AGEAYg==", 502).await;
    raw.cmd("BDAT 10 LAST", 502).await;
    raw.cmd("VRFY bob", 252).await;
    raw.cmd("HELP", 214).await;
    raw.cmd("MAIL FROM:<a@b> XFOO=1", 555).await;
    raw.cmd("RCPT TO:<>", 501).await;
    raw.cmd("QUIT", 221).await;
}

#[tokio::test]
async fn too_many_errors_closes_with_421() {
    let limits = Limits {
        max_errors: 3,
        ..test_limits()
    };
    let srv = TestServer::start(TestPolicy::default(), limits).await;
    let mut raw = srv.raw().await;
    raw.expect(220).await;
    raw.send("A\r\nB\r\nC\r\nD\r\n").await;
    for code in [500, 500, 500, 421] {
        raw.expect(code).await;
    }
    raw.expect_closed().await;
}

#[tokio::test]
async fn delivering_mail_forgives_earlier_errors() {
    let limits = Limits {
        max_errors: 3,
        ..test_limits()
    };
    let srv = TestServer::start(TestPolicy::default(), limits).await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    raw.send("A\r\nB\r\n").await;
    raw.expect(500).await;
    raw.expect(500).await;
    envelope(&mut raw).await;
    raw.send("x\r\n.\r\nC\r\nD\r\n").await;
    for code in [250, 500, 500] {
        raw.expect(code).await;
    }
    raw.cmd("QUIT", 221).await;
}

#[tokio::test]
async fn too_many_connections_get_421() {
    let limits = Limits {
        max_connections: 2,
        ..test_limits()
    };
    let srv = TestServer::start(TestPolicy::default(), limits).await;
    let mut a = srv.raw().await;
    a.expect(220).await;
    let mut b = srv.raw().await;
    b.expect(220).await;
    let mut c = srv.raw().await;
    let r = c.expect(421).await;
    assert_eq!(r.text(), "Too many connections");
    c.expect_closed().await;
    assert_eq!(srv.policy.peers.lock().unwrap().len(), 2, "policy not called");
    a.cmd("QUIT", 221).await;
    a.expect_closed().await;
    drop(a);
    srv.eventually(|s| s.stats.snapshot().connections_active == 1).await;
    let mut d = srv.raw().await;
    d.expect(220).await;
    assert_eq!(srv.stats.snapshot().connections_refused_limit, 1);
}

#[tokio::test]
async fn too_many_connections_from_one_ip_get_421_while_others_pass() {
    let limits = Limits {
        max_connections_per_ip: 2,
        ..test_limits()
    };
    let srv = TestServer::start(TestPolicy::default(), limits).await;
    let mut a = srv.raw().await;
    a.expect(220).await;
    let mut b = srv.raw().await;
    b.expect(220).await;
    let mut c = srv.raw().await;
    let r = c.expect(421).await;
    assert_eq!(r.text(), "Too many connections from your host");
    c.expect_closed().await;
    let mut other = Raw::connect_from(srv.addr, "127.0.0.9".parse().unwrap()).await;
    other.expect(220).await;
    a.cmd("QUIT", 221).await;
    a.expect_closed().await;
    drop(a);
    srv.eventually(|s| s.stats.snapshot().connections_active == 2).await;
    let mut d = srv.raw().await;
    d.expect(220).await;
}

/// Guards the command (idle) timeout: a client silent after EHLO gets 421 and a close once
/// `command_timeout` has passed, and not before. On the wall clock, 150 ms also had to cover
/// the greeting and the EHLO round trip (the timer restarts per command), which a loaded box
/// does not promise. Paused, those take no time and the timeout fires when the runtime goes
/// idle; if it never fired, the client's 5 s read (`WAIT`) would expire first and fail the
/// test, and the elapsed check catches a timer set to the wrong length.
#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_with_421() {
    let timeout = Duration::from_millis(150);
    let limits = Limits {
        command_timeout: timeout,
        ..test_limits()
    };
    let srv = TestServer::start(TestPolicy::default(), limits).await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    let idle = Instant::now();
    let r = raw.expect(421).await;
    // Paused time is exact; tokio only rounds a timer up to its 1 ms tick.
    assert!(
        (timeout..timeout + Duration::from_millis(10)).contains(&idle.elapsed()),
        "421 after {:?} of silence, want {timeout:?}",
        idle.elapsed()
    );
    assert_eq!(r.text(), "mx.test Error: timeout exceeded");
    raw.expect_closed().await;
    assert_eq!(srv.stats.snapshot().timeouts, 1);
}

/// Guards that shutdown tells idle sessions 421 at once and `serve` returns, rather than
/// waiting out `SHUTDOWN_GRACE` (10 s) or a linger timer (2 s). Paused, nothing here takes
/// any time unless the server waits on a timer, so the 1 s bound measures only that.
#[tokio::test(start_paused = true)]
async fn shutdown_ends_serve_and_idle_sessions() {
    let srv = TestServer::default_server().await;
    let addr = srv.addr;
    let mut raw = srv.raw().await;
    raw.hello().await;
    let started = Instant::now();
    let stopping = tokio::spawn(srv.shutdown());
    let r = raw.expect(421).await;
    assert_eq!(r.enhanced.as_deref(), Some("4.3.2"));
    raw.expect_closed().await;
    drop(raw);
    stopping.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_lets_a_message_upload_finish() {
    let srv = TestServer::default_server().await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    envelope(&mut raw).await;
    raw.send("part one\r\n").await;
    let policy = std::sync::Arc::clone(&srv.policy);
    let stopping = tokio::spawn(srv.shutdown());
    tokio::time::sleep(Duration::from_millis(50)).await;
    raw.send("part two\r\n.\r\n").await;
    raw.expect(250).await;
    raw.expect(421).await;
    drop(raw);
    stopping.await.unwrap().unwrap();
    assert_eq!(policy.received()[0].body, b"part one\r\npart two\r\n");
}

#[tokio::test]
async fn smuggling_attempt_is_one_rejected_message() {
    let srv = TestServer::default_server().await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    envelope(&mut raw).await;
    raw.send("Subject: a\r\n\r\nhi\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nforged\r\n.\r\nNOOP\r\n")
        .await;
    let r = raw.expect(554).await;
    assert!(r.text().contains("bare <LF>"), "{r}");
    raw.expect(250).await;
    assert!(srv.policy.received().is_empty());
    assert_eq!(srv.stats.snapshot().bare_lf_rejected, 1);
}

/// Guards that a reply already due (NOOP) is written before the server sleeps on a delayed
/// decision (MAIL, 400 ms), not held back with it. The wall-clock version needed the NOOP
/// round trip inside 300 ms. Paused, it takes no time at all if flushed first, and exactly
/// the 400 ms delay if held back, so the 300 ms bound still separates the two.
#[tokio::test(start_paused = true)]
async fn replies_before_a_delay_are_flushed_first() {
    let policy = TestPolicy {
        mail: Some(Decision::ok().with_delay(Duration::from_millis(400))),
        ..TestPolicy::default()
    };
    let srv = TestServer::start(policy, test_limits()).await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    let t0 = Instant::now();
    raw.send("NOOP\r\nMAIL FROM:<a@b>\r\n").await;
    raw.expect(250).await;
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "NOOP reply held back: {:?}",
        t0.elapsed()
    );
    raw.expect(250).await;
    assert!(t0.elapsed() >= Duration::from_millis(400), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn close_decision_after_data() {
    let policy = TestPolicy::default();
    policy
        .message_replies
        .lock()
        .unwrap()
        .push_back(Decision::reply(Reply::new(421, Some("4.3.2"), "bye now")).then_close());
    let srv = TestServer::start(policy, test_limits()).await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    envelope(&mut raw).await;
    // Pipelined junk after the dot must not turn the 421 into a reset.
    raw.send("x\r\n.\r\nNOOP\r\nNOOP\r\n").await;
    raw.expect(421).await;
    raw.expect_closed().await;
}

#[tokio::test]
async fn garbage_never_kills_the_server() {
    let limits = Limits {
        max_errors: 1000,
        ..test_limits()
    };
    let srv = TestServer::start(TestPolicy::default(), limits).await;
    let mut rng = Rng::new(5);
    for round in 0..20 {
        let mut raw = srv.raw().await;
        raw.expect(220).await;
        let mut junk = Vec::new();
        for _ in 0..2000 {
            junk.push(match rng.below(10) {
                0 => b'\n',
                1 => b'\r',
                2 => b'.',
                _ => rng.next() as u8,
            });
        }
        if round % 2 == 0 {
            junk.splice(0..0, b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n".to_vec());
        }
        // The server may answer and hang up mid-junk (a protocol error closes the session);
        // a reset or broken pipe is fine, any other write error is not.
        match raw.stream.try_write(&junk) {
            Ok(_) => {}
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionReset
                ),
                "writing junk: {e}"
            ),
        }
        drop(raw);
    }
    let mut raw = srv.raw().await;
    raw.hello().await;
    raw.cmd("QUIT", 221).await;
    drop(raw);
    srv.eventually(|s| s.stats.snapshot().connections_active == 0).await;
}

/// A SIZE too large for any number is over the limit (552), never read as "no SIZE".
#[tokio::test]
async fn overflowing_size_is_refused() {
    let srv = TestServer::default_server().await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    let r = raw.cmd("MAIL FROM:<a@b> SIZE=99999999999999999999999999", 552).await;
    assert_eq!(r.enhanced.as_deref(), Some("5.3.4"));
    raw.cmd("MAIL FROM:<a@b> SIZE=1000", 250).await;
}

/// Non-ASCII paths are refused the same way at MAIL and RCPT, valid UTF-8 or not: SMTPUTF8 is
/// not offered (553 5.6.7), and nothing is relayed.
#[tokio::test]
async fn non_ascii_paths_are_refused_alike() {
    let srv = TestServer::default_server().await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    for mail in [
        &b"MAIL FROM:<\xff\xfe@x.test>\r\n"[..],
        "MAIL FROM:<jos\u{e9}@x.test>\r\n".as_bytes(),
    ] {
        raw.send(mail).await;
        let r = raw.reply().await;
        assert_eq!((r.code, r.enhanced.as_deref()), (553, Some("5.6.7")), "{mail:?}");
    }
    raw.cmd("MAIL FROM:<a@x.test>", 250).await;
    for rcpt in [
        &b"RCPT TO:<\xc3\x28@x.test>\r\n"[..],
        "RCPT TO:<jos\u{e9}@x.test>\r\n".as_bytes(),
    ] {
        raw.send(rcpt).await;
        let r = raw.reply().await;
        assert_eq!((r.code, r.enhanced.as_deref()), (553, Some("5.6.7")), "{rcpt:?}");
    }
    raw.cmd("RCPT TO:<b@x.test>", 250).await;
    raw.cmd("DATA", 354).await;
    raw.send("hi\r\n.\r\n").await;
    raw.expect(250).await;
    let got = srv.policy.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].env.rcpts, vec!["b@x.test".to_string()]);
}
