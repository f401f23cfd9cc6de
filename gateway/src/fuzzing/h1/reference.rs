//! The reference the `gateway_h1` target checks the fast path against: request and response
//! heads parsed by httparse into an owned [`Msg`], the RFC 9110 list, hop-by-hop and relay
//! rules over it, the target predicates, and a chunked decoder ([`decode_chunked`]), all
//! written independently of `gateway::fast`.

/// Whether a target holds only RFC 3986 characters (unreserved, sub-delims, `:`, `@`, `/`,
/// `?`, `[`, `]`, and `%` for escapes): what the fast path takes; no fragment.
pub(super) fn rfc3986_target(target: &str) -> bool {
    target
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%[]".contains(&b))
}

/// Whether hyper (through `http::uri::PathAndQuery`) takes this origin-form target as it is:
/// no fragment, and only the bytes it accepts in the path and in the query.
pub(super) fn hyper_takes_target(target: &str) -> bool {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let high = |b: u8| b >= 0x80;
    path.bytes().all(|b| {
        matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x40..=0x5F | 0x61..=0x7A | 0x7C | 0x7E)
            || matches!(b, b'"' | b'{' | b'}')
            || high(b)
    }) && query
        .bytes()
        .all(|b| matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x7E) || high(b))
}

/// Whether a target's path has a dot segment (`.` or `..`, `%2e` counting as a dot): the
/// gateway refuses those, so the fast path leaves them to hyper.
pub(super) fn dot_segment(target: &str) -> bool {
    let path = target.split('?').next().unwrap_or_default();
    path.split('/').any(|seg| {
        let plain = seg.to_ascii_lowercase().replace("%2e", ".");
        plain == "." || plain == ".."
    })
}

/// Whether a `Host` value is valid (RFC 3986 §3.2.2 host, optional port up to 65535): the
/// fast path leaves any other to hyper, which refuses it.
pub(super) fn valid_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else {
            return false;
        };
        if literal.is_empty()
            || !literal
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return false;
        }
        match after {
            "" => return true,
            p if p.starts_with(':') => ("[]", &p[1..]),
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, p),
            None => (host, ""),
        }
    };
    let name_ok = name == "[]"
        || (!name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~%!$&'()*+,;=".contains(c)));
    let port_ok = port.is_empty()
        || (port.len() <= 5
            && port.chars().all(|c| c.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|n| n <= 65535));
    name_ok && port_ok
}

/// Hop-by-hop fields (RFC 9110 §7.6.1): never relayed as received.
pub(super) const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
];

/// A head parsed independently of the fast path, owned.
#[derive(Debug, Default)]
pub(super) struct Msg {
    pub(super) len: usize,
    pub(super) version: u8,
    pub(super) method: String,
    pub(super) target: String,
    pub(super) code: u16,
    pub(super) reason: String,
    pub(super) headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug)]
pub(super) enum Parsed {
    Partial,
    Invalid,
    Complete(Msg),
}

fn owned(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect()
}

pub(super) fn parse_request(buf: &[u8], slots: usize) -> Parsed {
    let mut h = vec![httparse::EMPTY_HEADER; slots];
    let mut r = httparse::Request::new(&mut h);
    match r.parse(buf) {
        Err(_) => Parsed::Invalid,
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Ok(httparse::Status::Complete(len)) => Parsed::Complete(Msg {
            len,
            version: r.version.unwrap_or(u8::MAX),
            method: r.method.unwrap_or_default().to_owned(),
            target: r.path.unwrap_or_default().to_owned(),
            headers: owned(r.headers),
            ..Msg::default()
        }),
    }
}

pub(super) fn parse_response(buf: &[u8], slots: usize) -> Parsed {
    let mut h = vec![httparse::EMPTY_HEADER; slots];
    let mut r = httparse::Response::new(&mut h);
    match r.parse(buf) {
        Err(_) => Parsed::Invalid,
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Ok(httparse::Status::Complete(len)) => Parsed::Complete(Msg {
            len,
            version: r.version.unwrap_or(u8::MAX),
            code: r.code.unwrap_or_default(),
            reason: r.reason.unwrap_or_default().to_owned(),
            headers: owned(r.headers),
            ..Msg::default()
        }),
    }
}

