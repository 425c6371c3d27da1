//! `report.html`: the whole report as one self-contained page, for opening from a CI artifact
//! where report.md's relative chart links and a job summary's renderer are not available.
//!
//! Self-contained means no network and no sibling files: the CSS is inline, every chart is the
//! content of its `charts/*.svg` inlined (plotters writes `font-family="sans-serif"`, which any
//! browser resolves to a local face), and the fault timeline is drawn here as SVG too. CI
//! artifact viewers often open a page offline or behind a strict CSP, and a page that pulls a
//! font or a script from the internet would render differently there than on a laptop.
//!
//! Every piece of text from the run (scenario names, thresholds, fault labels, SMTP texts) is
//! escaped: the page must not be able to carry markup from a scenario file into a browser.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use super::format::{contradictions_sentence, esc_html, identity_equations, ms, r3, secs, slo_sentence};
use super::markdown::action;
use super::summary::{GroupLine, Summary, VERDICT_ABORTED, VERDICT_ERROR};
use crate::measure::{Analysis, MarkKind};

mod timeline;

/// Reads the rendered charts (the `.svg` beside each listed `.png`) and writes `report.html`.
pub fn write(dir: &Path, s: &Summary, a: &Analysis, charts: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut inline = Vec::new();
    for (title, png) in charts {
        let rel = png
            .strip_suffix(".png")
            .map_or_else(|| png.to_string(), |p| format!("{p}.svg"));
        let svg = std::fs::read_to_string(dir.join(&rel)).with_context(|| format!("cannot read {rel}"))?;
        inline.push((title.to_string(), rel, svg));
    }
    Ok(crate::files::write(&dir.join("report.html"), render(s, a, &inline))?)
}

/// The page. `charts`: (title, path in the run directory, SVG document).
pub fn render(s: &Summary, a: &Analysis, charts: &[(String, String, String)]) -> String {
    let mut o = String::new();
    // `pass`, `fail`, `aborted` or `error`: the badge's text and its CSS class.
    let verdict = s.verdict.to_uppercase();
    let class = match s.verdict.as_str() {
        "pass" | "fail" | VERDICT_ABORTED | VERDICT_ERROR => s.verdict.as_str(),
        _ => "fail",
    };
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{verdict} · mailsurge {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc_html(&s.name)
    );
    let _ = writeln!(
        o,
        "<h1>mailsurge {} <code>{}</code> <span class=\"badge {}\">{verdict}</span></h1>",
        if s.simulated { "simulation" } else { "run" },
        esc_html(&s.name),
        class
    );
    let _ = writeln!(
        o,
        "<p class=\"meta\">run <code>{}</code> · seed {} · started {} · wall {:.1} s</p>",
        esc_html(&s.run_id),
        s.seed,
        esc_html(&s.started_at),
        s.wall_s
    );
    if let Some(sp) = &s.spool {
        let _ = writeln!(
            o,
            "<p class=\"meta\">spool <code>{}</code>: {}</p>",
            esc_html(&sp.kind),
            esc_html(&sp.durability)
        );
    }
    if let Some(sim) = &s.sim {
        let _ = writeln!(
            o,
            "<p class=\"meta\"><strong>Simulated</strong> by <code>mailsurge sim</code> ({} model, calibrated from {}): every figure is the model's, not measured on real processes; <em>wall</em> is the simulated span.</p>",
            esc_html(&sim.mode),
            esc_html(&sim.calibration)
        );
    }
    let _ = writeln!(
        o,
        "<nav>{}</nav>",
        [
            ("verdict", "Verdict"),
            ("delivery", "Delivery time"),
            ("thresholds", "Thresholds"),
            ("accounting", "Accounting"),
            ("groups", "Regions & providers"),
            ("faults", "Faults"),
            ("charts", "Charts"),
        ]
        .iter()
        .map(|(id, t)| format!("<a href=\"#{id}\">{t}</a>"))
        .collect::<Vec<_>>()
        .join(" · ")
    );
    verdict_section(&mut o, s);
    delivery_section(&mut o, s, a);
    tls_section(&mut o, s);
    thresholds_section(&mut o, s, a);
    accounting_section(&mut o, s, a);
    groups_section(&mut o, s);
    faults_section(&mut o, s, a);
    let _ = writeln!(o, "<section id=\"charts\">\n<h2>Charts</h2>");
    if charts.is_empty() {
        let _ = writeln!(o, "<p>No charts.</p>");
    }
    for (title, path, svg) in charts {
        let _ = writeln!(
            o,
            "<figure>\n<figcaption>{} <span class=\"path\">{}</span></figcaption>\n{}\n</figure>",
            esc_html(title),
            esc_html(path),
            inline_svg(svg, title)
        );
    }
    let _ = writeln!(o, "</section>\n</main>\n</body>\n</html>");
    o
}

