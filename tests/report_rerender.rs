//! `mailsurge report RUN_DIR` rebuilds every report file from the run directory's raw data
//! alone (events.jsonl, scenario.yaml, run.json) and gets the run's own numbers back: the
//! re-rendered summary.json is byte-identical, even with the outputs and the node spools gone.

mod common;

use common::*;

/// Every recipient takes 300 ms to accept, so a killed node dies holding mail in its spool.
const SLOW_INBOX: &str = r#"provider: slow
rules:
  - { stage: rcpt, delay: { dist: fixed, value: 300ms }, reply: "250 2.1.5 Ok" }
"#;

/// Outputs `report` writes; all deleted before re-rendering.
const OUTPUTS: [&str; 5] = ["summary.json", "report.md", "report.html", "latency.hlog", "charts"];

#[test]
fn report_rerenders_a_chaos_run_identically_from_raw_data() {
    let tmp = tempdir();
    let dir = tmp.path();
    std::fs::write(dir.join("slow.yaml"), SLOW_INBOX).unwrap();
    let scenario = dir.join("dead-region.yaml");
    // East is killed and never restored: its spool leftovers are stranded mail, which only
    // run.json remembers once the spools are deleted.
    std::fs::write(
        &scenario,
        "name: dead-region\nseed: 5\nduration: 8s\ndrain: 6s\n\
         slo: { delivery_time: 3s, target: 90% }\n\
         thresholds: [ 'lost == 0', 'p50 < 2s' ]\n\
         regions:\n  - { name: east, nodes: 1 }\n  - { name: west, nodes: 1 }\n\
         mta:\n  retry: { initial: 500ms, factor: 2, max_delay: 2s, jitter: 20%, give_up: 60s }\n\
           \x20 egress_pools: { shared: [127.0.1.1] }\n\
         providers:\n  - { name: slow, domains: [example.com], rules: ./slow.yaml }\n\
         traffic: { rate: 40/s, domains: { example.com: 100% }, size: 2KiB, connections: 8 }\n\
         chaos:\n  - { at: 3s, action: kill, target: region/east }\n",
    )
    .unwrap();
    let out = dir.join("run");
    let (code, stderr) = run_scenario(&scenario, &out);
    assert!(matches!(code, Some(0 | 1)), "exit {code:?}\n{stderr}");
    let original = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    let s = read_json(&out.join("summary.json"));
    assert!(s["counts"]["stranded"].as_u64().unwrap() > 0, "{}", s["counts"]);
    let run = read_json(&out.join("run.json"));
    assert_eq!(run["schema"], "mailsurge.run/v1");
    assert_eq!(run["nodes"][0]["alive"], false, "{run}");
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(html.contains("kill region/east") && html.contains("id=\"faults\""));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "report.html names a URL"
    );

    for f in OUTPUTS {
        let p = out.join(f);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
    for node in ["east-1", "west-1"] {
        // A node may have no spool directory left (a drained node removes its last segment).
        match std::fs::remove_dir_all(out.join("nodes").join(node).join("spool")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot delete {node}'s spool: {e}"),
        }
    }
    let r = mailsurge(&["report", out.to_str().unwrap()]);
    let rerr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), code, "report exits with the run's verdict\n{rerr}");
    let again = std::fs::read_to_string(out.join("summary.json")).expect("re-rendered summary.json");
    assert_eq!(again, original, "re-rendered summary.json differs");
    for f in [
        "report.md",
        "report.html",
        "latency.hlog",
        "charts/slo.svg",
        "charts/queue-depth.png",
    ] {
        assert!(out.join(f).metadata().is_ok_and(|m| m.len() > 0), "{f} not re-rendered");
    }
    assert!(String::from_utf8_lossy(&r.stdout).contains("dead-region:"));
}

#[test]
fn report_on_a_directory_that_is_not_a_run_exits_2() {
    let tmp = tempdir();
    let o = mailsurge(&["report", tmp.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a run directory"), "{stderr}");
    assert!(!tmp.path().join("summary.json").exists(), "nothing is written");
}

/// Cross-witness contradictions injected into a real run's raw events (and its spool list)
/// are counted by `mailsurge report`, fail the run (exit 1) and name themselves in
/// summary.json, report.md and junit.xml.
#[test]
fn injected_contradictions_are_counted_and_fail_the_run() {
    let tmp = tempdir();
    let dir = tmp.path();
    let src = repo().join("reports/examples/smoke");
    for f in ["scenario.yaml", "events.jsonl", "run.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    // The clean run re-renders with no contradiction.
    let o = mailsurge(&["report", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read_json(&dir.join("summary.json"))["contradictions"]["total"], 0);

    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let first = |kind: &str| -> serde_json::Value {
        let line = events
            .lines()
            .find(|l| l.contains(&format!("\"event\":\"{kind}\"")))
            .unwrap();
        serde_json::from_str(line).unwrap()
    };
    let received = first("received");
    let (id, rcpt) = (received["id"].as_str().unwrap(), received["rcpt"].as_str().unwrap());
    let t = received["t"].as_u64().unwrap();
    let line = |id: &str, kind: &str, node: &str| {
        format!("{{\"t\":{t},\"id\":\"{id}\",\"event\":\"{kind}\",\"node\":\"{node}\",\"rcpt\":\"{rcpt}\"}}\n")
    };
    let mut extra = String::new();
    extra += &line("ghost.1", "received", "x"); // received_unaccepted
    extra += &line(id, "bounced", "local-1"); // failed_and_received
    extra += &line(id, "expired", "external"); // notice_for_delivered
    extra += &line("ghost.2", "delivered", "local-1"); // delivered_unseen
    std::fs::write(dir.join("events.jsonl"), events + &extra).unwrap();
    let mut run: serde_json::Value = read_json(&dir.join("run.json"));
    run["spooled"] = serde_json::json!([
        { "msg_id": id, "rcpt": rcpt, "node": "local-1" },       // spooled_and_received
        { "msg_id": "ghost.3", "rcpt": rcpt, "node": "local-1" }, // spooled_unaccepted
    ]);
    std::fs::write(dir.join("run.json"), serde_json::to_string(&run).unwrap()).unwrap();

    let o = mailsurge(&["report", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let s = read_json(&dir.join("summary.json"));
    assert_schema_valid(&s);
    let k = &s["contradictions"];
    for kind in [
        "received_unaccepted",
        "failed_and_received",
        "notice_for_delivered",
        "delivered_unseen",
        "spooled_and_received",
        "spooled_unaccepted",
    ] {
        assert!(k[kind].as_u64().unwrap() >= 1, "{kind} not counted: {k}");
    }
    // One of each kind.
    assert_eq!(k["total"], 6, "{k}");
    assert_eq!(s["verdict"], "fail");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("Contradictions 6"), "{md}");
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains("contradictions == 0") && junit.contains("observed 6, limit == 0"));
}
