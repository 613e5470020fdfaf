//! Helpers shared by the cluster-level integration tests in `tests/tests/`.
//!
//! Every test launches real `attestd` processes (RocksDB on disk, mutual
//! TLS, loopback sockets) through `attest_chaos::cluster` and talks to them
//! over HTTPS like any client would.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use attest_chaos::cluster::{Cluster, ClusterSpec};
use serde_json::Value;

/// Launches the default 3 + 2 cluster in a fresh temporary directory.
/// `tweak` may adjust the spec (timings, limits) first.
pub async fn launch(name: &str, tweak: impl FnOnce(&mut ClusterSpec)) -> anyhow::Result<(Cluster, tempdir::Dir)> {
    let dir = tempdir::Dir::new(name)?;
    let mut spec = ClusterSpec::local(dir.path());
    tweak(&mut spec);
    let cluster = Cluster::launch(spec, Duration::from_secs(90)).await?;
    Ok((cluster, dir))
}

/// When the recorded vectors verify: the 2025-09-28 TCB info is current;
/// the QE identity and PCK CRL of the same bundle expired 74 days earlier,
/// inside the 90-day collateral grace the test clusters are configured with.
pub const PINNED: &str = "2025-10-01T00:00:00Z";
pub const GRACE_S: u64 = 90 * 86_400;

/// The shared evidence vectors (`ATTEST_VECTORS` overrides).
pub fn vectors() -> PathBuf {
    std::env::var_os("ATTEST_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"))
}

/// Unpadded base64url, as MAA's request fields carry evidence.
pub fn b64u(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The bytes of one vector file, by path relative to [`vectors`].
pub fn vector(rel: &str) -> Vec<u8> {
    let p = vectors().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Imports the SGX collateral the recorded quotes need, through node `id`.
pub async fn import_collateral(c: &Cluster, id: u64) {
    import_collateral_via(c.http(), &c.url(id)).await.expect("collateral imported");
}

/// Imports the SGX collateral the recorded quotes need through `base_url`
/// (a node or a gateway), with `http` sending an Owner token.
pub async fn import_collateral_via(http: &reqwest::Client, base_url: &str) -> anyhow::Result<()> {
    for (name, rel) in [
        ("sgx-qvl-bundle", "sgx/dcap-qvl/sgx_quote_collateral.json"),
        ("tcbinfo-00906ed50000", "sgx/azure-sdk-oe/tcbInfo-sgx-00906ed50000_2025-09-28.json"),
    ] {
        let r = http
            .put(format!("{base_url}/admin/collateral/{name}"))
            .body(vector(rel))
            .send()
            .await
            .with_context(|| format!("importing {name}"))?;
        let status = r.status();
        anyhow::ensure!(status.is_success(), "import {name}: {status} {}", r.text().await.unwrap_or_default());
    }
    Ok(())
}

/// A result of one control-plane write as a client sees it.
#[derive(Debug, Clone)]
pub struct WriteResult {
    pub status: u16,
    pub body: Value,
    pub elapsed: Duration,
}

impl WriteResult {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Creates a provider through node `id` with client request id `rid`.
pub async fn create_provider(c: &Cluster, id: u64, name: &str, rid: &str) -> anyhow::Result<WriteResult> {
    let started = Instant::now();
    let resp = c
        .http()
        .put(format!("{}/providers/{name}", c.url(id)))
        .header("x-ms-client-request-id", rid)
        .header("content-type", "application/json")
        .body(r#"{"trustModel":"AAD"}"#)
        .send()
        .await
        .context("sending create provider")?;
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    Ok(WriteResult { status, body, elapsed: started.elapsed() })
}

/// Stores a policy document through node `id`.
pub async fn set_policy(
    c: &Cluster,
    id: u64,
    provider: &str,
    ty: &str,
    doc: &str,
    rid: &str,
) -> anyhow::Result<WriteResult> {
    let started = Instant::now();
    let resp = c
        .http()
        .put(format!("{}/providers/{provider}/policies/{ty}", c.url(id)))
        .header("x-ms-client-request-id", rid)
        .header("content-type", "text/plain")
        .body(doc.to_string())
        .send()
        .await
        .context("sending set policy")?;
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    Ok(WriteResult { status, body, elapsed: started.elapsed() })
}

/// Node `id`'s status (`/admin/status`).
pub async fn status(c: &Cluster, id: u64) -> anyhow::Result<Value> {
    Ok(c.get_json(id, "/admin/status").await?.1)
}

/// Creates provider `name` through node `id`, retrying every refusal (a
/// 503 while a leader is elected or hands over) with the same request id —
/// applied at most once — until it is acknowledged; panics after `within`.
pub async fn create_until_ok(c: &Cluster, id: u64, name: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        match create_provider(c, id, name, &format!("rid-{name}")).await {
            Ok(r) if r.ok() => return r.body,
            Ok(r) => last = format!("{} {}", r.status, r.body),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("write {name} via node {id} never acknowledged: {last}");
}

/// The id of the current leader as seen by any reachable node.
pub async fn leader(c: &Cluster, among: &[u64], within: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        for id in among {
            if let Ok(s) = status(c, *id).await {
                if s["raft_role"] == "Leader" {
                    return Ok(*id);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no leader among {among:?} within {within:?}")
}

/// Minimal self-cleaning temporary directory (keeps the tree when the
/// `ATTEST_KEEP_TEST_DIRS` variable is set, for post-mortems).
pub mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(name: &str) -> anyhow::Result<Self> {
            let base = std::env::var_os("ATTEST_TEST_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
            let p = base.join(format!("attestd-{name}-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&p)?;
            Ok(Self(p))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            if std::env::var_os("ATTEST_KEEP_TEST_DIRS").is_none() {
                let _ = std::fs::remove_dir_all(&self.0);
            } else {
                eprintln!("kept test directory {}", self.0.display());
            }
        }
    }
}
