//! `attest-chaos`: run a local two-region attestd cluster, inject faults,
//! run failover drills with their reports, and benchmarks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use attest_chaos::cluster::{Cluster, ClusterSpec, GatewayHandle};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "attest-chaos",
    version,
    about = "Local two-region attestd clusters, fault injection, drills and benchmarks",
    long_about = "attest-chaos starts a real attestd cluster on this machine (every node its own \
process with its own RocksDB and TLS certificates) and breaks it on purpose.\n\n\
Start a cluster and keep it running:  attest-chaos up --dir .cluster\n\
Then, from another shell:             attestd admin status --url https://127.0.0.1:<port> --ca .cluster/certs/ca.pem\n\
Run a failover drill:                 attest-chaos drill primary-outage --short (see docs/drills/README.md)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a local cluster (3 nodes in the primary region, 2 in the
    /// secondary, mutual TLS) with one gateway per region and keep it
    /// running until Ctrl-C (or SIGTERM/SIGHUP), which stops every process.
    /// A node or gateway that exits meanwhile (say, `kill -9 <pid>` to try
    /// a failure) is reported with its last log lines; the rest keeps
    /// running.
    Up {
        /// Root directory for certificates, configs, data and logs.
        #[arg(long, default_value = ".cluster")]
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        primary_nodes: usize,
        #[arg(long, default_value_t = 2)]
        secondary_nodes: usize,
        #[arg(long, default_value = "eastus2")]
        primary_region: String,
        #[arg(long, default_value = "centralus")]
        secondary_region: String,
        /// Verify evidence at this RFC 3339 time instead of the clock, so
        /// recorded vectors (with long-expired collateral) attest, e.g.
        /// 2025-10-01T00:00:00Z for the SGX vectors. Demos and replays only.
        #[arg(long)]
        pin_verification_time: Option<String>,
        /// Accept collateral this many days past its nextUpdate.
        #[arg(long, default_value_t = 0)]
        collateral_grace_days: u64,
        /// Route inter-region Raft traffic through userspace WAN links
        /// with this round-trip time (0 = regions talk directly).
        #[arg(long, default_value_t = 0)]
        wan_rtt_ms: u64,
    },
    /// A standalone userspace WAN emulator: TCP proxies with latency,
    /// jitter, bandwidth, loss and cuts, steered over an HTTP control API
    /// (GET /links, POST /links/{name}, POST /regions/{a}/{b}, POST /heal).
    /// Used where `tc netem` is unavailable, e.g. between compose regions.
    Wan(attest_chaos::wan::WanProxyArgs),
    /// Run a failover drill: a workload of attestations and control-plane
    /// writes while the scenario injects its faults, then every check over
    /// the recorded history. Writes history.jsonl, report.json, report.md
    /// and timeline.svg; exits non-zero when a check fails.
    Drill(Box<DrillArgs>),
    /// Benchmarks; results print as Markdown rows for BENCHMARKS.md.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(clap::Args)]
struct DrillArgs {
    /// The scenario (or `all`, one after the other).
    #[arg(value_parser = parse_scenarios)]
    scenario: ScenarioChoice,
    /// Short holds and fewer rounds (what CI runs).
    #[arg(long)]
    short: bool,
    /// Where reports go (one sub-directory per scenario with `all`).
    #[arg(long, default_value = "drill-reports")]
    out: PathBuf,
    /// Scratch directory of the local cluster.
    #[arg(long, default_value = "/tmp/attest-drill")]
    dir: PathBuf,
    /// The shared evidence vectors (../shared/vectors of the checkout).
    #[arg(long, env = "ATTEST_VECTORS", default_value = "../shared/vectors")]
    vectors: PathBuf,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// No progress line (e.g. in CI logs).
    #[arg(long)]
    no_progress: bool,
    /// Run against an existing deployment instead of a local cluster:
    /// the gateway of each region as `<region>=<url>` (repeat), or one URL.
    #[arg(long = "url")]
    urls: Vec<String>,
    /// A node of the existing deployment as `<name>=<region>=<url>` (repeat).
    #[arg(long = "node")]
    nodes: Vec<String>,
    /// CA certificate of the existing deployment.
    #[arg(long, env = "ATTESTD_CA")]
    ca: Option<PathBuf>,
    /// Owner bearer token for the existing deployment.
    #[arg(long, env = "ATTESTD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long, default_value = "eastus2")]
    primary_region: String,
    #[arg(long, default_value = "centralus")]
    secondary_region: String,
    /// Run against the compose deployment of deploy/ and inject faults with
    /// Docker (kill, pause, network disconnect). Without --url, the
    /// published ports, the CA and an Owner token are found through compose.
    #[arg(long)]
    docker: bool,
    /// Compose files for --docker, as given to `up` (repeat; default:
    /// compose's own lookup from the current directory).
    #[arg(long = "compose-file")]
    compose_files: Vec<PathBuf>,
    /// Compose project name for --docker.
    #[arg(long, env = "COMPOSE_PROJECT_NAME", default_value = "attestd")]
    compose_project: String,
    /// A variable the deployment was started with, as `KEY=VALUE`, passed
    /// to every compose command (repeat; e.g. ATTESTD_IMAGE_TAG=dev).
    #[arg(long = "compose-env")]
    compose_env: Vec<String>,
    /// The compose command, e.g. `docker-compose` (default: `docker compose`
    /// if it works, else `docker-compose`).
    #[arg(long)]
    compose_command: Option<String>,
    /// Control API of the WAN emulator between the regions.
    #[arg(long)]
    wan_url: Option<String>,
}

