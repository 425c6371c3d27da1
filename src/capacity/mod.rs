//! `mailsurge capacity SCENARIO` (SPEC §10): the highest rate the scenario's topology carries
//! while its SLO and thresholds hold — found by real runs at constant rates (probes), ramping
//! up and then bisecting ([`search`]) — and what saturated first.
//!
//! Built in steps: the search comes first; the probe runs, bottleneck attribution,
//! `capacity.json` and its report follow.

pub mod probe;
pub mod search;

pub use search::{End, Next, Search, Verdict};