impl Msg {
    /// The values of the fields named `name`, in order.
    pub(super) fn fields<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The list elements of every field named `name` (RFC 9110 §5.6.1: empty ones skipped).
    pub(super) fn list(&self, name: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for v in self.fields(name) {
            for t in v.split(|b| *b == b',') {
                let t = t.trim_ascii();
                if !t.is_empty() {
                    out.push(t.to_ascii_lowercase());
                }
            }
        }
        out
    }

    pub(super) fn connection_has(&self, token: &str) -> bool {
        self.list("connection")
            .iter()
            .any(|t| t == token.as_bytes())
    }

    /// The fields a proxy relays: no hop-by-hop field, none in `drop`, none named in
    /// `Connection` but those in `keep` (`Content-Length` frames what follows).
    pub(super) fn relayed(&self, drop: &[&str], keep: &[&str]) -> Vec<(String, Vec<u8>)> {
        let named = self.list("connection");
        self.headers
            .iter()
            .filter(|(n, _)| {
                let lower = n.to_ascii_lowercase();
                !HOP_BY_HOP.contains(&lower.as_str())
                    && !drop.contains(&lower.as_str())
                    && (keep.contains(&lower.as_str()) || !named.contains(&lower.into_bytes()))
            })
            .cloned()
            .collect()
    }
}

/// A `Content-Length` value as the fast path takes it (up to 19 digits).
pub(super) fn request_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// What the reference decoder makes of a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decoded {
    /// The body ends after this many bytes.
    End(usize),
    /// All of it belongs to the body; more must follow.
    More,
    /// Not a chunked body.
    Bad,
    /// Outside what the reference decides (lenient forms the fast path may accept).
    Unknown,
}

/// A reference chunked decoder (RFC 9112 §7.1) over a whole buffer: hex size, optional
/// `;ext`, CRLF, data, CRLF, ..., `0`, CRLF, `name: value` trailer lines, CRLF.
pub(super) fn decode_chunked(b: &[u8]) -> Decoded {
    // Expects CRLF at `i`.
    let crlf = |i: usize| match (b.get(i), b.get(i + 1)) {
        (None, _) | (Some(b'\r'), None) => Err(Decoded::More),
        (Some(b'\r'), Some(b'\n')) => Ok(i + 2),
        _ => Err(Decoded::Bad),
    };
    let mut i = 0;
    loop {
        let start = i;
        let mut size: u64 = 0;
        while let Some(d) = b.get(i).and_then(|c| char::from(*c).to_digit(16)) {
            let Some(s) = size.checked_mul(16).and_then(|s| s.checked_add(d.into())) else {
                return Decoded::Bad;
            };
            size = s;
            i += 1;
        }
        if i == b.len() {
            return Decoded::More;
        }
        if i == start {
            return Decoded::Bad;
        }
        let digits_end = i;
        while matches!(b.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        match b.get(i) {
            None => return Decoded::More,
            Some(b';') => {
                while let Some(&c) = b.get(i).filter(|c| **c != b'\r') {
                    match c {
                        b'\n' => return Decoded::Bad,
                        b'\t' | 0x20..=0x7e | 0x80.. => i += 1,
                        _ => return Decoded::Unknown,
                    }
                }
            }
            Some(b'\r') => {}
            Some(b'\n') => return Decoded::Bad,
            Some(_) if i > digits_end => return Decoded::Unknown,
            Some(_) => return Decoded::Bad,
        }
        i = match crlf(i) {
            Ok(i) => i,
            Err(d) => return d,
        };
        if size == 0 {
            break;
        }
        let left = (b.len() - i) as u64;
        if left < size {
            return Decoded::More;
        }
        i = match crlf(i + size as usize) {
            Ok(i) => i,
            Err(d) => return d,
        };
    }
    // Trailer lines, then the blank line.
    loop {
        match b.get(i) {
            None => return Decoded::More,
            Some(b'\r') => {
                return match crlf(i) {
                    Ok(end) => Decoded::End(end),
                    Err(d) => d,
                };
            }
            Some(_) => {}
        }
        let mut colon = false;
        while let Some(&c) = b.get(i).filter(|c| **c != b'\r') {
            match c {
                b'\n' => return Decoded::Bad,
                b':' => colon = true,
                b'\t' | 0x20..=0x7e | 0x80.. => {}
                _ => return Decoded::Unknown,
            }
            i += 1;
        }
        if !colon && i < b.len() {
            return Decoded::Unknown;
        }
        i = match crlf(i) {
            Ok(i) => i,
            Err(d) => return d,
        };
    }
}
