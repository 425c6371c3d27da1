//! TLS through the whole path (SPEC §13), real processes: the run's CA issues the inboxes' and
//! nodes' certificates, gmail requires STARTTLS, the MTA requires verified TLS toward gmail, and
//! gmail's certificate "expires" for a while: deliveries to gmail are deferred with the TLS
//! error (`451 4.7.5 … certificate expired`) and go out after the fault ends — nothing lost;
//! and summary.json's `tls` block gives each hop's share over TLS and its handshake times.
//! One message per connection, so every delivery shakes hands (a certificate is checked when a
//! connection starts; one already open lives on, as with a real MTA).

mod common;

use common::*;

#[test]
fn an_expired_certificate_defers_gmail_until_it_is_fixed_and_nothing_is_lost() {
    let tmp = tempdir();
    let dir = tmp.path();
    let path = dir.join("tls.yaml");
    std::fs::write(
        &path,
        "name: tlst\nseed: 3\nduration: 8s\ndrain: 30s\n\
         slo: { delivery_time: 5s, target: 50% }\n\
         thresholds: [ 'lost == 0', 'duplicates == 0', 'rejected_at_submit == 0' ]\n\
         regions: [ { name: local, nodes: 1 } ]\n\
         mta:\n  retry: { initial: 500ms, factor: 2, max_delay: 2s, jitter: 0%, give_up: 2m }\n  \
         egress_pools: { shared: [127.0.1.1] }\n  tls: { required: [gmail.com] }\n  \
         limits: { messages_per_connection: 1 }\n\
         providers:\n  - { name: gmail, domains: [gmail.com], rules: generic, tls: required }\n  \
         - { name: plain, domains: [example.com], rules: generic }\n\
         traffic:\n  rate: 40/s\n  arrival: uniform\n  domains: { gmail.com: 50%, example.com: 50% }\n  size: 2KiB\n  connections: 4\n  tls: starttls\n\
         chaos:\n  - { at: 2s, action: tls, target: provider/gmail, mode: expired-cert, for: 3s }\n",
    )
    .unwrap();
    let out = dir.join("run");
    let o = mailsurge(&["run", "--quiet", "--out", out.to_str().unwrap(), path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let s = read_json(&out.join("summary.json"));
    assert_schema_valid(&s);
    let c = &s["counts"];
    assert_eq!(c["lost"], 0, "{c}");
    assert_eq!(c["delivered"], c["accepted"], "{c}");
    assert!(out.join("tls/ca.pem").is_file(), "the run's CA is in the run directory");
    // Per hop: every submission over TLS (traffic.tls: starttls); about half the deliveries
    // (gmail's, which require it; `plain` offers none), each hop's sessions timed.
    let t = &s["tls"];
    assert_eq!(t["submission"]["share"], 1.0, "{t}");
    assert!(t["submission"]["sessions"].as_u64().unwrap() >= 1, "{t}");
    assert!(t["submission"]["handshake_p50_ms"].as_f64().is_some(), "{t}");
    let d = t["delivery"]["share"].as_f64().unwrap();
    assert!((0.3..0.7).contains(&d), "{t}");
    assert!(t["delivery"]["sessions"].as_u64().unwrap() >= 1, "{t}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("## TLS") && md.contains("MTA → inbox"),
        "report.md has the TLS table"
    );

    let events = run_events(&out);
    let tls_deferrals: Vec<&str> = events
        .lines()
        .filter(|l| l.contains("\"deferred\"") && l.contains("4.7.5") && l.contains("certificate expired"))
        .collect();
    assert!(
        !tls_deferrals.is_empty(),
        "deliveries to gmail were deferred with the TLS error"
    );
    assert!(
        tls_deferrals.iter().all(|l| l.contains("@gmail.com")),
        "only gmail requires TLS"
    );
    let fault = s["faults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["target"] == "provider/gmail")
        .cloned()
        .expect("the tls fault's row");
    assert_eq!(fault["action"], "tls");
    assert!(fault["detection_s"].as_f64().is_some(), "{fault}");
    assert!(fault["recovery_s"].as_f64().is_some(), "{fault}");
}
