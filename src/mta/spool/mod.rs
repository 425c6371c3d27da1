//! The MTA's durable spool: where an accepted message lives until it is delivered, bounced or
//! expired. `250` is only sent after [`Spool::store`] resolves, i.e. after fsync.
//!
//! Behind a trait (after KumoMTA's `spool` crate: store / remove / recover) so a shared-queue
//! backend (NATS JetStream, SPEC §9) can replace local disk. The local backend is a
//! group-commit segment log ([`log::LogSpool`]): one fdatasync makes a whole batch durable, so
//! throughput does not collapse to one fsync per message.

pub mod log;
pub mod nats;

use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use log::LogSpool;
pub use nats::NatsSpool;

/// A spooled message's identity in one spool, and where it is: segment number in the high 24
/// bits, the record's byte offset in that segment in the low 40. So reading a message back
/// needs no index in memory.
pub type SpoolId = u64;

/// The envelope and identity kept beside the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// `X-Mailsurge-Id`, else `Message-ID`, else the spool id: what events are keyed on.
    pub msg_id: String,
    pub from: String,
    pub rcpts: Vec<String>,
    /// When the node accepted it (ns since epoch); retries give up relative to this.
    pub received_ns: u64,
}

/// How far a deferred job has got, kept with it while it waits in a shared queue (a local
/// spool keeps this in the node's memory instead): whichever node takes it next goes on from
/// here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    /// Attempts made so far (backoff and expiry go on from it).
    pub attempt: u32,
    /// Egress pool after a `reroute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Index into the domain's route list after a `failover`.
    #[serde(default)]
    pub route_idx: usize,
    /// Not to be attempted before this (ns since epoch).
    pub due_ns: u64,
}

/// A message found in the spool at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    pub id: SpoolId,
    pub meta: Meta,
    pub body: Vec<u8>,
}

/// Whether a failed [`Spool::read`] will fail the same way every time: a record that does not
/// decode, is cut short, or whose segment is gone. Retrying such a message is a busy loop over
/// mail that can never be sent (Postfix moves such files to its `corrupt` queue); anything else
/// — EIO, EMFILE, ENOMEM — may pass, and is tried again.
pub fn read_is_permanent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::NotFound
    )
}

/// Durable message storage.
pub trait Spool: Send + Sync + 'static {
    /// Queues the message for the next commit; the receiver resolves once it is durable.
    fn store(&self, meta: Meta, body: Arc<Vec<u8>>) -> oneshot::Receiver<io::Result<SpoolId>>;
    /// Reads a stored message back, envelope and body (delivery reads it here at each attempt,
    /// so queued mail costs no memory for either).
    fn read(&self, id: SpoolId) -> io::Result<(Meta, Vec<u8>)>;
    /// Forgets a message that reached a terminal state. Not fsynced: if the removal is lost in
    /// a crash the message is delivered again — a countable duplicate, never a loss.
    fn remove(&self, id: SpoolId);
    /// Everything stored and not removed, for restart recovery (call once, at start).
    fn recover(&self) -> io::Result<Vec<Recovered>>;
    /// Whether stored messages are handed out by the spool to whichever node pulls them (a
    /// shared queue), instead of being queued by the node that stored them.
    fn shared(&self) -> bool {
        false
    }
    /// Hands a deferred job (its envelope narrowed to its recipients) back to the spool until
    /// `resume.due_ns`; the receiver resolves once that copy is durable, and the caller then
    /// lets go of its own. `None`: the spool has no such place (local disk), and the node
    /// keeps the job waiting in memory.
    fn defer(
        &self,
        _meta: Meta,
        _body: Arc<Vec<u8>>,
        _resume: Resume,
    ) -> Option<oneshot::Receiver<io::Result<SpoolId>>> {
        None
    }
}
