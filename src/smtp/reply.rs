//! SMTP replies as values: what a server sends and what a client receives.
//!
//! One type serves both sides so the mock inbox's rule files, the reference MTA and the load
//! generator's result accounting all speak about the same thing. It is pure (no I/O): the
//! server renders it with [`Reply::write_wire`], the client builds it from
//! `smtp_proto`'s response parser via `From<smtp_proto::Response<String>>`.

use std::fmt;

/// Lowest and highest reply codes accepted from configuration (RFC 5321 §4.2: first digit 2-5).
const MIN_CODE: u16 = 200;
const MAX_CODE: u16 = 599;
/// Code, separator and CRLF around each wire line's text.
const WIRE_LINE_OVERHEAD: usize = b"250-\r\n".len();
/// RFC 3463 enhanced status codes allow at most three digits for subject and detail.
const MAX_ENHANCED_PART_DIGITS: usize = 3;

/// An SMTP reply: a three-digit code, an optional RFC 3463 enhanced status code and one or
/// more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code such as `"5.7.1"`, repeated on every wire line.
    pub enhanced: Option<String>,
    /// Text lines without code or enhanced code; never empty (an empty text is one empty line).
    pub lines: Vec<String>,
}

impl Reply {
    /// Builds a reply; `text` may contain `'\n'` to make a multi-line reply. A trailing `'\r'`
    /// on a line is dropped so texts copied from the wire do not double their line endings.
    pub fn new(code: u16, enhanced: Option<&str>, text: &str) -> Reply {
        Reply {
            code,
            enhanced: enhanced.map(str::to_owned),
            lines: text
                .split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l).to_owned())
                .collect(),
        }
    }

    /// Parses a configured reply string as written in rule files: `"554 5.7.1 Client host
    /// blocked (RBL)"`, `"250 ok"`, `"421 4.7.0 line one\nline two"`.
    ///
    /// Strict on purpose: a typo in a rule file should fail at load time with a message that
    /// says what is wrong, not produce a reply that confuses the client under test.
    pub fn parse_spec(s: &str) -> Result<Reply, String> {
        let s = s.trim();
        let mut lines = s.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        // `split` always yields at least one item.
        let first = lines.next().unwrap_or_default();
        let digits = first.get(..3).unwrap_or(first);
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "reply {s:?} must start with a three-digit code such as 250 or 554"
            ));
        }
        let code: u16 = digits
            .parse()
            .map_err(|_| format!("reply code {digits:?} is not a number"))?;
        if !(MIN_CODE..=MAX_CODE).contains(&code) {
            return Err(format!("reply code {code} is out of range: SMTP codes are 2xx to 5xx"));
        }
        // The first three bytes were just checked to be ASCII digits: index 3 is a boundary.
        let rest = &first[3..];
        let rest = match rest.strip_prefix(' ') {
            Some(r) => r.trim_start(),
            None if rest.is_empty() => rest,
            None => return Err(format!("reply {first:?}: the code must be followed by a space")),
        };
        let (enhanced, text) = split_enhanced(code, rest)?;
        let mut reply = Reply::new(code, enhanced, text);
        for line in lines {
            reply.lines.push(line.to_owned());
        }
        if let Some(bad) = reply.lines.iter().find(|l| l.bytes().any(is_forbidden)) {
            return Err(format!(
                "reply line {bad:?} contains a control character (CR, NUL...) that would break \
                 the SMTP framing"
            ));
        }
        Ok(reply)
    }

    /// The wire form: `"554-5.7.1 line1\r\n554 5.7.1 line2\r\n"`.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire_len_hint());
        self.write_wire(&mut out);
        out
    }

    /// Appends the wire form to `out`, so the server can queue pipelined replies in one buffer
    /// without an allocation per reply.
    pub fn write_wire(&self, out: &mut Vec<u8>) {
        let code = itoa3(self.code);
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            out.extend_from_slice(&code);
            out.push(if i == last { b' ' } else { b'-' });
            if let Some(e) = &self.enhanced {
                out.extend_from_slice(e.as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            // Defence in depth: a CR or LF inside a line would forge extra reply lines.
            out.extend(line.bytes().filter(|&b| b != b'\r' && b != b'\n'));
            out.extend_from_slice(b"\r\n");
        }
        if self.lines.is_empty() {
            out.extend_from_slice(&code);
            out.extend_from_slice(b" \r\n");
        }
    }

    fn wire_len_hint(&self) -> usize {
        let per_line = WIRE_LINE_OVERHEAD + self.enhanced.as_ref().map_or(0, |e| e.len() + 1);
        self.lines.iter().map(|l| l.len() + per_line).sum()
    }

    /// 2xx (positive completion) or 3xx (positive intermediate), as RFC 5321 §4.2.1 names them.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// 2xx only: the command fully succeeded.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: the client may retry later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: the client must not retry as is.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The text lines joined with `"\n"`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// Splits `"5.7.1 text"` into the enhanced code and the text; text that does not look like an
/// enhanced code (`"ok"`, `"2address.org"`) is all text.
fn split_enhanced(code: u16, rest: &str) -> Result<(Option<&str>, &str), String> {
    let (word, text) = match rest.find(' ') {
        Some(i) => (&rest[..i], rest[i + 1..].trim_start()),
        None => (rest, ""),
    };
    let looks_enhanced = word.starts_with(|c: char| c.is_ascii_digit())
        && word.contains('.')
        && word.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !looks_enhanced {
        return Ok((None, rest));
    }
    let parts: Vec<&str> = word.split('.').collect();
    let well_formed = parts.len() == 3
        && parts[0].len() == 1
        && parts[1..]
            .iter()
            .all(|p| (1..=MAX_ENHANCED_PART_DIGITS).contains(&p.len()));
    if !well_formed {
        return Err(format!(
            "enhanced status code {word:?} must look like class.subject.detail, e.g. 5.7.1"
        ));
    }
    let class = parts[0];
    let code_class = (code / 100).to_string();
    // A 3xx reply has no enhanced class of its own; RFC 3463 only defines 2, 4 and 5.
    let expected = if code_class == "3" { "2" } else { &code_class };
    if class != expected {
        return Err(format!(
            "enhanced status code {word:?} does not match reply code {code}: its class must be \
             {expected}"
        ));
    }
    Ok((Some(word), text))
}

/// The enhanced status code at the start of a raw reply line (`"550 5.7.708 text"` →
/// `"5.7.708"`), if it has one; used where smtp-proto's parsed value cannot represent it.
pub(crate) fn enhanced_code_of_line(raw: &[u8]) -> Option<String> {
    // Skip the code and separator; the token ends at a space or the line end.
    let rest = raw.get(b"250 ".len()..)?;
    let end = rest
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(rest.len());
    let word = std::str::from_utf8(&rest[..end]).ok()?;
    let parts: Vec<&str> = word.split('.').collect();
    let well_formed = parts.len() == 3
        && parts[0].len() == 1
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= MAX_ENHANCED_PART_DIGITS && p.bytes().all(|b| b.is_ascii_digit()));
    well_formed.then(|| word.to_owned())
}

