//! `mailsurge run` on the shared queue (`spool: nats`, SPEC §9), end to end with real
//! processes: the run starts its own nats-server, two nodes in two regions share one JetStream
//! queue, and one region is SIGKILLed mid-run and never restored. One message in ten goes to a
//! provider that answers the final dot 2 s late, so the killed node holds mail under lease when
//! it dies; one in ten to a greylisting provider, so mail waits for its retry when it dies (in
//! the dead node's spool on local disk; back in the queue on the shared one).
//!
//! - on `spool: nats` the survivor takes that mail over after the lease: nothing stranded,
//!   nothing lost, and the fault row has a `takeover_s` of about one lease;
//! - the same scenario with `--spool local` strands the killed node's mail in its spool;
//! - killing and restoring nats-server itself loses nothing the nodes acknowledged and
//!   delivers nothing they refused.

mod common;

use std::path::Path;

use common::*;

/// The scenario, with `chaos` as given.
fn scenario(dir: &Path, chaos: &str) -> std::path::PathBuf {
    std::fs::write(
        dir.join("slow.yaml"),
        "provider: slowisp\nrules:\n  - { stage: message, delay: { dist: fixed, value: 2s }, reply: \"250 2.0.0 Ok: queued\" }\n",
    )
    .unwrap();
    let path = dir.join("sq.yaml");
    std::fs::write(
        &path,
        format!(
            "name: sq\nseed: 7\nduration: 10s\ndrain: 15s\n\
             slo: {{ delivery_time: 5s, target: 90% }}\n\
             thresholds: [ 'lost == 0', 'stranded == 0' ]\n\
             regions:\n  - {{ name: east, nodes: 1 }}\n  - {{ name: west, nodes: 1 }}\n\
             mta:\n  spool: nats\n  lease: 1s\n  retry: {{ initial: 500ms, factor: 1, max_delay: 500ms, jitter: 0%, give_up: 1m }}\n  \
             egress_pools: {{ shared: [127.0.1.1] }}\n\
             providers:\n  - {{ name: generic, domains: [example.com], rules: generic }}\n  \
             - {{ name: slowisp, domains: [slow.test], rules: ./slow.yaml }}\n  \
             - {{ name: greyisp, domains: [grey.test], rules: {grey} }}\n\
             traffic:\n  rate: 30/s\n  domains: {{ example.com: 80%, slow.test: 10%, grey.test: 10% }}\n  size: 2KiB\n  connections: 8\n\
             chaos:\n{chaos}",
            grey = repo().join("mock-inboxes/greylisting.yaml").display()
        ),
    )
    .unwrap();
    path
}

fn summary(out: &Path) -> serde_json::Value {
    let s = read_json(&out.join("summary.json"));
    assert_schema_valid(&s);
    s
}

#[test]
fn a_dead_regions_mail_is_taken_over_on_nats_and_stranded_on_local_spools() {
    nats_server_bin(); // installed first: a missing server fails here, with the reason
    let dir = tempdir();
    let path = scenario(dir.path(), "  - { at: 4s, action: kill, target: region/east }\n");

    let out = dir.path().join("nats");
    let (code, stderr) = run_scenario(&path, &out);
    let s = summary(&out);
    let c = &s["counts"];
    assert_eq!(code, Some(0), "{stderr}\n{:#}", s["reasons"]);
    assert_eq!((c["lost"].as_u64(), c["stranded"].as_u64()), (Some(0), Some(0)), "{c}");
    assert!(c["delivered"].as_u64().unwrap() >= 270, "{c}");
    assert_eq!(s["spool"]["kind"], "nats");
    let run = read_json(&out.join("run.json"));
    assert!(
        run["spool"]["durability"]
            .as_str()
            .unwrap()
            .contains("sync_interval: always"),
        "{}",
        run["spool"]
    );
    let kill = s["faults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["action"] == "kill")
        .unwrap()
        .clone();
    let takeover = kill["takeover_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("takeover_s: {kill}"));
    // About one lease (1 s) after the kill: it runs from the dead node's last renewal, made
    // every third of a lease, so at least two thirds of one; plus a pull on a loaded machine.
    assert!((0.6..6.0).contains(&takeover), "takeover {takeover} s: {kill}");
    assert_eq!(kill["held_undelivered"], 0, "{kill}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| takeover |"), "{md}");

    // The same day on each node's own disk: east's queued mail is stranded.
    let out = dir.path().join("local");
    let o = mailsurge(&[
        "run",
        path.to_str().unwrap(),
        "--spool",
        "local",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let s = summary(&out);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(s["counts"]["stranded"].as_u64().unwrap() > 0, "{}", s["counts"]);
    assert_eq!(s["spool"]["kind"], "local");
}

#[test]
fn killing_the_queue_server_loses_nothing_acknowledged_and_delivers_nothing_refused() {
    nats_server_bin();
    let dir = tempdir();
    let path = scenario(
        dir.path(),
        "  - { at: 3s, action: kill, target: nats }\n  - { at: 5s, action: restore, target: nats }\n",
    );
    let out = dir.path().join("out");
    let (_, stderr) = run_scenario(&path, &out);
    let s = summary(&out);
    let c = &s["counts"];
    assert_eq!(c["lost"], 0, "{stderr}\n{c}");
    assert_eq!(c["stranded"], 0, "{c}");
    // While the server was away the nodes answered 451 at DATA: refused, never delivered.
    assert!(c["rejected_at_submit"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(s["contradictions"]["total"], 0, "{}", s["contradictions"]);
    let faults = s["faults"].as_array().unwrap();
    assert!(
        faults.iter().any(|f| f["target"] == "nats" && f["action"] == "kill"),
        "{faults:?}"
    );
}

/// The network rule holds for the queue server too: a scenario or node config naming one off
/// loopback is refused by `validate` (exit 2, file:line:col), and nothing connects to it.
#[test]
fn a_queue_server_off_loopback_is_refused() {
    let dir = tempdir();
    let text = std::fs::read_to_string(repo().join("scenarios/shared-queue.yaml"))
        .unwrap()
        .replace("  lease: 5s\n", "  lease: 5s\n  nats: nats://192.0.2.7:4222\n");
    let path = dir.path().join("off-loopback.yaml");
    std::fs::write(&path, text).unwrap();
    let o = mailsurge(&["validate", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("off-loopback.yaml:") && err.contains("192.0.2.7"), "{err}");

    let node = dir.path().join("node.yaml");
    std::fs::write(
        &node,
        "node: n-1\nregion: r\nlisten: 127.0.0.1:0\nrelay_networks: [127.0.0.0/8]\n\
         spool: { kind: nats, url: \"nats://192.0.2.7:4222\" }\n\
         routes: { example.com: [127.0.0.1:2525] }\nevents: events.jsonl\n",
    )
    .unwrap();
    let o = mailsurge(&["validate", node.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("node.yaml:5:") && err.contains("`192.0.2.7` (spool: url) is not loopback"),
        "{err}"
    );
}
