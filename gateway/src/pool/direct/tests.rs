use super::*;
use crate::pool::sockets::idle_count;
use http_body_util::{BodyExt, Full};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// What the upstream does with a request.
#[derive(Clone, Copy)]
enum Act {
    Reply(&'static [u8]),
    /// Reply, then close.
    Last(&'static [u8]),
    /// Close without a reply.
    Drop,
}
use Act::{Drop, Last, Reply};

/// An upstream on loopback that answers each request it reads with the next of `answers`
/// (raw bytes), and keeps the requests it read and how many connections it took.
struct Raw {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    conns: Arc<Mutex<usize>>,
}

async fn raw(answers: Vec<Act>) -> Raw {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let conns = Arc::new(Mutex::new(0));
    let answers = Arc::new(Mutex::new(answers.into_iter()));
    let (log, count) = (seen.clone(), conns.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            *count.lock().unwrap() += 1;
            let (log, answers) = (log.clone(), answers.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: its head, and a body of its `content-length`.
                    let end = loop {
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                            return;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + len {
                        if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                            return;
                        }
                    }
                    log.lock().unwrap().push(buf.drain(..end + len).collect());
                    let next = answers.lock().unwrap().next().unwrap_or(Drop);
                    match next {
                        Reply(answer) => s.write_all(answer).await.unwrap(),
                        Last(answer) => return s.write_all(answer).await.unwrap(),
                        Drop => return,
                    }
                }
            });
        }
    });
    Raw { addr, seen, conns }
}

fn settings() -> Settings {
    Settings {
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        max_idle: 8,
    }
}

fn get(path: &str) -> Parts {
    let (mut parts, ()) = Request::get(path)
        .header("host", "up")
        .body(())
        .unwrap()
        .into_parts();
    parts.version = Version::HTTP_11;
    parts
}

/// Sends `parts` with `body` and reads the whole answer: status, data, trailers.
async fn exchange(
    addr: SocketAddr,
    parts: Parts,
    body: &'static [u8],
) -> Result<(u16, Vec<u8>, Option<HeaderMap>), String> {
    let resp = send(addr, parts, Bytes::from_static(body), settings())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let collected = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned();
    Ok((status, collected.to_bytes().to_vec(), trailers))
}

#[tokio::test]
async fn a_socket_goes_back_at_the_end_of_its_body_and_carries_the_next_request() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello";
    let up = raw(vec![Reply(ok), Reply(ok)]).await;
    assert_eq!(exchange(up.addr, get("/1"), b"").await.unwrap().1, b"hello");
    assert_eq!(idle_count(up.addr), 1);
    let (status, data, _) = exchange(up.addr, get("/2"), b"").await.unwrap();
    assert_eq!((status, &data[..]), (200, &b"hello"[..]));
    assert_eq!(*up.conns.lock().unwrap(), 1, "one connection for both");
    let seen = up.seen.lock().unwrap();
    assert_eq!(seen[1], b"GET /2 HTTP/1.1\r\nhost: up\r\n\r\n");
}

#[tokio::test]
async fn a_body_is_sent_with_its_length() {
    let ok: &[u8] = b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
    let up = raw(vec![Reply(ok)]).await;
    let mut parts = get("/pay");
    parts.method = Method::POST;
    let (status, data, _) = exchange(up.addr, parts, b"{\"a\":1}").await.unwrap();
    assert_eq!((status, data.len()), (201, 0));
    let seen = up.seen.lock().unwrap();
    assert_eq!(
        seen[0],
        b"POST /pay HTTP/1.1\r\nhost: up\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
    );
}

