//! Counters on the request path: sharded per core so that workers never share a cache line,
//! summed only when `/metrics` or `/state` is read.

use super::histogram::{ByClass, Histogram};
use serde::Serialize;
use std::sync::OnceLock;
use tokio::time::Instant;
use tollgate_core::counter::ShardedCounter;

/// Process-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Requests received (routed or not).
    pub requests: ShardedCounter,
    /// Responses by class: index 0 = 1xx ... 4 = 5xx.
    pub responses: [ShardedCounter; 5],
    /// Requests whose response head is not yet sent.
    pub in_flight: ShardedCounter,
    /// Client connections open now.
    pub connections_open: ShardedCounter,
    /// Client connections accepted.
    pub connections_total: ShardedCounter,
    /// Client connections closed for sending their head too slowly or idling.
    pub connections_timed_out: ShardedCounter,
    /// Idle HTTP/1.1 client connections parked now (open, buffers freed).
    pub connections_parked: ShardedCounter,
    /// Client connections sent GOAWAY (or closed) for abandoning too many requests in flight.
    pub connections_over_budget: ShardedCounter,
    /// Connections upgraded (WebSocket and other `101` upgrades) and tunnelled.
    pub upgrades_total: ShardedCounter,
    /// Upgraded connections tunnelled now.
    pub upgrades_open: ShardedCounter,
    /// Upstream connect failures (502) and connect timeouts (504).
    pub upstream_connect_errors: ShardedCounter,
    /// Upstream response-head timeouts (504).
    pub upstream_timeouts: ShardedCounter,
    /// Upstream resets or protocol errors (502).
    pub upstream_resets: ShardedCounter,
    /// Requests with no route (404) or method not allowed (405).
    pub unrouted: ShardedCounter,
    /// Requests refused for their body size (413).
    pub body_too_large: ShardedCounter,
    /// Requests refused by a layer: admission, a breaker, a pool limit (503/429/504).
    pub rejected: ShardedCounter,
    /// Time to response head by status class, every request (routed or not).
    pub duration: ByClass,
    /// Config reloads applied.
    pub reloads_ok: ShardedCounter,
    /// Config reloads rejected.
    pub reloads_failed: ShardedCounter,
}

impl Stats {
    /// Counts a response status.
    pub(crate) fn response(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.responses[class].incr();
    }
}

/// Counters of one cluster; kept across reloads while the cluster keeps its name.
#[derive(Debug, Default)]
pub(crate) struct ClusterStats {
    /// Requests sent to the cluster.
    pub requests: ShardedCounter,
    /// Requests that failed upstream (error mapped to 502/504) or got a 5xx.
    pub failures: ShardedCounter,
    /// Requests in flight to the cluster.
    pub in_flight: ShardedCounter,
}

/// Figures of one route; kept across reloads while the route keeps its key, dropped (with
/// their metric series) when a reload removes the route.
#[derive(Debug, Default)]
pub(crate) struct RouteStats {
    /// Time to response head by status class.
    pub latency: ByClass,
    /// Requests refused by a layer on the way (admission, breaker, pool limit).
    pub rejected: ShardedCounter,
}

/// Counters of one endpoint; kept across reloads and re-resolution while its address stays.
#[derive(Debug, Default)]
pub(crate) struct EndpointStats {
    /// Requests sent.
    pub requests: ShardedCounter,
    /// Requests that failed (upstream error or 5xx).
    pub failures: ShardedCounter,
    /// Time from sending to the endpoint to its response head (or failure).
    pub latency: Histogram,
}

/// A serializable copy of [`Stats`] for `/state`.
#[derive(Debug, Serialize)]
pub(crate) struct StatsSnapshot {
    requests: i64,
    responses_1xx: i64,
    responses_2xx: i64,
    responses_3xx: i64,
    responses_4xx: i64,
    responses_5xx: i64,
    in_flight: i64,
    connections_open: i64,
    connections_total: i64,
    connections_timed_out: i64,
    connections_parked: i64,
    connections_over_budget: i64,
    upgrades_total: i64,
    upgrades_open: i64,
    upstream_connect_errors: i64,
    upstream_timeouts: i64,
    upstream_resets: i64,
    unrouted: i64,
    body_too_large: i64,
    rejected: i64,
    reloads_ok: i64,
    reloads_failed: i64,
}

impl Stats {
    /// Sums every counter.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let r = &self.responses;
        StatsSnapshot {
            requests: self.requests.sum(),
            responses_1xx: r[0].sum(),
            responses_2xx: r[1].sum(),
            responses_3xx: r[2].sum(),
            responses_4xx: r[3].sum(),
            responses_5xx: r[4].sum(),
            in_flight: self.in_flight.sum(),
            connections_open: self.connections_open.sum(),
            connections_total: self.connections_total.sum(),
            connections_timed_out: self.connections_timed_out.sum(),
            connections_parked: self.connections_parked.sum(),
            connections_over_budget: self.connections_over_budget.sum(),
            upgrades_total: self.upgrades_total.sum(),
            upgrades_open: self.upgrades_open.sum(),
            upstream_connect_errors: self.upstream_connect_errors.sum(),
            upstream_timeouts: self.upstream_timeouts.sum(),
            upstream_resets: self.upstream_resets.sum(),
            unrouted: self.unrouted.sum(),
            body_too_large: self.body_too_large.sum(),
            rejected: self.rejected.sum(),
            reloads_ok: self.reloads_ok.sum(),
            reloads_failed: self.reloads_failed.sum(),
        }
    }
}

/// Milliseconds since this process first asked: a clock for stamping rare events (a breaker's
/// state change) that `/state` shows beside its own `clock_ms`, so a reader can tell how long
/// ago they were without a wall clock.
pub(crate) fn clock_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}
