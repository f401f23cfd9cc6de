//! L3: a Redis tier shared by several gateway instances (feature `redis`).
//!
//! Entries are stored under `key_prefix + codec.encode_key(key)` with a Redis TTL covering their
//! last window, as a small header (the freshness windows and XFetch's delta) followed by
//! `codec.encode_value(value)`. A read is one pipelined `GET` + `PTTL`, so an instance learns
//! how old the entry is without trusting other machines' clocks.
//!
//! Invalidation deletes the key and publishes it on `channel`; every instance subscribes and
//! drops the key from its own L1 and L2. After its subscription was lost and comes back, an
//! instance drops its whole local cache, since it may have missed invalidations meanwhile.
//! Like any cache invalidated over pub/sub, a fetch that started on another instance before an
//! invalidation and stores its value after the message passed can leave that value in Redis
//! until its TTL: invalidate again after writes that must be seen at once.
//!
//! **Redis never fails a request.** Every operation has `response_timeout`; a failure (an
//! error, a timeout, garbage that does not decode) counts in
//! [`CacheSnapshot::l3_errors`](crate::stats::CacheSnapshot::l3_errors), and `server.failures`
//! failures in a row open tollgate-core's [`OutageGuard`], which skips L3 for
//! `server.cooldown`, then lets one read through to probe it. Connections are made in the
//! background and retried every `reconnect_interval` until Redis answers; requests meanwhile
//! go on to the inner service. Requests read the connection from an [`ArcSwapOption`], without
//! a lock.

mod codec;
mod config;

pub use codec::{BytesCodec, Codec};
pub use config::{KEY_PREFIX, RedisConfig, RedisTierConfig};

use crate::entry::Entry;
use crate::stats::Stats;
use crate::tiers::{LocalTiers, Remote, RemoteGet, RemoteHit};
use arc_swap::ArcSwapOption;
use codec::{decode_entry, encode_entry};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::task::AbortHandle;
use tokio::time::{Instant, timeout};
use tollgate_core::error::ConfigError;
use tollgate_core::outage::OutageGuard;

/// A Redis L3 for [`CacheLayer::with_redis`](crate::layer::CacheLayer::with_redis).
#[derive(Debug, Clone)]
pub struct RedisTier<C> {
    config: RedisTierConfig,
    codec: C,
}

impl<C> RedisTier<C> {
    /// A tier talking to `config.url`, encoding with `codec`.
    pub fn new(config: RedisTierConfig, codec: C) -> Self {
        Self { config, codec }
    }

    /// Validates the config and starts the background connection and subscription (inside the
    /// current tokio runtime).
    pub(crate) fn into_remote<K, V>(self) -> Result<Arc<dyn Remote<K, V>>, ConfigError>
    where
        C: Codec<K, V>,
        K: Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        self.config.validate()?;
        let client = redis::Client::open(self.config.server.url.as_str())
            .map_err(|e| ConfigError::new("server.url", format!("not a Redis URL: {e}")))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::new(
                "server.url",
                "the Redis tier must be built inside a tokio runtime",
            )
        })?;
        let guard = OutageGuard::new(self.config.server.failures, self.config.server.cooldown);
        Ok(Arc::new(RedisRemote {
            shared: Arc::new(Shared {
                cfg: self.config,
                codec: self.codec,
                client,
                runtime,
                conn: ArcSwapOption::empty(),
                guard,
                base: Instant::now(),
                stats: OnceLock::new(),
                local: OnceLock::new(),
                tasks: Mutex::new(Vec::new()),
                subscribed: AtomicBool::new(false),
                _types: PhantomData,
            }),
        }))
    }
}

struct Shared<K, V, C> {
    cfg: RedisTierConfig,
    codec: C,
    client: redis::Client,
    runtime: tokio::runtime::Handle,
    /// The connection once made; `ConnectionManager` reconnects by itself after that.
    conn: ArcSwapOption<ConnectionManager>,
    guard: OutageGuard,
    /// The origin of the guard's clock.
    base: Instant,
    stats: OnceLock<Weak<Stats>>,
    local: OnceLock<Weak<dyn LocalTiers<K>>>,
    tasks: Mutex<Vec<AbortHandle>>,
    /// Whether the invalidation subscription is live.
    subscribed: AtomicBool,
    _types: PhantomData<fn() -> V>,
}

