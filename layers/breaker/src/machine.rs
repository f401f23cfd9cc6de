//! The breaker's state machine, shared by every clone of a service.
//!
//! It never reads the clock: time comes in as nanoseconds since an arbitrary base, through a
//! closure called only when the answer needs it. The closed path (admit, record a success into a
//! count window) calls none and touches only atomics, so the same code runs in the service, in
//! the reference-model property test, in the loom model and in the fuzz target.
//!
//! # Ground rules
//! - `state` holds the state in its low 3 bits and an epoch above. Every change is a CAS that
//!   bumps the epoch, so a thread acting on a stale view can never win one. A [`Permit`] is the
//!   state word it was admitted under; its result counts only while that word is current
//!   (closed) or while the half-open generation matches (probes).
//! - Changes away from CLOSED and HALF_OPEN, every change that writes `open_until`, and the
//!   handle's changes happen under `transitions`. The only lock-free change is OPEN → HALF_OPEN,
//!   which writes nothing but the state word and then the probe word.
//! - `open_until` is written under the lock before the Release CAS that publishes OPEN, and
//!   nobody writes it while the state is OPEN.
//! - `back_off_until` grows by `fetch_max`: the latest time a failed answer asked not to be
//!   called before (a 503 with `Retry-After`), at most the longest open wait ahead. While OPEN,
//!   the breaker waits for the later of it and `open_until` before a probe; it never keeps a
//!   closed breaker from admitting, and closing clears it.
//! - `probes` (the half-open word: generation, admitted, results, failures, slow calls) changes
//!   by CAS only. It is reset to a fresh generation only when its own generation is older (or
//!   garbage after a wrap), so a stale thread cannot wipe a newer half-open period. Admission
//!   checks `admitted < permitted` in the same CAS that bumps it: at most `permitted` probes are
//!   in flight at once across every clone.
//! - Windows are statistics, written by any recorder and cleared under the lock before CLOSED
//!   is published.

use crate::config::BreakerConfig;
use crate::config::SlidingWindow;
use crate::error::Open;
use crate::settings::{Settings, Transitions, nanos};
use crate::state::{Snapshot, State, StateChange};
use crate::sync::Mutex;
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use crate::window::{Counts, Window};
use crate::word::{
    ADMITTED_SHIFT, CLOSED, DISABLED, FAILURES_SHIFT, FORCED_OPEN, GEN_SHIFT, HALF_OPEN, OPEN,
    Permit, RESULTS_SHIFT, STATE_MASK, TEN_BITS, code_of, epoch, field, gen_of, generation, older,
    pack, state_of,
};
use crossbeam_utils::CachePadded;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;
use tollgate_core::Outcome;

/// A state-change callback.
pub(crate) type Listener = std::sync::Arc<dyn Fn(&StateChange) + Send + Sync>;

/// The state machine. See the [module docs](self).
pub(crate) struct Core {
    state: CachePadded<AtomicU64>,
    open_until: CachePadded<AtomicU64>,
    /// Nanoseconds on the breaker's clock before which the upstream asked not to be called.
    back_off_until: AtomicU64,
    probes: CachePadded<AtomicU64>,
    consecutive: CachePadded<AtomicU32>,
    window: Window,
    settings: Settings,
    transitions: Mutex<Transitions>,
    listeners: Mutex<Vec<Listener>>,
    name: std::sync::Arc<str>,
    /// Time zero for the service's clock (unused by the machine itself).
    pub(crate) base: tokio::time::Instant,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("name", &self.name)
            .field("state", &state_of(self.state.load(Relaxed)))
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// A closed breaker. `config` must have passed `validate`.
    pub(crate) fn new(config: &BreakerConfig, name: std::sync::Arc<str>) -> Self {
        let min_calls = match config.sliding_window {
            SlidingWindow::Count { size } => config.minimum_calls.min(size),
            SlidingWindow::Time { .. } => config.minimum_calls,
        };
        let window = Window::new(
            &config.sliding_window,
            u64::from(min_calls),
            config.slow_call_duration.is_some(),
        );
        let seed = config.seed.unwrap_or_else(|| {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        });
        let settings = Settings {
            failure_threshold: config.failure_rate_threshold,
            slow_threshold: config.slow_call_rate_threshold,
            slow_enabled: config.slow_call_duration.is_some(),
            slow_ns: config.slow_call_duration.map_or(u64::MAX, nanos),
            min_calls: u64::from(min_calls),
            consecutive: config.consecutive_failures.unwrap_or(0),
            probes: u64::from(config.permitted_calls_in_half_open),
            wait_ns: nanos(config.wait_in_open),
            backoff: config.backoff,
        };
        Self {
            state: CachePadded::new(AtomicU64::new(pack(CLOSED, 0))),
            open_until: CachePadded::new(AtomicU64::new(0)),
            back_off_until: AtomicU64::new(0),
            probes: CachePadded::new(AtomicU64::new(0)),
            consecutive: CachePadded::new(AtomicU32::new(0)),
            window,
            settings,
            transitions: Mutex::new(Transitions {
                opens_in_a_row: 0,
                rng: SmallRng::seed_from_u64(seed),
            }),
            listeners: Mutex::new(Vec::new()),
            name,
            base: tokio::time::Instant::now(),
        }
    }

