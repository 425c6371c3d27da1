//! Failover metrics computed from hand-built runs (see `fixtures`).

use super::fixtures::*;
use super::{recovery, Held};
use crate::events::{Event, Kind};
use crate::measure::{analyze, Point};

#[test]
fn region_kill_detected_at_first_evict_and_recovers() {
    let (_, a) = region_kill_run();
    assert_eq!(a.faults.len(), 2);
    let k = &a.faults[0];
    assert_eq!(
        (k.id.as_str(), k.action.as_str(), k.target.as_str()),
        ("fault.0", "kill", "region/east")
    );
    assert!(close(Some(k.at_s), 10.0), "{}", k.at_s);
    assert!(close(k.detection_s, 0.3), "{:?}", k.detection_s);
    // Intervals 10, 11, 12 miss the SLO (plus the lost mail of 9 s, before the fault); 13–22 comply.
    assert!(close(k.recovery_s, 3.0), "{:?}", k.recovery_s);
    assert!(close(k.end_s, 20.0), "ends at the restore: {:?}", k.end_s);
    assert!(close(Some(k.window_end_s), 20.0), "window extends to the restore");
    assert_eq!(k.delayed, 34, "the 3 s of slow mail, and the 4 east never finished");
    assert_eq!(
        k.lost, 4,
        "east-owned mail accepted before the kill, intended before it"
    );
    assert_eq!(k.duplicates, 1, "only the duplicate intended in the window");
    assert_eq!(k.held.map(|s| s.undelivered), Some(4));
    assert_eq!(k.held.map(|s| s.delivered_after_restore), Some(0));

    let r = &a.faults[1];
    assert_eq!((r.action.as_str(), r.target.as_str()), ("restore", "region/east"));
    assert!(close(r.detection_s, 0.8), "{:?}", r.detection_s);
    // Mail intended at 28 s is in east1 and lost: second 28 is 10 % undelivered, still ≥ 90 %.
    assert!(close(r.recovery_s, 0.0), "{:?}", r.recovery_s);
    assert_eq!((r.delayed, r.duplicates, r.end_s, r.held), (0, 0, None, None));
    assert_eq!(r.lost, 0, "a restore owns no mail, and its window is empty");
}

#[test]
fn dip_that_never_recovers_is_null() {
    // From 25 s on nothing is delivered (queued in a spool, not lost).
    let mut ev = traffic(|t| (t < 25.0).then_some(0.1));
    ev.push(control(24.6, Kind::Fault, "fault.0", "kill node/west1"));
    let stuck: Vec<u32> = (251..=300).collect();
    let spool = spooled(&ev, &stuck);
    let a = analyze(&ev, &spool, &inputs());
    let f = &a.faults[0];
    assert_eq!(f.target, "node/west1");
    assert_eq!(f.detection_s, None, "no eviction recorded");
    assert_eq!(f.recovery_s, None);
    assert!(close(Some(f.window_end_s), 30.0), "to the end of the traffic window");
    assert_eq!(f.delayed, 50);
    assert_eq!(f.lost, 0);
    // Mail west1 accepted before the kill was received (and there is no restore); the queued
    // mail was accepted after it.
    assert_eq!(f.held, Some(Held::default()));
}

#[test]
fn recovery_uses_remaining_intervals_at_the_end() {
    let pt = |i: usize, slo: Option<f64>, n: u64| Point {
        t: i as f64,
        n,
        slo,
        ..Point::default()
    };
    let mut s: Vec<Point> = (0..30).map(|i| pt(i, Some(1.0), 10)).collect();
    for p in &mut s[25..28] {
        p.slo = Some(0.5);
    }
    // Dip 25–27, then 28 and 29 comply: fewer than 10 s left, all of them comply.
    assert_eq!(recovery(&s, 24.5, 0.9), Some(3.5));
    // A dip in the last interval never recovers.
    s[29].slo = Some(0.0);
    assert_eq!(recovery(&s, 24.5, 0.9), None);
    // Empty intervals comply; no dip ⇒ 0 even mid-interval.
    s[29] = pt(29, None, 0);
    assert_eq!(recovery(&s, 3.7, 0.9), Some(0.0));
    assert_eq!(recovery(&s, 30.0, 0.9), None, "after the traffic window");
    // Exactly at the target complies.
    s[5].slo = Some(0.9);
    assert_eq!(recovery(&s, 4.0, 0.9), Some(0.0));
}

