//! The reference gateway behind the `tollgate` binary: a many-core HTTP reverse proxy on
//! hyper 1 and hyper-util.
//!
//! - HTTP/1.1 and HTTP/2 on every listener (h2c by prior knowledge; over TLS by ALPN, rustls
//!   with the `ring` provider, certificates chosen by SNI and reloaded with the config); gRPC
//!   passes through with its trailers; bodies stream both ways.
//! - `https://` upstreams: certificates checked against the system's trust store or a CA file,
//!   an optional client certificate, HTTP/2 or HTTP/1.1 by ALPN, connections pooled as for
//!   plain ones.
//! - Routes by host, path prefix and method to clusters of static, DNS (re-resolved), DNS SRV
//!   (`srv:`, weighted, re-resolved) or demo endpoints ([`config`]).
//! - Hot reload on SIGHUP and when the file changes (polled each second): validated, then
//!   swapped whole with `arc-swap`; in-flight requests keep the snapshot they started with; an
//!   invalid file is logged and the running config kept ([`Gateway::reload`]).
//! - Admin pages: a live dashboard at `/`, `/metrics` (with latency histograms), `/series`,
//!   `/healthz`, `/readyz`, `/config`, `/state` ([`Gateway::state`]).
//! - Graceful shutdown: stop accepting, let in-flight requests finish until the drain deadline.
//! - Thread-per-core (default): one thread per core, each with a current-thread runtime, its own
//!   `SO_REUSEPORT` listener and its own upstream pools; or one multi-thread runtime.
//! - Plain HTTP/1.1 requests take the gateway's own HTTP/1.1 path (`fast/`): parsed with
//!   httparse; to a plain route, forwarded on a pooled upstream socket from the client
//!   connection's task and relayed by their framing; to any other route, served through its
//!   layers as an `http::Request` and framed back there. HTTP/2, TLS and unusual requests
//!   (HTTP/1.0, chunked or large request bodies, upgrades) are served by hyper.
//! - Upstream, plain-TCP HTTP/1.1 endpoints are reached with the gateway's own HTTP/1.1 client
//!   (`pool/direct.rs`: no connection task, the fast path's idle sockets) for every request
//!   whose body is held whole or small enough to be read whole; hyper's client takes streamed
//!   bodies, upgrades, TLS and HTTP/2 endpoints.
//! - Every tollgate layer is a config section: admission policies on listeners and routes, a
//!   cache or a batcher on a route, and breaker, pool, balance (with health checks and outlier
//!   ejection), per-endpoint breakers and budgeted retries on a cluster, stacked in the order
//!   `stack/mod.rs` documents; their state shows on `/state` and `/metrics` and survives
//!   reloads that leave their settings alone.
//! - Tracing (`[tracing]`, off by default): W3C `traceparent` continued or started on both
//!   paths, the gateway's span sent upstream as the parent, spans of the request, admission
//!   wait, retry attempts and upstream calls exported as OTLP/HTTP protobuf (`trace.rs`).
//!
//! # The files, bottom to top
//!
//! Each file imports only files on its own floor or below (no import cycle between files):
//!
//! | floor | files | what |
//! |---|---|---|
//! | leaves | `error.rs`, `body.rs`, `forwarded.rs`, `headers.rs`, `histogram.rs`, `stats.rs` | the layered path's timeouts, the request body type, the client behind trusted proxies, forwarding and hop-by-hop fields, latency histograms, counters |
//! | config | `config/` | the TOML file: one file per section, the endpoint syntax, `ConfigError`, `validate.rs` |
//! | tls | `tls.rs`, `tls/` | rustls both ways: listener certificates chosen by SNI and swapped on reload, and the client side of `https://` endpoints (trust, client certificate, SNI name, ALPN) |
//! | upstream | `held.rs`, `pool.rs`, `pool/`, `route.rs`, `answer.rs`, `trace.rs` | per-thread copy blocks for small heads and bodies; per-thread upstream connections (plain sockets for the fast path and the gateway's own HTTP/1.1 client, hyper's connections for the rest, TLS with HTTP/2 or HTTP/1.1 by ALPN), the route table (host, path, header and query conditions, weighted splits), the one table from every failure to its answer (HTTP status, message, `Retry-After`, gRPC status), and W3C trace context with the span exporter |
//! | layers | `stack/` | each layer built from its section and composed per route and cluster; `stack/endpoints.rs` is a snapshot's cluster |
//! | state | `state.rs` | the immutable `Snapshot` swapped on reload, and what outlives reloads |
//! | connections | `ctx.rs`, `fast/`, `proxy.rs`, `conn.rs` | one client connection: its context, the HTTP/1.1 fast path, the hyper path per request, the connection loop that picks between them |
//! | serving | `server.rs`, `admin.rs` (`admin/metrics.rs`, `admin/series.rs`, `admin/dashboard.html`), `demo.rs`, `runtime.rs` | listeners and accept loops, admin pages (the Prometheus text, the dashboard and its one-second samples), demo upstreams, worker threads |
//! | top | `lib.rs`, `cli.rs`, `main.rs` | start, reload and shutdown; the command line; the binary |
//!
//! One request, followed through them: `server.rs` accepts the connection and makes its
//! `ctx.rs` context; `conn.rs` reads the first bytes and hands an HTTP/1.1 request for a plain
//! route to `fast/` (`fast/head.rs` parses and routes it with `route.rs`, `fast/exchange.rs`
//! sends it on a `pool/sockets.rs` socket, `fast/relay.rs` relays the answer) and everything
//! else to hyper, whose requests `proxy.rs` serves: it looks the route up in the `state.rs`
//! snapshot (on the fields as the client sent them, as the fast path does), picks the
//! cluster of a weighted split, runs it through the route's `stack/` (cache, timeout, admission, retry, breaker,
//! pool, balance, endpoint breaker, then `stack/upstream.rs` over a `pool/direct.rs` socket or
//! a `pool.rs` connection), and
//! turns any failure into its answer with `answer.rs`.
//!
//! ```no_run
//! use tollgate_gateway::{Gateway, StartOptions, config::Config};
//!
//! let config = Config::parse(tollgate_gateway::config::DEFAULT_CONFIG, "<default>")?;
//! let gateway = Gateway::start(StartOptions::new(config, "<default>"))?;
//! println!("serving on {}", gateway.listeners()[0].addr);
//! gateway.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod admin;
mod answer;
mod body;
mod boxed;
mod cli;
pub mod config;
mod conn;
mod ctx;
mod demo;
mod error;
mod fast;
mod forwarded;
// The fuzz targets' entry points: only under cargo-fuzz (`cfg(fuzzing)`) or the `fuzzing`
// feature (`tests/fuzz_replay.rs` replays the corpus through it on stable); never in the docs.
#[cfg(any(fuzzing, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod headers;
mod held;
mod histogram;
mod pool;
mod proxy;
mod proxy_protocol;
mod request_id;
mod route;
mod runtime;
mod server;
mod stack;
mod state;
mod stats;
mod tls;
mod trace;
mod tunnel;

