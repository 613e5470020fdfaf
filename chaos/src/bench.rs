//! Control-plane write benchmark: closed-loop clients against attestd or,
//! with the same load generator, against a local etcd cluster — so the two
//! are measured in one run, on one machine, with one tool.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use serde::Serialize;

/// Shape of one run.
#[derive(Clone, Debug, Serialize)]
pub struct LoadSpec {
    pub clients: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub value_bytes: usize,
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoadResult {
    pub target: String,
    pub clients: usize,
    pub value_bytes: usize,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LoadResult {
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            self.target,
            self.clients,
            self.value_bytes,
            self.ops_per_s,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms,
            self.errors
        )
    }
}

/// One request of the workload; returns Ok(()) when acknowledged.
pub type Op = Arc<dyn Fn(u64, usize) -> futures::future::BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// Runs `spec.clients` closed-loop clients calling `op` with a unique
/// sequence number and client index; latencies after the warm-up count.
pub async fn run_load(target: &str, spec: &LoadSpec, op: Op) -> LoadResult {
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..spec.clients {
        let op = op.clone();
        let seq = seq.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < end {
                let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let t0 = Instant::now();
                let ok = tokio::time::timeout(Duration::from_secs(30), op(n, client)).await;
                let counted = t0 >= measure_from;
                match ok {
                    Ok(Ok(())) if counted => lat.push(t0.elapsed().as_secs_f64() * 1000.0),
                    Ok(Ok(())) => {}
                    _ if counted => errors += 1,
                    _ => {}
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[i.min(all.len() - 1)]
    };
    let seconds = spec.duration.as_secs_f64();
    LoadResult {
        target: target.into(),
        clients: spec.clients,
        value_bytes: spec.value_bytes,
        ops: all.len() as u64,
        errors,
        seconds,
        ops_per_s: all.len() as f64 / seconds,
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        max_ms: all.last().copied().unwrap_or(f64::NAN),
    }
}

/// What the WAN emulator really adds to a round trip: the p50 of echo round
/// trips of `bytes` through a link of `controller` with the cluster's
/// one-way latency, minus the p50 of the same exchange straight over
/// loopback (`(direct_ms, through_link_ms)`). The proxy's own reads, queue
/// and writes cost a few hundred microseconds on top of the nominal RTT;
/// that is charged to the system under test, so the bench reports it.
pub async fn emulated_rtt(
    controller: &crate::wan::WanController,
    one_way_ms: u64,
    bytes: usize,
    samples: usize,
) -> anyhow::Result<(f64, f64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let shape = crate::wan::Shape { latency_ms: one_way_ms, ..Default::default() };
    let cfg = crate::wan::LinkConfig::new("bench-rtt-probe", "127.0.0.1:0".parse()?, &echo_addr.to_string())
        .with_conditions(crate::wan::LinkConditions::symmetric(shape));
    let link = controller.add_link(cfg).await.map_err(|e| anyhow::anyhow!("starting the probe link: {e}"))?;
    let probe = |addr: std::net::SocketAddr| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let msg = vec![7u8; bytes];
        let mut back = vec![0u8; bytes];
        let mut lat = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t = Instant::now();
            s.write_all(&msg).await?;
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back)).await??;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lat.sort_by(f64::total_cmp);
        lat.get(lat.len() / 2).copied().ok_or_else(|| anyhow::anyhow!("no probe samples"))
    };
    let direct = probe(echo_addr).await;
    let through = probe(link.local_addr()).await;
    // The probe is not part of the cluster's WAN: leave no link behind.
    controller.remove_link(link.name());
    echo.abort();
    Ok((direct?, through?))
}

/// Policy writes to attestd: one provider, one policy per client (distinct
/// keys, as etcd gets distinct keys), `value_bytes` of text each.
pub fn attestd_policy_writes(http: reqwest::Client, urls: Vec<String>, provider: String, value_bytes: usize) -> Op {
    Arc::new(move |n, client| {
        let http = http.clone();
        let url = format!(
            "{}/providers/{provider}/policies/{}",
            urls[client % urls.len()],
            ["SgxEnclave", "OpenEnclave", "TdxVm", "SevSnpVm", "Tpm"][client % 5]
        );
        let body = value(n, value_bytes);
        Box::pin(async move {
            let r = http.put(url).header("content-type", "text/plain").body(body).send().await?;
            if !r.status().is_success() {
                bail!("status {}", r.status());
            }
            // Read the body: a dropped, unread HTTP/2 response is a stream
            // reset, and h2 closes a connection after 1024 of them.
            r.bytes().await?;
            Ok(())
        })
    })
}

/// `PUT` through etcd's v3 JSON gateway with the same value sizes.
pub fn etcd_puts(http: reqwest::Client, endpoints: Vec<String>, value_bytes: usize) -> Op {
    Arc::new(move |n, client| {
        let http = http.clone();
        let url = format!("{}/v3/kv/put", endpoints[client % endpoints.len()]);
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = serde_json::json!({"key": b64.encode(format!("bench/{client}")), "value": b64.encode(value(n, value_bytes))});
        Box::pin(async move {
            let r = http.post(url).json(&body).send().await?;
            if !r.status().is_success() {
                bail!("status {}", r.status());
            }
            r.bytes().await?;
            Ok(())
        })
    })
}

