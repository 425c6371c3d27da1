//! Test fixtures of failover metrics: a small run's events built by hand (messages, balancer
//! changes, faults), shared with the report's tests of fault rows.

use super::NS;
use crate::events::{Event, Fault, Kind};
use crate::measure::{analyze, Analysis, Inputs, Spooled};

/// Offset 0 of the test runs (not the epoch, so offsets are really subtracted).
pub(crate) const START: u64 = 1_000 * 1_000_000_000;

pub(crate) fn ns(s: f64) -> u64 {
    START + (s * NS).round() as u64
}

pub(crate) fn inputs() -> Inputs {
    Inputs {
        start_ns: START,
        duration_s: 30.0,
        warmup_s: 0.0,
        slo_ms: 1000.0,
        slo_target: 0.9,
        providers: [("gmail.test", "gmail"), ("comcast.test", "comcast")]
            .into_iter()
            .map(|(d, p)| (d.to_string(), p.to_string()))
            .collect(),
        thresholds: Vec::new(),
    }
}

/// One recipient: submitted at its intended time, accepted by `node` 1 ms later, received
/// at each of `receipts` (seconds since offset 0).
pub(crate) fn msg(seq: u32, intended_s: f64, node: &str, domain: &str, receipts: &[f64]) -> Vec<Event> {
    let id = format!("r.{seq}");
    let rcpt = Some(format!("u{seq}@{domain}"));
    let mut s = Event::new(ns(intended_s), &id, Kind::Submitted);
    s.rcpt = rcpt.clone();
    s.intended = Some(ns(intended_s));
    s.submitted = s.intended;
    let mut a = Event::new(ns(intended_s + 0.001), &id, Kind::Accepted);
    a.rcpt = rcpt.clone();
    a.node = Some(node.into());
    a.region = Some(node.trim_end_matches(char::is_numeric).into());
    let mut v = vec![s, a];
    for &r in receipts {
        let mut e = Event::new(ns(r), &id, Kind::Received);
        e.rcpt = rcpt.clone();
        v.push(e);
    }
    v
}

/// A `fault` / `fault_end` as an old run's file holds it (label only), read as
/// `events::read_file` reads it: typed fields recovered from the label.
pub(crate) fn control(at_s: f64, kind: Kind, id: &str, text: &str) -> Event {
    let mut e = Event::new(ns(at_s), id, kind);
    if !text.is_empty() {
        e.text = Some(text.into());
    }
    e.fault = Some(Box::new(Fault::from_legacy_text(&e)));
    e
}

pub(crate) fn balancer(at_s: f64, kind: Kind, node: &str) -> Event {
    let mut e = Event::new(ns(at_s), "balancer", kind);
    e.node = Some(node.into());
    e.region = Some(node.trim_end_matches(char::is_numeric).into());
    e
}

pub(crate) fn deferred(at_s: f64, seq: u32, domain: &str) -> Event {
    let mut e = Event::new(ns(at_s), format!("r.{seq}"), Kind::Deferred);
    e.rcpt = Some(format!("u{seq}@{domain}"));
    e.code = Some(554);
    e.text = Some("5.7.1 Client host blocked".into());
    e
}

/// 10 messages a second for the whole 30 s window through node `west1` to gmail, each
/// received after `delay(intended)` seconds (`None`: never); `seq` from 1.
pub(crate) fn traffic(delay: impl Fn(f64) -> Option<f64>) -> Vec<Event> {
    (0..300)
        .flat_map(|k| {
            let t = f64::from(k) / 10.0;
            let rx: Vec<f64> = delay(t).map(|d| t + d).into_iter().collect();
            msg(k + 1, t, "west1", "gmail.test", &rx)
        })
        .collect()
}

pub(crate) fn spooled(events: &[Event], ids: &[u32]) -> Vec<Spooled> {
    ids.iter()
        .map(|i| Spooled {
            msg_id: format!("r.{i}"),
            rcpt: events
                .iter()
                .find(|e| e.id == format!("r.{i}"))
                .and_then(|e| e.rcpt.clone())
                .unwrap(),
            node: "east1".into(),
            node_alive: true,
        })
        .collect()
}

pub(crate) fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-6)
}

/// kill region/east at 10 s (balancer evicts east1 at 10.3 s, east2 at 10.5 s); mail
/// intended 10–13 s takes 3 s (over the 1 s SLO); restore at 20 s, east1 admitted at 20.8 s.
pub(crate) fn region_kill_run() -> (Vec<Event>, Analysis) {
    let mut ev = traffic(|t| Some(if (10.0..13.0).contains(&t) { 3.0 } else { 0.1 }));
    // A duplicate receipt inside the window and one after it.
    ev.extend(msg(1001, 15.05, "west1", "gmail.test", &[15.1, 15.2]));
    ev.extend(msg(1002, 25.05, "west1", "gmail.test", &[25.1, 25.2]));
    // Owned by east nodes before the kill, never finished, in no spool: lost.
    for k in 0..3 {
        ev.extend(msg(2000 + k, 9.5 + f64::from(k) / 10.0, "east1", "gmail.test", &[]));
    }
    ev.extend(msg(2010, 9.9, "east2", "gmail.test", &[]));
    // Owned by east but accepted *after* the kill, by a restarted node: not this kill's.
    ev.extend(msg(2020, 28.0, "east1", "gmail.test", &[]));
    ev.push(control(10.0, Kind::Fault, "fault.0", "kill region/east"));
    ev.push(balancer(9.0, Kind::Evicted, "east1")); // before the fault: not a reaction
    ev.push(balancer(10.5, Kind::Evicted, "east2"));
    ev.push(balancer(10.3, Kind::Evicted, "east1"));
    ev.push(balancer(10.4, Kind::Evicted, "west1")); // not of the target
    ev.push(control(20.0, Kind::Fault, "fault.1", "restore region/east"));
    ev.push(balancer(20.8, Kind::Admitted, "east1"));
    let a = analyze(&ev, &[], &inputs());
    (ev, a)
}
