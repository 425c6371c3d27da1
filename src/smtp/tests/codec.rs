//! Unit tests of the pure codec: framing, command parsing, DATA decoding and encoding.

use crate::smtp::codec::*;
use crate::smtp::sasl::Mechanism;

/// Small deterministic PRNG (xorshift64*) so fuzz-style tests need no extra dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
        items[self.below(items.len())]
    }
}

// --- scanning ---------------------------------------------------------------------------------

#[test]
fn swar_search_matches_naive() {
    let mut rng = Rng::new(7);
    for len in 0..80 {
        for _ in 0..50 {
            let hay: Vec<u8> = (0..len)
                .map(|_| *[b'a', b'\r', b'\n', 0x80, 0xff, 0].get(rng.below(12)).unwrap_or(&b'x'))
                .collect();
            let naive1 = hay.iter().position(|&b| b == b'\n');
            let naive2 = hay.iter().position(|&b| b == b'\r' || b == b'\n');
            assert_eq!(find_byte(&hay, b'\n'), naive1, "{hay:?}");
            assert_eq!(find_either(&hay, b'\r', b'\n'), naive2, "{hay:?}");
            assert_eq!(find_byte(&hay, 0xff), hay.iter().position(|&b| b == 0xff));
        }
    }
}

// --- framing ----------------------------------------------------------------------------------

#[test]
fn frames_crlf_and_bare_lf_lines() {
    let mut f = LineFramer::new(64);
    let buf = b"NOOP\r\nRSET\nQU";
    assert_eq!(f.next_frame(buf), Frame::Line(6));
    assert_eq!(f.next_frame(&buf[6..]), Frame::Line(5));
    assert_eq!(f.next_frame(&buf[11..]), Frame::NeedMore(0));
    assert_eq!(f.next_frame(b""), Frame::NeedMore(0));
}

#[test]
fn line_at_the_limit_is_accepted_one_over_is_not() {
    let mut f = LineFramer::new(10);
    assert_eq!(f.next_frame(b"NOOP 1234\n"), Frame::Line(10));
    assert_eq!(f.next_frame(b"NOOP 12345\nNOOP\n"), Frame::TooLong(11));
    assert!(!f.is_discarding());
    assert_eq!(f.next_frame(b"NOOP\n"), Frame::Line(5));
}

#[test]
fn over_long_line_is_skipped_across_reads_without_buffering() {
    let mut f = LineFramer::new(2048);
    let long = vec![b'A'; 5000];
    // First read: 4096 bytes with no LF, all consumed.
    assert_eq!(f.next_frame(&long[..4096]), Frame::NeedMore(4096));
    assert!(f.is_discarding());
    // Second read: the rest, still no LF.
    assert_eq!(f.next_frame(&long[4096..]), Frame::NeedMore(904));
    // Third read: end of line plus the next command.
    assert_eq!(f.next_frame(b"AAAA\r\nNOOP\r\n"), Frame::TooLong(6));
    assert_eq!(f.next_frame(b"NOOP\r\n"), Frame::Line(6));
}

#[test]
fn exactly_limit_bytes_without_lf_starts_discarding() {
    let mut f = LineFramer::new(8);
    assert_eq!(f.next_frame(b"12345678"), Frame::NeedMore(8));
    assert_eq!(f.next_frame(b"\n"), Frame::TooLong(1));
}

// --- command parsing --------------------------------------------------------------------------

fn cmd(line: &str) -> Result<Command, CommandError> {
    parse_command(line.as_bytes())
}

