//! The proxy against real local backends on ephemeral ports. No test asserts
//! a timing; every wait is bounded.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use attest_gateway::config::Config;
use attest_gateway::Gateway;
use common::*;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn status_json(c: &TestClient, gw: std::net::SocketAddr) -> serde_json::Value {
    let a = send(c, gw, Method::GET, "/gateway/status", &[], "").await.expect("status page");
    assert_eq!(a.status, 200);
    serde_json::from_str(&a.body).expect("status JSON")
}

async fn all_online(c: &TestClient, gw: std::net::SocketAddr) -> bool {
    let s = status_json(c, gw).await;
    s["endpoints"]
        .as_array()
        .map(|eps| eps.iter().filter(|e| e["enabled"] == true).all(|e| e["monitor_status"] == "Online"))
        .unwrap_or(false)
}

/// Starts a gateway with `cfg` and waits until every enabled endpoint is
/// Online: the gateway, its address and a client.
async fn start_online(cfg: &str) -> (Gateway, std::net::SocketAddr, TestClient) {
    let gw = Gateway::start(Config::parse(cfg).expect("config")).await.expect("start");
    let addr = gw.local_addr();
    let c = client();
    wait_for(Duration::from_secs(10), "all endpoints Online", || all_online(&c, addr)).await;
    (gw, addr, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn region_outage_zero_failed_attests_then_failback() {
    let p1 = Backend::start(Behavior::new("primary", false)).await;
    let p2 = Backend::start(Behavior::new("primary", false)).await;
    let s1 = Backend::start(Behavior::new("secondary", true)).await;
    let cfg = config(&[("primary", 1, vec![p1.addr, p2.addr], true), ("secondary", 2, vec![s1.addr], true)], "");
    let (_gw, addr, c) = start_online(&cfg).await;

    // Steady attest load from several clients.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let served_primary = Arc::new(AtomicUsize::new(0));
    let served_secondary = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, failures) = (stop.clone(), failures.clone());
        let (sp, ss) = (served_primary.clone(), served_secondary.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::SeqCst) {
                match send(
                    &c,
                    addr,
                    Method::POST,
                    "/attest/SgxEnclave?api-version=2022-08-01",
                    &[("content-type", "application/json")],
                    r#"{"quote":"AAAA"}"#,
                )
                .await
                {
                    Ok(a) if a.status == 200 => {
                        match a.headers.get("x-attest-region").and_then(|v| v.to_str().ok()) {
                            Some("primary") => sp.fetch_add(1, Ordering::SeqCst),
                            Some("secondary") => ss.fetch_add(1, Ordering::SeqCst),
                            _ => 0,
                        };
                    }
                    Ok(a) => failures.lock().expect("lock").push(format!("{} {}", a.status, a.body)),
                    Err(e) => failures.lock().expect("lock").push(e),
                }
            }
        }));
    }
    wait_for(Duration::from_secs(10), "primary serving", || {
        let n = served_primary.load(Ordering::SeqCst);
        async move { n >= 40 }
    })
    .await;

    // kill -9 every node of the primary region.
    let (p1_addr, p2_addr) = (p1.addr, p2.addr);
    let (p1_b, p2_b) = (p1.behavior.clone(), p2.behavior.clone());
    drop(p1);
    drop(p2);
    let before = served_secondary.load(Ordering::SeqCst);
    wait_for(Duration::from_secs(10), "secondary serving", || {
        let n = served_secondary.load(Ordering::SeqCst);
        async move { n >= before + 40 }
    })
    .await;

    // The monitor catches up with what passive detection already acted on.
    wait_for(Duration::from_secs(10), "primary Degraded", || async {
        status_json(&c, addr).await["endpoints"][0]["monitor_status"] == "Degraded"
    })
    .await;

    // Control-plane writes reach the read-only secondary once, and its
    // answer is passed through unchanged.
    let writes_before = s1.behavior.write_hits.load(Ordering::SeqCst);
    let w = send(&c, addr, Method::PUT, "/policies/SgxEnclave?api-version=2022-08-01", &[], "policy")
        .await
        .expect("write answered");
    assert_eq!(w.status, 503);
    assert_eq!(w.body, READ_ONLY_BODY);
    assert_eq!(s1.behavior.write_hits.load(Ordering::SeqCst), writes_before + 1, "a write is never retried");

    // Restart the primary on the same ports: traffic fails back.
    let _p1 = Backend::start_on(p1_addr, p1_b, None).await;
    let _p2 = Backend::start_on(p2_addr, p2_b, None).await;
    let after = served_primary.load(Ordering::SeqCst);
    wait_for(Duration::from_secs(15), "primary serving again", || {
        let n = served_primary.load(Ordering::SeqCst);
        async move { n >= after + 40 }
    })
    .await;

    stop.store(true, Ordering::SeqCst);
    for t in load {
        tokio::time::timeout(Duration::from_secs(15), t).await.expect("load task ends").expect("load task ok");
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(failures.is_empty(), "failed attests: {failures:?}");

    // The status page tells the whole story.
    let s = status_json(&c, addr).await;
    assert_eq!(s["active_region"], "primary");
    let hist = s["history"].as_array().expect("history").clone();
    let failovers: Vec<(String, String)> = hist
        .iter()
        .rev()
        .filter(|e| e["kind"] == "failover")
        .map(|e| (e["from"].as_str().unwrap_or("").to_string(), e["to"].as_str().unwrap_or("").to_string()))
        .collect();
    assert!(failovers.contains(&("primary".into(), "secondary".into())), "{failovers:?}");
    assert_eq!(failovers.last(), Some(&("secondary".to_string(), "primary".to_string())));
    assert!(hist.iter().any(|e| e["kind"] == "node_status" && e["to"] == "Degraded"));
    let metrics = send(&c, addr, Method::GET, "/metrics", &[], "").await.expect("metrics");
    assert!(metrics.body.contains("gateway_failovers_total"));
    assert!(metrics.body.contains("gateway_probe_total"));
    assert!(metrics.body.contains("gateway_requests_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_request_id_host_path_and_probe_headers() {
    let b = Backend::start(Behavior::new("eastus2", false)).await;
    let cfg = config(&[("eastus2", 1, vec![b.addr], true)], "");
    let (_gw, addr, c) = start_online(&cfg).await;

    let a = send(
        &c,
        addr,
        Method::POST,
        "/attest/TdxVm?api-version=2023-04-01-preview",
        &[("host", "myprovider.attest.example"), ("x-ms-request-id", "req-123")],
        "{}",
    )
    .await
    .expect("answer");
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["x-ms-request-id"], "req-123");
    assert_eq!(a.headers["x-attest-region"], "eastus2");
    let (pq, seen) = b.behavior.last_request.lock().expect("lock").clone().expect("seen");
    assert_eq!(pq, "/attest/TdxVm?api-version=2023-04-01-preview");
    assert_eq!(seen["host"], "myprovider.attest.example");
    assert_eq!(seen["x-ms-request-id"], "req-123");

    // No id given: one is created and sent both ways.
    let a = send(&c, addr, Method::GET, "/certs", &[], "").await.expect("answer");
    let id = a.headers["x-ms-request-id"].to_str().expect("ascii").to_string();
    assert_eq!(id.len(), 36, "a UUID");
    let (_, seen) = b.behavior.last_request.lock().expect("lock").clone().expect("seen");
    assert_eq!(seen["x-ms-request-id"].to_str().ok(), Some(id.as_str()));

    // Probes carry the configured custom headers.
    let probes = b.behavior.probe_headers.lock().expect("lock").clone();
    assert!(!probes.is_empty());
    assert!(probes.iter().all(|h| h["x-probe"] == "attest-gateway"));

    // HTTP/2 with prior knowledge (h2c) works too.
    let h2: TestClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build_http();
    let a = send(&h2, addr, Method::POST, "/attest/SevSnpVm", &[], "{}").await.expect("h2 answer");
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["x-attest-region"], "eastus2");

    // Gateway-made errors use MAA's shape.
    let a = send(&c, addr, Method::GET, "/gateway/nope", &[], "").await.expect("answer");
    assert_eq!(a.status, 404);
    let v: serde_json::Value = serde_json::from_str(&a.body).expect("json");
    assert_eq!(v["error"]["code"], "NotFound");
    let a = send(&c, addr, Method::GET, "/gateway/", &[], "").await.expect("html");
    assert!(a.body.contains("<html>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexpected_health_status_degrades_and_expected_ranges_apply() {
    let a1 = Backend::start(Behavior::new("a", false)).await;
    let b1 = Backend::start(Behavior::new("b", false)).await;
    let cfg = config(&[("a", 1, vec![a1.addr], true), ("b", 2, vec![b1.addr], true)], "");
    // 204 from the health endpoint is healthy only if listed.
    let cfg =
        cfg.replace("tolerated_failures = 1", "tolerated_failures = 1\nexpected_status_codes = \"200-200, 204-204\"");
    let (gw, addr, c) = start_online(&cfg).await;
    a1.behavior.health_status.store(204, Ordering::SeqCst);
    // Still healthy: nothing to wait for, but a few probes must pass.
    let seen = a1.behavior.probe_headers.lock().expect("lock").len();
    wait_for(Duration::from_secs(10), "more probes", || {
        let n = a1.behavior.probe_headers.lock().expect("lock").len();
        async move { n >= seen + 3 }
    })
    .await;
    let s = status_json(&c, addr).await;
    assert_eq!(s["endpoints"][0]["monitor_status"], "Online");

    // 301 is not listed: Degraded, and traffic moves to b.
    a1.behavior.health_status.store(301, Ordering::SeqCst);
    wait_for(Duration::from_secs(10), "a Degraded", || async {
        status_json(&c, addr).await["endpoints"][0]["monitor_status"] == "Degraded"
    })
    .await;
    let r = send(&c, addr, Method::GET, "/certs", &[], "").await.expect("answer");
    assert_eq!(r.headers["x-attest-region"], "b");

    // Disabling b by reload while a is Degraded: a is served as last resort
    // (all-Degraded rule does not apply to Disabled, but a is the only eligible).
    let cfg2 = config(&[("a", 1, vec![a1.addr], true), ("b", 2, vec![b1.addr], false)], "")
        .replace("tolerated_failures = 1", "tolerated_failures = 1\nexpected_status_codes = \"200-200, 204-204\"");
    gw.reload(Config::parse(&cfg2).expect("config")).expect("reload");
    let r = send(&c, addr, Method::GET, "/certs", &[], "").await.expect("answer");
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-attest-region"], "a");
    let s = status_json(&c, addr).await;
    assert_eq!(s["endpoints"][1]["monitor_status"], "Disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_and_slow_clients_do_not_hurt_others() {
    let b = Backend::start(Behavior::new("r", false)).await;
    let cfg = config(&[("r", 1, vec![b.addr], true)], "");
    let (_gw, addr, c) = start_online(&cfg).await;

    // Slowloris: many connections that dribble header bytes, or send nothing.
    let mut slow = Vec::new();
    for i in 0..30 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 0 {
            s.write_all(b"POST /attest/SgxEnclave HTTP/1.1\r\nHost: x\r\n").await.expect("write");
        }
        slow.push(s);
    }
    // Vanishing clients: promise a body, send part of it, disappear.
    for _ in 0..10 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"POST /attest/SgxEnclave HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"quote\"")
            .await
            .expect("write");
        drop(s);
    }
    // Meanwhile normal clients are served.
    for _ in 0..20 {
        let a = send(&c, addr, Method::POST, "/attest/SgxEnclave", &[], "{}").await.expect("served");
        assert_eq!(a.status, 200);
    }
    // The gateway closes the slow connections by itself (bounded wait).
    for mut s in slow {
        let mut buf = [0u8; 1024];
        let r = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue, // e.g. a 408 before closing
                }
            }
        })
        .await;
        assert!(r.is_ok(), "slow connection was not closed");
    }

    // Oversized headers: rejected (431 or closed), others unaffected.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let big = "a".repeat(20_000);
    let req = format!("GET /certs HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 431"), "unexpected answer to oversized headers: {text}");

    // Malformed request line.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(b"GARBAGE\x01\x02 NOT HTTP\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 400"), "{text}");

    // Oversized body: 413 in MAA's shape, nothing forwarded. The body is
    // within 1 MiB of the limit, so the gateway reads it before answering and
    // the client gets the 413 rather than a reset mid-write.
    let hits = b.behavior.data_hits.load(Ordering::SeqCst);
    let a = send(&c, addr, Method::POST, "/attest/SgxEnclave", &[], &"x".repeat(70_000)).await.expect("answer");
    assert_eq!(a.status, 413);
    assert!(a.body.contains("RequestEntityTooLarge"));
    assert_eq!(b.behavior.data_hits.load(Ordering::SeqCst), hits);
    // Far beyond the limit the body is not read: the answer comes at once,
    // before any of it was sent, and says the connection closes.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!("POST /attest/SgxEnclave HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 64 << 20);
    s.write_all(head.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 413"), "{text}");
    assert!(text.contains("connection: close") && text.contains("requestentitytoolarge"), "{text}");
    assert_eq!(b.behavior.data_hits.load(Ordering::SeqCst), hits);

    // And normal traffic still flows (also on the connection the drained
    // 413 above left open).
    let a = send(&c, addr, Method::POST, "/attest/SgxEnclave", &[], "{}").await.expect("served");
    assert_eq!(a.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_not_retried_but_idempotent_5xx_are() {
    let a1 = Backend::start(Behavior::new("a", false)).await;
    let a2 = Backend::start(Behavior::new("a", false)).await;
    let cfg = config(&[("a", 1, vec![a1.addr, a2.addr], true)], "");
    let (_gw, addr, c) = start_online(&cfg).await;

    // One node answers data-plane requests with 503 (e.g. draining): attests
    // are retried on the other node and never fail.
    a1.behavior.data_status.store(503, Ordering::SeqCst);
    for _ in 0..10 {
        let r = send(&c, addr, Method::POST, "/attest/OpenEnclave", &[], "{}").await.expect("answer");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // A write that gets an answer is passed through, exactly once.
    let before = a1.behavior.write_hits.load(Ordering::SeqCst) + a2.behavior.write_hits.load(Ordering::SeqCst);
    let r = send(&c, addr, Method::DELETE, "/certs/abc", &[], "").await.expect("answer");
    assert_eq!(r.status, 200);
    let after = a1.behavior.write_hits.load(Ordering::SeqCst) + a2.behavior.write_hits.load(Ordering::SeqCst);
    assert_eq!(after, before + 1);
}

/// When every node of the plan fails, the 502 says how many attempts were
/// made and why retrying stopped (without naming nodes): the one line a
/// client or a drill report has to go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_attempts_say_how_many_and_why() {
    let mut a1 = Backend::start(Behavior::new("a", false)).await;
    let mut a2 = Backend::start(Behavior::new("a", false)).await;
    let cfg = config(&[("a", 1, vec![a1.addr, a2.addr], true)], "");
    let (_gw, addr, c) = start_online(&cfg).await;
    a1.kill();
    a2.kill();
    // Abort takes effect at the accept task's next poll: wait until both refuse.
    let (x, y) = (a1.addr, a2.addr);
    wait_for(Duration::from_secs(10), "backends refuse connections", || async move {
        TcpStream::connect(x).await.is_err() && TcpStream::connect(y).await.is_err()
    })
    .await;
    let r = send(&c, addr, Method::POST, "/attest/OpenEnclave", &[], "{}").await.expect("answer");
    assert_eq!(r.status, 502, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON error body");
    assert_eq!(v["error"]["code"], "BadGateway");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("(2 attempt(s); no other routable node)"), "{msg}");
    assert!(!msg.contains(&a1.addr.to_string()) && !msg.contains(&a2.addr.to_string()), "{msg}");
}

/// Planned failover: the primary's nodes report 503 on /health (draining)
/// while still serving; the monitor moves traffic and nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_region_is_left_without_errors() {
    let p1 = Backend::start(Behavior::new("primary", false)).await;
    let s1 = Backend::start(Behavior::new("secondary", true)).await;
    let cfg = config(&[("primary", 1, vec![p1.addr], true), ("secondary", 2, vec![s1.addr], true)], "");
    let (_gw, addr, c) = start_online(&cfg).await;
    p1.behavior.health_status.store(503, Ordering::SeqCst);
    let mut regions = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = send(&c, addr, Method::POST, "/attest/Tpm", &[], "{}").await.expect("answer");
        assert_eq!(a.status, 200, "{}", a.body);
        let r = a.headers["x-attest-region"].to_str().expect("ascii").to_string();
        let done = r == "secondary";
        regions.push(r);
        if done {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "never moved to secondary");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!regions.is_empty());
}

