//! `mailsurge run scenarios/smoke.yaml` end to end: real child MTA processes, real inboxes,
//! real sockets. Checks the exit code, every report file, the schema, and the accounting.

mod common;

use common::*;

#[test]
fn smoke_runs_end_to_end_and_accounts_for_every_message() {
    let dir = tempdir();
    let out = dir.path().join("run");
    let o = mailsurge(&["run", "scenarios/smoke.yaml", "--out", out.to_str().unwrap(), "--quiet"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");

    for f in [
        "summary.json",
        "report.md",
        "events.jsonl.zst",
        "scenario.yaml",
        "charts/delivery-time.png",
        "charts/delivery-time.svg",
        "charts/slo.png",
        "charts/slo.svg",
        "latency.hlog",
    ] {
        let p = out.join(f);
        assert!(
            p.metadata().map(|m| m.len() > 0).unwrap_or(false),
            "missing or empty {f}"
        );
    }
    let png = std::fs::read(out.join("charts/delivery-time.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    let s = read_json(&out.join("summary.json"));
    assert_schema_valid(&s);
    assert_eq!(s["verdict"], "pass");
    let c = &s["counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("counts.{k}"));
    assert!(n("delivered") > 0);
    assert_eq!(n("generated"), n("rejected_at_submit") + n("accepted"));
    assert_eq!(
        n("accepted"),
        n("delivered") + n("bounced") + n("suppressed") + n("expired") + n("queued") + n("lost")
    );
    assert_eq!(n("lost"), 0);
    // The identities above hold by construction; agreement between witnesses can fail.
    assert_eq!(s["contradictions"]["total"], 0, "{}", s["contradictions"]);
    let p50 = s["delivery_ms"]["p50"].as_f64().expect("p50 is finite");
    assert!(p50 > 0.0);

    // The events file agrees with the counts: one `received` per delivered message.
    let events = run_events(&out);
    let received = events.lines().filter(|l| l.contains("\"event\":\"received\"")).count() as u64;
    assert_eq!(received, n("delivered") + n("duplicates"));
    assert_eq!(events.lines().count() as u64, n("events"));

    // The interval log holds one finite value per delivered message, and merges.
    let merged = mailsurge(&[
        "merge",
        out.join("latency.hlog").to_str().unwrap(),
        out.join("latency.hlog").to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&merged.stdout);
    assert_eq!(merged.status.code(), Some(0), "{text}");
    let delivery_line = text.lines().find(|l| l.starts_with("delivery")).unwrap_or_default();
    assert!(
        delivery_line.contains(&format!(" {} values", 2 * n("delivered"))),
        "{text}"
    );

    // The resolved scenario is itself a valid scenario with the seed in it.
    let resolved = std::fs::read_to_string(out.join("scenario.yaml")).unwrap();
    assert!(resolved.contains("seed: 42"), "{resolved}");
}

#[test]
fn committed_example_run_is_schema_valid_and_balanced() {
    let s = read_json(&repo().join("reports/examples/smoke/summary.json"));
    assert_schema_valid(&s);
    let c = &s["counts"];
    let n = |k: &str| c[k].as_u64().unwrap();
    assert_eq!(n("generated"), n("rejected_at_submit") + n("accepted"));
    assert_eq!(
        n("accepted"),
        n("delivered") + n("bounced") + n("suppressed") + n("expired") + n("queued") + n("lost")
    );
}
