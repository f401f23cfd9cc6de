//! A throwaway `redis-server` per test, on a free loopback port.
//!
//! ```no_run
//! use tollgate_core::testing::redis::RedisServer;
//! let Some(server) = RedisServer::start() else {
//!     eprintln!("skipping: redis-server not installed");
//!     return;
//! };
//! let url = server.url(); // redis://127.0.0.1:PORT
//! # let _ = url;
//! ```
//!
//! [`RedisServer::start`] installs `redis-server` with `apt-get` when it is not on `PATH` (see
//! [`tools`](super::tools)), and returns `None` when that cannot be done, so a developer
//! without Redis or root skips these tests; with `TOLLGATE_REQUIRE_REDIS=1` (CI) it panics
//! instead, so a missing server fails the run. The server keeps nothing on disk (`--save ""`,
//! `--appendonly no`) and dies with its [`RedisServer`].
//!
//! Starting a process is real I/O: waiting for it to accept connections uses real time (at most
//! [`START_TIMEOUT`]), not tokio's clock.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The longest [`RedisServer::start`] waits for the server to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);

/// The environment variable that turns a missing `redis-server` into a failure.
pub const REQUIRE_ENV: &str = "TOLLGATE_REQUIRE_REDIS";

/// A running `redis-server`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

impl RedisServer {
    /// Starts a server on a free loopback port, or `None` when `redis-server` is not installed
    /// and cannot be (see [`tools::find_or_install`](super::tools::find_or_install)).
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing and `TOLLGATE_REQUIRE_REDIS=1`, or when the server does
    /// not start accepting connections within [`START_TIMEOUT`].
    pub fn start() -> Option<Self> {
        let Some(binary) = super::tools::find_or_install("redis-server", "redis-server") else {
            if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
                panic!("redis-server is not on PATH, could not be installed, and {REQUIRE_ENV}=1");
            }
            return None;
        };
        let mut server = RedisServer {
            binary,
            port: free_port(),
            child: None,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        // A port freed a moment ago may be taken by someone else: try a few.
        for attempt in 0..5 {
            if attempt > 0 {
                self.port = free_port();
            }
            let child = self.launch();
            self.child = Some(child);
            if self.wait_until_up() {
                return;
            }
            self.stop();
        }
        panic!("redis-server did not accept connections within {START_TIMEOUT:?}");
    }

    fn launch(&self) -> Child {
        Command::new(&self.binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server")
    }

    /// Polls the port until it accepts a connection or the server exits.
    fn wait_until_up(&mut self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let step = Duration::from_millis(5);
        let mut waited = Duration::ZERO;
        while waited < START_TIMEOUT {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return true;
            }
            if let Some(child) = self.child.as_mut()
                && matches!(child.try_wait(), Ok(Some(_)))
            {
                return false;
            }
            std::thread::sleep(step);
            waited += step;
        }
        false
    }

    /// The server's URL, `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (clients see their connections drop). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Freezes the server with `SIGSTOP`: connections stay open but nothing answers (clients
    /// without a response timeout hang).
    ///
    /// # Panics
    ///
    /// When the server is not running or `kill` fails.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a server frozen by [`pause`](Self::pause).
    ///
    /// # Panics
    ///
    /// When the server is not running or `kill` fails.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("redis-server is not running");
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} failed");
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server again on the same port (after [`stop`](Self::stop)), with an empty
    /// data set.
    ///
    /// # Panics
    ///
    /// When it does not accept connections within [`START_TIMEOUT`].
    pub fn restart(&mut self) {
        self.stop();
        let child = self.launch();
        self.child = Some(child);
        assert!(
            self.wait_until_up(),
            "redis-server did not come back on port {}",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stops_and_restarts_on_the_same_port() {
        let Some(mut server) = RedisServer::start() else {
            eprintln!("skipping: redis-server not installed");
            return;
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], server.port()));
        assert!(TcpStream::connect(addr).is_ok());
        assert!(server.url().starts_with("redis://127.0.0.1:"));
        server.pause();
        server.resume();
        assert!(TcpStream::connect(addr).is_ok());
        server.stop();
        assert!(!server.is_running());
        assert!(TcpStream::connect(addr).is_err());
        server.restart();
        assert!(TcpStream::connect(addr).is_ok());
    }
}
