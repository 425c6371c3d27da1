//! `mailsurge capacity`: the knee search over real runs (SPEC §10). Small and fast here: the
//! smoke topology between two rates; the full acceptance (a provider's per-IP limit found
//! within ±10%) needs bottleneck attribution and comes with it.

mod common;

use common::*;

#[test]
fn a_small_search_runs_real_probes_and_writes_capacity_json() {
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
    assert_eq!(c["schema"], "mailsurge.capacity/v1");
    assert_eq!(c["end"], "at_least_max", "{c}");
    assert_eq!(c["knee_per_s"], 400.0);
    assert_eq!(c["pass"], true);
    let probes = c["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 2, "{c}");
    for p in probes {
        assert_eq!(p["verdict"], "pass", "{p}");
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

/// The scenario's `capacity: { headroom }` is the gate: a knee of at least 400/s does not
/// carry 5× smoke's 100/s peak (exit 1); `--headroom` overrides it.
#[test]
fn the_scenarios_headroom_is_the_gate() {
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
            "400/s".into(),
            "--max".into(),
            "400/s".into(),
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
