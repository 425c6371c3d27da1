//! `junit.xml` (SPEC §6): the run's gates as JUnit test results, because that is the format
//! every CI system already turns into a pass/fail list with failure details — a pipeline shows
//! *which* threshold failed without anyone opening report.md.
//!
//! One `<testsuite name="mailsurge.<scenario>">` whose `time` is the run's wall time, with one
//! `<testcase>` per
//!
//! - threshold (`classname="mailsurge.thresholds"`, name = the expression as written),
//! - the SLO (`mailsurge.slo`, `slo >= <target>`),
//! - the accounting identity, `lost == 0` and `contradictions == 0` (`mailsurge.accounting`),
//! - with `--baseline`, compared metric (`mailsurge.compare`, name = the metric).
//!
//! A failure's `message` holds the observed value and the limit; its body says the same in
//! sentences. The XML is written by hand: the format is small and fixed, and escaping
//! ([`esc_xml`]) is the only subtle part.

use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;

use super::compare::model::{fmt_value, Comparison, Status};
use super::format::{esc_xml, esc_xml_body, num, pct};
use super::summary::Summary;
use crate::scenario::threshold::Threshold;

/// `contradictions == 0`: the run's witnesses agree on every recipient.
fn contradictions_case(s: &Summary) -> Case {
    let k = &s.contradictions;
    Case {
        class: "mailsurge.accounting",
        name: "contradictions == 0".into(),
        failure: (k.total > 0).then(|| {
            (
                format!("observed {}, limit == 0", k.total),
                format!(
                    "{} recipients on which the run's witnesses disagree: {}\n\
                     (generator, MTA event logs, inbox receipts, delivery status notices, spools)\n\
                     observed: {}\nlimit:    == 0",
                    k.total,
                    k.describe(),
                    k.total
                ),
            )
        }),
    }
}

/// One test case; `failure` is (message, body).
struct Case {
    class: &'static str,
    name: String,
    failure: Option<(String, String)>,
}

/// The limit as the user wrote it: `< 2s` of `region us-east: p99 < 2s over 10s windows`.
fn limit_text(expr: &str, limit: f64) -> String {
    let Ok(th) = Threshold::from_str(expr) else {
        return format!("{limit}");
    };
    let op = format!(" {} ", th.op_str());
    let cond = expr.split(" over ").next().unwrap_or(expr);
    match cond.split_once(&op) {
        Some((_, v)) => format!("{}{}", op.trim_start(), v.trim()),
        None => format!("{}{}", op.trim_start(), th.format_value(Some(limit))),
    }
}

fn cases(s: &Summary, cmp: Option<&Comparison>) -> Vec<Case> {
    let mut out = Vec::new();
    // A run stopped by hand, or one that measured too little to judge, fails its gate whatever
    // its figures say; the case exists only then, so a judged run's junit.xml is unchanged.
    if s.verdict == super::VERDICT_ABORTED || s.verdict == super::VERDICT_ERROR {
        let why = s.reasons.first().cloned().unwrap_or_else(|| s.verdict.clone());
        out.push(Case {
            class: "mailsurge.run",
            name: "run completed".into(),
            failure: Some((why.clone(), why)),
        });
    }
    for t in &s.thresholds {
        let limit = limit_text(&t.expr, t.limit);
        let observed = if t.observed_text.is_empty() {
            t.observed.map_or("∞".to_string(), |v| v.to_string())
        } else {
            t.observed_text.clone()
        };
        let windowed = if t.expr.contains(" over ") {
            " (worst window)"
        } else {
            ""
        };
        out.push(Case {
            class: "mailsurge.thresholds",
            name: t.expr.clone(),
            failure: (!t.pass).then(|| {
                (
                    format!("observed {observed}, limit {limit}"),
                    format!(
                        "threshold `{}` failed\nobserved: {observed}{windowed}\nlimit:    {limit}",
                        t.expr
                    ),
                )
            }),
        });
    }
    // Written like the compare table's SLO row.
    let (target, observed) = (pct(s.slo.target), pct(s.slo.compliance));
    out.push(Case {
        class: "mailsurge.slo",
        // `99%`, `99.5%`: the target as a person writes it.
        name: format!("slo >= {}%", num(s.slo.target * 100.0, 4)),
        failure: (!s.slo.pass).then(|| {
            (
                format!("observed {observed}, limit >= {target}"),
                format!(
                    "SLO missed: {observed} of eligible mail delivered within {} ms\nobserved: {observed}\nlimit:    >= {target}",
                    s.slo.delivery_ms
                ),
            )
        }),
    });
    out.push(Case {
        class: "mailsurge.accounting",
        name: "accounting identity".into(),
        failure: s.counts.check_identity().err().map(|e| {
            let c = &s.counts;
            (
                format!("observed {e}"),
                format!(
                    "accounting identity does not hold: {e}\ngenerated = rejected_at_submit + accepted\n\
                     accepted = delivered + bounced + suppressed + expired + queued + lost\n\
                     counts: generated {} rejected_at_submit {} accepted {} delivered {} bounced {} \
                     suppressed {} expired {} queued {} lost {}",
                    c.generated,
                    c.rejected_at_submit,
                    c.accepted,
                    c.delivered,
                    c.bounced,
                    c.suppressed,
                    c.expired,
                    c.queued,
                    c.lost
                ),
            )
        }),
    });
    out.push(Case {
        class: "mailsurge.accounting",
        name: "lost == 0".into(),
        failure: (s.counts.lost > 0).then(|| {
            (
                format!("observed {}, limit == 0", s.counts.lost),
                format!(
                    "{} accepted messages lost: no terminal event and not in any spool\nobserved: {}\nlimit:    == 0",
                    s.counts.lost, s.counts.lost
                ),
            )
        }),
    });
    out.push(contradictions_case(s));
    for m in cmp.map_or(&[][..], |c| &c.metrics) {
        let observed = fmt_value(m.unit, &m.candidate);
        let base = fmt_value(m.unit, &m.base);
        out.push(Case {
            class: "mailsurge.compare",
            name: format!("{} vs baseline", m.metric),
            failure: (m.status == Status::Regression).then(|| {
                (
                    format!("observed {observed}, limit {} (baseline {base})", m.limit_text()),
                    format!(
                        "{}\nobserved: {observed}\nlimit:    {}\nbaseline: {base}",
                        m.why,
                        m.limit_text()
                    ),
                )
            }),
        });
    }
    out
}

