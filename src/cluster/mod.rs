//! Beyond one machine (SPEC §12): `mailsurge agent` on every host, `mailsurge run --cluster`
//! as the coordinator, meeting on a NATS server — the same engine as the shared queue.
//!
//! - [`plan`]: which agent hosts which generator shards, inbox farms and MTA regions;
//! - [`wire`]: the subjects and messages between them;
//! - [`clock`]: each agent's clock offset and the correction of event times by it;
//! - [`agent`] and [`host`]: an agent, and the parts it runs with the one-host code;
//! - [`outbox`]: an agent's events, batched onto the run's JetStream stream;
//! - [`coordinator`] and [`intake`]: the run, and the streams read back into one run
//!   directory that the one-host renderer reports on.

pub mod agent;
pub mod clock;
pub mod coordinator;
pub mod discovery;
pub mod host;
pub mod intake;
mod lost;
pub mod meter;
pub mod outbox;
pub mod plan;
pub mod wire;

pub use agent::{agent, AgentOptions};
pub use coordinator::{run, Refused};
