//! The CI regression gate (SPEC §7): `mailsurge compare` exits 1 on a regression beyond the
//! tolerance, 0 otherwise, 2 on an unreadable or non-`mailsurge.summary/v1` file; `run
//! --baseline` turns a regression into exit 1 even when the run passed and leaves compare.json;
//! every run writes junit.xml. (Exit codes 0 / 1 / 2 of `run` itself: tests/cli_exit_codes.rs.)

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Two seconds of light traffic through one node to one provider; `{rules}` picks the inbox.
const TINY: &str = "name: tiny
seed: 7
duration: 2s
drain: 10s
slo: { delivery_time: 2s, target: 99% }
thresholds:
  - p50 < 2s
regions:
  - { name: r1, nodes: 1 }
providers:
  - { name: p1, domains: [example.com], rules: {rules} }
traffic:
  rate: 25/s
  domains: { example.com: 100% }
  size: 2KiB
  connections: 2
";

/// An inbox that answers every message 300 ms late: a provider-side delivery-time regression
/// far beyond both the tolerance and the default floor (1% of the 2 s SLO = 20 ms).
const SLOW_INBOX: &str = "provider: slow\nlatency: { message: { dist: fixed, value: 300ms } }\nrules: []\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn out(o: &std::process::Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the tiny scenario with `rules` into `dir/name` plus `extra` arguments.
fn run(dir: &Path, name: &str, rules: &str, extra: &[&str]) -> (std::process::Output, PathBuf) {
    let scenario = write(dir, &format!("{name}.yaml"), &TINY.replace("{rules}", rules));
    let run_dir = dir.join(name);
    let mut args = vec!["run", s(&scenario), "--out", s(&run_dir), "--quiet"];
    args.extend_from_slice(extra);
    (mailsurge(&args), run_dir)
}