use config::{Config, ConfigError, RuntimeMode};
use demo::Demo;
pub use state::{DemoInfo, ListenerInfo};
use state::{ReloadStatus, Shared, Snapshot};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

/// The `tollgate` binary's entry point: reads the command line (`--config`, `--check`,
/// `--workers`, `demo-upstream`, ...), starts the gateway and runs it until SIGINT or SIGTERM.
pub fn cli_main() -> std::process::ExitCode {
    cli::main()
}

/// Reads a running [`Gateway`]'s `/state` document; cheap to clone, `Send`.
#[derive(Debug, Clone)]
pub struct StateView(Arc<admin::Admin>);

impl StateView {
    /// The `/state` document now; see [`Gateway::state`].
    pub fn state(&self) -> serde_json::Value {
        self.0.state()
    }
}

/// How to start a [`Gateway`].
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The validated configuration.
    pub config: Config,
    /// Where it came from, for errors and `/state`.
    pub source: String,
    /// The file to watch and reload, if any.
    pub path: Option<PathBuf>,
    /// Overrides `server.workers` when set.
    pub workers: Option<usize>,
    /// Overrides `server.mode` when set.
    pub mode: Option<RuntimeMode>,
}

impl StartOptions {
    /// Options for `config` from `source`, without a watched file or overrides.
    pub fn new(config: Config, source: &str) -> Self {
        Self {
            config,
            source: source.to_owned(),
            path: None,
            workers: None,
            mode: None,
        }
    }
}

