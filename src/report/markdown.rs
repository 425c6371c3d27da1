//! `report.md`: the human summary, short enough for a CI job summary page. Leads with the
//! verdict and why, then delivery time, SLO, accounting, and per-region/provider tables.

use std::fmt::Write;

use super::format::{contradictions_sentence, identity_equations, ms, secs, slo_sentence};
use super::summary::{Fault, Summary, VERDICT_ABORTED, VERDICT_ERROR};

/// How report.md writes an undelivered message's delivery time: no note on the page explains
/// a bare `∞`.
const UNDELIVERED: &str = "∞ (undelivered)";

pub fn render(s: &Summary, charts: &[(&str, &str)]) -> String {
    let mut o = String::new();
    let icon = s.verdict.to_uppercase();
    let what = if s.simulated { "simulation" } else { "run" };
    let _ = writeln!(o, "# mailsurge {what} `{}` — {icon}\n", s.name);
    let _ = writeln!(
        o,
        "run `{}` · seed {} · started {} · wall {:.1} s\n",
        s.run_id, s.seed, s.started_at, s.wall_s
    );
    if let Some(sp) = &s.spool {
        let _ = writeln!(o, "spool `{}`: {}\n", sp.kind, sp.durability);
    }
    if let Some(sim) = &s.sim {
        let _ = writeln!(
            o,
            "**Simulated** by `mailsurge sim` ({} model, calibrated from {}): every figure is the model's, not measured on real processes; `wall` is the simulated span.\n",
            sim.mode, sim.calibration
        );
    }
    if !s.reasons.is_empty() {
        let why = match s.verdict.as_str() {
            VERDICT_ABORTED => "Why it stopped",
            VERDICT_ERROR => "Why it was not judged",
            _ => "Why it failed",
        };
        let _ = writeln!(o, "**{why}**\n");
        for r in &s.reasons {
            let _ = writeln!(o, "- {r}");
        }
        let _ = writeln!(o);
    }
    let d = &s.delivery_ms;
    let _ = writeln!(o, "## Delivery time (from intended send time)\n");
    if let Some(w) = s.warmup_s {
        let _ = writeln!(
            o,
            "Judged on messages intended after the first {w} s (`warmup`); the accounting and the charts include them.\n"
        );
    }
    let _ = writeln!(o, "| p50 | p90 | p99 | p99.9 | max |\n|---|---|---|---|---|");
    let _ = writeln!(
        o,
        "| {} | {} | {} | {} | {} |\n",
        ms(d.p50, UNDELIVERED),
        ms(d.p90, UNDELIVERED),
        ms(d.p99, UNDELIVERED),
        ms(d.p999, UNDELIVERED),
        ms(d.max, UNDELIVERED)
    );
    let _ = writeln!(
        o,
        "Uncorrected (from actual submission start, hides queueing in the generator): p50 {}, p99 {}.\n",
        ms(d.uncorrected_p50, UNDELIVERED),
        ms(d.uncorrected_p99, UNDELIVERED)
    );
    let _ = writeln!(
        o,
        "**SLO**: {} — {}\n",
        slo_sentence(s.slo.compliance, s.slo.delivery_ms, s.slo.target),
        if s.slo.pass { "met" } else { "missed" }
    );
    if let Some(t) = &s.tls {
        let _ = writeln!(
            o,
            "## TLS\n\n| hop | over TLS | messages | TLS sessions | handshake p50 | handshake p99 |\n|---|---|---|---|---|---|"
        );
        for (hop, h) in [("generator → MTA", &t.submission), ("MTA → inbox", &t.delivery)] {
            let _ = writeln!(
                o,
                "| {hop} | {:.1}% | {} | {} | {} | {} |",
                h.share * 100.0,
                h.messages,
                h.sessions,
                ms(h.handshake_p50_ms, "-"),
                ms(h.handshake_p99_ms, "-")
            );
        }
        let _ = writeln!(o);
    }
    if !s.thresholds.is_empty() {
        let _ = writeln!(o, "## Thresholds\n\n| threshold | observed | result |\n|---|---|---|");
        for t in &s.thresholds {
            let _ = writeln!(
                o,
                "| `{}` | {} | {} |",
                t.expr,
                t.observed_text,
                if t.pass { "pass" } else { "**fail**" }
            );
        }
        let _ = writeln!(o);
    }
    let c = &s.counts;
    let _ = writeln!(o, "## Accounting\n");
    let [submitted, accepted] = identity_equations(c);
    let _ = writeln!(o, "{submitted}  \n{accepted}\n");
    let _ = writeln!(
        o,
        "duplicates {} · stranded {} · deferrals {} · events {} · never submitted {}\n",
        c.duplicates, c.stranded, c.deferrals, c.events, c.unsubmitted
    );
    let _ = writeln!(o, "{}\n", contradictions_sentence(&s.contradictions));
    for (title, groups) in [("Regions", &s.by_region), ("Providers", &s.by_provider)] {
        if groups.is_empty() {
            continue;
        }
        let _ = writeln!(
            o,
            "## {title}\n\n| name | delivered | p50 | p99 | deferrals | bounced |\n|---|---|---|---|---|---|"
        );
        for (name, g) in groups {
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {} | {} | {} |",
                g.delivered,
                ms(g.p50, UNDELIVERED),
                ms(g.p99, UNDELIVERED),
                g.deferrals,
                g.bounced
            );
        }
        let _ = writeln!(o);
    }
    faults(&mut o, s);
    if !charts.is_empty() {
        let _ = writeln!(o, "## Charts\n");
        for (title, path) in charts {
            let _ = writeln!(o, "![{title}]({path})\n");
        }
    }
    o
}

/// The "Faults" section: one row per chaos action with its failover metrics (SPEC §5; see
/// `measure::faults` for the definitions). Nothing when the scenario has no chaos.
fn faults(o: &mut String, s: &Summary) {
    if s.faults.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "## Faults\n\n| at | action | target | detection | recovery | takeover | delayed | lost | duplicates | held at the kill |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    for f in &s.faults {
        let _ = writeln!(
            o,
            "| {:.1} s | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f.at_s,
            action(f),
            f.target,
            secs(f.detection_s, "none"),
            secs(f.recovery_s, "**not recovered**"),
            secs(f.takeover_s, "—"),
            f.delayed,
            f.lost,
            f.duplicates,
            match (f.held_delivered_after_restore, f.held_undelivered) {
                (Some(d), Some(u)) => format!("{d} delivered after restore, {u} undelivered"),
                (Some(d), None) => format!("{d} delivered after restore"),
                _ => "—".into(),
            }
        );
    }
    let _ = writeln!(
        o,
        "\nDetection: fault → first eviction (region/node) or deferral (provider); for a restore, first \
         admission or receipt. Recovery: fault → start of 10 s of per-second SLO compliance ≥ target. \
         Takeover (shared queue): kill → the last message the killed nodes held under lease picked up \
         again. Counts cover mail intended from the fault until recovery (or the action's end, if later).\n"
    );
}

/// The action with its parameters (`kill refuse`, `block pool shared`, `latency +500ms`).
pub(super) fn action(f: &Fault) -> String {
    let mut a = f.action.clone();
    if let Some(mx) = f.mx {
        a.push_str(&format!(" mx{mx}"));
    }
    for v in [
        &f.mode,
        &f.pool.as_ref().map(|p| format!("pool {p}")),
        &f.add.as_ref().map(|d| format!("+{d}")),
    ]
    .into_iter()
    .flatten()
    {
        a.push(' ');
        a.push_str(v);
    }
    a
}
