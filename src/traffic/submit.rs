//! Submission: plays the schedule against SMTP targets over reused connections.
//!
//! One scheduler task releases each message at its intended time into a shared queue; a fixed
//! pool of connection workers takes them from there. When workers fall behind, messages wait in
//! the queue with their intended time unchanged — backpressure is measured, never hidden
//! (the oha/goose approach to coordinated omission).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::message::{Builder, Draft, Mix};
use super::schedule::Schedule;
use crate::events::{now_ns, Event, Kind};
use crate::smtp::{Client, ClientConfig};
use crate::sync::lock;

/// Marks a closed-loop draft: its intended time is set when it is actually sent.
const CLOSED_LOOP_INTENDED: u64 = 0;

/// Attempts per message when the connection fails under it (a new connection each time).
const MAX_SUBMIT_ATTEMPTS: u32 = 3;

/// Where to submit: an MTA node.
#[derive(Debug, Clone)]
pub struct Target {
    pub node: String,
    pub region: String,
    pub addr: SocketAddr,
}

/// Live counters, read by the progress line and the drain check.
#[derive(Debug, Default)]
pub struct Counters {
    pub generated: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub unsubmitted: AtomicU64,
}

/// Everything the generator needs.
/// When messages are released to the connections.
pub enum Arrivals {
    /// Open loop: each message at its intended time, whatever the target's speed.
    Open(Box<Schedule>),
    /// Closed loop (like smtp-source): `count` messages, each sent as soon as a connection is
    /// free; its "intended" time is when it was sent, so there is no queueing to correct for.
    Closed { count: u64 },
}

pub struct Plan {
    pub arrivals: Arrivals,
    pub mix: Mix,
    pub builder: Builder,
    pub seed: u64,
    pub connections: u32,
    pub targets: Vec<Target>,
    /// Wall-clock ns of offset 0 of the schedule.
    pub start_ns: u64,
    /// Monotonic instant of offset 0.
    pub start: Instant,
    /// Stop submitting at this instant; whatever is still queued becomes `unsubmitted`.
    pub hard_stop: Instant,
}

struct Shared {
    queue: Mutex<VecDeque<Draft>>,
    notify: Notify,
    done_scheduling: std::sync::atomic::AtomicBool,
}

/// Runs the whole generation; returns when every message is submitted, rejected or given up.
pub async fn run(plan: Plan, events: mpsc::UnboundedSender<Event>, counters: Arc<Counters>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        notify: Notify::new(),
        done_scheduling: false.into(),
    });
    let builder = Arc::new(plan.builder);
    let targets = Arc::new(plan.targets);
    let mut workers = Vec::new();
    for w in 0..plan.connections.max(1) as usize {
        let (shared, builder, targets, events, counters) = (
            shared.clone(),
            builder.clone(),
            targets.clone(),
            events.clone(),
            counters.clone(),
        );
        let hard_stop = plan.hard_stop;
        workers.push(tokio::spawn(async move {
            worker(w, shared, builder, targets, events, counters, hard_stop).await
        }));
    }

    // The scheduler: release each draft at its intended time (open loop) or all at once.
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed ^ 0x006d_6978);
    match plan.arrivals {
        Arrivals::Open(schedule) => {
            for (seq, offset) in schedule.enumerate() {
                let at = plan.start + Duration::from_secs_f64(offset);
                if at > Instant::now() {
                    tokio::time::sleep_until(at).await;
                }
                let intended_ns = plan.start_ns + (offset * 1e9) as u64;
                let draft = plan.mix.draft(seq as u64, intended_ns, &mut rng);
                counters
                    .generated
                    .fetch_add(draft.rcpts.len() as u64, Ordering::Relaxed);
                lock(&shared.queue).push_back(draft);
                shared.notify.notify_one();
            }
        }
        Arrivals::Closed { count } => {
            for seq in 0..count {
                let draft = plan.mix.draft(seq, CLOSED_LOOP_INTENDED, &mut rng);
                counters
                    .generated
                    .fetch_add(draft.rcpts.len() as u64, Ordering::Relaxed);
                lock(&shared.queue).push_back(draft);
            }
            shared.notify.notify_waiters();
        }
    }
    shared.done_scheduling.store(true, Ordering::Release);
    shared.notify.notify_waiters();
    for w in workers {
        let _ = w.await;
    }
    // Anything left was intended but never submitted before the hard stop.
    let left: Vec<Draft> = lock(&shared.queue).drain(..).collect();
    for d in left {
        for rcpt in &d.rcpts {
            let mut e = Event::new(now_ns(), builder.id(d.seq), Kind::Unsubmitted);
            e.rcpt = Some(rcpt.clone());
            e.intended = Some(d.intended_ns);
            e.text = Some("not submitted before the run ended".into());
            let _ = events.send(e);
            counters.unsubmitted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn next_draft(shared: &Shared, hard_stop: Instant) -> Option<Draft> {
    loop {
        let notified = shared.notify.notified();
        if Instant::now() >= hard_stop {
            return None;
        }
        if let Some(d) = lock(&shared.queue).pop_front() {
            return Some(d);
        }
        if shared.done_scheduling.load(Ordering::Acquire) {
            return None;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(hard_stop) => {}
        }
    }
}

async fn worker(
    index: usize,
    shared: Arc<Shared>,
    builder: Arc<Builder>,
    targets: Arc<Vec<Target>>,
    events: mpsc::UnboundedSender<Event>,
    counters: Arc<Counters>,
    hard_stop: Instant,
) {
    if targets.is_empty() {
        return;
    }
    let cfg = ClientConfig {
        helo: "generator.mailsurge.test".into(),
        ..ClientConfig::default()
    };
    // Spread workers over targets; on failure move to the next one.
    let mut target = index % targets.len();
    let mut client: Option<Client> = None;
    while let Some(mut d) = next_draft(&shared, hard_stop).await {
        let id = builder.id(d.seq);
        let from = builder.sender(d.tenant);
        let mut last_err = String::new();
        let mut outcome = None;
        let mut acked_ns = 0;
        for _ in 0..MAX_SUBMIT_ATTEMPTS {
            if client.as_ref().is_none_or(|c| !c.is_usable()) {
                client = None;
                match Client::connect(targets[target].addr, &cfg).await {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        last_err = e.to_string();
                        target = (target + 1) % targets.len();
                        continue;
                    }
                }
            }
            let Some(c) = client.as_mut() else { continue };
            let submitted_ns = now_ns();
            if d.intended_ns == CLOSED_LOOP_INTENDED {
                d.intended_ns = submitted_ns;
            }
            let body = builder.build(&d, submitted_ns);
            match c.send(&from, &d.rcpts, &body).await {
                Ok(out) => {
                    acked_ns = now_ns();
                    outcome = Some((out, submitted_ns));
                    break;
                }
                Err(e) => {
                    last_err = e.to_string();
                    client = None;
                    target = (target + 1) % targets.len();
                }
            }
        }
        let t = &targets[target];
        for (i, rcpt) in d.rcpts.iter().enumerate() {
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
            e.node = Some(t.node.clone());
            e.region = Some(t.region.clone());
            e.intended = Some(d.intended_ns);
            let _ = events.send(e);
        }
    }
    if let Some(c) = client {
        c.quit().await;
    }
}
