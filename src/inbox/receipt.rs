//! Receipts: proof that a message reached a mock inbox (SPEC §3), with the identity headers
//! the generator stamped on it (SPEC §5) parsed back out of the received DATA by
//! [`Identity::parse`], the one reader of those headers.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::events::Identity;

/// One accepted message, as the standalone inbox writes it to `--receipts` (one JSON line each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Inbox receive time (RFC 3339).
    pub t: String,
    pub message_id: Option<String>,
    pub mailsurge_id: Option<String>,
    pub rcpt: Vec<String>,
    pub source_ip: String,
    pub size: usize,
    /// Receive time in ns since epoch, for exact delivery-time arithmetic.
    pub t_ns: u64,
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intended_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_ns: Option<u64>,
    /// This message id was received before (an extra delivery).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// It came over TLS: the session's handshake time in µs on its first message, else 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<u64>,
}

impl Receipt {
    /// `head` is the start of the message (at least its header section); `size` its length.
    pub fn new(provider: &str, t_ns: u64, rcpt: Vec<String>, source_ip: IpAddr, head: &[u8], size: usize) -> Receipt {
        let id = Identity::parse(head);
        Receipt {
            t: crate::events::rfc3339(t_ns),
            message_id: id.message_id,
            mailsurge_id: id.mailsurge_id,
            rcpt,
            source_ip: source_ip.to_string(),
            size,
            t_ns,
            provider: provider.to_string(),
            intended_ns: id.intended_ns,
            submitted_ns: id.submitted_ns,
            duplicate: false,
            tls: None,
        }
    }

    /// The id used for accounting and duplicate detection: ours if present, else Message-ID.
    pub fn key(&self) -> Option<&str> {
        self.mailsurge_id.as_deref().or(self.message_id.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_mail_keys_on_message_id() {
        let r = Receipt::new(
            "p",
            1,
            vec![],
            "127.0.0.1".parse().unwrap(),
            b"Message-ID: <z@y>\r\n\r\nhi\r\n",
            22,
        );
        assert_eq!(r.key(), Some("<z@y>"));
        assert_eq!(r.mailsurge_id, None);
    }
}
