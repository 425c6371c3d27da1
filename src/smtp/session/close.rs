//! How a session's connection ends: a bounded linger after the last reply, or a hangup
//! without one (close, reset, blackhole) when the policy plays a broken provider.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Session, LINGER_READ_CHUNK};
use crate::smtp::policy::{Hangup, Policy, BLACKHOLE_HOLD};

/// After sending a closing reply, how long to keep draining input so the peer sees the reply
/// instead of a reset (closing with unread input makes the kernel send RST).
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes drained while lingering; a client still streaming is not worth waiting for.
const LINGER_MAX_BYTES: usize = 256 * 1024;

/// Half-closes, then drains input for a bounded time so the last reply is not lost to a RST.
pub(crate) async fn linger_close<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S) {
    let _ = tokio::time::timeout(LINGER_TIMEOUT, async {
        stream.shutdown().await?;
        let mut sink = [0u8; LINGER_READ_CHUNK];
        let mut drained = 0;
        while drained < LINGER_MAX_BYTES {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), io::Error>(())
    })
    .await;
}

impl<P: Policy> Session<P> {
    /// Ends the connection without a reply. Replies already queued for earlier pipelined
    /// commands are sent first: the provider answered those before it broke.
    pub(super) async fn hang_up(&mut self, h: Hangup) {
        let conn_id = self.info.conn_id;
        if let Err(e) = self.conn.flush().await {
            tracing::trace!(conn_id, "flush before hangup failed: {e}");
        }
        match h {
            Hangup::Close => {}
            Hangup::Reset => {
                // Zero linger makes close() send RST at once; the deprecation is about
                // non-zero linger blocking the thread on drop, which zero does not do.
                #[allow(deprecated)]
                if let Some(Err(e)) = self.conn.stream.tcp().map(|t| t.set_linger(Some(Duration::ZERO))) {
                    tracing::trace!(conn_id, "set_linger failed: {e}");
                }
            }
            Hangup::Blackhole => {
                let Session { conn, shutdown, .. } = self;
                let mut sink = [0u8; LINGER_READ_CHUNK];
                let hold = async {
                    while let Ok(n) = conn.stream.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                };
                tokio::select! {
                    () = hold => {}
                    () = shutdown.recv() => {}
                    () = tokio::time::sleep(BLACKHOLE_HOLD) => {}
                }
            }
        }
    }
}
