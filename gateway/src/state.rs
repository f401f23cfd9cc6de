//! The running gateway's state: an immutable [`Snapshot`] of the effective configuration,
//! swapped whole on reload through `arc-swap`, and the [`Shared`] parts that outlive reloads.
//!
//! Ground rules: only the control thread (reload, DNS refresh) writes `Shared::current` and a
//! cluster's `endpoints`; workers only load them. A request keeps the snapshot it started with,
//! so a reload never changes an in-flight request's route, timeouts or limits.

use super::config::{Config, ConfigError, DemoKind, RuntimeMode, UpstreamProtocol};
use super::route::{Fields, RouteTable, Split};
use super::stack::admission::AdmissionPolicy;
use super::stack::batch::BatchRoute;
use super::stack::cache::RouteCache;
use super::stack::endpoints::Cluster;
use super::stack::route::ClusterService;
use super::stack::route_retry::RouteRetry;
use super::stats::{RouteStats, Stats};
use arc_swap::ArcSwap;
use serde::Serialize;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// One cluster a route sends to: its only one, or one branch of its weighted split.
#[derive(Debug)]
pub(crate) struct Branch {
    /// The cluster's index in [`Snapshot::clusters`].
    pub cluster: usize,
    /// Its weight in the split (1 for a route's only cluster).
    pub weight: u32,
    /// The latency and rejections of the route's requests this cluster served (the
    /// `cluster` label of the route's metrics); kept across reloads with the route's key and
    /// the cluster's name.
    pub stats: Arc<RouteStats>,
    /// The route's own retries over this cluster (`[routes.retry]`), in place of the
    /// cluster's; kept across reloads with the route's key, the cluster's name and the section.
    pub retry: Option<Arc<RouteRetry>>,
}

impl Branch {
    /// The service this branch's requests go through: the cluster under the route's own
    /// retries, else the cluster's own stack.
    pub(crate) fn service(&self, cluster: &Arc<Cluster>) -> ClusterService {
        match &self.retry {
            Some(r) => ClusterService::RouteRetried(r.clone()),
            None => cluster_service(cluster),
        }
    }
}

/// What one route does, compiled.
#[derive(Debug)]
pub(crate) struct RoutePlan {
    /// Where its requests go, in config order: one branch, or its split's.
    pub branches: Vec<Branch>,
    /// The weighted split over `branches`, when there are several.
    pub split: Option<Split>,
    /// Whether the fast path serves it: a plain route whose every cluster is a plain
    /// HTTP/1.1 one (no layers, no TLS).
    pub fast: bool,
    /// Whether the fast path sends its requests through the layers itself when it does not
    /// forward them ([`stacked`](crate::fast::stacked)): every cluster it sends to is plain
    /// HTTP/1.1, and the route has no retries of its own, cache or batch. (Not while
    /// tracing: the layered path records the layers' spans.)
    pub stacked: bool,
    /// Its overall request timeout.
    pub timeout: Duration,
    /// Its admission policy: the route's, else none (the listener's applies).
    pub admission: Option<Arc<AdmissionPolicy>>,
    /// Its requests' priority class name, if it sets one.
    pub priority: Option<Arc<str>>,
    /// Its cache.
    pub cache: Option<Arc<RouteCache>>,
    /// Its batcher (`kind = "batch"`).
    pub batch: Option<Arc<BatchRoute>>,
    /// Identity across reloads: host, path prefix, methods and conditions.
    pub key: String,
}

impl RoutePlan {
    /// Whether the route needs nothing beyond the part-1 fast path (given its clusters).
    pub(crate) fn is_plain(&self) -> bool {
        self.admission.is_none() && self.cache.is_none() && self.batch.is_none()
    }

    /// The branch (index into `branches`) this request goes to: by its sticky key, the
    /// split's next step, or the only one. Call once per request that is forwarded.
    pub(crate) fn pick<F: Fields + ?Sized>(&self, fields: &F) -> usize {
        self.split.as_ref().map_or(0, |s| s.pick(fields))
    }
}

