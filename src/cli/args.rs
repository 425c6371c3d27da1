//! The commands and their flags, as clap parses them (SPEC §7; README lists them).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::units::Dur;

#[derive(Debug, Parser)]
#[command(
    name = "mailsurge",
    version,
    about = "Load-test and region-failover harness for email delivery systems"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run a scenario end to end and write a report (exit 0 pass, 1 fail, 2 bad scenario, 3 runtime error).
    Run {
        /// The scenario file (YAML).
        scenario: PathBuf,
        /// Report directory (default: reports/<name>-<UTC timestamp>). Must be new or empty.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace the previous run in --out (a directory holding a mailsurge run only).
        #[arg(long, requires = "out")]
        force: bool,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Override the traffic window, e.g. 30s.
        #[arg(long)]
        duration: Option<Dur>,
        /// Multiply the traffic rate, e.g. 0.5.
        #[arg(long)]
        rate_scale: Option<f64>,
        /// Override `mta.spool`: `local` (each node's disk) or `nats` (the shared queue) — the
        /// same day on either, to compare them.
        #[arg(long, value_parser = parse_spool)]
        spool: Option<crate::scenario::SpoolKind>,
        /// Plain periodic progress lines instead of a live line.
        #[arg(long)]
        quiet: bool,
        /// Compare with this baseline (a summary.json or a run directory) after the run: writes
        /// compare.json, and a regression exits 1 even if the run passed.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// With --baseline: allowed worsening, e.g. 10% (see `compare`).
        #[arg(long, default_value = "10%", requires = "baseline")]
        tolerance: crate::report::compare::Tolerance,
        /// With --baseline: delivery-time increases up to this are never regressions
        /// (default: 1% of the baseline's SLO delivery time).
        #[arg(long, requires = "baseline")]
        min_delta: Option<Dur>,
        /// Run on the agents of this NATS server (`mailsurge agent` on every host), e.g.
        /// nats://127.0.0.1:4222: this process coordinates and writes the report.
        #[arg(long, value_name = "URL")]
        cluster: Option<String>,
        /// Also allow addresses in this CIDR beyond loopback (repeatable), as the scenario's
        /// `network.allow` does, e.g. 10.0.0.0/24.
        #[arg(long = "allow-network", value_name = "CIDR", value_parser = parse_cidr)]
        allow_network: Vec<ipnet::IpNet>,
    },
    /// Host parts of distributed runs (`run --cluster`): generator shards, inbox farms, MTA
    /// regions. Runs until Ctrl-C.
    Agent {
        /// The cluster's NATS server, e.g. nats://127.0.0.1:4222.
        #[arg(long, value_name = "URL")]
        nats: String,
        /// This agent's name (letters, digits, `-`, `_`), as `placement:` names it.
        #[arg(long)]
        name: String,
        /// The addresses its inboxes and nodes listen on, e.g. 127.0.20.0/24 (default: the
        /// one-host loopback addresses); beyond loopback they must be inside --allow-network.
        #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
        addresses: Option<ipnet::IpNet>,
        /// Where runs keep their spools and event files while they last (default:
        /// ./mailsurge-agent-<name>).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Allow this CIDR beyond loopback (repeatable): for the NATS server and --addresses.
        /// A run's scenario must allow them too (`network.allow` or the coordinator's
        /// --allow-network).
        #[arg(long = "allow-network", value_name = "CIDR", value_parser = parse_cidr)]
        allow_network: Vec<ipnet::IpNet>,
    },
    /// Regression gate between two runs' summary.json (or run directories): exit 1 when the
    /// candidate is worse than the baseline beyond the tolerance, 0 otherwise, 2 on bad input.
    Compare {
        /// The baseline: summary.json or a run directory holding one.
        base: PathBuf,
        /// The run under test: summary.json or a run directory holding one.
        candidate: PathBuf,
        /// Allowed worsening: 10% (default) or a fraction such as 0.1.
        #[arg(long, default_value = "10%")]
        tolerance: crate::report::compare::Tolerance,
        /// Delivery-time increases up to this are never regressions (default: 1% of the
        /// baseline's SLO delivery time, e.g. 20ms for a 2s SLO).
        #[arg(long)]
        min_delta: Option<Dur>,
        /// Print the comparison as JSON (mailsurge.compare/v1) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-render every report file of a run directory from its raw data (events.jsonl,
    /// scenario.yaml, run.json). Exit code as `run`: 0 pass, 1 fail; 2 not a run directory (or
    /// its raw data is unreadable), 3 cannot write the report.
    Report {
        /// The run directory (`run --out DIR`, or reports/<name>-<UTC timestamp>).
        run_dir: PathBuf,
    },
    /// Check scenarios, rule tables, response tables and node configs without running anything (exit 2 on the first error).
    Validate {
        /// Scenario files or mock-inbox rule files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also allow addresses in this CIDR beyond loopback (repeatable), as the scenario's
        /// `network.allow` does, e.g. 10.0.0.0/24.
        #[arg(long = "allow-network", value_name = "CIDR", value_parser = parse_cidr)]
        allow_network: Vec<ipnet::IpNet>,
    },
    /// Run one standalone mock inbox until Ctrl-C.
    Inbox {
        /// Rule table (a path, or a shipped profile name such as `generic`).
        #[arg(long)]
        rules: String,
        /// Address to listen on (loopback, or inside --allow-network), e.g. 127.0.2.1:2525.
        #[arg(long)]
        listen: SocketAddr,
        /// Append one JSON line per accepted message to this file.
        #[arg(long)]
        receipts: Option<PathBuf>,
        /// Seed for probabilistic rules and latency.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also allow addresses in this CIDR beyond loopback (repeatable), as the scenario's
        /// `network.allow` does, e.g. 10.0.0.0/24.
        #[arg(long = "allow-network", value_name = "CIDR", value_parser = parse_cidr)]
        allow_network: Vec<ipnet::IpNet>,
    },
    /// Load any SMTP server: open-loop at a rate (intended times) or closed-loop `max` like
    /// smtp-source. Writes summary.json with counts and submission latency.
    Gen {
        /// The server to load (loopback, or inside --allow-network), e.g. 127.0.0.1:2525.
        #[arg(long)]
        target: SocketAddr,
        /// Messages per second (open loop, e.g. 2000/s) or `max` (closed loop).
        #[arg(long)]
        rate: crate::gen::GenRate,
        /// How long to generate (open loop), or to keep sending (closed loop `max`).
        #[arg(long)]
        duration: Option<Dur>,
        /// How many messages to send.
        #[arg(long)]
        count: Option<u64>,
        /// Submission connections, each reused.
        #[arg(long, default_value_t = 20)]
        connections: u32,
        /// Message size, e.g. 1KiB.
        #[arg(long, default_value = "1KiB")]
        size: crate::units::Size,
        /// Recipient domain.
        #[arg(long, default_value = "example.com")]
        domain: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory (default reports/gen-<UTC timestamp>).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        quiet: bool,
        /// Also allow addresses in this CIDR beyond loopback (repeatable), as the scenario's
        /// `network.allow` does, e.g. 10.0.0.0/24.
        #[arg(long = "allow-network", value_name = "CIDR", value_parser = parse_cidr)]
        allow_network: Vec<ipnet::IpNet>,
        /// STARTTLS on every connection (required; the certificate is not verified, as with
        /// swaks): what TLS costs the server under test.
        #[arg(long)]
        starttls: bool,
        /// AUTH on every connection, after STARTTLS if given (PLAIN, else LOGIN).
        #[arg(long, value_name = "USER:PASS", value_parser = crate::smtp::Credentials::parse)]
        auth: Option<crate::smtp::Credentials>,
    },
    /// Merge HdrHistogram interval logs (latency.hlog) from several hosts or runs, by tag and
    /// absolute second; prints each tag's percentiles and writes the merged log with --out.
    Merge {
        #[arg(required = true)]
        hlogs: Vec<PathBuf>,
        /// Write the merged interval log here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run one standalone reference MTA node until SIGTERM.
    Mta {
        /// Node config (YAML; every key in docs/node-config.md).
        #[arg(long)]
        config: PathBuf,
        /// Also allow addresses in this CIDR beyond loopback (repeatable), as the scenario's
        /// `network.allow` does, e.g. 10.0.0.0/24.
        #[arg(long = "allow-network", value_name = "CIDR", value_parser = parse_cidr)]
        allow_network: Vec<ipnet::IpNet>,
    },
    /// Find the highest constant rate the scenario's topology carries with its SLO and
    /// thresholds holding (the knee): real runs ramping up ×4 from --min, then bisecting to
    /// --precision. Writes capacity.json and one run directory per probe. Exit 0 when the knee
    /// reaches the scenario's peak (× --headroom), 1 when not, 2 bad input, 3 a probe that
    /// could not be judged.
    Capacity(CapacityArgs),
    /// Play the scenario on a calibrated model instead of real processes (SPEC §11): the same
    /// arrivals, rules, response table, retries and chaos, at any scale. Writes a run directory
    /// (summary.json says "simulated": true). `--check RUN_DIR` simulates a real run and prints
    /// both side by side: exit 1 when a figure is outside its tolerance.
    Sim(SimArgs),
    /// Start a shared queue's server as `run` does (nats-server with durable JetStream that
    /// syncs every write, installed with scripts/install-nats.sh when none is found), print
    /// `READY nats://ADDR`, serve until SIGTERM or Ctrl-C. For nodes started by hand with
    /// `spool: { kind: nats, url: ... }`.
    Queue {
        /// Directory for its config, store and log.
        #[arg(long)]
        dir: PathBuf,
        /// Address to listen on (loopback, or inside --allow-network; a free port is chosen).
        #[arg(long, default_value = "127.0.5.1")]
        listen: std::net::IpAddr,
        /// Also allow addresses in this CIDR beyond loopback (repeatable), as the scenario's
        /// `network.allow` does, e.g. 10.0.0.0/24.
        #[arg(long = "allow-network", value_name = "CIDR", value_parser = parse_cidr)]
        allow_network: Vec<ipnet::IpNet>,
    },
}

/// `mailsurge capacity`'s arguments (SPEC §10).
#[derive(Debug, clap::Args)]
pub struct CapacityArgs {
    pub scenario: PathBuf,
    /// First rate probed (default: a quarter of the scenario's peak).
    #[arg(long)]
    pub min: Option<crate::units::Rate>,
    /// Highest rate probed (default: 64 times the scenario's peak).
    #[arg(long)]
    pub max: Option<crate::units::Rate>,
    /// Stop bisecting when pass and fail are this close.
    #[arg(long, default_value = "5%")]
    pub precision: crate::units::Percent,
    /// Each probe's measured time at its rate (after the warm-up).
    #[arg(long, default_value = "20s")]
    pub step: Dur,
    /// Each probe's time at its rate before the step: queues and connections fill; accounted
    /// for, not judged.
    #[arg(long, default_value = "5s")]
    pub warmup: Dur,
    /// Kill this target at the start of every probe (repeatable): region/X, node/X, provider/X.
    #[arg(long)]
    pub down: Vec<String>,
    /// The knee must reach the scenario's peak times this (default: the scenario's
    /// `capacity: headroom`, else 1).
    #[arg(long)]
    pub headroom: Option<f64>,
    /// Output directory (default: reports/<name>-capacity-<UTC timestamp>). Must be new or empty.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress lines: only the result on stdout.
    #[arg(long)]
    pub quiet: bool,
    /// Also allow addresses in this CIDR beyond loopback (repeatable), as the scenario's
    /// `network.allow` does, e.g. 10.0.0.0/24.
    #[arg(long = "allow-network", value_name = "CIDR", value_parser = parse_cidr)]
    pub allow_network: Vec<ipnet::IpNet>,
}

fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    crate::scenario::network::parse_cidr(s)
}

