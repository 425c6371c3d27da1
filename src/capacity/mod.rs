//! `mailsurge capacity SCENARIO` (SPEC §10): the highest rate the scenario's topology carries
//! while its SLO and thresholds hold — found by real runs at constant rates (probes), ramping
//! up and then bisecting ([`search`]) — and what saturated first.
//!
//! Built in steps: the search, the probes as real runs and `capacity.json` are here;
//! bottleneck attribution, the capacity report and its chart, and the scenario's `capacity:`
//! gate key follow.

pub mod attribution;
pub mod probe;
pub mod report;
pub mod runner;
pub mod search;

pub use search::{End, Next, Search, Verdict};
