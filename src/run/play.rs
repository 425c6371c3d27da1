//! The run's clock: the traffic window and the drain. Each tick pulls the chaos steps that are
//! due, notices nodes that died on their own, judges the abort conditions, prints progress, and
//! decides when the run is over — every accepted message terminal and every chaos step taken,
//! or the hard stop.
//!
//! An abort condition that holds (SPEC §12) turns the run into a drain at once: the generator
//! is cut as a signal stop cuts it, the rest of the chaos timeline is given up and every fault
//! still in force is lifted, and the queues get at most the scenario's `drain` to empty before
//! the report is written with verdict `aborted`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::bail;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cpu::CpuSampler;
use super::live::{LiveStats, Log, Tail};
use super::topology::Topology;
use crate::chaos::Step;
use crate::chaos::{self, Timeline};
use crate::events::{now_ns, Event};
use crate::measure::abort::Watch;
use crate::scenario::ScenarioFile;
use crate::traffic::deadline::Cutter;
use crate::traffic::submit::Counters;

/// How often the drain check reads node events.
const DRAIN_POLL: Duration = Duration::from_millis(250);

/// How long a settled run waits for the MTAs' own end lines (see [`Drain`]).
pub const DRAIN_GRACE: Duration = Duration::from_secs(3);

/// What the loop watches.
pub struct Clock {
    pub start: Instant,
    pub hard_stop: Instant,
    pub duration: Duration,
}

/// Why the loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Every accepted message is terminal and every chaos step taken.
    Drained,
    /// The hard stop (traffic window plus drain) came first.
    TimedOut,
    /// Every node exited on its own.
    NodesGone,
    /// Stopped by hand: the signal's name.
    Stopped(&'static str),
    /// An abort condition held; traffic stopped, faults were lifted and the queues drained
    /// (or the drain timed out). The reason names the condition and its value.
    Aborted(String),
}

/// What the loop reads and pulls.
pub struct Play<'a> {
    pub f: &'a ScenarioFile,
    pub log: &'a Log,
    pub live: &'a LiveStats,
    pub counters: &'a Counters,
    pub events: &'a mpsc::UnboundedSender<Event>,
    pub clock: Clock,
    pub chaos: Timeline,
    /// Nodes that exited without being killed by chaos.
    pub crashed: Vec<String>,
    /// Turns `Some(signal)` when the run is stopped by hand.
    pub stop: Option<watch::Receiver<Option<&'static str>>>,
    /// CPU per process, a sample a second.
    pub cpu: CpuSampler,
    /// The scenario's abort conditions, judged each tick on `live`.
    pub watch: Watch,
    /// Wall-clock ns of the schedule's offset 0, for the abort reason's times.
    pub start_ns: u64,
    /// Cuts the generator short when an abort condition holds.
    pub cutter: &'a Cutter,
    /// Set once an abort condition has held: the reason.
    pub aborted: Option<String>,
}

/// When the drain is over. Every accepted message must be *settled* — received by an inbox, or
/// failed by an MTA — and every MTA must have logged its end: a receipt is written as the
/// inbox's 250 goes out, and until the MTA has read that 250 and logged it, the message is
/// still in its spool (ending on receipts alone stopped nodes with received mail spooled). An
/// MTA's line can be missing for good, though — a node killed between the 250 and its next
/// events flush, whose spool had already let the message go — so once everything is settled
/// the MTAs get [`DRAIN_GRACE`] to catch up: many flush intervals, and many drain polls.
/// (A distributed run's coordinator ends its drain by the same rule.)
#[derive(Default)]
pub struct Drain {
    settled_at: Option<Instant>,
    /// The grace ran out before every MTA logged its end.
    pub waited_out: bool,
}

impl Drain {
    pub fn new() -> Drain {
        Drain::default()
    }

    pub fn over(&mut self, settled: bool, mta_ended: bool, now: Instant) -> bool {
        if !settled {
            self.settled_at = None;
            return false;
        }
        let since = *self.settled_at.get_or_insert(now);
        self.waited_out = !mta_ended && now.duration_since(since) >= DRAIN_GRACE;
        mta_ended || self.waited_out
    }
}

/// The progress line's last reading, for the rate.
struct Last {
    at: Instant,
    accepted: u64,
}

