//! Per-second delivery-time distributions (by intended time), built one second at a time.
//!
//! A histogram of SPEC §5's range and precision is 221 KB of counts, so keeping one per second
//! of the traffic window costs ~0.2 MB per second per group — a day-long scenario would need
//! tens of gigabytes for its series and `latency.hlog` alone. Instead each group keeps its
//! eligible values sorted by interval (16 bytes per recipient), and a [`Cursor`] fills one
//! reused histogram per second on demand. The histograms are the same as before, count for
//! count, so every percentile is unchanged.

use super::latency::Dist;

/// A delivery time in µs; `INF` = not delivered (+∞).
const INF: u64 = u64::MAX;

/// One group's eligible values by 1 s interval of intended time.
#[derive(Debug, Clone, Default)]
pub struct ByInterval {
    /// (interval, value), sorted by interval; values of one interval keep their input order.
    values: Vec<(u32, u64)>,
    intervals: usize,
}

impl ByInterval {
    /// `values`: (intended ns, delivery µs or `None`) of eligible recipients. Intervals are
    /// counted from `start_ns`; later ones fall into the last of `intervals`.
    pub fn new(values: impl Iterator<Item = (u64, Option<u64>)>, start_ns: u64, intervals: usize) -> ByInterval {
        let intervals = intervals.max(1);
        let last = (intervals - 1) as u64;
        let mut v: Vec<(u32, u64)> = values
            .map(|(t, us)| {
                let i = (t.saturating_sub(start_ns) / 1_000_000_000).min(last);
                (i as u32, us.unwrap_or(INF))
            })
            .collect();
        v.sort_by_key(|(i, _)| *i);
        ByInterval { values: v, intervals }
    }

    pub fn intervals(&self) -> usize {
        self.intervals
    }

    /// The values of intervals `[from, to)`, as a slice.
    fn range(&self, from: usize, to: usize) -> &[(u32, u64)] {
        let a = self.values.partition_point(|(i, _)| (*i as usize) < from);
        let b = self.values.partition_point(|(i, _)| (*i as usize) < to);
        &self.values[a..b]
    }

    pub fn cursor(&self) -> Cursor<'_> {
        Cursor {
            by: self,
            next: 0,
            dist: Dist::new(),
            dirty: false,
        }
    }

    /// The worst-case `f` over sliding windows of `len` intervals, one interval apart, each
    /// given its merged distribution; windows with no values are skipped. The window's
    /// histogram is kept up to date by adding the interval that enters and subtracting the
    /// one that leaves, so each step costs one interval, not `len`.
    pub fn each_window(&self, len: usize, mut f: impl FnMut(&Dist)) {
        let len = len.clamp(1, self.intervals);
        let mut window = Dist::new();
        add(&mut window, self.range(0, len));
        // One scratch histogram for the second that leaves, reset only when it held values:
        // a fresh one per step would be 221 KB allocated and zeroed for every second.
        let mut gone = Dist::new();
        for start in 0..=(self.intervals - len) {
            if start > 0 {
                let leaving = self.range(start - 1, start);
                if !leaving.is_empty() {
                    add(&mut gone, leaving);
                    // Same bounds, and `gone` only holds values the window has: cannot fail.
                    let _ = window.finite.subtract(&gone.finite);
                    window.infinite -= gone.infinite;
                    gone.finite.reset();
                    gone.infinite = 0;
                }
                add(&mut window, self.range(start + len - 1, start + len));
            }
            if !window.is_empty() {
                f(&window);
            }
        }
    }
}

fn add(d: &mut Dist, values: &[(u32, u64)]) {
    for &(_, us) in values {
        d.record((us != INF).then_some(us));
    }
}

/// Walks a [`ByInterval`] second by second through one reused histogram.
pub struct Cursor<'a> {
    by: &'a ByInterval,
    next: usize,
    dist: Dist,
    /// The histogram holds values (must be reset before the next interval).
    dirty: bool,
}

impl Cursor<'_> {
    /// The next interval's index and distribution (empty for a second with no values).
    #[allow(clippy::should_implement_trait)] // lends its histogram: not an Iterator
    pub fn next(&mut self) -> Option<(usize, &Dist)> {
        let i = self.next;
        if i >= self.by.intervals {
            return None;
        }
        self.next += 1;
        if self.dirty {
            self.dist.finite.reset();
            self.dist.infinite = 0;
            self.dirty = false;
        }
        let values = self.by.range(i, i + 1);
        if !values.is_empty() {
            add(&mut self.dist, values);
            self.dirty = true;
        }
        Some((i, &self.dist))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn sample() -> ByInterval {
        let v = [
            (0, Some(5_000)),
            (3 * S + 1, Some(70_000)),
            (S / 2, None),
            (S, Some(1_000)),
            (9 * S, Some(9)), // past the last interval: counted in it
            (3 * S, Some(2_000)),
        ];
        ByInterval::new(v.into_iter(), 0, 4)
    }

    /// What every second's histogram would hold if built directly.
    fn direct(by: &ByInterval, from: usize, to: usize) -> Dist {
        let mut d = Dist::new();
        add(&mut d, by.range(from, to));
        d
    }

    #[test]
    fn cursor_gives_each_second_its_values() {
        let by = sample();
        let mut c = by.cursor();
        let mut seen = Vec::new();
        while let Some((i, d)) = c.next() {
            seen.push((i, d.len(), d.infinite, d.max_ms()));
        }
        assert_eq!(
            seen,
            [
                (0, 2, 1, None), // one undelivered: the max is +∞
                (1, 1, 0, Some(1.0)),
                (2, 0, 0, None),
                (3, 3, 0, direct(&by, 3, 4).max_ms()),
            ]
        );
    }

    #[test]
    fn sliding_windows_equal_merged_seconds() {
        let by = sample();
        for len in 1..=4 {
            let mut got = Vec::new();
            by.each_window(len, |d| got.push((d.len(), d.infinite, d.quantile_ms(0.5), d.max_ms())));
            let want: Vec<_> = (0..=4 - len)
                .map(|s| direct(&by, s, s + len))
                .filter(|d| !d.is_empty())
                .map(|d| (d.len(), d.infinite, d.quantile_ms(0.5), d.max_ms()))
                .collect();
            assert_eq!(got, want, "len {len}");
        }
    }
}
