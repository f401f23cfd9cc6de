//! The PROXY protocol (HAProxy's, versions 1 and 2) on a listener with
//! `listeners[].proxy_protocol = true`: a load balancer in front sends one header before the
//! client's bytes, naming the client's address, which then stands for the connection's peer
//! everywhere (forwarding fields, admission's per-client keys and CIDR rules, the access log).
//!
//! The header is read exactly (never a byte of the client's own data) and parsed with the
//! `ppp` crate. A `LOCAL` (v2) or `UNKNOWN` (v1) header keeps the socket's peer, as the
//! specification says; a connection whose first bytes are not a header is closed, since on such
//! a listener a client could otherwise speak for anyone.

use ppp::{HeaderResult, v1, v2};
use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature (12 bytes).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included.
const V1_MAX: usize = 107;
/// The longest v2 header accepted: the fixed part and its addresses and TLVs.
const V2_MAX: usize = 16 + 4096;

/// Reads one PROXY protocol header from `io`; the client's address, or `None` for a header that
/// names none (`LOCAL`, `UNKNOWN`, or a Unix socket).
///
/// # Errors
/// `InvalidData` when the bytes are not a valid header, or the I/O error that ended reading.
pub(crate) async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
) -> io::Result<Option<SocketAddr>> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    // 15 bytes: the shortest v1 header ("PROXY UNKNOWN\r\n"); v2 needs 16 at least.
    let mut buf = vec![0u8; 15];
    io.read_exact(&mut buf).await?;
    if buf[..12] == V2_SIGNATURE[..] {
        buf.resize(16, 0);
        io.read_exact(&mut buf[15..]).await?;
        let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if 16 + len > V2_MAX {
            return Err(invalid("PROXY v2 header too long"));
        }
        buf.resize(16 + len, 0);
        io.read_exact(&mut buf[16..]).await?;
    } else if buf.starts_with(b"PROXY ") {
        // One byte at a time to the CRLF, so that none of the client's bytes is taken.
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(invalid("PROXY v1 line too long"));
            }
            buf.push(io.read_u8().await?);
        }
    } else {
        return Err(invalid("no PROXY protocol header"));
    }
    client_of(&buf).ok_or_else(|| invalid("invalid PROXY protocol header"))
}

/// The client address in a complete header: `Some(None)` for a header naming none, `None` when
/// `bytes` is not one valid header.
pub(crate) fn client_of(bytes: &[u8]) -> Option<Option<SocketAddr>> {
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(h)) if h.header.len() == bytes.len() => Some(match h.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(h)) if h.len() == bytes.len() => {
            if h.command == v2::Command::Local {
                return Some(None);
            }
            Some(match h.addresses {
                v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 PROXY TCP/IPv4 header from `src` to 127.0.0.1:80.
    fn v2(src: [u8; 4], port: u16) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0, 12]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&[127, 0, 0, 1]);
        h.extend_from_slice(&port.to_be_bytes());
        h.extend_from_slice(&80u16.to_be_bytes());
        h
    }

    async fn read(bytes: &[u8]) -> (io::Result<Option<SocketAddr>>, Vec<u8>) {
        let mut input = bytes;
        let got = read_header(&mut input).await;
        (got, input.to_vec())
    }

    #[tokio::test]
    async fn headers_are_read_exactly() {
        let (got, rest) =
            read(b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(got.unwrap(), Some("203.0.113.9:5555".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (got, rest) = read(b"PROXY TCP6 2001:db8::1 ::1 4444 80\r\nX").await;
        assert_eq!(got.unwrap(), Some("[2001:db8::1]:4444".parse().unwrap()));
        assert_eq!(rest, b"X");
        let (got, rest) = read(b"PROXY UNKNOWN\r\nGET").await;
        assert_eq!(got.unwrap(), None);
        assert_eq!(rest, b"GET");
        let mut with_data = v2([198, 51, 100, 7], 40000);
        with_data.extend_from_slice(b"GET");
        let (got, rest) = read(&with_data).await;
        assert_eq!(got.unwrap(), Some("198.51.100.7:40000".parse().unwrap()));
        assert_eq!(rest, b"GET");
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 127.0.0.1 1 2 and much more text that never ends up with a crlf at all ...............",
            b"PROXY TCP4 1.2.3.4",
        ] {
            let (got, _) = read(bad).await;
            assert!(got.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // A v2 header cut short, and one with a bad version.
        let short = v2([1, 2, 3, 4], 1);
        assert!(read(&short[..20]).await.0.is_err());
        let mut bad_version = v2([1, 2, 3, 4], 1);
        bad_version[12] = 0x31;
        assert!(read(&bad_version).await.0.is_err());
    }
}
