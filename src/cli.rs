//! The command line (SPEC §7) and its exit codes: 0 pass, 1 a threshold/SLO/loss failed,
//! 2 usage or config error (nothing started), 3 runtime or environment error. The commands
//! and their flags are in `args.rs`; this file runs them.

mod args;
mod capacity;
mod sim;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use crate::config::{ConfigError, Source};
use crate::scenario::{self, Allow, Overrides};

pub const EXIT_PASS: u8 = 0;
pub const EXIT_FAIL: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_RUNTIME: u8 = 3;

pub use args::{Cli, Cmd};

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_CONFIG } else { EXIT_PASS });
        }
    };
    init_tracing();
    ExitCode::from(dispatch(cli.command))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILSURGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Warnings (or MAILSURGE_LOG) to stderr; the run's own lines at info and up to run.log.
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let file = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(crate::runlog::RunLog)
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing_subscriber::registry().with(stderr).with(file).try_init();
}

fn config_error(e: &ConfigError) -> u8 {
    eprintln!("error: {e}");
    EXIT_CONFIG
}

fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            EXIT_RUNTIME
        })
}

/// One function per command; each returns its exit code.
fn dispatch(cmd: Cmd) -> u8 {
    match cmd {
        Cmd::Run {
            scenario,
            out,
            force,
            seed,
            duration,
            rate_scale,
            spool,
            quiet,
            baseline,
            tolerance,
            min_delta,
            cluster,
            allow_network,
        } => run(
            &scenario,
            Overrides {
                seed,
                duration,
                rate_scale,
                spool,
                allow_network,
            },
            crate::run::RunOptions {
                out,
                quiet,
                silent: false,
                stop: None,
                cluster,
            },
            force,
            baseline.as_deref(),
            crate::report::compare::Limits::new(tolerance, min_delta),
        ),
        Cmd::Compare {
            base,
            candidate,
            tolerance,
            min_delta,
            json,
        } => compare(
            &base,
            &candidate,
            crate::report::compare::Limits::new(tolerance, min_delta),
            json,
        ),
        Cmd::Validate { files, allow_network } => validate_all(&files, &allow_network),
        Cmd::Inbox {
            rules,
            listen,
            receipts,
            seed,
            allow_network,
        } => inbox(&rules, listen, receipts.as_deref(), seed, &Allow::new(allow_network)),
        Cmd::Merge { hlogs, out } => merge(&hlogs, out.as_deref()),
        Cmd::Report { run_dir } => report(run_dir),
        Cmd::Gen {
            target,
            rate,
            duration,
            count,
            connections,
            size,
            domain,
            seed,
            out,
            quiet,
            allow_network,
            starttls,
            auth,
        } => {
            let o = crate::gen::GenOptions {
                target,
                rate,
                duration: duration.map(|d| d.0),
                count,
                connections,
                size,
                domain,
                seed,
                allow: Allow::new(allow_network),
                starttls,
                auth,
            };
            gen(&o, out, quiet)
        }
        Cmd::Agent {
            nats,
            name,
            addresses,
            dir,
            allow_network,
        } => agent(
            crate::cluster::AgentOptions {
                dir: dir.unwrap_or_else(|| PathBuf::from(format!("mailsurge-agent-{name}"))),
                nats,
                name,
                addresses,
            },
            &Allow::new(allow_network),
        ),
        Cmd::Mta { config, allow_network } => mta(&config, &allow_network),
        Cmd::Queue {
            dir,
            listen,
            allow_network,
        } => queue(&dir, listen, &Allow::new(allow_network)),
        Cmd::Capacity(a) => capacity::capacity(a),
        Cmd::Sim(a) => sim::sim(a),
    }
}

/// Runs `fut` on a fresh runtime: exit 0 when it succeeds, 3 (with the error) when it fails.
fn block_on<T>(fut: impl std::future::Future<Output = anyhow::Result<T>>) -> Result<T, u8> {
    let rt = runtime()?;
    rt.block_on(fut).map_err(|e| {
        eprintln!("error: {e:#}");
        EXIT_RUNTIME
    })
}

