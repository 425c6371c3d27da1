//! A group-commit segment log on local disk.
//!
//! ```text
//! spool/seg-00000001.log    records: [kind u8][len u32][crc32 u32][payload]; a message's
//!                           id is (segment << 40) | the record's offset, so it is read back
//!                           by one positioned read
//!                           message payload: [id u64][meta_len u32][meta JSON][body]
//! spool/seg-00000001.done   removed ids of that segment, 8 bytes each (not fsynced)
//! ```
//!
//! One committer thread owns the open segment. Stores queue up while it syncs; it then writes
//! every queued record, calls `fdatasync` once and answers them all (group commit). A segment
//! is deleted once every message in it is removed and it is no longer being written. Each
//! segment keeps its own `.done` file, so segments can be deleted in any order without
//! resurrecting anything. At start-up a torn or corrupt tail (a crash mid-write) is cut off:
//! those records were never acknowledged, because acknowledgement follows the sync.
//!
//! A batch that cannot be written or synced (a full disk) is undone before anyone hears of it:
//! the segment is cut back to where the batch began and that cut is synced, and only then are
//! its stores answered with an error (the client's 451). So a refused message can never be
//! recovered and delivered after a restart. The committer then backs off and tries the disk
//! again with the next batch, so a freed disk is used again without a restart. Only if the cut
//! itself fails (a broken disk, not a full one) does the spool stop taking stores; it then
//! leaves a `seg-N.cut` file with the offset, which recovery honours.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{Meta, Recovered, Spool, SpoolId};
use crate::sync::lock;

/// Segments are rotated past this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Most records committed by one sync; more wait for the next.
const MAX_BATCH: usize = 4096;
/// After a failed batch, stores are refused at once for this long, doubling per failure up to
/// [`MAX_BACKOFF`], then the disk is tried again.
const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);
const KIND_MESSAGE: u8 = 1;
const HEADER: usize = 1 + 4 + 4;

/// Bits of a [`SpoolId`] that hold the record's offset in its segment.
const OFFSET_BITS: u32 = 40;

fn seg_of(id: SpoolId) -> u32 {
    (id >> OFFSET_BITS) as u32
}

fn seg_path(dir: &Path, seg: u32, ext: &str) -> PathBuf {
    dir.join(format!("seg-{seg:08}.{ext}"))
}

struct Request {
    meta: Meta,
    body: Arc<Vec<u8>>,
    reply: oneshot::Sender<io::Result<SpoolId>>,
}

/// Bookkeeping shared by the committer and `remove`.
struct Books {
    dir: PathBuf,
    /// Live (stored, not removed) messages per segment.
    live: HashMap<u32, u64>,
    /// The segment being written; never deleted while current.
    current: u32,
    /// Open `.done` writers.
    done: HashMap<u32, BufWriter<File>>,
    /// Segments opened for reading bodies back (closed when the segment is deleted).
    readers: HashMap<u32, Arc<File>>,
}

impl Books {
    /// Deletes a segment that is finished and has nothing live.
    fn maybe_delete(&mut self, seg: u32) {
        if seg == self.current || self.live.get(&seg).is_some_and(|n| *n > 0) {
            return;
        }
        self.live.remove(&seg);
        self.done.remove(&seg);
        self.readers.remove(&seg);
        for ext in ["log", "done", "cut"] {
            let p = seg_path(&self.dir, seg, ext);
            if let Err(e) = fs::remove_file(&p) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!("cannot delete {}: {e}", p.display());
                }
            }
        }
    }

    fn flush_done(&mut self) {
        for w in self.done.values_mut() {
            let _ = w.flush();
        }
    }
}

