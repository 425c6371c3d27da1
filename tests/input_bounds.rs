//! Hostile and absurd input (issue: never a panic, never unbounded): every value out of what a
//! run can carry is refused by `validate` and `run` with exit 2, `file:line:col` and what was
//! expected — before anything starts.

mod common;

use common::*;

const GOOD: &str = "name: tiny
seed: 7
duration: 2s
drain: 5s
slo: { delivery_time: 2s, target: 99% }
regions:
  - { name: r1, nodes: 1 }
providers:
  - { name: p1, domains: [example.com], rules: generic }
traffic:
  rate: 50/s
  domains: { example.com: 100% }
  size: 2KiB
  connections: 2
";

/// `validate` and `run` both exit 2 with `file:POS` and every one of `needles`.
fn refused(text: &str, pos: &str, needles: &[&str]) {
    let dir = tempdir();
    let p = dir.path().join("bad.yaml");
    std::fs::write(&p, text).unwrap();
    let p = p.to_str().unwrap();
    for cmd in ["validate", "run"] {
        let o = mailsurge(&[cmd, p, "--quiet"][..if cmd == "run" { 3 } else { 2 }]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd} must refuse: {err}");
        assert!(
            err.contains(&format!("{p}:{pos}")),
            "{cmd}: expected {p}:{pos} in: {err}"
        );
        for n in needles {
            assert!(err.contains(n), "{cmd}: expected `{n}` in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn absurd_durations_are_out_of_range() {
    for d in ["18446744073709551615s", "99999999999999999999h", "1e20s"] {
        refused(
            &GOOD.replace("duration: 2s", &format!("duration: {d}")),
            "3:11",
            &["out of range", "e.g. 24h"],
        );
    }
    refused(&GOOD.replace("drain: 5s", "drain: 48h"), "4:1", &["at most 24h"]);
}

#[test]
fn a_plan_too_large_to_carry_is_refused() {
    refused(
        &GOOD.replace("size: 2KiB", "size: 100GiB"),
        "13:3",
        &["100GiB", "at most 32MiB"],
    );
    refused(
        &GOOD.replace("rate: 50/s", "rate: 100000000/s"),
        "11:3",
        &["at most 200000/s"],
    );
    refused(
        &GOOD.replace("connections: 2", "connections: 100000"),
        "14:3",
        &["at most 1024"],
    );
    refused(
        &GOOD.replace(
            "size: 2KiB",
            "size: { dist: lognormal, median: 8KiB, sigma: 1.0, max: 64MiB }",
        ),
        "13:3",
        &["64MiB"],
    );
}

#[test]
fn rate_and_size_mistakes_say_what_was_expected() {
    let e = ["expected a rate such as `300/s`"];
    refused(
        &GOOD.replace("rate: 50/s", "rate: -100/s"),
        "11:9",
        &["must not be negative", e[0]],
    );
    refused(
        &GOOD.replace("rate: 50/s", "rate: { peak: 300/s, curve: bogus-curve }"),
        "11:31",
        &["unknown curve `bogus-curve`", "black-friday"],
    );
    refused(
        &GOOD.replace("size: 2KiB", "size: twelve"),
        "13:9",
        &["expected a size such as `12KiB`"],
    );
}

#[test]
fn curve_points_may_be_absolute_rates() {
    let dir = tempdir();
    let p = dir.path().join("rates.yaml");
    std::fs::write(
        &p,
        GOOD.replace("rate: 50/s", "rate: { curve: [[0s, 20/s], [2s, 60/s]] }"),
    )
    .unwrap();
    let o = mailsurge(&["validate", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn chaos_after_the_run_is_refused() {
    let text = format!("{GOOD}chaos:\n  - {{ at: 1h, action: kill, target: region/r1 }}\n");
    refused(&text, "16:", &["after the run ends"]);
}

/// The `tls` chaos action takes a provider and one of its two modes; a kill takes neither.
#[test]
fn tls_faults_need_a_provider_and_a_tls_mode() {
    let chaos = |c: &str| format!("{GOOD}chaos:\n  - {c}\n");
    refused(
        &chaos("{ at: 1s, action: tls, target: provider/p1 }"),
        "16:",
        &["tls needs `mode: handshake-fail`"],
    );
    refused(
        &chaos("{ at: 1s, action: tls, target: region/r1, mode: expired-cert }"),
        "16:",
        &["applies to provider/<name> targets only"],
    );
    refused(
        &chaos("{ at: 1s, action: kill, target: provider/p1, mode: expired-cert }"),
        "16:",
        &["belong to the `tls` action"],
    );
    let ok = chaos("{ at: 1s, action: tls, target: provider/p1, mode: handshake-fail, for: 1s }");
    let dir = tempdir();
    let p = dir.path().join("ok.yaml");
    std::fs::write(&p, ok).unwrap();
    let o = mailsurge(&["validate", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The reference MTA follows the same network rule as the inboxes: loopback, or inside its
/// config's `network.allow` (or `--allow-network`).
#[test]
fn mta_refuses_a_non_loopback_listen_address() {
    let dir = tempdir();
    let p = dir.path().join("node.yaml");
    std::fs::write(
        &p,
        "node: n1\nregion: r\nlisten: 0.0.0.0:2525\nrelay_networks: [127.0.0.0/8]\nspool: { kind: local, dir: spool }\nroutes: { example.com: [127.0.2.1:2525] }\nevents: events.jsonl\n",
    )
    .unwrap();
    let o = mailsurge(&["mta", "--config", p.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":3:1: listen: `0.0.0.0` (listen) is not loopback and not inside network.allow"),
        "{err}"
    );
}

/// Files that are not files, too deep or of an unexpected kind are refused with a reason.
#[test]
fn odd_files_are_refused_quickly_and_named() {
    let dir = tempdir();
    let deep = dir.path().join("deep.yaml");
    std::fs::write(
        &deep,
        format!("name: x\nduration: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .unwrap();
    let t = std::time::Instant::now();
    let o = mailsurge(&["validate", deep.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nested deeper than 32 levels"));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );

    let o = mailsurge(&["validate", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a regular file"));

    // A rules file missing its `provider:` line is read as rules, and says so.
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, "rules:\n  - { match: {}, reply: \"250 ok\" }\n").unwrap();
    let o = mailsurge(&["validate", rules.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("read as mock-inbox rules: it has `rules:`"), "{err}");
}

/// The same bounds hold in rule files, for `validate` and for a standalone `inbox --rules`.
#[test]
fn rule_files_refuse_absurd_durations() {
    let dir = tempdir();
    let p = dir.path().join("rules.yaml");
    std::fs::write(
        &p,
        "provider: x\nlatency: { message: { dist: fixed, value: 99999999999999999999h } }\nrules: []\n",
    )
    .unwrap();
    let p = p.to_str().unwrap();
    for args in [
        vec!["validate", p],
        vec!["inbox", "--rules", p, "--listen", "127.0.9.41:2525"],
    ] {
        let o = mailsurge(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(":2:") && err.contains("out of range"), "{args:?}: {err}");
    }
}

/// `gen` carries the same bounds as a scenario's traffic.
#[test]
fn gen_refuses_what_it_cannot_carry() {
    for (args, want) in [
        (vec!["--rate", "100000000/s", "--duration", "30s"], "at most 200000/s"),
        (vec!["--rate", "100/s", "--count", "100000000"], "at most 50000000"),
        (
            vec!["--rate", "max", "--count", "10", "--size", "100GiB"],
            "at most 32MiB",
        ),
    ] {
        let mut all = vec!["gen", "--target", "127.0.9.42:2525"];
        all.extend(args);
        let o = mailsurge(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{all:?}: {err}");
        assert!(err.contains(want), "{all:?}: {err}");
    }
}

/// Node limits set from the scenario that would leave a node unable to deliver are refused
/// where they are written; sensible ones are taken.
#[test]
fn node_limits_that_stop_delivery_are_refused() {
    let with = |l: &str| GOOD.replace("providers:", &format!("mta:\n  limits: {{ {l} }}\nproviders:"));
    refused(
        &with("domain_connections: 0"),
        "9:13",
        &["domain_connections must be at least 1"],
    );
    refused(
        &with("max_recipients: 500"),
        "9:13",
        &["max_recipients 500", "at most 128"],
    );
    refused(
        &with("dns_servers: 2"),
        "9:13",
        &["unknown field `dns_servers`", "domain_connections"],
    );
    let dir = tempdir();
    let p = dir.path().join("ok.yaml");
    std::fs::write(&p, with("domain_connections: 32, domain_rate: 500/s")).unwrap();
    let o = mailsurge(&["validate", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The network rule (SPEC §12): an address off loopback and outside the allow-list is refused,
/// naming it, where it came from and how to allow it; `network.allow` or `--allow-network`
/// covering it makes the same scenario valid. Only `validate` (and `run` refusing): nothing
/// connects anywhere.
#[test]
fn addresses_off_loopback_need_the_allow_list() {
    let listen = GOOD.replace("rules: generic }", "rules: generic, listen: 10.203.0.7:2525 }");
    refused(
        &listen,
        "9:65",
        &[
            "`10.203.0.7` (providers: p1 listen) is not loopback and not inside network.allow",
            "add a CIDR to network.allow or pass --allow-network 10.203.0.0/24",
        ],
    );
    let submit = GOOD.replace("rules: generic }", "rules: generic, listen: 127.0.2.1:2525 }")
        + "mta:\n  kind: external\n  submit: 192.0.2.25:25\n";
    refused(
        &submit,
        "17:3",
        &["mta: submit: `192.0.2.25` (mta: submit) is not loopback"],
    );

    let dir = tempdir();
    let validate = |name: &str, text: &str, flags: &[&str]| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let o = mailsurge(&[&["validate", p.to_str().unwrap()][..], flags].concat());
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let inside = format!("{listen}network:\n  allow: [10.203.0.0/24]\n");
    assert_eq!(
        validate("in-file.yaml", &inside, &[]).0,
        Some(0),
        "network.allow covers it"
    );
    let (code, err) = validate("flag.yaml", &listen, &["--allow-network", "10.203.0.0/24"]);
    assert_eq!(code, Some(0), "--allow-network covers it: {err}");
    let (code, err) = validate("elsewhere.yaml", &listen, &["--allow-network", "10.203.1.0/24"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("elsewhere.yaml:9:65") && err.contains("network.allow (10.203.1.0/24)"),
        "{err}"
    );
    let (code, err) = validate("host.yaml", &submit, &["--allow-network", "192.0.2.25"]);
    assert_eq!(code, Some(0), "one address is a /32: {err}");
    let (code, err) = validate("typo.yaml", &listen, &["--allow-network", "10.203.0.0/33"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a CIDR"), "{err}");
    let bad = format!("{listen}network:\n  allow: [10.203.0.0/24]\n  real_domain: true\n");
    let (code, err) = validate("unknown-key.yaml", &bad, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("unknown-key.yaml:") && err.contains("real_domain"),
        "{err}"
    );
}
