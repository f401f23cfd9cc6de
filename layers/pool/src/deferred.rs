//! [`DeferredPoolSizer`]: the limit taken in the response future, for servers that call
//! services without waiting on `poll_ready` for capacity.

use crate::limiter::{Limiter, WaitSlot};
use crate::permit::Permit;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tollgate_core::classify::classify_upstream;
use tollgate_core::error::Overloaded;
use tollgate_core::{BoxError, Classify, ErrorsAreFailures};
use tower_service::Service;

/// Like [`PoolSizer`](crate::PoolSizer), but `poll_ready` only readies the inner service and
/// the permit is taken (waiting or rejecting as configured) when the response future is
/// first polled. `call` moves the readied inner service into the future and keeps a fresh
/// clone, so the inner service is called only once the permit is held.
///
/// Use it behind servers (hyper, axum) that treat services as always ready or call
/// `poll_ready` long before a request exists, so an idle connection holds no permit.
#[derive(Debug)]
pub struct DeferredPoolSizer<S, C = ErrorsAreFailures> {
    inner: S,
    limiter: Limiter,
    classify: C,
}

impl<S, C> DeferredPoolSizer<S, C> {
    /// Wraps `inner`, limited by `limiter`, classifying results with `classify`.
    pub fn new(inner: S, limiter: Limiter, classify: C) -> Self {
        Self {
            inner,
            limiter,
            classify,
        }
    }

    /// The limiter (for snapshots).
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for DeferredPoolSizer<S, C> {
    /// A clone of the inner service that was not readied, like any tower clone.
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.limiter.clone(),
            self.classify.clone(),
        )
    }
}

impl<S, C, R> Service<R> for DeferredPoolSizer<S, C>
where
    S: Service<R> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = DeferredFuture<S, R, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        // Take the service that was readied; leave a fresh clone for the next request.
        let fresh = self.inner.clone();
        let readied = std::mem::replace(&mut self.inner, fresh);
        DeferredFuture {
            state: State::Acquiring {
                svc: Some(readied),
                req: Some(req),
                wait: None,
            },
            permit: None,
            limiter: self.limiter.clone(),
            classify: self.classify.clone(),
        }
    }
}

#[pin_project::pin_project(project = StateProj)]
#[derive(Debug)]
enum State<S, R, F> {
    Acquiring {
        svc: Option<S>,
        req: Option<R>,
        wait: Option<Pin<Box<WaitSlot>>>,
    },
    Running(#[pin] F),
    Done,
}

/// The response future of a [`DeferredPoolSizer`]: takes a permit, then calls the inner
/// service and holds the permit until its future finishes.
#[pin_project::pin_project]
#[derive(Debug)]
pub struct DeferredFuture<S: Service<R>, R, C> {
    #[pin]
    state: State<S, R, S::Future>,
    permit: Option<Permit>,
    limiter: Limiter,
    classify: C,
}

impl<S, R, C> Future for DeferredFuture<S, R, C>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Acquiring { svc, req, wait } => {
                    let acquired = ready!(this.limiter.poll_acquire(cx, wait));
                    let (mut svc, req) = (svc.take(), req.take());
                    match acquired {
                        Ok(mut permit) => {
                            let (svc, req) = (
                                svc.as_mut().expect("polled after completion"),
                                req.expect("polled after completion"),
                            );
                            permit.start();
                            *this.permit = Some(permit);
                            let fut = svc.call(req);
                            this.state.set(State::Running(fut));
                        }
                        Err(_) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(Box::new(Overloaded::new(None))));
                        }
                    }
                }
                StateProj::Running(fut) => {
                    let res = ready!(fut.poll(cx));
                    // Drop the inner future before giving the permit back (see `PoolSizer`).
                    this.state.set(State::Done);
                    let Some(permit) = this.permit.as_mut() else {
                        return Poll::Ready(res.map_err(Into::into));
                    };
                    // A tollgate rejection below is not the backend failing (see `PoolSizer`).
                    let (outcome, res) = classify_upstream(this.classify, res);
                    // In place, as `PoolSizer`'s future does.
                    permit.finish_in_place(outcome);
                    *this.permit = None;
                    return Poll::Ready(res);
                }
                StateProj::Done => panic!("DeferredFuture polled after completion"),
            }
        }
    }
}