    /// Adds a state-change callback.
    pub(crate) fn add_listener(&self, listener: Listener) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    /// Whether a call's duration is needed (slow-call detection is on).
    pub(crate) fn times_calls(&self) -> bool {
        self.settings.slow_enabled
    }

    /// Whether recording needs the time of the result.
    pub(crate) fn records_time(&self) -> bool {
        self.window.is_timed()
    }

    /// The current state.
    pub(crate) fn state(&self) -> State {
        // Relaxed: a report; nothing is read on the strength of it.
        state_of(self.state.load(Relaxed))
    }

    /// Whether a call made now could be admitted (without taking anything): false while open
    /// and waiting, or forced open. `now` is called only when open.
    #[inline]
    pub(crate) fn may_admit(&self, now: impl FnOnce() -> u64) -> bool {
        // Acquire: as in `acquire`.
        let s = self.state.load(Acquire);
        match s & STATE_MASK {
            FORCED_OPEN => false,
            // Relaxed: ordered after the Acquire load above, as in `acquire_slow`.
            OPEN => now() >= self.reopen_at(),
            _ => true,
        }
    }

    /// Like [`may_admit`](Self::may_admit), and false too while half-open with every probe
    /// slot of the current period taken: whether a call made now would be let through.
    pub(crate) fn admits_now(&self, now: impl FnOnce() -> u64) -> bool {
        // Acquire: as in `acquire`.
        let s = self.state.load(Acquire);
        match s & STATE_MASK {
            FORCED_OPEN => false,
            // Relaxed: ordered after the Acquire load above, as in `acquire_slow`.
            OPEN => now() >= self.reopen_at(),
            HALF_OPEN => {
                // Relaxed: a hint; `admit_probe`'s CAS decides. A probe word of an older
                // generation is a period whose slots nobody has taken yet.
                let h = self.probes.load(Relaxed);
                gen_of(h) != generation(s) || field(h, ADMITTED_SHIFT) < self.settings.probes
            }
            _ => true,
        }
    }

    /// Admits a call or rejects it. `now` is called only when the breaker is open.
    ///
    /// # Errors
    ///
    /// [`Open`] when the breaker is open, forced open, or half-open with every probe taken.
    #[inline]
    pub(crate) fn acquire(&self, now: impl FnMut() -> u64) -> Result<Permit, Open> {
        // Acquire: pairs with the Release CAS that published the state; who sees OPEN also sees
        // the `open_until` written before it.
        let s = self.state.load(Acquire);
        if s & STATE_MASK == CLOSED {
            return Ok(Permit(s));
        }
        self.acquire_slow(s, now)
    }

    #[cold]
    fn acquire_slow(&self, mut s: u64, mut now: impl FnMut() -> u64) -> Result<Permit, Open> {
        loop {
            match s & STATE_MASK {
                CLOSED | DISABLED => return Ok(Permit(s)),
                FORCED_OPEN => return Err(Open::new(None)),
                OPEN => {
                    let t = now();
                    // Relaxed (both loads): ordered after the Acquire load of `state` that saw OPEN.
                    let until = self.reopen_at();
                    if t < until {
                        return Err(Open::new(Some(Duration::from_nanos(until - t))));
                    }
                    let next = pack(HALF_OPEN, epoch(s) + 1);
                    // AcqRel: Release pairs with the Acquire loads of `state` (admitters must
                    // find the probe word reset after seeing HALF_OPEN, which they help with if
                    // not); Acquire keeps our reads after the winner's.
                    if self
                        .state
                        .compare_exchange(s, next, AcqRel, Acquire)
                        .is_ok()
                    {
                        self.enter_half_open(generation(next));
                        self.emit(StateChange {
                            name: self.name.clone(),
                            from: State::Open,
                            to: State::HalfOpen,
                            open_for: None,
                        });
                    }
                }
                _ => {
                    if let Some(result) = self.admit_probe(s) {
                        return result;
                    }
                }
            }
            // Acquire: as in `acquire`.
            s = self.state.load(Acquire);
        }
    }

