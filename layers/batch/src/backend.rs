//! The user's batch service behind a small object-safe trait, so that the queue, the flusher
//! and the response path are generic only over the request and response types.
//!
//! One virtual call and one boxed future per *batch*, never per request.

use crate::results::BatchResults;
use futures_util::future::BoxFuture;
use std::task::{Context, Poll};
use tollgate_core::BoxError;
use tower_service::Service;

/// The results of one batch call, one slot per request sent, or the whole-batch error.
pub(crate) type BatchOutput<T> = Result<Vec<Option<Result<T, BoxError>>>, BoxError>;

/// A batch service with its answer already matched to the requests.
pub(crate) trait Backend<Req, T>: Send + 'static {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>;
    fn call(&mut self, reqs: Vec<Req>) -> BoxFuture<'static, BatchOutput<T>>;
    fn clone_box(&self) -> Box<dyn Backend<Req, T>>;
}

pub(crate) struct ServiceBackend<S>(pub(crate) S);

impl<S, Req> Backend<Req, <S::Response as BatchResults<Req>>::Item> for ServiceBackend<S>
where
    S: Service<Vec<Req>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    S::Response: BatchResults<Req>,
    Req: 'static,
    <S::Response as BatchResults<Req>>::Item: Send + 'static,
{
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(
        &mut self,
        reqs: Vec<Req>,
    ) -> BoxFuture<'static, BatchOutput<<S::Response as BatchResults<Req>>::Item>> {
        let ids: Vec<_> = reqs
            .iter()
            .map(<S::Response as BatchResults<Req>>::id)
            .collect();
        let fut = self.0.call(reqs);
        Box::pin(async move {
            let answer = fut.await.map_err(Into::into)?;
            Ok(answer.into_results(ids))
        })
    }

    fn clone_box(&self) -> Box<dyn Backend<Req, <S::Response as BatchResults<Req>>::Item>> {
        Box::new(ServiceBackend(self.0.clone()))
    }
}
