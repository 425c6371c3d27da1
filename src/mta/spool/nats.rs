//! The shared queue (SPEC §9, `spool: nats`): every node of a run stores accepted mail in one
//! JetStream stream and every node's delivery takes mail from it, so mail accepted by a node
//! that dies is delivered by the survivors — SendGrid's move from per-node disk queues to a
//! pull-based distributed queue (background/000).
//!
//! - **Store**: one publish per message, envelope in a header, body as payload; it resolves
//!   only after the server's acknowledgement, which the server sends after its sync-always
//!   write (the harness refuses a server without it, [`crate::nats::server`]). While the client
//!   is disconnected a store fails at once: the node answers 4xx at DATA rather than waiting.
//!   A server that dies after its write and before its acknowledgement leaves the node unable
//!   to tell whether the message is stored. Every publish carries a `Nats-Msg-Id` (message id,
//!   envelope and size), so the node sends the same publish again once the server is back, for
//!   up to 20 s: JetStream answers with the stored copy's acknowledgement, or stores it then,
//!   and the reply to the dot (which senders wait minutes for) is a 250 either way. Only a
//!   server away longer gets a 4xx for a message that may be stored; the sender's retry of it
//!   (RFC 5321 §4.2.5) is then answered from the stored copy rather than stored twice — unless
//!   that copy was already delivered and deleted before the server restarted, which loses its
//!   id (a counted duplicate).
//! - **Lease**: a node takes messages from one durable work-queue consumer shared by all nodes,
//!   at most [`MAX_HELD`] at a time, and holds each under the consumer's ack wait, extended
//!   (`+WPI`) every third of it while held. A node that dies stops extending: after one lease
//!   its messages go to the next puller. A node that stops cleanly hands them back at once.
//! - **End**: a terminal state (delivered, bounced, expired, dropped) acknowledges the message,
//!   which a work queue then deletes. Not confirmed by the server: an acknowledgement lost
//!   with a dying server or node means one more delivery — a counted duplicate, never a loss.
//! - **Defer**: the job's remaining recipients and how far they got ([`Resume`]) are
//!   published as a new message due at the retry time, and the old one is acknowledged once
//!   that copy is durable. A node that takes a message not yet due gives it back with a
//!   delayed redelivery (`-NAK` with a delay) for the time left.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::AckKind;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::{Meta, Recovered, Resume, Spool, SpoolId};
use crate::events::now_ns;
use crate::nats::stream::{Store, StreamError};
use crate::sync::lock;

/// How long a taken message stays a node's without being extended: what a survivor waits
/// before it takes over a dead node's messages.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);
/// Most messages one node holds at a time (taken and not yet acknowledged or deferred): what
/// it works on now plus what waits for a connection or a pacing slot. Bounded, so a node never
/// takes more than it can keep leases on, and the rest stays in the stream for the others.
pub const MAX_HELD: usize = 2048;
/// The name every node's puller shares.
const CONSUMER: &str = "delivery";
/// The subject (under the stream's name) messages are published to.
const SUBJECT: &str = "q";
/// The header that carries the envelope.
const META_HEADER: &str = "Mailsurge-Meta";
/// How long one publish waits for the server's acknowledgement.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a publish that was sent but not acknowledged is repeated, waiting for the server to
/// come back, before the node answers 4xx (senders wait minutes for the reply to the dot).
const SETTLE: Duration = Duration::from_secs(20);
/// Most messages asked for in one pull request.
const PULL_BATCH: usize = 256;
/// How long one pull request waits for messages before it is renewed.
const PULL_WAIT: Duration = Duration::from_secs(1);

/// What a stream message carries besides its body.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    #[serde(flatten)]
    meta: Meta,
    /// A deferred job's progress; absent on mail as accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resume: Option<Resume>,
    /// A message the server stored after this (ns since epoch) was answered 4xx at DATA: the
    /// client buffered the publish through a disconnection and sent it late. It is discarded,
    /// never delivered (a refused message must not arrive). 0: no deadline (a deferral).
    #[serde(default)]
    refuse_after: u64,
}

fn decode(headers: &HeaderMap) -> Option<Envelope> {
    serde_json::from_str(headers.get(META_HEADER)?.as_str()).ok()
}