/// The whole document.
pub fn render(s: &Summary, cmp: Option<&Comparison>) -> String {
    let cases = cases(s, cmp);
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let suite = esc_xml(&format!("mailsurge.{}", s.name));
    let time = format!("{:.3}", s.wall_s);
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        o,
        "<testsuites name=\"mailsurge\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{time}\">",
        cases.len()
    );
    let _ = writeln!(
        o,
        "  <testsuite name=\"{suite}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{time}\">",
        cases.len()
    );
    let _ = writeln!(o, "    <properties>");
    for (k, v) in [
        ("run_id", s.run_id.clone()),
        ("seed", s.seed.to_string()),
        ("started_at", s.started_at.clone()),
        ("verdict", s.verdict.clone()),
    ] {
        let _ = writeln!(o, "      <property name=\"{k}\" value=\"{}\"/>", esc_xml(&v));
    }
    let _ = writeln!(o, "    </properties>");
    for c in &cases {
        let head = format!(
            "<testcase name=\"{}\" classname=\"{}\" time=\"0\"",
            esc_xml(&c.name),
            c.class
        );
        match &c.failure {
            None => {
                let _ = writeln!(o, "    {head}/>");
            }
            Some((msg, body)) => {
                let _ = writeln!(
                    o,
                    "    {head}>\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                    esc_xml(msg),
                    c.class,
                    esc_xml_body(body)
                );
            }
        }
    }
    let _ = writeln!(o, "  </testsuite>\n</testsuites>");
    o
}

