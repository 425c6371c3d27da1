//! A mock provider in the model: the inbox's own rule engine on virtual time, asked stage by
//! stage as a real session asks it, plus the listener-level faults (`kill` modes) that act
//! before any rule. What an attempt gets back is what the MTA's SMTP client would have read.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::inbox::engine::{Context, Engine};
use crate::inbox::rules::{Behaviour, Stage};
use crate::inbox::RuleSet;
use crate::scenario::KillMode;
use crate::smtp::Reply;

/// An open connection from one egress address.
#[derive(Debug, Clone)]
pub struct Conn {
    pub ip: IpAddr,
    pub id: u64,
    /// Transactions completed on it.
    pub sent: u32,
}

/// What one delivery attempt got: a final reply per recipient, how long the conversation took
/// (scripted latency only; the caller adds its own time), and whether the connection survived.
#[derive(Debug)]
pub struct Attempt {
    pub replies: Vec<Reply>,
    pub took: Duration,
    pub conn: Option<Conn>,
}

/// One provider of the model.
pub struct SimProvider {
    pub name: String,
    pub engine: Engine,
    mx: u32,
    /// Killed: how, and which MX host (all when `None`).
    down: Option<(KillMode, Option<u32>)>,
    next_conn: u64,
    helo: String,
}

impl SimProvider {
    pub fn new(
        name: &str,
        rules: RuleSet,
        pools: BTreeMap<String, Vec<IpAddr>>,
        seed: u64,
        mx: u32,
        start: Instant,
    ) -> SimProvider {
        SimProvider {
            name: name.to_string(),
            engine: Engine::new_at(rules, pools, seed, start),
            mx: mx.max(1),
            down: None,
            next_conn: 1,
            helo: "node.mailsurge.test".into(),
        }
    }

    pub fn kill(&mut self, mode: KillMode, mx: Option<u32>) {
        self.down = Some((mode, mx));
    }

    pub fn restore(&mut self) {
        self.down = None;
    }

    /// The kill that stops every attempt: all MX hosts down. With one of several down the MTA
    /// walks on to the next host (RFC 5321 §5.1) and the attempt goes through.
    fn unreachable(&self) -> Option<KillMode> {
        match self.down {
            Some((mode, None)) => Some(mode),
            Some((mode, Some(_))) if self.mx == 1 => Some(mode),
            _ => None,
        }
    }

    /// The connection closes: the engine's per-IP connection count goes down.
    pub fn close(&self, c: Conn) {
        self.engine.disconnected(c.ip, c.id);
    }

    /// One transaction of `rcpts` from `from` (`size` bytes) over `conn` (reused when it comes
    /// from `ip`, else a new one), at virtual time `now`; `timeout` is what a silent host
    /// costs.
    #[allow(clippy::too_many_arguments)]
    pub fn attempt(
        &mut self,
        conn: Option<Conn>,
        ip: IpAddr,
        from: &str,
        rcpts: &[String],
        size: usize,
        now: Instant,
        timeout: Duration,
    ) -> Attempt {
        let tx = Tx { from, size, timeout };
        let all = |r: Reply, took: Duration, conn: Option<Conn>| Attempt {
            replies: vec![r; rcpts.len()],
            took,
            conn,
        };
        if let Some(mode) = self.unreachable() {
            if let Some(c) = conn {
                self.close(c);
            }
            let host = format!("mx1.{}", self.name);
            return match mode {
                KillMode::Refuse => all(
                    Reply::new(
                        451,
                        Some("4.4.1"),
                        &format!("cannot connect to {host}: Connection refused (os error 111)"),
                    ),
                    Duration::ZERO,
                    None,
                ),
                KillMode::Reset => all(
                    lost(&host, "Connection reset by peer (os error 104)"),
                    Duration::ZERO,
                    None,
                ),
                KillMode::Blackhole => all(lost(&host, "timed out"), timeout, None),
                // Not a kill mode (the `tls` action's; checked at load), but answered as what
                // it would look like to an MTA that requires TLS.
                KillMode::HandshakeFail | KillMode::ExpiredCert => all(
                    Reply::new(451, Some("4.7.5"), &format!("TLS with {host} failed")),
                    Duration::ZERO,
                    None,
                ),
            };
        }
        let mut took = Duration::ZERO;
        let mut c = match conn {
            Some(c) if c.ip == ip => c,
            other => {
                if let Some(old) = other {
                    self.close(old);
                }
                self.engine.connected(ip);
                let c = Conn {
                    ip,
                    id: self.next_conn,
                    sent: 0,
                };
                self.next_conn += 1;
                let greeting = Reply::new(220, None, "mock inbox ESMTP");
                for (stage, default) in [(Stage::Connect, greeting), (Stage::Ehlo, Reply::new(250, None, "ok"))] {
                    match self.ask(&c, &tx, stage, &[], default, now + took) {
                        Step::Reply(r, d, close) => {
                            took += d;
                            if !r.is_success() {
                                self.close(c);
                                return all(r, took, None);
                            }
                            if close {
                                self.close(c);
                                return all(lost("host", "closed after greeting"), took, None);
                            }
                        }
                        Step::Hangup(r, d) => {
                            self.close(c);
                            return all(r, took + d, None);
                        }
                    }
                }
                c
            }
        };
        let mut closing = false;
        let mut replies: Vec<Option<Reply>> = vec![None; rcpts.len()];
        match self.ask(
            &c,
            &tx,
            Stage::Mail,
            &[],
            Reply::new(250, Some("2.1.0"), "Ok"),
            now + took,
        ) {
            Step::Reply(r, d, close) => {
                took += d;
                closing |= close;
                if !r.is_success() {
                    return self.end(c, all(r, took, None), true);
                }
            }
            Step::Hangup(r, d) => return self.end(c, all(r, took + d, None), true),
        }
        for (i, rcpt) in rcpts.iter().enumerate() {
            if closing {
                replies[i] = Some(lost("host", "closed during RCPT"));
                continue;
            }
            let one = [rcpt.clone()];
            match self.ask(
                &c,
                &tx,
                Stage::Rcpt,
                &one,
                Reply::new(250, Some("2.1.5"), "Ok"),
                now + took,
            ) {
                Step::Reply(r, d, close) => {
                    took += d;
                    closing |= close;
                    if !r.is_success() {
                        replies[i] = Some(r);
                    }
                }
                Step::Hangup(r, d) => {
                    took += d;
                    closing = true;
                    replies[i] = Some(r);
                }
            }
        }
        let accepted: Vec<String> = rcpts
            .iter()
            .zip(&replies)
            .filter(|(_, r)| r.is_none())
            .map(|(x, _)| x.clone())
            .collect();
        if !accepted.is_empty() && !closing {
            let fin = match self.ask(
                &c,
                &tx,
                Stage::Data,
                &accepted,
                Reply::new(354, None, "Go ahead"),
                now + took,
            ) {
                Step::Reply(r, d, close) => {
                    took += d;
                    closing |= close;
                    if r.code == 354 && !closing {
                        let done = Reply::new(250, Some("2.0.0"), "Ok: queued");
                        match self.ask(&c, &tx, Stage::Message, &accepted, done, now + took) {
                            Step::Reply(r, d, close) => {
                                took += d;
                                closing |= close;
                                r
                            }
                            Step::Hangup(r, d) => {
                                took += d;
                                closing = true;
                                r
                            }
                        }
                    } else if r.code == 354 {
                        lost("host", "closed after DATA")
                    } else {
                        r
                    }
                }
                Step::Hangup(r, d) => {
                    took += d;
                    closing = true;
                    r
                }
            };
            for r in replies.iter_mut().filter(|r| r.is_none()) {
                *r = Some(fin.clone());
            }
        }
        c.sent += 1;
        let replies = replies
            .into_iter()
            .map(|r| r.unwrap_or_else(|| lost("host", "no reply")))
            .collect();
        self.end(
            c,
            Attempt {
                replies,
                took,
                conn: None,
            },
            closing,
        )
    }

