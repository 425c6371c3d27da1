//! SMTP wire codec: command-line framing, command parsing, DATA decoding and encoding.
//!
//! Everything here is pure (no I/O) so it can be tested byte by byte, the way mini-redis keeps
//! frame parsing apart from the socket. The server's connection layer owns the buffer and calls
//! [`LineFramer::next_frame`] / [`parse_command`] in command state and [`DataDecoder::feed`] in
//! DATA state; the client calls [`encode_data`].
//!
//! Command syntax is parsed by `smtp_proto::Request::parse`; framing and the DATA stream are our
//! own because they carry the security-relevant rules (bounded line length, strict
//! `CRLF . CRLF` end of data against SMTP smuggling).

use crate::smtp::reply::Reply;

/// Body buffer reserved when the client declared no SIZE: enough for a typical test message
/// without regrowing, small enough not to matter if the policy keeps the body.
const INITIAL_BODY_CAPACITY: usize = 4 * 1024;
/// Longest parameter name echoed back in a 555 reply; garbage is not worth reflecting in full.
const MAX_ECHOED_PARAM: usize = 64;

// ---------------------------------------------------------------------------------------------
// Byte scanning
// ---------------------------------------------------------------------------------------------

/// Bytes scanned per step by the SWAR searches below.
const LANE_BYTES: usize = 8;
const LANE_ONES: u64 = 0x0101_0101_0101_0101;
const LANE_HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in each lane of `x` that is zero. Borrows only propagate upwards, so the lowest
/// set bit is always exact (false positives only appear above a true zero lane).
#[inline]
fn zero_lanes(x: u64) -> u64 {
    x.wrapping_sub(LANE_ONES) & !x & LANE_HIGHS
}

/// Position of the first `a` in `hay`, eight bytes at a time (memchr-style SWAR): the hot path
/// of both the command framer and the DATA encoder.
pub(crate) fn find_byte(hay: &[u8], a: u8) -> Option<usize> {
    let pa = LANE_ONES * u64::from(a);
    let mut chunks = hay.chunks_exact(LANE_BYTES);
    for (ci, c) in (&mut chunks).enumerate() {
        let m = zero_lanes(load_lanes(c) ^ pa);
        if m != 0 {
            return Some(ci * LANE_BYTES + first_lane(m));
        }
    }
    let base = hay.len() - chunks.remainder().len();
    chunks.remainder().iter().position(|&x| x == a).map(|p| base + p)
}

/// Position of the first `a` or `b` in `hay`; see [`find_byte`].
pub(crate) fn find_either(hay: &[u8], a: u8, b: u8) -> Option<usize> {
    let (pa, pb) = (LANE_ONES * u64::from(a), LANE_ONES * u64::from(b));
    let mut chunks = hay.chunks_exact(LANE_BYTES);
    for (ci, c) in (&mut chunks).enumerate() {
        let w = load_lanes(c);
        let m = zero_lanes(w ^ pa) | zero_lanes(w ^ pb);
        if m != 0 {
            return Some(ci * LANE_BYTES + first_lane(m));
        }
    }
    let base = hay.len() - chunks.remainder().len();
    chunks
        .remainder()
        .iter()
        .position(|&x| x == a || x == b)
        .map(|p| base + p)
}

/// Reads an eight-byte chunk as little-endian lanes (byte 0 in the lowest lane).
#[inline]
fn load_lanes(chunk: &[u8]) -> u64 {
    let mut w = [0u8; LANE_BYTES];
    w.copy_from_slice(chunk);
    u64::from_le_bytes(w)
}

/// Index of the lowest flagged lane of a [`zero_lanes`] mask.
#[inline]
fn first_lane(mask: u64) -> usize {
    (mask.trailing_zeros() / u8::BITS) as usize
}

// ---------------------------------------------------------------------------------------------
// Command line framing
// ---------------------------------------------------------------------------------------------

