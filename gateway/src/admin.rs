//! The admin listener: `/` (the live dashboard), `/metrics` (Prometheus text, `metrics.rs`),
//! `/healthz`, `/readyz`, `/config` (the effective config as JSON), `/state` (JSON) and
//! `/series` (the last minutes of one-second samples, `series.rs`).

mod metrics;
mod series;

use super::demo::Demo;
use super::histogram::HistogramSnapshot;
use super::state::Shared;
use super::stats::clock_ms;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use series::Series;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// Everything the admin pages read.
#[derive(Debug)]
pub(crate) struct Admin {
    /// Gateway state.
    pub shared: Arc<Shared>,
    /// The running demo upstreams, by `shared.demo` order.
    pub demos: Vec<Arc<Demo>>,
    /// The dashboard's recent samples, written by the sampler `serve` starts.
    series: Arc<Mutex<Series>>,
}

impl Admin {
    /// The admin pages over `shared`.
    pub(crate) fn new(shared: Arc<Shared>, demos: Vec<Arc<Demo>>) -> Self {
        Self {
            shared,
            demos,
            series: Arc::default(),
        }
    }
}

/// Serves the admin pages on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    // Dropped (and so stopped) with this task.
    let sampler = tokio::spawn(series::run(admin.shared.clone(), admin.series.clone()));
    let _stop = AbortOnDrop(sampler.abort_handle());
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let admin = admin.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.route(&req)) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// A latency since it was first counted (all of `parts` together): count, p50 and p99 in ms.
fn latency_json(parts: &[HistogramSnapshot]) -> serde_json::Value {
    let mut all = HistogramSnapshot::default();
    for h in parts {
        all.merge(h);
    }
    let ms = |q: f64| all.quantile(q).map(|s| s * 1e3);
    json!({ "count": all.count(), "p50_ms": ms(0.5), "p99_ms": ms(0.99) })
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The dashboard: one self-contained page (no external script, style or font), polling
/// `/state` and `/series` every two seconds while it is visible.
const INDEX: &str = include_str!("admin/dashboard.html");

impl Admin {
    fn route(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let json = "application/json";
        match req.uri().path() {
            "/" => reply(StatusCode::OK, "text/html; charset=utf-8", INDEX.to_owned()),
            "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => {
                if self.shared.is_draining() {
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "draining\n".into(),
                    )
                } else {
                    reply(StatusCode::OK, "text/plain", "ready\n".into())
                }
            }
            "/config" => {
                let snap = self.shared.current.load();
                let body = serde_json::to_string_pretty(&snap.config).unwrap_or_default();
                reply(StatusCode::OK, json, body + "\n")
            }
            "/state" => {
                let body = serde_json::to_string_pretty(&self.state()).unwrap_or_default();
                reply(StatusCode::OK, json, body + "\n")
            }
            "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", self.metrics()),
            "/series" => {
                let since = req.uri().query().and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("since="))
                        .and_then(|v| v.parse().ok())
                });
                let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
                let body = serde_json::to_string(&series.json(since)).unwrap_or_default();
                reply(StatusCode::OK, json, body + "\n")
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }
    }

    /// The `/state` document.
    pub(crate) fn state(&self) -> serde_json::Value {
        let shared = &self.shared;
        let snap = shared.current.load();
        let clusters: Vec<_> = snap
            .clusters
            .iter()
            .map(|c| {
                let eps: Vec<_> = c
                    .endpoints
                    .load()
                    .iter()
                    .map(|e| {
                        json!({
                            "addr": e.addr,
                            "requests": e.stats.requests.sum(),
                            "failures": e.stats.failures.sum(),
                            "latency": latency_json(std::slice::from_ref(&e.stats.latency.snapshot())),
                        })
                    })
                    .collect();
                json!({
                    "name": c.name,
                    "protocol": c.protocol,
                    "requests": c.stats.requests.sum(),
                    "failures": c.stats.failures.sum(),
                    "in_flight": c.stats.in_flight.sum(),
                    "endpoints": eps,
                    "layers": c.layers.as_ref().map(|l| l.state()),
                })
            })
            .collect();
        let routes: Vec<_> = snap
            .route_plans
            .iter()
            .map(|p| {
                let name = |b: &crate::state::Branch| snap.clusters[b.cluster].name.as_str();
                // A split's clusters, with their weights and what each served.
                let split: Option<Vec<_>> = p.split.as_ref().map(|_| {
                    p.branches
                        .iter()
                        .map(|b| {
                            json!({
                                "cluster": name(b),
                                "weight": b.weight,
                                "latency": latency_json(&b.stats.latency.snapshot()),
                            })
                        })
                        .collect()
                });
                let latency: Vec<_> = p
                    .branches
                    .iter()
                    .flat_map(|b| b.stats.latency.snapshot())
                    .collect();
                // `[routes.retry]`: per cluster, the override's counters and budget (`null`
                // where it turns retries off).
                let retry: Option<Vec<_>> =
                    p.branches.iter().any(|b| b.retry.is_some()).then(|| {
                        p.branches
                            .iter()
                            .filter_map(|b| {
                                let r = b.retry.as_ref()?;
                                Some(json!({ "cluster": name(b), "retry": r.state() }))
                            })
                            .collect()
                    });
                json!({
                    "route": p.key,
                    // The cluster, or the split's joined with `+`.
                    "cluster": p.branches.iter().map(name).collect::<Vec<_>>().join("+"),
                    "split": split,
                    "admission": p.admission.as_ref().map(|a| a.name()),
                    "priority": p.priority.as_deref(),
                    "cache": p.cache.as_ref().map(|c| c.state()),
                    "batch": p.batch.as_ref().map(|b| b.state()),
                    "retry": retry,
                    "latency": latency_json(&latency),
                })
            })
            .collect();
        let admission: Vec<_> = snap.admission.iter().map(|a| a.state()).collect();
        let demos: Vec<_> = shared
            .demo
            .iter()
            .zip(&self.demos)
            .map(|(info, d)| {
                json!({ "name": info.name, "kind": info.kind, "addr": info.addr, "served": d.served.sum() })
            })
            .collect();
        let reload = shared.reload.lock().map(|r| r.clone()).unwrap_or_default();
        json!({
            "generation": snap.generation,
            "source": snap.source,
            "config_age_ms": snap.loaded_at.elapsed().as_millis() as u64,
            "uptime_ms": shared.started.elapsed().as_millis() as u64,
            "clock_ms": clock_ms(),
            "mode": shared.mode,
            "workers": shared.workers,
            "draining": shared.is_draining(),
            "listeners": shared.listeners,
            "admin": shared.admin,
            "reload": reload,
            "stats": shared.stats.snapshot(),
            "clusters": clusters,
            "routes": routes,
            "admission": admission,
            "demo": demos,
        })
    }

    /// The `/metrics` text; see `metrics.rs`.
    pub(crate) fn metrics(&self) -> String {
        metrics::render(&self.shared)
    }
}
