//! Hostile and absurd input (issue: never a panic, never unbounded): every value out of what a
//! run can carry is refused by `validate` and `run` with exit 2, `file:line:col` and what was
//! expected — before anything starts.

mod common;

use common::*;

const GOOD: &str = "name: tiny
seed: 7
duration: 2s
drain: 5s
slo: { delivery_time: 2s, target: 99% }
regions:
  - { name: r1, nodes: 1 }
providers:
  - { name: p1, domains: [example.com], rules: generic }
traffic:
  rate: 50/s
  domains: { example.com: 100% }
  size: 2KiB
  connections: 2
";

/// `validate` and `run` both exit 2 with `file:POS` and every one of `needles`.
fn refused(text: &str, pos: &str, needles: &[&str]) {
    let dir = tempdir();
    let p = dir.path().join("bad.yaml");
    std::fs::write(&p, text).unwrap();
    let p = p.to_str().unwrap();
    for cmd in ["validate", "run"] {
        let o = mailsurge(&[cmd, p, "--quiet"][..if cmd == "run" { 3 } else { 2 }]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd} must refuse: {err}");
        assert!(
            err.contains(&format!("{p}:{pos}")),
            "{cmd}: expected {p}:{pos} in: {err}"
        );
        for n in needles {
            assert!(err.contains(n), "{cmd}: expected `{n}` in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn absurd_durations_are_out_of_range() {
    for d in ["18446744073709551615s", "99999999999999999999h", "1e20s"] {
        refused(
            &GOOD.replace("duration: 2s", &format!("duration: {d}")),
            "3:11",
            &["out of range", "e.g. 24h"],
        );
    }
    refused(&GOOD.replace("drain: 5s", "drain: 48h"), "4:1", &["at most 24h"]);
}

#[test]
fn a_plan_too_large_to_carry_is_refused() {
    refused(
        &GOOD.replace("size: 2KiB", "size: 100GiB"),
        "13:3",
        &["100GiB", "at most 32MiB"],
    );
    refused(
        &GOOD.replace("rate: 50/s", "rate: 100000000/s"),
        "11:3",
        &["at most 200000/s"],
    );
    refused(
        &GOOD.replace("connections: 2", "connections: 100000"),
        "14:3",
        &["at most 1024"],
    );
    refused(
        &GOOD.replace(
            "size: 2KiB",
            "size: { dist: lognormal, median: 8KiB, sigma: 1.0, max: 64MiB }",
        ),
        "13:3",
        &["64MiB"],
    );
}

#[test]
fn rate_and_size_mistakes_say_what_was_expected() {
    let e = ["expected a rate such as `300/s`"];
    refused(
        &GOOD.replace("rate: 50/s", "rate: -100/s"),
        "11:9",
        &["must not be negative", e[0]],
    );
    refused(
        &GOOD.replace("rate: 50/s", "rate: { peak: 300/s, curve: bogus-curve }"),
        "11:31",
        &["unknown curve `bogus-curve`", "black-friday"],
    );
    refused(
        &GOOD.replace("size: 2KiB", "size: twelve"),
        "13:9",
        &["expected a size such as `12KiB`"],
    );
}

#[test]
fn curve_points_may_be_absolute_rates() {
    let dir = tempdir();
    let p = dir.path().join("rates.yaml");
    std::fs::write(
        &p,
        GOOD.replace("rate: 50/s", "rate: { curve: [[0s, 20/s], [2s, 60/s]] }"),
    )
    .unwrap();
    let o = mailsurge(&["validate", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn chaos_after_the_run_is_refused() {
    let text = format!("{GOOD}chaos:\n  - {{ at: 1h, action: kill, target: region/r1 }}\n");
    refused(&text, "16:", &["after the run ends"]);
}
