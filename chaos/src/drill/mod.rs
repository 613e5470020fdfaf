//! Failover drills: `attest-chaos drill <scenario>`.
//!
//! A drill runs against a [`Deployment`] (a local cluster it launches, or
//! an existing one given by URL), in five steps:
//!
//! 1. **prepare**: wait for a healthy cluster, import the SGX collateral the
//!    evidence vectors need, create the drill's providers, wait until every
//!    node has applied them and publishes every node's keys;
//! 2. **run**: start the status [`Monitor`] and the [`Workload`], warm up,
//!    play the scenario's script ([`scenarios`]) — faults, holds, waits —
//!    while recording every fault and every expectation window, cool down;
//! 3. **heal**: undo whatever is still broken (restart, resume, heal the
//!    WAN, free disks);
//! 4. **collect**: wait until every node converged, read every node's
//!    final state and every region's JWKS;
//! 5. **judge**: run every checker ([`crate::checker::verdicts`]) and write
//!    `history.jsonl`, `report.json`, `report.md` and `timeline.svg`.
//!
//! Scenarios are listed in [`Scenario`]; each one is a script in
//! [`scenarios`] plus the check options it asks for. Adding one (e.g. the
//! permanent primary loss of issue 9, which needs the forced promotion)
//! means a variant, a script and its expectations.

pub mod ctx;
pub mod deployment;
pub mod scenarios;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checker::durability::NodeSnapshot;
use crate::checker::verdicts::{evaluate, Check, CheckOptionsSet, Evidence, Status};
use crate::faults::{Fault, FaultInjector};
use crate::history::{Header, History, Parts};
use crate::monitor::Monitor;
use crate::report::{DrillReport, OpStats, RpoFigures};
use crate::timeline::Timeline;
use crate::workload::{Registers, Targets, VectorSet, Workload, WorkloadConfig};

pub use ctx::DrillCtx;
pub use deployment::Deployment;

/// The drills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// kill -9 the whole primary region, hold, restart it.
    PrimaryOutage,
    /// Drain the primary region (planned failover), hold, undrain (failback).
    PlannedFailover,
    /// kill -9 the whole secondary region, hold, restart it.
    SecondaryOutage,
    /// Partition the regions (both ways, then one way), heal.
    WanPartition,
    /// Kill (or SIGSTOP) the leader, again and again.
    LeaderKillLoop,
    /// Restart every node, one by one (SIGTERM, start, wait healthy).
    RollingRestart,
    /// Add WAN latency inside, then beyond the heartbeat; remove it.
    SlowWan,
    /// Partition the regions, then lose the primary before the leader
    /// switches to async: what the secondary holds is the true RPO.
    PartitionThenPrimaryLoss,
    /// Fill a node's disk (a small tmpfs; needs root), then free it.
    DiskFull,
    /// Lose the primary region for good: forced promotion of the
    /// secondary, the old primary returns fenced, re-seed, rebalance.
    PermanentPrimaryLoss,
}

