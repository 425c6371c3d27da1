//! Test harness: a configurable policy, a server on an ephemeral loopback port, and a raw
//! socket client that asserts exact reply codes.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::smtp::server::{serve, Decision, Envelope, Limits, Policy, ServerStats, SessionInfo};
use crate::smtp::Reply;

/// Upper bound on any single wait in tests, so a bug fails a test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(5);

/// A message as the policy saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub env: Envelope,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
    /// The session had finished STARTTLS.
    pub tls: bool,
    /// The user the session authenticated as.
    pub auth: Option<String>,
}

/// A policy whose answers are set per test.
#[derive(Default)]
pub struct TestPolicy {
    pub connect: Option<Decision>,
    /// Decision for a recipient address; others get the default 250.
    pub rcpt_rules: Vec<(String, Decision)>,
    /// Decision for MAIL; default 250.
    pub mail: Option<Decision>,
    /// Decision for the n-th MAIL on the server (1-based), overriding `mail`.
    pub mail_nth: Option<(u64, Decision)>,
    /// Replies to successive messages; 250 once exhausted.
    pub message_replies: Mutex<VecDeque<Decision>>,
    pub received: Mutex<Vec<Received>>,
    pub mails: AtomicU64,
    pub peers: Mutex<Vec<IpAddr>>,
    pub disconnects: AtomicU64,
    /// What STARTTLS does; not offered by default.
    pub starttls: Option<crate::smtp::StartTls>,
    /// AUTH offer and the one account it accepts; not offered by default.
    pub auth: Option<(crate::smtp::AuthOffer, crate::smtp::Credentials)>,
}

impl TestPolicy {
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Policy for TestPolicy {
    async fn connect(&self, s: &SessionInfo) -> Decision {
        self.peers.lock().unwrap().push(s.peer.ip());
        self.connect
            .clone()
            .unwrap_or_else(|| Decision::reply(Reply::new(220, None, crate::smtp::server::DEFAULT_BANNER_TEXT)))
    }

    async fn mail(&self, _s: &SessionInfo, _from: &str, _size: Option<usize>) -> Decision {
        let n = self.mails.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((nth, d)) = &self.mail_nth {
            if *nth == n {
                return d.clone();
            }
        }
        self.mail
            .clone()
            .unwrap_or_else(|| Decision::reply(Reply::new(250, Some("2.1.0"), "Ok")))
    }

    async fn rcpt(&self, _s: &SessionInfo, _env: &Envelope, rcpt: &str) -> Decision {
        self.rcpt_rules
            .iter()
            .find(|(a, _)| a == rcpt)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| Decision::reply(Reply::new(250, Some("2.1.5"), "Ok")))
    }

    async fn message(&self, s: &SessionInfo, env: &Envelope, body: Vec<u8>) -> Decision {
        self.received.lock().unwrap().push(Received {
            env: env.clone(),
            body,
            peer: s.peer,
            tls: s.tls.is_some(),
            auth: s.auth.clone(),
        });
        let next = self.message_replies.lock().unwrap().pop_front();
        next.unwrap_or_else(|| Decision::reply(Reply::new(250, Some("2.0.0"), "Ok: queued")))
    }

    fn disconnected(&self, _s: &SessionInfo) {
        self.disconnects.fetch_add(1, Ordering::SeqCst);
    }

    fn starttls(&self, _s: &SessionInfo) -> crate::smtp::StartTls {
        self.starttls.clone().unwrap_or(crate::smtp::StartTls::NotOffered)
    }

    fn auth(&self, _s: &SessionInfo) -> crate::smtp::AuthOffer {
        self.auth
            .as_ref()
            .map_or(crate::smtp::AuthOffer::NotOffered, |(o, _)| *o)
    }

    async fn login(&self, _s: &SessionInfo, c: &crate::smtp::Credentials) -> Decision {
        match &self.auth {
            Some((_, good)) if good == c => {
                Decision::reply(Reply::new(235, Some("2.7.0"), "Authentication successful"))
            }
            _ => Decision::reply(Reply::new(535, Some("5.7.8"), "Authentication credentials invalid")),
        }
    }
}

