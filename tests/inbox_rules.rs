//! Each kind of mock-inbox rule over real loopback sockets: rate limits, concurrency limits,
//! greylisting, seeded probabilities, messages per connection, size/HELO/time-window matches,
//! misbehaviours (tarpit, blackhole, reset, disconnect) and runtime overlays.
//!
//! Tests whose subject is time (rates, greylisting, windows, delays) run on tokio's paused
//! clock (`start_paused = true`): the server is in-process and every rule and limit reads
//! `tokio::time::Instant`, so time only moves when the runtime is idle and jumps to the next
//! timer. A burst is then instantaneous however loaded the machine, a delay shows as exactly
//! its length, and a missing delay as none. Real loopback sockets are fine on that clock:
//! client and server share the one current-thread runtime, loopback delivers a write to the
//! peer's socket before `write` returns, and the client sets `TCP_NODELAY` (the server
//! already does) so no byte waits for a kernel delayed-ACK timer the paused clock cannot see —
//! the runtime is never idle while a reply is in flight, so time cannot skip past it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mailsurge::config::Source;
use mailsurge::inbox::{Inbox, Overlay, Receipt, RuleSet};
use mailsurge::smtp::{self, Reply, ServerStats};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

struct Server {
    addr: SocketAddr,
    inbox: Arc<Inbox>,
    _stop: watch::Sender<bool>,
    _receipts: mpsc::UnboundedReceiver<Receipt>,
}

async fn start(rules: &str, seed: u64, pools: &[(&str, &[&str])]) -> Server {
    let src = Source {
        name: "test.yaml".into(),
        text: format!("provider: test\nrules:\n{rules}"),
        dir: None,
    };
    let rules = RuleSet::from_source(&src).unwrap_or_else(|e| panic!("{e}"));
    let pools: BTreeMap<String, Vec<IpAddr>> = pools
        .iter()
        .map(|(n, ips)| (n.to_string(), ips.iter().map(|i| i.parse().unwrap()).collect()))
        .collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let inbox = Arc::new(Inbox::new("test", rules, pools, seed, tx));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stop_rx) = watch::channel(false);
    let policy = inbox.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        smtp::serve(
            listener,
            policy,
            mailsurge::inbox::limits("test"),
            Arc::new(ServerStats::default()),
            shutdown,
        )
        .await
    });
    Server {
        addr,
        inbox,
        _stop: stop,
        _receipts: rx,
    }
}

/// A raw SMTP client bound to a chosen loopback source address.
struct C {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

/// What reading a reply produced.
#[derive(Debug, PartialEq)]
enum Got {
    Reply(u16, String),
    Eof,
    Reset,
    Nothing,
}

impl C {
    async fn connect(addr: SocketAddr, from: &str) -> C {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
        let stream = s.connect(addr).await.unwrap();
        // No Nagle: a write must not wait for an ACK on a kernel timer (see the module doc).
        stream.set_nodelay(true).unwrap();
        let (r, w) = stream.into_split();
        C {
            r: BufReader::new(r),
            w,
        }
    }

