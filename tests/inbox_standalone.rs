//! The standalone `mailsurge inbox` process: SIGHUP reloads rules without dropping
//! connections, a broken file keeps the old rules, bad input gets SMTP errors and is counted,
//! and duplicates are flagged in receipts.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn rules(code: u16, word: &str) -> String {
    format!("provider: reload\nrules:\n  - {{ stage: rcpt, rcpt: '^x', reply: \"{code} 5.1.1 {word}\" }}\n")
}

#[test]
fn sighup_reload_bad_input_and_duplicates() {
    let dir = tempdir();
    let rules_path = dir.path().join("rules.yaml");
    let receipts = dir.path().join("r.jsonl");
    std::fs::write(&rules_path, rules(550, "first")).unwrap();
    let mut child = Command::new(bin())
        .args([
            "inbox",
            "--rules",
            rules_path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--receipts", receipts.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);

    let mut c = Raw::connect(addr);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("EHLO a.test"), 250);
    assert_eq!(c.cmd("MAIL FROM:<a@b.test>"), 250);
    assert_eq!(c.cmd("RCPT TO:<x1@y.test>"), 550);

    // Reload: the open session sees the new rules at its next command.
    std::fs::write(&rules_path, rules(551, "second")).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let reloaded = wait_for(Duration::from_secs(5), || {
        (c.cmd("RCPT TO:<x2@y.test>") == 551).then_some(())
    });
    assert!(reloaded.is_some(), "rules reloaded on SIGHUP");

    // A broken file is reported and the old rules stay.
    std::fs::write(
        &rules_path,
        "provider: reload\nrules:\n  - { stage: nowhere, reply: \"550 x\" }\n",
    )
    .unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.cmd("RCPT TO:<x3@y.test>"), 551);

    // The same message twice: the second receipt is a duplicate.
    assert_eq!(c.cmd("RCPT TO:<ok@y.test>"), 250);
    for _ in 0..2 {
        if c.cmd("DATA") != 354 {
            assert_eq!(c.cmd("MAIL FROM:<a@b.test>"), 250);
            assert_eq!(c.cmd("RCPT TO:<ok@y.test>"), 250);
            assert_eq!(c.cmd("DATA"), 354);
        }
        c.send("X-Mailsurge-Id: run.1\r\nMessage-ID: <1@t>\r\n\r\nhi\r\n.\r\n");
        assert_eq!(c.code(), 250);
    }

    // Bad input: SMTP errors, never a crash.
    let mut b = Raw::connect(addr);
    assert_eq!(b.code(), 220);
    assert_eq!(b.cmd(&"X".repeat(5000)), 500, "over-long line");
    assert_eq!(b.cmd("FROB"), 500, "unknown command");
    assert_eq!(b.cmd("EHLO b.test"), 250, "session goes on");
    assert_eq!(b.cmd("RCPT TO:<ok@y.test>"), 503, "bad sequence");
    assert_eq!(b.cmd("MAIL FROM:<a@b.test>"), 250);
    assert_eq!(b.cmd("RCPT TO:<ok@y.test>"), 250);
    assert_eq!(b.cmd("DATA"), 354);
    b.send("Subject: bare\n\nsmuggle\n.\nMAIL FROM:<e@vil>\r\n.\r\n");
    assert_eq!(b.code(), 554, "bare LF refused");
    // An abrupt disconnect in the middle of DATA.
    let mut d = Raw::connect(addr);
    assert_eq!(d.code(), 220);
    assert_eq!(d.cmd("EHLO d.test"), 250);
    assert_eq!(d.cmd("MAIL FROM:<a@b.test>"), 250);
    assert_eq!(d.cmd("RCPT TO:<ok@y.test>"), 250);
    assert_eq!(d.cmd("DATA"), 354);
    d.send("Subject: cut\r\n\r\nhalf a mes");
    drop(d);
    assert_eq!(c.cmd("NOOP"), 250, "server still up");

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("reload failed"), "{err}");
    assert!(err.contains("2 receipts, 1 duplicates"), "{err}");
    // The counters as a table, one per line: `  bare LF/CR refused    1`.
    let row = |name: &str| -> Option<u64> {
        let line = err.lines().find(|l| l.trim_start().starts_with(name))?;
        line.split_whitespace().last()?.parse().ok()
    };
    assert_eq!(
        (row("bare LF/CR refused"), row("lines too long")),
        (Some(1), Some(1)),
        "{err}"
    );
    assert!(!err.contains("StatsSnapshot"), "no debug dump: {err}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&receipts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].get("duplicate").is_none());
    assert_eq!(lines[1]["duplicate"], true);
}

/// `tls: required` (SPEC §13): STARTTLS is offered, MAIL in the clear gets 530 5.7.0, and a
/// client that verifies against the CA the inbox wrote completes STARTTLS and delivers.
#[test]
fn a_provider_that_requires_tls_refuses_plaintext_and_takes_mail_over_starttls() {
    let dir = tempdir();
    let rules_path = dir.path().join("tls.yaml");
    std::fs::write(&rules_path, "provider: tlsisp\ntls: required\n").unwrap();
    let receipts = dir.path().join("r.jsonl");
    let inbox = spawn_listening(
        &[
            "inbox",
            "--rules",
            rules_path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--receipts",
            receipts.to_str().unwrap(),
        ],
        inbox_addr,
    );
    let ca = dir.path().join("tlsisp-ca.pem");
    assert!(wait_for(Duration::from_secs(5), || ca.exists().then_some(())).is_some());

    // In the clear: STARTTLS offered, MAIL refused.
    let mut raw = Raw::connect(inbox.addr);
    assert_eq!(raw.code(), 220);
    raw.send("EHLO plain.test\r\n");
    let ehlo = raw.reply().join("\n");
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    raw.send("MAIL FROM:<a@x.test>\r\n");
    let mail = raw.reply().join("\n");
    assert!(mail.starts_with("530 5.7.0"), "{mail}");

    // Over TLS, verified against the inbox's CA.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = mailsurge::smtp::ClientConfig {
            helo: "tls.test".into(),
            tls: mailsurge::smtp::client::ClientTls::Required(mailsurge::tls::load_client(&ca).unwrap()),
            ..Default::default()
        };
        let mut c = mailsurge::smtp::Client::connect(inbox.addr, &cfg).await.unwrap();
        assert!(c.tls().is_some());
        let out = c
            .send("a@x.test", &["user1@tlsisp.test".into()], b"Subject: t\r\n\r\nhi\r\n")
            .await
            .unwrap();
        assert!(out.accepted(), "{:?}", out.final_reply());
    });
    let got = wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(&receipts)
            .ok()
            .filter(|t| t.lines().count() == 1)
    });
    assert!(got.is_some(), "one receipt, over TLS");
}