/// Writes `dir/junit.xml`.
pub fn write(dir: &Path, s: &Summary, cmp: Option<&Comparison>) -> std::io::Result<()> {
    crate::files::write(&dir.join("junit.xml"), render(s, cmp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::compare;
    use crate::report::summary::SCHEMA;

    /// A strict enough well-formedness check for what this module writes: one root element,
    /// balanced tags, quoted attributes without raw `<` or `&`, entity references only from
    /// XML's five plus numeric ones, no raw `<`/`&` in text. Returns the element names in
    /// document order.
    fn check_well_formed(xml: &str) -> Vec<String> {
        fn entities_ok(s: &str) -> bool {
            let mut rest = s;
            while let Some(i) = rest.find('&') {
                let after = &rest[i + 1..];
                let Some(end) = after.find(';') else { return false };
                let name = &after[..end];
                let ok = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
                    || name
                        .strip_prefix('#')
                        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
                if !ok {
                    return false;
                }
                rest = &after[end + 1..];
            }
            true
        }
        let body = xml
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            .expect("XML declaration");
        let mut stack: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = body;
        let mut closed_root = false;
        while let Some(lt) = rest.find('<') {
            let text = &rest[..lt];
            assert!(!text.contains('>') && entities_ok(text), "bad text {text:?}");
            assert!(!closed_root || text.trim().is_empty(), "content after the root");
            let gt = rest[lt..].find('>').expect("unclosed tag") + lt;
            let tag = &rest[lt + 1..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
                closed_root |= stack.is_empty();
                continue;
            }
            assert!(!closed_root, "second root element <{tag}>");
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, mut attrs) = tag.split_once(' ').unwrap_or((tag, ""));
            assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            let mut seen = Vec::new();
            loop {
                attrs = attrs.trim_start();
                if attrs.is_empty() {
                    break;
                }
                let (key, after) = attrs.split_once("=\"").expect("attribute without a quoted value");
                let end = after.find('"').expect("unterminated attribute");
                let value = &after[..end];
                assert!(
                    !value.contains('<') && entities_ok(value),
                    "bad attribute {key}={value:?}"
                );
                assert!(!seen.contains(&key), "duplicate attribute {key}");
                seen.push(key);
                attrs = &after[end + 1..];
            }
            names.push(name.to_string());
            if self_closing {
                closed_root |= stack.is_empty();
            } else {
                stack.push(name.to_string());
            }
        }
        assert!(
            stack.is_empty() && closed_root && rest.trim().is_empty(),
            "unbalanced: {stack:?}"
        );
        names
    }

    fn summary() -> Summary {
        let mut s: Summary = serde_json::from_str(include_str!("compare/testdata/summary.json")).unwrap();
        assert_eq!(s.schema, SCHEMA);
        s.name = "smoke <&> \"quoted\" 'x'".into();
        s
    }

    #[test]
    fn passing_run_is_well_formed_with_no_failures() {
        let s = summary();
        let xml = render(&s, None);
        let names = check_well_formed(&xml);
        // 5 thresholds + SLO + identity + lost + contradictions.
        assert_eq!(names.iter().filter(|n| *n == "testcase").count(), 9, "{xml}");
        assert!(!names.contains(&"failure".to_string()), "{xml}");
        assert!(xml.contains("name=\"mailsurge.smoke &lt;&amp;&gt; &quot;quoted&quot; &apos;x&apos;\""));
        assert!(xml.contains("time=\"8.263\""), "{xml}");
        assert!(xml.contains("<testcase name=\"p99 &lt; 2s\" classname=\"mailsurge.thresholds\""));
        assert!(xml.contains("<testcase name=\"slo &gt;= 99%\" classname=\"mailsurge.slo\""));
        assert!(xml.contains("failures=\"0\""));
    }

    #[test]
    fn failing_threshold_slo_and_loss_yield_failures() {
        let mut s = summary();
        let t = &mut s.thresholds[1];
        (t.pass, t.observed, t.observed_text) = (false, Some(2500.0), "2500.00 ms".into());
        (s.slo.compliance, s.slo.pass) = (0.9, false);
        s.counts.lost = 2;
        s.counts.delivered -= 2;
        s.counts.generated += 1; // breaks the identity as well
        s.contradictions.delivered_unseen = 3;
        s.contradictions.total = 3;
        let xml = render(&s, None);
        check_well_formed(&xml);
        assert!(xml.contains("failures=\"5\""), "{xml}");
        assert!(
            xml.contains("<testcase name=\"contradictions == 0\" classname=\"mailsurge.accounting\""),
            "{xml}"
        );
        assert!(xml.contains("3 delivered_unseen"), "{xml}");
        assert!(
            xml.contains(
                "<testcase name=\"p99 &lt; 2s\" classname=\"mailsurge.thresholds\" time=\"0\">\n      \
                 <failure message=\"observed 2500.00 ms, limit &lt; 2s\" type=\"mailsurge.thresholds\">"
            ),
            "{xml}"
        );
        assert!(xml.contains("limit:    &lt; 2s"), "{xml}");
        assert!(
            xml.contains("message=\"observed 90.000%, limit &gt;= 99.000%\""),
            "{xml}"
        );
        assert!(xml.contains("message=\"observed 2, limit == 0\""), "{xml}");
        assert!(xml.contains("message=\"observed generated 776 != rejected_at_submit 0 + accepted 775\""));
    }

    #[test]
    fn comparison_adds_one_case_per_metric() {
        let base = summary();
        let mut cand = base.clone();
        cand.delivery_ms.p99 = cand.delivery_ms.p99.map(|v| v * 2.0);
        let limits = compare::Limits {
            min_delta_ms: Some(1.0),
            ..compare::Limits::default()
        };
        let c = compare::compare(&base, &cand, limits);
        let xml = render(&cand, Some(&c));
        let names = check_well_formed(&xml);
        let cases = names.iter().filter(|n| *n == "testcase").count();
        assert_eq!(cases, 9 + c.metrics.len());
        assert!(xml.contains("failures=\"1\""), "{xml}");
        assert!(
            xml.contains("<failure message=\"observed 8.34 ms, limit ≤ 5.17 ms (baseline 4.17 ms)\""),
            "{xml}"
        );
    }

    #[test]
    fn limit_text_keeps_the_written_limit() {
        assert_eq!(limit_text("p99 < 2s", 2000.0), "< 2s");
        assert_eq!(
            limit_text("region us-east: p50 <= 3s over 10s windows", 3000.0),
            "<= 3s"
        );
        assert_eq!(limit_text("slo >= 99.5%", 0.995), ">= 99.5%");
        assert_eq!(limit_text("not a threshold", 1.0), "1");
    }
}
