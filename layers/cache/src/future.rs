//! The response future: a hit is ready at once; a miss walks L3, single-flight and the inner
//! service as a small state machine (no boxed future except an L3 read).

use crate::entry::{Entry, Lifetimes, Phase};
use crate::flight::Signal;
use crate::policy::{CachePolicy, CachePolicyFor, Cacheability};
use crate::tiers::{RemoteGet, Tiers};
use pin_project::pin_project;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

/// This request's part in its key's flight.
pub(crate) enum Role<V> {
    /// Not in a flight (a bypass after a wait timed out, or the flight ended).
    Alone,
    /// Leads flight `id`: must end it.
    Leader(u64),
    /// Waits on the leader.
    Waiter(oneshot::Receiver<Signal<V>>),
}

/// A miss in progress: what it needs to call the inner service, store the answer and end its
/// flight. Dropping it (a dropped future, a panic) ends the flight as a failure, so a waiter
/// takes over.
pub(crate) struct Miss<S, Req, P: CachePolicy> {
    pub(crate) tiers: Arc<Tiers<P::Key, P::Value>>,
    pub(crate) policy: Arc<P>,
    pub(crate) key: P::Key,
    pub(crate) hash: u64,
    /// The key's invalidation counter before the look-up.
    pub(crate) epoch: u64,
    pub(crate) req: Option<Req>,
    /// An inner service already polled ready, for a waiter that takes over or a leader that
    /// reads L3 first.
    pub(crate) svc: Option<S>,
    /// An expired entry still inside its stale-if-error window.
    pub(crate) stale: Option<Arc<Entry<P::Value>>>,
    pub(crate) role: Role<P::Value>,
}

impl<S, Req, P: CachePolicy> Miss<S, Req, P> {
    fn complete(&mut self, value: &P::Value, error: bool) {
        if let Role::Leader(id) = std::mem::replace(&mut self.role, Role::Alone) {
            let served = self
                .tiers
                .flights
                .complete(self.hash, &self.key, id, value, error);
            self.tiers.stats.coalesced.add(served as i64);
        }
    }

    fn fail(&mut self) {
        match std::mem::replace(&mut self.role, Role::Alone) {
            Role::Leader(id) => self.tiers.flights.fail(self.hash, &self.key, id),
            Role::Waiter(mut rx) => {
                // Refuse further signals, then pass on a leadership that arrived unread.
                rx.close();
                if let Ok(Signal::Lead(id)) = rx.try_recv() {
                    self.tiers.flights.fail(self.hash, &self.key, id);
                }
            }
            Role::Alone => {}
        }
    }

    /// The stale entry's value and age, if it may stand in for a failure at `now`.
    fn stale_for_error(&self, now: Instant) -> Option<(&P::Value, Duration)> {
        self.stale
            .as_ref()
            .filter(|e| e.usable_on_error(now))
            .map(|e| (&e.value, now.saturating_duration_since(e.stored_at)))
    }
}

impl<S, Req, P: CachePolicy> Drop for Miss<S, Req, P> {
    fn drop(&mut self) {
        self.fail();
    }
}

/// Ends a leader's (or a lone caller's) call: classify, store, share, or fall back to stale.
pub(crate) fn finish<P, S, Req, Res, E>(
    miss: &mut Miss<S, Req, P>,
    out: Result<Res, E>,
    delta: Duration,
) -> Result<Res, E>
where
    P: CachePolicyFor<Req, Res>,
{
    let tiers = miss.tiers.clone();
    let policy = miss.policy.clone();
    let now = Instant::now();
    match out {
        Ok(res) => {
            let class = policy.classify(&res);
            if class == Cacheability::Error
                && let Some((v, age)) = miss.stale_for_error(now)
            {
                tracing::trace!(
                    hash = miss.hash,
                    ?age,
                    "cache: error response, serving stale"
                );
                tiers.stats.stale_if_error.incr();
                let res = policy.to_response_aged(v, age);
                miss.fail();
                return Ok(res);
            }
            let life = Lifetimes::of(class, &tiers.cfg);
            if life.is_none() && !matches!(miss.role, Role::Leader(_)) {
                return Ok(res);
            }
            let value = policy.to_value(res);
            if let Some(life) = life {
                let weight = policy.weight(&miss.key, &value);
                let entry = tiers.entry(value.clone(), life, now, delta, weight, now);
                tiers.store(miss.hash, &miss.key, entry, now, miss.epoch, true);
            }
            miss.complete(&value, class == Cacheability::Error);
            Ok(policy.to_response(&value))
        }
        Err(e) => {
            miss.fail();
            match miss.stale_for_error(now) {
                Some((v, age)) => {
                    tracing::trace!(hash = miss.hash, ?age, "cache: inner error, serving stale");
                    tiers.stats.stale_if_error.incr();
                    Ok(policy.to_response_aged(v, age))
                }
                None => Err(e),
            }
        }
    }
}