/// What [`LineFramer::next_frame`] found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A complete line of this many bytes, terminator (LF or CRLF) included.
    Line(usize),
    /// The end of a line longer than the limit: consume this many bytes and answer
    /// `500 5.5.2 Line too long` once.
    TooLong(usize),
    /// No complete line yet: consume this many bytes (non-zero only while skipping an
    /// over-long line) and read more.
    NeedMore(usize),
}

/// Splits the command stream into lines without ever buffering more than `max_line` bytes of
/// one line: an over-long line is skipped as it arrives and reported once at its end.
#[derive(Debug, Clone)]
pub struct LineFramer {
    max_line: usize,
    discarding: bool,
}

impl LineFramer {
    /// `max_line` counts the whole line including its terminator (RFC 5321 §4.5.3.1.4 style).
    pub fn new(max_line: usize) -> LineFramer {
        LineFramer {
            max_line: max_line.max(1),
            discarding: false,
        }
    }

    /// Looks at the unconsumed bytes; see [`Frame`]. A bare LF ends a line, as in Postfix.
    pub fn next_frame(&mut self, buf: &[u8]) -> Frame {
        if self.discarding {
            return match find_byte(buf, b'\n') {
                Some(i) => {
                    self.discarding = false;
                    Frame::TooLong(i + 1)
                }
                None => Frame::NeedMore(buf.len()),
            };
        }
        let window = &buf[..buf.len().min(self.max_line)];
        if let Some(i) = find_byte(window, b'\n') {
            return Frame::Line(i + 1);
        }
        if buf.len() < self.max_line {
            return Frame::NeedMore(0);
        }
        // Here buf.len() >= max_line, so the slice is in bounds.
        match find_byte(&buf[self.max_line..], b'\n') {
            Some(j) => Frame::TooLong(self.max_line + j + 1),
            None => {
                self.discarding = true;
                Frame::NeedMore(buf.len())
            }
        }
    }

    /// True while the rest of an over-long line is being skipped.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }
}

/// The reply to an over-long command line.
pub fn line_too_long_reply() -> Reply {
    Reply::new(500, Some("5.5.2"), "Error: line too long")
}

// ---------------------------------------------------------------------------------------------
// Command parsing
// ---------------------------------------------------------------------------------------------

/// A parsed command, owned so the connection buffer can be reused while the policy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    /// `from` is `""` for the null reverse-path `<>`; `size` is the `SIZE=` parameter.
    Mail {
        from: String,
        size: Option<usize>,
    },
    Rcpt {
        to: String,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    /// STARTTLS (RFC 3207); whether it is offered is the policy's business.
    StartTls,
    /// AUTH (RFC 4954): `None` for a mechanism this server does not speak; `initial` is the
    /// initial response as sent (base64, `=` for empty), `""` when there is none.
    Auth {
        mechanism: Option<crate::smtp::sasl::Mechanism>,
        initial: String,
    },
    /// Recognised but not offered by this server (BDAT, LHLO, EXPN...).
    NotImplemented(&'static str),
}

/// Why a command line was refused; each maps to one SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    Unknown,
    Syntax(&'static str),
    InvalidSender,
    InvalidRecipient,
    InvalidParameter(&'static str),
    UnsupportedParameter(String),
    /// The line did not end in LF; only possible when called without the framer.
    Unterminated,
    /// A path with bytes above 0x7f: SMTPUTF8 is not offered, so MAIL and RCPT alike refuse
    /// it (RFC 6531 §3.5: 553 5.6.7), whether or not the bytes are valid UTF-8.
    NonAsciiAddress,
}

impl CommandError {
    /// The reply the server sends for this error.
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Unknown => Reply::new(500, Some("5.5.1"), "Error: command not recognized"),
            CommandError::Syntax(s) => Reply::new(501, Some("5.5.4"), &format!("Syntax: {s}")),
            CommandError::InvalidSender => Reply::new(501, Some("5.1.7"), "Bad sender address syntax"),
            CommandError::InvalidRecipient => Reply::new(501, Some("5.1.3"), "Bad recipient address syntax"),
            CommandError::InvalidParameter(p) => Reply::new(501, Some("5.5.4"), &format!("Invalid {p} parameter")),
            CommandError::UnsupportedParameter(p) => {
                let p: String = p.chars().take(MAX_ECHOED_PARAM).collect();
                Reply::new(555, Some("5.5.4"), &format!("Unsupported parameter {p}"))
            }
            CommandError::Unterminated => Reply::new(500, Some("5.5.2"), "Error: line not terminated"),
            CommandError::NonAsciiAddress => {
                Reply::new(553, Some("5.6.7"), "Non-ASCII address refused: SMTPUTF8 is not offered")
            }
        }
    }
}

