//! Submission: plays the schedule against SMTP targets over reused connections.
//!
//! Open loop: one scheduler task releases each message at its intended time into a shared queue
//! (the [`Backlog`]); a fixed pool of connection workers takes them from there. When workers
//! fall behind, messages wait in the queue with their intended time unchanged — backpressure is
//! measured, never hidden (the oha/goose approach to coordinated omission). Closed loop: each
//! worker draws its next message when it is free, so nothing waits.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::balance::Balancer;
use super::deadline::Deadline;
use super::message::{Builder, Draft, Mix};
use super::schedule::Schedule;
// `Target` lives in `target.rs` (shared with `balance.rs`); this stays its public path.
pub use super::target::Target;
use crate::events::{now_ns, Event, Kind};
use crate::smtp::{Client, ClientConfig};
use crate::sync::lock;

/// Marks a closed-loop draft: its intended time is set when it is actually sent.
const CLOSED_LOOP_INTENDED: u64 = 0;

/// How often a worker looks again while every node is evicted.
const NO_TARGET_WAIT: Duration = Duration::from_millis(50);

/// Attempts per message when the connection fails under it (a new connection each time).
const MAX_SUBMIT_ATTEMPTS: u32 = 3;

/// Live counters, read by the progress line and the drain check.
#[derive(Debug, Default)]
pub struct Counters {
    pub generated: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub unsubmitted: AtomicU64,
}

/// When messages are released to the connections.
pub enum Arrivals {
    /// Open loop: each message at its intended time, whatever the target's speed.
    Open(Box<Schedule>),
    /// Closed loop (like smtp-source): each message is drawn when a connection is free to send
    /// it, and its "intended" time is when it was sent, so there is no queueing to correct for.
    /// Ends after `count` messages or `duration` after the start, whichever comes first (at
    /// least one of them should be set; otherwise the hard stop ends it). A message a
    /// connection is already sending when the duration ends still finishes: running out of time
    /// is how a duration-bounded loop ends, not a failure.
    Closed {
        count: Option<u64>,
        duration: Option<Duration>,
    },
}

/// Everything the generator needs.
pub struct Plan {
    pub arrivals: Arrivals,
    pub mix: Mix,
    pub builder: Builder,
    pub seed: u64,
    pub connections: u32,
    /// Where to submit: healthy MTA nodes, by weight.
    pub balancer: Arc<Balancer>,
    /// Wall-clock ns of offset 0 of the schedule.
    pub start_ns: u64,
    /// Monotonic instant of offset 0.
    pub start: Instant,
    /// Stop submitting then (or when cut short); whatever is still queued becomes
    /// `unsubmitted`, and the schedule releases nothing more.
    pub hard_stop: Deadline,
    /// `(k, n)`: send only the messages whose sequence number is `k` mod `n` — shard k of a
    /// distributed run's n generators. Every shard draws the whole schedule and mix, so the n
    /// shards' union is exactly the one-host schedule of the same seed.
    pub shard: Option<(u32, u32)>,
    /// STARTTLS on every submission connection.
    pub tls: crate::smtp::client::ClientTls,
    /// AUTH on every submission connection (after STARTTLS, if any).
    pub auth: Option<crate::smtp::Credentials>,
}

/// Messages the open-loop schedule has released and no connection has taken yet.
///
/// Open loop never slows the schedule, so when the target falls behind this is the structure
/// that grows with the backlog: its per-message cost is the generator's tracked state (SPEC §8,
/// ≤ 64 B per message; `tests/tracked_state.rs` measures it). Entries are 32-byte `Copy`
/// [`Draft`]s; recipients and bytes are made only when a connection takes one.
#[derive(Default)]
pub struct Backlog {
    queue: Mutex<VecDeque<Draft>>,
    notify: Notify,
    closed: AtomicBool,
}

