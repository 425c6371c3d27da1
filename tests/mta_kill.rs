//! Durability under SIGKILL: submit mail to reference-MTA nodes under load and `kill -9` a
//! process each round; every message that got a 250 must reach the inbox, and none that was
//! refused for good may. Submitters retry a refused message as an MTA retries a 4xx, until it
//! is accepted; a message whose refused attempt was stored anyway (the queue server died
//! between its write and its acknowledgement) must then arrive once, not twice. Duplicates
//! are allowed (at-least-once) and counted. Three cases:
//!
//! - local spool: the node is killed and restarted on its spool;
//! - shared queue (`spool: nats`), two nodes: one is killed and stays dead for a round while
//!   the other takes over its messages after their lease, then comes back;
//! - shared queue, the nats-server is killed and restarted on its store: nodes answer 4xx at
//!   DATA while it is away.
//!
//! The suite runs 2 kill rounds of each; `scripts/kill-test.sh` runs 10
//! (`MAILSURGE_KILL_ROUNDS`).

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mailsurge::smtp::{Client, ClientConfig};

/// Submission tasks, each with its own connection.
const SUBMITTERS: usize = 8;
/// Acknowledged messages between kills.
const ACKED_PER_ROUND: usize = 300;
const NODE_CFG: &str = "relay_networks: [127.0.0.0/8]\n\
                        retry: { initial: 100ms, factor: 2, max_delay: 1s, jitter: 10%, give_up: 60s }\n";

#[test]
fn sigkill_of_a_node_on_its_local_spool_loses_nothing_acknowledged() {
    kill_rounds(Victim::LocalNode);
}

#[test]
fn sigkill_of_a_node_on_the_shared_queue_loses_nothing_acknowledged() {
    kill_rounds(Victim::SharedNode);
}

