//! The gateway's TOML configuration: plain data, defaults, and validation that names the file,
//! the field and the problem.
//!
//! Durations are integers in milliseconds (fields end in `_ms`), sizes are integers in bytes.
//! Unknown fields are rejected, so a typo is an error rather than a silently ignored setting.

pub mod admission;
pub mod batch;
pub mod cache;
pub mod cluster;
mod demo;
mod dns;
mod endpoint;
mod error;
pub mod retry;
pub mod route;
mod server;
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

pub use demo::{DemoConfig, DemoKind};
pub use dns::DnsConfig;
pub use endpoint::Endpoint;
pub use error::ConfigError;
pub use server::{
    AdminConfig, LimitsConfig, LogConfig, LogFormat, RuntimeMode, ServerConfig, TimeoutsConfig,
};
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
    /// turns retries off for this route even where its cluster retries. Over a cluster that
    /// retries with the same budget settings, the override draws on the cluster's budget;
    /// otherwise it has its own, per cluster of the route (see `stack::route_retry`). Default
    /// none: the cluster's retries. Not for `kind = "batch"`.
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
