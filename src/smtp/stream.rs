//! A connection that may turn into TLS halfway through (STARTTLS, RFC 3207): plain TCP until the
//! upgrade, then a rustls stream over the same socket. The session and the client read and write
//! through it without caring which it is; only the upgrade itself, and the few things that need
//! the socket (its addresses, an abortive close), look inside.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What a finished handshake negotiated, and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The cipher suite, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// From the STARTTLS reply to the handshake's end, µs.
    pub handshake_us: u64,
}

/// Plain TCP, or TLS over it.
#[derive(Debug, Default)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// Between taking the socket for a handshake and putting the result back; a handshake
    /// that failed leaves the stream here, and every read or write then fails.
    #[default]
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection was lost in a TLS handshake",
    )
}

impl Stream {
    /// The TCP socket under it.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(s) => Some(s.get_ref().0),
            Stream::Gone => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The server side of STARTTLS: the handshake on this socket, bounded by `timeout`.
    pub async fn accept_tls(&mut self, config: Arc<rustls::ServerConfig>, timeout: Duration) -> io::Result<TlsInfo> {
        let Stream::Plain(tcp) = std::mem::take(self) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "TLS is already on"));
        };
        let t0 = std::time::Instant::now();
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
        let tls = match tokio::time::timeout(timeout, accept).await {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
        };
        let info = info(tls.get_ref().1, t0);
        *self = Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls)));
        Ok(info)
    }

    /// The client side of STARTTLS, verifying the server as `name` with `config`.
    pub async fn connect_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        timeout: Duration,
    ) -> io::Result<TlsInfo> {
        let Stream::Plain(tcp) = std::mem::take(self) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "TLS is already on"));
        };
        let t0 = std::time::Instant::now();
        let connect = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
        let tls = match tokio::time::timeout(timeout, connect).await {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
        };
        let info = info(tls.get_ref().1, t0);
        *self = Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls)));
        Ok(info)
    }
}

fn info(c: &rustls::CommonState, t0: std::time::Instant) -> TlsInfo {
    TlsInfo {
        version: c
            .protocol_version()
            .and_then(|v| v.as_str())
            .unwrap_or("TLS")
            .replace('_', "."),
        cipher: c
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("?")
            .to_string(),
        handshake_us: t0.elapsed().as_micros() as u64,
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Gone => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}
