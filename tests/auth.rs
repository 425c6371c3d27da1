//! SMTP AUTH at the reference MTA (SPEC §13), real processes: a standalone node with a users
//! file answers 530 to a client outside its relay networks until it logs in, 535 to a wrong
//! password, and relays once it is in; `gen --auth` submits through it; a bad users file is a
//! config error (exit 2, file:line:col); and `run` with `traffic.auth` makes its nodes relay
//! for authenticated clients only, so every message of the run went through AUTH.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A node whose relay network is one address the test never connects from, with AUTH.
fn node_with_auth(dir: &std::path::Path, inbox: std::net::SocketAddr) -> Proc {
    std::fs::write(dir.join("users"), "# submitters\nsubmit:s3cret\n").unwrap();
    start_node(
        dir,
        "auth-1",
        inbox,
        "relay_networks: [127.0.0.250/32]\nauth: { users: users }\n",
    )
}

#[test]
fn the_node_wants_a_login_refuses_a_wrong_one_and_relays_after_a_right_one() {
    let dir = tempdir();
    let inbox = start_inbox(dir.path(), "generic");
    let node = node_with_auth(dir.path(), inbox.addr);
    let mut raw = Raw::connect(node.addr);
    assert_eq!(raw.code(), 220);
    raw.send("EHLO client.test\r\n");
    let ehlo = raw.reply();
    assert!(ehlo.iter().any(|l| l == "250-AUTH PLAIN LOGIN"), "{ehlo:?}");
    raw.send("MAIL FROM:<a@sender.test>\r\n");
    let r = raw.reply();
    assert_eq!(r, ["530 5.7.0 Authentication required"], "RFC 4954 §6");
    raw.send(&format!("AUTH PLAIN {}\r\n", b64("\0submit\0wrong")));
    assert_eq!(raw.reply(), ["535 5.7.8 Authentication credentials invalid"]);
    // LOGIN, through its prompts.
    assert_eq!(raw.cmd("AUTH LOGIN"), 334);
    assert_eq!(raw.cmd(&b64("submit")), 334);
    assert_eq!(raw.cmd(&b64("s3cret")), 235);
    assert_eq!(raw.cmd("MAIL FROM:<a@sender.test>"), 250);
    assert_eq!(raw.cmd("RCPT TO:<user1@example.com>"), 250);
    assert_eq!(raw.cmd("DATA"), 354);
    assert_eq!(
        raw.cmd("Message-ID: <auth.1@t>\r\nX-Mailsurge-Id: auth.1\r\nSubject: t\r\n\r\nhi\r\n."),
        250
    );
    raw.cmd("QUIT");
    let receipts = dir.path().join("receipts.jsonl");
    let got = wait_for(Duration::from_secs(10), || {
        let r = json_lines(&receipts);
        (!r.is_empty()).then_some(r)
    })
    .expect("the authenticated message was relayed to the inbox");
    assert_eq!(got[0]["mailsurge_id"], "auth.1", "{got:?}");

    // `gen --auth` through the same node; a wrong password gets nothing accepted.
    let out = dir.path().join("gen");
    let target = node.addr.to_string();
    let gen = |auth: &str, out: &std::path::Path| {
        mailsurge(&[
            "gen",
            "--target",
            &target,
            "--rate",
            "max",
            "--count",
            "50",
            "--connections",
            "2",
            "--auth",
            auth,
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let o = gen("submit:s3cret", &out);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let s = read_json(&out.join("summary.json"));
    assert_eq!(
        (s["counts"]["generated"].as_u64(), s["counts"]["accepted"].as_u64()),
        (Some(50), Some(50)),
        "{s}"
    );
    let out = dir.path().join("gen-wrong");
    let o = gen("submit:nope", &out);
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["counts"]["accepted"], 0, "{s}");
    let text = format!("{s}{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("535"), "the refusal is reported: {text}");
    node.terminate();
}

#[test]
fn a_bad_users_file_is_a_config_error_at_its_line() {
    let dir = tempdir();
    std::fs::write(dir.path().join("users"), "submit:s3cret\nno-colon-here\n").unwrap();
    let cfg = dir.path().join("node.yaml");
    std::fs::write(
        &cfg,
        "node: n\nregion: r\nlisten: 127.0.0.1:0\nrelay_networks: []\nspool: { kind: local, dir: spool }\n\
         routes: { '*': [127.0.0.1:2525] }\nevents: events.jsonl\nauth: { users: users }\n",
    )
    .unwrap();
    for args in [vec!["mta", "--config"], vec!["validate"]] {
        let o = mailsurge(&args.iter().copied().chain([cfg.to_str().unwrap()]).collect::<Vec<_>>());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("users:2:1: expected `user:password`"), "{args:?}: {err}");
    }
    // tls_only without a certificate to offer STARTTLS with.
    std::fs::write(dir.path().join("users"), "submit:s3cret\n").unwrap();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("users: users", "users: users, tls_only: true");
    std::fs::write(&cfg, text).unwrap();
    let o = mailsurge(&["validate", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("node.yaml:8:") && err.contains("tls_only"), "{err}");
}

#[test]
fn a_run_with_traffic_auth_submits_every_message_through_auth() {
    let tmp = tempdir();
    let dir = tmp.path();
    let path = dir.join("auth.yaml");
    std::fs::write(
        &path,
        "name: autht\nseed: 5\nduration: 4s\ndrain: 20s\nslo: { delivery_time: 5s, target: 99% }\n\
         thresholds: [ 'lost == 0', 'rejected_at_submit == 0' ]\n\
         regions: [ { name: local, nodes: 2 } ]\n\
         mta: { egress_pools: { shared: [127.0.1.1] } }\n\
         providers:\n  - { name: plain, domains: [example.com], rules: generic }\n\
         traffic:\n  rate: 50/s\n  domains: { example.com: 100% }\n  connections: 4\n  \
         tls: starttls\n  auth: 'load:pa:ss'\n",
    )
    .unwrap();
    let out = dir.join("run");
    let o = mailsurge(&["run", "--quiet", "--out", out.to_str().unwrap(), path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let s = read_json(&out.join("summary.json"));
    assert_schema_valid(&s);
    let c = &s["counts"];
    assert_eq!(c["lost"], 0, "{c}");
    assert!(c["accepted"].as_u64().unwrap() > 100, "{c}");
    assert_eq!(c["delivered"], c["accepted"], "{c}");
    // Both nodes relay for authenticated clients alone, from the one account in a private file.
    for n in ["local-1", "local-2"] {
        let node = out.join("nodes").join(n);
        let cfg = std::fs::read_to_string(node.join("node.yaml")).unwrap();
        assert!(
            cfg.contains("relay_networks: []") && cfg.contains("users: users"),
            "{cfg}"
        );
        let users = node.join("users");
        assert_eq!(std::fs::read_to_string(&users).unwrap(), "load:pa:ss\n");
        assert_eq!(std::fs::metadata(&users).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let mode = std::fs::metadata(out.join("scenario.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the run's copy of a scenario with a password is owner-only"
    );
    // The scenario names a password; validate shows a bad one at its place.
    let bad = dir.join("bad.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("'load:pa:ss'", "nocolon");
    std::fs::write(&bad, text).unwrap();
    let o = mailsurge(&["validate", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.yaml:16:9:") && err.contains("user:password"), "{err}");
}
