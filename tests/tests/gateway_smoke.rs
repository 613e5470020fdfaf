//! The quick-start shape: a 3 + 2 cluster with one gateway per region, and
//! requests through each gateway reach a node of the primary region; and
//! how a stopping node behaves towards the gateways in front of it.

use std::time::Duration;

use attest_tests::launch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_route_to_the_primary_region() {
    let (c, _dir) = launch("gateway-smoke", |_| {}).await.expect("cluster starts");
    let gateways = c.start_gateways(Duration::from_secs(30)).await.expect("gateways start");
    for g in &gateways {
        // Probes run every second; give the monitor a bounded time to see
        // the nodes Online.
        let mut last = String::new();
        let mut served = None;
        for _ in 0..100 {
            match c.http().get(format!("https://{}/providers", g.addr)).send().await {
                Ok(r) if r.status().is_success() => {
                    served = r.headers().get("x-attest-region").and_then(|v| v.to_str().ok()).map(str::to_string);
                    break;
                }
                Ok(r) => last = format!("{}", r.status()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(served.as_deref(), Some(c.spec.primary_region.as_str()), "via gateway {}: {last}", g.region);
        let status: serde_json::Value = c
            .http()
            .get(format!("https://{}/gateway/status", g.addr))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        assert!(status.is_object(), "{status}");
    }
}

/// What a rolling restart behind gateways relies on: on SIGTERM a node
/// finishes the requests it has, but refuses new connections at once. Left
/// in the listen backlog until the process exits, a connection would take a
/// gateway's request and then be reset; refused, the gateway knows nothing
/// was sent and tries another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_refuses_new_connections_and_finishes_its_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let (mut c, _dir) = launch("stopping-node", |s| {
        s.tls = false;
        s.primary_nodes = 2;
        s.secondary_nodes = 1;
    })
    .await
    .expect("cluster starts");
    let id = c.primary_ids()[0];
    let api = c.nodes[&id].api_addr.clone();
    let pid = c.nodes[&id].pid().expect("node runs");

    // A request in flight: headers sent, the body only begun.
    let body = br#"{"quote": "AAAA"}"#;
    let mut held = TcpStream::connect(&api).await.expect("connect");
    let head = format!(
        "POST /attest/SgxEnclave?api-version=2022-08-01 HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    held.write_all(head.as_bytes()).await.expect("write head");
    held.write_all(&body[..3]).await.expect("write part of the body");
    // Let the node read the head, so the request is in flight, not queued.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let term = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill runs");
    assert!(term.success());
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(&api).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            r => {
                assert!(tokio::time::Instant::now() < end, "still accepting connections after SIGTERM: {r:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // The node is still there for the request it holds, and answers it.
    held.write_all(&body[3..]).await.expect("write the rest of the body");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), held.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "no answer within 10 s: {answer}");
    assert!(answer.starts_with("HTTP/1.1 "), "the in-flight request was not answered: {answer:?}");
    assert!(answer.contains("connection: close"), "keep-alive offered by a stopping node: {answer}");
    let node = c.nodes.get_mut(&id).expect("node");
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while node.is_running() {
        assert!(tokio::time::Instant::now() < end, "node did not exit after its last request");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