/// A gateway that failed to start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration was rejected.
    Config(ConfigError),
    /// A socket or thread could not be created; the string names what.
    Io(String, std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Io(_, e) => Some(e),
        }
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
    admin: Arc<admin::Admin>,
    shutdown: watch::Sender<bool>,
    workers_done: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Binds every listener, starts the demo upstreams, the admin listener and the workers.
    ///
    /// # Errors
    /// [`StartError`] if an endpoint does not resolve, a TLS file is unusable, or a socket
    /// cannot be bound.
    pub fn start(opts: StartOptions) -> Result<Self, StartError> {
        let StartOptions {
            config,
            source,
            path,
            workers,
            mode,
        } = opts;
        let io = |what: String| move |e| StartError::Io(what, e);
        let mode = mode.unwrap_or(config.server.mode);
        let workers = match workers.unwrap_or(config.server.workers) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };

        let mut demos = Vec::new();
        let mut demo_info = Vec::new();
        for d in &config.demo {
            let addr: SocketAddr = d.listen.parse().map_err(|_| {
                StartError::Io(
                    format!("demo {}", d.name),
                    std::io::ErrorKind::InvalidInput.into(),
                )
            })?;
            let l = server::bind(addr, false).map_err(io(format!("demo {} on {addr}", d.name)))?;
            let addr = l.local_addr().map_err(io(format!("demo {}", d.name)))?;
            demo_info.push(DemoInfo {
                name: d.name.clone(),
                kind: d.kind,
                addr,
            });
            demos.push((
                l,
                Arc::new(Demo::new(
                    &d.name,
                    d.kind,
                    demo::Timing {
                        delay: Duration::from_millis(d.delay_ms),
                        workers: d.workers,
                        jitter: d.jitter,
                    },
                )),
            ));
        }

        let snapshot = Snapshot::build(config.clone(), &source, 1, &demo_info, None)
            .map_err(StartError::Config)?;

        let mut per_worker: Vec<runtime::WorkerSockets> = Vec::new();
        let mut listeners = Vec::new();
        let mut multi: runtime::WorkerSockets = Vec::new();
        let mut listener_certs = Vec::new();
        per_worker.resize_with(workers, Vec::new);
        for (i, lc) in config.listeners.iter().enumerate() {
            let certs = match &lc.tls {
                Some(t) => Some(tls::listener::ListenerCerts::new(
                    tls::listener::load(t, &format!("listeners[{i}].tls"))
                        .map_err(|e| StartError::Config(e.in_file(&source)))?,
                )),
                None => None,
            };
            let tls = match &certs {
                Some(c) => Some(tls::listener::acceptor(c.clone()).map_err(|p| {
                    StartError::Config(ConfigError {
                        file: source.clone(),
                        field: format!("listeners[{i}].tls"),
                        problem: p,
                    })
                })?),
                None => None,
            };
            listener_certs.push(certs);
            let want: SocketAddr = lc.listen.parse().map_err(|_| {
                StartError::Io(
                    format!("listener {}", lc.name),
                    std::io::ErrorKind::InvalidInput.into(),
                )
            })?;
            let what = format!("listener {} on {want}", lc.name);
            let addr = match mode {
                RuntimeMode::ThreadPerCore => {
                    // Bind the first socket, then the others to the port it got (port 0 picks
                    // one), all with SO_REUSEPORT.
                    let first = server::bind(want, true).map_err(io(what.clone()))?;
                    let addr = first.local_addr().map_err(io(what.clone()))?;
                    per_worker[0].push((first, tls.clone()));
                    for w in per_worker.iter_mut().skip(1) {
                        w.push((
                            server::bind(addr, true).map_err(io(what.clone()))?,
                            tls.clone(),
                        ));
                    }
                    addr
                }
                RuntimeMode::MultiThread => {
                    let l = server::bind(want, false).map_err(io(what.clone()))?;
                    let addr = l.local_addr().map_err(io(what.clone()))?;
                    multi.push((l, tls.clone()));
                    addr
                }
            };
            listeners.push(ListenerInfo {
                name: lc.name.clone(),
                addr,
                tls: tls.is_some(),
            });
        }

        let admin_listener = if config.admin.listen.is_empty() {
            None
        } else {
            let want: SocketAddr = config.admin.listen.parse().map_err(|_| {
                StartError::Io("admin".into(), std::io::ErrorKind::InvalidInput.into())
            })?;
            Some(server::bind(want, false).map_err(io(format!("admin listener on {want}")))?)
        };
        let admin_addr = match &admin_listener {
            Some(l) => Some(l.local_addr().map_err(io("admin listener".into()))?),
            None => None,
        };

        let tracer = match &config.tracing {
            Some(t) => Some(trace::Tracer::start(t).map_err(|p| {
                StartError::Config(ConfigError {
                    file: source.clone(),
                    field: "tracing.otlp_endpoint".into(),
                    problem: p,
                })
            })?),
            None => None,
        };
        let shared = Arc::new(Shared {
            reloaded: tokio::sync::Notify::new(),
            current: arc_swap::ArcSwap::from_pointee(snapshot),
            stats: Default::default(),
            draining: AtomicBool::new(false),
            demo: demo_info,
            listeners,
            admin: admin_addr,
            mode,
            workers,
            config_path: path.clone(),
            reload: Mutex::new(ReloadStatus {
                generation: 1,
                last_error: None,
            }),
            started: tokio::time::Instant::now(),
            listener_certs,
            tracer,
        });

        let (shutdown, shutdown_rx) = watch::channel(false);
        let (workers_done, workers_done_rx) = watch::channel(false);
        let worker_handles = match mode {
            RuntimeMode::ThreadPerCore => {
                runtime::spawn_thread_per_core(per_worker, &shared, &shutdown_rx)
            }
            RuntimeMode::MultiThread => {
                runtime::spawn_multi_thread(workers, multi, &shared, &shutdown_rx)
            }
        }
        .map_err(io("worker threads".into()))?;

        let admin = Arc::new(admin::Admin::new(
            shared.clone(),
            demos.iter().map(|(_, d)| d.clone()).collect(),
        ));
        let state_admin = admin.clone();
        let watch = path.map(|p| {
            let shared = shared.clone();
            let mut last = file_stamp(&p);
            Box::new(move || {
                let now = file_stamp(&p);
                if now != last {
                    last = now;
                    if now.is_some() {
                        let _ = reload(&shared, "file change");
                    }
                }
            }) as Box<dyn FnMut() + Send>
        });
        let control = runtime::spawn_control(
            runtime::Control {
                admin: admin_listener.map(|l| (l, admin)),
                demos,
                watch,
            },
            shared.clone(),
            workers_done_rx,
        )
        .map_err(io("control thread".into()))?;

        Ok(Self {
            shared,
            shutdown,
            workers_done,
            workers: worker_handles,
            control: Some(control),
            admin: state_admin,
        })
    }

    /// The bound listeners (with the actual ports when the config asked for port 0).
    pub fn listeners(&self) -> &[ListenerInfo] {
        &self.shared.listeners
    }

    /// The admin listener's address, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.shared.admin
    }

    /// The running demo upstreams.
    pub fn demos(&self) -> &[DemoInfo] {
        &self.shared.demo
    }

    /// The shared state (snapshot, counters).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// What the admin page's `/state` serves, now: clusters (endpoints, breaker states, pool
    /// limits, retries), routes, admission policies, caches, batchers, counters and reloads.
    pub fn state(&self) -> serde_json::Value {
        self.admin.state()
    }

    /// A handle that reads the same document from another task or thread while the gateway
    /// runs (a monitor, a test sampling the state under load).
    pub fn state_view(&self) -> StateView {
        StateView(self.admin.clone())
    }

    /// Re-reads the watched config file and applies it, as SIGHUP does.
    ///
    /// # Errors
    /// The [`ConfigError`] that made the reload fail; the running config stays.
    pub fn reload(&self) -> Result<u64, ConfigError> {
        reload(&self.shared, "request")
    }

    /// Applies `config` (from `source`) as a reload.
    ///
    /// # Errors
    /// The [`ConfigError`] that made it fail; the running config stays.
    pub fn apply(&self, config: Config, source: &str) -> Result<u64, ConfigError> {
        apply(
            &self.shared,
            config.validate().map(|()| config).map_err(|mut e| {
                e.file = source.to_owned();
                e
            }),
            source,
        )
    }

    /// Starts a graceful shutdown without waiting: listeners stop accepting, `/readyz` turns
    /// 503, idle connections close and busy ones close after their in-flight requests.
    pub fn begin_shutdown(&self) {
        // Relaxed: `draining` is a hint for `/readyz`; the watch channel orders the shutdown.
        self.shared.draining.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
    }

    /// Shuts down gracefully and waits until the workers have drained (or the drain deadline
    /// passed) and every thread has stopped; with `[tracing]`, then exports the spans still
    /// buffered (waiting up to the exporter's 5 s timeout).
    pub fn shutdown(mut self) {
        self.begin_shutdown();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(t) = &self.shared.tracer {
            t.shutdown();
        }
        let _ = self.workers_done.send(true);
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
    }
}

