//! [`Target`]: one MTA node the generator may submit to.
//!
//! Its own file because both sides of submission need it: the balancer (`balance.rs`) keeps a
//! health view of targets and the connection workers (`submit.rs`) send to them, and `submit.rs`
//! also holds the balancer. Defining it in either would make the two import each other. Its
//! public path stays `crate::traffic::submit::Target` (a re-export).

use std::net::SocketAddr;

/// Where to submit: an MTA node (an agent of a distributed run reports its nodes as these).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub node: String,
    pub region: String,
    pub addr: SocketAddr,
}
