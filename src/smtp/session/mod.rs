//! One SMTP session: the per-connection task behind [`serve`](crate::smtp::server::serve).
//!
//! [`Conn`] alone owns the socket and its buffers (mini-redis's `Connection`); [`Session`]
//! holds the protocol state and asks the [`Policy`] for each decision. Replies are queued in
//! the output buffer and flushed only when the input is exhausted, before a policy delay,
//! after a 354, and before closing, which is what makes PIPELINING cheap for both sides.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tokio::sync::broadcast;

use crate::smtp::stream::Stream;

use crate::smtp::codec::{line_too_long_reply, parse_command, Command, DataDecoder, DataReject, Frame, LineFramer};
use crate::smtp::deadline::Deadlines;
use crate::smtp::policy::{AuthOffer, Decision, Envelope, Hangup, Policy, SessionInfo, StartTls, DEFAULT_BANNER_TEXT};
use crate::smtp::reply::Reply;
use crate::smtp::shared::{ServerStats, Shared};

/// Spare room ensured before each socket read; one read typically takes a whole pipelined
/// command group or a good slice of a message.
const READ_CHUNK: usize = 16 * 1024;
/// Stack buffer for draining while lingering or blackholing.
const LINGER_READ_CHUNK: usize = 4096;

const OK: &[u8] = b"250 2.0.0 Ok\r\n";
const BYE: &[u8] = b"221 2.0.0 Bye\r\n";
const VRFY_REPLY: &[u8] = b"252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n";
const HELP_REPLY: &[u8] = b"214 2.0.0 See RFC 5321\r\n";

mod auth;
mod close;
mod tls;

pub(crate) use close::linger_close;

/// Runs one session to its end; never fails (I/O errors just end it, logged at trace level).
pub(crate) async fn run<P: Policy>(
    shared: Arc<Shared<P>>,
    stream: TcpStream,
    peer: SocketAddr,
    conn_id: u64,
    shutdown: broadcast::Receiver<()>,
) {
    let stats = Arc::clone(&shared.stats);
    ServerStats::bump(&stats.connections_total);
    stats.connections_active.fetch_add(1, Ordering::Relaxed);
    let active = ActiveGuard(&stats);

    if let Err(e) = stream.set_nodelay(true) {
        tracing::trace!(conn_id, %peer, "set_nodelay failed: {e}");
    }
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::trace!(conn_id, %peer, "connection gone before the greeting: {e}");
            return;
        }
    };
    let limits = &shared.limits;
    let mut session = Session {
        conn: Conn {
            stream: Stream::Plain(stream),
            inbuf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            outbuf: Vec::with_capacity(READ_CHUNK / 4),
            write_timeout: limits.command_timeout,
        },
        info: SessionInfo {
            conn_id,
            peer,
            local,
            helo: None,
            transactions: 0,
            tls: None,
            auth: None,
        },
        env: None,
        refused_at_connect: false,
        errors: 0,
        mail_refused: false,
        framer: LineFramer::new(limits.max_command_line),
        decoder: DataDecoder::new(limits.max_message_size, limits.max_data_line).keeping(limits.keep_body),
        deadlines: Deadlines::new(limits),
        shutdown: Shutdown {
            seen: false,
            rx: shutdown,
        },
        shared: Arc::clone(&shared),
    };
    let end = session.run().await;
    match end {
        Ok(Flow::Close) => {
            if let Err(e) = session.conn.flush().await {
                tracing::trace!(conn_id, %peer, "final flush failed: {e}");
            }
            linger_close(&mut session.conn.stream).await;
        }
        Ok(Flow::Hangup(h)) => session.hang_up(h).await,
        Ok(_) => tracing::trace!(conn_id, %peer, "client disconnected"),
        Err(e) => tracing::trace!(conn_id, %peer, "session ended by I/O error: {e}"),
    }
    // Gauge first, hook second, so a hook reading the stats sees this session gone.
    drop(active);
    shared.policy.disconnected(&session.info);
}

