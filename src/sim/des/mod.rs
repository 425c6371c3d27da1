//! The discrete-event model: one event per message step, on virtual time, producing the same
//! events a real run's generator, nodes and inboxes write — so measurement and the report are
//! the run's own code, not a second implementation.
//!
//! What each part does, and where it comes from:
//! - **arrivals**: the run's schedule, mix and seed (`traffic::schedule`, `traffic::message`);
//! - **generator**: `traffic.connections` workers, each bound to a node by the balancer's own
//!   weighted placement (`pick_weighted`); a message waits for the worker idle longest;
//!   dead nodes are evicted on the first refused submission or heartbeat, and admitted again
//!   after two passing heartbeats, as `traffic::balance` does;
//! - **node ingress**: a server of the calibrated service rate; a submission's 250 comes a
//!   calibrated submission time after it was served;
//! - **node delivery**: per destination domain, up to `domain_connections` workers paced by
//!   `mta::pace`, egress addresses from `mta::routing`, every reply classified by the
//!   scenario's response table, retries by `mta::retry::backoff`, throttles, reroutes,
//!   suppression and expiry as `mta::queue` does them; each attempt costs the calibrated
//!   MTA-added time plus the provider's scripted latency;
//! - **providers**: the inbox rule engine on virtual time (`sim::provider`);
//! - **chaos**: the scenario's timeline through the same overlay levers; a killed node keeps
//!   its queue (local spool) until it is restored.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

mod delivery;
mod lifecycle;

use super::calibrate::Calibration;
use super::provider::{Conn, SimProvider};
use crate::chaos::{Step, Timeline};
use crate::events::{domain_of, Event, Kind};
use crate::mta::pace::Pace;
use crate::mta::routing::Routing;
use crate::mta::screen::Screen;
use crate::run::{Compiled, NodeRecord, SpooledRecord};
use crate::traffic::balance::{pick_weighted, HEARTBEAT_EVERY};
use crate::traffic::message::{Builder, Mix};
use crate::traffic::schedule::{RateCurve, Schedule};

/// Idle delivery workers keep their connection this long (`mta::queue::WORKER_IDLE`).
const WORKER_IDLE_NS: u64 = 2_000_000_000;
/// Throttle defaults of the MTA (`mta::queue`).
const THROTTLE_FACTOR: f64 = crate::mta::queue::DEFAULT_THROTTLE_FACTOR;
const THROTTLE_HOLD: Duration = crate::mta::queue::DEFAULT_THROTTLE_HOLD;

/// What the model produced besides its events.
pub struct Output {
    pub nodes: Vec<NodeRecord>,
    pub spooled: Vec<SpooledRecord>,
    /// Virtual ns from offset 0 to the end of the run.
    pub end_ns: u64,
    pub messages: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrive,
    Release { msg: u32 },
    Acked { msg: u32, worker: u32, epoch: u32 },
    Done { job: u32, epoch: u32 },
    Retry { job: u32, epoch: u32 },
    Chaos { step: u32 },
    Heartbeat,
    Ready { node: u32 },
}

struct Msg {
    intended: u64,
    submitted: u64,
    rcpts: Vec<String>,
    size: u32,
    tenant: u32,
}

struct Job {
    msg: u32,
    node: u32,
    domain: String,
    rcpts: Vec<String>,
    attempt: u32,
    pool: Option<String>,
    accepted: u64,
    /// Set while an attempt is in flight: its worker and what it will get.
    worker: Option<(usize, super::provider::Attempt)>,
    done: bool,
}

struct Worker {
    conn: Option<Conn>,
    idle_since: u64,
    busy: bool,
}

struct Dom {
    pace: Pace,
    ready: VecDeque<u32>,
    workers: Vec<Worker>,
    provider: Option<usize>,
}

struct Node {
    name: String,
    region: String,
    weight: f64,
    alive: bool,
    ready: bool,
    /// Bumped by every kill: events of an earlier life are void.
    epoch: u32,
    evicted: bool,
    passes: u32,
    ingress_free: u64,
    routing: Routing,
    screen: Screen,
    rng: ChaCha8Rng,
    doms: BTreeMap<String, Dom>,
    /// Jobs on this node not yet done (its spool), in order.
    held: std::collections::BTreeSet<u32>,
}

struct GenWorker {
    node: Option<usize>,
}

