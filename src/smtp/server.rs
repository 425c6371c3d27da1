//! The SMTP server shared by the reference MTA and the mock inbox: accept loop, connection
//! limit, graceful shutdown, and the [`Policy`] hook through which each of them decides every
//! reply.
//!
//! Structure follows tokio-rs/mini-redis: `serve` owns the listener, an `Arc<Semaphore>` caps
//! concurrent sessions, a broadcast channel tells sessions to stop, and each connection runs in
//! its own task (see `session.rs`) that alone owns its socket and buffers.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinSet;

use crate::smtp::reply::Reply;
use crate::smtp::session;
use crate::smtp::shared::Shared;
// The policy contract and the per-server limits and counters live in `policy.rs` and
// `shared.rs` (so `session.rs` need not import this file); `crate::smtp::server::*` stays
// their public path.
pub use crate::smtp::policy::{Decision, Envelope, Hangup, Policy, SessionInfo, BLACKHOLE_HOLD, DEFAULT_BANNER_TEXT};
pub use crate::smtp::shared::{Limits, ServerStats, StatsSnapshot};

/// How long `serve` waits, after `shutdown` resolves, for sessions to finish their current
/// command before aborting them. Long enough for a DATA upload plus an fsync, short enough for
/// a failover scenario to restart a node promptly.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Pause after an accept error (out of file descriptors...) so a hot loop does not burn a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Bound on writing the 421 to a connection refused over the limit.
const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Linux errno values for accept errors that mean "out of resources, try again later".
const TRANSIENT_ACCEPT_ERRNOS: [i32; 4] = [
    12,  // ENOMEM
    23,  // ENFILE
    24,  // EMFILE
    105, // ENOBUFS
];

/// Backlog of listening sockets: a connection flood waits in the kernel's queue (capped by
/// `net.core.somaxconn`) and gets its 421 from the accept loop, instead of SYNs dropped at the
/// default 128 and clients left without a reply for seconds.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket for [`serve`] with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, so a
/// restarted node or inbox gets its address back at once).
pub fn listen(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs until `shutdown` resolves: stops accepting, lets sessions finish their current command
/// (sessions waiting for a command get `421 4.3.2 Service shutting down` and are closed), and
/// waits for all session tasks to end, at most [`SHUTDOWN_GRACE`], then aborts the rest.
///
/// Accept errors caused by resource exhaustion (EMFILE...) are logged and retried after a
/// short pause, so a load test that exhausts descriptors degrades instead of killing the
/// server; any other accept error is returned.
pub async fn serve<P: Policy>(
    listener: TcpListener,
    policy: Arc<P>,
    limits: Limits,
    stats: Arc<ServerStats>,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let shared = Arc::new(Shared::new(policy, limits, stats));
    // Semaphore::new panics above MAX_PERMITS; "unlimited" configs get the maximum.
    let permits = Arc::new(Semaphore::new(
        shared.limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    // Capacity 1 is enough: the only message ever sent is "shut down".
    let (notify, _) = broadcast::channel::<()>(1);
    let mut tasks = JoinSet::new();
    let mut next_conn_id: u64 = 0;
    let per_ip = Arc::new(PerIp::default());
    let mut shutdown = std::pin::pin!(shutdown);

    let result = loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break Ok(()),
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!("smtp session task panicked: {e}");
                    }
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if !may_use_slot(&shared.limits, &permits, &per_ip, peer.ip()) {
                        ServerStats::bump(&shared.stats.connections_refused_limit);
                        tracing::debug!(%peer, "connection refused: the last slots are reserved");
                        tasks.spawn(refuse_with(stream, "Too many connections; the last slots are kept for other clients"));
                        continue;
                    }
                    let Some(ip_slot) = per_ip.take(peer.ip(), shared.limits.max_connections_per_ip) else {
                        ServerStats::bump(&shared.stats.connections_refused_limit);
                        tracing::debug!(%peer, "connection refused: per-IP limit reached");
                        tasks.spawn(refuse_with(stream, "Too many connections from your host"));
                        continue;
                    };
                    match Arc::clone(&permits).try_acquire_owned() {
                        Ok(permit) => {
                            next_conn_id += 1;
                            let shared = Arc::clone(&shared);
                            let rx = notify.subscribe();
                            let id = next_conn_id;
                            tasks.spawn(async move {
                                session::run(shared, stream, peer, id, rx).await;
                                drop(permit);
                                drop(ip_slot);
                            });
                        }
                        Err(_) => {
                            ServerStats::bump(&shared.stats.connections_refused_limit);
                            tracing::debug!(%peer, "connection refused: limit reached");
                            tasks.spawn(refuse(stream));
                        }
                    }
                }
                Err(e) if is_transient_accept_error(&e) => {
                    tracing::warn!("accept failed, retrying: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
                Err(e) => break Err(e),
            },
        }
    };

    drop(listener);
    // No receiver (no session yet) is not an error.
    let _ = notify.send(());
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            "{} smtp sessions still busy after the shutdown grace period; aborting them",
            tasks.len()
        );
        tasks.shutdown().await;
    }
    result
}

/// Whether a new connection from `ip` may have a slot: always while more than
/// `reserved_connections` are free; within the reserve only for an IP that holds no connection
/// yet, or one in `priority_networks` — so a few busy clients cannot starve everyone else.
fn may_use_slot(limits: &Limits, permits: &Semaphore, per_ip: &PerIp, ip: std::net::IpAddr) -> bool {
    // At most an eighth of the slots are kept back, so a small server still serves repeat
    // clients.
    let reserve = limits.reserved_connections.min(limits.max_connections / 8);
    let free = permits.available_permits();
    // No reserve, or no slot at all (the plain limit answers that): nothing to keep back.
    if reserve == 0 || free == 0 || free > reserve {
        return true;
    }
    per_ip.held(ip) == 0 || limits.priority_networks.iter().any(|n| n.contains(&ip))
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::TimedOut
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::OutOfMemory
    ) || e.raw_os_error().is_some_and(|n| TRANSIENT_ACCEPT_ERRNOS.contains(&n))
}

/// Open sessions per client IP; a slot is given back when its guard drops.
#[derive(Default)]
struct PerIp(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

struct PerIpSlot(Arc<PerIp>, std::net::IpAddr);

impl PerIp {
    /// Sessions `ip` holds now.
    fn held(&self, ip: std::net::IpAddr) -> usize {
        crate::sync::lock(&self.0).get(&ip).copied().unwrap_or(0)
    }

    fn take(self: &Arc<Self>, ip: std::net::IpAddr, limit: usize) -> Option<PerIpSlot> {
        let mut m = crate::sync::lock(&self.0);
        let n = m.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(PerIpSlot(Arc::clone(self), ip))
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut m = crate::sync::lock(&self.0 .0);
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Tells a connection over the limit why it is closed, without involving the policy.
async fn refuse(stream: TcpStream) {
    refuse_with(stream, "Too many connections").await
}

async fn refuse_with(mut stream: TcpStream, text: &str) {
    let reply = Reply::new(421, Some("4.7.0"), text).to_wire();
    let _ = tokio::time::timeout(REFUSE_WRITE_TIMEOUT, async {
        stream.write_all(&reply).await?;
        session::linger_close(&mut stream).await;
        Ok::<(), io::Error>(())
    })
    .await;
}
