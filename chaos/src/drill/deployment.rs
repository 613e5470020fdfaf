//! What a drill runs against: the nodes and gateways (by URL), an HTTP
//! client that trusts them and carries an Owner token, and a fault
//! backend. [`Deployment::local`] launches a local 3 + 2 cluster with WAN
//! links and a gateway per region; [`Deployment::remote`] points at an
//! existing deployment by URL; [`Deployment::compose`] finds the compose
//! deployment of `deploy/` through compose itself (published ports, CA,
//! an Owner token) and injects faults with Docker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::cluster::{authed_client, Cluster, ClusterSpec, GatewayHandle};
use crate::faults::{
    ComposeTarget, DockerFaults, Fault, FaultError, FaultInjector, LocalFaults, COMPOSE_GATEWAYS, COMPOSE_PRIMARY_NODES,
};
use crate::wan::{LinkUpdate, WanControlClient};
use crate::workload::{Endpoint, VectorSet, COLLATERAL_GRACE_S, PINNED_TIME};

/// What the drill broke and has not repaired yet (heal undoes it).
#[derive(Debug, Default, Clone)]
pub struct Broken {
    pub down: BTreeSet<String>,
    pub paused: BTreeSet<String>,
    pub drained: BTreeSet<String>,
    pub disk_full: BTreeSet<String>,
    pub wan_cut: bool,
    pub wan_slow: bool,
}

pub struct Deployment {
    pub primary_region: String,
    pub secondary_region: String,
    pub nodes: Vec<Endpoint>,
    pub gateways: Vec<Endpoint>,
    /// Trusts the deployment's CA; sends an Owner bearer token.
    pub http: reqwest::Client,
    /// The provider attest calls go to (the primary region's shared provider).
    pub attest_provider: String,
    /// `None`: HTTP only (operator actions such as drain still work).
    pub faults: Option<Box<dyn FaultInjector>>,
    pub broken: Broken,
    /// Timing of the deployment's nodes, for waits and check budgets.
    pub async_after: Duration,
    /// Raft heartbeat interval; openraft also times AppendEntries out after it.
    pub heartbeat: Duration,
    /// The gateways reach the other region's nodes through the WAN (the
    /// compose deployment), so cutting the WAN also cuts data-plane calls
    /// that cross it until the gateways route around the cut.
    pub gateways_cross_wan: bool,
    _gateways: Vec<GatewayHandle>,
}

/// The shared provider of a region, as attestd names it.
pub fn shared_provider(region: &str) -> String {
    let tail: String = region.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
    format!("shared{tail}").chars().take(24).collect()
}

/// An existing deployment, by URL.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub primary_region: String,
    pub secondary_region: String,
    /// (region, URL) of each gateway.
    pub gateways: Vec<(String, String)>,
    /// (name, region, URL) of each node.
    pub nodes: Vec<(String, String, String)>,
    pub ca: Option<PathBuf>,
    pub token: String,
    /// Inject faults with Docker into this compose project (`--docker`).
    pub docker: Option<ComposeTarget>,
    /// The WAN emulator's control API.
    pub wan_url: Option<String>,
}

/// The compose deployment of `deploy/`, found through compose.
#[derive(Debug, Clone)]
pub struct ComposeConfig {
    pub target: ComposeTarget,
    pub primary_region: String,
    pub secondary_region: String,
    /// Where the deployment's CA certificate is copied to.
    pub scratch: PathBuf,
    /// Given instead of discovered: the WAN control API, the CA, the token.
    pub wan_url: Option<String>,
    pub ca: Option<PathBuf>,
    pub token: Option<String>,
}

