//! Chaos actions and modes through `mailsurge run` on small scenarios: `block` (with and
//! without a reroute), `node/` targets, provider `blackhole` and `reset`, and `for:` windows
//! that end by themselves. Each test asserts the fault's effect on the mail — receipts stop
//! where the fault bites, continue where it does not, resume after it ends — from the run's
//! merged events and summary, with the `fault` / `fault_end` events as the clock.
//!
//! Timing: every window is seconds long and every bound below is either an ordering (before /
//! after a fault event) or a count; where an edge matters a margin of 500 ms covers the time
//! between the harness recording a fault and pulling the lever (the event is written first).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const MARGIN_NS: u64 = 500_000_000;

fn kind(e: &Value) -> &str {
    e["event"].as_str().unwrap_or("")
}

fn t(e: &Value) -> u64 {
    e["t"].as_u64().unwrap_or(0)
}

/// Writes `yaml` as `<dir>/<name>.yaml`, runs it into `<dir>/run`, and returns the run
/// directory and the exit code (the summary must exist).
fn run(dir: &Path, name: &str, yaml: &str) -> (PathBuf, Option<i32>, String) {
    let scenario = dir.join(format!("{name}.yaml"));
    std::fs::write(&scenario, yaml).unwrap();
    let out = dir.join("run");
    let (code, stderr) = run_scenario(&scenario, &out);
    (out, code, stderr)
}

/// The `fault` (start) and `fault_end` times of fault `n` (`fault.<n>`).
fn window(events: &[Value], n: usize) -> (u64, Option<u64>) {
    let id = format!("fault.{n}");
    let start = events
        .iter()
        .find(|e| kind(e) == "fault" && e["id"] == id.as_str())
        .map(t)
        .unwrap_or_else(|| panic!("no fault event {id}"));
    let end = events
        .iter()
        .find(|e| kind(e) == "fault_end" && e["id"] == id.as_str())
        .map(t);
    (start, end)
}

/// Whether an event's recipient is in `domain` (merged events name the recipient; the provider
/// follows from its domain).
fn to(e: &Value, domain: &str) -> bool {
    e["rcpt"].as_str().is_some_and(|r| r.ends_with(&format!("@{domain}")))
}

/// `received` events (inbox receipts) matching `pred`, by time.
fn receipts(events: &[Value], pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
    let mut r: Vec<&Value> = events.iter().filter(|e| kind(e) == "received" && pred(e)).collect();
    r.sort_by_key(|e| t(e));
    r
}

fn count_in(evs: &[&Value], from: u64, to: u64) -> usize {
    evs.iter().filter(|e| (from..to).contains(&t(e))).count()
}