/// Parses one command line, terminator included (as [`LineFramer`] yields it).
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    use smtp_proto::{Error as E, Request as R};
    if line.last() != Some(&b'\n') {
        return Err(CommandError::Unterminated);
    }
    let is_path = line
        .get(..4)
        .is_some_and(|v| v.eq_ignore_ascii_case(b"MAIL") || v.eq_ignore_ascii_case(b"RCPT"));
    if is_path && !line.is_ascii() {
        return Err(CommandError::NonAsciiAddress);
    }
    let req = R::parse(&mut line.iter()).map_err(|e| match e {
        E::UnknownCommand => CommandError::Unknown,
        E::InvalidSenderAddress => CommandError::InvalidSender,
        E::InvalidRecipientAddress => CommandError::InvalidRecipient,
        E::SyntaxError { syntax } => CommandError::Syntax(syntax),
        E::InvalidParameter { param } => CommandError::InvalidParameter(param),
        E::UnsupportedParameter { param } => CommandError::UnsupportedParameter(param),
        // The line is complete, so "needs more data" means the arguments ran out.
        E::NeedsMoreData { .. } => CommandError::Syntax("incomplete command"),
        E::ResponseTooLong | E::InvalidResponse { .. } => CommandError::Unknown,
    })?;
    Ok(match req {
        R::Ehlo { host } => Command::Ehlo(host.into_owned()),
        R::Helo { host } => Command::Helo(host.into_owned()),
        R::Mail { from } => {
            let address = if from.address.is_empty() {
                empty_path_alias(line).unwrap_or_default()
            } else {
                from.address.into_owned()
            };
            // smtp-proto reports an absent SIZE as 0; SIZE=0 says nothing useful either. A
            // SIZE too large for a number is read as the largest one, so the server's limit
            // refuses it (552) instead of the overflow passing as "no SIZE".
            let size = match declared_size(line) {
                Some(Err(())) => Some(usize::MAX),
                _ => (from.size != 0).then_some(from.size),
            };
            Command::Mail { from: address, size }
        }
        R::Rcpt { to } => {
            if to.address.is_empty() {
                // RCPT TO:<> is not a valid forward-path; smtp-proto accepts it as "".
                match empty_path_alias(line) {
                    Some(alias) => Command::Rcpt { to: alias },
                    None => return Err(CommandError::InvalidRecipient),
                }
            } else {
                Command::Rcpt {
                    to: to.address.into_owned(),
                }
            }
        }
        R::Data => Command::Data,
        R::Rset => Command::Rset,
        R::Noop { .. } => Command::Noop,
        R::Quit => Command::Quit,
        R::Vrfy { .. } => Command::Vrfy,
        R::Help { .. } => Command::Help,
        R::StartTls => Command::StartTls,
        R::Auth {
            mechanism,
            initial_response,
        } => Command::Auth {
            mechanism: crate::smtp::sasl::Mechanism::from_proto(mechanism),
            initial: initial_response.into_owned(),
        },
        other => Command::NotImplemented(other.name()),
    })
}