impl<K, V, C> Drop for Shared<K, V, C> {
    fn drop(&mut self) {
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

impl<K, V, C> Shared<K, V, C>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
    C: Codec<K, V>,
{
    fn redis_key(&self, key: &K) -> Vec<u8> {
        let mut k = self.cfg.key_prefix().as_bytes().to_vec();
        k.extend_from_slice(&self.codec.encode_key(key));
        k
    }

    fn error(&self) {
        if let Some(stats) = self.stats.get().and_then(Weak::upgrade) {
            stats.l3_errors.incr();
        }
    }

    fn conn(&self) -> Option<ConnectionManager> {
        self.conn.load().as_deref().cloned()
    }

    /// Whether an operation may use Redis now (see [`OutageGuard::allow`]).
    fn allow(&self) -> bool {
        self.guard.allow(self.base.elapsed())
    }

    fn failure(&self) {
        self.guard.failure(self.base.elapsed());
        self.error();
    }

    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let handle = self.runtime.spawn(fut).abort_handle();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Runs `pipe` with the response timeout; records the outcome with the guard.
    async fn run<T: redis::FromRedisValue>(
        &self,
        mut conn: ConnectionManager,
        pipe: redis::Pipeline,
    ) -> Option<T> {
        match timeout(
            self.cfg.server.response_timeout,
            pipe.query_async::<T>(&mut conn),
        )
        .await
        {
            Ok(Ok(v)) => {
                self.guard.success();
                Some(v)
            }
            Ok(Err(e)) => {
                tracing::trace!(error = %e, "cache: redis command failed");
                self.failure();
                None
            }
            Err(_) => {
                tracing::trace!("cache: redis command timed out");
                self.failure();
                None
            }
        }
    }

    /// Connects until it succeeds, then leaves reconnection to the `ConnectionManager`.
    async fn connect(me: Weak<Self>) {
        loop {
            let Some(s) = me.upgrade() else { return };
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(s.cfg.server.connect_timeout)
                .set_response_timeout(s.cfg.server.response_timeout)
                .set_number_of_retries(1)
                .set_max_delay(s.cfg.reconnect_interval.as_millis() as u64);
            let attempt = timeout(
                s.cfg.server.connect_timeout * 2,
                ConnectionManager::new_with_config(s.client.clone(), cfg),
            )
            .await;
            match attempt {
                Ok(Ok(conn)) => {
                    s.conn.store(Some(Arc::new(conn)));
                    tracing::trace!("cache: redis connected");
                    return;
                }
                _ => s.error(),
            }
            let pause = s.cfg.reconnect_interval;
            drop(s);
            tokio::time::sleep(pause).await;
        }
    }

    /// Subscribes to the invalidation channel, forever, re-subscribing after a lost connection.
    async fn subscribe(me: Weak<Self>) {
        let mut subscribed_before = false;
        loop {
            let Some(s) = me.upgrade() else { return };
            let connect = async {
                let mut ps = s.client.get_async_pubsub().await.ok()?;
                ps.subscribe(s.cfg.channel.as_str()).await.ok()?;
                Some(ps)
            };
            if let Ok(Some(ps)) = timeout(s.cfg.server.connect_timeout * 2, connect).await {
                let local = s.local.get().cloned();
                if subscribed_before && let Some(local) = local.as_ref().and_then(Weak::upgrade) {
                    // Invalidations published while we were away are lost: drop everything.
                    local.clear_local();
                }
                subscribed_before = true;
                // Relaxed: a status flag for health checks; nothing is published through it.
                s.subscribed.store(true, Ordering::Relaxed);
                let prefix_len = s.cfg.key_prefix().len();
                drop(s);
                let mut stream = ps.into_on_message();
                while let Some(msg) = stream.next().await {
                    let Some(s) = me.upgrade() else { return };
                    let payload = msg.get_payload_bytes();
                    let key = payload
                        .get(prefix_len..)
                        .and_then(|k| s.codec.decode_key(k));
                    match (key, local.as_ref().and_then(Weak::upgrade)) {
                        (Some(key), Some(local)) => local.invalidate_local(&key),
                        (None, _) => s.error(),
                        (_, None) => return,
                    }
                }
                tracing::trace!("cache: redis subscription lost");
                let Some(s) = me.upgrade() else { return };
                // Relaxed: as above.
                s.subscribed.store(false, Ordering::Relaxed);
                s.error();
            } else {
                s.error();
            }
            let Some(s) = me.upgrade() else { return };
            let pause = s.cfg.reconnect_interval;
            drop(s);
            tokio::time::sleep(pause).await;
        }
    }
}

struct RedisRemote<K, V, C> {
    shared: Arc<Shared<K, V, C>>,
}

impl<K, V, C> fmt::Debug for RedisRemote<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTier")
            .field("config", &self.shared.cfg)
            .finish_non_exhaustive()
    }
}