/// `mailsurge run`: load, override, compile (exit 2 on any plan error), run, gate.
fn run(
    path: &Path,
    overrides: Overrides,
    mut opts: crate::run::RunOptions,
    force: bool,
    baseline: Option<&Path>,
    limits: crate::report::compare::Limits,
) -> u8 {
    // A previous run is never overwritten by accident (exit 2 before anything is read).
    let replace = match opts
        .out
        .as_deref()
        .map(|d| crate::run::claim_out_dir(d, force))
        .transpose()
    {
        Ok(r) => r.flatten(),
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    // Read before anything starts, so a bad baseline is a usage error (exit 2).
    let baseline = match baseline.map(crate::report::compare::load).transpose() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: --baseline {e}");
            return EXIT_CONFIG;
        }
    };
    let mut s = match scenario::load_allowing(path, scenario::Reach::Run, &overrides.allow_network) {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    if let Some(x) = overrides.rate_scale.filter(|x| !(x.is_finite() && *x > 0.0)) {
        eprintln!("error: --rate-scale must be a positive number, not {x}");
        return EXIT_CONFIG;
    }
    if let Err(e) = s.apply(&overrides) {
        return config_error(&e);
    }
    if opts.cluster.is_some() && s.file.mta.spool == crate::scenario::SpoolKind::Nats {
        eprintln!(
            "error: {}: `mta.spool: nats` cannot run with --cluster yet: each agent's nodes keep local spools (run it with --spool local, or on one host)",
            path.display()
        );
        return EXIT_CONFIG;
    }
    if let Some(url) = &opts.cluster {
        // The cluster's server, like every address beyond loopback, must be allowed.
        if let Err(why) = Allow::for_scenario(&s.file, &[]).check_url("--cluster", url) {
            eprintln!("error: {why}");
            return EXIT_CONFIG;
        }
        // The system under test is on other hosts: recipient domains get the reserved suffix.
        s.file.network.distributed = true;
    }
    let compiled = match crate::run::compile(s) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    // Only now, with a scenario that can run, does `--force` remove the previous run.
    if let Some(dir) = replace {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("error: --force: cannot remove {}: {e}", dir.display());
            return EXIT_RUNTIME;
        }
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        // Ctrl-C / SIGTERM: the first stops the run cleanly (partial report, `aborted`), the
        // second at once.
        opts.stop = Some(crate::signal::stops());
        match opts.cluster.clone() {
            Some(url) => crate::cluster::run(&compiled, &url, &opts).await,
            None => crate::run::run(&compiled, &opts).await,
        }
    });
    if let Err(e) = &result {
        tracing::info!(target: "run", "error: {e:#}");
    }
    crate::runlog::close();
    let o = match result {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e:#}");
            // An agent's address the scenario does not allow is a usage error, as any other.
            return if e.downcast_ref::<crate::cluster::Refused>().is_some() {
                EXIT_CONFIG
            } else {
                EXIT_RUNTIME
            };
        }
    };
    print_outcome(&o);
    if o.summary.verdict == crate::report::VERDICT_ERROR {
        if let Some(why) = o.summary.reasons.first() {
            eprintln!("error: {why}");
        }
        return EXIT_RUNTIME;
    }
    let regressed = match &baseline {
        Some(b) => match gate_on_baseline(&o, b, limits) {
            Ok(r) => r,
            Err(code) => return code,
        },
        None => false,
    };
    if o.summary.verdict == "pass" && !regressed {
        EXIT_PASS
    } else {
        EXIT_FAIL
    }
}

/// `mailsurge agent`: until Ctrl-C / SIGTERM (exit 0), or 3 when the cluster cannot be
/// reached; 2 on a bad name or server address.
fn agent(o: crate::cluster::AgentOptions, allow: &Allow) -> u8 {
    if !crate::scenario::placement::valid_agent_name(&o.name) {
        eprintln!(
            "error: --name `{}`: letters, digits, `-` or `_` only (it is a NATS subject token)",
            o.name
        );
        return EXIT_CONFIG;
    }
    if let Err(why) = allow.check_url("--nats", &o.nats) {
        eprintln!("error: {why}");
        return EXIT_CONFIG;
    }
    if let Some(Err(why)) = o.addresses.map(|n| allow.check_net("--addresses", n)) {
        eprintln!("error: {why}");
        return EXIT_CONFIG;
    }
    match block_on(async {
        let stop = crate::signal::stops();
        crate::cluster::agent(o, stop).await
    }) {
        Ok(()) => EXIT_PASS,
        Err(code) => code,
    }
}