#[test]
fn parses_the_commands_we_serve() {
    assert_eq!(
        cmd("EHLO client.example\r\n"),
        Ok(Command::Ehlo("client.example".into()))
    );
    assert_eq!(cmd("helo x\n"), Ok(Command::Helo("x".into())));
    assert_eq!(
        cmd("MAIL FROM:<a@b.example>\r\n"),
        Ok(Command::Mail {
            from: "a@b.example".into(),
            size: None
        })
    );
    assert_eq!(
        cmd("MAIL FROM:<>\r\n"),
        Ok(Command::Mail {
            from: String::new(),
            size: None
        })
    );
    assert_eq!(
        cmd("MAIL FROM:<a@b> SIZE=1234\r\n"),
        Ok(Command::Mail {
            from: "a@b".into(),
            size: Some(1234)
        })
    );
    assert_eq!(
        cmd("mail from:<a@b> BODY=8BITMIME SIZE=99\r\n"),
        Ok(Command::Mail {
            from: "a@b".into(),
            size: Some(99)
        })
    );
    assert_eq!(
        cmd("RCPT TO:<u@d.example>\r\n"),
        Ok(Command::Rcpt {
            to: "u@d.example".into()
        })
    );
    for (line, c) in [
        ("DATA\r\n", Command::Data),
        ("RSET\r\n", Command::Rset),
        ("NOOP\r\n", Command::Noop),
        ("NOOP hello\r\n", Command::Noop),
        ("QUIT\r\n", Command::Quit),
        ("VRFY bob\r\n", Command::Vrfy),
        ("HELP\r\n", Command::Help),
        ("STARTTLS\r\n", Command::StartTls),
        (
            "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n",
            Command::Auth {
                mechanism: Some(Mechanism::Plain),
                initial: "AGJvYgBzZWNyZXQ=".into(),
            },
        ),
        (
            "auth login\r\n",
            Command::Auth {
                mechanism: Some(Mechanism::Login),
                initial: String::new(),
            },
        ),
        (
            "AUTH CRAM-MD5\r\n",
            Command::Auth {
                mechanism: None,
                initial: String::new(),
            },
        ),
        ("BDAT 100 LAST\r\n", Command::NotImplemented("BDAT")),
        ("EXPN list\r\n", Command::NotImplemented("EXPN")),
    ] {
        assert_eq!(cmd(line), Ok(c), "{line:?}");
    }
}

#[test]
fn postmaster_is_not_confused_with_the_null_path() {
    // smtp-proto maps <postmaster> to "" like <>; we recover it.
    assert_eq!(
        cmd("RCPT TO:<Postmaster>\r\n"),
        Ok(Command::Rcpt {
            to: "postmaster".into()
        })
    );
    assert_eq!(
        cmd("MAIL FROM:<postmaster>\r\n"),
        Ok(Command::Mail {
            from: "postmaster".into(),
            size: None
        })
    );
    assert_eq!(cmd("RCPT TO:<>\r\n"), Err(CommandError::InvalidRecipient));
}

#[test]
fn errors_map_to_the_specified_replies() {
    let code = |line: &str| {
        let r = cmd(line).unwrap_err().reply();
        (r.code, r.enhanced.unwrap_or_default())
    };
    assert_eq!(code("FOO bar\r\n"), (500, "5.5.1".into()));
    assert_eq!(code("MAILX FROM:<a@b>\r\n"), (500, "5.5.1".into()));
    assert_eq!(code("\x00\x01\r\n"), (500, "5.5.1".into()));
    assert_eq!(code("MAIL a@b\r\n"), (501, "5.5.4".into()));
    assert_eq!(code("EHLO\r\n"), (501, "5.5.4".into()));
    assert_eq!(code("MAIL FROM:<a@@b>\r\n"), (501, "5.1.7".into()));
    assert_eq!(code("RCPT TO:<no at sign>\r\n"), (501, "5.1.3".into()));
    assert_eq!(code("MAIL FROM:<a@b> SIZE=abc\r\n"), (501, "5.5.4".into()));
    assert_eq!(code("MAIL FROM:<a@b> XFOO=1\r\n"), (555, "5.5.4".into()));
    assert_eq!(code("NOOP"), (500, "5.5.2".into()));
}

