//! The MTA's durable spool: where an accepted message lives until it is delivered, bounced or
//! expired. `250` is only sent after [`Spool::store`] returns, i.e. after fsync.
//!
//! Behind a trait (after KumoMTA's `spool` crate: store / load / remove / enumerate) so a
//! shared-queue backend (NATS JetStream, SPEC §9) can replace local disk. The local backend
//! follows Postfix's rule that a state change is one atomic rename: write `tmp/<id>`, fsync,
//! rename into `q/<id>`, fsync the directory. A crash leaves either no file or a whole one.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A spooled message's identity in one spool.
pub type SpoolId = String;

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

/// Durable message storage.
pub trait Spool: Send + Sync + 'static {
    /// Stores durably (fsync) and returns the new id.
    fn store(&self, meta: &Meta, body: &[u8]) -> io::Result<SpoolId>;
    fn load(&self, id: &str) -> io::Result<(Meta, Vec<u8>)>;
    /// Forgets a message that reached a terminal state. Not fsynced: if the removal is lost in
    /// a crash the message is delivered again — a countable duplicate, never a loss.
    fn remove(&self, id: &str) -> io::Result<()>;
    /// Every stored message id, for restart recovery.
    fn enumerate(&self) -> io::Result<Vec<SpoolId>>;
}

/// One directory on local disk: `q/` holds messages, `tmp/` holds writes in progress.
pub struct LocalSpool {
    q: PathBuf,
    tmp: PathBuf,
    prefix: String,
    seq: AtomicU64,
}

impl LocalSpool {
    /// Opens (creating) a spool directory and clears torn writes from `tmp/`.
    pub fn open(dir: &Path) -> io::Result<LocalSpool> {
        let q = dir.join("q");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&q)?;
        fs::create_dir_all(&tmp)?;
        for e in fs::read_dir(&tmp)? {
            // A file in tmp/ was never acknowledged: removing it loses nothing promised.
            let _ = fs::remove_file(e?.path());
        }
        // Ids must not collide with a previous incarnation's files still in q/.
        let prefix = format!(
            "{:x}{:05x}",
            crate::events::now_ns() / 1000,
            std::process::id() & 0xfffff
        );
        Ok(LocalSpool {
            q,
            tmp,
            prefix,
            seq: AtomicU64::new(0),
        })
    }

    /// Messages currently in a spool directory (for the harness's post-run accounting).
    pub fn scan(dir: &Path) -> io::Result<Vec<Meta>> {
        let spool = LocalSpool {
            q: dir.join("q"),
            tmp: dir.join("tmp"),
            prefix: String::new(),
            seq: AtomicU64::new(0),
        };
        if !spool.q.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for id in spool.enumerate()? {
            // A message whose file vanished or is torn between enumerate and load is skipped.
            if let Ok((m, _)) = spool.load(&id) {
                out.push(m);
            }
        }
        Ok(out)
    }
}

impl Spool for LocalSpool {
    fn store(&self, meta: &Meta, body: &[u8]) -> io::Result<SpoolId> {
        let id = format!("{}-{}", self.prefix, self.seq.fetch_add(1, Ordering::Relaxed));
        let tmp = self.tmp.join(&id);
        let mut f = File::create(&tmp)?;
        let mut head = serde_json::to_vec(meta).map_err(io::Error::other)?;
        head.push(b'\n');
        f.write_all(&head)?;
        f.write_all(body)?;
        f.sync_data()?;
        drop(f);
        fs::rename(&tmp, self.q.join(&id))?;
        // The rename itself must be durable, or a crash could forget an acknowledged message.
        File::open(&self.q)?.sync_all()?;
        Ok(id)
    }

    fn load(&self, id: &str) -> io::Result<(Meta, Vec<u8>)> {
        let mut buf = Vec::new();
        File::open(self.q.join(id))?.read_to_end(&mut buf)?;
        let nl = buf
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("spool file {id} has no header")))?;
        let meta: Meta =
            serde_json::from_slice(&buf[..nl]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        buf.drain(..=nl);
        Ok((meta, buf))
    }

    fn remove(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.q.join(id)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn enumerate(&self) -> io::Result<Vec<SpoolId>> {
        let mut ids = Vec::new();
        for e in fs::read_dir(&self.q)? {
            ids.push(e?.file_name().to_string_lossy().into_owned());
        }
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_remove_enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalSpool::open(dir.path()).unwrap();
        let meta = Meta {
            msg_id: "r.1".into(),
            from: "".into(),
            rcpts: vec!["a@b.test".into()],
            received_ns: 9,
        };
        let id = s.store(&meta, b"Subject: x\r\n\r\nhello\r\n").unwrap();
        let (m, body) = s.load(&id).unwrap();
        assert_eq!(m, meta);
        assert_eq!(body, b"Subject: x\r\n\r\nhello\r\n");
        // A second incarnation sees it and does not collide.
        let s2 = LocalSpool::open(dir.path()).unwrap();
        assert_eq!(s2.enumerate().unwrap(), vec![id.clone()]);
        let id2 = s2.store(&meta, b"x").unwrap();
        assert_ne!(id, id2);
        assert_eq!(LocalSpool::scan(dir.path()).unwrap().len(), 2);
        s2.remove(&id).unwrap();
        s2.remove(&id).unwrap();
        assert_eq!(s2.enumerate().unwrap(), vec![id2]);
    }
}
