//! Why an upstream request failed, and what caused it.

/// Why an upstream request failed.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// The TCP connect did not finish within the connect timeout.
    ConnectTimeout,
    /// The TCP connect failed (refused, unreachable).
    Connect(std::io::Error),
    /// The TLS handshake with an `https://` endpoint failed (its certificate was refused, or
    /// it refused the gateway's); logged at `warn` with the reason where it happened.
    Tls(std::io::Error),
    /// The connection failed after it was made (reset, closed early, protocol error), or the
    /// request body failed (see [`is_caused_by`]).
    Http(hyper::Error),
    /// The same on the gateway's own HTTP/1.1 client ([`direct`](super::direct)): reset,
    /// closed before an answer, or a malformed answer head.
    Exchange(std::io::Error),
    /// The client's request body failed while it was read whole for the direct client (cut
    /// at the size limit, or the client gone).
    Body(tollgate_core::BoxError),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ConnectTimeout => f.write_str("upstream connect timed out"),
            Self::Connect(e) => write!(f, "upstream connect failed: {e}"),
            Self::Tls(e) => write!(f, "upstream tls handshake failed: {e}"),
            Self::Http(e) => write!(f, "upstream connection failed: {e}"),
            Self::Exchange(e) => write!(f, "upstream connection failed: {e}"),
            Self::Body(e) => write!(f, "client request body failed: {e}"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ConnectTimeout => None,
            Self::Connect(e) | Self::Tls(e) | Self::Exchange(e) => Some(e),
            Self::Http(e) => Some(e),
            Self::Body(e) => Some(&**e),
        }
    }
}

/// Whether `err`'s source chain holds an error of type `T`.
pub(crate) fn is_caused_by<T: std::error::Error + 'static>(err: &UpstreamError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = match err {
        UpstreamError::Http(e) => Some(e),
        UpstreamError::Body(e) => Some(&**e),
        _ => return false,
    };
    while let Some(c) = cur {
        if c.is::<T>() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Whether the request failed because the client's own body did (a chunk-size line hyper
/// could not read, a client gone mid-body): the upstream client reports a body error with the
/// client connection's `hyper::Error` inside it. The bodies sent upstream are the client's or
/// built whole in memory, so a `hyper::Error` below the top one can only be the client's.
pub(crate) fn client_body_failed(err: &UpstreamError) -> bool {
    let e = match err {
        UpstreamError::Http(e) => e,
        UpstreamError::Body(_) => return true,
        _ => return false,
    };
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        if c.is::<hyper::Error>() {
            return true;
        }
        cur = c.source();
    }
    false
}
