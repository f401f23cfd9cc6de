//! A scriptable origin for the scenario tests.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tollgate_cache::{Cacheability, FnPolicy, Freshness};
use tollgate_core::BoxError;
use tower_service::Service;

/// What the origin answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    /// Key and the origin's call number when it produced it.
    Found(u64, usize),
    /// Keys from 1000 up do not exist.
    NotFound,
    /// A 5xx-style answer.
    ServerError,
}

#[derive(Debug, Default)]
pub struct State {
    pub calls: AtomicUsize,
    /// Answer `Err` to everything.
    pub fail: AtomicBool,
    /// Answer `Resp::ServerError` to everything.
    pub server_error: AtomicBool,
    /// Milliseconds every call takes.
    pub delay_ms: AtomicU64,
    /// Milliseconds the next call takes instead (once).
    pub next_delay_ms: AtomicU64,
}

#[derive(Debug, Clone, Default)]
pub struct Origin(pub Arc<State>);

impl Origin {
    pub fn calls(&self) -> usize {
        self.0.calls.load(Ordering::SeqCst)
    }
    pub fn set_fail(&self, v: bool) {
        self.0.fail.store(v, Ordering::SeqCst);
    }
    pub fn set_server_error(&self, v: bool) {
        self.0.server_error.store(v, Ordering::SeqCst);
    }
    pub fn set_delay(&self, d: Duration) {
        self.0
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }
    pub fn set_next_delay(&self, d: Duration) {
        self.0
            .next_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Service<u64> for Origin {
    type Response = Resp;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, key: u64) -> Self::Future {
        let s = self.0.clone();
        let n = s.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let once = s.next_delay_ms.swap(0, Ordering::SeqCst);
        let delay = Duration::from_millis(if once > 0 {
            once
        } else {
            s.delay_ms.load(Ordering::SeqCst)
        });
        let fail = s.fail.load(Ordering::SeqCst);
        let server_error = s.server_error.load(Ordering::SeqCst);
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if fail {
                return Err("origin down".into());
            }
            if server_error {
                return Ok(Resp::ServerError);
            }
            Ok(if key >= 1000 {
                Resp::NotFound
            } else {
                Resp::Found(key, n)
            })
        })
    }
}

pub type Policy = FnPolicy<u64, Resp, fn(&u64) -> Option<u64>, fn(&Resp) -> Cacheability>;

fn key(k: &u64) -> Option<u64> {
    Some(*k)
}

fn classify(r: &Resp) -> Cacheability {
    match r {
        Resp::Found(..) => Cacheability::Store(Freshness::default()),
        Resp::NotFound => Cacheability::Negative,
        Resp::ServerError => Cacheability::Error,
    }
}

/// Keys are the request; found answers take the config's windows.
pub fn policy() -> Policy {
    FnPolicy::new(
        key as fn(&u64) -> Option<u64>,
        classify as fn(&Resp) -> Cacheability,
    )
}

pub const HOUR: Duration = Duration::from_secs(3600);

/// One request through a clone of `svc`, bounded by a virtual hour.
pub async fn get<S>(svc: &S, key: u64) -> Result<Resp, BoxError>
where
    S: Service<u64, Response = Resp, Error = BoxError> + Clone,
{
    use tower::ServiceExt;
    tokio::time::timeout(HOUR, svc.clone().oneshot(key))
        .await
        .expect("request still pending after a virtual hour")
}
