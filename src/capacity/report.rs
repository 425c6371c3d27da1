//! The capacity search's report: `charts/latency-vs-rate.{png,svg}` (p50 and p99 of each probe
//! on a log axis, the SLO's delivery time, the knee and the gate's rate marked), `report.md`
//! and a self-contained `report.html` with the same table — every figure from `capacity.json`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use super::probe::rate_label;
use super::runner::{Capacity, ProbeLine};
use crate::report::charts::{self, ChartSpec, HLine, Line, Marker};
use crate::report::format::{esc_html, ms, num, pct};

/// The chart's stem under `charts/`.
pub const CHART: &str = "charts/latency-vs-rate";

/// Writes the chart, report.md and report.html into `dir`.
pub fn write(dir: &Path, c: &Capacity) -> anyhow::Result<()> {
    charts::render(&chart(c), &dir.join("charts"), "latency-vs-rate")?;
    crate::files::write(&dir.join("report.md"), markdown(c))?;
    let svg = std::fs::read_to_string(dir.join(format!("{CHART}.svg"))).context("cannot read the chart")?;
    crate::files::write(&dir.join("report.html"), html(c, &svg))?;
    Ok(())
}

/// The judged probes in rate order (an errored probe has no figures to draw).
fn judged(c: &Capacity) -> Vec<&ProbeLine> {
    let mut p: Vec<&ProbeLine> = c.probes.iter().filter(|p| p.verdict != "error").collect();
    p.sort_by(|a, b| a.rate_per_s.total_cmp(&b.rate_per_s));
    p
}

fn chart(c: &Capacity) -> ChartSpec {
    let probes = judged(c);
    let line = |label: &str, q: fn(&ProbeLine) -> Option<f64>, dashed: bool| Line {
        dashed,
        ..Line::new(label, probes.iter().map(|p| (p.rate_per_s, q(p))).collect())
    };
    let mut markers = Vec::new();
    if let Some(k) = c.knee_per_s {
        markers.push(Marker {
            x: k,
            label: format!("knee {}/s", rate_label(k)),
            minor: false,
        });
    }
    let gate = c.scenario_peak_per_s * c.headroom;
    markers.push(Marker {
        x: gate,
        label: format!("peak × {} = {}/s", num(c.headroom, 2), rate_label(gate)),
        minor: true,
    });
    let top = probes.iter().map(|p| p.rate_per_s).fold(gate, f64::max);
    ChartSpec {
        title: match c.down.is_empty() {
            true => format!("{}: delivery time per probe rate (undelivered at the top)", c.scenario),
            false => format!(
                "{} with {} down: delivery time per probe rate",
                c.scenario,
                c.down.join(", ")
            ),
        },
        x_label: "offered rate (msg/s)".into(),
        y_label: "delivery time (ms, log)".into(),
        lines: vec![line("p50", |p| p.p50_ms, false), line("p99", |p| p.p99_ms, true)],
        hlines: vec![HLine {
            y: c.slo_ms,
            label: format!("SLO {} ms", num(c.slo_ms, 1)),
        }],
        markers,
        x_range: (0.0, top * 1.08),
        y_range: None,
        y_log: true,
    }
}

/// The headline: the knee against the gate, and what saturated.
fn headline(c: &Capacity) -> (String, String) {
    let knee = c
        .knee_per_s
        .map_or("none".to_string(), |k| format!("{}/s", rate_label(k)));
    let gate = c.scenario_peak_per_s * c.headroom;
    let verdict = if c.pass { "PASS" } else { "FAIL" };
    let line = format!(
        "knee {knee} ({}) against the scenario's peak {}/s × headroom {} = {}/s → {verdict}",
        c.why,
        rate_label(c.scenario_peak_per_s),
        num(c.headroom, 2),
        rate_label(gate)
    );
    (verdict.into(), line)
}

fn cpu_cell(p: &ProbeLine) -> String {
    p.attribution
        .as_ref()
        .and_then(|a| {
            let top = a.cpu.first()?;
            Some(format!(
                "{} {:.2}; machine {}",
                top.process,
                top.cores,
                a.busy.map_or("-".into(), |b| format!("{:.0}%", b * 100.0))
            ))
        })
        .unwrap_or_else(|| "-".into())
}

fn deferral_cell(p: &ProbeLine) -> String {
    let Some(a) = &p.attribution else {
        return "-".into();
    };
    let parts: Vec<String> = a
        .providers
        .iter()
        .filter(|x| x.deferrals > 0)
        .map(|x| format!("{} {} ({:.1}%)", x.provider, x.deferrals, x.share * 100.0))
        .collect();
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join(", ")
    }
}

