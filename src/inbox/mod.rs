//! Mock inbox providers: SMTP servers that answer like gmail or yahoo would, from a scripted
//! rule table (SPEC §3), and emit a [`Receipt`] for every accepted message.
//!
//! Protocol handling is [`crate::smtp::server`]; this module is only policy: which reply, after
//! how long, and what to record. Run standalone with `mailsurge inbox`, or in-process by `run`.

pub mod bounces;
pub mod engine;
pub mod farm;
pub mod receipt;
pub mod rules;
pub mod state;
pub mod tls;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

pub use engine::{Engine, Overlay};
pub use receipt::Receipt;
pub use rules::RuleSet;

use crate::smtp::{self, Decision, Envelope, Hangup, Limits, Policy, Reply, ServerStats, SessionInfo};
use engine::Context;
use rules::{Behaviour, Stage};

/// A mock inbox's policy: the provider's rule engine plus where receipts go.
pub struct Inbox {
    provider: String,
    engine: Engine,
    receipts: mpsc::UnboundedSender<Receipt>,
    /// Accepted messages, for the standalone inbox's exit line.
    accepted: AtomicU64,
    /// Hashes of message keys seen (X-Mailsurge-Id, else Message-ID): the duplicate check,
    /// 8 bytes per message — the only state kept per finished message.
    seen: std::sync::Mutex<std::collections::HashSet<u64>>,
    duplicates: AtomicU64,
    /// STARTTLS, when the run gave this provider certificates.
    tls: Option<tls::InboxTls>,
}

impl Inbox {
    /// `pools` names the scenario's egress pools so `pool:` rules and pool blocks resolve.
    pub fn new(
        provider: &str,
        rules: RuleSet,
        pools: BTreeMap<String, Vec<IpAddr>>,
        seed: u64,
        receipts: mpsc::UnboundedSender<Receipt>,
    ) -> Inbox {
        Inbox {
            provider: provider.to_string(),
            engine: Engine::new(rules, pools, seed),
            receipts,
            accepted: AtomicU64::new(0),
            seen: std::sync::Mutex::new(std::collections::HashSet::new()),
            duplicates: AtomicU64::new(0),
            tls: None,
        }
    }

    /// The same inbox offering STARTTLS as `tls` says.
    pub fn with_tls(mut self, tls: tls::InboxTls) -> Inbox {
        self.tls = Some(tls);
        self
    }

    /// Its TLS, if it has any (the `tls` chaos faults act on it).
    pub fn tls(&self) -> Option<&tls::InboxTls> {
        self.tls.as_ref()
    }

    /// (accepted messages, of which duplicates) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.accepted.load(Ordering::Relaxed),
            self.duplicates.load(Ordering::Relaxed),
        )
    }

    /// Marks a receipt as a duplicate if its key was received before for any of its
    /// recipients (per recipient, since one message may arrive in one transaction per domain).
    fn check_duplicate(&self, r: &mut Receipt) {
        let Some(key) = r.key() else { return };
        let mut seen = crate::sync::lock(&self.seen);
        let mut dup = false;
        for rcpt in &r.rcpt {
            dup |= !seen.insert(engine::hash(&(key, rcpt.to_ascii_lowercase())));
        }
        drop(seen);
        if dup {
            r.duplicate = true;
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The rule engine, for runtime changes (overlays, reloads).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn decide(&self, ctx: Context<'_>, default: Reply) -> Decision {
        let v = self.engine.decide(&ctx, default);
        let mut d = match (v.reply, v.behaviour) {
            (None, Some(Behaviour::Reset)) => Decision::hangup(Hangup::Reset),
            (None, Some(Behaviour::Blackhole)) => Decision::hangup(Hangup::Blackhole),
            (None, _) => Decision::hangup(Hangup::Close),
            (Some(r), _) => Decision::reply(r),
        };
        if !v.delay.is_zero() {
            d = d.with_delay(v.delay);
        }
        if v.close {
            d = d.then_close();
        }
        d
    }
}

fn ctx<'a>(s: &'a SessionInfo, stage: Stage, sender: &'a str, rcpts: &'a [String], size: Option<usize>) -> Context<'a> {
    Context {
        stage,
        conn_id: s.conn_id,
        ip: s.peer.ip(),
        helo: s.helo.as_deref().unwrap_or(""),
        sender,
        rcpts,
        size,
        transactions: s.transactions,
    }
}

impl Policy for Inbox {
    fn starttls(&self, _s: &SessionInfo) -> smtp::StartTls {
        self.tls
            .as_ref()
            .map_or(smtp::StartTls::NotOffered, tls::InboxTls::starttls)
    }

    async fn connect(&self, s: &SessionInfo) -> Decision {
        self.engine.connected(s.peer.ip());
        let greeting = Reply::new(
            220,
            None,
            &format!("mx.{}.mailsurge.test ESMTP mock inbox", self.provider),
        );
        self.decide(ctx(s, Stage::Connect, "", &[], None), greeting)
    }

    async fn helo(&self, s: &SessionInfo, helo: &str) -> Decision {
        let c = Context {
            helo,
            ..ctx(s, Stage::Ehlo, "", &[], None)
        };
        self.decide(c, Reply::new(250, None, "ok"))
    }

    async fn mail(&self, s: &SessionInfo, from: &str, size: Option<usize>) -> Decision {
        if let Some(d) = self.tls.as_ref().and_then(|t| t.refuse_plaintext(s)) {
            return d;
        }
        self.decide(
            ctx(s, Stage::Mail, from, &[], size),
            Reply::new(250, Some("2.1.0"), "Ok"),
        )
    }

