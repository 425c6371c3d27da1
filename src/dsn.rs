//! RFC 3464 delivery status notifications, parsed far enough to account for an external MTA's
//! bounces and expiries: which recipients failed or were delayed, with which status, and the
//! `X-Mailsurge-Id` of the original message from the returned headers.
//!
//! Only parsing lives here; what a parsed DSN means for a run is the bounce inbox's business (`inbox::bounces`). The parser
//! is deliberately lenient — real MTAs fold fields, quote boundaries, use `message/rfc822` or
//! `text/rfc822-headers` (RFC 6522) for the returned part, and RFC 6533's `message/global-*`
//! types — and never fails: a message it cannot read yields an empty [`Dsn`], which the bounce
//! inbox counts as unattributed rather than dropping silently.

use crate::events::Identity;

/// One per-recipient block of a `message/delivery-status` part.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecipientStatus {
    /// `Original-Recipient` when present (the address as submitted), else `Final-Recipient`;
    /// the `rfc822;` address-type prefix removed.
    pub recipient: String,
    pub action: Action,
    /// `Status:`, e.g. `5.1.1` or `4.4.7`.
    pub status: String,
    /// `Diagnostic-Code:` without its `smtp;` type prefix, e.g. `550 5.1.1 <a@b>: user unknown`.
    pub diagnostic: Option<String>,
    /// `Remote-MTA:` without its type prefix.
    pub remote_mta: Option<String>,
}

/// `Action:` of RFC 3464 §2.3.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    #[default]
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        // RFC 3464 allows comments after the keyword; take the first word.
        let w = s.split_whitespace().next()?.to_ascii_lowercase();
        Some(match w.as_str() {
            "failed" => Action::Failed,
            "delayed" => Action::Delayed,
            "delivered" => Action::Delivered,
            "relayed" => Action::Relayed,
            "expanded" => Action::Expanded,
            _ => return None,
        })
    }
}

impl RecipientStatus {
    /// A failure whose status is transient (`4.x.x`): the MTA gave up retrying — an expiry,
    /// as Postfix reports mail older than `maximal_queue_lifetime`.
    pub fn is_expiry(&self) -> bool {
        self.action == Action::Failed && self.status.starts_with('4')
    }
}

/// What a DSN says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dsn {
    /// A `multipart/report; report-type=delivery-status` with a status part was found.
    pub is_report: bool,
    /// `Original-Envelope-Id:` (RFC 3461 ENVID) of the per-message fields.
    pub envelope_id: Option<String>,
    /// `Reporting-MTA:` without its type prefix.
    pub reporting_mta: Option<String>,
    pub recipients: Vec<RecipientStatus>,
    /// Identity headers of the returned message (or returned headers).
    pub original: Identity,
}

impl Dsn {
    /// The message id the DSN is about: the returned `X-Mailsurge-Id`, else the ENVID.
    pub fn mailsurge_id(&self) -> Option<&str> {
        self.original.mailsurge_id.as_deref().or(self.envelope_id.as_deref())
    }
}

/// Parses a received message as a DSN. Never fails; see the module doc.
pub fn parse(msg: &[u8]) -> Dsn {
    let mut dsn = Dsn::default();
    let (head, body) = split_head(msg);
    let fields = header_fields(head);
    let Some(ct) = field(&fields, "content-type") else {
        return dsn;
    };
    let (mime, params) = content_type(ct);
    if !mime.eq_ignore_ascii_case("multipart/report") {
        return dsn;
    }
    let Some(boundary) = params.iter().find(|(k, _)| k == "boundary").map(|(_, v)| v.clone()) else {
        return dsn;
    };
    for part in parts(body, &boundary) {
        let (phead, pbody) = split_head(part);
        let pfields = header_fields(phead);
        let ptype = field(&pfields, "content-type").map_or(String::new(), |c| content_type(c).0.to_ascii_lowercase());
        match ptype.as_str() {
            "message/delivery-status" | "message/global-delivery-status" => {
                dsn.is_report = true;
                read_status(pbody, &mut dsn);
            }
            "message/rfc822"
            | "text/rfc822-headers"
            | "message/rfc822-headers"
            | "message/global"
            | "message/global-headers" => {
                let id = Identity::parse(pbody);
                if id.mailsurge_id.is_some() || id.message_id.is_some() {
                    dsn.original = id;
                }
            }
            _ => {}
        }
    }
    dsn
}

