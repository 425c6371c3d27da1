//! CPU time per process of a run, sampled once a second into `cpu.json`, so that a capacity
//! probe can say which part of the harness or the system under test ran out of CPU first.
//!
//! Linux `/proc` is read directly: `/proc/<pid>/stat` for each node and the queue server, and
//! `/proc/self/task/<tid>/stat` for this process, whose threads are split by name — the inbox
//! runtime's threads ([`INBOX_THREAD`]) are the inboxes, every other thread is the generator's
//! side of the harness (schedule, submissions, event writer, the run's clock). Figures are
//! cumulative CPU seconds (user + system); a process restarted by chaos adds its new pid's time
//! to its name's total, so a series never goes backwards. On a system without `/proc` the file
//! says so (no samples) and attribution goes without CPU.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::inbox::farm::INBOX_THREAD;
use crate::report::format::r3;

/// The file in a run directory.
pub const CPU_FILE: &str = "cpu.json";

/// How often the run samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What a sampled process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcKind {
    /// The harness's generator side: schedule, submissions, events.
    Generator,
    /// The mock inboxes (the harness's inbox runtime).
    Inboxes,
    /// One reference-MTA node.
    Node,
    /// The shared queue's nats-server.
    Queue,
}

/// `cpu.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuLog {
    /// Cores the machine has: the most CPU seconds per second all processes together can use.
    pub cores: usize,
    /// Each sampled process by name, and what it is.
    pub processes: BTreeMap<String, ProcKind>,
    /// Cumulative CPU seconds per process name, in time order.
    pub samples: Vec<CpuSample>,
}

/// One reading: seconds since the schedule's start, and each process's CPU seconds so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuSample {
    pub t: f64,
    pub cpu_s: BTreeMap<String, f64>,
}

impl CpuLog {
    /// The sample nearest `t`.
    fn nearest(&self, t: f64) -> Option<&CpuSample> {
        self.samples
            .iter()
            .min_by(|a, b| (a.t - t).abs().total_cmp(&(b.t - t).abs()))
    }

    /// CPU seconds each process used between `from` and `to` (seconds since start), from the
    /// samples nearest those times; empty when they are the same sample.
    pub fn used(&self, from: f64, to: f64) -> BTreeMap<String, f64> {
        let (Some(a), Some(b)) = (self.nearest(from), self.nearest(to)) else {
            return BTreeMap::new();
        };
        if b.t <= a.t {
            return BTreeMap::new();
        }
        b.cpu_s
            .iter()
            .map(|(name, &s)| (name.clone(), (s - a.cpu_s.get(name).copied().unwrap_or(0.0)).max(0.0)))
            .collect()
    }

    /// The span [`Self::used`] really covers for `from`..`to`.
    pub fn span(&self, from: f64, to: f64) -> f64 {
        match (self.nearest(from), self.nearest(to)) {
            (Some(a), Some(b)) if b.t > a.t => b.t - a.t,
            _ => 0.0,
        }
    }

