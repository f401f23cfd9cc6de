//! The client behind trusted proxies (`server.trusted_proxies`): which `X-Forwarded-For` or
//! `Forwarded` (RFC 7239) entries the gateway believes, and so who the client is.
//!
//! Only a connection whose peer (the socket's, or the PROXY protocol's address) is in one of
//! the trusted networks has its forwarding fields read at all. Its chain is walked from the
//! right, the end its own peer wrote: each hop in a trusted network is skipped, and the first
//! one that is not (or the leftmost entry, when all are trusted) is the client. An entry that
//! is not an address (`unknown`, an obfuscated `_node`, garbage) ends the walk, and the
//! client is the trusted hop to its right (or the peer). Entries left of the client were
//! written by a party the gateway cannot vouch for (often the client itself) and are dropped.
//!
//! `Forwarded` is read when the request has one (its `for=` parameters), otherwise
//! `X-Forwarded-For`; every field line of the header counts, in order (RFC 9110 §5.3).
//!
//! Pure: no I/O, no allocation; the caller walks the header values it holds (`HeaderMap`
//! values on the hyper path, httparse's on the fast path).

use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The networks whose forwarding fields are believed (`server.trusted_proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrustedProxies(Box<[IpNet]>);

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses (`127.0.0.1`).
    ///
    /// # Errors
    /// The index of the first bad entry and its problem.
    pub(crate) fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, (usize, String)> {
        let mut nets = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let s = s.as_ref().trim();
            let net = match s.parse::<IpNet>() {
                Ok(n) if n.trunc() == n => n,
                Ok(n) => {
                    return Err((
                        i,
                        format!(
                            "`{s}` has bits set past its prefix length (did you mean `{}`?)",
                            n.trunc()
                        ),
                    ));
                }
                Err(_) => match s.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return Err((
                            i,
                            format!("`{s}` is not an address or a network such as `10.0.0.0/8`"),
                        ));
                    }
                },
            };
            nets.push(net);
        }
        Ok(Self(nets.into()))
    }

    /// Whether no network is trusted (the default: no forwarding field is believed).
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is in a trusted network (an IPv4-mapped IPv6 address counts as IPv4).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// Which field a chain was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `X-Forwarded-For`: comma-separated addresses.
    XForwardedFor,
    /// `Forwarded`: comma-separated elements, each with an optional `for=` parameter.
    Forwarded,
}

/// What a walk found: the client, and how many entries (from the right) the gateway believes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Walk {
    /// The client's address (canonical: IPv4-mapped addresses as IPv4); the peer's when no
    /// entry is believed.
    pub client: IpAddr,
    /// The field walked.
    pub source: Source,
    /// Entries believed, counted from the right; the leftmost of them is the client.
    pub believed: usize,
    /// Entries in the field, all field lines together.
    pub total: usize,
}

/// A node's address: `IP`, `IPv4:port`, `[IPv6]`, `[IPv6]:port`, optionally in double quotes
/// (as `Forwarded` writes IPv6 nodes).
fn node(s: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(s).ok()?.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<Ipv6Addr>()
        .ok()
        .map(|a| IpAddr::V6(a).to_canonical())
}

/// The `for=` node of one `Forwarded` element.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    element.split(|b| *b == b';').find_map(|pair| {
        let (key, value) = pair.split_at(pair.iter().position(|b| *b == b'=')?);
        key.trim_ascii()
            .eq_ignore_ascii_case(b"for")
            .then(|| node(&value[1..]))
            .flatten()
    })
}

/// The field's entries in order, each the address it names (`None`: not an address).
fn entries<'a, I>(source: Source, values: I) -> impl DoubleEndedIterator<Item = Option<IpAddr>>
where
    I: DoubleEndedIterator<Item = &'a [u8]>,
{
    values
        .flat_map(|v| v.split(|b| *b == b','))
        .filter(|e| !e.trim_ascii().is_empty())
        .map(move |e| match source {
            Source::XForwardedFor => node(e),
            Source::Forwarded => forwarded_for(e),
        })
}

/// Walks the field lines `values` of `source`, sent by the trusted peer `peer`.
/// `values` gives the field lines afresh each time it is called.
pub(crate) fn walk<'a, I>(
    trusted: &TrustedProxies,
    peer: IpAddr,
    source: Source,
    values: impl Fn() -> I,
) -> Walk
where
    I: DoubleEndedIterator<Item = &'a [u8]>,
{
    let mut client = peer.to_canonical();
    let mut believed = 0;
    for entry in entries(source, values()).rev() {
        let Some(ip) = entry else { break };
        believed += 1;
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    Walk {
        client,
        source,
        believed,
        total: entries(source, values()).count(),
    }
}

/// Writes the believed entries of `walk` (read again from the same `values`), client first,
/// each followed by `", "`: as plain addresses, or as `for=` elements (`forwarded`).
pub(crate) fn write_believed<'a, I>(out: &mut Vec<u8>, walk: &Walk, values: I, forwarded: bool)
where
    I: DoubleEndedIterator<Item = &'a [u8]>,
{
    use std::io::Write as _;
    let believed = entries(walk.source, values)
        .skip(walk.total.saturating_sub(walk.believed))
        .flatten();
    for ip in believed {
        // Writing to a `Vec` cannot fail.
        let _ = match (forwarded, ip) {
            (false, ip) => write!(out, "{ip}, "),
            (true, IpAddr::V4(a)) => write!(out, "for={a}, "),
            (true, IpAddr::V6(a)) => write!(out, "for=\"[{a}]\", "),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> TrustedProxies {
        TrustedProxies::parse(&["10.0.0.0/8", "127.0.0.1", "fd00::/8"]).unwrap()
    }

    fn run(source: Source, values: &[&str]) -> (IpAddr, String, String) {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let bytes = || values.iter().map(|v| v.as_bytes());
        let w = walk(&trusted(), peer, source, bytes);
        let mut xff = Vec::new();
        write_believed(&mut xff, &w, bytes(), false);
        let mut fwd = Vec::new();
        write_believed(&mut fwd, &w, bytes(), true);
        (
            w.client,
            String::from_utf8(xff).unwrap(),
            String::from_utf8(fwd).unwrap(),
        )
    }

    #[test]
    fn parses_networks_and_names_the_bad_entry() {
        let t = trusted();
        assert!(t.contains("10.9.8.7".parse().unwrap()));
        assert!(t.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(t.contains("127.0.0.1".parse().unwrap()));
        assert!(!t.contains("127.0.0.2".parse().unwrap()));
        assert!(t.contains("fd12::1".parse().unwrap()));
        assert!(!t.contains("2001:db8::1".parse().unwrap()));
        assert!(TrustedProxies::parse::<&str>(&[]).unwrap().is_empty());
        for (bad, what) in [
            ("10.0.0.0/33", "not an address"),
            ("10.0.0.1/8", "did you mean `10.0.0.0/8`"),
            ("proxy.example", "not an address"),
        ] {
            let (i, p) = TrustedProxies::parse(&["::1", bad]).unwrap_err();
            assert_eq!(i, 1);
            assert!(p.contains(what), "{bad}: {p}");
        }
    }

    #[test]
    fn walks_from_the_right_past_trusted_hops() {
        let x = Source::XForwardedFor;
        let (c, xff, _) = run(x, &["6.6.6.6, 203.0.113.7, 10.0.0.2"]);
        assert_eq!(
            (c.to_string(), xff.as_str()),
            ("203.0.113.7".into(), "203.0.113.7, 10.0.0.2, ")
        );
        // Several field lines are one list.
        let (c, xff, fwd) = run(x, &["6.6.6.6", "203.0.113.7:4711", "10.0.0.2"]);
        assert_eq!(c.to_string(), "203.0.113.7");
        assert_eq!(xff, "203.0.113.7, 10.0.0.2, ");
        assert_eq!(fwd, "for=203.0.113.7, for=10.0.0.2, ");
        // All trusted: the leftmost is the client.
        let (c, xff, _) = run(x, &["10.1.1.1, 127.0.0.1"]);
        assert_eq!(
            (c.to_string(), xff.as_str()),
            ("10.1.1.1".into(), "10.1.1.1, 127.0.0.1, ")
        );
        // Not an address: the walk stops at the trusted hop to its right.
        let (c, xff, _) = run(x, &["203.0.113.7, unknown, 10.0.0.2"]);
        assert_eq!(
            (c.to_string(), xff.as_str()),
            ("10.0.0.2".into(), "10.0.0.2, ")
        );
        let (c, xff, _) = run(x, &["garbage"]);
        assert_eq!((c.to_string(), xff.as_str()), ("10.0.0.1".into(), ""));
        let (c, _, _) = run(x, &[" , ,[2001:db8::9]:80,"]);
        assert_eq!(c.to_string(), "2001:db8::9");
    }

    #[test]
    fn reads_forwarded_for_parameters() {
        let f = Source::Forwarded;
        let (c, xff, fwd) = run(
            f,
            &[
                "for=6.6.6.6;proto=http",
                "For=\"[2001:db8:cafe::17]:4711\";proto=https, by=10.0.0.9;for=10.0.0.2",
            ],
        );
        assert_eq!(c.to_string(), "2001:db8:cafe::17");
        assert_eq!(xff, "2001:db8:cafe::17, 10.0.0.2, ");
        assert_eq!(fwd, "for=\"[2001:db8:cafe::17]\", for=10.0.0.2, ");
        // An element without `for`, or an obfuscated node, ends the walk.
        let (c, _, _) = run(f, &["for=203.0.113.1, proto=http, for=10.0.0.2"]);
        assert_eq!(c.to_string(), "10.0.0.2");
        let (c, _, _) = run(f, &["for=_hidden"]);
        assert_eq!(c.to_string(), "10.0.0.1");
    }
}
