//! `mailsurge capacity` at the command line: the scenario and flags checked (a bad one is
//! exit 2 before any probe runs), the search run with its progress on stderr, the result and
//! the gate's exit code.

use std::path::PathBuf;

use super::args::CapacityArgs;
use super::{config_error, runtime, EXIT_CONFIG, EXIT_FAIL, EXIT_PASS, EXIT_RUNTIME};
use crate::capacity::{runner, Search};
use crate::scenario;

/// Runs the search and gates on it: exit 0 when the knee carries the scenario's peak times
/// the headroom, 1 when not, 2 for bad input, 3 when a probe could not be judged.
pub fn capacity(a: CapacityArgs) -> u8 {
    let CapacityArgs {
        scenario: path,
        min,
        max,
        precision,
        step,
        warmup,
        down,
        headroom,
        out,
        quiet,
        allow_network,
    } = a;
    let s = match scenario::load_allowing(&path, scenario::Reach::Run, &allow_network) {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    let peak = s.file.traffic.rate.peak();
    let headroom = headroom.or(s.file.capacity.map(|g| g.headroom)).unwrap_or(1.0);
    let mut search = Search::around(peak);
    search.min = min.map_or(search.min, |r| r.0);
    search.max = max.map_or(search.max, |r| r.0);
    search.precision = precision.0;
    if !(search.min > 0.0 && search.max >= search.min && search.precision > 0.0 && headroom > 0.0) {
        eprintln!("error: capacity needs 0 < --min <= --max, --precision > 0% and --headroom > 0");
        return EXIT_CONFIG;
    }
    let out = out.unwrap_or_else(|| {
        PathBuf::from("reports").join(format!(
            "{}-capacity-{}",
            s.file.name,
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        ))
    });
    if let Err(e) = crate::run::claim_out_dir(&out, false) {
        eprintln!("error: {e}");
        return EXIT_CONFIG;
    }
    // A --down target that does not exist is a usage error before any probe runs.
    let plan = crate::capacity::probe::ProbePlan {
        rate: search.min,
        warmup: warmup.0,
        step: step.0,
        down: down.clone(),
    };
    if let Err(e) = crate::capacity::probe::scenario(&s, &plan) {
        return config_error(&e);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let opts = runner::Options {
        search,
        warmup: plan.warmup,
        step: step.0,
        down,
        out: out.clone(),
        headroom,
        stop: None,
    };
    let result = rt.block_on(async {
        let mut opts = opts;
        opts.stop = Some(crate::signal::stops());
        runner::search(&s, &opts, &|l| {
            if !quiet {
                eprintln!("{l}");
            }
        })
        .await
    });
    crate::runlog::close();
    match result {
        Ok(c) => {
            let knee = c.knee_per_s.map_or("none".into(), |k| format!("{k:.1}/s"));
            println!(
                "{}: knee {knee} ({}: {}); peak {:.1}/s × headroom {} → {}  [{} probes]",
                c.scenario,
                c.end,
                c.why,
                c.scenario_peak_per_s,
                c.headroom,
                if c.pass { "PASS" } else { "FAIL" },
                c.probes.len()
            );
            if let Some(b) = &c.bottleneck {
                println!("bottleneck {b}");
            }
            println!("capacity: {}", out.join(runner::CAPACITY_FILE).display());
            match (c.end.as_str(), c.pass) {
                ("stopped", _) if c.probes.iter().any(|p| p.verdict == "error") => EXIT_RUNTIME,
                (_, true) => EXIT_PASS,
                _ => EXIT_FAIL,
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_RUNTIME
        }
    }
}
