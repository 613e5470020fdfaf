//! Data-plane benchmark: end-to-end `POST /attest/SgxEnclave` against one
//! node over HTTPS keep-alive, next to the in-process bound of the same
//! work, in one run on the same cores.
//!
//! * **bound**: [`attest_node::attest::Engine::attest`] in a tight loop on
//!   every core — request decoding, quote verification with the collateral
//!   cached, policy evaluation, claims and token signing. No HTTP, TLS,
//!   JSON response or client.
//! * **closed loop**: `clients` connections each sending the next request
//!   when the last answers; gives peak requests/s and latency at peak.
//! * **open loop at 80 % of peak**: requests *scheduled* at a fixed rate
//!   whatever the answers do, latency measured from the scheduled time, so
//!   a stalled server shows up in the tail instead of slowing the load
//!   (no coordinated omission).
//!
//! **Core split** (the default with ≥ 2 CPUs): the node under test runs on
//! the first half of the CPUs and everything else — the load generator with
//! its TLS and JSON work, the four idle cluster members — on the other
//! half (`taskset`); the bound runs on exactly the node's CPUs with as many
//! threads. Both figures then describe the same cores doing the same
//! pipeline, with and without HTTP in front, which is what "≥ 70 % of the
//! bound" asks. `--shared-cores` runs everything on every CPU instead (the
//! client's work is then charged to the HTTP figure).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use attest_node::attest::{Engine, EngineConfig};
use attest_node::evidence::{AttestationType, TrustAnchors};
use attest_node::providers::ProviderView;
use attest_node::signing::KeyRing;
use attest_node::token::TokenAlg;
use attest_raft::command::TrustModel;
use attest_raft::state::{CollateralRecord, ControlState};
use base64::Engine as _;
use serde::Serialize;

use crate::bench::{pin, run_load, CoreSplit, LoadSpec, Op};
use crate::cluster::{Cluster, ClusterSpec};

/// When the recorded SGX vectors verify (their collateral is Intel's
/// 2025-09 set; the QE identity and CRL are inside a 90-day grace).
pub const PINNED: &str = "2025-10-01T00:00:00Z";
pub const GRACE_S: u64 = 90 * 86_400;

/// The collateral the recorded quote needs, by vector path.
const COLLATERAL: &[(&str, &str)] = &[
    ("sgx-qvl-bundle", "sgx/dcap-qvl/sgx_quote_collateral.json"),
    ("tcbinfo-00906ed50000", "sgx/azure-sdk-oe/tcbInfo-sgx-00906ed50000_2025-09-28.json"),
];

/// What one run of the data-plane benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct AttestBenchResult {
    pub alg: String,
    pub bound_ops_per_s: f64,
    pub bound_threads: usize,
    /// `node CPUs / other CPUs` when the cores were split, else `shared`.
    pub cores: String,
    pub closed: crate::bench::LoadResult,
    pub open_rate: f64,
    pub open: OpenLoopResult,
}

/// An open-loop run.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoopResult {
    pub target_rate: f64,
    /// Requests scheduled (sent + dropped).
    pub sent: u64,
    pub ok: u64,
    /// Requests that were sent and failed (error answer or timeout).
    pub errors: u64,
    /// Requests never sent: due while the client's queue was full, i.e.
    /// the server had fallen that far behind the schedule.
    pub dropped: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The request body every benchmark call sends: the Azure SDK's OE
/// report's SGX quote with its runtime data.
pub fn sgx_request(vectors: &Path) -> anyhow::Result<Vec<u8>> {
    request(vectors, "quote", 16)
}

/// The same evidence as `POST /attest/OpenEnclave` takes it (the whole
/// OE report).
pub fn oe_request(vectors: &Path) -> anyhow::Result<Vec<u8>> {
    request(vectors, "report", 0)
}

