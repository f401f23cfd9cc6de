//! The power-of-two-choices pick.
//!
//! Two distinct endpoints are drawn at random and the cheaper one (by [`Core::cost`]) wins.
//! Only admitted endpoints (healthy and not ejected) take part, unless fewer than
//! `panic_threshold` of them are admitted: then every endpoint does (panic mode), since
//! overloading the few healthy ones would take them down too.
//!
//! The fast path reads two endpoints; only when a drawn endpoint is not admitted does the pick
//! scan the set to count the admitted ones and draw again among them.

use crate::endpoint::{Core, Endpoint};
use crate::sync::Arc;

/// A xorshift64* generator: a few instructions per draw, no allocation, seedable.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value, zero included).
    pub(crate) fn new(seed: u64) -> Self {
        // splitmix64 spreads close seeds apart and never yields the all-zero state in practice.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Two distinct numbers below `n` (`n >= 2`).
    fn two_below(&mut self, n: usize) -> (usize, usize) {
        let a = self.below(n);
        let mut b = self.below(n - 1);
        if b >= a {
            b += 1;
        }
        (a, b)
    }
}

/// A seed for a balancer clone made on this thread, when the config gave none: distinct from
/// this thread's earlier seeds and apart from other threads' (each starts from the address of
/// its own thread-local), with no shared counter for clones on different cores to fight over.
pub(crate) fn thread_seed() -> u64 {
    std::thread_local! {
        static NEXT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    NEXT.with(|next| {
        let mut seed = next.get();
        if seed == 0 {
            let here = next as *const _ as u64;
            seed = (tollgate_core::counter::shard_index() as u64) << 48 ^ here | 1;
        }
        // Odd steps never return to zero in fewer than 2^64 seeds.
        next.set(seed.wrapping_add(0x9E37_79B9_7F4A_7C15));
        seed
    })
}

/// The result of a pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Choice {
    /// Index into the endpoint set.
    pub(crate) index: usize,
    /// Whether the pick was made in panic mode (over every endpoint).
    pub(crate) panic: bool,
}

/// Whether a set with `admitted` of `total` endpoints admitted is in panic mode.
pub(crate) fn panicking(admitted: usize, total: usize, threshold: f64) -> bool {
    admitted == 0 || (admitted as f64) < threshold * total as f64
}

fn cheaper(cores: &[&Core], a: usize, b: usize, now: u64) -> usize {
    if cores[b].cost(now) < cores[a].cost(now) {
        b
    } else {
        a
    }
}

/// Picks an endpoint of `set` at `now`; `None` when the set is empty.
pub(crate) fn choose<K, S>(set: &[Arc<Endpoint<K, S>>], now: u64, rng: &mut Rng) -> Option<Choice> {
    choose_by(set.len(), |i| &set[i].core, now, rng)
}

/// [`choose`] over any indexable set of endpoint states.
pub(crate) fn choose_by<'a>(
    n: usize,
    core: impl Fn(usize) -> &'a Core,
    now: u64,
    rng: &mut Rng,
) -> Option<Choice> {
    match n {
        0 => return None,
        1 => {
            let c = core(0);
            let threshold = c.common.panic_threshold;
            let panic = panicking(usize::from(c.admitted(now)), 1, threshold);
            return Some(Choice { index: 0, panic });
        }
        _ => {}
    }
    let (a, b) = rng.two_below(n);
    let (ca, cb) = (core(a), core(b));
    if ca.admitted(now) && cb.admitted(now) {
        let index = cheaper(&[ca, cb], 0, 1, now);
        return Some(Choice {
            index: if index == 0 { a } else { b },
            panic: false,
        });
    }
    // Slow path: count the admitted endpoints.
    let threshold = ca.common.panic_threshold;
    let admitted = (0..n).filter(|&i| core(i).admitted(now)).count();
    if panicking(admitted, n, threshold) {
        let index = cheaper(&[ca, cb], 0, 1, now);
        return Some(Choice {
            index: if index == 0 { a } else { b },
            panic: true,
        });
    }
    if admitted == 1 {
        let index = (0..n).find(|&i| core(i).admitted(now)).unwrap_or(0);
        return Some(Choice {
            index,
            panic: false,
        });
    }
    let (ka, kb) = rng.two_below(admitted);
    let mut found = [0usize; 2];
    let mut k = 0;
    for i in 0..n {
        if core(i).admitted(now) {
            if k == ka {
                found[0] = i;
            }
            if k == kb {
                found[1] = i;
            }
            k += 1;
        }
    }
    let (ca, cb) = (core(found[0]), core(found[1]));
    let index = cheaper(&[ca, cb], 0, 1, now);
    Some(Choice {
        index: found[index],
        panic: false,
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn draws_are_in_range_and_distinct() {
        let mut rng = Rng::new(7);
        for n in 2..20 {
            for _ in 0..200 {
                let (a, b) = rng.two_below(n);
                assert!(a < n && b < n && a != b);
            }
        }
        assert_eq!(Rng::new(1).next_u64(), Rng::new(1).next_u64());
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn draws_are_uniform() {
        let mut rng = Rng::new(3);
        let mut counts = [0u32; 5];
        for _ in 0..50_000 {
            counts[rng.below(5)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn panic_threshold() {
        assert!(panicking(0, 3, 0.0));
        assert!(!panicking(1, 3, 0.0));
        assert!(panicking(4, 10, 0.5));
        assert!(!panicking(5, 10, 0.5));
    }
}
