//! The gateway's TOML configuration: plain data, defaults, and validation that names the file,
//! the field and the problem.
//!
//! Durations are integers in milliseconds (fields end in `_ms`), sizes are integers in bytes.
//! Unknown fields are rejected, so a typo is an error rather than a silently ignored setting.

pub mod admission;
pub mod batch;
pub mod cache;
pub mod cluster;
mod dns;
mod endpoint;
mod error;
pub mod retry;
pub mod route;
pub mod tls;
pub mod tracing;
mod validate;

use admission::AdmissionSection;
use batch::BatchSection;
use cache::CacheSection;
use cluster::{BalanceConfig, BreakerConfig, HealthCheck, PoolConfig};
use retry::RetrySection;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use dns::DnsConfig;
pub use endpoint::Endpoint;
pub use error::ConfigError;
pub use tls::{CertConfig, TlsConfig, UpstreamTlsSection};

/// The configuration shipped with the binary and used when no `--config` is given and there is
/// no `tollgate.toml` in the working directory.
pub const DEFAULT_CONFIG: &str = include_str!("../../../tollgate.toml");

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Process-wide settings: runtime mode, worker count, drain deadline.
    pub server: ServerConfig,
    /// The admin listener (the dashboard at `/`, `/metrics`, `/series`, `/healthz`, `/readyz`,
    /// `/config`, `/state`).
    pub admin: AdminConfig,
    /// Logging and the access log.
    pub log: LogConfig,
    /// Timeouts applied to every listener and upstream.
    pub timeouts: TimeoutsConfig,
    /// Size limits applied to every listener.
    pub limits: LimitsConfig,
    /// Where clients connect. At least one.
    pub listeners: Vec<ListenerConfig>,
    /// Upstream clusters that routes send to.
    pub clusters: Vec<ClusterConfig>,
    /// Routes, tried most specific first (exact host, then wildcard host, then any host; then
    /// longest path prefix; then most header and query conditions; then file order); the
    /// first that matches wins.
    pub routes: Vec<RouteConfig>,
    /// Demo upstreams the binary starts itself on loopback (for the shipped config and tests).
    pub demo: Vec<DemoConfig>,
    /// Named priority-admission policies that routes and listeners refer to.
    pub admission: Vec<AdmissionSection>,
    /// The resolver for `srv:` endpoints.
    pub dns: DnsConfig,
    /// W3C trace context and OTLP span export; absent (the default): off, at no cost. Needs a
    /// restart to change.
    pub tracing: Option<tracing::TracingConfig>,
}

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
    /// Serve plain HTTP/1.1 requests to plain routes (no layers) on the gateway's own
    /// HTTP/1.1 path instead of hyper's. Default `true`. Requests it does not take (HTTP/1.0,
    /// chunked request bodies, `Expect`, upgrades, malformed or oversized heads) go to hyper
    /// either way. Reloadable; applies to new connections.
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

/// A listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// A name for logs and `/state`. Required, unique.
    pub name: String,
    /// `IP:PORT` to bind; port 0 picks a free port (printed at start). Required.
    pub listen: String,
    /// TLS termination (HTTP/1.1 and HTTP/2 by ALPN), with certificates chosen by SNI name
    /// ([`TlsConfig`]). Default none (plain HTTP/1.1 and h2c).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Name of an `[[admission]]` policy for requests whose route names none. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<String>,
    /// Every connection starts with a PROXY protocol header (v1 or v2, from a load balancer in
    /// front) whose client address then stands for the connection's peer: in the forwarding
    /// fields, admission's per-client keys and CIDR rules, and the access log. A connection
    /// without a valid header within `timeouts.header_read_ms` is closed. Default `false`.
    /// Needs a restart to change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
}

/// The protocol spoken to a cluster's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with a keep-alive pool (the default).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (gRPC upstreams).
    H2c,
}

/// An upstream cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Name that routes refer to. Required, unique.
    pub name: String,
    /// Endpoints: `IP:PORT` (static), `HOST:PORT` (resolved now and every
    /// `resolve_interval_ms`), `srv:NAME` (the targets of the DNS SRV records of `NAME`, such
    /// as `srv:_http._tcp.example.com`, looked up now and every `resolve_interval_ms` through
    /// `[dns]`), or `demo:NAME` (the address of a demo upstream). At least one.
    /// `https://HOST:PORT` or `https://IP:PORT` (port 443 when left out) speaks TLS to the
    /// endpoint (see `tls`); a cluster's endpoints are all `https://` or none.
    pub endpoints: Vec<String>,
    /// Protocol to the endpoints. Default `http1`. Over TLS (`https://` endpoints), `http1`
    /// offers HTTP/2 and HTTP/1.1 by ALPN and speaks what the endpoint picks; `h2c` offers
    /// HTTP/2 only (gRPC).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// DNS re-resolution period for `HOST:PORT` and `srv:` endpoints, ms. Default 5000, at
    /// least 100.
    #[serde(default = "default_resolve_ms")]
    pub resolve_interval_ms: u64,
    /// Forward the client's `Host` (true, the default) or set it to the endpoint's address.
    #[serde(default = "default_true")]
    pub preserve_host: bool,
    /// Latency-aware balancing (P2C over peak-EWMA, outlier ejection, slow start):
    /// tollgate-balance's `BalanceConfig`. Default none: round robin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<BalanceConfig>,
    /// Active HTTP health checks (`path`); their timing is `balance.health`. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// One circuit breaker for the whole cluster: tollgate-breaker's `BreakerConfig` (named
    /// after the cluster unless `name` is set). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerConfig>,
    /// One circuit breaker per endpoint, the same type (named `cluster/endpoint`); an open one
    /// takes its endpoint out of rotation. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_breaker: Option<BreakerConfig>,
    /// Adaptive limit on requests in flight to the cluster: tollgate-pool's `PoolConfig`.
    /// Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolConfig>,
    /// Budgeted retries and hedges (`[clusters.retry]`); a route's `[routes.retry]` replaces
    /// it for that route's requests. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySection>,
    /// TLS to `https://` endpoints: CA file, client certificate, server name. Default none
    /// (the system's trust store, no client certificate); refused without `https://`
    /// endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsSection>,
}

