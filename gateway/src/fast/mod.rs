//! The gateway's own HTTP/1.1 path.
//!
//! A plain route (no cache, admission, batch, or cluster layers, an HTTP/1.1 upstream) needs
//! no more than: parse the head, pick an endpoint, write the head (with the forwarding headers)
//! on an idle upstream connection, and relay the answer. This module does exactly that in the
//! client connection's own task: one `read` and one `write` a side for a small exchange, no
//! task per upstream connection, no boxed future, and buffers that a connection holds only
//! while it has a request (they go back to a per-thread free list between requests, so an idle
//! keep-alive connection holds none).
//!
//! Every other route is read here too. A route with admission or cluster layers (breaker,
//! pool, balance, the cluster's retries) over plain HTTP/1.1 clusters sends the same upstream
//! head through the layers and relays the answer as above ([`stacked`]). The rest (a cache, a
//! batcher, a route's own retries, HTTP/2 or TLS upstreams, tracing on): the request, held
//! whole with its body, goes through the same service as hyper's requests, its answer written
//! back here ([`layered`]). The front
//! end is this one, the layers are shared.
//!
//! What it does not take, hyper serves, with hyper's own answers and limits, for the rest of
//! the connection's busy spell (until it idles): HTTP/1.0, chunked request bodies, bodies over
//! 64 KiB, `Expect`, upgrades, absolute-form targets, malformed or oversized heads. The two
//! paths add and strip the same headers and map upstream failures to the same answers (see
//! [`proxy`](crate::proxy)). `server.h1_fast_path = false` sends everything to hyper.
//!
//! | event | fast path |
//! |---|---|
//! | connect refused / timed out | 502 / 504, as on the hyper path |
//! | pooled connection found closed before any answer | retried once on a new connection (a request that may be sent twice and whose body was held) |
//! | reset or garbage before the answer head | 502 |
//! | no answer head within the route timeout | 504 |
//! | upstream stalls or fails mid-body | the client's connection is cut (its framing cannot say "error") |
//! | client sends nothing for `timeouts.park_ms` | handed back to the connection loop, which parks it |
//! | incomplete head after `timeouts.header_read_ms` | connection closed (slowloris) |

mod bufs;
mod date;
mod exchange;
pub(crate) mod head;
mod layered;
mod local;
mod relay;
pub(crate) mod response;
pub(crate) mod stacked;

use super::ctx::ConnCtx;
use super::route::RouteMatch;
use crate::answer::Answer;
use crate::pool::sockets as upstream;
use crate::request_id::{self, Id};
use bufs::{Bufs, give_bufs, read, read_now, take_bufs, write_all};
use bytes::Bytes;
use exchange::{Exchange, Failure};
use head::{Head, Route, Step};
use local::{Done, answer_and_log, log_access, record_trace, refuse_head};
use response::Framing;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How a connection leaves the fast path.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Closed (by either side, a timeout, shutdown, or a framing that ends with the close).
    Closed,
    /// Idle for `timeouts.park_ms` (at most a second) with no bytes pending.
    Idle,
    /// A request the fast path does not take: hyper serves the connection from these bytes.
    Hyper(Bytes),
}

/// The largest upstream response head.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// The largest request body the fast path reads whole before forwarding it; larger bodies are
/// streamed by hyper.
const MAX_HELD_BODY: u64 = 64 * 1024;

/// What the connection waits for.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// A head: its end not found in the first `scanned` pending bytes; it must be complete by
    /// `deadline` once it has begun.
    Head {
        scanned: usize,
        deadline: Option<Instant>,
    },
    /// A body: the request is `need` bytes long.
    Body { need: usize },
}

const NEW_HEAD: Wait = Wait::Head {
    scanned: 0,
    deadline: None,
};

/// Whether `bytes` hold the blank line that ends a head, looking only past `from` (less the
/// three bytes a split terminator can straddle): a dribbled head is scanned once, not once per
/// read.
fn head_ends(bytes: &[u8], from: usize) -> bool {
    let from = from.saturating_sub(3).min(bytes.len());
    bytes[from..]
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && bytes.get(from + i + 2) == Some(&b'\n')))
}

