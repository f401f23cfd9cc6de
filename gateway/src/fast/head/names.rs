//! The request fields the fast path treats specially, told apart by length first.

use crate::trace;

/// Headers the fast path treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Name {
    Host,
    ContentLength,
    Connection,
    /// Hop-by-hop: never forwarded (RFC 9110 §7.6.1).
    HopByHop,
    /// `TE`: only `trailers` is forwarded.
    Te,
    /// Present means hyper serves the request.
    Refuse,
    XForwardedFor,
    /// `Forwarded`: passed on, unless the peer is trusted (then rewritten).
    Forwarded,
    /// Replaced by the gateway's own value.
    Replaced,
    Other,
}

pub(super) fn name_of(name: &str) -> Name {
    let is = |s: &str| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is("te") => Name::Te,
        4 if is("host") => Name::Host,
        6 if is("expect") => Name::Refuse,
        7 if is("upgrade") => Name::Refuse,
        7 if is("trailer") => Name::HopByHop,
        9 if is("forwarded") => Name::Forwarded,
        10 if is("connection") => Name::Connection,
        10 if is("keep-alive") => Name::HopByHop,
        14 if is("content-length") => Name::ContentLength,
        15 if is("x-forwarded-for") => Name::XForwardedFor,
        16 if is("proxy-connection") => Name::HopByHop,
        16 if is("x-forwarded-host") => Name::Replaced,
        17 if is("transfer-encoding") => Name::Refuse,
        17 if is("x-forwarded-proto") => Name::Replaced,
        18 if is("proxy-authenticate") => Name::HopByHop,
        19 if is("proxy-authorization") => Name::HopByHop,
        _ => Name::Other,
    }
}

pub(super) fn is_traceparent(name: &str) -> bool {
    name.eq_ignore_ascii_case(trace::TRACEPARENT)
}
