//! The MTA's SMTP ingress policy: relay only for configured networks, spool durably, then 250.
//!
//! The protocol (PIPELINING, SIZE, line limits, bare-LF rejection) is [`crate::smtp::server`];
//! this is the part that decides, like Postfix's `smtpd` restrictions plus `cleanup`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ipnet::IpNet;

use super::eventlog::EventLog;
use super::queue::Queues;
use super::spool::{Meta, Spool};
use crate::events::{now_ns, Event, Identity, Kind};
use crate::smtp::{Decision, Envelope, Policy, Reply, SessionInfo};

pub struct Ingress {
    pub hostname: String,
    pub relay_networks: Vec<IpNet>,
    pub spool: Arc<dyn Spool>,
    pub queues: Arc<Queues>,
    pub events: Arc<EventLog>,
    pub spool_failures: FailureLog,
    /// STARTTLS at ingress, when the node has a certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// AUTH at ingress, when the node has users.
    pub auth: Option<Auth>,
}

/// Who may log in, and from where an authenticated client may relay.
pub struct Auth {
    pub users: super::users::Users,
    /// AUTH only after STARTTLS.
    pub tls_only: bool,
    /// Loopback plus the node's `network.allow`: an authenticated client relays from any of
    /// them (SPEC §13), an unauthenticated one only from `relay_networks`.
    pub networks: crate::scenario::Allow,
}

/// Spool write failures, logged at most once a second with how many there were: a shared
/// queue's server going away answers every DATA 451, and a line each would bury the log.
#[derive(Debug, Default)]
pub struct FailureLog {
    /// The second (since epoch) of the last line.
    last_s: AtomicU64,
    /// Failures since the last line.
    since: AtomicU64,
}

impl FailureLog {
    fn note(&self, why: &dyn std::fmt::Display) {
        let n = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ns() / 1_000_000_000;
        let last = self.last_s.load(Ordering::Relaxed);
        if now > last
            && self
                .last_s
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.since.store(0, Ordering::Relaxed);
            tracing::error!("spool write failed: {why} ({n} DATA answered 451 since the last such line)");
        }
    }
}

impl Ingress {
    /// A relay network's client, or an authenticated one from an allowed network.
    fn may_relay(&self, s: &SessionInfo) -> bool {
        let ip = s.peer.ip();
        self.in_relay_networks(s)
            || self
                .auth
                .as_ref()
                .is_some_and(|a| s.auth.is_some() && a.networks.permits(ip))
    }

    fn in_relay_networks(&self, s: &SessionInfo) -> bool {
        let ip = s.peer.ip();
        self.relay_networks.iter().any(|n| n.contains(&ip))
    }
}

impl Policy for Ingress {
    fn starttls(&self, _s: &SessionInfo) -> crate::smtp::StartTls {
        self.tls
            .clone()
            .map_or(crate::smtp::StartTls::NotOffered, crate::smtp::StartTls::Offer)
    }

    fn auth(&self, _s: &SessionInfo) -> crate::smtp::AuthOffer {
        match &self.auth {
            None => crate::smtp::AuthOffer::NotOffered,
            Some(a) if a.tls_only => crate::smtp::AuthOffer::AfterTls,
            Some(_) => crate::smtp::AuthOffer::Offered,
        }
    }

    async fn login(&self, s: &SessionInfo, c: &crate::smtp::Credentials) -> Decision {
        if self.auth.as_ref().is_some_and(|a| a.users.check(c)) {
            tracing::debug!(conn_id = s.conn_id, peer = %s.peer, user = %c.user, "authenticated");
            return Decision::reply(Reply::new(235, Some("2.7.0"), "Authentication successful"));
        }
        tracing::debug!(conn_id = s.conn_id, peer = %s.peer, user = %c.user, "authentication failed");
        Decision::reply(Reply::new(535, Some("5.7.8"), "Authentication credentials invalid"))
    }

