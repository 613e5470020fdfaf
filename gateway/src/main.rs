//! `attest-gateway` command line. See `--help`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use attest_gateway::config::{Config, ProbeProtocol};
use attest_gateway::Gateway;
use clap::{Parser, Subcommand};

const LONG_ABOUT: &str = "\
Reverse proxy in front of attestd regions that behaves like Azure Traffic \
Manager's priority routing: it probes every node (HTTP/HTTPS/TCP, interval, \
timeout, tolerated failures, expected status codes, custom headers), keeps \
Traffic Manager's endpoint statuses (CheckingEndpoint, Online, Degraded, \
Disabled, Stopped, Inactive) and sends each request to the highest-priority \
region that is Online — but, being a proxy, it also reacts to failed requests \
at once and retries idempotent attest calls on the next region, so a region \
outage costs clients no errors.

Operator view: GET /gateway/ (live page), GET /gateway/status (JSON), \
GET /metrics (Prometheus). Send SIGHUP to reload the config without dropping \
connections; SIGTERM/Ctrl-C drains and exits.";

const AFTER_HELP: &str = "\
Examples:
  attest-gateway example-config > gateway.toml   # commented starting point
  attest-gateway --config gateway.toml check-config
  attest-gateway --config gateway.toml           # run
  kill -HUP $(pidof attest-gateway)              # reload

Log level: RUST_LOG=attest_gateway=debug";

#[derive(Parser)]
#[command(name = "attest-gateway", version, about = "Traffic-Manager-style priority-routing proxy for attestd", long_about = LONG_ABOUT, after_help = AFTER_HELP)]
struct Cli {
    /// Path of the TOML config (see `example-config`).
    #[arg(short, long, global = true, env = "ATTEST_GATEWAY_CONFIG", default_value = "gateway.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the config (TOML, Traffic Manager's limits, TLS files) and
    /// explain what it means, then exit: 0 if valid.
    CheckConfig,
    /// Print a commented example config.
    ExampleConfig,
    /// Probe a running gateway (a container HEALTHCHECK: scratch images have
    /// no curl): GET the URL, exit 0 on a 2xx answer, 1 otherwise.
    Health {
        #[arg(long, env = "ATTEST_GATEWAY_HEALTH_URL", default_value = "https://127.0.0.1:8443/gateway/status")]
        url: String,
        /// CA (PEM) that issued the gateway's listen certificate.
        #[arg(long, env = "ATTEST_GATEWAY_HEALTH_CA")]
        ca: Option<PathBuf>,
        #[arg(long, default_value = "5s", value_parser = attest_gateway::config::parse_duration)]
        timeout: Duration,
    },
}

fn main() -> std::process::ExitCode {
    // Print errors as one readable chain (no backtrace noise for config mistakes).
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("attest-gateway: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::ExampleConfig => {
            print!("{}", attest_gateway::config::EXAMPLE);
            Ok(())
        }
        Command::CheckConfig => check(&cli.config),
        Command::Health { url, ca, timeout } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?
            .block_on(health(&url, ca.as_deref(), timeout)),
        Command::Run => {
            init_tracing();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?
                .block_on(run(cli.config))
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: log files and journald get plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    if let Some(t) = &cfg.listen.tls {
        attest_gateway::tls::server_config(&t.cert, &t.key).context("listen TLS")?;
    }
    attest_gateway::tls::client_config(cfg.upstream.ca_file.as_deref()).context("upstream.ca_file")?;
    let m = &cfg.monitor;
    println!("{}: OK", path.display());
    println!(
        "profile `{}` (priority routing, {})",
        cfg.profile.name,
        if cfg.profile.enabled { "enabled" } else { "DISABLED: every endpoint Inactive" }
    );
    println!(
        "listen {} ({})",
        cfg.listen.address,
        if cfg.listen.tls.is_some() { "TLS, h2 + http/1.1" } else { "plain HTTP/1.1 + h2c" }
    );
    let target = match m.protocol {
        ProbeProtocol::Tcp => "TCP connect".to_string(),
        p => format!("{} GET {}", format!("{p:?}").to_uppercase(), m.path),
    };
    println!(
        "monitor: {target} every {:?}, timeout {:?}, {} tolerated failure(s), expected {:?}, failback after {} success(es)",
        m.interval, m.timeout, m.tolerated_failures, m.expected_status, m.failback_successes
    );
    let n = u32::from(m.tolerated_failures);
    println!(
        "  => a dead node is Degraded after {} consecutive failed probes: {:?} to {:?} after it dies (passive detection usually first)",
        n + 1,
        m.interval * n + m.timeout,
        m.interval * (n + 1) + m.timeout
    );
    if cfg.upstream.scheme == attest_gateway::config::Scheme::Https && cfg.upstream.ca_file.is_none() {
        println!("  warning: upstream.scheme = https without upstream.ca_file: no node certificate will verify");
    }
    for ep in &cfg.endpoints {
        println!(
            "endpoint `{}` priority {} {} ({:?}):",
            ep.name,
            ep.priority,
            if ep.enabled { "enabled" } else { "DISABLED" },
            ep.balance
        );
        for node in &ep.nodes {
            println!("  - {}{}", node.address, if node.enabled { "" } else { " (disabled)" });
        }
    }
    Ok(())
}

async fn health(url: &str, ca: Option<&std::path::Path>, timeout: Duration) -> anyhow::Result<()> {
    use http_body_util::{BodyExt, Empty};
    let uri: http::Uri = url.parse().with_context(|| format!("URL {url}"))?;
    let tls = attest_gateway::tls::client_config(ca).context("--ca")?;
    let connector = attest_gateway::tls::UpstreamConnector::new(tls, None, timeout)?;
    let client = attest_gateway::probe::probe_client(&connector);
    let req = http::Request::get(uri).body(Empty::new()).context("building the request")?;
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| anyhow::anyhow!("GET {url}: no answer within {timeout:?}"))?
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    // The body only says why; a slow or broken body does not change the verdict.
    if let Ok(Ok(body)) = tokio::time::timeout(timeout, resp.into_body().collect()).await {
        let body = body.to_bytes();
        println!("{}", String::from_utf8_lossy(&body[..body.len().min(4096)]));
    }
    anyhow::ensure!(status.is_success(), "GET {url} answered {status}");
    Ok(())
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&path)?;
    let gw = Gateway::start(cfg).await?;
    let mut hup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                match Config::load(&path).map_err(anyhow::Error::from).and_then(|c| gw.reload(c).map_err(Into::into)) {
                    Ok(()) => tracing::info!(path = %path.display(), "config reloaded"),
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "reload rejected; keeping the running config"),
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!("shutting down");
    gw.shutdown(Duration::from_secs(30)).await;
    Ok(())
}
