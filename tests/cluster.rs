//! Distributed runs (SPEC §12) with real processes: a nats-server of the test's own, three
//! `mailsurge agent` processes each on its own loopback range — one hosting the generator, one
//! the inboxes, one the MTA region — and `mailsurge run --cluster` coordinating them.
//!
//! - the run's counts equal the same scenario and seed run on one host, and so does the number
//!   of messages generated in each second of the schedule;
//! - its merged latency histogram equals the inbox agent's own, bucket for bucket;
//! - TLS and AUTH work across agents: the generator submits over STARTTLS with AUTH, and the
//!   MTA agent's nodes deliver to gmail (which requires TLS) only over TLS verified against
//!   the coordinator's CA, whose certificates the inbox agent issued;
//! - an agent SIGKILLed mid-run is a fault of its own: marked, the run not judged (exit 3),
//!   the accounting identity still holding.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A `mailsurge agent`, killed on drop.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent(dir: &Path, url: &str, name: &str, range: &str) -> Agent {
    let log = std::fs::File::create(dir.join(format!("agent-{name}.log"))).unwrap();
    let child = Command::new(bin())
        .args(["agent", "--nats", url, "--name", name, "--addresses", range])
        .arg("--dir")
        .arg(dir.join(format!("agent-{name}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn agent");
    Agent(child)
}

/// A nats-server and the three agents `names`, each on its own loopback range 127.0.<first+i>.0/24.
fn cluster(dir: &Path, names: [&str; 3], first: u8) -> (TestNats, Vec<Agent>) {
    let nats = TestNats::start(dir);
    let url = nats.url();
    let agents = names
        .iter()
        .enumerate()
        .map(|(i, n)| agent(dir, &url, n, &format!("127.0.{}.0/24", first + i as u8)))
        .collect();
    (nats, agents)
}

/// A small two-provider, one-region day; `placement` puts each part on its agent.
fn scenario(dir: &Path) -> PathBuf {
    let path = dir.join("cl.yaml");
    std::fs::write(
        &path,
        "name: cl\nseed: 11\nduration: 6s\ndrain: 10s\n\
         slo: { delivery_time: 2s, target: 99% }\n\
         thresholds: [ 'lost == 0', 'duplicates == 0' ]\n\
         regions: [ { name: local, nodes: 2 } ]\n\
         mta:\n  retry: { initial: 300ms, factor: 2, max_delay: 2s, jitter: 0%, give_up: 20s }\n  \
         egress_pools: { shared: [127.0.1.1] }\n  tls: { required: [gmail.com] }\n\
         providers:\n  - { name: gmail, domains: [gmail.com], rules: generic, tls: required }\n  \
         - { name: generic, domains: [example.com], rules: generic }\n\
         traffic:\n  rate: 80/s\n  domains: { gmail.com: 50%, example.com: 50% }\n  size: 2KiB\n  connections: 8\n  \
         tls: starttls\n  auth: 'load:secret'\n\
         placement:\n  generators: [gen]\n  providers: { '*': inboxes }\n  regions: { local: mta }\n",
    )
    .unwrap();
    path
}

/// Messages the schedule intended in each second of the run (any outcome).
fn per_second(run: &Path) -> BTreeMap<u64, u64> {
    let start = read_json(&run.join("run.json"))["start_ns"].as_u64().unwrap();
    let mut out = BTreeMap::new();
    mailsurge::events::each_in_file(&run.join("events.jsonl.zst"), |e| {
        use mailsurge::events::Kind;
        if matches!(e.event, Kind::Submitted | Kind::Rejected | Kind::Unsubmitted) {
            *out.entry(e.intended.unwrap_or(0).saturating_sub(start) / 1_000_000_000)
                .or_default() += 1;
        }
        Ok(())
    })
    .unwrap();
    out
}

/// The `delivery` histograms of interval logs, summed.
fn delivery_total(paths: &[&Path]) -> Vec<(u64, u64)> {
    let merged = mailsurge::measure::hlog::read_merge(paths).expect("readable hlog");
    let t = mailsurge::measure::hlog::total(&merged["delivery"]);
    t.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn run_cluster(dir: &Path, url: &str, out: &Path) -> std::process::Output {
    Command::new(bin())
        .args(["run", "--quiet", "--cluster", url, "--out"])
        .arg(out)
        .arg(scenario(dir))
        .current_dir(repo())
        .output()
        .expect("spawn run")
}

#[test]
fn three_agents_run_the_one_host_schedule_and_merge_histograms_exactly() {
    let tmp = tempdir();
    let dir = tmp.path();
    let (nats, _agents) = cluster(dir, ["gen", "inboxes", "mta"], 40);
    let url = nats.url();
    let cl = dir.join("cluster-run");
    let out = run_cluster(dir, &url, &cl);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for (a, role) in [
        ("gen", "generator shard 0/1"),
        ("inboxes", "inboxes gmail generic"),
        ("mta", "region local"),
    ] {
        assert!(
            stderr.contains(&format!("agent {a}")) && stderr.contains(role),
            "{a}: {stderr}"
        );
    }
    // The inboxes and nodes listened on their agents' own ranges.
    assert!(stderr.contains("127.0.41.") && stderr.contains("127.0.42."), "{stderr}");

    let one = dir.join("one-host-run");
    let single = mailsurge(&[
        "run",
        "--quiet",
        "--out",
        one.to_str().unwrap(),
        scenario(dir).to_str().unwrap(),
    ]);
    assert_eq!(
        single.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&single.stderr)
    );

    let (a, b) = (
        read_json(&cl.join("summary.json")),
        read_json(&one.join("summary.json")),
    );
    assert_schema_valid(&a);
    for k in [
        "generated",
        "accepted",
        "delivered",
        "lost",
        "duplicates",
        "queued",
        "bounced",
    ] {
        assert_eq!(
            a["counts"][k], b["counts"][k],
            "count `{k}`: cluster {} vs one host {}",
            a["counts"], b["counts"]
        );
    }
    assert!(a["counts"]["generated"].as_u64().unwrap() > 300);
    assert_eq!(
        per_second(&cl),
        per_second(&one),
        "the shards' union is the one-host schedule"
    );

    // Every agent is on record with its clock offset, good to half a loopback round trip.
    let run = read_json(&cl.join("run.json"));
    let agents = run["cluster"]["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 3);
    for g in agents {
        assert!(g["offset_ns"].as_i64().unwrap().abs() < 50_000_000, "{g}");
        assert!(g["batches"].as_u64().unwrap() > 0, "{g}");
    }

    // Merged histogram = the sum of the agents' (one inbox agent here), bucket for bucket.
    let merged = delivery_total(&[&cl.join("latency.hlog")]);
    let agents_sum = delivery_total(&[&cl.join("agents/inboxes.latency.hlog")]);
    assert!(!merged.is_empty());
    assert_eq!(merged, agents_sum);
    assert_eq!(
        merged.iter().map(|(_, n)| n).sum::<u64>(),
        a["counts"]["delivered"].as_u64().unwrap()
    );

    // TLS across agents, as on one host: every submission over STARTTLS (and AUTH, without
    // which the nodes relay nothing), gmail's half of the deliveries over verified TLS.
    for (run, t) in [("cluster", &a["tls"]), ("one host", &b["tls"])] {
        assert_eq!(t["submission"]["share"], 1.0, "{run}: {t}");
        let d = t["delivery"]["share"].as_f64().unwrap_or(0.0);
        assert!((0.3..0.7).contains(&d), "{run}: {t}");
    }
    assert!(cl.join("tls/ca.pem").is_file());
}

#[test]
fn a_killed_agent_is_a_fault_of_its_own_and_the_run_is_not_judged() {
    let tmp = tempdir();
    let dir = tmp.path();
    let (nats, mut agents) = cluster(dir, ["gen", "inboxes", "mta"], 43);
    let url = nats.url();
    let cl = dir.join("cluster-run");
    let path = scenario(dir);
    let mut run = Command::new(bin())
        .args(["run", "--quiet", "--cluster", &url, "--out"])
        .arg(&cl)
        .arg(&path)
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-traffic: SIGKILL the inbox agent (its listeners die with it).
    let log = cl.join("run.log");
    let started = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("accepted"))
            .map(|_| ())
    });
    assert!(started.is_some(), "the run made progress");
    let _ = agents[1].0.kill();
    let _ = agents[1].0.wait();
    let out = wait_for(Duration::from_secs(90), || run.try_wait().ok().flatten());
    assert!(out.is_some(), "the run ended by itself");
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("agent inboxes") && stderr.contains("stopped answering"),
        "{stderr}"
    );

    let s = read_json(&cl.join("summary.json"));
    assert_schema_valid(&s);
    assert_eq!(s["verdict"], "error");
    let faults = s["faults"].as_array().unwrap();
    assert!(
        faults.iter().any(|f| f["target"] == "agent/inboxes"),
        "the lost agent has its fault row: {faults:?}"
    );
    let c = &s["counts"];
    let n = |k: &str| c[k].as_u64().unwrap();
    assert_eq!(n("generated"), n("rejected_at_submit") + n("accepted"), "{c}");
    assert_eq!(
        n("accepted"),
        n("delivered") + n("bounced") + n("suppressed") + n("expired") + n("queued") + n("lost"),
        "the accounting identity holds: {c}"
    );
    assert!(
        !s["reasons"].to_string().contains("identity does not hold"),
        "{}",
        s["reasons"]
    );
    assert!(read_json(&cl.join("run.json"))["cluster"]["agents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "inboxes" && a["lost_at_s"].as_f64().is_some()));
}

/// `abort:` on a distributed run: the provider blackholed on the inbox agent trips the SLO
/// condition; the coordinator cuts the generator agent, lifts the blackhole on the inbox agent,
/// drains and reports `aborted` (exit 1) — with no node process left on the MTA agent.
#[test]
fn an_abort_condition_stops_a_distributed_run_and_lifts_the_blackhole_on_its_agent() {
    let tmp = tempdir();
    let dir = tmp.path();
    let (nats, _agents) = cluster(dir, ["gen", "inboxes", "mta"], 46);
    let url = nats.url();
    let path = dir.join("abort.yaml");
    std::fs::write(
        &path,
        "name: clab\nseed: 7\nduration: 40s\ndrain: 15s\n\
         slo: { delivery_time: 1s, target: 99% }\n\
         abort: [ 'slo < 50% over 2s windows' ]\n\
         regions: [ { name: local, nodes: 1 } ]\n\
         mta:\n  retry: { initial: 300ms, factor: 2, max_delay: 1s, jitter: 10%, give_up: 60s }\n  \
         limits: { delivery_timeout: 2s }\n\
         providers:\n  - { name: gmail, domains: [gmail.com], rules: generic }\n  \
         - { name: generic, domains: [example.com], rules: generic }\n\
         traffic:\n  rate: 40/s\n  arrival: uniform\n  domains: { gmail.com: 80%, example.com: 20% }\n  size: 2KiB\n  connections: 4\n\
         chaos:\n  - { at: 2s, action: kill, target: provider/gmail, mode: blackhole }\n\
         placement:\n  generators: [gen]\n  providers: { '*': inboxes }\n  regions: { local: mta }\n",
    )
    .unwrap();
    let cl = dir.join("cluster-run");
    let t0 = std::time::Instant::now();
    let out = Command::new(bin())
        .args(["run", "--quiet", "--cluster", &url, "--out"])
        .arg(&cl)
        .arg(&path)
        .current_dir(repo())
        .output()
        .unwrap();
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        took < Duration::from_secs(35),
        "stopped long before its 40 s window: {took:?}\n{stderr}"
    );
    assert!(
        stderr.contains("end kill provider/gmail") && stderr.contains("agent inboxes"),
        "the blackhole was lifted on its agent\n{stderr}"
    );
    let s = read_json(&cl.join("summary.json"));
    assert_eq!(s["verdict"], "aborted");
    assert!(
        s["reasons"][0].as_str().unwrap().contains("slo < 50% over 2s windows"),
        "{}",
        s["reasons"]
    );
    assert_eq!(s["counts"]["lost"], 0, "{}", s["counts"]);
    let left = processes_mentioning(&format!("{}/", dir.join("agent-mta").display()));
    assert!(left.is_empty(), "node processes left on the MTA agent: {left:?}");
}

