//! The per-process event files of a run merged into one time-ordered `events.jsonl.zst`, in
//! bounded memory: an external merge sort.
//!
//! Each process writes its own file in roughly, not exactly, time order (events are stamped
//! where they happen and written by one task). Events are read in chunks of [`CHUNK`], each
//! chunk sorted by time and written to a scratch run (zstd level 1) beside the output; the
//! runs are then merged through a heap holding one event per run, at most [`FAN_IN`] at a time
//! (more are merged in groups first, so open files stay few). Memory is a chunk plus one
//! event per run, whatever the length of the run — a 20-minute soak's 18 M events no longer
//! need their ~9 GB at once.
//!
//! The order is that of a stable sort of all files read one after another: ties on time keep
//! file order (runs are consecutive pieces of that sequence, and a tie goes to the earlier
//! run), so the output is byte-identical to sorting everything in memory.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::path::{Path, PathBuf};

use crate::events::{self, CompressedWriter, Event, EventReader};

/// Events sorted in memory at a time (about 60 MB of them); a 20-minute soak's 18 M events
/// make ~140 scratch runs, read back at most [`FAN_IN`] at a time.
pub const CHUNK: usize = 128 * 1024;
/// Scratch runs are written fast: they live for seconds.
const SCRATCH_LEVEL: i32 = 1;
/// Runs merged at once, each an open file: more are first merged in groups of this many into
/// longer runs, so a day-long run's thousands of chunks never meet the open-file limit.
pub const FAN_IN: usize = 32;

/// Collects events from any number of files and writes them sorted by time.
pub struct Merge<'p> {
    scratch: PathBuf,
    chunk: Vec<Event>,
    chunk_size: usize,
    runs: Vec<PathBuf>,
    compact: &'p dyn Fn(&mut Event),
    /// Runs merged at once ([`FAN_IN`]).
    fan_in: usize,
    /// Lines that were not events, per input file read.
    pub torn: Vec<(PathBuf, usize)>,
}

impl<'p> Merge<'p> {
    /// Scratch runs go to `scratch` (created; removed by [`Merge::finish`]). `compact` shrinks
    /// each event as it is read ([`Event::compact`]), so runs and output hold the same lines.
    pub fn new(scratch: &Path, chunk_size: usize, compact: &'p dyn Fn(&mut Event)) -> io::Result<Merge<'p>> {
        std::fs::create_dir_all(scratch).map_err(|e| crate::files::at(scratch, e))?;
        Ok(Merge {
            scratch: scratch.to_path_buf(),
            chunk: Vec::new(),
            chunk_size: chunk_size.max(1),
            runs: Vec::new(),
            compact,
            fan_in: FAN_IN,
            torn: Vec::new(),
        })
    }

    /// Reads one input file (plain or `.zst`) into the merge.
    pub fn add_file(&mut self, path: &Path) -> io::Result<()> {
        let bad = events::each_in_file(path, |e| self.push(e))?;
        self.torn.push((path.to_path_buf(), bad));
        Ok(())
    }

    pub fn push(&mut self, mut e: Event) -> io::Result<()> {
        (self.compact)(&mut e);
        self.chunk.push(e);
        if self.chunk.len() >= self.chunk_size {
            self.spill()?;
        }
        Ok(())
    }

    /// Sorts the chunk in hand and writes it out as the next run.
    fn spill(&mut self) -> io::Result<()> {
        self.chunk.sort_by_key(|e| e.t);
        let path = self.scratch.join(format!("run-{}.jsonl.zst", self.runs.len()));
        let mut w = CompressedWriter::create(&path, SCRATCH_LEVEL)?;
        for e in self.chunk.drain(..) {
            w.write(&e)?;
        }
        w.finish()?;
        self.runs.push(path);
        Ok(())
    }

    /// Writes everything, in time order, to `out` at [`events::ZSTD_LEVEL`]; returns the
    /// number of events written. The scratch directory is removed.
    pub fn finish(self, out: &Path) -> io::Result<u64> {
        self.finish_at(out, events::ZSTD_LEVEL)
    }

    /// [`Merge::finish`] at another zstd level.
    pub fn finish_at(mut self, out: &Path, level: i32) -> io::Result<u64> {
        let mut w = CompressedWriter::create(out, level)?;
        let n = if self.runs.is_empty() {
            // Everything fitted in one chunk: no scratch file at all.
            self.chunk.sort_by_key(|e| e.t);
            for e in &self.chunk {
                w.write(e)?;
            }
            self.chunk.len() as u64
        } else {
            if !self.chunk.is_empty() {
                self.spill()?;
            }
            self.chunk = Vec::new();
            self.narrow(self.fan_in)?;
            merge_runs(&self.runs, &mut w)?
        };
        w.finish()?;
        std::fs::remove_dir_all(&self.scratch).map_err(|e| crate::files::at(&self.scratch, e))?;
        Ok(n)
    }
}

impl Merge<'_> {
    /// Merges consecutive groups of `fan_in` runs into one until at most `fan_in` are left.
    /// Consecutive, so ties still go to the earlier file.
    fn narrow(&mut self, fan_in: usize) -> io::Result<()> {
        let fan_in = fan_in.max(2);
        let mut pass = 0;
        while self.runs.len() > fan_in {
            pass += 1;
            let mut next = Vec::new();
            for (i, group) in self.runs.chunks(fan_in).enumerate() {
                if group.len() == 1 {
                    next.push(group[0].clone());
                    continue;
                }
                let path = self.scratch.join(format!("pass-{pass}-{i}.jsonl.zst"));
                let mut w = CompressedWriter::create(&path, SCRATCH_LEVEL)?;
                merge_runs(group, &mut w)?;
                w.finish()?;
                for r in group {
                    std::fs::remove_file(r).map_err(|e| crate::files::at(r, e))?;
                }
                next.push(path);
            }
            self.runs = next;
        }
        Ok(())
    }
}

