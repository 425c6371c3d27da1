//! TLS per hop (SPEC §13): of the messages submitted (generator → MTA) and of those received
//! (MTA → inbox), the share that went over TLS, and the handshake times of the sessions they
//! went over. An event carries `tls` when its hop was encrypted: the session's handshake time
//! in µs on the first message of the session, 0 on the others — so sessions are counted once.

use serde::Serialize;

use super::latency::Dist;
use crate::events::{Event, Kind};

/// Three decimals, as the summary's figures are.
fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One hop's tally.
#[derive(Debug, Default)]
pub struct Hop {
    pub messages: u64,
    pub over_tls: u64,
    /// Handshake times, µs, one per TLS session.
    pub handshakes: Dist,
}

impl Hop {
    fn add(&mut self, tls: Option<u64>) {
        self.messages += 1;
        if let Some(us) = tls {
            self.over_tls += 1;
            if us > 0 {
                self.handshakes.record(Some(us));
            }
        }
    }

    fn summary(&self) -> HopSummary {
        let ms = |q: f64| self.handshakes.quantile_ms(q).map(r3);
        HopSummary {
            share: if self.messages == 0 {
                0.0
            } else {
                r3(self.over_tls as f64 / self.messages as f64)
            },
            messages: self.messages,
            sessions: self.handshakes.finite.len(),
            handshake_p50_ms: ms(0.5),
            handshake_p99_ms: ms(0.99),
        }
    }
}

/// Both hops.
#[derive(Debug, Default)]
pub struct Tally {
    pub submission: Hop,
    pub delivery: Hop,
}

impl Tally {
    pub fn add(&mut self, e: &Event) {
        match e.event {
            Kind::Submitted => self.submission.add(e.tls),
            Kind::Received => self.delivery.add(e.tls),
            _ => {}
        }
    }

    /// The summary's `tls` block; none when no message of the run went over TLS.
    pub fn summary(&self) -> Option<TlsSummary> {
        (self.submission.over_tls + self.delivery.over_tls > 0).then(|| TlsSummary {
            submission: self.submission.summary(),
            delivery: self.delivery.summary(),
        })
    }
}

/// summary.json `tls`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct TlsSummary {
    /// Generator → MTA.
    pub submission: HopSummary,
    /// MTA → inbox.
    pub delivery: HopSummary,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct HopSummary {
    /// Share of the hop's messages that went over TLS (0–1).
    pub share: f64,
    pub messages: u64,
    /// TLS sessions (handshakes) seen.
    pub sessions: u64,
    pub handshake_p50_ms: Option<f64>,
    pub handshake_p99_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_handshakes_per_hop() {
        let mut t = Tally::default();
        let ev = |k: Kind, tls: Option<u64>| {
            let mut e = Event::new(1, "r.1", k);
            e.tls = tls;
            e
        };
        assert!(t.summary().is_none());
        for tls in [Some(2_000), Some(0), Some(0), None] {
            t.add(&ev(Kind::Submitted, tls));
        }
        t.add(&ev(Kind::Received, None));
        t.add(&ev(Kind::Deferred, Some(5)));
        let s = t.summary().unwrap();
        assert_eq!(
            (s.submission.share, s.submission.messages, s.submission.sessions),
            (0.75, 4, 1)
        );
        assert_eq!(s.submission.handshake_p50_ms, Some(2.0));
        assert_eq!((s.delivery.share, s.delivery.sessions), (0.0, 0));
        assert_eq!(s.delivery.handshake_p50_ms, None);
    }
}