/// The raw `SIZE=` parameter of a MAIL line: `None` if absent, `Err` if its digits overflow.
fn declared_size(line: &[u8]) -> Option<Result<u64, ()>> {
    let at = line.windows(6).position(|w| w.eq_ignore_ascii_case(b" SIZE="))? + 6;
    let digits: Vec<u8> = line[at..].iter().copied().take_while(u8::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    let text = std::str::from_utf8(&digits).ok()?;
    Some(text.parse::<u64>().map_err(|_| ()))
}

/// smtp-proto turns `<postmaster>` (and a source route with nothing after it) into `""`,
/// the same as the null path `<>`. Recovers `"postmaster"` from the raw line so it is not
/// mistaken for the null sender or rejected as an empty recipient.
fn empty_path_alias(line: &[u8]) -> Option<String> {
    let open = find_byte(line, b'<')?;
    let len = find_byte(&line[open + 1..], b'>')?;
    let inner = &line[open + 1..open + 1 + len];
    let local = match inner.iter().rposition(|&b| b == b':') {
        Some(colon) => &inner[colon + 1..],
        None => inner,
    };
    local
        .eq_ignore_ascii_case(b"postmaster")
        .then(|| "postmaster".to_owned())
}

// ---------------------------------------------------------------------------------------------
// DATA decoding
// ---------------------------------------------------------------------------------------------

/// Where the decoder stands relative to the `CRLF . CRLF` terminator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// Right after CRLF (or at the start of the data): a '.' here is special.
    LineStart,
    /// Saw '.' at a line start.
    Dot,
    /// Saw '.' CR at a line start: LF ends the message.
    DotCr,
    /// Inside a line.
    Text,
    /// Saw CR inside a line: LF ends the line, anything else makes the CR bare.
    Cr,
}

/// What one [`DataDecoder::feed`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feed {
    /// Input bytes used; anything after them (pipelined commands) belongs to the command parser.
    pub consumed: usize,
    /// The terminating `CRLF . CRLF` was seen.
    pub done: bool,
}

/// Why a received message is refused after the final dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataReject {
    TooBig,
    BareLf,
    BareCr,
    LineTooLong,
}

impl DataReject {
    /// The reply the server sends instead of asking the policy.
    pub fn reply(&self) -> Reply {
        match self {
            DataReject::TooBig => Reply::new(552, Some("5.3.4"), "Error: message size exceeds fixed limit"),
            DataReject::BareLf => Reply::new(
                554,
                Some("5.6.0"),
                "Error: bare <LF> received; lines must end in <CR><LF>",
            ),
            DataReject::BareCr => Reply::new(
                554,
                Some("5.6.0"),
                "Error: bare <CR> received; lines must end in <CR><LF>",
            ),
            DataReject::LineTooLong => Reply::new(500, Some("5.5.2"), "Error: line too long"),
        }
    }
}

/// Incremental decoder of the DATA stream: dot-unstuffs, finds the end strictly at
/// `CRLF . CRLF`, and flags what must get the message refused.
///
/// Bare LF and bare CR are flagged rather than treated as line ends: accepting `\n.\n` as the
/// end would let a client smuggle a second message past a filtering relay (SMTP smuggling,
/// CVE-2023-51764 family). The decoder keeps consuming until the strict terminator so the
/// session stays in sync; an oversize body is counted but no longer stored.
#[derive(Debug)]
pub struct DataDecoder {
    max_size: usize,
    max_line: usize,
    /// Body bytes stored; the rest is checked and counted, not kept.
    keep: usize,
    state: DataState,
    body: Vec<u8>,
    size: usize,
    line_len: usize,
    bare_lf: bool,
    bare_cr: bool,
    oversize: bool,
    long_line: bool,
}

impl DataDecoder {
    /// `max_size` bounds the unstuffed body (CRLFs included, terminator excluded); `max_line`
    /// bounds one wire line including its CRLF.
    pub fn new(max_size: usize, max_line: usize) -> DataDecoder {
        DataDecoder {
            max_size,
            max_line,
            keep: usize::MAX,
            state: DataState::LineStart,
            body: Vec::new(),
            size: 0,
            line_len: 0,
            bare_lf: false,
            bare_cr: false,
            oversize: false,
            long_line: false,
        }
    }