/// The `Nats-Msg-Id` a submission is stored under: the same message (id, sender, recipients,
/// size) submitted again within the stream's two-minute window — a sender's retry after a 4xx
/// whose write did land — is answered with the stored copy instead of a second one. Mail without
/// an id of its own is never deduplicated.
fn dedupe_id(meta: &Meta, size: usize) -> Option<String> {
    use std::hash::{Hash, Hasher};
    if meta.msg_id.is_empty() {
        return None;
    }
    // SipHash with fixed keys: the same key from every node of the run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&meta.msg_id, &meta.from, &meta.rcpts, size).hash(&mut h);
    Some(format!("{:016x}", h.finish()))
}

/// A message this node has taken from the queue, for its delivery queues.
#[derive(Debug)]
pub struct Pulled {
    pub id: SpoolId,
    pub meta: Meta,
    pub body: Arc<Vec<u8>>,
    /// A deferred job's progress; `None` for mail as accepted.
    pub resume: Option<Resume>,
    /// Times the server has handed this stream message out, this one included.
    pub delivered: u32,
    /// An earlier holder's lease ran out without an end (it died, or stopped and handed the
    /// message back): handed out again, and not because it was deferred until now.
    pub taken_over: bool,
}

/// A taken message: what `read` answers, and the handle its lease is kept and ended with.
struct Held {
    meta: Meta,
    body: Bytes,
    acker: Arc<Acker>,
}

/// One node's view of the shared queue.
pub struct NatsSpool {
    store: Store,
    held: Mutex<HashMap<SpoolId, Held>>,
    /// What this node finished lately, for a redelivery whose acknowledgement was lost.
    finished: Mutex<Finished>,
    rt: tokio::runtime::Handle,
}

/// Messages this node acknowledged in the last [`Finished::KEEP`]: an acknowledgement is not
/// confirmed, and one lost with a restarting server hands the message out again — to this node
/// as often as not. Seen here, it is acknowledged again instead of delivered twice. (Handed to
/// another node, it is a counted duplicate: nothing but a confirmed acknowledgement per
/// message, a round trip each, would prevent that.)
#[derive(Default)]
struct Finished {
    seqs: std::collections::HashSet<SpoolId>,
    order: std::collections::VecDeque<(SpoolId, std::time::Instant)>,
}

impl Finished {
    const KEEP: Duration = Duration::from_secs(120);
    const MAX: usize = 1 << 18;

    fn add(&mut self, seq: SpoolId) {
        let now = std::time::Instant::now();
        while let Some(&(old, at)) = self.order.front() {
            if self.order.len() < Self::MAX && now.duration_since(at) < Self::KEEP {
                break;
            }
            self.order.pop_front();
            self.seqs.remove(&old);
        }
        if self.seqs.insert(seq) {
            self.order.push_back((seq, now));
        }
    }
}

impl NatsSpool {
    /// Connects to the server at `url` and opens (or creates) the stream `stream`.
    pub async fn open(url: &str, stream: &str) -> Result<Arc<NatsSpool>, StreamError> {
        Ok(Arc::new(NatsSpool {
            store: Store::open(url, stream).await?,
            held: Mutex::new(HashMap::new()),
            finished: Mutex::new(Finished::default()),
            rt: tokio::runtime::Handle::current(),
        }))
    }

    /// Starts taking messages for this node: joins the shared consumer (leases of `lease`),
    /// then pulls into `tx` and keeps the leases of what it holds until `stopping`.
    pub async fn pull(
        self: &Arc<Self>,
        lease: Duration,
        tx: mpsc::Sender<Pulled>,
        stopping: watch::Receiver<bool>,
    ) -> Result<(), StreamError> {
        let consumer = self.store.work_consumer(CONSUMER, lease).await?;
        tokio::spawn(self.clone().pull_loop(consumer, lease, tx, stopping.clone()));
        tokio::spawn(self.clone().keep_leases(lease));
        Ok(())
    }

    /// Messages held now.
    pub fn held(&self) -> usize {
        lock(&self.held).len()
    }

    /// Gives every held message back for immediate redelivery (a clean stop: the others need
    /// not wait out the leases).
    pub async fn hand_back(&self) {
        let held: Vec<Held> = lock(&self.held).drain().map(|(_, h)| h).collect();
        for h in held {
            let _ = h.acker.ack_with(AckKind::Nak(None)).await;
        }
    }

    /// What is queued in the stream `stream` at `url` now: the end-of-run scan.
    pub async fn queued(url: &str, stream: &str) -> Result<Vec<Meta>, StreamError> {
        let store = Store::open(url, stream).await?;
        Ok(store
            .scan()
            .await?
            .into_iter()
            .filter_map(|(_, h, _)| decode(&h).map(|e| e.meta))
            .collect())
    }