    /// Finishes an attempt: the connection stays open unless the host closed it.
    fn end(&self, c: Conn, mut a: Attempt, closing: bool) -> Attempt {
        if closing {
            self.close(c);
        } else {
            a.conn = Some(c);
        }
        a
    }

    /// One stage of a transaction `tx` on `c`, asked of the engine at `now`.
    fn ask(&self, c: &Conn, tx: &Tx<'_>, stage: Stage, rcpts: &[String], default: Reply, now: Instant) -> Step {
        let (sender, size, timeout) = (tx.from, Some(tx.size), tx.timeout);
        let ctx = Context {
            stage,
            conn_id: c.id,
            ip: c.ip,
            helo: &self.helo,
            sender,
            rcpts,
            size,
            transactions: c.sent,
        };
        let v = self.engine.decide_at(&ctx, default, now);
        match (v.reply, v.behaviour) {
            (Some(r), _) => Step::Reply(r, v.delay, v.close),
            (None, Some(Behaviour::Blackhole)) => Step::Hangup(lost("host", "timed out"), timeout),
            (None, Some(Behaviour::Reset)) => Step::Hangup(lost("host", "Connection reset by peer"), v.delay),
            (None, _) => Step::Hangup(lost("host", "connection closed"), v.delay),
        }
    }
}

/// What every stage of one transaction shares.
struct Tx<'a> {
    from: &'a str,
    size: usize,
    /// What a silent host costs.
    timeout: Duration,
}

/// A stage's answer: a reply after a delay (and whether the host then closes), or a hangup.
enum Step {
    Reply(Reply, Duration, bool),
    Hangup(Reply, Duration),
}

/// What the MTA's client reports for a connection that failed mid-conversation.
fn lost(host: &str, why: &str) -> Reply {
    Reply::new(451, Some("4.4.2"), &format!("connection to {host} lost: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gmail() -> SimProvider {
        let src = crate::config::Source::read(std::path::Path::new("mock-inboxes/gmail.yaml")).unwrap();
        let rules = RuleSet::from_source(&src).unwrap();
        SimProvider::new("gmail", rules, BTreeMap::new(), 1, 1, Instant::now())
    }

    /// 50 msg/s from one address is far under gmail's 600/s: nothing is rate limited.
    #[test]
    fn a_gentle_sender_is_not_rate_limited() {
        let mut p = gmail();
        let start = Instant::now();
        let ip: IpAddr = "127.0.1.1".parse().unwrap();
        let mut conn = None;
        let mut deferred = 0;
        for k in 0..1000u32 {
            let a = p.attempt(
                conn.take(),
                ip,
                "a@b.test",
                &[format!("user{k}@gmail.com")],
                4096,
                start + Duration::from_millis(20) * k,
                Duration::from_secs(30),
            );
            conn = a.conn;
            deferred += usize::from(!a.replies[0].is_success());
        }
        assert!(deferred < 10, "{deferred} of 1000 deferred");
    }
}