impl Deployment {
    /// Launches a local 3 + 2 cluster under `dir` (every inter-region Raft
    /// connection through a WAN link, pinned verification time for the
    /// recorded vectors) with a gateway per region. `tweak` may adjust the
    /// spec (e.g. a small disk, a test-only switch).
    pub async fn local(dir: &Path, tweak: impl FnOnce(&mut ClusterSpec)) -> anyhow::Result<Self> {
        let mut spec = ClusterSpec::local(dir.join("cluster"));
        spec.pinned_verification_time = Some(PINNED_TIME.into());
        spec.collateral_grace_s = COLLATERAL_GRACE_S;
        spec.wan = true;
        spec.wan_one_way_ms = 0;
        tweak(&mut spec);
        if spec.dir.exists() {
            std::fs::remove_dir_all(&spec.dir).with_context(|| format!("clearing {}", spec.dir.display()))?;
        }
        let async_after = Duration::from_millis(raft_key(&spec.raft_toml, "async_after_ms").unwrap_or(5000));
        let heartbeat = Duration::from_millis(raft_key(&spec.raft_toml, "heartbeat_ms").unwrap_or(100));
        let cluster = Cluster::launch(spec, Duration::from_secs(120)).await?;
        let gateways_keep = cluster.start_gateways(Duration::from_secs(30)).await?;
        let nodes = cluster
            .nodes
            .values()
            .map(|n| Endpoint {
                name: format!("node-{}", n.id),
                region: n.region.clone(),
                url: cluster.url(n.id),
                gateway: false,
            })
            .collect();
        let gateways = gateways_keep
            .iter()
            .map(|g| Endpoint {
                name: format!("gateway-{}", g.region),
                region: g.region.clone(),
                url: format!("https://{}", g.addr),
                gateway: true,
            })
            .collect();
        let primary = cluster.spec.primary_region.clone();
        let secondary = cluster.spec.secondary_region.clone();
        Ok(Self {
            attest_provider: cluster.shared_provider(&primary),
            primary_region: primary,
            secondary_region: secondary,
            nodes,
            gateways,
            http: cluster.http().clone(),
            faults: Some(Box::new(LocalFaults::new(cluster))),
            broken: Broken::default(),
            async_after,
            heartbeat,
            gateways_cross_wan: false,
            _gateways: gateways_keep,
        })
    }

    /// An existing deployment.
    pub fn remote(cfg: RemoteConfig) -> anyhow::Result<Self> {
        let faults: Option<Box<dyn FaultInjector>> = if let Some(target) = &cfg.docker {
            let mut d =
                DockerFaults::new(target.clone(), &cfg.primary_region, &cfg.secondary_region, cfg.wan_url.as_deref())
                    .map_err(|e| anyhow!("{e}"))?;
            if !cfg.nodes.is_empty() {
                d.nodes = cfg.nodes.iter().map(|(n, r, _)| (n.clone(), r.clone())).collect();
            }
            Some(Box::new(d))
        } else if let Some(url) = &cfg.wan_url {
            Some(Box::new(WanOnly { wan: WanControlClient::new(url).map_err(|e| anyhow!("{e}"))? }))
        } else {
            None
        };
        Self::remote_with(cfg, faults)
    }

