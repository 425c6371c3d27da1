//! The drain ends when the MTAs are done, not when the inboxes are: a mailbox that holds its
//! 250 for seconds (the profiles' `slow` recipients) must not let the run stop its nodes while
//! the message is still in their spools. And a slow 250 is a slow delivery: the receipt's time
//! is when the 250 went out.

mod common;

use common::*;

/// Every message is answered 250 six seconds after its final dot: longer than a stopping node
/// waits for its deliveries in flight (5 s), so a run that stopped its nodes on the receipts
/// would leave the last messages in their spools.
const SLOW_250: &str = r#"provider: slow
rules:
  - { stage: message, delay: { dist: fixed, value: 6s }, reply: "250 2.0.0 Ok: queued" }
"#;

#[test]
fn a_slow_250_keeps_the_run_going_until_the_mta_has_heard_it() {
    let tmp = tempdir();
    let dir = tmp.path();
    std::fs::write(dir.join("slow.yaml"), SLOW_250).unwrap();
    let scenario = dir.join("slow-250.yaml");
    std::fs::write(
        &scenario,
        "name: slow-250\nseed: 5\nduration: 2s\ndrain: 30s\n\
         slo: { delivery_time: 60s, target: 50% }\n\
         thresholds: [ 'lost == 0' ]\n\
         regions:\n  - { name: r, nodes: 2 }\n\
         mta:\n  egress_pools: { shared: [127.0.1.1] }\n\
         providers:\n  - { name: slow, domains: [example.com], rules: ./slow.yaml }\n\
         traffic: { rate: 5/s, domains: { example.com: 100% }, size: 2KiB, connections: 4 }\n",
    )
    .unwrap();
    let out = dir.join("report");
    let (code, stderr) = run_scenario(&scenario, &out);
    assert_eq!(code, Some(0), "{stderr}");
    let s = read_json(&out.join("summary.json"));
    assert_schema_valid(&s);
    let c = &s["counts"];
    assert!(c["accepted"].as_u64().unwrap() >= 5, "{c}");
    assert_eq!(c["accepted"], c["delivered"], "{c}");
    assert_eq!(c["queued"], 0, "nothing left in a spool: {c}");
    assert_eq!(
        s["contradictions"]["total"], 0,
        "a received message left in a spool is a run that ended too early: {}\n{stderr}",
        s["contradictions"]
    );
    // Every recipient took at least the inbox's 6 s to be delivered.
    let p50 = s["delivery_ms"]["p50"].as_f64().unwrap();
    assert!(
        p50 >= 6000.0,
        "p50 {p50} ms: the receipt must carry the time of the 250"
    );
    // And the drain did not sit out a grace period: all MTA lines arrive within a second or so.
    assert!(!stderr.contains("still without their MTA's delivered line"), "{stderr}");
}
