//! The mock inbox providers of a run, in-process: one rule engine per provider, served on one
//! loopback address per MX host, and the levers the chaos timeline pulls on them.
//!
//! The inboxes run on their own runtime ([`InboxRuntime`], threads named `inbox`), apart from
//! the generator's: a capacity probe tells their CPU from the generator's by thread name
//! (`run::cpu`), and a busy generator cannot starve the inboxes' replies (or the reverse).
//!
//! A provider with `mx: 2` has a primary and a secondary MX (two listeners, one engine and one
//! state, as a real provider's MX hosts share a backend); the MTA's route list names them in
//! order, so killing the primary exercises MX failover.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::rules::{Behaviour, RuleSet};
use super::tls::InboxTls;
use super::{Inbox, Overlay, Receipt};
use crate::events::{Event, Kind};
use crate::scenario::{KillMode, Scenario, TlsMode};
use crate::smtp::{self, Policy, ServerStats};
use crate::tls::Pki;

/// Default MX addresses: the first MX of provider i on 127.0.2.<i+1>, further MXes m on
/// 127.0.<10+m>.<i+1> (127.0.3.x belongs to MTA nodes).
pub fn default_addr(provider: usize, mx: u32) -> SocketAddr {
    let third = if mx == 1 { 2 } else { 10 + mx as u8 };
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, third, (provider + 1) as u8)), 0)
}

/// The inboxes' own multi-thread runtime. Dropped from async code it shuts down in the
/// background (a plain `Runtime` drop there would panic).
pub struct InboxRuntime(Option<tokio::runtime::Runtime>);

/// The name of every inbox runtime thread; CPU accounting keys on it.
pub const INBOX_THREAD: &str = "inbox";

impl InboxRuntime {
    pub fn new() -> std::io::Result<InboxRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .thread_name(INBOX_THREAD)
            .enable_all()
            .build()?;
        Ok(InboxRuntime(Some(rt)))
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("inbox runtime is alive until dropped")
            .handle()
            .clone()
    }
}

impl Drop for InboxRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// One MX host: its address and the server task while it listens.
struct Mx {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Serves an in-process SMTP policy (an inbox) on `listener` until `stop` turns true.
pub fn spawn_server<P: Policy>(
    listener: TcpListener,
    policy: Arc<P>,
    name: &str,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>> {
    let limits = super::limits(name);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        smtp::serve(listener, policy, limits, Arc::new(ServerStats::default()), shutdown).await
    })
}

impl Mx {
    /// Serves `inbox` on `listener` until this MX's stop signal.
    fn serve(&mut self, name: &str, inbox: &Arc<Inbox>, listener: TcpListener) {
        // send_replace: the old server (and its receiver) may be gone, and a plain send to a
        // channel without receivers would leave the stale `true` for the new server to see.
        self.stop.send_replace(false);
        self.task = Some(spawn_server(listener, inbox.clone(), name, self.stop.subscribe()));
    }
}

/// One provider at run time.
pub struct ProviderRt {
    pub name: String,
    pub domains: Vec<String>,
    pub inbox: Arc<Inbox>,
    mxs: Vec<Mx>,
    /// Where its listeners and sessions run: the inbox runtime.
    rt: tokio::runtime::Handle,
}