#[derive(Clone, Debug)]
enum ScenarioChoice {
    All,
    One(attest_chaos::drill::Scenario),
}

fn parse_scenarios(s: &str) -> Result<ScenarioChoice, String> {
    use attest_chaos::drill::Scenario;
    if s == "all" {
        return Ok(ScenarioChoice::All);
    }
    Scenario::parse(s).map(ScenarioChoice::One).ok_or_else(|| {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        format!("unknown scenario '{s}'; one of: all, {}", names.join(", "))
    })
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Control-plane write latency and throughput on a fresh local 3 + 2
    /// cluster, optionally with WAN latency between the regions, and the
    /// same load against a local 3-member etcd in the same run. Every row
    /// also gives the machine's CPU busy and steal share over its measured
    /// window: on a virtual machine compare rows only at similar (low)
    /// steal, and use --rounds when the host is noisy. "server CPU
    /// µs/write" is the CPU time of the system's own processes (all five
    /// attestd nodes, or the three etcd members) per acknowledged write:
    /// when the machine is saturated, that is what throughput trades
    /// against, and it moves less with the host than writes/s do.
    ControlPlane {
        /// Concurrent closed-loop clients (comma-separated list to sweep).
        #[arg(long, default_value = "1,64", value_delimiter = ',')]
        clients: Vec<usize>,
        /// Measured seconds per run (after a 2 s warm-up).
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        #[arg(long, default_value_t = 1024)]
        value_bytes: usize,
        /// Round-trip time to inject between the regions (0 = loopback).
        #[arg(long, default_value = "0,20", value_delimiter = ',')]
        wan_rtt_ms: Vec<u64>,
        /// Also measure etcd (Debian etcd-server) with the same load, twice:
        /// plaintext (etcd's default) and secured like attestd (TLS to
        /// clients, mutual TLS between members).
        #[arg(long)]
        etcd: bool,
        /// Token algorithms of the bench provider (comma-separated): MAA
        /// answers every policy write with a policy result token signed by
        /// the provider's key, so RSA signing is part of each write.
        #[arg(long, default_value = "RS256", value_delimiter = ',')]
        token_algs: Vec<String>,
        /// Also run each WAN setting with express shipping to the secondary
        /// off (`raft.ship_to_secondary = false`), for comparison.
        #[arg(long)]
        compare_no_ship: bool,
        /// The load generator speaks HTTP/1.1 to attestd and etcd alike, one
        /// connection per client (as most SDKs do), instead of HTTP/2
        /// wherever TLS offers it (one multiplexed connection per node;
        /// plaintext etcd is HTTP/1.1 either way).
        #[arg(long)]
        http1: bool,
        /// Repeat the whole comparison this many times, fresh clusters each
        /// time, etcd first in odd rounds and attestd first in even ones.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Async worker threads per attestd node (`[runtime]
        /// worker_threads`; 0 = one per CPU). Default: 1 when the nodes
        /// (3 + 2) outnumber the machine's CPUs (as docs/operations.md
        /// advises for packed nodes), else 0.
        #[arg(long)]
        node_worker_threads: Option<usize>,
        /// Each client pauses this long after each write (0 = closed loop
        /// back to back). A pause lets the machine idle between writes as
        /// it does while a write crosses the WAN, so a 0 ms row with
        /// `--think-ms 20` shows what idling costs a write, for etcd too.
        #[arg(long, default_value_t = 0)]
        think_ms: u64,
        /// Scratch directory.
        #[arg(long, default_value = "/tmp/attest-bench")]
        dir: PathBuf,
    },
    /// End-to-end `POST /attest/SgxEnclave` on one node of a fresh local
    /// cluster over HTTPS keep-alive — peak (closed loop) and latency at
    /// 80 % of peak (open loop) — next to the in-process bound of the same
    /// pipeline (verify + policy + sign) on the same CPUs, per algorithm.
    /// By default the node under test gets half the CPUs and the load
    /// generator and other nodes the other half (taskset), and the bound
    /// runs on the node's half. Build with --release first: debug figures
    /// mean nothing.
    Attest {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Measured seconds per phase.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Token algorithms (comma-separated): RS256, PS256, ES256.
        #[arg(long, default_value = "RS256,ES256", value_delimiter = ',')]
        algs: Vec<String>,
        /// The shared evidence vectors (../shared/vectors of the checkout).
        #[arg(long, env = "ATTEST_VECTORS", default_value = "../shared/vectors")]
        vectors: PathBuf,
        #[arg(long, default_value = "/tmp/attest-bench-attest")]
        dir: PathBuf,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Run the node and the load generator on all CPUs together,
        /// instead of the node on one half and everything else on the other.
        #[arg(long)]
        shared_cores: bool,
    },
    /// Gateway proxy overhead next to HAProxy (same backends, same TLS,
    /// health checks on; `wrk` as the load tool for both), then failover
    /// time and client errors when the primary region is killed under
    /// attestation load, per probe interval. Needs wrk and haproxy.
    Gateway {
        /// wrk connections for the overhead runs.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Probe intervals (seconds, comma-separated) for the failover runs.
        #[arg(long, default_value = "1,10", value_delimiter = ',')]
        probe_intervals: Vec<u64>,
        /// Tolerated probe failures (Traffic Manager's best case is 0).
        #[arg(long, default_value_t = 0)]
        tolerated_failures: u32,
        /// Attest clients during the failover runs.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, env = "ATTEST_VECTORS", default_value = "../shared/vectors")]
        vectors: PathBuf,
        #[arg(long, default_value = "/tmp/attest-bench-gateway")]
        dir: PathBuf,
        /// Skip the overhead or the failover part.
        #[arg(long)]
        skip_overhead: bool,
        #[arg(long)]
        skip_failover: bool,
        /// Overhead rounds per proxy (alternating gateway and HAProxy);
        /// the table gives every run, then the medians.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Run proxies, wrk and nodes on all CPUs together, instead of the
        /// proxies on one half of the CPUs and wrk and the nodes on the other.
        #[arg(long)]
        shared_cores: bool,
    },
    /// Latency of a small append + fdatasync on the disk under --dir after
    /// each idle gap: what a synced log append costs this disk when writes
    /// come in a steady stream and when they come one every few
    /// milliseconds (one client across a WAN). On virtual machines the
    /// second is often several times the first.
    Disk {
        /// Idle milliseconds before each append (comma-separated).
        #[arg(long, default_value = "0,1,5,20", value_delimiter = ',')]
        gaps_ms: Vec<u64>,
        /// Appends per gap.
        #[arg(long, default_value_t = 300)]
        samples: usize,
        /// Bytes per append (a one-policy log entry is ~1.4 KB).
        #[arg(long, default_value_t = 1400)]
        bytes: usize,
        /// Directory on the disk to measure (a node's data disk).
        #[arg(long, default_value = "/tmp/attest-bench-disk")]
        dir: PathBuf,
    },
    /// Time from process start to serving with N policies stored.
    Restart {
        #[arg(long, default_value_t = 10_000)]
        policies: usize,
        /// Bytes of each policy's text (0: a minimal policy of ~85 bytes).
        /// Larger policies make a longer log after the last snapshot, which
        /// a restart re-applies.
        #[arg(long, default_value_t = 0)]
        policy_bytes: usize,
        /// Times each policy is written (each time new text): the log then
        /// holds more than the state, as after repeated policy updates.
        #[arg(long, default_value_t = 1)]
        writes_per_policy: usize,
        #[arg(long, default_value = "/tmp/attest-bench-restart")]
        dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    match cli.cmd {
        Cmd::Up {
            dir,
            primary_nodes,
            secondary_nodes,
            primary_region,
            secondary_region,
            pin_verification_time,
            collateral_grace_days,
            wan_rtt_ms,
        } => rt.block_on(async {
            let mut spec = ClusterSpec::local(dir.clone());
            spec.primary_nodes = primary_nodes;
            spec.secondary_nodes = secondary_nodes;
            spec.primary_region = primary_region;
            spec.secondary_region = secondary_region;
            spec.pinned_verification_time = pin_verification_time;
            spec.collateral_grace_s = collateral_grace_days * 86_400;
            spec.wan = wan_rtt_ms > 0;
            spec.wan_one_way_ms = wan_rtt_ms / 2;
            // A fresh run starts from an empty directory: the launcher assigns
            // new ports and a cluster cannot change its members' addresses.
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
            }
            eprintln!("starting {} + {} nodes under {} ...", primary_nodes, secondary_nodes, dir.display());
            let mut cluster = Cluster::launch(spec, Duration::from_secs(120)).await?;
            println!("cluster is up (CA: {})", cluster.ca_path().display());
            for n in cluster.nodes.values() {
                println!(
                    "  node {} [{}]  pid {}  api https://{}  raft {}  log {}",
                    n.id,
                    n.region,
                    n.pid().unwrap_or_default(),
                    n.api_addr,
                    n.raft_addr,
                    n.log.display()
                );
            }
            let mut gateways = cluster.start_gateways(Duration::from_secs(30)).await?;
            for g in &gateways {
                println!(
                    "  gateway [{}]  pid {}  https://{}  status page https://{}/gateway/  log {}",
                    g.region,
                    g.pid(),
                    g.addr,
                    g.addr,
                    g.log.display()
                );
            }
            let certs = cluster.ca_path().parent().map(|p| p.display().to_string()).unwrap_or_default();
            println!("\ntry (attestd is in $CARGO_TARGET_DIR/debug):");
            println!(
                "  export ATTESTD_URL=https://{} ATTESTD_CA={}",
                gateways.first().map(|g| g.addr.clone()).unwrap_or_default(),
                cluster.ca_path().display()
            );
            println!("  export ATTESTD_TOKEN=$(attestd dev-token --dir {certs} --role Owner)");
            println!("  attestd admin status --url {}", cluster.url(1));
            // Listening before the prompt: a Ctrl-C right after it must not
            // kill `up` by the default action and orphan the nodes.
            let stop = StopSignals::listen()?;
            println!("press Ctrl-C to stop");
            watch_until_stopped(&mut cluster, &mut gateways, stop).await?;
            drop(gateways);
            drop(cluster);
            Ok(())
        }),
        Cmd::Bench { what } => rt.block_on(bench(what)),
        Cmd::Drill(args) => {
            let failed = rt.block_on(drill(*args))?;
            if failed {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Wan(args) => rt.block_on(attest_chaos::wan::run_wan_proxy(args)).context("running the WAN emulator"),
    }
}

/// SIGINT (Ctrl-C), SIGTERM (`kill`, a process manager) and SIGHUP (the
/// terminal closed) all stop `up` the same way: every process it started
/// is stopped before it exits, none is left running orphaned.
struct StopSignals([tokio::signal::unix::Signal; 3]);

impl StopSignals {
    fn listen() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let on = |kind: SignalKind| signal(kind).context("installing a signal handler");
        Ok(Self([on(SignalKind::interrupt())?, on(SignalKind::terminate())?, on(SignalKind::hangup())?]))
    }

    async fn recv(&mut self) {
        let [int, term, hup] = &mut self.0;
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
}

/// Waits for a stop signal while reporting (and reaping) every node or
/// gateway that exits on its own or is killed by hand: the rest keeps
/// serving, as it would after losing that process in production.
async fn watch_until_stopped(
    cluster: &mut Cluster,
    gateways: &mut Vec<GatewayHandle>,
    mut stop: StopSignals,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.recv() => return Ok(()),
            _ = tick.tick() => {}
        }
        for (id, status) in cluster.reap_exited() {
            let (region, log) =
                cluster.nodes.get(&id).map(|n| (n.region.clone(), n.log.display().to_string())).unwrap_or_default();
            eprintln!(
                "node {id} [{region}] exited ({status}); the other nodes keep running. Last lines of {log}:\n{}",
                cluster.tail_log(id)
            );
        }
        gateways.retain_mut(|g| match g.exit_status() {
            None => true,
            Some(status) => {
                eprintln!("gateway [{}] exited ({status}); see {}", g.region, g.log.display());
                false
            }
        });
    }
}