/// Serves plain HTTP/1.1 requests on `client`, starting with the bytes `pre` already read,
/// until the connection closes, idles, or sends a request this path does not take.
pub(super) async fn serve(client: &mut TcpStream, ctx: &Arc<ConnCtx>, pre: Bytes) -> Outcome {
    let mut bufs: Option<Bufs> = None;
    if !pre.is_empty() {
        let b = bufs.insert(take_bufs());
        if b.cin.data.len() < pre.len() {
            b.cin.data.resize(pre.len(), 0);
        }
        b.cin.data[..pre.len()].copy_from_slice(&pre);
        b.cin.end = pre.len();
    }
    let mut wait = NEW_HEAD;
    loop {
        let snap = ctx.shared.current.load();
        let (park, idle, header_read, max_head) = (
            snap.park_timeout
                .min(snap.idle_timeout)
                .min(Duration::from_secs(1)),
            snap.idle_timeout,
            snap.header_read_timeout,
            snap.config.limits.max_header_bytes,
        );
        drop(snap);
        if let Some(b) = bufs.as_mut() {
            let pending = b.cin.pending().len();
            let ready = match wait {
                Wait::Head { scanned, .. } => pending > 0 && head_ends(b.cin.pending(), scanned),
                Wait::Body { need } => pending >= need,
            };
            if ready {
                match request(client, ctx, b).await {
                    Next::Done => {
                        wait = NEW_HEAD;
                        continue;
                    }
                    Next::Partial => {
                        if let Wait::Head { scanned, .. } = &mut wait {
                            *scanned = pending;
                        }
                    }
                    Next::NeedBody(need) => wait = Wait::Body { need },
                    Next::Close => {
                        give_bufs(bufs.take().unwrap_or_else(take_bufs));
                        return Outcome::Closed;
                    }
                    Next::Hyper => return to_hyper(&mut bufs),
                }
            } else if let Wait::Head { scanned, .. } = &mut wait {
                // A head past the limit before it is even complete: 431, and close.
                if pending > max_head {
                    refuse_head(client, ctx, b, pending, idle).await;
                    give_bufs(bufs.take().unwrap_or_else(take_bufs));
                    return Outcome::Closed;
                }
                *scanned = pending;
            }
        }
        let pending = bufs.as_ref().map_or(0, |b| b.cin.pending().len());
        if pending == 0 {
            // Between requests: hold no buffers while waiting.
            if let Some(b) = bufs.take() {
                give_bufs(b);
            }
            if ctx.shared.is_draining() {
                return Outcome::Closed;
            }
            tokio::select! {
                biased;
                ready = client.readable() => if ready.is_err() {
                    return Outcome::Closed;
                },
                () = tokio::time::sleep(park) => return Outcome::Idle,
            }
        } else {
            // A head must be complete within `header_read_ms` of its first byte; a body's
            // bytes may not pause for longer than `idle_ms`.
            let deadline = match &mut wait {
                Wait::Head { deadline, .. } => {
                    *deadline.get_or_insert_with(|| Instant::now() + header_read)
                }
                Wait::Body { .. } => Instant::now() + idle,
            };
            tokio::select! {
                biased;
                ready = client.readable() => if ready.is_err() {
                    return Outcome::Closed;
                },
                () = tokio::time::sleep_until(deadline) => {
                    ctx.shared.stats.connections_timed_out.incr();
                    return Outcome::Closed;
                }
            }
        }
        let b = bufs.get_or_insert_with(take_bufs);
        let Some(room) = b.cin.room(max_head.saturating_add(MAX_HELD_BODY as usize)) else {
            return to_hyper(&mut bufs);
        };
        match read_now(client, room).await {
            None => {}
            Some(Ok(0)) | Some(Err(_)) => {
                give_bufs(bufs.take().unwrap_or_else(take_bufs));
                return Outcome::Closed;
            }
            Some(Ok(n)) => b.cin.end += n,
        }
    }
}

