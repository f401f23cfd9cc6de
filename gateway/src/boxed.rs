//! Boxing a future where it will live.

use std::future::Future;
use std::pin::Pin;

/// Boxes the future `make` returns, with the box allocated first so that the future can be
/// built in it. `Box::pin(f())` builds `f()` first and then copies all of it into the box:
/// its whole size, kilobytes for the layered path's futures, once per request.
#[inline(always)]
pub(crate) fn pinned<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

#[cfg(test)]
mod tests {
    use super::pinned;

    #[tokio::test]
    async fn the_boxed_future_runs_as_built() {
        let big = [7u8; 4096];
        let fut = pinned(|| async move { big.iter().map(|&b| u32::from(b)).sum::<u32>() });
        assert_eq!(fut.await, 7 * 4096);
    }
}
