//! Property-based tests (proptest) of the parsers every hostile input reaches first: the SMTP
//! codec, the reply grammar, the DSN parser and the YAML loaders. Each property holds for every
//! generated input; proptest shrinks a failure to its smallest case.

use mailsurge::config::Source;
use mailsurge::smtp::codec::{encode_data, parse_command, DataDecoder, DataEncoder, Frame, LineFramer};
use mailsurge::smtp::Reply;
use proptest::prelude::*;

/// Frames `wire` into lines fed in the chunks `cuts` makes, parsing each complete line.
fn commands_in_chunks(wire: &[u8], cuts: &[usize]) -> Vec<String> {
    let mut framer = LineFramer::new(512);
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    bounds.push(wire.len());
    bounds.sort_unstable();
    let mut from = 0;
    for to in bounds {
        buf.extend_from_slice(&wire[from..to]);
        from = to;
        loop {
            match framer.next_frame(&buf) {
                Frame::Line(n) => {
                    out.push(format!("{:?}", parse_command(&buf[..n])));
                    buf.drain(..n);
                }
                Frame::TooLong(n) => {
                    out.push("too long".into());
                    buf.drain(..n);
                }
                Frame::NeedMore(n) => {
                    buf.drain(..n);
                    break;
                }
            }
        }
    }
    out
}

/// Decodes DATA content fed in the chunks `cuts` makes: (body or rejection, bytes consumed).
fn decode_in_chunks(wire: &[u8], cuts: &[usize]) -> (String, usize) {
    let mut d = DataDecoder::new(1 << 20, 10_000);
    d.start(None);
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    bounds.push(wire.len());
    bounds.sort_unstable();
    let (mut from, mut used) = (0, 0);
    for to in bounds {
        let f = d.feed(&wire[from.max(used)..to.max(used)]);
        used = from.max(used) + f.consumed;
        from = to;
        if f.done {
            return (format!("{:?}", d.finish()), used);
        }
    }
    ("unfinished".into(), used)
}

const CONVERSATION: &[u8] = b"EHLO client.test\r\nMAIL FROM:<a@b.test> SIZE=1000\r\nRCPT TO:<c@d.test>\r\n\
RCPT TO:<postmaster>\r\nNOOP\r\nRSET\r\nMAIL FROM:<>\r\nVRFY x\r\nBOGUS\r\nQUIT\r\n";

proptest! {
    /// Any byte split of a valid conversation frames and parses to the same commands.
    #[test]
    fn command_stream_is_split_independent(cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        prop_assert_eq!(commands_in_chunks(CONVERSATION, &cuts), commands_in_chunks(CONVERSATION, &[]));
    }

    /// Random bytes never panic the framer or the command parser.
    #[test]
    fn random_command_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                        cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let _ = commands_in_chunks(&bytes, &cuts);
    }

    /// Dot-stuffing round-trips: whatever CRLF body is encoded decodes back to itself, however
    /// the wire is split.
    #[test]
    fn dot_stuffing_round_trips(lines in proptest::collection::vec("[.a-z .]{0,20}", 0..20),
                                cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let body: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\r\n").into_bytes()).collect();
        let mut wire = Vec::new();
        encode_data(&body, &mut wire);
        let (got, used) = decode_in_chunks(&wire, &cuts);
        prop_assert_eq!(got, format!("{:?}", Ok::<Vec<u8>, ()>(body)));
        prop_assert_eq!(used, wire.len());
    }

    /// Encoding a body piece by piece (as the generator streams a large message) gives the same
    /// wire bytes as encoding it whole, wherever the pieces are cut — dots and CRs included.
    #[test]
    fn chunked_encoding_equals_whole(body in proptest::collection::vec(prop_oneof![
                                         Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')], 0..200),
                                     cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let mut whole = Vec::new();
        encode_data(&body, &mut whole);
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        bounds.push(body.len());
        bounds.sort_unstable();
        let (mut pieces, mut e, mut from) = (Vec::new(), DataEncoder::default(), 0);
        for to in bounds {
            e.push(&body[from..to], &mut pieces);
            from = to;
        }
        e.finish(&mut pieces);
        prop_assert_eq!(pieces, whole);
    }

    /// A decoder that keeps only a prefix (the inbox keeps the header section) still counts
    /// and checks the whole body: the same size and verdict, the body cut to the prefix.
    #[test]
    fn keeping_a_prefix_counts_the_whole(lines in proptest::collection::vec("[.a-z .]{0,20}", 0..20),
                                         keep in 0usize..300) {
        let body: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\r\n").into_bytes()).collect();
        let mut wire = Vec::new();
        encode_data(&body, &mut wire);
        let mut d = DataDecoder::new(1 << 20, 10_000).keeping(keep);
        d.start(None);
        prop_assert!(d.feed(&wire).done);
        prop_assert_eq!(d.size(), body.len());
        let got = d.finish().unwrap();
        prop_assert_eq!(&got[..], &body[..body.len().min(keep)]);
    }

    /// Random DATA bytes never panic the decoder, split any way.
    #[test]
    fn random_data_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096),
                                cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let _ = decode_in_chunks(&bytes, &cuts);
    }

    /// The reply grammar: any string is accepted or refused, never a panic; what it accepts
    /// goes on the wire as lines that start with its code.
    #[test]
    fn reply_specs_never_panic(s in ".{0,80}") {
        if let Ok(r) = Reply::parse_spec(&s) {
            let wire = r.to_wire();
            let code = r.code.to_string();
            for line in wire.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                prop_assert!(line.starts_with(code.as_bytes()));
                prop_assert!(line.ends_with(b"\r"));
            }
        }
    }

    /// The DSN parser reads anything: random bytes and mutated real notices never panic.
    #[test]
    fn dsn_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096),
                               flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..16)) {
        let _ = mailsurge::dsn::parse(&bytes);
        let mut real = SAMPLE_DSN.to_vec();
        for (at, b) in flips {
            let n = real.len();
            real[at % n] = b;
        }
        let _ = mailsurge::dsn::parse(&real);
    }

    /// The YAML loaders: a shipped file mutated at random bytes is read or refused with a
    /// position-carrying error (exit 2), never a panic.
    #[test]
    fn yaml_loaders_never_panic(which in 0usize..3,
                                flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let (name, text) = [
            ("smoke.yaml", include_str!("../scenarios/smoke.yaml")),
            ("gmail.yaml", include_str!("../mock-inboxes/gmail.yaml")),
            ("deliverability.yaml", include_str!("../scenarios/deliverability.yaml")),
        ][which];
        let mut bytes = text.as_bytes().to_vec();
        for (at, b) in flips {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        let src = Source {
            name: name.into(),
            text: String::from_utf8_lossy(&bytes).into_owned(),
            dir: Some(std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios"))),
        };
        let _ = match which {
            0 => mailsurge::scenario::from_source(src).and_then(mailsurge::run::compile).map(drop),
            1 => mailsurge::inbox::RuleSet::from_source(&src).map(drop),
            _ => mailsurge::mta::responses::ResponseTable::from_source(&src).map(drop),
        };
    }
}

const SAMPLE_DSN: &[u8] = b"From: MAILER-DAEMON@mx.test\r\nTo: t1@bounces.mailsurge.test\r\n\
Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry.\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n\r\n\
Final-Recipient: rfc822; nouser@gmail.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n\
--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <1.r@mailsurge.test>\r\n\
X-Mailsurge-Id: r.1\r\n\r\n--B--\r\n";