/// `block` for a `for:` window, two providers at once:
/// - `g1` blocks the shared pool with a temporary refusal (the table defers it): no receipts
///   from g1 during the window — not even over connections the MTA opened before the block
///   and keeps reusing — then the deferred mail arrives once the window ends by itself;
/// - `g2` blocks the shared pool with an RBL refusal (the table reroutes to `dedicated`): no
///   receipts from the shared address during the window, the mail keeps arriving from the
///   dedicated address.
///
/// Nothing is lost; every accepted message is delivered.
#[test]
fn block_for_a_window_defers_or_reroutes_and_lifts_by_itself() {
    let tmp = tempdir();
    let (out, code, stderr) = run(
        tmp.path(),
        "block",
        "name: block\nseed: 7\nduration: 8s\ndrain: 15s\n\
         slo: { delivery_time: 10s, target: 90% }\n\
         thresholds: [ 'lost == 0' ]\n\
         regions: [ { name: a, nodes: 1 } ]\n\
         mta:\n  retry: { initial: 500ms, factor: 1, max_delay: 500ms, jitter: 0%, give_up: 60s }\n\
         \x20 egress_pools: { shared: [127.0.1.1], dedicated: [127.0.1.10] }\n\
         providers:\n  - { name: g1, domains: [one.test], rules: generic }\n  - { name: g2, domains: [two.test], rules: generic }\n\
         traffic: { rate: 40/s, arrival: uniform, domains: { one.test: 50%, two.test: 50% }, connections: 4 }\n\
         chaos:\n  - { at: 2s, action: block, target: provider/g1, pool: shared, reply: \"451 4.7.1 Client host temporarily rejected\", for: 3s }\n  \
         - { at: 2s, action: block, target: provider/g2, pool: shared, for: 3s }\n",
    );
    let s = read_json(&out.join("summary.json"));
    assert_schema_valid(&s);
    let c = &s["counts"];
    assert_eq!(c["lost"], 0, "{c}\n{stderr}");
    assert_eq!(c["delivered"], c["accepted"], "{c}");
    assert_eq!(code, Some(0), "{stderr}");

    let ev = run_event_values(&out);
    let (b1, e1) = window(&ev, 0);
    let e1 = e1.expect("the g1 block's window ends by itself (fault_end)");
    let (b2, e2) = window(&ev, 1);
    let e2 = e2.expect("the g2 block's window ends by itself (fault_end)");
    assert!(e1 - b1 >= 2_900_000_000 && e2 - b2 >= 2_900_000_000, "3 s windows");

    let g1 = receipts(&ev, |e| to(e, "one.test"));
    let g1_before = count_in(&g1, 0, b1);
    let g1_during = count_in(&g1, b1 + MARGIN_NS, e1);
    let g1_after = count_in(&g1, e1, u64::MAX);
    eprintln!("g1 receipts: {g1_before} before, {g1_during} during, {g1_after} after");
    assert!(g1_before > 10, "g1 receives before the block: {g1_before}");
    assert_eq!(g1_during, 0, "g1 refuses the blocked pool for the whole window");
    assert!(g1_after > 10, "g1 receives again after the window: {g1_after}");
    let refused = ev
        .iter()
        .filter(|e| kind(e) == "deferred" && e["code"] == 451 && (b1..e1).contains(&t(e)))
        .filter(|e| e["text"].as_str().unwrap_or("").contains("temporarily rejected"))
        .count();
    assert!(refused > 0, "the MTA saw the block's reply and deferred");

    let g2 = receipts(&ev, |e| to(e, "two.test"));
    let shared_during = g2
        .iter()
        .filter(|e| e["source_ip"] == "127.0.1.1" && (b2 + MARGIN_NS..e2).contains(&t(e)))
        .count();
    let dedicated_during = g2
        .iter()
        .filter(|e| e["source_ip"] == "127.0.1.10" && (b2..e2).contains(&t(e)))
        .count();
    let before_from_shared = g2.iter().filter(|e| t(e) < b2).all(|e| e["source_ip"] == "127.0.1.1");
    eprintln!("g2 receipts during the block: {shared_during} from shared, {dedicated_during} from dedicated");
    assert!(
        before_from_shared,
        "g2's mail leaves from the shared pool before the block"
    );
    assert_eq!(shared_during, 0, "g2 refuses the shared pool during the window");
    assert!(dedicated_during > 10, "the mail is rerouted: {dedicated_during}");
}

