//! The packed words of the state machine: the state word (state and epoch) and the half-open
//! probe word, and the permit a caller holds.

use crate::state::State;

pub(crate) const CLOSED: u64 = 0;
pub(crate) const OPEN: u64 = 1;
pub(crate) const HALF_OPEN: u64 = 2;
pub(crate) const FORCED_OPEN: u64 = 3;
pub(crate) const DISABLED: u64 = 4;
pub(crate) const STATE_BITS: u32 = 3;
pub(crate) const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

pub(crate) fn pack(state: u64, epoch: u64) -> u64 {
    (epoch << STATE_BITS) | state
}

pub(crate) fn epoch(word: u64) -> u64 {
    word >> STATE_BITS
}

pub(crate) fn state_of(word: u64) -> State {
    match word & STATE_MASK {
        CLOSED => State::Closed,
        OPEN => State::Open,
        HALF_OPEN => State::HalfOpen,
        FORCED_OPEN => State::ForcedOpen,
        _ => State::Disabled,
    }
}

pub(crate) fn code_of(state: State) -> u64 {
    match state {
        State::Closed => CLOSED,
        State::Open => OPEN,
        State::HalfOpen => HALF_OPEN,
        State::ForcedOpen => FORCED_OPEN,
        State::Disabled => DISABLED,
    }
}

// The half-open word: generation (24 bits) | admitted | results | failures | slow (10 bits each).
pub(crate) const GEN_SHIFT: u32 = 40;
pub(crate) const GEN_MASK: u64 = (1 << 24) - 1;
pub(crate) const ADMITTED_SHIFT: u32 = 30;
pub(crate) const RESULTS_SHIFT: u32 = 20;
pub(crate) const FAILURES_SHIFT: u32 = 10;
pub(crate) const TEN_BITS: u64 = (1 << 10) - 1;

pub(crate) fn generation(state_word: u64) -> u64 {
    epoch(state_word) & GEN_MASK
}

pub(crate) fn gen_of(probes: u64) -> u64 {
    probes >> GEN_SHIFT
}

pub(crate) fn field(probes: u64, shift: u32) -> u64 {
    (probes >> shift) & TEN_BITS
}

/// Whether generation `a` comes before `b` (24-bit wrapping).
pub(crate) fn older(a: u64, b: u64) -> bool {
    a != b && (b.wrapping_sub(a) & GEN_MASK) < (1 << 23)
}

/// What a caller was admitted under. Give it back with
/// [`Core::record`](crate::machine::Core::record) or
/// [`Core::release`](crate::machine::Core::release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Permit(pub(crate) u64);

impl Permit {
    /// Whether this is a half-open probe.
    pub(crate) fn is_probe(self) -> bool {
        self.0 & STATE_MASK == HALF_OPEN
    }

    /// The state word it was admitted under (tests and fuzzing group probes by it).
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    pub(crate) fn word(self) -> u64 {
        self.0
    }
}
