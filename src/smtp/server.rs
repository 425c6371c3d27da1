//! The SMTP server shared by the reference MTA and the mock inbox: accept loop, connection
//! limit, graceful shutdown, and the [`Policy`] hook through which each of them decides every
//! reply.
//!
//! Structure follows tokio-rs/mini-redis: `serve` owns the listener, an `Arc<Semaphore>` caps
//! concurrent sessions, a broadcast channel tells sessions to stop, and each connection runs in
//! its own task (see `session.rs`) that alone owns its socket and buffers.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinSet;

use crate::smtp::reply::Reply;
use crate::smtp::session;

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
/// Text of the default greeting; the server adds its hostname in front (see
/// [`Policy::connect`]).
pub const DEFAULT_BANNER_TEXT: &str = "ESMTP mailsurge";

/// What a policy knows about the connection when asked for a decision.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub conn_id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The name given in the last accepted EHLO/HELO.
    pub helo: Option<String>,
    /// DATA phases completed on this connection (final dot received, message accepted or
    /// refused). During [`Policy::message`] it does not yet count the message being decided.
    pub transactions: u32,
}

/// The mail transaction so far.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// Reverse-path; `""` for the null sender `<>`.
    pub from: String,
    /// The `SIZE=` the client declared on MAIL, if any.
    pub size_hint: Option<usize>,
    /// Accepted recipients, in order.
    pub rcpts: Vec<String>,
}

/// Ways to end a connection *instead of* replying — how a broken or hostile provider looks
/// from the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    /// Close the connection (FIN) without a reply.
    Close,
    /// Abort the connection with a TCP RST.
    Reset,
    /// Never answer: read and discard input until the client gives up (bounded by
    /// [`BLACKHOLE_HOLD`] and server shutdown).
    Blackhole,
}

/// Longest a blackholed connection is held open.
pub const BLACKHOLE_HOLD: Duration = Duration::from_secs(600);

/// A policy's answer to one protocol step.
#[derive(Debug, Clone)]
pub struct Decision {
    pub reply: Reply,
    /// The server flushes earlier replies, then sleeps this long before sending this one
    /// (tarpitting, slow-inbox simulation).
    pub delay: Option<Duration>,
    /// Close the connection after sending the reply.
    pub close: bool,
    /// Send nothing and end the connection this way (after `delay`); `reply` is ignored.
    pub hangup: Option<Hangup>,
}

impl Decision {
    pub fn reply(r: Reply) -> Decision {
        Decision {
            reply: r,
            delay: None,
            close: false,
            hangup: None,
        }
    }

    /// End the connection without a reply.
    pub fn hangup(h: Hangup) -> Decision {
        Decision {
            reply: Reply::new(421, Some("4.4.2"), "connection dropped"),
            delay: None,
            close: true,
            hangup: Some(h),
        }
    }

    /// `250 2.0.0 Ok`.
    pub fn ok() -> Decision {
        Decision::reply(Reply::new(250, Some("2.0.0"), "Ok"))
    }

    pub fn with_delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    pub fn then_close(mut self) -> Self {
        self.close = true;
        self
    }
}

/// Decides every reply of a session. Implemented by the reference MTA (spool and relay) and
/// by the mock inboxes (rule tables); the protocol mechanics stay in the server.
pub trait Policy: Send + Sync + 'static {
    /// Greeting, sent as returned. The default reads `220 <hostname> ESMTP mailsurge`: the
    /// server puts [`Limits::hostname`] in front of a 2xx greeting whose whole text is
    /// [`DEFAULT_BANNER_TEXT`], since RFC 5321 §4.3.1 wants the domain first and a policy does
    /// not know the hostname; a policy writing its own greeting should start it with its name.
    /// A 421/554 with `close` rejects at connect; a non-2xx greeting without `close` leaves a
    /// session that answers 503 to everything but QUIT (RFC 5321 §3.1).
    fn connect(&self, _s: &SessionInfo) -> impl Future<Output = Decision> + Send {
        std::future::ready(Decision::reply(Reply::new(220, None, DEFAULT_BANNER_TEXT)))
    }

    /// EHLO/HELO. On 2xx the server sends its own EHLO/HELO reply (capabilities from
    /// [`Limits`]) but applies the decision's delay and close; otherwise the decision's reply
    /// is sent as is.
    fn helo(&self, _s: &SessionInfo, _helo: &str) -> impl Future<Output = Decision> + Send {
        std::future::ready(Decision::ok())
    }

    /// MAIL FROM, after the server's own checks (sequence, SIZE over the limit).
    fn mail(&self, _s: &SessionInfo, _from: &str, _size: Option<usize>) -> impl Future<Output = Decision> + Send {
        std::future::ready(Decision::reply(Reply::new(250, Some("2.1.0"), "Ok")))
    }

    /// RCPT TO, after the server's own checks (sequence, recipient count).
    fn rcpt(&self, _s: &SessionInfo, _env: &Envelope, _rcpt: &str) -> impl Future<Output = Decision> + Send {
        std::future::ready(Decision::reply(Reply::new(250, Some("2.1.5"), "Ok")))
    }

    /// DATA, once at least one recipient was accepted. A 354 reply starts the message; any
    /// other reply is sent and the transaction stays open (the client may RSET).
    fn data(&self, _s: &SessionInfo, _env: &Envelope) -> impl Future<Output = Decision> + Send {
        std::future::ready(Decision::reply(Reply::new(
            354,
            None,
            "End data with <CR><LF>.<CR><LF>",
        )))
    }

    /// After the final dot. `body` is dot-unstuffed with CRLF line endings. The MTA spools and
    /// fsyncs here before answering 250. Whatever the reply, the transaction is over.
    fn message(&self, s: &SessionInfo, env: &Envelope, body: Vec<u8>) -> impl Future<Output = Decision> + Send;

    /// Called once when a session ends, however it ends, except for sessions aborted because
    /// the shutdown grace period ran out. Not called for connections refused over the limit,
    /// which never become sessions.
    fn disconnected(&self, _s: &SessionInfo) {}
}

