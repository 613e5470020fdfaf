//! Fault injection behind one small trait, so a drill runs the same script
//! against local processes ([`LocalFaults`]) or the compose deployment
//! ([`DockerFaults`]).
//!
//! A [`Fault`] names nodes and regions the way the deployment does (local:
//! `node-<id>`; compose: the service, e.g. `node-a1`) and is serializable:
//! the drill records every fault it applies in its history, with the time
//! it was issued and returned.
//!
//! | fault | local processes | docker compose |
//! |---|---|---|
//! | kill / stop / start | SIGKILL / SIGTERM (bounded wait) / spawn | `<compose> kill -s SIGKILL` / `stop -t 20` / `start` |
//! | pause / resume | SIGSTOP / SIGCONT | `<compose> pause` / `unpause` (cgroup freezer) |
//! | full partition, heal | cut the userspace WAN links | `docker network disconnect <project>_wan` of the `to` region's nodes; heal: `docker network connect --alias <service>` |
//! | one-way cut, WAN latency | WAN links | the `wan` service's control API (refused without it) |
//! | disk full / free | fill / delete a filler file on the node's size-limited data filesystem ([`crate::cluster::ClusterSpec::small_disk_mb`]) | not supported |
//!
//! `<compose>` is `docker compose` or the stand-alone `docker-compose`,
//! whichever works here ([`detect_compose`]), with the project name, files
//! and environment of a [`ComposeTarget`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::wan::{CutMode, LinkUpdate, WanControlClient};

/// One fault or its repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL: no shutdown, no flush.
    Kill {
        node: String,
    },
    /// SIGTERM and a bounded wait for a clean exit.
    Stop {
        node: String,
    },
    Start {
        node: String,
    },
    /// SIGSTOP: the process stops answering but keeps its sockets.
    Pause {
        node: String,
    },
    Resume {
        node: String,
    },
    KillRegion {
        region: String,
    },
    StartRegion {
        region: String,
    },
    PauseRegion {
        region: String,
    },
    ResumeRegion {
        region: String,
    },
    /// Cuts traffic from region `from` to region `to`, and back unless `one_way`.
    Partition {
        from: String,
        to: String,
        one_way: bool,
    },
    /// Removes every cut.
    Heal,
    /// Sets the one-way delay (and jitter) of every inter-region link.
    WanLatency {
        one_way_ms: u64,
        jitter_ms: u64,
    },
    /// Fills the node's data filesystem.
    FillDisk {
        node: String,
    },
    FreeDisk {
        node: String,
    },
}

