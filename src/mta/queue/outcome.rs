//! What a delivery attempt's replies do to its job (part of [`super::Queues`]): per-recipient
//! verdicts from the response table become events; failures for good bounce (with a notice to
//! the sender when `dsn` is on); temporary ones retry after the backoff — rerouted, failed
//! over or throttled as the verdict says — or expire past `give_up`; a job done for all its
//! recipients lets go of its spooled message.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Job, Queues, DEFAULT_THROTTLE_FACTOR, DEFAULT_THROTTLE_HOLD};
use crate::events::{now_ns, Event, Kind};
use crate::mta::responses::{Action, Verdict};
use crate::mta::routing::REROUTE_HOLD;
use crate::mta::spool::{Meta, Resume, SpoolId};
use crate::smtp::Reply;
use crate::sync::lock;

impl Queues {
    /// Splits a transaction's outcome into per-recipient results.
    pub(super) fn handle_outcome(self: &Arc<Self>, mut job: Job, out: &crate::smtp::SendOutcome, source_ip: &str) {
        job.attempt += 1;
        let mut retry: Vec<String> = Vec::new();
        let mut retry_verdict: Option<Verdict> = None;
        for (i, rcpt) in job.rcpts.iter().enumerate() {
            let reply = if !out.mail.is_success() {
                &out.mail
            } else if let Some(r) = out.rcpts.get(i).filter(|r| !r.is_success()) {
                r
            } else {
                out.final_reply()
            };
            let v = self.responses.classify(reply);
            if self.finish_rcpts(&job, std::slice::from_ref(rcpt), reply, &v, Some(source_ip)) {
                retry.push(rcpt.clone());
                retry_verdict.get_or_insert(v);
            }
        }
        match retry_verdict {
            Some(v) if !retry.is_empty() => {
                job.rcpts = retry;
                self.schedule_retry(job, &v, out.final_reply().clone());
            }
            _ => self.job_done(&job),
        }
    }

    /// Every recipient of the job failed the same way (connect error, lost connection).
    pub(super) fn attempt_failed_all(self: &Arc<Self>, mut job: Job, reply: &Reply, source_ip: Option<&str>) {
        job.attempt += 1;
        let v = self.responses.classify(reply);
        let rcpts = job.rcpts.clone();
        if self.finish_rcpts(&job, &rcpts, reply, &v, source_ip) {
            self.schedule_retry(job, &v, reply.clone());
        } else {
            self.job_done(&job);
        }
    }

    /// Emits the events for recipients with one verdict; returns true if they must be retried.
    pub(super) fn finish_rcpts(
        self: &Arc<Self>,
        job: &Job,
        rcpts: &[String],
        reply: &Reply,
        v: &Verdict,
        source_ip: Option<&str>,
    ) -> bool {
        let kind = match v.action {
            Action::Deliver => Kind::Delivered,
            Action::Bounce => Kind::Bounced,
            Action::Defer | Action::Throttle | Action::Reroute | Action::Failover => Kind::Deferred,
        };
        if kind == Kind::Bounced {
            self.notify_sender(job, rcpts, reply, "");
        }
        for rcpt in rcpts {
            let mut e = Event::new(now_ns(), job.meta.msg_id.clone(), kind);
            e.rcpt = Some(rcpt.clone());
            e.code = Some(reply.code);
            e.text = Some(reply.to_string());
            e.attempt = Some(job.attempt.max(1));
            e.source_ip = source_ip.map(str::to_string);
            self.events.emit(e);
            if v.suppress {
                self.screen.suppress(rcpt);
            }
        }
        kind == Kind::Deferred
    }

