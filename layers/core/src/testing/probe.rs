use crate::BoxError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tower_service::Service;

/// What a [`Probe`] should do with a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProbeRequest {
    /// Answer `Ok(n)` at once.
    Ok(u64),
    /// Answer `Ok(n)` after the delay (tokio time, so paused-time tests control it).
    Delay(Duration, u64),
    /// Answer `Err(ProbeError(n))` at once.
    Fail(u64),
    /// Panic when the response future is first polled.
    Panic,
    /// Never answer.
    Hang,
}

/// The error a [`Probe`] answers to [`ProbeRequest::Fail`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeError(pub u64);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "probe failure {}", self.0)
    }
}

impl std::error::Error for ProbeError {}

#[derive(Debug, Default)]
struct Shared {
    unready: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A controllable inner service. See the [module docs](super).
#[derive(Debug)]
pub struct Probe {
    shared: Arc<Shared>,
    readied: bool,
}

/// Controls and observes every clone of one [`Probe`].
#[derive(Debug, Clone)]
pub struct ProbeHandle {
    shared: Arc<Shared>,
}

impl Probe {
    /// A ready probe and its handle.
    pub fn new() -> (Probe, ProbeHandle) {
        let shared = Arc::new(Shared::default());
        (
            Probe {
                shared: shared.clone(),
                readied: false,
            },
            ProbeHandle { shared },
        )
    }
}

impl Clone for Probe {
    /// A clone starts unready: it must be polled ready itself before it is called.
    fn clone(&self) -> Self {
        Probe {
            shared: self.shared.clone(),
            readied: false,
        }
    }
}

impl ProbeHandle {
    /// Makes every clone ready (waking tasks waiting on `poll_ready`) or unready.
    pub fn set_ready(&self, ready: bool) {
        // SeqCst: pairs with the load in `poll_ready` after it registers its waker, so a waiter
        // either sees the new state or is in the list we wake.
        self.shared.unready.store(!ready, Ordering::SeqCst);
        if ready {
            for w in self.shared.waiters.lock().unwrap().drain(..) {
                w.wake();
            }
        }
    }

    /// How many requests reached the probe.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Requests whose response future is still alive.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Service<ProbeRequest> for Probe {
    type Response = u64;
    type Error = BoxError;
    type Future = ProbeFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.shared.unready.load(Ordering::SeqCst) {
            self.shared.waiters.lock().unwrap().push(cx.waker().clone());
            if self.shared.unready.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        self.readied = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ProbeRequest) -> ProbeFuture {
        assert!(
            std::mem::take(&mut self.readied),
            "probe: call on an instance that was not polled ready (a clone starts unready)"
        );
        self.shared.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let sleep = match &req {
            ProbeRequest::Delay(d, _) => Some(Box::pin(tokio::time::sleep(*d))),
            _ => None,
        };
        ProbeFuture {
            req,
            sleep,
            shared: self.shared.clone(),
        }
    }
}

/// The response future of a [`Probe`].
#[derive(Debug)]
pub struct ProbeFuture {
    req: ProbeRequest,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    shared: Arc<Shared>,
}

impl Drop for ProbeFuture {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Future for ProbeFuture {
    type Output = Result<u64, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.req {
            ProbeRequest::Ok(n) => Poll::Ready(Ok(n)),
            ProbeRequest::Fail(n) => Poll::Ready(Err(Box::new(ProbeError(n)))),
            ProbeRequest::Panic => panic!("probe: asked to panic"),
            ProbeRequest::Hang => Poll::Pending,
            ProbeRequest::Delay(_, n) => {
                let sleep = self.sleep.as_mut().expect("delay requests carry a timer");
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Ok(n)),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}