/// Keeps `connections_active` right even if the task is aborted at shutdown.
struct ActiveGuard<'a>(&'a ServerStats);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.connections_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What to do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Flush, then close our side.
    Close,
    /// The peer went away.
    Gone,
    /// The policy ends the connection without a reply.
    Hangup(Hangup),
}

fn flow(close: bool) -> Flow {
    if close {
        Flow::Close
    } else {
        Flow::Continue
    }
}

/// The socket and its buffers.
struct Conn {
    stream: Stream,
    inbuf: Vec<u8>,
    /// Bytes of `inbuf` before this index are consumed.
    start: usize,
    outbuf: Vec<u8>,
    write_timeout: Duration,
}

impl Conn {
    fn pending(&self) -> &[u8] {
        &self.inbuf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.inbuf.len());
    }

    /// Reads more input; `Ok(0)` means the peer closed. Cancel-safe (select with shutdown).
    async fn read_more(&mut self) -> io::Result<usize> {
        if self.start == self.inbuf.len() {
            self.inbuf.clear();
        } else if self.start > 0 {
            // At most one partial command line is moved.
            self.inbuf.drain(..self.start);
        }
        self.start = 0;
        self.inbuf.reserve(READ_CHUNK);
        self.stream.read_buf(&mut self.inbuf).await
    }

    /// Writes queued replies, bounded by the command timeout so a client that never reads
    /// cannot pin the session.
    async fn flush(&mut self) -> io::Result<()> {
        if self.outbuf.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(self.write_timeout, self.stream.write_all(&self.outbuf)).await {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
        self.outbuf.clear();
        Ok(())
    }
}

/// The session's view of the shutdown broadcast (mini-redis's `Shutdown`).
struct Shutdown {
    seen: bool,
    rx: broadcast::Receiver<()>,
}

impl Shutdown {
    /// Resolves once shutdown was signalled (or the server is gone).
    async fn recv(&mut self) {
        if !self.seen {
            let _ = self.rx.recv().await;
            self.seen = true;
        }
    }
}

/// What [`Session::next_line`] found.
enum Line {
    /// A complete line of this many bytes at the start of the pending input (not consumed).
    Ready(usize),
    /// An over-long line, already skipped.
    TooLong,
    /// The session ends this way before another line came.
    End(Flow),
}

/// How waiting for more command input ended.
enum Wait {
    Input,
    Eof,
    Timeout,
    Shutdown,
}

struct Session<P> {
    conn: Conn,
    info: SessionInfo,
    /// Present between an accepted MAIL and the end of the transaction.
    env: Option<Envelope>,
    /// The greeting was negative without close: only QUIT is served.
    refused_at_connect: bool,
    /// Protocol errors since the last accepted message (Postfix's hard error count, which
    /// also forgives a client that delivers mail).
    errors: usize,
    /// The policy refused the last MAIL: the 503s that a pipelining client then gets for its
    /// RCPTs and DATA are the expected consequence (RFC 2920), not client errors.
    mail_refused: bool,
    framer: LineFramer,
    decoder: DataDecoder,
    deadlines: Deadlines,
    shutdown: Shutdown,
    shared: Arc<Shared<P>>,
}

impl<P: Policy> Session<P> {
    async fn run(&mut self) -> io::Result<Flow> {
        let d = self.shared.policy.connect(&self.info).await;
        if let Some(h) = d.hangup {
            self.pause(d.delay).await?;
            return Ok(Flow::Hangup(h));
        }
        let reply = prefix_hostname(d.reply, &self.shared.limits.hostname);
        self.refused_at_connect = !reply.is_success();
        self.pause(d.delay).await?;
        reply.write_wire(&mut self.conn.outbuf);
        if d.close {
            return Ok(Flow::Close);
        }
        loop {
            let flow = match self.next_line().await? {
                Line::Ready(n) => {
                    let parsed = parse_command(&self.conn.pending()[..n]);
                    self.conn.consume(n);
                    match parsed {
                        Ok(cmd) => self.command(cmd).await?,
                        Err(e) => self.protocol_error(e.reply()),
                    }
                }
                Line::TooLong => self.protocol_error(line_too_long_reply()),
                Line::End(flow) => flow,
            };
            if flow != Flow::Continue {
                return Ok(flow);
            }
        }
    }

