//! `[[demo]]`: built-in upstreams for trying the gateway out and for its benches.

use serde::{Deserialize, Serialize};

/// What a demo upstream does. Every kind answers a gRPC request (`content-type:
/// application/grpc`) as a unary gRPC server, after its delay, queue or failure: the message
/// echoed back with `grpc-status: 0`, a malformed one refused with `grpc-status: 13` (a flaky
/// upstream's failures are `grpc-status: 14`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DemoKind {
    /// Answers at once; echoes a POST body back.
    Fast,
    /// Answers after `delay_ms`.
    Slow,
    /// Mostly answers; every 5th request gets 500 (gRPC: `UNAVAILABLE`) and every 7th has its
    /// connection reset.
    Flaky,
    /// A backend of fixed capacity: `workers` requests at a time, each for a service time
    /// drawn uniformly within `delay_ms × (1 ± jitter)`; the others wait in its FIFO queue, as
    /// on a server with a worker pool. It serves `workers / delay` requests a second, and its
    /// latency grows with its queue once more arrive: the upstream of the overload bench.
    Busy,
}

/// A demo upstream started by the binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Name, referred to by cluster endpoints as `demo:NAME`. Required, unique.
    pub name: String,
    /// Behaviour. Required.
    pub kind: DemoKind,
    /// `IP:PORT` to bind; must be loopback. Default `127.0.0.1:0` (any free port).
    #[serde(default = "default_demo_listen")]
    pub listen: String,
    /// Delay of a `slow` upstream, or the mean service time of a `busy` one, ms. Default
    /// 1500.
    #[serde(default = "default_delay_ms")]
    pub delay_ms: u64,
    /// Workers of a `busy` upstream: the requests it serves at once. Default 10; 1 to 10000.
    #[serde(default = "default_demo_workers")]
    pub workers: usize,
    /// Spread of a `busy` upstream's service time, as a fraction of `delay_ms` either side
    /// (uniform). Default 0.2; in `[0, 1)`.
    #[serde(default = "default_demo_jitter")]
    pub jitter: f64,
}

fn default_demo_workers() -> usize {
    10
}

fn default_demo_jitter() -> f64 {
    0.2
}

fn default_demo_listen() -> String {
    "127.0.0.1:0".into()
}

fn default_delay_ms() -> u64 {
    1_500
}
