//! The gateway against a real local cluster under steady attestation load
//! (issue 6): losing the whole primary region (kill -9 of every node) and a
//! planned failover (drain through the admin API) cost clients no failed
//! attestation; writes during the outage are refused as read-only; traffic
//! fails back when the primary returns; the status page keeps the history.
//!
//! Every wait is bounded; nothing asserts on durations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attest_chaos::cluster::{Cluster, GatewayHandle};
use attest_tests::{b64u, import_collateral, launch, tempdir, vector, GRACE_S, PINNED};
use serde_json::{json, Value};

const CLIENTS: usize = 4;
const CONVERGE: Duration = Duration::from_secs(90);

/// What the load clients saw.
#[derive(Default)]
struct Seen {
    ok: u64,
    /// Region that served (the gateway's `x-attest-region`) per success.
    regions: Vec<String>,
    failures: Vec<String>,
}

/// Closed-loop attest clients through one gateway until `stop` is set.
fn start_load(
    c: &Cluster,
    gateway: &GatewayHandle,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let oe = vector("sgx/azure-sdk-oe/oe_report_debug.bin");
    let runtime = vector("sgx/azure-sdk-oe/runtime_data.bin");
    let body = json!({"report": b64u(&oe), "runtimeData": {"data": b64u(&runtime), "dataType": "Binary"}}).to_string();
    let url = format!("https://{}/attest/OpenEnclave?api-version=2022-08-01", gateway.addr);
    (0..CLIENTS)
        .map(|_| {
            let http = c.http().clone();
            let (url, body, stop, seen) = (url.clone(), body.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await;
                    let outcome = match r {
                        Ok(r) if r.status().is_success() => {
                            let region = r
                                .headers()
                                .get("x-attest-region")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            match r.json::<Value>().await {
                                Ok(v) if v["token"].is_string() => Ok(region),
                                Ok(v) => Err(format!("200 without a token: {v}")),
                                Err(e) => Err(format!("body: {e}")),
                            }
                        }
                        Ok(r) => Err(format!("{} {}", r.status(), r.text().await.unwrap_or_default())),
                        Err(e) => Err(e.to_string()),
                    };
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    match outcome {
                        Ok(region) => {
                            s.ok += 1;
                            s.regions.push(region);
                        }
                        Err(e) => s.failures.push(e),
                    }
                }
            })
        })
        .collect()
}

/// Waits until `n` more attestations succeeded, served by `region`.
async fn wait_served_by(seen: &Mutex<Seen>, region: &str, n: usize, what: &str) {
    let start = seen.lock().unwrap_or_else(|p| p.into_inner()).regions.len();
    let deadline = Instant::now() + CONVERGE;
    loop {
        {
            let s = seen.lock().unwrap_or_else(|p| p.into_inner());
            if s.regions[start.min(s.regions.len())..].iter().filter(|r| r.as_str() == region).count() >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {region} never served {n} attestations; failures so far: {:?}",
                s.failures
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn gateway_status(c: &Cluster, g: &GatewayHandle) -> Value {
    c.http()
        .get(format!("https://{}/gateway/status", g.addr))
        .send()
        .await
        .expect("status answered")
        .json()
        .await
        .expect("status is JSON")
}

async fn launch_with_gateways(name: &str) -> (Cluster, tempdir::Dir, Vec<GatewayHandle>) {
    let (c, dir) = launch(name, |s| {
        s.pinned_verification_time = Some(PINNED.into());
        s.collateral_grace_s = GRACE_S;
    })
    .await
    .expect("cluster starts");
    import_collateral(&c, c.primary_ids()[0]).await;
    c.wait_converged(&c.ids(), 0, CONVERGE).await.expect("converged");
    let gateways = c.start_gateways(Duration::from_secs(30)).await.expect("gateways start");
    (c, dir, gateways)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primary_region_killed_under_attest_load_costs_no_attestation() {
    let (mut c, _dir, gateways) = launch_with_gateways("gw-failover").await;
    let primary = c.spec.primary_region.clone();
    let secondary = c.spec.secondary_region.clone();
    let g = &gateways[0];
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let load = start_load(&c, g, stop.clone(), seen.clone());
    wait_served_by(&seen, &primary, 20, "steady state").await;

    // The whole primary region dies at once.
    c.kill_region(&primary).expect("kill primary region");
    wait_served_by(&seen, &secondary, 20, "after the primary region died").await;

    // Writes through the gateway are refused as read-only, not retried
    // into a hang and not lost silently.
    let w = c
        .http()
        .put(format!("https://{}/providers/afterkill", g.addr))
        .json(&json!({}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("write answered");
    assert_eq!(w.status().as_u16(), 503);
    let body: Value = w.json().await.expect("MAA error body");
    assert_eq!(body["error"]["code"], "ControlPlaneReadOnly", "{body}");

    // The primary returns: traffic fails back to it.
    c.start_region(&primary).expect("restart primary region");
    for id in c.primary_ids() {
        c.wait_healthy(id, CONVERGE).await.expect("primary node healthy again");
    }
    wait_served_by(&seen, &primary, 20, "after the primary returned").await;

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.expect("load client");
    }
    {
        let s = seen.lock().unwrap_or_else(|p| p.into_inner());
        assert!(s.failures.is_empty(), "{} of {} attestations failed: {:?}", s.failures.len(), s.ok, s.failures);
    }

    // The status page tells the whole story: away from the primary and back.
    let status = gateway_status(&c, g).await;
    let failovers: Vec<&Value> = status["history"]
        .as_array()
        .map(|h| h.iter().filter(|e| e["kind"] == "failover").collect())
        .unwrap_or_default();
    assert!(
        failovers.iter().any(|e| e["to"] == secondary.as_str()),
        "no failover to {secondary} in the history: {status}"
    );
    assert!(failovers.iter().any(|e| e["to"] == primary.as_str()), "no failback to {primary} in the history: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_the_primary_region_fails_over_without_errors() {
    let (c, _dir, gateways) = launch_with_gateways("gw-drain").await;
    let primary = c.spec.primary_region.clone();
    let secondary = c.spec.secondary_region.clone();
    let g = &gateways[1];
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let load = start_load(&c, g, stop.clone(), seen.clone());
    wait_served_by(&seen, &primary, 20, "steady state").await;

    // Planned failover: drain every node of the primary region.
    for id in c.primary_ids() {
        let r = c.http().post(format!("{}/admin/drain", c.url(id))).send().await.expect("drain answered");
        assert!(r.status().is_success(), "drain node {id}: {}", r.status());
    }
    wait_served_by(&seen, &secondary, 20, "after draining the primary").await;
    for id in c.primary_ids() {
        let r = c.http().post(format!("{}/admin/undrain", c.url(id))).send().await.expect("undrain answered");
        assert!(r.status().is_success(), "undrain node {id}: {}", r.status());
    }
    wait_served_by(&seen, &primary, 20, "after undraining").await;

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.expect("load client");
    }
    let s = seen.lock().unwrap_or_else(|p| p.into_inner());
    assert!(s.ok > 0);
    assert!(s.failures.is_empty(), "{} of {} attestations failed: {:?}", s.failures.len(), s.ok, s.failures);
}
