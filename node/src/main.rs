//! `attestd`: the attestd node daemon and its operator commands.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use attest_node::api::{self, AppState};
use attest_node::cli;
use attest_node::config::Config;
use attest_node::{client, pki, server};
use attest_raft::{NodeInfo, RaftNode, RaftNodeConfig};
use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: a loaded node allocates and frees
/// many short-lived buffers (TLS records, HTTP/2 frames, JSON), and glibc's
/// bins (`_int_malloc`, `malloc_consolidate`) took 7-16 % of its CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "attestd",
    version,
    about = "attestd: a geo-replicated attestation service in the spirit of Azure Attestation",
    long_about = "attestd verifies TEE evidence, evaluates tenant policies and issues signed \
attestation tokens. Nodes of two paired regions share one Raft-replicated control plane; \
each node answers attestation from its own applied copy of it.\n\n\
Start a node:        attestd run --config node.toml\n\
Make dev TLS certs:  attestd dev-pki --out certs --node node-1 --node node-2\n\
Get a dev token:     export ATTESTD_TOKEN=$(attestd dev-token --dir certs --role Owner)\n\
Look at a cluster:   attestd admin status --url https://127.0.0.1:8101 --ca certs/ca.pem\n\
Attest a quote:      attestd attest --url … --ca … --type SgxEnclave quote.bin\n\
Verify a token:      attestd token verify --url … --ca … token.jwt"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node with the given configuration (see docs/configuration.md).
    Run {
        /// TOML config; every key can be overridden by ATTESTD_<SECTION>__<KEY>.
        #[arg(long, short, env = "ATTESTD_CONFIG")]
        config: PathBuf,
    },
    /// Generate a development CA and node certificates (never for production).
    DevPki {
        /// Output directory; an existing ca.pem/ca.key there is reused.
        #[arg(long)]
        out: PathBuf,
        /// Node certificate names (files <name>.pem / <name>.key).
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// Extra DNS names or IP addresses for every node certificate.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Leave certificates that already exist untouched (an init
        /// container that runs at every start).
        #[arg(long)]
        keep_existing: bool,
    },
    /// Mint a bearer token from the development OpenID issuer that
    /// `dev-pki` creates (local clusters and tests only).
    DevToken {
        /// The dev-pki output directory.
        #[arg(long)]
        dir: PathBuf,
        /// Reader, Contributor or Owner.
        #[arg(long, default_value = "Owner")]
        role: String,
        #[arg(long, default_value = "dev-operator")]
        subject: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: i64,
    },
    /// Send evidence to /attest/{type} and print the decoded token.
    Attest(cli::AttestArgs),
    /// Verify or decode attestation tokens.
    Token {
        #[command(subcommand)]
        cmd: cli::TokenCmd,
    },
    /// Create, list, show and delete attestation providers.
    Provider {
        #[command(subcommand)]
        cmd: cli::ProviderCmd,
    },
    /// Get, set and reset attestation policies.
    Policy {
        #[command(subcommand)]
        cmd: cli::PolicyCmd,
    },
    /// Policy signer certificates of Isolated providers.
    Certificate {
        #[command(subcommand)]
        cmd: cli::CertificateCmd,
    },
    /// Attestation collateral in the replicated state.
    Collateral {
        #[command(subcommand)]
        cmd: cli::CollateralCmd,
    },
    /// Operator commands against a running node.
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
}

use cli::Target;