pub fn parse_spool(s: &str) -> Result<crate::scenario::SpoolKind, String> {
    match s {
        "local" => Ok(crate::scenario::SpoolKind::Local),
        "nats" => Ok(crate::scenario::SpoolKind::Nats),
        _ => Err(format!("`{s}` is not a spool: local or nats")),
    }
}

/// `mailsurge sim`'s arguments (SPEC §11).
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// The scenario file (YAML); not with --check, which takes the run's own.
    #[arg(required_unless_present = "check")]
    pub scenario: Option<PathBuf>,
    /// A run directory or a capacity directory to calibrate from (default: the calibration
    /// shipped in calibration/default.json).
    #[arg(long)]
    pub calibrate: Option<PathBuf>,
    /// Simulate this real run (its scenario, seed and calibration) and compare: exit 1 when a
    /// figure is outside its tolerance.
    #[arg(long, conflicts_with_all = ["scenario", "calibrate", "rate_scale", "peak", "nodes", "duration"])]
    pub check: Option<PathBuf>,
    /// Multiply the traffic rate, e.g. 10.
    #[arg(long, conflicts_with = "peak")]
    pub rate_scale: Option<f64>,
    /// Set the traffic's peak rate, e.g. 87500/s (the curve keeps its shape).
    #[arg(long)]
    pub peak: Option<crate::units::Rate>,
    /// Nodes in a region, replacing the scenario's (repeatable): --nodes us-east=12.
    #[arg(long, value_parser = parse_region_nodes)]
    pub nodes: Vec<(String, u32)>,
    /// Override the traffic window, e.g. 24h.
    #[arg(long)]
    pub duration: Option<Dur>,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output directory (default: reports/<name>-sim-<UTC timestamp>). Must be new or empty.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// `discrete` (an event per message step), `fluid` (flows per region, provider and
    /// second) or `auto`: discrete up to 2 million recipients.
    #[arg(long, value_enum, default_value = "auto")]
    pub mode: crate::sim::Mode,
    /// Also allow addresses in this CIDR beyond loopback (repeatable), as the scenario's
    /// `network.allow` does, e.g. 10.0.0.0/24.
    #[arg(long = "allow-network", value_name = "CIDR", value_parser = parse_cidr)]
    pub allow_network: Vec<ipnet::IpNet>,
}

fn parse_region_nodes(s: &str) -> Result<(String, u32), String> {
    let (r, n) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected REGION=N, e.g. us-east=12"))?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: the node count must be a whole number, e.g. us-east=12"))?;
    if r.trim().is_empty() || n == 0 {
        return Err(format!("`{s}`: expected REGION=N with N >= 1"));
    }
    Ok((r.trim().to_string(), n))
}