/// The local group-commit spool.
pub struct LogSpool {
    tx: Mutex<Option<std_mpsc::Sender<Request>>>,
    books: Arc<Mutex<Books>>,
    recovered: Mutex<Option<Vec<Recovered>>>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LogSpool {
    /// Opens (creating) a spool directory: recovers what is there and starts a new segment.
    pub fn open(dir: &Path) -> io::Result<LogSpool> {
        Self::open_with(dir, SEGMENT_BYTES)
    }

    /// As [`LogSpool::open`], with a custom segment size (tests rotate with tiny segments).
    pub fn open_with(dir: &Path, segment_bytes: u64) -> io::Result<LogSpool> {
        Self::open_syncing(dir, segment_bytes, Arc::new(|f: &File| f.sync_data()))
    }

    /// As [`LogSpool::open_with`], making batches durable with `sync` (`fdatasync` outside
    /// tests; tests put a recording double here to prove no store is answered before it).
    pub(crate) fn open_syncing(dir: &Path, segment_bytes: u64, sync: SyncFn) -> io::Result<LogSpool> {
        fs::create_dir_all(dir)?;
        let segs = list_segments(dir)?;
        let mut recovered = Vec::new();
        let mut live = HashMap::new();
        for &seg in &segs {
            let msgs = read_segment(dir, seg, true)?;
            let done = read_done(dir, seg)?;
            let mut n = 0;
            for r in msgs.into_iter().filter(|r| !done.contains(&r.id)) {
                recovered.push(r);
                n += 1;
            }
            live.insert(seg, n);
        }
        let current = segs.last().map_or(1, |s| s + 1);
        let mut books = Books {
            dir: dir.to_path_buf(),
            live,
            current,
            done: HashMap::new(),
            readers: HashMap::new(),
        };
        for seg in segs {
            books.maybe_delete(seg);
        }
        let books = Arc::new(Mutex::new(books));
        let writer = SegmentWriter::create(dir, current)?;
        let (tx, rx) = std_mpsc::channel();
        let b = books.clone();
        let committer = std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || commit_loop(rx, writer, b, segment_bytes, sync))?;
        Ok(LogSpool {
            tx: Mutex::new(Some(tx)),
            books,
            recovered: Mutex::new(Some(recovered)),
            committer: Mutex::new(Some(committer)),
        })
    }

    /// Messages left in a spool directory, read without changing it (post-run accounting).
    pub fn scan(dir: &Path) -> io::Result<Vec<Meta>> {
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for seg in list_segments(dir)? {
            let done = read_done(dir, seg)?;
            out.extend(
                read_segment(dir, seg, false)?
                    .into_iter()
                    .filter(|r| !done.contains(&r.id))
                    .map(|r| r.meta),
            );
        }
        Ok(out)
    }

    /// Stops the committer after it has answered everything queued. The segment it was
    /// writing is deleted too if nothing in it is live, so a cleanly stopped node leaves only
    /// undelivered mail on disk (not every message it ever carried).
    pub fn close(&self) {
        lock(&self.tx).take();
        if let Some(h) = lock(&self.committer).take() {
            let _ = h.join();
        }
        let mut b = lock(&self.books);
        b.flush_done();
        let current = b.current;
        // No segment is being written any more.
        b.current = u32::MAX;
        b.maybe_delete(current);
    }
}

impl Drop for LogSpool {
    fn drop(&mut self) {
        self.close();
    }
}

impl Spool for LogSpool {
    fn store(&self, meta: Meta, body: Arc<Vec<u8>>) -> oneshot::Receiver<io::Result<SpoolId>> {
        let (reply, rx) = oneshot::channel();
        let req = Request { meta, body, reply };
        match lock(&self.tx).as_ref() {
            Some(tx) => {
                if let Err(std_mpsc::SendError(req)) = tx.send(req) {
                    let _ = req.reply.send(Err(io::Error::other("spool committer stopped")));
                }
            }
            None => {
                let _ = req.reply.send(Err(io::Error::other("spool closed")));
            }
        }
        rx
    }

