//! `mailsurge gen` against a standalone mock inbox: closed loop (`--rate max --count N` or
//! `--duration D`) and open loop (`--rate R --duration D`), summary.json counts, and the
//! loopback-only rule.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn gen_closed_and_open_loop_against_an_inbox() {
    let dir = tempdir();
    let inbox = start_inbox(dir.path(), "generic");
    let target = inbox.addr.to_string();
    let out = dir.path().join("closed");
    let o = mailsurge(
        &[
            "gen",
            "--target",
            &target,
            "--rate",
            "max",
            "--count",
            "500",
            "--connections",
            "4",
        ]
        .into_iter()
        .chain(["--out", out.to_str().unwrap(), "--quiet"])
        .collect::<Vec<_>>(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["counts"]["generated"], 500);
    assert_eq!(s["counts"]["accepted"], 500);
    assert_eq!(s["counts"]["rejected_at_submit"], 0);
    assert!(s["submit_ms"]["p50"].as_f64().unwrap() > 0.0);

    let out = dir.path().join("open");
    let o = mailsurge(&[
        "gen",
        "--target",
        &target,
        "--rate",
        "200/s",
        "--duration",
        "2s",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let s = read_json(&out.join("summary.json"));
    let n = s["counts"]["generated"].as_u64().unwrap();
    assert!((300..=500).contains(&n), "about 400 at 200/s for 2 s: {n}");
    assert_eq!(s["counts"]["accepted"].as_u64().unwrap(), n);

    let o = mailsurge(&["gen", "--target", "192.0.2.1:25", "--rate", "max", "--count", "1"]);
    assert_eq!(o.status.code(), Some(2), "non-loopback targets are refused");
    let o = mailsurge(&["gen", "--target", &target, "--rate", "max"]);
    assert_eq!(o.status.code(), Some(2), "closed loop needs --count or --duration");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--duration D or --count N"));
    drop(inbox);
}

/// `--rate max --duration D`: closed loop for D, as fast as the connections allow, then a
/// clean stop. The inbox takes 100 ms over each message, so 4 connections manage about 20
/// messages each in 2 s — the count is set by the server's speed, not by a rate — and the
/// ones under way when time runs out still finish: none is reported rejected.
#[test]
fn gen_closed_loop_for_a_duration() {
    let dir = tempdir();
    let rules = dir.path().join("slow.yaml");
    std::fs::write(
        &rules,
        "provider: slow\nrules:\n  - { stage: message, delay: { dist: fixed, value: 100ms }, reply: \"250 2.0.0 Ok\" }\n",
    )
    .unwrap();
    let inbox = start_inbox(dir.path(), rules.to_str().unwrap());
    let out = dir.path().join("closed-for");
    let o = mailsurge(&[
        "gen",
        "--target",
        &inbox.addr.to_string(),
        "--rate",
        "max",
        "--duration",
        "2s",
        "--connections",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["mode"], "closed-loop");
    let n = s["counts"]["generated"].as_u64().unwrap();
    // At most 20 per connection inside the window, plus the one each has under way at its end.
    assert!((50..=84).contains(&n), "about 80 messages at 4 × 10/s for 2 s: {n}");
    assert_eq!(
        s["counts"]["accepted"].as_u64().unwrap(),
        n,
        "every started message finishes"
    );
    assert_eq!(s["counts"]["rejected_at_submit"], 0);
    let wall = s["wall_s"].as_f64().unwrap();
    assert!(
        (2.0..3.5).contains(&wall),
        "runs for the duration, then stops: {wall} s"
    );
    // The inbox really received each of them, none cut off mid-transaction.
    let receipts = dir.path().join("receipts.jsonl");
    let lines = || std::fs::read_to_string(&receipts).map_or(0, |t| t.lines().count()) as u64;
    let got = wait_for(Duration::from_secs(5), || (lines() == n).then_some(()));
    assert!(got.is_some(), "{} receipts for {n} accepted", lines());
    drop(inbox);
}
