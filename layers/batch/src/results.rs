//! [`BatchResults`]: how a batch call's answer is matched back to its requests.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use tollgate_core::BoxError;

/// The answer of a batch call, one result per request.
///
/// Two shapes are built in:
///
/// - `Vec<Result<T, E>>`: results **in order**, the i-th result for the i-th request. A short
///   vector fails the requests it does not cover with
///   [`MissingResult`](crate::error::MissingResult); extra results are dropped.
/// - `HashMap<Req, Result<T, E>>`: results **keyed** by the request itself (DataLoader style:
///   the request is the key being loaded). A request without an entry fails with
///   [`MissingResult`](crate::error::MissingResult). Enable
///   [folding](crate::layer::BatchLayer::with_folding) so that duplicate requests share one
///   entry.
///
/// Implement it for your own answer type when neither fits.
pub trait BatchResults<Req>: Sized {
    /// One request's successful response.
    type Item;
    /// What the layer keeps of each request to find its result (`()` for in-order answers).
    type Id: Send + 'static;

    /// The id of `req`, taken before the batch is sent.
    fn id(req: &Req) -> Self::Id;

    /// The result for each id, in the order given; `None` where the answer has none.
    fn into_results(self, ids: Vec<Self::Id>) -> Vec<Option<Result<Self::Item, BoxError>>>;
}

impl<Req, T, E> BatchResults<Req> for Vec<Result<T, E>>
where
    E: Into<BoxError>,
{
    type Item = T;
    type Id = ();

    fn id(_: &Req) -> Self::Id {}

    fn into_results(self, ids: Vec<()>) -> Vec<Option<Result<T, BoxError>>> {
        self.into_iter()
            .take(ids.len())
            .map(|r| Some(r.map_err(Into::into)))
            .collect()
    }
}

impl<Req, T, E, H> BatchResults<Req> for HashMap<Req, Result<T, E>, H>
where
    Req: Hash + Eq + Clone + Send + 'static,
    E: Into<BoxError>,
    H: BuildHasher,
{
    type Item = T;
    type Id = Req;

    fn id(req: &Req) -> Req {
        req.clone()
    }

    fn into_results(mut self, ids: Vec<Req>) -> Vec<Option<Result<T, BoxError>>> {
        ids.iter()
            .map(|id| self.remove(id).map(|r| r.map_err(Into::into)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct E;
    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("e")
        }
    }
    impl std::error::Error for E {}

    #[test]
    fn in_order_and_keyed() {
        let v: Vec<Result<u8, E>> = vec![Ok(1), Err(E), Ok(3), Ok(4)];
        let ids = vec![(); 3];
        let r = <Vec<Result<u8, E>> as BatchResults<u32>>::into_results(v, ids);
        assert_eq!(r.len(), 3);
        assert!(matches!(r[0], Some(Ok(1))));
        assert!(matches!(r[1], Some(Err(_))));

        let m: HashMap<u32, Result<u8, E>> = [(7, Ok(70))].into_iter().collect();
        let r = m.into_results(vec![7, 8]);
        assert!(matches!(r[0], Some(Ok(70))));
        assert!(r[1].is_none());
    }
}