/// A valid policy of about `len` bytes (padded with a trailing comment),
/// unique per write: attestd compiles every policy it stores.
fn value(n: u64, len: usize) -> String {
    let mut s = format!("version=1.0; authorizationrules {{ => permit(); }}; issuancerules {{ }}; // write {n} ");
    while s.len() < len {
        s.push('x');
    }
    s
}

/// A 3-member etcd cluster on loopback (Debian's `etcd-server`).
pub struct Etcd {
    children: Vec<Child>,
    pub client_urls: Vec<String>,
    /// The client to use: trusts the cluster's CA when it serves TLS.
    pub http: reqwest::Client,
    _dir: PathBuf,
}

/// How the benchmark's etcd is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdSecurity {
    /// Plain HTTP for clients and peers (etcd's default).
    Plaintext,
    /// Configured like attestd: clients over TLS (server certificate), peers
    /// over mutual TLS, P-256 certificates from the same development PKI.
    Tls,
}

impl Etcd {
    pub async fn start(dir: &Path, security: EtcdSecurity) -> anyhow::Result<Self> {
        let bin = which("etcd").context("etcd not found: apt-get install etcd-server")?;
        let ports = crate::cluster::free_ports(6)?;
        let tls = security == EtcdSecurity::Tls;
        let scheme = if tls { "https" } else { "http" };
        let certs = dir.join("certs");
        if tls {
            let names: Vec<String> = (0..3).map(|i| format!("e{i}")).collect();
            attest_node::pki::generate(&certs, &names, &[]).context("generating etcd certificates")?;
        }
        let initial: Vec<String> = (0..3).map(|i| format!("e{i}={scheme}://127.0.0.1:{}", ports[2 * i + 1])).collect();
        let mut children = Vec::new();
        let mut client_urls = Vec::new();
        for i in 0..3 {
            let data = dir.join(format!("etcd-{i}"));
            std::fs::create_dir_all(&data)?;
            let client = format!("{scheme}://127.0.0.1:{}", ports[2 * i]);
            let peer = format!("{scheme}://127.0.0.1:{}", ports[2 * i + 1]);
            let log = std::fs::File::create(dir.join(format!("etcd-{i}.log")))?;
            let mut cmd = Command::new(&bin);
            cmd.args(["--name", &format!("e{i}"), "--data-dir"])
                .arg(&data)
                .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "attest-bench", "--log-level", "warn"]);
            if tls {
                let pem = certs.join(format!("e{i}.pem"));
                let key = certs.join(format!("e{i}.key"));
                let ca = certs.join("ca.pem");
                cmd.arg("--cert-file")
                    .arg(&pem)
                    .arg("--key-file")
                    .arg(&key)
                    .arg("--peer-cert-file")
                    .arg(&pem)
                    .arg("--peer-key-file")
                    .arg(&key)
                    .arg("--peer-trusted-ca-file")
                    .arg(&ca)
                    .arg("--peer-client-cert-auth");
            }
            let child = cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()?;
            children.push(child);
            client_urls.push(client);
        }
        let mut http = reqwest::Client::builder().pool_max_idle_per_host(256);
        if tls {
            let ca = std::fs::read(certs.join("ca.pem")).context("reading the etcd CA")?;
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&ca)?);
        }
        let http = http.build()?;
        // Started first so a failed start still kills the members (Drop).
        let etcd = Self { children, client_urls, http, _dir: dir.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = etcd.http.get(format!("{}/health", etcd.client_urls[0])).send().await;
            if let Ok(r) = r {
                if r.status().is_success() && r.text().await.unwrap_or_default().contains("true") {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("etcd ({security:?}) did not become healthy; logs in {}", dir.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(etcd)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// Which CPUs the system under test (a node, a proxy) gets, and which
/// everything else (load generator, other processes) gets.
#[derive(Debug, Clone)]
pub struct CoreSplit {
    pub node: String,
    pub rest: String,
    pub node_cpus: usize,
}

impl CoreSplit {
    /// First half of the CPUs for the system under test, the rest for
    /// everything else;
    /// `None` on a single CPU.
    pub fn halves() -> Option<Self> {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if n < 2 {
            return None;
        }
        let half = n / 2;
        Some(CoreSplit { node: format!("0-{}", half - 1), rest: format!("{half}-{}", n - 1), node_cpus: half })
    }
}

/// Pins every thread of `pid` to `cpus` (a `taskset` list); threads created
/// later inherit it from their creators.
pub fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let mut last = String::new();
    // A thread that exits while taskset walks the list fails the call
    // (blocking-pool threads come and go): try again.
    for _ in 0..5 {
        let out = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid.to_string()])
            .output()
            .context("running taskset (util-linux)")?;
        if out.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("taskset -a -p -c {cpus} {pid}: {last}")
}