    fn read(&self, id: SpoolId) -> io::Result<(Meta, Vec<u8>)> {
        let seg = seg_of(id);
        let file = {
            let mut b = lock(&self.books);
            match b.readers.get(&seg) {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(File::open(seg_path(&b.dir, seg, "log"))?);
                    b.readers.insert(seg, f.clone());
                    f
                }
            }
        };
        read_record(&file, id)
    }

    fn remove(&self, id: SpoolId) {
        let seg = seg_of(id);
        let mut b = lock(&self.books);
        let dir = b.dir.clone();
        let w = match b.done.entry(seg) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                match OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(seg_path(&dir, seg, "done"))
                {
                    Ok(f) => v.insert(BufWriter::new(f)),
                    Err(e) => {
                        tracing::warn!("cannot open done file of segment {seg}: {e}");
                        return;
                    }
                }
            }
        };
        // Written through at once (one small write, no fsync) so other readers — the harness's
        // post-run scan — see removals without waiting for the next commit.
        if let Err(e) = w.write_all(&id.to_le_bytes()).and_then(|()| w.flush()) {
            tracing::warn!("cannot record removal of {id:x}: {e}");
        }
        if let Some(n) = b.live.get_mut(&seg) {
            *n = n.saturating_sub(1);
        }
        b.maybe_delete(seg);
    }

    fn recover(&self) -> io::Result<Vec<Recovered>> {
        Ok(lock(&self.recovered).take().unwrap_or_default())
    }
}

/// The open segment.
struct SegmentWriter {
    seg: u32,
    file: BufWriter<File>,
    bytes: u64,
}

impl SegmentWriter {
    fn create(dir: &Path, seg: u32) -> io::Result<SegmentWriter> {
        let f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(seg_path(dir, seg, "log"))?;
        // The new file's directory entry must survive a crash too.
        File::open(dir)?.sync_all()?;
        Ok(SegmentWriter {
            seg,
            file: BufWriter::with_capacity(1 << 20, f),
            bytes: 0,
        })
    }

    fn append(&mut self, meta: &Meta, body: &[u8]) -> io::Result<SpoolId> {
        let id = (u64::from(self.seg) << OFFSET_BITS) | self.bytes;
        let meta_json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        let len = 8 + 4 + meta_json.len() + body.len();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&id.to_le_bytes());
        crc.update(&(meta_json.len() as u32).to_le_bytes());
        crc.update(&meta_json);
        crc.update(body);
        let w = &mut self.file;
        w.write_all(&[KIND_MESSAGE])?;
        w.write_all(&(len as u32).to_le_bytes())?;
        w.write_all(&crc.finalize().to_le_bytes())?;
        w.write_all(&id.to_le_bytes())?;
        w.write_all(&(meta_json.len() as u32).to_le_bytes())?;
        w.write_all(&meta_json)?;
        w.write_all(body)?;
        self.bytes += (HEADER + len) as u64;
        Ok(id)
    }

    fn sync(&mut self, sync: &SyncFn) -> io::Result<()> {
        self.file.flush()?;
        sync(self.file.get_ref())
    }

    /// Where the next batch begins (its byte offset).
    fn mark(&self) -> u64 {
        self.bytes
    }

    /// Undoes everything since `mark`: what is still buffered is dropped, the file is cut back
    /// and the cut is synced. Offsets, and so ids, are reused (none was acknowledged).
    fn rewind(&mut self, bytes: u64) -> io::Result<()> {
        let placeholder = BufWriter::with_capacity(0, self.file.get_ref().try_clone()?);
        let (file, _unwritten) = std::mem::replace(&mut self.file, placeholder).into_parts();
        let cut = file.set_len(bytes).and_then(|()| file.sync_all());
        self.file = BufWriter::with_capacity(1 << 20, file);
        cut?;
        self.bytes = bytes;
        Ok(())
    }
}

/// Refuses stores for a while after a failed batch, longer after each failure in a row.
struct Backoff {
    next: std::time::Duration,
    until: Option<std::time::Instant>,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: FIRST_BACKOFF,
            until: None,
        }
    }

    /// How long stores are still refused, if they are.
    fn remaining(&self) -> Option<std::time::Duration> {
        self.until
            .and_then(|u| u.checked_duration_since(std::time::Instant::now()))
            .filter(|d| !d.is_zero())
    }

    fn failed(&mut self) {
        self.until = Some(std::time::Instant::now() + self.next);
        self.next = (self.next * 2).min(MAX_BACKOFF);
    }

    fn succeeded(&mut self) {
        *self = Backoff::new();
    }
}