/// `kill node/<name>`: one node of a two-node region, not the region. While a-1 is down the
/// generator sends nothing to it and keeps sending to a-2; `restore` brings it back and it is
/// re-admitted. Then `kill node/a-2` with `for: 2s`: the window's end restarts a-2 by itself
/// (no restore step), and it takes traffic again. Nothing is lost or stranded.
#[test]
fn node_kill_restore_and_a_for_window_hit_only_that_node() {
    let tmp = tempdir();
    let (out, code, stderr) = run(
        tmp.path(),
        "node-kill",
        "name: node-kill\nseed: 9\nduration: 10s\ndrain: 15s\n\
         slo: { delivery_time: 10s, target: 90% }\n\
         thresholds: [ 'lost == 0' ]\n\
         regions: [ { name: a, nodes: 2 } ]\n\
         mta:\n  retry: { initial: 500ms, factor: 2, max_delay: 2s, jitter: 20%, give_up: 60s }\n\
         \x20 egress_pools: { shared: [127.0.1.1] }\n\
         providers:\n  - { name: g, domains: [example.com], rules: generic }\n\
         traffic: { rate: 30/s, domains: { example.com: 100% }, connections: 8 }\n\
         chaos:\n  - { at: 2s, action: kill, target: node/a-1 }\n  - { at: 4500ms, action: restore, target: node/a-1 }\n  \
         - { at: 6500ms, action: kill, target: node/a-2, for: 2s }\n",
    );
    let s = read_json(&out.join("summary.json"));
    assert_schema_valid(&s);
    let c = &s["counts"];
    assert_eq!(c["lost"], 0, "{c}\n{stderr}");
    assert_eq!(c["stranded"], 0, "both nodes are up at the end: {c}");
    assert_eq!(c["queued"], 0, "{c}");
    assert_eq!(c["delivered"], c["accepted"], "{c}");
    assert_eq!(code, Some(0), "{stderr}");

    let ev = run_event_values(&out);
    let (k1, _) = window(&ev, 0);
    let (r1, _) = window(&ev, 1);
    let (k2, e2) = window(&ev, 2);
    let e2 = e2.expect("the a-2 kill's window ends by itself (fault_end)");
    assert!(k1 < r1 && r1 < k2 && k2 < e2);
    // The chaos events name the node and its region.
    let f0 = ev.iter().find(|e| kind(e) == "fault" && e["id"] == "fault.0").unwrap();
    assert_eq!(
        (f0["node"].as_str(), f0["region"].as_str()),
        (Some("a-1"), Some("a")),
        "{f0}"
    );

    let submitted = |node: &str, from: u64, to: u64| {
        ev.iter()
            .filter(|e| kind(e) == "submitted" && e["node"] == node && (from..to).contains(&t(e)))
            .count()
    };
    let first = |k: &str, node: &str, after: u64| {
        ev.iter()
            .filter(|e| kind(e) == k && e["node"] == node && t(e) >= after)
            .map(t)
            .min()
    };
    let n = |node: &str, from, to| submitted(node, from, to);
    eprintln!(
        "submissions a-1/a-2: before {}/{}, a-1 down {}/{}, a-2 down {}/{}, after {}/{}",
        n("a-1", 0, k1),
        n("a-2", 0, k1),
        n("a-1", k1, r1),
        n("a-2", k1, r1),
        n("a-1", k2, e2),
        n("a-2", k2, e2),
        n("a-1", e2, u64::MAX),
        n("a-2", e2, u64::MAX)
    );

    // a-1 down: evicted, nothing submitted to it, a-2 carries the load; admitted after restore.
    assert!(
        n("a-1", 0, k1) > 5 && n("a-2", 0, k1) > 5,
        "both nodes take mail at first"
    );
    let evicted1 = first("evicted", "a-1", k1).expect("a-1 evicted");
    assert!(evicted1 < r1, "a-1 evicted while down");
    assert_eq!(n("a-1", k1 + MARGIN_NS, r1), 0, "nothing submitted to a dead a-1");
    assert!(n("a-2", k1, r1) > 20, "a-2 takes the load");
    let admitted1 = first("admitted", "a-1", r1).expect("a-1 admitted after the restore");
    assert!(admitted1 < k2, "a-1 back before the second fault");
    assert!(n("a-1", admitted1, k2) > 0, "a-1 takes mail again after the restore");
    assert!(
        first("evicted", "a-2", 0).is_none_or(|t| t >= k2),
        "a-2 is never evicted while only a-1 is down"
    );

    // a-2 down for 2 s: the same, and the end of the window restarts it without a restore.
    let evicted2 = first("evicted", "a-2", k2).expect("a-2 evicted");
    assert!(evicted2 < e2);
    assert_eq!(n("a-2", k2 + MARGIN_NS, e2), 0, "nothing submitted to a dead a-2");
    assert!(n("a-1", k2, e2) > 20, "a-1 takes the load");
    let admitted2 = first("admitted", "a-2", e2).expect("a-2 admitted after its window");
    assert!(n("a-2", admitted2, u64::MAX) > 0, "the restarted a-2 takes mail again");
    assert!(
        ev.iter()
            .any(|e| kind(e) == "delivered" && e["node"] == "a-2" && t(e) > e2),
        "the restarted a-2 delivers"
    );

    let faults = s["faults"].as_array().expect("faults");
    assert_eq!(faults.len(), 3, "{faults:?}");
    assert_eq!(
        (faults[2]["action"].as_str(), faults[2]["target"].as_str()),
        (Some("kill"), Some("node/a-2"))
    );
}

