//! The reference MTA's response table and routing, end to end: a standalone node
//! (`mailsurge mta`) relaying to standalone mock inboxes (`mailsurge inbox`) whose rules script
//! the provider's answers. Each test checks what the node *did* about a reply — how fast it
//! sent afterwards, which source address it sent from, which MX host got the mail — from the
//! node's events and the inboxes' receipts.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// Every test here runs on both spools: local disk, and the shared queue (`spool: nats`).
macro_rules! on_both_spools {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn local() {
                super::$name(false)
            }
            #[test]
            fn nats() {
                super::$name(true)
            }
        }
    )*};
}

on_both_spools!(
    throttle_reply_cuts_the_domain_rate_and_it_recovers,
    block_reply_reroutes_the_next_attempt_to_the_other_pool,
    refused_primary_mx_fails_over_to_the_secondary,
    primary_mx_refusing_at_greeting_fails_over_to_the_secondary,
    deferred_retries_follow_the_backoff_schedule_and_expire,
);

/// `(id, rcpt)` pairs `<prefix>.<i>` → `user<i>@example.com`.
fn batch(prefix: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("{prefix}.{i}"), format!("user{i}@example.com")))
        .collect()
}

fn kind(e: &Value) -> &str {
    e["event"].as_str().unwrap_or("")
}

fn id(e: &Value) -> &str {
    e["id"].as_str().unwrap_or("")
}

fn t_ns(e: &Value) -> u64 {
    e["t"].as_u64().unwrap_or(0)
}

