use super::*;
use crate::report::summary::{GroupLine, ThresholdLine};

/// A real smoke run's summary.json, frozen in testdata/ so that refreshing reports/examples/
/// does not move the numbers these tests check.
fn base() -> Summary {
    serde_json::from_str(include_str!("testdata/summary.json")).unwrap()
}

/// 10% and a 1 ms floor, so the rules show on the example's millisecond values.
fn tol() -> Limits {
    Limits {
        tolerance: Tolerance::default(),
        min_delta_ms: Some(1.0),
    }
}

fn row<'a>(c: &'a Comparison, metric: &str) -> &'a MetricDelta {
    c.metrics
        .iter()
        .find(|m| m.metric == metric)
        .unwrap_or_else(|| panic!("no row {metric}"))
}

#[test]
fn identical_runs_do_not_regress() {
    let c = compare(&base(), &base(), tol());
    assert!(!c.regression, "{c:#?}");
    assert!(c.metrics.iter().all(|m| m.status == Status::Ok), "{c:#?}");
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    // 7 latencies, SLO, 4 counts, 1 region, 2 providers, verdict.
    assert_eq!(c.metrics.len(), 16);
    assert_eq!(row(&c, "p99").delta, Some(0.0));
}

#[test]
fn doubled_p99_is_a_regression_with_its_limit() {
    let mut cand = base();
    cand.delivery_ms.p99 = Some(4.171 * 2.0);
    let c = compare(&base(), &cand, tol());
    assert!(c.regression);
    assert_eq!(c.regressions, ["p99"]);
    let r = row(&c, "p99");
    assert_eq!(r.delta, Some(100.0));
    // 10% of 4.171 ms is under the 1 ms floor: the limit is base + 1 ms.
    assert_eq!(r.limit, Value::Num(5.171));
    assert_eq!(r.limit_text(), "≤ 5.17 ms");
    assert!(r.why.contains("rose from 4.17 ms to 8.34 ms (+100%)"), "{}", r.why);
    // A loose enough tolerance lets it through.
    let loose = Limits {
        tolerance: "150%".parse().unwrap(),
        ..tol()
    };
    assert!(!compare(&base(), &cand, loose).regression);
}

#[test]
fn default_floor_is_one_percent_of_the_slo() {
    // smoke's SLO is 2 s: its p99 may double from 4 ms (loopback jitter) but not pass +20 ms.
    let mut cand = base();
    cand.delivery_ms.p99 = Some(4.171 * 2.0);
    let c = compare(&base(), &cand, Limits::default());
    assert!(!c.regression, "{c:#?}");
    assert_eq!(c.min_delta_ms, 20.0);
    cand.delivery_ms.p99 = Some(24.5);
    let c = compare(&base(), &cand, Limits::default());
    assert_eq!(c.regressions, ["p99"]);
    assert!(
        row(&c, "p99").why.ends_with("(baseline + 10%, at least +20 ms)"),
        "{}",
        row(&c, "p99").why
    );
}

#[test]
fn latency_rule_uses_tolerance_above_the_floor() {
    let mut b = base();
    b.delivery_ms.p50 = Some(200.0);
    let mut cand = b.clone();
    cand.delivery_ms.p50 = Some(220.0); // exactly +10%: within
    assert_eq!(row(&compare(&b, &cand, tol()), "p50").status, Status::Ok);
    cand.delivery_ms.p50 = Some(221.0);
    assert_eq!(row(&compare(&b, &cand, tol()), "p50").status, Status::Regression);
    cand.delivery_ms.p50 = Some(150.0);
    assert_eq!(row(&compare(&b, &cand, tol()), "p50").status, Status::Improved);
    // +30% but under 1 ms: jitter, not a regression.
    let mut cand = base();
    cand.delivery_ms.p50 = Some(2.319 * 1.3);
    assert_eq!(row(&compare(&base(), &cand, tol()), "p50").status, Status::Ok);
}

