//! A local two-region attestd cluster as real processes: one data
//! directory, TLS material and config file per node under one root
//! directory, each node its own `attestd` process on loopback ports.
//!
//! Used by `attest-chaos up`, the drills and the integration tests. Nodes
//! are started, killed (SIGKILL), stopped (SIGTERM), paused (SIGSTOP) and
//! resumed (SIGCONT) individually or per region.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What to launch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// Root directory; created if missing. Holds `certs/`, `node-<id>/`.
    pub dir: PathBuf,
    pub primary_region: String,
    pub secondary_region: String,
    pub primary_nodes: usize,
    pub secondary_nodes: usize,
    /// Extra `[raft]` keys (timings), as TOML, for every node.
    pub raft_toml: String,
    /// Extra lines appended to every node config (e.g. `[limits]`).
    pub extra_toml: String,
    /// Serve TLS (and mutual TLS between nodes). On by default.
    pub tls: bool,
    /// Route all inter-region Raft traffic through userspace WAN links
    /// (`crate::wan`), so latency, loss and partitions can be injected.
    pub wan: bool,
    /// Initial one-way delay of every inter-region link, in milliseconds.
    pub wan_one_way_ms: u64,
    /// Verify evidence at this RFC 3339 time instead of the clock, so the
    /// recorded vectors (whose collateral has long expired) verify.
    pub pinned_verification_time: Option<String>,
    /// `evidence.collateral_grace_s` of every node.
    pub collateral_grace_s: u64,
    /// Nodes whose data directory is a tmpfs of this many MiB, mounted at
    /// launch (needs root), so a drill can fill a node's disk without
    /// touching the machine's. Unmounted when the cluster is dropped.
    #[serde(default)]
    pub small_disk_mb: BTreeMap<u64, u64>,
    /// Extra environment variables of every node process.
    #[serde(default)]
    pub node_env: BTreeMap<String, String>,
}

impl ClusterSpec {
    /// 3 + 2 nodes with timings suited to loopback on a small machine.
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            primary_region: "eastus2".into(),
            secondary_region: "centralus".into(),
            primary_nodes: 3,
            secondary_nodes: 2,
            raft_toml: "heartbeat_ms = 100\nelection_timeout_min_ms = 800\nelection_timeout_max_ms = 1200\nsecondary_election_factor = 2\nasync_after_ms = 3000\nwrite_timeout_ms = 10000\n".into(),
            extra_toml: String::new(),
            tls: true,
            wan: false,
            wan_one_way_ms: 0,
            pinned_verification_time: None,
            collateral_grace_s: 0,
            small_disk_mb: BTreeMap::new(),
            node_env: BTreeMap::new(),
        }
    }
}

/// The health-probe settings of the gateways the launcher starts.
#[derive(Clone, Debug)]
pub struct GatewayMonitor {
    pub interval: Duration,
    pub timeout: Duration,
    pub tolerated_failures: u32,
}

impl Default for GatewayMonitor {
    /// Probes every second, 500 ms timeout, one tolerated failure.
    fn default() -> Self {
        Self { interval: Duration::from_secs(1), timeout: Duration::from_millis(500), tolerated_failures: 1 }
    }
}

