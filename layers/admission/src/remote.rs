//! The per-key GCRA quota kept in Redis, so several gateway instances share one limit.
//!
//! One Lua script does the whole GCRA step atomically on the server, on the server's clock
//! (`TIME`), so instances with skewed clocks agree: it reads the key's theoretical arrival
//! time (TAT, microseconds), rejects with the wait if `now < TAT - tolerance`, else stores
//! `max(TAT, now) + interval` with an expiry just past it (idle keys vanish by themselves).
//!
//! Every check is bounded by [`RedisConfig::response_timeout`] once connected (and by
//! [`RedisConfig::connect_timeout`] more while it connects). When Redis cannot answer (connect
//! error, command error, timeout), the request is checked against the local limiter instead;
//! after [`RedisConfig::failures`] failures in a row an [`OutageGuard`] keeps requests away
//! from Redis for [`RedisConfig::cooldown`], then lets one probe, so an outage costs a few
//! timeouts, not one per request.
//!
//! The connection is an [`ArcSwapOption`]: a request reads it without a lock. A command error
//! drops it (the next check connects again); a timeout keeps it, since a server that is only
//! slow (or frozen and thawed) answers on it again.

use crate::classify::Key;
use crate::config::{KEY_PREFIX, RedisConfig};
use crate::ratelimit::LocalLimiter;
use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tollgate_core::outage::OutageGuard;

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
    conn: ArcSwapOption<MultiplexedConnection>,
    script: redis::Script,
    config: RedisConfig,
    interval_us: u64,
    tolerance_us: u64,
    /// The origin of the guard's clock.
    base: Instant,
    guard: OutageGuard,
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
            conn: ArcSwapOption::empty(),
            script: redis::Script::new(GCRA),
            config: config.clone(),
            interval_us,
            tolerance_us: interval_us.saturating_mul(u64::from(burst.max(1) - 1)),
            base: Instant::now(),
            guard: OutageGuard::new(config.failures, config.cooldown),
        }
    }

    fn since_base(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.base)
    }

    /// Whether this request should try Redis (after a cooldown, only the one probe does).
    pub(crate) fn allow(&self, now: Instant) -> bool {
        self.guard.allow(self.since_base(now))
    }

    async fn connect(&self) -> redis::RedisResult<Arc<MultiplexedConnection>> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(self.config.connect_timeout)
            .set_response_timeout(self.config.response_timeout);
        let c = Arc::new(
            self.client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await?,
        );
        // Two requests may connect at once; the later one's connection wins, the other's
        // closes when its request ends.
        self.conn.store(Some(c.clone()));
        Ok(c)
    }

    async fn eval(&self, conn: &MultiplexedConnection, key: Key) -> redis::RedisResult<u64> {
        let mut conn = conn.clone();
        self.script
            .key(format!("{}{key}", self.config.key_prefix_or(KEY_PREFIX)))
            .arg(self.interval_us)
            .arg(self.tolerance_us)
            .invoke_async(&mut conn)
            .await
    }

    /// Checks `key` in Redis, falling back to `local` when Redis cannot answer in time.
    pub(crate) async fn check(&self, key: Key, local: &LocalLimiter) -> Checked {
        match self.ask(key).await {
            Some(wait_us) => {
                self.guard.success();
                Checked::Remote(match wait_us {
                    0 => Ok(()),
                    us => Err(Duration::from_micros(us)),
                })
            }
            None => {
                self.guard.failure(self.since_base(Instant::now()));
                Checked::Local(local.check(key))
            }
        }
    }

    /// Redis's answer (0, or the wait in microseconds), or `None` if it gave none in time.
    async fn ask(&self, key: Key) -> Option<u64> {
        let conn = match self.conn.load_full() {
            Some(c) => c,
            None => tokio::time::timeout(self.config.connect_timeout, self.connect())
                .await
                .ok()?
                .ok()?,
        };
        match tokio::time::timeout(self.config.response_timeout, self.eval(&conn, key)).await {
            Ok(Ok(wait_us)) => Some(wait_us),
            Ok(Err(_)) => {
                // The connection may be dead (a killed server): the next check connects anew.
                let _ = self.conn.compare_and_swap(&Some(conn), None);
                None
            }
            // Slow or frozen: keep the connection, it answers again once the server does.
            Err(_) => None,
        }
    }
}
