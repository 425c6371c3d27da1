//! Coordinated omission, shown over real sockets: `mailsurge gen` at a fixed open-loop rate
//! against an inbox that freezes every reply for 1 s in the middle of the run. Latency from
//! the *intended* send time must show the freeze; latency from the actual send start (the
//! figure closed-loop tools report) hides it, because messages queued behind the stalled
//! connections only start once the freeze is over.

mod common;

use common::*;

#[test]
fn corrected_latency_shows_a_freeze_that_uncorrected_hides() {
    let dir = tempdir();
    // Every stage answers after 1 s between 2 s and 3 s into the inbox's life; the generator
    // starts right away, so its window of 4 s covers the freeze.
    let rules = dir.path().join("freeze.yaml");
    let freeze = |stage: &str, reply: &str| {
        format!("  - {{ stage: {stage}, window: {{ from: 2s, until: 3s }}, delay: {{ dist: fixed, value: 1s }}, reply: \"{reply}\" }}\n")
    };
    let text = format!(
        "provider: freeze\nrules:\n{}{}{}",
        freeze("mail", "250 2.1.0 Ok"),
        freeze("rcpt", "250 2.1.5 Ok"),
        freeze("message", "250 2.0.0 Ok"),
    );
    std::fs::write(&rules, text).unwrap();
    let inbox = start_inbox(dir.path(), rules.to_str().unwrap());
    let out = dir.path().join("gen");
    let o = mailsurge(&[
        "gen",
        "--target",
        &inbox.addr.to_string(),
        "--rate",
        "500/s",
        "--duration",
        "4s",
        "--connections",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let s = read_json(&out.join("summary.json"));
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
    let corrected_p99 = s["submit_ms"]["p99"].as_f64().unwrap();
    let uncorrected_p99 = s["submit_ms"]["uncorrected_p99"].as_f64().unwrap();
    assert!(
        corrected_p99 >= 500.0,
        "the freeze must show from intended time: p99 {corrected_p99} ms"
    );
    assert!(
        uncorrected_p99 < corrected_p99 / 4.0,
        "from send start the freeze hides: uncorrected p99 {uncorrected_p99} ms vs corrected {corrected_p99} ms"
    );
    assert_eq!(s["counts"]["accepted"], s["counts"]["generated"]);
}
