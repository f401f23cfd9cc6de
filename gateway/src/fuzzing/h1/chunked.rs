//! The chunked readers: the fast path's framing ([`Chunked::feed`]) against a reference
//! decoder, and the direct client's reader against the fast path's framing.

use super::reference::{Decoded, decode_chunked};
use crate::fast::response::{BadChunk, Chunked};

/// Feeds `body` in the pieces between `cuts` (sorted offsets): after the end, every piece
/// must be taken as nothing.
fn feed_pieces(body: &[u8], cuts: &[usize]) -> Result<Option<usize>, BadChunk> {
    let mut c = Chunked::default();
    let mut from = 0;
    let mut end = None;
    for &to in cuts.iter().chain([&body.len()]) {
        let piece = &body[from..to];
        match (end, c.feed(piece)?) {
            (Some(_), got) => assert_eq!(got, Some(0), "consumed after the end"),
            (None, Some(n)) => {
                assert!(n <= piece.len());
                end = Some(from + n);
            }
            (None, None) => {}
        }
        from = to;
    }
    Ok(end)
}

/// Checks [`Chunked::feed`] on `body` whole, cut at `cuts`, and against `decode_chunked`.
pub(super) fn h1_chunked(body: &[u8], cuts: &[usize]) {
    let mut c = Chunked::default();
    let whole = c.feed(body);
    if let Ok(Some(end)) = whole {
        assert!(end <= body.len());
        assert_eq!(c.feed(b"0\r\n\r\n"), Ok(Some(0)), "consumed after the end");
        assert_eq!(c.feed(b""), Ok(Some(0)));
    }
    assert_eq!(feed_pieces(body, cuts), whole, "cut at {cuts:?}");
    h1_dechunk(body, cuts, whole);
    let expected = match decode_chunked(body) {
        Decoded::End(n) => Ok(Some(n)),
        Decoded::More => Ok(None),
        Decoded::Bad => Err(BadChunk),
        Decoded::Unknown => return,
    };
    assert_eq!(whole, expected, "{:?}", String::from_utf8_lossy(body));
}

/// Checks the direct client's chunked reader against the fast path's framing (`framed`,
/// [`Chunked::feed`] on the whole body): it ends where the fast path does, never takes what
/// the fast path refuses, reads the same data whatever the cuts, and refuses otherwise only a
/// size line longer than it takes or trailers too large.
fn h1_dechunk(body: &[u8], cuts: &[usize], framed: Result<Option<usize>, BadChunk>) {
    let whole = crate::pool::direct::dechunk(body, &[]);
    let cut = crate::pool::direct::dechunk(body, cuts);
    match (&whole, &cut) {
        (Ok(w), Ok(c)) => assert_eq!(w, c, "cut at {cuts:?}"),
        (Err(_), Err(_)) => {}
        _ => panic!("cuts changed the outcome: {whole:?} / {cut:?}"),
    }
    match (whole, framed) {
        (Ok((_, _, end)), Ok(framed_end)) => assert_eq!(end, framed_end),
        (Ok(got), Err(BadChunk)) => panic!("took what the fast path refuses: {got:?}"),
        (Err(_), Ok(_)) => assert!(
            body.split(|&b| b == b'\n').any(|line| line.len() > 4096) || body.len() > 64 * 1024,
            "refused what the fast path takes: {:?}",
            String::from_utf8_lossy(body)
        ),
        (Err(_), Err(BadChunk)) => {}
    }
}