/// How a batch is made durable: `fdatasync` (a test double in tests).
pub(crate) type SyncFn = Arc<dyn Fn(&File) -> io::Result<()> + Send + Sync>;

fn commit_loop(
    rx: std_mpsc::Receiver<Request>,
    mut w: SegmentWriter,
    books: Arc<Mutex<Books>>,
    segment_bytes: u64,
    sync: SyncFn,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(64);
    let mut backoff = Backoff::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            let Ok(next) = rx.try_recv() else { break };
            batch.push(next);
        }
        if let Some(left) = backoff.remaining() {
            // The disk failed a moment ago: answer at once rather than hold the client.
            let why = format!(
                "spool write failed recently; trying the disk again in {} ms",
                left.as_millis()
            );
            for req in batch.drain(..) {
                let _ = req.reply.send(Err(io::Error::other(why.clone())));
            }
            continue;
        }
        let mark = w.mark();
        let written: io::Result<Vec<SpoolId>> = batch
            .iter()
            .map(|r| w.append(&r.meta, &r.body))
            .collect::<io::Result<Vec<_>>>()
            .and_then(|ids| w.sync(&sync).map(|()| ids));
        match written {
            Ok(ids) => {
                backoff.succeeded();
                {
                    let mut b = lock(&books);
                    *b.live.entry(w.seg).or_insert(0) += ids.len() as u64;
                    b.flush_done();
                }
                for (req, id) in batch.drain(..).zip(ids) {
                    let _ = req.reply.send(Ok(id));
                }
            }
            Err(e) => {
                // Undo first, answer after: a refused message must not survive in the file.
                let undone = w.rewind(mark);
                let why = format!("spool write failed: {e}");
                tracing::warn!("{why}; {} stores refused, retrying with backoff", batch.len());
                for req in batch.drain(..) {
                    let _ = req.reply.send(Err(io::Error::new(e.kind(), why.clone())));
                }
                if let Err(cut) = undone {
                    refuse_forever(&rx, &books, w.seg, mark, &cut);
                    return;
                }
                backoff.failed();
                continue;
            }
        }
        if w.bytes >= segment_bytes {
            let dir = lock(&books).dir.clone();
            match SegmentWriter::create(&dir, w.seg + 1) {
                Ok(nw) => {
                    let old = w.seg;
                    w = nw;
                    let mut b = lock(&books);
                    b.current = w.seg;
                    b.maybe_delete(old);
                }
                Err(e) => tracing::error!("cannot rotate spool segment: {e}"),
            }
        }
    }
    let _ = w.sync(&sync);
}

/// The segment could not even be cut back (a broken disk, not a full one): leave a note for
/// recovery to cut it at `offset`, and refuse every further store (the "fsyncgate" lesson: do
/// not acknowledge on a disk whose state is unknown).
fn refuse_forever(rx: &std_mpsc::Receiver<Request>, books: &Mutex<Books>, seg: u32, offset: u64, cut: &io::Error) {
    let dir = lock(books).dir.clone();
    let note = seg_path(&dir, seg, "cut");
    let noted = File::create(&note).and_then(|mut f| {
        f.write_all(&offset.to_le_bytes())?;
        f.sync_all()
    });
    tracing::error!(
        "cannot cut spool segment {seg} back after a failed write ({cut}); cut note {}: {}; refusing further stores",
        note.display(),
        noted.map_or_else(|e| format!("not written ({e})"), |()| "written".into())
    );
    for req in rx.iter() {
        let _ = req.reply.send(Err(io::Error::other(
            "spool disabled after a failed write it could not undo",
        )));
    }
}

