//! Failover metrics per chaos action (SPEC §5 "Failover metrics per chaos action", summary.json
//! `faults`, SPEC §6), computed from the run's events alone like every other number.
//!
//! The orchestrator records each chaos action as a `fault` control event (`id` `fault.<n>`,
//! `text` such as `kill region/us-east`, `block provider/comcast pool shared`) and the end of a
//! `for:` window as a `fault_end` with the same id; the generator's balancer records `evicted` /
//! `admitted` per node. Where SPEC §5 is silent the definitions below are ours:
//!
//! - **detection** (`detection_s`): fault → the first evidence that the system reacted, at or
//!   after the fault; `None` if there never was any.
//!   - `kill` (or any other action) of `region/R` / `node/N`: the first `evicted` of a node of the
//!     target (the balancer stopped sending there).
//!   - `kill` / `block` / `latency` of `provider/P`: the first `deferred` for P (the event's
//!     `provider`, else the recipient domain's provider) — any deferral after the fault counts as
//!     the MTA noticing.
//!   - `restore region/R` / `restore node/N`: the first `admitted` of a node of the target;
//!     `restore provider/P`: the first `received` at P.
//! - **recovery** (`recovery_s`): fault → start of the first run of 10 consecutive 1 s intervals
//!   (by intended time, the run's per-second series) whose SLO compliance is ≥ the target
//!   (1e-9 tolerance), searching from the interval that contains the fault. An interval with no
//!   eligible messages complies. If the first 10 intervals already comply (compliance never
//!   dipped) it is 0; a run starting in the fault's own interval counts from the fault, so never
//!   below 0. With fewer than 10 intervals left before the end of the traffic window, the run is
//!   the remaining intervals, which must all comply. `None` if compliance never came back, or if
//!   the fault happened after the traffic window (no intended-time interval to judge by). A dip
//!   that starts only after 10 compliant seconds is not attributed to the fault.
//! - **window**: intended times in `[fault, fault + recovery_s)`; to the end of the traffic
//!   window if `recovery_s` is `None`; and at least until the action's end — its `fault_end`, or
//!   for an action without one the first later `restore` of the same target (for a killed node,
//!   also a `restore` of its region).
//! - For a `provider/X` target every count below covers mail to that provider only.
//! - **delayed**: eligible recipients delivered later than the SLO (delivery time from intended
//!   time > `slo.delivery_time`) or not at all, that were intended in the window or — for a
//!   `kill` — held unfinished by a killed node when it died.
//! - **lost**: recipients of class `lost` intended in the window, plus — for a `kill` of a region
//!   or node — `lost` recipients owned by (first accepted by) a node of the target before the
//!   kill, whichever their intended time. Each is counted once per action; a recipient owned by
//!   a node killed twice is attributed to the first kill after its acceptance.
//! - **duplicates**: extra receipts (receipts − 1) of recipients intended in the window or —
//!   for a `kill` — accepted by a killed node before it died (delivered, but not yet struck
//!   from its spool, so the restarted node delivers them again).
//! - **stranded** (`kill` of a region or node only): recipients accepted by a node of the target
//!   before the kill (and after any earlier kill of that node) with no terminal event
//!   (`delivered`, `received`, `bounced`, `expired`, `dropped`) before the kill, first received
//!   only after the matching `restore` — the killed region's stranded mail delivered after
//!   restore. **stranded_undelivered**: the same recipients that never got a receipt nor any
//!   terminal event (still queued in a spool, or lost).

use std::collections::HashMap;

use super::accounting::{Class, Ledger};
use super::{Inputs, Point};
use crate::events::{Event, Kind};

const NS: f64 = 1e9;

/// Consecutive compliant seconds that make a recovery.
pub const RECOVERY_RUN_S: usize = 10;

