//! `mailsurge sim` (SPEC §11): a simulation writes a run directory like `run` does, the same
//! seed gives the same summary.json, and `sim --check` sets a real run beside its simulation.

mod common;

use common::*;

fn sim(args: &[&str]) -> std::process::Output {
    let mut a = vec!["sim"];
    a.extend_from_slice(args);
    mailsurge(&a)
}

/// Same scenario and seed, same summary.json byte for byte; another seed, other figures.
#[test]
fn a_simulation_is_deterministic_and_writes_a_run_directory() {
    let dir = tempdir();
    let out = |n: &str| dir.path().join(n);
    let run = |o: &std::path::Path, seed: &str| {
        let r = sim(&[
            "scenarios/black-friday.yaml",
            "--duration",
            "30s",
            "--seed",
            seed,
            "--out",
            o.to_str().unwrap(),
        ]);
        assert!(
            matches!(r.status.code(), Some(0 | 1)),
            "{}",
            String::from_utf8_lossy(&r.stderr)
        );
        String::from_utf8_lossy(&r.stdout).to_string()
    };
    let stdout = run(&out("a"), "7");
    assert!(
        stdout.contains("discrete-event") && stdout.contains("defaults shipped with mailsurge"),
        "{stdout}"
    );
    run(&out("b"), "7");
    run(&out("c"), "8");
    let read = |n: &str| std::fs::read_to_string(out(n).join("summary.json")).unwrap();
    assert_eq!(read("a"), read("b"), "same seed, same summary.json");
    assert_ne!(read("a"), read("c"), "another seed, another day");
    let s = read_json(&out("a").join("summary.json"));
    assert_valid_against("summary.v1.schema.json", &s);
    assert_eq!(s["simulated"], true);
    assert_eq!(s["sim"]["mode"], "discrete-event");
    assert!(s["counts"]["delivered"].as_u64().unwrap() > 1000, "{s}");
    for f in [
        "report.md",
        "report.html",
        "charts/delivery-time.png",
        "calibration.json",
        "events.jsonl.zst",
        "run.json",
    ] {
        assert!(out("a").join(f).is_file(), "{f} missing");
    }
    // `report` re-renders it and `compare` reads it as any run.
    let r = mailsurge(&["report", out("a").to_str().unwrap()]);
    assert!(
        matches!(r.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(read("a"), read("b"), "re-rendering changes nothing");
    let r = mailsurge(&["compare", out("a").to_str().unwrap(), out("c").to_str().unwrap()]);
    assert!(
        matches!(r.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

/// A real smoke run and its simulation agree within SPEC §11's tolerances.
#[test]
fn sim_check_sets_a_real_run_beside_its_simulation() {
    let dir = tempdir();
    let real = dir.path().join("real");
    let o = mailsurge(&[
        "run",
        "scenarios/smoke.yaml",
        "--out",
        real.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let out = dir.path().join("check");
    let o = sim(&["--check", real.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    for figure in [
        "delivered",
        "SLO compliance",
        "p50",
        "p99",
        "peak MTA queue",
        "delivered/s",
    ] {
        assert!(stdout.contains(figure), "{figure}: {stdout}");
    }
    assert_eq!(
        o.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rows = read_json(&out.join("check.json"));
    assert!(rows.as_array().unwrap().iter().all(|r| r["pass"] == true), "{rows}");
    // A simulation is not a real run to check.
    let o = sim(&[
        "--check",
        out.to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("itself a simulation"));
}

#[test]
fn bad_sim_arguments_are_usage_errors() {
    let dir = tempdir();
    let o = sim(&[
        "scenarios/smoke.yaml",
        "--nodes",
        "mars=3",
        "--out",
        dir.path().join("a").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no region `mars`"));
    let o = sim(&["scenarios/smoke.yaml", "--nodes", "local=many"]);
    assert_eq!(o.status.code(), Some(2));
    let o = sim(&["--check", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let o = sim(&[
        "scenarios/smoke.yaml",
        "--calibrate",
        dir.path().to_str().unwrap(),
        "--out",
        dir.path().join("b").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("neither a run directory"));
}

/// Fluid mode: any scale. The production-scale day is refused by `run` (no generator holds
/// it), valid for `sim` only as `validate` says, and simulated by `sim`, which says which mode ran; its report cannot be
/// re-rendered from events it does not have.
#[test]
fn the_fluid_model_takes_what_no_run_can() {
    let dir = tempdir();
    let o = mailsurge(&["validate", "scenarios/black-friday-day.yaml"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("for `mailsurge sim` only") && stdout.contains("more than one run's schedule holds"),
        "{stdout}"
    );
    let o = mailsurge(&["run", "scenarios/black-friday-day.yaml", "--quiet"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("black-friday-day.yaml:"));
    let out = dir.path().join("day");
    // The day in 20 minutes at full rate (57 M recipients), its kill stretched with it
    // (hour 20 of 24 → second 1000).
    let o = sim(&[
        "scenarios/black-friday-day.yaml",
        "--duration",
        "20m",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("fluid model"), "{stdout}");
    let s = read_json(&out.join("summary.json"));
    assert_valid_against("summary.v1.schema.json", &s);
    assert_eq!(s["sim"]["mode"], "fluid");
    assert!(
        s["counts"]["generated"].as_u64().unwrap() > 50_000_000,
        "{}",
        s["counts"]
    );
    assert_eq!(s["faults"][0]["target"], "region/us-east");
    assert!(
        (s["faults"][0]["at_s"].as_f64().unwrap() - 1000.0).abs() < 1.0,
        "{}",
        s["faults"]
    );
    let o = mailsurge(&["report", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("fluid simulation"));
    // Too big for one event per message.
    let o = sim(&[
        "scenarios/black-friday-day.yaml",
        "--mode",
        "discrete",
        "--out",
        dir.path().join("d").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--mode fluid"));
}