    async fn rcpt(&self, s: &SessionInfo, env: &Envelope, rcpt: &str) -> Decision {
        let one = [rcpt.to_string()];
        self.decide(
            ctx(s, Stage::Rcpt, &env.from, &one, env.size_hint),
            Reply::new(250, Some("2.1.5"), "Ok"),
        )
    }

    async fn data(&self, s: &SessionInfo, env: &Envelope) -> Decision {
        self.decide(
            ctx(s, Stage::Data, &env.from, &env.rcpts, env.size_hint),
            Reply::new(354, None, "Go ahead"),
        )
    }

    async fn message(&self, s: &SessionInfo, env: &Envelope, body: Vec<u8>) -> Decision {
        let t_ns = crate::events::now_ns();
        let c = ctx(s, Stage::Message, &env.from, &env.rcpts, Some(env.size));
        let d = self.decide(c, Reply::new(250, Some("2.0.0"), "Ok: queued"));
        if d.hangup.is_none() && d.reply.is_success() {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            // Delivered is when the 250 goes out, not when the dot came in: a slow mailbox
            // (or a latency fault) holding its answer delays the delivery, and the receipt —
            // which the run's drain takes as "delivered" — must not come before the sending
            // MTA can know it. The session sleeps the same delay before queueing the reply.
            let delay = d.delay.unwrap_or_default();
            let at = t_ns + u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
            let mut r = Receipt::new(&self.provider, at, env.rcpts.clone(), s.peer.ip(), &body, env.size);
            // The first message of a TLS session carries its handshake time.
            r.tls = s
                .tls
                .as_ref()
                .map(|t| if s.transactions == 0 { t.handshake_us.max(1) } else { 0 });
            self.check_duplicate(&mut r);
            // The receiver only goes away at shutdown, when losing a late receipt is moot.
            if delay.is_zero() {
                let _ = self.receipts.send(r);
            } else {
                let receipts = self.receipts.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = receipts.send(r);
                });
            }
        }
        d
    }

    fn disconnected(&self, s: &SessionInfo) {
        self.engine.disconnected(s.peer.ip(), s.conn_id);
    }
}

/// Header bytes an inbox keeps of each message: all a receipt reads is the header section
/// (Postfix's `header_size_limit` is the same 100 KiB), so a session holds at most this much
/// of a body of any size.
pub const KEEP_HEAD: usize = 100 * 1024;

/// Server limits for a mock inbox: generous, since the inbox must never be the bottleneck.
pub fn limits(provider: &str) -> Limits {
    Limits {
        hostname: format!("mx.{provider}.mailsurge.test"),
        max_connections: 4096,
        command_timeout: Duration::from_secs(60),
        keep_body: KEEP_HEAD,
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

/// `mailsurge inbox`: one standalone mock inbox until Ctrl-C / SIGTERM. SIGHUP re-reads the
/// rules file and swaps it in without dropping connections or state; a file that no longer
/// validates is reported and the old rules stay.
pub async fn run_standalone(
    rules_src: crate::config::Source,
    listen: SocketAddr,
    receipts: Option<&Path>,
    seed: u64,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let rules = RuleSet::from_source(&rules_src)?;
    let listener = crate::smtp::listen(listen).with_context(|| format!("cannot listen on {listen}"))?;
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
    let mode = rules.file.tls;
    let mut inbox = Inbox::new(&provider, rules, BTreeMap::new(), seed, tx);
    let mut tls_line = None;
    if mode != crate::scenario::TlsMode::None {
        // Its own CA, made now; its certificate is printed so a client can verify against it
        // (swaks --tls-ca-path), though most test clients do not verify at all.
        let pki = crate::tls::Pki::new(&provider)?;
        inbox = inbox.with_tls(tls::InboxTls::new(&pki, mode, &provider, &[local])?);
        if let Some(dir) = receipts.and_then(Path::parent) {
            let ca = dir.join(format!("{provider}-ca.pem"));
            crate::files::write(&ca, pki.ca_pem())?;
            tls_line = Some(format!(
                "mailsurge inbox `{provider}`: STARTTLS {mode:?}, CA certificate {}",
                ca.display()
            ));
        }
    }
    let inbox = Arc::new(inbox);
    let reloader = tokio::spawn(reload_on_hangup(inbox.clone(), rules_src));
    let stats = Arc::new(ServerStats::default());
    // The first line is the address (scripts and tests read it); what else follows.
    println!("mailsurge inbox `{provider}` listening on {local}");
    if let Some(l) = tls_line {
        println!("{l}");
    }
    smtp::serve(
        listener,
        inbox.clone(),
        limits(&provider),
        stats.clone(),
        crate::signal::terminated(),
    )
    .await?;
    reloader.abort();
    let _ = reloader.await;
    let (_, duplicates) = inbox.counts();
    drop(inbox);
    let n = writer.await??;
    eprint!(
        "mailsurge inbox `{provider}`: {n} receipts, {duplicates} duplicates\n{}",
        stats.snapshot()
    );
    Ok(())
}

/// Reloads the rules file on every SIGHUP.
async fn reload_on_hangup(inbox: Arc<Inbox>, src: crate::config::Source) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let fresh = match &src.dir {
            // Shipped profiles are compiled in; there is nothing to re-read.
            None => continue,
            Some(_) => crate::config::Source::read(Path::new(&src.name)),
        };
        match fresh.and_then(|s| RuleSet::from_source(&s)) {
            Ok(rules) => {
                let n = rules.file.rules.len();
                inbox.engine().set_rules(rules);
                eprintln!("mailsurge inbox: reloaded {} ({n} rules)", src.name);
            }
            Err(e) => eprintln!("mailsurge inbox: reload failed, keeping the old rules: {e}"),
        }
    }
}