impl Scenario {
    pub const ALL: [Scenario; 10] = [
        Scenario::PrimaryOutage,
        Scenario::PlannedFailover,
        Scenario::SecondaryOutage,
        Scenario::WanPartition,
        Scenario::LeaderKillLoop,
        Scenario::RollingRestart,
        Scenario::SlowWan,
        Scenario::PartitionThenPrimaryLoss,
        Scenario::DiskFull,
        Scenario::PermanentPrimaryLoss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::PrimaryOutage => "primary-outage",
            Scenario::PlannedFailover => "planned-failover",
            Scenario::SecondaryOutage => "secondary-outage",
            Scenario::WanPartition => "wan-partition",
            Scenario::LeaderKillLoop => "leader-kill-loop",
            Scenario::RollingRestart => "rolling-restart",
            Scenario::SlowWan => "slow-wan",
            Scenario::PartitionThenPrimaryLoss => "partition-then-primary-loss",
            Scenario::DiskFull => "disk-full",
            Scenario::PermanentPrimaryLoss => "permanent-primary-loss",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Scenario::PrimaryOutage => "Unplanned loss of the whole primary region (kill -9 of every node), held, then the region restarts. Expected: the gateways move attestation to the secondary at once; the secondary answers writes with a fast, explicit ControlPlaneReadOnly; the secondary holds every write acknowledged in sync mode (RPO = 0); after the restart the control plane accepts writes again and nothing acknowledged is lost.",
            Scenario::PlannedFailover => "Planned failover: every primary node is drained (/health answers 503), held, then undrained (failback). Expected: the gateways move attestation to the secondary and back without a single failed call; the control plane stays writable throughout.",
            Scenario::SecondaryOutage => "Loss of the whole secondary region, held, then it restarts. Expected: attestation unaffected; writes keep being acknowledged once the leader records the switch to async; the mode goes sync → async → (sync-recover) → sync after the restart.",
            Scenario::WanPartition => "The regions are partitioned from each other (both directions), healed, then cut one way (primary → secondary), healed. Expected: each side keeps attesting; secondary nodes answer writes ControlPlaneReadOnly; the primary stays writable (async while cut) and returns to sync after heal; nothing acknowledged is lost.",
            Scenario::LeaderKillLoop => "The Raft leader is killed with SIGKILL or frozen with SIGSTOP, round after round, and brought back. Expected: a new leader in the primary takes over, writes resume, the history stays linearizable and nothing acknowledged is lost.",
            Scenario::RollingRestart => "Every node is restarted one by one (SIGTERM, start, wait until healthy), as in an upgrade. Expected: not a single failed attestation; writes may pause during leader changes but nothing acknowledged is lost.",
            Scenario::SlowWan => "WAN latency and jitter are added between the regions: first a round trip inside the Raft heartbeat (about half of it), then one beyond it (about twice), then removed. Expected: inside the envelope writes slow down by the round trip but stay acknowledged in sync mode; beyond it the leader records the switch to async and keeps acknowledging (openraft times AppendEntries out after one heartbeat, so the secondary cannot keep up), and returns to sync once the latency is gone.",
            Scenario::PartitionThenPrimaryLoss => "The regions are partitioned, and before the leader gives up on the secondary (async_after) the whole primary region is lost. Expected: writes issued during the partition are not acknowledged in sync mode, so the secondary still holds every sync-acknowledged write (RPO = 0); after the primary restarts and the partition heals, nothing acknowledged is lost.",
            Scenario::DiskFull => "The data filesystem of one primary node is filled (a 64 MiB tmpfs; needs root), held, freed, and the node restarted. Expected: the full node reports its storage failure (/health 503, control plane `failed`) and leaves the gateways' rotation, writes keep being acknowledged by the others, writes through the full node fail cleanly (503 NodeStorageFailed, not applied) or are forwarded, and after the restart the node converges with nothing lost or corrupted.",
            Scenario::PermanentPrimaryLoss => "The whole primary region is lost and declared permanently gone (issue 9): every primary node is killed, the secondary goes read-only, and once the minimum outage has passed the operator force-promotes the secondary (attestd admin promote). Then the old primary's nodes come back with their stale state, are re-seeded one by one, and the voter majority is moved back (admin rebalance). Expected: read-only until the promotion, no sync-acknowledged write lost (RPO = 0), writes acknowledged again on the promoted secondary, the returning nodes fenced at first contact (they answer nothing, take no write, and never lead), every step in the replicated audit log, and in the end the normal topology in sync mode with nothing acknowledged lost.",
        }
    }

    /// The faults the script injects, one of each kind (`node`: a primary
    /// node to stand for the ones it picks at run time), so that a backend
    /// can refuse the scenario before it starts.
    pub fn faults(self, primary: &str, secondary: &str, node: &str) -> Vec<Fault> {
        let (p, s, n) = (primary.to_owned(), secondary.to_owned(), node.to_owned());
        let cut = |one_way| Fault::Partition { from: p.clone(), to: s.clone(), one_way };
        match self {
            Scenario::PrimaryOutage => vec![Fault::KillRegion { region: p.clone() }, Fault::StartRegion { region: p }],
            Scenario::PlannedFailover => Vec::new(),
            Scenario::SecondaryOutage => {
                vec![Fault::KillRegion { region: s.clone() }, Fault::StartRegion { region: s }]
            }
            Scenario::WanPartition => vec![cut(false), Fault::Heal, cut(true)],
            Scenario::LeaderKillLoop => vec![
                Fault::Kill { node: n.clone() },
                Fault::Start { node: n.clone() },
                Fault::Pause { node: n.clone() },
                Fault::Resume { node: n },
            ],
            Scenario::RollingRestart => vec![Fault::Stop { node: n.clone() }, Fault::Start { node: n }],
            Scenario::SlowWan => vec![Fault::WanLatency { one_way_ms: 1, jitter_ms: 0 }],
            Scenario::PartitionThenPrimaryLoss => {
                vec![cut(false), Fault::KillRegion { region: p.clone() }, Fault::Heal, Fault::StartRegion { region: p }]
            }
            Scenario::DiskFull => {
                let node = format!("node-{}", scenarios::DISK_FULL_NODE);
                vec![Fault::FillDisk { node: node.clone() }, Fault::FreeDisk { node }]
            }
            Scenario::PermanentPrimaryLoss => {
                vec![Fault::KillRegion { region: p.clone() }, Fault::StartRegion { region: p }]
            }
        }
    }

    /// Needs process control (kill, stop, pause) rather than only HTTP.
    pub fn needs_process_control(self) -> bool {
        !matches!(self, Scenario::PlannedFailover | Scenario::SlowWan | Scenario::WanPartition)
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why `backend` cannot run a script that injects `faults`: the first
/// fault it refuses, with its reason.
pub fn refusal(backend: &dyn FaultInjector, faults: &[Fault]) -> Option<String> {
    faults.iter().find_map(|f| backend.check(f).err()).map(|e| e.to_string())
}

/// How to run a drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// Shorter holds and fewer rounds, for CI.
    pub short: bool,
    /// Where the history and the reports go.
    pub out_dir: PathBuf,
    /// The shared evidence vectors.
    pub vectors: PathBuf,
    /// Show a progress bar on stderr.
    pub progress: bool,
    pub seed: u64,
}

