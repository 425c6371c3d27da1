//! Receipts: proof that a message reached a mock inbox (SPEC §3), with the identity headers
//! the generator stamped on it (SPEC §5) parsed back out of the received DATA.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Only the header block is scanned; bodies can be megabytes and never hold our headers.
const MAX_HEADER_SCAN: usize = 64 * 1024;

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
}

/// The identity headers of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub message_id: Option<String>,
    pub mailsurge_id: Option<String>,
    pub intended_ns: Option<u64>,
    pub submitted_ns: Option<u64>,
}

/// Parses `Message-ID`, `X-Mailsurge-Id`, `X-Mailsurge-Intended` and `X-Mailsurge-Submitted`
/// from the header block (up to the first empty line). Folded continuation lines are ignored:
/// none of these headers is long enough to be folded by a sane client.
pub fn parse_identity(msg: &[u8]) -> Identity {
    let head = &msg[..msg.len().min(MAX_HEADER_SCAN)];
    let mut id = Identity::default();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = String::from_utf8_lossy(value).trim().to_string();
        if name.eq_ignore_ascii_case(b"message-id") {
            id.message_id = Some(value);
        } else if name.eq_ignore_ascii_case(b"x-mailsurge-id") {
            id.mailsurge_id = Some(value);
        } else if name.eq_ignore_ascii_case(b"x-mailsurge-intended") {
            id.intended_ns = value.parse().ok();
        } else if name.eq_ignore_ascii_case(b"x-mailsurge-submitted") {
            id.submitted_ns = value.parse().ok();
        }
    }
    id
}

impl Receipt {
    pub fn new(provider: &str, t_ns: u64, rcpt: Vec<String>, source_ip: IpAddr, body: &[u8]) -> Receipt {
        let id = parse_identity(body);
        Receipt {
            t: crate::events::rfc3339(t_ns),
            message_id: id.message_id,
            mailsurge_id: id.mailsurge_id,
            rcpt,
            source_ip: source_ip.to_string(),
            size: body.len(),
            t_ns,
            provider: provider.to_string(),
            intended_ns: id.intended_ns,
            submitted_ns: id.submitted_ns,
            duplicate: false,
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
    fn parses_identity_headers() {
        let m = b"From: a@b\r\nMessage-ID: <1@x>\r\nx-mailsurge-id: run.7\r\nX-Mailsurge-Intended: 123\r\nX-Mailsurge-Submitted: 456\r\n\r\nX-Mailsurge-Id: body.1\r\n";
        let id = parse_identity(m);
        assert_eq!(id.message_id.as_deref(), Some("<1@x>"));
        assert_eq!(id.mailsurge_id.as_deref(), Some("run.7"));
        assert_eq!(id.intended_ns, Some(123));
        assert_eq!(id.submitted_ns, Some(456));
    }

    #[test]
    fn foreign_mail_keys_on_message_id() {
        let r = Receipt::new(
            "p",
            1,
            vec![],
            "127.0.0.1".parse().unwrap(),
            b"Message-ID: <z@y>\r\n\r\nhi\r\n",
        );
        assert_eq!(r.key(), Some("<z@y>"));
        assert_eq!(r.mailsurge_id, None);
    }
}
