//! A standalone reference-MTA node (`mailsurge mta`) relaying to a standalone mock inbox
//! (`mailsurge inbox`), both real child processes on loopback.

mod common;

use std::time::Duration;

use common::*;

fn message(id: &str) -> String {
    format!(
        "From: a@sender.test\r\nTo: user1@example.com\r\nMessage-ID: <{id}@t>\r\nX-Mailsurge-Id: {id}\r\nSubject: t\r\n\r\nhello\r\n.\r\n"
    )
}

#[test]
fn node_relays_bounces_and_refuses_strangers() {
    let dir = tempdir();
    let receipts = dir.path().join("receipts.jsonl");
    let inbox = start_inbox(dir.path(), "mock-inboxes/generic.yaml");
    let node = start_node(
        dir.path(),
        "t-1",
        inbox.addr,
        "relay_networks: [127.0.0.1/32]\negress_pools: { shared: [127.0.1.1] }\n\
         retry: { initial: 100ms, factor: 2, max_delay: 1s, jitter: 0%, give_up: 2s }\nresponses: deliverability\n",
    );

    // A normal message and one to an unknown user, pipelined on one connection.
    let mut c = Raw::connect(node.addr);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("EHLO client.test"), 250);
    let cases = [
        ("m.1", "user1@example.com"),
        ("m.2", "nouser-1@example.com"),
        ("m.4", "tempfail-1@example.com"),
    ];
    for (id, rcpt) in cases {
        assert_eq!(c.cmd("MAIL FROM:<a@sender.test>"), 250);
        assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")), 250);
        assert_eq!(c.cmd("DATA"), 354);
        c.send(&message(id));
        assert_eq!(
            c.code(),
            250,
            "{id} must be accepted (post-acceptance errors are events)"
        );
    }
    // SMTP smuggling: a bare-LF "end of data" must not split one message into two.
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>"), 250);
    assert_eq!(c.cmd("RCPT TO:<user2@example.com>"), 250);
    assert_eq!(c.cmd("DATA"), 354);
    c.send("X-Mailsurge-Id: m.3\r\n\r\nhi\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<user3@example.com>\r\nDATA\r\n\r\nX-Mailsurge-Id: smuggled\r\n.\r\n");
    let code = c.code();
    assert!((500..600).contains(&code), "bare LF must be rejected, got {code}");
    assert_eq!(c.cmd("RSET"), 250, "session continues after the rejection");
    assert_eq!(c.cmd("QUIT"), 221);

    // Never an open relay: a client outside relay_networks is refused at RCPT.
    let mut stranger = Raw::connect_from(node.addr, "127.0.0.2".parse().unwrap());
    assert_eq!(stranger.code(), 220);
    assert_eq!(stranger.cmd("EHLO stranger.test"), 250);
    assert_eq!(stranger.cmd("MAIL FROM:<x@y.test>"), 250);
    assert_eq!(stranger.cmd("RCPT TO:<user1@example.com>"), 554);

    // The good message arrives from the egress address; the unknown user bounces.
    let events = dir.path().join("events.jsonl");
    let got = wait_for(Duration::from_secs(10), || {
        let r = std::fs::read_to_string(&receipts).ok()?;
        let e = std::fs::read_to_string(&events).ok()?;
        (r.contains("\"mailsurge_id\":\"m.1\"") && e.contains("\"bounced\"") && e.contains("\"expired\""))
            .then_some((r, e))
    });
    let (r, e) = got.expect("receipt for m.1, a bounce event for m.2, an expiry for m.4");
    let line = r.lines().find(|l| l.contains("m.1")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["source_ip"], "127.0.1.1");
    assert_eq!(v["rcpt"][0], "user1@example.com");
    assert!(v["t"].as_str().unwrap().ends_with('Z'));
    assert!(v["size"].as_u64().unwrap() > 0);
    assert!(!r.contains("smuggled") && !r.contains("m.3"), "{r}");
    let bounce = e.lines().find(|l| l.contains("\"bounced\"")).unwrap();
    assert!(
        bounce.contains("\"id\":\"m.2\"") && bounce.contains("5.1.1"),
        "{bounce}"
    );
    assert!(e.contains("\"accepted\"") && e.contains("\"delivered\""), "{e}");
    // 4xx is retried with backoff until give_up, then expires; attempts are numbered.
    let deferred: Vec<&str> = e
        .lines()
        .filter(|l| l.contains("\"deferred\"") && l.contains("m.4"))
        .collect();
    assert!(deferred.len() >= 3, "{deferred:?}");
    assert!(deferred.iter().any(|l| l.contains("\"attempt\":3")), "{deferred:?}");
    let expired = e.lines().find(|l| l.contains("\"expired\"")).unwrap();
    assert!(expired.contains("m.4") && expired.contains("451"), "{expired}");

    // Nothing left in the spool once everything is terminal.
    let spool_empty = wait_for(Duration::from_secs(5), || {
        let n = mailsurge::mta::spool::LogSpool::scan(&dir.path().join("spool"))
            .ok()?
            .len();
        (n == 0).then_some(())
    });
    assert!(spool_empty.is_some(), "spool not emptied");
    assert!(node.terminate().success());
    assert!(inbox.terminate().success());
}

