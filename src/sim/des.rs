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

use super::calibrate::Calibration;
use super::provider::{Conn, SimProvider};
use crate::chaos::{Step, Timeline};
use crate::events::{domain_of, Event, Kind, TargetKind};
use crate::mta::pace::Pace;
use crate::mta::responses::Action;
use crate::mta::routing::{Routing, REROUTE_HOLD};
use crate::mta::screen::Screen;
use crate::run::{Compiled, NodeRecord, SpooledRecord};
use crate::scenario::{ChaosKind, KillMode};
use crate::smtp::Reply;
use crate::traffic::balance::{pick_weighted, ADMIT_AFTER, HEARTBEAT_EVERY};
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
            mix_rng: ChaCha8Rng::seed_from_u64(f.seed ^ 0x006d_6978),
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

    fn node_event(&mut self, n: usize, t: u64, id: &str, kind: Kind, rcpt: &str) -> &mut Event {
        let (name, region) = (self.nodes[n].name.clone(), self.nodes[n].region.clone());
        let e = self.emit(t, id.to_string(), kind, Some(rcpt));
        e.node = Some(name);
        e.region = Some(region);
        e
    }

    fn enqueue(&mut self, j: u32) {
        let (n, domain) = {
            let job = &self.jobs[j as usize];
            (job.node as usize, job.domain.clone())
        };
        let limits = &self.c.scenario.file.mta.limits;
        let provider = self.provider_of.get(&domain).copied();
        let dom = self.nodes[n].doms.entry(domain.clone()).or_insert_with(|| Dom {
            pace: Pace::new(limits.domain_connections, limits.domain_rate.map(|r| r.0)),
            ready: VecDeque::new(),
            workers: Vec::new(),
            provider,
        });
        dom.ready.push_back(j);
        self.kick(n, &domain);
    }

    /// Starts attempts while the domain has ready jobs and a free or new worker.
    fn kick(&mut self, n: usize, domain: &str) {
        let t = self.now;
        let vt = self.vt(t);
        loop {
            let node = &mut self.nodes[n];
            if !node.alive || !node.ready {
                return;
            }
            let Some(dom) = node.doms.get_mut(domain) else { return };
            if dom.ready.is_empty() {
                return;
            }
            // Idle workers past WORKER_IDLE have retired and closed their connections (their
            // slots stay, so in-flight attempts keep their worker's index).
            for w in dom
                .workers
                .iter_mut()
                .filter(|w| !w.busy && t.saturating_sub(w.idle_since) > WORKER_IDLE_NS)
            {
                if let (Some(c), Some(p)) = (w.conn.take(), dom.provider) {
                    self.providers[p].close(c);
                }
            }
            // A throttle cuts the workers: only the first `cap` slots take jobs.
            let cap = dom.pace.connections(vt);
            let w = match dom.workers.iter().take(cap).position(|w| !w.busy) {
                Some(w) => w,
                None if dom.workers.len() < cap => {
                    dom.workers.push(Worker {
                        conn: None,
                        idle_since: t,
                        busy: false,
                    });
                    dom.workers.len() - 1
                }
                None => return,
            };
            let Some(j) = dom.ready.pop_front() else { return };
            self.start_attempt(n, domain, w, j);
        }
    }

    fn start_attempt(&mut self, n: usize, domain: &str, w: usize, j: u32) {
        let t = self.now;
        let vt = self.vt(t);
        let f = &self.c.scenario.file;
        let timeout = f.mta.limits.delivery_timeout.0;
        let node = &mut self.nodes[n];
        let job = &mut self.jobs[j as usize];
        if job.pool.is_none() {
            job.pool = node.routing.reroute_hint_at(domain, vt);
        }
        let dom = node.doms.get_mut(domain).expect("kick found it");
        dom.workers[w].busy = true;
        let wait = dom.pace.reserve(vt);
        let provider = dom.provider;
        let conn = dom.workers[w].conn.take();
        let ip = node
            .routing
            .egress_ip(job.pool.as_deref())
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        let added = Duration::from_secs_f64(self.cal.mta_added_ms.sample(&mut self.rng) / 1e3);
        let begin = t + wait.as_nanos() as u64;
        let msg = &self.msgs[job.msg as usize];
        let from = self.builder.sender(msg.tenant);
        let attempt = match provider {
            Some(p) => {
                let stale = conn.filter(|c| c.sent < f.mta.limits.messages_per_connection);
                let at = self.base + Duration::from_nanos(begin) + added;
                self.providers[p].attempt(stale, ip, &from, &job.rcpts, msg.size as usize, at, timeout)
            }
            None => super::provider::Attempt {
                replies: vec![Reply::new(550, Some("5.4.4"), &format!("no route to {domain}")); job.rcpts.len()],
                took: Duration::ZERO,
                conn: None,
            },
        };
        let end = begin + (added + attempt.took).as_nanos() as u64;
        job.worker = Some((w, attempt));
        let epoch = node.epoch;
        self.at(end, Ev::Done { job: j, epoch });
    }

    /// An attempt ended: per-recipient verdicts, retries, and the worker's next job.
    fn done(&mut self, j: u32, epoch: u32) {
        let t = self.now;
        let vt = self.vt(t);
        let n = self.jobs[j as usize].node as usize;
        if self.nodes[n].epoch != epoch {
            return;
        }
        let Some((w, attempt)) = self.jobs[j as usize].worker.take() else {
            return;
        };
        let domain = self.jobs[j as usize].domain.clone();
        if let Some(dom) = self.nodes[n].doms.get_mut(&domain) {
            if let Some(wk) = dom.workers.get_mut(w) {
                wk.busy = false;
                wk.idle_since = t;
                wk.conn = attempt.conn.clone();
            }
        }
        let job = &mut self.jobs[j as usize];
        job.attempt += 1;
        let (msg, attempt_no) = (job.msg, job.attempt);
        let id = self.builder.id(msg as u64);
        let source_ip = attempt.conn.as_ref().map(|c| c.ip.to_string());
        let mut retry: Vec<String> = Vec::new();
        let mut verdict = None;
        let rcpts = self.jobs[j as usize].rcpts.clone();
        let provider = self.nodes[n].doms.get(&domain).and_then(|d| d.provider);
        for (rcpt, reply) in rcpts.iter().zip(&attempt.replies) {
            let v = self.c.responses.classify(reply);
            let kind = match v.action {
                Action::Deliver => Kind::Delivered,
                Action::Bounce => Kind::Bounced,
                _ => Kind::Deferred,
            };
            if kind == Kind::Delivered {
                let m = &self.msgs[msg as usize];
                let (intended, submitted) = (m.intended, m.submitted);
                let (z, pname) = (self.start_ns, provider.map(|p| self.providers[p].name.clone()));
                let e = self.emit(t, id.clone(), Kind::Received, Some(rcpt));
                e.provider = pname;
                e.intended = Some(z + intended);
                e.submitted = Some(z + submitted);
                e.source_ip = source_ip.clone();
            }
            let e = self.node_event(n, t, &id, kind, rcpt);
            e.code = Some(reply.code);
            e.text = Some(reply.to_string());
            e.attempt = Some(attempt_no);
            e.source_ip = source_ip.clone();
            if v.suppress {
                self.nodes[n].screen.suppress(rcpt);
            }
            if kind == Kind::Deferred {
                retry.push(rcpt.clone());
                verdict.get_or_insert((v, reply.clone()));
            } else {
                self.open -= 1;
            }
        }
        match verdict {
            Some((v, last)) => {
                self.jobs[j as usize].rcpts = retry;
                self.schedule_retry(j, &v, &last, vt);
            }
            None => self.job_done(j),
        }
        self.kick(n, &domain);
    }

    fn schedule_retry(&mut self, j: u32, v: &crate::mta::responses::Verdict, last: &Reply, vt: Instant) {
        let t = self.now;
        let r = self.c.scenario.file.mta.retry.clone();
        let job = &self.jobs[j as usize];
        let n = job.node as usize;
        let delay = crate::mta::retry::backoff(&r, job.attempt, &mut self.nodes[n].rng);
        let age = Duration::from_nanos(t.saturating_sub(job.accepted));
        if age + delay > r.give_up.0 {
            let id = self.builder.id(job.msg as u64);
            let (rcpts, attempt) = (job.rcpts.clone(), job.attempt);
            for rcpt in &rcpts {
                let e = self.node_event(n, t, &id, Kind::Expired, rcpt);
                e.code = Some(last.code);
                e.text = Some(format!("gave up after {attempt} attempts: {last}"));
                e.attempt = Some(attempt);
                self.open -= 1;
            }
            self.job_done(j);
            return;
        }
        let domain = job.domain.clone();
        match v.action {
            Action::Reroute => {
                self.jobs[j as usize].pool = v.pool.clone();
                if let Some(pool) = &v.pool {
                    self.nodes[n]
                        .routing
                        .note_reroute_at(&domain, pool, v.hold.unwrap_or(REROUTE_HOLD), vt);
                }
            }
            Action::Throttle => {
                if let Some(d) = self.nodes[n].doms.get_mut(&domain) {
                    d.pace.cut(
                        v.domain_rate.unwrap_or(THROTTLE_FACTOR),
                        v.hold.unwrap_or(THROTTLE_HOLD),
                        vt,
                    );
                }
            }
            _ => {}
        }
        let epoch = self.nodes[n].epoch;
        self.at(t + delay.as_nanos() as u64, Ev::Retry { job: j, epoch });
    }

    fn job_done(&mut self, j: u32) {
        let job = &mut self.jobs[j as usize];
        job.done = true;
        let n = job.node as usize;
        self.nodes[n].held.remove(&j);
    }

    fn heartbeat(&mut self) {
        for n in 0..self.nodes.len() {
            let up = self.nodes[n].alive && self.nodes[n].ready;
            if !up {
                self.evict(n, "heartbeat: Connection refused (os error 111)");
                continue;
            }
            if self.nodes[n].evicted {
                self.nodes[n].passes += 1;
                if self.nodes[n].passes >= ADMIT_AFTER {
                    let node = &mut self.nodes[n];
                    node.evicted = false;
                    node.passes = 0;
                    let (name, region) = (node.name.clone(), node.region.clone());
                    let e = self.emit(self.now, format!("balancer.{name}"), Kind::Admitted, None);
                    e.node = Some(name);
                    e.region = Some(region);
                    e.text = Some("heartbeats pass".into());
                    for w in 0..self.gen.len() {
                        self.gen[w].node = self.pick(w);
                    }
                    self.dispatch();
                }
            }
        }
    }

    fn chaos(&mut self, i: usize) {
        let step = self.chaos[i].clone();
        let t = self.now;
        let nodes: Vec<(String, String)> = self.nodes.iter().map(|n| (n.name.clone(), n.region.clone())).collect();
        let e = crate::chaos::levers::record(&step, self.start_ns + t, |name| {
            nodes.iter().find(|n| n.0 == name).map(|n| n.1.clone())
        });
        self.events.push(e);
        let a = &step.action;
        let covers = |n: &Node| match a.target.kind {
            TargetKind::Region => n.region == a.target.name,
            TargetKind::Node => n.name == a.target.name,
            _ => false,
        };
        match (a.target.kind, a.verb, step.end) {
            (TargetKind::Region | TargetKind::Node, ChaosKind::Kill, false) => {
                for n in 0..self.nodes.len() {
                    if covers(&self.nodes[n]) && self.nodes[n].alive {
                        self.kill_node(n);
                    }
                }
            }
            (TargetKind::Region | TargetKind::Node, ChaosKind::Restore, false)
            | (TargetKind::Region | TargetKind::Node, ChaosKind::Kill, true) => {
                let restart = (self.cal.restart_s * 1e9) as u64;
                for n in 0..self.nodes.len() {
                    if covers(&self.nodes[n]) && !self.nodes[n].alive {
                        self.nodes[n].alive = true;
                        self.at(t + restart, Ev::Ready { node: n as u32 });
                    }
                }
            }
            (TargetKind::Provider, verb, end) => {
                let Some(p) = self.providers.iter_mut().find(|p| p.name == a.target.name) else {
                    return;
                };
                match (verb, end) {
                    (ChaosKind::Kill, false) => p.kill(a.mode.unwrap_or(KillMode::Refuse), a.mx),
                    (ChaosKind::Restore, false) | (ChaosKind::Kill, true) => p.restore(),
                    _ => crate::chaos::levers::overlay(&p.engine, a, end, &self.c.scenario.file.mta.egress_pools),
                }
            }
            _ => {}
        }
    }

    /// SIGKILL: nothing more happens on the node; its queue stays in its spool.
    fn kill_node(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.alive = false;
        node.ready = false;
        node.epoch += 1;
        for dom in std::mem::take(&mut node.doms).into_values() {
            for w in dom.workers {
                if let (Some(c), Some(p)) = (w.conn, dom.provider) {
                    self.providers[p].close(c);
                }
            }
        }
        for &j in &node.held {
            self.jobs[j as usize].worker = None;
        }
    }

    /// A restarted node has recovered its spool: every job it held is queued again.
    fn ready(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if !node.alive {
            return;
        }
        node.ready = true;
        node.ingress_free = self.now;
        for j in node.held.clone() {
            let job = &mut self.jobs[j as usize];
            job.attempt = 0;
            job.pool = None;
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
