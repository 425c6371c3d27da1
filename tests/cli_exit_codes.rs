//! Exit codes of SPEC §7: a bad scenario exits 2 naming file:line:col and starts nothing; a
//! failing threshold exits 1.

mod common;

use common::*;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

const GOOD: &str = "name: tiny
seed: 7
duration: 2s
drain: 5s
slo: { delivery_time: 2s, target: 99% }
thresholds:
  - p50 < 2s
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

fn expect_config_error(text: &str, needle_pos: &str, needle_msg: &str) {
    let dir = tempdir();
    let p = write(dir.path(), "bad.yaml", text);
    for cmd in ["validate", "run"] {
        let o = mailsurge(&[cmd, &p]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains(&format!("{p}:{needle_pos}")),
            "{cmd}: expected {p}:{needle_pos} in: {err}"
        );
        assert!(err.contains(needle_msg), "{cmd}: expected `{needle_msg}` in: {err}");
    }
}

#[test]
fn unknown_key_names_line_and_column() {
    expect_config_error(&GOOD.replace("drain: 5s", "drain: 5s\nturbo: true"), "5:1", "turbo");
}

#[test]
fn bad_duration_names_line_and_column() {
    expect_config_error(&GOOD.replace("duration: 2s", "duration: 2 parsecs"), "3:11", "duration");
}

#[test]
fn bad_threshold_names_line_and_column() {
    expect_config_error(&GOOD.replace("p50 < 2s", "p42 < 2s"), "7:5", "unknown metric `p42`");
}

#[test]
fn domain_without_provider_is_an_error() {
    expect_config_error(
        &GOOD.replace(
            "domains: { example.com: 100% }",
            "domains: { example.com: 50%, nowhere.test: 50% }",
        ),
        "14:",
        "nowhere.test",
    );
}

#[test]
fn bad_regex_in_rules_file_names_its_position() {
    let dir = tempdir();
    let rules = write(
        dir.path(),
        "rules.yaml",
        "provider: x\nrules:\n  - { stage: rcpt, rcpt: '(unclosed', reply: \"550 5.1.1 no\" }\n",
    );
    let o = mailsurge(&["validate", &rules]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{rules}:3:")), "{err}");
    assert!(err.contains("regex"), "{err}");
    // The scenario referring to it fails the same way.
    let s = write(
        dir.path(),
        "s.yaml",
        &GOOD.replace("rules: generic", "rules: ./rules.yaml"),
    );
    let o = mailsurge(&["validate", &s]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("rules.yaml:3:"), "{err}");
}

#[test]
fn shipped_files_validate() {
    // Every shipped scenario and rule table, found on disk so a new one cannot be forgotten.
    let mut files: Vec<String> = Vec::new();
    for dir in ["scenarios", "mock-inboxes"] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p.to_str().unwrap().to_string());
            }
        }
    }
    assert!(files.len() >= 17, "{files:?}");
    // The distributed run of docs/cluster.md and deploy/compose.yaml.
    files.push(repo().join("deploy/cluster.yaml").to_str().unwrap().to_string());
    let args: Vec<&str> = std::iter::once("validate")
        .chain(files.iter().map(String::as_str))
        .collect();
    let o = mailsurge(&args);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn failing_threshold_exits_1_with_reason() {
    let dir = tempdir();
    let p = write(dir.path(), "strict.yaml", &GOOD.replace("p50 < 2s", "p50 < 1us"));
    let out = dir.path().join("out");
    let o = mailsurge(&["run", &p, "--out", out.to_str().unwrap(), "--quiet"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("p50 < 1us"), "{stdout}");
    let s = read_json(&out.join("summary.json"));
    assert_schema_valid(&s);
    assert_eq!(s["verdict"], "fail");
    assert_eq!(s["thresholds"][0]["pass"], false);
    assert_eq!(s["counts"]["lost"], 0);
}

/// `validate` recognises a node config (what `mailsurge mta --config` reads) and checks it,
/// response table included, instead of reading it as a scenario.
#[test]
fn validate_reads_node_configs_as_node_configs() {
    let dir = tempdir();
    let node = "node: n-1\nregion: r\nlisten: 127.0.3.9:0\nrelay_networks: [127.0.0.0/8]\n\
                spool: { kind: local, dir: spool }\nroutes: { example.com: [127.0.2.9:2525] }\n\
                events: events.jsonl\nresponses: deliverability\n";
    let good = write(dir.path(), "node.yaml", node);
    let o = mailsurge(&["validate", &good]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok (node config)"));
    let bad = write(
        dir.path(),
        "bad-node.yaml",
        &node.replace("responses: deliverability", "responses: nowhere"),
    );
    let o = mailsurge(&["validate", &bad]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("read as node config") && err.contains("nowhere"), "{err}");
}
