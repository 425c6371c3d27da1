use super::*;

#[test]
fn round_trip_and_torn_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("e.jsonl");
    let mut f = std::fs::File::create(&p).unwrap();
    let mut e = Event::new(5, "r.1", Kind::Accepted);
    e.node = Some("us-east-1".into());
    write_line(&mut f, &e).unwrap();
    f.write_all(b"{\"t\": 7, \"id\": \"r.2\", \"ev").unwrap();
    drop(f);
    let (evs, bad) = read_file(&p).unwrap();
    assert_eq!(evs, vec![e]);
    assert_eq!(bad, 1);
}

#[test]
fn parses_identity_headers() {
    let m = b"From: a@b\r\nMessage-ID: <1@x>\r\nx-mailsurge-id: run.7\r\nX-Mailsurge-Intended: 123\r\nX-Mailsurge-Submitted: 456\r\n\r\nX-Mailsurge-Id: body.1\r\n";
    let id = Identity::parse(m);
    assert_eq!(id.message_id.as_deref(), Some("<1@x>"));
    assert_eq!(id.mailsurge_id.as_deref(), Some("run.7"));
    assert_eq!(id.intended_ns, Some(123));
    assert_eq!(id.submitted_ns, Some(456));
}

#[test]
fn written_headers_parse_back() {
    let m = format!("{}\r\nbody\r\n", Identity::headers("r", 9, 11, 12));
    let id = Identity::parse(m.as_bytes());
    assert_eq!(id.message_id.as_deref(), Some("<9.r@mailsurge.test>"));
    assert_eq!(id.intended_ns, Some(11));
    assert_eq!(id.submitted_ns, Some(12));
    assert_eq!(id.key().as_deref(), Some("r.9"));
}

#[test]
fn legacy_fault_text_parameters() {
    let p = |text: &str| {
        let mut e = Event::new(1, "fault.0", Kind::Fault);
        e.text = Some(text.into());
        let a = Fault::from_legacy_text(&e);
        (a.action.clone(), a.target_path(), a.mode, a.pool, a.add, a.mx)
    };
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        p("kill provider/yahoo mode refuse"),
        ("kill".into(), "provider/yahoo".into(), s("refuse"), None, None, None)
    );
    assert_eq!(
        p("kill provider/yahoo mx2 blackhole for 30s"),
        (
            "kill".into(),
            "provider/yahoo".into(),
            s("blackhole"),
            None,
            None,
            Some(2)
        )
    );
    assert_eq!(p("latency provider/gmail add 500ms").4, s("500ms"));
    assert_eq!(p("latency provider/gmail +500ms for 20s").4, s("500ms"));
    let mut bare = Event::new(1, "fault.3", Kind::Fault);
    bare.node = Some("us-east-1".into());
    bare.region = Some("us-east".into());
    let a = Fault::from_legacy_text(&bare);
    assert_eq!(
        (a.action.as_str(), a.target_kind, a.target.as_str()),
        ("fault", TargetKind::Node, "us-east-1")
    );
}

#[test]
fn old_fault_lines_are_read_with_typed_fields() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("e.jsonl");
    std::fs::write(
        &p,
        "{\"t\":1,\"id\":\"fault.0\",\"event\":\"fault\",\"text\":\"block provider/comcast pool shared for 45s\"}\n",
    )
    .unwrap();
    let (evs, _) = read_file(&p).unwrap();
    let f = evs[0].fault.as_deref().unwrap();
    assert_eq!(
        (f.action.as_str(), f.target_path(), f.pool.as_deref()),
        ("block", "provider/comcast".into(), Some("shared"))
    );
}

#[test]
fn rfc3339_format() {
    assert_eq!(rfc3339(1_500_000_000_123_456_789), "2017-07-14T02:40:00.123456Z");
}