/// A background refresh (stale-while-revalidate or XFetch): leads the key's flight if nobody
/// does, calls a clone of the inner service, stores the answer.
pub(crate) async fn refresh<P, S, Req>(
    tiers: Arc<Tiers<P::Key, P::Value>>,
    policy: Arc<P>,
    mut svc: S,
    req: Req,
    key: P::Key,
    hash: u64,
) where
    P: CachePolicyFor<Req, S::Response>,
    S: Service<Req>,
{
    let Some(id) = tiers.flights.try_lead(hash, &key) else {
        return;
    };
    let epoch = tiers.epoch(hash);
    let mut miss: Miss<S, Req, P> = Miss {
        tiers: tiers.clone(),
        policy,
        key,
        hash,
        epoch,
        req: None,
        svc: None,
        stale: None,
        role: Role::Leader(id),
    };
    if poll_fn(|cx| svc.poll_ready(cx)).await.is_err() {
        return;
    }
    tiers.stats.inner_calls.incr();
    let started = Instant::now();
    let out = svc.call(req).await;
    let _ = finish(&mut miss, out, started.elapsed());
}

#[pin_project(project = StateProj, project_replace = StateOwn)]
enum State<S, Req, P>
where
    S: Service<Req>,
    P: CachePolicy,
{
    Ready {
        res: Option<S::Response>,
    },
    Pass {
        #[pin]
        fut: S::Future,
    },
    Remote {
        miss: Box<Miss<S, Req, P>>,
        get: RemoteGet<P::Value>,
    },
    Call {
        miss: Box<Miss<S, Req, P>>,
        #[pin]
        fut: S::Future,
        started: Instant,
    },
    Wait {
        miss: Box<Miss<S, Req, P>>,
        sleep: Pin<Box<Sleep>>,
    },
    Done,
}

/// The response future of [`Cache`](crate::service::Cache).
#[pin_project]
pub struct ResponseFuture<S, Req, P>
where
    S: Service<Req>,
    P: CachePolicy,
{
    #[pin]
    state: State<S, Req, P>,
}

impl<S, Req, P> fmt::Debug for ResponseFuture<S, Req, P>
where
    S: Service<Req>,
    P: CachePolicy,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Ready { .. } => "ready",
            State::Pass { .. } => "pass",
            State::Remote { .. } => "remote",
            State::Call { .. } => "call",
            State::Wait { .. } => "wait",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, Req, P> ResponseFuture<S, Req, P>
where
    S: Service<Req>,
    P: CachePolicy,
{
    #[inline]
    pub(crate) fn ready(res: S::Response) -> Self {
        Self {
            state: State::Ready { res: Some(res) },
        }
    }

    pub(crate) fn pass(fut: S::Future) -> Self {
        Self {
            state: State::Pass { fut },
        }
    }

    pub(crate) fn remote(miss: Miss<S, Req, P>, get: RemoteGet<P::Value>) -> Self {
        Self {
            state: State::Remote {
                miss: Box::new(miss),
                get,
            },
        }
    }

    pub(crate) fn call(miss: Miss<S, Req, P>, fut: S::Future) -> Self {
        let started = Instant::now();
        Self {
            state: State::Call {
                miss: Box::new(miss),
                fut,
                started,
            },
        }
    }

    pub(crate) fn wait(miss: Miss<S, Req, P>, timeout: Duration) -> Self {
        let sleep = Box::pin(tokio::time::sleep(timeout));
        Self {
            state: State::Wait {
                miss: Box::new(miss),
                sleep,
            },
        }
    }
}

/// What the state machine does next, decided while the state is borrowed.
enum Next<V> {
    /// Call the inner service (as leader or alone).
    Call,
    /// Answer with this value.
    Serve(V, Duration),
    /// Store this L3 entry and answer with it.
    RemoteHit(Entry<V>),
}

