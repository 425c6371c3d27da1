//! The traffic generator: an open-loop schedule ([`schedule`]), a message mix ([`message`]) and
//! SMTP submission over reused connections ([`submit`]), spread over healthy MTA nodes
//! ([`balance`]). The node type both of those use, `Target`, is in a private `target` file
//! (re-exported as [`submit::Target`]) so that `balance` and `submit` do not import each other.

pub mod balance;
pub mod deadline;
pub mod message;
pub mod schedule;
pub mod submit;
mod target;
