//! Threshold evaluation end to end: one real run whose delivery times have a known shape, many
//! thresholds over it, and each verdict checked — in summary.json, in junit.xml and in the
//! exit code — plus the windowed values recomputed independently from the run's events.
//!
//! The run (12 s at 20/s, uniform arrivals):
//! - provider `fast` (one.test, 70% of mail) answers at once, but is down (`refuse`) from 4 s
//!   to 7 s: mail intended then waits for the window's end, up to ~3.5 s;
//! - provider `slow` (two.test, 30%) takes 400 ms per recipient and is never down;
//! - region `a` has weight 3 and region `b` weight 1, so they carry ~15/s and ~5/s.
//!
//! So: the global p50 is the fast provider's (milliseconds) while `slow`'s p50 is 400 ms; the
//! global p99 is the outage's (seconds) while `slow`'s p99 stays at ~400 ms; the 1 s window
//! holding the outage's first second has a p50 of seconds, but any 5 s window's p50 is below
//! 1 s; throughput is ~20/s overall, ~15/s and ~5/s per region, ~20/s in every 5 s window.
//! Each threshold below sits far from its observed value, so its verdict does not depend on
//! how loaded the machine is.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use serde_json::Value;

const FAST: &str = "provider: fast\nrules: []\n";
const SLOW: &str =
    "provider: slow\nrules:\n  - { stage: rcpt, delay: { dist: fixed, value: 400ms }, reply: \"250 2.1.5 Ok\" }\n";

/// (threshold, expected to pass).
const THRESHOLDS: &[(&str, bool)] = &[
    // Scoped latency: a provider / domain fails while the global one passes...
    ("p50 < 200ms", true),
    ("provider slow: p50 < 200ms", false),
    ("domain two.test: p50 < 200ms", false),
    // ...and passes while the global one fails.
    ("p99 < 1500ms", false),
    ("provider slow: p99 < 1500ms", true),
    ("domain two.test: p99 < 1500ms", true),
    ("provider fast: p99 < 1500ms", false),
    // Throughput, global and per region (a region fails while the global one passes).
    ("throughput >= 12/s", true),
    ("region a: throughput >= 12/s", true),
    ("region b: throughput >= 12/s", false),
    ("throughput >= 30/s", false),
    ("throughput < 10/s", false),
    ("throughput >= 15/s over 5s windows", true),
    ("throughput >= 25/s over 5s windows", false),
    // Windows longer than a second.
    ("p99 < 10s over 5s windows", true),
    ("p99 < 2s over 5s windows", false),
    ("p50 < 1s over 5s windows", true),
    ("p50 < 1s over 1s windows", false),
    // Observed values only, recomputed below.
    ("p50 < 60s over 10s windows", true),
];

