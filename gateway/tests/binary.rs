//! The built `tollgate` binary: `--check`, reload under load (file change and SIGHUP), an
//! invalid reload kept out, SIGTERM draining an in-flight request, and curl when installed.

mod common;

use common::*;
use http::StatusCode;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn file_config(extra_routes: &str, request_ms: u64) -> String {
    format!(
        "[server]\nworkers = 2\ndrain_timeout_ms = 5000\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [log]\naccess_log = false\n\
         [timeouts]\nrequest_ms = {request_ms}\n\
         [[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n\
         [[demo]]\nname = \"fast\"\nkind = \"fast\"\n\
         [[demo]]\nname = \"slow\"\nkind = \"slow\"\ndelay_ms = 1200\n\
         [[clusters]]\nname = \"fast\"\nendpoints = [\"demo:fast\"]\n\
         [[clusters]]\nname = \"slow\"\nendpoints = [\"demo:slow\"]\n\
         [[routes]]\npath_prefix = \"/slow\"\ncluster = \"slow\"\n\
         [[routes]]\npath_prefix = \"/\"\ncluster = \"fast\"\n{extra_routes}"
    )
}

async fn state(admin: std::net::SocketAddr) -> serde_json::Value {
    let (s, body) = get(admin, "/state").await;
    assert_eq!(s, StatusCode::OK);
    serde_json::from_str(&body).unwrap()
}

#[test]
fn check_accepts_the_shipped_config_and_names_file_field_problem() {
    let ok = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "--check",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../tollgate.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dir = scratch("check_bad");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        file_config(
            "[[routes]]\npath_prefix = \"nope\"\ncluster = \"fast\"\n",
            1000,
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!(
            "{}: routes[2].path_prefix: must start with '/'",
            bad.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request() {
    bounded(async {
        let dir = scratch("reload_under_load");
        let path = dir.join("gw.toml");
        std::fs::write(&path, file_config("", 30_000)).unwrap();
        let bin = Bin::start(&["--config", path.to_str().unwrap()], &dir);
        let admin = bin.admin.unwrap();
        let target = bin.listener;

        let stop_load = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut load = Vec::new();
        for _ in 0..4 {
            let (stop_load, ok, failed) = (stop_load.clone(), ok.clone(), failed.clone());
            load.push(tokio::spawn(async move {
                let client = h1_client();
                while !stop_load.load(Ordering::Relaxed) {
                    let req = http::Request::get(format!("http://{target}/"))
                        .body(http_body_util::Full::default())
                        .unwrap();
                    match client.request(req).await {
                        Ok(r) if r.status() == StatusCode::OK => {
                            let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                            ok.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // 1: edit the file (picked up by the 1 s mtime poll).
        std::fs::write(
            &path,
            file_config(
                "[[routes]]\npath_prefix = \"/v2\"\ncluster = \"fast\"\n",
                20_000,
            ),
        )
        .unwrap();
        let mut generation = 1;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            generation = state(admin).await["generation"].as_u64().unwrap();
            if generation >= 2 {
                break;
            }
        }
        assert_eq!(generation, 2, "file change reloaded");
        // 2: an invalid edit is rejected and the running config kept.
        std::fs::write(
            &path,
            "[[listeners]]\nname = \"main\"\nlisten = \"not an address\"\n",
        )
        .unwrap();
        bin.signal("HUP");
        let mut last_error = serde_json::Value::Null;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            last_error = state(admin).await["reload"]["last_error"].clone();
            if !last_error.is_null() {
                break;
            }
        }
        let msg = last_error
            .as_str()
            .expect("rejected reload recorded")
            .to_owned();
        assert!(msg.contains("listeners[0].listen"), "{msg}");
        assert_eq!(state(admin).await["generation"], 2);
        // 3: a valid file again, applied by SIGHUP.
        std::fs::write(&path, file_config("", 10_000)).unwrap();
        bin.signal("HUP");
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            generation = state(admin).await["generation"].as_u64().unwrap();
            if generation >= 3 {
                break;
            }
        }
        // The watcher may apply the same file too (generation 4); both are fine.
        assert!(generation >= 3, "{generation}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop_load.store(true, Ordering::Relaxed);
        for l in load {
            l.await.unwrap();
        }
        let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        assert_eq!(
            failed,
            0,
            "{failed} of {} requests failed during reloads",
            ok + failed
        );
        assert!(ok > 20, "only {ok} requests completed");
        let metrics = get(admin, "/metrics").await.1;
        let failed_reloads: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("tollgate_reloads_failed_total "))
            .and_then(|v| v.trim().parse().ok())
            .expect("reload failures exported");
        assert!(failed_reloads >= 1, "{metrics}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request() {
    bounded(async {
        let dir = scratch("sigterm_drain");
        let path = dir.join("gw.toml");
        std::fs::write(&path, file_config("", 30_000)).unwrap();
        let mut bin = Bin::start(&["--config", path.to_str().unwrap()], &dir);
        let target = bin.listener;
        let admin = bin.admin.unwrap();
        assert_eq!(get(admin, "/readyz").await.0, StatusCode::OK);
        // The slow demo answers after 1.2 s; SIGTERM arrives 300 ms in.
        let in_flight = tokio::spawn(async move { get(target, "/slow").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = tokio::time::Instant::now();
        bin.signal("TERM");
        let (status, body) = in_flight.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("slow demo upstream"), "{body}");
        let exit = bin
            .wait(Duration::from_secs(10))
            .await
            .expect("exits after draining");
        assert!(exit.success(), "{exit:?}");
        assert!(
            t.elapsed() >= Duration::from_millis(700),
            "waited for the request"
        );
        // Nothing listens any more.
        assert!(tokio::net::TcpStream::connect(target).await.is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http1_and_h2c_when_available() {
    let Some(curl) = tollgate_core::testing::tools::find_or_install("curl", "curl") else {
        eprintln!("curl is not installed and could not be; skipping the curl checks");
        return;
    };
    bounded(async {
        let dir = scratch("curl");
        let path = dir.join("gw.toml");
        std::fs::write(&path, file_config("", 30_000)).unwrap();
        let bin = Bin::start(&["--config", path.to_str().unwrap()], &dir);
        let url = format!("http://{}/curl", bin.listener);
        let run = |args: Vec<String>| {
            let curl = curl.clone();
            tokio::task::spawn_blocking(move || {
                let out = Command::new(&curl).args(&args).output().unwrap();
                assert!(
                    out.status.success(),
                    "curl {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
        };
        let h1 = run(vec![
            "-sS".into(),
            "-i".into(),
            "--max-time".into(),
            "10".into(),
            url.clone(),
        ])
        .await
        .unwrap();
        assert!(h1.starts_with("HTTP/1.1 200"), "{h1}");
        assert!(h1.contains("fast demo upstream"), "{h1}");
        let h2 = run(vec![
            "-sS".into(),
            "-i".into(),
            "--http2-prior-knowledge".into(),
            "--max-time".into(),
            "10".into(),
            "--data-binary".into(),
            "posted".into(),
            url,
        ])
        .await
        .unwrap();
        assert!(h2.starts_with("HTTP/2 200"), "{h2}");
        assert!(h2.ends_with("posted"), "{h2}");
        let admin = bin.admin.unwrap();
        for path in ["/healthz", "/readyz", "/config", "/state", "/metrics", "/"] {
            let out = run(vec![
                "-sS".into(),
                "-f".into(),
                format!("http://{admin}{path}"),
            ])
            .await
            .unwrap();
            assert!(!out.is_empty(), "{path}");
        }
    })
    .await;
}