#[test]
fn provider_block_detected_by_deferrals() {
    // Every third message goes to comcast; during the block (5–15 s) it takes 2 s.
    let mut ev: Vec<Event> = (0..300)
        .flat_map(|k| {
            let t = f64::from(k) / 10.0;
            let comcast = k % 3 == 0;
            let d = if comcast && (5.0..15.0).contains(&t) { 2.0 } else { 0.1 };
            msg(
                k + 1,
                t,
                "west1",
                if comcast { "comcast.test" } else { "gmail.test" },
                &[t + d],
            )
        })
        .collect();
    ev.push(control(
        5.0,
        Kind::Fault,
        "fault.2",
        "block provider/comcast pool shared for 10s",
    ));
    ev.push(control(
        15.0,
        Kind::FaultEnd,
        "fault.2",
        "end block provider/comcast pool shared",
    ));
    ev.push(deferred(4.0, 40, "comcast.test")); // before the fault
    ev.push(deferred(5.1, 52, "gmail.test")); // another provider
    ev.push(deferred(5.25, 51, "comcast.test")); // by recipient domain
    let mut named = deferred(5.2, 54, "elsewhere.test");
    named.provider = Some("comcast".into()); // by the event's provider field
    ev.push(named);
    let a = analyze(&ev, &[], &inputs());
    let f = &a.faults[0];
    assert_eq!((f.action.as_str(), f.target.as_str()), ("block", "provider/comcast"));
    assert_eq!((f.pool.as_deref(), f.mode.as_deref()), (Some("shared"), None));
    assert!(close(f.detection_s, 0.2), "{:?}", f.detection_s);
    // 3–4 of 10 per second are late: 5–14 miss 90 %, 15 on comply.
    assert!(close(f.recovery_s, 10.0), "{:?}", f.recovery_s);
    assert!(close(f.end_s, 15.0));
    assert_eq!(f.delayed, 33, "comcast mail intended 5.0–14.9 s");
    assert_eq!((f.lost, f.duplicates, f.held), (0, 0, None));

    // A provider block nobody noticed: no deferral after it.
    let quiet: Vec<Event> = ev.iter().filter(|e| e.event != Kind::Deferred).cloned().collect();
    assert_eq!(analyze(&quiet, &[], &inputs()).faults[0].detection_s, None);
}

#[test]
fn stranded_mail_delivered_after_restore() {
    let mut ev = traffic(|_| Some(0.1));
    ev.extend(msg(3001, 8.0, "east1", "gmail.test", &[8.2])); // finished before the kill
    ev.extend(msg(3002, 9.0, "east1", "gmail.test", &[21.0])); // stranded, out after restore
    ev.extend(msg(3003, 9.5, "east1", "gmail.test", &[21.5, 21.6])); // ditto, twice
    ev.extend(msg(3004, 9.6, "east1", "gmail.test", &[15.0])); // out before the restore
    ev.extend(msg(3005, 9.7, "east1", "gmail.test", &[])); // still in the spool at the end
    ev.extend(msg(3006, 9.8, "east1", "gmail.test", &[])); // gone: lost
    ev.extend(msg(3007, 9.9, "east2", "gmail.test", &[])); // another node: not this kill's
    ev.extend(msg(3008, 9.9, "east1", "gmail.test", &[]));
    let mut bounce = Event::new(ns(22.0), "r.3008", Kind::Bounced); // finished, not delivered
    bounce.rcpt = Some("u3008@gmail.test".into());
    ev.push(bounce);
    ev.push(control(10.0, Kind::Fault, "fault.0", "kill node/east1"));
    ev.push(control(20.0, Kind::Fault, "fault.1", "restore node/east1"));
    ev.push(balancer(10.25, Kind::Evicted, "east1"));
    let spool = spooled(&ev, &[3005, 3007]);
    let a = analyze(&ev, &spool, &inputs());
    let f = &a.faults[0];
    assert!(close(f.detection_s, 0.25));
    assert_eq!(
        f.held,
        Some(Held {
            delivered_after_restore: 2,
            undelivered: 2
        })
    );
    assert_eq!(f.lost, 1, "r.3006, owned by the killed node");
    assert_eq!(f.duplicates, 1, "r.3003: held by the killed node, delivered twice");
    assert!(close(f.end_s, 20.0));
}