/// (mtime seconds, mtime nanoseconds, size, inode) of a file, to notice changes.
fn file_stamp(path: &std::path::Path) -> Option<(i64, i64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.mtime(), m.mtime_nsec(), m.size(), m.ino()))
}

/// Reloads the watched file.
fn reload(shared: &Shared, why: &str) -> Result<u64, ConfigError> {
    let Some(path) = shared.config_path.clone() else {
        let e = ConfigError {
            file: "<default>".into(),
            field: "(file)".into(),
            problem: "no config file to reload (started without one)".into(),
        };
        tracing::warn!(error = %e, "reload ignored");
        return Err(e);
    };
    tracing::info!(file = %path.display(), trigger = why, "reloading configuration");
    apply(shared, Config::load(&path), &path.display().to_string())
}

/// The certificates of each listener that terminates TLS now and still does in `config`
/// (a listener that starts or stops TLS needs a restart).
fn load_listener_certs(
    shared: &Shared,
    config: &Config,
) -> Result<Vec<Option<tls::listener::CertSet>>, ConfigError> {
    shared
        .listener_certs
        .iter()
        .enumerate()
        .map(|(i, running)| match (running, config.listeners.get(i)) {
            (Some(_), Some(lc)) => match &lc.tls {
                Some(t) => tls::listener::load(t, &format!("listeners[{i}].tls")).map(Some),
                None => Ok(None),
            },
            _ => Ok(None),
        })
        .collect()
}

