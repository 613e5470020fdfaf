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
//! | kill / stop / start | SIGKILL / SIGTERM (bounded wait) / spawn | `docker compose kill -s SIGKILL` / `stop` / `start` |
//! | pause / resume | SIGSTOP / SIGCONT | `docker compose pause` / `unpause` |
//! | partition (full, one-way), heal | cut the userspace WAN links | the `wan` service's control API; without it, a full partition pauses the `wan` service |
//! | WAN latency | WAN links | the `wan` service's control API |
//! | disk full / free | fill / delete a filler file on the node's size-limited data filesystem ([`crate::cluster::ClusterSpec::small_disk_mb`]) | not supported |

use std::collections::BTreeMap;
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

/// Faults on the compose deployment (`deploy/`): services `node-a1..3`,
/// `gateway-a` (primary region), `node-b1..2`, `gateway-b` (secondary),
/// `wan`, in compose project `attestd`.
pub struct DockerFaults {
    pub project: String,
    /// `-f` files; empty = compose's own lookup from the current directory.
    pub compose_files: Vec<PathBuf>,
    /// Node service → region.
    pub nodes: BTreeMap<String, String>,
    /// The `wan` service's control API, for partitions and latency.
    pub wan: Option<WanControlClient>,
    /// Runs commands; replaced in tests to see what would run.
    pub runner: fn(&[String]) -> Result<String, FaultError>,
}

impl DockerFaults {
    /// The deployment's default layout.
    pub fn compose_default(primary: &str, secondary: &str, wan_url: Option<&str>) -> Result<Self, FaultError> {
        let mut nodes = BTreeMap::new();
        for n in ["node-a1", "node-a2", "node-a3"] {
            nodes.insert(n.to_string(), primary.to_string());
        }
        for n in ["node-b1", "node-b2"] {
            nodes.insert(n.to_string(), secondary.to_string());
        }
        let wan = wan_url.map(WanControlClient::new).transpose().map_err(|e| FaultError::Other(e.to_string()))?;
        Ok(Self { project: "attestd".into(), compose_files: Vec::new(), nodes, wan, runner: run_command })
    }

    fn compose(&self, args: &[&str]) -> Vec<String> {
        let mut cmd = vec!["docker".to_string(), "compose".to_string(), "-p".to_string(), self.project.clone()];
        for f in &self.compose_files {
            cmd.push("-f".into());
            cmd.push(f.display().to_string());
        }
        cmd.extend(args.iter().map(|s| s.to_string()));
        cmd
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

    /// The commands that inject `fault`, or `None` when it goes through the WAN control API.
    pub fn commands(&self, fault: &Fault) -> Result<Option<Vec<Vec<String>>>, FaultError> {
        let one = |args: Vec<&str>| Ok(Some(vec![self.compose(&args)]));
        let many = |verb: &[&str], services: Vec<String>| {
            let mut args: Vec<&str> = verb.to_vec();
            args.extend(services.iter().map(String::as_str));
            Ok(Some(vec![self.compose(&args)]))
        };
        match fault {
            Fault::Kill { node } => one(vec!["kill", "-s", "SIGKILL", &self.node(node)?]),
            Fault::Stop { node } => one(vec!["stop", "-t", "20", &self.node(node)?]),
            Fault::Start { node } => one(vec!["start", &self.node(node)?]),
            Fault::Pause { node } => one(vec!["pause", &self.node(node)?]),
            Fault::Resume { node } => one(vec!["unpause", &self.node(node)?]),
            Fault::KillRegion { region } => many(&["kill", "-s", "SIGKILL"], self.region(region)?),
            Fault::StartRegion { region } => many(&["start"], self.region(region)?),
            Fault::PauseRegion { region } => many(&["pause"], self.region(region)?),
            Fault::ResumeRegion { region } => many(&["unpause"], self.region(region)?),
            Fault::Partition { one_way: false, .. } if self.wan.is_none() => {
                // Every inter-region byte crosses the `wan` service: pausing it cuts both ways.
                one(vec!["pause", "wan"])
            }
            Fault::Heal if self.wan.is_none() => one(vec!["unpause", "wan"]),
            Fault::Partition { .. } | Fault::Heal | Fault::WanLatency { .. } if self.wan.is_some() => Ok(None),
            Fault::Partition { .. } | Fault::WanLatency { .. } => Err(FaultError::Unsupported {
                backend: "docker",
                fault: fault.label(),
                why: "needs the wan service's control API (--wan-url)".into(),
            }),
            Fault::FillDisk { .. } | Fault::FreeDisk { .. } => Err(FaultError::Unsupported {
                backend: "docker",
                fault: fault.label(),
                why: "the compose deployment has no size-limited data volume".into(),
            }),
            // Matched above with or without the WAN API.
            Fault::Heal => Ok(None),
        }
    }
}

impl FaultInjector for DockerFaults {
    fn backend(&self) -> &'static str {
        "docker"
    }

