//! How a [`Comparison`] reads: the terminal table of `mailsurge compare`, the "Compared with
//! baseline" section of report.md, and the files `run --baseline` leaves in the run directory.

use std::fmt::Write as _;
use std::path::Path;

use super::model::{fmt_value, Comparison, MetricDelta, Status, Tolerance};
use crate::report::format::num;
use crate::report::summary::Summary;

impl MetricDelta {
    /// One row of the terminal table and of report.md's.
    fn cells(&self) -> [String; 6] {
        [
            self.metric.clone(),
            fmt_value(self.unit, &self.base),
            fmt_value(self.unit, &self.candidate),
            self.delta_text(),
            self.limit_text(),
            self.status_text().into(),
        ]
    }
}

const HEADER: [&str; 6] = ["metric", "base", "candidate", "delta", "limit", "status"];

impl Comparison {
    /// One line: what was compared with what, and the outcome.
    pub fn headline(&self) -> String {
        let outcome = if self.regression {
            format!("REGRESSION in {}", self.regressions.join(", "))
        } else {
            "no regression".into()
        };
        format!(
            "compare {} ({}) → {} ({}), tolerance {}, min delta {} ms: {outcome}",
            self.base.name,
            self.base.run_id,
            self.candidate.name,
            self.candidate.run_id,
            Tolerance(self.tolerance),
            num(self.min_delta_ms, 3)
        )
    }
}

/// The terminal table: aligned columns, then why each regression is one, then notes.
pub fn render_text(c: &Comparison) -> String {
    let rows: Vec<[String; 6]> = c.metrics.iter().map(MetricDelta::cells).collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([HEADER[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..6).map(width).collect();
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            // Numbers right-aligned, words left-aligned.
            if (1..=4).contains(&i) {
                l.push_str(&" ".repeat(pad));
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.push_str(&" ".repeat(pad));
            }
            l.push_str("  ");
        }
        l.trim_end().to_string() + "\n"
    };
    let mut o = line(&HEADER);
    for r in &rows {
        o.push_str(&line(&r.each_ref().map(String::as_str)));
    }
    for m in c.metrics.iter().filter(|m| m.status == Status::Regression) {
        let _ = writeln!(o, "  ✗ {}", m.why);
    }
    for n in &c.notes {
        let _ = writeln!(o, "  note: {n}");
    }
    let _ = writeln!(o, "{}", c.headline());
    o
}

/// The "Compared with baseline" section appended to report.md.
pub fn render_markdown(c: &Comparison) -> String {
    let mut o = String::from("\n## Compared with baseline\n\n");
    let _ = writeln!(
        o,
        "Baseline `{}` (`{}`, started {}, {}) · tolerance {} — {}\n",
        c.base.run_id,
        c.base.name,
        c.base.started_at,
        c.base.verdict,
        Tolerance(c.tolerance),
        if c.regression {
            format!("**REGRESSION** in {}", c.regressions.join(", "))
        } else {
            "no regression".into()
        }
    );
    let _ = writeln!(o, "| {} |\n|---|---:|---:|---:|---:|---|", HEADER.join(" | "));
    for m in &c.metrics {
        let mut cells = m.cells();
        if m.status == Status::Regression {
            cells[5] = "**REGRESSION**".into();
        }
        let _ = writeln!(o, "| {} |", cells.join(" | "));
    }
    let _ = writeln!(o);
    for m in c.metrics.iter().filter(|m| m.status == Status::Regression) {
        let _ = writeln!(o, "- {}", m.why);
    }
    for n in &c.notes {
        let _ = writeln!(o, "- note: {n}");
    }
    let _ = writeln!(
        o,
        "\nRules: delivery times may grow by the tolerance, and always by {} ms (∞ = undelivered mail); \
         SLO compliance may fall by the tolerance × max(baseline miss rate, error budget); lost, duplicates, \
         expired and stranded may not rise from 0; pass → fail is a regression.",
        num(c.min_delta_ms, 3)
    );
    o
}

/// `run --baseline`: writes `compare.json`, appends the section to report.md and rewrites
/// junit.xml with one testcase per compared metric, so CI sees the gate where it sees the
/// thresholds.
pub fn write_into_run(dir: &Path, run: &Summary, c: &Comparison) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(c).map_err(std::io::Error::other)?;
    crate::files::write(&dir.join("compare.json"), json + "\n")?;
    use std::io::Write as _;
    let mut md = std::fs::OpenOptions::new().append(true).open(dir.join("report.md"))?;
    md.write_all(render_markdown(c).as_bytes())?;
    crate::report::junit::write(dir, run, Some(c))
}