#[test]
fn standalone_inbox_answers_rules_and_writes_receipts() {
    let dir = tempdir();
    let receipts = dir.path().join("r.jsonl");
    let inbox = spawn_listening(
        &[
            "inbox",
            "--rules",
            "generic",
            "--listen",
            "127.0.0.1:0",
            "--receipts",
            receipts.to_str().unwrap(),
        ],
        inbox_addr,
    );
    let mut c = Raw::connect(inbox.addr);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("EHLO x.test"), 250);
    assert_eq!(c.cmd("MAIL FROM:<>"), 250, "null sender accepted");
    c.send("RCPT TO:<nouser-7@example.com>\r\n");
    let r = c.reply();
    assert!(r[0].starts_with("550 5.1.1 <nouser-7@example.com>"), "{r:?}");
    assert_eq!(c.cmd("RCPT TO:<bob@example.com>"), 250);
    assert_eq!(c.cmd("DATA"), 354);
    c.send("Message-ID: <foreign-1@client>\r\nSubject: hi\r\n\r\nbody\r\n.\r\n");
    assert_eq!(c.code(), 250);
    assert_eq!(c.cmd("QUIT"), 221);
    assert!(inbox.terminate().success());
    let text = std::fs::read_to_string(&receipts).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["message_id"], "<foreign-1@client>");
    assert!(v["mailsurge_id"].is_null());
    assert_eq!(v["rcpt"], serde_json::json!(["bob@example.com"]));
    assert_eq!(v["source_ip"], "127.0.0.1");
}

#[test]
fn post_acceptance_errors_are_dropped_events_not_rejects_on_a_local_spool() {
    post_acceptance_errors_are_dropped_events_not_rejects(false);
}

/// The same screening on the shared queue: a message is screened by the node that takes it.
#[test]
fn post_acceptance_errors_are_dropped_events_not_rejects_on_the_shared_queue() {
    post_acceptance_errors_are_dropped_events_not_rejects(true);
}