/// A stopping gateway refuses new connections at once (instead of leaving
/// them in the listen backlog until its drain ends) and still answers the
/// request it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_refuses_new_connections_and_finishes_its_requests() {
    let a1 = Backend::start(Behavior::new("a", false)).await;
    let cfg = config(&[("a", 1, vec![a1.addr], true)], "");
    let (gw, addr, _c) = start_online(&cfg).await;

    // A request in flight: headers sent, the body only begun.
    let body = b"{\"quote\": \"AAAA\"}";
    let mut held = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /attest/SgxEnclave HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    held.write_all(head.as_bytes()).await.expect("write head");
    held.write_all(&body[..3]).await.expect("write part of the body");
    // Let the gateway read the head, so the request is in flight, not queued
    // (well inside the test config's 1 s body timeout).
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopping = tokio::spawn(gw.shutdown(Duration::from_secs(20)));
    wait_for(Duration::from_secs(10), "new connections refused", || async move {
        matches!(TcpStream::connect(addr).await, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    })
    .await;
    held.write_all(&body[3..]).await.expect("write the rest of the body");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), held.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "no answer within 10 s: {answer}");
    assert!(answer.starts_with("HTTP/1.1 200"), "the in-flight request was not answered: {answer:?}");
    tokio::time::timeout(Duration::from_secs(20), stopping).await.expect("gateway stops").expect("no panic");
}
