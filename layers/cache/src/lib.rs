//! Multi-level read-through caching tower layer: per-core L1, shared L2, optional Redis L3.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod cache_control;
pub mod config;
mod entry;
mod flight;
pub mod future;
#[cfg(any(fuzzing, feature = "fuzzing"))]
pub mod fuzzing;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod l1;
pub mod layer;
pub mod policy;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod service;
mod stats;
mod tiers;

pub use config::CacheConfig;
pub use layer::{CacheHandle, CacheLayer};
pub use policy::{CachePolicy, CachePolicyFor, Cacheability, FnPolicy, Freshness};
pub use service::Cache;
pub use stats::CacheStats;