    pub fn read(dir: &Path) -> Option<CpuLog> {
        let text = std::fs::read_to_string(dir.join(CPU_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Takes the samples while a run plays.
pub struct CpuSampler {
    start: tokio::time::Instant,
    next: tokio::time::Instant,
    ticks_per_s: f64,
    /// name → pid → last CPU seconds seen (a restarted process has a new pid).
    seen: BTreeMap<String, BTreeMap<u32, f64>>,
    log: CpuLog,
}

impl CpuSampler {
    pub fn new(start: tokio::time::Instant) -> CpuSampler {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|t| *t > 0)
            .unwrap_or(100);
        CpuSampler {
            start,
            next: start,
            ticks_per_s: ticks as f64,
            seen: BTreeMap::new(),
            log: CpuLog {
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                ..CpuLog::default()
            },
        }
    }

    /// Samples when a second has passed since the last sample; `procs` lists the child
    /// processes by name (pid `None` while down), asked for only when a sample is due.
    pub fn tick(&mut self, procs: impl FnOnce() -> Vec<(String, ProcKind, Option<u32>)>) {
        let now = tokio::time::Instant::now();
        if now < self.next {
            return;
        }
        self.next = now.max(self.next) + SAMPLE_EVERY;
        // Seconds since the schedule's start; the first sample comes before it.
        let t = match now.checked_duration_since(self.start) {
            Some(d) => d.as_secs_f64(),
            None => -(self.start - now).as_secs_f64(),
        };
        let (mut generator, mut inboxes) = (0.0, 0.0);
        let me = std::process::id();
        for (name, ticks) in threads() {
            let s = ticks as f64 / self.ticks_per_s;
            match name.starts_with(INBOX_THREAD) {
                true => inboxes += s,
                false => generator += s,
            }
        }
        self.note("generator", ProcKind::Generator, me, generator);
        self.note("inboxes", ProcKind::Inboxes, me, inboxes);
        for (name, kind, pid) in procs() {
            match pid.and_then(|p| Some((p, stat_ticks(&format!("/proc/{p}/stat"))?))) {
                Some((pid, ticks)) => self.note(&name, kind, pid, ticks as f64 / self.ticks_per_s),
                None => {
                    self.log.processes.entry(name).or_insert(kind);
                }
            }
        }
        let cpu_s = self
            .seen
            .iter()
            .map(|(name, pids)| (name.clone(), r3(pids.values().sum())))
            .collect();
        self.log.samples.push(CpuSample { t: r3(t), cpu_s });
    }

    fn note(&mut self, name: &str, kind: ProcKind, pid: u32, s: f64) {
        self.log.processes.entry(name.to_string()).or_insert(kind);
        self.seen.entry(name.to_string()).or_default().insert(pid, s);
    }

    pub fn finish(self) -> CpuLog {
        self.log
    }
}

/// This process's threads: name and CPU ticks each.
fn threads() -> Vec<(String, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (name, ticks) = parse_stat(&text)?;
            Some((name.to_string(), ticks))
        })
        .collect()
}

fn stat_ticks(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_stat(&text).map(|(_, t)| t)
}

/// `(comm, utime + stime)` from a `/proc/.../stat` line. The name is in parentheses and may
/// itself hold spaces or parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<(&str, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?;
    // After ") ": state(3) ppid(4) … utime(14) stime(15): the 12th and 13th fields from here.
    let mut rest = text.get(close + 2..)?.split_ascii_whitespace();
    let utime: u64 = rest.nth(11)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((name, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_cpu_ticks() {
        let line = "4242 (tokio (x) 1) S 1 4242 4242 0 -1 4194560 1 0 0 0 150 25 0 0 20 0 9 0 1 1 1";
        assert_eq!(parse_stat(line), Some(("tokio (x) 1", 175)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_threads_with_cpu_time() {
        // Burn some CPU so the count is not zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let total: u64 = threads().iter().map(|(_, t)| t).sum();
        assert!(total > 0, "{:?}", threads());
    }

    #[test]
    fn usage_between_two_times_comes_from_the_nearest_samples() {
        let s = |t: f64, a: f64, b: f64| CpuSample {
            t,
            cpu_s: [("a".to_string(), a), ("b".to_string(), b)].into(),
        };
        let log = CpuLog {
            cores: 2,
            processes: BTreeMap::new(),
            samples: vec![s(0.0, 0.0, 0.0), s(1.01, 0.5, 0.1), s(2.0, 1.4, 0.2), s(3.0, 2.3, 0.2)],
        };
        let u = log.used(1.0, 3.0);
        assert!((u["a"] - 1.8).abs() < 1e-9 && (u["b"] - 0.1).abs() < 1e-9, "{u:?}");
        assert!((log.span(1.0, 3.0) - 1.99).abs() < 1e-9);
        assert!(log.used(2.0, 2.0).is_empty());
    }
}