/// A node's hold on a shared-queue message: `leased` / `taken_over` / `deferred` / `delivered`
/// by `node` at `at_s`.
fn held_by(at_s: f64, seq: u32, kind: Kind, node: &str) -> Event {
    let mut e = Event::new(ns(at_s), format!("r.{seq}"), kind);
    e.rcpt = Some(format!("u{seq}@gmail.test"));
    e.node = Some(node.into());
    e.region = Some(node.trim_end_matches(char::is_numeric).into());
    e
}

#[test]
fn shared_queue_takeover_is_the_last_pick_up_of_what_the_killed_node_held() {
    let mut ev = traffic(|_| Some(0.1));
    // 3001: leased by east1 before the kill; west1 takes it over 5.2 s after.
    ev.extend(msg(3001, 9.0, "east1", "gmail.test", &[15.3]));
    ev.push(held_by(9.5, 3001, Kind::Leased, "east1"));
    ev.push(held_by(15.2, 3001, Kind::TakenOver, "west1"));
    ev.push(held_by(15.3, 3001, Kind::Delivered, "west1"));
    // 3002: east1's `leased` line died with it; west1's takeover at 15.4 s says it was held.
    ev.extend(msg(3002, 9.9, "west1", "gmail.test", &[15.5]));
    ev.push(held_by(15.4, 3002, Kind::TakenOver, "west1"));
    ev.push(held_by(15.5, 3002, Kind::Delivered, "west1"));
    // 3003: east1 deferred it before the kill (back in the queue); west1's later plain lease
    // is its retry, not a takeover.
    ev.extend(msg(3003, 8.0, "east1", "gmail.test", &[12.1]));
    ev.push(held_by(8.9, 3003, Kind::Leased, "east1"));
    ev.push(held_by(9.0, 3003, Kind::Deferred, "east1"));
    ev.push(held_by(12.0, 3003, Kind::Leased, "west1"));
    ev.push(held_by(12.1, 3003, Kind::Delivered, "west1"));
    // 3004: held by the survivor at the kill: not the kill's.
    ev.extend(msg(3004, 9.8, "east1", "gmail.test", &[10.2]));
    ev.push(held_by(9.85, 3004, Kind::Leased, "west1"));
    ev.push(held_by(10.2, 3004, Kind::Delivered, "west1"));
    // 3006: delivered by east1 just before the kill, its `delivered` line lost with it, and
    // acknowledged: nothing to take over.
    ev.extend(msg(3006, 9.7, "east1", "gmail.test", &[9.95]));
    ev.push(held_by(9.75, 3006, Kind::Leased, "east1"));
    ev.push(control(10.0, Kind::Fault, "fault.0", "kill node/east1"));
    let a = analyze(&ev, &[], &inputs());
    let k = &a.faults[0];
    assert!(close(k.takeover_s, 5.4), "{:?}", k.takeover_s);
    assert_eq!(
        k.held,
        Some(Held::default()),
        "both held were delivered, neither after a restore"
    );
    assert_eq!(k.delayed, 2, "the two held messages waited out the lease");

    // One more held, never picked up: no takeover time, and it is held undelivered.
    ev.extend(msg(3005, 9.6, "east1", "gmail.test", &[]));
    ev.push(held_by(9.7, 3005, Kind::Leased, "east1"));
    let a = analyze(&ev, &[], &inputs());
    let k = &a.faults[0];
    assert_eq!(k.takeover_s, None);
    assert_eq!(k.held.map(|h| h.undelivered), Some(1));

    // A local-spool run has no leases and no takeover figure.
    let (_, a) = region_kill_run();
    assert_eq!(a.faults[0].takeover_s, None);
}