#[test]
fn arbitrary_lines_never_panic() {
    let mut rng = Rng::new(42);
    let tokens: &[&[u8]] = &[
        b"MAIL",
        b"RCPT",
        b"FROM:",
        b"TO:",
        b"<",
        b">",
        b"@",
        b"\"",
        b"\\",
        b" ",
        b"SIZE=",
        b"=",
        b"EHLO",
        b"AUTH",
        b"BDAT",
        b"\r",
        b"\x00",
        b"\xff\xfe",
        b"a",
        b".",
        b":",
        b",",
        b"99999999999999999999999",
        b"BODY=",
        b"NOTIFY=",
        b"ORCPT=rfc822;",
        b"HOLDUNTIL=",
        b"BY=",
        b";",
        b"-",
        b"+",
        b"postmaster",
    ];
    for _ in 0..50_000 {
        let mut line = Vec::new();
        for _ in 0..rng.below(12) {
            if rng.below(4) == 0 {
                line.push(rng.next() as u8);
            } else {
                line.extend_from_slice(rng.pick(tokens));
            }
        }
        line.retain(|&b| b != b'\n');
        line.push(b'\n');
        if let Err(e) = parse_command(&line) {
            let r = e.reply();
            assert!(r.is_permanent(), "{r}");
        }
    }
}

// --- DATA decoding ----------------------------------------------------------------------------

const LIMIT: usize = 1 << 20;

/// Feeds `input` in pieces split at `cuts`; returns (body-or-reject, bytes consumed).
fn decode_split(input: &[u8], cuts: &[usize]) -> (Result<Vec<u8>, DataReject>, usize) {
    let mut d = DataDecoder::new(LIMIT, 1000);
    d.start(None);
    let mut pos = 0;
    let mut bounds: Vec<usize> = cuts.to_vec();
    bounds.push(input.len());
    for end in bounds {
        while pos < end {
            let feed = d.feed(&input[pos..end]);
            pos += feed.consumed;
            if feed.done {
                return (d.finish(), pos);
            }
            assert_eq!(pos, end, "consumed less than given without finishing");
        }
    }
    panic!("no terminator found in {:?}", String::from_utf8_lossy(input));
}

fn decode(input: &[u8]) -> (Result<Vec<u8>, DataReject>, usize) {
    decode_split(input, &[])
}

#[test]
fn terminator_split_at_every_position() {
    let input = b"Subject: x\r\n\r\nline\r\n..dot\r\n.\r\nQUIT\r\n";
    let end = input.len() - b"QUIT\r\n".len();
    for a in 0..=input.len() {
        for b in a..=input.len() {
            let (body, used) = decode_split(input, &[a, b]);
            assert_eq!(body.unwrap(), b"Subject: x\r\n\r\nline\r\n.dot\r\n", "cuts {a},{b}");
            assert_eq!(used, end);
        }
    }
}

#[test]
fn byte_at_a_time() {
    let input = b"a\r\n.\r\n";
    let cuts: Vec<usize> = (1..input.len()).collect();
    assert_eq!(decode_split(input, &cuts).0.unwrap(), b"a\r\n");
}

#[test]
fn empty_message_and_dot_lines() {
    assert_eq!(decode(b".\r\n"), (Ok(Vec::new()), 3));
    assert_eq!(decode(b"..\r\n.\r\n").0.unwrap(), b".\r\n");
    assert_eq!(decode(b"...x\r\n.\r\n").0.unwrap(), b"..x\r\n");
    assert_eq!(decode(b"a.\r\n.b\r\n.\r\n").0.unwrap(), b"a.\r\nb\r\n");
}

