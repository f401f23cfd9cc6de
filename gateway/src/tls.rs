//! TLS with rustls (the `ring` provider), both ways: the listeners' certificates, chosen by
//! the client's SNI name and swapped on reload ([`listener`]), and the client side for
//! `https://` upstreams ([`upstream`]).
//!
//! This file and the two below it import only `config/`, so the state and the connection
//! pools (which hold what they build) sit above them.

pub(crate) mod listener;
pub(crate) mod upstream;