fn request(vectors: &Path, field: &str, skip: usize) -> anyhow::Result<Vec<u8>> {
    let oe = read(vectors, "sgx/azure-sdk-oe/oe_report_debug.bin")?;
    let runtime = read(vectors, "sgx/azure-sdk-oe/runtime_data.bin")?;
    anyhow::ensure!(oe.len() > 16, "the OE report vector is too short");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = serde_json::json!({
        field: b64.encode(&oe[skip..]),
        "runtimeData": {"data": b64.encode(&runtime), "dataType": "Binary"},
    });
    Ok(serde_json::to_vec(&body)?)
}

/// Imports the collateral the recorded quote needs through the first
/// primary node.
pub async fn import_collateral(cluster: &Cluster, vectors: &Path) -> anyhow::Result<()> {
    let node = cluster.primary_ids().first().copied().context("no primary node")?;
    for (name, rel) in COLLATERAL {
        let r = cluster
            .http()
            .put(format!("{}/admin/collateral/{name}", cluster.url(node)))
            .body(read(vectors, rel)?)
            .send()
            .await
            .context("importing collateral")?;
        anyhow::ensure!(r.status().is_success(), "importing {name}: {}", r.status());
    }
    Ok(())
}

fn read(vectors: &Path, rel: &str) -> anyhow::Result<Vec<u8>> {
    let p = vectors.join(rel);
    std::fs::read(&p).with_context(|| format!("reading vector {}", p.display()))
}

