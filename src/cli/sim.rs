//! `mailsurge sim` at the command line: a scenario (or, with `--check`, a real run's own)
//! loaded and overridden, calibrated, simulated into a run directory; with `--check`, the
//! comparison table and its verdict.

use std::path::{Path, PathBuf};

use super::args::SimArgs;
use super::{config_error, EXIT_CONFIG, EXIT_FAIL, EXIT_PASS, EXIT_RUNTIME};
use crate::scenario::{self, Overrides, RateSpec};
use crate::sim::{self, SimOptions};

pub fn sim(a: SimArgs) -> u8 {
    if let Some(run_dir) = a.check.clone() {
        return check(&run_dir, a.out, &a.allow_network);
    }
    let Some(path) = a.scenario.clone() else {
        eprintln!("error: sim needs a scenario file, or --check RUN_DIR");
        return EXIT_CONFIG;
    };
    let mut s = match scenario::load_allowing(&path, scenario::Reach::Model, &a.allow_network) {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    let compressed = s.file.duration.0;
    let o = Overrides {
        seed: a.seed,
        duration: a.duration,
        rate_scale: a.rate_scale,
        spool: None,
        allow_network: Vec::new(),
    };
    if let Err(e) = s.apply(&o) {
        return config_error(&e);
    }
    // A longer day keeps its chaos where it was in the day: a kill at hour 20 of a compressed
    // day is at hour 20 of the real one.
    if let Some(d) = a.duration.filter(|_| !compressed.is_zero()) {
        let k = d.0.as_secs_f64() / compressed.as_secs_f64();
        let stretch = |x: &mut crate::units::Dur| x.0 = std::time::Duration::from_secs_f64(x.0.as_secs_f64() * k);
        for c in &mut s.file.chaos {
            stretch(&mut c.at);
            if let Some(w) = c.for_.as_mut() {
                stretch(w);
            }
        }
    }
    if let Some(p) = a.peak {
        match &mut s.file.traffic.rate {
            RateSpec::Constant(r) => *r = p,
            RateSpec::Curve { peak, .. } => *peak = p,
        }
    }
    // The overrides are checked as the file was (a zero window, a rate past the model).
    if let Err(e) = s.recheck_for(scenario::Reach::Model) {
        return config_error(&e);
    }
    if let Some((r, _)) = a
        .nodes
        .iter()
        .find(|(r, _)| !s.file.regions.iter().any(|x| x.name == *r))
    {
        let names: Vec<&str> = s.file.regions.iter().map(|x| x.name.as_str()).collect();
        eprintln!(
            "error: --nodes {r}=…: the scenario has no region `{r}` (it has {})",
            names.join(", ")
        );
        return EXIT_CONFIG;
    }
    let c = match crate::run::compile(s) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let planned = sim::planned(&c);
    if a.mode == sim::Mode::Discrete && planned > crate::scenario::limits::MAX_PLANNED {
        eprintln!(
            "error: --mode discrete: {planned:.0} recipients are more than the discrete-event model holds (at most {:.0}); use --mode fluid (or auto)",
            crate::scenario::limits::MAX_PLANNED
        );
        return EXIT_CONFIG;
    }
    let out = a.out.unwrap_or_else(|| default_out(&c.scenario.file.name, "sim"));
    if let Err(e) = crate::run::claim_out_dir(&out, false) {
        eprintln!("error: {e}");
        return EXIT_CONFIG;
    }
    let cal = match sim::calibration(a.calibrate.as_deref(), &c) {
        Ok(cal) => cal,
        Err(e) => {
            eprintln!("error: --calibrate: {e:#}");
            return EXIT_CONFIG;
        }
    };
    let opts = SimOptions {
        out,
        nodes: a.nodes,
        mode: a.mode,
    };
    match sim::simulate(&c, &cal, &opts) {
        Ok(o) => {
            println!(
                "simulated `{}` ({:.0} recipients planned, {} model, calibrated from {}) in {:.1} s wall → {}",
                c.scenario.file.name,
                o.planned,
                o.mode,
                cal.source,
                o.wall_s,
                o.dir.display()
            );
            print_summary(&o.summary);
            if o.summary.verdict == "pass" {
                EXIT_PASS
            } else {
                EXIT_FAIL
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_RUNTIME
        }
    }
}

fn print_summary(s: &crate::report::Summary) {
    let ms = |v: Option<f64>| v.map_or_else(|| "∞".into(), |x| format!("{x} ms"));
    println!(
        "verdict {}: delivered {} of {} accepted, p50 {}, p99 {}, SLO {:.2}%",
        s.verdict,
        s.counts.delivered,
        s.counts.accepted,
        ms(s.delivery_ms.p50),
        ms(s.delivery_ms.p99),
        s.slo.compliance * 100.0
    );
}

fn default_out(name: &str, what: &str) -> PathBuf {
    PathBuf::from("reports").join(format!("{name}-{what}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S")))
}

/// Simulates a real run from its own scenario, seed and calibration, and compares.
fn check(run_dir: &Path, out: Option<PathBuf>, allow: &[ipnet::IpNet]) -> u8 {
    let real = match crate::run::measure_dir(run_dir) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    if real.run.sim.is_some() {
        eprintln!(
            "error: {} is itself a simulation; --check takes a real run",
            run_dir.display()
        );
        return EXIT_CONFIG;
    }
    let s = match scenario::load_allowing(&run_dir.join("scenario.yaml"), scenario::Reach::Run, allow) {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    let c = match crate::run::compile(s) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let out = out.unwrap_or_else(|| default_out(&c.scenario.file.name, "sim-check"));
    if let Err(e) = crate::run::claim_out_dir(&out, false) {
        eprintln!("error: {e}");
        return EXIT_CONFIG;
    }
    let cal = match sim::Calibration::from_dir(run_dir, &c) {
        Ok(cal) => cal,
        Err(e) => {
            eprintln!("error: cannot calibrate from {}: {e:#}", run_dir.display());
            return EXIT_CONFIG;
        }
    };
    // The model the check is about: one event per message, as the run had.
    let opts = SimOptions {
        out: out.clone(),
        nodes: Vec::new(),
        mode: sim::Mode::Discrete,
    };
    let o = match sim::simulate(&c, &cal, &opts) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e:#}");
            return EXIT_RUNTIME;
        }
    };
    let simulated = match crate::run::measure_dir(&o.dir) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_RUNTIME;
        }
    };
    let rows = sim::check::compare(&real, &simulated);
    println!(
        "sim --check {}: `{}` seed {}, {:.0} recipients simulated in {:.1} s wall → {}",
        run_dir.display(),
        c.scenario.file.name,
        c.scenario.file.seed,
        o.planned,
        o.wall_s,
        o.dir.display()
    );
    print!("{}", sim::check::table(&rows));
    let json = serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n";
    if let Err(e) = crate::files::write(&o.dir.join("check.json"), json) {
        eprintln!("warning: cannot write check.json: {e}");
    }
    if rows.iter().all(|r| r.pass) {
        println!("model agrees with the run within every tolerance");
        EXIT_PASS
    } else {
        println!("model disagrees with the run: see OUTSIDE above");
        EXIT_FAIL
    }
}
