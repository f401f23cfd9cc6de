//! Per-thread blocks that small byte strings (request heads and bodies read by the fast path,
//! answer heads read by the direct client) are copied into, so that each costs no allocation
//! of its own (a leaf: it imports nothing of the crate).

use bytes::{Bytes, BytesMut};
use std::cell::RefCell;

/// The size of the per-thread blocks that requests' heads and bodies are copied into. A
/// block is freed when the last request copied into it is done, so a long-lived request keeps
/// at most this much (or its own size, when larger) alive, as a connection's read buffer does
/// on hyper's path; a few dozen ordinary heads share one allocation.
const BLOCK: usize = 8 * 1024;

thread_local! {
    /// Where heads and bodies are copied: one block shared by the requests it holds, freed
    /// when the last of them is, so a request's copy costs no allocation of its own (as
    /// hyper's read buffer does).
    static BLOCKS: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `bytes` copied into this thread's current block.
pub(crate) fn held(bytes: &[u8]) -> Bytes {
    if bytes.is_empty() {
        return Bytes::new();
    }
    BLOCKS.with(|b| {
        let mut b = b.borrow_mut();
        if b.capacity() < bytes.len() {
            b.reserve(bytes.len().max(BLOCK));
        }
        b.extend_from_slice(bytes);
        b.split().freeze()
    })
}