/// An SVG document as an element of the page: no XML prolog, and no namespace URL (an HTML
/// parser puts `<svg>` in the SVG namespace itself), so the page names no URL at all.
pub(crate) fn inline_svg(svg: &str, title: &str) -> String {
    let body = match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => return format!("<p class=\"bad\">chart {} is not an SVG document</p>", esc_html(title)),
    };
    let body = body.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1);
    body.replacen(
        "<svg",
        &format!("<svg role=\"img\" aria-label=\"{}\"", esc_html(title)),
        1,
    )
}

fn verdict_section(o: &mut String, s: &Summary) {
    let _ = writeln!(o, "<section id=\"verdict\">\n<h2>Verdict</h2>");
    if s.reasons.is_empty() {
        let _ = writeln!(
            o,
            "<div class=\"box pass\"><strong>PASS</strong> — every threshold, the SLO and \
             <code>lost == 0</code> hold.</div>"
        );
    } else {
        // Summary::new lists failed thresholds first, then the SLO, losses and the identity.
        let _ = writeln!(o, "<div class=\"box fail\"><strong>FAIL</strong> — why:\n<ul>");
        for r in &s.reasons {
            let _ = writeln!(o, "<li>{}</li>", code_spans(r));
        }
        let _ = writeln!(o, "</ul></div>");
    }
    let _ = writeln!(o, "</section>");
}

/// Escapes a reason and turns its markdown-style `backticks` into `<code>`.
fn code_spans(text: &str) -> String {
    let mut o = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(o, "<code>{}</code>", esc_html(part));
        } else {
            o.push_str(&esc_html(part));
        }
    }
    o
}

fn delivery_section(o: &mut String, s: &Summary, a: &Analysis) {
    let d = &s.delivery_ms;
    let u = &a.uncorrected;
    let _ = writeln!(
        o,
        "<section id=\"delivery\">\n<h2>Delivery time</h2>\n<table>\n<tr><th>measured from</th>\
         <th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>"
    );
    let row = |o: &mut String, what: &str, v: [Option<f64>; 5]| {
        let _ = write!(o, "<tr><td>{what}</td>");
        for x in v {
            let _ = write!(o, "<td class=\"num\">{}</td>", ms(x, "∞"));
        }
        let _ = writeln!(o, "</tr>");
    };
    row(
        o,
        "intended send time (corrected)",
        [d.p50, d.p90, d.p99, d.p999, d.max],
    );
    row(
        o,
        "actual submission start (uncorrected)",
        // summary.json has only p50 and p99 of these: round the rest like it, so the row
        // shows the JSON's digits.
        [
            d.uncorrected_p50,
            u.quantile_ms(0.9).map(r3),
            d.uncorrected_p99,
            u.quantile_ms(0.999).map(r3),
            u.max_ms().map(r3),
        ],
    );
    let _ = writeln!(
        o,
        "</table>\n<p class=\"note\">Over eligible mail (accepted, not bounced or suppressed by \
         design); an undelivered message counts as ∞. The uncorrected figure hides time spent \
         queueing in the generator behind a slow MTA: a large gap between the rows is that queue.</p>"
    );
    let _ = writeln!(
        o,
        "<p><strong>SLO</strong>: {} — <span class=\"{}\">{}</span></p>\n</section>",
        slo_sentence(s.slo.compliance, s.slo.delivery_ms, s.slo.target),
        if s.slo.pass { "ok" } else { "bad" },
        if s.slo.pass { "met" } else { "missed" }
    );
}

/// TLS per hop, when any message went over TLS.
fn tls_section(o: &mut String, s: &Summary) {
    let Some(t) = &s.tls else { return };
    let _ = writeln!(
        o,
        "<section id=\"tls\">\n<h2>TLS</h2>\n<table>\n<tr><th>hop</th><th>over TLS</th><th>messages</th>\
         <th>TLS sessions</th><th>handshake p50</th><th>handshake p99</th></tr>"
    );
    for (hop, h) in [("generator → MTA", &t.submission), ("MTA → inbox", &t.delivery)] {
        let _ = writeln!(
            o,
            "<tr><td>{hop}</td><td class=\"num\">{:.1}%</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            h.share * 100.0,
            h.messages,
            h.sessions,
            ms(h.handshake_p50_ms, "-"),
            ms(h.handshake_p99_ms, "-")
        );
    }
    let _ = writeln!(o, "</table>\n</section>");
}

