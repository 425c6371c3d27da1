//! The SMTP layer of mailsurge: reply values, the wire codec, the server behind the reference
//! MTA and the mock inboxes, and the client behind the load generator and the MTA's relay.
//!
//! Layering: `reply` and `codec` are pure and know nothing of sockets; `server` (with its
//! private per-connection `session`) and `client` are the only parts that do I/O. The server's
//! policy contract (`policy`) and per-server limits and counters (`shared`) are private files
//! that `server` re-exports, so `session` depends on them and never on `server`.

pub mod client;
pub mod codec;
mod deadline;
mod encode;
mod policy;
pub mod reply;
pub mod sasl;
pub mod server;
mod session;
mod shared;
pub mod stream;

#[cfg(test)]
mod tests;

pub use client::{Client, ClientConfig, ClientError, SendOutcome};
pub use policy::{AuthOffer, StartTls};
pub use reply::Reply;
pub use sasl::Credentials;
pub use server::{listen, serve, Decision, Envelope, Hangup, Limits, Policy, ServerStats, SessionInfo, StatsSnapshot};
pub use stream::{Stream, TlsInfo};