/// The effective configuration, compiled; immutable once built.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// Increases by one per applied reload, from 1.
    pub generation: u64,
    /// The configuration as parsed (served by `/config`).
    pub config: Config,
    /// Where it came from.
    pub source: String,
    /// Compiled routes.
    pub routes: RouteTable,
    /// Per config route: its request timeout.
    pub route_timeout: Vec<Duration>,
    /// Per config route: its compiled layers.
    pub route_plans: Vec<RoutePlan>,
    /// Named admission policies, in config order.
    pub admission: Vec<Arc<AdmissionPolicy>>,
    /// Per listener (config order): its admission policy.
    pub listener_admission: Vec<Option<Arc<AdmissionPolicy>>>,
    /// Clusters, in config order.
    pub clusters: Vec<Arc<Cluster>>,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Client header-read timeout.
    pub header_read_timeout: Duration,
    /// Client idle timeout (and upstream pool idle timeout).
    pub idle_timeout: Duration,
    /// Idle timeout of an upgraded (tunnelled) connection.
    pub upgrade_idle_timeout: Duration,
    /// `server.trusted_proxies`: peers whose forwarding fields are believed.
    pub trusted_proxies: Arc<crate::forwarded::TrustedProxies>,
    /// The request-id field (`server.request_id_header`), as the fast path takes it.
    pub request_id: crate::request_id::Policy,
    /// The same field's name for the hyper path; `None` when request ids are off.
    pub request_id_name: Option<http::HeaderName>,
    /// Idle time after which an HTTP/1.1 client connection is parked.
    pub park_timeout: Duration,
    /// Largest request body, if limited.
    pub max_body: Option<u64>,
    /// When it was applied.
    pub loaded_at: Instant,
}

impl Snapshot {
    /// Route `r`'s path prefix and the name of its branch `b`'s cluster, for the labels of
    /// its trace spans.
    pub(crate) fn route_labels(&self, r: usize, b: usize) -> (Option<&str>, Option<&str>) {
        let prefix = self.config.routes.get(r).map(|rc| rc.path_prefix.as_str());
        let cluster = self.branch_cluster(r, b).map(|c| c.name.as_str());
        (prefix, cluster)
    }

    /// The cluster of route `r`'s branch `b`.
    pub(crate) fn branch_cluster(&self, r: usize, b: usize) -> Option<&Arc<Cluster>> {
        let branch = self.route_plans.get(r)?.branches.get(b)?;
        self.clusters.get(branch.cluster)
    }

