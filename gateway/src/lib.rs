//! attest-gateway: Azure Traffic Manager's priority routing and endpoint
//! monitoring, implemented as a reverse proxy in front of attestd regions.
//!
//! Code map:
//! * `config`  — TOML profile, validated with TM's limits.
//! * `monitor` — TM's monitor state machine, pure and clock-injected.
//! * `probe`   — active probing tasks feeding the monitor.
//! * `routing` — runtime topology, priority plan, balancing, passive ejection,
//!   failover history.
//! * `proxy`   — the request path as tower layers (request id, admin,
//!   metrics, limits, routing, retries, forwarding).
//! * `status`, `metrics` — operator view.
//! * `tls`     — rustls (ring) server config and upstream connector.
//!
//! This file owns the listener: accepting, TLS handshakes, per-connection
//! protocol limits and graceful shutdown, and config reload.
//!
//! Invariants: the gateway keeps no state that another gateway would need
//! (several can run side by side); a reload never drops a connection; a
//! client can only hold resources it is actively using (handshakes, first
//! bytes, headers and bodies all have time limits, connections a cap).

#![forbid(unsafe_code)]

pub mod config;
pub mod metrics;
pub mod monitor;
pub mod probe;
pub mod proxy;
pub mod routing;
pub mod status;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceBuilder;

use crate::config::{Config, Limits};
use crate::monitor::{Clock, SystemClock};
use crate::proxy::{ClientAddr, ClientTls, Shared, Upstreams};
use crate::routing::Router;
use crate::tls::TlsError;

/// Failures starting or reloading a gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

type Acceptor = Arc<RwLock<Option<TlsAcceptor>>>;

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    acceptor: Acceptor,
    probes: Mutex<Vec<JoinHandle<()>>>,
    accept_task: Option<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    listen_cfg: SocketAddr,
}

fn acceptor_for(cfg: &Config) -> Result<Option<TlsAcceptor>, TlsError> {
    match &cfg.listen.tls {
        Some(files) => Ok(Some(TlsAcceptor::from(tls::server_config(&files.cert, &files.key)?))),
        None => Ok(None),
    }
}

impl Gateway {
    /// Binds the listener, starts probing and serving.
    pub async fn start(cfg: Config) -> Result<Gateway, GatewayError> {
        Self::start_with_clock(cfg, Arc::new(SystemClock)).await
    }

    /// As [`Gateway::start`], with an injected clock for monitor timestamps.
    pub async fn start_with_clock(cfg: Config, clock: Arc<dyn Clock>) -> Result<Gateway, GatewayError> {
        crate::metrics::handle();
        let cfg = Arc::new(cfg);
        let acceptor: Acceptor = Arc::new(RwLock::new(acceptor_for(&cfg)?));
        let upstreams = Upstreams::new(cfg.clone())?;
        let connector = upstreams.connector.clone();
        let router = Arc::new(Router::new(cfg.clone(), clock));
        let shared = Arc::new(Shared::new(router.clone(), upstreams));
        let listener = TcpListener::bind(cfg.listen.address)
            .await
            .map_err(|source| GatewayError::Bind { addr: cfg.listen.address, source })?;
        let local_addr =
            listener.local_addr().map_err(|source| GatewayError::Bind { addr: cfg.listen.address, source })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let probes = probe::spawn_all(&router, connector);
        let accept_task = tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            acceptor.clone(),
            shutdown_rx,
            cfg.limits.max_connections,
        ));
        tracing::info!(%local_addr, tls = cfg.listen.tls.is_some(), profile = %cfg.profile.name, "attest-gateway listening");
        Ok(Gateway {
            shared,
            local_addr,
            acceptor,
            probes: Mutex::new(probes),
            accept_task: Some(accept_task),
            shutdown,
            listen_cfg: cfg.listen.address,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.shared.router
    }

    /// Applies a new configuration without touching open connections.
    /// Everything that can fail is prepared first, so a bad file changes nothing.
    pub fn reload(&self, cfg: Config) -> Result<(), GatewayError> {
        if cfg.listen.address != self.listen_cfg {
            tracing::warn!(old = %self.listen_cfg, new = %cfg.listen.address,
                "listen.address changes need a restart; keeping the old address");
        }
        let cfg = Arc::new(cfg);
        let acceptor = acceptor_for(&cfg)?;
        let upstreams = Upstreams::new(cfg.clone())?;
        let connector = upstreams.connector.clone();
        *self.acceptor.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
        self.shared.set_upstreams(upstreams);
        self.shared.router.reload(cfg);
        let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        for p in probes.drain(..) {
            p.abort();
        }
        *probes = probe::spawn_all(&self.shared.router, connector);
        Ok(())
    }

    /// Stops accepting, lets open connections finish (bounded by `grace`).
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.shutdown.send(true);
        for p in self.probes.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            p.abort();
        }
        if let Some(t) = self.accept_task.take() {
            let _ = tokio::time::timeout(grace, t).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.accept_task.take() {
            t.abort();
        }
        for p in self.probes.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            p.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    acceptor: Acceptor,
    mut shutdown: watch::Receiver<bool>,
    max_connections: usize,
) {
    // Taking a permit before accept() leaves excess clients in the kernel
    // backlog instead of spending memory on them.
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let tls = acceptor.read().unwrap_or_else(|p| p.into_inner()).clone();
        let limits = shared.upstreams().cfg.limits.clone();
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let _permit = permit;
            serve_connection(tcp, peer, tls, shared, limits, shutdown).await;
        });
        // Reap finished connection tasks so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    // Refuse new connections at once (as a stopping node does): left in the
    // backlog they would hang until the drain ends and then be reset.
    drop(listener);
    // Graceful: open connections were told to finish; wait for them.
    while conns.join_next().await.is_some() {}
}

/// Drives a hyper connection, switching to graceful shutdown when asked.
macro_rules! drive {
    ($conn:expr, $shutdown:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => { if let Err(e) = r { tracing::debug!(error = %e, "connection ended with error"); } }
            _ = $shutdown.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
            }
        }
    }};
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let is_tls = tls.is_some();
    let svc = ServiceBuilder::new()
        .map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ClientAddr(peer));
            req.extensions_mut().insert(ClientTls(is_tls));
            req
        })
        .service(proxy::stack(shared));
    let svc = TowerToHyperService::new(svc);
    let hrt = limits.header_read_timeout;

    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new()).header_read_timeout(hrt).max_buf_size(limits.max_header_bytes);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));

    match tls {
        Some(acceptor) => {
            // A client that never finishes its handshake must not hold a slot.
            let stream = match tokio::time::timeout(hrt, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let is_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = TokioIo::new(stream);
            if is_h2 {
                drive!(h2.serve_connection(io, svc), shutdown);
            } else {
                drive!(h1.serve_connection(io, svc), shutdown);
            }
        }
        None => {
            // Without TLS we sniff HTTP/1 vs h2c prior knowledge; that sniff has
            // no timeout of its own, so wait for the first byte here.
            let mut b = [0u8; 1];
            match tokio::time::timeout(hrt, tcp.peek(&mut b)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let mut auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            auto.http1().timer(TokioTimer::new()).header_read_timeout(hrt).max_buf_size(limits.max_header_bytes);
            auto.http2()
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
                .max_concurrent_streams(256)
                .keep_alive_interval(Some(Duration::from_secs(30)));
            drive!(auto.serve_connection(TokioIo::new(tcp), svc), shutdown);
        }
    }
}