/// A record header's payload length and CRC, if it is a message record.
fn record_header(head: &[u8]) -> Option<(usize, u32)> {
    let len = u32::from_le_bytes(head.get(1..5)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head.get(5..9)?.try_into().ok()?);
    (head[0] == KIND_MESSAGE && len >= 12).then_some((len, crc))
}

/// A message payload checked against its CRC: its id, its envelope, and where its body starts.
/// Recovery and the positioned read both decode records here.
fn decode_payload(payload: &[u8], crc: u32) -> Result<(SpoolId, Meta, usize), String> {
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".into());
    }
    let id = u64::from_le_bytes(payload[..8].try_into().unwrap_or_default());
    let meta_len = u32::from_le_bytes(payload[8..12].try_into().unwrap_or_default()) as usize;
    let meta_json = payload.get(12..12 + meta_len).ok_or("meta longer than the record")?;
    let meta = serde_json::from_slice(meta_json).map_err(|e| format!("meta: {e}"))?;
    Ok((id, meta, 12 + meta_len))
}

/// The message record at `id`'s offset, checked against its CRC and its id.
fn read_record(file: &File, id: SpoolId) -> io::Result<(Meta, Vec<u8>)> {
    use std::os::unix::fs::FileExt as _;
    let offset = id & ((1u64 << OFFSET_BITS) - 1);
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("spool record {id:x}: {why}"));
    let mut head = [0u8; HEADER];
    file.read_exact_at(&mut head, offset)?;
    let (len, crc) = record_header(&head).ok_or_else(|| bad("not a message record"))?;
    let mut payload = vec![0u8; len];
    file.read_exact_at(&mut payload, offset + HEADER as u64)?;
    let (found, meta, body_at) = decode_payload(&payload, crc).map_err(|e| bad(&e))?;
    if found != id {
        return Err(bad("id mismatch"));
    }
    payload.drain(..body_at);
    Ok((meta, payload))
}

fn list_segments(dir: &Path) -> io::Result<Vec<u32>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_prefix("seg-").and_then(|r| r.strip_suffix(".log")) {
            if let Ok(n) = n.parse() {
                v.push(n);
            }
        }
    }
    v.sort_unstable();
    Ok(v)
}

fn read_done(dir: &Path, seg: u32) -> io::Result<HashSet<SpoolId>> {
    let mut buf = Vec::new();
    match File::open(seg_path(dir, seg, "done")) {
        Ok(mut f) => {
            f.read_to_end(&mut buf)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // A torn last id (crash mid-write) is ignored: that message is delivered again.
    Ok(buf
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}

/// Reads a segment's valid records; with `repair`, cuts a torn or corrupt tail off the file.
fn read_segment(dir: &Path, seg: u32, repair: bool) -> io::Result<Vec<Recovered>> {
    let path = seg_path(dir, seg, "log");
    let mut buf = Vec::new();
    File::open(&path)?.read_to_end(&mut buf)?;
    let file_len = buf.len();
    // A failed batch the committer could not cut back: nothing from its offset on was
    // acknowledged.
    if let Ok(note) = fs::read(seg_path(dir, seg, "cut")) {
        if let Ok(offset) = <[u8; 8]>::try_from(note.as_slice()).map(u64::from_le_bytes) {
            buf.truncate(offset.min(buf.len() as u64) as usize);
        }
    }
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + HEADER <= buf.len() {
        let Some((len, crc)) = record_header(&buf[pos..pos + HEADER]) else {
            break;
        };
        let start = pos + HEADER;
        let Some(payload) = buf.get(start..start + len) else {
            break;
        };
        let Ok((id, meta, body_at)) = decode_payload(payload, crc) else {
            break;
        };
        out.push(Recovered {
            id,
            meta,
            body: payload[body_at..].to_vec(),
        });
        pos = start + len;
    }
    if pos < file_len && repair {
        tracing::warn!("{}: cutting {} bytes of torn tail", path.display(), file_len - pos);
        let f = OpenOptions::new().write(true).open(&path)?;
        f.set_len(pos as u64)?;
        f.sync_all()?;
        let _ = fs::remove_file(seg_path(dir, seg, "cut"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
