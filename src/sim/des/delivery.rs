//! Delivery on a node of the model: per-domain queues and workers, one attempt at a time
//! through the provider's engine, and what each reply does (`mta::queue`'s rules).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::{Dom, Ev, Model, Worker, THROTTLE_FACTOR, THROTTLE_HOLD, WORKER_IDLE_NS};
use crate::events::{Event, Kind};
use crate::mta::pace::Pace;
use crate::mta::responses::Action;
use crate::mta::routing::REROUTE_HOLD;
use crate::smtp::Reply;

impl Model<'_> {
    pub(super) fn node_event(&mut self, n: usize, t: u64, id: &str, kind: Kind, rcpt: &str) -> &mut Event {
        let (name, region) = (self.nodes[n].name.clone(), self.nodes[n].region.clone());
        let e = self.emit(t, id.to_string(), kind, Some(rcpt));
        e.node = Some(name);
        e.region = Some(region);
        e
    }

    pub(super) fn enqueue(&mut self, j: u32) {
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
    pub(super) fn kick(&mut self, n: usize, domain: &str) {
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

    pub(super) fn start_attempt(&mut self, n: usize, domain: &str, w: usize, j: u32) {
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
            None => crate::sim::provider::Attempt {
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
    pub(super) fn done(&mut self, j: u32, epoch: u32) {
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

    pub(super) fn schedule_retry(&mut self, j: u32, v: &crate::mta::responses::Verdict, last: &Reply, vt: Instant) {
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

    pub(super) fn job_done(&mut self, j: u32) {
        let job = &mut self.jobs[j as usize];
        job.done = true;
        let n = job.node as usize;
        self.nodes[n].held.remove(&j);
    }
}