impl<S, Req, P> Future for ResponseFuture<S, Req, P>
where
    S: Service<Req>,
    P: CachePolicyFor<Req, S::Response>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Ready { res } => {
                    return Poll::Ready(Ok(res
                        .take()
                        .expect("ResponseFuture polled after completion")));
                }
                StateProj::Pass { fut } => return fut.poll(cx),
                StateProj::Done => panic!("ResponseFuture polled after completion"),
                StateProj::Call { miss, fut, started } => {
                    let out = ready!(fut.poll(cx));
                    let delta = started.elapsed();
                    let res = finish(&mut **miss, out, delta);
                    this.state.set(State::Done);
                    return Poll::Ready(res);
                }
                StateProj::Remote { miss, get } => match ready!(get.as_mut().poll(cx)) {
                    None => Next::Call,
                    Some(hit) => {
                        let now = Instant::now();
                        let stored_at = now.checked_sub(hit.age).unwrap_or(now);
                        let weight = miss.policy.weight(&miss.key, &hit.value);
                        let entry = miss
                            .tiers
                            .entry(hit.value, hit.life, stored_at, hit.delta, weight, now);
                        match entry.phase(now, 0.0, || 1.0) {
                            Phase::Fresh { .. } => Next::RemoteHit(entry),
                            // Serve it; stored locally, the next look-up finds it stale and
                            // refreshes it in the background.
                            Phase::Revalidate => {
                                miss.tiers.stats.stale_served.incr();
                                Next::RemoteHit(entry)
                            }
                            Phase::Expired { .. } => {
                                if entry.usable_on_error(now) {
                                    miss.stale = Some(Arc::new(entry));
                                }
                                Next::Call
                            }
                        }
                    }
                },
                StateProj::Wait { miss, sleep } => {
                    let Role::Waiter(rx) = &mut miss.role else {
                        unreachable!("a waiting miss is a waiter")
                    };
                    match Pin::new(rx).poll(cx) {
                        Poll::Ready(Ok(Signal::Value { value, error })) => {
                            miss.role = Role::Alone;
                            match miss.stale_for_error(Instant::now()).filter(|_| error) {
                                Some((v, age)) => {
                                    miss.tiers.stats.stale_if_error.incr();
                                    Next::Serve(v.clone(), age)
                                }
                                None => Next::Serve(value, Duration::ZERO),
                            }
                        }
                        Poll::Ready(Ok(Signal::Failed)) => {
                            miss.role = Role::Alone;
                            match miss.stale_for_error(Instant::now()) {
                                Some((v, age)) => {
                                    miss.tiers.stats.stale_if_error.incr();
                                    Next::Serve(v.clone(), age)
                                }
                                None => Next::Call,
                            }
                        }
                        Poll::Ready(Ok(Signal::Lead(id))) => {
                            tracing::trace!(
                                hash = miss.hash,
                                flight = id,
                                "cache: waiter takes over the flight"
                            );
                            miss.role = Role::Leader(id);
                            miss.tiers.stats.takeovers.incr();
                            Next::Call
                        }
                        // The flight was detached by an invalidation: ask the inner service
                        // alone rather than take a value fetched before it.
                        Poll::Ready(Err(_)) => {
                            miss.role = Role::Alone;
                            Next::Call
                        }
                        Poll::Pending => {
                            ready!(sleep.as_mut().poll(cx));
                            tracing::trace!(
                                hash = miss.hash,
                                "cache: coalesced wait timed out, calling alone"
                            );
                            miss.tiers.stats.wait_timeouts.incr();
                            miss.fail();
                            Next::Call
                        }
                    }
                }
            };
            let mut miss = match this.state.as_mut().project_replace(State::Done) {
                StateOwn::Remote { miss, .. } | StateOwn::Wait { miss, .. } => miss,
                _ => unreachable!("only misses reach here"),
            };
            match next {
                Next::Serve(v, age) => {
                    return Poll::Ready(Ok(miss.policy.to_response_aged(&v, age)));
                }
                Next::RemoteHit(entry) => {
                    let now = Instant::now();
                    miss.tiers.stats.l3_hits.incr();
                    let value = entry.value.clone();
                    let age = now.saturating_duration_since(entry.stored_at);
                    miss.tiers
                        .store(miss.hash, &miss.key, entry, now, miss.epoch, false);
                    miss.complete(&value, false);
                    return Poll::Ready(Ok(miss.policy.to_response_aged(&value, age)));
                }
                Next::Call => {
                    let mut svc = miss
                        .svc
                        .take()
                        .expect("a miss that may call holds a readied service");
                    let req = miss
                        .req
                        .take()
                        .expect("a miss that may call holds its request");
                    miss.tiers.stats.inner_calls.incr();
                    let fut = svc.call(req);
                    this.state.set(State::Call {
                        miss,
                        fut,
                        started: Instant::now(),
                    });
                }
            }
        }
    }
}