/// The failover metrics of one chaos action.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultMetrics {
    /// `fault.<n>`, the id of its control events.
    pub id: String,
    /// Seconds since the run's offset 0 (`Inputs.start_ns`).
    pub at_s: f64,
    /// `kill`, `restore`, `block`, `latency` (first word of the event text).
    pub action: String,
    /// `region/<name>`, `node/<name>` or `provider/<name>`.
    pub target: String,
    /// `refuse` / `blackhole` / `reset` of a provider kill.
    pub mode: Option<String>,
    /// Egress pool of a `block`.
    pub pool: Option<String>,
    /// Added latency of a `latency` action, as written (`500ms`).
    pub add: Option<String>,
    /// MX host (1-based) of a provider kill.
    pub mx: Option<u32>,
    /// When the action ended: its `fault_end`, or the matching `restore` (seconds since offset 0).
    pub end_s: Option<f64>,
    pub detection_s: Option<f64>,
    pub recovery_s: Option<f64>,
    /// End of the window the counts cover, seconds since offset 0 (intended time).
    pub window_end_s: f64,
    pub delayed: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// `kill` of a region or node only.
    pub stranded: Option<Stranded>,
}

/// Mail in a killed node's spool at the kill.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stranded {
    /// First received only after the matching `restore`.
    pub delivered_after_restore: u64,
    /// Never received and no terminal event at all (queued or lost at the end).
    pub undelivered: u64,
}

/// What a chaos action acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Region(String),
    Node(String),
    Provider(String),
    Other,
}

impl Target {
    fn parse(s: &str) -> Target {
        match s.split_once('/') {
            Some(("region", n)) => Target::Region(n.to_string()),
            Some(("node", n)) => Target::Node(n.to_string()),
            Some(("provider", n)) => Target::Provider(n.to_string()),
            _ => Target::Other,
        }
    }

    fn is_mta(&self) -> bool {
        matches!(self, Target::Region(_) | Target::Node(_))
    }
}

/// A `fault` event taken apart.
#[derive(Debug, Clone)]
struct Action<'a> {
    ev: &'a Event,
    action: String,
    target_text: String,
    target: Target,
    mode: Option<String>,
    pool: Option<String>,
    add: Option<String>,
    mx: Option<u32>,
}

/// Parses `text` (`kill provider/yahoo mode refuse`, `kill provider/yahoo mx2 refuse`,
/// `block provider/comcast pool shared`, `latency provider/gmail add 500ms` or `… +500ms`);
/// without a target in the text, the event's `node` / `provider` / `region` name it.
fn parse_action(e: &Event) -> Action<'_> {
    let words: Vec<&str> = e.text.as_deref().unwrap_or("").split_whitespace().collect();
    let action = words
        .first()
        .map_or_else(|| "fault".to_string(), |w| w.to_ascii_lowercase());
    let target_text = match words.get(1).filter(|w| w.contains('/')) {
        Some(t) => t.to_string(),
        None => {
            if let Some(n) = &e.node {
                format!("node/{n}")
            } else if let Some(p) = &e.provider {
                format!("provider/{p}")
            } else if let Some(r) = &e.region {
                format!("region/{r}")
            } else {
                String::new()
            }
        }
    };
    let mut a = Action {
        ev: e,
        action,
        target: Target::parse(&target_text),
        target_text,
        mode: None,
        pool: None,
        add: None,
        mx: None,
    };
    let mut rest = words.iter().skip(2).copied();
    while let Some(w) = rest.next() {
        match w {
            "mode" => a.mode = rest.next().map(str::to_string),
            "pool" => a.pool = rest.next().map(str::to_string),
            "add" => a.add = rest.next().map(str::to_string),
            "mx" => a.mx = rest.next().and_then(|n| n.parse().ok()),
            "for" => {
                rest.next();
            }
            "refuse" | "blackhole" | "reset" => a.mode = Some(w.to_string()),
            _ => {
                if let Some(d) = w.strip_prefix('+') {
                    a.add = Some(d.to_string());
                } else if let Some(n) = w.strip_prefix("mx").and_then(|n| n.parse().ok()) {
                    a.mx = Some(n);
                }
            }
        }
    }
    a
}

/// Per (id, rcpt): acceptances and the first terminal event, from the message events.
#[derive(Default)]
struct Trail<'a> {
    /// (time, node, region) of every `accepted`.
    accepts: Vec<(u64, Option<&'a str>, Option<&'a str>)>,
    /// First `delivered`, `received`, `bounced`, `expired` or `dropped`.
    first_terminal: Option<u64>,
}

