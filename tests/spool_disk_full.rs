//! The spool on a real, tiny, full disk (a 2 MiB tmpfs; needs root to mount, and says so when
//! it cannot): stores are refused while the disk is full, the spool recovers by itself once
//! space is freed, and after a restart exactly the acknowledged messages come back — none that
//! was refused.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailsurge::mta::spool::{LogSpool, Meta, Spool, SpoolId};

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        // /proc/self belongs to the process's effective user.
        let root =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").map_err(|e| e.to_string())?) == 0;
        if !root {
            return Err("mounting a tmpfs needs root".into());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn meta(i: usize) -> Meta {
    Meta {
        msg_id: format!("r.{i}"),
        from: "a@b.test".into(),
        rcpts: vec![format!("u{i}@c.test")],
        received_ns: i as u64,
    }
}

/// Stores one 4 KiB message; `Ok(id)` once durable.
async fn store(s: &LogSpool, i: usize) -> std::io::Result<SpoolId> {
    s.store(meta(i), Arc::new(vec![b'x'; 4096]))
        .await
        .map_err(|_| std::io::Error::other("committer gone"))?
}

#[tokio::test]
async fn a_full_disk_refuses_then_recovers_and_never_resurrects_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let _fs = match Tmpfs::mount(dir.path(), "2m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: {why} (CI runs this as root)");
            return;
        }
    };
    // Room to free later, as an operator would.
    let filler = dir.path().join("filler");
    std::fs::write(&filler, vec![0u8; 512 << 10]).unwrap();
    let spool_dir = dir.path().join("spool");
    let s = LogSpool::open(&spool_dir).unwrap();

    let mut acked: HashSet<String> = HashSet::new();
    let mut refused: HashSet<String> = HashSet::new();
    let mut i = 0;
    // Fill the disk: stores are acknowledged until it is full, then refused.
    while refused.is_empty() {
        match store(&s, i).await {
            Ok(_) => acked.insert(format!("r.{i}")),
            Err(e) => {
                assert!(e.to_string().contains("spool write failed"), "{e}");
                refused.insert(format!("r.{i}"))
            }
        };
        i += 1;
        assert!(i < 2000, "a 2 MiB disk must fill up");
    }
    // Still full: refused again (at once, during the backoff, or after a retry).
    for _ in 0..3 {
        assert!(store(&s, i).await.is_err());
        refused.insert(format!("r.{i}"));
        i += 1;
    }
    // Free space: the spool takes stores again by itself, within its longest backoff.
    std::fs::remove_file(&filler).unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        match store(&s, i).await {
            Ok(_) => {
                acked.insert(format!("r.{i}"));
                break;
            }
            Err(_) => refused.insert(format!("r.{i}")),
        };
        i += 1;
        assert!(
            Instant::now() < until,
            "the spool did not recover after space was freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..5 {
        store(&s, i).await.expect("stores work again");
        acked.insert(format!("r.{i}"));
        i += 1;
    }
    drop(s);

    // A restart recovers exactly what was acknowledged.
    let s = LogSpool::open(&spool_dir).unwrap();
    let back: HashSet<String> = s.recover().unwrap().into_iter().map(|r| r.meta.msg_id).collect();
    let resurrected: Vec<&String> = back.intersection(&refused).collect();
    assert!(resurrected.is_empty(), "refused messages came back: {resurrected:?}");
    assert_eq!(back, acked, "every acknowledged message, and only those");
    assert!(
        refused.len() >= 4 && acked.len() > 100,
        "{} refused, {} acked",
        refused.len(),
        acked.len()
    );
}
