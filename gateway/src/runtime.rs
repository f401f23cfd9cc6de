//! Threads and runtimes: the proxy workers (thread-per-core or one multi-thread runtime) and the
//! control thread (admin pages, demo upstreams, DNS refresh, config file watch).

use super::admin::{self, Admin};
use super::demo::{self, Demo};
use super::server;
use super::state::Shared;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

/// The bound sockets of one worker: one per configured listener.
pub(crate) type WorkerSockets = Vec<(std::net::TcpListener, Option<TlsAcceptor>)>;

/// Runs the accept loops of `sockets` on the current runtime until shutdown, then drains for at
/// most the configured deadline.
async fn worker_main(sockets: WorkerSockets, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let tracker = TaskTracker::new();
    let mut loops = Vec::new();
    for (index, (std_listener, tls)) in sockets.into_iter().enumerate() {
        match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => loops.push(tokio::spawn(server::accept_loop(
                index,
                l,
                tls,
                shared.clone(),
                shutdown.clone(),
                tracker.clone(),
            ))),
            Err(e) => tracing::error!(error = %e, "cannot register listener"),
        }
    }
    for l in loops {
        let _ = l.await;
    }
    tracker.close();
    let deadline = shared.current.load().config.drain_timeout();
    if tokio::time::timeout(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = tracker.len(),
            "drain deadline passed; closing remaining connections"
        );
    }
}

/// Starts `sockets.len()` thread-per-core workers, each with its own current-thread runtime.
///
/// # Errors
/// If a thread or runtime cannot be created.
pub(crate) fn spawn_thread_per_core(
    sockets: Vec<WorkerSockets>,
    shared: &Arc<Shared>,
    shutdown: &watch::Receiver<bool>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::new();
    for (i, s) in sockets.into_iter().enumerate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("tollgate-w{i}"))
                .spawn(move || rt.block_on(worker_main(s, shared, shutdown)))?,
        );
    }
    Ok(handles)
}

/// Starts one multi-thread runtime with `workers` threads serving `sockets`.
///
/// # Errors
/// If the runtime or its driver thread cannot be created.
pub(crate) fn spawn_multi_thread(
    workers: usize,
    sockets: WorkerSockets,
    shared: &Arc<Shared>,
    shutdown: &watch::Receiver<bool>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("tollgate-mt")
        .enable_all()
        .build()?;
    let shared = shared.clone();
    let shutdown = shutdown.clone();
    let handle = std::thread::Builder::new()
        .name("tollgate-mt-main".into())
        .spawn(move || {
            rt.block_on(worker_main(sockets, shared, shutdown));
            rt.shutdown_timeout(Duration::from_millis(100));
        })?;
    Ok(vec![handle])
}

/// What the control thread runs.
pub(crate) struct Control {
    /// Admin listener and what it reads.
    pub admin: Option<(std::net::TcpListener, Arc<Admin>)>,
    /// Demo upstreams and their listeners.
    pub demos: Vec<(std::net::TcpListener, Arc<Demo>)>,
    /// Called every second to poll the config file for changes.
    pub watch: Option<Box<dyn FnMut() + Send>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("admin", &self.admin.as_ref().map(|(l, _)| l))
            .field("demos", &self.demos.len())
            .field("watch", &self.watch.is_some())
            .finish()
    }
}

/// Starts the control thread; it runs until `shutdown` turns true and every worker is done
/// (signalled by `workers_done`), so demo upstreams keep answering while the proxy drains.
///
/// # Errors
/// If the thread or runtime cannot be created.
pub(crate) fn spawn_control(
    control: Control,
    shared: Arc<Shared>,
    mut workers_done: watch::Receiver<bool>,
) -> std::io::Result<JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("tollgate-control".into())
        .spawn(move || {
            rt.block_on(async move {
                let Control {
                    admin,
                    demos,
                    watch,
                } = control;
                if let Some((l, a)) = admin {
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => drop(tokio::spawn(admin::serve(l, a))),
                        Err(e) => tracing::error!(error = %e, "cannot register admin listener"),
                    }
                }
                for (l, d) in demos {
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => drop(tokio::spawn(demo::serve(l, d))),
                        Err(e) => tracing::error!(error = %e, "cannot register demo listener"),
                    }
                }
                tokio::spawn(refresh_dns(shared.clone()));
                if let Some(mut watch) = watch {
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(Duration::from_secs(1));
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        loop {
                            tick.tick().await;
                            // Reload resolves DNS names, which blocks: keep it off this thread's
                            // event loop so admin pages and demos stay responsive.
                            match tokio::task::spawn_blocking(move || {
                                watch();
                                watch
                            })
                            .await
                            {
                                Ok(w) => watch = w,
                                Err(_) => return,
                            }
                        }
                    });
                }
                let _ = workers_done.wait_for(|done| *done).await;
            });
            // Dropping the runtime cancels the admin, demo and refresh tasks.
            drop(rt);
        })
}

/// Re-resolves DNS endpoints of the current snapshot's clusters when each is due.
async fn refresh_dns(shared: Arc<Shared>) {
    // Health-check tasks started here, by the address of their stack.
    let mut health: Vec<(usize, tokio::task::AbortHandle)> = Vec::new();
    loop {
        let snap = shared.current.load_full();
        let mut next = tokio::time::Instant::now() + Duration::from_secs(1);
        // Health checks run on this (the control) thread's runtime: a reload that builds a new
        // stack gets its checks started here within a second, and the checks of a stack that
        // left the snapshot stop (a worker may keep the old snapshot until its next request).
        let stacks: Vec<&Arc<super::stack::cluster::ClusterLayers>> = snap
            .clusters
            .iter()
            .filter_map(|c| c.layers.as_ref())
            .collect();
        health.retain(|(at, task)| {
            let current = stacks.iter().any(|l| Arc::as_ptr(l) as usize == *at);
            if !current {
                task.abort();
            }
            current
        });
        for layers in &stacks {
            if let Some(task) = layers.ensure_health_checks() {
                health.push((Arc::as_ptr(layers) as usize, task));
            }
        }
        for c in snap.clusters.iter().filter(|c| c.has_dns()) {
            let due = *c.next_resolve.lock().unwrap_or_else(|e| e.into_inner());
            if due <= tokio::time::Instant::now() {
                let cluster = c.clone();
                let result = tokio::task::spawn_blocking(move || {
                    let r = cluster.resolve();
                    (cluster, r)
                })
                .await;
                if let Ok((cluster, r)) = result {
                    match r {
                        Ok(eps) => {
                            if let Some(layers) = &cluster.layers {
                                layers.sync_endpoints(&super::stack::endpoints::counted(&eps));
                            }
                            cluster.endpoints.store(Arc::new(eps));
                        }
                        Err((i, e)) => tracing::warn!(
                            cluster = %cluster.name,
                            endpoint = i,
                            error = %e,
                            "dns refresh failed; keeping previous addresses"
                        ),
                    }
                    *cluster
                        .next_resolve
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) =
                        tokio::time::Instant::now() + cluster.resolve_interval;
                }
            } else {
                next = next.min(due);
            }
        }
        drop(snap);
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = shared.reloaded.notified() => {}
        }
    }
}
