//! The programs some tests drive (`redis-server`, `chromium`, `curl`): found on `PATH`, or
//! installed with `apt-get` the first time a test asks for one, so that the README's test
//! command needs nothing but the Rust toolchain on a Debian-like machine.
//!
//! ```no_run
//! use tollgate_core::testing::tools;
//! let Some(curl) = tools::find_or_install("curl", "curl") else {
//!     eprintln!("skipping: curl is not installed and could not be");
//!     return;
//! };
//! let out = std::process::Command::new(curl).arg("--version").output().unwrap();
//! # let _ = out;
//! ```
//!
//! An install runs once per machine at a time: test processes (nextest runs each test in its
//! own) and threads take a lock first (a directory in the temporary directory, made by one of
//! them only; one left by a process that died is taken over after [`STALE_LOCK`]), and look on
//! `PATH` again once they hold it. One that fails leaves a mark there, so the other
//! tests of the run skip at once instead of each trying for minutes; the mark is ignored after
//! [`RETRY_AFTER`]. It needs `apt-get`, and root or password-less `sudo`; anything else, or
//! [`NO_INSTALL_ENV`]`=1`, gives `None`, and the test decides whether that skips or fails.

// File times are the wall clock's: no tokio clock, paused or not, applies to them.
#![allow(clippy::disallowed_types)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// The environment variable that turns the installs off (`TOLLGATE_NO_INSTALL=1`).
pub const NO_INSTALL_ENV: &str = "TOLLGATE_NO_INSTALL";

/// How long a failed install keeps the other tests from trying again.
pub const RETRY_AFTER: Duration = Duration::from_secs(600);

/// How old an install lock must be to be taken as left by a process that died.
pub const STALE_LOCK: Duration = Duration::from_secs(900);

/// How old the file or directory at `path` is, if it is there.
fn age(path: &Path) -> Option<Duration> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    SystemTime::now().duration_since(modified).ok()
}

/// The install lock: a directory only one process can make; removed on drop.
struct Lock(PathBuf);

impl Lock {
    /// Waits for the lock (at most [`STALE_LOCK`], then takes it over).
    fn take(path: PathBuf) -> std::io::Result<Self> {
        loop {
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Lock(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !path.is_dir() {
                        // Not a lock of this kind (a file): nothing to wait for.
                        std::fs::remove_file(&path)?;
                    } else if age(&path).is_some_and(|a| a > STALE_LOCK) {
                        let _ = std::fs::remove_dir(&path);
                    } else {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `name` on `PATH`, if it is there.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The program `binary` from `PATH`, installing Debian's `package` with `apt-get` first if it
/// is missing (see the [module docs](self)); `None` when it is missing and cannot be
/// installed. What an install prints goes to stderr, with the reason when it fails.
pub fn find_or_install(binary: &str, package: &str) -> Option<PathBuf> {
    let allowed = !std::env::var(NO_INSTALL_ENV).is_ok_and(|v| v == "1");
    find_or_install_in(binary, package, allowed, &std::env::temp_dir())
}

fn find_or_install_in(binary: &str, package: &str, allowed: bool, dir: &Path) -> Option<PathBuf> {
    if let Some(found) = find_on_path(binary) {
        return Some(found);
    }
    if !allowed {
        return None;
    }
    let Some(apt) = find_on_path("apt-get") else {
        eprintln!("`{binary}` is not installed, and there is no apt-get to install it with");
        return None;
    };
    // Root runs apt-get itself; anyone else through sudo, which must not ask for a password.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let sudo = if root {
        None
    } else if let Some(sudo) = find_on_path("sudo") {
        Some(sudo)
    } else {
        eprintln!("`{binary}` is not installed; installing it needs root or sudo");
        return None;
    };
    // Held until this function returns: one install at a time.
    let _lock = match Lock::take(dir.join(format!("tollgate-install-{package}.lock"))) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("`{binary}` is not installed; could not lock the install: {e}");
            return None;
        }
    };
    // Another test may have installed it while this one waited for the lock.
    if let Some(found) = find_on_path(binary) {
        return Some(found);
    }
    let mark = dir.join(format!("tollgate-install-{package}.failed"));
    if age(&mark).is_some_and(|a| a < RETRY_AFTER) {
        return None;
    }
    eprintln!(
        "`{binary}` is not installed: installing Debian's `{package}` with apt-get \
         ({NO_INSTALL_ENV}=1 turns this off)"
    );
    let apt_get = |args: &[&str]| {
        let mut cmd = match &sudo {
            Some(sudo) => {
                let mut c = Command::new(sudo);
                c.arg("-n").arg(&apt);
                c
            }
            None => Command::new(&apt),
        };
        cmd.args(["-o", "DPkg::Lock::Timeout=300", "-qq"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // A fresh machine may have no package lists yet: fetch them and try again.
    let installed = apt_get(&["install", "-y", package])
        || (apt_get(&["update"]) && apt_get(&["install", "-y", package]));
    match find_on_path(binary) {
        Some(found) if installed => Some(found),
        _ => {
            eprintln!("installing `{package}` failed; the tests that need `{binary}` skip");
            let _ = File::create(&mark);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_on_the_path_is_found_without_installing() {
        let sh = find_or_install_in("sh", "dash", false, &std::env::temp_dir());
        assert!(sh.is_some_and(|p| p.is_file()));
    }

    #[test]
    fn a_missing_program_is_none_when_installs_are_off() {
        let dir = std::env::temp_dir();
        let name = "tollgate-no-such-program";
        assert_eq!(find_or_install_in(name, name, false, &dir), None);
        assert!(!dir.join(format!("tollgate-install-{name}.lock")).exists());
    }

    #[test]
    fn the_lock_is_one_holder_at_a_time_and_a_stale_one_is_taken_over() {
        let dir = std::env::temp_dir().join(format!("tollgate-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.lock");
        let held = Lock::take(path.clone()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn({
            let path = path.clone();
            move || {
                let lock = Lock::take(path).unwrap();
                tx.send(()).unwrap();
                lock
            }
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(500)).is_err(),
            "two holders"
        );
        drop(held);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the waiter takes it");
        drop(waiter.join().unwrap());
        assert!(!path.exists());
        // A lock left behind long ago (its directory dated back) is taken over.
        std::fs::create_dir(&path).unwrap();
        let old = SystemTime::now() - STALE_LOCK - Duration::from_secs(60);
        File::open(&path).unwrap().set_modified(old).unwrap();
        drop(Lock::take(path.clone()).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_recent_failure_is_not_tried_again() {
        let dir = std::env::temp_dir().join(format!("tollgate-tools-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let name = "tollgate-no-such-program";
        File::create(dir.join(format!("tollgate-install-{name}.failed"))).unwrap();
        // With apt-get on the machine this would try an install; the mark stops it at once
        // (and without apt-get or root it is None anyway): either way no package named so.
        assert_eq!(find_or_install_in(name, name, true, &dir), None);
        // The lock was given back.
        assert!(!dir.join(format!("tollgate-install-{name}.lock")).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