impl Fault {
    /// Short label for charts and logs.
    pub fn label(&self) -> String {
        match self {
            Fault::Kill { node } => format!("kill -9 {node}"),
            Fault::Stop { node } => format!("stop {node}"),
            Fault::Start { node } => format!("start {node}"),
            Fault::Pause { node } => format!("SIGSTOP {node}"),
            Fault::Resume { node } => format!("SIGCONT {node}"),
            Fault::KillRegion { region } => format!("kill -9 region {region}"),
            Fault::StartRegion { region } => format!("start region {region}"),
            Fault::PauseRegion { region } => format!("SIGSTOP region {region}"),
            Fault::ResumeRegion { region } => format!("SIGCONT region {region}"),
            Fault::Partition { from, to, one_way: false } => format!("partition {from} | {to}"),
            Fault::Partition { from, to, one_way: true } => format!("cut {from} → {to}"),
            Fault::Heal => "heal WAN".into(),
            Fault::WanLatency { one_way_ms, jitter_ms } => format!("WAN delay {one_way_ms}±{jitter_ms} ms"),
            Fault::FillDisk { node } => format!("fill disk of {node}"),
            Fault::FreeDisk { node } => format!("free disk of {node}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("{backend} cannot inject '{fault}': {why}")]
    Unsupported { backend: &'static str, fault: String, why: String },
    #[error("unknown node '{0}'")]
    UnknownNode(String),
    #[error("unknown region '{0}'")]
    UnknownRegion(String),
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{0}")]
    Other(String),
}

/// Something that can break a deployment.
pub trait FaultInjector: Send {
    /// `local` or `docker`.
    fn backend(&self) -> &'static str;
    fn apply<'a>(&'a mut self, fault: &'a Fault) -> BoxFuture<'a, Result<(), FaultError>>;
    /// Whether the backend can inject `fault` at all (checked before a
    /// drill starts, so that it refuses up front rather than half-way).
    fn check(&self, _fault: &Fault) -> Result<(), FaultError> {
        Ok(())
    }
}

// ------------------------------------------------------------------ local

/// Faults on a [`Cluster`] of local processes (node names `node-<id>`).
pub struct LocalFaults {
    pub cluster: Cluster,
}

impl LocalFaults {
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster }
    }

    fn id(&self, node: &str) -> Result<u64, FaultError> {
        node.strip_prefix("node-")
            .and_then(|n| n.parse().ok())
            .filter(|id| self.cluster.nodes.contains_key(id))
            .ok_or_else(|| FaultError::UnknownNode(node.to_owned()))
    }

    fn region_ids(&self, region: &str) -> Result<Vec<u64>, FaultError> {
        let ids = self.cluster.region_ids(region);
        if ids.is_empty() {
            return Err(FaultError::UnknownRegion(region.to_owned()));
        }
        Ok(ids)
    }

    fn wan(&self, fault: &Fault) -> Result<&crate::wan::WanController, FaultError> {
        self.cluster.wan.as_ref().ok_or_else(|| FaultError::Unsupported {
            backend: "local",
            fault: fault.label(),
            why: "the cluster was launched without WAN links (ClusterSpec::wan)".into(),
        })
    }

    fn apply_now(&mut self, fault: &Fault) -> Result<(), FaultError> {
        let c = |e: anyhow::Error| FaultError::Other(format!("{e:#}"));
        match fault {
            Fault::Kill { node } => self.cluster.kill(self.id(node)?).map_err(c),
            // SIGTERM waits (bounded) for the process: off the async workers.
            Fault::Stop { node } => {
                let id = self.id(node)?;
                tokio::task::block_in_place(|| self.cluster.stop(id)).map_err(c)
            }
            Fault::Start { node } => self.cluster.start(self.id(node)?).map_err(c),
            Fault::Pause { node } => self.cluster.pause(self.id(node)?).map_err(c),
            Fault::Resume { node } => self.cluster.resume(self.id(node)?).map_err(c),
            Fault::KillRegion { region } => {
                for id in self.region_ids(region)? {
                    self.cluster.kill(id).map_err(c)?;
                }
                Ok(())
            }
            Fault::StartRegion { region } => {
                for id in self.region_ids(region)? {
                    self.cluster.start(id).map_err(c)?;
                }
                Ok(())
            }
            Fault::PauseRegion { region } => {
                for id in self.region_ids(region)? {
                    self.cluster.pause(id).map_err(c)?;
                }
                Ok(())
            }
            Fault::ResumeRegion { region } => {
                for id in self.region_ids(region)? {
                    self.cluster.resume(id).map_err(c)?;
                }
                Ok(())
            }
            Fault::Partition { from, to, one_way } => {
                // Blackhole: bytes are held, peers see timeouts, as in a real partition.
                self.wan(fault)?
                    .partition(from, to, *one_way, CutMode::Blackhole)
                    .map(|_| ())
                    .map_err(|e| FaultError::Other(e.to_string()))
            }
            Fault::Heal => {
                self.wan(fault)?.heal_all();
                Ok(())
            }
            Fault::WanLatency { one_way_ms, jitter_ms } => self
                .wan(fault)?
                .update_all(&LinkUpdate::latency(*one_way_ms, *jitter_ms))
                .map(|_| ())
                .map_err(|e| FaultError::Other(e.to_string())),
            Fault::FillDisk { node } => {
                let id = self.id(node)?;
                let dir = self.cluster.nodes.get(&id).map(|n| n.data_dir.clone()).unwrap_or_default();
                if !self.cluster.spec.small_disk_mb.contains_key(&id) {
                    return Err(FaultError::Unsupported {
                        backend: "local",
                        fault: fault.label(),
                        why: format!(
                            "{node}'s data directory is not on a size-limited filesystem (ClusterSpec::small_disk_mb)"
                        ),
                    });
                }
                tokio::task::block_in_place(|| fill_disk(&dir)).map(|_| ())
            }
            Fault::FreeDisk { node } => {
                let id = self.id(node)?;
                let dir = self.cluster.nodes.get(&id).map(|n| n.data_dir.clone()).unwrap_or_default();
                free_disk(&dir)
            }
        }
    }
}

impl FaultInjector for LocalFaults {
    fn backend(&self) -> &'static str {
        "local"
    }

    fn apply<'a>(&'a mut self, fault: &'a Fault) -> BoxFuture<'a, Result<(), FaultError>> {
        Box::pin(async move { self.apply_now(fault) })
    }
}

/// The filler file that [`fill_disk`] writes into a data directory.
pub const FILLER: &str = ".drill-disk-filler";

/// Writes zeros into `<dir>/.drill-disk-filler` until the filesystem is
/// full (ENOSPC), and returns the bytes written. Refuses a filesystem with
/// more than 1 GiB free: this is meant for a small dedicated one.
pub fn fill_disk(dir: &Path) -> Result<u64, FaultError> {
    use std::io::Write;
    let free = available_bytes(dir)?;
    if free > 1 << 30 {
        return Err(FaultError::Other(format!(
            "{} has {} MiB free: refusing to fill a filesystem that is not a small dedicated one",
            dir.display(),
            free >> 20
        )));
    }
    let path = dir.join(FILLER);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| FaultError::Other(format!("creating {}: {e}", path.display())))?;
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(FaultError::Other(format!("writing {}: {e}", path.display()))),
        }
    }
    // What is left is smaller than a chunk: take it byte-sized.
    let small = [0u8; 512];
    while let Ok(n) = f.write(&small) {
        if n == 0 {
            break;
        }
        written += n as u64;
    }
    let _ = f.sync_all();
    Ok(written)
}

