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
//!
//! **Redis never fails a request.** Every operation has `response_timeout`; a failure (an
//! error, a timeout, garbage that does not decode) counts in
//! [`CacheStats::l3_errors`](crate::stats::CacheStats::l3_errors), and `breaker_failures`
//! failures in a row open a small breaker that skips L3 for `breaker_cooldown`, then lets one
//! read through to probe it. Connections are made in the background and retried every
//! `reconnect_interval` until Redis answers; requests meanwhile go on to the inner service.

use crate::entry::{Entry, Lifetimes};
use crate::stats::Stats;
use crate::tiers::{LocalTiers, Remote, RemoteGet, RemoteHit};
use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::task::AbortHandle;
use tokio::time::{Instant, timeout};
use tollgate_core::error::ConfigError;

/// Turns keys and values into bytes for Redis and back.
///
/// `decode_*` return `None` for bytes they cannot read (another version's format, garbage):
/// the cache then treats it as a miss.
pub trait Codec<K, V>: Send + Sync + 'static {
    /// The key's bytes (the tier adds its prefix).
    fn encode_key(&self, key: &K) -> Vec<u8>;
    /// The key back, from an invalidation message.
    fn decode_key(&self, bytes: &[u8]) -> Option<K>;
    /// The value's bytes.
    fn encode_value(&self, value: &V) -> Vec<u8>;
    /// The value back.
    fn decode_value(&self, bytes: &[u8]) -> Option<V>;
}

/// A [`Codec`] for `String` keys and [`Bytes`] values, stored as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec<String, Bytes> for BytesCodec {
    fn encode_key(&self, key: &String) -> Vec<u8> {
        key.as_bytes().to_vec()
    }

    fn decode_key(&self, bytes: &[u8]) -> Option<String> {
        String::from_utf8(bytes.to_vec()).ok()
    }

    fn encode_value(&self, value: &Bytes) -> Vec<u8> {
        value.to_vec()
    }

    fn decode_value(&self, bytes: &[u8]) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(bytes))
    }
}

/// Configuration of the Redis tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Where Redis listens, `redis://host:port/db`. Required (default empty, which fails
    /// validation).
    pub url: String,
    /// Prefix of every key the tier writes. Default `"tollgate:cache:"`.
    pub key_prefix: String,
    /// Pub/sub channel carrying invalidated keys. Default `"tollgate:cache:invalidate"`.
    pub channel: String,
    /// The longest any Redis command may take before it counts as failed. Not zero.
    /// Default 50 ms.
    pub response_timeout: Duration,
    /// The longest a connection attempt may take. Not zero. Default 250 ms.
    pub connect_timeout: Duration,
    /// Failures in a row that open the breaker. At least 1. Default 5.
    pub breaker_failures: u32,
    /// How long an open breaker skips L3 before one probe. Not zero. Default 1 s.
    pub breaker_cooldown: Duration,
    /// Pause between connection attempts while Redis is unreachable. Not zero. Default 500 ms.
    pub reconnect_interval: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            key_prefix: "tollgate:cache:".into(),
            channel: "tollgate:cache:invalidate".into(),
            response_timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(250),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(1),
            reconnect_interval: Duration::from_millis(500),
        }
    }
}

impl RedisConfig {
    /// The defaults, talking to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(e) = redis::Client::open(self.url.as_str()) {
            return Err(ConfigError::new("url", format!("not a Redis URL: {e}")));
        }
        if self.channel.is_empty() {
            return Err(ConfigError::new("channel", "must not be empty"));
        }
        let nonzero = [
            ("response_timeout", self.response_timeout),
            ("connect_timeout", self.connect_timeout),
            ("breaker_cooldown", self.breaker_cooldown),
            ("reconnect_interval", self.reconnect_interval),
        ];
        for (field, d) in nonzero {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must not be zero"));
            }
        }
        if self.breaker_failures == 0 {
            return Err(ConfigError::new("breaker_failures", "must be at least 1"));
        }
        Ok(())
    }
}

/// A Redis L3 for [`CacheLayer::with_redis`](crate::layer::CacheLayer::with_redis).
#[derive(Debug, Clone)]
pub struct RedisTier<C> {
    config: RedisConfig,
    codec: C,
}