/// Everything the per-action computations look up.
struct Ctx<'a> {
    inp: &'a Inputs,
    /// Node → region, from any event naming both.
    node_region: HashMap<&'a str, &'a str>,
    /// Message and balancer events, sorted by time.
    sorted: Vec<&'a Event>,
}

impl<'a> Ctx<'a> {
    /// Whether a node (or an event's region) belongs to an MTA target.
    fn covers(&self, target: &Target, node: Option<&str>, region: Option<&str>) -> bool {
        match target {
            Target::Node(n) => node == Some(n.as_str()),
            Target::Region(r) => {
                region == Some(r.as_str()) || node.and_then(|n| self.node_region.get(n)) == Some(&r.as_str())
            }
            _ => false,
        }
    }

    /// The event's provider, else its recipient domain's.
    fn provider_of<'e>(&'e self, e: &'e Event) -> Option<&'e str> {
        e.provider
            .as_deref()
            .or_else(|| self.inp.provider_of(e.rcpt.as_deref()?))
    }

    fn first_after(&self, t: u64, f: impl Fn(&Event) -> bool) -> Option<u64> {
        let from = self.sorted.partition_point(|e| e.t < t);
        self.sorted[from..].iter().find(|e| f(e)).map(|e| e.t)
    }

    fn offset_s(&self, t: u64) -> f64 {
        (i128::from(t) - i128::from(self.inp.start_ns)) as f64 / NS
    }
}