/// Hands the pending bytes to hyper.
fn to_hyper(bufs: &mut Option<Bufs>) -> Outcome {
    let b = bufs.take().unwrap_or_else(take_bufs);
    let rest = Bytes::copy_from_slice(b.cin.pending());
    give_bufs(b);
    Outcome::Hyper(rest)
}

/// What the connection does after one call of [`request`].
enum Next {
    /// Served; the next request may follow.
    Done,
    /// The head is incomplete: read more.
    Partial,
    /// The body is incomplete: the request is this many bytes long.
    NeedBody(usize),
    /// Close the connection.
    Close,
    /// Hand the connection (its pending bytes) to hyper.
    Hyper,
}

/// Where a request goes: its route index, the route's branch (cluster) and the endpoint's
/// index in that cluster.
#[derive(Debug, Clone, Copy)]
struct Target {
    route: usize,
    branch: usize,
    endpoint: usize,
}

/// Keeps the in-flight gauges right however the request ends.
struct InFlight<'a> {
    stats: &'a super::stats::Stats,
    cluster: &'a super::stats::ClusterStats,
    armed: bool,
}

impl<'a> InFlight<'a> {
    /// Counts a request to the cluster whose counters are `cluster`, in flight until
    /// [`end`](Self::end) or the guard's drop.
    fn start(stats: &'a super::stats::Stats, cluster: &'a super::stats::ClusterStats) -> Self {
        stats.requests.incr();
        stats.in_flight.incr();
        cluster.requests.incr();
        cluster.in_flight.incr();
        Self {
            stats,
            cluster,
            armed: true,
        }
    }

