//! [`Job`]: one unit of delivery work, a spooled message's recipients at one domain; and
//! [`Parked`], the same job while it waits.
//!
//! Its own file because two files need it and one of them needs the other: the queue
//! (`queue.rs`) creates, sends and retries jobs and calls `notice.rs` to build a bounce, and
//! the bounce is built from a job. Its public path stays `crate::mta::queue::Job` (a
//! re-export).
//!
//! A job in hand (being attempted) carries the message: envelope, recipients and body, read
//! from the spool. A job that waits — in a domain's ready queue or for its retry — is
//! [`Parked`]: 40 bytes that point into the spool, so a deep queue costs memory per message,
//! not per byte of mail (SPEC §14: ≤ 64 B of tracked state per queued message).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::spool::{Meta, SpoolId};
use crate::sync::lock;

/// Most recipients a message may have: a parked job keeps its recipients as bits.
pub const MAX_RCPTS: usize = crate::scenario::MAX_NODE_RECIPIENTS;

/// One delivery job: a spooled message's recipients at one domain, ready to send.
#[derive(Debug, Clone)]
pub struct Job {
    pub spool_id: SpoolId,
    pub meta: Arc<Meta>,
    pub body: Arc<Vec<u8>>,
    pub domain: String,
    pub rcpts: Vec<String>,
    /// Attempts made so far.
    pub attempt: u32,
    /// Egress pool override (after a `reroute`).
    pub pool: Option<String>,
    /// Index into the domain's route list (after a `failover`).
    pub route_idx: usize,
}

/// A waiting job: where its message is, which of its recipients it covers, and how far it
/// has got. Everything else is read back from the spool when it is attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parked {
    pub spool_id: SpoolId,
    /// Bit i: the message's i-th recipient is in this job.
    rcpts: [u64; 2],
    domain: u32,
    /// [`NO_NAME`]: the default pool.
    pool: u32,
    attempt: u16,
    route_idx: u16,
}

const NO_NAME: u32 = u32::MAX;

/// Domain and pool names as small numbers, so a parked job carries no strings. Names are
/// never forgotten: there are as many as a node's routes and pools, not messages.
#[derive(Debug, Default)]
pub struct Names(Mutex<NameTable>);

/// Name → number, and number → name.
type NameTable = (HashMap<Arc<str>, u32>, Vec<Arc<str>>);

impl Names {
    pub fn id(&self, name: &str) -> u32 {
        let mut g = lock(&self.0);
        if let Some(&id) = g.0.get(name) {
            return id;
        }
        let id = g.1.len() as u32;
        let name: Arc<str> = name.into();
        g.1.push(name.clone());
        g.0.insert(name, id);
        id
    }

    pub fn name(&self, id: u32) -> Arc<str> {
        lock(&self.0).1.get(id as usize).cloned().unwrap_or_else(|| "".into())
    }
}

fn set_bit(mask: &mut [u64; 2], i: usize) {
    if i < MAX_RCPTS {
        mask[i / 64] |= 1 << (i % 64);
    }
}

impl Parked {
    /// A new job for the recipients at positions `rcpts` of its message.
    pub fn new(spool_id: SpoolId, rcpts: impl IntoIterator<Item = usize>, domain: &str, names: &Names) -> Parked {
        let mut mask = [0; 2];
        for i in rcpts {
            set_bit(&mut mask, i);
        }
        Parked {
            spool_id,
            rcpts: mask,
            domain: names.id(domain),
            pool: NO_NAME,
            attempt: 0,
            route_idx: 0,
        }
    }

    pub fn domain(&self, names: &Names) -> Arc<str> {
        names.name(self.domain)
    }

    /// The job in hand again, from the spool's copy of its message.
    pub fn unpark(&self, names: &Names, meta: Meta, body: Vec<u8>) -> Job {
        let rcpts = meta
            .rcpts
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < MAX_RCPTS && self.rcpts[i / 64] & (1 << (i % 64)) != 0)
            .map(|(_, r)| r.clone())
            .collect();
        Job {
            spool_id: self.spool_id,
            meta: Arc::new(meta),
            body: Arc::new(body),
            domain: names.name(self.domain).to_string(),
            rcpts,
            attempt: u32::from(self.attempt),
            pool: (self.pool != NO_NAME).then(|| names.name(self.pool).to_string()),
            route_idx: usize::from(self.route_idx),
        }
    }
}

impl Job {
    /// Parks the job: its recipients become positions in the message's recipient list (each
    /// position used once, so a recipient listed twice stays twice).
    pub fn park(&self, names: &Names) -> Parked {
        let mut mask = [0; 2];
        let mut used = [0u64; 2];
        for r in &self.rcpts {
            let at = self
                .meta
                .rcpts
                .iter()
                .enumerate()
                .position(|(i, m)| m == r && i < MAX_RCPTS && used[i / 64] & (1 << (i % 64)) == 0);
            if let Some(i) = at {
                set_bit(&mut used, i);
                set_bit(&mut mask, i);
            }
        }
        Parked {
            spool_id: self.spool_id,
            rcpts: mask,
            domain: names.id(&self.domain),
            pool: self.pool.as_deref().map_or(NO_NAME, |p| names.id(p)),
            attempt: self.attempt.min(u32::from(u16::MAX)) as u16,
            route_idx: self.route_idx.min(usize::from(u16::MAX)) as u16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_job_is_small_and_unparks_to_the_same_job() {
        assert!(std::mem::size_of::<Parked>() <= 40, "{}", std::mem::size_of::<Parked>());
        let names = Names::default();
        let meta = Meta {
            msg_id: "r.1".into(),
            from: "a@b.test".into(),
            rcpts: vec![
                "x@d.test".into(),
                "y@e.test".into(),
                "x@d.test".into(),
                "z@d.test".into(),
            ],
            received_ns: 7,
        };
        let job = Job {
            spool_id: 42,
            meta: Arc::new(meta.clone()),
            body: Arc::new(b"hi\r\n".to_vec()),
            domain: "d.test".into(),
            rcpts: vec!["x@d.test".into(), "x@d.test".into(), "z@d.test".into()],
            attempt: 3,
            pool: Some("dedicated".into()),
            route_idx: 1,
        };
        let back = job.park(&names).unpark(&names, meta, b"hi\r\n".to_vec());
        assert_eq!(
            (back.rcpts, back.domain, back.pool, back.attempt, back.route_idx),
            (job.rcpts, job.domain, job.pool, 3, 1)
        );
    }
}