fn is_forbidden(b: u8) -> bool {
    b < 0x20 && b != b'\t'
}

/// The three ASCII digits of a reply code; codes outside 0-999 cannot be built by the parsers,
/// so clamping is only a guard against a hand-built value.
fn itoa3(code: u16) -> [u8; 3] {
    let c = code.min(999);
    [
        b'0' + (c / 100) as u8,
        b'0' + (c / 10 % 10) as u8,
        b'0' + (c % 10) as u8,
    ]
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = &self.enhanced {
            write!(f, " {e}")?;
        }
        for (i, line) in self.lines.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { " / " })?;
            f.write_str(line)?;
        }
        Ok(())
    }
}

/// `smtp_proto` reports a missing enhanced code as `[0, 0, 0]` and strips it from every line;
/// its message joins lines with `'\n'`.
impl From<smtp_proto::Response<String>> for Reply {
    fn from(r: smtp_proto::Response<String>) -> Reply {
        let enhanced = (r.esc != [0, 0, 0]).then(|| format!("{}.{}.{}", r.esc[0], r.esc[1], r.esc[2]));
        Reply {
            code: r.code,
            enhanced,
            lines: r.message.split('\n').map(str::to_owned).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_spec_forms() {
        let r = Reply::parse_spec("554 5.7.1 Client host blocked (RBL)").unwrap();
        assert_eq!(r.code, 554);
        assert_eq!(r.enhanced.as_deref(), Some("5.7.1"));
        assert_eq!(r.lines, vec!["Client host blocked (RBL)"]);

        let r = Reply::parse_spec("250 ok").unwrap();
        assert_eq!((r.code, r.enhanced.clone()), (250, None));
        assert_eq!(r.text(), "ok");

        let r = Reply::parse_spec("421 4.7.0 line one\nline two").unwrap();
        assert_eq!(r.lines, vec!["line one", "line two"]);
        assert_eq!(r.to_wire(), b"421-4.7.0 line one\r\n421 4.7.0 line two\r\n".to_vec());
        assert_eq!(r.to_string(), "421 4.7.0 line one / line two");

        let r = Reply::parse_spec("250").unwrap();
        assert_eq!(r.to_wire(), b"250 \r\n".to_vec());
        let r = Reply::parse_spec("250 2.0.0").unwrap();
        assert_eq!(r.to_wire(), b"250 2.0.0\r\n".to_vec());
        let r = Reply::parse_spec("250 2address.org ready").unwrap();
        assert_eq!(r.enhanced, None);
        assert_eq!(r.text(), "2address.org ready");
        let r = Reply::parse_spec("354 End data").unwrap();
        assert!(r.is_positive() && !r.is_success());
    }

    #[test]
    fn parse_spec_errors_say_what_is_wrong() {
        for (spec, needle) in [
            ("", "three-digit"),
            ("25 ok", "three-digit"),
            ("abc ok", "three-digit"),
            ("150 ok", "out of range"),
            ("600 ok", "out of range"),
            ("250ok", "followed by a space"),
            ("554 4.7.1 mismatch", "class must be 5"),
            ("554 5.7 short", "class.subject.detail"),
            ("554 5.7.1234 long", "class.subject.detail"),
            ("554 55.7.1 long class", "class.subject.detail"),
            ("554 5.7.1 bad\rline", "control character"),
        ] {
            let err = Reply::parse_spec(spec).unwrap_err();
            assert!(err.contains(needle), "{spec:?}: {err}");
        }
    }

    #[test]
    fn classes() {
        let r = |c| Reply::new(c, None, "x");
        assert!(r(250).is_positive() && r(250).is_success());
        assert!(r(451).is_transient() && !r(451).is_permanent());
        assert!(r(550).is_permanent() && !r(550).is_positive());
    }

    #[test]
    fn wire_strips_embedded_line_breaks() {
        let r = Reply {
            code: 250,
            enhanced: None,
            lines: vec!["a\r\n250 forged".into()],
        };
        assert_eq!(r.to_wire(), b"250 a250 forged\r\n".to_vec());
    }

    #[test]
    fn enhanced_code_from_a_raw_line() {
        assert_eq!(
            enhanced_code_of_line(b"550 5.7.708 Access denied\r\n").as_deref(),
            Some("5.7.708")
        );
        assert_eq!(enhanced_code_of_line(b"550-5.7.708\r\n").as_deref(), Some("5.7.708"));
        assert_eq!(enhanced_code_of_line(b"550 denied\r\n"), None);
        assert_eq!(enhanced_code_of_line(b"550 5.7.7081 x\r\n"), None);
        assert_eq!(enhanced_code_of_line(b"55"), None);
    }

    #[test]
    fn from_smtp_proto_response() {
        let mut rx = smtp_proto::response::parser::ResponseReceiver::default();
        let wire = b"550-5.1.1 no such user\r\n550 5.1.1 really\r\n";
        let resp = rx.parse(&mut wire.iter()).unwrap();
        let r = Reply::from(resp);
        assert_eq!(r, Reply::new(550, Some("5.1.1"), "no such user\nreally"));
        assert_eq!(r.to_wire(), wire.to_vec());
    }
}