#[test]
fn infinity_rules() {
    let mut inf = base();
    inf.delivery_ms.p999 = None;
    inf.delivery_ms.max = None;
    // Finite → ∞ regresses.
    let c = compare(&base(), &inf, tol());
    assert_eq!(c.regressions, ["p999", "max"]);
    let r = row(&c, "max");
    assert_eq!(
        (&r.candidate, r.delta, r.delta_text()),
        (&Value::Infinite, None, "→ ∞".to_string())
    );
    assert!(r.why.contains("now ∞"), "{}", r.why);
    // ∞ on both sides is equal; ∞ → finite improves.
    let c = compare(&inf, &inf, tol());
    assert!(!c.regression);
    assert_eq!(row(&c, "max").delta_text(), "=");
    assert_eq!(row(&compare(&inf, &base(), tol()), "max").status, Status::Improved);
    // JSON keeps summary.json's convention: null is ∞.
    let j = serde_json::to_value(compare(&base(), &inf, tol())).unwrap();
    let max = j["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "max")
        .unwrap();
    assert!(max["candidate"].is_null() && max["base"] == 29.839, "{max}");
    assert_eq!(j["schema"], COMPARE_SCHEMA);
    assert_eq!(j["regressions"][0], "p999");
}

#[test]
fn slo_is_compared_in_points_of_the_error_budget() {
    // Baseline 100% with a 99% target: 10% of the 1% budget = 0.1 pp may be lost.
    let mut cand = base();
    cand.slo.compliance = 0.9991;
    assert_eq!(
        row(&compare(&base(), &cand, tol()), "slo.compliance").status,
        Status::Ok
    );
    cand.slo.compliance = 0.9985;
    let c = compare(&base(), &cand, tol());
    let r = row(&c, "slo.compliance");
    assert_eq!(r.status, Status::Regression);
    assert_eq!((r.delta, r.delta_unit), (Some(-0.15), "pp"));
    assert_eq!(r.limit_text(), "≥ 99.900%");
    assert!(
        r.why.contains("to 99.850% (−0.15 pp), beyond the allowed −0.1 pp"),
        "{}",
        r.why
    );
    // A baseline already missing 5%: 10% of its miss rate (0.5 pp) is allowed.
    let mut b = base();
    b.slo.compliance = 0.95;
    let mut cand = b.clone();
    cand.slo.compliance = 0.946;
    assert_eq!(row(&compare(&b, &cand, tol()), "slo.compliance").status, Status::Ok);
    cand.slo.compliance = 0.944;
    assert_eq!(
        row(&compare(&b, &cand, tol()), "slo.compliance").status,
        Status::Regression
    );
    cand.slo.compliance = 0.96;
    assert_eq!(
        row(&compare(&b, &cand, tol()), "slo.compliance").status,
        Status::Improved
    );
}

#[test]
fn counts_regress_from_zero_then_relatively() {
    let mut cand = base();
    cand.counts.lost = 1;
    let c = compare(&base(), &cand, tol());
    assert_eq!(c.regressions, ["lost"]);
    assert_eq!(row(&c, "lost").delta_text(), "from 0");
    assert!(row(&c, "lost").why.contains("any increase from 0"));
    let mut b = base();
    b.counts.duplicates = 10;
    let mut cand = b.clone();
    cand.counts.duplicates = 11;
    assert_eq!(row(&compare(&b, &cand, tol()), "duplicates").status, Status::Ok);
    cand.counts.duplicates = 12;
    let c = compare(&b, &cand, tol());
    assert_eq!(row(&c, "duplicates").status, Status::Regression);
    assert_eq!(row(&c, "duplicates").limit_text(), "≤ 11");
    cand.counts.duplicates = 0;
    assert_eq!(row(&compare(&b, &cand, tol()), "duplicates").status, Status::Improved);
}

#[test]
fn verdict_pass_to_fail_regresses_with_the_reasons() {
    let mut cand = base();
    cand.verdict = "fail".into();
    cand.reasons = vec!["threshold `p99 < 2s` failed: observed 2500.00 ms".into()];
    let c = compare(&base(), &cand, tol());
    assert_eq!(c.regressions, ["verdict"]);
    let r = row(&c, "verdict");
    assert!(r.why.ends_with("observed 2500.00 ms"), "{}", r.why);
    assert_eq!(r.delta_text(), "pass → fail");
    assert_eq!(row(&compare(&cand, &base(), tol()), "verdict").status, Status::Improved);
    assert_eq!(row(&compare(&cand, &cand, tol()), "verdict").status, Status::Ok);
}

#[test]
fn groups_compare_p99_when_both_runs_have_them() {
    let mut cand = base();
    cand.by_provider.get_mut("gmail").unwrap().p99 = Some(50.0);
    cand.by_provider.remove("generic");
    cand.by_region.insert(
        "eu".into(),
        GroupLine {
            delivered: 1,
            p50: Some(1.0),
            p99: Some(1.0),
            deferrals: 0,
            bounced: 0,
        },
    );
    let c = compare(&base(), &cand, tol());
    assert_eq!(c.regressions, ["provider gmail p99"]);
    assert!(row(&c, "region local p99").status == Status::Ok);
    assert!(c
        .metrics
        .iter()
        .all(|m| !m.metric.contains("generic") && !m.metric.contains("eu")));
    assert_eq!(
        c.notes,
        [
            "region eu: only in the candidate, not compared",
            "provider generic: only in the baseline, not compared"
        ]
    );
}

#[test]
fn throughput_comes_from_a_whole_run_threshold() {
    let line = |expr: &str, v: f64| ThresholdLine {
        expr: expr.into(),
        observed: Some(v),
        pass: true,
        limit: 50.0,
        observed_text: String::new(),
    };
    let mut b = base();
    b.thresholds.push(line("throughput >= 50/s over 5s windows", 10.0));
    b.thresholds.push(line("throughput >= 50/s", 100.0));
    let mut cand = b.clone();
    cand.thresholds[6].observed = Some(91.0);
    assert_eq!(row(&compare(&b, &cand, tol()), "throughput").status, Status::Ok);
    cand.thresholds[6].observed = Some(85.0);
    let c = compare(&b, &cand, tol());
    assert_eq!(c.regressions, ["throughput"]);
    assert_eq!(row(&c, "throughput").limit_text(), "≥ 90.0/s");
    // Only one side: a note, no row.
    let c = compare(&base(), &cand, tol());
    assert!(c.metrics.iter().all(|m| m.metric != "throughput"));
    assert_eq!(c.notes, ["throughput: only the candidate has a `throughput` threshold"]);
}

#[test]
fn different_runs_are_noted() {
    let mut cand = base();
    (cand.name, cand.seed, cand.slo.target) = ("other".into(), 7, 0.95);
    let c = compare(&base(), &cand, tol());
    assert_eq!(c.notes.len(), 3, "{:?}", c.notes);
}

#[test]
fn tolerance_parses_percentages_and_fractions() {
    let p = |s: &str| s.parse::<Tolerance>().map(|t| t.0);
    assert_eq!(p("10%"), Ok(0.1));
    assert_eq!(p("0.25"), Ok(0.25));
    assert_eq!(p("150%"), Ok(1.5));
    assert_eq!(p("0"), Ok(0.0));
    for bad in ["2", "-1%", "ten", "NaN%", ""] {
        assert!(p(bad).is_err(), "{bad}");
    }
    assert_eq!(Tolerance(0.125).to_string(), "12.5%");
}

#[test]
fn load_names_the_file_and_refuses_other_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::write(run.join("summary.json"), include_str!("testdata/summary.json")).unwrap();
    assert_eq!(load(&run).unwrap().name, "smoke");

    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let gen = write("gen.json", r#"{"schema": "mailsurge.gen/v1"}"#);
    let e = load(&gen).unwrap_err();
    assert!(matches!(e, LoadError::Schema { .. }));
    assert!(
        e.to_string()
            .contains("gen.json: not a mailsurge.summary/v1 summary (schema is `mailsurge.gen/v1`)"),
        "{e}"
    );
    let e = load(&write("none.json", "{}")).unwrap_err();
    assert!(e.to_string().ends_with("(no `schema` key)"), "{e}");
    let e = load(&write("bad.json", "{ nope")).unwrap_err();
    assert!(
        matches!(e, LoadError::Json { .. }) && e.to_string().contains("bad.json: not JSON"),
        "{e}"
    );
    let e = load(&write(
        "partial.json",
        r#"{"schema": "mailsurge.summary/v1", "name": "x"}"#,
    ))
    .unwrap_err();
    assert!(
        matches!(e, LoadError::Invalid { .. }) && e.to_string().contains("partial.json"),
        "{e}"
    );
    let e = load(&dir.path().join("missing.json")).unwrap_err();
    assert!(
        matches!(e, LoadError::Read { .. }) && e.to_string().contains("missing.json"),
        "{e}"
    );
}

#[test]
fn table_and_markdown_say_why_at_a_glance() {
    let mut cand = base();
    cand.delivery_ms.p99 = Some(8.342);
    let c = compare(&base(), &cand, tol());
    let text = render_text(&c);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("metric") && lines[0].ends_with("status"), "{text}");
    let p99 = lines.iter().find(|l| l.starts_with("p99 ")).unwrap();
    for cell in ["4.17 ms", "8.34 ms", "+100%", "≤ 5.17 ms", "REGRESSION"] {
        assert!(p99.contains(cell), "{p99}");
    }
    // Columns line up by characters, not bytes (≤ − ∞ are multi-byte).
    let col = |l: &str, word: &str| l[..l.rfind(word).unwrap()].chars().count();
    assert_eq!(col(lines[0], "status"), col(p99, "REGRESSION"));
    assert_eq!(col(lines[0], "status"), col(lines[1], "ok"));
    assert!(text.contains("  ✗ p99 rose from 4.17 ms to 8.34 ms"), "{text}");
    assert!(
        text.trim_end()
            .ends_with("tolerance 10%, min delta 1 ms: REGRESSION in p99"),
        "{text}"
    );

    let md = render_markdown(&c);
    assert!(md.starts_with("\n## Compared with baseline\n"), "{md}");
    assert!(
        md.contains("| p99 | 4.17 ms | 8.34 ms | +100% | ≤ 5.17 ms | **REGRESSION** |"),
        "{md}"
    );
    assert!(md.contains("— **REGRESSION** in p99"), "{md}");
}