/// `mailsurge validate`: every file, stopping at the first error (exit 2).
fn validate_all(files: &[PathBuf], allow: &[ipnet::IpNet]) -> u8 {
    for f in files {
        match crate::run::validate_file(f, allow) {
            Ok(what) => println!("{}: ok ({what})", f.display()),
            Err(e) => return config_error(&e),
        }
    }
    EXIT_PASS
}

/// `mailsurge inbox`: one standalone mock inbox until Ctrl-C.
fn inbox(rules: &str, listen: SocketAddr, receipts: Option<&Path>, seed: u64, allow: &Allow) -> u8 {
    if let Err(why) = allow.check("--listen", listen.ip()) {
        eprintln!("error: --listen {listen}: {why}");
        return EXIT_CONFIG;
    }
    let here = Source {
        name: "--rules".into(),
        text: String::new(),
        dir: Some(PathBuf::from(".")),
    };
    let src = match crate::config::resolve(&here, rules, crate::config::Shipped::Inbox) {
        Ok(s) => s,
        Err(m) => {
            eprintln!("error: --rules {rules}: {m}");
            return EXIT_CONFIG;
        }
    };
    if let Err(e) = crate::inbox::RuleSet::from_source(&src) {
        return config_error(&e);
    }
    block_on(crate::inbox::run_standalone(src, listen, receipts, seed)).map_or_else(|c| c, |()| EXIT_PASS)
}

/// `mailsurge gen`: load any SMTP server, write summary.json, print one line.
fn gen(o: &crate::gen::GenOptions, out: Option<PathBuf>, quiet: bool) -> u8 {
    if let Err(e) = o.check() {
        eprintln!("error: {e}");
        return EXIT_CONFIG;
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let s = match rt.block_on(crate::gen::run(o)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return if e.to_string().contains("--target") || e.to_string().contains("--count") {
                EXIT_CONFIG
            } else {
                EXIT_RUNTIME
            };
        }
    };
    let dir = out.unwrap_or_else(crate::gen::default_out);
    match s.write(&dir) {
        Ok(path) if !quiet => eprintln!("summary: {}", path.display()),
        Ok(_) => {}
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", dir.display());
            return EXIT_RUNTIME;
        }
    }
    println!("{}", s.one_line());
    match s.unjudged() {
        Some(why) => {
            eprintln!("error: {why}");
            EXIT_RUNTIME
        }
        None => EXIT_PASS,
    }
}

/// `mailsurge mta`: one standalone reference MTA node until SIGTERM.
fn mta(config: &Path, allow: &[ipnet::IpNet]) -> u8 {
    let (cfg, src) = match crate::mta::NodeConfig::load_allowing(config, allow) {
        Ok(x) => x,
        Err(e) => return config_error(&e),
    };
    let responses = match crate::mta::load_responses(&cfg, &src) {
        Ok(r) => r,
        Err(e) => return config_error(&e),
    };
    let users = match crate::mta::load_users(&cfg) {
        Ok(u) => u,
        Err(e) => return config_error(&e),
    };
    block_on(crate::mta::run_node(cfg, responses, users, crate::signal::terminated()))
        .map_or_else(|c| c, |()| EXIT_PASS)
}

fn queue(dir: &Path, ip: std::net::IpAddr, allow: &Allow) -> u8 {
    if let Err(why) = allow.check("--listen", ip) {
        eprintln!("error: --listen {ip}: {why}");
        return EXIT_CONFIG;
    }
    let serve = async {
        let bin = crate::nats::server::locate_or_install(&|m| eprintln!("{m}"))?;
        let mut s = crate::nats::NatsServer::start(&bin, dir, ip).await?;
        println!(
            "{}nats://{} nats-server {}",
            crate::mta::READY_PREFIX,
            s.addr,
            s.info.version
        );
        crate::signal::terminated().await;
        s.stop().await;
        anyhow::Ok(())
    };
    block_on(serve).map_or_else(|c| c, |()| EXIT_PASS)
}

