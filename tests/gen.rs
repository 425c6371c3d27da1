//! `mailsurge gen` against a standalone mock inbox: closed loop (`--rate max --count N`) and
//! open loop (`--rate R --duration D`), summary.json counts, and the loopback-only rule.

mod common;

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
    let o = mailsurge(&["gen", "--target", &target, "--rate", "max", "--duration", "1s"]);
    assert_eq!(o.status.code(), Some(2), "closed loop needs --count");
    drop(inbox);
}