impl Play<'_> {
    /// Ticks until the run is over; a failed chaos step ends it with an error.
    pub async fn until_drained(&mut self, topo: &mut Topology, gen: &JoinHandle<()>) -> anyhow::Result<Ended> {
        let progress_every = if self.log.plain() { 5.0 } else { 0.5 };
        let mut tail = Tail::new(topo.nodes.iter().map(|n| n.dir.join("events.jsonl")).collect());
        let mut last = Last {
            at: Instant::now(),
            accepted: 0,
        };
        let mut drain = Drain::new();
        let mut dsn_seen = 0;
        loop {
            // Sleep until the next poll or the next chaos step, whichever is first.
            let poll_at = Instant::now() + DRAIN_POLL;
            let step_at = self.chaos.peek().map(|st| self.clock.start + st.at);
            if let Some(signal) = self.sleep_or_stop(step_at.map_or(poll_at, |t| t.min(poll_at))).await {
                self.log.line(&format!(
                    "{signal}: stopping — traffic and chaos stop, nodes are ended with their spools kept, a partial report follows (a second signal stops at once)"
                ));
                return Ok(Ended::Stopped(signal));
            }
            self.pull_due_levers(topo).await?;
            self.cpu.tick(|| topo.processes());
            let live = self.live;
            tail.poll(|e| live.mta_end(e));
            self.notice_crashes(topo);
            let accepted = self.counters.accepted.load(Ordering::Relaxed);
            let dsn_terminal = topo.bounces.as_ref().map_or(0, |(b, _)| b.terminal());
            live.dsn_failures(dsn_terminal.saturating_sub(dsn_seen), now_ns());
            dsn_seen = dsn_terminal;
            self.judge_abort(topo).await?;
            let settled = self.live.delivered_keys() + tail.failed + dsn_terminal;
            let now = Instant::now();
            if now.duration_since(last.at).as_secs_f64() >= progress_every {
                self.progress(&mut last, now, accepted, tail.bounced + dsn_terminal);
            }
            // A pending chaos step (a restore, say) is part of the run: wait for it.
            let settled = gen.is_finished() && settled >= accepted && self.chaos.done();
            if drain.over(
                settled,
                topo.nodes.is_empty() || tail.ended.len() as u64 >= accepted,
                now,
            ) {
                if drain.waited_out {
                    self.log.line(&format!(
                        "{} received message(s) still without their MTA's delivered line after {:.0}s; ending the drain",
                        accepted.saturating_sub(tail.ended.len() as u64),
                        DRAIN_GRACE.as_secs_f64()
                    ));
                }
                return Ok(self.ended(Ended::Drained));
            }
            if now >= self.clock.hard_stop {
                self.log
                    .line("drain timed out; undelivered mail is counted as queued or lost");
                return Ok(self.ended(Ended::TimedOut));
            }
            if !self.crashed.is_empty() && self.crashed.len() == topo.nodes.len() {
                self.log.line("every node has exited; stopping");
                return Ok(self.ended(Ended::NodesGone));
            }
        }
    }

    /// How the loop ended: an aborted run is `Aborted` however its drain went.
    fn ended(&mut self, how: Ended) -> Ended {
        self.aborted.take().map_or(how, Ended::Aborted)
    }

    /// Judges the abort conditions; the first that holds stops traffic and chaos, lifts every
    /// fault still in force and leaves the queues `drain` to empty (see the module doc).
    async fn judge_abort(&mut self, topo: &mut Topology) -> anyhow::Result<()> {
        if self.aborted.is_some() || self.watch.is_empty() {
            return Ok(());
        }
        let now = now_ns();
        let Some(trip) = self.live.recent(|r| self.watch.check(r, now, self.start_ns)) else {
            return Ok(());
        };
        self.log.line(&format!(
            "{}: stopping — traffic and chaos stop, faults are lifted, the queues get at most {} to drain",
            trip.reason, self.f.drain
        ));
        self.cutter.cut();
        let elapsed = Instant::now().saturating_duration_since(self.clock.start);
        for st in self.chaos.abandon(elapsed) {
            self.pull(topo, &st).await?;
        }
        self.clock.hard_stop = Instant::now() + self.f.drain.0;
        self.aborted = Some(trip.reason);
        Ok(())
    }

    /// Sleeps until `t`; `Some(signal)` if the run was stopped by hand first (or before).
    async fn sleep_or_stop(&mut self, t: Instant) -> Option<&'static str> {
        crate::signal::sleep_or_stop(&mut self.stop, t).await
    }

    /// Takes every chaos step that is due.
    async fn pull_due_levers(&mut self, topo: &mut Topology) -> anyhow::Result<()> {
        while let Some(st) = self
            .chaos
            .take_due(Instant::now().saturating_duration_since(self.clock.start))
        {
            self.pull(topo, &st).await?;
        }
        Ok(())
    }

    /// Pulls one step's lever and logs it; a failed step ends the run with an error.
    async fn pull(&mut self, topo: &mut Topology, st: &Step) -> anyhow::Result<()> {
        let world = chaos::World {
            nodes: &mut topo.nodes,
            providers: &mut topo.providers,
            pools: &self.f.mta.egress_pools,
            events: self.events,
            nats: topo.queue.as_mut().and_then(|q| q.server.as_mut()),
        };
        let at = Instant::now().saturating_duration_since(self.clock.start).as_secs_f64();
        match chaos::apply(st, world).await {
            Ok(text) => self.log.line(&format!("t={at:>6.1}s chaos: {text}")),
            Err(e) => {
                self.log.line(&format!("t={at:>6.1}s chaos step failed: {e:#}"));
                bail!("chaos step `{}` failed: {e:#}", st.action.describe());
            }
        }
        Ok(())
    }

    /// Nodes that exited without a chaos kill.
    fn notice_crashes(&mut self, topo: &mut Topology) {
        for n in topo.nodes.iter_mut().filter(|n| !n.down) {
            if let Ok(Some(status)) = n.child.try_wait() {
                if !self.crashed.contains(&n.name) {
                    self.crashed.push(n.name.clone());
                    self.log.line(&format!("node {} exited unexpectedly: {status}", n.name));
                }
            }
        }
    }

    fn progress(&self, last: &mut Last, now: Instant, accepted: u64, bounced: u64) {
        let since = now.duration_since(last.at).as_secs_f64();
        let rate = accepted.saturating_sub(last.accepted) as f64 / since;
        (last.at, last.accepted) = (now, accepted);
        let elapsed = now.saturating_duration_since(self.clock.start);
        let mut next = self.chaos.peek().map_or(String::new(), |st| {
            format!(" · next {} at {:.0}s", st.action.describe(), st.at.as_secs_f64())
        });
        if !self.watch.is_empty() {
            let now = now_ns();
            let readings = self.live.recent(|r| self.watch.read(r, now));
            next.push_str(&format!(" · {}", self.watch.progress(&readings)));
        }
        self.log.progress(
            elapsed,
            &format!(
                "t={:>6.1}s/{:.0}s {rate:>6.0}/s accepted {accepted} delivered {} bounced {} p50 {} slo {}{}{next}",
                elapsed.as_secs_f64(),
                self.clock.duration.as_secs_f64(),
                self.live.delivered_keys(),
                bounced,
                self.live.p50_text(),
                self.live.slo_text(self.f.slo.delivery_time.as_secs_f64() * 1e3),
                self.live.tls_text(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_waits_for_the_mtas_then_gives_up_after_the_grace() {
        let mut d = Drain::new();
        let t0 = Instant::now();
        assert!(!d.over(false, true, t0), "unsettled mail keeps the drain open");
        assert!(!d.over(true, false, t0), "received, but an MTA has not logged its end");
        assert!(!d.over(true, false, t0 + DRAIN_GRACE / 2));
        assert!(d.over(true, true, t0 + DRAIN_GRACE / 2), "every MTA ended");
        assert!(!d.waited_out);

        let mut d = Drain::new();
        assert!(!d.over(true, false, t0));
        assert!(
            !d.over(false, false, t0 + DRAIN_GRACE),
            "unsettled again: the grace restarts"
        );
        assert!(!d.over(true, false, t0 + DRAIN_GRACE));
        assert!(d.over(true, false, t0 + DRAIN_GRACE * 2));
        assert!(d.waited_out, "a missing line cannot hold the run forever");
    }
}
