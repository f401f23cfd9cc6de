//! The request body types every floor shares (a leaf: it imports nothing of the crate).

use bytes::Bytes;
use http::Request;
use http_body_util::{Full, Limited};
use hyper::body::Incoming;

/// The body sent upstream: the client's body, streamed and cut at the size limit, or a body
/// the gateway built (a retried request's empty body, a batch, a health check).
pub(crate) type GwBody = http_body_util::Either<Limited<Incoming>, Full<Bytes>>;

/// A request on its way upstream.
pub(crate) type UpRequest = Request<GwBody>;
