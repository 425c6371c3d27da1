//! One JetStream stream as a durable message store: publish (answered only once the server
//! acknowledged — and, with the server's sync-always, synced — the write), fetch by sequence,
//! delete. The shared queue's spool backend is built on this; leases (a pull consumer's ack
//! wait) come with it.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
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
/// cluster would ask for three), each message stored once per `Nats-Msg-Id` within two minutes
/// (a publish retried after a lost ack is not stored twice).
pub struct Store {
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
        let js = jetstream::new(client);
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
}