    /// Compiles a validated config. DNS names are resolved now (blocking); `demo` gives the
    /// bound address of each demo upstream; `old` lends counters to clusters that keep their
    /// name.
    ///
    /// # Errors
    /// A [`ConfigError`] for an endpoint that does not resolve or a demo that is not running.
    pub(crate) fn build(
        config: Config,
        source: &str,
        generation: u64,
        demo: &[DemoInfo],
        old: Option<&Snapshot>,
    ) -> Result<Self, ConfigError> {
        let err = |field: String, problem: String| ConfigError {
            file: source.to_owned(),
            field,
            problem,
        };
        let mut clusters = Vec::with_capacity(config.clusters.len());
        for (ci, cc) in config.clusters.iter().enumerate() {
            let old_cluster = old.and_then(|o| o.clusters.iter().find(|c| c.name == cc.name));
            let demo_addr = |name: &str| demo.iter().find(|d| d.name == name).map(|d| d.addr);
            // A route's own retries need the cluster's layers (the balancer that sends a retry
            // to an endpoint not yet tried), even when the cluster has no section of its own.
            let route_retries = config.routes.iter().any(|r| {
                r.retry.as_ref().is_some_and(|s| s.attempts > 0)
                    && r.branches().any(|(name, _)| name == cc.name)
            });
            let cluster = Cluster::build(
                ci,
                cc,
                route_retries,
                &config.timeouts,
                &config.dns,
                demo_addr,
                old_cluster,
            )
            .map_err(|e| e.in_file(source))?;
            clusters.push(Arc::new(cluster));
        }
        let mut admission: Vec<Arc<AdmissionPolicy>> = Vec::with_capacity(config.admission.len());
        for (i, a) in config.admission.iter().enumerate() {
            let old_policy = old.and_then(|o| o.admission.iter().find(|p| p.name() == a.name));
            admission.push(
                AdmissionPolicy::build(a, old_policy).map_err(|e| ConfigError {
                    file: source.to_owned(),
                    field: format!("admission[{i}].{}", e.field),
                    problem: e.problem,
                })?,
            );
        }
        let policy = |name: &Option<String>| {
            name.as_ref()
                .and_then(|n| admission.iter().find(|p| p.name() == n.as_str()).cloned())
        };
        let listener_admission = config
            .listeners
            .iter()
            .map(|l| policy(&l.admission))
            .collect();
        let routes = RouteTable::new(&config.routes);
        let t = &config.timeouts;
        let route_timeout: Vec<Duration> = config
            .routes
            .iter()
            .map(|r| Duration::from_millis(r.request_timeout_ms.unwrap_or(t.request_ms)))
            .collect();
        let mut route_plans = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            let key = r.key();
            let old_plan = old.and_then(|o| o.route_plans.iter().find(|p| p.key == key));
            let mut branches: Vec<Branch> = Vec::new();
            for (name, weight) in r.branches() {
                let cluster = config
                    .clusters
                    .iter()
                    .position(|c| c.name == name)
                    .unwrap_or(0);
                // Counters and retry budgets stay with the route's key and the cluster's name.
                let old_branch = old.zip(old_plan).and_then(|(o, p)| {
                    p.branches
                        .iter()
                        .find(|b| o.clusters.get(b.cluster).is_some_and(|c| c.name == name))
                });
                let retry = match (&r.retry, &clusters[cluster].layers) {
                    (Some(section), Some(layers)) => Some(
                        RouteRetry::build(
                            section,
                            layers,
                            old_branch.and_then(|b| b.retry.as_ref()),
                            &format!("routes[{i}].retry"),
                        )
                        .map_err(|e| e.in_file(source))?,
                    ),
                    // `attempts = 0` over a cluster without layers: nothing to turn off.
                    _ => None,
                };
                branches.push(Branch {
                    cluster,
                    weight,
                    stats: old_branch.map(|b| b.stats.clone()).unwrap_or_default(),
                    retry,
                });
            }
            let Some(first) = branches.first() else {
                return Err(err(
                    format!("routes[{i}].cluster"),
                    "a route needs `cluster` (or `clusters`, a weighted split)".into(),
                ));
            };
            let cluster = &clusters[first.cluster];
            let cache = match &r.cache {
                Some(c) => Some(
                    RouteCache::build(c, &key, old_plan.and_then(|p| p.cache.as_ref()))
                        .map_err(|e| err(format!("routes[{i}].cache"), e.to_string()))?,
                ),
                None => None,
            };
            let batch = match &r.batch {
                Some(b) if r.kind == super::config::RouteKind::Batch => {
                    let inner = cluster_service(cluster);
                    Some(
                        BatchRoute::build(b, &key, inner, old_plan.and_then(|p| p.batch.as_ref()))
                            .map_err(|e| err(format!("routes[{i}].batch"), e.to_string()))?,
                    )
                }
                _ => None,
            };
            let split = (branches.len() > 1).then(|| {
                let weights: Vec<u32> = branches.iter().map(|b| b.weight).collect();
                Split::new(&weights, r.sticky.as_ref())
            });
            let admission = policy(&r.admission);
            let plain = admission.is_none() && cache.is_none() && batch.is_none();
            let fast = plain
                && branches.iter().all(|b| {
                    let c = &clusters[b.cluster];
                    c.layers.is_none()
                        && c.protocol == UpstreamProtocol::Http1
                        // The fast path's upstream sockets are plain TCP.
                        && c.tls.is_none()
                });
            let stacked = cache.is_none()
                && batch.is_none()
                && branches.iter().all(|b| {
                    let c = &clusters[b.cluster];
                    b.retry.is_none() && c.protocol == UpstreamProtocol::Http1 && c.tls.is_none()
                });
            route_plans.push(RoutePlan {
                branches,
                split,
                fast,
                stacked,
                timeout: route_timeout[i],
                admission,
                priority: r.priority.as_deref().map(Arc::from),
                cache,
                batch,
                key,
            });
        }
        Ok(Self {
            generation,
            route_plans,
            admission,
            listener_admission,
            source: source.to_owned(),
            routes,
            route_timeout,
            clusters,
            connect_timeout: Duration::from_millis(t.connect_ms),
            header_read_timeout: Duration::from_millis(t.header_read_ms),
            idle_timeout: Duration::from_millis(t.idle_ms),
            upgrade_idle_timeout: Duration::from_millis(t.upgrade_idle_ms),
            trusted_proxies: Arc::new(
                crate::forwarded::TrustedProxies::parse(&config.server.trusted_proxies)
                    .map_err(|(i, problem)| err(format!("server.trusted_proxies[{i}]"), problem))?,
            ),
            request_id: crate::request_id::Policy::new(
                &config.server.request_id_header,
                config.server.trust_request_id,
            ),
            request_id_name: http::HeaderName::from_bytes(
                config.server.request_id_header.as_bytes(),
            )
            .ok()
            .filter(|_| !config.server.request_id_header.is_empty()),
            park_timeout: Duration::from_millis(t.park_ms),
            max_body: Some(config.limits.max_body_bytes).filter(|b| *b > 0),
            loaded_at: Instant::now(),
            config,
        })
    }
}