    /// When an open breaker may let a probe through: its wait's end, or later when the upstream
    /// asked for a longer pause.
    #[inline]
    fn reopen_at(&self) -> u64 {
        // Relaxed: see the callers.
        self.open_until
            .load(Relaxed)
            .max(self.back_off_until.load(Relaxed))
    }

    /// The upstream asked, at `now` (nanoseconds on the breaker's clock), not to be called for
    /// `pause`: while the breaker is open, or once it opens, no probe goes before then. The
    /// pause is capped at the longest open wait ([`Core::longest_wait`]), so a huge
    /// `Retry-After` cannot hold the breaker open for good.
    #[inline]
    pub(crate) fn back_off(&self, now: u64, pause: Duration) {
        let until = now.saturating_add(nanos(pause.min(self.longest_wait())));
        // Relaxed: a deadline read after the Acquire load of an OPEN state; a probe that races
        // a later back-off was already due.
        self.back_off_until.fetch_max(until, Relaxed);
    }

    /// The longest an upstream's pause may hold the breaker open: the backoff's `max_wait`, or
    /// without a backoff the default's (10 minutes) or `wait_in_open` if that is longer.
    pub(crate) fn longest_wait(&self) -> Duration {
        match self.settings.backoff {
            Some(b) => b.max_wait,
            None => crate::config::Backoff::default()
                .max_wait
                .max(Duration::from_nanos(self.settings.wait_ns)),
        }
    }

    /// The slow-call threshold in nanoseconds (`u64::MAX` when slow calls are not detected).
    #[inline]
    pub(crate) fn slow_ns(&self) -> u64 {
        self.settings.slow_ns
    }

    /// Resets the probe word for generation `g` unless it already holds `g` or a newer one.
    fn enter_half_open(&self, g: u64) {
        // Relaxed: every field lives in this one word, and the CAS alone decides.
        let mut h = self.probes.load(Relaxed);
        while older(gen_of(h), g) {
            match self
                .probes
                .compare_exchange_weak(h, g << GEN_SHIFT, Relaxed, Relaxed)
            {
                Ok(_) => return,
                Err(actual) => h = actual,
            }
        }
    }

    /// Takes a probe slot in the half-open period of state word `s`. `None` when `s` is stale.
    fn admit_probe(&self, s: u64) -> Option<Result<Permit, Open>> {
        let g = generation(s);
        // Relaxed: the probe word is self-contained; admission is decided by the CAS alone.
        let mut h = self.probes.load(Relaxed);
        loop {
            if gen_of(h) != g {
                // Acquire: as in `acquire`.
                let stale_view = self.state.load(Acquire) != s;
                if !older(gen_of(h), g) && stale_view {
                    return None;
                }
                // Older generation: the winner of OPEN → HALF_OPEN has not reset it yet, help.
                // Newer while `s` is current: garbage after a 24-bit wrap, reset it too.
                match self
                    .probes
                    .compare_exchange(h, g << GEN_SHIFT, Relaxed, Relaxed)
                {
                    Ok(_) => h = g << GEN_SHIFT,
                    Err(actual) => h = actual,
                }
                continue;
            }
            if field(h, ADMITTED_SHIFT) >= self.settings.probes {
                return Some(Err(Open::new(None)));
            }
            match self
                .probes
                .compare_exchange_weak(h, h + (1 << ADMITTED_SHIFT), Relaxed, Relaxed)
            {
                Ok(_) => {
                    // A thread that stalled since loading `s` may have admitted itself into a
                    // period a handle already ended. Epochs only grow, so if the state is still
                    // `s` now, it was `s` when the CAS won: the probe belongs to the live period.
                    // Acquire: as in `acquire`.
                    if self.state.load(Acquire) == s {
                        return Some(Ok(Permit(s)));
                    }
                    self.release(Permit(s));
                    return None;
                }
                Err(actual) => h = actual,
            }
        }
    }

