//! # tollgate
//!
//! Composable [tower](https://docs.rs/tower) layers that keep services alive under load and
//! failure. Each layer is its own crate, re-exported here behind a feature of the same name:
//!
//! | feature | crate | what it does |
//! |---|---|---|
//! | `breaker` | [`tollgate-breaker`](breaker) | circuit breaking over count and time windows |
//!
//! Default features are empty; `full` enables every layer.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use tollgate_core as core;

/// The reference gateway behind the `tollgate` binary (a many-core HTTP reverse proxy).
pub mod gateway;
