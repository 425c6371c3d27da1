//! `mailsurge capacity`: the knee search over real runs (SPEC §10): probes as run
//! directories, capacity.json against its schema, the report and chart, the gate, and the
//! knee and bottleneck of a topology whose only limit is a provider's per-source-IP rate
//! (a small, fast version of `scenarios/provider-limit.yaml`).

mod common;

use common::*;

/// Searches that measure a knee do not share the box with other searches: a knee is a
/// measurement, and two cores split four ways move it.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn measuring() -> std::sync::MutexGuard<'static, ()> {
    MEASURING.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_small_search_runs_real_probes_and_writes_capacity_json() {
    let _box = measuring();
    let dir = tempdir();
    let out = dir.path().join("cap");
    let o = mailsurge(&[
        "capacity",
        "scenarios/smoke.yaml",
        "--min",
        "200/s",
        "--max",
        "400/s",
        "--step",
        "2s",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    // Both probes pass: the knee is at least --max, above smoke's 100/s peak.
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    let c = read_json(&out.join("capacity.json"));
    assert_valid_against("capacity.v1.schema.json", &c);
    assert_eq!(c["schema"], "mailsurge.capacity/v1");
    assert_eq!(c["end"], "at_least_max", "{c}");
    // Nothing saturates smoke at 400/s; the report says so and shows the chart.
    assert_eq!(c["saturated"], "none", "{c}");
    assert!(stdout.contains("bottleneck at 400/s: nothing saturated"), "{stdout}");
    for f in [
        "report.md",
        "report.html",
        "charts/latency-vs-rate.png",
        "charts/latency-vs-rate.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("knee 400/s") && md.contains("](probes/02-400/report.html)"),
        "{md}"
    );
    assert!(
        stderr.contains("probe 1 of ~") && stderr.contains("200/s PASS"),
        "{stderr}"
    );
    assert_eq!(c["knee_per_s"], 400.0);
    assert_eq!(c["pass"], true);
    let probes = c["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 2, "{c}");
    for p in probes {
        assert_eq!(p["verdict"], "pass", "{p}");
        // CPU per process kind over the judged window, from the probe's cpu.json.
        let kinds: Vec<&str> = p["attribution"]["cpu"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["kind"].as_str().unwrap())
            .collect();
        for k in ["generator", "inboxes", "node"] {
            assert!(kinds.contains(&k), "{k} missing in {p}");
        }
        // Each probe is a normal run directory.
        let run = out.join(p["dir"].as_str().unwrap());
        assert_schema_valid(&read_json(&run.join("summary.json")));
    }
}

#[test]
fn a_down_target_that_does_not_exist_is_a_usage_error() {
    let dir = tempdir();
    let out = dir.path().join("cap");
    let o = mailsurge(&[
        "capacity",
        "scenarios/smoke.yaml",
        "--down",
        "region/mars",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("region/mars"), "{stderr}");
    assert!(!out.join("probes").exists(), "nothing ran");
}

/// The scenario's `capacity: { headroom }` is the gate: a knee of at least 200/s does not
/// carry 5× smoke's 100/s peak (exit 1); `--headroom` overrides it.
#[test]
fn the_scenarios_headroom_is_the_gate() {
    let _box = measuring();
    let dir = tempdir();
    // smoke, with its one rule table path made a shipped name (the copy lives elsewhere).
    let smoke = std::fs::read_to_string(repo().join("scenarios/smoke.yaml"))
        .unwrap()
        .replace("../mock-inboxes/generic.yaml", "generic");
    let text = smoke.clone() + "capacity: { headroom: 5 }\n";
    let path = dir.path().join("gate.yaml");
    std::fs::write(&path, text).unwrap();
    let out = dir.path().join("cap");
    let args = |out: &std::path::Path| {
        vec![
            "capacity".to_string(),
            path.to_str().unwrap().into(),
            "--min".into(),
            "200/s".into(),
            "--max".into(),
            "200/s".into(),
            "--step".into(),
            "2s".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let a = args(&out);
    let o = mailsurge(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let c = read_json(&out.join("capacity.json"));
    assert_eq!(
        (c["headroom"].as_f64(), c["pass"].as_bool()),
        (Some(5.0), Some(false)),
        "{c}"
    );

    let out2 = dir.path().join("cap2");
    let mut a = args(&out2);
    a.extend(["--headroom".into(), "2".into()]);
    let o = mailsurge(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));

    // A headroom that is not a positive number is refused where it is written.
    std::fs::write(&path, smoke + "capacity: { headroom: 0 }\n").unwrap();
    let o = mailsurge(&["validate", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("gate.yaml:") && err.contains("headroom"), "{err}");
}

/// A topology whose only limit is a provider's per-source-IP rate (200/s, GCRA burst 20),
/// reached through `ips` egress addresses with plain deferral on 4xx; the search's knee and
/// its bottleneck sentence.
fn provider_limit_search(dir: &std::path::Path, ips: &[&str], max: &str) -> serde_json::Value {
    let rules = std::fs::read_to_string(repo().join("mock-inboxes/rate-capped.yaml"))
        .unwrap()
        .replace("rate: 400/s, burst: 40", "rate: 200/s, burst: 20");
    assert!(rules.contains("rate: 200/s"), "the shipped limit moved: {rules}");
    std::fs::write(dir.join("rate-capped.yaml"), rules).unwrap();
    std::fs::copy(repo().join("scenarios/plain-defer.yaml"), dir.join("plain-defer.yaml")).unwrap();
    let scenario = std::fs::read_to_string(repo().join("scenarios/provider-limit.yaml"))
        .unwrap()
        .replace("../mock-inboxes/rate-capped.yaml", "rate-capped.yaml")
        .replace("shared: [127.0.1.1]", &format!("shared: [{}]", ips.join(", ")))
        .replace("arrival: poisson", "arrival: uniform")
        .replace("rate: 300/s", "rate: 150/s");
    let path = dir.join("limit.yaml");
    std::fs::write(&path, scenario).unwrap();
    let out = dir.join("cap");
    let o = mailsurge(&[
        "capacity",
        path.to_str().unwrap(),
        "--min",
        "100/s",
        "--max",
        max,
        "--warmup",
        "2s",
        "--step",
        "4s",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{stderr}");
    let c = read_json(&out.join("capacity.json"));
    assert_valid_against("capacity.v1.schema.json", &c);
    c
}

/// The knee is the provider's limit (±10%) with one egress address and twice it (±15%) with
/// two, and the bottleneck names the provider's limit, its reply and the addresses.
#[test]
fn the_knee_of_a_provider_limited_topology_is_the_limit_times_the_addresses() {
    let _box = measuring();
    let (a, b) = (tempdir(), tempdir());
    let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());
    // The two searches are light (≤ 500 msg/s); side by side they take half the time.
    let one = std::thread::spawn(move || provider_limit_search(&pa, &["127.0.1.1"], "400/s"));
    let two = provider_limit_search(&pb, &["127.0.1.1", "127.0.1.2"], "800/s");
    let one = one.join().unwrap();
    // With two addresses the limit may show on one of them only: the node picks a source
    // address per connection, and connections carry unequal shares of the mail.
    for (c, limit, tol) in [(&one, 200.0, 0.10), (&two, 400.0, 0.15)] {
        let knee = c["knee_per_s"].as_f64().unwrap_or(0.0);
        assert!(
            (knee - limit).abs() <= limit * tol,
            "knee {knee}/s, limit {limit}/s: {c:#}"
        );
        assert_eq!(c["end"], "knee", "{c:#}");
        assert_eq!(c["saturated"], "provider", "{c:#}");
        let b = c["bottleneck"].as_str().unwrap();
        assert!(
            b.contains("provider isp capped: 421 4.7.0")
                && b.contains("[CAP]")
                && b.contains("from 127.0.1.")
                && b.contains("per-source-IP rate limit 200/s"),
            "{b}"
        );
    }
}

/// A probe the scenario's own `abort:` condition stops is a failed probe — the system gave out
/// at that rate, and the condition only said so sooner — not an error that ends the search
/// unjudged (exit 3).
#[test]
fn a_probe_stopped_by_an_abort_condition_is_a_failed_probe() {
    let _box = measuring();
    let dir = tempdir();
    let scenario = std::fs::read_to_string(repo().join("scenarios/smoke.yaml"))
        .unwrap()
        .replace("rules: ../mock-inboxes/generic.yaml", "rules: generic")
        + "abort: [ 'delivered > 20' ]\n";
    let path = dir.path().join("aborting.yaml");
    std::fs::write(&path, scenario).unwrap();
    let out = dir.path().join("cap");
    let o = mailsurge(&[
        "capacity",
        path.to_str().unwrap(),
        "--min",
        "200/s",
        "--max",
        "400/s",
        "--warmup",
        "1s",
        "--step",
        "2s",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let c = read_json(&out.join("capacity.json"));
    assert_valid_against("capacity.v1.schema.json", &c);
    assert_eq!(c["end"], "below_min", "{c:#}");
    let p = &c["probes"][0];
    assert_eq!(p["verdict"], "fail", "{p:#}");
    let why = p["reasons"][0].as_str().unwrap_or("");
    assert!(why.starts_with("aborted: abort condition \"delivered > 20\""), "{why}");
}
