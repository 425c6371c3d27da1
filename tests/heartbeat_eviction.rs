//! The generator's balancer evicts a node on a heartbeat timeout, not only on a failed
//! submission: a node that is SIGSTOPped mid-run still completes TCP handshakes (the kernel
//! does that) but never answers, so submissions to it hang instead of failing. Only the
//! heartbeat's deadline ([`HEARTBEAT_TIMEOUT`], 1 s) can take it out of rotation. After
//! SIGCONT its heartbeats pass again and it is re-admitted.
//!
//! [`HEARTBEAT_TIMEOUT`]: mailsurge::traffic::balance::HEARTBEAT_TIMEOUT

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// The pid of the process whose command line names `needle` (a node's config path).
fn pid_with_arg(needle: &str) -> Option<Pid> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmd.split(|b| *b == 0).any(|a| a == needle.as_bytes()) {
            return Some(Pid::from_raw(pid));
        }
    }
    None
}

/// The `mailsurge run` child and the node it stopped: on drop (a failed assertion), the node is
/// continued and the run told to stop, so nothing is left behind.
struct Guard {
    run: Child,
    stopped: Option<Pid>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.stopped.take() {
            let _ = kill(p, Signal::SIGCONT);
        }
        if self.run.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(self.run.id() as i32), Signal::SIGTERM);
            let _ = self.run.wait();
        }
    }
}

fn count(path: &Path, what: &str) -> usize {
    std::fs::read_to_string(path).unwrap_or_default().matches(what).count()
}

#[test]
fn a_wedged_node_is_evicted_by_heartbeat_timeout_and_readmitted() {
    let tmp = tempdir();
    let dir = tmp.path();
    let scenario = dir.join("wedged.yaml");
    std::fs::write(
        &scenario,
        "name: wedged\nseed: 21\nduration: 9s\ndrain: 15s\n\
         slo: { delivery_time: 10s, target: 90% }\n\
         thresholds: [ 'lost == 0' ]\n\
         regions: [ { name: a, nodes: 2 } ]\n\
         mta:\n  retry: { initial: 500ms, factor: 2, max_delay: 2s, jitter: 20%, give_up: 60s }\n\
         \x20 egress_pools: { shared: [127.0.1.1] }\n\
         providers:\n  - { name: g, domains: [example.com], rules: generic }\n\
         traffic: { rate: 20/s, domains: { example.com: 100% }, connections: 8 }\n",
    )
    .unwrap();
    let out = dir.join("run");
    let log = dir.join("run.err");
    let run = Command::new(bin())
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ])
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn mailsurge run");
    let mut g = Guard { run, stopped: None };

    let cfg = out.join("nodes/a-2/node.yaml");
    let node = wait_for(Duration::from_secs(60), || pid_with_arg(cfg.to_str().unwrap())).expect("node a-2's pid");
    // Traffic is flowing to a-2 before it is wedged.
    let a2_events = out.join("nodes/a-2/events.jsonl");
    wait_for(Duration::from_secs(60), || {
        (count(&a2_events, "\"accepted\"") >= 15).then_some(())
    })
    .expect("a-2 accepts mail");

    kill(node, Signal::SIGSTOP).unwrap();
    g.stopped = Some(node);
    let t_stop = now_ns();
    std::thread::sleep(Duration::from_secs(3));
    kill(node, Signal::SIGCONT).unwrap();
    g.stopped = None;
    let t_cont = now_ns();

    let status = wait_for(Duration::from_secs(120), || g.run.try_wait().ok().flatten()).expect("the run ends");
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let s = read_json(&out.join("summary.json"));
    assert_schema_valid(&s);
    let c = &s["counts"];
    assert_eq!(c["lost"], 0, "{c}\n{stderr}");
    assert_eq!(c["delivered"], c["accepted"], "{c}");
    assert_eq!(status.code(), Some(0), "{stderr}");

    let ev = run_event_values(&out);
    let is = |e: &Value, k: &str, node: &str| e["event"] == k && e["node"] == node;
    let t = |e: &Value| e["t"].as_u64().unwrap_or(0);
    let evicted: Vec<&Value> = ev
        .iter()
        .filter(|e| is(e, "evicted", "a-2") && t(e) >= t_stop)
        .collect();
    let first = *evicted.first().expect("a-2 evicted while stopped");
    let text = first["text"].as_str().unwrap_or("");
    let after_ms = (t(first) - t_stop) / 1_000_000;
    eprintln!("a-2 evicted {after_ms} ms after SIGSTOP: {text}");
    assert!(
        text.starts_with("heartbeat: no answer within"),
        "evicted by the heartbeat's deadline, not a failed submission: {text}"
    );
    // No heartbeat can time out sooner than its 1 s deadline after the node stopped answering
    // (one sent just before the stop expires at least ~1 s after it); the upper bound is only
    // that it happens while the node is stopped.
    assert!(after_ms >= 750, "{after_ms} ms");
    assert!(t(first) < t_cont, "evicted before SIGCONT");
    assert!(
        !ev.iter().any(|e| is(e, "evicted", "a-1")),
        "the healthy node is never evicted"
    );

    // While evicted, nothing new is submitted to a-2; a-1 takes the load.
    let admitted = ev
        .iter()
        .filter(|e| is(e, "admitted", "a-2") && t(e) >= t_cont)
        .map(t)
        .min()
        .expect("a-2 re-admitted after SIGCONT");
    let submitted = |node: &str, from: u64, to: u64| {
        ev.iter()
            .filter(|e| is(e, "submitted", node) && (from..to).contains(&t(e)))
            .count()
    };
    assert_eq!(
        submitted("a-2", t(first), admitted),
        0,
        "no submissions to an evicted node"
    );
    assert!(submitted("a-1", t(first), t_cont) > 10, "a-1 takes the load");
    assert!(
        submitted("a-2", admitted, u64::MAX) > 0,
        "a-2 takes mail again after re-admission"
    );
}
