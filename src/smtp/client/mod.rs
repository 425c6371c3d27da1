//! SMTP client used by the load generator and by the reference MTA's relay.
//!
//! One `Client` is one connection, reused for many transactions. It pipelines MAIL, all
//! RCPTs and DATA in a single write when the server offers PIPELINING (RFC 2920), so a
//! message costs two round trips; replies are parsed with `smtp_proto`'s streaming
//! `ResponseReceiver`. Buffers live in the client and are reused across messages.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::smtp::stream::{Stream, TlsInfo};

use crate::smtp::codec::DataEncoder;

mod opening;
use crate::smtp::reply::{enhanced_code_of_line, Reply};

/// Message data is written to the socket in pieces of about this size.
pub const BODY_CHUNK: usize = 256 * 1024;
/// Spare room ensured before each socket read.
const READ_CHUNK: usize = 8 * 1024;
/// Upper bound on the buffered commands of one pipelined group before the first write.
const COMMAND_RESERVE: usize = 512;

/// How a client connects and how long it waits.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Name sent in EHLO/HELO.
    pub helo: String,
    /// Local address to bind before connecting (egress pools are 127.x.y.z; Linux answers on
    /// all of 127/8).
    pub source_ip: Option<IpAddr>,
    pub connect_timeout: Duration,
    /// Wait for each reply except the one after the final dot; also bounds each write.
    pub command_timeout: Duration,
    /// Wait for the reply after the final dot (the server may fsync), and for sending a body.
    pub data_timeout: Duration,
    /// STARTTLS after the first EHLO.
    pub tls: ClientTls,
    /// AUTH after EHLO (and after STARTTLS, when there is one): PLAIN when offered, else LOGIN.
    pub auth: Option<crate::smtp::sasl::Credentials>,
}

/// Whether a client upgrades to TLS (RFC 3207), verifying the server with the configuration's
/// roots against the address it connected to.
#[derive(Debug, Clone, Default)]
pub enum ClientTls {
    /// Never.
    #[default]
    Off,
    /// When the server offers STARTTLS; a server that does not stays plaintext. A failed
    /// handshake fails the connection (it cannot go back to plaintext on the same socket).
    Opportunistic(std::sync::Arc<rustls::ClientConfig>),
    /// Always: a server that does not offer STARTTLS, refuses it or fails the handshake is an
    /// error ([`ClientError::Tls`]).
    Required(std::sync::Arc<rustls::ClientConfig>),
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            helo: "localhost".to_owned(),
            source_ip: None,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            tls: ClientTls::Off,
            auth: None,
        }
    }
}

/// Why a client operation failed. An SMTP rejection of a transaction is not an error: it is
/// reported in [`SendOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("I/O error during {phase}: {source}")]
    Io {
        phase: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("timed out during {phase}")]
    Timeout { phase: &'static str },
    /// The server refused the session: a non-2xx greeting, or EHLO and HELO both refused.
    #[error("server refused the session: {0}")]
    Greeting(Reply),
    #[error("protocol error during {phase}: {detail}")]
    Protocol { phase: &'static str, detail: String },
    #[error("connection closed by the server during {phase}")]
    Closed { phase: &'static str },
    /// STARTTLS was required and could not be had, or the handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// AUTH was asked for and the server does not offer it or refused the credentials.
    #[error("AUTH: {0}")]
    Auth(String),
}

impl ClientError {
    /// The connection could not be established (refused, unreachable, connect timeout): the
    /// load generator counts these apart from failures of an established session.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::Timeout { phase: "connect" }
        )
    }
}

/// The replies of one transaction.
#[derive(Debug, Clone)]
pub struct SendOutcome {
    pub mail: Reply,
    /// One per recipient, in order.
    pub rcpts: Vec<Reply>,
    /// The reply to DATA when it was not 354, or the final reply after the dot; `None` when
    /// DATA was not sent (or, pipelined, not meaningful) because MAIL failed or no recipient
    /// was accepted.
    pub data: Option<Reply>,
}

impl SendOutcome {
    /// The message was accepted (the final reply is 2xx).
    pub fn accepted(&self) -> bool {
        self.final_reply().is_success()
    }

    /// The reply that decided the outcome: the DATA/final reply if any, else a failed MAIL,
    /// else the first refused recipient.
    pub fn final_reply(&self) -> &Reply {
        if let Some(d) = &self.data {
            return d;
        }
        if !self.mail.is_success() {
            return &self.mail;
        }
        self.rcpts.iter().find(|r| !r.is_success()).unwrap_or(&self.mail)
    }
}

