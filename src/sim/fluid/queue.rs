//! One (region, provider) delivery queue of the fluid model: shares of mail ready to be tried,
//! first in first out, and retries waiting for their time — with running totals, so a day of
//! steps over a deep queue costs the shares served, never a scan of the whole queue.

use std::collections::{BTreeMap, VecDeque};

use super::Frag;

#[derive(Debug, Default)]
pub struct Queue {
    ready: VecDeque<Frag>,
    /// (due ms, insertion number) → share.
    waiting: BTreeMap<(u64, u64), Frag>,
    seq: u64,
    ready_sum: f64,
    waiting_sum: f64,
}

impl Queue {
    pub fn push_ready(&mut self, f: Frag) {
        self.ready_sum += f.count;
        self.ready.push_back(f);
    }

    pub fn push_waiting(&mut self, f: Frag) {
        self.waiting_sum += f.count;
        self.seq += 1;
        self.waiting.insert(((f.ready * 1e3).max(0.0) as u64, self.seq), f);
    }

    /// Retries due before `t1` (s) join the ready line, in due order.
    pub fn due(&mut self, t1: f64) {
        let later = self.waiting.split_off(&(((t1 * 1e3).max(0.0)) as u64, 0));
        let due = std::mem::replace(&mut self.waiting, later);
        for f in due.into_values() {
            self.waiting_sum -= f.count;
            self.push_ready(f);
        }
    }

    pub fn ready(&self) -> f64 {
        self.ready_sum.max(0.0)
    }

    pub fn total(&self) -> f64 {
        (self.ready_sum + self.waiting_sum).max(0.0)
    }

    /// Takes up to `n` from the front of the ready line, oldest first; `serve` gets each
    /// share taken (a copy with the count taken).
    pub fn serve(&mut self, mut n: f64, mut serve: impl FnMut(Frag)) {
        while n > 1e-12 {
            let Some(front) = self.ready.front_mut() else { break };
            let x = front.count.min(n);
            n -= x;
            front.count -= x;
            self.ready_sum -= x;
            let mut taken = front.clone();
            taken.count = x;
            if front.count <= 1e-9 {
                self.ready_sum -= front.count;
                self.ready.pop_front();
            }
            serve(taken);
        }
    }

    /// Takes `part` (0..1) of every share, ready and waiting: a killed node's part of its
    /// region's queue, which its spool keeps.
    pub fn take_part(&mut self, part: f64) -> Vec<Frag> {
        let mut out = Vec::new();
        for f in self.ready.iter_mut().chain(self.waiting.values_mut()) {
            let mut h = f.clone();
            h.count *= part;
            f.count -= h.count;
            out.push(h);
        }
        self.ready_sum *= 1.0 - part;
        self.waiting_sum *= 1.0 - part;
        out
    }

    /// Every share still queued.
    pub fn iter(&self) -> impl Iterator<Item = &Frag> {
        self.ready.iter().chain(self.waiting.values())
    }
}