fn default_resolve_ms() -> u64 {
    5_000
}

fn default_true() -> bool {
    true
}

/// A route: which requests go to which cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Host to match: exact (`api.example.com`), wildcard (`*.example.com`) or `*` (any).
    /// Case-insensitive, port ignored. Default `*`.
    #[serde(default = "default_host")]
    pub host: String,
    /// Path prefix, matched on segment boundaries (`/api` matches `/api` and `/api/x`, not
    /// `/apix`). Must start with `/`. Default `/`.
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// Methods allowed (upper case); empty means any. Default empty. A request whose host,
    /// path and conditions match only routes with other methods gets 405.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header conditions, all of which must hold (`[[routes.headers]]`). Default none. At most
    /// 32 header and query conditions together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<route::HeaderMatch>,
    /// Query parameter conditions, all of which must hold (`[[routes.query]]`). Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<route::QueryMatch>,
    /// Cluster name. Exactly one of `cluster` and `clusters` is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// A weighted split across clusters (`[[routes.clusters]]`, each a `cluster` and a
    /// `weight`), instead of `cluster`: each request goes to one of them, in proportion to
    /// the weights. Default none. At most 16; not for `kind = "batch"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<route::WeightedCluster>,
    /// With `clusters`: a request carrying this key (`{ header = "x-user" }` or
    /// `{ cookie = "session" }`) goes to the cluster its key hashes to, so that one client
    /// stays on one cluster; requests without it take the split's turn. Not the request-id
    /// field or `traceparent`, which the gateway sets itself. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<route::StickyKey>,
    /// Overrides `timeouts.request_ms` for this route, ms. Default none.
    #[serde(default)]
    pub request_timeout_ms: Option<u64>,
    /// What the route does. Default `proxy`.
    #[serde(default)]
    pub kind: RouteKind,
    /// Name of an `[[admission]]` policy; overrides the listener's. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<String>,
    /// Priority class (a class name of the admission policy) of this route's requests when
    /// the request names none in the policy's class header. Default none: the policy's
    /// default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// HTTP caching of `GET`/`HEAD` answers. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSection>,
    /// Batching settings; required when `kind = "batch"`, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSection>,
    /// `[routes.retry]`: this route's retries, in place of its cluster's `[clusters.retry]`
    /// (the same fields). Precedence: the route's section, else the cluster's; `attempts = 0`
    /// turns retries off for this route even where its cluster retries. The override has its
    /// own budget per cluster of the route (see `stack::route_retry`). Default none: the
    /// cluster's retries. Not for `kind = "batch"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySection>,
}

/// What a route does with its requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    /// Forward each request to the cluster (the default).
    #[default]
    Proxy,
    /// Collect single JSON requests and send them to the cluster as one JSON array
    /// (`[routes.batch]`).
    Batch,
}

fn default_host() -> String {
    "*".into()
}

fn default_prefix() -> String {
    "/".into()
}

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