fn post_acceptance_errors_are_dropped_events_not_rejects(nats: bool) {
    let dir = tempdir();
    let spool = TestSpool::new(nats, dir.path());
    let receipts = dir.path().join("receipts.jsonl");
    let inbox = start_inbox(dir.path(), "generic");
    let node = start_node_on(
        &spool,
        dir.path(),
        "s-1",
        inbox.addr,
        "relay_networks: [127.0.0.0/8]\n\
         screen: { unsubscribed: '^unsub[-.]', tenant_rate: 1/s, tenant_burst: 1, require_from: true }\n",
    );
    let mut c = Raw::connect(node.addr);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("EHLO client.test"), 250);
    let mut send = |from: &str, rcpt: &str, body: &str| {
        assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")), 250);
        assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")), 250);
        assert_eq!(c.cmd("DATA"), 354);
        c.send(body);
        c.send(".\r\n");
        assert_eq!(c.code(), 250, "accepted at SMTP time whatever happens later");
    };
    let msg = |id: &str| format!("From: t@x.test\r\nX-Mailsurge-Id: {id}\r\n\r\nhi\r\n");
    send("t1@x.test", "unsub-7@example.com", &msg("s.1"));
    send("t2@x.test", "nouser-1@example.com", &msg("s.2"));
    send(
        "t3@x.test",
        "user1@example.com",
        "X-Mailsurge-Id: s.3\r\nno from header\r\n\r\nhi\r\n",
    );
    send("t4@x.test", "user2@example.com", &msg("s.4"));
    send("t4@x.test", "user3@example.com", &msg("s.5")); // over t4's 1/s limit
    let events = dir.path().join("events.jsonl");
    // s.2 bounces (5.1.1, suppress): the same recipient later is dropped without an attempt.
    let bounced = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&events)
            .ok()
            .filter(|e| e.contains("\"bounced\""))
    });
    assert!(bounced.is_some());
    send("t5@x.test", "nouser-1@example.com", &msg("s.6"));
    let e = wait_for(Duration::from_secs(10), || {
        let e = std::fs::read_to_string(&events).ok()?;
        (e.matches("\"dropped\"").count() >= 4 && e.contains("\"s.4\"")).then_some(e)
    })
    .expect("dropped events");
    let reason = |id: &str| -> String {
        let l = e
            .lines()
            .find(|l| l.contains("\"dropped\"") && l.contains(&format!("\"{id}\"")))
            .unwrap_or("");
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
        v["text"].as_str().unwrap_or("").to_string()
    };
    assert_eq!(reason("s.1"), "recipient unsubscribed");
    assert_eq!(reason("s.3"), "message does not parse: a header line has no colon");
    assert_eq!(reason("s.5"), "tenant t4@x.test is over its sending limit");
    assert_eq!(reason("s.6"), "recipient is on the bounce list");
    let s6_attempts = e
        .lines()
        // A delivery attempt's line (a shared queue's `leased` line counts hand-outs, not attempts).
        .filter(|l| l.contains("\"s.6\"") && l.contains("\"attempt\"") && !l.contains("\"leased\""))
        .count();
    assert_eq!(s6_attempts, 0, "suppressed recipients are never attempted");
    let delivered = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&receipts)
            .ok()
            .filter(|r| r.contains("\"s.4\""))
    });
    assert!(delivered.is_some(), "t4's first message goes through");
    assert!(node.terminate().success());
    assert!(inbox.terminate().success());
}

/// A spool record that no longer decodes is set aside once — logged, left in the spool, not
/// retried — instead of being re-parked for ever (a busy loop over mail that cannot be sent).
#[test]
fn an_unreadable_spool_record_is_set_aside_not_retried_for_ever() {
    let dir = tempdir();
    let log = dir.path().join("node.err");
    let dead: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap(); // refused: every try defers
    let node = start_node_to(
        dir.path(),
        "c-1",
        dead,
        "relay_networks: [127.0.0.1/32]\n\
         retry: { initial: 300ms, factor: 1, max_delay: 300ms, jitter: 0%, give_up: 60s }\n",
        std::process::Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let mut c = Raw::connect(node.addr);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("EHLO client.test"), 250);
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>"), 250);
    assert_eq!(c.cmd("RCPT TO:<user1@example.com>"), 250);
    assert_eq!(c.cmd("DATA"), 354);
    c.send("X-Mailsurge-Id: bad.1\r\n\r\nBODY-TO-DAMAGE\r\n.\r\n");
    assert_eq!(c.code(), 250);
    let events = dir.path().join("events.jsonl");
    let deferrals = || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .matches("\"deferred\"")
            .count()
    };
    wait_for(Duration::from_secs(10), || (deferrals() > 0).then_some(())).expect("a first deferral");

    // Damage the body in place: the record's checksum no longer matches.
    let seg = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("a spool segment");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(14)
        .position(|w| w == b"BODY-TO-DAMAGE")
        .expect("the body is in the segment");
    bytes[at] = b'X';
    std::fs::write(&seg, &bytes).unwrap();

    wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("cannot be read")
            .then_some(())
    })
    .expect("the node reports the unreadable record");
    let settled = deferrals();
    std::thread::sleep(Duration::from_millis(1500)); // five retry intervals
    assert_eq!(deferrals(), settled, "no more attempts after it was set aside");
    assert!(node.terminate().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("cannot be read").count(),
        1,
        "set aside once, not retried:\n{text}"
    );
    assert!(seg.exists(), "the damaged record stays in the spool for inspection");
}
