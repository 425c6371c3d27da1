//! Small synchronisation helpers shared by every module that keeps state behind a std mutex.

use std::sync::{Mutex, MutexGuard};

/// Locks a std mutex, carrying on if it is poisoned. Everything mailsurge keeps behind a std
/// mutex is plain data (maps, sets, queues, counters) that stays structurally valid even if a
/// holder panicked mid-update, so cascading the panic to every other task would only turn one
/// failure into many.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