/// One node of the cluster.
#[derive(Debug)]
pub struct NodeHandle {
    pub id: u64,
    pub region: String,
    pub api_addr: String,
    pub raft_addr: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl NodeHandle {
    pub fn is_running(&mut self) -> bool {
        self.reap();
        self.child.is_some()
    }

    /// The exit status of a process that has exited, reported once: it is
    /// reaped (no zombie) and its pid forgotten, so no later signal can
    /// reach another process that reused the pid.
    pub fn reap(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.paused = false;
        Some(status)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

pub struct Cluster {
    pub spec: ClusterSpec,
    /// The inter-region links, when `spec.wan` is set.
    pub wan: Option<crate::wan::WanController>,
    pub nodes: BTreeMap<u64, NodeHandle>,
    pub bin: PathBuf,
    http: reqwest::Client,
    /// The Owner bearer token `http` sends (also for [`Cluster::load_client`]).
    owner_token: String,
    /// tmpfs mounted for [`ClusterSpec::small_disk_mb`], unmounted on drop.
    mounts: Vec<PathBuf>,
}

/// Finds the `attestd` binary: `$ATTESTD_BIN`, else next to the current
/// executable or its parent (covers `target/debug/` and `target/debug/deps/`).
pub fn find_attestd() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("ATTESTD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating current executable")?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let cand = d.join("attestd");
        if cand.is_file() {
            return Ok(cand);
        }
        dir = d.parent().map(Path::to_path_buf);
        if dir.as_ref().is_some_and(|p| p.ends_with("target") || p.parent().is_none()) {
            break;
        }
    }
    bail!("attestd binary not found; build it (cargo build --bins) or set ATTESTD_BIN")
}

/// Reserves `n` free loopback ports for the processes a test starts.
///
/// The ports come from *below* the kernel's ephemeral range
/// (`ip_local_port_range`), walked from a random start with a process-wide
/// cursor, each checked by binding it on every address: the ephemeral range
/// is where the kernel hands out ports for `bind(:0)` (the WAN links and
/// gateways of the same test) and for the source side of every outgoing
/// connection, so a port reserved there and released could be taken again
/// before the node that was told to use it binds it (a CI run lost a node
/// to exactly that). Falls back to kernel-chosen ports when the ephemeral
/// range leaves no room below it.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u32>().ok()))
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.min(65_535));
    if high <= low + 1_000 {
        let listeners: Vec<TcpListener> =
            (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>().context("reserving ports")?;
        return listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect();
    }
    let span = high - low;
    if CURSOR.load(Ordering::Relaxed) == 0 {
        // A different start per process: concurrent test processes walk
        // different stretches of the range.
        let _ = CURSOR.compare_exchange(0, rand::random::<u32>() % span + 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    // Held until all are found, so one call never returns a port twice.
    let mut held: Vec<TcpListener> = Vec::with_capacity(n);
    let mut tries = 0u32;
    while held.len() < n {
        tries += 1;
        if tries > span {
            bail!("no {n} free ports in {low}..{high}");
        }
        let port = (low + CURSOR.fetch_add(1, Ordering::Relaxed) % span) as u16;
        // 0.0.0.0 also conflicts with anything on 127.0.0.1 (and with
        // Docker's published host ports); the loopback bind is what is kept.
        if TcpListener::bind(("0.0.0.0", port)).is_err() {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

pub fn http_client(ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    Ok(client_builder(ca)?.build()?)
}

/// The client settings every harness client shares: rustls, bounded
/// timeouts, and `ca` (the cluster's dev CA) trusted when given.
fn client_builder(ca: Option<&Path>) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(10));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    Ok(b)
}

impl Cluster {
    /// Writes certificates and configs and starts every node; returns once
    /// every node reports healthy (bounded by `ready_within`).
    pub async fn launch(spec: ClusterSpec, ready_within: Duration) -> anyhow::Result<Self> {
        let bin = find_attestd()?;
        std::fs::create_dir_all(&spec.dir).with_context(|| format!("creating {}", spec.dir.display()))?;
        let total = spec.primary_nodes + spec.secondary_nodes;
        let ports = free_ports(total * 2)?;
        let mut members = Vec::new();
        for i in 0..total {
            let id = (i + 1) as u64;
            let region = if i < spec.primary_nodes { &spec.primary_region } else { &spec.secondary_region };
            members.push((
                id,
                region.clone(),
                format!("127.0.0.1:{}", ports[2 * i]),
                format!("127.0.0.1:{}", ports[2 * i + 1]),
            ));
        }
        // Also without TLS: dev-pki creates the dev token issuer.
        let certs = spec.dir.join("certs");
        let names: Vec<String> = members.iter().map(|(id, ..)| format!("node-{id}")).collect();
        dev_pki(&bin, &certs, &names)?;
        // One WAN link per (destination node, source region): every node of
        // the other region dials this node's Raft port through it.
        let wan = if spec.wan { Some(crate::wan::WanController::new()) } else { None };
        let mut overrides: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        if let Some(w) = &wan {
            let shape = crate::wan::Shape { latency_ms: spec.wan_one_way_ms, ..Default::default() };
            for (id, region, raft, _) in &members {
                let from = if *region == spec.primary_region { &spec.secondary_region } else { &spec.primary_region };
                let cfg = crate::wan::LinkConfig::new(&format!("{from}->node-{id}"), "127.0.0.1:0".parse()?, raft)
                    .between(from, region)
                    .with_conditions(crate::wan::LinkConditions::symmetric(shape));
                let h = w.add_link(cfg).await.map_err(|e| anyhow!("starting WAN link: {e}"))?;
                overrides.entry(from.clone()).or_default().push((raft.clone(), h.local_addr().to_string()));
            }
        }
        let mut member_toml = String::new();
        for (id, region, raft, api) in &members {
            member_toml.push_str(&format!(
                "[[cluster.members]]\nid = {id}\nregion = \"{region}\"\nraft_addr = \"{raft}\"\napi_addr = \"{api}\"\n\n"
            ));
        }
        let mut nodes = BTreeMap::new();
        for (id, region, raft, api) in &members {
            let node_dir = spec.dir.join(format!("node-{id}"));
            std::fs::create_dir_all(&node_dir)?;
            let data_dir = node_dir.join("data");
            let tls = tls_toml(spec.tls, &certs, *id);
            let cluster_tail = format!("bootstrap = {}\n\n{member_toml}", *id == 1);
            let text = node_toml(&spec, *id, region, &data_dir, api, raft, &tls, &cluster_tail);
            let mut text = text;
            if let Some(list) = overrides.get(region) {
                text.push_str("[cluster.dial_overrides]\n");
                for (adv, dial) in list {
                    text.push_str(&format!("\"{adv}\" = \"{dial}\"\n"));
                }
            }
            let config = node_dir.join("attestd.toml");
            std::fs::write(&config, text)?;
            nodes.insert(
                *id,
                NodeHandle {
                    id: *id,
                    region: region.clone(),
                    api_addr: api.clone(),
                    raft_addr: raft.clone(),
                    config,
                    data_dir,
                    log: node_dir.join("attestd.log"),
                    child: None,
                    paused: false,
                },
            );
        }
        let owner_token = dev_token(&bin, &certs, "Owner")?;
        let http = authed_client(spec.tls.then(|| certs.join("ca.pem")).as_deref(), &owner_token)?;
        let mut cluster = Cluster { spec, wan, nodes, bin, http, owner_token, mounts: Vec::new() };
        for (id, mb) in cluster.spec.small_disk_mb.clone() {
            let dir = cluster.nodes.get(&id).map(|n| n.data_dir.clone()).ok_or_else(|| anyhow!("no node {id}"))?;
            mount_tmpfs(&dir, mb)?;
            cluster.mounts.push(dir);
        }
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        for id in &ids {
            cluster.start(*id)?;
        }
        let deadline = Instant::now() + ready_within;
        for id in &ids {
            cluster.wait_healthy(*id, deadline.saturating_duration_since(Instant::now())).await?;
        }
        Ok(cluster)
    }

    /// HTTPS client trusting the cluster CA, sending an Owner bearer token.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A client for load generation, like [`Cluster::http`] but its own
    /// pool; with `http1` it speaks HTTP/1.1 only (one connection per
    /// concurrent client) instead of multiplexing over one HTTP/2
    /// connection per node.
    pub fn load_client(&self, http1: bool) -> anyhow::Result<reqwest::Client> {
        let ca = self.spec.tls.then(|| self.ca_path());
        let mut b = client_builder(ca.as_deref())?
            .default_headers(bearer_headers(&self.owner_token)?)
            .pool_max_idle_per_host(256);
        if http1 {
            b = b.http1_only();
        }
        Ok(b.build()?)
    }

    /// A bearer token for `role` (`Reader`, `Contributor`, `Owner`) from
    /// the cluster's dev issuer.
    pub fn bearer(&self, role: &str) -> anyhow::Result<String> {
        dev_token(&self.bin, &self.spec.dir.join("certs"), role)
    }

    /// Name of `region`'s shared provider (`shared` + the region's letters).
    pub fn shared_provider(&self, region: &str) -> String {
        let tail: String =
            region.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
        format!("shared{tail}").chars().take(24).collect()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.spec.dir.join("certs").join("ca.pem")
    }

    pub fn url(&self, id: u64) -> String {
        let scheme = if self.spec.tls { "https" } else { "http" };
        let addr = self.nodes.get(&id).map(|n| n.api_addr.as_str()).unwrap_or("127.0.0.1:1");
        format!("{scheme}://{addr}")
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn region_ids(&self, region: &str) -> Vec<u64> {
        self.nodes.values().filter(|n| n.region == region).map(|n| n.id).collect()
    }

    /// Process ids of the running nodes (the WAN emulator and gateways,
    /// if any, are not nodes).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.values().filter_map(NodeHandle::pid).collect()
    }

    pub fn primary_ids(&self) -> Vec<u64> {
        self.region_ids(&self.spec.primary_region.clone())
    }

    pub fn secondary_ids(&self) -> Vec<u64> {
        self.region_ids(&self.spec.secondary_region.clone())
    }

    fn node_mut(&mut self, id: u64) -> anyhow::Result<&mut NodeHandle> {
        self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))
    }

    /// Starts (or restarts) a node process; its output goes to its log file.
    pub fn start(&mut self, id: u64) -> anyhow::Result<()> {
        let bin = self.bin.clone();
        let env = self.spec.node_env.clone();
        let n = self.node_mut(id)?;
        if n.is_running() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&n.log)?;
        let err = log.try_clone()?;
        let child = Command::new(&bin)
            .arg("run")
            .arg("--config")
            .arg(&n.config)
            .env("RUST_LOG", std::env::var("ATTESTD_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()))
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        n.child = Some(child);
        n.paused = false;
        Ok(())
    }

    fn signal(&mut self, id: u64, sig: i32) -> anyhow::Result<()> {
        let n = self.node_mut(id)?;
        if let Some(pid) = n.pid() {
            let rc = send_signal(pid, sig);
            if rc != 0 && sig != libc::SIGCONT {
                tracing::debug!(id, sig, "kill returned {rc}");
            }
        }
        Ok(())
    }

    /// SIGKILL: the process dies without flushing anything.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, libc::SIGKILL)?;
        let n = self.node_mut(id)?;
        if let Some(mut c) = n.child.take() {
            let _ = c.wait();
        }
        n.paused = false;
        Ok(())
    }

    /// SIGTERM and wait (bounded) for a clean exit, then SIGKILL.
    pub fn stop(&mut self, id: u64) -> anyhow::Result<()> {
        if self.node_mut(id)?.paused {
            self.resume(id)?;
        }
        self.signal(id, libc::SIGTERM)?;
        let n = self.node_mut(id)?;
        if let Some(mut c) = n.child.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    pub fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, libc::SIGSTOP)?;
        self.node_mut(id)?.paused = true;
        Ok(())
    }

    pub fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, libc::SIGCONT)?;
        self.node_mut(id)?.paused = false;
        Ok(())
    }

    pub fn kill_region(&mut self, region: &str) -> anyhow::Result<()> {
        for id in self.region_ids(region) {
            self.kill(id)?;
        }
        Ok(())
    }

    pub fn start_region(&mut self, region: &str) -> anyhow::Result<()> {
        for id in self.region_ids(region) {
            self.start(id)?;
        }
        Ok(())
    }

    /// Node `id`'s `/metrics` text (empty if it does not answer).
    pub async fn metrics_text(&self, id: u64) -> String {
        match self.http.get(format!("{}/metrics", self.url(id))).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub async fn get_json(&self, id: u64, path: &str) -> anyhow::Result<(u16, Value)> {
        let resp = self.http.get(format!("{}{}", self.url(id), path)).send().await?;
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    pub async fn health(&self, id: u64) -> anyhow::Result<(u16, Value)> {
        self.get_json(id, "/health").await
    }

    /// Waits until `/health` answers 200 (bounded).
    /// Fails at once (with the node's log) if its process has exited,
    /// instead of waiting out the deadline.
    pub async fn wait_healthy(&self, id: u64, within: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + within;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            match self.health(id).await {
                Ok((200, body)) => return Ok(body),
                Ok((code, body)) => last = format!("{code} {body}"),
                Err(e) => last = e.to_string(),
            }
            if self.exited(id) {
                bail!("node {id} exited; log: {}", self.tail_log(id));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("node {id} not healthy within {within:?}: {last}; log: {}", self.tail_log(id))
    }

    /// True if the node's process was started and has since exited (an
    /// unreaped child is a zombie).
    fn exited(&self, id: u64) -> bool {
        let Some(pid) = self.nodes.get(&id).and_then(NodeHandle::pid) else { return false };
        process_state(pid).is_none_or(|state| state == 'Z')
    }

    /// Waits until `pred` holds for the node's `/health` body (bounded).
    pub async fn wait_health_where(
        &self,
        id: u64,
        within: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + within;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok((_, body)) = self.health(id).await {
                if pred(&body) {
                    return Ok(body);
                }
                last = body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("node {id}: '{what}' did not hold within {within:?}; last health: {last}")
    }

    /// The node's applied state (`/admin/state`).
    pub async fn state(&self, id: u64) -> anyhow::Result<Value> {
        let (code, body) = self.get_json(id, "/admin/state").await?;
        if code != 200 {
            bail!("node {id} /admin/state answered {code}: {body}");
        }
        Ok(body)
    }

    /// Waits until every listed node reports the same state digest and at
    /// least `min_index` applied; returns the digest.
    pub async fn wait_converged(&self, ids: &[u64], min_index: u64, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        let mut last = Vec::new();
        while Instant::now() < deadline {
            let mut digests = Vec::new();
            for id in ids {
                match self.state(*id).await {
                    Ok(s) => digests.push((
                        *id,
                        s["digest"].as_str().unwrap_or("").to_string(),
                        s["appliedIndex"].as_u64().unwrap_or(0),
                    )),
                    Err(_) => digests.push((*id, String::new(), 0)),
                }
            }
            let first = digests[0].1.clone();
            if !first.is_empty() && digests.iter().all(|(_, d, i)| *d == first && *i >= min_index) {
                return Ok(first);
            }
            last = digests;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("nodes did not converge within {within:?}: {last:?}")
    }

    /// Reaps the nodes that exited since the last call: (id, status).
    pub fn reap_exited(&mut self) -> Vec<(u64, ExitStatus)> {
        self.nodes.values_mut().filter_map(|n| Some((n.id, n.reap()?))).collect()
    }

    pub fn tail_log(&self, id: u64) -> String {
        let Some(n) = self.nodes.get(&id) else { return String::new() };
        let text = std::fs::read_to_string(&n.log).unwrap_or_default();
        // An error returned from main ends in a backtrace when RUST_BACKTRACE
        // is set (CI); the message that matters comes before it.
        let text = match text.rfind("Stack backtrace:") {
            Some(at) => &text[..at],
            None => &text[..],
        };
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Stops every node (SIGKILL; tests do not need a clean shutdown).
    pub fn shutdown(&mut self) {
        for id in self.ids() {
            let _ = self.kill(id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
        for m in self.mounts.drain(..) {
            // Lazy: a process that has not exited yet must not keep the mount alive.
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

/// Mounts a `mb`-MiB tmpfs at `dir` (created if missing).
fn mount_tmpfs(dir: &Path, mb: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mb}m,mode=0700"), "tmpfs"])
        .arg(dir)
        .output()
        .context("running mount")?;
    if !out.status.success() {
        bail!(
            "mounting a {mb} MiB tmpfs at {} failed (needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn send_signal(pid: u32, sig: i32) -> i32 {
    // std has no way to send SIGSTOP/SIGCONT/SIGTERM; `kill(1)` keeps this
    // crate free of `unsafe`.
    match Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => 0,
        _ => -1,
    }
}

/// The state letter of process `pid` from `/proc/<pid>/stat` (`R`, `S`,
/// … ; `Z` for an exited child not yet reaped), `None` when there is no
/// such process.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state …`: comm may hold spaces and ')', the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A running `attest-gateway` process in front of the cluster.
pub struct GatewayHandle {
    pub region: String,
    pub addr: String,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl GatewayHandle {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status once the process has exited (and is reaped).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cluster {
    /// Adds a brand-new node to `region`: it starts with an empty data
    /// directory and `cluster.join` pointing at the existing members, and
    /// is admitted as a learner, then (if `voter`) promoted to voter.
    /// Not used with `spec.wan` (the new node's WAN links are not created).
    pub fn add_node(&mut self, region: &str, voter: bool) -> anyhow::Result<u64> {
        let id = self.nodes.keys().max().copied().unwrap_or(0) + 1;
        let ports = free_ports(2)?;
        let (raft, api) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
        let certs = self.spec.dir.join("certs");
        if self.spec.tls {
            dev_pki(&self.bin, &certs, &[format!("node-{id}")])?;
        }
        let node_dir = self.spec.dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&node_dir)?;
        let data_dir = node_dir.join("data");
        let tls = tls_toml(self.spec.tls, &certs, id);
        let seeds: Vec<String> = self.nodes.values().map(|n| format!("\"{}\"", n.raft_addr)).collect();
        let cluster_tail = format!("join = [{}]\njoin_as_voter = {voter}\n", seeds.join(", "));
        let text = node_toml(&self.spec, id, region, &data_dir, &api, &raft, &tls, &cluster_tail);
        let config = node_dir.join("attestd.toml");
        std::fs::write(&config, text)?;
        self.nodes.insert(
            id,
            NodeHandle {
                id,
                region: region.to_string(),
                api_addr: api,
                raft_addr: raft,
                config,
                data_dir,
                log: node_dir.join("attestd.log"),
                child: None,
                paused: false,
            },
        );
        self.start(id)?;
        Ok(id)
    }

    /// Starts one gateway per region (stateless; each probes on its own),
    /// priority routing with the primary region first, TLS with a
    /// certificate of the cluster's dev CA. Probes every second and
    /// tolerates one failure: the local-cluster setting, not Traffic
    /// Manager's 30 s default.
    pub async fn start_gateways(&self, within: Duration) -> anyhow::Result<Vec<GatewayHandle>> {
        self.start_gateways_with(within, &GatewayMonitor::default()).await
    }

    /// [`Self::start_gateways`] with the gateways' monitor settings given.
    pub async fn start_gateways_with(
        &self,
        within: Duration,
        monitor: &GatewayMonitor,
    ) -> anyhow::Result<Vec<GatewayHandle>> {
        let bin = self.bin.with_file_name("attest-gateway");
        if !bin.is_file() {
            bail!("attest-gateway binary not found next to {}", self.bin.display());
        }
        let certs = self.spec.dir.join("certs");
        let regions = [self.spec.primary_region.clone(), self.spec.secondary_region.clone()];
        let names: Vec<String> = regions.iter().map(|r| format!("gateway-{r}")).collect();
        dev_pki(&self.bin, &certs, &names)?;
        let ports = free_ports(regions.len())?;
        let endpoint = |name: &str, prio: u32| {
            let nodes: Vec<String> =
                self.nodes.values().filter(|n| n.region == name).map(|n| format!("\"{}\"", n.api_addr)).collect();
            format!(
                "[[endpoints]]\nname = \"{name}\"\npriority = {prio}\nbalance = \"least-requests\"\nnodes = [{}]\n\n",
                nodes.join(", ")
            )
        };
        let mut handles = Vec::new();
        for (i, region) in regions.iter().enumerate() {
            let dir = self.spec.dir.join(format!("gateway-{region}"));
            std::fs::create_dir_all(&dir)?;
            let addr = format!("127.0.0.1:{}", ports[i]);
            let text = format!(
                "[profile]\nname = \"attestd-local\"\nrouting_method = \"priority\"\n\n\
                 [listen]\naddress = \"{addr}\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n\n\
                 [upstream]\nscheme = \"https\"\nca_file = \"{ca}\"\nconnect_timeout = \"500ms\"\n\n\
                 [monitor]\nprotocol = \"HTTPS\"\npath = \"/health\"\ninterval = \"{interval}ms\"\ntimeout = \"{timeout}ms\"\ntolerated_failures = {tolerated}\n\n{}{}",
                endpoint(&self.spec.primary_region, 1),
                endpoint(&self.spec.secondary_region, 2),
                cert = certs.join(format!("gateway-{region}.pem")).display(),
                key = certs.join(format!("gateway-{region}.key")).display(),
                ca = certs.join("ca.pem").display(),
                interval = monitor.interval.as_millis(),
                timeout = monitor.timeout.as_millis(),
                tolerated = monitor.tolerated_failures,
            );
            let config = dir.join("gateway.toml");
            std::fs::write(&config, text)?;
            let log = dir.join("gateway.log");
            let f = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
            let child = Command::new(&bin)
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(f.try_clone()?)
                .stderr(f)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            handles.push(GatewayHandle { region: region.clone(), addr, config, log, child });
        }
        let deadline = Instant::now() + within;
        for g in &handles {
            loop {
                let ok = self
                    .http
                    .get(format!("https://{}/gateway/status", g.addr))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("gateway {} did not come up; log {}", g.region, g.log.display());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(handles)
    }
}

/// The `[tls]` section of node `id`'s config (empty when TLS is off).
fn tls_toml(enabled: bool, certs: &Path, id: u64) -> String {
    if !enabled {
        return String::new();
    }
    format!(
        "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        certs.join("ca.pem").display(),
        certs.join(format!("node-{id}.pem")).display(),
        certs.join(format!("node-{id}.key")).display()
    )
}

/// Mints a dev bearer token for `role` with `attestd dev-token`.
pub fn dev_token(bin: &Path, certs: &Path, role: &str) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(["dev-token", "--role", role, "--subject", "attest-chaos", "--dir"])
        .arg(certs)
        .output()
        .context("running attestd dev-token")?;
    if !out.status.success() {
        bail!("attestd dev-token failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// [`http_client`] that sends `Authorization: Bearer <token>` on every request.
pub fn authed_client(ca: Option<&Path>, token: &str) -> anyhow::Result<reqwest::Client> {
    Ok(client_builder(ca)?.default_headers(bearer_headers(token)?).build()?)
}

fn bearer_headers(token: &str) -> anyhow::Result<reqwest::header::HeaderMap> {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).context("token header")?;
    v.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, v);
    Ok(headers)
}

/// Runs `attestd dev-pki` for `names` (the CA under `certs` is created once
/// and reused).
pub fn dev_pki(bin: &Path, certs: &Path, names: &[String]) -> anyhow::Result<()> {
    let mut cmd = Command::new(bin);
    cmd.arg("dev-pki").arg("--out").arg(certs);
    for n in names {
        cmd.arg("--node").arg(n);
    }
    let out = cmd.output().context("running attestd dev-pki")?;
    if !out.status.success() {
        bail!("attestd dev-pki failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A node's config file; `cluster_tail` ends the `[cluster]` section
/// (bootstrap members or join seeds).
#[allow(clippy::too_many_arguments)]
fn node_toml(
    spec: &ClusterSpec,
    id: u64,
    region: &str,
    data_dir: &Path,
    api: &str,
    raft: &str,
    tls: &str,
    cluster_tail: &str,
) -> String {
    let mut evidence = format!("[evidence]\ncollateral_grace_s = {}\n", spec.collateral_grace_s);
    if let Some(t) = &spec.pinned_verification_time {
        evidence.push_str(&format!("pinned_time = \"{t}\"\n"));
    }
    let auth = format!(
        "[[auth.issuers]]\nissuer = \"https://dev-issuer.attestd.local\"\naudience = [\"https://attest.azure.net\"]\n\
         jwks_path = \"{}\"\n",
        spec.dir.join("certs").join("auth-jwks.json").display()
    );
    format!(
        "[node]\nid = {id}\nregion = \"{region}\"\ndata_dir = \"{data}\"\n\n\
         [listen]\napi = \"{api}\"\nraft = \"{raft}\"\n\n\
         {tls}\n[raft]\n{raft_toml}\n{evidence}\n{auth}\n{extra}\n\
         [cluster]\nprimary_region = \"{p}\"\nsecondary_region = \"{s}\"\n{cluster_tail}",
        data = data_dir.display(),
        raft_toml = spec.raft_toml,
        extra = spec.extra_toml,
        p = spec.primary_region,
        s = spec.secondary_region,
    )
}

/// Sum of a Prometheus metric's samples in `metrics` (a `/metrics` text)
/// whose labels contain `labels` ("" for all).
pub fn metric_sum(metrics: &str, name: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}