    fn publish(
        &self,
        env: Envelope,
        body: Arc<Vec<u8>>,
        dedupe: Option<String>,
    ) -> oneshot::Receiver<io::Result<SpoolId>> {
        let (tx, rx) = oneshot::channel();
        if !self.store.connected() {
            let _ = tx.send(Err(io::Error::other("the NATS server is not reachable")));
            return rx;
        }
        let mut headers = HeaderMap::new();
        if let Some(id) = dedupe {
            headers.insert("Nats-Msg-Id", id.as_str());
        }
        match serde_json::to_string(&env) {
            Ok(json) => headers.insert(META_HEADER, json.as_str()),
            Err(e) => {
                let _ = tx.send(Err(io::Error::other(e)));
                return rx;
            }
        }
        let payload = Bytes::from(Arc::try_unwrap(body).unwrap_or_else(|b| (*b).clone()));
        let store = self.store.clone();
        let settle = headers.get("Nats-Msg-Id").is_some();
        self.rt.spawn(async move {
            let once = || async {
                match tokio::time::timeout(
                    PUBLISH_TIMEOUT,
                    store.publish(SUBJECT, headers.clone(), payload.clone()),
                )
                .await
                {
                    Ok(Ok(seq)) => Ok(seq),
                    Ok(Err(e)) => Err(io::Error::other(e)),
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the NATS server did not acknowledge the write in time",
                    )),
                }
            };
            let mut r = once().await;
            // Sent and not acknowledged: the server may have stored it and died before its
            // answer. The same publish again (same Nats-Msg-Id) once it is back settles it —
            // the stored copy's ack, or a first store — so the reply waits for that rather
            // than answer 451 for a message that may be delivered.
            let until = tokio::time::Instant::now() + SETTLE;
            while settle && r.is_err() && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if store.connected() {
                    r = once().await;
                }
            }
            let _ = tx.send(r);
        });
        rx
    }

    async fn pull_loop(
        self: Arc<Self>,
        consumer: PullConsumer,
        lease: Duration,
        tx: mpsc::Sender<Pulled>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let mut failing = false;
        while !*stopping.borrow() {
            let room = MAX_HELD.saturating_sub(self.held()).min(tx.capacity());
            if room == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            let batch = consumer
                .batch()
                .max_messages(room.min(PULL_BATCH))
                .expires(PULL_WAIT)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    if !failing {
                        tracing::warn!("cannot pull from the shared queue: {e}; retrying");
                        failing = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = stopping.changed() => {}
                    }
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    m = batch.next() => m,
                    _ = stopping.changed() => return,
                };
                match next {
                    None => break,
                    Some(Ok(m)) => {
                        if failing {
                            tracing::info!("pulling from the shared queue again");
                            failing = false;
                        }
                        if let Some(p) = self.take(m, lease).await {
                            if tx.send(p).await.is_err() {
                                return;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!("pull request ended: {e}");
                        break;
                    }
                }
            }
        }
    }

    /// Holds a delivered stream message, or gives it back (not yet due), or discards it (no
    /// envelope; stored after its refusal).
    ///
    /// A takeover is told from the server's delivery count: mail as accepted is handed out
    /// more than once only when a lease ran out (or a stopping node handed it back); a
    /// deferred job is also handed out once early and given back until due, so for it only a
    /// hand-out a lease or more past its due time is one.
    async fn take(&self, m: async_nats::jetstream::Message, lease: Duration) -> Option<Pulled> {
        let (seq, delivered, published) = match m.info() {
            Ok(i) => (
                i.stream_sequence,
                u32::try_from(i.delivered).unwrap_or(u32::MAX),
                u64::try_from(i.published.unix_timestamp_nanos()).unwrap_or(0),
            ),
            Err(e) => {
                tracing::error!("a shared-queue message without JetStream metadata: {e}");
                return None;
            }
        };
        let (msg, acker) = m.split();
        // Handed out again to the node that has it: finished (its ack was lost) — ack again;
        // still in hand (the server lost its lease state) — keep the newer handle.
        if lock(&self.finished).seqs.contains(&seq) {
            let _ = acker.ack().await;
            return None;
        }
        if let Some(h) = lock(&self.held).get_mut(&seq) {
            h.acker = Arc::new(acker);
            return None;
        }
        let Some(env) = msg.headers.as_ref().and_then(decode) else {
            tracing::error!("shared-queue message #{seq} has no readable {META_HEADER} header: discarded");
            let _ = acker.ack_with(AckKind::Term).await;
            return None;
        };
        if env.refuse_after != 0 && published > env.refuse_after {
            tracing::warn!(
                "shared-queue message #{seq} ({}) was stored after its DATA was answered 4xx: discarded",
                env.meta.msg_id
            );
            let _ = acker.ack_with(AckKind::Term).await;
            return None;
        }
        if let Some(r) = &env.resume {
            let now = now_ns();
            if r.due_ns > now + 1_000_000 {
                let _ = acker
                    .ack_with(AckKind::Nak(Some(Duration::from_nanos(r.due_ns - now))))
                    .await;
                return None;
            }
        }
        let taken_over = delivered > 1
            && env
                .resume
                .as_ref()
                .is_none_or(|r| now_ns() >= r.due_ns + lease.as_nanos() as u64);
        let mut meta = env.meta;
        if meta.msg_id.is_empty() {
            meta.msg_id = format!("{seq:016x}");
        }
        let body = msg.payload;
        lock(&self.held).insert(
            seq,
            Held {
                meta: meta.clone(),
                body: body.clone(),
                acker: Arc::new(acker),
            },
        );
        Some(Pulled {
            id: seq,
            meta,
            body: Arc::new(body.to_vec()),
            resume: env.resume,
            delivered,
            taken_over,
        })
    }

    /// Extends the lease of every held message, every third of a lease, for as long as the
    /// node lives (a stopping node still finishes its in-flight deliveries; it hands the rest
    /// back before it exits).
    async fn keep_leases(self: Arc<Self>, lease: Duration) {
        let every = (lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            let ackers: Vec<Arc<Acker>> = lock(&self.held).values().map(|h| h.acker.clone()).collect();
            for a in ackers {
                let _ = a.ack_with(AckKind::Progress).await;
            }
        }
    }
}