fn thresholds_section(o: &mut String, s: &Summary, a: &Analysis) {
    let _ = writeln!(o, "<section id=\"thresholds\">\n<h2>Thresholds</h2>");
    if s.thresholds.is_empty() {
        let _ = writeln!(o, "<p>The scenario sets no thresholds.</p>\n</section>");
        return;
    }
    let _ = writeln!(
        o,
        "<table>\n<tr><th>threshold</th><th>observed</th><th>limit</th><th>result</th></tr>"
    );
    // Failed first: the rows that explain the verdict lead.
    let mut rows: Vec<usize> = (0..s.thresholds.len()).collect();
    rows.sort_by_key(|&i| s.thresholds[i].pass);
    for i in rows {
        let t = &s.thresholds[i];
        let limit = a.thresholds.get(i).map_or_else(
            || format!("{}", t.limit),
            |r| {
                let th = &r.threshold;
                format!("{} {}", th.op_str(), th.format_value(Some(th.limit)))
            },
        );
        let _ = writeln!(
            o,
            "<tr class=\"{}\"><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td>{}</td></tr>",
            if t.pass { "" } else { "failed" },
            esc_html(&t.expr),
            esc_html(&t.observed_text),
            esc_html(&limit),
            if t.pass {
                "pass"
            } else {
                "<strong class=\"bad\">fail</strong>"
            }
        );
    }
    let _ = writeln!(o, "</table>\n</section>");
}

fn accounting_section(o: &mut String, s: &Summary, a: &Analysis) {
    let c = &s.counts;
    let _ = writeln!(o, "<section id=\"accounting\">\n<h2>Accounting</h2>");
    let [submitted, accepted] = identity_equations(c);
    let _ = writeln!(o, "<p class=\"identity\">{submitted}<br>{accepted}</p>");
    match &a.identity {
        Ok(()) => {
            let _ = writeln!(o, "<p class=\"ok\">Both identities hold.</p>");
        }
        Err(e) => {
            let _ = writeln!(o, "<p class=\"bad\">Does not hold: {}</p>", esc_html(e));
        }
    }
    let _ = writeln!(o, "<table>\n<tr>");
    let cells = [
        ("lost", c.lost),
        ("duplicates", c.duplicates),
        ("stranded", c.stranded),
        ("deferrals", c.deferrals),
        ("never submitted", c.unsubmitted),
        ("events", c.events),
    ];
    for (k, _) in cells {
        let _ = write!(o, "<th>{k}</th>");
    }
    let _ = write!(o, "</tr>\n<tr>");
    for (k, v) in cells {
        let bad = v > 0 && matches!(k, "lost" | "duplicates" | "stranded");
        let _ = write!(o, "<td class=\"num{}\">{v}</td>", if bad { " bad" } else { "" });
    }
    let _ = writeln!(
        o,
        "</tr>\n</table>\n<p class=\"note\"><code>lost</code> is computed — accepted, no terminal \
         event, not in any spool — never assumed. <code>stranded</code>: queued in the spool of a \
         node that is dead at the end.</p>"
    );
    let k = &s.contradictions;
    let class = if k.total > 0 { "bad" } else { "ok" };
    let _ = writeln!(
        o,
        "<p class=\"{class}\">{}</p>\n</section>",
        esc_html(&contradictions_sentence(k))
    );
}

fn groups_section(o: &mut String, s: &Summary) {
    let _ = writeln!(o, "<section id=\"groups\">");
    for (title, groups) in [("Regions", &s.by_region), ("Providers", &s.by_provider)] {
        let _ = writeln!(o, "<h2>{title}</h2>");
        if groups.is_empty() {
            let _ = writeln!(o, "<p>None.</p>");
            continue;
        }
        let _ = writeln!(
            o,
            "<table>\n<tr><th>name</th><th>delivered</th><th>p50</th><th>p99</th><th>deferrals</th>\
             <th>bounced</th></tr>"
        );
        for (name, g) in groups {
            group_row(o, name, g);
        }
        let _ = writeln!(o, "</table>");
    }
    let _ = writeln!(o, "</section>");
}

fn group_row(o: &mut String, name: &str, g: &GroupLine) {
    let _ = writeln!(
        o,
        "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
        esc_html(name),
        g.delivered,
        ms(g.p50, "∞"),
        ms(g.p99, "∞"),
        g.deferrals,
        g.bounced
    );
}

