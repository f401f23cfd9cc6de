//! The gateway-wide sections: `[server]`, `[admin]`, `[log]`, `[timeouts]` and `[limits]`.

use serde::{Deserialize, Serialize};

/// How requests are spread over cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeMode {
    /// N workers, each a thread with its own current-thread runtime, `SO_REUSEPORT` listener
    /// and upstream pool (the default).
    #[default]
    ThreadPerCore,
    /// One multi-thread tokio runtime with N workers sharing one listener and one pool.
    MultiThread,
}

/// Process-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Runtime mode. Default `thread-per-core`. Needs a restart to change.
    pub mode: RuntimeMode,
    /// Worker count; 0 means the number of available cores. Default 0. Needs a restart.
    pub workers: usize,
    /// How long shutdown waits for in-flight requests, in ms. Default 10000.
    pub drain_timeout_ms: u64,
    /// Read HTTP/1.1 requests on the gateway's own HTTP/1.1 path instead of hyper's: plain
    /// routes (no layers) are forwarded there, layered routes are read there and served
    /// through their layers. Default `true`. Requests it does not take (HTTP/1.0, chunked
    /// request bodies or bodies over 64 KiB, `Expect`, upgrades, malformed or oversized
    /// heads) go to hyper either way. Reloadable; applies to new connections.
    pub h1_fast_path: bool,
    /// The request-id field: every request carries one to the upstream, in the access log and
    /// on the gateway's own answers; empty turns it off. Default `x-request-id`. Reloadable.
    pub request_id_header: String,
    /// Keep a request id the client sent (1 to 200 visible ASCII bytes) instead of making a
    /// fresh one. Turn it on only behind a proxy that sets the field. Default `false`.
    pub trust_request_id: bool,
    /// Networks (CIDRs such as `"10.0.0.0/8"`, or single addresses) of proxies in front whose
    /// `X-Forwarded-For` / `Forwarded` fields are believed: the chain is walked from the right
    /// past trusted hops, and the first other address is the client (for admission's
    /// per-client keys and CIDR rules, the access log and the forwarding fields sent on).
    /// From any other peer the fields are not believed, and the peer is appended to them.
    /// Default empty: no field is believed. Reloadable; applies to new connections.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            mode: RuntimeMode::ThreadPerCore,
            workers: 0,
            drain_timeout_ms: 10_000,
            h1_fast_path: true,
            request_id_header: "x-request-id".into(),
            trust_request_id: false,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address to bind, or empty to disable. Default `127.0.0.1:9901`. Needs a restart.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9901".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Output format. Default `text`. Needs a restart.
    pub format: LogFormat,
    /// Filter in `tracing-subscriber`'s `EnvFilter` syntax; `RUST_LOG` overrides it.
    /// Default `info`. Needs a restart.
    pub level: String,
    /// Log one line per request at target `tollgate::access`. Default true. Reloadable.
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
            access_log: true,
        }
    }
}

/// Timeouts, all in milliseconds. Reloadable; listener settings apply to new connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Upstream TCP connect, ms. Default 1000. Expiry maps to 504.
    pub connect_ms: u64,
    /// Time a client has to send a complete request head (HTTP/1), ms; also bounds the TLS
    /// handshake. Default 10000. Expiry closes the connection (slowloris defence).
    pub header_read_ms: u64,
    /// Time from sending upstream to the upstream's response head, ms. Default 30000. Expiry
    /// maps to 504. A route may override it.
    pub request_ms: u64,
    /// A client connection with no bytes moving for this long is closed, ms. Default 60000.
    /// Also the idle time of pooled upstream connections, and the longest gap between two
    /// pieces of an upstream's response body (a body that stalls longer is cut, so the client
    /// is not left waiting).
    pub idle_ms: u64,
    /// An HTTP/1.1 client connection idle this long is *parked*: it stays open but its buffers
    /// (about 20 KiB) are freed until its next byte arrives, ms. Default 100. Waking costs a
    /// few microseconds, so only connections idle for longer than this pay it.
    pub park_ms: u64,
    /// An upgraded connection (a WebSocket, after its `101 Switching Protocols`) with no byte
    /// moving either way for this long is closed, ms. Default 300000 (5 minutes).
    pub upgrade_idle_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect_ms: 1_000,
            header_read_ms: 10_000,
            request_ms: 30_000,
            idle_ms: 60_000,
            park_ms: 100,
            upgrade_idle_ms: 300_000,
        }
    }
}

/// Size limits. Reloadable; apply to new connections (headers) or new requests (body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request head, bytes (HTTP/1 read buffer, HTTP/2 header list). At least 8192.
    /// Default 65536. Larger heads get 431.
    pub max_header_bytes: usize,
    /// Most header fields in a request (HTTP/1). Default 100. More get 431.
    pub max_headers: usize,
    /// Largest request body, bytes; 0 means no limit. Default 10485760 (10 MiB). A larger
    /// declared length gets 413 before the upstream is contacted; a longer streamed body is
    /// cut and gets 413 if no response has started.
    pub max_body_bytes: u64,
    /// Requests one client connection may make; 0 means no limit. Default 10000. An HTTP/1.1
    /// connection closes after the answer to the last one (`Connection: close`); an HTTP/2
    /// connection gets GOAWAY and its streams in flight finish. Clients open a new connection,
    /// as they do for nginx's `keepalive_requests`. Reloadable; applies to new requests.
    pub max_requests_per_connection: u64,
    /// Requests of one client connection that the client may abandon while the gateway is
    /// working on them (an HTTP/2 stream reset, a client gone) before the connection gets
    /// GOAWAY: past this many, and past half of the connection's requests, the connection is
    /// spending the gateway's and the upstreams' work on answers nobody reads (the "rapid
    /// reset" pattern). A browser or gRPC client that cancels some calls never comes near it.
    /// 0 means no limit. Default 100. Reloadable.
    pub max_abandoned_per_connection: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: 65_536,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
            max_requests_per_connection: 10_000,
            max_abandoned_per_connection: 100,
        }
    }
}