pub fn free_disk(dir: &Path) -> Result<(), FaultError> {
    match std::fs::remove_file(dir.join(FILLER)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FaultError::Other(format!("removing the filler in {}: {e}", dir.display()))),
    }
}

/// Free bytes of the filesystem holding `dir` (`df`, to stay free of `unsafe`).
pub fn available_bytes(dir: &Path) -> Result<u64, FaultError> {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .map_err(|e| FaultError::Command { command: "df".into(), detail: e.to_string() })?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next()
        .ok_or_else(|| FaultError::Command { command: format!("df {}", dir.display()), detail: text.into_owned() })
}

// ----------------------------------------------------------------- docker

/// Node services of `deploy/compose.yaml` in the primary region (a
/// contract, see deploy/README.md).
pub const COMPOSE_PRIMARY_NODES: [&str; 3] = ["node-a1", "node-a2", "node-a3"];
/// Node services in the secondary region.
pub const COMPOSE_SECONDARY_NODES: [&str; 2] = ["node-b1", "node-b2"];
/// Gateway services: (service, primary region?).
pub const COMPOSE_GATEWAYS: [(&str, bool); 2] = [("gateway-a", true), ("gateway-b", false)];
/// The compose network every inter-region connection crosses (through the `wan` service).
pub const COMPOSE_WAN_NETWORK: &str = "wan";

/// Runs a command line with extra environment; stdout on success.
pub type Runner = fn(&[String], &[(String, String)]) -> Result<String, FaultError>;

/// A compose project: how compose is invoked here, the project name, its
/// files and the environment its variables come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeTarget {
    /// `docker compose` (v2) or `docker-compose` (v1); see [`detect_compose`].
    pub command: Vec<String>,
    pub project: String,
    /// `-f` files; empty = compose's own lookup from the current directory.
    pub files: Vec<PathBuf>,
    /// Added to the environment of every compose command (e.g. the
    /// host-port variables the deployment was started with).
    pub env: Vec<(String, String)>,
}

impl ComposeTarget {
    /// `<compose> -p <project> [-f <file>]… <args>`.
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut cmd = self.command.clone();
        cmd.push("-p".into());
        cmd.push(self.project.clone());
        for f in &self.files {
            cmd.push("-f".into());
            cmd.push(f.display().to_string());
        }
        cmd.extend(args.iter().map(|s| s.to_string()));
        cmd
    }

    /// The Docker name of the project's network `key`: compose (v1 and v2)
    /// names it `<project>_<key>`, the project name lower-cased and reduced
    /// to `[a-z0-9_-]`.
    pub fn network(&self, key: &str) -> String {
        let p: String = self
            .project
            .to_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        format!("{p}_{key}")
    }
}