impl<C> RedisTier<C> {
    /// A tier talking to `config.url`, encoding with `codec`.
    pub fn new(config: RedisConfig, codec: C) -> Self {
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
        let client = redis::Client::open(self.config.url.as_str())
            .map_err(|e| ConfigError::new("url", format!("not a Redis URL: {e}")))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::new("url", "the Redis tier must be built inside a tokio runtime")
        })?;
        let breaker = Breaker::new(&self.config);
        Ok(Arc::new(RedisRemote {
            shared: Arc::new(Shared {
                cfg: self.config,
                codec: self.codec,
                client,
                runtime,
                conn: Mutex::new(None),
                breaker,
                stats: OnceLock::new(),
                local: OnceLock::new(),
                tasks: Mutex::new(Vec::new()),
                subscribed: AtomicBool::new(false),
                _types: PhantomData,
            }),
        }))
    }
}

/// Opens after `threshold` failures in a row; after `cooldown` lets one operation probe.
///
/// Ground rules: `failures` and `open_until` are approximate (Relaxed): a lost update lets one
/// extra request try Redis or skip it, never fails a request.
#[derive(Debug)]
struct Breaker {
    base: Instant,
    failures: AtomicU32,
    /// Milliseconds since `base` until which L3 is skipped; 0 when closed.
    open_until: AtomicU64,
    threshold: u32,
    cooldown_ms: u64,
}

