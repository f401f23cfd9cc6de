//! The `tollgate` command line.
//!
//! ```text
//! tollgate                       # ./tollgate.toml if present, else the built-in default
//! tollgate --config FILE         # run with FILE, reloaded on change and on SIGHUP
//! tollgate --check FILE          # validate FILE and exit (0 valid, 1 invalid)
//! tollgate demo-upstream --listen 127.0.0.1:9000   # a standalone demo/bench backend
//! ```

use super::config::{Config, DemoKind, LogConfig, LogFormat, RuntimeMode};
use super::demo::{self, Demo};
use super::{Gateway, StartOptions};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// A many-core HTTP reverse proxy built on the tollgate layers.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
pub(crate) struct Args {
    /// Configuration file (default: ./tollgate.toml if it exists, else the built-in default).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate FILE and exit: 0 when valid, 1 with `FILE: FIELD: PROBLEM` when not.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub check: Option<PathBuf>,
    /// Worker count (overrides `server.workers`; 0 = one per core).
    #[arg(short, long)]
    pub workers: Option<usize>,
    /// Runtime mode (overrides `server.mode`).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// A standalone tool instead of the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ModeArg {
    /// One thread, runtime, listener and pool per core.
    ThreadPerCore,
    /// One multi-thread runtime.
    MultiThread,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run one demo upstream alone (the benchmark's backend). It answers gRPC requests as a
    /// unary gRPC server that echoes the message.
    DemoUpstream {
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// Behaviour.
        #[arg(long, value_enum, default_value = "fast")]
        kind: KindArg,
        /// Delay of `slow`, or mean service time of `busy`, ms.
        #[arg(long, default_value_t = 1500)]
        delay_ms: u64,
        /// Workers of `busy`: the requests it serves at once.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        workers: u64,
        /// Spread of `busy`'s service time, a fraction of `delay-ms` either side (uniform).
        #[arg(long, default_value_t = 0.2, value_parser = jitter)]
        jitter: f64,
        /// Runtime threads (1 = a current-thread runtime).
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

/// `--kind` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum KindArg {
    /// Answers at once.
    Fast,
    /// Answers after a delay.
    Slow,
    /// Fails now and then.
    Flaky,
    /// A fixed number of workers, a jittery service time, a FIFO queue.
    Busy,
}

/// Parses `--jitter`: a fraction in `[0, 1)`.
fn jitter(s: &str) -> Result<f64, String> {
    let j: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..1.0).contains(&j) {
        Ok(j)
    } else {
        Err("must be at least 0 and below 1".into())
    }
}

/// Sets up `tracing` output as the config asks; `RUST_LOG` overrides the level.
pub(crate) fn init_logging(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs the command line; the binary's `main`.
pub(crate) fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::DemoUpstream {
        listen,
        kind,
        delay_ms,
        workers,
        jitter,
        threads,
    }) = args.command
    {
        let timing = demo::Timing {
            delay: Duration::from_millis(delay_ms),
            workers: usize::try_from(workers).unwrap_or(usize::MAX),
            jitter,
        };
        return demo_upstream(listen, kind, timing, threads);
    }
    if let Some(path) = &args.check {
        return match Config::load(path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let local = PathBuf::from("tollgate.toml");
    let path = args
        .config
        .clone()
        .or_else(|| local.is_file().then_some(local));
    let (config, source) = match &path {
        Some(p) => (Config::load(p), p.display().to_string()),
        None => (
            Config::parse(super::config::DEFAULT_CONFIG, "<default>"),
            "<default>".into(),
        ),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&config.log);
    let mut opts = StartOptions::new(config, &source);
    opts.path = path;
    opts.workers = args.workers;
    opts.mode = args.mode.map(|m| match m {
        ModeArg::ThreadPerCore => RuntimeMode::ThreadPerCore,
        ModeArg::MultiThread => RuntimeMode::MultiThread,
    });
    let gateway = match Gateway::start(opts) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("tollgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    announce(&gateway, &source);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate: runtime: {e}");
            gateway.shutdown();
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(wait_for_signals(&gateway));
    tracing::info!("shutting down: draining in-flight requests");
    gateway.shutdown();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Prints where the gateway listens (tests and the benchmark script read these lines).
fn announce(gateway: &Gateway, source: &str) {
    let mut out = std::io::stdout().lock();
    for l in gateway.listeners() {
        let scheme = if l.tls { "https" } else { "http" };
        let _ = writeln!(
            out,
            "tollgate: listener {} on {scheme}://{}/",
            l.name, l.addr
        );
    }
    if let Some(a) = gateway.admin_addr() {
        let _ = writeln!(out, "tollgate: admin on http://{a}/");
    }
    for d in gateway.demos() {
        let _ = writeln!(
            out,
            "tollgate: demo upstream {} on http://{}/",
            d.name, d.addr
        );
    }
    let shared = gateway.shared();
    let _ = writeln!(
        out,
        "tollgate: ready ({} workers, {:?}, config {source})",
        shared.workers, shared.mode
    );
    let _ = out.flush();
}

async fn wait_for_signals(gateway: &Gateway) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                // The outcome is logged by `reload`.
                let _ = gateway.reload();
            }
            _ = term.recv() => return,
            _ = int.recv() => return,
        }
    }
}

fn demo_upstream(
    listen: std::net::SocketAddr,
    kind: KindArg,
    timing: demo::Timing,
    threads: usize,
) -> ExitCode {
    let kind = match kind {
        KindArg::Fast => DemoKind::Fast,
        KindArg::Slow => DemoKind::Slow,
        KindArg::Flaky => DemoKind::Flaky,
        KindArg::Busy => DemoKind::Busy,
    };
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate demo-upstream: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("tollgate demo-upstream: bind {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().map_or(listen, |a| a);
        println!("tollgate: demo upstream on http://{addr}/");
        let _ = std::io::stdout().flush();
        let demo = Arc::new(Demo::new("demo", kind, timing));
        tokio::select! {
            () = demo::serve(listener, demo) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        ExitCode::SUCCESS
    })
}