/// Durations of a scenario's phases.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub warmup: Duration,
    pub hold: Duration,
    pub cooldown: Duration,
    pub rounds: usize,
}

impl Pace {
    pub fn of(short: bool) -> Self {
        if short {
            Pace {
                warmup: Duration::from_secs(3),
                hold: Duration::from_secs(8),
                cooldown: Duration::from_secs(5),
                rounds: 2,
            }
        } else {
            Pace {
                warmup: Duration::from_secs(10),
                hold: Duration::from_secs(30),
                cooldown: Duration::from_secs(15),
                rounds: 5,
            }
        }
    }
}

/// What a finished drill produced.
pub struct DrillOutcome {
    pub report: DrillReport,
    pub dir: PathBuf,
}

/// Providers the writers write to, unique to the run.
fn drill_providers(run_tag: &str) -> Vec<String> {
    (0..3).map(|i| format!("drill{}{i}", &run_tag[..run_tag.len().min(6)])).collect()
}

/// Bound on the leader's return to the primary region after a scenario.
const LEADER_HOME_WITHIN: Duration = Duration::from_secs(60);

/// Runs `scenario` against `dep` and writes its report under `opts.out_dir`.
pub async fn run(scenario: Scenario, mut dep: Deployment, opts: &DrillOptions) -> anyhow::Result<DrillOutcome> {
    let vectors = Arc::new(VectorSet::azure_sdk_oe(&opts.vectors)?);
    let run_tag: String = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let providers = drill_providers(&run_tag);
    let pace = Pace::of(opts.short);
    std::fs::create_dir_all(&opts.out_dir).with_context(|| format!("creating {}", opts.out_dir.display()))?;

    eprintln!(
        "drill {scenario}: preparing the deployment ({} nodes, {} gateways)",
        dep.nodes.len(),
        dep.gateways.len()
    );
    dep.prepare(&vectors, &providers).await.context("preparing the deployment")?;

    let header = Header {
        version: 1,
        scenario: scenario.name().into(),
        started_at: String::new(),
        started_unix_ms: 0,
        primary_region: dep.primary_region.clone(),
        secondary_region: dep.secondary_region.clone(),
        nodes: dep.nodes.iter().map(|n| (n.name.clone(), n.region.clone())).collect(),
    };
    let history = History::create(Some(&opts.out_dir.join("history.jsonl")), header)?;
    let monitor = Monitor::start(dep.nodes.clone(), dep.http.clone(), history.clone(), Duration::from_millis(200));
    let mut wcfg = WorkloadConfig::light(&dep.attest_provider, providers.clone(), &run_tag);
    wcfg.seed = opts.seed;
    let mut control = dep.gateways.clone();
    control.extend(dep.nodes.iter().cloned());
    let targets = Targets { data: dep.gateways.clone(), control };
    let workload = Workload::start(&wcfg, targets, vectors.clone(), dep.http.clone(), history.clone());

    let mut check_opts = CheckOptionsSet::default();
    let script_result = {
        let mut ctx = DrillCtx::new(&mut dep, history.clone(), workload.counters.clone(), opts.progress, pace, &wcfg);
        ctx.step("warm-up");
        ctx.hold(pace.warmup).await;
        history.mark("warm-up done");
        let r = scenarios::play(scenario, &mut ctx, &mut check_opts).await;
        if let Err(e) = &r {
            history.mark(&format!("scenario aborted: {e:#}"));
        }
        if r.is_ok() && !ctx.dep.nodes.is_empty() {
            // Every scenario ends in the normal topology, where the leader
            // belongs in the primary (the recovery check judges the last
            // leader the monitor saw).
            let primary = ctx.dep.primary_region.clone();
            ctx.step(&format!("waiting for the leader to be in {primary}"));
            if let Err(e) = ctx.dep.wait_leader_in(&primary, LEADER_HOME_WITHIN).await {
                history.mark(&format!("leader not back in the primary region: {e:#}"));
            }
        }
        ctx.step("cool-down");
        ctx.hold(pace.cooldown).await;
        ctx.close_all();
        ctx.finish();
        r
    };
    workload.stop().await;
    monitor.stop().await;
    history.mark("workload stopped");

    eprintln!("drill {scenario}: healing and collecting the final state");
    let heal_errors = dep.heal_everything().await;
    let final_state = collect_final(&dep, &wcfg.registers()).await;
    let jwks = dep.jwks_by_region().await;
    history.flush()?;

    let entries = history.entries();
    let parts = Parts::split(&entries);
    let ev = Evidence {
        parts: &parts,
        final_state,
        jwks_by_region: jwks,
        vectors: &vectors,
        now_unix: crate::history::unix_now(),
    };
    let (mut checks, measurements) = evaluate(&ev, &check_opts);
    checks.insert(
        0,
        Check {
            id: "scenario".into(),
            title: "the scenario's script ran to the end and everything was healed".into(),
            status: if script_result.is_ok() && heal_errors.is_empty() { Status::Pass } else { Status::Fail },
            summary: match (&script_result, heal_errors.is_empty()) {
                (Ok(()), true) => "script completed; cluster healed".into(),
                (Err(e), _) => format!("script aborted: {e:#}"),
                (Ok(()), false) => format!("healing failed: {}", heal_errors.join("; ")),
            },
            details: Value::Null,
        },
    );
    let rpo = checks.iter().find(|c| c.id == "rpo" && c.status != Status::Skipped).map(|c| RpoFigures {
        acknowledged_writes_missing: c.details["missing_any_mode"].as_u64().unwrap_or(0) as usize,
        sync_acknowledged_writes_lost: c.details["lost_write_ids"].as_array().map_or(0, Vec::len),
        window_s: c.details["rpo_window_s"].as_f64().unwrap_or(0.0),
    });
    let regions = [dep.primary_region.clone(), dep.secondary_region.clone()];
    let timeline = Timeline::build(&parts, &regions, &measurements.mode_changes);
    let mut files = BTreeMap::new();
    files.insert("history".to_string(), "history.jsonl".to_string());
    match timeline.svg(&format!("attest-chaos drill {scenario}")) {
        Ok(svg) => {
            std::fs::write(opts.out_dir.join("timeline.svg"), svg).context("writing timeline.svg")?;
            files.insert("timeline".to_string(), "timeline.svg".to_string());
        }
        Err(e) => eprintln!("{e}"),
    }
    let report = DrillReport {
        scenario: scenario.name().into(),
        description: scenario.description().into(),
        short: opts.short,
        backend: dep.backend().into(),
        primary_region: dep.primary_region.clone(),
        started_at: parts.header.as_ref().map(|h| h.started_at.clone()).unwrap_or_default(),
        duration_s: parts.end_ns() as f64 / 1e9,
        verdict: DrillReport::verdict_of(&checks),
        checks,
        measurements,
        rpo,
        operations: OpStats::of(&parts.ops),
        faults: parts.faults.clone(),
        windows: parts.windows.clone(),
        files,
    };
    report.write(&opts.out_dir).context("writing the report")?;
    Ok(DrillOutcome { report, dir: opts.out_dir.clone() })
}

