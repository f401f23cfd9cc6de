//! HTTP/1.1 wire scenarios, run on both of the gateway's HTTP/1.1 front ends: its own fast
//! path (`[server] h1_fast_path = true`, the default) and hyper's (`h1_fast_path = false`),
//! each for plain routes and for the same routes through a layer. Every scenario is one
//! `async fn scenario(fast: bool)`; [`on_both_paths!`] turns it into `scenario::fast_path`,
//! `scenario::hyper_path`, `scenario::layered_fast_path` and `scenario::layered_hyper_path`
//! tests, so `cargo test --test h1_fast layered_fast_path` runs one of them.
//!
//! The client and the upstreams are raw sockets driven byte by byte ([`wire::Wire`],
//! [`upstreams::raw_upstream`]), so the tests see exactly what crosses the wire. The
//! scenarios are grouped by module:
//!
//! - **[`framing`]:** pipelined requests (2 to 300 in one write, bodies of many sizes, a request
//!   hyper must take in the middle) answered complete and in order; answers framed by
//!   `Content-Length`, by chunks (extensions, trailers, 1 MiB in uneven chunks), by the
//!   upstream closing, or not at all (HEAD, 204, 304); answers and requests dribbled one byte
//!   per millisecond; bytes past an answer; `Transfer-Encoding` with `Content-Length`.
//! - **[`bodies`]:** 1 MiB up and back byte-exact, bodies sent in pieces, chunked request
//!   bodies, `Expect: 100-continue`, a declared body over the limit (413, and no desync after
//!   it), a repeated `Content-Length`, an upstream answering before it read the body.
//! - **[`connections`]:** client `Connection: close`, HTTP/1.0, half-close; upstreams that
//!   close pooled connections, say `Connection: close`, answer as HTTP/1.0, close on a request
//!   unanswered (retried only when idempotent); 200 keep-alive requests, 16 concurrent clients
//!   over pooled connections, pooled connections shared and expired; shutdown with an answer
//!   in flight.
//! - **[`failures`]:** upstreams that stall or die in the middle of a body, refused and mute
//!   upstreams (502, 504), invalid answers (502); clients gone mid-body or mid-answer; and the
//!   `/state` counters.
//! - **[`forwarded`]:** `server.trusted_proxies`: a trusted proxy's `X-Forwarded-For` (several
//!   lines) and `Forwarded` (IPv6 nodes, preferred over `X-Forwarded-For`) walked to the client
//!   and rewritten to the believed chain; an `unknown` hop; a spoofing untrusted client's
//!   fields passed on with the real peer appended.
//! - **[`headers`]:** hop-by-hop fields both ways (also named in a second `Connection` field,
//!   or nine of them), forwarding fields (`X-Forwarded-*`, `Forwarded`, `Via`, `Host`), heads
//!   near and over the limits (431), `103 Early Hints`, routing misses (404) in a pipeline,
//!   methods, long targets and odd spacing.
//! - **[`review`]:** what a review of the fast path found: `HEAD` answered locally without a
//!   body, an unsolicited `100 Continue`, a streaming echo, `idle_ms` below `park_ms`, `Date`
//!   on every answer, `CONNECT` refused (405), fragments, a `PUT` never replayed, a 413 while
//!   the body still comes, a dribbled head.
//! - **[`ids`]:** request ids made, replaced, kept when trusted, on local answers, off.
//! - **[`limits`]:** heads far over the limit (431, closed), `Host` missing or repeated (400),
//!   bad chunked request bodies (400, closed, never 502).
//!
//! A scenario that fails on one path is kept, ignored on that path with the reason (see
//! [`on_both_paths!`]), so the failure is fixed rather than forgotten. None is at present.
//!
//! Real sockets mean real time: every wait is bounded by [`STEP`] and each test by
//! [`common::bounded`]; the only sleeps are the short pauses a scenario is about.

mod common;

#[path = "h1_fast/bodies.rs"]
mod bodies;
#[path = "h1_fast/connections.rs"]
mod connections;
#[path = "h1_fast/failures.rs"]
mod failures;
#[path = "h1_fast/forwarded.rs"]
mod forwarded;
#[path = "h1_fast/framing.rs"]
mod framing;
#[path = "h1_fast/headers.rs"]
mod headers;
#[path = "h1_fast/ids.rs"]
mod ids;
#[path = "h1_fast/limits.rs"]
mod limits;
#[path = "h1_fast/review.rs"]
mod review;
#[path = "h1_fast/upstreams.rs"]
mod upstreams;
#[path = "h1_fast/wire.rs"]
mod wire;

use std::time::Duration;

/// The longest any single exchange in these tests may take.
const STEP: Duration = Duration::from_secs(5);

/// The layers a scenario's clusters get (see [`LAYERED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layers {
    /// A balancer (`[clusters.balance]` with its defaults): the fast path sends the request
    /// through the cluster's stack itself (its `stacked` module).
    Balance,
    /// A balancer and a retry layer that never retries (`[clusters.retry] attempts = 0`): the
    /// fast path sends the request through the retry layer and the stack itself.
    Retry,
    /// A balancer and a route that turns retries off (`[routes.retry] attempts = 0`): the
    /// fast path hands the request to the service hyper's requests go through, as an `http`
    /// request (its `layered` module), as it does for every route with its own retries, a
    /// cache or a batcher.
    RouteRetry,
}

tokio::task_local! {
    /// Set while a scenario runs on a layered route: [`upstreams::cfg`] gives every cluster
    /// these layers, which take its routes off the plain path and through the layers, on
    /// whichever front end reads the request.
    static LAYERED: Layers;
}

