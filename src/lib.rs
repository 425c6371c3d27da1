//! # mailsurge
//!
//! A load-test and region-failover harness for email delivery systems, with its own reference
//! MTA. A scenario describes traffic, regions of MTA nodes and mock inbox providers; `run` plays
//! it over real SMTP on loopback and reports delivery time measured from each message's
//! *intended* send time.
//!
//! # Layout
//!
//! Data flows one way: traffic → mta → inbox → measure → report. The floors, bottom up (a module
//! imports only from floors below it, and never from a module that imports it back):
//!
//! 1. **Vocabulary** every part speaks: [`units`] (durations, rates, percentages, sizes, regex
//!    patterns as written in files) and [`events`] (the per-message event records, the fault
//!    fields of chaos events, the `X-Mailsurge-*` identity header's writer and parser,
//!    `domain_of`, the bounce domain). Beside them: [`config`] (YAML with `file:line:col`
//!    errors, shipped files), [`files`] (writes that name the file), [`gcra`], [`sync`],
//!    [`signal`] (stops, child lifetimes), [`runlog`].
//! 2. **The plan**: [`scenario`] — the scenario file validated into plain data that every other
//!    part reads and none writes; it imports no runtime part. Threshold *syntax* lives here;
//!    evaluating thresholds is [`measure`]'s.
//! 3. **Protocol**: [`smtp`] — pure parsing and the DATA codec, the server (sessions, policy
//!    trait, limits) and the client. It knows no policy and no scenario. [`dsn`] parses RFC 3464
//!    notices.
//! 4. **Runtime parts**, each compiling its own share of the plan:
//!    - [`inbox`]: mock providers — rule tables, per-source state, receipts (SPEC §3), the
//!      provider farm a run serves, the bounce inbox;
//!    - [`mta`]: the reference MTA node — ingress, spool, queues, response table, screening
//!      (SPEC §4), and the node as a child process; it imports nothing from `inbox` or
//!      `traffic`;
//!    - [`traffic`]: the open-loop schedule, message mix, submission and the balancer; it speaks
//!      SMTP only, so it can load any MTA.
//! 5. **Chaos**: [`chaos`] — the fault timeline: typed actions, their order, and the levers
//!    that apply them to the nodes and inboxes of the floor below.
//! 6. **Measurement and presentation**: [`measure`] (accounting, delivery-time statistics,
//!    series, thresholds, failover metrics — SPEC §5; it reads only events and the plan) and
//!    above it [`report`] (summary.json, report.md/html, charts, junit, compare — SPEC §6).
//!    Measures do not know how they are shown.
//! 7. **Commands**: [`run`] (plan → topology up → traffic + chaos → drain → collect → render),
//!    [`gen`] (the generator alone against any SMTP server) and [`cli`] (one function per
//!    command, SPEC §7); `main.rs` only calls it.

pub mod alloc_count;
pub mod capacity;
pub mod chaos;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dsn;
pub mod events;
pub mod files;
pub mod gcra;
pub mod gen;
pub mod inbox;
pub mod measure;
pub mod mta;
pub mod nats;
pub mod report;
pub mod run;
pub mod runlog;
pub mod scenario;
pub mod signal;
pub mod sim;
pub mod smtp;
pub mod sync;
pub mod tls;
pub mod traffic;
pub mod units;