/// Protocol limits and timeouts of one server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Name in the greeting, EHLO reply and 421 replies.
    pub hostname: String,
    /// Concurrent sessions; more get `421 4.7.0 Too many connections`.
    pub max_connections: usize,
    /// Concurrent sessions from one client IP; more get `421 4.7.0 Too many connections from
    /// your host` (Postfix's `smtpd_client_connection_count_limit`).
    pub max_connections_per_ip: usize,
    /// Longest command line, CRLF included.
    pub max_command_line: usize,
    /// Longest message line, CRLF included; longer lines get the message refused (500 5.5.2).
    pub max_data_line: usize,
    /// Advertised as EHLO SIZE and enforced at MAIL (declared SIZE) and after the dot.
    pub max_message_size: usize,
    /// Recipients per transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Idle time allowed while waiting for a command, and for writing a reply.
    pub command_timeout: Duration,
    /// Idle time allowed between reads of message data.
    pub data_timeout: Duration,
    /// Protocol errors (unknown command, syntax, bad sequence...) before `421 4.7.0`.
    pub max_errors: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hostname: "localhost".to_owned(),
            max_connections: 1024,
            max_connections_per_ip: usize::MAX,
            max_command_line: 2048,
            max_data_line: 10_000,
            max_message_size: 32 * 1024 * 1024,
            max_recipients: 1000,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            max_errors: 20,
        }
    }
}

/// Counters shared by all sessions of a server; cheap relaxed atomics, read via `snapshot`.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Sessions started (connections refused over the limit are not counted here).
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    pub connections_refused_limit: AtomicU64,
    /// DATA phases completed (final dot received), accepted or refused.
    pub transactions: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub timeouts: AtomicU64,
    /// Messages refused for a bare LF or bare CR.
    pub bare_lf_rejected: AtomicU64,
    /// Over-long command lines plus messages refused for an over-long line.
    pub too_long_lines: AtomicU64,
    /// MAIL refused for its SIZE plus messages refused for their size.
    pub oversize: AtomicU64,
}

/// A plain copy of [`ServerStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub connections_total: u64,
    pub connections_active: u64,
    pub connections_refused_limit: u64,
    pub transactions: u64,
    pub protocol_errors: u64,
    pub timeouts: u64,
    pub bare_lf_rejected: u64,
    pub too_long_lines: u64,
    pub oversize: u64,
}

impl ServerStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            connections_total: g(&self.connections_total),
            connections_active: g(&self.connections_active),
            connections_refused_limit: g(&self.connections_refused_limit),
            transactions: g(&self.transactions),
            protocol_errors: g(&self.protocol_errors),
            timeouts: g(&self.timeouts),
            bare_lf_rejected: g(&self.bare_lf_rejected),
            too_long_lines: g(&self.too_long_lines),
            oversize: g(&self.oversize),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything a session needs that is the same for all sessions of a server.
pub(crate) struct Shared<P> {
    pub(crate) policy: Arc<P>,
    pub(crate) limits: Limits,
    pub(crate) stats: Arc<ServerStats>,
    /// Pre-rendered EHLO and HELO replies: they never change, and EHLO is on the hot path.
    pub(crate) ehlo_reply: Vec<u8>,
    pub(crate) helo_reply: Vec<u8>,
}

impl<P> Shared<P> {
    fn new(policy: Arc<P>, limits: Limits, stats: Arc<ServerStats>) -> Self {
        // A control character in a configured hostname must not break the reply framing.
        let h: String = limits.hostname.chars().filter(|c| !c.is_control()).collect();
        let ehlo_reply = format!(
            "250-{h}\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
            limits.max_message_size
        )
        .into_bytes();
        let helo_reply = format!("250 {h}\r\n").into_bytes();
        Shared {
            policy,
            limits,
            stats,
            ehlo_reply,
            helo_reply,
        }
    }
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

/// Tells a connection over the limit why it is closed, without involving the policy.
/// Open sessions per client IP; a slot is given back when its guard drops.
#[derive(Default)]
struct PerIp(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

struct PerIpSlot(Arc<PerIp>, std::net::IpAddr);

impl PerIp {
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
