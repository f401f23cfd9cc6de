//! The admin listener: `/` (a page that polls `/state`), `/metrics` (Prometheus text),
//! `/healthz`, `/readyz`, `/config` (the effective config as JSON) and `/state` (JSON).

use super::demo::Demo;
use super::state::Shared;
use super::stats::prometheus;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Everything the admin pages read.
#[derive(Debug)]
pub(crate) struct Admin {
    /// Gateway state.
    pub shared: Arc<Shared>,
    /// The running demo upstreams, by `shared.demo` order.
    pub demos: Vec<Arc<Demo>>,
}

/// Serves the admin pages on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, admin: Arc<Admin>) {
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

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

const INDEX: &str = r#"<!doctype html><meta charset="utf-8"><title>tollgate admin</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em}</style>
<h1>tollgate</h1>
<p><a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a>
· <a href="/config">/config</a> · <a href="/state">/state</a></p>
<h2>live state</h2><pre id="s">loading…</pre>
<script>
async function tick(){try{const r=await fetch('/state');document.getElementById('s').textContent=
JSON.stringify(await r.json(),null,2)}catch(e){document.getElementById('s').textContent=String(e)}}
tick();setInterval(tick,1000);
</script>
"#;

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
                json!({
                    "route": p.key,
                    "cluster": snap.clusters[p.cluster].name,
                    "admission": p.admission.as_ref().map(|a| a.name()),
                    "priority": p.priority.as_deref(),
                    "cache": p.cache.as_ref().map(|c| c.state()),
                    "batch": p.batch.as_ref().map(|b| b.state()),
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

    /// The `/metrics` text: sharded counters are summed into the Prometheus recorder, then the
    /// handle renders.
    pub(crate) fn metrics(&self) -> String {
        let (recorder, handle) = prometheus();
        let s = &self.shared.stats;
        let snap = self.shared.current.load();
        metrics::with_local_recorder(recorder, || {
            let c = |name: &'static str, v: i64| metrics::counter!(name).absolute(v.max(0) as u64);
            let g = |name: &'static str, v: i64| metrics::gauge!(name).set(v as f64);
            c("tollgate_requests_total", s.requests.sum());
            for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].into_iter().enumerate() {
                metrics::counter!("tollgate_responses_total", "class" => class)
                    .absolute(s.responses[i].sum().max(0) as u64);
            }
            g("tollgate_requests_in_flight", s.in_flight.sum());
            g("tollgate_connections_open", s.connections_open.sum());
            g("tollgate_connections_parked", s.connections_parked.sum());
            c("tollgate_connections_total", s.connections_total.sum());
            c(
                "tollgate_connections_timed_out_total",
                s.connections_timed_out.sum(),
            );
            c(
                "tollgate_connections_over_budget_total",
                s.connections_over_budget.sum(),
            );
            c("tollgate_upgrades_total", s.upgrades_total.sum());
            g("tollgate_upgrades_open", s.upgrades_open.sum());
            c(
                "tollgate_upstream_connect_errors_total",
                s.upstream_connect_errors.sum(),
            );
            c(
                "tollgate_upstream_timeouts_total",
                s.upstream_timeouts.sum(),
            );
            c("tollgate_upstream_resets_total", s.upstream_resets.sum());
            c("tollgate_unrouted_total", s.unrouted.sum());
            c("tollgate_body_too_large_total", s.body_too_large.sum());
            c(
                "tollgate_request_duration_microseconds_sum",
                s.duration_us.sum(),
            );
            c("tollgate_reloads_total", s.reloads_ok.sum());
            c("tollgate_reloads_failed_total", s.reloads_failed.sum());
            g("tollgate_config_generation", snap.generation as i64);
            for cl in &snap.clusters {
                let name = cl.name.clone();
                metrics::counter!("tollgate_cluster_requests_total", "cluster" => name.clone())
                    .absolute(cl.stats.requests.sum().max(0) as u64);
                metrics::counter!("tollgate_cluster_failures_total", "cluster" => name.clone())
                    .absolute(cl.stats.failures.sum().max(0) as u64);
                metrics::gauge!("tollgate_cluster_in_flight", "cluster" => name)
                    .set(cl.stats.in_flight.sum() as f64);
                if let Some(layers) = &cl.layers {
                    layers.record_metrics();
                }
            }
            c("tollgate_rejected_total", s.rejected.sum());
            for a in &snap.admission {
                a.record_metrics();
            }
            for p in &snap.route_plans {
                if let Some(cache) = &p.cache {
                    cache.record_metrics(&p.key);
                }
                if let Some(batch) = &p.batch {
                    batch.record_metrics(&p.key);
                }
            }
        });
        handle.render()
    }
}