    /// The next complete input line (a command, or a response inside an AUTH exchange),
    /// waiting for input as needed. An over-long line is skipped as it arrives and reported
    /// once; a timeout or shutdown queues its 421 and ends the session.
    async fn next_line(&mut self) -> io::Result<Line> {
        loop {
            match self.framer.next_frame(self.conn.pending()) {
                Frame::Line(n) => {
                    self.deadlines.line_done();
                    return Ok(Line::Ready(n));
                }
                Frame::TooLong(n) => {
                    self.conn.consume(n);
                    ServerStats::bump(&self.shared.stats.too_long_lines);
                    return Ok(Line::TooLong);
                }
                Frame::NeedMore(n) => {
                    self.conn.consume(n);
                    if !self.conn.pending().is_empty() {
                        self.deadlines.line_begun(&self.shared.limits);
                    }
                    match self.wait_for_command().await? {
                        Wait::Input => {}
                        Wait::Eof => return Ok(Line::End(Flow::Gone)),
                        Wait::Timeout => {
                            ServerStats::bump(&self.shared.stats.timeouts);
                            self.timeout_reply();
                            return Ok(Line::End(Flow::Close));
                        }
                        Wait::Shutdown => {
                            Reply::new(421, Some("4.3.2"), "Service shutting down").write_wire(&mut self.conn.outbuf);
                            return Ok(Line::End(Flow::Close));
                        }
                    }
                }
            }
        }
    }

    /// Flushes pending replies, then waits for input, the command timeout or shutdown.
    async fn wait_for_command(&mut self) -> io::Result<Wait> {
        self.conn.flush().await?;
        let until = self.deadlines.command_wait(&self.shared.limits);
        let Session { conn, shutdown, .. } = self;
        tokio::select! {
            biased;
            () = shutdown.recv() => Ok(Wait::Shutdown),
            r = tokio::time::timeout_at(until, conn.read_more()) => match r {
                Ok(Ok(0)) => Ok(Wait::Eof),
                Ok(Ok(_)) => Ok(Wait::Input),
                Ok(Err(e)) => Err(e),
                Err(_) => Ok(Wait::Timeout),
            },
        }
    }

