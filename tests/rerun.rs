//! A run directory's `scenario.yaml` is self-contained: `mailsurge run <dir>/scenario.yaml`
//! works from anywhere (rule and response tables named by path travel along under `files/`)
//! and plays the same schedule — the same messages, recipients and intended offsets.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;

/// (id's sequence number, recipient) → intended offset from the run's start, ns.
fn schedule(dir: &Path) -> BTreeMap<(u64, String), u64> {
    let start = read_json(&dir.join("run.json"))["start_ns"].as_u64().unwrap();
    run_events(dir)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| matches!(e["event"].as_str(), Some("submitted" | "rejected" | "unsubmitted")))
        .map(|e| {
            let id = e["id"].as_str().unwrap();
            let seq: u64 = id.rsplit('.').next().unwrap().parse().unwrap();
            let rcpt = e["rcpt"].as_str().unwrap().to_string();
            ((seq, rcpt), e["intended"].as_u64().unwrap() - start)
        })
        .collect()
}

#[test]
fn a_run_directory_reruns_to_the_same_schedule() {
    let tmp = tempdir();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("rules/quick.yaml"),
        "provider: quick\nrules:\n  - { stage: rcpt, rcpt: '^nobody@', reply: \"550 5.1.1 unknown\" }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("rerun.yaml"),
        "name: rerun\nseed: 11\nduration: 2s\ndrain: 3s\n\
         slo: { delivery_time: 2s, target: 90% }\n\
         regions:\n  - { name: local, nodes: 1 }\n\
         mta:\n  responses: ../../scenarios/deliverability.yaml\n  egress_pools: { shared: [127.0.1.1] }\n\
         providers:\n  - { name: quick, domains: [example.com], rules: ./rules/quick.yaml }\n\
         traffic: { rate: 40/s, domains: { example.com: 100% }, size: 1KiB, connections: 4 }\n"
            .replace(
                "../../scenarios/deliverability.yaml",
                repo().join("scenarios/deliverability.yaml").to_str().unwrap(),
            )
            .as_str(),
    )
    .unwrap();
    let first = dir.join("first");
    let o = mailsurge(&[
        "run",
        dir.join("rerun.yaml").to_str().unwrap(),
        "--out",
        first.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let kept = std::fs::read_to_string(first.join("scenario.yaml")).unwrap();
    assert!(kept.contains("rules: ./files/rules-quick.yaml"), "{kept}");
    assert!(kept.contains("responses: ./files/responses.yaml"), "{kept}");
    assert!(first.join("files/rules-quick.yaml").is_file());

    // The originals are gone; the directory alone reruns, from another working directory.
    std::fs::remove_dir_all(dir.join("rules")).unwrap();
    let second = dir.join("second");
    let o = std::process::Command::new(bin())
        .args(["run", "scenario.yaml", "--out", second.to_str().unwrap(), "--quiet"])
        .current_dir(&first)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (schedule(&first), schedule(&second));
    assert!(a.len() > 40, "{} messages", a.len());
    assert_eq!(a, b, "the rerun plays the same schedule");
}
