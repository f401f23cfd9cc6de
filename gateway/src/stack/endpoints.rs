//! A snapshot's cluster: its configured targets, their resolved addresses with counters (round
//! robin for plain routes), its upstream settings, and its layered stack when it has layer
//! sections.

use super::cluster::ClusterLayers;
use crate::config::{
    ClusterConfig, ConfigError, DnsConfig, Endpoint, TimeoutsConfig, UpstreamProtocol,
};
use crate::pool::{MAX_IDLE_PER_ENDPOINT, Settings};
use crate::stats::{ClusterStats, EndpointStats};
use crate::tls::upstream::ClusterTls;
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
    /// Its share of a weighted cluster's round robin (an SRV record's weight; 1 otherwise).
    pub weight: u32,
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
    /// TLS to the endpoints, when they are `https://`; kept across reloads while its
    /// settings and files stay the same.
    pub tls: Option<Arc<ClusterTls>>,
    /// The resolver for `srv:` targets (`[dns]`).
    dns: DnsConfig,
    /// Whether round robin follows the endpoints' weights (some target is `srv:`).
    weighted: bool,
}

#[derive(Debug, Clone)]
enum Target {
    Static(SocketAddr),
    Dns(String, u16),
    Srv(String),
}

impl Cluster {
    /// Whether any endpoint is a DNS name (A/AAAA or SRV).
    pub(crate) fn has_dns(&self) -> bool {
        self.targets
            .iter()
            .any(|t| matches!(t, Target::Dns(..) | Target::Srv(_)))
    }

    /// Resolves every target now (blocking), reusing endpoint counters by address.
    ///
    /// # Errors
    /// The index of the first target that resolves to nothing, and why.
    pub(crate) fn resolve(&self) -> Result<Vec<Arc<UpEndpoint>>, (usize, String)> {
        let old = self.endpoints.load();
        let mut found: Vec<(SocketAddr, u32)> = Vec::new();
        // Each address's host name, for the TLS server name (none for an IP or an SRV target).
        let mut names: Vec<(SocketAddr, Option<&str>)> = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            let addrs: Vec<(SocketAddr, u32)> = match t {
                Target::Static(a) => vec![(*a, 1)],
                Target::Dns(host, port) => (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| (i, format!("cannot resolve \"{host}\": {e}")))?
                    .map(|a| (a, 1))
                    .collect(),
                Target::Srv(name) => super::srv::lookup(name, &self.dns).map_err(|e| (i, e))?,
            };
            if addrs.is_empty() {
                return Err((i, "resolves to no address".into()));
            }
            for (addr, weight) in addrs {
                // An address named twice is one endpoint; an SRV target's weights add up.
                match found.iter_mut().find(|(a, _)| *a == addr) {
                    Some((_, w)) if matches!(t, Target::Srv(_)) => *w += weight,
                    Some(_) => {}
                    None => found.push((addr, weight)),
                }
                names.push((
                    addr,
                    match t {
                        Target::Dns(host, _) => Some(host.as_str()),
                        Target::Static(_) | Target::Srv(_) => None,
                    },
                ));
            }
        }
        if let Some(tls) = &self.tls {
            tls.set_peers(&names);
        }
        Ok(found
            .into_iter()
            .map(|(addr, weight)| {
                let stats = old
                    .iter()
                    .find(|e| e.addr == addr)
                    .map_or_else(Default::default, |e| e.stats.clone());
                Arc::new(UpEndpoint {
                    addr,
                    stats,
                    weight,
                })
            })
            .collect())
    }

    /// Picks an endpoint round-robin with a per-thread counter (no shared cache line); in a
    /// weighted cluster each endpoint gets `weight` consecutive turns of every round.
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
        let i = if self.weighted {
            weighted_turn(&eps, n)
        } else {
            n % eps.len()
        };
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

/// The endpoint whose turn the `n`th pick of a weighted round is.
fn weighted_turn(eps: &[Arc<UpEndpoint>], n: usize) -> usize {
    let total: u64 = eps.iter().map(|e| u64::from(e.weight)).sum();
    if total == 0 {
        return n % eps.len();
    }
    let mut at = n as u64 % total;
    for (i, e) in eps.iter().enumerate() {
        match at.checked_sub(u64::from(e.weight)) {
            Some(rest) => at = rest,
            None => return i,
        }
    }
    0
}

impl Cluster {
    /// Builds `clusters[ci]` of a new snapshot, keeping the counters, resolved endpoints and
    /// layer state of `old` (the cluster of that name in the running snapshot); `demo_addr`
    /// gives a running demo upstream's address. `route_retries`: some route has its own
    /// retries over this cluster, which need its layers even without a section of its own.
    ///
    /// # Errors
    /// A [`ConfigError`] (its file left empty) for an endpoint that does not resolve or a demo
    /// that is not running.
    pub(crate) fn build(
        ci: usize,
        cc: &ClusterConfig,
        route_retries: bool,
        timeouts: &TimeoutsConfig,
        dns: &DnsConfig,
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
                    Endpoint::Srv(name) => Target::Srv(name),
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
        let tls = if cc.endpoints.iter().any(|ep| Endpoint::is_tls(ep)) {
            let built =
                ClusterTls::build(cc.tls.as_ref(), cc.protocol, &format!("clusters[{ci}].tls"))?;
            let kept = old_cluster
                .and_then(|c| c.tls.clone())
                .filter(|t| t.id() == built.id());
            Some(kept.unwrap_or_else(|| Arc::new(built)))
        } else {
            None
        };
        let layers = if ClusterLayers::wanted(cc) || route_retries {
            Some(ClusterLayers::build(
                cc,
                settings,
                tls.clone(),
                old_cluster.and_then(|c| c.layers.as_ref()),
            )?)
        } else {
            None
        };
        let weighted = targets.iter().any(|t| matches!(t, Target::Srv(_)));
        let cluster = Self {
            dns: dns.clone(),
            weighted,
            layers,
            settings,
            tls,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(weights: &[u32]) -> Vec<Arc<UpEndpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(UpEndpoint {
                    addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                    stats: Default::default(),
                    weight: *w,
                })
            })
            .collect()
    }

    #[test]
    fn weighted_turns_follow_the_weights() {
        let turns = |w: &[u32], n: usize| -> Vec<usize> {
            let e = eps(w);
            (0..n).map(|i| weighted_turn(&e, i)).collect()
        };
        assert_eq!(turns(&[3, 1], 8), [0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(
            turns(&[0, 2, 1], 6),
            [1, 1, 2, 1, 1, 2],
            "weight 0 gets no turn"
        );
        assert_eq!(turns(&[0, 0], 4), [0, 1, 0, 1], "all 0: equal turns");
    }
}
