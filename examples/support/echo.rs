//! A tiny gRPC service written by hand, so the tonic example and tests need no `protoc`.
//!
//! The messages use prost's derive; the server and client are what `tonic-build` would
//! generate for
//!
//! ```proto
//! package tollgate.example;
//! service Echo { rpc Echo(EchoRequest) returns (EchoReply); }
//! ```
//!
//! Shared by `examples/tonic_stack.rs` and `tests/tonic_stack.rs` (`#[path]` module).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

/// The request: a message to echo.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EchoRequest {
    /// The message.
    #[prost(string, tag = "1")]
    pub(crate) message: String,
}

/// The reply: the message, and which server answered.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EchoReply {
    /// The echoed message.
    #[prost(string, tag = "1")]
    pub(crate) message: String,
    /// The name of the server that answered.
    #[prost(string, tag = "2")]
    pub(crate) server: String,
}

const PATH: &str = "/tollgate.example.Echo/Echo";

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type Handler = dyn Fn(EchoRequest) -> BoxFuture<Result<EchoReply, Status>> + Send + Sync;

/// The server side: routes `/tollgate.example.Echo/Echo` to a handler function.
#[derive(Clone)]
pub(crate) struct EchoServer {
    handler: Arc<Handler>,
}

impl EchoServer {
    /// A server answering each request with `handler`.
    pub(crate) fn new<F, Fut>(handler: F) -> Self
    where
        F: Fn(EchoRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<EchoReply, Status>> + Send + 'static,
    {
        Self {
            handler: Arc::new(move |req| Box::pin(handler(req))),
        }
    }
}

impl NamedService for EchoServer {
    const NAME: &'static str = "tollgate.example.Echo";
}

struct Unary(Arc<Handler>);

impl tonic::server::UnaryService<EchoRequest> for Unary {
    type Response = EchoReply;
    type Future = BoxFuture<Result<Response<EchoReply>, Status>>;

    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let fut = (self.0)(req.into_inner());
        Box::pin(async move { fut.await.map(Response::new) })
    }
}

impl tower::Service<http::Request<Body>> for EchoServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != PATH {
            let status = Status::unimplemented(format!("no method {}", req.uri().path()));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let unary = Unary(self.handler.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(unary, req).await)
        })
    }
}

/// The client side, over any tower service that speaks HTTP/2 gRPC (a `Channel`, or a stack of
/// layers over channels).
#[derive(Clone)]
pub(crate) struct EchoClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> EchoClient<T>
where
    T: tonic::client::GrpcService<Body>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tollgate::core::BoxError> + Send,
{
    /// A client sending its calls through `inner`.
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner: tonic::client::Grpc::new(inner),
        }
    }

    /// Calls `Echo` with `message`.
    pub(crate) async fn echo(&mut self, message: &str) -> Result<EchoReply, Status> {
        let req = Request::new(EchoRequest {
            message: message.to_owned(),
        });
        Ok(self.call(req).await?.into_inner())
    }

    /// Calls `Echo` with a request carrying metadata of its own.
    pub(crate) async fn call(
        &mut self,
        req: Request<EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("service was not ready: {}", e.into())))?;
        let path = http::uri::PathAndQuery::from_static(PATH);
        self.inner
            .unary(req, path, tonic_prost::ProstCodec::default())
            .await
    }
}
