//! Per-destination delivery queues and the workers that drain them (the `qmgr` + `smtp` of
//! Postfix in one place): each domain gets a ready queue and up to
//! `limits.domain_connections` workers, each holding one reused outbound connection bound to an
//! egress-pool source address. Replies are classified by the response table
//! ([`super::responses`]) and turned into events, retries or terminal states.
//!
//! Strategies (as Postfix's qmgr header documents its own):
//! - a worker is started when a job is queued and no idle worker can take it, up to the limit;
//!   idle workers keep their connection for [`WORKER_IDLE`] and then close it;
//! - retries back off exponentially with jitter; a message whose next retry would fall past
//!   `give_up` (measured from acceptance) expires instead;
//! - `reroute` switches the job's egress pool, `failover` moves to the domain's next route
//!   address; both retry after the normal backoff. `throttle` also cuts the domain's
//!   connections and rate by `domain_rate` for `for` ([`super::pace`]), then retries;
//! - egress pools can cap their outbound connections over all domains (`pool_connections`).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::config::NodeConfig;
use super::eventlog::EventLog;
// `Job` lives in `job.rs` (shared with `notice.rs`); this stays its public path.
pub use super::job::Job;
use super::job::{Names, Parked};
use super::pace::Pace;
use super::pending::Pending;
use super::responses::ResponseTable;
use super::retry::Waiting;
use super::routing::Routing;
use super::screen::Screen;
use super::spool::{self, Meta, Resume, Spool, SpoolId};
use crate::events::{now_ns, Event, Kind};
use crate::smtp::client::ClientTls;
use crate::smtp::{Client, ClientConfig, ClientError, Reply};
use crate::sync::lock;

mod outcome;

/// A `throttle` rule without `domain_rate:` halves the domain's pace...
pub const DEFAULT_THROTTLE_FACTOR: f64 = 0.5;
/// ...for this long without `for:`.
pub const DEFAULT_THROTTLE_HOLD: Duration = Duration::from_secs(30);

/// How long an idle worker keeps its outbound connection before closing it.
pub const WORKER_IDLE: Duration = Duration::from_secs(2);

/// An outbound connection and what it is bound to.
struct Conn {
    client: Client,
    addr: SocketAddr,
    src: Option<IpAddr>,
    /// Messages sent on it, for recycling.
    sent: u32,
    /// Opened under required (verified) TLS: only such a connection may carry mail for a domain
    /// that requires it — an MX shared with a domain that does not must not lend it an
    /// unverified one.
    verified: bool,
    /// The egress pool's connection slot, released when the connection is dropped.
    _slot: Option<OwnedSemaphorePermit>,
}

struct DomainState {
    ready: VecDeque<Parked>,
    workers: usize,
    idle: usize,
    notify: Arc<Notify>,
    pace: Pace,
}

/// The queue manager of one node.
pub struct Queues {
    cfg: Arc<NodeConfig>,
    responses: ResponseTable,
    spool: Arc<dyn Spool>,
    events: Arc<EventLog>,
    client: ClientConfig,
    /// STARTTLS toward providers, per domain.
    tls: super::egress_tls::EgressTls,
    domains: Mutex<HashMap<String, DomainState>>,
    /// Outstanding jobs per spooled message; after the last the record leaves the spool.
    pending: Pending,
    screen: Screen,
    rng: Mutex<ChaCha8Rng>,
    stopping: watch::Receiver<bool>,
    /// Jobs queued or in flight or waiting for a retry.
    live: AtomicUsize,
    /// Jobs a worker is sending right now.
    busy: AtomicUsize,
    /// Connection slots per egress pool (absent: unlimited).
    pool_slots: HashMap<String, Arc<Semaphore>>,
    /// Send pacing per egress pool (rate only; its connections are `pool_slots`).
    pool_paces: HashMap<String, Mutex<Pace>>,
    /// Where mail goes: MX choice, egress pools and addresses, remembered reroutes.
    routing: Routing,
    /// Jobs waiting for their next attempt (one heap and one task for all of them).
    waiting: Waiting,
    /// Domain and pool names of parked jobs.
    names: Names,
    /// Spool reads failed in a row (transient errors; the retry delay doubles with each).
    read_failures: AtomicU32,
}

