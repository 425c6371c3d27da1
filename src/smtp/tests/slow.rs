//! Slow and greedy clients (issue: connection exhaustion): deadlines that bytes do not push
//! back, and connection slots kept for clients that hold none.
//!
//! The deadline tests run on tokio's paused clock (see `server.rs`): the client's trickle and
//! the server's deadlines are tokio timers in one runtime, so time advances by exactly the
//! trickle's pauses and the deadline under test fires at its virtual instant, whatever the
//! load. The bounds can then sit between the line deadline (400 ms) and the progress deadline
//! (1.5 s) that would otherwise cut the session, which is what tells the two apart.

use std::time::Duration;

use tokio::time::Instant;

use super::support::*;
use crate::smtp::Limits;

fn slow_limits() -> Limits {
    Limits {
        line_timeout: Duration::from_millis(400),
        progress_timeout: Duration::from_millis(1500),
        data_total_timeout: Duration::from_millis(400),
        min_data_rate: 1 << 30,
        ..test_limits()
    }
}

/// A trickle of bytes that would reset an idle timer forever; stops when the server speaks.
async fn trickle(raw: &mut Raw, bytes: &[u8], every: Duration) -> Option<crate::smtp::Reply> {
    for b in bytes {
        if raw.stream.try_write(&[*b]).is_err() {
            break;
        }
        if tokio::time::timeout(every, raw.stream.readable()).await.is_ok() {
            break;
        }
    }
    raw.try_reply().await
}

/// Guards the line deadline: a command line trickled a byte per 50 ms is cut 400 ms after it
/// began, even though each byte would reset an idle timer. Cut by the progress deadline
/// (1.5 s) instead, or not at all (the 31 bytes end at 1.55 s), it fails the bound. The
/// wall-clock version needed the 421 inside 1.4 s under load; paused, it comes at 400 ms.
#[tokio::test(start_paused = true)]
async fn a_command_line_trickled_byte_by_byte_times_out() {
    let srv = TestServer::start(TestPolicy::default(), slow_limits()).await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    let t = Instant::now();
    let r = trickle(
        &mut raw,
        b"NOOP and then some more bytes\r\n",
        Duration::from_millis(50),
    )
    .await;
    let r = r.expect("a 421 before the close");
    assert_eq!((r.code, r.enhanced.as_deref()), (421, Some("4.4.2")), "{r}");
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(1400)).contains(&t.elapsed()),
        "cut at the line deadline: {:?}",
        t.elapsed()
    );
    raw.expect_closed().await;
}

/// Guards the total DATA deadline (400 ms) against a body trickled a byte per 50 ms (2 s in
/// all). Paused like the others so the trickle's pace is exact under load.
#[tokio::test(start_paused = true)]
async fn data_trickled_times_out() {
    let srv = TestServer::start(TestPolicy::default(), slow_limits()).await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    raw.cmd("MAIL FROM:<a@b.test>", 250).await;
    raw.cmd("RCPT TO:<c@d.test>", 250).await;
    raw.cmd("DATA", 354).await;
    let r = trickle(&mut raw, &[b'x'; 40], Duration::from_millis(50)).await;
    assert_eq!(r.map(|r| r.code), Some(421));
    assert!(srv.policy.received().is_empty());
}

/// Guards the progress deadline (1.5 s): NOOPs every 100 ms keep a session busy but deliver
/// nothing, so it is closed with 421. The 5 s bound is the "never closed" case; paused, the
/// close comes at 1.5 s of virtual time, however slow the round trips are in real time.
#[tokio::test(start_paused = true)]
async fn a_session_that_only_keeps_alive_is_closed() {
    let srv = TestServer::start(TestPolicy::default(), slow_limits()).await;
    let mut raw = srv.raw().await;
    raw.hello().await;
    let t = Instant::now();
    let closed_by = loop {
        raw.send("NOOP\r\n").await;
        let r = raw.reply().await;
        if r.code != 250 {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(closed_by.code, 421, "{closed_by}");
}

#[tokio::test]
async fn a_busy_client_cannot_take_the_last_slots() {
    let limits = Limits {
        max_connections: 16,
        reserved_connections: 4,
        ..test_limits()
    };
    let srv = TestServer::start(TestPolicy::default(), limits).await;
    let greedy: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let mut held = Vec::new();
    // 16 slots, an eighth (2) kept back: the greedy client gets 14.
    for _ in 0..14 {
        let mut c = Raw::connect_from(srv.addr, greedy).await;
        c.expect(220).await;
        held.push(c);
    }
    let mut more = Raw::connect_from(srv.addr, greedy).await;
    let r = more.expect(421).await;
    assert!(r.to_string().contains("kept for other clients"), "{r}");
    // Another host still gets in.
    let mut other = Raw::connect_from(srv.addr, "127.0.0.7".parse().unwrap()).await;
    other.hello().await;
}
