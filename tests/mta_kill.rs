//! Durability under SIGKILL: submit mail to a reference-MTA node under load, `kill -9` it,
//! restart it on the same spool, repeat; every message that got a 250 must reach the inbox.
//! Duplicates are allowed (at-least-once) and counted.
//!
//! The suite runs 2 kill rounds; `scripts/kill-test.sh` runs 10 (`MAILSURGE_KILL_ROUNDS`).

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mailsurge::smtp::{Client, ClientConfig};

/// Submission tasks, each with its own connection.
const SUBMITTERS: usize = 8;
/// Acknowledged messages between kills.
const ACKED_PER_ROUND: usize = 300;

#[test]
fn sigkill_under_load_loses_nothing_acknowledged() {
    let rounds: usize = std::env::var("MAILSURGE_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let dir = tempdir();
    let receipts = dir.path().join("receipts.jsonl");
    let inbox = start_inbox(dir.path(), "generic");
    let node_cfg = "relay_networks: [127.0.0.0/8]\n\
                    retry: { initial: 100ms, factor: 2, max_delay: 1s, jitter: 10%, give_up: 60s }\n";

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut submitters = Vec::new();
    for _ in 0..SUBMITTERS {
        let (acked, target, stop, seq) = (acked.clone(), target.clone(), stop.clone(), seq.clone());
        submitters.push(rt.spawn(async move {
            let cfg = ClientConfig::default();
            let mut client: Option<Client> = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(addr) = *target.lock().unwrap() else {
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
                let id = format!("kill.{}", seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                let body = format!(
                    "From: s@k.test\r\nX-Mailsurge-Id: {id}\r\nSubject: k\r\n\r\n{}\r\n",
                    "x".repeat(1000)
                );
                match c
                    .send("s@k.test", &["u@example.com".to_string()], body.as_bytes())
                    .await
                {
                    Ok(out) if out.accepted() => {
                        acked.lock().unwrap().insert(id);
                    }
                    _ => client = None,
                }
            }
        }));
    }

    let mut node = start_node(dir.path(), "k-1", inbox.addr, node_cfg);
    let mut kills = 0;
    for round in 0..=rounds {
        *target.lock().unwrap() = Some(node.addr);
        let want = (round + 1) * ACKED_PER_ROUND;
        let until = Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < want {
            assert!(
                Instant::now() < until,
                "submission stalled at {}",
                acked.lock().unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        if round == rounds {
            break;
        }
        // kill -9 in the middle of the load, then restart on the same spool.
        node.child.kill().unwrap();
        node.child.wait().unwrap();
        kills += 1;
        *target.lock().unwrap() = None;
        node = start_node(dir.path(), "k-1", inbox.addr, node_cfg);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in submitters {
        rt.block_on(s).expect("a submitter panicked");
    }
    assert_eq!(kills, rounds);

    let acked = acked.lock().unwrap().clone();
    let received = wait_for(Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&receipts).unwrap_or_default();
        let mut counts: HashMap<String, u32> = HashMap::new();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            if let Some(id) = v["mailsurge_id"].as_str() {
                *counts.entry(id.to_string()).or_default() += 1;
            }
        }
        acked.iter().all(|id| counts.contains_key(id)).then_some(counts)
    });
    let Some(counts) = received else {
        let text = std::fs::read_to_string(&receipts).unwrap_or_default();
        let missing: Vec<&String> = acked
            .iter()
            .filter(|id| !text.contains(&format!("\"{id}\"")))
            .take(10)
            .collect();
        panic!("acknowledged messages never delivered (first 10): {missing:?}");
    };
    let duplicates: u32 = counts.values().map(|n| n - 1).sum();
    let unacked_delivered = counts.keys().filter(|id| !acked.contains(*id)).count();
    eprintln!(
        "kill test: {kills} kills, {} acknowledged, 0 lost, {duplicates} duplicates, {unacked_delivered} delivered without an ack",
        acked.len()
    );
    assert!(node.terminate().success());
    drop(inbox);
}
