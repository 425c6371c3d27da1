//! DATA encoding: a message body dot-stuffed for the wire (RFC 5321 §4.5.2), whole or piece
//! by piece, so the generator can stream a large message from borrowed filler.

use super::codec::find_byte;

/// Appends `body` to `out` as DATA content: dot-stuffed, ending in CRLF, then `.CRLF`.
pub fn encode_data(body: &[u8], out: &mut Vec<u8>) {
    out.reserve(body.len() + b"\r\n.\r\n".len() + 1);
    let mut e = DataEncoder::default();
    e.push(body, out);
    e.finish(out);
}

/// DATA content encoded piece by piece, so a large message is written to the socket in
/// chunks and never held whole: the result is the same as [`encode_data`] of the pieces
/// joined, wherever they are split.
///
/// Copies whole runs between stuffed lines, so a typical body costs one `memcpy` plus an
/// eight-bytes-at-a-time scan for LF. Line endings are not rewritten: a load test may want to
/// send bare LFs on purpose. Stuffing happens after every LF, so a bare-LF line starting with
/// '.' is stuffed too (what line-oriented receivers expect).
#[derive(Debug, Clone, Copy)]
pub struct DataEncoder {
    /// The next byte starts a line (true before the first).
    line_start: bool,
    /// The last two bytes pushed (to know whether the body ended in CRLF).
    tail: [u8; 2],
    empty: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        DataEncoder {
            line_start: true,
            tail: [0; 2],
            empty: true,
        }
    }
}

impl DataEncoder {
    /// Appends the next piece of the body, dot-stuffed.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = piece.last() else { return };
        if self.line_start && piece[0] == b'.' {
            out.push(b'.');
        }
        let mut copied = 0;
        let mut pos = 0;
        while let Some(p) = find_byte(&piece[pos..], b'\n') {
            let lf = pos + p;
            if piece.get(lf + 1) == Some(&b'.') {
                out.extend_from_slice(&piece[copied..=lf]);
                out.push(b'.');
                copied = lf + 1;
            }
            pos = lf + 1;
        }
        out.extend_from_slice(&piece[copied..]);
        self.line_start = last == b'\n';
        self.tail = match piece.len() {
            1 => [self.tail[1], last],
            n => [piece[n - 2], last],
        };
        self.empty = false;
    }

    /// Ends the body: a CRLF if it did not end in one, then the terminating `.CRLF`.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.empty && self.tail != *b"\r\n" {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}
