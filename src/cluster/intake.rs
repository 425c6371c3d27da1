//! The coordinator's side of the event streams: every batch an agent published, read from the
//! run's JetStream stream in order, each event's times put on the coordinator's clock, written
//! to that agent's file in the run directory, and counted for the progress line and the drain
//! check — the same counts a one-host run keeps from its own files.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;

use super::clock::Clocks;
use crate::events::{self, Event, Kind};
use crate::run::{LiveStats, Log, Tail};

/// How long the coordinator waits for the last batches an agent reported.
const COLLECT_WAIT: Duration = Duration::from_secs(30);

/// What the intake has read so far.
#[derive(Default)]
pub struct Tally {
    /// Batches read, per agent.
    pub batches: BTreeMap<String, u64>,
    /// Recipients the MTA accepted at submission (generator `submitted` events).
    pub accepted: u64,
    pub rejected: u64,
    pub unsubmitted: u64,
    /// Lines that were not events.
    pub torn: u64,
}

/// Shared between the intake task and the coordinator's loop.
pub struct Intake {
    pub tally: Mutex<Tally>,
    pub tail: Mutex<Tail>,
    pub live: Arc<LiveStats>,
    dir: PathBuf,
}

impl Intake {
    /// `live` is fed as a one-host run feeds it (receipts, submissions, MTA ends), so the
    /// progress line and the abort conditions read the same figures.
    pub fn new(dir: &Path, live: Arc<LiveStats>) -> Arc<Intake> {
        Arc::new(Intake {
            tally: Mutex::default(),
            tail: Mutex::new(Tail::new(Vec::new())),
            live,
            dir: dir.to_path_buf(),
        })
    }

    /// The file agent `name`'s events go to.
    pub fn file_of(dir: &Path, agent: &str) -> PathBuf {
        dir.join("nodes").join(format!("agent-{agent}.events.jsonl"))
    }

    pub fn batches_of(&self, agent: &str) -> u64 {
        crate::sync::lock(&self.tally).batches.get(agent).copied().unwrap_or(0)
    }

    /// Waits until the intake has read every batch each agent said it published.
    pub async fn wait_for(&self, batches: &BTreeMap<String, u64>, lost: &BTreeMap<String, f64>, log: &Log) {
        let t0 = Instant::now();
        loop {
            let short: Vec<(String, u64, u64)> = batches
                .iter()
                .filter(|(a, _)| !lost.contains_key(*a))
                .map(|(a, &want)| (a.clone(), self.batches_of(a), want))
                .filter(|(_, got, want)| got < want)
                .collect();
            if short.is_empty() {
                return;
            }
            if t0.elapsed() >= COLLECT_WAIT {
                for (a, got, want) in short {
                    log.line(&format!(
                        "agent {a}: read {got} of its {want} event batches before giving up"
                    ));
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reads the stream until `stop` turns true and nothing more comes.
    pub async fn run(
        self: Arc<Self>,
        stream: async_nats::jetstream::stream::Stream,
        prefix: String,
        clocks: Clocks,
    ) -> anyhow::Result<()> {
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: format!("{prefix}.>"),
                ..Default::default()
            })
            .await
            .context("cannot read the run's event stream")?;
        let mut messages = consumer
            .messages()
            .await
            .context("cannot read the run's event stream")?;
        let mut files: BTreeMap<String, std::io::BufWriter<std::fs::File>> = BTreeMap::new();
        let mut line = Vec::with_capacity(512);
        while let Some(m) = messages.next().await {
            let m = m.context("event stream")?;
            let Some(agent) = m
                .subject
                .as_str()
                .strip_prefix(&format!("{prefix}."))
                .map(str::to_string)
            else {
                continue;
            };
            if !files.contains_key(&agent) {
                let path = Self::file_of(&self.dir, &agent);
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                files.insert(agent.clone(), std::io::BufWriter::with_capacity(256 * 1024, f));
            }
            let w = files.get_mut(&agent).context("agent file")?;
            let mut torn = 0;
            let mut counts = (0, 0, 0);
            for raw in m.payload.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let Ok(mut e) = serde_json::from_slice::<Event>(raw) else {
                    torn += 1;
                    continue;
                };
                clocks.correct(&agent, &mut e);
                self.count(&e, &mut counts);
                line.clear();
                events::write_line(&mut line, &e)?;
                w.write_all(&line)?;
            }
            w.flush()?;
            let mut t = crate::sync::lock(&self.tally);
            *t.batches.entry(agent).or_default() += 1;
            t.accepted += counts.0;
            t.rejected += counts.1;
            t.unsubmitted += counts.2;
            t.torn += torn;
        }
        Ok(())
    }

    fn count(&self, e: &Event, counts: &mut (u64, u64, u64)) {
        match e.event {
            Kind::Submitted => counts.0 += 1,
            Kind::Rejected => counts.1 += 1,
            Kind::Unsubmitted => counts.2 += 1,
            _ => {}
        }
        self.live.record(e);
        if e.event.is_mta_end() && crate::sync::lock(&self.tail).note(e) {
            self.live.mta_end(e);
        }
    }
}
