//! The layer: a balancer around one service, to which more endpoints can be added.

use crate::config::BalanceConfig;
use crate::fleet::Start;
use crate::service::Balance;
use tollgate_core::error::ConfigError;
use tower_layer::Layer;

/// Wraps a service in a [`Balance`] with that service as its only endpoint (key 0).
///
/// Most users build a [`Balance`] from their endpoint list or discovery stream directly; the
/// layer suits a stack that starts with one upstream and adds more through
/// [`Balance::handle`].
#[derive(Debug, Clone)]
pub struct BalanceLayer {
    config: BalanceConfig,
}

impl BalanceLayer {
    /// A layer with `config`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad field.
    pub fn new(config: BalanceConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self { config })
    }
}

impl<S> Layer<S> for BalanceLayer {
    type Service = Balance<usize, S>;

    fn layer(&self, inner: S) -> Self::Service {
        let balance = Balance::from_validated(&self.config);
        let fleet = &balance.shared().fleet;
        fleet.insert(0, inner, 1.0, fleet.common.now(), Start::Full, None);
        balance
    }
}