impl Queues {
    pub fn new(
        cfg: Arc<NodeConfig>,
        responses: ResponseTable,
        spool: Arc<dyn Spool>,
        events: Arc<EventLog>,
        stopping: watch::Receiver<bool>,
        tls: super::egress_tls::EgressTls,
    ) -> Arc<Queues> {
        let t = cfg.limits.delivery_timeout.0;
        let client = ClientConfig {
            helo: format!("{}.mailsurge.test", cfg.node),
            connect_timeout: t,
            command_timeout: t,
            data_timeout: t,
            ..ClientConfig::default()
        };
        let seed = cfg.seed;
        let screen = Screen::new(cfg.screen.clone());
        let pool_slots = match cfg.limits.pool_connections {
            0 => HashMap::new(),
            n => cfg
                .egress_pools
                .keys()
                .map(|p| (p.clone(), Arc::new(Semaphore::new(n))))
                .collect(),
        };
        let pool_paces = match cfg.limits.pool_rate {
            Some(r) => cfg
                .egress_pools
                .keys()
                .map(|p| (p.clone(), Mutex::new(Pace::new(usize::MAX, Some(r.0)))))
                .collect(),
            None => HashMap::new(),
        };
        let routing = Routing::new(&cfg.egress_pools, cfg.default_pool.clone());
        let q = Arc::new(Queues {
            cfg,
            responses,
            spool,
            events,
            client,
            tls,
            domains: Mutex::new(HashMap::new()),
            pending: Pending::default(),
            screen,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            stopping,
            live: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            pool_slots,
            pool_paces,
            routing,
            waiting: Waiting::default(),
            names: Names::default(),
            read_failures: AtomicU32::new(0),
        });
        // The one retry timer: due jobs go back to their domain queues until the node stops.
        let me = q.clone();
        let stopping = q.stopping.clone();
        tokio::spawn(async move { me.waiting.run(stopping, |job| me.enqueue(job)).await });
        q
    }

    /// Jobs not yet finished (queued, in flight or waiting to retry).
    pub fn live_jobs(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Jobs being sent by a worker right now.
    pub fn in_flight(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// Queues a message: one job per recipient domain. A `fresh` message (just accepted, not
    /// recovered from the spool) is screened first; drops become `dropped` events.
    pub fn submit(self: &Arc<Self>, spool_id: SpoolId, meta: Meta, body: Arc<Vec<u8>>, fresh: bool) {
        let meta = Arc::new(meta);
        let whole = if fresh {
            self.screen.message(&meta.from, &body, Instant::now())
        } else {
            None
        };
        let mut by_domain: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, rcpt) in meta.rcpts.iter().enumerate() {
            if let Some(reason) = whole.clone().or_else(|| self.screen.recipient(rcpt)) {
                let mut e = Event::new(now_ns(), meta.msg_id.clone(), Kind::Dropped);
                e.rcpt = Some(rcpt.clone());
                e.text = Some(reason.to_string());
                self.events.emit(e);
                continue;
            }
            let domain = crate::events::domain_of(rcpt).to_ascii_lowercase();
            match by_domain.iter_mut().find(|(d, _)| *d == domain) {
                Some((_, v)) => v.push(i),
                None => by_domain.push((domain, vec![i])),
            }
        }
        if by_domain.is_empty() {
            self.remove_from_spool(spool_id);
            return;
        }
        self.pending.split(spool_id, by_domain.len());
        for (domain, rcpts) in by_domain {
            self.live.fetch_add(1, Ordering::Relaxed);
            self.enqueue(Parked::new(spool_id, rcpts, &domain, &self.names));
        }
    }

    /// Queues a deferred job taken from a shared queue where it left off: its message's
    /// recipients are the job's, all at one domain.
    pub fn resume(self: &Arc<Self>, spool_id: SpoolId, meta: Meta, body: Arc<Vec<u8>>, r: Resume) {
        let Some(first) = meta.rcpts.first() else {
            self.remove_from_spool(spool_id);
            return;
        };
        let job = Job {
            spool_id,
            domain: crate::events::domain_of(first).to_ascii_lowercase(),
            rcpts: meta.rcpts.clone(),
            meta: Arc::new(meta),
            body,
            attempt: r.attempt,
            pool: r.pool,
            route_idx: r.route_idx,
        };
        self.live.fetch_add(1, Ordering::Relaxed);
        self.enqueue(job.park(&self.names));
    }

    fn enqueue(self: &Arc<Self>, job: Parked) {
        let domain = job.domain(&self.names).to_string();
        let spawn = {
            let mut map = lock(&self.domains);
            let st = map.entry(domain.clone()).or_insert_with(|| self.domain_state());
            st.ready.push_back(job);
            st.notify.notify_one();
            let spawn = st.idle < st.ready.len() && st.workers < st.pace.connections(Instant::now());
            if spawn {
                st.workers += 1;
            }
            spawn
        };
        if spawn {
            let me = self.clone();
            tokio::spawn(async move { me.worker(domain).await });
        }
    }

    /// Next job for a domain's worker, or `None` when idle too long or stopping (the worker
    /// count is decremented under the same lock, so a job queued meanwhile starts a new worker).
    async fn next_job(&self, domain: &str) -> Option<Parked> {
        let deadline = tokio::time::Instant::now() + WORKER_IDLE;
        loop {
            let notify = {
                let mut map = lock(&self.domains);
                let st = map.entry(domain.to_string()).or_insert_with(|| self.domain_state());
                // Stopping, or more workers than a throttled domain now allows: retire.
                if *self.stopping.borrow() || st.workers > st.pace.connections(Instant::now()) {
                    st.workers -= 1;
                    return None;
                }
                if let Some(j) = st.ready.pop_front() {
                    return Some(j);
                }
                if tokio::time::Instant::now() >= deadline {
                    st.workers -= 1;
                    return None;
                }
                st.idle += 1;
                st.notify.clone()
            };
            let mut stopping = self.stopping.clone();
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = stopping.changed() => {}
            }
            if let Some(st) = lock(&self.domains).get_mut(domain) {
                st.idle -= 1;
            }
        }
    }