/// One probe as table cells: #, rate, verdict, p50, p99, SLO, CPU, queue growth, backlog,
/// deferrals, bottleneck, run directory.
fn cells(k: usize, p: &ProbeLine) -> [String; 12] {
    let a = p.attribution.as_ref();
    [
        (k + 1).to_string(),
        rate_label(p.rate_per_s),
        p.verdict.to_uppercase(),
        ms(p.p50_ms, "∞"),
        ms(p.p99_ms, "∞"),
        p.slo.map_or("-".into(), pct),
        cpu_cell(p),
        a.map_or("-".into(), |a| format!("{:+.0}", a.queue_growth_per_s)),
        a.and_then(|a| a.backlog_p99_ms)
            .map_or("-".into(), |b| format!("{b:.0} ms")),
        deferral_cell(p),
        p.bottleneck.clone().unwrap_or_else(|| p.reasons.join("; ")),
        p.dir.clone(),
    ]
}

const HEADS: [&str; 12] = [
    "#",
    "rate/s",
    "verdict",
    "p50",
    "p99",
    "SLO",
    "busiest CPU (cores)",
    "queue/s",
    "backlog p99",
    "deferrals",
    "what saturated",
    "run",
];

fn markdown(c: &Capacity) -> String {
    let mut o = String::new();
    let (verdict, line) = headline(c);
    let _ = writeln!(o, "# mailsurge capacity `{}` — {verdict}\n", c.scenario);
    let _ = writeln!(o, "{line}\n");
    if let Some(b) = &c.bottleneck {
        let _ = writeln!(o, "**What saturated first:** {b}\n");
    }
    let down = match c.down.is_empty() {
        true => "nothing".to_string(),
        false => c.down.join(", "),
    };
    let _ = writeln!(
        o,
        "{} probes, each {} s at a constant rate after a {} s warm-up (not judged); down from the start: {down}. \
         SLO: {} of mail within {} ms.\n",
        c.probes.len(),
        num(c.step_s, 1),
        num(c.warmup_s, 1),
        pct(c.slo_target),
        num(c.slo_ms, 1)
    );
    let _ = writeln!(o, "![delivery time per rate]({CHART}.png)\n");
    let _ = writeln!(o, "| {} |", HEADS.join(" | "));
    let _ = writeln!(o, "|{}", "---|".repeat(HEADS.len()));
    for (k, p) in c.probes.iter().enumerate() {
        let mut row = cells(k, p);
        row[11] = format!("[{0}]({0}/report.html)", row[11]);
        let row: Vec<String> = row.iter().map(|x| x.replace('|', "\\|")).collect();
        let _ = writeln!(o, "| {} |", row.join(" | "));
    }
    let _ = writeln!(
        o,
        "\nCPU is CPU seconds per second over the judged window (`generator` is the harness's \
         generator side, `inboxes` the mock inboxes, nodes by name); queue/s is the MTA queue's \
         growth in recipients per second; backlog is how late submissions started after their \
         intended time. Each probe's directory is a normal run directory (`mailsurge report`, \
         `mailsurge compare`)."
    );
    o
}

fn html(c: &Capacity, svg: &str) -> String {
    let mut o = String::new();
    let (verdict, line) = headline(c);
    let class = if c.pass { "pass" } else { "fail" };
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{verdict} · mailsurge capacity {}</title>\n<style>{}</style>\n</head>\n<body>\n<main>\n",
        esc_html(&c.scenario),
        crate::report::html::CSS
    );
    let _ = writeln!(
        o,
        "<h1>mailsurge capacity <code>{}</code> <span class=\"badge {class}\">{verdict}</span></h1>",
        esc_html(&c.scenario)
    );
    let _ = writeln!(o, "<div class=\"box {class}\"><p>{}</p>", esc_html(&line));
    if let Some(b) = &c.bottleneck {
        let _ = writeln!(o, "<p><strong>What saturated first:</strong> {}</p>", esc_html(b));
    }
    let _ = writeln!(o, "</div>");
    let _ = writeln!(
        o,
        "<figure>\n<figcaption>Delivery time per probe rate <span class=\"path\">{CHART}.svg</span></figcaption>\n{}\n</figure>",
        crate::report::html::inline_svg(svg, "delivery time per probe rate")
    );
    let _ = writeln!(o, "<table>\n<tr>");
    for h in HEADS {
        let _ = write!(o, "<th>{}</th>", esc_html(h));
    }
    let _ = writeln!(o, "</tr>");
    for (k, p) in c.probes.iter().enumerate() {
        let cls = if p.pass { "" } else { " class=\"failed\"" };
        let _ = write!(o, "<tr{cls}>");
        for (i, cell) in cells(k, p).iter().enumerate() {
            let num_col = matches!(i, 0 | 1 | 3 | 4 | 5 | 7 | 8);
            let text = match i {
                11 => format!("<a href=\"{0}/report.html\">{0}</a>", esc_html(cell)),
                _ => esc_html(cell),
            };
            let _ = write!(o, "<td{}>{text}</td>", if num_col { " class=\"num\"" } else { "" });
        }
        let _ = writeln!(o, "</tr>");
    }
    let _ = writeln!(o, "</table>\n</main>\n</body>\n</html>");
    o
}