impl Spool for NatsSpool {
    fn store(&self, meta: Meta, body: Arc<Vec<u8>>) -> oneshot::Receiver<io::Result<SpoolId>> {
        // The latest the node may still answer 250: the first publish, the settling, and one
        // last publish begun just before the settling ends.
        let deadline = now_ns() + (2 * PUBLISH_TIMEOUT + SETTLE).as_nanos() as u64;
        let dedupe = dedupe_id(&meta, body.len());
        self.publish(
            Envelope {
                meta,
                resume: None,
                refuse_after: deadline,
            },
            body,
            dedupe,
        )
    }

    fn read(&self, id: SpoolId) -> io::Result<(Meta, Vec<u8>)> {
        lock(&self.held)
            .get(&id)
            .map(|h| (h.meta.clone(), h.body.to_vec()))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("shared-queue message #{id} is not held here"),
                )
            })
    }

    fn remove(&self, id: SpoolId) {
        if let Some(h) = lock(&self.held).remove(&id) {
            lock(&self.finished).add(id);
            self.rt.spawn(async move {
                let _ = h.acker.ack().await;
            });
        }
    }

    fn recover(&self) -> io::Result<Vec<Recovered>> {
        // Nothing is this node's after a restart: what it held comes back through the queue.
        Ok(Vec::new())
    }

    fn shared(&self) -> bool {
        true
    }

    fn defer(&self, meta: Meta, body: Arc<Vec<u8>>, resume: Resume) -> Option<oneshot::Receiver<io::Result<SpoolId>>> {
        // A new copy of the stored message, deduplicated only against itself (a settling
        // repeat), never against the message it continues: its due time makes it unique.
        let dedupe = Some(format!(
            "defer-{}-{}-{}",
            dedupe_id(&meta, body.len()).unwrap_or_default(),
            resume.attempt,
            resume.due_ns
        ));
        Some(self.publish(
            Envelope {
                meta,
                resume: Some(resume),
                refuse_after: 0,
            },
            body,
            dedupe,
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::nats::server::{ENVELOPE_ROOM, MAX_PAYLOAD};
    use crate::scenario::limits::MAX_SHARED_QUEUE_MESSAGE;

    #[test]
    fn the_scenario_limit_is_what_one_publish_carries() {
        assert_eq!(MAX_PAYLOAD - ENVELOPE_ROOM, MAX_SHARED_QUEUE_MESSAGE);
    }
}