#[test]
fn sigkill_of_the_nats_server_loses_nothing_acknowledged() {
    kill_rounds(Victim::NatsServer);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Victim {
    LocalNode,
    SharedNode,
    NatsServer,
}

/// What the submitters saw.
#[derive(Default)]
struct Ledger {
    acked: HashSet<String>,
    /// Answered 4xx/5xx at DATA at least once (then retried).
    refused: HashSet<String>,
}

fn rounds() -> usize {
    std::env::var("MAILSURGE_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn node(dir: &Path, name: &str, inbox: SocketAddr, spool: &TestSpool) -> Proc {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    start_node_on(spool, &d, name, inbox, NODE_CFG)
}

fn kill(p: &mut Proc) {
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

fn kill_rounds(victim: Victim) {
    let rounds = rounds();
    let dir = tempdir();
    let receipts = dir.path().join("receipts.jsonl");
    let inbox = start_inbox(dir.path(), "generic");
    let mut spool = TestSpool::new(victim != Victim::LocalNode, dir.path());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let targets: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let mut submitters = Vec::new();
    for k in 0..SUBMITTERS {
        let (ledger, targets, stop, seq) = (ledger.clone(), targets.clone(), stop.clone(), seq.clone());
        submitters.push(rt.spawn(submitter(k, ledger, targets, stop, seq)));
    }
    let acked = |l: &Arc<Mutex<Ledger>>| l.lock().unwrap().acked.len();

    let mut nodes: Vec<Option<Proc>> = match victim {
        Victim::SharedNode => vec![
            Some(node(dir.path(), "k-1", inbox.addr, &spool)),
            Some(node(dir.path(), "k-2", inbox.addr, &spool)),
        ],
        _ => vec![Some(node(dir.path(), "k-1", inbox.addr, &spool))],
    };
    let mut kills = 0;
    for round in 0..=rounds {
        *targets.lock().unwrap() = nodes.iter().flatten().map(|p| p.addr).collect();
        let want = (round + 1) * ACKED_PER_ROUND;
        let until = Instant::now() + Duration::from_secs(60);
        while acked(&ledger) < want {
            assert!(Instant::now() < until, "submission stalled at {}", acked(&ledger));
            std::thread::sleep(Duration::from_millis(5));
        }
        if round == rounds {
            break;
        }
        // kill -9 in the middle of the load.
        match victim {
            Victim::LocalNode => {
                let mut p = nodes[0].take().unwrap();
                kill(&mut p);
                *targets.lock().unwrap() = Vec::new();
                nodes[0] = Some(node(dir.path(), "k-1", inbox.addr, &spool));
            }
            Victim::SharedNode => {
                // Last round's victim comes back; this round's dies and stays dead while its
                // peer takes over what it held.
                for (i, n) in nodes.iter_mut().enumerate() {
                    if n.is_none() {
                        *n = Some(node(dir.path(), &format!("k-{}", i + 1), inbox.addr, &spool));
                    }
                }
                let i = round % 2;
                let mut p = nodes[i].take().unwrap();
                kill(&mut p);
            }
            Victim::NatsServer => {
                let TestSpool::Nats(n) = &mut spool else { unreachable!() };
                n.kill();
                std::thread::sleep(Duration::from_millis(500));
                n.restart();
            }
        }
        kills += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for s in submitters {
        rt.block_on(s).expect("a submitter panicked");
    }
    assert_eq!(kills, rounds);

    let Ledger { acked, refused } = std::mem::take(&mut *ledger.lock().unwrap());
    let received = wait_for(Duration::from_secs(60), || {
        let counts = receipt_counts(&receipts);
        acked.iter().all(|id| counts.contains_key(id)).then_some(counts)
    });
    if received.is_none() {
        let counts = receipt_counts(&receipts);
        let missing: Vec<&String> = acked.iter().filter(|id| !counts.contains_key(*id)).take(10).collect();
        panic!("{victim:?}: acknowledged messages never delivered (first 10 of the missing): {missing:?}");
    }
    // Anything still on its way arrives within a lease and a retry; then nothing refused may
    // have arrived.
    std::thread::sleep(TEST_LEASE + Duration::from_secs(1));
    let counts = receipt_counts(&receipts);
    let duplicates: u32 = counts.values().map(|n| n - 1).sum();
    let unacked_delivered = counts.keys().filter(|id| !acked.contains(*id)).count();
    // Refused and never accepted on a retry (the load stopped first): must not arrive.
    let refused_delivered: Vec<&String> = refused
        .iter()
        .filter(|id| !acked.contains(*id) && counts.contains_key(*id))
        .collect();
    let retried = refused.iter().filter(|id| acked.contains(*id)).count();
    // A retry whose refused attempt was stored anyway is answered from the stored copy.
    let retried_twice = refused
        .iter()
        .filter(|id| acked.contains(*id) && counts.get(*id).is_some_and(|&n| n > 1))
        .count();
    eprintln!(
        "kill test ({victim:?}): {kills} kills, {} acknowledged, 0 lost, {duplicates} duplicates, \
         {} refused ({retried} accepted on a retry, {retried_twice} of them delivered twice), \
         {} refused for good but delivered, \
         {unacked_delivered} delivered without a reply",
        acked.len(),
        refused.len(),
        refused_delivered.len(),
    );
    assert!(
        refused_delivered.is_empty(),
        "{victim:?}: refused at DATA and delivered anyway: {refused_delivered:?}"
    );
    for p in nodes.into_iter().flatten() {
        assert!(p.terminate().success());
    }
    drop(inbox);
}

/// Delivered copies per message id, from the inbox's receipts.
fn receipt_counts(receipts: &Path) -> HashMap<String, u32> {
    let text = std::fs::read_to_string(receipts).unwrap_or_default();
    let mut counts: HashMap<String, u32> = HashMap::new();
    for l in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        if let Some(id) = v["mailsurge_id"].as_str() {
            *counts.entry(id.to_string()).or_default() += 1;
        }
    }
    counts
}

/// Submits numbered messages to the current targets (submitter `k` to target `k mod n`),
/// one connection at a time, until `stop`.
async fn submitter(
    k: usize,
    ledger: Arc<Mutex<Ledger>>,
    targets: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
) {
    let cfg = ClientConfig::default();
    let mut client: Option<Client> = None;
    // A refused message is sent again (same id, same bytes) until it is accepted — after the
    // load stops too, for up to 10 s, as a sender's queue would.
    let mut pending: Option<String> = None;
    let mut stopped_at: Option<std::time::Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            let since = *stopped_at.get_or_insert_with(std::time::Instant::now);
            if pending.is_none() || since.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        let addr = {
            let t = targets.lock().unwrap();
            (!t.is_empty()).then(|| t[k % t.len()])
        };
        let Some(addr) = addr else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if client.as_ref().is_none_or(|c| !c.is_usable() || c.peer_addr() != addr) {
            client = Client::connect(addr, &cfg).await.ok();
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        let Some(c) = client.as_mut() else { continue };
        let id = pending
            .take()
            .unwrap_or_else(|| format!("kill.{}", seq.fetch_add(1, Ordering::Relaxed)));
        let body = format!(
            "From: s@k.test\r\nX-Mailsurge-Id: {id}\r\nSubject: k\r\n\r\n{}\r\n",
            "x".repeat(1000)
        );
        match c
            .send("s@k.test", &["u@example.com".to_string()], body.as_bytes())
            .await
        {
            Ok(out) if out.accepted() => {
                ledger.lock().unwrap().acked.insert(id);
            }
            Ok(out) if out.final_reply().code >= 400 => {
                ledger.lock().unwrap().refused.insert(id.clone());
                pending = Some(id);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => {
                // No reply: as a sender would, try the same message again.
                pending = Some(id);
                client = None;
            }
        }
    }
}
