//! The `/metrics` text (Prometheus exposition format).
//!
//! Counters and gauges are summed from their shards into a Prometheus recorder made for this
//! scrape, under `metrics::with_local_recorder` (an embedding program's own global recorder is
//! left alone), and the recorder renders them. A fresh recorder per scrape is what drops the
//! series of routes, clusters, endpoints and policies that a reload removed: only what the
//! current snapshot holds is written. The latency histograms are rendered by hand from their
//! fixed buckets ([`crate::histogram`]) and appended.

use crate::histogram::{CLASSES, HistogramSnapshot};
use crate::state::{Shared, Snapshot};
use std::fmt::Write as _;

/// Renders the whole `/metrics` page.
pub(crate) fn render(shared: &Shared) -> String {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let snap = shared.current.load();
    metrics::with_local_recorder(&recorder, || counters(shared, &snap));
    let mut out = handle.render();
    histograms(&mut out, shared, &snap);
    out
}

fn counters(shared: &Shared, snap: &Snapshot) {
    let s = &shared.stats;
    let c = |name: &'static str, v: i64| metrics::counter!(name).absolute(v.max(0) as u64);
    let g = |name: &'static str, v: i64| metrics::gauge!(name).set(v as f64);
    c("tollgate_requests_total", s.requests.sum());
    for (i, class) in CLASSES.into_iter().enumerate() {
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
        // One series per cluster the route sends to (each branch of a split).
        for b in &p.branches {
            let cluster = snap.clusters[b.cluster].name.clone();
            metrics::counter!(
                "tollgate_route_rejected_total",
                "route" => p.key.clone(),
                "cluster" => cluster
            )
            .absolute(b.stats.rejected.sum().max(0) as u64);
            if let Some(r) = &b.retry {
                r.record_metrics(&p.key, &snap.clusters[b.cluster].name);
            }
        }
        if let Some(cache) = &p.cache {
            cache.record_metrics(&p.key);
        }
        if let Some(batch) = &p.batch {
            batch.record_metrics(&p.key);
        }
    }
}

/// One histogram family: its `# HELP` and `# TYPE` lines, then each series with observations
/// (a series appears with its first observation, as a recorder's would).
fn family<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, HistogramSnapshot)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, h) in series {
        if h.count() > 0 {
            h.render(out, name, &labels);
        }
    }
    out.push('\n');
}

fn histograms(out: &mut String, shared: &Shared, snap: &Snapshot) {
    let global = shared.stats.duration.snapshot();
    family(
        out,
        "tollgate_request_duration_seconds",
        "Time from a request's arrival to its response head, every request, by status class.",
        CLASSES
            .iter()
            .zip(global)
            .map(|(c, h)| (vec![("class", *c)], h)),
    );
    let routes: Vec<_> = snap
        .route_plans
        .iter()
        .flat_map(|p| {
            p.branches.iter().map(|b| {
                let cluster = snap.clusters[b.cluster].name.as_str();
                (p.key.as_str(), cluster, b.stats.latency.snapshot())
            })
        })
        .collect();
    family(
        out,
        "tollgate_route_request_duration_seconds",
        "Time from a routed request's arrival to its response head, by route, cluster and status class.",
        routes.iter().flat_map(|(route, cluster, by_class)| {
            CLASSES.iter().zip(by_class).map(move |(c, h)| {
                (
                    vec![("route", *route), ("cluster", *cluster), ("class", *c)],
                    *h,
                )
            })
        }),
    );
    let endpoints: Vec<_> = snap
        .clusters
        .iter()
        .flat_map(|c| {
            c.endpoints
                .load()
                .iter()
                .map(|e| {
                    (
                        c.name.as_str(),
                        e.addr.to_string(),
                        e.stats.latency.snapshot(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    family(
        out,
        "tollgate_endpoint_upstream_duration_seconds",
        "Time from sending a request to an endpoint to its response head or failure.",
        endpoints
            .iter()
            .map(|(c, e, h)| (vec![("cluster", *c), ("endpoint", e.as_str())], *h)),
    );
    let waits: Vec<_> = snap
        .admission
        .iter()
        .flat_map(|a| {
            a.queue_waits()
                .into_iter()
                .map(|(class, h)| (a.name(), class, h))
                .collect::<Vec<_>>()
        })
        .collect();
    family(
        out,
        "tollgate_admission_queue_wait_seconds",
        "Time from reaching an admission policy to being admitted, by policy and class.",
        waits
            .iter()
            .map(|(p, c, h)| (vec![("policy", *p), ("class", *c)], *h)),
    );
}
