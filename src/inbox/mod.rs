//! Mock inbox providers: SMTP servers that answer like gmail or yahoo would, from a scripted
//! rule table (SPEC §3), and emit a [`Receipt`] for every accepted message.
//!
//! Protocol handling is [`crate::smtp::server`]; this module is only policy: which reply, after
//! how long, and what to record. Run standalone with `mailsurge inbox`, or in-process by `run`.

pub mod receipt;
pub mod rules;

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use receipt::Receipt;
pub use rules::RuleSet;

use crate::smtp::{self, Decision, Envelope, Limits, Policy, Reply, ServerStats, SessionInfo};
use rules::{Context, Stage};

/// A mock inbox's policy: the provider's rules plus where receipts go.
pub struct Inbox {
    provider: String,
    rules: RwLock<Arc<RuleSet>>,
    seed: u64,
    receipts: mpsc::UnboundedSender<Receipt>,
}

impl Inbox {
    pub fn new(provider: &str, rules: RuleSet, seed: u64, receipts: mpsc::UnboundedSender<Receipt>) -> Inbox {
        Inbox {
            provider: provider.to_string(),
            rules: RwLock::new(Arc::new(rules)),
            seed,
            receipts,
        }
    }

    /// Swaps the rule table; sessions pick it up at their next command.
    pub fn set_rules(&self, rules: RuleSet) {
        // A poisoned lock only means a panic elsewhere while swapping an Arc; the Arc is intact.
        let mut g = self.rules.write().unwrap_or_else(|e| e.into_inner());
        *g = Arc::new(rules);
    }

    fn rules(&self) -> Arc<RuleSet> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A per-decision RNG derived from (seed, connection, transaction, stage), so decisions are
    /// reproducible per seed without a lock shared by every session.
    fn rng(&self, s: &SessionInfo, stage: Stage, extra: usize) -> ChaCha8Rng {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.seed, s.conn_id, s.transactions, stage, extra).hash(&mut h);
        ChaCha8Rng::seed_from_u64(h.finish())
    }

    fn decide(&self, s: &SessionInfo, stage: Stage, sender: &str, rcpts: &[String], default: Reply) -> Decision {
        let rules = self.rules();
        let mut rng = self.rng(s, stage, rcpts.len());
        let ctx = Context {
            stage,
            sender,
            rcpts,
            ip: s.peer.ip(),
            helo: s.helo.as_deref().unwrap_or(""),
        };
        let (reply, close, delay) = match rules.decide(&ctx, &mut rng) {
            Some(v) => (v.reply, v.close, v.delay),
            None => (default, false, rules.latency(stage, &mut rng)),
        };
        let mut d = Decision::reply(reply);
        if !delay.is_zero() {
            d = d.with_delay(delay);
        }
        if close {
            d = d.then_close();
        }
        d
    }
}

impl Policy for Inbox {
    async fn connect(&self, s: &SessionInfo) -> Decision {
        let greeting = Reply::new(
            220,
            None,
            &format!("mx.{}.mailsurge.test ESMTP mock inbox", self.provider),
        );
        self.decide(s, Stage::Connect, "", &[], greeting)
    }

    async fn helo(&self, s: &SessionInfo, helo: &str) -> Decision {
        let mut s2 = s.clone();
        s2.helo = Some(helo.to_string());
        self.decide(&s2, Stage::Ehlo, "", &[], Reply::new(250, None, "ok"))
    }

    async fn mail(&self, s: &SessionInfo, from: &str, _size: Option<usize>) -> Decision {
        self.decide(s, Stage::Mail, from, &[], Reply::new(250, Some("2.1.0"), "Ok"))
    }

    async fn rcpt(&self, s: &SessionInfo, env: &Envelope, rcpt: &str) -> Decision {
        self.decide(
            s,
            Stage::Rcpt,
            &env.from,
            &[rcpt.to_string()],
            Reply::new(250, Some("2.1.5"), "Ok"),
        )
    }

    async fn data(&self, s: &SessionInfo, env: &Envelope) -> Decision {
        self.decide(s, Stage::Data, &env.from, &env.rcpts, Reply::new(354, None, "Go ahead"))
    }

    async fn message(&self, s: &SessionInfo, env: &Envelope, body: Vec<u8>) -> Decision {
        let t_ns = crate::events::now_ns();
        let d = self.decide(
            s,
            Stage::Message,
            &env.from,
            &env.rcpts,
            Reply::new(250, Some("2.0.0"), "Ok: queued"),
        );
        if d.reply.is_success() {
            let r = Receipt::new(&self.provider, t_ns, env.rcpts.clone(), s.peer.ip(), &body);
            // The receiver only goes away at shutdown, when losing a late receipt is moot.
            let _ = self.receipts.send(r);
        }
        d
    }
}

/// Server limits for a mock inbox: generous, since the inbox must never be the bottleneck.
pub fn limits(provider: &str) -> Limits {
    Limits {
        hostname: format!("mx.{provider}.mailsurge.test"),
        max_connections: 4096,
        command_timeout: Duration::from_secs(60),
        ..Limits::default()
    }
}

/// Appends receipts to a JSON-lines file until the channel closes.
pub async fn write_receipts(mut rx: mpsc::UnboundedReceiver<Receipt>, path: &Path) -> std::io::Result<u64> {
    let f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    let mut w = tokio::io::BufWriter::new(f);
    let mut n = 0u64;
    let mut line = Vec::with_capacity(512);
    loop {
        let r = tokio::select! {
            r = rx.recv() => r,
            // Flush while idle so `tail -f` and a crash both see recent receipts.
            _ = tokio::time::sleep(Duration::from_millis(200)) => { w.flush().await?; continue; }
        };
        let Some(r) = r else { break };
        line.clear();
        serde_json::to_writer(&mut line, &r).map_err(std::io::Error::other)?;
        line.push(b'\n');
        w.write_all(&line).await?;
        n += 1;
    }
    w.flush().await?;
    Ok(n)
}

/// `mailsurge inbox`: one standalone mock inbox until Ctrl-C / SIGTERM.
pub async fn run_standalone(
    rules: RuleSet,
    listen: SocketAddr,
    receipts: Option<&Path>,
    seed: u64,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    let provider = rules.file.provider.clone();
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = match receipts {
        Some(p) => {
            let p = p.to_path_buf();
            tokio::spawn(async move { write_receipts(rx, &p).await })
        }
        None => tokio::spawn(async move {
            let mut rx = rx;
            let mut n = 0;
            while rx.recv().await.is_some() {
                n += 1;
            }
            Ok(n)
        }),
    };
    let inbox = Arc::new(Inbox::new(&provider, rules, seed, tx));
    let stats = Arc::new(ServerStats::default());
    println!("mailsurge inbox `{provider}` listening on {local}");
    smtp::serve(
        listener,
        inbox.clone(),
        limits(&provider),
        stats.clone(),
        crate::signal::terminated(),
    )
    .await?;
    drop(inbox);
    let n = writer.await??;
    eprintln!("mailsurge inbox `{provider}`: {n} receipts; {:?}", stats.snapshot());
    Ok(())
}