impl Config {
    /// Parses and validates TOML text; `file` names the source in errors.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `file`, the field (or line and column for syntax errors) and
    /// the problem.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let line_column = |span: Option<std::ops::Range<usize>>| {
            span.map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line} column {column}")
            })
        };
        let de = toml::Deserializer::parse(text).map_err(|e| {
            let at = line_column(e.span()).unwrap_or_else(|| "syntax".to_owned());
            ConfigError::new(at, e.message().trim().to_lowercase()).in_file(file)
        })?;
        // The path to the value at fault (`clusters[0].pool.max_limit`) names the field for type
        // and range errors too; the line and column follow the problem.
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let at = line_column(inner.span());
            let problem = inner.message().trim().to_lowercase();
            let (field, problem) = match (path.as_str(), at) {
                ("." | "", Some(at)) => (at, problem),
                ("." | "", None) => ("syntax".to_owned(), problem),
                (_, Some(at)) => (path, format!("{problem} ({at})")),
                (_, None) => (path, problem),
            };
            ConfigError::new(field, problem).in_file(file)
        })?;
        config.validate().map_err(|e| e.in_file(file))?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    ///
    /// # Errors
    /// A [`ConfigError`] if the file cannot be read or is invalid.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("(file)", format!("cannot read: {e}")).in_file(&file))?;
        Self::parse(&text, &file)
    }

    /// Drain deadline.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.server.drain_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_is_valid() {
        let c = Config::parse(DEFAULT_CONFIG, "<default>").unwrap();
        assert!(!c.demo.is_empty());
        assert!(!c.routes.is_empty());
    }

    #[test]
    fn errors_name_file_field_and_problem() {
        let text = "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n\
                    [[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n\
                    [[routes]]\ncluster = \"nope\"\n";
        let err = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.toml: routes[0].cluster: names unknown cluster \"nope\""
        );
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let err = Config::parse("[server]\nworkers = 2\n[server\n", "y.toml").unwrap_err();
        assert_eq!(err.file, "y.toml");
        assert_eq!(err.field, "line 3 column 8", "{err}");
    }

    #[test]
    fn type_errors_name_the_field_and_where_it_is() {
        let err = Config::parse("[server]\nworkers = \"two\"\n", "y.toml").unwrap_err();
        assert_eq!(err.file, "y.toml");
        assert_eq!(err.field, "server.workers", "{err}");
        assert!(err.problem.contains("invalid type"), "{err}");
        assert!(err.problem.ends_with("(line 2 column 11)"), "{err}");
    }

    #[test]
    fn range_and_variant_errors_name_the_field() {
        let cases = [
            ("[limits]\nmax_body_bytes = -1\n", "limits.max_body_bytes"),
            (
                "[timeouts]\nheader_read_ms = \"10s\"\n",
                "timeouts.header_read_ms",
            ),
            ("[server]\nmode = \"fast\"\n", "server.mode"),
            (
                "[[listeners]]\nname = \"a\"\nlisten = 8080\n",
                "listeners[0].listen",
            ),
            (
                "[[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n\
                 [clusters.pool]\nmax_limit = \"lots\"\n",
                "clusters[0].pool.max_limit",
            ),
        ];
        for (text, field) in cases {
            let err = Config::parse(text, "t.toml").unwrap_err();
            assert_eq!(err.field, field, "{text:?} gave {err}");
            assert!(
                err.to_string().starts_with(&format!("t.toml: {field}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Config::parse("[server]\nwrokers = 2\n", "z.toml").unwrap_err();
        assert!(err.problem.contains("unknown field"), "{err}");
        assert_eq!(err.field, "server.wrokers", "{err}");
    }

    #[test]
    fn listeners_on_one_address_are_rejected() {
        let base = "[[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n\
                    [[routes]]\ncluster = \"c\"\n";
        let two = |a: &str, b: &str| {
            format!(
                "{base}[[listeners]]\nname = \"a\"\nlisten = \"{a}\"\n\
                 [[listeners]]\nname = \"b\"\nlisten = \"{b}\"\n"
            )
        };
        for (a, b) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("127.0.0.1:8080", "[::]:8080"),
        ] {
            let err = Config::parse(&two(a, b), "d.toml").unwrap_err();
            assert_eq!(err.field, "listeners[1].listen", "{a} {b}: {err}");
            assert!(err.problem.contains("listeners[0]"), "{err}");
        }
        // Port 0 takes a fresh port each time; other ports or IPs are other addresses.
        for (a, b) in [
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("127.0.0.1:8080", "127.0.0.1:8081"),
            ("127.0.0.1:8080", "127.0.0.2:8080"),
        ] {
            Config::parse(&two(a, b), "d.toml").unwrap_or_else(|e| panic!("{a} {b}: {e}"));
        }
        let admin = format!(
            "{}[admin]\nlisten = \"127.0.0.1:8080\"\n",
            two("127.0.0.1:8080", "127.0.0.1:1")
        );
        let err = Config::parse(&admin, "d.toml").unwrap_err();
        assert_eq!(err.field, "listeners[0].listen", "{err}");
        assert!(err.problem.contains("admin"), "{err}");
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:80"),
            Ok(Endpoint::Static("127.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            Endpoint::parse("LocalHost:81"),
            Ok(Endpoint::Dns("localhost".into(), 81))
        );
        assert_eq!(
            Endpoint::parse("demo:fast"),
            Ok(Endpoint::Demo("fast".into()))
        );
        assert_eq!(
            Endpoint::parse("srv:_HTTP._tcp.Svc.example"),
            Ok(Endpoint::Srv("_http._tcp.svc.example".into()))
        );
        assert!(Endpoint::parse("srv:").is_err());
        assert!(Endpoint::parse("srv:a..b").is_err());
        assert!(Endpoint::parse("nohost").is_err());
        assert!(Endpoint::parse("a..b:80").is_err());
        assert!(Endpoint::parse("[::1]:0").is_err());
    }
}