/// A free port on `ip`: bind port 0, read it, release it (the inbox agent binds it again).
fn free_addr(ip: &str) -> std::net::SocketAddr {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// The p50 of a run's delivery times, ms.
fn p50(run: &Path) -> f64 {
    read_json(&run.join("summary.json"))["delivery_ms"]["p50"]
        .as_f64()
        .unwrap()
}

/// Two generator agents against one external SUT (a standalone reference node): the open-loop
/// schedule is kept — the same messages in every second as one host sends — and the corrected
/// p50 is the one-host figure within 10%. The inbox answers the final dot 150 ms late, so the
/// delivery time is dominated by something both runs share, not by loopback jitter.
#[test]
fn two_generator_agents_keep_the_open_loop_schedule_against_one_external_sut() {
    let tmp = tempdir();
    let dir = tmp.path();
    let inbox = free_addr("127.0.49.1");
    let bounces = free_addr("127.0.49.250");
    std::fs::write(
        dir.join("slow.yaml"),
        "provider: ext\nrules:\n  - { stage: message, delay: { dist: fixed, value: 150ms }, reply: \"250 2.0.0 Ok: queued\" }\n",
    )
    .unwrap();
    // The SUT routes the scenario's domain, bare and with the `.mailsurge.test` suffix.
    let node_cfg = dir.join("node.yaml");
    std::fs::write(
        &node_cfg,
        format!(
            "node: sut-1\nregion: sut\nlisten: 127.0.49.20:0\nrelay_networks: [127.0.0.0/8]\n\
             spool: {{ kind: local, dir: spool }}\n\
             routes: {{ example.com: [{inbox}], example.com.mailsurge.test: [{inbox}], bounces.mailsurge.test: [{bounces}] }}\n\
             retry: {{ initial: 200ms, factor: 2, max_delay: 1s, jitter: 0%, give_up: 10s }}\n\
             events: events.jsonl\ndsn: true\nlimits: {{ domain_connections: 64 }}\n"
        ),
    )
    .unwrap();
    let node = spawn_listening(&["mta", "--config", node_cfg.to_str().unwrap()], node_addr);
    let path = dir.join("ext.yaml");
    std::fs::write(
        &path,
        format!(
            "name: clext\nseed: 3\nduration: 8s\ndrain: 15s\n\
             slo: {{ delivery_time: 2s, target: 99% }}\n\
             thresholds: [ 'lost == 0', 'duplicates == 0' ]\n\
             mta:\n  kind: external\n  submit: {}\n  bounces: {{ domain: bounces.mailsurge.test, listen: {bounces} }}\n\
             providers:\n  - {{ name: ext, domains: [example.com], rules: ./slow.yaml, listen: {inbox} }}\n\
             traffic:\n  rate: 120/s\n  domains: {{ example.com: 100% }}\n  size: 2KiB\n  connections: 16\n\
             placement:\n  generators: [g1, g2]\n  providers: {{ '*': inb }}\n",
            node.addr
        ),
    )
    .unwrap();
    let (nats, _agents) = cluster(dir, ["g1", "g2", "inb"], 50);
    let url = nats.url();
    let cl = dir.join("cluster-run");
    let out = Command::new(bin())
        .args(["run", "--quiet", "--cluster", &url, "--out"])
        .arg(&cl)
        .arg(&path)
        .current_dir(repo())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("generator shard 0/2") && stderr.contains("generator shard 1/2"),
        "{stderr}"
    );

    let one = dir.join("one-host-run");
    let single = mailsurge(&["run", "--quiet", "--out", one.to_str().unwrap(), path.to_str().unwrap()]);
    assert_eq!(
        single.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&single.stderr)
    );

    let (a, b) = (per_second(&cl), per_second(&one));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (s, n) in &a {
        let m = b[s];
        assert!(
            (*n as f64 - m as f64).abs() <= (m as f64 * 0.01).max(0.0),
            "second {s}: cluster {n}, one host {m}"
        );
    }
    let (pa, pb) = (p50(&cl), p50(&one));
    eprintln!("corrected p50: cluster {pa} ms, one host {pb} ms; per-second counts {a:?}");
    assert!(pb > 150.0, "the inbox's 150 ms dominate: {pb}");
    assert!(
        (pa - pb).abs() <= pb * 0.10,
        "corrected p50: cluster {pa} ms, one host {pb} ms"
    );
    let s = read_json(&cl.join("summary.json"));
    assert_eq!(s["counts"]["lost"], 0);
    assert_eq!(
        s["counts"]["generated"],
        read_json(&one.join("summary.json"))["counts"]["generated"]
    );
    drop(node);
}
