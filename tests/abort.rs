//! Abort conditions (`abort:`, SPEC §12) through the real binary: a run whose busiest provider
//! is blackholed stops early when its windowed SLO collapses — traffic cut, the blackhole
//! lifted, the queues drained — with verdict `aborted`, exit 1, the accounting whole and no
//! process of the run left. And `validate` refuses a condition that needs the final accounting.

mod common;

use std::path::Path;

use common::*;

const DURATION_S: f64 = 30.0;

/// 80% of the mail goes to `gmail`, blackholed at 2 s for good. The SLO (1 s) collapses in the
/// windows after it; the run must stop long before its 30 s window. A 2 s delivery timeout lets
/// the MTA give up on the blackholed connections, so once the blackhole is lifted the drain
/// delivers everything.
fn scenario(dir: &Path) -> std::path::PathBuf {
    let yaml = format!(
        "\
name: abort-blackhole
seed: 7
duration: {DURATION_S}s
drain: 15s
slo:
  delivery_time: 1s
  target: 99%
abort:
  - slo < 50% over 2s windows
regions:
  - {{ name: local, nodes: 1 }}
mta:
  retry: {{ initial: 300ms, factor: 2, max_delay: 1s, jitter: 10%, give_up: 60s }}
  limits: {{ delivery_timeout: 2s }}
providers:
  - {{ name: gmail,   domains: [gmail.com],   rules: generic }}
  - {{ name: generic, domains: [example.com], rules: generic }}
traffic:
  rate: 40/s
  arrival: uniform
  domains: {{ gmail.com: 80%, example.com: 20% }}
  size: 2KiB
  connections: 4
chaos:
  - {{ at: 2s, action: kill, target: provider/gmail, mode: blackhole }}
"
    );
    let path = dir.join("abort.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn a_blackholed_provider_trips_the_slo_abort_and_the_run_drains_and_stops() {
    let tmp = tempdir();
    let scenario = scenario(tmp.path());
    let out = tmp.path().join("run");
    let (code, stderr) = run_scenario(&scenario, &out);
    assert_eq!(code, Some(1), "an aborted run exits 1\n{stderr}");

    let s = read_json(&out.join("summary.json"));
    assert_schema_valid(&s);
    assert_eq!(s["verdict"], "aborted", "{s:#}");
    let why = s["reasons"][0].as_str().unwrap_or_default();
    assert!(
        why.contains("abort condition \"slo < 50% over 2s windows\" held at t="),
        "the reason names the condition: {why}"
    );
    let t: f64 = why
        .split("held at t=")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no time in {why}"));
    eprintln!("aborted at t={t}s: {why}; wall {}s", s["wall_s"]);
    assert!(
        (3.0..12.0).contains(&t),
        "judged after the blackhole's mail went late, well before the window ends: t={t}"
    );
    let wall = s["wall_s"].as_f64().unwrap();
    assert!(
        wall < DURATION_S,
        "the run ended at {wall}s, before its {DURATION_S}s window"
    );

    // The blackhole was lifted, so the drain delivered the held mail: nothing lost, identity whole.
    let c = &s["counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("counts.{k}"));
    assert_eq!(n("lost"), 0, "{c}");
    assert_eq!(n("generated"), n("rejected_at_submit") + n("accepted"), "{c}");
    assert_eq!(
        n("accepted"),
        n("delivered") + n("bounced") + n("suppressed") + n("expired") + n("queued") + n("lost"),
        "{c}"
    );
    assert!(
        n("accepted") < (40.0 * DURATION_S * 0.6) as u64,
        "traffic stopped early: {c}"
    );
    let log = std::fs::read_to_string(out.join("run.log")).unwrap();
    assert!(
        log.contains("chaos: end kill provider/gmail blackhole"),
        "the blackhole is lifted on abort:\n{log}"
    );
    assert!(
        log.contains("abort: slo"),
        "progress shows the condition's value:\n{log}"
    );

    let left = processes_mentioning(&out.display().to_string());
    assert!(left.is_empty(), "processes of the run still alive: {left:?}");
}

#[test]
fn validate_refuses_an_abort_on_final_accounting_metrics() {
    let tmp = tempdir();
    let path = tmp.path().join("lost.yaml");
    std::fs::write(
        &path,
        "\
name: abort-lost
duration: 5s
slo: { delivery_time: 1s, target: 99% }
abort:
  - queued > 1000
  - lost > 0
regions: [{ name: a }]
providers: [{ name: g, domains: [gmail.com] }]
traffic: { rate: 10/s, domains: { gmail.com: 100% } }
",
    )
    .unwrap();
    for cmd in ["validate", "run"] {
        let o = mailsurge(&[cmd, path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {stderr}");
        assert!(
            stderr.contains("lost.yaml:6:5"),
            "{cmd}: file:line:col of the condition: {stderr}"
        );
        assert!(
            stderr.contains("final accounting") && stderr.contains("queued"),
            "{cmd}: says which metrics an abort can use: {stderr}"
        );
    }
}
