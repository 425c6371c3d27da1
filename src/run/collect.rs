//! After the run: gather the raw data into the run directory — one merged, time-ordered,
//! compressed `events.jsonl.zst` (harness and node events), the spool leftovers and `run.json`
//! — so measurement reads the directory alone and `mailsurge report` can redo it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::live::Log;
use super::merge::{self, Merge};
use super::render::{self, ClusterRecord, NodeRecord, RunRecord, SpooledRecord};
use super::shared::SpoolRecord;
use super::topology::Down;
use crate::events::{self, now_ns};
use crate::mta::process::Node;
use crate::mta::spool::LogSpool;
use crate::scenario::ScenarioFile;

/// What the run knows about itself that the files do not say.
pub struct RunFacts {
    pub run_id: String,
    pub started: chrono::DateTime<chrono::Utc>,
    pub start_ns: u64,
    /// Why the run was stopped early, if it was stopped by hand.
    pub aborted: Option<String>,
    /// How it kept accepted mail.
    pub spool: SpoolRecord,
    /// A distributed run's agents.
    pub cluster: Option<ClusterRecord>,
}

/// Merges the event files, scans the spools and writes `run.json`. The raw per-process event
/// files are removed once merged: the merged file holds every line of them.
pub fn collect(
    dir: &Path,
    f: &ScenarioFile,
    harness_events: &Path,
    nodes: &[Node],
    down: &Down,
    facts: RunFacts,
    log: &Log,
) -> anyhow::Result<()> {
    let mut spooled = down.queued.clone();
    for n in nodes {
        spooled.extend(scan_spool(&n.dir.join("spool"), &n.name));
    }
    let files: Vec<PathBuf> = std::iter::once(harness_events.to_path_buf())
        .chain(nodes.iter().map(|n| n.dir.join("events.jsonl")))
        .collect();
    let records = nodes
        .iter()
        .map(|n| NodeRecord {
            name: n.name.clone(),
            region: n.region.clone(),
            alive: down.alive.get(&n.name).copied().unwrap_or(false),
        })
        .collect();
    collect_files(dir, f, &files, records, spooled, facts, log)
}

/// The recipients a node's local spool still holds.
pub fn scan_spool(spool: &Path, node: &str) -> Vec<SpooledRecord> {
    let mut out = Vec::new();
    for m in LogSpool::scan(spool).unwrap_or_default() {
        for rcpt in &m.rcpts {
            out.push(SpooledRecord {
                msg_id: m.msg_id.clone(),
                rcpt: rcpt.clone(),
                node: node.to_string(),
            });
        }
    }
    out
}

/// Merges event `files` (a missing one is skipped: a node that never wrote), writes `run.json`
/// with the nodes and what their spools still held, and removes the merged files. Where the
/// files came from — this host's processes, or agents' streams — is the caller's business.
pub fn collect_files(
    dir: &Path,
    f: &ScenarioFile,
    files: &[PathBuf],
    nodes: Vec<NodeRecord>,
    spooled: Vec<SpooledRecord>,
    facts: RunFacts,
    log: &Log,
) -> anyhow::Result<()> {
    let providers = render::provider_map(f);
    let compact = |e: &mut events::Event| e.compact(&|rcpt| crate::measure::provider_of(&providers, rcpt));
    let mut merge = Merge::new(&dir.join(".merge"), merge::CHUNK, &compact)?;
    for file in files {
        match merge.add_file(file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        }
    }
    for (file, torn) in merge.torn.iter().filter(|(_, n)| *n > 0) {
        log.line(&format!("{}: {torn} torn event lines skipped", file.display()));
    }
    let wall_s = (now_ns().saturating_sub(facts.start_ns)) as f64 / 1e9;
    merge.finish(&dir.join(events::RUN_EVENTS_FILE))?;
    for file in files {
        let _ = std::fs::remove_file(file);
    }
    RunRecord {
        schema: render::RUN_SCHEMA.into(),
        run_id: facts.run_id,
        started_at: facts.started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        start_ns: facts.start_ns,
        wall_s,
        nodes,
        spooled,
        aborted: facts.aborted,
        spool: Some(facts.spool),
        sim: None,
        cluster: facts.cluster,
    }
    .write(dir)
}

/// Writes a run directory's `events.jsonl.zst` from the events `produce` hands its sink, in
/// any order, compacted and sorted as [`collect`] writes a run's, at zstd `level`: what
/// `mailsurge sim` leaves for `render`. Events are spilled in chunks as they come, so a long
/// simulation never holds them all.
pub fn store_events<R>(
    dir: &Path,
    f: &ScenarioFile,
    level: i32,
    produce: impl FnOnce(&mut dyn FnMut(events::Event)) -> R,
) -> anyhow::Result<R> {
    let providers = render::provider_map(f);
    let compact = |e: &mut events::Event| e.compact(&|rcpt| crate::measure::provider_of(&providers, rcpt));
    let mut merge = Merge::new(&dir.join(".merge"), merge::CHUNK, &compact)?;
    let mut failed = None;
    let r = produce(&mut |e| {
        if failed.is_none() {
            failed = merge.push(e).err();
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    merge.finish_at(&dir.join(events::RUN_EVENTS_FILE), level)?;
    Ok(r)
}