/// The layers the running scenario's clusters get (see [`LAYERED`]).
fn layers() -> Option<Layers> {
    LAYERED.try_with(|l| *l).ok()
}

/// Whether the running scenario's clusters get layers (see [`LAYERED`]).
fn layered() -> bool {
    layers().is_some()
}

/// Runs each scenario, named as `module::scenario` (an `async fn(fast: bool)` in that
/// module), once per HTTP/1.1 front end and route kind, as the tests `scenario::fast_path`
/// and `scenario::hyper_path` (plain routes), `scenario::layered_fast_path` and
/// `scenario::layered_hyper_path` (the same routes through a balancer layer, see
/// [`LAYERED`]), `scenario::retried_fast_path` (a balancer and a retry layer) and
/// `scenario::http_fast_path` (a route the fast path serves as `http` requests); on hyper's
/// path these two are the layered route again.
///
/// A scenario may be followed by `[fast: "reason"]`, `[hyper: "reason"]` or
/// `[layered: "reason"]` to ignore it there (a known failure, reported, kept so that it is
/// fixed rather than forgotten).
macro_rules! on_both_paths {
    ($($group:ident::$scenario:ident $([fast: $fast:literal])? $([hyper: $hyper:literal])? $([layered: $layered:literal])?),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[ignore = $fast])?
            async fn fast_path() {
                crate::common::bounded(super::$group::$scenario(true)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[ignore = $hyper])?
            async fn hyper_path() {
                crate::common::bounded(super::$group::$scenario(false)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[ignore = $layered])?
            async fn layered_fast_path() {
                let run = crate::LAYERED.scope(crate::Layers::Balance, super::$group::$scenario(true));
                crate::common::bounded(run).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[ignore = $layered])?
            async fn layered_hyper_path() {
                let run = crate::LAYERED.scope(crate::Layers::Balance, super::$group::$scenario(false));
                crate::common::bounded(run).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[ignore = $layered])?
            async fn retried_fast_path() {
                let run = crate::LAYERED.scope(crate::Layers::Retry, super::$group::$scenario(true));
                crate::common::bounded(run).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[ignore = $layered])?
            async fn http_fast_path() {
                let run = crate::LAYERED.scope(crate::Layers::RouteRetry, super::$group::$scenario(true));
                crate::common::bounded(run).await;
            }
        }
    )*};
}

on_both_paths!(
    framing::pipelined_requests_are_answered_in_order,
    framing::response_framing_is_relayed,
    framing::bodiless_answers_leave_the_connection_usable,
    bodies::large_and_slow_request_bodies_arrive_intact,
    bodies::chunked_request_bodies_and_expect_continue,
    connections::client_connection_close_is_honoured,
    connections::http10_without_host_is_answered,
    connections::upstream_closing_its_connection_is_not_a_502,
    connections::upstream_connection_close_is_not_reused,
    failures::a_stalled_response_body_cuts_the_client,
    headers::early_hints_before_the_final_answer,
    headers::hop_by_hop_and_forwarding_headers,
    headers::an_unrouted_request_inside_a_pipeline,
    failures::refused_and_mute_upstreams,
    connections::many_keep_alive_requests_reuse_upstream_connections,
    framing::bytes_after_a_response_are_not_a_response,
    framing::dribbled_responses_are_relayed,
    framing::dribbled_requests_are_forwarded,
    bodies::a_declared_body_too_large_is_413,
    headers::large_heads_both_ways,
    headers::a_second_connection_header_is_honoured,
    headers::many_connection_tokens_in_a_response,
    framing::an_empty_line_before_a_request_is_ignored,
    bodies::an_early_answer_before_the_body_is_read,
    failures::a_client_gone_mid_response_spoils_nothing,
    failures::an_upstream_gone_mid_body_is_not_a_whole_body,
    failures::a_client_gone_mid_body_spoils_nothing,
    failures::counters_agree_with_the_answers,
    connections::shutdown_finishes_the_answer_in_flight,
    framing::a_deep_pipeline_in_one_write,
    framing::a_response_with_both_lengths_is_chunked,
    failures::an_invalid_answer_is_a_502,
    connections::an_idempotent_request_dropped_unanswered_is_retried,
    connections::a_post_dropped_unanswered_is_not_replayed,
    headers::methods_targets_and_odd_spacing,
    connections::concurrent_clients_get_their_own_answers,
    connections::pooled_connections_are_shared_and_expire,
    bodies::a_repeated_content_length_is_sent_once,
    headers::heads_over_the_limits,
    connections::a_half_closed_client_gets_its_answer,
    review::local_answers_to_head_have_no_body,
    review::an_unsolicited_continue_from_the_upstream,
    review::a_streaming_echo_comes_back_whole,
    review::idle_ms_applies_when_park_ms_is_larger,
    review::every_answer_has_a_date,
    review::connect_with_an_origin_form_target,
    review::a_fragment_never_reaches_the_upstream,
    review::a_put_with_a_body_dropped_unanswered_is_not_replayed,
    review::a_413_while_the_body_is_still_coming,
    review::a_head_dribbled_byte_by_byte,
    limits::heads_far_over_the_limit_are_431,
    limits::host_missing_or_repeated_is_400,
    limits::bad_hosts_and_targets_are_400,
    headers::an_absolute_target_names_the_host,
    limits::bad_chunked_request_bodies_are_400,
    limits::a_connection_closes_after_its_maximum_of_requests,
    ids::every_request_gets_a_fresh_request_id,
    ids::a_trusted_request_id_is_kept,
    forwarded::a_trusted_proxy_names_the_client,
    forwarded::an_untrusted_peer_cannot_spoof_its_address,
);