/// Runs the chosen drills; true when one of them failed.
async fn drill(args: DrillArgs) -> anyhow::Result<bool> {
    use attest_chaos::drill::{self, Deployment, DrillOptions, Scenario};
    let scenarios: Vec<Scenario> = match args.scenario {
        ScenarioChoice::All => Scenario::ALL.to_vec(),
        ScenarioChoice::One(s) => vec![s],
    };
    let remote = !args.urls.is_empty() || args.docker;
    let single = !matches!(args.scenario, ScenarioChoice::All);
    let target = if args.docker { Some(compose_target(&args)?) } else { None };
    let mut failed = false;
    let mut summary = Vec::new();
    for scenario in scenarios {
        let out = if matches!(args.scenario, ScenarioChoice::All) {
            args.out.join(scenario.name())
        } else {
            args.out.clone()
        };
        let opts = DrillOptions {
            short: args.short,
            out_dir: out.clone(),
            vectors: args.vectors.clone(),
            progress: !args.no_progress,
            seed: args.seed,
        };
        let dep = if remote {
            if scenario.needs_process_control() && !args.docker {
                eprintln!("skipping {scenario}: it kills or pauses processes; run it locally or with --docker");
                summary.push(format!("{scenario}: skipped (needs process control)"));
                continue;
            }
            match &target {
                Some(target) if args.urls.is_empty() => {
                    Deployment::compose(drill::deployment::ComposeConfig {
                        target: target.clone(),
                        primary_region: args.primary_region.clone(),
                        secondary_region: args.secondary_region.clone(),
                        scratch: args.dir.join("compose"),
                        wan_url: args.wan_url.clone(),
                        ca: args.ca.clone(),
                        token: args.token.clone(),
                    })
                    .await?
                }
                _ => Deployment::remote(remote_config(&args, target.clone())?)?,
            }
        } else {
            let dir = args.dir.join(scenario.name());
            Deployment::local(&dir, |spec| drill::scenarios::local_spec(scenario, spec)).await?
        };
        if let Some(why) = dep.refusal(scenario) {
            let msg = format!("{scenario} cannot run against this deployment ({} faults): {why}", dep.backend());
            if single {
                anyhow::bail!(msg);
            }
            eprintln!("refusing {msg}");
            summary.push(format!("{scenario}: refused ({why})"));
            continue;
        }
        let outcome = drill::run(scenario, dep, &opts).await?;
        let r = &outcome.report;
        let verdict = format!("{:?}", r.verdict).to_uppercase();
        eprintln!("drill {scenario}: {verdict} — report in {}", out.join("report.md").display());
        for c in r.failed_checks() {
            eprintln!("  FAILED {}: {}", c.id, c.summary);
        }
        failed |= r.verdict == attest_chaos::checker::verdicts::Status::Fail;
        summary.push(format!("{scenario}: {verdict}"));
    }
    if summary.len() > 1 {
        eprintln!("\n{}", summary.join("\n"));
    }
    Ok(failed)
}