impl Backlog {
    /// Releases a draft to the connections.
    pub fn push(&self, d: Draft) {
        lock(&self.queue).push_back(d);
        self.notify.notify_one();
    }

    pub fn len(&self) -> usize {
        lock(&self.queue).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// No more drafts will come: connections waiting on an empty backlog give up.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Removes and returns everything still queued (after the hard stop).
    pub fn take_all(&self) -> VecDeque<Draft> {
        std::mem::take(&mut *lock(&self.queue))
    }

    /// The oldest draft, waiting for one; `None` once closed and empty, or at `hard_stop`.
    pub async fn pop(&self, hard_stop: &Deadline) -> Option<Draft> {
        loop {
            let notified = self.notify.notified();
            if hard_stop.passed() {
                return None;
            }
            if let Some(d) = lock(&self.queue).pop_front() {
                return Some(d);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            tokio::select! {
                _ = notified => {}
                _ = hard_stop.reached() => {}
            }
        }
    }
}

/// Closed-loop source: drafts are drawn on demand, in sequence order under one lock, so the
/// same seed gives the same messages whichever connection asks first, and nothing is queued.
struct ClosedLoop {
    /// The mix RNG and the next sequence number.
    next: Mutex<(ChaCha8Rng, u64)>,
    count: Option<u64>,
    /// No new message is started at or after this instant.
    deadline: Instant,
}

enum Source {
    Open(Backlog),
    /// Boxed: the RNG state is large and there is one per run.
    Closed(Box<ClosedLoop>),
}

/// What the connection workers share.
struct Shared {
    source: Source,
    mix: Mix,
    builder: Builder,
    balancer: Arc<Balancer>,
    workers: usize,
    events: mpsc::UnboundedSender<Event>,
    counters: Arc<Counters>,
    start: Instant,
    hard_stop: Deadline,
    tls: crate::smtp::client::ClientTls,
    auth: Option<crate::smtp::Credentials>,
}

impl Shared {
    /// A healthy target for connection worker `index`, waiting while none is; `None` at the
    /// hard stop.
    async fn healthy_target(&self, index: usize) -> Option<(usize, SocketAddr)> {
        loop {
            if let Some(t) = self.balancer.pick(index, self.workers) {
                return Some(t);
            }
            if self.hard_stop.passed() {
                return None;
            }
            tokio::time::sleep(NO_TARGET_WAIT).await;
        }
    }

    /// The next message for a free connection, or `None` when the generator is done.
    async fn next_draft(&self) -> Option<Draft> {
        let c = match &self.source {
            Source::Open(backlog) => return backlog.pop(&self.hard_stop).await,
            Source::Closed(c) => c,
        };
        if Instant::now() < self.start {
            tokio::time::sleep_until(self.start).await;
        }
        if Instant::now() >= c.deadline || self.hard_stop.passed() {
            return None;
        }
        let mut next = lock(&c.next);
        let (rng, seq) = &mut *next;
        if c.count.is_some_and(|n| *seq >= n) {
            return None;
        }
        let d = self.mix.draft(*seq, CLOSED_LOOP_INTENDED, rng);
        *seq += 1;
        self.counters
            .generated
            .fetch_add(self.mix.recipients_per_message().into(), Ordering::Relaxed);
        Some(d)
    }
}

/// The RNG the mix draws from; seeded apart from the schedule's. (`mailsurge sim` draws the
/// same messages from it.)
pub fn mix_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0x006d_6978)
}

