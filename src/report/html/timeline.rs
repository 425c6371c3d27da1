//! The fault timeline of `report.html`: the run's chaos actions as a Gantt-style strip, so the
//! order and overlap of faults (a kill spanning a provider slowdown, say) and how fast each was
//! detected and recovered from read at a glance — the per-chart markers show when, not how long.

use std::fmt::Write as _;

use crate::measure::{Analysis, MarkKind};
use crate::report::format::esc_html;
use crate::report::markdown::action;
use crate::report::summary::Summary;

/// Timeline geometry: label column, plot width, row height.
const TL_LABEL_W: f64 = 260.0;
const TL_PLOT_W: f64 = 900.0;
const TL_ROW_H: f64 = 26.0;

/// A Gantt-style strip of the run: one row per chaos action (its bar spans to its end, a
/// diamond marks detection and a tick recovery), a last row for the balancer's reactions.
pub fn svg(s: &Summary, a: &Analysis) -> String {
    let ends = s.faults.iter().map(|f| f.end_s.unwrap_or(f.at_s).max(f.window_end_s));
    let x_max = ends
        .chain(a.marks.iter().map(|m| m.at_s))
        .fold(a.rates.generated.len().max(a.series.len()).max(1) as f64, f64::max)
        .ceil();
    let x = |t: f64| TL_LABEL_W + (t.clamp(0.0, x_max) / x_max) * TL_PLOT_W;
    let minor: Vec<_> = a.marks.iter().filter(|m| m.kind.is_minor()).collect();
    let rows = s.faults.len() + usize::from(!minor.is_empty());
    let top = 8.0;
    let axis_y = top + rows as f64 * TL_ROW_H + 6.0;
    let (w, h) = (TL_LABEL_W + TL_PLOT_W + 20.0, axis_y + 34.0);
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg class=\"tl\" role=\"img\" aria-label=\"fault timeline\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"13\">"
    );
    // Axis with about ten ticks at round seconds.
    let step = [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|st| x_max / st <= 12.0)
        .unwrap_or(1200.0);
    let _ = write!(
        o,
        "<line x1=\"{TL_LABEL_W}\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\" stroke=\"#444\"/>",
        x(x_max)
    );
    let mut t = 0.0;
    while t <= x_max + 1e-9 {
        let _ = write!(
            o,
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#e4e4e4\"/>\
             <text x=\"{0:.1}\" y=\"{2}\" text-anchor=\"middle\" fill=\"#333\">{3}s</text>",
            x(t),
            axis_y + 4.0,
            axis_y + 19.0,
            t
        );
        t += step;
    }
    for (i, f) in s.faults.iter().enumerate() {
        let y = top + i as f64 * TL_ROW_H;
        let colour = match f.action.as_str() {
            "kill" => "#d62728",
            "restore" => "#2ca02c",
            "block" => "#ff7f0e",
            "latency" => "#9467bd",
            _ => "#1f77b4",
        };
        let label = format!("{:.1}s {} {}", f.at_s, action(f), f.target);
        let _ = write!(
            o,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#222\">{}</text>",
            TL_LABEL_W - 8.0,
            y + 17.0,
            esc_html(&label)
        );
        let (x0, x1) = (x(f.at_s), x(f.end_s.unwrap_or(f.at_s)));
        let _ = write!(
            o,
            "<rect x=\"{x0:.1}\" y=\"{}\" width=\"{:.1}\" height=\"14\" rx=\"3\" fill=\"{colour}\" \
             fill-opacity=\"0.8\"><title>{}</title></rect>",
            y + 6.0,
            (x1 - x0).max(4.0),
            esc_html(&label)
        );
        if let Some(d) = f.detection_s {
            let (cx, cy) = (x(f.at_s + d), y + 13.0);
            let _ = write!(
                o,
                "<path d=\"M{cx:.1} {:.1} l5 7 l-5 7 l-5 -7 z\" fill=\"#111\"><title>detected after {d:.3} s\
                 </title></path>",
                cy - 7.0
            );
        }
        if let Some(t) = f.takeover_s {
            // A circle: the last of the killed nodes' leased mail picked up by a survivor.
            let _ = write!(
                o,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"#fff\" stroke=\"#1f4e9c\" \
                 stroke-width=\"2.5\"><title>taken over after {t:.3} s</title></circle>",
                x(f.at_s + t),
                y + 13.0
            );
        }
        if let Some(r) = f.recovery_s {
            let rx = x(f.at_s + r);
            let _ = write!(
                o,
                "<line x1=\"{rx:.1}\" y1=\"{:.1}\" x2=\"{rx:.1}\" y2=\"{:.1}\" stroke=\"#005a00\" \
                 stroke-width=\"3\"><title>recovered after {r:.3} s</title></line>",
                y + 3.0,
                y + 23.0
            );
        }
    }
    if !minor.is_empty() {
        let y = top + s.faults.len() as f64 * TL_ROW_H;
        let _ = write!(
            o,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#555\">balancer</text>",
            TL_LABEL_W - 8.0,
            y + 17.0
        );
        for m in minor {
            // Evictions point down (out of service), admissions up.
            let (cx, evict) = (x(m.at_s), m.kind == MarkKind::Evicted);
            let (y0, path) = match evict {
                true => (y + 19.0, "l-6 -12 l12 0 z"),
                false => (y + 7.0, "l-6 12 l12 0 z"),
            };
            let _ = write!(
                o,
                "<path d=\"M{cx:.1} {y0:.1} {path}\" fill=\"{}\"><title>{:.2}s {}</title></path>",
                if evict { "#a33" } else { "#3a3" },
                m.at_s,
                esc_html(&m.label)
            );
        }
    }
    o.push_str("</svg>");
    o.push_str(
        "\n<p class=\"note\">Bars: an action from its start to its end (a kill until its restore); ◆ \
         detection, green tick recovery, ○ takeover (shared queue); balancer row: ▼ eviction, ▲ re-admission (first per node group).</p>",
    );
    o
}