/// Splits at the first empty line (CRLF or LF endings).
fn split_head(msg: &[u8]) -> (&[u8], &[u8]) {
    let mut i = 0;
    while i < msg.len() {
        let end = msg[i..].iter().position(|&b| b == b'\n').map_or(msg.len(), |p| i + p);
        let line = &msg[i..end];
        if line.is_empty() || line == b"\r" {
            return (&msg[..i], msg.get(end + 1..).unwrap_or_default());
        }
        i = end + 1;
    }
    (msg, &[])
}

/// Unfolds a header block (or one DSN field group) into (lowercase name, value) pairs.
fn header_fields(head: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(head);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    out
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// `type/subtype; k=v; k="v"` → (type/subtype, [(k lowercase, v unquoted)]).
fn content_type(v: &str) -> (String, Vec<(String, String)>) {
    let mut it = v.split(';');
    let mime = it.next().unwrap_or("").trim().to_string();
    let params = it
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string()))
        .collect();
    (mime, params)
}

/// The body parts of a multipart body, between `--boundary` lines, up to `--boundary--`.
fn parts<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delim = format!("--{boundary}");
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < body.len() {
        let end = body[i..].iter().position(|&b| b == b'\n').map_or(body.len(), |p| i + p);
        let line = body[i..end].strip_suffix(b"\r").unwrap_or(&body[i..end]);
        if let Some(rest) = line.strip_prefix(delim.as_bytes()) {
            let rest = rest.trim_ascii_end();
            if rest.is_empty() || rest == b"--" {
                if let Some(s) = start {
                    // The line break before a delimiter belongs to the delimiter.
                    let mut e = i;
                    if e > s && body[e - 1] == b'\n' {
                        e -= 1;
                        if e > s && body[e - 1] == b'\r' {
                            e -= 1;
                        }
                    }
                    out.push(&body[s..e]);
                }
                if rest == b"--" {
                    return out;
                }
                start = Some((end + 1).min(body.len()));
            }
        }
        i = end + 1;
    }
    // A missing closing delimiter still yields the last part (truncated DSNs exist).
    if let Some(s) = start {
        out.push(&body[s..]);
    }
    out
}

/// Reads the per-message group and the per-recipient groups of a delivery-status part.
fn read_status(body: &[u8], dsn: &mut Dsn) {
    let text = String::from_utf8_lossy(body);
    // Groups are separated by blank lines; tolerate stray whitespace on the separator.
    let mut groups: Vec<String> = vec![String::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            if !groups.last().is_some_and(String::is_empty) {
                groups.push(String::new());
            }
        } else {
            let g = groups.last_mut().expect("never empty");
            g.push_str(line);
            g.push('\n');
        }
    }
    for (i, g) in groups.iter().filter(|g| !g.is_empty()).enumerate() {
        let f = header_fields(g.as_bytes());
        let recipient = field(&f, "original-recipient").or(field(&f, "final-recipient"));
        if i == 0 && recipient.is_none() {
            dsn.envelope_id = field(&f, "original-envelope-id").map(str::to_string);
            dsn.reporting_mta = field(&f, "reporting-mta").map(strip_type);
            continue;
        }
        let (Some(recipient), Some(action)) = (recipient, field(&f, "action").and_then(Action::parse)) else {
            continue;
        };
        dsn.recipients.push(RecipientStatus {
            recipient: strip_type(recipient),
            action,
            status: field(&f, "status")
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or("")
                .to_string(),
            diagnostic: field(&f, "diagnostic-code").map(strip_type),
            remote_mta: field(&f, "remote-mta").map(strip_type),
        });
    }
}

