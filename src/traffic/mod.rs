//! The traffic generator: an open-loop schedule ([`schedule`]), a message mix ([`message`]) and
//! SMTP submission over reused connections ([`submit`]), spread over healthy MTA nodes
//! ([`balance`]).

pub mod balance;
pub mod message;
pub mod schedule;
pub mod submit;
