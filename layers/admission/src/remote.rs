//! The per-key GCRA quota kept in Redis, so several gateway instances share one limit.
//!
//! One Lua script does the whole GCRA step atomically on the server, on the server's clock
//! (`TIME`), so instances with skewed clocks agree: it reads the key's theoretical arrival
//! time (TAT, microseconds), rejects with the wait if `now < TAT - tolerance`, else stores
//! `max(TAT, now) + interval` with an expiry just past it (idle keys vanish by themselves).
//!
//! Every call is bounded by [`RedisConfig::timeout`]. When Redis cannot be reached (connect
//! error, command error, timeout), the request is checked against the local limiter instead
//! and Redis is left alone for [`RedisConfig::retry_after`], so an outage costs one timeout,
//! not one per request.

use crate::classify::Key;
use crate::config::RedisConfig;
use crate::ratelimit::LocalLimiter;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
if now < tat - tolerance then
  return tat - tolerance - now
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return 0
";

/// The Redis side of the rate limit. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct RemoteLimiter {
    client: redis::Client,
    conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
    script: redis::Script,
    config: RedisConfig,
    interval_us: u64,
    tolerance_us: u64,
    base: Instant,
    /// Nanoseconds after `base` until which Redis is not tried (0: try it).
    down_until: AtomicU64,
}

/// How a remote check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checked {
    /// Redis answered: `Ok`, or the wait until the key may go.
    Remote(Result<(), Duration>),
    /// Redis could not be reached; the local limit answered.
    Local(Result<(), Duration>),
}

impl Checked {
    pub(crate) fn result(self) -> Result<(), Duration> {
        match self {
            Checked::Remote(r) | Checked::Local(r) => r,
        }
    }
}

impl RemoteLimiter {
    /// `config` was validated, so the URL parses.
    pub(crate) fn new(config: &RedisConfig, burst: u32, period: Duration) -> Self {
        let interval_us = (period.as_micros() as u64 / u64::from(burst.max(1))).max(1);
        Self {
            client: redis::Client::open(config.url.as_str()).expect("validated URL"),
            conn: Mutex::new(None),
            script: redis::Script::new(GCRA),
            config: config.clone(),
            interval_us,
            tolerance_us: interval_us.saturating_mul(u64::from(burst.max(1) - 1)),
            base: Instant::now(),
            down_until: AtomicU64::new(0),
        }
    }

    fn since_base(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// Whether Redis should be tried now.
    pub(crate) fn is_up(&self, now: Instant) -> bool {
        // Relaxed: a hint; a racing reader tries Redis once more or once less.
        self.since_base(now) >= self.down_until.load(Ordering::Relaxed)
    }

    fn mark_down(&self) {
        let until = self.since_base(Instant::now() + self.config.retry_after);
        // Relaxed: see `is_up`.
        self.down_until.store(until, Ordering::Relaxed);
        // Drop the connection: the next try reconnects.
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(c);
        }
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(self.config.timeout)
            .set_response_timeout(self.config.timeout);
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    async fn eval(&self, key: Key) -> redis::RedisResult<u64> {
        let mut conn = self.connection().await?;
        self.script
            .key(format!("{}{key}", self.config.key_prefix))
            .arg(self.interval_us)
            .arg(self.tolerance_us)
            .invoke_async(&mut conn)
            .await
    }

    /// Checks `key` in Redis, falling back to `local` when Redis cannot answer in time.
    pub(crate) async fn check(&self, key: Key, local: &LocalLimiter) -> Checked {
        match tokio::time::timeout(self.config.timeout, self.eval(key)).await {
            Ok(Ok(0)) => Checked::Remote(Ok(())),
            Ok(Ok(wait_us)) => Checked::Remote(Err(Duration::from_micros(wait_us))),
            Ok(Err(_)) | Err(_) => {
                self.mark_down();
                Checked::Local(local.check(key))
            }
        }
    }
}
