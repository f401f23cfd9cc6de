//! How keys and values become bytes in Redis, and the entry header the tier adds.

use crate::entry::Lifetimes;
use bytes::Bytes;
use std::time::Duration;

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

/// The header before each value: magic, version, fresh, swr, sie (ms), delta (µs).
const MAGIC: [u8; 2] = [0x7c, 0x01];
const HEADER: usize = 2 + 4 * 8;

pub(super) fn encode_entry(life: &Lifetimes, delta: Duration, value: &[u8]) -> Vec<u8> {
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

pub(super) fn decode_entry(bytes: &[u8]) -> Option<(Lifetimes, Duration, &[u8])> {
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
}