fn merge(hlogs: &[PathBuf], out: Option<&Path>) -> u8 {
    use crate::measure::hlog;
    let paths: Vec<&Path> = hlogs.iter().map(PathBuf::as_path).collect();
    let merged = match hlog::read_merge(&paths) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    for (tag, m) in &merged {
        let t = hlog::total(m);
        let ms = |q: f64| t.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<12} {} values over {} s  p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            if tag.is_empty() { "(untagged)" } else { tag },
            t.len(),
            m.len(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            t.max() as f64 / 1000.0
        );
    }
    if let Some(out) = out {
        if let Err(e) = hlog::write_merged(out, &merged) {
            eprintln!("error: cannot write {}: {e}", out.display());
            return EXIT_RUNTIME;
        }
        println!("merged log: {}", out.display());
    }
    EXIT_PASS
}

/// `mailsurge report RUN_DIR`: the verdict's exit code, like the run that made the directory,
/// so a CI gate can re-render and gate in one step.
fn report(dir: PathBuf) -> u8 {
    match crate::run::render(&dir) {
        Ok(summary) => {
            let o = crate::run::Outcome { dir, summary };
            print_outcome(&o);
            match o.summary.verdict.as_str() {
                "pass" => EXIT_PASS,
                crate::report::VERDICT_ERROR => EXIT_RUNTIME,
                _ => EXIT_FAIL,
            }
        }
        Err(e @ crate::run::RenderError::Output(_)) => {
            eprintln!("error: {e}");
            EXIT_RUNTIME
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_CONFIG
        }
    }
}

/// `mailsurge compare`: 0 no regression, 1 regression, 2 a file is unreadable or not a
/// `mailsurge.summary/v1`.
fn compare(base: &Path, candidate: &Path, limits: crate::report::compare::Limits, json: bool) -> u8 {
    use crate::report::compare;
    let (b, c) = match (compare::load(base), compare::load(candidate)) {
        (Ok(b), Ok(c)) => (b, c),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    let cmp = compare::compare(&b, &c, limits);
    if json {
        match serde_json::to_string_pretty(&cmp) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_RUNTIME;
            }
        }
    } else {
        print!("{}", compare::render_text(&cmp));
    }
    if cmp.regression {
        EXIT_FAIL
    } else {
        EXIT_PASS
    }
}

/// `run --baseline`: compares the finished run, leaves compare.json, the report.md section and
/// the junit.xml cases in its directory, prints the table; `Ok(true)` on a regression.
fn gate_on_baseline(
    o: &crate::run::Outcome,
    baseline: &crate::report::Summary,
    limits: crate::report::compare::Limits,
) -> Result<bool, u8> {
    use crate::report::compare;
    let cmp = compare::compare(baseline, &o.summary, limits);
    if let Err(e) = compare::write_into_run(&o.dir, &o.summary, &cmp) {
        eprintln!("error: cannot write the comparison into {}: {e}", o.dir.display());
        return Err(EXIT_RUNTIME);
    }
    print!("{}", compare::render_text(&cmp));
    Ok(cmp.regression)
}

fn print_outcome(o: &crate::run::Outcome) {
    let s = &o.summary;
    let ms = |v: Option<f64>| v.map_or("∞".to_string(), |x| format!("{x:.1}ms"));
    println!(
        "{}: {}  p50 {} p99 {}  SLO {:.3}% (target {:.2}%)  generated {} accepted {} delivered {} lost {} duplicates {}",
        s.name,
        s.verdict.to_uppercase(),
        ms(s.delivery_ms.p50),
        ms(s.delivery_ms.p99),
        s.slo.compliance * 100.0,
        s.slo.target * 100.0,
        s.counts.generated,
        s.counts.accepted,
        s.counts.delivered,
        s.counts.lost,
        s.counts.duplicates
    );
    for r in &s.reasons {
        println!("  {r}");
    }
    println!("report: {}", o.dir.join("report.md").display());
}
