//! A recording inner service for the behaviour tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tollgate_admission::{Admission, AdmissionConfig, AdmissionHandle, AdmissionLayer, Ticket};
use tollgate_core::BoxError;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tower_layer::Layer;
use tower_service::Service;

/// A request: its ticket, how long the backend takes, and an id echoed back.
#[derive(Debug, Clone)]
pub struct Job {
    pub ticket: Ticket,
    pub work: Duration,
    pub id: u64,
}

impl Job {
    pub fn new(class: usize, work_ms: u64, id: u64) -> Self {
        Self {
            ticket: Ticket::new(class),
            work: Duration::from_millis(work_ms),
            id,
        }
    }
}

pub type Inner = BoxCloneSyncService<Job, u64, BoxError>;
pub type Svc = Admission<Inner, fn(&Job) -> Ticket>;

/// The ids the backend started, in order.
#[derive(Debug, Clone, Default)]
pub struct Log(Arc<Mutex<Vec<u64>>>);

impl Log {
    pub fn started(&self) -> Vec<u64> {
        self.0.lock().unwrap().clone()
    }
}

pub fn backend(log: Log) -> Inner {
    BoxCloneSyncService::new(tower::service_fn(move |job: Job| {
        log.0.lock().unwrap().push(job.id);
        async move {
            tokio::time::sleep(job.work).await;
            Ok::<_, BoxError>(job.id)
        }
    }))
}

fn ticket(job: &Job) -> Ticket {
    job.ticket
}

pub fn build(config: AdmissionConfig) -> (Svc, AdmissionHandle, Log) {
    let log = Log::default();
    let layer = AdmissionLayer::new(config)
        .unwrap()
        .prioritize(ticket as fn(&Job) -> Ticket);
    let handle = layer.handle();
    (layer.layer(backend(log.clone())), handle, log)
}

/// Readies a clone and calls it, returning the spawned response task.
pub async fn send(svc: &Svc, job: Job) -> tokio::task::JoinHandle<Result<u64, BoxError>> {
    let fut = svc.clone().ready_oneshot().await.unwrap().call(job);
    let handle = tokio::spawn(fut);
    // Let the task run its first poll (join its queue).
    tokio::task::yield_now().await;
    handle
}

pub async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}