/// An SMTP connection after EHLO, ready for transactions.
pub struct Client {
    stream: Stream,
    rbuf: Vec<u8>,
    /// Parse position in `rbuf`.
    rstart: usize,
    /// Where the reply being parsed starts in `rbuf`; kept until it completes (at most
    /// smtp-proto's 4 KiB reply limit) so its raw first line can be re-read.
    reply_start: usize,
    wbuf: Vec<u8>,
    receiver: ResponseReceiver,
    command_timeout: Duration,
    data_timeout: Duration,
    pipelining: bool,
    /// The server's advertised SIZE limit, when it has one.
    max_size: Option<usize>,
    usable: bool,
    local: SocketAddr,
    peer: SocketAddr,
    /// The server offered STARTTLS in its last EHLO reply.
    offers_tls: bool,
    /// The AUTH mechanisms of the last EHLO reply.
    offers_auth: opening::AuthMechanisms,
    /// What STARTTLS negotiated, if it did.
    tls: Option<TlsInfo>,
}

impl Client {
    /// Connects (optionally from `source_ip`), reads the greeting, sends EHLO (falling back to
    /// HELO on 5xx) and records PIPELINING and SIZE.
    pub async fn connect(addr: SocketAddr, cfg: &ClientConfig) -> Result<Client, ClientError> {
        let connect_err = |source| ClientError::Connect { addr, source };
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(connect_err)?;
        if let Some(ip) = cfg.source_ip {
            // Lets the kernel hand out local ports still in TIME_WAIT from earlier runs, which
            // a generator churning connections from one source address quickly needs.
            socket.set_reuseaddr(true).map_err(connect_err)?;
            socket.bind(SocketAddr::new(ip, 0)).map_err(connect_err)?;
        }
        let stream = tokio::time::timeout(cfg.connect_timeout, socket.connect(addr))
            .await
            .map_err(|_| ClientError::Timeout { phase: "connect" })?
            .map_err(connect_err)?;
        stream.set_nodelay(true).map_err(|source| ClientError::Io {
            phase: "connect",
            source,
        })?;
        let io_err = |source| ClientError::Io {
            phase: "connect",
            source,
        };
        let local = stream.local_addr().map_err(io_err)?;
        let peer = stream.peer_addr().map_err(io_err)?;
        let mut client = Client {
            stream: Stream::Plain(stream),
            rbuf: Vec::with_capacity(READ_CHUNK),
            rstart: 0,
            reply_start: 0,
            wbuf: Vec::with_capacity(COMMAND_RESERVE),
            receiver: ResponseReceiver::default(),
            command_timeout: cfg.command_timeout,
            data_timeout: cfg.data_timeout,
            pipelining: false,
            max_size: None,
            usable: true,
            local,
            peer,
            offers_tls: false,
            offers_auth: opening::AuthMechanisms::default(),
            tls: None,
        };
        client.handshake(&cfg.helo).await?;
        client.starttls(cfg).await?;
        client.authenticate(cfg).await?;
        Ok(client)
    }

    /// What STARTTLS negotiated on this connection, if it did.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// Whether the server offered PIPELINING.
    pub fn pipelining(&self) -> bool {
        self.pipelining
    }

    /// The server's SIZE limit, if it advertised one.
    pub fn max_size(&self) -> Option<usize> {
        self.max_size
    }

    /// One transaction: pipelined (MAIL, all RCPTs and DATA in one write) when the server
    /// offers PIPELINING, else lockstep. Sends RSET after a transaction that failed before the
    /// dot. `body` is the raw message with CRLF line endings; the client dot-stuffs it.
    /// A 421 at any point marks the client unusable (the outcome still reports it).
    pub async fn send(&mut self, from: &str, rcpts: &[String], body: &[u8]) -> Result<SendOutcome, ClientError> {
        self.send_parts(from, rcpts, &[body]).await
    }

    /// [`Client::send`] of a message given as consecutive pieces (borrowed filler, say): it is
    /// dot-stuffed and written in chunks of [`BODY_CHUNK`], so a large message is never copied
    /// whole into the write buffer.
    pub async fn send_parts(
        &mut self,
        from: &str,
        rcpts: &[String],
        body: &[&[u8]],
    ) -> Result<SendOutcome, ClientError> {
        if !self.usable {
            return Err(ClientError::Closed { phase: "send" });
        }
        if rcpts.is_empty() {
            return Err(ClientError::Protocol {
                phase: "send",
                detail: "no recipients given".to_owned(),
            });
        }
        check_line("mail", from)?;
        for r in rcpts {
            check_line("rcpt", r)?;
        }
        let result = self.transaction(from, rcpts, body).await;
        if result.is_err() {
            // After a timeout or I/O error the session state is unknown.
            self.usable = false;
        }
        result
    }