#[derive(Subcommand)]
enum AdminCmd {
    /// Raft role, leader, indexes, replication mode and members of the node.
    Status(Target),
    /// The node's applied control-plane state and its digest.
    State {
        #[command(flatten)]
        target: Target,
        /// Wait for the leader's commit index first.
        #[arg(long)]
        linearizable: bool,
    },
    /// GET /health: prints it, exits 0 only on 200 (a container
    /// HEALTHCHECK or readiness probe: scratch images have no curl).
    Health {
        #[command(flatten)]
        target: Target,
        /// Liveness: exit 0 on any answer from the node, 503 included, so a
        /// draining node or one still without state is not restarted.
        #[arg(long)]
        live: bool,
    },
    /// Make the node report unhealthy so gateways move traffic away.
    Drain(Target),
    /// Undo `drain`.
    Undrain(Target),
    /// New token-signing keys for this node: published first, then used;
    /// the old keys stay in /certs until every token they signed expired.
    RotateKeys(Target),
    /// DISASTER RECOVERY: make the secondary region writable after the
    /// primary region is lost for good (lossy, unsafe if the primary is in
    /// fact alive; see docs/operations.md). Shows the plan (survivors' log
    /// positions, RPO estimate) and asks for confirmation first.
    Promote {
        /// A node of the region to promote.
        #[command(flatten)]
        target: Target,
        /// The region to promote (the secondary).
        #[arg(long)]
        region: String,
        /// Required: you assert the primary region is lost.
        #[arg(long)]
        force: bool,
        /// Do not prompt (automation); the plan is still printed.
        #[arg(long)]
        yes: bool,
    },
    /// Wipe a FENCED node (an old primary node after a promotion) and join
    /// it to the surviving cluster as a fresh member.
    Reseed {
        /// The fenced node.
        #[command(flatten)]
        target: Target,
        /// gRPC address of a promoted-side node (default: the one that fenced it).
        #[arg(long = "join")]
        join: Vec<String>,
        #[arg(long)]
        yes: bool,
    },
    /// Move the voter majority (and the leadership) to `--primary`, e.g.
    /// back to a re-seeded region.
    Rebalance {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        primary: String,
    },
    /// The replicated disaster-recovery audit log.
    Audit(Target),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = || runtime(0);
    match cli.cmd {
        Cmd::Run { config } => {
            let started = Instant::now();
            // Loaded before the runtime starts: `[runtime]` shapes it.
            let cfg = Config::load(&config)?;
            runtime(cfg.runtime.worker_threads)?.block_on(run(cfg, started))
        }
        Cmd::DevPki { out, nodes, sans, keep_existing } => {
            let nodes = if keep_existing { pki::missing(&out, &nodes) } else { nodes };
            pki::generate(&out, &nodes, &sans)?;
            attest_node::auth::dev_issuer(&out).context("creating the dev OpenID issuer")?;
            println!("wrote CA, {} node certificate(s) and a dev token issuer to {}", nodes.len(), out.display());
            Ok(())
        }
        Cmd::DevToken { dir, role, subject, ttl } => {
            let role = attest_node::auth::Role::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("role must be Reader, Contributor or Owner"))?;
            let t = attest_node::auth::mint_dev_token(&dir, &subject, role, api::system_clock(), ttl)
                .context("minting a dev token (run `attestd dev-pki` first)")?;
            println!("{t}");
            Ok(())
        }
        Cmd::Attest(a) => rt()?.block_on(cli::attest(a)),
        Cmd::Token { cmd } => rt()?.block_on(cli::token(cmd)),
        Cmd::Provider { cmd } => rt()?.block_on(cli::provider(cmd)),
        Cmd::Policy { cmd } => rt()?.block_on(cli::policy(cmd)),
        Cmd::Certificate { cmd } => rt()?.block_on(cli::certificate(cmd)),
        Cmd::Collateral { cmd } => rt()?.block_on(cli::collateral(cmd)),
        Cmd::Admin { cmd } => rt()?.block_on(admin(cmd)),
    }
}

async fn admin(cmd: AdminCmd) -> anyhow::Result<()> {
    let (target, method, path) = match &cmd {
        AdminCmd::Promote { .. } | AdminCmd::Reseed { .. } | AdminCmd::Rebalance { .. } => {
            return admin_recovery(cmd).await
        }
        AdminCmd::Audit(t) => (t, "GET", "/admin/audit".to_string()),
        AdminCmd::Status(t) => (t, "GET", "/admin/status".to_string()),
        AdminCmd::State { target, linearizable } => (
            target,
            "GET",
            if *linearizable { "/admin/state?consistency=linearizable".into() } else { "/admin/state".into() },
        ),
        AdminCmd::Health { target, live: false } => (target, "GET", "/health".to_string()),
        AdminCmd::Health { target, live: true } => return live(target).await,
        AdminCmd::Drain(t) => (t, "POST", "/admin/drain".to_string()),
        AdminCmd::Undrain(t) => (t, "POST", "/admin/undrain".to_string()),
        AdminCmd::RotateKeys(t) => (t, "POST", "/admin/rotate-keys".to_string()),
    };
    let http = client::http_client(target.ca.as_deref())?;
    let url = format!("{}{}", target.url.trim_end_matches('/'), path);
    let mut req = if method == "GET" { http.get(&url) } else { http.post(&url) };
    if let Some(t) = &target.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.context("decoding response")?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    if !status.is_success() {
        anyhow::bail!("{method} {url} answered {status}");
    }
    Ok(())
}