    fn end(&mut self) {
        if std::mem::take(&mut self.armed) {
            self.stats.in_flight.decr();
            self.cluster.in_flight.decr();
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

/// Serves the request whose head starts the pending client bytes.
async fn request(client: &mut TcpStream, ctx: &Arc<ConnCtx>, b: &mut Bufs) -> Next {
    let start = Instant::now();
    let local = crate::state::local(&ctx.shared);
    let snap = &local.snap;
    let stats = &ctx.shared.stats;
    let listener_policy = snap
        .listener_admission
        .get(ctx.listener)
        .and_then(Option::as_ref);
    let listener_layers = listener_policy.is_some();
    let tracing = ctx.shared.tracer.is_some();
    let mut carried = stacked::Carried::default();
    let rid = snap.request_id;
    let fresh_id = if rid.is_on() {
        request_id::fresh()
    } else {
        [0; 32]
    };
    let limits = head::Limits {
        max_bytes: snap.config.limits.max_header_bytes,
        max_headers: snap.config.limits.max_headers,
        max_body: snap.max_body,
        max_held_body: MAX_HELD_BODY,
        request_id: rid,
        fresh_id,
        trace: ctx.shared.tracer.as_ref().map(|t| t.fresh()),
    };
    // This request's id: the client's when kept, else the fresh one.
    let id_of = |head: &Head, bytes: &[u8]| match (&head.request_id, rid.is_on()) {
        (_, false) => Id::NONE,
        (Some(r), true) => Id::from(&bytes[r.clone()]),
        (None, true) => Id::from(&fresh_id),
    };
    let head_at = b.cin.start;
    let step = head::prepare(
        b.cin.pending(),
        limits,
        &ctx.forwarding,
        &mut b.out,
        |req, _body_len| {
            match snap.routes.find(req) {
                RouteMatch::Route(route) => {
                    let plan = &snap.route_plans[route];
                    if !plan.fast || listener_layers {
                        // Through the layers: on this path when the route's stack takes
                        // its requests (see `stacked`), else as an `http` request.
                        let policy = plan.admission.as_ref().or(listener_policy);
                        if !plan.stacked || tracing {
                            // Decided before the split's pick, so that a request served
                            // through the layers takes one step of the split, there.
                            return Route::Layered;
                        }
                        let branch = plan.pick(req.fields);
                        let cluster = &snap.clusters[plan.branches[branch].cluster];
                        let wanted = policy.map_or(&[][..], |p| p.raw_fields());
                        let hash = cluster.layers.as_ref().and_then(|l| l.hash());
                        carried = stacked::Carried::from_head(req.fields, req.path, wanted, hash);
                        return Route::Stack {
                            target: Target {
                                route,
                                branch,
                                endpoint: 0,
                            },
                            preserve_host: cluster.preserve_host,
                        };
                    }
                    let branch = plan.pick(req.fields);
                    let cluster = &snap.clusters[plan.branches[branch].cluster];
                    match cluster.pick() {
                        Some((endpoint, addr)) => Route::Forward {
                            target: Target {
                                route,
                                branch,
                                endpoint,
                            },
                            addr,
                            preserve_host: cluster.preserve_host,
                        },
                        None => Route::Local(Answer::NoEndpoint),
                    }
                }
                RouteMatch::NotFound => Route::Local(Answer::NoRoute),
                RouteMatch::MethodNotAllowed => Route::Local(Answer::MethodNotAllowed),
            }
        },
    );
    let (head, target, addr) = match step {
        Step::Partial => return Next::Partial,
        Step::NeedBody(need) => return Next::NeedBody(need),
        Step::Hyper => return Next::Hyper,
        Step::Local {
            head,
            answer: local,
        } => {
            stats.requests.incr();
            local.count(stats);
            // A body already read is skipped; one still to come is not read: close after the
            // answer (lingering, so that the client reads it).
            let have = (b.cin.pending().len() - head.len) as u64;
            let unread = head.body_len > have;
            let last = ctx.start_request(snap.config.limits.max_requests_per_connection);
            let close = head.close || unread || last || ctx.shared.is_draining();
            b.cin.start += head.len + head.body_len.min(have) as usize;
            let done = Done {
                head_at,
                start,
                upstream: None,
                route: None,
                id: id_of(&head, &b.cin.data[head_at..]),
                exchange: None,
            };
            return answer_and_log(client, ctx, b, snap, &head, local, close, unread, done).await;
        }
        Step::Layered { head, request } => {
            // The body (held whole) goes with the request; the buffer moves past both.
            let body_at = b.cin.start + head.len;
            let body_end = body_at + head.body_len as usize;
            let body = crate::held::held(&b.cin.data[body_at..body_end]);
            b.cin.start = body_end;
            let req = request.map(|()| http_body_util::Full::new(body));
            // Boxed (the one box of the service call hyper's server makes too): inline, the
            // layered path's state would make every request's future, plain routes' too,
            // kilobytes larger, and that future is moved once per request. Built in its box,
            // not copied there (`boxed::pinned`).
            let idle = snap.idle_timeout;
            return crate::boxed::pinned(|| layered::serve(client, ctx, b, &head, req, idle)).await;
        }
        Step::Stack {
            head,
            target,
            host_at,
        } => {
            held_body_out(b, &head);
            let id = id_of(&head, &b.cin.data[head_at..]);
            let s = stacked::Stacked {
                head,
                target,
                carried,
                host_at,
                start,
                head_at,
                id,
            };
            // Boxed, as the layered path's call: its state would make every request's future
            // larger. Built in its box (`boxed::pinned`).
            return crate::boxed::pinned(|| stacked::serve(client, ctx, b, snap, s)).await;
        }
        Step::Forward { head, target, addr } => (head, target, addr),
    };
    let mut head = head;
    // The connection's last request: answered with `Connection: close`, then closed.
    if ctx.start_request(snap.config.limits.max_requests_per_connection) {
        head.close = true;
    }
    let plan = &snap.route_plans[target.route];
    let branch = &plan.branches[target.branch];
    let cluster = &snap.clusters[branch.cluster];
    let mut in_flight = InFlight::start(stats, &cluster.stats);
    held_body_out(b, &head);
    let exchange = Exchange {
        addr,
        head_method: head.head_method,
        // Sent again only what may be sent twice and has no body, as on the hyper path.
        replayable: head.idempotent && head.body_len == 0,
        close: exchange_close(&head, ctx),
        start,
        connect_timeout: snap.connect_timeout,
        idle: snap.idle_timeout,
        date: date::value(start),
    };
    let deadline = start + snap.route_timeout[target.route];
    let sent = Instant::now();
    let failure =
        match tokio::time::timeout_at(deadline, exchange.run(&mut b.out, &mut b.uin)).await {
            Ok(done) => done,
            Err(_elapsed) => Failure::Timeout,
        };
    let answered = Instant::now();
    cluster.endpoint_latency(target.endpoint, addr, answered - sent);
    let (mut up, resp) = match failure {
        Failure::Answered(up, resp) => (up, resp),
        failed => {
            in_flight.end();
            let failed = match failed {
                Failure::ConnectTimeout => Answer::ConnectTimedOut,
                Failure::Connect(_) => Answer::ConnectFailed,
                Failure::Timeout => Answer::TimedOut,
                Failure::Reset | Failure::Answered(..) => Answer::ConnectionFailed,
            };
            failed.count(stats);
            cluster.stats.failures.incr();
            cluster.endpoint_failed(target.endpoint, addr);
            let status = failed.status().as_u16();
            tracing::debug!(upstream = %addr, status, "upstream request failed");
            let close = exchange_close(&head, ctx);
            let done = Done {
                head_at,
                start,
                upstream: Some(addr),
                route: Some((target.route, target.branch)),
                id: id_of(&head, &b.cin.data[head_at..]),
                exchange: Some((sent, answered, None)),
            };
            return answer_and_log(client, ctx, b, snap, &head, failed, close, false, done).await;
        }
    };
    in_flight.end();
    stats.response(resp.status);
    let elapsed = start.elapsed();
    stats.duration.record(resp.status, elapsed);
    branch.stats.latency.record(resp.status, elapsed);
    if resp.status >= 500 {
        cluster.stats.failures.incr();
        cluster.endpoint_failed(target.endpoint, addr);
    }
    let done = Done {
        head_at,
        start,
        upstream: Some(addr),
        route: Some((target.route, target.branch)),
        id: id_of(&head, &b.cin.data[head_at..]),
        exchange: Some((sent, answered, Some(resp.status))),
    };
    log_access(ctx, snap, &b.cin.data[head_at..], &head, resp.status, &done);
    // The head's bytes are gone once the relay reuses the buffer: the spans are recorded
    // now, the request span ending when the answer head is in.
    record_trace(ctx, snap, &b.cin.data[head_at..], &head, resp.status, &done);
    let relayed = relay::relay(client, &mut up, b, resp, snap.idle_timeout).await;
    ctx.touch();
    match relayed {
        relay::Relayed::Cut => Next::Close,
        relay::Relayed::Done { reusable } => {
            if reusable {
                upstream::checkin(
                    addr,
                    up,
                    Instant::now(),
                    snap.idle_timeout,
                    super::pool::MAX_IDLE_PER_ENDPOINT,
                );
            }
            if exchange_close(&head, ctx) || resp.framing == Framing::Close {
                Next::Close
            } else {
                Next::Done
            }
        }
    }
}

/// The request's body (held whole, after its head in the client buffer) goes out with the
/// head written in `out`; the client buffer moves past both.
fn held_body_out(b: &mut Bufs, head: &Head) {
    let body_at = b.cin.start + head.len;
    let body_end = body_at + head.body_len as usize;
    b.out.extend_from_slice(&b.cin.data[body_at..body_end]);
    b.cin.start = body_end;
}

fn exchange_close(head: &Head, ctx: &ConnCtx) -> bool {
    head.close || ctx.shared.is_draining()
}