/// The compose command that works on this machine: `docker compose` (the
/// v2 plugin) or else the stand-alone `docker-compose` (v1, e.g. Debian's
/// package), whichever answers `version`.
pub fn detect_compose(runner: Runner) -> Result<Vec<String>, FaultError> {
    let mut tried = Vec::new();
    for candidate in [&["docker", "compose"][..], &["docker-compose"][..]] {
        let mut cmd: Vec<String> = candidate.iter().map(|s| s.to_string()).collect();
        cmd.push("version".into());
        match runner(&cmd, &[]) {
            Ok(_) => return Ok(candidate.iter().map(|s| s.to_string()).collect()),
            Err(e) => tried.push(e.to_string()),
        }
    }
    Err(FaultError::Other(format!("neither `docker compose` nor `docker-compose` works: {}", tried.join("; "))))
}

/// One step of a fault on the compose deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerStep {
    /// A command line (compose or docker).
    Run(Vec<String>),
    /// `docker network disconnect` the service's container from the WAN network.
    Disconnect(String),
    /// `docker network connect` it again, under its service name.
    Connect(String),
    /// A call to the `wan` service's control API.
    WanApi,
}

/// Faults on the compose deployment (`deploy/`): services `node-a1..3`,
/// `gateway-a` (primary region), `node-b1..2`, `gateway-b` (secondary),
/// `wan`.
///
/// Nodes are killed, stopped, started, paused with compose (`docker kill`,
/// `stop`, `start`, `pause` underneath). A full partition takes the `to`
/// region's node containers off the WAN network (`docker network
/// disconnect`): every inter-region connection of theirs crosses the `wan`
/// service on that network, so Raft between the regions and the gateways'
/// calls into that region stop, while each node keeps its region network
/// and its published port. Heal connects them again under their service
/// names. One-way cuts and latency go through the `wan` service's control
/// API, which a network cannot express.
pub struct DockerFaults {
    pub compose: ComposeTarget,
    /// Node service → region.
    pub nodes: BTreeMap<String, String>,
    /// The `wan` service's control API, for one-way cuts and latency.
    pub wan: Option<WanControlClient>,
    /// Runs commands; replaced in tests to see what would run.
    pub runner: Runner,
    /// Services this backend took off the WAN network (heal reconnects them).
    disconnected: BTreeSet<String>,
    /// Container id of each service, read when first needed.
    containers: BTreeMap<String, String>,
}

impl DockerFaults {
    /// The deployment's layout: `node-a*` in `primary`, `node-b*` in `secondary`.
    pub fn new(
        compose: ComposeTarget,
        primary: &str,
        secondary: &str,
        wan_url: Option<&str>,
    ) -> Result<Self, FaultError> {
        let mut nodes = BTreeMap::new();
        for n in COMPOSE_PRIMARY_NODES {
            nodes.insert(n.to_string(), primary.to_string());
        }
        for n in COMPOSE_SECONDARY_NODES {
            nodes.insert(n.to_string(), secondary.to_string());
        }
        let wan = wan_url.map(WanControlClient::new).transpose().map_err(|e| FaultError::Other(e.to_string()))?;
        Ok(Self {
            compose,
            nodes,
            wan,
            runner: run_command,
            disconnected: BTreeSet::new(),
            containers: BTreeMap::new(),
        })
    }

    fn node(&self, n: &str) -> Result<String, FaultError> {
        self.nodes.contains_key(n).then(|| n.to_owned()).ok_or_else(|| FaultError::UnknownNode(n.to_owned()))
    }

    fn region(&self, r: &str) -> Result<Vec<String>, FaultError> {
        let v: Vec<String> = self.nodes.iter().filter(|(_, reg)| *reg == r).map(|(n, _)| n.clone()).collect();
        if v.is_empty() {
            return Err(FaultError::UnknownRegion(r.to_owned()));
        }
        Ok(v)
    }

    fn needs_wan_api(&self, fault: &Fault, what: &str) -> Result<Vec<DockerStep>, FaultError> {
        match self.wan {
            Some(_) => Ok(vec![DockerStep::WanApi]),
            None => Err(FaultError::Unsupported {
                backend: "docker",
                fault: fault.label(),
                why: format!("{what} needs the wan service's control API (--wan-url, or its published port 7400)"),
            }),
        }
    }

