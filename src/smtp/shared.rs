//! What all sessions of one server share: the protocol [`Limits`], the [`ServerStats`]
//! counters (and their [`StatsSnapshot`]), and [`Shared`], the bundle `serve` builds once and
//! hands to every session.
//!
//! Kept apart from `server.rs` so that `session.rs` can read them without depending on
//! `server.rs` (which spawns sessions and so depends on `session.rs`). The public items are
//! re-exported as `crate::smtp::server::*` and `crate::smtp::*`, their public paths.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    /// Bytes of each message body kept and handed to the policy (the rest is checked and
    /// counted, not stored). A receiver that reads only the header section — the mock inbox —
    /// sets this so a session costs that much memory whatever `max_message_size` is.
    pub keep_body: usize,
    /// Recipients per transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Idle time allowed while waiting for a command, and for writing a reply.
    pub command_timeout: Duration,
    /// Idle time allowed between reads of message data.
    pub data_timeout: Duration,
    /// A command line, once begun, must be complete within this (bytes do not extend it).
    pub line_timeout: Duration,
    /// DATA must end within this, plus `received / min_data_rate` seconds.
    pub data_total_timeout: Duration,
    /// Bytes per second DATA is allowed to be slow by, past `data_total_timeout`.
    pub min_data_rate: u64,
    /// A session must start or finish a transaction within this of its start or its last
    /// one; squatters (NOOP keep-alives, a stalled client) are closed with 421.
    pub progress_timeout: Duration,
    /// Connection slots kept for clients that hold none yet (and for `priority_networks`):
    /// a few busy IPs cannot take every slot and starve everyone else. At most an eighth of
    /// `max_connections`.
    pub reserved_connections: usize,
    /// Clients that may use the reserved slots even while they hold connections (the MTA's
    /// relay networks).
    pub priority_networks: Vec<ipnet::IpNet>,
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
            keep_body: usize::MAX,
            max_recipients: 1000,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            line_timeout: Duration::from_secs(30),
            data_total_timeout: Duration::from_secs(120),
            min_data_rate: 16 * 1024,
            progress_timeout: Duration::from_secs(600),
            reserved_connections: 64,
            priority_networks: Vec::new(),
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
    /// Sessions that finished a STARTTLS handshake.
    pub tls_sessions: AtomicU64,
    /// STARTTLS handshakes that failed.
    pub tls_failures: AtomicU64,
    /// STARTTLS commands with input pipelined behind them (discarded unread).
    pub starttls_injections: AtomicU64,
    /// AUTH exchanges the policy accepted (235).
    pub auth_successes: AtomicU64,
    /// AUTH exchanges refused: bad credentials, cancelled or malformed.
    pub auth_failures: AtomicU64,
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
    pub tls_sessions: u64,
    pub tls_failures: u64,
    pub starttls_injections: u64,
    pub auth_successes: u64,
    pub auth_failures: u64,
}

/// A table for people (the standalone inbox prints it when it stops), one counter per line.
impl std::fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows = [
            ("connections", self.connections_total),
            ("  still open", self.connections_active),
            ("  refused over the limit", self.connections_refused_limit),
            ("transactions", self.transactions),
            ("protocol errors", self.protocol_errors),
            ("timeouts", self.timeouts),
            ("bare LF/CR refused", self.bare_lf_rejected),
            ("lines too long", self.too_long_lines),
            ("oversize refused", self.oversize),
            ("TLS sessions", self.tls_sessions),
            ("TLS handshakes failed", self.tls_failures),
            ("STARTTLS injections cut", self.starttls_injections),
            ("AUTH accepted", self.auth_successes),
            ("AUTH refused", self.auth_failures),
        ];
        for (name, n) in rows {
            writeln!(f, "  {name:<26}{n:>10}")?;
        }
        Ok(())
    }
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
            tls_sessions: g(&self.tls_sessions),
            tls_failures: g(&self.tls_failures),
            starttls_injections: g(&self.starttls_injections),
            auth_successes: g(&self.auth_successes),
            auth_failures: g(&self.auth_failures),
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
    /// Pre-rendered EHLO replies, indexed by [`Shared::ehlo_reply`]'s (STARTTLS, AUTH)
    /// offers: they never change, and EHLO is on the hot path.
    ehlo_replies: [Vec<u8>; 4],
    pub(crate) helo_reply: Vec<u8>,
}

impl<P> Shared<P> {
    pub(crate) fn new(policy: Arc<P>, limits: Limits, stats: Arc<ServerStats>) -> Self {
        // A control character in a configured hostname must not break the reply framing.
        let h: String = limits.hostname.chars().filter(|c| !c.is_control()).collect();
        let ehlo = |i: usize| {
            let tls = if i & 1 != 0 { "250-STARTTLS\r\n" } else { "" };
            let auth = if i & 2 != 0 {
                format!("250-{}\r\n", crate::smtp::sasl::EHLO_AUTH_LINE)
            } else {
                String::new()
            };
            format!(
                "250-{h}\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n{tls}{auth}250 ENHANCEDSTATUSCODES\r\n",
                limits.max_message_size
            )
            .into_bytes()
        };
        let ehlo_replies = [ehlo(0), ehlo(1), ehlo(2), ehlo(3)];
        let helo_reply = format!("250 {h}\r\n").into_bytes();
        Shared {
            policy,
            limits,
            stats,
            ehlo_replies,
            helo_reply,
        }
    }

    /// The EHLO reply offering STARTTLS and/or AUTH.
    pub(crate) fn ehlo_reply(&self, starttls: bool, auth: bool) -> &[u8] {
        &self.ehlo_replies[usize::from(starttls) | usize::from(auth) << 1]
    }
}
