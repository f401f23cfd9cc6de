//! A snapshot's cluster: its configured targets, their resolved addresses with counters (round
//! robin for plain routes), its upstream settings, and its layered stack when it has layer
//! sections.

use super::cluster::ClusterLayers;
use crate::config::{ClusterConfig, ConfigError, Endpoint, TimeoutsConfig, UpstreamProtocol};
use crate::pool::{MAX_IDLE_PER_ENDPOINT, Settings};
use crate::stats::{ClusterStats, EndpointStats};
use arc_swap::ArcSwap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// One resolved upstream address.
#[derive(Debug)]
pub(crate) struct UpEndpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Counters, kept while the address stays in the cluster.
    pub stats: Arc<EndpointStats>,
}

/// An upstream cluster of a snapshot.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// Its name.
    pub name: String,
    /// Protocol to its endpoints.
    pub protocol: UpstreamProtocol,
    /// Forward the client's `Host`.
    pub preserve_host: bool,
    /// The configured endpoints, demo names already replaced by addresses.
    targets: Vec<Target>,
    /// Resolved endpoints; replaced by DNS refresh.
    pub endpoints: ArcSwap<Vec<Arc<UpEndpoint>>>,
    /// DNS refresh period.
    pub resolve_interval: Duration,
    /// When DNS names are next resolved.
    pub next_resolve: Mutex<Instant>,
    /// Counters, kept across reloads while the name stays.
    pub stats: Arc<ClusterStats>,
    /// The layered stack, when the cluster has any layer section; kept across reloads while
    /// the cluster's name and sections stay the same.
    pub layers: Option<Arc<ClusterLayers>>,
    /// Upstream connection settings.
    pub settings: Settings,
}

#[derive(Debug, Clone)]
enum Target {
    Static(SocketAddr),
    Dns(String, u16),
}

impl Cluster {
    /// Whether any endpoint is a DNS name.
    pub(crate) fn has_dns(&self) -> bool {
        self.targets.iter().any(|t| matches!(t, Target::Dns(..)))
    }

    /// Resolves every target now (blocking), reusing endpoint counters by address.
    ///
    /// # Errors
    /// The index of the first target that resolves to nothing, and why.
    pub(crate) fn resolve(&self) -> Result<Vec<Arc<UpEndpoint>>, (usize, String)> {
        let old = self.endpoints.load();
        let mut out: Vec<Arc<UpEndpoint>> = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            let addrs: Vec<SocketAddr> = match t {
                Target::Static(a) => vec![*a],
                Target::Dns(host, port) => (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| (i, format!("cannot resolve \"{host}\": {e}")))?
                    .collect(),
            };
            if addrs.is_empty() {
                return Err((i, "resolves to no address".into()));
            }
            for addr in addrs {
                if out.iter().any(|e| e.addr == addr) {
                    continue;
                }
                let stats = old
                    .iter()
                    .find(|e| e.addr == addr)
                    .map_or_else(Default::default, |e| e.stats.clone());
                out.push(Arc::new(UpEndpoint { addr, stats }));
            }
        }
        Ok(out)
    }

    /// Picks an endpoint round-robin with a per-thread counter (no shared cache line).
    pub(crate) fn pick(&self) -> Option<(usize, SocketAddr)> {
        thread_local! {
            static NEXT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        }
        let eps = self.endpoints.load();
        if eps.is_empty() {
            return None;
        }
        let n = NEXT.with(|c| {
            let n = c.get();
            c.set(n.wrapping_add(1));
            n
        });
        let i = n % eps.len();
        eps[i].stats.requests.incr();
        Some((i, eps[i].addr))
    }

    /// Counts an exchange's time against the endpoint picked as `(index, addr)`, if it is still
    /// there.
    pub(crate) fn endpoint_latency(&self, index: usize, addr: SocketAddr, took: Duration) {
        let eps = self.endpoints.load();
        if let Some(e) = eps.get(index).filter(|e| e.addr == addr) {
            e.stats.latency.record(took);
        }
    }

    /// Counts a failure against the endpoint picked as `(index, addr)`, if it is still there.
    pub(crate) fn endpoint_failed(&self, index: usize, addr: SocketAddr) {
        let eps = self.endpoints.load();
        if let Some(e) = eps.get(index).filter(|e| e.addr == addr) {
            e.stats.failures.incr();
        }
    }
}

impl Cluster {
    /// Builds `clusters[ci]` of a new snapshot, keeping the counters, resolved endpoints and
    /// layer state of `old` (the cluster of that name in the running snapshot); `demo_addr`
    /// gives a running demo upstream's address.
    ///
    /// # Errors
    /// A [`ConfigError`] (its file left empty) for an endpoint that does not resolve or a demo
    /// that is not running.
    pub(crate) fn build(
        ci: usize,
        cc: &ClusterConfig,
        timeouts: &TimeoutsConfig,
        demo_addr: impl Fn(&str) -> Option<SocketAddr>,
        old_cluster: Option<&Arc<Cluster>>,
    ) -> Result<Self, ConfigError> {
        let mut targets = Vec::new();
        for (j, ep) in cc.endpoints.iter().enumerate() {
            let field = || format!("clusters[{ci}].endpoints[{j}]");
            targets.push(
                match Endpoint::parse(ep).map_err(|p| ConfigError::new(field(), p))? {
                    Endpoint::Static(a) => Target::Static(a),
                    Endpoint::Dns(h, p) => Target::Dns(h, p),
                    Endpoint::Demo(name) => match demo_addr(&name) {
                        Some(addr) => Target::Static(addr),
                        None => {
                            return Err(ConfigError::new(
                                field(),
                                format!(
                                    "demo upstream \"{name}\" is not running (restart to add demos)"
                                ),
                            ));
                        }
                    },
                },
            );
        }
        let settings = Settings {
            connect_timeout: Duration::from_millis(timeouts.connect_ms),
            idle_timeout: Duration::from_millis(timeouts.idle_ms),
            max_idle: MAX_IDLE_PER_ENDPOINT,
        };
        let layers = if ClusterLayers::wanted(cc) {
            Some(ClusterLayers::build(
                cc,
                settings,
                old_cluster.and_then(|c| c.layers.as_ref()),
            )?)
        } else {
            None
        };
        let cluster = Self {
            layers,
            settings,
            name: cc.name.clone(),
            protocol: cc.protocol,
            preserve_host: cc.preserve_host,
            targets,
            endpoints: ArcSwap::from_pointee(
                old_cluster
                    .map(|c| c.endpoints.load().to_vec())
                    .unwrap_or_default(),
            ),
            resolve_interval: Duration::from_millis(cc.resolve_interval_ms),
            next_resolve: Mutex::new(
                Instant::now() + Duration::from_millis(cc.resolve_interval_ms),
            ),
            stats: old_cluster.map(|c| c.stats.clone()).unwrap_or_default(),
        };
        let resolved = cluster
            .resolve()
            .map_err(|(j, p)| ConfigError::new(format!("clusters[{ci}].endpoints[{j}]"), p))?;
        if let Some(layers) = &cluster.layers {
            layers.sync_endpoints(&counted(&resolved));
        }
        cluster.endpoints.store(Arc::new(resolved));
        Ok(cluster)
    }
}

/// Each endpoint's address and counters, for [`ClusterLayers::sync_endpoints`].
pub(crate) fn counted(endpoints: &[Arc<UpEndpoint>]) -> Vec<(SocketAddr, Arc<EndpointStats>)> {
    endpoints
        .iter()
        .map(|e| (e.addr, e.stats.clone()))
        .collect()
}
