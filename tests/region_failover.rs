//! A region dies at load and comes back: two regions of one reference-MTA node each (real child
//! processes), a provider that takes 300 ms to accept each recipient (so the killed node holds
//! mail in flight and in its spool, and the surviving region alone runs behind), `kill region/east` (SIGKILL) and `restore region/east` (restart
//! on the same spool). Nothing accepted may be lost; the generator's balancer must evict the dead
//! node and re-admit it; the failover metrics must be present; the mail the dead node's spool
//! held at the kill must be delivered after the restore.

mod common;

use common::*;

const SLOW_INBOX: &str = r#"provider: slow
rules:
  - { stage: rcpt, delay: { dist: fixed, value: 300ms }, reply: "250 2.1.5 Ok" }
"#;

#[test]
fn region_kill_and_restore_loses_nothing() {
    let tmp = tempdir();
    let dir = tmp.path();
    std::fs::write(dir.join("slow.yaml"), SLOW_INBOX).unwrap();
    let scenario = dir.join("region-kill.yaml");
    std::fs::write(
        &scenario,
        "name: region-kill\nseed: 11\nduration: 14s\ndrain: 25s\n\
         slo: { delivery_time: 3s, target: 90% }\n\
         thresholds: [ 'lost == 0' ]\n\
         regions:\n  - { name: east, nodes: 1 }\n  - { name: west, nodes: 1 }\n\
         mta:\n  retry: { initial: 500ms, factor: 2, max_delay: 2s, jitter: 20%, give_up: 60s }\n\
           \x20 egress_pools: { shared: [127.0.1.1] }\n\
         providers:\n  - { name: slow, domains: [example.com], rules: ./slow.yaml }\n\
         traffic: { rate: 40/s, domains: { example.com: 100% }, size: 2KiB, connections: 8 }\n\
         chaos:\n  - { at: 4s, action: kill, target: region/east }\n  - { at: 9s, action: restore, target: region/east }\n",
    )
    .unwrap();
    let out = dir.join("report");
    let started = std::time::Instant::now();
    let (code, stderr) = run_scenario(&scenario, &out);
    assert!(started.elapsed().as_secs() <= 60, "took {:?}", started.elapsed());
    let s = read_json(&out.join("summary.json"));
    assert_schema_valid(&s);
    let c = &s["counts"];
    assert_eq!(c["lost"], 0, "{c}\n{stderr}");
    assert_eq!(c["stranded"], 0, "east is alive again at the end: {c}");
    assert_eq!(c["queued"], 0, "{c}");
    assert_eq!(
        c["accepted"].as_u64().unwrap(),
        c["delivered"].as_u64().unwrap(),
        "every accepted message delivered: {c}"
    );
    assert_eq!(code, Some(0), "{stderr}");

    let faults = s["faults"].as_array().expect("faults");
    assert_eq!(faults.len(), 2, "{faults:?}");
    let kill = &faults[0];
    assert_eq!(kill["action"], "kill");
    assert_eq!(kill["target"], "region/east");
    let detection = kill["detection_s"].as_f64().expect("detection_s");
    assert!((0.0..2.0).contains(&detection), "detection {detection}");
    assert!(kill["recovery_s"].as_f64().is_some(), "recovery_s: {kill}");
    assert_eq!(kill["lost"], 0);
    let held = kill["held_delivered_after_restore"]
        .as_u64()
        .expect("held_delivered_after_restore");
    assert!(
        held > 0,
        "mail in the dead node's spool is delivered after restore: {kill}"
    );
    assert_eq!(kill["held_undelivered"].as_u64().unwrap_or(0), 0, "{kill}");
    assert_eq!(faults[1]["action"], "restore");
    assert!(
        faults[1]["detection_s"].as_f64().is_some(),
        "admission after restore: {}",
        faults[1]
    );

    // The balancer's view and the chaos actions are in the events.
    let events = run_events(&out);
    let has = |kind: &str, node: &str| {
        events
            .lines()
            .any(|l| l.contains(&format!("\"event\":\"{kind}\"")) && l.contains(node))
    };
    assert!(has("fault", "kill region/east"));
    assert!(has("evicted", "east-1"));
    assert!(has("admitted", "east-1"));
    // Stranded messages: accepted by east before the kill, delivered after the restore.
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"event\":\"delivered\"") && l.contains("east-1")),
        "the restarted node delivers"
    );
    // run.log keeps the run's lines, chaos actions included, with timestamps.
    let log = std::fs::read_to_string(out.join("run.log")).expect("run.log");
    assert!(log.contains("mailsurge run `region-kill`"), "{log}");
    assert!(
        log.contains("chaos: kill region/east") && log.contains("chaos: restore region/east"),
        "{log}"
    );
    for chart in ["delivery-time", "queue-depth", "delivery-time-by-region"] {
        assert!(out.join("charts").join(format!("{chart}.png")).exists(), "{chart}.png");
    }
}

/// A provider refuses connections (its listeners closed) and is restored on the same
/// addresses: the MTA's queued mail must reach it after the restore, nothing lost.
#[test]
fn provider_refuse_and_restore_delivers_everything() {
    let tmp = tempdir();
    let scenario = tmp.path().join("provider-down.yaml");
    std::fs::write(
        &scenario,
        "name: provider-down\nseed: 3\nduration: 8s\ndrain: 15s\n\
         slo: { delivery_time: 5s, target: 90% }\n\
         thresholds: [ 'lost == 0' ]\n\
         regions: [ { name: a, nodes: 1 } ]\n\
         mta: { retry: { initial: 500ms, factor: 2, max_delay: 2s, jitter: 0%, give_up: 60s }, egress_pools: { shared: [127.0.1.1] } }\n\
         providers:\n  - { name: g, domains: [example.com], rules: generic, mx: 2 }\n\
         traffic: { rate: 50/s, domains: { example.com: 100% }, connections: 4 }\n\
         chaos:\n  - { at: 2s, action: kill, target: provider/g, mode: refuse }\n  - { at: 5s, action: restore, target: provider/g }\n",
    )
    .unwrap();
    let out = tmp.path().join("report");
    let (code, stderr) = run_scenario(&scenario, &out);
    let s = read_json(&out.join("summary.json"));
    let c = &s["counts"];
    assert_eq!(c["lost"], 0, "{c}\n{stderr}");
    assert_eq!(c["queued"], 0, "the restored provider takes the queued mail: {c}");
    assert_eq!(c["delivered"], c["accepted"], "{c}");
    assert_eq!(code, Some(0), "{stderr}");
    let kill = &s["faults"][0];
    assert_eq!(
        (kill["action"].as_str(), kill["target"].as_str()),
        (Some("kill"), Some("provider/g"))
    );
    assert!(kill["detection_s"].as_f64().is_some(), "{kill}");
}
