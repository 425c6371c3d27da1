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