    /// With AUTH on, a client that may not relay unauthenticated is told to log in first
    /// (RFC 4954 §6) instead of learning at RCPT that relaying is denied.
    async fn mail(&self, s: &SessionInfo, _from: &str, _size: Option<usize>) -> Decision {
        if self.auth.is_some() && s.auth.is_none() && !self.in_relay_networks(s) {
            return Decision::reply(Reply::new(530, Some("5.7.0"), "Authentication required"));
        }
        Decision::reply(Reply::new(250, Some("2.1.0"), "Ok"))
    }

    async fn connect(&self, _s: &SessionInfo) -> Decision {
        Decision::reply(Reply::new(
            220,
            None,
            &format!("{} ESMTP mailsurge reference MTA", self.hostname),
        ))
    }

    async fn rcpt(&self, s: &SessionInfo, _env: &Envelope, rcpt: &str) -> Decision {
        if !self.may_relay(s) {
            return Decision::reply(Reply::new(
                554,
                Some("5.7.1"),
                &format!("<{rcpt}>: Relay access denied"),
            ));
        }
        if !rcpt.contains('@') {
            return Decision::reply(Reply::new(
                550,
                Some("5.1.3"),
                &format!("<{rcpt}>: Recipient address needs a domain"),
            ));
        }
        Decision::reply(Reply::new(250, Some("2.1.5"), "Ok"))
    }

