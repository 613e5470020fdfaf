//! The quick-start shape: a 3 + 2 cluster with one gateway per region, and
//! requests through each gateway reach a node of the primary region.

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