    /// The compose deployment of `deploy/` (services `node-a1..3`,
    /// `gateway-a`, `node-b1..2`, `gateway-b`, `wan`): each service's
    /// published port from `compose port`, the CA copied out of `node-a1`,
    /// an Owner token minted inside it (`attestd dev-token`), and faults
    /// injected with Docker ([`DockerFaults`]). The WAN control API is used
    /// when the `wan` service publishes it.
    pub async fn compose(cfg: ComposeConfig) -> anyhow::Result<Self> {
        let mut faults = DockerFaults::new(cfg.target.clone(), &cfg.primary_region, &cfg.secondary_region, None)
            .map_err(|e| anyhow!("{e}"))?;
        let project = &cfg.target.project;
        let e = |e: FaultError| anyhow!("{e}");
        let mut gateways = Vec::new();
        for (svc, primary) in COMPOSE_GATEWAYS {
            let addr = faults
                .published(svc, 8443)
                .await
                .map_err(e)
                .with_context(|| format!("the published port of {svc} (is compose project {project} up?)"))?;
            let region = if primary { &cfg.primary_region } else { &cfg.secondary_region };
            gateways.push((region.clone(), format!("https://{addr}")));
        }
        let mut nodes = Vec::new();
        for (svc, region) in faults.nodes.clone() {
            let addr = faults.published(&svc, 8443).await.map_err(e).with_context(|| format!("the port of {svc}"))?;
            // Container ids now, so that a network fault later does not wait for them.
            faults.container(&svc).await.map_err(e)?;
            nodes.push((svc, region, format!("https://{addr}")));
        }
        let wan_url = match &cfg.wan_url {
            Some(u) => Some(u.clone()),
            None => match faults.published("wan", 7400).await {
                Ok(addr) => Some(format!("http://{addr}")),
                Err(err) => {
                    eprintln!(
                        "the wan service publishes no control port ({err}): one-way cuts and latency unavailable"
                    );
                    None
                }
            },
        };
        if let Some(u) = &wan_url {
            faults.wan = Some(WanControlClient::new(u).map_err(|e| anyhow!("{e}"))?);
        }
        // The CA and the token come out of a node container (the `pki`
        // volume); any node of the primary region that runs will do.
        let source = COMPOSE_PRIMARY_NODES[0];
        let ca = match &cfg.ca {
            Some(ca) => ca.clone(),
            None => {
                std::fs::create_dir_all(&cfg.scratch).with_context(|| format!("creating {}", cfg.scratch.display()))?;
                let id = faults.container(source).await.map_err(e)?;
                let to = cfg.scratch.join(format!("{project}-ca.pem"));
                faults
                    .docker(&["cp", &format!("{id}:/certs/ca.pem"), &to.display().to_string()])
                    .await
                    .map_err(e)
                    .context("copying the deployment's CA")?;
                to
            }
        };
        let token = match &cfg.token {
            Some(t) => t.clone(),
            None => {
                let id = faults.container(source).await.map_err(e)?;
                let out = faults
                    .docker(&["exec", &id, "attestd", "dev-token", "--dir", "/certs", "--role", "Owner"])
                    .await
                    .map_err(e)
                    .context("minting an Owner token inside node-a1")?;
                out.trim().to_owned()
            }
        };
        let remote = RemoteConfig {
            primary_region: cfg.primary_region.clone(),
            secondary_region: cfg.secondary_region.clone(),
            gateways,
            nodes,
            ca: Some(ca),
            token,
            docker: Some(cfg.target.clone()),
            wan_url,
        };
        let mut dep = Self::remote_with(remote, Some(Box::new(faults)))?;
        dep.gateways_cross_wan = true;
        Ok(dep)
    }

    fn remote_with(cfg: RemoteConfig, faults: Option<Box<dyn FaultInjector>>) -> anyhow::Result<Self> {
        let http = authed_client(cfg.ca.as_deref(), &cfg.token)?;
        if cfg.gateways.is_empty() {
            bail!("at least one gateway URL is needed (--url)");
        }
        Ok(Self {
            attest_provider: shared_provider(&cfg.primary_region),
            nodes: cfg
                .nodes
                .iter()
                .map(|(n, r, u)| Endpoint {
                    name: n.clone(),
                    region: r.clone(),
                    url: u.trim_end_matches('/').into(),
                    gateway: false,
                })
                .collect(),
            gateways: cfg
                .gateways
                .iter()
                .map(|(r, u)| Endpoint {
                    name: format!("gateway-{r}"),
                    region: r.clone(),
                    url: u.trim_end_matches('/').into(),
                    gateway: true,
                })
                .collect(),
            primary_region: cfg.primary_region,
            secondary_region: cfg.secondary_region,
            http,
            faults,
            broken: Broken::default(),
            async_after: Duration::from_secs(5),
            heartbeat: Duration::from_millis(100),
            gateways_cross_wan: false,
            _gateways: Vec::new(),
        })
    }