    async fn transaction(&mut self, from: &str, rcpts: &[String], body: &[&[u8]]) -> Result<SendOutcome, ClientError> {
        let t = self.command_timeout;
        self.queue_mail(from, body.iter().map(|p| p.len()).sum());
        let mut outcome = SendOutcome {
            mail: Reply::new(0, None, ""),
            rcpts: Vec::with_capacity(rcpts.len()),
            data: None,
        };

        let data_reply = if self.pipelining {
            for r in rcpts {
                self.queue_line(&["RCPT TO:<", r, ">"]);
            }
            self.queue_line(&["DATA"]);
            self.write_queued("mail", t).await?;
            outcome.mail = self.read_reply("mail", t).await?;
            if self.closing(&outcome.mail) {
                fill_rcpts(&mut outcome, rcpts.len());
                return Ok(outcome);
            }
            for _ in rcpts {
                let r = self.read_reply("rcpt", t).await?;
                let stop = self.closing(&r);
                outcome.rcpts.push(r);
                if stop {
                    fill_rcpts(&mut outcome, rcpts.len());
                    return Ok(outcome);
                }
            }
            let reply = self.read_reply("data", t).await?;
            if self.closing(&reply) {
                outcome.data = Some(reply);
                return Ok(outcome);
            }
            let decisive = outcome.mail.is_success() && outcome.rcpts.iter().any(Reply::is_success);
            // A server that answers 354 anyway gets the body; the outcome reports what it said.
            if !decisive && reply.code != 354 {
                return self.reset(outcome).await;
            }
            reply
        } else {
            self.write_queued("mail", t).await?;
            outcome.mail = self.read_reply("mail", t).await?;
            if !outcome.mail.is_success() {
                self.closing(&outcome.mail);
                fill_rcpts(&mut outcome, rcpts.len());
                return self.reset(outcome).await;
            }
            for r in rcpts {
                self.queue_line(&["RCPT TO:<", r, ">"]);
                self.write_queued("rcpt", t).await?;
                let reply = self.read_reply("rcpt", t).await?;
                let stop = self.closing(&reply);
                outcome.rcpts.push(reply);
                if stop {
                    fill_rcpts(&mut outcome, rcpts.len());
                    return Ok(outcome);
                }
            }
            if !outcome.rcpts.iter().any(Reply::is_success) {
                return self.reset(outcome).await;
            }
            self.queue_line(&["DATA"]);
            self.write_queued("data", t).await?;
            self.read_reply("data", t).await?
        };

        if data_reply.code != 354 {
            let closing = self.closing(&data_reply);
            outcome.data = Some(data_reply);
            return if closing {
                Ok(outcome)
            } else {
                self.reset(outcome).await
            };
        }
        let mut enc = DataEncoder::default();
        for chunk in body.iter().flat_map(|p| p.chunks(BODY_CHUNK)) {
            enc.push(chunk, &mut self.wbuf);
            if self.wbuf.len() >= BODY_CHUNK {
                self.write_queued("body", self.data_timeout).await?;
            }
        }
        enc.finish(&mut self.wbuf);
        self.write_queued("body", self.data_timeout).await?;
        let fin = self.read_reply("dot", self.data_timeout).await?;
        self.closing(&fin);
        outcome.data = Some(fin);
        Ok(outcome)
    }

    /// Sends RSET after a transaction that failed before the dot, so the connection can be
    /// reused; a refused RSET only makes the client unusable.
    async fn reset(&mut self, outcome: SendOutcome) -> Result<SendOutcome, ClientError> {
        if !self.usable {
            return Ok(outcome);
        }
        self.queue_line(&["RSET"]);
        self.write_queued("rset", self.command_timeout).await?;
        let r = self.read_reply("rset", self.command_timeout).await?;
        if !r.is_success() {
            self.usable = false;
        }
        Ok(outcome)
    }

    /// True if `r` is a 421 (the server is closing); marks the client unusable.
    fn closing(&mut self, r: &Reply) -> bool {
        if r.code == 421 {
            self.usable = false;
        }
        !self.usable
    }

