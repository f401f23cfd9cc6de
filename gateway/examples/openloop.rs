//! An open-loop HTTP load generator for the overload bench (`gateway/benches/overload.sh`).
//!
//! Requests arrive at a rate (Poisson: exponential gaps, seeded), each on its own task and,
//! when the pool has no idle one, its own connection, whatever happened to the requests before
//! it, as users arrive at a service: a slow server does not slow the arrivals down, it only
//! grows its queue. (A closed-loop tool such as wrk, with a fixed number of connections each
//! waiting for its answer, sends less as the server slows and so hides an overload.) Latency
//! is measured from the moment a request was due, not from when it went out, so a late send
//! counts against the server too.
//!
//! ```text
//! cargo run --release -p tollgate-gateway --example openloop -- \
//!     --url http://127.0.0.1:8080/ --rate 1500 --duration 10 --warmup 3
//! ```
//!
//! It prints one line of `key=value` fields: `rate`, `sent`, `ok` (2xx), `rejected` (429 and
//! 503: the server said no), `failed` (any other status, or a connection error), `timeouts`
//! (no answer within `--timeout`: the client gave up), `goodput` (2xx a second), and `p50_ms`,
//! `p99_ms`, `p999_ms` of the 2xx answers; all over the requests due after the warm-up.

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Command-line arguments.
#[derive(Debug, Parser)]
struct Args {
    /// The URL each request GETs.
    #[arg(long)]
    url: http::Uri,
    /// Requests a second (mean of a Poisson process).
    #[arg(long)]
    rate: f64,
    /// Seconds of load, the warm-up included.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds at the start whose requests are sent but not counted.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds a request waits for its whole answer before the client gives up.
    #[arg(long, default_value_t = 1.0)]
    timeout: f64,
    /// Seed of the arrival times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// What became of the counted requests.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    ok: u64,
    rejected: u64,
    failed: u64,
    timeouts: u64,
    /// Latencies of the 2xx answers, microseconds.
    latencies: Vec<u32>,
}

/// What one request got.
enum Outcome {
    Status(u16),
    Error,
    TimedOut,
}

/// splitmix64: a small seeded generator, enough for arrival times.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An exponential gap with mean `1 / rate` seconds.
    fn gap(&mut self, rate: f64) -> f64 {
        -(1.0 - self.next_f64()).ln() / rate
    }
}

fn main() {
    let args = Args::parse();
    if !(args.rate > 0.0 && args.duration > args.warmup && args.timeout > 0.0) {
        eprintln!("openloop: need --rate > 0, --duration > --warmup and --timeout > 0");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let tally = rt.block_on(run(&args));
    print_tally(&args, &tally);
}

async fn run(args: &Args) -> Tally {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let timeout = Duration::from_secs_f64(args.timeout);
    let start = Instant::now();
    let mut rng = Rng(args.seed);
    let mut due = 0.0;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        due += rng.gap(args.rate);
        if due >= args.duration {
            break;
        }
        let at = start + Duration::from_secs_f64(due);
        tokio::time::sleep_until(at).await;
        let counted = due >= args.warmup;
        let (client, uri, tally) = (client.clone(), args.url.clone(), tally.clone());
        tasks.spawn(async move {
            let outcome = match tokio::time::timeout(timeout, get(&client, uri)).await {
                Ok(Ok(status)) => Outcome::Status(status),
                Ok(Err(())) => Outcome::Error,
                Err(_) => Outcome::TimedOut,
            };
            if !counted {
                return;
            }
            let micros = u32::try_from(at.elapsed().as_micros()).unwrap_or(u32::MAX);
            let mut t = tally.lock().expect("tally lock");
            t.sent += 1;
            match outcome {
                Outcome::Status(s) if (200..300).contains(&s) => {
                    t.ok += 1;
                    t.latencies.push(micros);
                }
                Outcome::Status(429 | 503) => t.rejected += 1,
                Outcome::Status(_) | Outcome::Error => t.failed += 1,
                Outcome::TimedOut => t.timeouts += 1,
            }
        });
        // Reap finished tasks as we go, so the set does not hold every request of the run.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut t = tally.lock().expect("tally lock");
    std::mem::take(&mut *t)
}

/// One GET, its body read to the end; the status, or `Err` on a connection error.
async fn get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    uri: http::Uri,
) -> Result<u16, ()> {
    let req = http::Request::get(uri).body(Empty::new()).map_err(|_| ())?;
    let resp = client.request(req).await.map_err(|_| ())?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await.map_err(|_| ())?;
    Ok(status)
}

fn print_tally(args: &Args, t: &Tally) {
    let mut lat = t.latencies.clone();
    lat.sort_unstable();
    let q = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        f64::from(lat[i]) / 1000.0
    };
    let window = args.duration - args.warmup;
    println!(
        "rate={} sent={} ok={} rejected={} failed={} timeouts={} goodput={:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2}",
        args.rate,
        t.sent,
        t.ok,
        t.rejected,
        t.failed,
        t.timeouts,
        t.ok as f64 / window,
        q(0.50),
        q(0.99),
        q(0.999),
    );
}
