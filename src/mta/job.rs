//! [`Job`]: one unit of delivery work, a spooled message's recipients at one domain.
//!
//! Its own file because two files need it and one of them needs the other: the queue
//! (`queue.rs`) creates, sends and retries jobs and calls `notice.rs` to build a bounce, and
//! the bounce is built from a job. Defined in `queue.rs`, it made `notice.rs` import the file
//! that imports it. Its public path stays `crate::mta::queue::Job` (a re-export).

use std::sync::Arc;

use super::spool::{Meta, SpoolId};

/// One delivery job: a spooled message's recipients at one domain.
#[derive(Debug, Clone)]
pub struct Job {
    pub spool_id: SpoolId,
    pub meta: Arc<Meta>,
    /// The message, only while an attempt is under way: a queued or waiting job holds none
    /// (delivery reads it back from the spool), so a deep queue costs no memory for bodies.
    pub body: Option<Arc<Vec<u8>>>,
    pub domain: String,
    pub rcpts: Vec<String>,
    /// Attempts made so far.
    pub attempt: u32,
    /// Egress pool override (after a `reroute`).
    pub pool: Option<String>,
    /// Index into the domain's route list (after a `failover`).
    pub route_idx: usize,
}