    async fn command(&mut self, cmd: Command) -> io::Result<Flow> {
        if self.refused_at_connect && cmd != Command::Quit {
            return Ok(self.protocol_error(Reply::new(503, Some("5.7.0"), "Error: no SMTP service here")));
        }
        let out = &mut self.conn.outbuf;
        match cmd {
            Command::Ehlo(host) => self.helo(host, true).await,
            Command::Helo(host) => self.helo(host, false).await,
            Command::Mail { from, size } => self.mail(from, size).await,
            Command::Rcpt { to } => self.rcpt(to).await,
            Command::Data => self.data().await,
            Command::Rset => {
                self.env = None;
                self.mail_refused = false;
                out.extend_from_slice(OK);
                Ok(Flow::Continue)
            }
            Command::Noop => {
                out.extend_from_slice(OK);
                Ok(Flow::Continue)
            }
            Command::Quit => {
                out.extend_from_slice(BYE);
                Ok(Flow::Close)
            }
            Command::Vrfy => {
                out.extend_from_slice(VRFY_REPLY);
                Ok(Flow::Continue)
            }
            Command::Help => {
                out.extend_from_slice(HELP_REPLY);
                Ok(Flow::Continue)
            }
            Command::StartTls => self.starttls().await,
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial).await,
            Command::NotImplemented(_) => {
                Ok(self.protocol_error(Reply::new(502, Some("5.5.1"), "Command not implemented")))
            }
        }
    }

    async fn helo(&mut self, host: String, extended: bool) -> io::Result<Flow> {
        let d = self.shared.policy.helo(&self.info, &host).await;
        self.pause(d.delay).await?;
        if let Some(h) = d.hangup {
            return Ok(Flow::Hangup(h));
        }
        if d.reply.is_success() {
            // EHLO/HELO resets any transaction in progress (RFC 5321 §4.1.4).
            self.env = None;
            self.mail_refused = false;
            self.info.helo = Some(host);
            let canned = if extended {
                let policy = &self.shared.policy;
                let tls = self.info.tls.is_none() && !matches!(policy.starttls(&self.info), StartTls::NotOffered);
                let auth = self.info.auth.is_none()
                    && match policy.auth(&self.info) {
                        AuthOffer::NotOffered => false,
                        AuthOffer::Offered => true,
                        AuthOffer::AfterTls => self.info.tls.is_some(),
                    };
                self.shared.ehlo_reply(tls, auth)
            } else {
                &self.shared.helo_reply
            };
            self.conn.outbuf.extend_from_slice(canned);
        } else {
            d.reply.write_wire(&mut self.conn.outbuf);
        }
        Ok(flow(d.close))
    }

    async fn mail(&mut self, from: String, size: Option<usize>) -> io::Result<Flow> {
        if self.info.helo.is_none() {
            return Ok(self.bad_sequence("Error: send HELO/EHLO first"));
        }
        if self.env.is_some() {
            return Ok(self.bad_sequence("Error: nested MAIL command"));
        }
        if size.is_some_and(|s| s > self.shared.limits.max_message_size) {
            self.mail_refused = true;
            ServerStats::bump(&self.shared.stats.oversize);
            DataReject::TooBig.reply().write_wire(&mut self.conn.outbuf);
            return Ok(Flow::Continue);
        }
        let d = self.shared.policy.mail(&self.info, &from, size).await;
        self.mail_refused = !d.reply.is_success();
        if d.reply.is_success() {
            self.deadlines.progressed(&self.shared.limits);
            self.env = Some(Envelope {
                from,
                size_hint: size,
                rcpts: Vec::new(),
                size: 0,
            });
        }
        self.apply(d).await
    }

    async fn rcpt(&mut self, to: String) -> io::Result<Flow> {
        let Some(env) = &self.env else {
            return Ok(self.need_mail());
        };
        if env.rcpts.len() >= self.shared.limits.max_recipients {
            Reply::new(452, Some("4.5.3"), "Error: too many recipients").write_wire(&mut self.conn.outbuf);
            return Ok(Flow::Continue);
        }
        let d = self.shared.policy.rcpt(&self.info, env, &to).await;
        if d.reply.is_success() {
            if let Some(env) = &mut self.env {
                env.rcpts.push(to);
            }
        }
        self.apply(d).await
    }

    async fn data(&mut self) -> io::Result<Flow> {
        let Some(env) = &self.env else {
            return Ok(self.need_mail());
        };
        if env.rcpts.is_empty() {
            // Not the client's fault when pipelined RCPTs were all refused: no error count.
            Reply::new(554, Some("5.5.1"), "Error: no valid recipients").write_wire(&mut self.conn.outbuf);
            return Ok(Flow::Continue);
        }
        let size_hint = env.size_hint;
        let d = self.shared.policy.data(&self.info, env).await;
        let go_ahead = d.reply.code == 354;
        let after = self.apply(d).await?;
        if !go_ahead || after != Flow::Continue {
            return Ok(after);
        }
        self.conn.flush().await?;

        self.decoder.start(size_hint);
        let (started, mut received) = (tokio::time::Instant::now(), 0u64);
        loop {
            let feed = self.decoder.feed(self.conn.pending());
            self.conn.consume(feed.consumed);
            received += feed.consumed as u64;
            if feed.done {
                break;
            }
            let until = Deadlines::data_wait(&self.shared.limits, started, received);
            match tokio::time::timeout_at(until, self.conn.read_more()).await {
                Ok(Ok(0)) => return Ok(Flow::Gone),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    ServerStats::bump(&self.shared.stats.timeouts);
                    self.timeout_reply();
                    return Ok(Flow::Close);
                }
            }
        }

        // Whatever happens next, the transaction is over.
        self.deadlines.progressed(&self.shared.limits);
        let mut env = self.env.take().unwrap_or_default();
        env.size = self.decoder.size();
        let stats = &self.shared.stats;
        let d = match self.decoder.finish() {
            Ok(body) => self.shared.policy.message(&self.info, &env, body).await,
            Err(reject) => {
                match reject {
                    DataReject::TooBig => ServerStats::bump(&stats.oversize),
                    DataReject::BareLf | DataReject::BareCr => ServerStats::bump(&stats.bare_lf_rejected),
                    DataReject::LineTooLong => ServerStats::bump(&stats.too_long_lines),
                }
                tracing::debug!(conn_id = self.info.conn_id, ?reject, "message refused");
                Decision::reply(reject.reply())
            }
        };
        if d.reply.is_success() {
            self.errors = 0;
        }
        self.info.transactions = self.info.transactions.saturating_add(1);
        ServerStats::bump(&stats.transactions);
        self.apply(d).await
    }

    /// Sends a policy decision: flush and sleep first if delayed, then queue the reply.
    async fn apply(&mut self, d: Decision) -> io::Result<Flow> {
        self.pause(d.delay).await?;
        if let Some(h) = d.hangup {
            return Ok(Flow::Hangup(h));
        }
        d.reply.write_wire(&mut self.conn.outbuf);
        Ok(flow(d.close))
    }

    /// Flushes earlier replies before a policy delay so the client sees them on time.
    async fn pause(&mut self, delay: Option<Duration>) -> io::Result<()> {
        if let Some(delay) = delay.filter(|d| !d.is_zero()) {
            self.conn.flush().await?;
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }

    /// 503 for RCPT/DATA outside a transaction; not counted after a refused MAIL.
    fn need_mail(&mut self) -> Flow {
        const TEXT: &str = "Error: need MAIL command";
        if self.mail_refused {
            Reply::new(503, Some("5.5.1"), TEXT).write_wire(&mut self.conn.outbuf);
            return Flow::Continue;
        }
        self.bad_sequence(TEXT)
    }

    fn bad_sequence(&mut self, text: &str) -> Flow {
        self.protocol_error(Reply::new(503, Some("5.5.1"), text))
    }

    /// Queues an error reply and counts it; too many errors end the session.
    fn protocol_error(&mut self, reply: Reply) -> Flow {
        ServerStats::bump(&self.shared.stats.protocol_errors);
        self.errors += 1;
        reply.write_wire(&mut self.conn.outbuf);
        if self.errors >= self.shared.limits.max_errors {
            Reply::new(421, Some("4.7.0"), "Too many errors").write_wire(&mut self.conn.outbuf);
            return Flow::Close;
        }
        Flow::Continue
    }

    fn timeout_reply(&mut self) {
        let text = format!("{} Error: timeout exceeded", self.shared.limits.hostname);
        Reply::new(421, Some("4.4.2"), &text).write_wire(&mut self.conn.outbuf);
    }
}

/// Puts the hostname in front of the default greeting text (see [`Policy::connect`]); any
/// other greeting is the policy's to word and is sent as is.
pub(crate) fn prefix_hostname(mut reply: Reply, hostname: &str) -> Reply {
    if reply.is_success() && reply.lines.len() == 1 && reply.lines[0] == DEFAULT_BANNER_TEXT {
        reply.lines[0] = format!("{hostname} {DEFAULT_BANNER_TEXT}");
    }
    reply
}
