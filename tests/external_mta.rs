//! `mta: kind: external`: the harness runs only the generator and the inboxes; the MTA under
//! test is a separate process it knows nothing about except its submission address. Here that
//! MTA is a standalone `mailsurge mta` node with `dsn: true` (it mails RFC 3464 bounces to the
//! envelope sender, as Postfix would), so the whole black-box path — transport routes to fixed
//! inbox addresses, DSNs to the bounce inbox, accounting from receipts and DSNs alone — runs
//! over real sockets between real processes. The same path against Postfix is the optional
//! suite `scripts/ci-postfix-external.sh`.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use common::*;

/// A free port on `ip`: bind port 0, read it, release it (the harness binds it again).
fn free_addr(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).expect("bind");
    l.local_addr().unwrap()
}

/// Recipients ending in 3 are unknown (bounce), ending in 7 always temp-fail (expire).
const RULES: &str = r#"provider: ext
rules:
  - { stage: rcpt, rcpt: '^user\d*3@', reply: "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown" }
  - { stage: rcpt, rcpt: '^user\d*7@', reply: "451 4.3.0 <{rcpt}>: Temporary lookup failure" }
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn external_mta_is_accounted_from_receipts_and_dsns() {
    let tmp = tempdir();
    let dir = tmp.path();
    let inbox = free_addr("127.0.7.1");
    let bounces = free_addr("127.0.7.250");
    write(dir, "ext-inbox.yaml", RULES);
    let node_cfg = write(
        dir,
        "node.yaml",
        &format!(
            "node: sut-1\nregion: sut\nlisten: 127.0.7.20:0\nrelay_networks: [127.0.0.0/8]\n\
             spool: {{ kind: local, dir: spool }}\n\
             routes: {{ example.com.mailsurge.test: [{inbox}], bounces.mailsurge.test: [{bounces}] }}\n\
             retry: {{ initial: 200ms, factor: 2, max_delay: 1s, jitter: 0%, give_up: 3s }}\n\
             events: events.jsonl\ndsn: true\n"
        ),
    );
    let node = spawn_listening(&["mta", "--config", &node_cfg], node_addr);
    let scenario = write(
        dir,
        "ext.yaml",
        &format!(
            "name: ext\nseed: 5\nduration: 4s\ndrain: 25s\n\
             slo: {{ delivery_time: 5s, target: 80% }}\n\
             thresholds: [ 'lost == 0', 'duplicates == 0', 'domain example.com: delivered > 100' ]\n\
             mta:\n  kind: external\n  submit: {}\n  bounces: {{ domain: bounces.mailsurge.test, listen: {bounces} }}\n\
             providers:\n  - {{ name: ext, domains: [example.com], rules: ./ext-inbox.yaml, listen: {inbox} }}\n\
             traffic:\n  rate: 60/s\n  domains: {{ example.com: 100% }}\n  size: 2KiB\n  connections: 4\n",
            node.addr
        ),
    );
    let out = dir.join("report");
    let o = mailsurge(&["run", &scenario, "--out", out.to_str().unwrap(), "--quiet"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        out.join("summary.json").exists(),
        "no summary; exit {:?}, stderr:\n{stderr}",
        o.status
    );
    let s = read_json(&out.join("summary.json"));
    assert_schema_valid(&s);
    let c = &s["counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("counts.{k} in {c}"));
    assert_eq!(o.status.code(), Some(0), "exit code; stderr:\n{stderr}\ncounts {c}");
    assert!(n("generated") > 150, "{c}");
    assert_eq!(n("accepted"), n("generated"), "{c}");
    assert!(n("delivered") > 0 && n("bounced") > 0 && n("expired") > 0, "{c}");
    assert_eq!(n("lost"), 0, "{c}");
    assert_eq!(n("queued"), 0, "{c}");
    assert_eq!(n("duplicates"), 0, "{c}");
    assert_eq!(n("delivered") + n("bounced") + n("expired"), n("accepted"), "{c}");
    // ~10% each; wide bounds, the seed fixes the mix anyway.
    let share = |k: &str| n(k) as f64 / n("accepted") as f64;
    assert!((0.04..0.18).contains(&share("bounced")), "{c}");
    assert!((0.04..0.18).contains(&share("expired")), "{c}");

    // Every failure came from a DSN the external MTA mailed, and hit the scripted recipients.
    // The external MTA was sent the reserved-suffix domain (SPEC §12), and the run still
    // counts it under the scenario's provider.
    // A domain scope names the domain as the scenario does, and counts the suffixed mail.
    assert_eq!(
        s["by_provider"]["ext"]["delivered"], c["delivered"],
        "{}",
        s["by_provider"]
    );
    let scoped = &s["thresholds"][2];
    assert_eq!(scoped["observed"].as_f64(), c["delivered"].as_f64(), "{scoped}");
    let events = run_events(&out);
    let (mut bounced, mut expired) = (0, 0);
    for line in events.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let rcpt = e["rcpt"].as_str().unwrap_or("");
        let local = rcpt.split('@').next().unwrap();
        if !rcpt.is_empty() {
            assert!(rcpt.ends_with("@example.com.mailsurge.test"), "{line}");
        }
        match e["event"].as_str().unwrap() {
            "bounced" => {
                bounced += 1;
                assert!(local.ends_with('3'), "{line}");
                assert_eq!(e["node"], "external", "{line}");
                assert!(e["text"].as_str().unwrap().starts_with("DSN 5.1.1 550 5.1.1"), "{line}");
            }
            "expired" => {
                expired += 1;
                assert!(local.ends_with('7'), "{line}");
                assert!(e["text"].as_str().unwrap().starts_with("DSN 4.4.7"), "{line}");
            }
            "received" => assert!(!local.ends_with('3') && !local.ends_with('7'), "{line}"),
            _ => {}
        }
    }
    assert_eq!((bounced, expired), (n("bounced"), n("expired")));
    let status = node.terminate();
    assert!(status.success() || status.code().is_none(), "node exit {status:?}");
}

#[test]
fn external_needs_submit_and_fixed_inbox_addresses() {
    let tmp = tempdir();
    let base = "name: x\nduration: 2s\nslo: { delivery_time: 5s, target: 99% }\n\
                traffic: { rate: 5/s, domains: { example.com: 100% } }\n";
    let cases = [
        (
            "mta: { kind: external }\nproviders: [ { name: g, domains: [example.com], listen: 127.0.7.1:2525 } ]\n",
            "needs `submit: HOST:PORT`",
        ),
        (
            "mta: { kind: external, submit: 127.0.7.20:2525 }\nproviders: [ { name: g, domains: [example.com] } ]\n",
            "needs a fixed `listen",
        ),
        (
            "mta: { kind: external, submit: 10.0.0.1:25 }\nproviders: [ { name: g, domains: [example.com], listen: 127.0.7.1:2525 } ]\n",
            "`10.0.0.1` (mta: submit) is not loopback and not inside network.allow",
        ),
        (
            "mta: { kind: external, submit: 127.0.7.20:2525, bounces: { domain: example.com, listen: 127.0.7.250:2525 } }\n\
             providers: [ { name: g, domains: [example.com], listen: 127.0.7.1:2525 } ]\n",
            "no provider serves",
        ),
    ];
    for (i, (extra, want)) in cases.iter().enumerate() {
        let p = write(tmp.path(), &format!("bad{i}.yaml"), &format!("{base}{extra}"));
        let o = mailsurge(&["validate", &p]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "case {i}: {err}");
        assert!(err.contains(want), "case {i}: want {want:?} in {err}");
        assert!(err.contains(&format!("bad{i}.yaml:")), "file:line:col in {err}");
    }
}

/// A run whose system under test is not there measured nothing, and must not pass: exit 3
/// with the reason, verdict `error`, and a failing junit case — never `PASS … accepted 0`.
#[test]
fn a_system_under_test_that_is_down_is_an_error_not_a_pass() {
    let tmp = tempdir();
    let dir = tmp.path();
    let nobody = free_addr("127.0.7.30"); // bound and released: nothing listens there
    let inbox = free_addr("127.0.7.31");
    let bounces = free_addr("127.0.7.251");
    write(dir, "ext-inbox.yaml", "provider: ext\nrules: []\n");
    let scenario = write(
        dir,
        "down.yaml",
        &format!(
            "name: down\nseed: 5\nduration: 1s\ndrain: 2s\n\
             slo: {{ delivery_time: 5s, target: 80% }}\n\
             thresholds: [ 'lost == 0' ]\n\
             mta:\n  kind: external\n  submit: {nobody}\n  bounces: {{ domain: bounces.mailsurge.test, listen: {bounces} }}\n\
             providers:\n  - {{ name: ext, domains: [example.com], rules: ./ext-inbox.yaml, listen: {inbox} }}\n\
             traffic:\n  rate: 20/s\n  domains: {{ example.com: 100% }}\n  size: 1KiB\n  connections: 2\n"
        ),
    );
    let out = dir.join("report");
    let o = mailsurge(&["run", &scenario, "--out", out.to_str().unwrap(), "--quiet"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "stderr:\n{stderr}");
    assert!(stderr.contains("accepted none of the"), "{stderr}");
    let s = read_json(&out.join("summary.json"));
    assert_schema_valid(&s);
    assert_eq!(s["verdict"], "error");
    assert_eq!(s["counts"]["accepted"], 0);
    assert_eq!(s["counts"]["submit_errors"], s["counts"]["generated"]);
    assert_eq!(s["slo"]["pass"], false, "no eligible mail: the SLO cannot pass");
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(
        junit.contains("run completed") && junit.contains("not judged"),
        "{junit}"
    );
    // `report` on the directory says the same.
    let o = mailsurge(&["report", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
}