/// `admin health --live`: the node's HTTP server answers `/health` with
/// its JSON status, whatever the status code.
async fn live(target: &Target) -> anyhow::Result<()> {
    let http = client::http_client(target.ca.as_deref())?;
    let url = format!("{}/health", target.url.trim_end_matches('/'));
    let resp = http.get(&url).timeout(Duration::from_secs(5)).send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body: serde_json::Value =
        resp.json().await.with_context(|| format!("GET {url} ({status}): not a health body"))?;
    println!("{status} {body}");
    Ok(())
}

/// Sends one admin call; prints the JSON answer; fails on a non-2xx.
async fn admin_call(
    target: &Target,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let http = client::http_client(target.ca.as_deref())?;
    let url = format!("{}{}", target.url.trim_end_matches('/'), path);
    let mut req = http.request(method.clone(), &url).timeout(Duration::from_secs(300));
    if let Some(t) = &target.token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.context("decoding response")?;
    if !status.is_success() {
        println!("{}", serde_json::to_string_pretty(&body)?);
        anyhow::bail!("{method} {url} answered {status}");
    }
    Ok(body)
}

/// Asks "type yes" on a terminal; `--yes` skips it, no terminal refuses.
fn confirm(question: &str, yes: bool) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{question}: not confirmed (no terminal; pass --yes to confirm non-interactively)");
    }
    print!("{question} Type 'yes' to continue: ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "yes" {
        anyhow::bail!("not confirmed; nothing changed");
    }
    Ok(())
}