/// What a fresh connection to a provider's MX got.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Probe {
    Greeting,
    /// Connected, but no byte within the probe's timeout (blackhole).
    Silence,
    /// Connected, then reset or closed without a greeting.
    Dropped,
    Refused,
}

fn probe(addr: std::net::SocketAddr) -> Probe {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)) else {
        return Probe::Refused;
    };
    s.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(n) if n >= 3 && &b[..3] == b"220" => Probe::Greeting,
        Ok(_) => Probe::Dropped,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Probe::Silence,
        Err(_) => Probe::Dropped,
    }
}

/// A provider's first MX address, from the route list `run` writes into each node's config.
fn mx_of(node_yaml: &Path, domain: &str) -> Option<std::net::SocketAddr> {
    let text = std::fs::read_to_string(node_yaml).ok()?;
    let v: serde_norway::Value = serde_norway::from_str(&text).ok()?;
    v.get("routes")?.get(domain)?.get(0)?.as_str()?.parse().ok()
}

/// `kill provider/… mode: reset` and `mode: blackhole`, each for a `for:` window.
///
/// While the test's run goes on, probe threads open a fresh connection to each provider's MX
/// every 100 ms: during its window the reset provider drops connections without a
/// greeting and the blackholed one never answers; after the window both greet again, without
/// a restore step. In the mail: no receipts from either provider during its window (open,
/// reused connections included), receipts again after it; the reset provider's mail is all
/// delivered on retry.
///
/// A blackholed connection holds the MTA's delivery worker until its delivery timeout
/// (30 s in `run`), so the few messages caught in it are still queued when this run's short
/// 4 s drain ends — queued in a live node's spool, never lost. The traffic to the
/// blackholed provider is kept to 1.5/s so that fewer than the domain's 8 workers are caught
/// and fresh mail after the window gets through on new connections.
#[test]
fn provider_reset_and_blackhole_windows_end_by_themselves() {
    let tmp = tempdir();
    let dir = tmp.path().to_path_buf();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // One probe thread per provider: (time, what a fresh connection got), every 100 ms.
    let prober = |domain: &'static str| {
        let (done, node_yaml) = (done.clone(), dir.join("run/nodes/a-1/node.yaml"));
        std::thread::spawn(move || {
            let Some(addr) = wait_for(std::time::Duration::from_secs(60), || mx_of(&node_yaml, domain)) else {
                return Vec::new();
            };
            let mut seen = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let at = now_ns();
                seen.push((at, probe(addr)));
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            seen
        })
    };
    let (r_prober, b_prober) = (prober("r.test"), prober("b.test"));
    let (out, code, stderr) = run(
        &dir,
        "provider-modes",
        "name: provider-modes\nseed: 13\nduration: 8s\ndrain: 4s\n\
         slo: { delivery_time: 10s, target: 50% }\n\
         regions: [ { name: a, nodes: 1 } ]\n\
         mta:\n  retry: { initial: 500ms, factor: 1, max_delay: 500ms, jitter: 0%, give_up: 60s }\n\
         \x20 egress_pools: { shared: [127.0.1.1] }\n\
         providers:\n  - { name: r, domains: [r.test], rules: generic }\n  - { name: b, domains: [b.test], rules: generic }\n\
         traffic: { rate: 10/s, arrival: uniform, domains: { r.test: 85%, b.test: 15% }, connections: 4 }\n\
         chaos:\n  - { at: 2s, action: kill, target: provider/r, mode: reset, for: 2500ms }\n  \
         - { at: 2s, action: kill, target: provider/b, mode: blackhole, for: 2500ms }\n",
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (r_probes, b_probes) = (r_prober.join().unwrap(), b_prober.join().unwrap());
    assert!(matches!(code, Some(0 | 1)), "exit {code:?}\n{stderr}");
    let s = read_json(&out.join("summary.json"));
    assert_schema_valid(&s);
    let c = &s["counts"];
    let n = |k: &str| c[k].as_u64().unwrap();
    assert_eq!(n("lost"), 0, "{c}\n{stderr}");
    assert_eq!(n("accepted"), n("delivered") + n("queued"), "{c}");

    let ev = run_event_values(&out);
    let (rs, re) = window(&ev, 0);
    let re = re.expect("the reset window ends by itself");
    let (bs, be) = window(&ev, 1);
    let be = be.expect("the blackhole window ends by itself");

    // What fresh connections got before, during and after each window. A probe lasts up to
    // ~1.3 s (connect + 300 ms read), so "during" counts only probes that start 500 ms into
    // the window and 400 ms before its end.
    let phase = |probes: &[(u64, Probe)], from: u64, to: u64| -> Vec<Probe> {
        probes
            .iter()
            .filter(|p| (from..to).contains(&p.0))
            .map(|p| p.1)
            .collect()
    };
    let r_during = phase(&r_probes, rs + MARGIN_NS, re.saturating_sub(400_000_000));
    let b_during = phase(&b_probes, bs + MARGIN_NS, be.saturating_sub(400_000_000));
    let r_after = phase(&r_probes, re + MARGIN_NS, u64::MAX);
    let b_after = phase(&b_probes, be + MARGIN_NS, u64::MAX);
    eprintln!("probes during: reset {r_during:?}, blackhole {b_during:?}");
    // (A probe started just before a fault can meet it: "before" ends a margin earlier.)
    let before: Vec<Probe> = phase(&r_probes, 0, rs - MARGIN_NS)
        .into_iter()
        .chain(phase(&b_probes, 0, bs - MARGIN_NS))
        .collect();
    assert!(
        before.iter().all(|p| *p == Probe::Greeting),
        "both greet before the faults: {before:?}"
    );
    // A reset can land before connect() returns, which reports it as a failed connect.
    let no_greeting = |p: &Probe| matches!(p, Probe::Dropped | Probe::Refused);
    assert!(!r_during.is_empty() && r_during.iter().all(no_greeting), "{r_during:?}");
    assert!(
        !b_during.is_empty() && b_during.iter().all(|p| *p == Probe::Silence),
        "{b_during:?}"
    );
    assert_eq!(
        r_after.first(),
        Some(&Probe::Greeting),
        "reset provider greets after its window"
    );
    assert_eq!(
        b_after.first(),
        Some(&Probe::Greeting),
        "blackholed provider greets after its window"
    );

    // The mail: nothing received during either window, received again after.
    let r_mail = receipts(&ev, |e| to(e, "r.test"));
    let b_mail = receipts(&ev, |e| to(e, "b.test"));
    eprintln!(
        "receipts r: {} before, {} during, {} after; b: {} before, {} during, {} after",
        count_in(&r_mail, 0, rs),
        count_in(&r_mail, rs, re),
        count_in(&r_mail, re, u64::MAX),
        count_in(&b_mail, 0, bs),
        count_in(&b_mail, bs, be),
        count_in(&b_mail, be, u64::MAX)
    );
    assert!(count_in(&r_mail, 0, rs) > 5 && count_in(&b_mail, 0, bs) >= 1);
    assert_eq!(
        count_in(&r_mail, rs + MARGIN_NS, re),
        0,
        "the reset provider receives nothing"
    );
    assert_eq!(
        count_in(&b_mail, bs + MARGIN_NS, be),
        0,
        "the blackholed provider receives nothing"
    );
    assert!(count_in(&r_mail, re, u64::MAX) > 10);
    assert!(
        count_in(&b_mail, be, u64::MAX) > 3,
        "fresh mail gets through after the blackhole"
    );
    // The reset provider's mail is all delivered (deferred and retried, not held).
    let r_accepted = ev.iter().filter(|e| kind(e) == "accepted" && to(e, "r.test")).count();
    let r_received: std::collections::BTreeSet<&str> = r_mail.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(r_received.len(), r_accepted, "every r.test message delivered");
    let reset_deferrals = ev
        .iter()
        .filter(|e| kind(e) == "deferred" && to(e, "r.test") && (rs..re).contains(&t(e)))
        .count();
    assert!(reset_deferrals > 0, "the MTA deferred on the resets");
    // Whatever is still queued is the blackholed provider's, caught in held connections.
    assert!(n("queued") <= 8, "{c}");
}
