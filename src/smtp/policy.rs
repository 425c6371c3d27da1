//! The contract between the SMTP protocol engine and whoever decides its replies: the
//! [`Policy`] trait, what a policy is told ([`SessionInfo`], [`Envelope`]) and what it answers
//! ([`Decision`], [`Hangup`]), plus the constants those answers refer to.
//!
//! Kept apart from `server.rs` so that `session.rs`, which asks the policy at every protocol
//! step, can depend on it without depending on `server.rs` (which spawns sessions and so
//! depends on `session.rs`). The items are re-exported as `crate::smtp::server::*` and
//! `crate::smtp::*`, their public paths.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::smtp::reply::Reply;

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
    /// What STARTTLS negotiated, once it has (the session then started over: no HELO yet).
    pub tls: Option<crate::smtp::stream::TlsInfo>,
    /// The user a successful AUTH named; cleared by STARTTLS, which starts the session over.
    pub auth: Option<String>,
}

/// Whether a server offers AUTH on one session ([`Policy::auth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOffer {
    /// Not in the EHLO reply; the command gets 502.
    NotOffered,
    /// `AUTH PLAIN LOGIN` in the EHLO reply.
    Offered,
    /// Only over TLS: not advertised in the clear, and the command there gets
    /// `538 5.7.11` (Postfix's `smtpd_tls_auth_only`).
    AfterTls,
}

/// What a server does about STARTTLS on one session ([`Policy::starttls`]).
#[derive(Clone)]
pub enum StartTls {
    /// Not in the EHLO reply; the command gets 502.
    NotOffered,
    /// Offered; the handshake presents this configuration's certificate.
    Offer(std::sync::Arc<rustls::ServerConfig>),
    /// Offered, but broken: the server answers 220 and then closes the connection instead of
    /// shaking hands (a provider whose TLS fails, for the `handshake-fail` fault).
    Broken,
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
    /// Bytes of message body received (unstuffed), set before [`Policy::message`]: the body
    /// handed to it may be only the first `Limits::keep_body` bytes.
    pub size: usize,
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
    ///
    /// [`Limits::hostname`]: crate::smtp::Limits::hostname
    fn connect(&self, _s: &SessionInfo) -> impl Future<Output = Decision> + Send {
        std::future::ready(Decision::reply(Reply::new(220, None, DEFAULT_BANNER_TEXT)))
    }

    /// EHLO/HELO. On 2xx the server sends its own EHLO/HELO reply (capabilities from
    /// [`Limits`]) but applies the decision's delay and close; otherwise the decision's reply
    /// is sent as is.
    ///
    /// [`Limits`]: crate::smtp::Limits
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

    /// After the final dot. `body` is dot-unstuffed with CRLF line endings, and cut to
    /// `Limits::keep_body` bytes (its full length is `env.size`). The MTA spools and
    /// fsyncs here before answering 250. Whatever the reply, the transaction is over.
    fn message(&self, s: &SessionInfo, env: &Envelope, body: Vec<u8>) -> impl Future<Output = Decision> + Send;

    /// Called once when a session ends, however it ends, except for sessions aborted because
    /// the shutdown grace period ran out. Not called for connections refused over the limit,
    /// which never become sessions.
    fn disconnected(&self, _s: &SessionInfo) {}

    /// Whether this session is offered STARTTLS, and with what certificate; asked for the EHLO
    /// reply and again when the client sends STARTTLS (a fault may have changed it between).
    fn starttls(&self, _s: &SessionInfo) -> StartTls {
        StartTls::NotOffered
    }

    /// Whether this session is offered AUTH; asked for the EHLO reply and at the command.
    fn auth(&self, _s: &SessionInfo) -> AuthOffer {
        AuthOffer::NotOffered
    }

    /// The credentials a client's AUTH exchange decoded to. `235` makes the session
    /// authenticated as `c.user` ([`SessionInfo::auth`]); anything else is sent as is and
    /// counts as a protocol error, so a client guessing passwords is closed after
    /// [`Limits::max_errors`] tries.
    ///
    /// [`Limits::max_errors`]: crate::smtp::Limits::max_errors
    fn login(&self, _s: &SessionInfo, _c: &crate::smtp::sasl::Credentials) -> impl Future<Output = Decision> + Send {
        std::future::ready(Decision::reply(Reply::new(
            535,
            Some("5.7.8"),
            "Authentication credentials invalid",
        )))
    }
}