    async fn worker(self: Arc<Self>, domain: String) {
        let mut conn: Option<Conn> = None;
        while let Some(parked) = self.next_job(&domain).await {
            let Some(job) = self.unpark(parked) else { continue };
            self.busy.fetch_add(1, Ordering::Relaxed);
            conn = self.attempt(job, conn).await;
            self.busy.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(c) = conn {
            c.client.quit().await;
        }
    }

    /// The job in hand, read back from the spool. A record that can never be read is set
    /// aside: left in the spool (the run's accounting then finds it, or counts it lost), never
    /// retried. Any other read error is tried again after a delay that doubles with each
    /// failure in a row, up to the retry schedule's longest delay.
    fn unpark(&self, p: Parked) -> Option<Job> {
        match self.spool.read(p.spool_id) {
            Ok((meta, body)) => {
                self.read_failures.store(0, Ordering::Relaxed);
                Some(p.unpark(&self.names, meta, body))
            }
            Err(e) if spool::read_is_permanent(&e) => {
                tracing::error!(
                    "spooled message {:x} cannot be read ({e}): set aside in the spool, not tried again",
                    p.spool_id
                );
                self.live.fetch_sub(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                let n = self.read_failures.fetch_add(1, Ordering::Relaxed).min(16);
                let r = &self.cfg.retry;
                let delay = r.initial.0.saturating_mul(1 << n).min(r.max_delay.0.max(r.initial.0));
                tracing::warn!(
                    "cannot read spooled message {:x}: {e}; trying again in {delay:?}",
                    p.spool_id
                );
                self.waiting.park(p, Instant::now() + delay);
                None
            }
        }
    }

    fn domain_state(&self) -> DomainState {
        let l = &self.cfg.limits;
        DomainState {
            ready: VecDeque::new(),
            workers: 0,
            idle: 0,
            notify: Arc::new(Notify::new()),
            pace: Pace::new(l.domain_connections, l.domain_rate.map(|r| r.0)),
        }
    }

    /// Cuts a domain's pacing after a `throttle` verdict.
    fn throttle(&self, domain: &str, factor: f64, hold: Duration) {
        let mut map = lock(&self.domains);
        let st = map.entry(domain.to_string()).or_insert_with(|| self.domain_state());
        if st.pace.cut(factor, hold, Instant::now()) {
            tracing::info!("throttling {domain}: x{factor} for {hold:?}");
        }
    }

    /// Waits for the next send slot under the domain's and the egress pool's rate limits.
    async fn pace(&self, domain: &str, pool: Option<&str>) {
        let now = Instant::now();
        let domain_wait = lock(&self.domains)
            .get_mut(domain)
            .map_or(Duration::ZERO, |st| st.pace.reserve(now));
        let pool_wait = pool
            .and_then(|p| self.pool_paces.get(p))
            .map_or(Duration::ZERO, |p| lock(p).reserve(now));
        let wait = domain_wait.max(pool_wait);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// One delivery attempt of a job, reusing `conn` when it goes to the same place.
    async fn attempt(self: &Arc<Self>, mut job: Job, mut conn: Option<Conn>) -> Option<Conn> {
        let domain = job.domain.clone();
        if job.pool.is_none() {
            job.pool = self.routing.reroute_hint(&domain);
        }
        let cfg = self.cfg.clone();
        let Some(addrs) = cfg.route(&domain) else {
            let r = Reply::new(550, Some("5.4.4"), &format!("no route to {domain}"));
            self.finish_rcpts(&job, &job.rcpts, &r, &self.responses.classify(&r), None);
            self.job_done(&job);
            return conn;
        };
        let src = self.routing.egress_ip(job.pool.as_deref());
        let tls = self.tls.for_domain(&domain);
        let must_verify = matches!(tls, ClientTls::Required(_));
        // MX hosts in order from the job's route, skipping hosts that just refused: like
        // Postfix, one attempt walks down the MX list before it counts as failed.
        let mut tries = 0;
        let addr = loop {
            tries += 1;
            let addr = self.routing.pick_route(addrs, job.route_idx);
            let reuse = matches!(&conn, Some(c) if c.client.is_usable() && c.addr == addr && c.src == src
                && c.sent < self.cfg.limits.messages_per_connection && (c.verified || !must_verify));
            if reuse {
                break addr;
            }
            if let Some(c) = conn.take() {
                c.client.quit().await;
            }
            let slot = match self
                .routing
                .pool_name(job.pool.as_deref())
                .and_then(|p| self.pool_slots.get(p))
            {
                // acquire_owned only fails on a closed semaphore, and these are never closed.
                Some(sem) => sem.clone().acquire_owned().await.ok(),
                None => None,
            };
            let mut cfg = ClientConfig {
                source_ip: src,
                tls: tls.clone(),
                ..self.client.clone()
            };
            let mut connected = Client::connect(addr, &cfg).await;
            if matches!(
                (&connected, &cfg.tls),
                (Err(ClientError::Tls(_)), ClientTls::Opportunistic(_))
            ) {
                // Opportunistic TLS that failed falls back to plaintext on a new connection,
                // as Postfix's `may` does: encryption was never promised.
                cfg.tls = ClientTls::Off;
                connected = Client::connect(addr, &cfg).await;
            }
            match connected {
                Ok(client) => {
                    conn = Some(Conn {
                        client,
                        addr,
                        src,
                        sent: 0,
                        verified: must_verify,
                        _slot: slot,
                    });
                    break addr;
                }
                Err(e) => {
                    // A host that refuses the connection or refuses service in its greeting
                    // (4xx/5xx, like Postfix's smtp_skip_4xx/5xx_greeting) is skipped: the
                    // attempt goes on down the MX list (RFC 5321 §5.1).
                    self.routing.mark_down(addr);
                    if tries < addrs.len() && self.routing.pick_route(addrs, job.route_idx) != addr {
                        continue;
                    }
                    let r = match e {
                        ClientError::Greeting(r) => r,
                        e @ ClientError::Tls(_) => super::egress_tls::EgressTls::failure(&domain, &e),
                        e => Reply::new(451, Some("4.4.1"), &format!("cannot connect to {addr}: {e}")),
                    };
                    self.attempt_failed_all(job, &r, None);
                    return None;
                }
            }
        };
        self.pace(&domain, self.routing.pool_name(job.pool.as_deref())).await;
        let Some(c) = conn.as_mut() else {
            return None; // invariant: set just above
        };
        c.sent += 1;
        let client = &mut c.client;
        let source_ip = client.local_addr().ip().to_string();
        match client.send(&job.meta.from, &job.rcpts, &job.body).await {
            Ok(out) => self.handle_outcome(job, &out, &source_ip),
            Err(e) => {
                conn = None;
                let r = Reply::new(451, Some("4.4.2"), &format!("connection to {addr} lost: {e}"));
                self.attempt_failed_all(job, &r, Some(&source_ip));
            }
        }
        conn
    }
}
