//! The request body types every floor shares (a leaf: it imports nothing of the crate).

use bytes::Bytes;
use http::Request;
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;

/// The body sent upstream: the client's body, streamed and cut at the size limit, or a body
/// held whole (one the fast path read with its head, a retried request's empty body, a batch,
/// a health check).
pub(crate) type GwBody = Either<Limited<Incoming>, Full<Bytes>>;

/// A request on its way upstream.
pub(crate) type UpRequest = Request<GwBody>;

/// A client's request body as a front end hands it over: streamed by hyper ([`Incoming`]) or
/// read whole with its head by the HTTP/1.1 fast path ([`Full`], already held to the size
/// limit).
pub(crate) trait ClientBody:
    http_body::Body<Data = Bytes, Error: Into<tower::BoxError>> + Send + Unpin + 'static
{
    /// The body as it goes upstream, cut at `limit` bytes when it is streamed.
    fn limited(self, limit: usize) -> GwBody;
}

impl ClientBody for Incoming {
    fn limited(self, limit: usize) -> GwBody {
        Either::Left(Limited::new(self, limit))
    }
}

impl ClientBody for Full<Bytes> {
    fn limited(self, _limit: usize) -> GwBody {
        Either::Right(self)
    }
}