impl ProviderRt {
    /// MX addresses in preference order (the MTA's route list for the provider's domains).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.mxs.iter().map(|m| m.addr).collect()
    }

    /// Starts every provider of the scenario on `rt`, each with its compiled rule table
    /// (`rules[i]` for provider i); receipts become events on `events`.
    pub fn start_all(
        s: &Scenario,
        rules: &[RuleSet],
        events: &mpsc::UnboundedSender<Event>,
        rt: &tokio::runtime::Handle,
        pki: Option<&Pki>,
    ) -> anyhow::Result<Vec<ProviderRt>> {
        Self::start_some(s, rules, events, rt, pki, |_| true, default_addr)
    }

    /// Starts the providers `hosted` picks (an agent of a distributed run hosts some), MX `m`
    /// of provider `i` on `addr(i, m)` unless the scenario fixes its `listen`. With `pki` (the
    /// run's CA), a provider whose `tls` is not `none` offers STARTTLS with a certificate for
    /// its MX addresses.
    pub fn start_some(
        s: &Scenario,
        rules: &[RuleSet],
        events: &mpsc::UnboundedSender<Event>,
        rt: &tokio::runtime::Handle,
        pki: Option<&Pki>,
        hosted: impl Fn(&str) -> bool,
        addr: impl Fn(usize, u32) -> SocketAddr,
    ) -> anyhow::Result<Vec<ProviderRt>> {
        // Listeners register with, and tasks spawn on, the inbox runtime.
        let _on = rt.enter();
        let mut out = Vec::new();
        for ((i, p), rules) in s.providers.iter().enumerate().zip(rules) {
            if !hosted(&p.spec.name) {
                continue;
            }
            // Listeners first: the certificate names their addresses.
            let mut listeners = Vec::new();
            for m in 1..=p.spec.mx.max(1) {
                let want = match p.spec.listen {
                    Some(a) if m == 1 => a,
                    _ => addr(i, m),
                };
                let listener = crate::smtp::listen(want)
                    .with_context(|| format!("provider `{}`: cannot listen on {want}", p.spec.name))?;
                listeners.push((listener.local_addr()?, listener));
            }
            let (rtx, rrx) = mpsc::unbounded_channel::<Receipt>();
            tokio::spawn(receipts_to_events(rrx, events.clone()));
            let mut inbox = Inbox::new(
                &p.spec.name,
                rules.clone(),
                s.file.mta.egress_pools.clone(),
                s.file.seed ^ (i as u64 + 1),
                rtx,
            );
            let mode = p.spec.tls.unwrap_or(rules.file.tls);
            if let Some(pki) = pki.filter(|_| mode != TlsMode::None) {
                let addrs: Vec<SocketAddr> = listeners.iter().map(|(a, _)| *a).collect();
                let tls = InboxTls::new(pki, mode, &p.spec.name, &addrs)
                    .with_context(|| format!("provider `{}`: cannot make its certificates", p.spec.name))?;
                inbox = inbox.with_tls(tls);
            }
            let mut rt = ProviderRt {
                name: p.spec.name.clone(),
                domains: p.spec.domains.clone(),
                inbox: Arc::new(inbox),
                mxs: Vec::new(),
                rt: rt.clone(),
            };
            for (addr, listener) in listeners {
                let (stop, _) = watch::channel(false);
                let mut mx = Mx { addr, stop, task: None };
                mx.serve(&rt.name, &rt.inbox, listener);
                rt.mxs.push(mx);
            }
            out.push(rt);
        }
        Ok(out)
    }

    /// The MX hosts a chaos action hits: one (1-based `mx`) or all.
    fn selected(&mut self, mx: Option<u32>) -> impl Iterator<Item = &mut Mx> {
        self.mxs
            .iter_mut()
            .enumerate()
            .filter(move |(i, _)| mx.is_none_or(|m| m as usize == i + 1))
            .map(|(_, m)| m)
    }

    /// Takes MX hosts down. `refuse` closes the listener (connections refused) and ends open
    /// sessions; `reset` and `blackhole` keep listening and misbehave on every connection
    /// (open sessions at their next command). With several MXes and one selected, only
    /// `refuse` can single it out (the behaviours are provider-wide, as they live in the
    /// shared engine).
    pub fn kill(&mut self, mode: KillMode, mx: Option<u32>) {
        match mode {
            KillMode::Refuse => {
                for m in self.selected(mx) {
                    let _ = m.stop.send(true);
                }
            }
            KillMode::Reset => self.inbox.engine().add_overlay(Overlay::Down(Behaviour::Reset)),
            KillMode::Blackhole => self.inbox.engine().add_overlay(Overlay::Down(Behaviour::Blackhole)),
            // The `tls` action's modes (a kill never carries them: checked at load).
            KillMode::HandshakeFail | KillMode::ExpiredCert => self.tls_fault(Some(mode)),
        }
    }

    /// Puts a `tls` fault in force, or lifts it; a provider without TLS has none to break.
    pub fn tls_fault(&self, mode: Option<KillMode>) {
        if let Some(t) = self.inbox.tls() {
            t.set_fault(mode);
        }
    }

    /// Brings every MX back: listeners reopened on their old addresses, `Down` overlays gone.
    pub async fn restore(&mut self) -> anyhow::Result<()> {
        self.inbox.engine().remove_overlays(|o| matches!(o, Overlay::Down(_)));
        for m in &mut self.mxs {
            let down = m.task.as_ref().is_none_or(|t| t.is_finished()) || *m.stop.borrow();
            if down {
                if let Some(t) = m.task.take() {
                    let _ = t.await;
                }
                let _on = self.rt.enter();
                let l = crate::smtp::listen(m.addr)
                    .with_context(|| format!("provider `{}`: cannot listen again on {}", self.name, m.addr))?;
                m.serve(&self.name, &self.inbox, l);
            }
        }
        Ok(())
    }

    /// Stops every listener and waits for the servers to finish.
    pub async fn stop(&mut self) {
        for m in &mut self.mxs {
            let _ = m.stop.send(true);
        }
        for m in &mut self.mxs {
            if let Some(t) = m.task.take() {
                let _ = t.await;
            }
        }
    }
}

/// Turns inbox receipts into `received` events (one per recipient).
pub async fn receipts_to_events(mut rx: mpsc::UnboundedReceiver<Receipt>, tx: mpsc::UnboundedSender<Event>) {
    while let Some(r) = rx.recv().await {
        let Some(id) = r.key().map(str::to_string) else {
            continue;
        };
        for (i, rcpt) in r.rcpt.iter().enumerate() {
            let mut e = Event::new(r.t_ns, id.clone(), Kind::Received);
            // A session's handshake counts once: on the first recipient's event.
            e.tls = r.tls.map(|us| if i == 0 { us } else { 0 });
            e.provider = Some(r.provider.clone());
            e.rcpt = Some(rcpt.clone());
            e.intended = r.intended_ns;
            e.submitted = r.submitted_ns;
            e.source_ip = Some(r.source_ip.clone());
            if tx.send(e).is_err() {
                return;
            }
        }
    }
}