    fn apply<'a>(&'a mut self, fault: &'a Fault) -> BoxFuture<'a, Result<(), FaultError>> {
        Box::pin(async move {
            if let Some(cmds) = self.commands(fault)? {
                for cmd in cmds {
                    let runner = self.runner;
                    tokio::task::spawn_blocking(move || runner(&cmd))
                        .await
                        .map_err(|e| FaultError::Other(e.to_string()))??;
                }
                return Ok(());
            }
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
        })
    }
}

/// Runs `cmd` and returns its stdout; a non-zero exit is an error with stderr.
pub fn run_command(cmd: &[String]) -> Result<String, FaultError> {
    let Some((prog, args)) = cmd.split_first() else {
        return Err(FaultError::Other("empty command".into()));
    };
    let out = Command::new(prog)
        .args(args)
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

    #[test]
    fn faults_serialize_with_their_action() {
        let f = Fault::Partition { from: "eastus2".into(), to: "centralus".into(), one_way: true };
        let v = serde_json::to_value(&f).unwrap_or_default();
        assert_eq!(v["action"], "partition");
        assert_eq!(serde_json::from_value::<Fault>(v).ok(), Some(f.clone()));
        assert_eq!(f.label(), "cut eastus2 → centralus");
    }

    fn docker(wan: Option<&str>) -> DockerFaults {
        match DockerFaults::compose_default("eastus2", "centralus", wan) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn docker_commands_name_compose_services() {
        let d = docker(None);
        let cmds = d.commands(&Fault::Kill { node: "node-a1".into() }).ok().flatten().unwrap_or_default();
        assert_eq!(cmds, vec![vec!["docker", "compose", "-p", "attestd", "kill", "-s", "SIGKILL", "node-a1"]]);
        let cmds = d.commands(&Fault::KillRegion { region: "eastus2".into() }).ok().flatten().unwrap_or_default();
        assert_eq!(cmds[0][4..], ["kill", "-s", "SIGKILL", "node-a1", "node-a2", "node-a3"]);
        let cmds = d.commands(&Fault::PauseRegion { region: "centralus".into() }).ok().flatten().unwrap_or_default();
        assert_eq!(cmds[0][4..], ["pause", "node-b1", "node-b2"]);
        // Without the WAN API: a full partition pauses the wan service, a one-way cut is refused.
        let full = Fault::Partition { from: "eastus2".into(), to: "centralus".into(), one_way: false };
        assert_eq!(d.commands(&full).ok().flatten().unwrap_or_default()[0][4..], ["pause", "wan"]);
        let one_way = Fault::Partition { from: "eastus2".into(), to: "centralus".into(), one_way: true };
        assert!(matches!(d.commands(&one_way), Err(FaultError::Unsupported { .. })));
        assert!(matches!(d.commands(&Fault::Kill { node: "node-z9".into() }), Err(FaultError::UnknownNode(_))));
        assert!(matches!(d.commands(&Fault::FillDisk { node: "node-a1".into() }), Err(FaultError::Unsupported { .. })));
        // With it, cuts and latency go through the API.
        let d = docker(Some("http://127.0.0.1:9"));
        assert!(matches!(d.commands(&one_way), Ok(None)));
        assert!(matches!(d.commands(&Fault::Heal), Ok(None)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn docker_faults_run_their_commands() {
        fn refuse(cmd: &[String]) -> Result<String, FaultError> {
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
