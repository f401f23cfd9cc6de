//! Hash keys read from an `http::Request`: a header, a cookie or the path.

use crate::config::HashConfig;
use crate::hash::{RequestKey, hash_bytes};
use http::header::{COOKIE, HeaderName};

/// Which part of an `http::Request` is its hash key; a request without it has no key and goes
/// to the power-of-two-choices pick. Use with [`Balance::hash_with`](crate::Balance::hash_with).
///
/// ```
/// use tollgate_balance::{HttpKey, RequestKey};
///
/// let key = HttpKey::header(http::HeaderName::from_static("x-user-id"));
/// let req = |user: &str| http::Request::builder().header("x-user-id", user).body(()).unwrap();
/// assert_eq!(key.key(&req("7")), key.key(&req("7")));
/// assert_ne!(key.key(&req("7")), key.key(&req("8")));
/// assert_eq!(key.key(&http::Request::new(())), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub enum HttpKey {
    /// The value of this header (the first, when it is repeated).
    Header(HeaderName),
    /// The value of the cookie of this name, in the `Cookie` header(s).
    Cookie(String),
    /// The path of the URI (without the query).
    Path,
}

impl HttpKey {
    /// The value of header `name`.
    pub fn header(name: HeaderName) -> Self {
        Self::Header(name)
    }

    /// The value of cookie `name`.
    pub fn cookie(name: impl Into<String>) -> Self {
        Self::Cookie(name.into())
    }

    /// The request's path.
    pub fn path() -> Self {
        Self::Path
    }

    /// The key `config` names (`header`, `cookie` or `path`), if any.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`](tollgate_core::error::ConfigError) for `hash.header` when it is not a
    /// valid header name, or naming the fields when more than one is set.
    pub fn from_config(
        config: &HashConfig,
    ) -> Result<Option<Self>, tollgate_core::error::ConfigError> {
        config.validate()?;
        Ok(if let Some(h) = &config.header {
            let name = HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                tollgate_core::error::ConfigError::new("hash.header", "is not a header name")
            })?;
            Some(Self::Header(name))
        } else if let Some(c) = &config.cookie {
            Some(Self::Cookie(c.clone()))
        } else if config.path {
            Some(Self::Path)
        } else {
            None
        })
    }
}

/// The value of cookie `name` in `Cookie` header values (`a=1; b=2`).
fn cookie<'a>(values: impl Iterator<Item = &'a [u8]>, name: &[u8]) -> Option<&'a [u8]> {
    values
        .flat_map(|v| v.split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name).then(|| pair[eq + 1..].trim_ascii())
        })
}

impl<B> RequestKey<http::Request<B>> for HttpKey {
    fn key(&self, req: &http::Request<B>) -> Option<u64> {
        match self {
            Self::Header(name) => req.headers().get(name).map(|v| hash_bytes(v.as_bytes())),
            Self::Cookie(name) => cookie(
                req.headers().get_all(COOKIE).iter().map(|v| v.as_bytes()),
                name.as_bytes(),
            )
            .map(hash_bytes),
            Self::Path => Some(hash_bytes(req.uri().path().as_bytes())),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cookie() {
        let v: [&[u8]; 2] = [b"a=1; session=abc ;b=2", b"session=zzz"];
        assert_eq!(cookie(v.into_iter(), b"session"), Some(&b"abc"[..]));
        assert_eq!(cookie(v.into_iter(), b"b"), Some(&b"2"[..]));
        assert_eq!(cookie(v.into_iter(), b"sess"), None);
    }

    #[test]
    fn reads_the_path_without_the_query() {
        let req = |uri: &str| http::Request::builder().uri(uri).body(()).unwrap();
        let k = HttpKey::path();
        assert_eq!(k.key(&req("/a/b?x=1")), k.key(&req("/a/b?x=2")));
        assert_ne!(k.key(&req("/a/b")), k.key(&req("/a/c")));
    }
}
