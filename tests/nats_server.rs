//! The nats-server the shared queue runs on (`spool: nats`): installed without root on a fresh
//! machine, started with durable JetStream on loopback, SIGKILLed and restarted on the same
//! store and address; and a server too old to sync every write is refused, not run.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use mailsurge::nats::server::{check_version, NatsError, NatsServer, MAX_PAYLOAD};

#[tokio::test]
async fn a_durable_jetstream_server_starts_dies_and_comes_back_on_its_store() {
    let bin = nats_server_bin();
    check_version(&bin).expect("the installed server is new enough");
    let tmp = tempdir();
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 9, 1));
    let mut s = NatsServer::start(&bin, tmp.path(), ip)
        .await
        .expect("nats-server starts");
    assert!(s.info.jetstream, "{:?}", s.info);
    assert!(
        s.info.max_payload >= 10 * 1024 * 1024,
        "10 MiB bodies fit: {:?}",
        s.info
    );
    assert_eq!(s.info.max_payload, MAX_PAYLOAD);
    let conf = std::fs::read_to_string(tmp.path().join("nats.conf")).unwrap();
    assert!(conf.contains("sync_interval: always"), "{conf}");
    assert_eq!(s.addr.ip(), ip);

    // JetStream made its store where it was told.
    assert!(tmp.path().join("store/jetstream").is_dir(), "store dir");

    s.kill().await;
    assert!(
        tokio::net::TcpStream::connect(s.addr).await.is_err(),
        "a killed server refuses connections"
    );
    s.restart().await.expect("restarts on the same store and address");
    assert!(s.info.jetstream);
    assert!(tokio::net::TcpStream::connect(s.addr).await.is_ok());
    s.stop().await;
}

#[test]
fn a_server_that_cannot_sync_every_write_is_refused() {
    let tmp = tempdir();
    let old = tmp.path().join("nats-server");
    // Debian bookworm's package: JetStream without sync_interval.
    std::fs::write(&old, "#!/bin/sh\necho 'nats-server: v2.9.25'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = check_version(&old).unwrap_err();
    assert!(matches!(e, NatsError::TooOld { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("2.9.25") && text.contains("scripts/install-nats.sh"),
        "{text}"
    );

    std::fs::write(&old, "#!/bin/sh\necho 'nats-server: v2.10.0'\n").unwrap();
    check_version(&old).expect("2.10 syncs every write");
}

/// The store the shared queue is built on: a publish is answered with its sequence once the
/// server acknowledged it; the message can be fetched by sequence and deleted; and what was
/// acknowledged is still there after the server is SIGKILLed and restarted on its store (the
/// client reconnects by itself).
#[tokio::test]
async fn acknowledged_messages_survive_a_killed_server() {
    use mailsurge::nats::stream::Store;
    let bin = nats_server_bin();
    let tmp = tempdir();
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 9, 2));
    let mut s = NatsServer::start(&bin, tmp.path(), ip)
        .await
        .expect("nats-server starts");
    let url = format!("nats://{}", s.addr);
    let store = Store::open(&url, "spool").await.expect("stream");
    let mut seqs = Vec::new();
    for i in 0..3u8 {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Mailsurge-Rcpts", format!("user{i}@example.com").as_str());
        let body = bytes::Bytes::from(vec![b'a' + i; 64 * 1024]);
        seqs.push(
            store
                .publish("example.com", h, body)
                .await
                .expect("publish acknowledged"),
        );
    }
    assert_eq!(seqs, [1, 2, 3]);
    // The largest body a scenario on the shared queue may send (31 MiB) fits, with room for
    // its envelope.
    let big = bytes::Bytes::from(vec![b'z'; 31 << 20]);
    let mut h = async_nats::HeaderMap::new();
    h.insert("Mailsurge-Rcpts", "big@example.com");
    let big_seq = store.publish("example.com", h, big).await.expect("a 31 MiB body fits");
    store.delete(big_seq).await.unwrap();
    let (h, body) = store.get(2).await.unwrap();
    assert_eq!(h.get("Mailsurge-Rcpts").map(|v| v.as_str()), Some("user1@example.com"));
    assert_eq!((body.len(), body[0]), (64 * 1024, b'b'));
    store.delete(2).await.unwrap();
    assert!(store.get(2).await.is_err(), "a deleted message is gone");

    s.kill().await;
    s.restart().await.expect("restarts on its store");
    let mut left = None;
    for _ in 0..100 {
        if let (Ok(a), Ok(c)) = (store.get(1).await, store.get(3).await) {
            left = Some((a.1[0], c.1[0]));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left, Some((b'a', b'c')), "acknowledged messages kept across SIGKILL");
    assert!(store.get(2).await.is_err(), "and the deleted one stays deleted");
    s.stop().await;
}