impl Breaker {
    fn new(cfg: &RedisConfig) -> Self {
        Self {
            base: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            threshold: cfg.breaker_failures,
            cooldown_ms: cfg.breaker_cooldown.as_millis().max(1) as u64,
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    fn allow(&self) -> bool {
        // Relaxed: see the ground rules.
        let until = self.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        // Half-open: the one request that moves the deadline on probes Redis.
        now >= until
            && self
                .open_until
                .compare_exchange(
                    until,
                    now + self.cooldown_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn success(&self) {
        // Relaxed: see the ground rules.
        self.failures.store(0, Ordering::Relaxed);
        self.open_until.store(0, Ordering::Relaxed);
    }

    fn failure(&self) {
        // Relaxed: see the ground rules.
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= self.threshold {
            self.open_until
                .store(self.now_ms() + self.cooldown_ms, Ordering::Relaxed);
        }
    }
}

struct Shared<K, V, C> {
    cfg: RedisConfig,
    codec: C,
    client: redis::Client,
    runtime: tokio::runtime::Handle,
    /// The connection once made; `ConnectionManager` reconnects by itself after that.
    conn: Mutex<Option<ConnectionManager>>,
    breaker: Breaker,
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

/// The header before each value: magic, version, fresh, swr, sie (ms), delta (µs).
const MAGIC: [u8; 2] = [0x7c, 0x01];
const HEADER: usize = 2 + 4 * 8;

fn encode_entry(life: &Lifetimes, delta: Duration, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + value.len());
    out.extend_from_slice(&MAGIC);
    for n in [
        life.fresh.as_millis(),
        life.swr.as_millis(),
        life.sie.as_millis(),
        delta.as_micros(),
    ] {
        out.extend_from_slice(&(n.min(u128::from(u64::MAX)) as u64).to_be_bytes());
    }
    out.extend_from_slice(value);
    out
}

fn decode_entry(bytes: &[u8]) -> Option<(Lifetimes, Duration, &[u8])> {
    if bytes.len() < HEADER || bytes[..2] != MAGIC {
        return None;
    }
    let n =
        |i: usize| u64::from_be_bytes(bytes[2 + 8 * i..10 + 8 * i].try_into().expect("8 bytes"));
    let life = Lifetimes {
        fresh: Duration::from_millis(n(0)),
        swr: Duration::from_millis(n(1)),
        sie: Duration::from_millis(n(2)),
    };
    Some((life, Duration::from_micros(n(3)), &bytes[HEADER..]))
}

impl<K, V, C> Shared<K, V, C>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
    C: Codec<K, V>,
{
    fn redis_key(&self, key: &K) -> Vec<u8> {
        let mut k = self.cfg.key_prefix.as_bytes().to_vec();
        k.extend_from_slice(&self.codec.encode_key(key));
        k
    }

    fn error(&self) {
        if let Some(stats) = self.stats.get().and_then(Weak::upgrade) {
            stats.l3_errors.incr();
        }
    }

    fn conn(&self) -> Option<ConnectionManager> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let handle = self.runtime.spawn(fut).abort_handle();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Runs `pipe` with the response timeout; records the outcome with the breaker.
    async fn run<T: redis::FromRedisValue>(
        &self,
        mut conn: ConnectionManager,
        pipe: redis::Pipeline,
    ) -> Option<T> {
        match timeout(self.cfg.response_timeout, pipe.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.breaker.success();
                Some(v)
            }
            Ok(Err(e)) => {
                tracing::trace!(error = %e, "cache: redis command failed");
                self.breaker.failure();
                self.error();
                None
            }
            Err(_) => {
                tracing::trace!("cache: redis command timed out");
                self.breaker.failure();
                self.error();
                None
            }
        }
    }

    /// Connects until it succeeds, then leaves reconnection to the `ConnectionManager`.
    async fn connect(me: Weak<Self>) {
        loop {
            let Some(s) = me.upgrade() else { return };
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(s.cfg.connect_timeout)
                .set_response_timeout(s.cfg.response_timeout)
                .set_number_of_retries(1)
                .set_max_delay(s.cfg.reconnect_interval.as_millis() as u64);
            let attempt = timeout(
                s.cfg.connect_timeout * 2,
                ConnectionManager::new_with_config(s.client.clone(), cfg),
            )
            .await;
            match attempt {
                Ok(Ok(conn)) => {
                    *s.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
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
            if let Ok(Some(ps)) = timeout(s.cfg.connect_timeout * 2, connect).await {
                let local = s.local.get().cloned();
                if subscribed_before && let Some(local) = local.as_ref().and_then(Weak::upgrade) {
                    // Invalidations published while we were away are lost: drop everything.
                    local.clear_local();
                }
                subscribed_before = true;
                // Relaxed: a status flag for health checks; nothing is published through it.
                s.subscribed.store(true, Ordering::Relaxed);
                let prefix_len = s.cfg.key_prefix.len();
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
        if !s.breaker.allow() {
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
        if ms == 0 || !s.breaker.allow() {
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
        // Not behind the breaker: invalidations are rare and worth a try.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let life = Lifetimes {
            fresh: Duration::from_secs(10),
            swr: Duration::from_secs(2),
            sie: Duration::from_secs(60),
        };
        let bytes = encode_entry(&life, Duration::from_micros(1500), b"hello");
        let (l, d, v) = decode_entry(&bytes).unwrap();
        assert_eq!(
            (l, d, v),
            (life, Duration::from_micros(1500), &b"hello"[..])
        );
        assert!(decode_entry(b"garbage").is_none());
        assert!(decode_entry(&bytes[..HEADER - 1]).is_none());
    }

    #[test]
    fn config_names_the_bad_field() {
        RedisConfig::new("redis://127.0.0.1:6379")
            .validate()
            .unwrap();
        assert_eq!(
            RedisConfig::default().validate().unwrap_err().field(),
            "url"
        );
        let c = RedisConfig {
            response_timeout: Duration::ZERO,
            ..RedisConfig::new("redis://127.0.0.1/")
        };
        assert_eq!(c.validate().unwrap_err().field(), "response_timeout");
        let c = RedisConfig {
            breaker_failures: 0,
            ..RedisConfig::new("redis://127.0.0.1/")
        };
        assert_eq!(c.validate().unwrap_err().field(), "breaker_failures");
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_after_failures_and_probes_after_cooldown() {
        let b = Breaker::new(&RedisConfig {
            breaker_failures: 2,
            ..RedisConfig::default()
        });
        assert!(b.allow());
        b.failure();
        assert!(b.allow());
        b.failure();
        assert!(!b.allow());
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(b.allow(), "one probe after the cooldown");
        assert!(!b.allow(), "only one");
        b.success();
        assert!(b.allow());
    }
}
