//! Tests of the SMTP layer that need more than one module: codec properties, the server over
//! loopback sockets, and the client against both our server and scripted fakes.

mod auth;
mod client;
mod codec;
mod server;
mod slow;
mod support;
mod tls;
