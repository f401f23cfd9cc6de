//! Errors of the batch layer. Callers test them with `err.is::<QueueFull>()` or
//! [`tollgate_core::error::is_caused_by`]; a panic in the batch call surfaces as
//! [`tollgate_core::error::Panicked`], a batch that went away unanswered (its task dropped at
//! runtime shutdown) or a closed layer as [`tollgate_core::error::Closed`].

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use tollgate_core::BoxError;

/// The queue was full; the request was not queued.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueFull(());

impl QueueFull {
    /// Creates the error.
    pub fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("batch queue is full")
    }
}

impl Error for QueueFull {}

/// The whole batch call failed; every request in the batch gets this error, with the batch
/// call's error as its `source()`.
#[derive(Debug, Clone)]
pub struct BatchFailed {
    source: Arc<BoxError>,
}

impl BatchFailed {
    pub(crate) fn new(source: Arc<BoxError>) -> Self {
        Self { source }
    }

    /// The batch call's error.
    pub fn batch_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &**self.source
    }
}

impl fmt::Display for BatchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch call failed: {}", self.source)
    }
}

impl Error for BatchFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&**self.source)
    }
}

/// The item failed and its failure is shared by every caller folded into it (duplicate
/// requests of one batch); the item's own error is the `source()`.
#[derive(Debug, Clone)]
pub struct ItemFailed {
    source: Arc<BoxError>,
}

impl ItemFailed {
    pub(crate) fn new(source: Arc<BoxError>) -> Self {
        Self { source }
    }
}

impl fmt::Display for ItemFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch item failed: {}", self.source)
    }
}

impl Error for ItemFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&**self.source)
    }
}

/// The batch call answered, but with no result for this request (a short result vector, or a
/// keyed answer without this key).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MissingResult(());

impl MissingResult {
    /// Creates the error.
    pub fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for MissingResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("batch call returned no result for this request")
    }
}

impl Error for MissingResult {}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::error::is_caused_by;

    #[test]
    fn messages_and_sources() {
        let inner: BoxError = Box::new(QueueFull::new());
        let failed = BatchFailed::new(Arc::new(inner));
        assert!(is_caused_by::<QueueFull>(&failed));
        assert_eq!(failed.to_string(), "batch call failed: batch queue is full");
        assert!(failed.batch_error().is::<QueueFull>());
        let item = ItemFailed::new(Arc::new(Box::new(MissingResult::new())));
        assert!(is_caused_by::<MissingResult>(&item));
        for m in [
            QueueFull::new().to_string(),
            MissingResult::new().to_string(),
            item.to_string(),
        ] {
            assert!(
                !m.ends_with('.') && m.starts_with(char::is_lowercase),
                "{m}"
            );
        }
    }
}
