//! Request ids (a leaf): every request carries one in `server.request_id_header`
//! (`x-request-id` by default) to the upstream, in the access log and on the gateway's own
//! answers, so that a log line can be matched with the upstream's. The client's value is kept
//! only when `server.trust_request_id` is on (behind a proxy that sets it); otherwise the
//! gateway makes a fresh one: 128 bits as 32 lower-case hex digits, from a per-thread
//! generator (no lock, no allocation).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// The longest header name the policy holds (the config is checked against it).
pub(crate) const MAX_NAME: usize = 64;

/// A client's id is kept (when trusted) only if it is 1 to this many visible ASCII bytes.
pub(crate) const MAX_KEPT: usize = 200;

/// What the fast path needs of the policy, by value (no borrow of the config).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    name: [u8; MAX_NAME],
    name_len: u8,
    /// Keep a client's id.
    pub trust: bool,
}

impl Policy {
    /// No request ids.
    pub(crate) const OFF: Policy = Policy {
        name: [0; MAX_NAME],
        name_len: 0,
        trust: false,
    };

    /// The policy for header `name` (lower case; empty: off), longer names turned off.
    pub(crate) fn new(name: &str, trust: bool) -> Self {
        let mut p = Self::OFF;
        if name.len() <= MAX_NAME {
            p.name[..name.len()].copy_from_slice(name.as_bytes());
            p.name_len = name.len() as u8;
            p.trust = trust;
        }
        p
    }

    /// The header name, empty when off.
    pub(crate) fn name(&self) -> &[u8] {
        &self.name[..usize::from(self.name_len)]
    }

    /// Whether request ids are on.
    pub(crate) fn is_on(&self) -> bool {
        self.name_len > 0
    }
}

/// One request's id, held by value (the client's, up to [`MAX_KEPT`] bytes, or a fresh one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Id {
    buf: [u8; MAX_KEPT],
    len: u8,
}

impl Id {
    /// No id (request ids off).
    pub(crate) const NONE: Id = Id {
        buf: [0; MAX_KEPT],
        len: 0,
    };

    /// `bytes` as an id (cut at [`MAX_KEPT`]).
    pub(crate) fn from(bytes: &[u8]) -> Self {
        let mut id = Self::NONE;
        let n = bytes.len().min(MAX_KEPT);
        id.buf[..n].copy_from_slice(&bytes[..n]);
        id.len = n as u8;
        id
    }

    /// The id's bytes; empty for none.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The id as text (ids are visible ASCII), for the access log.
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("-")
    }
}

/// Whether `value` may be kept as a request id.
pub(crate) fn keepable(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= MAX_KEPT && value.iter().all(|b| b.is_ascii_graphic())
}

/// Threads take distinct seeds from this, so two threads never walk the same sequence.
static SEEDS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static STATE: Cell<u64> = const { Cell::new(0) };
}

/// splitmix64: a full-period 64-bit sequence whose outputs are well mixed.
fn next(state: &Cell<u64>) -> u64 {
    let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
    state.set(s);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 64 well-mixed random bits from the thread's generator (request ids, trace and span ids).
pub(crate) fn random() -> u64 {
    STATE.with(|state| {
        if state.get() == 0 {
            // The thread's first draw: a seed from the standard library's per-process random
            // keys (the ones `HashMap` uses) and a counter.
            use std::hash::{BuildHasher, Hasher};
            let random = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            // Relaxed: only distinctness matters.
            let n = SEEDS.fetch_add(1, Ordering::Relaxed);
            let seed = random ^ n.wrapping_mul(0xa076_1d64_78bd_642f);
            state.set(seed | 1);
        }
        next(state)
    })
}

/// A fresh request id: 32 lower-case hex digits.
pub(crate) fn fresh() -> [u8; 32] {
    let (a, b) = (random(), random());
    let mut out = [0u8; 32];
    hex_into(&a.to_be_bytes(), &mut out[..16]);
    hex_into(&b.to_be_bytes(), &mut out[16..]);
    out
}

/// Writes `bytes` as lower-case hex into `out` (twice as long).
pub(crate) fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (i, byte) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(byte >> 4)];
        out[2 * i + 1] = HEX[usize::from(byte & 15)];
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_hex_and_distinct_across_threads() {
        let mine: Vec<[u8; 32]> = (0..1000).map(|_| fresh()).collect();
        let theirs: Vec<[u8; 32]> = std::thread::spawn(|| (0..1000).map(|_| fresh()).collect())
            .join()
            .unwrap();
        let mut all: Vec<[u8; 32]> = mine.into_iter().chain(theirs).collect();
        assert!(all.iter().all(|id| id.iter().all(|b| HEX.contains(b))));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 2000);
    }

    #[test]
    fn the_policy_holds_its_name() {
        let p = Policy::new("x-request-id", true);
        assert_eq!(p.name(), b"x-request-id");
        assert!(p.is_on() && p.trust);
        assert!(!Policy::new("", true).is_on());
        assert!(!Policy::new(&"x".repeat(MAX_NAME + 1), false).is_on());
        assert!(keepable(b"abc-123") && !keepable(b"") && !keepable(b"a b"));
    }
}
