//! `srv:` endpoints end to end: a tiny DNS server on 127.0.0.1 (UDP, answers encoded with
//! hickory-proto) serves SRV records for local upstreams; the gateway spreads requests by the
//! records' weights and follows a change of records on its next refresh.

mod common;

use common::*;
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use http::StatusCode;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;

const SERVICE: &str = "_http._tcp.svc.test.";

/// SRV records served: (weight, port, target host).
type Records = Arc<Mutex<Vec<(u16, u16, &'static str)>>>;

/// A DNS server on 127.0.0.1 that answers SRV queries for [`SERVICE`] from `records`
/// (priority 10, plus a priority-20 backup that must be ignored) and A queries for
/// `*.svc.test.` with 127.0.0.1; anything else is NXDOMAIN.
async fn dns_server(records: Records) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
            resp.metadata.message_type = MessageType::Response;
            resp.metadata.authoritative = true;
            resp.metadata.recursion_desired = req.metadata.recursion_desired;
            resp.metadata.recursion_available = true;
            resp.add_queries(req.queries.clone());
            for q in &req.queries {
                let name = q.name().to_ascii().to_ascii_lowercase();
                match q.query_type() {
                    RecordType::SRV if name == SERVICE => {
                        for (weight, port, host) in records.lock().unwrap().iter() {
                            let srv = SRV::new(10, *weight, *port, Name::from_ascii(host).unwrap());
                            resp.add_answer(Record::from_rdata(
                                q.name().clone(),
                                0,
                                RData::SRV(srv),
                            ));
                        }
                        // A backup that must not be used while the priority-10 records exist.
                        let backup =
                            SRV::new(20, 100, 9, Name::from_ascii("backup.svc.test.").unwrap());
                        resp.add_answer(Record::from_rdata(
                            q.name().clone(),
                            0,
                            RData::SRV(backup),
                        ));
                    }
                    RecordType::A if name.ends_with(".svc.test.") => {
                        let a = RData::A(A(Ipv4Addr::LOCALHOST));
                        resp.add_answer(Record::from_rdata(q.name().clone(), 0, a));
                    }
                    RecordType::AAAA if name.ends_with(".svc.test.") => {}
                    _ => resp.metadata.response_code = ResponseCode::NXDomain,
                }
            }
            if let Ok(bytes) = resp.to_vec() {
                let _ = sock.send_to(&bytes, from).await;
            }
        }
    });
    addr
}

/// An upstream that answers its own name.
async fn named(name: &'static str) -> SocketAddr {
    upstream(move |_req| async move { text(StatusCode::OK, name) }).await
}

/// Counts which upstream answered `n` GETs.
async fn spread(at: SocketAddr, n: usize) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for _ in 0..n {
        let (status, body) = get(at, "/").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        match counts.iter_mut().find(|(b, _)| *b == body) {
            Some((_, c)) => *c += 1,
            None => counts.push((body, 1)),
        }
    }
    counts.sort();
    counts
}

fn count(counts: &[(String, usize)], name: &str) -> usize {
    counts
        .iter()
        .find(|(b, _)| b == name)
        .map_or(0, |(_, c)| *c)
}

/// The cluster's endpoint ports on `/state`.
fn ports(gw: &tollgate_gateway::Gateway) -> Vec<u16> {
    let mut p: Vec<u16> = gw.state()["clusters"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let a: SocketAddr = e["addr"].as_str().unwrap().parse().unwrap();
            a.port()
        })
        .collect();
    p.sort_unstable();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_pick_and_refresh_the_endpoints() {
    bounded(async {
        let (a, b, c) = (named("a").await, named("b").await, named("c").await);
        let records: Records = Arc::new(Mutex::new(vec![
            (3, a.port(), "a.svc.test."),
            (1, b.port(), "b.svc.test."),
        ]));
        let dns = dns_server(records.clone()).await;
        let mut config = config(&format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"srv:{SERVICE}\"]\n\
             resolve_interval_ms = 100\n[[routes]]\ncluster = \"up\"\n"
        ));
        config.dns.nameservers = vec![dns.to_string()];
        config.dns.timeout_ms = 1000;
        let gw = start(config);
        let at = addr(&gw);
        let mut want = vec![a.port(), b.port()];
        want.sort_unstable();
        assert_eq!(ports(&gw), want, "the priority-20 backup is not used");

        // Both get traffic, `a` (weight 3) more than `b` (weight 1): each worker gives `a`
        // the first three turns of every round of four.
        let counts = spread(at, 40).await;
        eprintln!("spread by weight 3:1: {counts:?}");
        assert!(count(&counts, "b") > 0, "{counts:?}");
        assert!(count(&counts, "a") > count(&counts, "b"), "{counts:?}");

        // New records: `a` goes, `c` comes, on the next refresh.
        *records.lock().unwrap() = vec![(1, b.port(), "b.svc.test."), (1, c.port(), "c.svc.test.")];
        let mut want = vec![b.port(), c.port()];
        want.sort_unstable();
        while ports(&gw) != want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let counts = spread(at, 20).await;
        assert_eq!(count(&counts, "a"), 0, "{counts:?}");
        assert!(
            count(&counts, "b") > 0 && count(&counts, "c") > 0,
            "{counts:?}"
        );
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_without_records_fails_the_start_and_names_the_endpoint() {
    bounded(async {
        let dns = dns_server(Arc::new(Mutex::new(Vec::new()))).await;
        let mut config = config(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"127.0.0.1:9\", \"srv:_x._tcp.none.test\"]\n\
             [[routes]]\ncluster = \"up\"\n",
        );
        config.dns.nameservers = vec![dns.to_string()];
        let config_copy = config.clone();
        let e = tokio::task::spawn_blocking(move || {
            tollgate_gateway::Gateway::start(tollgate_gateway::StartOptions::new(config_copy, "t.toml"))
                .map(|_| ())
                .expect_err("an SRV name that does not resolve")
        })
        .await
        .unwrap();
        let text = e.to_string();
        assert!(text.contains("clusters[0].endpoints[1]"), "{text}");
        // A bad server address is a config error naming the field.
        config.dns.nameservers = vec!["dns.example".into()];
        let e = config.validate().expect_err("a server must be an address");
        assert_eq!(e.field, "dns.nameservers[0]", "{e}");
    })
    .await;
}
