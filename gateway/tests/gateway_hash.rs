//! Consistent hashing end to end: `[clusters.balance] hash = { header | cookie | path }` sends
//! requests with the same key to one of three real loopback upstreams, and different keys to
//! all of them; a bad key source is refused naming its field.

mod common;

use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::collections::{HashMap, HashSet};

/// Three upstreams answering their names, in a hashed cluster whose key is `hash`.
async fn cluster(hash: &str) -> (tollgate_gateway::Gateway, [String; 3]) {
    let mut names = Vec::new();
    let mut addrs = Vec::new();
    for name in ["a", "b", "c"] {
        addrs.push(upstream(move |_req| async move { text(StatusCode::OK, name) }).await);
        names.push(name.to_owned());
    }
    let endpoints: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let gw = start(config(&format!(
        "[[clusters]]\nname = \"up\"\nendpoints = [{}]\n\
         [clusters.balance]\nseed = 1\nhash = {hash}\n\
         [[routes]]\ncluster = \"up\"\n",
        endpoints.join(", ")
    )));
    (gw, [names[0].clone(), names[1].clone(), names[2].clone()])
}

/// Sends a GET to `path` with `header` (if any) and returns which upstream answered.
async fn which(gw: &tollgate_gateway::Gateway, path: &str, header: Option<(&str, &str)>) -> String {
    let mut req = Request::get(format!("http://{}{path}", addr(gw)));
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    let (s, _, body, _) = send(&h1_client(), req.body(Full::default()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    String::from_utf8_lossy(&body).into_owned()
}

/// Sends each key 5 times one after another; checks each key stays on one upstream and the
/// keys reach every upstream.
async fn check_keys(
    gw: &tollgate_gateway::Gateway,
    names: &[String; 3],
    request: impl Fn(usize) -> (String, Option<(String, String)>),
) {
    let mut home: HashMap<usize, String> = HashMap::new();
    for round in 0..5 {
        for key in 0..30 {
            let (path, header) = request(key);
            let got = which(
                gw,
                &path,
                header.as_ref().map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .await;
            let first = home.entry(key).or_insert_with(|| got.clone());
            assert_eq!(*first, got, "key {key} moved in round {round}");
        }
    }
    let used: HashSet<&String> = home.values().collect();
    assert_eq!(
        used.len(),
        3,
        "30 keys spread over all of {names:?}: {home:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_header_value_lands_on_one_upstream_and_values_spread() {
    bounded(async {
        let (gw, names) = cluster("{ header = \"x-user-id\" }").await;
        check_keys(&gw, &names, |k| {
            (
                "/".to_owned(),
                Some(("x-user-id".to_owned(), format!("user-{k}"))),
            )
        })
        .await;
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_or_the_path_can_be_the_key() {
    bounded(async {
        let (gw, names) = cluster("{ cookie = \"session\" }").await;
        check_keys(&gw, &names, |k| {
            (
                "/".to_owned(),
                Some(("cookie".to_owned(), format!("theme=dark; session=s{k}"))),
            )
        })
        .await;
        stop(gw).await;
        let (gw, names) = cluster("{ path = true }").await;
        check_keys(&gw, &names, |k| (format!("/item/{k}?v=1"), None)).await;
        stop(gw).await;
    })
    .await;
}

#[test]
fn a_bad_key_source_is_refused_naming_its_field() {
    let base = "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n\
                [[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n[clusters.balance]\n";
    let cases = [
        (
            "hash = { header = \"bad header\" }\n",
            "clusters[0].balance.hash.header",
        ),
        (
            "hash = { header = \"x\", path = true }\n",
            "clusters[0].balance.hash",
        ),
        (
            "hash = { load_factor = 0.5 }\n",
            "clusters[0].balance.hash.load_factor",
        ),
        ("hash = { vnodes = 0 }\n", "clusters[0].balance.hash.vnodes"),
        (
            "hash = { heder = \"x\" }\n",
            "clusters[0].balance.hash.heder",
        ),
    ];
    for (section, field) in cases {
        let text = format!("{base}{section}[[routes]]\ncluster = \"c\"\n");
        let err = tollgate_gateway::config::Config::parse(&text, "x.toml").unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
}