/// A cluster as a service: its layered stack, or round robin when it has none.
pub(crate) fn cluster_service(cluster: &Arc<Cluster>) -> ClusterService {
    match &cluster.layers {
        Some(l) => ClusterService::Layered(l.clone()),
        None => ClusterService::Plain(cluster.clone(), cluster.settings),
    }
}

/// A running demo upstream.
#[derive(Debug, Clone, Serialize)]
pub struct DemoInfo {
    /// Its name.
    pub name: String,
    /// Its behaviour.
    pub kind: DemoKind,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A bound listener.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerInfo {
    /// Its name.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether it terminates TLS.
    pub tls: bool,
}

/// The outcome of the latest reload attempt.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ReloadStatus {
    /// Generation now serving.
    pub generation: u64,
    /// The error of the latest rejected reload, cleared by a successful one.
    pub last_error: Option<String>,
}

/// State shared by every worker and the control thread.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The snapshot serving new requests.
    pub current: ArcSwap<Snapshot>,
    /// Process-wide counters.
    pub stats: Stats,
    /// Set when shutdown starts; `/readyz` then answers 503.
    pub draining: AtomicBool,
    /// Demo upstreams started at launch.
    pub demo: Vec<DemoInfo>,
    /// Listeners bound at launch.
    pub listeners: Vec<ListenerInfo>,
    /// The admin listener, if any.
    pub admin: Option<SocketAddr>,
    /// Runtime mode in effect.
    pub mode: RuntimeMode,
    /// Worker count in effect.
    pub workers: usize,
    /// The config file watched for reloads, if any.
    pub config_path: Option<PathBuf>,
    /// Latest reload outcome.
    pub reload: Mutex<ReloadStatus>,
    /// Process start.
    pub started: Instant,
    /// Notified when a reload applied a new snapshot.
    pub reloaded: tokio::sync::Notify,
    /// Each listener's certificates when it terminates TLS (by listener index); a reload
    /// replaces their contents.
    pub listener_certs: Vec<Option<Arc<crate::tls::listener::ListenerCerts>>>,
    /// The span exporter when `[tracing]` is on (fixed at start); `None` costs nothing.
    pub tracer: Option<Arc<crate::trace::Tracer>>,
}

impl Shared {
    /// Whether shutdown has started.
    pub(crate) fn is_draining(&self) -> bool {
        // Relaxed: a hint for `/readyz` and accept loops; the shutdown itself is signalled
        // through a watch channel.
        self.draining.load(Ordering::Relaxed)
    }
}

/// What one worker thread serves with: its own `Arc` of the current snapshot.
#[derive(Debug)]
pub(crate) struct Local {
    shared_id: usize,
    pub(crate) snap: Arc<Snapshot>,
}

thread_local! {
    static LOCAL: RefCell<Option<Arc<Local>>> = const { RefCell::new(None) };
}

/// This thread's [`Local`] for the current snapshot.
pub(crate) fn local(shared: &Shared) -> Arc<Local> {
    let shared_id = shared as *const Shared as usize;
    let cur = shared.current.load();
    LOCAL.with(|cell| {
        let mut slot = cell.borrow_mut();
        if let Some(l) = slot.as_ref()
            && l.shared_id == shared_id
            && l.snap.generation == cur.generation
        {
            return l.clone();
        }
        let l = Arc::new(Local {
            shared_id,
            snap: arc_swap::Guard::into_inner(cur),
        });
        *slot = Some(l.clone());
        l
    })
}
