//! An agent's outgoing events: the lines of its generator and inboxes (an event channel) and
//! of its MTA nodes (their `events.jsonl`, followed as they grow), batched and published to the
//! run's JetStream stream. A batch counts as sent only once the server acknowledged it, and the
//! count goes into the heartbeat and the stop report, so the coordinator knows when it has read
//! everything an agent sent.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::meter::Meter;
use crate::events::{self, Event};
use crate::run::Follow;

/// Largest batch: well under a stock nats-server's 1 MB payload limit.
const MAX_BATCH: usize = 256 * 1024;

/// How often buffered lines go out when no batch fills.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Publish attempts before an agent gives a batch up (and logs it).
const ATTEMPTS: u32 = 5;

enum Cmd {
    /// Follow another node's events file.
    Watch(PathBuf),
    /// Send everything that is in hand now; answer the number of batches sent so far.
    Flush(oneshot::Sender<u64>),
}

/// The handle the agent keeps.
#[derive(Clone)]
pub struct Outbox {
    cmds: mpsc::UnboundedSender<Cmd>,
    batches: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The receipts' delivery times, when the agent hosts inboxes.
    pub meter: Arc<Mutex<Option<Meter>>>,
}

impl Outbox {
    /// Starts the pump publishing to `subject`; events sent to the returned sender go out.
    pub fn start(js: async_nats::jetstream::Context, subject: String) -> (Outbox, mpsc::UnboundedSender<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let batches = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let meter = Arc::new(Mutex::new(None));
        let pump = Pump {
            js,
            subject,
            files: Vec::new(),
            buf: Vec::with_capacity(MAX_BATCH),
            batches: batches.clone(),
            meter: meter.clone(),
        };
        tokio::spawn(pump.run(rx, cmd_rx));
        (Outbox { cmds, batches, meter }, tx)
    }

    pub fn watch(&self, path: PathBuf) {
        let _ = self.cmds.send(Cmd::Watch(path));
    }

    /// Publishes everything sent or written so far; the batches published in all.
    pub async fn flush(&self) -> u64 {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Flush(tx)).is_err() {
            return self.batches();
        }
        rx.await.unwrap_or_else(|_| self.batches())
    }

    /// Batches the server has acknowledged.
    pub fn batches(&self) -> u64 {
        self.batches.load(std::sync::atomic::Ordering::Acquire)
    }
}

struct Pump {
    js: async_nats::jetstream::Context,
    subject: String,
    files: Vec<Follow>,
    buf: Vec<u8>,
    batches: std::sync::Arc<std::sync::atomic::AtomicU64>,
    meter: Arc<Mutex<Option<Meter>>>,
}

impl Pump {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                e = rx.recv() => match e {
                    Some(e) => self.line(&e).await,
                    None => break,
                },
                _ = tick.tick() => {
                    self.follow().await;
                    self.publish().await;
                }
                c = cmds.recv() => match c {
                    Some(Cmd::Watch(p)) => self.files.push(Follow::new(p)),
                    Some(Cmd::Flush(done)) => {
                        while let Ok(e) = rx.try_recv() {
                            self.line(&e).await;
                        }
                        self.follow().await;
                        self.publish().await;
                        let _ = done.send(self.batches.load(std::sync::atomic::Ordering::Acquire));
                    }
                    None => break,
                },
            }
        }
        self.follow().await;
        self.publish().await;
    }

    async fn line(&mut self, e: &Event) {
        if let Some(m) = crate::sync::lock(&self.meter).as_mut() {
            m.note(e);
        }
        if events::write_line(&mut self.buf, e).is_err() {
            return;
        }
        if self.buf.len() >= MAX_BATCH {
            self.publish().await;
        }
    }

    /// Appends the node files' new lines, publishing whenever a batch fills.
    async fn follow(&mut self) {
        let mut new = Vec::new();
        for f in &mut self.files {
            new.extend(f.read());
        }
        for line in new.split_inclusive(|&b| b == b'\n') {
            self.buf.extend_from_slice(line);
            if self.buf.len() >= MAX_BATCH {
                self.publish().await;
            }
        }
    }

    async fn publish(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let payload = Bytes::from(std::mem::take(&mut self.buf));
        // The batch's number is its message id: a publish retried after a lost acknowledgement
        // is stored once (the stream's duplicate window), so no event is counted twice.
        let id = format!(
            "{}#{}",
            self.subject,
            self.batches.load(std::sync::atomic::Ordering::Acquire) + 1
        );
        for attempt in 1..=ATTEMPTS {
            match self.send(payload.clone(), &id).await {
                Ok(()) => {
                    self.batches.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    return;
                }
                Err(e) if attempt == ATTEMPTS => {
                    tracing::error!("events batch of {} bytes lost: {e:#}", payload.len());
                }
                Err(e) => {
                    tracing::warn!("events batch: {e:#}; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
    }

    async fn send(&self, payload: Bytes, id: &str) -> anyhow::Result<()> {
        let msg = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(id);
        let ack = self
            .js
            .send_publish(self.subject.clone(), msg)
            .await
            .context("publish")?;
        ack.await.context("no acknowledgement")?;
        Ok(())
    }
}