    /// Gives back a permit whose call was cancelled or classified as ignored.
    pub(crate) fn release(&self, permit: Permit) {
        if !permit.is_probe() {
            return;
        }
        let g = generation(permit.0);
        // Relaxed: as in `admit_probe`.
        let mut h = self.probes.load(Relaxed);
        while gen_of(h) == g && field(h, ADMITTED_SHIFT) > field(h, RESULTS_SHIFT) {
            match self
                .probes
                .compare_exchange_weak(h, h - (1 << ADMITTED_SHIFT), Relaxed, Relaxed)
            {
                Ok(_) => return,
                Err(actual) => h = actual,
            }
        }
    }

    /// Records a finished call. `elapsed_ns` is its duration (0 when not timed); `now` is called
    /// at most once, only when the window is time-based or the breaker changes state.
    #[inline]
    pub(crate) fn record(
        &self,
        permit: Permit,
        outcome: Outcome,
        elapsed_ns: u64,
        now: impl FnMut() -> u64,
    ) {
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => return self.release(permit),
        };
        let slow = elapsed_ns >= self.settings.slow_ns;
        match permit.0 & STATE_MASK {
            CLOSED => self.record_closed(permit.0, failed, slow, now),
            HALF_OPEN => self.record_probe(permit.0, failed, slow, now),
            _ => {}
        }
    }

    #[inline]
    fn record_closed(&self, word: u64, failed: bool, slow: bool, mut read: impl FnMut() -> u64) {
        // Relaxed: only filters out results admitted before a transition; a result racing one
        // lands in either window, which a rate tolerates.
        if self.state.load(Relaxed) != word {
            return;
        }
        let mut cached = None;
        let mut now = || *cached.get_or_insert_with(&mut read);
        let mut trip = false;
        if self.settings.consecutive != 0 {
            // Relaxed: a statistic; racing updates may lose a count, never corrupt the state.
            if failed {
                trip = self.consecutive.fetch_add(1, Relaxed) + 1 >= self.settings.consecutive;
            } else if self.consecutive.load(Relaxed) != 0 {
                self.consecutive.store(0, Relaxed);
            }
        }
        if let Some(c) = self.window.record(failed, slow, &mut now) {
            trip |= self.rates_trip(c);
        }
        if trip {
            self.open_from(word, now());
        }
    }

    fn rates_trip(&self, c: Counts) -> bool {
        if c.calls < self.settings.min_calls {
            return false;
        }
        let calls = c.calls as f64;
        c.failures as f64 >= self.settings.failure_threshold * calls
            || (self.settings.slow_enabled && c.slow as f64 >= self.settings.slow_threshold * calls)
    }

    fn record_probe(&self, word: u64, failed: bool, slow: bool, mut now: impl FnMut() -> u64) {
        let g = generation(word);
        let add =
            (1 << RESULTS_SHIFT) | if failed { 1 << FAILURES_SHIFT } else { 0 } | u64::from(slow);
        // Relaxed: as in `admit_probe`.
        let mut h = self.probes.load(Relaxed);
        loop {
            if gen_of(h) != g || field(h, RESULTS_SHIFT) >= field(h, ADMITTED_SHIFT) {
                return;
            }
            match self
                .probes
                .compare_exchange_weak(h, h + add, Relaxed, Relaxed)
            {
                Ok(_) => {
                    h += add;
                    break;
                }
                Err(actual) => h = actual,
            }
        }
        // Exactly one recorder brings the results to the permitted count: it decides.
        let n = field(h, RESULTS_SHIFT);
        if n == self.settings.probes {
            let calls = n as f64;
            let reopen = field(h, FAILURES_SHIFT) as f64 >= self.settings.failure_threshold * calls
                || (self.settings.slow_enabled
                    && (h & TEN_BITS) as f64 >= self.settings.slow_threshold * calls);
            if reopen {
                self.open_from(word, now())
            } else {
                self.move_to(Some(word), State::Closed)
            }
        }
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Transitions> {
        self.transitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the breaker if its state word is still `word` (CLOSED or HALF_OPEN).
    fn open_from(&self, word: u64, now: u64) {
        let change = {
            let mut t = self.lock();
            // Relaxed: every change away from CLOSED or HALF_OPEN is made under this lock, so
            // the value read here is current and stays so until our CAS.
            if self.state.load(Relaxed) != word {
                return;
            }
            let wait = t.next_wait(&self.settings);
            // Relaxed: published by the Release CAS below.
            self.open_until.store(now.saturating_add(wait), Relaxed);
            // AcqRel: Release pairs with the Acquire load in `acquire`: who sees OPEN sees the
            // `open_until` stored above.
            if self
                .state
                .compare_exchange(word, pack(OPEN, epoch(word) + 1), AcqRel, Relaxed)
                .is_err()
            {
                return;
            }
            StateChange {
                name: self.name.clone(),
                from: state_of(word),
                to: State::Open,
                open_for: Some(Duration::from_nanos(wait)),
            }
        };
        self.emit(change);
    }

    /// Moves to `to` (CLOSED, FORCED_OPEN or DISABLED), from `from` if given, else from
    /// whatever the state is. Closing clears the window and the backoff.
    pub(crate) fn move_to(&self, from: Option<u64>, to: State) {
        debug_assert!(matches!(
            to,
            State::Closed | State::ForcedOpen | State::Disabled
        ));
        let change = {
            let mut t = self.lock();
            // Acquire: pairs with the lock-free OPEN → HALF_OPEN CAS.
            let mut cur = self.state.load(Acquire);
            loop {
                if from.is_some_and(|f| f != cur) {
                    return;
                }
                if to == State::Closed {
                    self.window.clear();
                    // Relaxed: read only while OPEN, which a later Release CAS publishes; a
                    // pause asked for before the breaker closed says nothing of the next open.
                    self.back_off_until.store(0, Relaxed);
                    // Relaxed: cleared before CLOSED is published by the Release CAS below.
                    self.consecutive.store(0, Relaxed);
                    t.opens_in_a_row = 0;
                }
                // AcqRel: Release publishes the cleared window with the new state; Acquire pairs
                // with the lock-free OPEN → HALF_OPEN CAS when we lose to it.
                match self.state.compare_exchange(
                    cur,
                    pack(code_of(to), epoch(cur) + 1),
                    AcqRel,
                    Acquire,
                ) {
                    Ok(_) => break,
                    Err(actual) => cur = actual,
                }
            }
            if state_of(cur) == to {
                return;
            }
            StateChange {
                name: self.name.clone(),
                from: state_of(cur),
                to,
                open_for: None,
            }
        };
        self.emit(change);
    }

    fn emit(&self, change: StateChange) {
        // info: state changes are rare and are what an operator wants to see.
        tracing::info!(
            breaker = %change.name,
            from = ?change.from,
            to = ?change.to,
            open_for = ?change.open_for,
            "circuit breaker state changed"
        );
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for l in listeners {
            l(&change);
        }
    }

    /// A view of the breaker at `now`.
    pub(crate) fn snapshot(&self, now: u64) -> Snapshot {
        let opens_in_a_row = self.lock().opens_in_a_row;
        // Acquire: as in `acquire`.
        let s = self.state.load(Acquire);
        let c = self.window.counts(now);
        let rate = |n: u64| (c.calls > 0).then(|| n as f64 / c.calls as f64);
        // Relaxed: a report.
        let h = self.probes.load(Relaxed);
        let probing = s & STATE_MASK == HALF_OPEN && gen_of(h) == generation(s);
        let retry_after = (s & STATE_MASK == OPEN)
            .then(|| Duration::from_nanos(self.reopen_at().saturating_sub(now)));
        Snapshot {
            state: state_of(s),
            calls: c.calls,
            failures: c.failures,
            slow_calls: c.slow,
            failure_rate: rate(c.failures),
            slow_call_rate: rate(c.slow),
            // Relaxed: a report.
            consecutive_failures: self.consecutive.load(Relaxed),
            probes_admitted: if probing {
                field(h, ADMITTED_SHIFT) as u32
            } else {
                0
            },
            probe_results: if probing {
                field(h, RESULTS_SHIFT) as u32
            } else {
                0
            },
            retry_after,
            opens_in_a_row,
        }
    }

    /// Probes admitted and not yet finished or released in the current half-open period (for
    /// tests and the fuzz target).
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    pub(crate) fn probes_in_flight(&self) -> u64 {
        let h = self.probes.load(Relaxed);
        field(h, ADMITTED_SHIFT) - field(h, RESULTS_SHIFT)
    }
}