/// The `<testcase>` elements of junit.xml as (name, has a failure).
fn junit_cases(xml: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for chunk in xml.split("<testcase").skip(1) {
        let name = chunk
            .split("name=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        let body = chunk.split("</testcase>").next().unwrap_or(chunk);
        let own = body.split("<testcase").next().unwrap_or(body);
        out.push((name, own.contains("<failure")));
    }
    out
}

/// Every recipient's (intended ns, delivery ms) from the run's events, the way SPEC §5 defines
/// delivery time: first receipt − intended time.
fn delivery_times(events: &[Value]) -> Vec<(u64, f64)> {
    let mut intended: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut received: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in events {
        let key = || {
            (
                e["id"].as_str().unwrap_or("").to_string(),
                e["rcpt"].as_str().unwrap_or("").to_string(),
            )
        };
        match e["event"].as_str() {
            Some("submitted") => {
                intended.insert(key(), e["intended"].as_u64().expect("intended"));
            }
            Some("received") => {
                let t = e["t"].as_u64().unwrap();
                let r = received.entry(key()).or_insert(t);
                *r = (*r).min(t);
            }
            _ => {}
        }
    }
    intended
        .iter()
        .map(|(k, i)| {
            let r = received.get(k).unwrap_or_else(|| panic!("{k:?} never received"));
            (*i, r.saturating_sub(*i) as f64 / 1e6)
        })
        .collect()
}

/// The worst (largest) `q`-quantile over sliding windows of `len` 1 s intervals of intended
/// time, with the rank rule of the summary (`ceil(q·n)`): the value at that rank and at its
/// neighbours (a histogram's bucket can land a value on either side).
fn worst_window(times: &[(u64, f64)], start_ns: u64, intervals: u64, len: u64, q: f64) -> (f64, f64, f64) {
    let interval = |t: u64| ((t.saturating_sub(start_ns)) / 1_000_000_000).min(intervals - 1);
    let mut worst = (0.0, 0.0, 0.0);
    for s in 0..=intervals - len {
        let mut v: Vec<f64> = times
            .iter()
            .filter(|(i, _)| (s..s + len).contains(&interval(*i)))
            .map(|(_, d)| *d)
            .collect();
        if v.is_empty() {
            continue;
        }
        v.sort_by(f64::total_cmp);
        let rank = ((q * v.len() as f64).ceil() as usize).max(1);
        let at = |r: usize| v[r.clamp(1, v.len()) - 1];
        if at(rank) > worst.1 {
            worst = (at(rank - 1), at(rank), at(rank + 1));
        }
    }
    worst
}

fn observed(s: &Value, expr: &str) -> f64 {
    s["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["expr"] == expr)
        .and_then(|t| t["observed"].as_f64())
        .unwrap_or_else(|| panic!("no observed value for `{expr}`"))
}

/// Replaces the thresholds of a run directory's resolved scenario.yaml.
fn set_thresholds(dir: &Path, thresholds: &[&str]) {
    let p = dir.join("scenario.yaml");
    let mut v: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["thresholds"] = serde_norway::Value::Sequence(
        thresholds
            .iter()
            .map(|t| serde_norway::Value::String(t.to_string()))
            .collect(),
    );
    std::fs::write(&p, serde_norway::to_string(&v).unwrap()).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn scoped_windowed_and_throughput_thresholds_are_judged_on_the_run() {
    let tmp = tempdir();
    let dir = tmp.path();
    std::fs::write(dir.join("fast.yaml"), FAST).unwrap();
    std::fs::write(dir.join("slow.yaml"), SLOW).unwrap();
    let list: String = THRESHOLDS.iter().map(|(t, _)| format!("  - '{t}'\n")).collect();
    let scenario = dir.join("thresholds.yaml");
    std::fs::write(
        &scenario,
        format!(
            "name: thresholds\nseed: 17\nduration: 12s\ndrain: 15s\n\
             slo: {{ delivery_time: 5s, target: 50% }}\n\
             thresholds:\n{list}\
             regions:\n  - {{ name: a, nodes: 1, weight: 3 }}\n  - {{ name: b, nodes: 1, weight: 1 }}\n\
             mta:\n  retry: {{ initial: 500ms, factor: 1, max_delay: 500ms, jitter: 0%, give_up: 60s }}\n\
             \x20 egress_pools: {{ shared: [127.0.1.1] }}\n\
             providers:\n  - {{ name: fast, domains: [one.test], rules: ./fast.yaml }}\n  \
             - {{ name: slow, domains: [two.test], rules: ./slow.yaml }}\n\
             traffic: {{ rate: 20/s, arrival: uniform, domains: {{ one.test: 70%, two.test: 30% }}, connections: 8 }}\n\
             chaos:\n  - {{ at: 4s, action: kill, target: provider/fast, mode: refuse, for: 3s }}\n"
        ),
    )
    .unwrap();
    let out = dir.join("run");
    let (code, stderr) = run_scenario(&scenario, &out);
    let s = read_json(&out.join("summary.json"));
    assert_schema_valid(&s);
    let c = &s["counts"];
    assert_eq!(c["lost"], 0, "{c}\n{stderr}");
    assert_eq!(c["delivered"], c["accepted"], "every message delivered: {c}");
    assert_eq!(code, Some(1), "failed thresholds exit 1\n{stderr}");
    assert_eq!(s["verdict"], "fail");

    // Each threshold's verdict, as summary.json and junit.xml give it.
    let results = s["thresholds"].as_array().expect("thresholds");
    assert_eq!(results.len(), THRESHOLDS.len());
    let junit = std::fs::read_to_string(out.join("junit.xml")).expect("junit.xml");
    let cases = junit_cases(&junit);
    let mut wrong = Vec::new();
    for (expr, pass) in THRESHOLDS {
        let r = results.iter().find(|r| r["expr"] == *expr).expect(expr);
        eprintln!("{expr:40} observed {:>10} pass {}", r["observed"], r["pass"]);
        if r["pass"] != *pass {
            wrong.push(format!("{expr}: observed {}, pass {}", r["observed"], r["pass"]));
        }
        let case = cases.iter().find(|(n, _)| n == expr);
        assert_eq!(
            case.map(|c| c.1),
            Some(!pass),
            "junit testcase `{expr}` should {}",
            if *pass { "pass" } else { "fail" }
        );
    }
    assert!(wrong.is_empty(), "unexpected verdicts:\n{}", wrong.join("\n"));
    let failure_text: Vec<&str> = junit.split("<failure").skip(1).collect();
    assert!(
        failure_text.iter().any(|f| f.contains("observed")),
        "a failure says what was observed"
    );

    // The windowed values, recomputed from the events with the same rules: sliding windows of
    // N one-second intervals of intended time, the worst window's quantile.
    let run = read_json(&out.join("run.json"));
    let start = run["start_ns"].as_u64().expect("start_ns");
    let times = delivery_times(&run_event_values(&out));
    let mut windows = Vec::new();
    for (expr, len, q) in [
        ("p50 < 1s over 1s windows", 1, 0.5),
        ("p50 < 1s over 5s windows", 5, 0.5),
        ("p50 < 60s over 10s windows", 10, 0.5),
        ("p99 < 2s over 5s windows", 5, 0.99),
    ] {
        let got = observed(&s, expr);
        let (lo, mid, hi) = worst_window(&times, start, 12, len, q);
        eprintln!("{expr}: observed {got:.1} ms, recomputed {mid:.1} ms ({lo:.1}..{hi:.1})");
        assert!(
            got >= lo * 0.99 - 1.0 && got <= hi * 1.01 + 1.0,
            "`{expr}`: observed {got} ms, events say {mid} ms ({lo}..{hi})"
        );
        windows.push(got);
    }
    // A longer window dilutes the outage: the 1 s window's p50 is seconds, the 5 s one's not.
    assert!(windows[0] > 2.0 * windows[1], "{windows:?}");

    // The same run judged on the passing thresholds alone: `report` re-renders it, exit 0.
    let pass_dir = dir.join("pass");
    copy_dir(&out, &pass_dir);
    let passing: Vec<&str> = THRESHOLDS.iter().filter(|(_, p)| *p).map(|(t, _)| *t).collect();
    set_thresholds(&pass_dir, &passing);
    let r = mailsurge(&["report", pass_dir.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    let s2 = read_json(&pass_dir.join("summary.json"));
    assert_eq!(s2["verdict"], "pass");
    let junit2 = std::fs::read_to_string(pass_dir.join("junit.xml")).unwrap();
    assert!(!junit2.contains("<failure"), "{junit2}");
    // And on one windowed threshold that fails: exit 1, its junit case failing by name.
    set_thresholds(&pass_dir, &["p99 < 2s over 5s windows"]);
    let r = mailsurge(&["report", pass_dir.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    let cases = junit_cases(&std::fs::read_to_string(pass_dir.join("junit.xml")).unwrap());
    assert!(
        cases.contains(&("p99 < 2s over 5s windows".to_string(), true)),
        "{cases:?}"
    );
}
