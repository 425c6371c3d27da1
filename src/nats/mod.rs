//! NATS JetStream for the shared queue (`spool: nats`, SPEC §9): the server process the harness
//! runs. The spool backend on top of it lands here too; this module knows nothing of the MTA.

pub mod server;
pub mod stream;

pub use server::{locate, NatsError, NatsServer, ServerInfo};