/// Attestations per second of the in-process pipeline on `threads`
/// threads for `duration`, signing with `alg`.
pub fn in_process_bound(
    vectors: &Path,
    scratch: &Path,
    alg: TokenAlg,
    threads: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let pinned = attest_node::evidence::pki::parse_rfc3339(PINNED).context("pinned time")?;
    let keys = Arc::new(KeyRing::open(scratch, 1, "eastus2", pinned, 3650).context("bench signing keys")?);
    let engine = Engine::new(
        EngineConfig {
            node_id: 1,
            region: "eastus2".into(),
            pinned_time: Some(pinned),
            collateral_grace_s: GRACE_S,
            max_evidence_bytes: 256 << 10,
            default_validity_minutes: 480,
            max_validity_minutes: 525_600,
        },
        TrustAnchors::builtin(),
        keys,
    );
    let mut state = ControlState::default();
    for (i, (name, rel)) in COLLATERAL.iter().enumerate() {
        let blob_b64 = base64::engine::general_purpose::STANDARD.encode(read(vectors, rel)?);
        state
            .collateral
            .insert((*name).into(), CollateralRecord { key: (*name).into(), blob_b64, version: i as u64 + 1 });
    }
    let provider = ProviderView {
        name: "bench".into(),
        trust_model: TrustModel::Aad,
        token_alg: alg,
        shared: false,
        location: "eastus2".into(),
        attest_requires_auth: false,
        issuer: "https://bench.eastus2.attest.localhost".into(),
    };
    let body = sgx_request(vectors)?;
    // One call first: it must succeed, and it builds the collateral cache.
    engine
        .attest(&state, &provider, AttestationType::SgxEnclave, &body, pinned)
        .map_err(|e| anyhow::anyhow!("in-process attest failed: {e}"))?;
    let stop = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    if engine.attest(&state, &provider, AttestationType::SgxEnclave, &body, pinned).is_ok() {
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    Ok(ops.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// `POST {url}/attest/SgxEnclave` expecting a token.
fn attest_op(http: reqwest::Client, url: String, body: Arc<Vec<u8>>) -> Op {
    Arc::new(move |_, _| {
        let http = http.clone();
        let url = url.clone();
        let body = body.clone();
        Box::pin(async move {
            let r =
                http.post(url).header("content-type", "application/json").body(body.as_ref().clone()).send().await?;
            if !r.status().is_success() {
                bail!("status {}", r.status());
            }
            let v: serde_json::Value = r.json().await?;
            anyhow::ensure!(v["token"].is_string(), "no token in the answer");
            Ok(())
        })
    })
}

/// Requests scheduled at `rate`/s for `duration`; latency from the
/// scheduled start, so time spent waiting at the client counts too (no
/// coordinated omission). At most `connections` requests are on the wire
/// at once, like a client with a fixed connection pool: a burst beyond it
/// waits in the client's queue instead of opening new TLS connections,
/// whose handshakes would add load exactly when the server is behind.
/// More than `max_queued` requests waiting means the server has fallen far
/// behind: further ones are dropped (counted) rather than queued without bound.
pub async fn open_loop(op: Op, rate: f64, duration: Duration, connections: usize, max_queued: usize) -> OpenLoopResult {
    let rate = rate.max(1.0);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let total = (duration.as_secs_f64() * rate) as u64;
    let on_wire = Arc::new(tokio::sync::Semaphore::new(connections.max(1)));
    let admitted = Arc::new(tokio::sync::Semaphore::new(max_queued.max(connections).max(1)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<f64, ()>>();
    let mut sent = 0u64;
    let mut dropped = 0u64;
    for n in 0..total {
        let due = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due).await;
        let Ok(admission) = admitted.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        sent += 1;
        let op = op.clone();
        let tx = tx.clone();
        let on_wire = on_wire.clone();
        tokio::spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(30), async {
                let _conn = on_wire.acquire_owned().await.map_err(anyhow::Error::from)?;
                op(n, 0).await
            })
            .await;
            let lat = due.elapsed().as_secs_f64() * 1000.0;
            let _ = tx.send(if matches!(r, Ok(Ok(()))) { Ok(lat) } else { Err(()) });
            drop(admission);
        });
    }
    drop(tx);
    let mut lat = Vec::new();
    let mut errors = 0;
    while let Some(r) = rx.recv().await {
        match r {
            Ok(l) => lat.push(l),
            Err(()) => errors += 1,
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let pct = |p: f64| crate::bench::percentile(&lat, p);
    OpenLoopResult {
        target_rate: rate,
        sent: sent + dropped,
        ok: lat.len() as u64,
        errors,
        dropped,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: lat.last().copied().unwrap_or(f64::NAN),
    }
}

/// The whole benchmark: a fresh local cluster under `dir`, one provider
/// per algorithm, then bound, closed loop and open loop per algorithm.
/// `split`: run the node under test and the rest on separate CPUs.
pub async fn run(
    vectors: PathBuf,
    dir: PathBuf,
    clients: usize,
    seconds: u64,
    algs: &[TokenAlg],
    split: Option<CoreSplit>,
) -> anyhow::Result<Vec<AttestBenchResult>> {
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let body = Arc::new(sgx_request(&vectors)?);
    let threads = match &split {
        Some(sp) => sp.node_cpus,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
    };
    let me = std::process::id();
    let duration = Duration::from_secs(seconds);

    let mut spec = ClusterSpec::local(dir.join("cluster"));
    spec.pinned_verification_time = Some(PINNED.into());
    spec.collateral_grace_s = GRACE_S;
    // Tokens signed per request must not be throttled by the node-wide or
    // per-provider limits at this concurrency.
    spec.extra_toml = format!(
        "[limits]\nmax_concurrent_requests = {}\nmax_concurrent_attest_per_provider = {}\nattest_workers = {}\n",
        clients * 4 + 64,
        clients * 4 + 64,
        // The node is moved to its CPUs after it started (and sized its
        // worker count to the whole machine): say how many it will have.
        split.as_ref().map(|sp| sp.node_cpus).unwrap_or(0),
    );
    eprintln!("starting a local 3 + 2 cluster under {} ...", dir.display());
    let cluster = Cluster::launch(spec, Duration::from_secs(120)).await?;
    // A follower: the leader's heartbeats and replication would be charged
    // to the HTTP figure but not to the bound.
    let leader = match cluster.health(1).await {
        Ok((_, body)) => body["leader"].as_u64(),
        Err(_) => None,
    };
    let node = cluster.primary_ids().into_iter().find(|id| Some(*id) != leader).unwrap_or(1);
    if let Some(sp) = &split {
        for (id, n) in &cluster.nodes {
            if let Some(pid) = n.pid() {
                pin(pid, if *id == node { &sp.node } else { &sp.rest })?;
            }
        }
        eprintln!("cores split: node {node} on CPUs {}, clients and the other nodes on {}", sp.node, sp.rest);
    }
    import_collateral(&cluster, &vectors).await?;
    let mut out = Vec::new();
    for alg in algs {
        let provider = format!("bench{}", alg.to_string().to_ascii_lowercase());
        let r = cluster
            .http()
            .put(format!("{}/providers/{provider}", cluster.url(node)))
            .json(&serde_json::json!({"trustModel": "AAD", "tokenSigningAlgorithm": alg.to_string()}))
            .send()
            .await
            .context("creating the bench provider")?;
        anyhow::ensure!(r.status().is_success(), "creating {provider}: {}", r.status());
        cluster.wait_converged(&cluster.ids(), 0, Duration::from_secs(30)).await?;

        eprintln!("{alg}: in-process bound on {threads} threads for {seconds} s ...");
        let scratch = dir.join(format!("bound-{provider}"));
        let v = vectors.clone();
        let a = *alg;
        // The bound runs on the node's CPUs (the whole bench process is
        // moved there for it, and back to the client CPUs after).
        if let Some(sp) = &split {
            pin(me, &sp.node)?;
        }
        let bound = tokio::task::spawn_blocking(move || in_process_bound(&v, &scratch, a, threads, duration))
            .await
            .context("bound thread")??;
        if let Some(sp) = &split {
            pin(me, &sp.rest)?;
        }

        let url = format!("{}/providers/{provider}/attest/SgxEnclave", cluster.url(node));
        let op = attest_op(cluster.http().clone(), url, body.clone());
        // The call must work before it is measured.
        op(0, 0).await.context("a first attest call")?;
        eprintln!("{alg}: {clients} closed-loop clients for {seconds} s ...");
        let spec = LoadSpec {
            clients,
            duration,
            warmup: Duration::from_secs(2),
            value_bytes: body.len(),
            servers: cluster.nodes.get(&node).and_then(|n| n.pid()).into_iter().collect(),
            think: Duration::ZERO,
        };
        let closed = run_load(&format!("attestd SgxEnclave {alg}"), &spec, op.clone()).await;
        let rate = closed.ops_per_s * 0.8;
        eprintln!("{alg}: open loop at {rate:.0}/s (80 % of peak) for {seconds} s ...");
        let open = open_loop(op, rate, duration, clients, clients * 16).await;
        out.push(AttestBenchResult {
            alg: alg.to_string(),
            bound_ops_per_s: bound,
            bound_threads: threads,
            cores: split.as_ref().map(|sp| format!("{} / {}", sp.node, sp.rest)).unwrap_or_else(|| "shared".into()),
            closed,
            open_rate: rate,
            open,
        });
    }
    Ok(out)
}

/// Markdown table of the results.
pub fn markdown(results: &[AttestBenchResult]) -> String {
    let mut s = String::from(
        "| alg | CPUs node / rest | bound (in-process, ops/s) | HTTP peak (req/s) | peak / bound | p50 @ peak (ms) | p99 @ peak (ms) | open-loop rate (req/s) | p50 @ 80 % (ms) | p99 @ 80 % (ms) | failed | dropped |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in results {
        s.push_str(&format!(
            "| {} | {} | {:.0} ({} threads) | {:.0} | {:.0} % | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {} | {} |\n",
            r.alg,
            r.cores,
            r.bound_ops_per_s,
            r.bound_threads,
            r.closed.ops_per_s,
            100.0 * r.closed.ops_per_s / r.bound_ops_per_s.max(1e-9),
            r.closed.p50_ms,
            r.closed.p99_ms,
            r.open.target_rate,
            r.open.p50_ms,
            r.open.p99_ms,
            r.closed.errors + r.open.errors,
            r.open.dropped,
        ));
    }
    s
}