#[tokio::test]
async fn answers_that_end_the_connection_are_read_to_the_end_and_not_kept() {
    // HTTP/1.0 without keep-alive, framed by the close.
    let up = raw(vec![Last(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")]).await;
    let (status, data, _) = exchange(up.addr, get("/"), b"").await.unwrap();
    assert_eq!((status, &data[..]), (200, &b"until the end"[..]));
    assert_eq!(idle_count(up.addr), 0);
    // `Connection: close` with a length.
    let up = raw(vec![Reply(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
    )])
    .await;
    assert_eq!(exchange(up.addr, get("/"), b"").await.unwrap().1, b"ok");
    assert_eq!(idle_count(up.addr), 0);
    // Bytes after the body: the connection is out of step, not kept.
    let up = raw(vec![Reply(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA",
    )])
    .await;
    assert_eq!(exchange(up.addr, get("/"), b"").await.unwrap().1, b"ok");
    assert_eq!(idle_count(up.addr), 0);
}

#[tokio::test]
async fn informational_heads_are_skipped_and_chunks_decoded_with_their_trailers() {
    let answer: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\
        transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\nx-sum: 7\r\n\r\n";
    let up = raw(vec![Reply(answer)]).await;
    let (status, data, trailers) = exchange(up.addr, get("/"), b"").await.unwrap();
    assert_eq!((status, &data[..]), (200, &b"abcdefg"[..]));
    assert_eq!(trailers.unwrap()["x-sum"], "7");
    assert_eq!(idle_count(up.addr), 1);
    // A coding overrides a length, which does not go on with the answer.
    let up = raw(vec![Reply(
        b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    )])
    .await;
    let resp = send(up.addr, get("/"), Bytes::new(), settings())
        .await
        .unwrap();
    assert!(!resp.headers().contains_key(header::CONTENT_LENGTH));
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    // A `HEAD` answer has no body, whatever its length says.
    let up = raw(vec![Reply(
        b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n",
    )])
    .await;
    let mut parts = get("/");
    parts.method = Method::HEAD;
    let (status, data, _) = exchange(up.addr, parts, b"").await.unwrap();
    assert_eq!((status, data.len()), (200, 0));
    assert_eq!(idle_count(up.addr), 1);
}

/// RFC 9112 §7.1: `chunk-size [ chunk-ext ] CRLF`, an extension starting `BWS ";"`. A size
/// line with something else after its whitespace (`2 3`, `2 junk`) is refused, as hyper's
/// client refuses it, rather than read as size 2: a recipient that reads it otherwise would
/// frame the body differently. Whitespace before an extension or the CR is allowed.
#[tokio::test]
async fn a_chunk_size_line_with_more_than_an_extension_after_its_whitespace_is_refused() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2 junk\r\nok\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2 3\r\nok\r\n0\r\n\r\n",
    ] {
        let up = raw(vec![Last(answer)]).await;
        let r = exchange(up.addr, get("/"), b"").await;
        assert!(
            r.is_err(),
            "{:?} taken: {r:?}",
            String::from_utf8_lossy(answer)
        );
    }
    let up = raw(vec![Reply(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2 ;a=b\r\nok\r\n0\t\r\n\r\n",
    )])
    .await;
    assert_eq!(exchange(up.addr, get("/"), b"").await.unwrap().1, b"ok");
    assert_eq!(idle_count(up.addr), 1);
}

#[tokio::test]
async fn broken_answers_fail_cleanly() {
    for (answer, what) in [
        (
            &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"[..],
            "closed before the end",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "chunk size",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx",
            "framing",
        ),
        (b"NOT HTTP\r\n\r\n", "malformed"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
    ] {
        let up = raw(vec![Last(answer)]).await;
        let err = exchange(up.addr, get("/"), b"").await.unwrap_err();
        assert!(err.contains(what), "{answer:?}: {err}");
        assert_eq!(idle_count(up.addr), 0);
    }
}

#[tokio::test]
async fn a_reused_connection_closed_unanswered_is_retried_only_when_safe() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    // The upstream answers once per connection, then closes on the next request.
    let up = raw(vec![Reply(ok), Drop, Reply(ok)]).await;
    exchange(up.addr, get("/1"), b"").await.unwrap();
    assert_eq!(exchange(up.addr, get("/2"), b"").await.unwrap().1, b"ok");
    assert_eq!(
        *up.conns.lock().unwrap(),
        2,
        "sent again on a new connection"
    );
    // A POST is not sent again: it may have taken effect.
    let up = raw(vec![Reply(ok), Drop, Reply(ok)]).await;
    exchange(up.addr, get("/1"), b"").await.unwrap();
    let mut post = get("/pay");
    post.method = Method::POST;
    let err = exchange(up.addr, post, b"once").await.unwrap_err();
    assert!(err.contains("upstream connection failed"), "{err}");
    assert_eq!(up.seen.lock().unwrap().len(), 2);
}

/// A request `split` hands over whole, or to hyper's client.
async fn splits(req: Request<ReqBody>) -> Option<(Parts, Bytes)> {
    match split(req).await.unwrap() {
        Split::Direct(parts, body) => Some((parts, body)),
        Split::Hyper(_) => None,
    }
}

#[tokio::test]
async fn split_takes_what_it_can_send_as_hyper_would() {
    let full = |b: &'static [u8]| Either::Right(Full::new(Bytes::from_static(b)));
    let req = |cl: Option<&str>, te: bool, body: &'static [u8]| {
        let mut r = Request::post("/").version(Version::HTTP_11);
        if let Some(cl) = cl {
            r = r.header("content-length", cl);
        }
        if te {
            r = r.header("transfer-encoding", "chunked");
        }
        r.body(full(body)).unwrap()
    };
    let (_, body) = splits(req(None, false, b"abc")).await.unwrap();
    assert_eq!(body, "abc");
    assert!(splits(req(Some("3"), false, b"abc")).await.is_some());
    // What hyper's client would frame differently stays with it.
    assert!(splits(req(Some("4"), false, b"abc")).await.is_none());
    assert!(splits(req(Some("x"), false, b"abc")).await.is_none());
    assert!(splits(req(None, true, b"abc")).await.is_none());
}