#[test]
fn compare_exit_codes_on_real_summaries() {
    let dir = tempdir();
    let (o, run_dir) = run(dir.path(), "base", "generic", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let summary = read_json(&run_dir.join("summary.json"));
    let p99 = summary["delivery_ms"]["p99"].as_f64().expect("finite p99");
    let with_p99 = |name: &str, v: f64| {
        let mut j = summary.clone();
        j["delivery_ms"]["p99"] = v.into();
        write(dir.path(), name, &serde_json::to_string_pretty(&j).unwrap())
    };

    // The same run, as a directory and as a file: no regression.
    let o = mailsurge(&["compare", s(&run_dir), s(&run_dir.join("summary.json"))]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("metric") && text.contains("no regression"), "{text}");

    // p99 doubled: a regression once the jitter floor is off; 5% worse is within 10%.
    let doubled = with_p99("doubled.json", p99 * 2.0);
    let o = mailsurge(&["compare", s(&run_dir), s(&doubled), "--min-delta", "0ms"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let row = text.lines().find(|l| l.starts_with("p99 ")).expect("p99 row");
    assert!(row.contains("+100%") && row.ends_with("REGRESSION"), "{text}");
    assert!(text.contains("REGRESSION in p99"), "{text}");
    let slightly = with_p99("slightly.json", p99 * 1.05);
    let o = mailsurge(&["compare", s(&run_dir), s(&slightly), "--min-delta", "0ms"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));

    // Defaults (10%, floor 20 ms for the 2 s SLO) catch a regression at the SLO's scale; --json.
    let slow = with_p99("slow.json", p99 * 2.0 + 500.0);
    let o = mailsurge(&["compare", s(&run_dir), s(&slow), "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(j["schema"], "mailsurge.compare/v1");
    assert_eq!(j["regression"], true);
    assert_eq!(j["regressions"], serde_json::json!(["p99"]));
    assert_eq!(
        (j["tolerance"].as_f64(), j["min_delta_ms"].as_f64()),
        (Some(0.1), Some(20.0))
    );
    let m = j["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "p99")
        .unwrap();
    assert_eq!(m["status"], "regression");
    assert_eq!(m["base"].as_f64(), Some(p99));
    // ... and a loose tolerance lets it pass. `slow` is 2 × p99 + 500 ms, so it needs a
    // tolerance above 100% + 500 ms / p99: with a p99 of a few ms that is over 10000%.
    let o = mailsurge(&["compare", s(&run_dir), s(&slow), "--tolerance", "1000000%"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));

    // Every run writes junit.xml: one suite, a testcase per threshold, no failures here.
    let junit = std::fs::read_to_string(run_dir.join("junit.xml")).unwrap();
    assert!(junit.contains("<testsuite name=\"mailsurge.tiny\""), "{junit}");
    assert!(junit.contains("<testcase name=\"p50 &lt; 2s\" classname=\"mailsurge.thresholds\""));
    assert!(
        junit.contains("failures=\"0\"") && !junit.contains("<failure"),
        "{junit}"
    );
}

#[test]
fn compare_refuses_unreadable_input_with_exit_2() {
    let dir = tempdir();
    let good = repo().join("reports/examples/smoke/summary.json");
    let malformed = write(dir.path(), "malformed.json", "{ \"schema\": \"mailsurge.summary/v1\", ");
    let gen = write(
        dir.path(),
        "gen.json",
        "{ \"schema\": \"mailsurge.gen/v1\", \"counts\": {} }",
    );
    let truncated = write(
        dir.path(),
        "truncated.json",
        "{ \"schema\": \"mailsurge.summary/v1\", \"name\": \"x\" }",
    );
    let missing = dir.path().join("missing.json");
    for (bad, says) in [
        (&malformed, "not JSON"),
        (
            &gen,
            "not a mailsurge.summary/v1 summary (schema is `mailsurge.gen/v1`)",
        ),
        (&truncated, "invalid mailsurge.summary/v1 summary"),
        (&missing, "cannot read"),
    ] {
        for args in [[s(&good), s(bad)], [s(bad), s(&good)]] {
            let o = mailsurge(&["compare", args[0], args[1]]);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{}", out(&o));
            assert!(err.contains(&format!("{}: {says}", s(bad))), "{err}");
        }
    }
    let o = mailsurge(&["compare", s(&good), s(&good), "--tolerance", "lots"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    // A bad baseline is refused before anything starts.
    let o = mailsurge(&["run", "scenarios/smoke.yaml", "--baseline", s(&gen)]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--baseline"), "{}", out(&o));
}

#[test]
fn run_with_baseline_fails_on_regression_even_when_the_run_passes() {
    let dir = tempdir();
    let (o, earlier) = run(dir.path(), "earlier", "generic", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let slow_rules = write(dir.path(), "slow.yaml", SLOW_INBOX);
    let baseline = earlier.join("summary.json");
    let (o, now) = run(dir.path(), "now", s(&slow_rules), &["--baseline", s(&baseline)]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));

    // The run itself passed its thresholds; the baseline comparison failed it.
    let summary = read_json(&now.join("summary.json"));
    assert_eq!(summary["verdict"], "pass", "{}", out(&o));
    let c = read_json(&now.join("compare.json"));
    assert_eq!(c["regression"], true);
    let regressions: Vec<&str> = c["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(regressions.contains(&"p99") && regressions.contains(&"p50"), "{c}");
    assert_eq!(c["base"]["run_id"], read_json(&baseline)["run_id"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("REGRESSION in p50"), "{stdout}");

    let md = std::fs::read_to_string(now.join("report.md")).unwrap();
    assert!(md.contains("## Compared with baseline"), "{md}");
    assert!(md.contains("| p99 |") && md.contains("**REGRESSION**"), "{md}");

    let junit = std::fs::read_to_string(now.join("junit.xml")).unwrap();
    assert!(
        junit.contains("<testcase name=\"p99 vs baseline\" classname=\"mailsurge.compare\" time=\"0\">\n      <failure message=\"observed "),
        "{junit}"
    );
    assert!(junit.contains("<testcase name=\"p50 &lt; 2s\" classname=\"mailsurge.thresholds\" time=\"0\"/>"));
}