    pub(super) fn schedule_retry(self: &Arc<Self>, mut job: Job, v: &Verdict, last: Reply) {
        let r = &self.cfg.retry;
        let delay = crate::mta::retry::backoff(r, job.attempt, &mut *lock(&self.rng));
        let age = Duration::from_nanos(now_ns().saturating_sub(job.meta.received_ns));
        if age + delay > r.give_up.0 {
            self.notify_sender(&job, &job.rcpts, &last, "4.4.7");
            for rcpt in &job.rcpts {
                let mut e = Event::new(now_ns(), job.meta.msg_id.clone(), Kind::Expired);
                e.rcpt = Some(rcpt.clone());
                e.code = Some(last.code);
                e.text = Some(format!("gave up after {} attempts: {last}", job.attempt));
                e.attempt = Some(job.attempt);
                self.events.emit(e);
            }
            self.job_done(&job);
            return;
        }
        match v.action {
            Action::Reroute => {
                job.pool = v.pool.clone();
                if let Some(pool) = &v.pool {
                    self.routing
                        .note_reroute(&job.domain, pool, v.hold.unwrap_or(REROUTE_HOLD));
                }
            }
            Action::Failover => job.route_idx += 1,
            Action::Throttle => self.throttle(
                &job.domain,
                v.domain_rate.unwrap_or(DEFAULT_THROTTLE_FACTOR),
                v.hold.unwrap_or(DEFAULT_THROTTLE_HOLD),
            ),
            _ => {}
        }
        self.wait_for_retry(job, delay);
    }

    /// Where a job waits for its retry: in a shared queue, handed back until it is due for
    /// whichever node takes it then (here, if that fails: its message is still held); else
    /// parked here, keeping only where its message is — stopping leaves it in the spool,
    /// where a restart recovers it.
    pub(super) fn wait_for_retry(self: &Arc<Self>, job: Job, delay: Duration) {
        if self.spool.shared() {
            let resume = Resume {
                attempt: job.attempt,
                pool: job.pool.clone(),
                route_idx: job.route_idx,
                due_ns: now_ns() + delay.as_nanos() as u64,
            };
            let meta = Meta {
                rcpts: job.rcpts.clone(),
                ..(*job.meta).clone()
            };
            if let Some(stored) = self.spool.defer(meta, job.body.clone(), resume) {
                let me = self.clone();
                tokio::spawn(async move {
                    match stored.await {
                        Ok(Ok(_)) => me.job_done(&job),
                        r => {
                            if let Ok(Err(e)) = r {
                                tracing::warn!(
                                    "cannot hand a deferred job back to the shared queue ({e}); it waits here"
                                );
                            }
                            me.waiting.park(job.park(&me.names), Instant::now() + delay);
                        }
                    }
                });
                return;
            }
        }
        self.waiting.park(job.park(&self.names), Instant::now() + delay);
    }

    /// With `dsn: true`, queues a delivery status notification to the envelope sender for
    /// recipients that failed for good (`status` overrides the reply's enhanced code, e.g.
    /// 4.4.7 for an expiry). Never for the null sender: a bounce is not bounced. The original
    /// stays in the spool (an extra pending count) until the notice itself is
    /// durable, so a crash before that point sends the notice again rather than never.
    pub(super) fn notify_sender(self: &Arc<Self>, job: &Job, rcpts: &[String], reply: &Reply, status: &str) {
        if !self.cfg.dsn || job.meta.from.is_empty() || rcpts.is_empty() {
            return;
        }
        let (meta, body) = crate::mta::notice::bounce(&self.cfg, job, rcpts, reply, status);
        let body = Arc::new(body);
        self.pending.add_one(job.spool_id);
        let stored = self.spool.store(meta.clone(), body.clone());
        let (me, original) = (self.clone(), job.spool_id);
        tokio::spawn(async move {
            match stored.await {
                Ok(Ok(id)) => {
                    me.submit(id, meta, body, false);
                    me.release(original);
                }
                // The original stays spooled: a restart recovers it and tries again.
                Ok(Err(e)) => tracing::warn!("cannot spool a delivery status notification: {e}"),
                Err(_) => tracing::warn!("spool closed before a delivery status notification was stored"),
            }
        });
    }

    /// A job reached a terminal state for all its recipients.
    pub(super) fn job_done(&self, job: &Job) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.release(job.spool_id);
    }

    /// Drops one pending count of a spooled message; the last one removes it from the spool.
    pub(super) fn release(&self, spool_id: SpoolId) {
        if self.pending.release(spool_id) {
            self.remove_from_spool(spool_id);
        }
    }

    pub(super) fn remove_from_spool(&self, id: SpoolId) {
        // Appends 8 bytes to a buffered file: cheap enough for the async context.
        self.spool.remove(id);
    }
}