/// 204 and 304 answers, and answers to HEAD, have no body whatever their framing fields say
/// (RFC 9112 §6.3), and their socket is reused.
#[tokio::test]
async fn answers_without_a_body_keep_their_socket_whatever_their_length_says() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    for answer in [
        &b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"[..],
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\netag: \"x\"\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
    ] {
        let up = raw(vec![Reply(answer), Reply(ok)]).await;
        let (_, data, _) = exchange(up.addr, get("/"), b"").await.unwrap();
        assert!(data.is_empty(), "{answer:?}");
        assert_eq!(idle_count(up.addr), 1, "{answer:?}");
        let (status, data, _) = exchange(up.addr, get("/2"), b"").await.unwrap();
        assert_eq!((status, &data[..]), (200, &b"ok"[..]), "{answer:?}");
        assert_eq!(*up.conns.lock().unwrap(), 1, "{answer:?}");
    }
    // HEAD: chunked or with a length, no body, and reusable.
    for answer in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n",
    ] {
        let up = raw(vec![Reply(answer), Reply(ok)]).await;
        let mut parts = get("/");
        parts.method = Method::HEAD;
        let (_, data, _) = exchange(up.addr, parts, b"").await.unwrap();
        assert!(data.is_empty());
        let (status, data, _) = exchange(up.addr, get("/2"), b"").await.unwrap();
        assert_eq!((status, &data[..]), (200, &b"ok"[..]), "{answer:?}");
        assert_eq!(*up.conns.lock().unwrap(), 1, "{answer:?}");
    }
}
/// HTTP/1.0 answers are kept only with `keep-alive`; `close` on either side ends the socket.
#[tokio::test]
async fn http10_and_close_answers_keep_their_socket_only_when_they_may() {
    // HTTP/1.0 kept alive with a length: reusable.
    let ka: &[u8] = b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok";
    let up = raw(vec![Reply(ka), Reply(ka)]).await;
    exchange(up.addr, get("/"), b"").await.unwrap();
    assert_eq!(idle_count(up.addr), 1);
    // HTTP/1.0 with a length, no keep-alive: not kept.
    let up = raw(vec![Reply(
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )])
    .await;
    assert_eq!(exchange(up.addr, get("/"), b"").await.unwrap().1, b"ok");
    assert_eq!(idle_count(up.addr), 0);
    // Chunked with `Connection: close`: not kept.
    let up = raw(vec![Reply(
        b"HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    )])
    .await;
    assert_eq!(exchange(up.addr, get("/"), b"").await.unwrap().1, b"ok");
    assert_eq!(idle_count(up.addr), 0);
    // The request asked to close.
    let up = raw(vec![Reply(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )])
    .await;
    let mut parts = get("/");
    parts
        .headers
        .insert("connection", HeaderValue::from_static("close"));
    assert_eq!(exchange(up.addr, parts, b"").await.unwrap().1, b"ok");
    assert_eq!(idle_count(up.addr), 0);
}
/// An upstream that closes anywhere inside a chunked body (data, a chunk's CRLF, the last
/// chunk, the trailers) fails the body; it is never a short success.
#[tokio::test]
async fn closing_anywhere_in_a_chunked_body_fails_it() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nabcde\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\nx: y\r\n",
    ] {
        let up = raw(vec![Last(answer)]).await;
        let err = exchange(up.addr, get("/"), b"").await.unwrap_err();
        assert!(err.contains("closed before the end"), "{answer:?}: {err}");
        assert_eq!(idle_count(up.addr), 0);
    }
}
/// Field and framing oddities: obs-fold and malformed lengths are refused (as hyper's client
/// refuses them), equal duplicated lengths are taken, quoted extensions are skipped.
#[tokio::test]
async fn odd_fields_and_framing_are_refused_or_read_as_hyper_reads_them() {
    // obs-fold: refused (as hyper's client does by default).
    let up = raw(vec![Last(
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\n  2\r\ncontent-length: 2\r\n\r\nok",
    )])
    .await;
    let r = exchange(up.addr, get("/"), b"").await;
    assert!(r.is_err(), "obs-fold taken: {r:?}");
    // Equal duplicated lengths: taken.
    let up = raw(vec![Reply(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok",
    )])
    .await;
    assert_eq!(exchange(up.addr, get("/"), b"").await.unwrap().1, b"ok");
    // A list of equal lengths: refused (RFC 9110 §8.6 lets a recipient refuse or take it;
    // hyper takes it).
    let up = raw(vec![Last(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok",
    )])
    .await;
    assert!(exchange(up.addr, get("/"), b"").await.is_err());
    // Bad lengths.
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: 0x2\r\n\r\nok",
    ] {
        let up = raw(vec![Last(answer)]).await;
        let err = exchange(up.addr, get("/"), b"").await.unwrap_err();
        assert!(err.contains("framing"), "{answer:?}: {err}");
    }
    // Chunk extensions, quoted.
    let up = raw(vec![Reply(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;a=\"b;c\";d\r\nok\r\n0;e\r\n\r\n",
    )])
    .await;
    assert_eq!(exchange(up.addr, get("/"), b"").await.unwrap().1, b"ok");
    assert_eq!(idle_count(up.addr), 1);
}