/// Runs the whole generation; returns when every message is submitted, rejected or given up.
pub async fn run(plan: Plan, events: mpsc::UnboundedSender<Event>, counters: Arc<Counters>) {
    let (source, schedule) = match plan.arrivals {
        Arrivals::Open(schedule) => (Source::Open(Backlog::default()), Some(schedule)),
        Arrivals::Closed { count, duration } => {
            let c = ClosedLoop {
                next: Mutex::new((mix_rng(plan.seed), 0)),
                count,
                deadline: duration.map_or(plan.hard_stop.at(), |d| plan.start + d),
            };
            (Source::Closed(Box::new(c)), None)
        }
    };
    let shared = Arc::new(Shared {
        source,
        mix: plan.mix,
        builder: plan.builder,
        balancer: plan.balancer,
        workers: plan.connections.max(1) as usize,
        events,
        counters,
        start: plan.start,
        hard_stop: plan.hard_stop.clone(),
        tls: plan.tls,
        auth: plan.auth,
    });
    let workers: Vec<_> = (0..plan.connections.max(1) as usize)
        .map(|w| tokio::spawn(worker(w, shared.clone())))
        .collect();
    let per_message = u64::from(shared.mix.recipients_per_message());

    // The open-loop scheduler: release each draft at its intended time.
    if let (Source::Open(backlog), Some(schedule)) = (&shared.source, schedule) {
        let mut rng = mix_rng(plan.seed);
        for (seq, offset) in schedule.enumerate() {
            if plan
                .shard
                .is_some_and(|(k, n)| seq as u64 % u64::from(n.max(1)) != u64::from(k))
            {
                // Another shard's message: draw it all the same, so the mix stays in step.
                let _ = shared.mix.draft(seq as u64, 0, &mut rng);
                continue;
            }
            let at = plan.start + Duration::from_secs_f64(offset);
            // A run stopped by hand releases nothing more; what was released and not sent is
            // `unsubmitted` below.
            if plan.hard_stop.is_cut() || (at > Instant::now() && !plan.hard_stop.sleep_unless_cut(at).await) {
                break;
            }
            let intended_ns = plan.start_ns + (offset * 1e9) as u64;
            let draft = shared.mix.draft(seq as u64, intended_ns, &mut rng);
            shared.counters.generated.fetch_add(per_message, Ordering::Relaxed);
            backlog.push(draft);
        }
        backlog.close();
    }
    for w in workers {
        let _ = w.await;
    }
    let counters = &shared.counters;
    match &shared.source {
        // Anything left was intended but never submitted before the hard stop.
        Source::Open(backlog) => {
            for d in backlog.take_all() {
                for rcpt in shared.mix.recipients(&d) {
                    let mut e = Event::new(now_ns(), shared.builder.id(d.seq), Kind::Unsubmitted);
                    e.rcpt = Some(rcpt);
                    e.intended = Some(d.intended_ns);
                    e.text = Some("not submitted before the run ended".into());
                    let _ = shared.events.send(e);
                    counters.unsubmitted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // A count the hard stop cut short: the rest were asked for and never sent. They were
        // never due at any time, so they are counted without per-message events.
        Source::Closed(c) => {
            let drawn = lock(&c.next).1;
            if let Some(left) = c.count.map(|n| n.saturating_sub(drawn) * per_message) {
                counters.generated.fetch_add(left, Ordering::Relaxed);
                counters.unsubmitted.fetch_add(left, Ordering::Relaxed);
            }
        }
    }
}

async fn worker(index: usize, shared: Arc<Shared>) {
    let Shared {
        mix,
        builder,
        balancer,
        events,
        counters,
        ..
    } = &*shared;
    if balancer.is_empty() {
        return;
    }
    let cfg = ClientConfig {
        helo: "generator.mailsurge.test".into(),
        tls: shared.tls.clone(),
        auth: shared.auth.clone(),
        ..ClientConfig::default()
    };
    // (target index, its address, the balancer epoch it was picked in): re-picked whenever
    // the healthy set changes, so load moves back to a re-admitted node.
    let mut current: Option<(usize, SocketAddr, u64)> = None;
    let mut target = 0usize;
    let mut client: Option<Client> = None;
    // Messages sent on the current connection: the first carries its TLS handshake time.
    let mut on_conn = 0u64;
    while let Some(mut d) = shared.next_draft().await {
        // Only now, with a connection free to send it, does the message take heap space.
        let rcpts = mix.recipients(&d);
        let id = builder.id(d.seq);
        let from = builder.sender(d.tenant);
        let mut last_err = String::new();
        let mut outcome = None;
        let mut tls: Option<u64> = None;
        let mut acked_ns = 0;
        let mut attempts = 0;
        while attempts < MAX_SUBMIT_ATTEMPTS {
            let epoch = balancer.epoch();
            if current.is_none_or(|(_, _, e)| e != epoch) {
                // Waiting for a healthy node does not use up an attempt: with every node
                // down the message waits (its intended time unchanged), it is not refused.
                let Some((i, addr)) = shared.healthy_target(index).await else {
                    last_err = "no healthy MTA node before the run ended".into();
                    break;
                };
                if current.is_some_and(|(j, _, _)| j != i) {
                    client = None;
                }
                current = Some((i, addr, epoch));
                target = i;
            }
            let Some((_, addr, _)) = current else { continue };
            attempts += 1;
            if client.as_ref().is_none_or(|c| !c.is_usable()) {
                client = None;
                match Client::connect(addr, &cfg).await {
                    Ok(c) => {
                        client = Some(c);
                        on_conn = 0;
                    }
                    Err(e) => {
                        last_err = e.to_string();
                        balancer.failed(target, &format!("submission connect: {e}"));
                        current = None;
                        continue;
                    }
                }
            }
            let Some(c) = client.as_mut() else { continue };
            let submitted_ns = now_ns();
            if d.intended_ns == CLOSED_LOOP_INTENDED {
                d.intended_ns = submitted_ns;
            }
            let built = builder.build(&d, &rcpts, submitted_ns);
            match c.send_parts(&from, &rcpts, &built.pieces()).await {
                Ok(out) => {
                    acked_ns = now_ns();
                    outcome = Some((out, submitted_ns));
                    tls = c.tls().map(|t| if on_conn == 0 { t.handshake_us.max(1) } else { 0 });
                    on_conn += 1;
                    break;
                }
                Err(e) => {
                    last_err = e.to_string();
                    client = None;
                    balancer.failed(target, &format!("submission: {e}"));
                    current = None;
                }
            }
        }
        let t = balancer.target(target);
        let (node, region) = t.map_or(("-".to_string(), "-".to_string()), |t| (t.node, t.region));
        for (i, rcpt) in rcpts.iter().enumerate() {
            // The handshake counts once per session: on the first recipient's event only.
            let tls = tls.map(|us| if i == 0 { us } else { 0 });
            // A recipient counts as submitted only if its RCPT and the final reply were 2xx.
            let refusal = match &outcome {
                Some((out, _)) if out.accepted() => out.rcpts.get(i).filter(|r| !r.is_success()).cloned(),
                Some((out, _)) => Some(out.final_reply().clone()),
                None => None,
            };
            let mut e = match (&outcome, refusal) {
                (Some((out, submitted_ns)), None) => {
                    let mut e = Event::new(*submitted_ns, id.clone(), Kind::Submitted);
                    e.code = Some(out.final_reply().code);
                    e.submitted = Some(*submitted_ns);
                    e.acked = Some(acked_ns);
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    e
                }
                (_, refusal) => {
                    let mut e = Event::new(now_ns(), id.clone(), Kind::Rejected);
                    e.code = refusal.as_ref().map(|r| r.code);
                    e.text = Some(refusal.map_or_else(|| format!("submission failed: {last_err}"), |r| r.to_string()));
                    counters.rejected.fetch_add(1, Ordering::Relaxed);
                    e
                }
            };
            e.rcpt = Some(rcpt.clone());
            e.node = Some(node.clone());
            e.region = Some(region.clone());
            e.intended = Some(d.intended_ns);
            if e.event == Kind::Submitted {
                e.tls = tls;
            }
            let _ = events.send(e);
        }
    }
    if let Some(c) = client {
        c.quit().await;
    }
}
