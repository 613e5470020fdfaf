//! Active health probing: one task per monitored node.
//!
//! Each task probes at the configured interval (start to start, like TM) and
//! feeds results to [`Router::on_probe`], which runs the state machine of
//! `monitor.rs`. HTTP(S) probes are a `GET` of the monitor path with the
//! custom headers; healthy iff the status is in the expected ranges within the
//! timeout (redirects are not followed, so a 30x fails unless listed). TCP
//! probes only need the connection to open.
//!
//! Probes use a fresh connection every time (no pooling): a node that stops
//! accepting connections must fail its probe even if an old keep-alive
//! connection still works. A passive failure wakes the task early — like TM,
//! which probes from several locations, a node may see more probes than the
//! interval implies; this only ever speeds detection up.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;

use crate::config::{Config, ProbeProtocol};
use crate::monitor::{ProbeFailure, ProbeOutcome, ProbeResult};
use crate::routing::{NodeState, Router};
use crate::tls::UpstreamConnector;

/// Largest `/health` body we keep for the status page.
const HEALTH_BODY_MAX: usize = 8 * 1024;

/// The HTTP client probes use.
pub type ProbeHttp = Client<UpstreamConnector, Empty<Bytes>>;

/// A probe client: no connection reuse (see module docs).
pub fn probe_client(connector: &UpstreamConnector) -> ProbeHttp {
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector.clone())
}

/// Starts one probing task per monitored node of the current topology.
pub fn spawn_all(router: &Arc<Router>, connector: UpstreamConnector) -> Vec<JoinHandle<()>> {
    let client = probe_client(&connector);
    let topo = router.topology();
    let mut tasks = Vec::new();
    for region in &topo.regions {
        if !region.cfg.enabled || !topo.cfg.profile.enabled {
            continue; // Disabled / Inactive: not monitored.
        }
        for node in &region.nodes {
            if !node.status().is_eligible() {
                continue;
            }
            let router = router.clone();
            let node = node.clone();
            let client = client.clone();
            let cfg = topo.cfg.clone();
            let headers = region.cfg.probe_headers.clone();
            let connector = connector.clone();
            tasks.push(tokio::spawn(async move {
                run(router, node, cfg, headers, client, connector).await;
            }));
        }
    }
    tasks
}

async fn run(
    router: Arc<Router>,
    node: Arc<NodeState>,
    cfg: Arc<Config>,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    client: ProbeHttp,
    connector: UpstreamConnector,
) {
    let interval = cfg.monitor.interval;
    loop {
        let tick = tokio::time::Instant::now();
        let started = router.clock().now();
        let (outcome, health) = probe_once(&cfg, &headers, &node, &client, &connector).await;
        let latency = tick.elapsed();
        if let Some(h) = health {
            *node.health.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
        }
        router.on_probe(&node, ProbeResult { outcome, started, latency });
        tokio::select! {
            _ = tokio::time::sleep_until(tick + interval) => {}
            _ = node.probe_now.notified() => {
                // Probe soon, but never hammer a node that fails every request.
                let floor = (interval / 10).max(Duration::from_millis(20));
                tokio::time::sleep_until(tick + floor).await;
            }
        }
    }
}

/// Performs one probe of `node`.
pub async fn probe_once(
    cfg: &Config,
    headers: &[(http::HeaderName, http::HeaderValue)],
    node: &NodeState,
    client: &ProbeHttp,
    connector: &UpstreamConnector,
) -> (ProbeOutcome, Option<serde_json::Value>) {
    let m = &cfg.monitor;
    let Ok(authority) = node.address.parse::<http::uri::Authority>() else {
        return (ProbeOutcome::Failure(ProbeFailure::Connection("bad address".into())), None);
    };
    let host = authority.host();
    let port = m.port.or(authority.port_u16()).unwrap_or(80);
    let host_port = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let scheme = match m.protocol {
        ProbeProtocol::Http => "http",
        ProbeProtocol::Https => "https",
        ProbeProtocol::Tcp => {
            let uri = Uri::try_from(format!("http://{host_port}/"));
            let Ok(uri) = uri else {
                return (ProbeOutcome::Failure(ProbeFailure::Connection("bad address".into())), None);
            };
            let mut c = connector.clone();
            let r = tokio::time::timeout(m.timeout, tower::Service::call(&mut c, uri)).await;
            return match r {
                Err(_) => (ProbeOutcome::Failure(ProbeFailure::Timeout), None),
                Ok(Err(e)) => (ProbeOutcome::Failure(ProbeFailure::Connection(e.to_string())), None),
                Ok(Ok(_conn)) => (ProbeOutcome::Success { status: None }, None),
            };
        }
    };
    let uri = match Uri::try_from(format!("{scheme}://{host_port}{}", m.path)) {
        Ok(u) => u,
        Err(e) => return (ProbeOutcome::Failure(ProbeFailure::Connection(e.to_string())), None),
    };
    let mut req = Request::builder().method(Method::GET).uri(uri);
    for (n, v) in headers {
        req = req.header(n, v);
    }
    req = req.header(http::header::USER_AGENT, "attest-gateway-probe");
    let Ok(req) = req.body(Empty::new()) else {
        return (ProbeOutcome::Failure(ProbeFailure::Connection("bad probe request".into())), None);
    };
    let fut = async {
        let resp = client.request(req).await?;
        let status = resp.status().as_u16();
        // The body is informative only; a body error does not fail the probe.
        let body = Limited::new(resp.into_body(), HEALTH_BODY_MAX)
            .collect()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b.to_bytes()).ok());
        Ok::<_, hyper_util::client::legacy::Error>((status, body))
    };
    match tokio::time::timeout(m.timeout, fut).await {
        Err(_) => (ProbeOutcome::Failure(ProbeFailure::Timeout), None),
        Ok(Err(e)) => (ProbeOutcome::Failure(ProbeFailure::Connection(error_chain(&e))), None),
        Ok(Ok((status, body))) => {
            let outcome = if m.status_expected(status) {
                ProbeOutcome::Success { status: Some(status) }
            } else {
                ProbeOutcome::Failure(ProbeFailure::UnexpectedStatus(status))
            };
            (outcome, body)
        }
    }
}

/// An error with its sources, for humans.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