/// The listeners with their certificate files left out (a reload applies those), for the
/// "needs a restart" warning: whether each has TLS still counts.
fn listeners_but_certs(config: &Config) -> Vec<config::ListenerConfig> {
    let mut listeners = config.listeners.clone();
    for l in &mut listeners {
        if let Some(t) = &mut l.tls {
            *t = config::TlsConfig::default();
        }
    }
    listeners
}

/// Validates, compiles and swaps in a config; on error logs it and keeps the old one.
fn apply(
    shared: &Shared,
    config: Result<Config, ConfigError>,
    source: &str,
) -> Result<u64, ConfigError> {
    let mut status = shared.reload.lock().unwrap_or_else(|e| e.into_inner());
    let old = shared.current.load_full();
    let result = config
        .and_then(|c| Snapshot::build(c, source, old.generation + 1, &shared.demo, Some(&old)))
        .and_then(|snap| {
            // Every listener certificate is read again; one that cannot be used rejects the
            // reload before anything is swapped.
            let certs = load_listener_certs(shared, &snap.config).map_err(|e| e.in_file(source))?;
            Ok((snap, certs))
        });
    match result {
        Ok((snap, certs)) => {
            for (running, new) in shared.listener_certs.iter().zip(certs) {
                if let (Some(running), Some(new)) = (running, new) {
                    running.replace(new);
                }
            }
            for (section, changed) in [
                (
                    "listeners",
                    listeners_but_certs(&snap.config) != listeners_but_certs(&old.config),
                ),
                ("server", snap.config.server != old.config.server),
                ("admin", snap.config.admin != old.config.admin),
                ("demo", snap.config.demo != old.config.demo),
                ("tracing", snap.config.tracing != old.config.tracing),
                (
                    "log.format/log.level",
                    snap.config.log.format != old.config.log.format
                        || snap.config.log.level != old.config.log.level,
                ),
            ] {
                if changed {
                    tracing::warn!(section, "changes to this section apply after a restart");
                }
            }
            let generation = snap.generation;
            shared.current.store(Arc::new(snap));
            // Wakes the control thread: it stops the replaced stacks' health checks.
            shared.reloaded.notify_one();
            shared.stats.reloads_ok.incr();
            *status = ReloadStatus {
                generation,
                last_error: None,
            };
            tracing::info!(generation, "configuration applied");
            Ok(generation)
        }
        Err(e) => {
            shared.stats.reloads_failed.incr();
            status.last_error = Some(e.to_string());
            tracing::error!(error = %e, "configuration rejected; keeping the running one");
            Err(e)
        }
    }
}
