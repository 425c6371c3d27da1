//! # mailsurge
//!
//! A load-test and region-failover harness for email delivery systems, with its own reference
//! MTA. A scenario describes traffic, regions of MTA nodes and mock inbox providers; `run` plays
//! it over real SMTP on loopback and reports delivery time measured from each message's
//! *intended* send time.
//!
//! # Layout
//!
//! Data flows one way: traffic → mta → inbox → measure → report.
//!
//! - [`units`]: durations, rates, percentages, sizes as written in config files.
//! - [`config`]: YAML loading with `file:line:col` errors; shipped files embedded in the binary.
//! - [`scenario`]: the scenario file (SPEC §2), validated; threshold expressions.
//! - [`smtp`]: pure SMTP parsing and DATA codec, the tokio server (sessions, pipelining,
//!   limits) and the client (connection reuse, pipelining).
//! - [`inbox`]: mock providers — rule tables and receipts (SPEC §3).
//! - [`mta`]: the reference MTA node — ingress, spool, queues, response table (SPEC §4).
//! - [`traffic`]: the open-loop schedule, message mix and submission.
//! - [`events`]: the per-message event records every number is computed from.
//! - [`measure`]: accounting and delivery-time statistics (SPEC §5).
//! - [`report`]: summary.json, report.md and charts (SPEC §6).
//! - [`run`]: the orchestrator behind `mailsurge run`; [`runlog`]: its `run.log`.
//! - [`gen`]: `mailsurge gen`, the generator alone against any SMTP server.
//! - [`gcra`]: the rate-with-burst check behind inbox rate limits and MTA tenant limits.
//! - [`sync`]: the poison-tolerant mutex lock every stateful module uses.
//! - [`cli`]: the command line (SPEC §7); `main.rs` only calls it.

pub mod chaos;
pub mod cli;
pub mod config;
pub mod dsn;
pub mod events;
pub mod gcra;
pub mod gen;
pub mod inbox;
pub mod measure;
pub mod mta;
pub mod report;
pub mod run;
pub mod runlog;
pub mod scenario;
pub mod signal;
pub mod smtp;
pub mod sync;
pub mod traffic;
pub mod units;