/// The failover metrics of every chaos action of the run, in time order. `series` is the run's
/// overall per-second series by intended time (`Analysis.series`).
pub fn fault_metrics(events: &[Event], ledger: &Ledger, series: &[Point], inp: &Inputs) -> Vec<FaultMetrics> {
    let mut faults: Vec<Action<'_>> = events
        .iter()
        .filter(|e| e.event == Kind::Fault)
        .map(parse_action)
        .collect();
    if faults.is_empty() {
        return Vec::new();
    }
    faults.sort_by_key(|a| a.ev.t);
    let mut sorted: Vec<&Event> = events
        .iter()
        .filter(|e| !matches!(e.event, Kind::Fault | Kind::FaultEnd))
        .collect();
    sorted.sort_by_key(|e| e.t);
    let mut node_region = HashMap::new();
    for e in events {
        if let (Some(n), Some(r)) = (&e.node, &e.region) {
            node_region.entry(n.as_str()).or_insert(r.as_str());
        }
    }
    let cx = Ctx {
        inp,
        node_region,
        sorted,
    };
    let mut trails: HashMap<(&str, &str), Trail<'_>> = HashMap::new();
    for e in events.iter().filter(|e| !e.event.is_control()) {
        let key = (e.id.as_str(), e.rcpt.as_deref().unwrap_or(""));
        match e.event {
            Kind::Accepted => {
                let accept = (e.t, e.node.as_deref(), e.region.as_deref());
                trails.entry(key).or_default().accepts.push(accept);
            }
            Kind::Delivered | Kind::Received | Kind::Bounced | Kind::Expired | Kind::Dropped => {
                let t = &mut trails.entry(key).or_default().first_terminal;
                *t = Some(t.map_or(e.t, |f| f.min(e.t)));
            }
            _ => {}
        }
    }
    let kills: Vec<usize> = (0..faults.len())
        .filter(|&i| faults[i].action == "kill" && faults[i].target.is_mta())
        .collect();
    // The kill a node's acceptance at `t` falls to: the first kill of that node after it.
    let kill_of = |node: Option<&str>, region: Option<&str>, t: u64| -> Option<usize> {
        kills
            .iter()
            .copied()
            .find(|&k| faults[k].ev.t > t && cx.covers(&faults[k].target, node, region))
    };
    let mut ends: HashMap<&str, u64> = HashMap::new();
    for e in events.iter().filter(|e| e.event == Kind::FaultEnd) {
        let t = ends.entry(e.id.as_str()).or_insert(e.t);
        *t = (*t).min(e.t);
    }
    let traffic_end = inp.start_ns + (inp.duration_s.max(0.0) * NS) as u64;
    let slo_us = (inp.slo_ms * 1000.0) as u64;

    let mut out = Vec::with_capacity(faults.len());
    for (i, a) in faults.iter().enumerate() {
        let t0 = a.ev.t;
        let fault_end = ends.get(a.ev.id.as_str()).copied().filter(|&t| t >= t0);
        let restore = if a.action == "restore" {
            None
        } else {
            faults[i + 1..]
                .iter()
                .find(|r| {
                    r.action == "restore"
                        && (r.target_text == a.target_text
                            || match (&a.target, &r.target) {
                                (Target::Node(n), Target::Region(_)) => cx.covers(&r.target, Some(n), None),
                                _ => false,
                            })
                })
                .map(|r| r.ev.t)
        };
        let end = fault_end.or(restore);

        let detection = match (&a.target, a.action.as_str()) {
            (t, "restore") if t.is_mta() => cx.first_after(t0, |e| {
                e.event == Kind::Admitted && cx.covers(t, e.node.as_deref(), e.region.as_deref())
            }),
            (Target::Provider(p), "restore") => cx.first_after(t0, |e| {
                e.event == Kind::Received && cx.provider_of(e) == Some(p.as_str())
            }),
            (t, _) if t.is_mta() => cx.first_after(t0, |e| {
                e.event == Kind::Evicted && cx.covers(t, e.node.as_deref(), e.region.as_deref())
            }),
            (Target::Provider(p), _) => cx.first_after(t0, |e| {
                e.event == Kind::Deferred && cx.provider_of(e) == Some(p.as_str())
            }),
            _ => None,
        };

        let at_s = cx.offset_s(t0);
        let recovery_s = recovery(series, at_s, inp.slo_target);
        let mut w_end = match recovery_s {
            Some(r) => t0 + (r * NS).round() as u64,
            None => traffic_end.max(t0),
        };
        if let Some(e) = end {
            w_end = w_end.max(e);
        }

        let is_kill = a.action == "kill" && a.target.is_mta();
        let (mut delayed, mut lost, mut duplicates) = (0, 0, 0);
        let mut stranded = is_kill.then(Stranded::default);
        for ((id, rcpt), r) in ledger.generated() {
            // A provider's fault is about that provider's mail only; faults overlap in time,
            // and another provider's trouble in the same window is not this one's.
            if let Target::Provider(p) = &a.target {
                if inp.provider_of(rcpt) != Some(p.as_str()) {
                    continue;
                }
            }
            let in_window = r.intended.is_some_and(|t| t >= t0 && t < w_end);
            let trail = trails.get(&(id.as_str(), rcpt.as_str()));
            // A killed node's own mail is the fault's too, whenever it was intended: what it
            // had not finished is delayed until the restore, and what it had delivered but not
            // yet struck from its spool is delivered again (a duplicate).
            let held = is_kill
                && trail.is_some_and(|tr| {
                    tr.accepts
                        .iter()
                        .any(|&(t, n, reg)| t < t0 && kill_of(n, reg, t) == Some(i))
                });
            let unfinished = held && trail.is_none_or(|tr| tr.first_terminal.is_none_or(|t| t >= t0));
            if (in_window || unfinished) && r.eligible() && r.delivery_us().is_none_or(|us| us > slo_us) {
                delayed += 1;
            }
            if in_window || held {
                duplicates += u64::from(r.receipts.saturating_sub(1));
            }
            let class = r.class();
            if !is_kill {
                lost += u64::from(in_window && class == Class::Lost);
                continue;
            }
            // Owned: first accepted by a node this kill was the first to hit after that.
            let owned = class == Class::Lost
                && trail
                    .and_then(|tr| tr.accepts.iter().min_by_key(|(t, _, _)| *t))
                    .is_some_and(|&(t, n, reg)| {
                        let node = n.or(r.node.as_deref());
                        kill_of(node, reg.or(r.region.as_deref()), t) == Some(i)
                    });
            lost += u64::from((in_window && class == Class::Lost) || owned);
            // Stranded: accepted by a node of the target, killed before it finished with it.
            let Some(tr) = trail else { continue };
            if !unfinished {
                continue;
            }
            let s = stranded.as_mut().expect("kill");
            match r.first_received {
                Some(rx) if restore.is_some_and(|rs| rx >= rs) => s.delivered_after_restore += 1,
                Some(_) => {}
                None if tr.first_terminal.is_none() => s.undelivered += 1,
                None => {}
            }
        }
        out.push(FaultMetrics {
            id: a.ev.id.clone(),
            at_s,
            action: a.action.clone(),
            target: a.target_text.clone(),
            mode: a.mode.clone(),
            pool: a.pool.clone(),
            add: a.add.clone(),
            mx: a.mx,
            end_s: end.map(|t| cx.offset_s(t)),
            detection_s: detection.map(|t| t.saturating_sub(t0) as f64 / NS),
            recovery_s,
            window_end_s: cx.offset_s(w_end),
            delayed,
            lost,
            duplicates,
            stranded,
        });
    }
    out
}