pub struct Model<'a> {
    c: &'a Compiled,
    cal: &'a Calibration,
    start_ns: u64,
    base: Instant,
    now: u64,
    order: u64,
    heap: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    events: Vec<Event>,
    schedule: Schedule,
    mix: Mix,
    mix_rng: ChaCha8Rng,
    builder: Builder,
    next_arrival: Option<u64>,
    seq: u64,
    msgs: Vec<Msg>,
    backlog: VecDeque<u32>,
    idle: VecDeque<usize>,
    gen: Vec<GenWorker>,
    nodes: Vec<Node>,
    jobs: Vec<Job>,
    providers: Vec<SimProvider>,
    provider_of: BTreeMap<String, usize>,
    chaos: Vec<Step>,
    rng: ChaCha8Rng,
    /// Accepted recipients not yet terminal.
    open: u64,
    /// Messages due but not yet released to the workers.
    released: u64,
    /// Chaos steps taken.
    chaos_done: usize,
    service_ns: u64,
}

impl<'a> Model<'a> {
    /// `nodes`: (name, region, weight) of every node; `start_ns` is offset 0 of the schedule.
    pub fn new(
        c: &'a Compiled,
        cal: &'a Calibration,
        run_id: &str,
        nodes: Vec<(String, String, f64)>,
        start_ns: u64,
    ) -> Model<'a> {
        let f = &c.scenario.file;
        let base = Instant::now();
        let pools = f.mta.egress_pools.clone();
        let providers: Vec<SimProvider> = f
            .providers
            .iter()
            .zip(&c.rules)
            .enumerate()
            .map(|(i, (p, rules))| {
                SimProvider::new(
                    &p.name,
                    rules.clone(),
                    pools.clone(),
                    f.seed.wrapping_add(i as u64),
                    p.mx,
                    base,
                )
            })
            .collect();
        let provider_of = f
            .providers
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.domains.iter().map(move |d| (d.to_ascii_lowercase(), i)))
            .collect();
        let nodes: Vec<Node> = nodes
            .into_iter()
            .enumerate()
            .map(|(k, (name, region, weight))| Node {
                name,
                region,
                weight,
                alive: true,
                ready: true,
                epoch: 0,
                evicted: false,
                passes: 0,
                ingress_free: 0,
                routing: Routing::new(&pools, None),
                screen: Screen::new(f.mta.screen.clone()),
                rng: ChaCha8Rng::seed_from_u64(f.seed.wrapping_add(k as u64 + 1)),
                doms: BTreeMap::new(),
                held: Default::default(),
            })
            .collect();
        let conns = f.traffic.connections.max(1) as usize;
        let max_size = match &f.traffic.size {
            crate::scenario::SizeSpec::Fixed(x) => x.0 as usize,
            _ => 1 << 20,
        };
        let mut m = Model {
            c,
            cal,
            start_ns,
            base,
            now: 0,
            order: 0,
            heap: BinaryHeap::new(),
            events: Vec::new(),
            schedule: Schedule::new(RateCurve::new(&f.traffic.rate, f.duration.0), f.traffic.arrival, f.seed),
            mix: Mix::new(&f.traffic),
            mix_rng: crate::traffic::submit::mix_rng(f.seed),
            builder: Builder::new(run_id, max_size),
            next_arrival: None,
            seq: 0,
            msgs: Vec::new(),
            backlog: VecDeque::new(),
            idle: (0..conns).collect(),
            gen: (0..conns).map(|_| GenWorker { node: None }).collect(),
            nodes,
            jobs: Vec::new(),
            providers,
            provider_of,
            chaos: Timeline::new(&c.chaos).steps().to_vec(),
            rng: ChaCha8Rng::seed_from_u64(f.seed ^ 0x0051_4d00),
            open: 0,
            released: 0,
            chaos_done: 0,
            service_ns: (1e9 / cal.node_rate_per_s.max(1e-3)) as u64,
        };
        for w in 0..conns {
            m.gen[w].node = m.pick(w);
        }
        m
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.order += 1;
        self.heap.push(Reverse((t, self.order, ev)));
    }

    fn vt(&self, t: u64) -> Instant {
        self.base + Duration::from_nanos(t)
    }

    fn emit(&mut self, t: u64, id: String, kind: Kind, rcpt: Option<&str>) -> &mut Event {
        let mut e = Event::new(self.start_ns + t, id, kind);
        e.rcpt = rcpt.map(str::to_string);
        self.events.push(e);
        // Invariant: just pushed.
        self.events.last_mut().expect("pushed")
    }

    /// Plays the whole run, handing every event to `sink` as it happens; returns the end state.
    pub fn run(mut self, sink: &mut dyn FnMut(Event)) -> Output {
        let f = &self.c.scenario.file;
        let window = f.duration.0.as_nanos() as u64;
        let hard_stop = window + f.drain.0.as_nanos() as u64;
        self.next_arrival = self.schedule.next().map(|s| (s * 1e9) as u64);
        if let Some(t) = self.next_arrival {
            self.at(t, Ev::Arrive);
        }
        for (i, st) in self.chaos.clone().iter().enumerate() {
            self.at(st.at.as_nanos() as u64, Ev::Chaos { step: i as u32 });
        }
        self.at(HEARTBEAT_EVERY.as_nanos() as u64, Ev::Heartbeat);
        let mut end = hard_stop;
        while let Some(Reverse((t, _, ev))) = self.heap.pop() {
            if t > hard_stop {
                break;
            }
            self.now = t;
            match ev {
                Ev::Arrive => self.arrive(),
                Ev::Release { msg } => {
                    self.released -= 1;
                    self.backlog.push_back(msg);
                    self.dispatch();
                }
                Ev::Acked { msg, worker, epoch } => self.acked(msg, worker as usize, epoch),
                Ev::Done { job, epoch } => self.done(job, epoch),
                Ev::Retry { job, epoch } => {
                    if self.nodes[self.jobs[job as usize].node as usize].epoch == epoch {
                        self.enqueue(job);
                    }
                }
                Ev::Chaos { step } => {
                    self.chaos_done += 1;
                    self.chaos(step as usize);
                }
                Ev::Heartbeat => {
                    self.heartbeat();
                    if t + (HEARTBEAT_EVERY.as_nanos() as u64) <= hard_stop {
                        self.at(t + HEARTBEAT_EVERY.as_nanos() as u64, Ev::Heartbeat);
                    }
                }
                Ev::Ready { node } => self.ready(node as usize),
            }
            self.events.drain(..).for_each(&mut *sink);
            let chaos_left = self.chaos_done < self.chaos.len();
            if t >= window
                && self.next_arrival.is_none()
                && self.released == 0
                && self.backlog.is_empty()
                && self.open == 0
                && !chaos_left
                && self.idle.len() == self.gen.len()
            {
                end = t;
                break;
            }
        }
        let out = self.finish(end);
        self.events.drain(..).for_each(sink);
        out
    }

    /// The next message is due: the generator releases it to its workers (a timer's lateness
    /// after its intended time), and the schedule moves on.
    fn arrive(&mut self) {
        let t = self.now;
        let d = self.mix.draft(self.seq, self.start_ns + t, &mut self.mix_rng);
        self.seq += 1;
        let rcpts = self.mix.recipients(&d);
        self.released += 1;
        self.msgs.push(Msg {
            intended: t,
            submitted: 0,
            rcpts,
            size: d.size,
            tenant: d.tenant,
        });
        self.next_arrival = self.schedule.next().map(|s| (s * 1e9) as u64);
        if let Some(n) = self.next_arrival {
            self.at(n, Ev::Arrive);
        }
        let late = (self.cal.release_ms.sample(&mut self.rng) * 1e6) as u64;
        let msg = (self.msgs.len() - 1) as u32;
        self.at(t + late, Ev::Release { msg });
    }

    /// The node connection worker `w` sends to now.
    fn pick(&self, w: usize) -> Option<usize> {
        pick_weighted(self.nodes.iter().map(|n| (n.weight, !n.evicted)), w, self.gen.len())
    }

    fn evict(&mut self, n: usize, why: &str) {
        let node = &mut self.nodes[n];
        node.passes = 0;
        if node.evicted {
            return;
        }
        node.evicted = true;
        let (name, region) = (node.name.clone(), node.region.clone());
        let e = self.emit(self.now, format!("balancer.{name}"), Kind::Evicted, None);
        e.node = Some(name);
        e.region = Some(region);
        e.text = Some(why.to_string());
        for w in 0..self.gen.len() {
            self.gen[w].node = self.pick(w);
        }
    }

    /// Idle generator workers take backlog messages, oldest first.
    fn dispatch(&mut self) {
        while !self.backlog.is_empty() {
            let Some(&w) = self.idle.front() else { return };
            let n = match self.gen[w].node {
                Some(n) if self.nodes[n].alive && self.nodes[n].ready => n,
                Some(n) => {
                    // A refused connection: evict, and this worker re-picks.
                    self.evict(n, "submission connect: Connection refused (os error 111)");
                    if self.gen[w].node.is_none() {
                        return;
                    }
                    continue;
                }
                None => return,
            };
            self.idle.pop_front();
            let Some(msg) = self.backlog.pop_front() else { return };
            let t = self.now;
            let node = &mut self.nodes[n];
            let served = t.max(node.ingress_free);
            node.ingress_free = served + self.service_ns;
            let submit = (self.cal.submit_ms.sample(&mut self.rng) * 1e6) as u64;
            self.msgs[msg as usize].submitted = t;
            let epoch = self.nodes[n].epoch;
            self.at(
                served + submit,
                Ev::Acked {
                    msg,
                    worker: w as u32,
                    epoch,
                },
            );
        }
    }

    /// A submission's 250 arrived (or its node died first, and it is sent again).
    fn acked(&mut self, msg: u32, w: usize, epoch: u32) {
        let Some(n) = self.gen[w].node else {
            self.backlog.push_front(msg);
            self.idle.push_back(w);
            return;
        };
        if self.nodes[n].epoch != epoch || !self.nodes[n].alive {
            self.evict(n, "submission: connection lost");
            self.backlog.push_front(msg);
            self.idle.push_back(w);
            self.dispatch();
            return;
        }
        let t = self.now;
        let id = self.builder.id(msg as u64);
        let (name, region) = (self.nodes[n].name.clone(), self.nodes[n].region.clone());
        let m = &self.msgs[msg as usize];
        let (intended, submitted, rcpts) = (m.intended, m.submitted, m.rcpts.clone());
        let z = self.start_ns;
        for r in &rcpts {
            let e = self.emit(submitted, id.clone(), Kind::Submitted, Some(r));
            e.code = Some(250);
            e.submitted = Some(z + submitted);
            e.acked = Some(z + t);
            e.node = Some(name.clone());
            e.region = Some(region.clone());
            e.intended = Some(z + intended);
            let e = self.emit(t, id.clone(), Kind::Accepted, Some(r));
            e.code = Some(250);
            e.node = Some(name.clone());
            e.region = Some(region.clone());
        }
        self.open += rcpts.len() as u64;
        self.idle.push_back(w);
        self.queue_message(n, msg, &id, &rcpts);
        self.dispatch();
    }

    /// Screens a fresh message and queues one job per recipient domain (`mta::queue::submit`).
    fn queue_message(&mut self, n: usize, msg: u32, id: &str, rcpts: &[String]) {
        let t = self.now;
        let sender = self.builder.sender(self.msgs[msg as usize].tenant);
        let whole = self.nodes[n].screen.message(&sender, b"From: x\r\n\r\n", self.vt(t));
        let mut by_domain: Vec<(String, Vec<String>)> = Vec::new();
        for r in rcpts {
            if let Some(why) = whole.clone().or_else(|| self.nodes[n].screen.recipient(r)) {
                self.node_event(n, t, id, Kind::Dropped, r).text = Some(why.to_string());
                self.open -= 1;
                continue;
            }
            let d = domain_of(r).to_ascii_lowercase();
            match by_domain.iter_mut().find(|(x, _)| *x == d) {
                Some((_, v)) => v.push(r.clone()),
                None => by_domain.push((d, vec![r.clone()])),
            }
        }
        for (domain, rcpts) in by_domain {
            self.jobs.push(Job {
                msg,
                node: n as u32,
                domain,
                rcpts,
                attempt: 0,
                pool: None,
                accepted: t,
                worker: None,
                done: false,
            });
            let j = (self.jobs.len() - 1) as u32;
            self.nodes[n].held.insert(j);
            self.enqueue(j);
        }
    }

    fn finish(&mut self, end: u64) -> Output {
        // What the schedule released and no worker submitted.
        let left: Vec<u32> = self.backlog.drain(..).collect();
        for msg in left {
            let id = self.builder.id(msg as u64);
            let m = &self.msgs[msg as usize];
            let (intended, rcpts) = (m.intended, m.rcpts.clone());
            let z = self.start_ns;
            for r in &rcpts {
                let e = self.emit(end, id.clone(), Kind::Unsubmitted, Some(r));
                e.intended = Some(z + intended);
                e.text = Some("not submitted before the run ended".into());
            }
        }
        let mut spooled = Vec::new();
        for node in &self.nodes {
            for &j in &node.held {
                let job = &self.jobs[j as usize];
                for r in &job.rcpts {
                    spooled.push(SpooledRecord {
                        msg_id: self.builder.id(job.msg as u64),
                        rcpt: r.clone(),
                        node: node.name.clone(),
                    });
                }
            }
        }
        let nodes = self
            .nodes
            .iter()
            .map(|n| NodeRecord {
                name: n.name.clone(),
                region: n.region.clone(),
                alive: n.alive,
            })
            .collect();
        Output {
            messages: self.msgs.len() as u64,
            nodes,
            spooled,
            end_ns: end,
        }
    }
}
