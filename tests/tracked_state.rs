//! SPEC §8: "tracked state ≤ 64 B per message". Open loop never slows the schedule, so when
//! the target falls behind, the generator holds every message the schedule has released and no
//! connection has taken yet; this binary counts the heap that really costs.
//!
//! It installs the counting allocator (`mailsurge::alloc_count`), which counts bytes per
//! thread: tests running in parallel do not disturb each other, and a current-thread runtime
//! puts all of the generator's allocations (scheduler, connections, backlog) on the thread that
//! measures them.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mailsurge::scenario::{Arrival, RateSpec, Traffic};
use mailsurge::traffic::balance::Balancer;
use mailsurge::traffic::message::{Builder, Draft, Mix};
use mailsurge::traffic::schedule::{RateCurve, Schedule};
use mailsurge::traffic::submit::{self, Arrivals, Backlog, Counters, Plan, Target};
use mailsurge::units::Rate;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// SPEC §8's budget.
const BUDGET: f64 = 64.0;
/// Messages held when measuring.
const N: u64 = 100_000;

use mailsurge::alloc_count::{net, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

/// A realistic mix: several domains, tenants, two recipients, lognormal sizes.
fn mix() -> Mix {
    let t: Traffic = serde_norway::from_str(
        "rate: 100/s\n\
         domains: { gmail.test: 40%, yahoo.test: 30%, outlook.test: 30% }\n\
         tenants: 50\n\
         recipients_per_message: 2\n\
         size: { dist: lognormal, median: 12KiB, sigma: 1.0, max: 1MiB }\n",
    )
    .unwrap();
    Mix::new(&t)
}

#[test]
fn backlog_costs_at_most_64_bytes_per_queued_message() {
    let mix = mix();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let backlog = Backlog::default();
    let before = net();
    let d = mix.draft(0, 1_700_000_000_000_000_000, &mut rng);
    assert_eq!(net(), before, "a draft has no heap part");
    backlog.push(d);
    for seq in 1..N {
        backlog.push(mix.draft(seq, 1_700_000_000_000_000_000 + seq * 1_000, &mut rng));
    }
    let per = (net() - before) as f64 / N as f64;
    eprintln!("backlog: {per:.1} bytes per queued message");
    assert!(per <= BUDGET, "{per:.1} bytes per queued message");
    // Nothing was lost by not storing recipients: each message still has its own two.
    let queued = backlog.take_all();
    assert_eq!(queued.len() as u64, N);
    let rcpts: HashSet<Vec<String>> = queued.iter().take(1000).map(|d| mix.recipients(d)).collect();
    assert_eq!(rcpts.len(), 1000);
    assert!(rcpts.iter().all(|r| r.len() == 2));
    assert!(
        std::mem::size_of::<Draft>() * 2 <= BUDGET as usize,
        "even right after the queue doubles"
    );
}

/// The whole generator under overload: the open-loop schedule runs at 150k/s against a server
/// that completes TCP handshakes but never greets, so every connection stalls and every later
/// message waits. Its heap growth, once it holds `N` messages, is the per-message state.
#[test]
fn generator_under_overload_holds_at_most_64_bytes_per_message() {
    // Never accepted: the kernel completes the handshakes, the greeting never comes.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (per, generated) = rt.block_on(async {
        let before = net();
        let start = tokio::time::Instant::now();
        let window = Duration::from_secs(2);
        // No event consumer: a stalled target produces none before the measurement anyway.
        let (events, _) = tokio::sync::mpsc::unbounded_channel();
        let plan = Plan {
            arrivals: Arrivals::Open(Box::new(Schedule::new(
                RateCurve::new(&RateSpec::Constant(Rate(150_000.0)), window),
                Arrival::Poisson,
                7,
            ))),
            mix: mix(),
            builder: Builder::new("overload", 4096),
            seed: 7,
            connections: 4,
            balancer: Balancer::new(
                vec![Target {
                    node: "stalled".into(),
                    region: "-".into(),
                    addr: stalled.local_addr().unwrap(),
                }],
                vec![1.0],
                events.clone(),
            ),
            start_ns: 1_700_000_000_000_000_000,
            start,
            hard_stop: (start + window + Duration::from_secs(5)).into(),
            shard: None,
            tls: Default::default(),
            auth: None,
        };
        let counters = Arc::new(Counters::default());
        // Dropped with the runtime once measured; its stalled connections would wait minutes.
        tokio::spawn(submit::run(plan, events, counters.clone()));
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
            // Counts are per recipient; the mix has two per message.
            let generated = counters.generated.load(Ordering::Relaxed) / 2;
            if generated >= N {
                assert_eq!(counters.accepted.load(Ordering::Relaxed), 0, "the target is stalled");
                return ((net() - before) as f64 / generated as f64, generated);
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the schedule is stuck");
        }
    });
    drop(rt);
    eprintln!("generator under overload: {per:.1} bytes per message ({generated} held)");
    assert!(per <= BUDGET, "{per:.1} bytes per message");
}

/// Measurement keeps a record per recipient, never the events (a soak's millions of messages
/// are measured in one pass over `events.jsonl.zst`). The budget covers the ledger's record,
/// its key (message id and recipient), its steps through the MTA and the map's own slots.
const MEASURE_BUDGET: f64 = 400.0;

#[test]
fn measurement_keeps_at_most_400_bytes_per_recipient() {
    use mailsurge::events::{Event, Kind};
    use mailsurge::measure::{Fold, Inputs};
    let inp = Inputs {
        start_ns: 1_000_000_000_000,
        duration_s: 60.0,
        warmup_s: 0.0,
        slo_ms: 1000.0,
        slo_target: 0.99,
        providers: [("gmail.com".to_string(), "gmail".to_string())].into(),
        thresholds: Vec::new(),
    };
    let n = 100_000u64;
    let mut event_bytes = 0usize;
    let before = net();
    let mut fold = Fold::new(&inp);
    for i in 0..n {
        let t = inp.start_ns + i * 600_000;
        let id = format!("r20261201t1408.{i}");
        let rcpt = Some(format!("user{}@gmail.com", i % 50_000 + i));
        let node = |e: &mut Event| {
            e.node = Some(format!("us-east-{}", i % 2 + 1));
            e.region = Some("us-east".into());
            e.rcpt = rcpt.clone();
        };
        let mut s = Event::new(t + 2_000_000, id.as_str(), Kind::Submitted);
        (s.intended, s.submitted, s.acked) = (Some(t), Some(t + 1_000_000), Some(t + 2_000_000));
        node(&mut s);
        let mut a = Event::new(t + 1_900_000, id.as_str(), Kind::Accepted);
        node(&mut a);
        let mut d = Event::new(t + 20_000_000, id.as_str(), Kind::Delivered);
        node(&mut d);
        d.source_ip = Some("127.0.1.1".into());
        let mut r = Event::new(t + 19_000_000, id.as_str(), Kind::Received);
        r.rcpt = rcpt.clone();
        for e in [s, a, d, r] {
            event_bytes += std::mem::size_of::<Event>() + e.id.len() + 3 * 24;
            fold.add(&e);
        }
    }
    let per = (net() - before) as f64 / n as f64;
    eprintln!(
        "measurement: {per:.0} bytes per recipient (the events themselves: at least {} bytes)",
        event_bytes / n as usize
    );
    assert!(per <= MEASURE_BUDGET, "{per:.1} bytes per recipient");
    assert_eq!(fold.ledger.records.len() as u64, n);
}