/// Whether an interval of the per-second series meets the SLO target (empty ones do).
fn complies(p: &Point, target: f64) -> bool {
    p.n == 0 || p.slo.is_none_or(|s| s >= target - 1e-9)
}

/// Seconds from the fault (at `fault_s`) to the start of the first run of
/// [`RECOVERY_RUN_S`] compliant intervals (fewer at the end of the series, all of the rest),
/// searching from the interval containing the fault. See the module doc.
pub fn recovery(series: &[Point], fault_s: f64, target: f64) -> Option<f64> {
    let n = series.len();
    let first = fault_s.max(0.0).floor();
    if first >= n as f64 {
        return None;
    }
    let first = first as usize;
    (first..n)
        .find(|&s| series[s..n.min(s + RECOVERY_RUN_S)].iter().all(|p| complies(p, target)))
        .map(|s| (series[s].t - fault_s).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{analyze, Analysis, Spooled};

    /// Offset 0 of the test runs (not the epoch, so offsets are really subtracted).
    const START: u64 = 1_000 * 1_000_000_000;

    fn ns(s: f64) -> u64 {
        START + (s * NS).round() as u64
    }

    fn inputs() -> Inputs {
        Inputs {
            start_ns: START,
            duration_s: 30.0,
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
    fn msg(seq: u32, intended_s: f64, node: &str, domain: &str, receipts: &[f64]) -> Vec<Event> {
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

    fn control(at_s: f64, kind: Kind, id: &str, text: &str) -> Event {
        let mut e = Event::new(ns(at_s), id, kind);
        if !text.is_empty() {
            e.text = Some(text.into());
        }
        e
    }

    fn balancer(at_s: f64, kind: Kind, node: &str) -> Event {
        let mut e = Event::new(ns(at_s), "balancer", kind);
        e.node = Some(node.into());
        e.region = Some(node.trim_end_matches(char::is_numeric).into());
        e
    }

    fn deferred(at_s: f64, seq: u32, domain: &str) -> Event {
        let mut e = Event::new(ns(at_s), format!("r.{seq}"), Kind::Deferred);
        e.rcpt = Some(format!("u{seq}@{domain}"));
        e.code = Some(554);
        e.text = Some("5.7.1 Client host blocked".into());
        e
    }

    /// 10 messages a second for the whole 30 s window through node `west1` to gmail, each
    /// received after `delay(intended)` seconds (`None`: never); `seq` from 1.
    fn traffic(delay: impl Fn(f64) -> Option<f64>) -> Vec<Event> {
        (0..300)
            .flat_map(|k| {
                let t = f64::from(k) / 10.0;
                let rx: Vec<f64> = delay(t).map(|d| t + d).into_iter().collect();
                msg(k + 1, t, "west1", "gmail.test", &rx)
            })
            .collect()
    }

    fn spooled(events: &[Event], ids: &[u32]) -> Vec<Spooled> {
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

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-6)
    }

    /// kill region/east at 10 s (balancer evicts east1 at 10.3 s, east2 at 10.5 s); mail
    /// intended 10–13 s takes 3 s (over the 1 s SLO); restore at 20 s, east1 admitted at 20.8 s.
    fn region_kill_run() -> (Vec<Event>, Analysis) {
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
        assert_eq!(k.stranded.map(|s| s.undelivered), Some(4));
        assert_eq!(k.stranded.map(|s| s.delivered_after_restore), Some(0));

        let r = &a.faults[1];
        assert_eq!((r.action.as_str(), r.target.as_str()), ("restore", "region/east"));
        assert!(close(r.detection_s, 0.8), "{:?}", r.detection_s);
        // Mail intended at 28 s is in east1 and lost: second 28 is 10 % undelivered, still ≥ 90 %.
        assert!(close(r.recovery_s, 0.0), "{:?}", r.recovery_s);
        assert_eq!((r.delayed, r.duplicates, r.end_s, r.stranded), (0, 0, None, None));
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
        assert_eq!(f.stranded, Some(Stranded::default()));
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
        assert_eq!((f.lost, f.duplicates, f.stranded), (0, 0, None));

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
            f.stranded,
            Some(Stranded {
                delivered_after_restore: 2,
                undelivered: 2
            })
        );
        assert_eq!(f.lost, 1, "r.3006, owned by the killed node");
        assert_eq!(f.duplicates, 1, "r.3003: held by the killed node, delivered twice");
        assert!(close(f.end_s, 20.0));
    }

    #[test]
    fn action_text_parameters() {
        let p = |text: &str| {
            let e = control(1.0, Kind::Fault, "fault.0", text);
            let a = parse_action(&e);
            (a.action, a.target_text, a.mode, a.pool, a.add, a.mx)
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
        let mut bare = Event::new(ns(1.0), "fault.3", Kind::Fault);
        bare.node = Some("us-east-1".into());
        bare.region = Some("us-east".into());
        let a = parse_action(&bare);
        assert_eq!(
            (a.action.as_str(), a.target),
            ("fault", Target::Node("us-east-1".into()))
        );
    }

    #[test]
    fn summary_with_faults_validates_against_the_schema() {
        let (_, a) = region_kill_run();
        let info = crate::report::RunInfo {
            name: "faults".into(),
            start_ns: START,
            seed: 7,
            run_id: "faults-1".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            wall_s: 31.0,
            slo_ms: 1000.0,
            slo_target: 0.9,
        };
        let summary = crate::report::Summary::new(&info, &a);
        let v = serde_json::to_value(&summary).unwrap();
        let faults = v["faults"].as_array().unwrap();
        assert_eq!(faults.len(), 2);
        let k = &faults[0];
        for key in [
            "at_s",
            "action",
            "target",
            "detection_s",
            "recovery_s",
            "delayed",
            "lost",
            "duplicates",
        ] {
            assert!(k.get(key).is_some(), "faults[0] lacks {key}");
        }
        assert_eq!(k["at_s"], 10.0);
        assert_eq!(k["detection_s"], 0.3);
        assert_eq!(k["recovery_s"], 3.0);
        assert_eq!(
            (k["stranded"].as_u64(), k["stranded_undelivered"].as_u64()),
            (Some(0), Some(4))
        );
        assert!(faults[1].get("stranded").is_none(), "restore has no stranded");

        // null detection/recovery are written as null, not left out.
        let mut never = summary.clone();
        never.faults[0].detection_s = None;
        never.faults[0].recovery_s = None;
        let never = serde_json::to_value(&never).unwrap();
        assert!(never["faults"][0]["detection_s"].is_null() && never["faults"][0]["recovery_s"].is_null());

        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/summary.v1.schema.json");
        let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).expect("schema compiles");
        for doc in [&v, &never] {
            let errors: Vec<String> = validator
                .iter_errors(doc)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "summary.json violates the schema: {errors:#?}");
        }
        // Round trip (compare reads summaries back).
        let back: crate::report::Summary = serde_json::from_value(v).unwrap();
        assert_eq!(back.faults[0].stranded_undelivered, Some(4));

        let md = crate::report::markdown::render(&summary, &[]);
        assert!(md.contains("## Faults"), "{md}");
        assert!(
            md.contains("| 10.0 s | kill | region/east | 0.300 s | 3.000 s | 34 | 4 | 1 | 0 delivered after restore, 4 undelivered |"),
            "{md}"
        );
        assert!(
            md.contains("| 20.0 s | restore | region/east | 0.800 s | 0.000 s | 0 | 0 | 0 | — |"),
            "{md}"
        );
    }
}
