//! The layers that build breakers.

use crate::config::{BreakerConfig, KeyLimits};
use crate::handle::BreakerHandle;
use crate::keyed::{KeyedBreaker, KeyedBreakerHandle, Keys};
use crate::machine::Core;
use crate::service::Breaker;
use crate::state::StateChange;
use crate::sync::Arc;
use std::fmt;
use std::hash::Hash;
use tollgate_core::ErrorsAreFailures;
use tollgate_core::error::ConfigError;
use tower_layer::Layer;

/// Builds [`Breaker`]s that all share one circuit breaker.
///
/// ```
/// use tollgate_breaker::{BreakerConfig, BreakerLayer};
/// use tollgate_core::Outcome;
///
/// // Count HTTP-like status codes of 500 and up as failures, not only errors.
/// let layer = BreakerLayer::new(BreakerConfig::default())
///     .unwrap()
///     .with_classifier(|r: Result<&u16, &std::io::Error>| match r {
///         Ok(code) if *code >= 500 => Outcome::Failure,
///         Ok(_) => Outcome::Success,
///         Err(_) => Outcome::Failure,
///     })
///     .on_state_change(|change| eprintln!("{} {:?} -> {:?}", change.name, change.from, change.to));
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct BreakerLayer<C = ErrorsAreFailures> {
    core: Arc<Core>,
    classify: C,
}

impl<C> fmt::Debug for BreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerLayer")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl BreakerLayer {
    /// A layer whose services share one breaker configured by `config`, classifying every `Err`
    /// as a failure and every `Ok` as a success.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the invalid field (see [`BreakerConfig::validate`]).
    pub fn new(config: BreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let name: std::sync::Arc<str> = config.name.as_str().into();
        Ok(Self {
            core: Arc::new(Core::new(&config, name)),
            classify: ErrorsAreFailures,
        })
    }
}

impl<C> BreakerLayer<C> {
    /// Classifies results with `classify` (any [`tollgate_core::Classify`], including a closure
    /// over `Result<&Response, &Error>`), so a response can count as a failure.
    pub fn with_classifier<C2>(self, classify: C2) -> BreakerLayer<C2> {
        BreakerLayer {
            core: self.core,
            classify,
        }
    }

    /// Calls `f` on every state change (after it happened, outside any lock).
    pub fn on_state_change(self, f: impl Fn(&StateChange) + Send + Sync + 'static) -> Self {
        self.core.add_listener(std::sync::Arc::new(f));
        self
    }

    /// A handle on the shared breaker.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.core.clone())
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = Breaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker::from_parts(inner, self.core.clone(), self.classify.clone())
    }
}

/// Builds [`KeyedBreaker`]s: one breaker per key (say, per upstream host), taken from each
/// request by a key function, with a bounded number of keys.
///
/// ```
/// use tollgate_breaker::{BreakerConfig, KeyLimits, KeyedBreakerLayer};
///
/// // One breaker per host, for requests that are (host, path) pairs.
/// let layer = KeyedBreakerLayer::new(
///     BreakerConfig::default(),
///     KeyLimits::default(),
///     |req: &(String, String)| req.0.clone(),
/// )
/// .unwrap();
/// assert!(layer.handle().is_empty());
/// ```
pub struct KeyedBreakerLayer<K, F, C = ErrorsAreFailures> {
    keys: std::sync::Arc<Keys<K, C>>,
    key_of: F,
}

impl<K, F: Clone, C> Clone for KeyedBreakerLayer<K, F, C> {
    fn clone(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            key_of: self.key_of.clone(),
        }
    }
}

impl<K, F, C> fmt::Debug for KeyedBreakerLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakerLayer").finish_non_exhaustive()
    }
}

impl<K, F> KeyedBreakerLayer<K, F>
where
    K: Hash + Eq + Clone + fmt::Debug,
{
    /// A layer with one breaker per key, each configured by `config`, the keys bounded by
    /// `limits`, and `key_of` taking the key from a request.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the invalid field of `config` or `limits`.
    pub fn new<R>(config: BreakerConfig, limits: KeyLimits, key_of: F) -> Result<Self, ConfigError>
    where
        F: Fn(&R) -> K,
    {
        config.validate()?;
        limits.validate()?;
        Ok(Self {
            keys: std::sync::Arc::new(Keys::new(config, limits, ErrorsAreFailures)),
            key_of,
        })
    }
}

impl<K, F, C> KeyedBreakerLayer<K, F, C>
where
    K: Hash + Eq + Clone + fmt::Debug,
{
    /// Classifies results with `classify`. Call it before sharing the layer: it starts a fresh
    /// set of keys.
    pub fn with_classifier<C2>(self, classify: C2) -> KeyedBreakerLayer<K, F, C2> {
        KeyedBreakerLayer {
            keys: std::sync::Arc::new(self.keys.with_classifier(classify)),
            key_of: self.key_of,
        }
    }

    /// Calls `f` on every state change of every key's breaker (existing and future ones).
    pub fn on_state_change(self, f: impl Fn(&StateChange) + Send + Sync + 'static) -> Self {
        self.keys.add_listener(std::sync::Arc::new(f));
        self
    }

    /// A handle on the keys' breakers.
    pub fn handle(&self) -> KeyedBreakerHandle<K, C> {
        KeyedBreakerHandle::new(self.keys.clone())
    }
}

impl<S, K, F: Clone, C> Layer<S> for KeyedBreakerLayer<K, F, C> {
    type Service = KeyedBreaker<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedBreaker::from_parts(inner, self.keys.clone(), self.key_of.clone())
    }
}