    async fn read(&mut self, within: Duration) -> Got {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            match tokio::time::timeout(within, self.r.read_line(&mut line)).await {
                Err(_) => return Got::Nothing,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return Got::Reset,
                Ok(Err(e)) => panic!("read: {e}"),
                Ok(Ok(0)) => return Got::Eof,
                Ok(Ok(_)) => {}
            }
            text.push_str(line.trim_end());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Got::Reply(line[..3].parse().unwrap(), text);
            }
            text.push('\n');
        }
    }

    async fn code(&mut self) -> u16 {
        match self.read(Duration::from_secs(5)).await {
            Got::Reply(c, _) => c,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    async fn cmd(&mut self, line: &str) -> u16 {
        self.w.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        self.code().await
    }

    /// Greeting + EHLO.
    async fn hello(addr: SocketAddr, from: &str) -> C {
        let mut c = C::connect(addr, from).await;
        assert_eq!(c.code().await, 220);
        assert_eq!(c.cmd("EHLO client.test").await, 250);
        c
    }
}

/// Guards the GCRA limit: a burst of 3 passes, the 4th is refused and closed, other IPs have
/// their own bucket, and a token comes back after 1/rate. At 2/s with a burst of 3 the 4th
/// MAIL is refused only if it comes within 500 ms of the 1st, which on the wall clock a loaded
/// box need not manage (seven round trips); on the paused clock the burst takes no time at
/// all, and the 600 ms sleep moves time by exactly that — past the 500 ms a token takes.
#[tokio::test(start_paused = true)]
async fn rate_limit_bursts_then_421_and_close_while_other_ips_pass() {
    let s = start(
        "  - { stage: mail, limit: { per: source_ip, rate: 2/s, burst: 3 }, reply: \"421 4.7.0 [TSS04] Messages from {ip} temporarily deferred due to unexpected volume\", then: close }\n",
        1,
        &[],
    )
    .await;
    let mut a = C::hello(s.addr, "127.0.0.2").await;
    let burst = Instant::now();
    for _ in 0..3 {
        assert_eq!(a.cmd("MAIL FROM:<a@x.test>").await, 250);
        assert_eq!(a.cmd("RSET").await, 250);
    }
    assert_eq!(burst.elapsed(), Duration::ZERO, "the burst takes no (paused) time");
    a.w.write_all(b"MAIL FROM:<a@x.test>\r\n").await.unwrap();
    match a.read(Duration::from_secs(5)).await {
        Got::Reply(421, text) => assert!(text.contains("127.0.0.2"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        a.read(Duration::from_secs(5)).await,
        Got::Eof,
        "connection closed after the 421"
    );
    // Another source IP has its own bucket.
    let mut b = C::hello(s.addr, "127.0.0.3").await;
    assert_eq!(b.cmd("MAIL FROM:<b@x.test>").await, 250);
    // The limited IP gets a token back after 1/rate.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut a = C::hello(s.addr, "127.0.0.2").await;
    assert_eq!(a.cmd("MAIL FROM:<a@x.test>").await, 250);
}

/// Guards greylisting: a triple is deferred until `retry_after` (1 s) has passed since its
/// first sight, then let through. The "too early" retry must land inside that second, which
/// the wall clock does not promise under load; on the paused clock it lands at the same
/// instant, and the 1.1 s sleep is exactly 1.1 s, so both sides of `retry_after` are checked.
#[tokio::test(start_paused = true)]
async fn greylist_defers_then_accepts_after_retry_after() {
    let s = start(
        "  - { stage: rcpt, greylist: { retry_after: 1s }, reply: \"451 4.7.1 Greylisted, please try again later\" }\n",
        1,
        &[],
    )
    .await;
    let mut c = C::hello(s.addr, "127.0.0.2").await;
    assert_eq!(c.cmd("MAIL FROM:<a@x.test>").await, 250);
    assert_eq!(c.cmd("RCPT TO:<u1@y.test>").await, 451);
    assert_eq!(c.cmd("RCPT TO:<u1@y.test>").await, 451, "too early");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(c.cmd("RCPT TO:<u1@y.test>").await, 250, "after retry_after");
    assert_eq!(c.cmd("RCPT TO:<u2@y.test>").await, 451, "a new triple starts over");
    // Another address of the same /24 is the same client (Postgrey's --lookup-by-subnet)...
    let mut d = C::hello(s.addr, "127.0.0.3").await;
    assert_eq!(d.cmd("MAIL FROM:<a@x.test>").await, 250);
    assert_eq!(d.cmd("RCPT TO:<u1@y.test>").await, 250);
    // ...another /24 is a different triple.
    let mut e = C::hello(s.addr, "127.0.9.3").await;
    assert_eq!(e.cmd("MAIL FROM:<a@x.test>").await, 250);
    assert_eq!(e.cmd("RCPT TO:<u1@y.test>").await, 451);
}

async fn coin_flips(seed: u64) -> Vec<u16> {
    let s = start(
        "  - { stage: rcpt, probability: 50%, reply: \"450 4.2.0 coin says no\" }\n",
        seed,
        &[],
    )
    .await;
    let mut c = C::hello(s.addr, "127.0.0.2").await;
    assert_eq!(c.cmd("MAIL FROM:<a@x.test>").await, 250);
    let mut out = Vec::new();
    for i in 0..40 {
        out.push(c.cmd(&format!("RCPT TO:<u{i}@y.test>")).await);
    }
    out
}

#[tokio::test]
async fn probability_is_reproducible_per_seed() {
    let a = coin_flips(7).await;
    let b = coin_flips(7).await;
    let c = coin_flips(8).await;
    assert_eq!(a, b, "same seed, same decisions");
    assert_ne!(a, c, "another seed, other decisions");
    let refused = a.iter().filter(|c| **c == 450).count();
    assert!((8..=32).contains(&refused), "about half: {refused}/40");
}

#[tokio::test]
async fn concurrency_limit_per_source_ip() {
    let s = start(
        "  - { stage: connect, limit: { per: source_ip, concurrency: 2 }, reply: \"421 4.7.0 Too many concurrent SMTP connections from {ip}\", then: close }\n",
        1,
        &[],
    )
    .await;
    let a1 = C::hello(s.addr, "127.0.0.2").await;
    let _a2 = C::hello(s.addr, "127.0.0.2").await;
    let mut a3 = C::connect(s.addr, "127.0.0.2").await;
    assert_eq!(a3.code().await, 421);
    let _b = C::hello(s.addr, "127.0.0.3").await;
    drop(a1);
    drop(a3);
    // Once a connection closes, a new one fits again.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut c = C::connect(s.addr, "127.0.0.2").await;
        if c.code().await == 220 {
            ok = true;
            break;
        }
    }
    assert!(ok, "slot freed after disconnect");
}

#[tokio::test]
async fn messages_per_connection_limit() {
    let s = start(
        "  - { stage: mail, limit: { per: connection, messages: 2 }, reply: \"421 4.7.0 Too many messages on this connection\", then: close }\n",
        1,
        &[],
    )
    .await;
    let mut c = C::hello(s.addr, "127.0.0.2").await;
    for _ in 0..2 {
        assert_eq!(c.cmd("MAIL FROM:<a@x.test>").await, 250);
        assert_eq!(c.cmd("RCPT TO:<u@y.test>").await, 250);
        assert_eq!(c.cmd("DATA").await, 354);
        c.w.write_all(b"Subject: x\r\n\r\nhi\r\n.\r\n").await.unwrap();
        assert_eq!(c.code().await, 250);
    }
    assert_eq!(c.cmd("MAIL FROM:<a@x.test>").await, 421);
}

/// Guards each condition; for `window`, a rule that holds until 1 s after the inbox started
/// must apply inside that second and not after it. The connection and four commands before
/// the "inside" RCPT need not fit in 1 s of wall time under load, so this runs on the paused
/// clock: they take none, and the 1 s sleep puts the next RCPT exactly at the window's
/// (exclusive) end.
#[tokio::test(start_paused = true)]
async fn size_helo_sender_source_pool_and_window_conditions() {
    let s = start(
        "  - { stage: ehlo, helo: '^bad', reply: \"550 5.7.1 HELO rejected\" }\n\
         \x20 - { stage: mail, size: { min: 1MiB }, reply: \"552 5.3.4 Message size exceeds fixed limit\" }\n\
         \x20 - { stage: mail, sender: '^spammer@', source: 127.0.0.4/32, reply: \"550 5.7.1 sender blocked\" }\n\
         \x20 - { stage: mail, pool: blocked, reply: \"554 5.7.1 Service unavailable; client host [{ip}] blocked\" }\n\
         \x20 - { stage: rcpt, window: { until: 1s }, reply: \"451 4.3.2 warming up\" }\n",
        1,
        &[("blocked", &["127.0.0.5"])],
    )
    .await;
    let mut c = C::connect(s.addr, "127.0.0.2").await;
    assert_eq!(c.code().await, 220);
    assert_eq!(c.cmd("EHLO bad.example").await, 550);
    assert_eq!(c.cmd("EHLO good.example").await, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@x.test> SIZE=2000000").await, 552);
    assert_eq!(
        c.cmd("MAIL FROM:<spammer@x.test>").await,
        250,
        "sender rule is for 127.0.0.4 only"
    );
    assert_eq!(c.cmd("RCPT TO:<u@y.test>").await, 451, "inside the window");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(c.cmd("RCPT TO:<u@y.test>").await, 250, "after the window");
    let mut d = C::hello(s.addr, "127.0.0.4").await;
    assert_eq!(d.cmd("MAIL FROM:<spammer@x.test>").await, 550);
    let mut e = C::hello(s.addr, "127.0.0.5").await;
    e.w.write_all(b"MAIL FROM:<a@x.test>\r\n").await.unwrap();
    match e.read(Duration::from_secs(5)).await {
        Got::Reply(554, t) => assert!(t.contains("[127.0.0.5]"), "{t}"),
        other => panic!("{other:?}"),
    }
}

/// Guards the misbehaviours. The tarpit checks are lower bounds (a 300 ms delay is applied,
/// and to later replies too), which load cannot break, but on the paused clock they are exact:
/// without the tarpit no time passes at all. The blackhole is "no reply within 500 ms", which
/// load cannot fake either; paused, the wait costs nothing.
#[tokio::test(start_paused = true)]
async fn misbehaviours_tarpit_blackhole_reset_disconnect() {
    let s = start(
        "  - { stage: connect, source: 127.0.0.6, behaviour: blackhole }\n\
         \x20 - { stage: mail, sender: '^slow@', behaviour: tarpit, delay: { dist: fixed, value: 300ms }, reply: \"250 2.1.0 Ok\" }\n\
         \x20 - { stage: rcpt, rcpt: '^reset@', behaviour: reset }\n\
         \x20 - { stage: rcpt, rcpt: '^drop@', behaviour: disconnect }\n",
        1,
        &[],
    )
    .await;
    let mut c = C::hello(s.addr, "127.0.0.2").await;
    let t = Instant::now();
    assert_eq!(c.cmd("MAIL FROM:<slow@x.test>").await, 250);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(c.cmd("RCPT TO:<u@y.test>").await, 250);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "tarpit slows later replies too"
    );

    let mut c = C::hello(s.addr, "127.0.0.2").await;
    assert_eq!(c.cmd("MAIL FROM:<a@x.test>").await, 250);
    c.w.write_all(b"RCPT TO:<reset@y.test>\r\n").await.unwrap();
    assert_eq!(c.read(Duration::from_secs(5)).await, Got::Reset);

    let mut c = C::hello(s.addr, "127.0.0.2").await;
    assert_eq!(c.cmd("MAIL FROM:<a@x.test>").await, 250);
    c.w.write_all(b"RCPT TO:<drop@y.test>\r\n").await.unwrap();
    assert_eq!(c.read(Duration::from_secs(5)).await, Got::Eof);

    let mut c = C::connect(s.addr, "127.0.0.6").await;
    assert_eq!(
        c.read(Duration::from_millis(500)).await,
        Got::Nothing,
        "blackhole never answers"
    );
}

/// Guards overlays: a block refuses one pool, a latency overlay delays replies, and removing
/// the overlays removes the delay. The last was `< 250 ms` of wall time for a MAIL round
/// trip, which a loaded 2-core box can exceed. On the paused clock an answer without the
/// overlay takes no time at all, and a latency overlay left behind would still cost its full
/// 250 ms, so the check keeps its bound and can no longer fail for want of CPU.
#[tokio::test(start_paused = true)]
async fn runtime_overlays_block_a_pool_add_latency_and_restore() {
    let s = start(
        "  - { stage: rcpt, rcpt: '^nouser', reply: \"550 5.1.1 no such user\" }\n",
        1,
        &[],
    )
    .await;
    let block = Overlay::Block {
        sources: Some(vec!["127.0.0.2".parse().unwrap()]),
        reply: Reply::parse_spec("554 5.7.1 Client host [{ip}] blocked using zen.spamhaus.org").unwrap(),
    };
    s.inbox.engine().add_overlay(block);
    let mut a = C::connect(s.addr, "127.0.0.2").await;
    match a.read(Duration::from_secs(5)).await {
        Got::Reply(554, t) => assert!(t.contains("[127.0.0.2]"), "{t}"),
        other => panic!("{other:?}"),
    }
    let mut b = C::hello(s.addr, "127.0.0.3").await;
    assert_eq!(b.cmd("MAIL FROM:<a@x.test>").await, 250);

    s.inbox
        .engine()
        .add_overlay(Overlay::Latency(Duration::from_millis(250)));
    let t = Instant::now();
    assert_eq!(
        b.cmd("RCPT TO:<nouser@y.test>").await,
        550,
        "rules still apply under overlays"
    );
    assert!(t.elapsed() >= Duration::from_millis(250));

    s.inbox.engine().remove_overlays(|_| true);
    let mut a = C::hello(s.addr, "127.0.0.2").await;
    let t = Instant::now();
    assert_eq!(a.cmd("MAIL FROM:<a@x.test>").await, 250);
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "latency gone with the overlay: {:?}",
        t.elapsed()
    );

    s.inbox
        .engine()
        .add_overlay(Overlay::Down(mailsurge::inbox::rules::Behaviour::Reset));
    let mut d = C::connect(s.addr, "127.0.0.3").await;
    assert_eq!(d.read(Duration::from_secs(5)).await, Got::Reset);
}