    async fn message(&self, _s: &SessionInfo, env: &Envelope, body: Vec<u8>) -> Decision {
        let ident = Identity::parse(&body);
        let received_ns = now_ns();
        let provisional = ident.mailsurge_id.or(ident.message_id);
        let meta = Meta {
            msg_id: provisional.clone().unwrap_or_default(),
            from: env.from.clone(),
            rcpts: env.rcpts.clone(),
            received_ns,
        };
        let body = std::sync::Arc::new(body);
        let stored = self.spool.store(meta.clone(), body.clone()).await;
        let mut meta = meta;
        let spool_id = match stored {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => {
                self.spool_failures.note(&e);
                return Decision::reply(Reply::new(
                    451,
                    Some("4.3.0"),
                    "Temporary failure writing the spool, try again",
                ));
            }
            Err(_) => {
                self.spool_failures.note(&"the spool's committer went away");
                return Decision::reply(Reply::new(451, Some("4.3.0"), "Temporary local problem, try again"));
            }
        };
        if meta.msg_id.is_empty() {
            // Foreign mail without a Message-ID is tracked by its spool id.
            meta.msg_id = format!("{spool_id:016x}");
        }
        for rcpt in &meta.rcpts {
            let mut e = Event::new(now_ns(), meta.msg_id.clone(), Kind::Accepted);
            e.rcpt = Some(rcpt.clone());
            e.code = Some(250);
            self.events.emit(e);
        }
        let reply = Reply::new(250, Some("2.0.0"), &format!("Ok: queued as {spool_id:016X}"));
        // A shared queue hands the message to whichever node takes it (this one included).
        if !self.spool.shared() {
            self.queues.submit(spool_id, meta, body, true);
        }
        Decision::reply(reply)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::sync::{oneshot, watch};

    use super::*;
    use crate::mta::spool::{Recovered, SpoolId};

    /// A spool at the durability boundary: it holds every store's answer until the test says
    /// the write is durable (or failed), and records the order of "durable" and "replied".
    #[derive(Default)]
    struct HeldSpool {
        held: Mutex<Vec<oneshot::Sender<std::io::Result<SpoolId>>>>,
        order: Mutex<Vec<&'static str>>,
    }

    impl HeldSpool {
        fn settle(&self, r: std::io::Result<SpoolId>) {
            let tx = crate::sync::lock(&self.held).pop().expect("a store is waiting");
            crate::sync::lock(&self.order).push("durable");
            tx.send(r).unwrap();
        }
    }

    impl Spool for HeldSpool {
        fn store(&self, _meta: Meta, _body: Arc<Vec<u8>>) -> oneshot::Receiver<std::io::Result<SpoolId>> {
            let (tx, rx) = oneshot::channel();
            crate::sync::lock(&self.held).push(tx);
            rx
        }
        fn read(&self, id: SpoolId) -> std::io::Result<(Meta, Vec<u8>)> {
            Err(std::io::Error::other(format!("{id} is not readable in this test")))
        }
        fn remove(&self, _id: SpoolId) {}
        fn recover(&self) -> std::io::Result<Vec<Recovered>> {
            Ok(Vec::new())
        }
    }

    fn ingress(dir: &std::path::Path, spool: Arc<HeldSpool>) -> (Ingress, watch::Sender<bool>) {
        let cfg: crate::mta::NodeConfig = serde_norway::from_str(
            "node: t-1\nregion: t\nlisten: 127.0.0.1:0\nrelay_networks: [127.0.0.0/8]\n\
             spool: { kind: local, dir: spool }\nroutes: {}\nevents: events.jsonl\n",
        )
        .unwrap();
        let events = Arc::new(EventLog::open(&dir.join("events.jsonl"), "t-1", "t").unwrap());
        let responses = crate::mta::responses::ResponseTable::shipped();
        let (stop, stopping) = watch::channel(false);
        let spool: Arc<dyn Spool> = spool;
        let queues = Queues::new(
            Arc::new(cfg),
            responses,
            spool.clone(),
            events.clone(),
            stopping,
            Default::default(),
        );
        let ingress = Ingress {
            hostname: "t-1.mailsurge.test".into(),
            relay_networks: vec!["127.0.0.0/8".parse().unwrap()],
            spool,
            queues,
            events,
            spool_failures: FailureLog::default(),
            tls: None,
            auth: None,
        };
        (ingress, stop)
    }

    /// The 250 after the final dot is the MTA's promise to deliver: it must not go out before
    /// the spool says the message is durable, and a write that fails must be a 4xx. A SIGKILL
    /// keeps the page cache, so no kill test can tell a synced 250 from an unsynced one; this
    /// one can, at the boundary where the sync is awaited.
    #[tokio::test]
    async fn the_250_waits_for_the_spool_to_be_durable() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(HeldSpool::default());
        let (ingress, _stop) = ingress(dir.path(), spool.clone());
        let s = SessionInfo {
            conn_id: 1,
            peer: "127.0.0.1:40000".parse().unwrap(),
            local: "127.0.0.1:25".parse().unwrap(),
            helo: Some("client.test".into()),
            transactions: 0,
            tls: None,
            auth: None,
        };
        let env = Envelope {
            from: "a@sender.test".into(),
            size_hint: None,
            rcpts: vec!["b@nowhere.test".into()],
            size: 40,
        };
        let body = b"Message-ID: <1@t>\r\n\r\nbody\r\n".to_vec();

        let answer = ingress.message(&s, &env, body.clone());
        tokio::pin!(answer);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut answer)
                .await
                .is_err(),
            "replied before the spool was durable"
        );
        spool.settle(Ok(7));
        let d = answer.await;
        crate::sync::lock(&spool.order).push("replied");
        assert_eq!(d.reply.code, 250, "{}", d.reply);
        assert_eq!(*crate::sync::lock(&spool.order), ["durable", "replied"]);

        // A failed write is a temporary failure: the client keeps the message.
        let answer = ingress.message(&s, &env, body);
        tokio::pin!(answer);
        assert!(tokio::time::timeout(Duration::from_millis(100), &mut answer)
            .await
            .is_err());
        spool.settle(Err(std::io::Error::other("disk full")));
        let d = answer.await;
        assert_eq!(
            (d.reply.code, d.reply.enhanced.as_deref()),
            (451, Some("4.3.0")),
            "{}",
            d.reply
        );
    }
}
