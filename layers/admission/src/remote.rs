//! The per-key GCRA quota kept in Redis, so several gateway instances share one limit.
//!
//! One Lua script does the whole GCRA step atomically on the server, on the server's clock
//! (`TIME`), so instances with skewed clocks agree: it reads the key's theoretical arrival
//! time (TAT, microseconds), rejects with the wait if `now < TAT - tolerance`, else stores
//! `max(TAT, now) + interval` with an expiry just past it (idle keys vanish by themselves) and
//! answers how far the key is from an empty bucket (`now + tolerance + interval - TAT`), from
//! which an admitted request learns what its key has left ([`RateLimitState`]).
//!
//! Every check, connecting included, waits at most [`RedisConfig::response_timeout`]. A
//! connection is made by a background task (bounded by [`RedisConfig::connect_timeout`],
//! one at a time) that a request without one starts and waits for within its own bound, so a
//! slow connect is not lost when that request gives up, and a frozen server never holds a
//! request longer than the response timeout. When Redis cannot answer (connect error, command
//! error, timeout), the request is checked against the local limiter instead;
//! after [`RedisConfig::failures`] failures in a row an [`OutageGuard`] keeps requests away
//! from Redis for [`RedisConfig::cooldown`], then lets one probe, so an outage costs a few
//! timeouts, not one per request.
//!
//! The connection is an [`ArcSwapOption`]: a request reads it without a lock. A command error
//! drops it (the next check connects again); a timeout keeps it, since a server that is only
//! slow (or frozen and thawed) answers on it again.

use crate::classify::Key;
use crate::config::{KEY_PREFIX, RedisConfig};
use crate::ratelimit::{LocalLimiter, RateLimitState};
use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
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
  return {tat - tolerance - now, 0}
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return {0, now + tolerance + interval - next_tat}
";

/// The Redis side of the rate limit. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct RemoteLimiter {
    link: Arc<Link>,
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
    /// Redis answered: what the key has left, or the wait until it may go.
    Remote(Result<RateLimitState, Duration>),
    /// Redis could not be reached; the local limit answered.
    Local(Result<RateLimitState, Duration>),
}

impl Checked {
    pub(crate) fn result(self) -> Result<RateLimitState, Duration> {
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
            link: Arc::new(Link {
                client: redis::Client::open(config.url.as_str()).expect("validated URL"),
                conn: ArcSwapOption::empty(),
                connecting: AtomicBool::new(false),
                done: Notify::new(),
                connect_timeout: config.connect_timeout,
                response_timeout: config.response_timeout,
            }),
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

    async fn eval(&self, conn: &MultiplexedConnection, key: Key) -> redis::RedisResult<(u64, u64)> {
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
            Some((wait_us, room_us)) => {
                self.guard.success();
                Checked::Remote(match wait_us {
                    0 => Ok(RateLimitState::from_room(
                        room_us,
                        self.interval_us,
                        self.tolerance_us,
                        1_000,
                    )),
                    us => Err(Duration::from_micros(us)),
                })
            }
            None => {
                self.guard.failure(self.since_base(Instant::now()));
                Checked::Local(local.check(key))
            }
        }
    }

    /// Redis's answer (0 and the key's room, or the wait, in microseconds), or `None` if it
    /// gave none within the response timeout (a connection made meanwhile included).
    async fn ask(&self, key: Key) -> Option<(u64, u64)> {
        let link = &self.link;
        let until = Instant::now() + link.response_timeout;
        let conn = match link.conn.load_full() {
            Some(c) => c,
            None => {
                let done = link.done.notified();
                tokio::pin!(done);
                // Registered before the connect starts, so its end cannot be missed.
                done.as_mut().enable();
                Link::start_connecting(link);
                tokio::time::timeout_at(until, done).await.ok()?;
                link.conn.load_full()?
            }
        };
        match tokio::time::timeout_at(until, self.eval(&conn, key)).await {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(_)) => {
                // The connection may be dead (a killed server): the next check connects anew.
                let _ = link.conn.compare_and_swap(&Some(conn), None);
                None
            }
            // Slow or frozen: keep the connection, it answers again once the server does.
            Err(_) => None,
        }
    }
}

/// The connection to Redis and the one background task that makes it.
#[derive(Debug)]
struct Link {
    client: redis::Client,
    conn: ArcSwapOption<MultiplexedConnection>,
    /// Whether a connect task is running.
    connecting: AtomicBool,
    /// Woken when a connect task ends (made a connection or not).
    done: Notify,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl Link {
    /// Starts a connect task unless one is running (on the current tokio runtime).
    fn start_connecting(me: &Arc<Link>) {
        // Acquire/Release: pairs with the store in the task; whoever sees `false` also sees
        // the connection the last task stored.
        if me.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Connecting(me.clone());
        tokio::spawn(async move {
            let me = &me.0;
            let cfg = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(me.connect_timeout)
                .set_response_timeout(me.response_timeout);
            let made = tokio::time::timeout(
                me.connect_timeout,
                me.client.get_multiplexed_async_connection_with_config(&cfg),
            )
            .await;
            if let Ok(Ok(c)) = made {
                me.conn.store(Some(Arc::new(c)));
            }
        });
    }
}

/// A running connect task's claim: when the task ends, or is dropped with its runtime, the
/// next request may start another, and those waiting are woken.
struct Connecting(Arc<Link>);

impl Drop for Connecting {
    fn drop(&mut self) {
        // Release: pairs with the swap in `start_connecting`.
        self.0.connecting.store(false, Ordering::Release);
        self.0.done.notify_waiters();
    }
}
