//! Chaos (SPEC §2 `chaos:`): faults injected at scenario times into the running system —
//! SIGKILL of MTA nodes or whole regions and their restart on the same spool, provider outages
//! (refuse / blackhole / reset), an IP block of one egress pool at one provider, added latency.
//!
//! One room for all of it, so a new way to run a scenario (a capacity probe with targets down
//! from the start, an agent that executes the actions aimed at what it hosts) finds the whole
//! timeline in one place:
//!
//! - [`action`]: the plan's chaos actions compiled into typed [`Action`]s (target split, block
//!   reply parsed), their chart label and the typed fields their events carry;
//! - [`timeline`]: actions and the ends of their `for:` windows in time order;
//! - [`levers`]: what each step does to the running nodes and inboxes, and the `fault` /
//!   `fault_end` event that records it — so the report's markers and failover metrics come
//!   from the events file like everything else.

pub mod action;
pub mod levers;
pub mod timeline;

pub use action::{compile, Action, Target, DEFAULT_BLOCK_REPLY};
pub use levers::{apply, World};
pub use timeline::{Step, Timeline};
