//! How many jobs each spooled message still has outstanding, so the spool record is removed
//! when the last one finishes.
//!
//! Only messages with more than one are kept (absent means exactly one): the common
//! one-domain message costs no entry, which keeps a deep queue within SPEC §14's budget.

use std::collections::HashMap;
use std::sync::Mutex;

use super::spool::SpoolId;
use crate::sync::lock;

#[derive(Debug, Default)]
pub struct Pending(Mutex<HashMap<SpoolId, usize>>);

impl Pending {
    /// A message split into `n` jobs (one per recipient domain).
    pub fn split(&self, id: SpoolId, n: usize) {
        if n > 1 {
            lock(&self.0).insert(id, n);
        }
    }

    /// One more outstanding job (a delivery status notice keeps its original spooled).
    pub fn add_one(&self, id: SpoolId) {
        *lock(&self.0).entry(id).or_insert(1) += 1;
    }

    /// One job finished; true when it was the last, i.e. the message can leave the spool.
    pub fn release(&self, id: SpoolId) -> bool {
        let mut p = lock(&self.0);
        // Absent means one: that one is done now. Two left become one, i.e. absent.
        match p.get_mut(&id) {
            Some(n) if *n > 2 => {
                *n -= 1;
                false
            }
            Some(_) => {
                p.remove(&id);
                false
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_of_each_split_releases_it() {
        let p = Pending::default();
        assert!(p.release(1), "a one-job message is done at once");
        p.split(2, 3);
        assert!(!p.release(2));
        assert!(!p.release(2));
        assert!(p.release(2));
        p.split(3, 1);
        p.add_one(3);
        assert!(!p.release(3));
        assert!(p.release(3));
        assert!(lock(&p.0).is_empty());
    }
}