    /// The steps that inject `fault`.
    pub fn plan(&self, fault: &Fault) -> Result<Vec<DockerStep>, FaultError> {
        let compose = |args: &[&str]| Ok(vec![DockerStep::Run(self.compose.argv(args))]);
        let many = |verb: &[&str], services: Vec<String>| {
            let mut args: Vec<&str> = verb.to_vec();
            args.extend(services.iter().map(String::as_str));
            Ok(vec![DockerStep::Run(self.compose.argv(&args))])
        };
        match fault {
            Fault::Kill { node } => compose(&["kill", "-s", "SIGKILL", &self.node(node)?]),
            Fault::Stop { node } => compose(&["stop", "-t", "20", &self.node(node)?]),
            Fault::Start { node } => compose(&["start", &self.node(node)?]),
            Fault::Pause { node } => compose(&["pause", &self.node(node)?]),
            Fault::Resume { node } => compose(&["unpause", &self.node(node)?]),
            Fault::KillRegion { region } => many(&["kill", "-s", "SIGKILL"], self.region(region)?),
            Fault::StartRegion { region } => many(&["start"], self.region(region)?),
            Fault::PauseRegion { region } => many(&["pause"], self.region(region)?),
            Fault::ResumeRegion { region } => many(&["unpause"], self.region(region)?),
            Fault::Partition { from, to, one_way: false } => {
                self.region(from)?;
                Ok(self.region(to)?.into_iter().map(DockerStep::Disconnect).collect())
            }
            Fault::Partition { one_way: true, .. } => self.needs_wan_api(fault, "a one-way cut"),
            Fault::Heal => {
                let mut steps: Vec<DockerStep> = self.disconnected.iter().cloned().map(DockerStep::Connect).collect();
                if self.wan.is_some() {
                    steps.push(DockerStep::WanApi);
                }
                Ok(steps)
            }
            Fault::WanLatency { .. } => self.needs_wan_api(fault, "WAN latency"),
            Fault::FillDisk { .. } | Fault::FreeDisk { .. } => Err(FaultError::Unsupported {
                backend: "docker",
                fault: fault.label(),
                why: "the compose deployment has no size-limited data volume".into(),
            }),
        }
    }

    /// `docker network disconnect|connect` of `service`'s container `id`
    /// from the WAN network; a connect restores the service name as its
    /// DNS alias there, which the `wan` service dials.
    pub fn network_command(&self, connect: bool, service: &str, id: &str) -> Vec<String> {
        let net = self.compose.network(COMPOSE_WAN_NETWORK);
        let mut cmd: Vec<String> = vec!["docker".into(), "network".into()];
        if connect {
            cmd.extend(["connect".into(), "--alias".into(), service.into()]);
        } else {
            cmd.push("disconnect".into());
        }
        cmd.extend([net, id.to_owned()]);
        cmd
    }

    async fn run(&self, cmd: Vec<String>) -> Result<String, FaultError> {
        let (runner, env) = (self.runner, self.compose.env.clone());
        tokio::task::spawn_blocking(move || runner(&cmd, &env)).await.map_err(|e| FaultError::Other(e.to_string()))?
    }