fn faults_section(o: &mut String, s: &Summary, a: &Analysis) {
    let _ = writeln!(o, "<section id=\"faults\">\n<h2>Faults</h2>");
    if s.faults.is_empty() && a.marks.is_empty() {
        let _ = writeln!(o, "<p>No chaos actions in this run.</p>\n</section>");
        return;
    }
    if !s.faults.is_empty() {
        let _ = writeln!(
            o,
            "<table>\n<tr><th>at</th><th>action</th><th>target</th><th>until</th><th>detection</th>\
             <th>recovery</th><th>takeover</th><th>delayed</th><th>lost</th><th>duplicates</th>\
             <th>held at the kill: delivered after restore</th><th>held: undelivered</th>\
             <th>counted until</th></tr>"
        );
        for f in &s.faults {
            let opt = |v: Option<u64>| v.map_or_else(|| "—".to_string(), |n| n.to_string());
            let _ = writeln!(
                o,
                "<tr><td class=\"num\">{:.1} s</td><td>{}</td><td><code>{}</code></td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num{}\">{}</td><td class=\"num\">{:.1} s</td></tr>",
                f.at_s,
                esc_html(&action(f)),
                esc_html(&f.target),
                f.end_s.map_or_else(|| "—".into(), |e| format!("{e:.1} s")),
                secs(f.detection_s, "none"),
                if f.recovery_s.is_none() { " bad" } else { "" },
                secs(f.recovery_s, "not recovered"),
                secs(f.takeover_s, "—"),
                f.delayed,
                if f.lost > 0 { " bad" } else { "" },
                f.lost,
                f.duplicates,
                opt(f.held_delivered_after_restore),
                if f.held_undelivered.unwrap_or(0) > 0 {
                    " bad"
                } else {
                    ""
                },
                opt(f.held_undelivered),
                f.window_end_s
            );
        }
        let _ = writeln!(
            o,
            "</table>\n<p class=\"note\">Detection: fault → first eviction (region/node) or deferral \
             (provider); for a restore, first admission or receipt. Recovery: fault → start of 10 s of \
             per-second SLO compliance ≥ target. Takeover (shared queue): kill → the last message \
             the killed nodes held under lease picked up again. Delayed, lost and duplicates count mail intended from \
             the fault until recovery (or the action's end, if later): “counted until”.</p>"
        );
    }
    let _ = writeln!(o, "<h3>Timeline</h3>");
    let _ = writeln!(o, "{}", timeline::svg(s, a));
    let _ = writeln!(
        o,
        "<table class=\"timeline\">\n<tr><th>run time</th><th>what</th><th>event</th></tr>"
    );
    for m in &a.marks {
        let kind = match m.kind {
            MarkKind::Fault => "chaos action",
            MarkKind::FaultEnd => "action ends",
            MarkKind::Evicted => "balancer evicts",
            MarkKind::Admitted => "balancer admits",
        };
        let _ = writeln!(
            o,
            "<tr class=\"{}\"><td class=\"num\">{:.2} s</td><td>{kind}</td><td>{}</td></tr>",
            if m.kind.is_minor() { "minor" } else { "" },
            m.at_s,
            esc_html(&m.label)
        );
    }
    let _ = writeln!(o, "</table>\n</section>");
}

