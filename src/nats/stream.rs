//! One JetStream stream as a durable message store: publish (answered only once the server
//! acknowledged — and, with the server's sync-always, synced — the write), fetch by sequence,
//! delete. The shared queue's spool backend is built on this; leases (a pull consumer's ack
//! wait) come with it.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use bytes::Bytes;

use super::server::MAX_PAYLOAD;

#[derive(Debug, thiserror::Error)]
#[error("NATS {what}: {why}")]
pub struct StreamError {
    what: String,
    why: String,
}

fn err(what: impl Into<String>) -> impl FnOnce(String) -> StreamError {
    let what = what.into();
    move |why| StreamError { what, why }
}

/// A stream whose subjects are `<name>.>`, kept on disk, one replica (a single server; a
/// cluster would ask for three), messages up to the server's `MAX_PAYLOAD` (32 MiB), each
/// stored once per `Nats-Msg-Id` within two minutes
/// (a publish retried after a lost ack is not stored twice). Cloning shares the connection.
#[derive(Clone)]
pub struct Store {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    name: String,
}

impl Store {
    /// Connects to `url` and opens (or creates) the stream `name`.
    pub async fn open(url: &str, name: &str) -> Result<Store, StreamError> {
        let client = async_nats::ConnectOptions::new()
            .name("mailsurge")
            .connect(url)
            .await
            .map_err(|e| err(format!("connect {url}"))(e.to_string()))?;
        let js = jetstream::new(client.clone());
        let stream = js
            .get_or_create_stream(stream::Config {
                name: name.to_string(),
                subjects: vec![format!("{name}.>")],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::WorkQueue,
                num_replicas: 1,
                max_message_size: i32::try_from(MAX_PAYLOAD).unwrap_or(i32::MAX),
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| err(format!("stream {name}"))(e.to_string()))?;
        Ok(Store {
            client,
            js,
            stream,
            name: name.to_string(),
        })
    }

    /// Stores `payload` under `<name>.<subject>`; returns its sequence once the server has
    /// acknowledged it.
    pub async fn publish(&self, subject: &str, headers: HeaderMap, payload: Bytes) -> Result<u64, StreamError> {
        let subject = format!("{}.{subject}", self.name);
        let ack = self
            .js
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(|e| err(format!("publish {subject}"))(e.to_string()))?
            .await
            .map_err(|e| err(format!("publish ack {subject}"))(e.to_string()))?;
        Ok(ack.sequence)
    }

    /// The message stored at `seq`: its headers and payload.
    pub async fn get(&self, seq: u64) -> Result<(HeaderMap, Bytes), StreamError> {
        let m = self
            .stream
            .get_raw_message(seq)
            .await
            .map_err(|e| err(format!("get {}#{seq}", self.name))(e.to_string()))?;
        Ok((m.headers, m.payload))
    }

    /// Forgets the message at `seq`.
    pub async fn delete(&self, seq: u64) -> Result<(), StreamError> {
        self.stream
            .delete_message(seq)
            .await
            .map(|_| ())
            .map_err(|e| err(format!("delete {}#{seq}", self.name))(e.to_string()))
    }

    /// Whether the client is connected now. While the server is away the client queues
    /// publishes and sends them after it reconnects, so a caller that must answer at once (an
    /// SMTP DATA) asks here first instead of waiting for an acknowledgement that may come late.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The stream's durable work-queue consumer `name` (created if absent): every message is
    /// handed to one puller at a time, under a lease of `ack_wait` that the puller extends
    /// while it works and ends with an ack; a lease that runs out hands the message to the
    /// next puller. Every client that opens the same name shares its queue.
    pub async fn work_consumer(&self, name: &str, ack_wait: Duration) -> Result<consumer::PullConsumer, StreamError> {
        self.stream
            .get_or_create_consumer(
                name,
                consumer::pull::Config {
                    durable_name: Some(name.to_string()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait,
                    // Redelivered until acknowledged: giving up is the MTA's retry schedule.
                    max_deliver: -1,
                    max_ack_pending: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| err(format!("consumer {name} of {}", self.name))(e.to_string()))
    }

    /// Every message the stream holds now (a work queue holds what is not yet acknowledged),
    /// oldest first: sequence, headers, payload. For the end-of-run scan of what is queued.
    pub async fn scan(&self) -> Result<Vec<(u64, HeaderMap, Bytes)>, StreamError> {
        let mut out = Vec::new();
        let mut next = 1;
        loop {
            match self
                .stream
                .get_first_raw_message_by_subject(format!("{}.>", self.name), next)
                .await
            {
                Ok(m) => {
                    next = m.sequence + 1;
                    out.push((m.sequence, m.headers, m.payload));
                }
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => return Ok(out),
                Err(e) => return Err(err(format!("scan {}", self.name))(e.to_string())),
            }
        }
    }
}