async fn admin_recovery(cmd: AdminCmd) -> anyhow::Result<()> {
    use reqwest::Method;
    match cmd {
        AdminCmd::Promote { target, region, force, yes } => {
            let plan = admin_call(&target, Method::GET, &format!("/admin/promote/plan?region={region}"), None).await?;
            println!("{}", serde_json::to_string_pretty(&plan)?);
            let survivors = plan["survivors"].as_array().cloned().unwrap_or_default();
            eprintln!("\nForced promotion of {region} (epoch {} -> {}):", plan["currentEpoch"], plan["newEpoch"]);
            for s in &survivors {
                eprintln!(
                    "  survivor node {}: log up to index {} (term {}), applied {}",
                    s["nodeId"], s["lastLogIndex"], s["lastLogTerm"], s["appliedIndex"]
                );
            }
            eprintln!(
                "  new log base: index {} term {} (node {})",
                plan["baseIndex"], plan["baseTerm"], plan["source"]
            );
            eprintln!("  RPO estimate: {}", plan["rpo"].as_str().unwrap_or("unknown"));
            let refusals = plan["refusals"].as_array().cloned().unwrap_or_default();
            if !refusals.is_empty() {
                for r in &refusals {
                    eprintln!("  REFUSED: {}", r.as_str().unwrap_or_default());
                }
                anyhow::bail!("the promotion would be refused; nothing changed");
            }
            if !force {
                anyhow::bail!(
                    "a forced promotion needs --force: it is lossy, and unsafe if the primary is in fact alive"
                );
            }
            eprintln!(
                "  WARNING: if the primary region is in fact alive (a partition), it keeps accepting writes; they will be fenced and listed as divergent, never merged."
            );
            confirm(&format!("Promote {region} and make it the primary?"), yes)?;
            let body = serde_json::json!({"region": region, "force": true, "confirm": true});
            let out = admin_call(&target, Method::POST, "/admin/promote", Some(body)).await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        AdminCmd::Reseed { target, join, yes } => {
            let epoch = admin_call(&target, Method::GET, "/admin/epoch", None).await?;
            println!("{}", serde_json::to_string_pretty(&epoch)?);
            if epoch["fenced"].is_null() {
                anyhow::bail!("the node is not fenced; only fenced nodes are re-seeded");
            }
            confirm("Wipe this node's control-plane state and join it to the promoted cluster?", yes)?;
            let body = serde_json::json!({"confirm": true, "join": join});
            let out = admin_call(&target, Method::POST, "/admin/reseed", Some(body)).await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        AdminCmd::Rebalance { target, primary } => {
            let out =
                admin_call(&target, Method::POST, "/admin/rebalance", Some(serde_json::json!({"primary": primary})))
                    .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        _ => anyhow::bail!("not a recovery command"),
    }
    Ok(())
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = cfg
        .log
        .filter
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info,openraft=warn,h2=warn,tower=warn,hyper=warn".into());
    // Colour only on a terminal: log files and journald get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if cfg.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A multi-threaded Tokio runtime with `workers` async workers (0 = one
/// per CPU, see `config::RuntimeSection`).
fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        b.worker_threads(workers);
    }
    b.enable_all().build().context("starting tokio")
}

async fn run(cfg: Config, started: Instant) -> anyhow::Result<()> {
    init_logging(&cfg);
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
        .ok();
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    metrics::gauge!("attest_node_runtime_worker_threads").set(workers as f64);
    std::fs::create_dir_all(&cfg.node.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.node.data_dir.display()))?;

    let tls_files = cfg.tls.as_ref().map(|t| attest_raft::tls::TlsFiles {
        ca: t.ca.clone(),
        cert: t.cert.clone(),
        key: t.key.clone(),
    });
    let raft_cfg = RaftNodeConfig {
        id: cfg.node.id,
        region: cfg.node.region.clone(),
        listen: cfg.listen.raft,
        advertise_raft: cfg.advertise_raft(),
        advertise_api: cfg.advertise_api(),
        data_dir: cfg.node.data_dir.clone(),
        timing: cfg.raft.clone(),
        tls: tls_files,
        primary_region: cfg.cluster.primary_region.clone(),
        secondary_region: cfg.cluster.secondary_region.clone(),
        dial_overrides: cfg.cluster.dial_overrides.clone(),
        promote_min_outage: Duration::from_millis(cfg.recovery.promote_min_outage_ms),
    };
    let node = RaftNode::start(raft_cfg).await.context("starting the Raft member")?;
    tracing::info!(
        node = cfg.node.id,
        region = %cfg.node.region,
        raft = %node.bound,
        applied = node.control.state.applied_index(),
        startup_ms = started.elapsed().as_millis() as u64,
        runtime_workers = workers,
        "raft member started"
    );
    if cfg.cluster.bootstrap && node.bootstrap(cfg.members()).await.context("bootstrapping the cluster")? {
        tracing::info!(members = cfg.cluster.members.len(), "initialized a new cluster");
    }
    let is_member = {
        let m = node.control.raft().metrics().borrow().clone();
        m.membership_config.membership().get_node(&cfg.node.id).is_some()
    };
    if !is_member && !cfg.cluster.join.is_empty() {
        let control = node.control.clone();
        let seeds = cfg.cluster.join.clone();
        let me = NodeInfo {
            region: cfg.node.region.clone(),
            raft_addr: cfg.advertise_raft(),
            api_addr: cfg.advertise_api(),
        };
        let voter = cfg.cluster.join_as_voter;
        let id = cfg.node.id;
        tokio::spawn(async move {
            match attest_raft::join_cluster(&control, &seeds, me, voter, Duration::from_secs(600)).await {
                Ok(()) => tracing::info!(node = id, "joined the cluster"),
                Err(e) => tracing::error!(node = id, error = %e, "could not join the cluster"),
            }
        });
    }

    let api_tls = match &cfg.tls {
        Some(t) => Some(server::server_tls(&t.cert, &t.key).context("loading API TLS certificate")?),
        None => {
            tracing::warn!("no [tls] section: serving plain HTTP (development only)");
            None
        }
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen.api)
        .await
        .with_context(|| format!("binding API listener {}", cfg.listen.api))?;
    let now = api::system_clock();
    let keys = Arc::new(
        attest_node::signing::KeyRing::open(
            &cfg.node.data_dir,
            cfg.node.id,
            &cfg.node.region,
            now,
            cfg.tokens.cert_days,
        )
        .context("loading the token signing keys")?,
    );
    let pinned_time = match &cfg.evidence.pinned_time {
        Some(t) => {
            let secs = attest_node::evidence::pki::parse_rfc3339(t).context("evidence.pinned_time")?;
            tracing::warn!(pinned_time = %t, "evidence is verified at a PINNED time, not the clock (tests/replay only)");
            Some(secs)
        }
        None => None,
    };
    let mut anchors = attest_node::evidence::TrustAnchors::builtin();
    for root in &cfg.evidence.tpm_roots {
        let bytes = std::fs::read(root).with_context(|| format!("reading TPM root {}", root.display()))?;
        anchors = anchors.with_tpm_root(&bytes).with_context(|| format!("TPM root {}", root.display()))?;
    }
    let engine = Arc::new(attest_node::attest::Engine::new(
        attest_node::attest::EngineConfig {
            node_id: cfg.node.id,
            region: cfg.node.region.clone(),
            pinned_time,
            collateral_grace_s: cfg.evidence.collateral_grace_s,
            max_evidence_bytes: cfg.evidence.max_evidence_bytes,
            default_validity_minutes: cfg.tokens.default_validity_minutes,
            max_validity_minutes: cfg.tokens.max_validity_minutes,
        },
        anchors,
        keys.clone(),
    ));
    let auth = Arc::new(attest_node::auth::Authenticator::new(&cfg.auth).context("loading [auth]")?);
    if cfg.auth.issuers.is_empty() {
        tracing::warn!("no [auth] issuers configured: every management call will be refused (401)");
    }
    tokio::spawn(publish_keys(node.control.clone(), keys.clone(), cfg.clone()));
    let state = AppState {
        engine,
        auth,
        clock: Arc::new(api::system_clock),
        control: node.control.clone(),
        config: Arc::new(cfg.clone()),
        prometheus,
        draining: Arc::new(AtomicBool::new(false)),
        started,
        limiter: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_concurrent_requests.max(1))),
        attest_slots: Arc::new(api::limits::ProviderSlots::new(cfg.limits.max_concurrent_attest_per_provider)),
        attest_workers: Arc::new(tokio::sync::Semaphore::new(match cfg.limits.attest_workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            n => n,
        })),
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let http = tokio::spawn(server::serve(listener, api_tls, api::router(state), shutdown_rx));
    tracing::info!(api = %cfg.listen.api, ready_ms = started.elapsed().as_millis() as u64, "serving");

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(15), http).await;
    node.shutdown().await;
    Ok(())
}

/// Keeps this node's signing certificates published in the replicated
/// state (retrying while the control plane is read-only or electing) and
/// removes its own retired certificates once no token they signed can
/// still be valid.
async fn publish_keys(control: Arc<attest_raft::ControlPlane>, keys: Arc<attest_node::signing::KeyRing>, cfg: Config) {
    let timeout = Duration::from_millis(cfg.limits.write_timeout_ms);
    let retention = i64::from(cfg.tokens.max_validity_minutes) * 60;
    loop {
        // `None` until the topology has reached this node (a new or joining
        // node): nothing to compare with yet, so look again soon, not in
        // 30 s — meanwhile tokens it signs would not verify elsewhere.
        let missing = control.state.read(|s| s.topology.as_ref().map(|_| !keys.unpublished(s).is_empty()));
        if missing == Some(true) {
            match keys.publish(&control, timeout).await {
                Ok(n) if n > 0 => tracing::info!(certificates = n, "published token signing certificates"),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "publishing signing certificates; will retry"),
            }
        }
        let _ = keys.collect_retired(&control, api::system_clock(), retention, timeout).await;
        let pause = if missing == Some(false) { Duration::from_secs(30) } else { Duration::from_secs(1) };
        tokio::time::sleep(pause).await;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