    /// Stores only the first `keep` bytes of each body (a receiver that reads only the header
    /// section holds that much per session, whatever the size limit); the rest is still
    /// checked (line length, bare LF/CR, size) and counted in [`DataDecoder::size`].
    pub fn keeping(mut self, keep: usize) -> DataDecoder {
        self.keep = keep;
        self
    }

    /// Readies the decoder for a new message; `size_hint` (from `MAIL ... SIZE=`) pre-sizes the
    /// body buffer, capped by the limit so a lying client cannot make us reserve memory.
    pub fn start(&mut self, size_hint: Option<usize>) {
        self.reset();
        let expected = size_hint.unwrap_or(INITIAL_BODY_CAPACITY);
        self.body.reserve(expected.min(self.max_size).min(self.keep));
    }

    fn reset(&mut self) {
        *self = DataDecoder::new(self.max_size, self.max_line).keeping(self.keep);
    }

    /// Bytes of body seen so far (unstuffed), including any not stored because of the limit.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Consumes input up to and including the terminator, if present.
    pub fn feed(&mut self, input: &[u8]) -> Feed {
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            match self.state {
                DataState::LineStart => {
                    if b == b'.' {
                        self.state = DataState::Dot;
                        self.line_len += 1;
                        i += 1;
                    } else {
                        self.state = DataState::Text;
                    }
                }
                DataState::Dot => {
                    if b == b'\r' {
                        self.state = DataState::DotCr;
                        self.line_len += 1;
                        i += 1;
                    } else {
                        // Dot-unstuffing: the leading dot of a non-terminator line is dropped.
                        self.state = DataState::Text;
                    }
                }
                DataState::DotCr => {
                    if b == b'\n' {
                        self.state = DataState::LineStart;
                        return Feed {
                            consumed: i + 1,
                            done: true,
                        };
                    }
                    self.bare_cr = true;
                    self.emit(b"\r");
                    self.state = DataState::Text;
                }
                DataState::Text => {
                    let rest = &input[i..];
                    match find_either(rest, b'\r', b'\n') {
                        None => {
                            self.emit(rest);
                            self.line_len = self.line_len.saturating_add(rest.len());
                            i = input.len();
                        }
                        Some(p) => {
                            self.emit(&rest[..=p]);
                            self.line_len = self.line_len.saturating_add(p + 1);
                            i += p + 1;
                            if rest[p] == b'\r' {
                                self.state = DataState::Cr;
                            } else {
                                // Bare LF: ends the line for length purposes only.
                                self.bare_lf = true;
                                self.end_line();
                            }
                        }
                    }
                }
                DataState::Cr => {
                    if b == b'\n' {
                        self.emit(b"\n");
                        self.line_len += 1;
                        i += 1;
                        self.end_line();
                        self.state = DataState::LineStart;
                    } else {
                        // Re-examined in Text state, which also handles a second CR.
                        self.bare_cr = true;
                        self.state = DataState::Text;
                    }
                }
            }
        }
        Feed {
            consumed: input.len(),
            done: false,
        }
    }

    /// After `done`: the body, or why the message must be refused. Leaves the decoder empty.
    pub fn finish(&mut self) -> Result<Vec<u8>, DataReject> {
        let verdict = if self.oversize {
            Err(DataReject::TooBig)
        } else if self.bare_lf {
            Err(DataReject::BareLf)
        } else if self.bare_cr {
            Err(DataReject::BareCr)
        } else if self.long_line {
            Err(DataReject::LineTooLong)
        } else {
            Ok(())
        };
        let body = std::mem::take(&mut self.body);
        // Reset without reserving: `start` sizes the buffer for the next message.
        self.reset();
        verdict.map(|()| body)
    }

    fn end_line(&mut self) {
        if self.line_len > self.max_line {
            self.long_line = true;
        }
        self.line_len = 0;
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.size > self.max_size {
            if !self.oversize {
                self.oversize = true;
                self.body = Vec::new();
            }
            return;
        }
        let room = self.keep.saturating_sub(self.body.len());
        self.body.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

pub use super::encode::{encode_data, DataEncoder};