/// `rfc822; a@b` → `a@b` (also `dns;`, `smtp;`); angle brackets removed.
fn strip_type(v: &str) -> String {
    let v = v.split_once(';').map_or(v, |(_, rest)| rest).trim();
    v.trim_start_matches('<').trim_end_matches('>').to_string()
}

/// Most of the original header block a DSN returns (RFC 6522 `text/rfc822-headers`); the body
/// is never returned — it would double the bounce's size for nothing the harness reads.
const MAX_RETURNED_HEADERS: usize = 16 * 1024;

/// A bounce message to send back to the envelope sender (RFC 3464 `multipart/report`), as a
/// reference-MTA node with `dsn: true` writes it: a short human part, the machine-readable
/// status part, and the original message's headers.
pub struct Notice<'a> {
    /// Host name of the reporting MTA (`Reporting-MTA: dns; …`).
    pub reporting_mta: &'a str,
    /// The envelope sender being notified.
    pub to: &'a str,
    /// When the reporting MTA accepted the original, ns since epoch.
    pub arrival_ns: u64,
    pub recipients: &'a [RecipientStatus],
    /// The original message (only its header block is returned).
    pub original: &'a [u8],
    /// Unique per notice: makes the boundary and Message-ID.
    pub unique: &'a str,
}

impl Notice<'_> {
    /// The notice's bytes with CRLF line endings, ready for DATA.
    pub fn render(&self, now_ns: u64) -> Vec<u8> {
        let date = |ns: u64| chrono::DateTime::<chrono::Utc>::from(crate::events::from_ns(ns)).to_rfc2822();
        let boundary = format!("{}/{}", self.unique, self.reporting_mta);
        let mut m = String::with_capacity(2048);
        let mut line = |s: &str| {
            m.push_str(s);
            m.push_str("\r\n");
        };
        line(&format!("Date: {}", date(now_ns)));
        line(&format!(
            "From: MAILER-DAEMON@{} (Mail Delivery System)",
            self.reporting_mta
        ));
        line(&format!("To: <{}>", self.to));
        line("Subject: Undelivered Mail Returned to Sender");
        line("Auto-Submitted: auto-replied");
        line(&format!("Message-ID: <{}@{}>", self.unique, self.reporting_mta));
        line("MIME-Version: 1.0");
        line(&format!(
            "Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\""
        ));
        line("");
        line("This is a MIME-encapsulated message.");
        line("");
        line(&format!("--{boundary}"));
        line("Content-Description: Notification");
        line("Content-Type: text/plain; charset=us-ascii");
        line("");
        line("Your message could not be delivered to one or more recipients:");
        for r in self.recipients {
            line(&format!(
                "  <{}>: {}",
                r.recipient,
                r.diagnostic.as_deref().unwrap_or(&r.status)
            ));
        }
        line("");
        line(&format!("--{boundary}"));
        line("Content-Description: Delivery report");
        line("Content-Type: message/delivery-status");
        line("");
        line(&format!("Reporting-MTA: dns; {}", self.reporting_mta));
        line(&format!("Arrival-Date: {}", date(self.arrival_ns)));
        for r in self.recipients {
            line("");
            line(&format!("Final-Recipient: rfc822; {}", r.recipient));
            line(&format!("Original-Recipient: rfc822;{}", r.recipient));
            line(match r.action {
                Action::Failed => "Action: failed",
                Action::Delayed => "Action: delayed",
                Action::Delivered => "Action: delivered",
                Action::Relayed => "Action: relayed",
                Action::Expanded => "Action: expanded",
            });
            line(&format!("Status: {}", r.status));
            if let Some(mta) = &r.remote_mta {
                line(&format!("Remote-MTA: dns; {mta}"));
            }
            if let Some(d) = &r.diagnostic {
                // Header-safe: one line, no bare CR/LF from a remote reply.
                let d: String = d.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
                line(&format!("Diagnostic-Code: smtp; {d}"));
            }
        }
        line("");
        line(&format!("--{boundary}"));
        line("Content-Description: Undelivered Message Headers");
        line("Content-Type: text/rfc822-headers");
        line("");
        let (head, _) = split_head(self.original);
        let head = &head[..head.len().min(MAX_RETURNED_HEADERS)];
        for l in String::from_utf8_lossy(head).lines() {
            // A leading dot is fine here: the SMTP client dot-stuffs when it sends.
            line(l);
        }
        line("");
        line(&format!("--{boundary}--"));
        m.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Postfix 3.7 bounce as Debian's package sends it (bounce(8) templates), with the
    /// returned message's headers cut short; one recipient unknown, one expired.
    const POSTFIX: &str = "Return-Path: <>\r\n\
Date: Mon, 23 Nov 2026 19:20:01 +0000 (UTC)\r\n\
From: MAILER-DAEMON@relay.test (Mail Delivery System)\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
To: t3@bounces.mailsurge.test\r\n\
Auto-Submitted: auto-replied\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status;\r\n\
\tboundary=\"4A1B21C0.1700000000/relay.test\"\r\n\
Content-Transfer-Encoding: 8bit\r\n\
Message-Id: <20261123192001.0001@relay.test>\r\n\
\r\n\
This is a MIME-encapsulated message.\r\n\
\r\n\
--4A1B21C0.1700000000/relay.test\r\n\
Content-Description: Notification\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
I'm sorry to have to inform you that your message could not\r\n\
be delivered to one or more recipients.\r\n\
\r\n\
--4A1B21C0.1700000000/relay.test\r\n\
Content-Description: Delivery report\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; relay.test\r\n\
X-Postfix-Queue-ID: 4A1B21C0\r\n\
X-Postfix-Sender: rfc822; t3@bounces.mailsurge.test\r\n\
Arrival-Date: Mon, 23 Nov 2026 19:19:40 +0000 (UTC)\r\n\
\r\n\
Final-Recipient: rfc822; user13@example.com\r\n\
Original-Recipient: rfc822;user13@example.com\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Remote-MTA: dns; 127.0.6.11\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <user13@example.com>: Recipient address\r\n\
\x20   rejected: User unknown in virtual mailbox table\r\n\
\r\n\
Final-Recipient: rfc822; user17@example.com\r\n\
Action: failed\r\n\
Status: 4.3.0\r\n\
Diagnostic-Code: X-Postfix; delivery temporarily suspended\r\n\
\r\n\
--4A1B21C0.1700000000/relay.test\r\n\
Content-Description: Undelivered Message Headers\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
Message-ID: <r.42@mailsurge.test>\r\n\
X-Mailsurge-Id: run-1.42\r\n\
X-Mailsurge-Intended: 1700000000000000000\r\n\
\r\n\
--4A1B21C0.1700000000/relay.test--\r\n";

    #[test]
    fn parses_a_postfix_bounce() {
        let d = parse(POSTFIX.as_bytes());
        assert!(d.is_report);
        assert_eq!(d.reporting_mta.as_deref(), Some("relay.test"));
        assert_eq!(d.mailsurge_id(), Some("run-1.42"));
        assert_eq!(d.original.intended_ns, Some(1_700_000_000_000_000_000));
        assert_eq!(d.recipients.len(), 2);
        let a = &d.recipients[0];
        assert_eq!(a.recipient, "user13@example.com");
        assert_eq!(a.action, Action::Failed);
        assert_eq!(a.status, "5.1.1");
        assert_eq!(a.remote_mta.as_deref(), Some("127.0.6.11"));
        assert_eq!(
            a.diagnostic.as_deref(),
            Some("550 5.1.1 <user13@example.com>: Recipient address rejected: User unknown in virtual mailbox table")
        );
        assert!(!a.is_expiry());
        let b = &d.recipients[1];
        assert_eq!(b.recipient, "user17@example.com");
        assert!(b.is_expiry());
    }

    #[test]
    fn lf_only_delay_notice_with_envid_and_full_message() {
        let m = "Content-Type: multipart/report; boundary=XYZ; report-type=delivery-status\n\n\
--XYZ\nContent-Type: text/plain\n\nstill trying\n\
--XYZ\nContent-Type: message/delivery-status\n\nReporting-MTA: dns;mx.test\nOriginal-Envelope-Id: run-2.7\n\n\
Final-Recipient: rfc822;<a@b.test>\nAction: delayed (will retry)\nStatus: 4.4.1\n\n\
--XYZ\nContent-Type: message/rfc822\n\nSubject: hi\n\nbody\n--XYZ--\n";
        let d = parse(m.as_bytes());
        assert!(d.is_report);
        assert_eq!(d.mailsurge_id(), Some("run-2.7"));
        assert_eq!(d.recipients[0].recipient, "a@b.test");
        assert_eq!(d.recipients[0].action, Action::Delayed);
        assert!(!d.recipients[0].is_expiry());
    }

    #[test]
    fn non_reports_and_garbage_parse_to_nothing() {
        for m in [
            &b"Subject: out of office\r\n\r\nback monday\r\n"[..],
            b"Content-Type: multipart/report\r\n\r\n--x\r\n",
            b"Content-Type: multipart/report; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\n",
            b"",
            b"\xff\xfe:\r\n\r\n\x00",
        ] {
            let d = parse(m);
            assert!(d.recipients.is_empty(), "{:?}", String::from_utf8_lossy(m));
            assert_eq!(d.mailsurge_id(), None);
        }
    }

    #[test]
    fn rendered_notice_parses_back() {
        let rs = vec![
            RecipientStatus {
                recipient: "user3@example.com".into(),
                action: Action::Failed,
                status: "5.1.1".into(),
                diagnostic: Some("550 5.1.1 <user3@example.com>: User unknown\r\nsecond".into()),
                remote_mta: Some("127.0.2.1".into()),
            },
            RecipientStatus {
                recipient: "user7@example.com".into(),
                action: Action::Failed,
                status: "4.3.0".into(),
                diagnostic: None,
                remote_mta: None,
            },
        ];
        let original = b"Message-ID: <m@x>\r\nX-Mailsurge-Id: run-9.3\r\nX-Mailsurge-Intended: 5\r\n\r\nbody\r\n";
        let n = Notice {
            reporting_mta: "us-east-1.mailsurge.test",
            to: "t1@bounces.mailsurge.test",
            arrival_ns: 1_700_000_000_000_000_000,
            recipients: &rs,
            original,
            unique: "dsn.1",
        };
        let bytes = n.render(1_700_000_001_000_000_000);
        assert!(!bytes.windows(4).any(|w| w == b"body"), "the body is not returned");
        let d = parse(&bytes);
        assert!(d.is_report);
        assert_eq!(d.mailsurge_id(), Some("run-9.3"));
        assert_eq!(d.original.intended_ns, Some(5));
        assert_eq!(d.reporting_mta.as_deref(), Some("us-east-1.mailsurge.test"));
        assert_eq!(d.recipients.len(), 2);
        assert_eq!(
            d.recipients[0].diagnostic.as_deref(),
            Some("550 5.1.1 <user3@example.com>: User unknown  second")
        );
        assert_eq!(d.recipients[0].remote_mta.as_deref(), Some("127.0.2.1"));
        assert!(d.recipients[1].is_expiry());
        // Every line ends in CRLF (no bare LF may reach the SMTP layer).
        assert!(!bytes
            .windows(2)
            .enumerate()
            .any(|(i, w)| w[1] == b'\n' && w[0] != b'\r' && i > 0));
    }

    #[test]
    fn truncated_report_without_closing_boundary_still_counts() {
        let m = POSTFIX.replace("--4A1B21C0.1700000000/relay.test--\r\n", "");
        let d = parse(m.as_bytes());
        assert_eq!(d.recipients.len(), 2);
        assert_eq!(d.mailsurge_id(), Some("run-1.42"));
    }
}