/// K-way merge of sorted runs: a heap of (time, run) holding each run's next event.
fn merge_runs(runs: &[PathBuf], w: &mut CompressedWriter) -> io::Result<u64> {
    let mut readers: Vec<RunReader> = runs.iter().map(|p| RunReader::open(p)).collect::<io::Result<_>>()?;
    let mut heads: Vec<Option<Event>> = Vec::with_capacity(runs.len());
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (i, r) in readers.iter_mut().enumerate() {
        let e = r.next()?;
        if let Some(e) = &e {
            heap.push(Reverse((e.t, i)));
        }
        heads.push(e);
    }
    let mut n = 0;
    while let Some(Reverse((_, i))) = heap.pop() {
        let e = heads[i].take().expect("a run in the heap has a head");
        w.write(&e)?;
        n += 1;
        heads[i] = readers[i].next()?;
        if let Some(next) = &heads[i] {
            heap.push(Reverse((next.t, i)));
        }
    }
    Ok(n)
}

/// One scratch run, read an event at a time; a line that is not an event is an error here
/// (the merge wrote every one of them).
struct RunReader {
    path: PathBuf,
    events: EventReader,
}

impl RunReader {
    fn open(path: &Path) -> io::Result<RunReader> {
        Ok(RunReader {
            path: path.to_path_buf(),
            events: EventReader::open(path).map_err(|e| crate::files::at(path, e))?,
        })
    }

    fn next(&mut self) -> io::Result<Option<Event>> {
        let at = |e| crate::files::at(&self.path, e);
        match self.events.next() {
            None => Ok(None),
            Some(line) => line
                .map_err(at)?
                .map(Some)
                .map_err(|e| at(io::Error::new(io::ErrorKind::InvalidData, e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Kind;

    fn ev(t: u64, id: &str) -> Event {
        Event::new(t, id, Kind::Accepted)
    }

    fn merged(files: &[Vec<Event>], chunk: usize, fan_in: usize) -> Vec<(u64, String)> {
        let dir = tempfile::tempdir().unwrap();
        let no_op = |_: &mut Event| {};
        let mut m = Merge::new(&dir.path().join("scratch"), chunk, &no_op).unwrap();
        m.fan_in = fan_in;
        for (i, evs) in files.iter().enumerate() {
            let p = dir.path().join(format!("in-{i}.jsonl"));
            let mut text = Vec::new();
            for e in evs {
                events::write_line(&mut text, e).unwrap();
            }
            text.extend_from_slice(b"{\"torn");
            std::fs::write(&p, text).unwrap();
            m.add_file(&p).unwrap();
        }
        assert!(m.torn.iter().all(|(_, n)| *n == 1), "each torn tail counted");
        let out = dir.path().join("out.jsonl.zst");
        let n = m.finish(&out).unwrap();
        assert!(!dir.path().join("scratch").exists(), "scratch removed");
        let (evs, bad) = events::read_file(&out).unwrap();
        assert_eq!((n as usize, bad), (evs.len(), 0));
        evs.into_iter().map(|e| (e.t, e.id)).collect()
    }

    /// Any chunk size gives what a stable in-memory sort of the files in order gives.
    #[test]
    fn chunked_merge_equals_a_stable_sort() {
        let files = vec![
            vec![ev(5, "a1"), ev(3, "a2"), ev(3, "a3"), ev(9, "a4"), ev(1, "a5")],
            vec![ev(3, "b1"), ev(2, "b2"), ev(9, "b3")],
            vec![],
            vec![ev(3, "c1"), ev(0, "c2"), ev(7, "c3"), ev(3, "c4")],
        ];
        let mut all: Vec<(u64, String)> = files.iter().flatten().map(|e| (e.t, e.id.clone())).collect();
        all.sort_by_key(|(t, _)| *t);
        for chunk in [1, 2, 3, 5, 100] {
            for fan_in in [2, 3, FAN_IN] {
                assert_eq!(merged(&files, chunk, fan_in), all, "chunk {chunk}, fan-in {fan_in}");
            }
        }
    }
}
