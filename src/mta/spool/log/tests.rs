//! The segment log against a real directory: recovery, torn tails, rotation, group commit.

use super::*;

fn meta(i: usize) -> Meta {
    Meta {
        msg_id: format!("r.{i}"),
        from: "a@b.test".into(),
        rcpts: vec![format!("u{i}@c.test")],
        received_ns: i as u64,
    }
}

async fn store_n(s: &LogSpool, n: usize) -> Vec<SpoolId> {
    let rxs: Vec<_> = (0..n)
        .map(|i| s.store(meta(i), Arc::new(format!("body {i}\r\n").into_bytes())))
        .collect();
    let mut ids = Vec::new();
    for rx in rxs {
        ids.push(rx.await.unwrap().unwrap());
    }
    ids
}

#[tokio::test]
async fn stores_recovers_and_forgets_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogSpool::open(dir.path()).unwrap();
    let ids = store_n(&s, 100).await;
    for id in &ids[..40] {
        s.remove(*id);
    }
    drop(s);
    let s = LogSpool::open(dir.path()).unwrap();
    let rec = s.recover().unwrap();
    assert_eq!(rec.len(), 60);
    assert_eq!(rec[0].meta, meta(40));
    assert_eq!(rec[0].body, b"body 40\r\n");
    assert_eq!(LogSpool::scan(dir.path()).unwrap().len(), 60);
    // New ids never collide with recovered ones.
    let more = store_n(&s, 1).await;
    assert!(!rec.iter().any(|r| r.id == more[0]));
}

#[tokio::test]
async fn torn_tail_is_cut_and_only_whole_records_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogSpool::open(dir.path()).unwrap();
    store_n(&s, 10).await;
    drop(s);
    let seg = seg_path(dir.path(), 1, "log");
    let good = fs::metadata(&seg).unwrap().len();
    // A crash mid-append: half a record, then garbage.
    OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&[1, 200, 0, 0, 0, 9, 9])
        .unwrap();
    let s = LogSpool::open(dir.path()).unwrap();
    assert_eq!(s.recover().unwrap().len(), 10);
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        good,
        "tail cut back to the last whole record"
    );
}

#[tokio::test]
async fn corrupt_record_stops_recovery_of_that_segment_there() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogSpool::open(dir.path()).unwrap();
    store_n(&s, 3).await;
    drop(s);
    let seg = seg_path(dir.path(), 1, "log");
    let mut bytes = fs::read(&seg).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0xff; // flip a body byte of the last record
    fs::write(&seg, bytes).unwrap();
    let s = LogSpool::open(dir.path()).unwrap();
    assert_eq!(s.recover().unwrap().len(), 2);
}

#[tokio::test]
async fn segments_rotate_and_finished_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogSpool::open_with(dir.path(), 256).unwrap();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.extend(store_n(&s, 2).await);
    }
    let segs = list_segments(dir.path()).unwrap();
    assert!(segs.len() > 3, "{segs:?}");
    for id in &ids {
        s.remove(*id);
    }
    // The committer acknowledges a batch before it rotates, so the last rotation (new
    // segment created, finished one deleted) may still be under way: give it a moment.
    let mut left = list_segments(dir.path()).unwrap();
    for _ in 0..100 {
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        left = list_segments(dir.path()).unwrap();
    }
    assert_eq!(left.len(), 1, "only the current segment stays: {left:?}");
    drop(s);
    let s = LogSpool::open(dir.path()).unwrap();
    assert!(s.recover().unwrap().is_empty());
}

/// Syncs started and finished, counted by a double at the sync boundary (it still calls
/// `fdatasync`, slowed down so batches form).
#[derive(Default)]
struct SyncLog {
    started: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicU64,
}

fn recording(log: &Arc<SyncLog>) -> SyncFn {
    let log = log.clone();
    Arc::new(move |f: &File| {
        use std::sync::atomic::Ordering::SeqCst;
        log.started.fetch_add(1, SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(2));
        f.sync_data()?;
        log.done.fetch_add(1, SeqCst);
        Ok(())
    })
}

/// The 250 waits for the disk: every store is answered only after a sync that *started after
/// it was queued* has finished — syncs run one after another on the committer thread, so that
/// is `done at the answer > started at the queueing`. Answering before the sync, or not syncing
/// at all (removing `sync_data` from the commit), fails this; SIGKILL tests cannot tell, since
/// the page cache survives a killed process. And concurrent stores share syncs: far fewer
/// syncs than stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_are_answered_only_after_a_shared_sync() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SyncLog::default());
    let s = Arc::new(LogSpool::open_syncing(dir.path(), SEGMENT_BYTES, recording(&log)).unwrap());
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (s, log) = (s.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let queued = log.started.load(SeqCst);
                let rx = s.store(meta(t * 100 + i), Arc::new(vec![b'x'; 1024]));
                rx.await.unwrap().unwrap();
                let done = log.done.load(SeqCst);
                assert!(
                    done > queued,
                    "store answered before a sync that began after it finished ({done} <= {queued})"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let syncs = log.done.load(SeqCst);
    drop(s);
    assert_eq!(LogSpool::scan(dir.path()).unwrap().len(), 400);
    assert!(
        syncs > 0 && syncs <= 200,
        "400 stores took {syncs} syncs: batches are not shared"
    );
    eprintln!("400 concurrent stores, {syncs} syncs");
}

#[tokio::test]
async fn a_clean_close_leaves_only_live_mail_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogSpool::open(dir.path()).unwrap();
    let ids = store_n(&s, 10).await;
    for id in &ids {
        s.remove(*id);
    }
    s.close();
    assert!(
        list_segments(dir.path()).unwrap().is_empty(),
        "the delivered segment is gone"
    );
    // With live mail the segment stays, and recovers.
    let s = LogSpool::open(dir.path()).unwrap();
    let ids = store_n(&s, 3).await;
    s.remove(ids[0]);
    s.close();
    drop(s);
    let s = LogSpool::open(dir.path()).unwrap();
    assert_eq!(s.recover().unwrap().len(), 2);
}