    pub fn backend(&self) -> &'static str {
        self.faults.as_ref().map_or("http", |f| f.backend())
    }

    /// Why `scenario` cannot run against this deployment: a fault its
    /// script injects that the fault backend cannot (see [`super::refusal`]).
    pub fn refusal(&self, scenario: super::Scenario) -> Option<String> {
        if self.gateways_cross_wan && scenario == super::Scenario::PartitionThenPrimaryLoss {
            return Some(format!(
                "here each gateway reaches the other region only through the WAN, so with the WAN cut and {} lost, \
                 the {} gateway has no node left to route to; the scenario expects every gateway to keep serving \
                 through {} (gateways outside the regions, as in a local cluster): run it locally",
                self.primary_region, self.primary_region, self.secondary_region
            ));
        }
        let node = self.nodes.iter().find(|n| n.region == self.primary_region).map_or("node-1", |n| n.name.as_str());
        let faults = scenario.faults(&self.primary_region, &self.secondary_region, node);
        if faults.is_empty() {
            return None;
        }
        match &self.faults {
            Some(f) => super::refusal(f.as_ref(), &faults),
            None => Some("it injects faults and this deployment has no fault backend (--docker or --wan-url)".into()),
        }
    }

    pub fn region_nodes(&self, region: &str) -> Vec<Endpoint> {
        self.nodes.iter().filter(|n| n.region == region).cloned().collect()
    }

    pub async fn health(&self, url: &str) -> anyhow::Result<(u16, Value)> {
        let r = self.http.get(format!("{url}/health")).timeout(Duration::from_secs(2)).send().await?;
        let code = r.status().as_u16();
        Ok((code, r.json().await.unwrap_or(Value::Null)))
    }

    pub async fn admin_state(&self, url: &str) -> anyhow::Result<Value> {
        let r = self.http.get(format!("{url}/admin/state")).timeout(Duration::from_secs(10)).send().await?;
        let code = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if code != 200 {
            bail!("/admin/state answered {code}: {body}");
        }
        Ok(body)
    }

    /// Request ids of the entries in the node's own log from `from` on.
    pub async fn log_request_ids(&self, url: &str, from: u64) -> anyhow::Result<Vec<String>> {
        let r = self
            .http
            .get(format!("{url}/admin/log?from={from}&limit=10000"))
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        let code = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if code != 200 {
            bail!("/admin/log answered {code}: {body}");
        }
        Ok(body["entries"]
            .as_array()
            .map(|e| e.iter().filter_map(|x| x["request_id"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    }

    /// The node that leads, as the nodes report it.
    pub async fn leader(&self) -> Option<Endpoint> {
        for n in &self.nodes {
            if let Ok((_, h)) = self.health(&n.url).await {
                if h["raft_role"] == "Leader" && h["control_plane"] == "writable" {
                    return Some(n.clone());
                }
            }
        }
        None
    }

    /// Polls until `pred` holds for the health bodies of the nodes
    /// (`None` for a node that did not answer), bounded by `within`.
    pub async fn wait_health(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&[(Endpoint, Option<(u16, Value)>)]) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut all = Vec::new();
            for n in &self.nodes {
                all.push((n.clone(), self.health(&n.url).await.ok()));
            }
            if pred(&all) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let seen: Vec<String> = all
                    .iter()
                    .map(|(n, h)| match h {
                        Some((c, b)) => format!(
                            "{}: {c} {} {} {}",
                            n.name, b["raft_role"], b["control_plane"], b["replication_mode"]
                        ),
                        None => format!("{}: no answer", n.name),
                    })
                    .collect();
                bail!("'{what}' did not hold within {within:?}; last seen: {}", seen.join("; "));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until a node that leads with a writable control plane has a
    /// `/health` body for which `pred` holds.
    async fn wait_writable_leader(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<()> {
        self.wait_health(what, within, |all| {
            all.iter().any(|(_, h)| {
                h.as_ref()
                    .is_some_and(|(_, b)| b["raft_role"] == "Leader" && b["control_plane"] == "writable" && pred(b))
            })
        })
        .await
    }

    /// Waits until a writable leader reports replication mode `mode`.
    pub async fn wait_mode(&self, mode: &str, within: Duration) -> anyhow::Result<()> {
        self.wait_writable_leader(&format!("a writable leader in mode {mode}"), within, |b| {
            b["replication_mode"] == mode
        })
        .await
    }

    /// Waits until a writable leader is a node of `region` (brief §4: in
    /// normal operation the leader is in the primary; a secondary leader
    /// hands leadership back by itself, see `attest_raft::placement`).
    pub async fn wait_leader_in(&self, region: &str, within: Duration) -> anyhow::Result<()> {
        self.wait_writable_leader(&format!("a writable leader in {region}"), within, |b| b["region"] == region).await
    }

    pub async fn wait_all_healthy(&self, within: Duration) -> anyhow::Result<()> {
        self.wait_health("every node healthy", within, |all| {
            all.iter().all(|(_, h)| h.as_ref().is_some_and(|(c, _)| *c == 200))
        })
        .await
    }

    /// Makes the deployment ready for the workload; see the module docs of [`super`].
    pub async fn prepare(&self, vectors: &VectorSet, providers: &[String]) -> anyhow::Result<()> {
        if !self.nodes.is_empty() {
            self.wait_all_healthy(Duration::from_secs(120)).await?;
            self.wait_mode("sync", Duration::from_secs(60)).await?;
        }
        let target = self
            .nodes
            .iter()
            .find(|n| n.region == self.primary_region)
            .or(self.gateways.first())
            .ok_or_else(|| anyhow!("no node or gateway to talk to"))?
            .url
            .clone();
        for (name, blob) in &vectors.collateral {
            self.write_with_retry(&format!("collateral {name}"), || {
                self.http.put(format!("{target}/admin/collateral/{name}")).body(blob.clone())
            })
            .await?;
        }
        for p in providers {
            self.write_with_retry(&format!("provider {p}"), || {
                self.http
                    .put(format!("{target}/providers/{p}"))
                    .header("content-type", "application/json")
                    .body(r#"{"trustModel":"AAD"}"#)
            })
            .await?;
        }
        if !self.nodes.is_empty() {
            self.wait_converged(providers, Duration::from_secs(60)).await?;
            self.wait_keys_published(Duration::from_secs(60)).await?;
        }
        self.wait_gateways_attest(vectors, Duration::from_secs(60)).await
    }

    async fn write_with_retry(&self, what: &str, req: impl Fn() -> reqwest::RequestBuilder) -> anyhow::Result<()> {
        let mut last = String::new();
        for _ in 0..30 {
            match req().timeout(Duration::from_secs(20)).send().await {
                Ok(r) if r.status().is_success() || r.status().as_u16() == 409 => return Ok(()),
                Ok(r) => {
                    let code = r.status().as_u16();
                    last = format!("{code} {}", r.text().await.unwrap_or_default());
                    if code < 500 {
                        bail!("{what}: {last}");
                    }
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!("{what}: {last}")
    }

    async fn wait_converged(&self, providers: &[String], within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut digests = BTreeSet::new();
            let mut complete = true;
            for n in &self.nodes {
                match self.admin_state(&n.url).await {
                    Ok(s) => {
                        digests.insert(s["digest"].as_str().unwrap_or("").to_string());
                        complete &= providers.iter().all(|p| s["providers"].get(p.as_str()).is_some());
                    }
                    Err(_) => complete = false,
                }
            }
            if complete && digests.len() == 1 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the nodes did not converge on the drill's providers within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Every node publishes an RSA and an EC key: wait until every node's
    /// `/certs` lists them all, so every token can verify anywhere.
    async fn wait_keys_published(&self, within: Duration) -> anyhow::Result<()> {
        let want = 2 * self.nodes.len();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut ok = true;
            for n in &self.nodes {
                let keys = match self.http.get(format!("{}/certs", n.url)).send().await {
                    Ok(r) => r.json::<Value>().await.ok().and_then(|v| v["keys"].as_array().map(Vec::len)).unwrap_or(0),
                    Err(_) => 0,
                };
                ok &= keys >= want;
            }
            if ok {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("not every node's /certs lists the {want} node keys within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn wait_gateways_attest(&self, vectors: &VectorSet, within: Duration) -> anyhow::Result<()> {
        let v = vectors.vectors.first().ok_or_else(|| anyhow!("no evidence vector"))?;
        let deadline = tokio::time::Instant::now() + within;
        for g in &self.gateways {
            loop {
                let r = self
                    .http
                    .post(format!("{}/providers/{}/attest/{}", g.url, self.attest_provider, v.attestation_type))
                    .json(&v.body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                let last = match r {
                    Ok(r) if r.status().is_success() => break,
                    Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                    Err(e) => e.to_string(),
                };
                if tokio::time::Instant::now() >= deadline {
                    bail!("attestation through {} does not succeed: {last}", g.name);
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        Ok(())
    }

    /// Undoes whatever the drill left broken; returns what could not be undone.
    pub async fn heal_everything(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        let b = std::mem::take(&mut self.broken);
        let mut actions: Vec<Fault> = Vec::new();
        actions.extend(b.paused.iter().map(|n| Fault::Resume { node: n.clone() }));
        actions.extend(b.disk_full.iter().map(|n| Fault::FreeDisk { node: n.clone() }));
        actions.extend(b.down.iter().map(|n| Fault::Start { node: n.clone() }));
        if b.wan_cut {
            actions.push(Fault::Heal);
        }
        if b.wan_slow {
            actions.push(Fault::WanLatency { one_way_ms: 0, jitter_ms: 0 });
        }
        for a in actions {
            match self.faults.as_mut() {
                Some(f) => {
                    if let Err(e) = f.apply(&a).await {
                        errors.push(format!("{}: {e}", a.label()));
                    }
                }
                None => errors.push(format!("{}: no fault backend", a.label())),
            }
        }
        for n in &b.drained {
            if let Some(ep) = self.nodes.iter().find(|e| &e.name == n) {
                if let Err(e) = self.http.post(format!("{}/admin/undrain", ep.url)).send().await {
                    errors.push(format!("undrain {n}: {e}"));
                }
            }
        }
        if !self.nodes.is_empty() {
            if let Err(e) = self.wait_all_healthy(Duration::from_secs(90)).await {
                errors.push(format!("{e:#}"));
            }
        }
        errors
    }

    /// `/certs` of each region (from its first node that answers; from the
    /// region's gateway when no node is known).
    pub async fn jwks_by_region(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for region in [&self.primary_region, &self.secondary_region] {
            let mut urls: Vec<&str> =
                self.nodes.iter().filter(|n| &n.region == region).map(|n| n.url.as_str()).collect();
            if urls.is_empty() {
                urls = self.gateways.iter().filter(|g| &g.region == region).map(|g| g.url.as_str()).collect();
            }
            for u in urls {
                if let Ok(r) = self.http.get(format!("{u}/certs")).timeout(Duration::from_secs(5)).send().await {
                    if let Ok(v) = r.json::<Value>().await {
                        if v["keys"].is_array() {
                            out.insert(region.clone(), v);
                            break;
                        }
                    }
                }
            }
        }
        out
    }
}

/// An integer key of a `[raft]` snippet (`key = 123`).
fn raft_key(raft_toml: &str, key: &str) -> Option<u64> {
    raft_toml
        .lines()
        .filter_map(|l| l.trim().strip_prefix(key))
        .filter_map(|r| r.trim().strip_prefix('=').map(str::trim))
        .find_map(|v| v.parse::<u64>().ok())
}

/// The HTTP-only backend with a WAN control API: partitions and latency.
struct WanOnly {
    wan: WanControlClient,
}

impl FaultInjector for WanOnly {
    fn backend(&self) -> &'static str {
        "wan-api"
    }

    fn check(&self, fault: &Fault) -> Result<(), FaultError> {
        match fault {
            Fault::Partition { .. } | Fault::Heal | Fault::WanLatency { .. } => Ok(()),
            other => Err(FaultError::Unsupported {
                backend: "wan-api",
                fault: other.label(),
                why: "only the WAN can be controlled over HTTP; use --docker or a local cluster".into(),
            }),
        }
    }

    fn apply<'a>(&'a mut self, fault: &'a Fault) -> futures::future::BoxFuture<'a, Result<(), FaultError>> {
        Box::pin(async move {
            let e = |e: crate::wan::WanError| FaultError::Other(e.to_string());
            match fault {
                Fault::Partition { from, to, one_way } => {
                    let cut = if *one_way { crate::wan::Cut::AToB } else { crate::wan::Cut::Both };
                    self.wan
                        .update_regions(from, to, &LinkUpdate::cut(cut, crate::wan::CutMode::Blackhole))
                        .await
                        .map_err(e)?;
                }
                Fault::Heal => {
                    self.wan.heal_all().await.map_err(e)?;
                }
                Fault::WanLatency { one_way_ms, jitter_ms } => {
                    self.wan.update_all(&LinkUpdate::latency(*one_way_ms, *jitter_ms)).await.map_err(e)?;
                }
                other => {
                    return Err(FaultError::Unsupported {
                        backend: "wan-api",
                        fault: other.label(),
                        why: "only the WAN can be controlled over HTTP; use --docker or a local cluster".into(),
                    })
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_timings() {
        assert_eq!(shared_provider("eastus2"), "sharedeastus2");
        assert_eq!(shared_provider("Central-US"), "sharedcentralus");
        let t = "heartbeat_ms = 100\nasync_after_ms = 3000\n";
        assert_eq!(raft_key(t, "async_after_ms"), Some(3000));
        assert_eq!(raft_key(t, "heartbeat_ms"), Some(100));
        assert_eq!(raft_key("", "heartbeat_ms"), None);
    }
}