/// The compose project `--docker` works on.
fn compose_target(args: &DrillArgs) -> anyhow::Result<attest_chaos::faults::ComposeTarget> {
    use attest_chaos::faults::{detect_compose, run_command, ComposeTarget};
    let command = match &args.compose_command {
        Some(c) => c.split_whitespace().map(str::to_owned).collect(),
        None => detect_compose(run_command)?,
    };
    let env = args
        .compose_env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(anyhow::anyhow!("--compose-env wants KEY=VALUE, got '{kv}'")),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ComposeTarget { command, project: args.compose_project.clone(), files: args.compose_files.clone(), env })
}

fn remote_config(
    args: &DrillArgs,
    docker: Option<attest_chaos::faults::ComposeTarget>,
) -> anyhow::Result<attest_chaos::drill::deployment::RemoteConfig> {
    let gateways = args
        .urls
        .iter()
        .map(|u| match u.split_once('=') {
            Some((region, url)) if !url.is_empty() => (region.to_string(), url.to_string()),
            _ => (args.primary_region.clone(), u.clone()),
        })
        .collect();
    let nodes = args
        .nodes
        .iter()
        .map(|n| {
            let mut parts = n.splitn(3, '=');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(name), Some(region), Some(url)) => Ok((name.to_string(), region.to_string(), url.to_string())),
                _ => Err(anyhow::anyhow!("--node wants <name>=<region>=<url>, got '{n}'")),
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let token = args.token.clone().context("an Owner bearer token is needed (--token or ATTESTD_TOKEN)")?;
    Ok(attest_chaos::drill::deployment::RemoteConfig {
        primary_region: args.primary_region.clone(),
        secondary_region: args.secondary_region.clone(),
        gateways,
        nodes,
        ca: args.ca.clone(),
        token,
        docker,
        wan_url: args.wan_url.clone(),
    })
}

async fn bench(what: BenchCmd) -> anyhow::Result<()> {
    match what {
        BenchCmd::ControlPlane {
            clients,
            seconds,
            value_bytes,
            wan_rtt_ms,
            etcd,
            token_algs,
            compare_no_ship,
            http1,
            rounds,
            node_worker_threads,
            think_ms,
            dir,
        } => {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            for a in &token_algs {
                anyhow::ensure!(
                    attest_node::token::TokenAlg::parse(a).is_some(),
                    "unknown token algorithm {a} (RS256, ES256 or PS256)"
                );
            }
            let run = ControlPlaneRun {
                clients,
                duration: Duration::from_secs(seconds),
                value_bytes,
                wan_rtt_ms,
                token_algs,
                compare_no_ship,
                http1,
                think: Duration::from_millis(think_ms),
                worker_threads: node_worker_threads.unwrap_or_else(|| {
                    let spec = ClusterSpec::local(&dir);
                    packed_worker_threads(spec.primary_nodes + spec.secondary_nodes)
                }),
            };
            println!(
                "attestd nodes run {} async worker thread(s) each ([runtime] worker_threads = {})",
                if run.worker_threads == 0 { "one per CPU".to_string() } else { run.worker_threads.to_string() },
                run.worker_threads
            );
            println!("{}", attest_chaos::bench::LOAD_TABLE_HEADER);
            for round in 1..=rounds.max(1) {
                let dir = dir.join(format!("round-{round}"));
                let tag = if rounds > 1 { format!(" [round {round}]") } else { String::new() };
                // Alternate which system goes first: the host's share of
                // this VM's CPU drifts (see the steal column), and a fixed
                // order would hand the drift to one side.
                if etcd && round % 2 == 1 {
                    run.etcd_rows(&dir, &tag).await?;
                }
                run.attestd_rows(&dir, &tag).await?;
                if etcd && round % 2 == 0 {
                    run.etcd_rows(&dir, &tag).await?;
                }
            }
            Ok(())
        }
        BenchCmd::Restart { policies, policy_bytes, writes_per_policy, dir } => {
            bench_restart(policies, policy_bytes, writes_per_policy.max(1), dir).await
        }
        BenchCmd::Disk { gaps_ms, samples, bytes, dir } => {
            let rows = tokio::task::spawn_blocking(move || {
                attest_chaos::bench::disk_sync_latency(&dir, bytes, &gaps_ms, samples)
            })
            .await??;
            println!("{}", attest_chaos::bench::disk_markdown(bytes, &rows));
            Ok(())
        }
        BenchCmd::Gateway {
            connections,
            seconds,
            probe_intervals,
            tolerated_failures,
            clients,
            vectors,
            dir,
            skip_overhead,
            skip_failover,
            rounds,
            shared_cores,
        } => {
            use attest_chaos::bench_gateway as bg;
            if !skip_overhead {
                let split = if shared_cores { None } else { attest_chaos::bench::CoreSplit::halves() };
                let rows = bg::proxy_overhead(dir.join("overhead"), connections, seconds, rounds, split).await?;
                println!("{}", bg::proxy_markdown(&rows));
                println!("{}", bg::proxy_markdown(&bg::medians(&rows)));
            }
            if !skip_failover {
                let intervals: Vec<Duration> = probe_intervals.iter().map(|s| Duration::from_secs(*s)).collect();
                let rows =
                    bg::failover(dir.join("failover"), &vectors, &intervals, tolerated_failures, clients).await?;
                println!("{}", bg::failover_markdown(&rows));
            }
            Ok(())
        }
        BenchCmd::Attest { clients, seconds, algs, vectors, dir, json, shared_cores } => {
            let algs = algs
                .iter()
                .map(|a| attest_node::token::TokenAlg::parse(a).ok_or_else(|| anyhow::anyhow!("unknown algorithm {a}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let split = if shared_cores { None } else { attest_chaos::bench::CoreSplit::halves() };
            let results = attest_chaos::bench_attest::run(vectors, dir, clients, seconds, &algs, split).await?;
            println!("{}", attest_chaos::bench_attest::markdown(&results));
            if let Some(p) = json {
                std::fs::write(&p, serde_json::to_vec_pretty(&results)?)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            Ok(())
        }
    }
}

async fn bench_restart(policies: usize, policy_bytes: usize, rounds: usize, dir: PathBuf) -> anyhow::Result<()> {
    use futures::StreamExt;
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::local(dir);
    spec.extra_toml = "[log]\nfilter = \"warn\"\n".into();
    let mut cluster = Cluster::launch(spec, Duration::from_secs(120)).await?;
    let url = cluster.url(1);
    let http = cluster.http().clone();
    let types = ["SgxEnclave", "OpenEnclave", "TdxVm", "SevSnpVm", "Tpm"];
    let providers = policies.div_ceil(types.len());
    let bar = indicatif::ProgressBar::new((providers + policies * rounds) as u64);
    let results: Vec<bool> = futures::stream::iter(0..providers)
        .map(|p| {
            let http = http.clone();
            let url = url.clone();
            let bar = bar.clone();
            async move {
                let ok = match http
                    .put(format!("{url}/providers/p{p:05}"))
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                {
                    // Bodies are read: see the policy loop below.
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                bar.inc(1);
                ok
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    anyhow::ensure!(results.iter().all(|x| *x), "creating providers failed");
    let results: Vec<Result<(), String>> = futures::stream::iter(0..policies * rounds)
        .map(|w| {
            let i = w % policies;
            let http = http.clone();
            let url = url.clone();
            let bar = bar.clone();
            async move {
                let r = http
                    .put(format!("{url}/providers/p{:05}/policies/{}", i / types.len(), types[i % types.len()]))
                    .header("content-type", "text/plain")
                    .body(attest_chaos::bench::policy_text(w as u64, policy_bytes))
                    .send()
                    .await;
                bar.inc(1);
                // Read every body: a dropped, unread HTTP/2 response is a
                // stream reset by the client's own h2, which tears the
                // connection down (GOAWAY too_many_internal_resets) after
                // 1024 of them.
                match r {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await.map(|_| ()).map_err(|e| format!("policy {i}: {e:?}"))
                    }
                    Ok(r) => Err(format!("policy {i}: {} {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => Err(format!("policy {i}: {e:?}")),
                }
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    bar.finish_and_clear();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    anyhow::ensure!(
        failed.is_empty(),
        "storing policies failed ({} of {} writes), first: {}",
        failed.len(),
        policies * rounds,
        failed[0]
    );
    let id = 4; // a follower: restart must not depend on leading
    cluster.wait_converged(&cluster.ids(), 0, Duration::from_secs(120)).await?;
    let mut samples = Vec::new();
    let mut replayed = 0.0;
    for _ in 0..5 {
        cluster.stop(id)?;
        let t0 = std::time::Instant::now();
        cluster.start(id)?;
        cluster.wait_healthy(id, Duration::from_secs(60)).await?;
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
        // Everything applied since the start is the log it re-applied.
        let metrics = cluster.metrics_text(id).await;
        replayed = attest_chaos::cluster::metric_sum(&metrics, "attest_raft_applied_bytes_since_snapshot", "");
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let state = cluster.state(id).await?;
    let n = state["policies"].as_object().map(|m| m.len()).unwrap_or(0);
    println!("restart to serving (/health 200) with {n} policies: median {:.0} ms, min {:.0} ms, max {:.0} ms (5 restarts of a follower, {} build); the log after its snapshot it re-applied: {:.1} MiB of requests", samples[2], samples[0], samples[4], if cfg!(debug_assertions) { "debug" } else { "release" }, replayed / (1 << 20) as f64);
    Ok(())
}

/// One `bench control-plane` comparison: what every round runs.
struct ControlPlaneRun {
    clients: Vec<usize>,
    /// Measured time per row (after a 2 s warm-up).
    duration: Duration,
    value_bytes: usize,
    wan_rtt_ms: Vec<u64>,
    token_algs: Vec<String>,
    compare_no_ship: bool,
    http1: bool,
    /// `[runtime] worker_threads` of every node (0 = one per CPU).
    worker_threads: usize,
    /// Each client's pause after each write.
    think: Duration,
}

/// `[runtime] worker_threads` for `nodes` nodes on this machine: one each
/// when they outnumber the CPUs (docs/operations.md, "Runtime threads"),
/// else attestd's default (0, one per CPU).
fn packed_worker_threads(nodes: usize) -> usize {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if nodes > cpus {
        1
    } else {
        0
    }
}

impl ControlPlaneRun {
    fn spec_for(&self, clients: usize, servers: Vec<u32>) -> attest_chaos::bench::LoadSpec {
        attest_chaos::bench::LoadSpec {
            clients,
            duration: self.duration,
            warmup: Duration::from_secs(2),
            value_bytes: self.value_bytes,
            servers,
            think: self.think,
        }
    }

    /// etcd both ways: its default (plain HTTP everywhere) and secured as
    /// attestd always is (TLS to clients, mutual TLS between members).
    async fn etcd_rows(&self, dir: &Path, tag: &str) -> anyhow::Result<()> {
        use attest_chaos::bench::{etcd_puts, run_load, Etcd, EtcdSecurity};
        for (security, label, sub) in [
            (EtcdSecurity::Plaintext, "etcd 3.4 (3 members, plaintext)", "etcd"),
            (EtcdSecurity::Tls, "etcd 3.4 (3 members, TLS + peer mTLS)", "etcd-tls"),
        ] {
            let e = Etcd::start(&dir.join(sub), security, self.http1).await?;
            for c in &self.clients {
                let op = etcd_puts(e.http.clone(), e.client_urls.clone(), self.value_bytes);
                let r = run_load(&format!("{label}{tag}"), &self.spec_for(*c, e.pids()), op).await;
                println!("{}", r.row());
            }
        }
        Ok(())
    }

    /// attestd in `sync` mode at every WAN setting, one fresh cluster each.
    async fn attestd_rows(&self, dir: &Path, tag: &str) -> anyhow::Result<()> {
        use attest_chaos::bench::{attestd_policy_writes, run_load, ReleaseLateness};
        let ship_settings: &[bool] = if self.compare_no_ship { &[true, false] } else { &[true] };
        for rtt in &self.wan_rtt_ms {
            for &ship in ship_settings {
                let mut late_notes = Vec::new();
                let lateness =
                    |w: &attest_chaos::wan::WanController| ReleaseLateness::of(w.links().iter().map(|l| &l.stats));
                let mut spec = ClusterSpec::local(dir.join(format!("attestd-rtt{rtt}-ship{ship}")));
                // At 0 ms the regions talk directly: the emulator itself is
                // then not part of what is measured.
                spec.wan = *rtt > 0;
                spec.wan_one_way_ms = rtt / 2;
                // etcd's rule of thumb for the WAN: heartbeat ≈ RTT, election ≥ 10 × RTT.
                spec.raft_toml = format!(
                    "heartbeat_ms = {hb}\nelection_timeout_min_ms = {emin}\nelection_timeout_max_ms = {emax}\nasync_after_ms = 5000\nship_to_secondary = {ship}\n",
                    hb = (*rtt).max(50),
                    emin = (rtt * 10).max(1000),
                    emax = (rtt * 15).max(1500)
                );
                spec.extra_toml =
                    format!("[log]\nfilter = \"warn\"\n[runtime]\nworker_threads = {}\n", self.worker_threads);
                let cluster = Cluster::launch(spec, Duration::from_secs(120)).await?;
                let urls: Vec<String> = cluster.primary_ids().iter().map(|id| cluster.url(*id)).collect();
                if let Some(wan) = &cluster.wan {
                    let e = attest_chaos::bench::emulated_rtt(wan, rtt / 2, 3 * 1024, 100).await?;
                    println!(
                        "WAN RTT {rtt} ms as emulated: {:.2} ms added (p50 of 3 KiB echoes: {:.2} ms through the emulator, {:.2} ms direct; chunks released {} late, read {} after arrival, on average)",
                        e.through_ms - e.direct_ms,
                        e.through_ms,
                        e.direct_ms,
                        late_text(e.late_us),
                        late_text(e.read_lag_us)
                    );
                }
                let load_http = cluster.load_client(self.http1)?;
                for alg in &self.token_algs {
                    let provider = format!("bench{}", alg.to_ascii_lowercase());
                    let r = cluster
                        .http()
                        .put(format!("{}/providers/{provider}", urls[0]))
                        .header("content-type", "application/json")
                        .body(serde_json::json!({ "tokenSigningAlgorithm": alg }).to_string())
                        .send()
                        .await?;
                    anyhow::ensure!(r.status().is_success(), "creating the bench provider: {}", r.status());
                    for c in &self.clients {
                        let op =
                            attestd_policy_writes(load_http.clone(), urls.clone(), provider.clone(), self.value_bytes);
                        let label = format!(
                            "attestd sync {alg}{}, WAN RTT {rtt} ms{tag}",
                            if ship { "" } else { ", no express shipping" }
                        );
                        let wan_before = cluster.wan.as_ref().map(lateness);
                        let r = run_load(&label, &self.spec_for(*c, cluster.pids()), op).await;
                        println!("{}", r.row());
                        if let (Some(w), Some(before)) = (&cluster.wan, wan_before) {
                            let during = lateness(w).since(before);
                            late_notes.push(format!(
                                "{}: the emulator released {} chunks {} late and read them {} after arrival, on average (warm-up included)",
                                r.target,
                                during.chunks,
                                late_text(during.mean_us()),
                                late_text(during.mean_read_lag_us())
                            ));
                        }
                    }
                }
                // After the table, which a line in between would cut.
                for note in late_notes {
                    println!("{note}");
                }
            }
        }
        Ok(())
    }
}

/// A mean lateness (release or read) for the bench's report.
fn late_text(us: Option<f64>) -> String {
    us.map_or_else(|| "(no chunk)".to_string(), |us| format!("{us:.0} µs"))
}