/// A running `serve` on 127.0.0.1:0.
pub struct TestServer {
    pub addr: SocketAddr,
    pub policy: Arc<TestPolicy>,
    pub stats: Arc<ServerStats>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(policy: TestPolicy, limits: Limits) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let policy = Arc::new(policy);
        let stats = Arc::new(ServerStats::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(serve(
            listener,
            Arc::clone(&policy),
            limits,
            Arc::clone(&stats),
            async move {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            policy,
            stats,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub async fn default_server() -> TestServer {
        TestServer::start(TestPolicy::default(), test_limits()).await
    }

    /// Resolves the shutdown future and waits for `serve` to return.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(WAIT, handle).await.unwrap().unwrap()
    }

    pub async fn raw(&self) -> Raw {
        Raw::connect(self.addr).await
    }

    /// Polls until `cond` holds, for counters updated after the reply was sent.
    pub async fn eventually(&self, cond: impl Fn(&TestServer) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !cond(self) {
            assert!(tokio::time::Instant::now() < deadline, "condition not met in time");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A client with short timeouts, and the given STARTTLS and AUTH settings.
pub fn client_cfg(
    tls: crate::smtp::client::ClientTls,
    auth: Option<crate::smtp::Credentials>,
) -> crate::smtp::ClientConfig {
    crate::smtp::ClientConfig {
        helo: "gen.test".into(),
        connect_timeout: WAIT,
        command_timeout: WAIT,
        data_timeout: WAIT,
        tls,
        auth,
        ..crate::smtp::ClientConfig::default()
    }
}

pub fn test_limits() -> Limits {
    Limits {
        hostname: "mx.test".to_owned(),
        ..Limits::default()
    }
}

/// A raw socket speaking bytes, reading replies with smtp-proto's parser.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    rx: ResponseReceiver,
    /// Every byte received, for exact wire assertions.
    pub wire: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw::new(
            tokio::time::timeout(WAIT, TcpStream::connect(addr))
                .await
                .unwrap()
                .unwrap(),
        )
    }

    /// Connects from a chosen loopback source address (another "client host").
    pub async fn connect_from(addr: SocketAddr, src: std::net::IpAddr) -> Raw {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(src, 0)).unwrap();
        Raw::new(tokio::time::timeout(WAIT, sock.connect(addr)).await.unwrap().unwrap())
    }

    /// `TCP_NODELAY` like the server's sockets: with Nagle, a small write behind unacknowledged
    /// bytes waits for the peer's delayed ACK, a kernel timer. On the wall clock that costs up
    /// to 40 ms; on a paused tokio clock the runtime would sit idle meanwhile and jump time to
    /// the next tokio timer (a server deadline, or `WAIT`). Without it, loopback I/O between
    /// tasks of one runtime is ready before `write` returns, so paused tests stay exact.
    fn new(stream: TcpStream) -> Raw {
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
            pos: 0,
            rx: ResponseReceiver::default(),
            wire: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).await.unwrap();
    }

    /// The next reply, or `None` if the server closed first.
    pub async fn try_reply(&mut self) -> Option<Reply> {
        loop {
            let pending = &self.buf[self.pos..];
            let mut it = pending.iter();
            let r = self.rx.parse(&mut it);
            self.pos += pending.len() - it.len();
            match r {
                Ok(resp) => {
                    self.rx.reset();
                    return Some(Reply::from(resp));
                }
                Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                Err(e) => panic!("bad reply from server: {e}"),
            }
            let mut chunk = [0u8; 4096];
            // A reset counts as a close: both end the conversation.
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("timed out waiting for a reply")
                .unwrap_or_default();
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
            self.wire.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn reply(&mut self) -> Reply {
        self.try_reply().await.expect("server closed the connection")
    }

    /// Reads a reply and checks its code.
    pub async fn expect(&mut self, code: u16) -> Reply {
        let r = self.reply().await;
        assert_eq!(r.code, code, "unexpected reply {r}");
        r
    }

    pub async fn cmd(&mut self, line: &str, code: u16) -> Reply {
        self.send(format!("{line}\r\n")).await;
        self.expect(code).await
    }

    /// Asserts that the server closes the connection next.
    pub async fn expect_closed(&mut self) {
        if let Some(r) = self.try_reply().await {
            panic!("expected close, got {r}");
        }
    }

    /// Greeting plus EHLO.
    pub async fn hello(&mut self) {
        self.expect(220).await;
        self.cmd("EHLO client.test", 250).await;
    }
}