/// A short listing of events for assertion messages: `event id code` per line.
fn brief(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("{} {} {} {}", kind(e), id(e), e["code"], e["source_ip"]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The receipts in `path` once there are `n` of them (the inbox flushes them when idle).
fn receipts(path: &std::path::Path, n: usize) -> Vec<Value> {
    wait_for(Duration::from_secs(10), || {
        let r = json_lines(path);
        (r.len() >= n).then_some(r)
    })
    .unwrap_or_else(|| panic!("{n} receipts in {}: {:?}", path.display(), json_lines(path)))
}

/// Delivery times (ns) of the messages whose id starts with `prefix.`, sorted.
fn delivered_times(events: &[Value], prefix: &str) -> Vec<u64> {
    let p = format!("{prefix}.");
    let mut t: Vec<u64> = events
        .iter()
        .filter(|e| kind(e) == "delivered" && id(e).starts_with(&p))
        .map(t_ns)
        .collect();
    t.sort_unstable();
    t
}

/// Sends per second over a run of delivery times: (n − 1) / (last − first).
fn rate(times: &[u64]) -> f64 {
    assert!(times.len() >= 2, "need two deliveries to measure a rate");
    (times.len() - 1) as f64 / ((times[times.len() - 1] - times[0]) as f64 / 1e9)
}

/// A throttle-class reply (421 "... unexpected volume", which the response table maps to
/// `throttle`) cuts the node's send rate to the domain for the rule's `for:`, and the rate
/// comes back when the cut expires. The node paces example.com at 40/s (`limits.domain_rate`);
/// the table's throttle rule is `domain_rate: 0.25x, for: 4s`, so the cut rate is 10/s.
///
/// Rates are measured from the node's `delivered` events over three batches: before the
/// trigger, right after it (inside the 4 s hold) and after the hold. The pace is an upper
/// bound — a loaded machine can only make sends slower — so the "during" bound (≤ 14/s for a
/// 10/s cut) holds under any load, and the before/after rates are asserted only as clearly
/// above it (≥ 2× the cut rate), not as exactly 40/s.
fn throttle_reply_cuts_the_domain_rate_and_it_recovers(nats: bool) {
    let dir = tempdir();
    let spool = TestSpool::new(nats, dir.path());
    std::fs::write(
        dir.path().join("rules.yaml"),
        // The first try of `volume-*` gets Yahoo's TSS04 volume deferral; retries after 1 s pass.
        "provider: throttler\nrules:\n  - { stage: rcpt, rcpt: '^volume[-.]', greylist: { retry_after: 1s },\n      \
         reply: \"421 4.7.0 [TSS04] Messages from {ip} temporarily deferred due to unexpected volume or user complaints\" }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("responses.yaml"),
        "- { match: { code: 421, text: '(?i)rate|volume' }, action: throttle, domain_rate: 0.25x, for: 4s }\n\
         - { match: { code: 4xx }, action: defer }\n- { match: { code: 5xx }, action: bounce }\n",
    )
    .unwrap();
    let rules = dir.path().join("rules.yaml");
    let inbox = start_inbox(dir.path(), rules.to_str().unwrap());
    let node = start_node_on(
        &spool,
        dir.path(),
        "th-1",
        inbox.addr,
        "relay_networks: [127.0.0.0/8]\negress_pools: { shared: [127.0.1.1] }\n\
         retry: { initial: 2s, factor: 1, max_delay: 2s, jitter: 0%, give_up: 60s }\n\
         responses: responses.yaml\nlimits: { domain_rate: 40/s }\n",
    );
    let events_path = dir.path().join("events.jsonl");
    let delivered = |prefix: &str, n: usize| {
        wait_for(Duration::from_secs(30), || {
            let ev = json_lines(&events_path);
            (delivered_times(&ev, prefix).len() >= n).then_some(ev)
        })
        .unwrap_or_else(|| panic!("batch {prefix}: {n} deliveries"))
    };

    // Before: an unthrottled batch.
    submit_all(node.addr, &batch("a", 60));
    let ev = delivered("a", 60);
    let before = rate(&delivered_times(&ev, "a"));

    // The trigger: one volume deferral, then a batch inside the 4 s hold.
    submit_all(node.addr, &[("v.1".into(), "volume-1@example.com".into())]);
    let ev = wait_for(Duration::from_secs(15), || {
        let ev = json_lines(&events_path);
        ev.iter()
            .any(|e| kind(e) == "deferred" && id(e) == "v.1" && e["code"] == 421)
            .then_some(ev)
    })
    .expect("the volume deferral");
    let cut_at = ev
        .iter()
        .find(|e| kind(e) == "deferred" && id(e) == "v.1")
        .map(t_ns)
        .unwrap();
    submit_all(node.addr, &batch("b", 25));
    let ev = delivered("b", 25);
    let b_times = delivered_times(&ev, "b");
    let hold_end = cut_at + 4_000_000_000;
    let in_hold: Vec<u64> = b_times.iter().copied().filter(|t| *t < hold_end).collect();
    assert!(
        in_hold.len() >= 10,
        "most of batch b went out inside the hold: {} of 25",
        in_hold.len()
    );
    let during = rate(&in_hold);

    // After: the cut has expired (a second past the hold, for the sleep's slack).
    let wait = (hold_end + 1_000_000_000).saturating_sub(now_ns());
    std::thread::sleep(Duration::from_nanos(wait));
    submit_all(node.addr, &batch("c", 60));
    let ev = delivered("c", 60);
    let after = rate(&delivered_times(&ev, "c"));
    eprintln!("throttle: before {before:.1}/s, during {during:.1}/s, after {after:.1}/s");

    assert!(during <= 14.0, "the cut pace is 10/s: during {during:.1}/s");
    assert!(
        before >= 2.0 * during && before >= 20.0,
        "before {before:.1}/s vs during {during:.1}/s"
    );
    assert!(
        after >= 2.0 * during && after >= 20.0,
        "the rate recovers after the hold: after {after:.1}/s vs during {during:.1}/s"
    );
    // The trigger itself is retried and delivered once the provider relents.
    let ev = wait_for(Duration::from_secs(15), || {
        let ev = json_lines(&events_path);
        ev.iter()
            .any(|e| kind(e) == "delivered" && id(e) == "v.1")
            .then_some(ev)
    })
    .expect("the throttled message is delivered on retry");
    assert!(!ev.iter().any(|e| kind(e) == "bounced" || kind(e) == "expired"));
    assert!(node.terminate().success());
    assert!(inbox.terminate().success());
}

/// An IP-block reply (554 "... blocked using zen.spamhaus.org", `reroute` to pool `dedicated`
/// in the shipped table) makes the next attempt leave from the dedicated pool's address, and
/// fresh mail to the domain goes straight out of the dedicated pool while the reroute holds.
/// The inbox blocks the shared pool's address by source IP, so only a rerouted attempt can be
/// delivered.
fn block_reply_reroutes_the_next_attempt_to_the_other_pool(nats: bool) {
    let dir = tempdir();
    let spool = TestSpool::new(nats, dir.path());
    std::fs::write(
        dir.path().join("rules.yaml"),
        "provider: blocker\nrules:\n  - { stage: mail, source: 127.0.1.1,\n      \
         reply: \"554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org\" }\n",
    )
    .unwrap();
    let rules = dir.path().join("rules.yaml");
    let inbox = start_inbox(dir.path(), rules.to_str().unwrap());
    let node = start_node_on(
        &spool,
        dir.path(),
        "rr-1",
        inbox.addr,
        "relay_networks: [127.0.0.0/8]\negress_pools: { shared: [127.0.1.1], dedicated: [127.0.1.10] }\n\
         retry: { initial: 300ms, factor: 1, max_delay: 300ms, jitter: 0%, give_up: 30s }\nresponses: deliverability\n",
    );
    let events_path = dir.path().join("events.jsonl");
    let receipts_path = dir.path().join("receipts.jsonl");
    let delivered = |want: &str| {
        wait_for(Duration::from_secs(15), || {
            let ev = json_lines(&events_path);
            ev.iter().any(|e| kind(e) == "delivered" && id(e) == want).then_some(ev)
        })
        .unwrap_or_else(|| panic!("{want} delivered"))
    };

    submit_all(node.addr, &[("r.1".into(), "user1@example.com".into())]);
    let ev = delivered("r.1");
    let mine: Vec<&Value> = ev.iter().filter(|e| id(e) == "r.1").collect();
    let deferred: Vec<&&Value> = mine.iter().filter(|e| kind(e) == "deferred").collect();
    assert_eq!(deferred.len(), 1, "one refused attempt:\n{}", brief(&ev));
    assert_eq!(deferred[0]["code"], 554);
    assert_eq!(
        deferred[0]["source_ip"], "127.0.1.1",
        "the first try leaves from the shared pool"
    );
    assert_eq!(deferred[0]["attempt"], 1);
    let ok = mine.iter().find(|e| kind(e) == "delivered").unwrap();
    assert_eq!(
        ok["source_ip"], "127.0.1.10",
        "the retry leaves from the dedicated pool"
    );
    assert_eq!(ok["attempt"], 2);
    assert!(mine.iter().all(|e| kind(e) != "bounced"), "{}", brief(&ev));

    // Fresh mail skips the refusal: straight out of the dedicated pool, first attempt.
    submit_all(node.addr, &[("r.2".into(), "user2@example.com".into())]);
    let ev = delivered("r.2");
    let mine: Vec<&Value> = ev.iter().filter(|e| id(e) == "r.2").collect();
    assert!(!mine.iter().any(|e| kind(e) == "deferred"), "{}", brief(&ev));
    let ok = mine.iter().find(|e| kind(e) == "delivered").unwrap();
    assert_eq!(
        (ok["source_ip"].as_str(), ok["attempt"].as_u64()),
        (Some("127.0.1.10"), Some(1))
    );

    // The inbox saw both arrive from the dedicated address, and nothing from the shared one.
    let got = receipts(&receipts_path, 2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|r| r["source_ip"] == "127.0.1.10"), "{got:?}");
    assert!(node.terminate().success());
    assert!(inbox.terminate().success());
}

/// A refusing primary MX (nothing listens on it: connection refused) → the node walks down
/// the route list within the same attempt and delivers through the secondary; when the
/// primary comes back it gets the mail again.
fn refused_primary_mx_fails_over_to_the_secondary(nats: bool) {
    let dir = tempdir();
    let spool = TestSpool::new(nats, dir.path());
    let secondary_dir = dir.path().join("secondary");
    std::fs::create_dir_all(&secondary_dir).unwrap();
    let secondary = start_inbox(&secondary_dir, "generic");
    // The primary's address: a port nothing listens on (yet).
    let primary: std::net::SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1")).parse().unwrap();
    let node = start_node_routes_on(
        &spool,
        dir.path(),
        "mx-1",
        &format!("{{ example.com: [{primary}, {}] }}", secondary.addr),
        "relay_networks: [127.0.0.0/8]\negress_pools: { shared: [127.0.1.1] }\n\
         retry: { initial: 300ms, factor: 1, max_delay: 300ms, jitter: 0%, give_up: 30s }\n",
    );
    let events_path = dir.path().join("events.jsonl");
    submit_all(node.addr, &batch("m", 5));
    let ev = wait_for(Duration::from_secs(15), || {
        let ev = json_lines(&events_path);
        (delivered_times(&ev, "m").len() == 5).then_some(ev)
    })
    .expect("all five delivered");
    let got = receipts(&secondary_dir.join("receipts.jsonl"), 5);
    assert_eq!(got.len(), 5, "the secondary took all five: {got:?}");
    // Failing over is part of the attempt: no deferral, every message's first attempt.
    assert!(!ev.iter().any(|e| kind(e) == "deferred"), "{}", brief(&ev));
    assert!(ev.iter().filter(|e| kind(e) == "delivered").all(|e| e["attempt"] == 1));

    // The primary comes back; once the node's memory of the refusal has passed (5 s,
    // `ROUTE_DOWN_HOLD`), mail goes to it again — the order of the route list is kept.
    let primary_dir = dir.path().join("primary");
    std::fs::create_dir_all(&primary_dir).unwrap();
    let receipts = primary_dir.join("receipts.jsonl");
    let back = spawn_listening(
        &[
            "inbox",
            "--rules",
            "generic",
            "--listen",
            &primary.to_string(),
            "--receipts",
            receipts.to_str().unwrap(),
        ],
        inbox_addr,
    );
    std::thread::sleep(Duration::from_secs(6));
    submit_all(node.addr, &batch("n", 3));
    let got = wait_for(Duration::from_secs(15), || {
        (json_lines(&receipts).len() == 3).then_some(())
    });
    assert!(got.is_some(), "the restored primary takes new mail");
    std::thread::sleep(Duration::from_millis(500)); // a last receipt flush, if any
    assert_eq!(json_lines(&secondary_dir.join("receipts.jsonl")).len(), 5);
    assert!(node.terminate().success());
    assert!(secondary.terminate().success());
    assert!(back.terminate().success());
}

/// A primary MX that answers but refuses service at the greeting (421, as a provider's
/// overloaded or down-for-maintenance front end does): like Postfix (`smtp_skip_4xx_greeting`,
/// on by default) and RFC 5321 §5.1 (try each address in the list until one succeeds), the
/// node must try the secondary instead of retrying the refusing primary until give-up.
fn primary_mx_refusing_at_greeting_fails_over_to_the_secondary(nats: bool) {
    let dir = tempdir();
    let spool = TestSpool::new(nats, dir.path());
    let (p_dir, s_dir) = (dir.path().join("primary"), dir.path().join("secondary"));
    std::fs::create_dir_all(&p_dir).unwrap();
    std::fs::create_dir_all(&s_dir).unwrap();
    std::fs::write(
        p_dir.join("rules.yaml"),
        "provider: down\nrules:\n  - { stage: connect, reply: \"421 4.3.2 Service not available, closing transmission channel\", then: close }\n",
    )
    .unwrap();
    let primary = start_inbox(&p_dir, p_dir.join("rules.yaml").to_str().unwrap());
    let secondary = start_inbox(&s_dir, "generic");
    let node = start_node_routes_on(
        &spool,
        dir.path(),
        "mx-2",
        &format!("{{ example.com: [{}, {}] }}", primary.addr, secondary.addr),
        "relay_networks: [127.0.0.0/8]\negress_pools: { shared: [127.0.1.1] }\n\
         retry: { initial: 300ms, factor: 1, max_delay: 300ms, jitter: 0%, give_up: 8s }\n",
    );
    let events_path = dir.path().join("events.jsonl");
    submit_all(node.addr, &batch("g", 3));
    let ev = wait_for(Duration::from_secs(20), || {
        let ev = json_lines(&events_path);
        let done = ev
            .iter()
            .filter(|e| matches!(kind(e), "delivered" | "expired" | "bounced"))
            .count();
        (done >= 3).then_some(ev)
    })
    .expect("three terminal events");
    assert!(
        !ev.iter().any(|e| kind(e) == "expired"),
        "mail must not expire against a refusing primary while the secondary accepts:\n{}",
        brief(&ev)
    );
    let got = receipts(&s_dir.join("receipts.jsonl"), 3);
    assert_eq!(got.len(), 3, "the secondary took all three: {got:?}");
    // Skipping a refusing greeting is part of the attempt, as for a refused connection.
    assert!(
        ev.iter().filter(|e| kind(e) == "delivered").all(|e| e["attempt"] == 1),
        "{}",
        brief(&ev)
    );
    assert!(json_lines(&p_dir.join("receipts.jsonl")).is_empty());
    assert!(node.terminate().success());
    assert!(primary.terminate().success());
    assert!(secondary.terminate().success());
}

/// A message that keeps getting a temporary failure is retried on the node's schedule:
/// `initial × factor^(n−1)`, capped at `max_delay`, each moved by at most ± `jitter`, until
/// the next retry would pass `give_up` and it expires. Checked on the gaps between its
/// `deferred` events (retry delay plus the next attempt's own few milliseconds): never shorter
/// than the delay's lower bound — a retry is never early — and never longer than its upper
/// bound plus 1 s, a margin for a loaded machine that still tells a capped 0.8 s delay from
/// the 3.2 s an uncapped one would reach by the fifth retry.
fn deferred_retries_follow_the_backoff_schedule_and_expire(nats: bool) {
    let dir = tempdir();
    let spool = TestSpool::new(nats, dir.path());
    let inbox = start_inbox(dir.path(), "generic");
    let node = start_node_on(
        &spool,
        dir.path(),
        "bo-1",
        inbox.addr,
        "relay_networks: [127.0.0.0/8]\negress_pools: { shared: [127.0.1.1] }\n\
         retry: { initial: 200ms, factor: 2, max_delay: 800ms, jitter: 20%, give_up: 5s }\n",
    );
    let events_path = dir.path().join("events.jsonl");
    submit_all(node.addr, &[("bo.1".into(), "tempfail-1@example.com".into())]);
    let ev = wait_for(Duration::from_secs(30), || {
        let ev = json_lines(&events_path);
        ev.iter().any(|e| kind(e) == "expired").then_some(ev)
    })
    .expect("the message expires");
    let deferred: Vec<u64> = ev.iter().filter(|e| kind(e) == "deferred").map(t_ns).collect();
    let accepted = ev.iter().find(|e| kind(e) == "accepted").map(t_ns).unwrap();
    let expired = ev.iter().find(|e| kind(e) == "expired").unwrap();
    let gaps_ms: Vec<f64> = deferred.windows(2).map(|w| (w[1] - w[0]) as f64 / 1e6).collect();
    eprintln!("retry gaps (ms): {gaps_ms:.0?}");
    assert!(gaps_ms.len() >= 5, "{gaps_ms:?}");
    for (k, gap) in gaps_ms.iter().enumerate() {
        let base = (200.0 * 2f64.powi(k as i32)).min(800.0);
        assert!(
            *gap >= base * 0.8 - 5.0,
            "retry {} came {gap:.0} ms after the last, before its {base} ms − 20%",
            k + 1
        );
        assert!(
            *gap <= base * 1.2 + 1000.0,
            "retry {} came {gap:.0} ms after the last: delay capped at 800 ms + 20%",
            k + 1
        );
    }
    // Expired, not retried past give_up: the last attempt falls inside the 5 s.
    let attempts = expired["attempt"].as_u64().unwrap();
    assert_eq!(
        attempts as usize,
        deferred.len(),
        "every attempt deferred, then expired"
    );
    let age_s = (t_ns(expired) - accepted) as f64 / 1e9;
    assert!(
        (3.0..6.5).contains(&age_s),
        "expired {age_s:.1} s after acceptance (give_up 5 s)"
    );
    assert!(json_lines(&dir.path().join("receipts.jsonl")).is_empty());
    assert!(node.terminate().success());
    assert!(inbox.terminate().success());
}