impl<K, V, C> Remote<K, V> for RedisRemote<K, V, C>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
    C: Codec<K, V>,
{
    fn get(&self, key: &K) -> Option<RemoteGet<V>> {
        let s = &self.shared;
        if !s.allow() {
            return None;
        }
        let conn = s.conn()?;
        let rkey = s.redis_key(key);
        let s = s.clone();
        Some(Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.get(&rkey).cmd("PTTL").arg(&rkey);
            let (bytes, pttl): (Option<Vec<u8>>, i64) = s.run(conn, pipe).await?;
            let bytes = bytes?;
            let decoded = decode_entry(&bytes)
                .and_then(|(life, delta, v)| Some((life, delta, s.codec.decode_value(v)?)));
            let Some((life, delta, value)) = decoded else {
                tracing::trace!("cache: undecodable entry in redis");
                s.error();
                return None;
            };
            let left = Duration::from_millis(u64::try_from(pttl).ok()?);
            Some(RemoteHit {
                value,
                age: life.total().saturating_sub(left),
                life,
                delta,
            })
        }))
    }

    fn set(&self, key: &K, entry: &Entry<V>) {
        let s = &self.shared;
        let ms = entry.keep_for.as_millis() as u64;
        if ms == 0 || !s.allow() {
            return;
        }
        let Some(conn) = s.conn() else { return };
        let rkey = s.redis_key(key);
        let bytes = encode_entry(
            &entry.life,
            entry.delta,
            &s.codec.encode_value(&entry.value),
        );
        let me = s.clone();
        s.spawn(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(&rkey)
                .arg(bytes)
                .arg("PX")
                .arg(ms)
                .ignore();
            let _: Option<()> = me.run(conn, pipe).await;
        });
    }

    fn invalidate(&self, key: &K) {
        // Not behind the guard: invalidations are rare and worth a try.
        let s = &self.shared;
        let Some(conn) = s.conn() else {
            s.error();
            return;
        };
        let rkey = s.redis_key(key);
        let me = s.clone();
        s.spawn(async move {
            let mut pipe = redis::pipe();
            pipe.del(&rkey)
                .ignore()
                .publish(me.cfg.channel.as_str(), &rkey)
                .ignore();
            let _: Option<()> = me.run(conn, pipe).await;
        });
    }

    fn connected(&self) -> bool {
        // Relaxed: as where it is stored.
        self.shared.conn().is_some() && self.shared.subscribed.load(Ordering::Relaxed)
    }

    fn attach(&self, local: Weak<dyn LocalTiers<K>>, stats: Weak<Stats>) {
        let s = &self.shared;
        let _ = s.local.set(local);
        let _ = s.stats.set(stats);
        s.spawn(Shared::connect(Arc::downgrade(s)));
        s.spawn(Shared::subscribe(Arc::downgrade(s)));
    }
}