    /// False after a 421, a close, a timeout or an I/O error.
    pub fn is_usable(&self) -> bool {
        self.usable
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Best-effort QUIT, bounded by the command timeout.
    pub async fn quit(mut self) {
        if !self.usable {
            return;
        }
        let t = self.command_timeout;
        self.queue_line(&["QUIT"]);
        if self.write_queued("quit", t).await.is_ok() {
            let _ = self.read_reply("quit", t).await;
        }
    }

    fn queue_mail(&mut self, from: &str, body_len: usize) {
        self.wbuf.extend_from_slice(b"MAIL FROM:<");
        self.wbuf.extend_from_slice(from.as_bytes());
        self.wbuf.push(b'>');
        if self.max_size.is_some() {
            // RFC 1870: an estimate is fine; dot-stuffing adds a little. Writing to a Vec
            // cannot fail.
            let _ = write!(self.wbuf, " SIZE={body_len}");
        }
        self.wbuf.extend_from_slice(b"\r\n");
    }

    fn queue_line(&mut self, parts: &[&str]) {
        for p in parts {
            self.wbuf.extend_from_slice(p.as_bytes());
        }
        self.wbuf.extend_from_slice(b"\r\n");
    }

    async fn write_queued(&mut self, phase: &'static str, t: Duration) -> Result<(), ClientError> {
        let r = tokio::time::timeout(t, self.stream.write_all(&self.wbuf)).await;
        self.wbuf.clear();
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(self.fail(ClientError::Io { phase, source })),
            Err(_) => Err(self.fail(ClientError::Timeout { phase })),
        }
    }

    /// Reads one (possibly multi-line) reply.
    async fn read_reply(&mut self, phase: &'static str, t: Duration) -> Result<Reply, ClientError> {
        loop {
            let pending = &self.rbuf[self.rstart..];
            let mut iter = pending.iter();
            let parsed = self.receiver.parse(&mut iter);
            self.rstart += pending.len() - iter.len();
            match parsed {
                Ok(resp) => {
                    self.receiver.reset();
                    // smtp-proto stores enhanced-code parts in a u8 and saturates at 255
                    // ("5.7.708" comes back as 5.7.255); re-read such codes from the wire.
                    let saturated = resp.esc.contains(&u8::MAX);
                    let mut reply = Reply::from(resp);
                    if saturated {
                        let raw = &self.rbuf[self.reply_start..self.rstart];
                        if let Some(code) = enhanced_code_of_line(raw) {
                            reply.enhanced = Some(code);
                        }
                    }
                    self.reply_start = self.rstart;
                    return Ok(reply);
                }
                // The receiver keeps its partial state; everything given was consumed.
                Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                Err(e) => {
                    self.receiver.reset();
                    self.reply_start = self.rstart;
                    return Err(self.fail(ClientError::Protocol {
                        phase,
                        detail: format!("unparsable reply: {e}"),
                    }));
                }
            }
            if self.reply_start == self.rbuf.len() {
                self.rbuf.clear();
                self.rstart = 0;
                self.reply_start = 0;
            } else if self.reply_start > 0 {
                self.rbuf.drain(..self.reply_start);
                self.rstart -= self.reply_start;
                self.reply_start = 0;
            }
            self.rbuf.reserve(READ_CHUNK);
            match tokio::time::timeout(t, self.stream.read_buf(&mut self.rbuf)).await {
                Ok(Ok(0)) => return Err(self.fail(ClientError::Closed { phase })),
                Ok(Ok(_)) => {}
                Ok(Err(source)) => return Err(self.fail(ClientError::Io { phase, source })),
                Err(_) => return Err(self.fail(ClientError::Timeout { phase })),
            }
        }
    }

    fn fail(&mut self, e: ClientError) -> ClientError {
        self.usable = false;
        e
    }
}

/// Refuses arguments that would inject extra protocol lines.
fn check_line(phase: &'static str, s: &str) -> Result<(), ClientError> {
    if s.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(ClientError::Protocol {
            phase,
            detail: format!("argument {s:?} contains CR or LF"),
        });
    }
    Ok(())
}

/// Gives every recipient without a reply of its own the reply that ended the transaction, so
/// `rcpts` always has one entry per recipient.
fn fill_rcpts(outcome: &mut SendOutcome, n: usize) {
    let last = outcome.rcpts.last().cloned().unwrap_or_else(|| outcome.mail.clone());
    outcome.rcpts.resize(n, last);
}
