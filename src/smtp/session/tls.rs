//! STARTTLS on the server side of a session (RFC 3207).

use std::io;

use super::{Flow, Session};
use crate::smtp::codec::LineFramer;
use crate::smtp::policy::{Policy, StartTls};
use crate::smtp::reply::Reply;
use crate::smtp::shared::ServerStats;

impl<P: Policy> Session<P> {
    /// STARTTLS (RFC 3207): `220`, then the handshake on the same socket, then a session that
    /// starts over — no HELO, no transaction. Whatever the client sent after the STARTTLS line
    /// in the clear is thrown away unread: a command pipelined behind it would otherwise run
    /// inside the TLS session as if the client had sent it there (the STARTTLS
    /// command-injection class, CVE-2011-0411 and its kin).
    pub(super) async fn starttls(&mut self) -> io::Result<Flow> {
        if self.info.tls.is_some() {
            return Ok(self.bad_sequence("Error: TLS already active"));
        }
        let offer = self.shared.policy.starttls(&self.info);
        if matches!(offer, StartTls::NotOffered) {
            return Ok(self.protocol_error(Reply::new(502, Some("5.5.1"), "Error: command not implemented")));
        }
        if self.env.is_some() {
            return Ok(self.bad_sequence("Error: MAIL transaction in progress"));
        }
        Reply::new(220, Some("2.0.0"), "Ready to start TLS").write_wire(&mut self.conn.outbuf);
        self.conn.flush().await?;
        let discarded = self.conn.pending().len();
        if discarded > 0 {
            ServerStats::bump(&self.shared.stats.starttls_injections);
            tracing::debug!(
                conn_id = self.info.conn_id,
                discarded,
                "bytes pipelined after STARTTLS discarded"
            );
        }
        self.conn.inbuf.clear();
        self.conn.start = 0;
        let StartTls::Offer(config) = offer else {
            // Broken TLS: the client gets its 220, then the connection ends.
            return Ok(Flow::Gone);
        };
        match self
            .conn
            .stream
            .accept_tls(config, self.shared.limits.command_timeout)
            .await
        {
            Ok(info) => {
                ServerStats::bump(&self.shared.stats.tls_sessions);
                self.info.tls = Some(info);
                self.info.helo = None;
                // RFC 3207 §4.2: everything learnt in the clear is forgotten, AUTH included.
                self.info.auth = None;
                self.env = None;
                self.mail_refused = false;
                self.framer = LineFramer::new(self.shared.limits.max_command_line);
                Ok(Flow::Continue)
            }
            Err(e) => {
                ServerStats::bump(&self.shared.stats.tls_failures);
                tracing::debug!(conn_id = self.info.conn_id, "TLS handshake failed: {e}");
                Ok(Flow::Gone)
            }
        }
    }
}