pub(crate) const CSS: &str = "
body{margin:0;background:#f6f7f9;color:#1d1f23;font:15px/1.45 system-ui,-apple-system,'Segoe UI',\
Roboto,'DejaVu Sans','Liberation Sans',Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:20px 28px 48px;background:#fff}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:20px;margin:28px 0 8px;border-bottom:1px solid #ddd;\
padding-bottom:4px}h3{font-size:16px;margin:18px 0 6px}
code{font-family:ui-monospace,'DejaVu Sans Mono','Liberation Mono',monospace;font-size:.92em;\
background:#f0f1f3;padding:0 3px;border-radius:3px}
nav{margin:6px 0 0;font-size:14px}nav a{color:#1f5fa8;text-decoration:none}
.meta{color:#555;margin:0}.note{color:#555;font-size:13px;max-width:1000px}
.badge{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;font-size:18px;vertical-align:3px}
.badge.pass{background:#1e7d32}.badge.fail{background:#c62828}.badge.aborted{background:#6d4c41}.badge.error{background:#4a148c}
.box{padding:10px 14px;border-radius:6px;border:1px solid}
.box.pass{background:#e8f5e9;border-color:#a5d6a7}.box.fail{background:#fdecea;border-color:#f5a5a0}
.box ul{margin:6px 0 0;padding-left:22px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:14px}
th,td{border:1px solid #d9dce1;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#eef0f3;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.failed td{background:#fdecea}tr.minor td{color:#666}
.ok{color:#1e7d32}.bad{color:#c62828;font-weight:600}
.identity{font-variant-numeric:tabular-nums}
figure{margin:18px 0;padding:0}figcaption{font-weight:600;margin-bottom:4px}
figcaption .path{font-weight:400;color:#777;font-size:13px;margin-left:6px}
figure svg{display:block;width:100%;max-width:1200px;height:auto;border:1px solid #e2e4e8}
svg.tl{display:block;width:100%;max-width:1180px;height:auto}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_escape_and_keep_code_spans() {
        assert_eq!(
            code_spans("threshold `p50 < 2s` failed"),
            "threshold <code>p50 &lt; 2s</code> failed"
        );
    }

    /// A failing run with a chaos action whose text carries markup.
    #[test]
    fn page_leads_with_failures_and_escapes_run_text() {
        use crate::events::{Event, Kind};
        use crate::measure::{analyze, Inputs};
        use crate::report::summary::RunInfo;
        const S: u64 = 1_000_000_000;
        let mut ev = Vec::new();
        for i in 0..20u64 {
            let id = format!("r.{i}");
            let mut sub = Event::new(i * S / 4, &id, Kind::Submitted);
            (sub.rcpt, sub.intended, sub.submitted) = (Some("u@a.test".into()), Some(i * S / 4), Some(i * S / 4));
            let mut acc = Event::new(i * S / 4 + 1, &id, Kind::Accepted);
            (acc.rcpt, acc.region) = (sub.rcpt.clone(), Some("<east>".into()));
            let mut rec = Event::new(i * S / 4 + (i + 1) * S / 10, &id, Kind::Received);
            rec.rcpt = sub.rcpt.clone();
            ev.extend([sub, acc, rec]);
        }
        let mut f = Event::new(2 * S, "fault.0", Kind::Fault);
        f.text = Some("kill region/<script>alert(1)</script>".into());
        ev.push(f);
        ev.sort_by_key(|e| e.t);
        let inputs = Inputs {
            start_ns: 0,
            duration_s: 5.0,
            warmup_s: 0.0,
            slo_ms: 1000.0,
            slo_target: 0.99,
            providers: [("a.test".to_string(), "p&q".to_string())].into(),
            thresholds: ["lost == 0", "p99 < 1s"].iter().map(|t| t.parse().unwrap()).collect(),
        };
        let a = analyze(&ev, &[], &inputs);
        let info = RunInfo {
            name: "x\"><b>".into(),
            start_ns: 0,
            seed: 1,
            run_id: "id".into(),
            started_at: "t".into(),
            wall_s: 6.0,
            slo_ms: 1000.0,
            slo_target: 0.99,
            aborted: None,
            spool: None,
            sim: None,
        };
        let s = Summary::new(&info, &a);
        let chart = (
            "delivery time".to_string(),
            "charts/d.svg".to_string(),
            "<svg width=\"1\"></svg>".to_string(),
        );
        let page = render(&s, &a, &[chart]);
        assert_eq!(s.verdict, "fail");
        assert!(!page.contains("<script") && !page.contains("<b>") && !page.contains("<east>"));
        assert!(page.contains("kill region/&lt;script&gt;") && page.contains("p&amp;q"));
        let failed = page
            .find("<tr class=\"failed\"><td><code>p99 &lt; 1s")
            .expect("failed row");
        let passed = page.find("<code>lost == 0</code></td>").expect("passing row");
        assert!(failed < passed, "failed thresholds lead the table");
        assert!(page.contains("<svg class=\"tl\"") && page.contains("<svg role=\"img\" aria-label=\"delivery time\""));
        assert!(!page.contains("http"), "the page names no URL");
    }

    #[test]
    fn inlined_svg_names_no_url() {
        let doc = "<svg width=\"10\" height=\"5\" viewBox=\"0 0 10 5\" xmlns=\"http://www.w3.org/2000/svg\">\
                   <text>a &lt; b</text></svg>";
        let got = inline_svg(doc, "t<1>");
        assert!(!got.contains("http"), "{got}");
        assert!(
            got.starts_with("<svg role=\"img\" aria-label=\"t&lt;1&gt;\" width=\"10\""),
            "{got}"
        );
        assert!(inline_svg("not svg", "x").contains("not an SVG"));
    }
}