    /// The container id of `service` (`compose ps -a -q`, which both
    /// compose versions answer, for stopped containers too).
    pub async fn container(&mut self, service: &str) -> Result<String, FaultError> {
        if let Some(id) = self.containers.get(service) {
            return Ok(id.clone());
        }
        let cmd = self.compose.argv(&["ps", "-a", "-q", service]);
        let out = self.run(cmd).await?;
        let id = out.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned).ok_or_else(|| {
            FaultError::Other(format!("service {service} has no container in compose project {}", self.compose.project))
        })?;
        self.containers.insert(service.to_owned(), id.clone());
        Ok(id)
    }

    /// `host:port` where `service` publishes `port` (`compose port`); an
    /// unspecified bind address (`0.0.0.0`, `::`) becomes loopback.
    pub async fn published(&self, service: &str, port: u16) -> Result<String, FaultError> {
        let out = self.run(self.compose.argv(&["port", service, &port.to_string()])).await?;
        parse_published(&out).ok_or_else(|| FaultError::Command {
            command: format!("compose port {service} {port}"),
            detail: format!("no published address in {out:?}"),
        })
    }

    /// Runs a `docker` command line (exec, cp, …) with the target's environment.
    pub async fn docker(&self, args: &[&str]) -> Result<String, FaultError> {
        let mut cmd = vec!["docker".to_string()];
        cmd.extend(args.iter().map(|s| s.to_string()));
        self.run(cmd).await
    }

    async fn wan_api(&self, fault: &Fault) -> Result<(), FaultError> {
        let Some(wan) = &self.wan else { return Ok(()) };
        let e = |e: crate::wan::WanError| FaultError::Other(e.to_string());
        match fault {
            Fault::Partition { from, to, one_way } => {
                let cut = if *one_way { crate::wan::Cut::AToB } else { crate::wan::Cut::Both };
                wan.update_regions(from, to, &LinkUpdate::cut(cut, CutMode::Blackhole)).await.map_err(e)?;
            }
            Fault::Heal => {
                wan.heal_all().await.map_err(e)?;
            }
            Fault::WanLatency { one_way_ms, jitter_ms } => {
                wan.update_all(&LinkUpdate::latency(*one_way_ms, *jitter_ms)).await.map_err(e)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The address in `compose port` output (`127.0.0.1:8443`, `0.0.0.0:8443`,
/// `[::]:8443`, `:::8443`), with an unspecified host as loopback.
pub fn parse_published(out: &str) -> Option<String> {
    let line = out.lines().map(str::trim).find(|l| !l.is_empty())?;
    let (host, port) = line.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() || host == "0.0.0.0" || host == "::" || host == ":" { "127.0.0.1" } else { host };
    Some(if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") })
}

impl FaultInjector for DockerFaults {
    fn backend(&self) -> &'static str {
        "docker"
    }

    fn check(&self, fault: &Fault) -> Result<(), FaultError> {
        self.plan(fault).map(|_| ())
    }

    fn apply<'a>(&'a mut self, fault: &'a Fault) -> BoxFuture<'a, Result<(), FaultError>> {
        Box::pin(async move {
            for step in self.plan(fault)? {
                match step {
                    DockerStep::Run(cmd) => {
                        self.run(cmd).await?;
                    }
                    DockerStep::Disconnect(service) => {
                        let id = self.container(&service).await?;
                        self.run(self.network_command(false, &service, &id)).await?;
                        self.disconnected.insert(service);
                    }
                    DockerStep::Connect(service) => {
                        let id = self.container(&service).await?;
                        self.run(self.network_command(true, &service, &id)).await?;
                        self.disconnected.remove(&service);
                    }
                    DockerStep::WanApi => self.wan_api(fault).await?,
                }
            }
            Ok(())
        })
    }
}

/// Runs `cmd` with `env` added and returns its stdout; a non-zero exit is
/// an error with stderr.
pub fn run_command(cmd: &[String], env: &[(String, String)]) -> Result<String, FaultError> {
    let Some((prog, args)) = cmd.split_first() else {
        return Err(FaultError::Other("empty command".into()));
    };
    let out = Command::new(prog)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| FaultError::Command { command: cmd.join(" "), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(FaultError::Command {
            command: cmd.join(" "),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn faults_serialize_with_their_action() {
        let f = Fault::Partition { from: "eastus2".into(), to: "centralus".into(), one_way: true };
        let v = serde_json::to_value(&f).unwrap_or_default();
        assert_eq!(v["action"], "partition");
        assert_eq!(serde_json::from_value::<Fault>(v).ok(), Some(f.clone()));
        assert_eq!(f.label(), "cut eastus2 → centralus");
    }

    fn target(command: &[&str]) -> ComposeTarget {
        ComposeTarget {
            command: command.iter().map(|s| s.to_string()).collect(),
            project: "attestd".into(),
            files: Vec::new(),
            env: Vec::new(),
        }
    }

    fn docker(wan: Option<&str>) -> DockerFaults {
        match DockerFaults::new(target(&["docker", "compose"]), "eastus2", "centralus", wan) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    fn run_step(steps: Result<Vec<DockerStep>, FaultError>) -> Vec<String> {
        match steps {
            Ok(s) => match s.as_slice() {
                [DockerStep::Run(cmd)] => cmd.clone(),
                other => panic!("not one command: {other:?}"),
            },
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn compose_commands_carry_project_files_and_either_compose() {
        let mut t = target(&["docker-compose"]);
        t.project = "attestd-test-1a2b".into();
        t.files = vec![PathBuf::from("deploy/compose.yaml"), PathBuf::from("deploy/compose.replay.yaml")];
        assert_eq!(
            t.argv(&["kill", "-s", "SIGKILL", "node-a1"]),
            [
                "docker-compose",
                "-p",
                "attestd-test-1a2b",
                "-f",
                "deploy/compose.yaml",
                "-f",
                "deploy/compose.replay.yaml",
                "kill",
                "-s",
                "SIGKILL",
                "node-a1"
            ]
        );
        assert_eq!(t.network("wan"), "attestd-test-1a2b_wan");
        t.project = "My.Project".into();
        assert_eq!(t.network("wan"), "myproject_wan");
    }

    #[test]
    fn compose_detection_falls_back_to_the_standalone_command() {
        fn only_v1(cmd: &[String], _: &[(String, String)]) -> Result<String, FaultError> {
            if cmd[0] == "docker-compose" {
                Ok("docker-compose version 1.29.2".into())
            } else {
                Err(FaultError::Command { command: cmd.join(" "), detail: "unknown command".into() })
            }
        }
        fn only_v2(cmd: &[String], _: &[(String, String)]) -> Result<String, FaultError> {
            if cmd[..2] == ["docker", "compose"] {
                Ok("Docker Compose version v2.29.0".into())
            } else {
                Err(FaultError::Command { command: cmd.join(" "), detail: "not found".into() })
            }
        }
        fn none(cmd: &[String], _: &[(String, String)]) -> Result<String, FaultError> {
            Err(FaultError::Command { command: cmd.join(" "), detail: "not found".into() })
        }
        assert_eq!(detect_compose(only_v1).ok(), Some(vec!["docker-compose".to_string()]));
        assert_eq!(detect_compose(only_v2).ok(), Some(vec!["docker".to_string(), "compose".to_string()]));
        assert!(detect_compose(none).is_err());
    }

    #[test]
    fn docker_plans_name_compose_services() {
        let d = docker(None);
        assert_eq!(
            run_step(d.plan(&Fault::Kill { node: "node-a1".into() })),
            ["docker", "compose", "-p", "attestd", "kill", "-s", "SIGKILL", "node-a1"]
        );
        let cmd = run_step(d.plan(&Fault::KillRegion { region: "eastus2".into() }));
        assert_eq!(cmd[4..], ["kill", "-s", "SIGKILL", "node-a1", "node-a2", "node-a3"]);
        let cmd = run_step(d.plan(&Fault::PauseRegion { region: "centralus".into() }));
        assert_eq!(cmd[4..], ["pause", "node-b1", "node-b2"]);
        assert_eq!(run_step(d.plan(&Fault::Stop { node: "node-b1".into() }))[4..], ["stop", "-t", "20", "node-b1"]);
        // A full partition takes the `to` region's nodes off the WAN network.
        let full = Fault::Partition { from: "eastus2".into(), to: "centralus".into(), one_way: false };
        assert_eq!(
            d.plan(&full).ok(),
            Some(vec![DockerStep::Disconnect("node-b1".into()), DockerStep::Disconnect("node-b2".into())])
        );
        assert_eq!(
            d.network_command(false, "node-b1", "c0ffee"),
            ["docker", "network", "disconnect", "attestd_wan", "c0ffee"]
        );
        assert_eq!(
            d.network_command(true, "node-b1", "c0ffee"),
            ["docker", "network", "connect", "--alias", "node-b1", "attestd_wan", "c0ffee"]
        );
        // Without the WAN API, a one-way cut and latency are refused.
        let one_way = Fault::Partition { from: "eastus2".into(), to: "centralus".into(), one_way: true };
        assert!(matches!(d.plan(&one_way), Err(FaultError::Unsupported { .. })));
        let slow = Fault::WanLatency { one_way_ms: 50, jitter_ms: 5 };
        assert!(matches!(d.plan(&slow), Err(FaultError::Unsupported { .. })));
        assert!(matches!(d.plan(&Fault::Kill { node: "node-z9".into() }), Err(FaultError::UnknownNode(_))));
        assert!(matches!(d.plan(&Fault::FillDisk { node: "node-a1".into() }), Err(FaultError::Unsupported { .. })));
        assert_eq!(d.plan(&Fault::Heal).ok(), Some(vec![]));
        // With it, cuts and latency go through the API; heal calls it too.
        let d = docker(Some("http://127.0.0.1:9"));
        assert_eq!(d.plan(&one_way).ok(), Some(vec![DockerStep::WanApi]));
        assert_eq!(d.plan(&slow).ok(), Some(vec![DockerStep::WanApi]));
        assert_eq!(d.plan(&Fault::Heal).ok(), Some(vec![DockerStep::WanApi]));
        assert!(matches!(d.plan(&full), Ok(ref s) if s.len() == 2));
    }

    #[test]
    fn published_addresses_parse() {
        assert_eq!(parse_published("127.0.0.1:8501\n").as_deref(), Some("127.0.0.1:8501"));
        assert_eq!(parse_published("0.0.0.0:8443\n:::8443\n").as_deref(), Some("127.0.0.1:8443"));
        assert_eq!(parse_published("[::]:7400").as_deref(), Some("127.0.0.1:7400"));
        assert_eq!(parse_published("").as_deref(), None);
        assert_eq!(parse_published(":\n").as_deref(), None);
    }

    /// Commands the fake daemon below saw (one test uses it).
    static SEEN: Mutex<Vec<Vec<String>>> = Mutex::new(Vec::new());

    /// Answers `ps -q <service>` with a made-up id and records the rest.
    fn fake_daemon(cmd: &[String], env: &[(String, String)]) -> Result<String, FaultError> {
        assert_eq!(env, [("ATTESTD_NODE_B1_PORT".to_string(), "18511".to_string())], "env reaches every command");
        if let Ok(mut seen) = SEEN.lock() {
            seen.push(cmd.to_vec());
        }
        match cmd.iter().position(|a| a == "ps") {
            Some(_) => Ok(format!("id-{}\n", cmd.last().map_or("", String::as_str))),
            None => Ok(String::new()),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_disconnects_and_heal_reconnects_the_containers() {
        let mut d = docker(None);
        d.compose.project = "drilltest".into();
        d.compose.env = vec![("ATTESTD_NODE_B1_PORT".into(), "18511".into())];
        d.runner = fake_daemon;
        let full = Fault::Partition { from: "eastus2".into(), to: "centralus".into(), one_way: false };
        assert!(d.apply(&full).await.is_ok());
        assert!(d.apply(&Fault::Heal).await.is_ok());
        // Nothing left to reconnect.
        assert_eq!(d.plan(&Fault::Heal).ok(), Some(vec![]));
        let seen: Vec<String> = SEEN.lock().map(|s| s.iter().map(|c| c.join(" ")).collect()).unwrap_or_default();
        assert_eq!(
            seen,
            [
                "docker compose -p drilltest ps -a -q node-b1",
                "docker network disconnect drilltest_wan id-node-b1",
                "docker compose -p drilltest ps -a -q node-b2",
                "docker network disconnect drilltest_wan id-node-b2",
                "docker network connect --alias node-b1 drilltest_wan id-node-b1",
                "docker network connect --alias node-b2 drilltest_wan id-node-b2",
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn docker_faults_run_their_commands() {
        fn refuse(cmd: &[String], _: &[(String, String)]) -> Result<String, FaultError> {
            Err(FaultError::Command { command: cmd.join(" "), detail: "no daemon in this test".into() })
        }
        let mut d = docker(None);
        d.runner = refuse;
        let r = d.apply(&Fault::Stop { node: "node-b1".into() }).await;
        assert!(
            matches!(r, Err(FaultError::Command { ref command, .. }) if command.contains("stop -t 20 node-b1")),
            "{r:?}"
        );
    }

    #[test]
    fn fill_disk_refuses_a_big_filesystem() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Any ordinary scratch filesystem is larger than 1 GiB on a build machine.
        match available_bytes(dir.path()) {
            Ok(free) if free > 1 << 30 => assert!(fill_disk(dir.path()).is_err()),
            _ => {}
        }
        assert!(free_disk(dir.path()).is_ok());
    }
}