/// Waits (bounded) until every node reports the same state digest, then
/// reads each node's register values.
async fn collect_final(dep: &Deployment, registers: &Registers) -> Result<Vec<NodeSnapshot>, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    loop {
        let mut states = Vec::new();
        for n in &dep.nodes {
            match dep.admin_state(&n.url).await {
                Ok(s) => states.push((n.name.clone(), s)),
                Err(e) => last = format!("{}: {e:#}", n.name),
            }
        }
        if states.len() == dep.nodes.len() {
            let digests: std::collections::BTreeSet<&str> =
                states.iter().map(|(_, s)| s["digest"].as_str().unwrap_or("")).collect();
            if digests.len() == 1 {
                return Ok(states
                    .into_iter()
                    .map(|(node, s)| NodeSnapshot { node, values: registers.values(&s), applied_log: None })
                    .collect());
            }
            let per_node: Vec<String> = states
                .iter()
                .map(|(n, s)| {
                    format!(
                        "{n}@{}:{}",
                        s["appliedIndex"],
                        &s["digest"].as_str().unwrap_or("")[..8.min(s["digest"].as_str().unwrap_or("").len())]
                    )
                })
                .collect();
            last = format!("digests differ: {}", per_node.join(", "));
        }
        if tokio::time::Instant::now() >= deadline {
            // Judge what the nodes hold anyway: the durability check names the differences.
            if states.len() == dep.nodes.len() {
                return Ok(states
                    .into_iter()
                    .map(|(node, s)| NodeSnapshot { node, values: registers.values(&s), applied_log: None })
                    .collect());
            }
            return Err(format!("the nodes did not converge within 120 s: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Loads a report written by [`run`].
pub fn load_report(dir: &Path) -> anyhow::Result<DrillReport> {
    let p = dir.join("report.json");
    serde_json::from_slice(&std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?)
        .with_context(|| format!("parsing {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{ComposeTarget, DockerFaults};

    fn docker(wan: Option<&str>) -> DockerFaults {
        let target = ComposeTarget {
            command: vec!["docker-compose".into()],
            project: "attestd".into(),
            files: Vec::new(),
            env: Vec::new(),
        };
        match DockerFaults::new(target, "eastus2", "centralus", wan) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    fn refused(s: Scenario, d: &DockerFaults) -> Option<String> {
        refusal(d, &s.faults("eastus2", "centralus", "node-a1"))
    }

    #[test]
    fn containers_refuse_only_what_they_cannot_do() {
        let d = docker(None);
        for s in [
            Scenario::PrimaryOutage,
            Scenario::PlannedFailover,
            Scenario::SecondaryOutage,
            Scenario::LeaderKillLoop,
            Scenario::RollingRestart,
            Scenario::PartitionThenPrimaryLoss,
        ] {
            assert_eq!(refused(s, &d), None, "{s}");
        }
        // One-way cuts and latency need the wan service's control API.
        for s in [Scenario::WanPartition, Scenario::SlowWan] {
            assert!(refused(s, &d).is_some_and(|why| why.contains("control API")), "{s}");
        }
        assert!(refused(Scenario::DiskFull, &d).is_some_and(|why| why.contains("size-limited")));
        let d = docker(Some("http://127.0.0.1:9"));
        assert_eq!(refused(Scenario::WanPartition, &d), None);
        assert_eq!(refused(Scenario::SlowWan, &d), None);
        assert!(refused(Scenario::DiskFull, &d).is_some());
    }
}
