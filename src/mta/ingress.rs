//! The MTA's SMTP ingress policy: relay only for configured networks, spool durably, then 250.
//!
//! The protocol (PIPELINING, SIZE, line limits, bare-LF rejection) is [`crate::smtp::server`];
//! this is the part that decides, like Postfix's `smtpd` restrictions plus `cleanup`.

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
}

impl Ingress {
    fn may_relay(&self, s: &SessionInfo) -> bool {
        let ip = s.peer.ip();
        self.relay_networks.iter().any(|n| n.contains(&ip))
    }
}

impl Policy for Ingress {
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
                tracing::error!("spool write failed: {e}");
                return Decision::reply(Reply::new(
                    451,
                    Some("4.3.0"),
                    "Temporary failure writing the spool, try again",
                ));
            }
            Err(_) => {
                tracing::error!("spool committer went away");
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
        self.queues.submit(spool_id, meta, body, true);
        Decision::reply(reply)
    }
}