#[test]
fn pipelined_bytes_after_the_terminator_are_left() {
    let input = b"hi\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n";
    let (body, used) = decode(input);
    assert_eq!(body.unwrap(), b"hi\r\n");
    assert_eq!(&input[used..], b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
}

#[test]
fn smuggling_with_bare_lf_is_one_flagged_message() {
    let input = b"Subject: a\r\n\r\nbody\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nforged\r\n.\r\nNOOP\r\n";
    let (body, used) = decode(input);
    assert_eq!(body, Err(DataReject::BareLf));
    assert_eq!(&input[used..], b"NOOP\r\n");
    assert_eq!(DataReject::BareLf.reply().code, 554);
}

#[test]
fn bare_lf_and_bare_cr_variants_do_not_terminate() {
    for (input, reject) in [
        (&b"a\r\n.\nb\r\n.\r\n"[..], DataReject::BareLf),
        (b"a\n.\r\nb\r\n.\r\n", DataReject::BareLf),
        (b"a\r.\rb\r\n.\r\n", DataReject::BareCr),
        (b"a\r\n.\rb\r\n.\r\n", DataReject::BareCr),
        (b"a\r\n.\r\r\n.\r\n", DataReject::BareCr),
        (b"a\r\rb\r\n.\r\n", DataReject::BareCr),
        (b"a\rb\r\n.\r\n", DataReject::BareCr),
    ] {
        let (body, used) = decode(input);
        assert_eq!(body, Err(reject), "{:?}", String::from_utf8_lossy(input));
        assert_eq!(used, input.len(), "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn size_limit_counts_without_storing() {
    let mut d = DataDecoder::new(10, 1000);
    d.start(Some(usize::MAX));
    let line = b"0123456789\r\n";
    for _ in 0..100 {
        assert!(!d.feed(line).done);
    }
    assert_eq!(d.size(), 1200);
    let f = d.feed(b".\r\nNOOP\r\n");
    assert_eq!(
        f,
        Feed {
            consumed: 3,
            done: true
        }
    );
    assert_eq!(d.finish(), Err(DataReject::TooBig));
    assert_eq!(DataReject::TooBig.reply().code, 552);
    // The decoder is reusable afterwards.
    d.start(None);
    assert!(d.feed(b"ok\r\n.\r\n").done);
    assert_eq!(d.finish().unwrap(), b"ok\r\n");
}

#[test]
fn body_exactly_at_the_size_limit_is_accepted() {
    let mut d = DataDecoder::new(4, 1000);
    d.start(None);
    assert!(d.feed(b"ab\r\n.\r\n").done);
    assert_eq!(d.finish().unwrap(), b"ab\r\n");
}

#[test]
fn long_data_line_is_flagged() {
    let mut d = DataDecoder::new(LIMIT, 100);
    d.start(None);
    let mut input = vec![b'x'; 99];
    input.extend_from_slice(b"\r\n");
    input.extend_from_slice(b"short\r\n.\r\n");
    assert!(d.feed(&input).done);
    assert_eq!(d.finish(), Err(DataReject::LineTooLong));
    let r = DataReject::LineTooLong.reply();
    assert_eq!((r.code, r.enhanced.as_deref()), (500, Some("5.5.2")));

    d.start(None);
    let mut input = vec![b'x'; 98];
    input.extend_from_slice(b"\r\n.\r\n");
    assert!(d.feed(&input).done);
    assert!(d.finish().is_ok());
}

// --- DATA encoding ----------------------------------------------------------------------------

fn encode(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_data(body, &mut out);
    out
}

#[test]
fn encoder_stuffs_and_terminates() {
    assert_eq!(encode(b""), b".\r\n");
    assert_eq!(encode(b"a\r\n"), b"a\r\n.\r\n");
    assert_eq!(encode(b"a"), b"a\r\n.\r\n");
    assert_eq!(encode(b".\r\n"), b"..\r\n.\r\n");
    assert_eq!(encode(b".a\r\nb\r\n.\r\n..c\r\n"), b"..a\r\nb\r\n..\r\n...c\r\n.\r\n");
    assert_eq!(encode(b"a.b\r\n"), b"a.b\r\n.\r\n");
    assert_eq!(encode(b"x\r\n."), b"x\r\n..\r\n.\r\n");
}

#[test]
fn encoder_round_trips_through_the_decoder() {
    let mut rng = Rng::new(99);
    let pieces: &[&[u8]] = &[b".", b"..", b"a", b"hello world", b"\t", b"\xc3\xa9", b" "];
    for _ in 0..2_000 {
        let mut body = Vec::new();
        for _ in 0..rng.below(20) {
            for _ in 0..rng.below(5) {
                body.extend_from_slice(rng.pick(pieces));
            }
            body.extend_from_slice(b"\r\n");
        }
        let wire = encode(&body);
        let cut = rng.below(wire.len() + 1);
        let (decoded, used) = decode_split(&wire, &[cut]);
        assert_eq!(decoded.unwrap(), body);
        assert_eq!(used, wire.len());
    }
}
