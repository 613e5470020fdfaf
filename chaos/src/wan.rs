//! Userspace WAN link emulator: toxiproxy-style TCP proxies between regions.
//!
//! This kernel has no `tc netem`, so the inter-region network is emulated in
//! userspace: every inter-region connection goes through a [`WanLink`], a TCP
//! proxy that listens locally and forwards to an upstream address. Side `a` is
//! the connecting client, side `b` the upstream server; conditions apply per
//! direction (`a_to_b`, `b_to_a`):
//!
//! * **latency / jitter**: every chunk read is stamped with a release time
//!   (`arrival + latency ± jitter`, where arrival is the kernel's receive
//!   timestamp — see the `arrival` module; never earlier than the previous
//!   chunk's, so byte order is preserved) and put in a FIFO delay queue; a
//!   writer releases chunks when due. Reading continues while chunks wait, so
//!   throughput is not limited to one chunk per round trip.
//! * **bandwidth**: a serialization clock (`wire_free`) spaces chunks by
//!   `len * 8 / bandwidth` before the propagation delay, like a real link.
//! * **loss**: TCP hides packet loss as retransmission stalls, so a "lost" chunk
//!   is delayed by an extra retransmission timeout (max(200 ms, 3 × latency))
//!   rather than corrupting the stream; `reset_probability` resets new
//!   connections at random.
//! * **cuts** ([`Cut`]): both ways or one way, in three [`CutMode`]s:
//!   - `blackhole`: bytes in the cut direction are held, unacknowledged by the
//!     far side, and new connections stall before reaching upstream; peers see
//!     timeouts, as in a real partition, and after heal the held bytes flow
//!     (TCP retransmission would deliver them too);
//!   - `drop`: bytes reaching the cut are discarded; the connection's direction
//!     stays dead after heal (its stream has a hole), new connections work;
//!   - `reset`: existing connections are reset (RST) and new ones reset at once;
//!     with a one-way cut, a connection is reset when data tries to cross.
//!
//!   A one-way cut is modelled at the data level: new connections are still
//!   established (the handshake is not emulated) and data flows the other way.
//!
//! A [`WanController`] owns many links and changes the conditions of all links
//! between two regions at once, mapping `from → to` onto each link's own
//! orientation. [`WanController::serve_control`] exposes it over HTTP (axum,
//! already used by the node) so another process can drive it:
//!
//! | request | effect |
//! | --- | --- |
//! | `GET /links` | every link with conditions and counters |
//! | `GET /links/{name}` | one link |
//! | `POST /links/{name}` + [`LinkUpdate`] JSON | change one link |
//! | `POST /regions/{from}/{to}` + [`LinkUpdate`] | change every link between two regions (`a_to_b` = from → to) |
//! | `POST /all` + [`LinkUpdate`] | change every link |
//! | `POST /heal` | remove every cut |
//!
//! [`WanControlClient`] is the matching client; [`run_wan_proxy`] with
//! [`WanProxyArgs`] is the standalone `attest-chaos wan` command.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Chunks in flight per direction; bounds memory and gives backpressure
/// (like a TCP window) when a link is slow or blackholed.
const QUEUE_CHUNKS: usize = 256;
/// Largest chunk read at once.
const MAX_CHUNK: usize = 16 * 1024;
/// Smallest chunk when bandwidth-limited (keeps per-chunk overhead sane).
const MIN_CHUNK: usize = 256;
/// Minimum retransmission timeout used to emulate a lost segment (Linux's).
const MIN_RTO: Duration = Duration::from_millis(200);
/// Default upper bound on connecting to the upstream ([`LinkConfig::connect_timeout_ms`]).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest control request body.
const MAX_CONTROL_BODY: usize = 64 * 1024;

/// Errors of the WAN emulator.
#[derive(Debug, thiserror::Error)]
pub enum WanError {
    /// A socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A link with this name already exists.
    #[error("link {0:?} already exists")]
    DuplicateLink(String),
    /// No link with this name.
    #[error("no link named {0:?}")]
    UnknownLink(String),
    /// No link joins the two regions.
    #[error("no link between regions {0:?} and {1:?}")]
    NoLinksBetween(String, String),
    /// An update with out-of-range values.
    #[error("invalid link update: {0}")]
    InvalidUpdate(String),
    /// Bad proxy configuration (CLI or file).
    #[error("invalid WAN configuration: {0}")]
    Config(String),
    /// The control API answered with an error or could not be reached.
    #[error("WAN control API: {0}")]
    Control(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> WanError {
    let context = context.into();
    move |source| WanError::Io { context, source }
}

/// Direction of traffic on a link: `a` is the connecting side, `b` upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Client to upstream.
    #[serde(rename = "a_to_b")]
    AToB,
    /// Upstream to client.
    #[serde(rename = "b_to_a")]
    BToA,
}

/// Which directions of a link are cut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cut {
    /// Healthy.
    #[default]
    #[serde(rename = "none")]
    None,
    /// Both directions.
    #[serde(rename = "both")]
    Both,
    /// Only traffic from `a` to `b`.
    #[serde(rename = "a_to_b")]
    AToB,
    /// Only traffic from `b` to `a`.
    #[serde(rename = "b_to_a")]
    BToA,
}

impl Cut {
    /// Whether traffic in `dir` is cut.
    pub fn cuts(self, dir: Direction) -> bool {
        matches!((self, dir), (Cut::Both, _) | (Cut::AToB, Direction::AToB) | (Cut::BToA, Direction::BToA))
    }

    /// The same cut seen from the other end of the link.
    pub fn reversed(self) -> Cut {
        match self {
            Cut::AToB => Cut::BToA,
            Cut::BToA => Cut::AToB,
            c => c,
        }
    }
}

/// How a cut behaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CutMode {
    /// Hold bytes silently until heal; peers see timeouts (a real partition).
    #[default]
    Blackhole,
    /// Discard bytes; the connection's direction stays dead after heal.
    Drop,
    /// Reset connections (RST) and new connection attempts.
    Reset,
}

/// Conditions of one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Shape {
    /// One-way delay in milliseconds.
    pub latency_ms: u64,
    /// Uniform jitter (±) around the latency, in milliseconds.
    pub jitter_ms: u64,
    /// Bandwidth in kbit/s; 0 = unlimited.
    pub bandwidth_kbps: u64,
    /// Probability (0..=1) that a chunk suffers a retransmission stall.
    pub loss: f64,
}

/// Everything that can be set on a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkConditions {
    /// Client → upstream.
    pub a_to_b: Shape,
    /// Upstream → client.
    pub b_to_a: Shape,
    /// Cut directions.
    pub cut: Cut,
    /// Cut behaviour.
    pub mode: CutMode,
    /// Probability (0..=1) that a new connection is reset at once.
    pub reset_probability: f64,
}

impl LinkConditions {
    /// The same shape in both directions.
    pub fn symmetric(shape: Shape) -> Self {
        Self { a_to_b: shape, b_to_a: shape, ..Self::default() }
    }

    /// The shape of one direction.
    pub fn shape(&self, dir: Direction) -> &Shape {
        match dir {
            Direction::AToB => &self.a_to_b,
            Direction::BToA => &self.b_to_a,
        }
    }
}

/// Partial update of one direction's [`Shape`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapeUpdate {
    /// New latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// New jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    /// New bandwidth (0 = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_kbps: Option<u64>,
    /// New loss probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
}

impl ShapeUpdate {
    fn apply(&self, s: &mut Shape) {
        if let Some(v) = self.latency_ms {
            s.latency_ms = v;
        }
        if let Some(v) = self.jitter_ms {
            s.jitter_ms = v;
        }
        if let Some(v) = self.bandwidth_kbps {
            s.bandwidth_kbps = v;
        }
        if let Some(v) = self.loss {
            s.loss = v;
        }
    }
}

/// Partial update of a link, the JSON body of the control API. Top-level
/// shape fields apply to both directions; `a_to_b` / `b_to_a` then override
/// one direction. Absent fields are left unchanged.
///
/// ```json
/// {"latency_ms": 40, "jitter_ms": 5, "bandwidth_kbps": 0, "loss": 0.0,
///  "cut": "a_to_b", "mode": "blackhole"}
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkUpdate {
    /// Latency of both directions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Jitter of both directions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    /// Bandwidth of both directions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_kbps: Option<u64>,
    /// Loss of both directions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Connection reset probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_probability: Option<f64>,
    /// Cut directions (`"none"` heals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<Cut>,
    /// Cut behaviour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<CutMode>,
    /// Overrides for client → upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a_to_b: Option<ShapeUpdate>,
    /// Overrides for upstream → client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b_to_a: Option<ShapeUpdate>,
}

impl LinkUpdate {
    /// Cut the link (`Cut::None` heals).
    pub fn cut(cut: Cut, mode: CutMode) -> Self {
        Self { cut: Some(cut), mode: Some(mode), ..Self::default() }
    }

    /// Remove any cut.
    pub fn heal() -> Self {
        Self { cut: Some(Cut::None), ..Self::default() }
    }

    /// Latency and jitter in both directions.
    pub fn latency(latency_ms: u64, jitter_ms: u64) -> Self {
        Self { latency_ms: Some(latency_ms), jitter_ms: Some(jitter_ms), ..Self::default() }
    }

    /// Rejects probabilities outside 0..=1 (and NaN).
    pub fn validate(&self) -> Result<(), WanError> {
        let probs = [
            ("loss", self.loss),
            ("reset_probability", self.reset_probability),
            ("a_to_b.loss", self.a_to_b.and_then(|s| s.loss)),
            ("b_to_a.loss", self.b_to_a.and_then(|s| s.loss)),
        ];
        for (name, p) in probs {
            if let Some(p) = p {
                if !(0.0..=1.0).contains(&p) {
                    return Err(WanError::InvalidUpdate(format!("{name} must be within 0..=1, got {p}")));
                }
            }
        }
        Ok(())
    }

    /// Applies the update (call [`validate`](Self::validate) first).
    pub fn apply(&self, c: &mut LinkConditions) {
        let both = ShapeUpdate {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            bandwidth_kbps: self.bandwidth_kbps,
            loss: self.loss,
        };
        both.apply(&mut c.a_to_b);
        both.apply(&mut c.b_to_a);
        if let Some(u) = self.a_to_b {
            u.apply(&mut c.a_to_b);
        }
        if let Some(u) = self.b_to_a {
            u.apply(&mut c.b_to_a);
        }
        if let Some(cut) = self.cut {
            c.cut = cut;
        }
        if let Some(mode) = self.mode {
            c.mode = mode;
        }
        if let Some(p) = self.reset_probability {
            c.reset_probability = p;
        }
    }

    /// The same update expressed for a link oriented the other way.
    pub fn reversed(&self) -> Self {
        Self { cut: self.cut.map(Cut::reversed), a_to_b: self.b_to_a, b_to_a: self.a_to_b, ..*self }
    }
}

/// Static configuration of a link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkConfig {
    /// Unique name, e.g. `eastus2-1->centralus-1:raft`.
    pub name: String,
    /// Where the proxy listens (port 0 = any).
    pub listen: SocketAddr,
    /// Where it forwards (`host:port`).
    pub upstream: String,
    /// Region of the connecting side (`a`), for pair-wide control.
    #[serde(default)]
    pub a_region: Option<String>,
    /// Region of the upstream side (`b`).
    #[serde(default)]
    pub b_region: Option<String>,
    /// Initial conditions.
    #[serde(default)]
    pub conditions: LinkConditions,
    /// How long the proxy tries to reach the upstream before it resets the
    /// client (default 30 s). The client's own TCP connect completes at
    /// once (to the proxy), so when the far host is gone, this is what the
    /// client waits for instead of its connect timeout: keep it near the
    /// clients' connect timeouts where hosts vanish (containers).
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
}

impl LinkConfig {
    /// A link with default (perfect) conditions.
    pub fn new(name: &str, listen: SocketAddr, upstream: &str) -> Self {
        Self {
            name: name.to_owned(),
            listen,
            upstream: upstream.to_owned(),
            a_region: None,
            b_region: None,
            conditions: LinkConditions::default(),
            connect_timeout_ms: None,
        }
    }

    /// Sets the regions of side `a` (client) and side `b` (upstream).
    #[must_use]
    pub fn between(mut self, a_region: &str, b_region: &str) -> Self {
        self.a_region = Some(a_region.to_owned());
        self.b_region = Some(b_region.to_owned());
        self
    }

    /// Sets the initial conditions.
    #[must_use]
    pub fn with_conditions(mut self, conditions: LinkConditions) -> Self {
        self.conditions = conditions;
        self
    }
}

/// Counters of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStats {
    /// Connections accepted so far.
    pub connections_total: u64,
    /// Connections currently open.
    pub connections_active: u64,
    /// Connections reset by the emulator.
    pub resets: u64,
    /// Bytes delivered client → upstream.
    pub bytes_a_to_b: u64,
    /// Bytes delivered upstream → client.
    pub bytes_b_to_a: u64,
    /// Bytes discarded by `drop` cuts.
    pub bytes_dropped: u64,
    /// Data chunks released (both directions).
    #[serde(default)]
    pub chunks_released: u64,
    /// Microseconds the released chunks left after their due time, summed:
    /// the emulator's own delay on top of the shape (wake-ups of the timer
    /// thread and of the writing task). A benchmark charges it to the
    /// system under test, so it reports it.
    #[serde(default)]
    pub release_late_us: u64,
    /// Data chunks read (both directions).
    #[serde(default)]
    pub chunks_read: u64,
    /// Microseconds between a chunk's arrival in the emulator's socket (the
    /// kernel's receive timestamp) and the emulator's read of it, summed.
    /// Not charged to the shape: a chunk's delay counts from its arrival.
    #[serde(default)]
    pub read_lag_us: u64,
}

/// Snapshot of a link for the control API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// Link name.
    pub name: String,
    /// Actual listening address.
    pub listen: SocketAddr,
    /// Upstream address.
    pub upstream: String,
    /// Region of side `a`.
    pub a_region: Option<String>,
    /// Region of side `b`.
    pub b_region: Option<String>,
    /// Current conditions.
    pub conditions: LinkConditions,
    /// Counters.
    pub stats: LinkStats,
}

#[derive(Default)]
struct Counters {
    connections_total: AtomicU64,
    connections_active: AtomicU64,
    resets: AtomicU64,
    bytes_a_to_b: AtomicU64,
    bytes_b_to_a: AtomicU64,
    bytes_dropped: AtomicU64,
    chunks_released: AtomicU64,
    release_late_us: AtomicU64,
    chunks_read: AtomicU64,
    read_lag_us: AtomicU64,
}

struct LinkShared {
    name: String,
    listen: SocketAddr,
    upstream: String,
    a_region: Option<String>,
    b_region: Option<String>,
    conditions: watch::Sender<LinkConditions>,
    shutdown: watch::Sender<bool>,
    counters: Counters,
    connect_timeout: Duration,
}

/// A cheap, clonable handle to control a running link.
#[derive(Clone)]
pub struct LinkHandle {
    shared: Arc<LinkShared>,
}

impl LinkHandle {
    /// Link name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// Current conditions.
    pub fn conditions(&self) -> LinkConditions {
        *self.shared.conditions.borrow()
    }

    /// Replaces the conditions; takes effect for chunks read from now on, and
    /// at once for cuts.
    pub fn set_conditions(&self, c: LinkConditions) {
        tracing::info!(link = %self.shared.name, conditions = ?c, "WAN link conditions changed");
        self.shared.conditions.send_replace(c);
    }

    /// Validates and applies a partial update.
    pub fn update(&self, u: &LinkUpdate) -> Result<LinkInfo, WanError> {
        u.validate()?;
        let mut c = self.conditions();
        u.apply(&mut c);
        self.set_conditions(c);
        Ok(self.info())
    }

    /// Cuts the link.
    pub fn cut(&self, cut: Cut, mode: CutMode) {
        let mut c = self.conditions();
        c.cut = cut;
        c.mode = mode;
        self.set_conditions(c);
    }

    /// Removes any cut (shapes are kept).
    pub fn heal(&self) {
        self.cut(Cut::None, self.conditions().mode);
    }

    /// Counters.
    pub fn stats(&self) -> LinkStats {
        let c = &self.shared.counters;
        LinkStats {
            connections_total: c.connections_total.load(Ordering::Relaxed),
            connections_active: c.connections_active.load(Ordering::Relaxed),
            resets: c.resets.load(Ordering::Relaxed),
            bytes_a_to_b: c.bytes_a_to_b.load(Ordering::Relaxed),
            bytes_b_to_a: c.bytes_b_to_a.load(Ordering::Relaxed),
            bytes_dropped: c.bytes_dropped.load(Ordering::Relaxed),
            chunks_released: c.chunks_released.load(Ordering::Relaxed),
            release_late_us: c.release_late_us.load(Ordering::Relaxed),
            chunks_read: c.chunks_read.load(Ordering::Relaxed),
            read_lag_us: c.read_lag_us.load(Ordering::Relaxed),
        }
    }

    /// Snapshot for the control API.
    pub fn info(&self) -> LinkInfo {
        LinkInfo {
            name: self.shared.name.clone(),
            listen: self.shared.listen,
            upstream: self.shared.upstream.clone(),
            a_region: self.shared.a_region.clone(),
            b_region: self.shared.b_region.clone(),
            conditions: self.conditions(),
            stats: self.stats(),
        }
    }

    /// Orientation relative to a region pair: `Some(false)` if `a→b` is
    /// `from→to`, `Some(true)` if reversed, `None` if not between them.
    fn orientation(&self, from: &str, to: &str) -> Option<bool> {
        let (a, b) = (self.shared.a_region.as_deref()?, self.shared.b_region.as_deref()?);
        if (a, b) == (from, to) {
            Some(false)
        } else if (a, b) == (to, from) {
            Some(true)
        } else {
            None
        }
    }
}

/// A running proxy. Dropping it stops accepting and closes its connections.
pub struct WanLink {
    handle: LinkHandle,
    accept_task: JoinHandle<()>,
}

impl std::ops::Deref for WanLink {
    type Target = LinkHandle;
    fn deref(&self) -> &LinkHandle {
        &self.handle
    }
}

impl Drop for WanLink {
    fn drop(&mut self) {
        self.handle.shared.shutdown.send_replace(true);
        self.accept_task.abort();
    }
}

impl WanLink {
    /// Binds the listener and starts proxying.
    pub async fn start(config: LinkConfig) -> Result<WanLink, WanError> {
        // Same range checks as runtime updates.
        LinkUpdate {
            reset_probability: Some(config.conditions.reset_probability),
            a_to_b: Some(ShapeUpdate { loss: Some(config.conditions.a_to_b.loss), ..ShapeUpdate::default() }),
            b_to_a: Some(ShapeUpdate { loss: Some(config.conditions.b_to_a.loss), ..ShapeUpdate::default() }),
            ..LinkUpdate::default()
        }
        .validate()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(io_err(format!("link {}: bind {}", config.name, config.listen)))?;
        let listen = listener.local_addr().map_err(io_err(format!("link {}: local address", config.name)))?;
        let shared = Arc::new(LinkShared {
            name: config.name,
            listen,
            upstream: config.upstream,
            a_region: config.a_region,
            b_region: config.b_region,
            conditions: watch::Sender::new(config.conditions),
            shutdown: watch::Sender::new(false),
            counters: Counters::default(),
            connect_timeout: config.connect_timeout_ms.map_or(CONNECT_TIMEOUT, Duration::from_millis),
        });
        tracing::info!(link = %shared.name, %listen, upstream = %shared.upstream, "WAN link started");
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(WanLink { handle: LinkHandle { shared }, accept_task })
    }

    /// A clonable control handle.
    pub fn handle(&self) -> LinkHandle {
        self.handle.clone()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<LinkShared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((sock, peer)) => {
                tracing::debug!(link = %shared.name, %peer, "WAN link accepted");
                tokio::spawn(handle_connection(sock, shared.clone()));
            }
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning.
                tracing::warn!(link = %shared.name, error = %e, "WAN link accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Decrements the active-connection counter however the task ends.
struct ActiveGuard(Arc<LinkShared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.counters.connections_active.fetch_sub(1, Ordering::Relaxed);
    }
}

fn reset_stream(shared: &LinkShared, s: &TcpStream) {
    // SO_LINGER 0 makes close() send RST instead of FIN.
    let _ = s.set_zero_linger();
    shared.counters.resets.fetch_add(1, Ordering::Relaxed);
}

/// How a proxied connection ended abnormally.
enum End {
    Reset,
    Shutdown,
}

async fn handle_connection(client: TcpStream, shared: Arc<LinkShared>) {
    shared.counters.connections_total.fetch_add(1, Ordering::Relaxed);
    shared.counters.connections_active.fetch_add(1, Ordering::Relaxed);
    let _guard = ActiveGuard(shared.clone());
    let _ = client.set_nodelay(true);
    let mut cond_rx = shared.conditions.subscribe();
    let mut shutdown_rx = shared.shutdown.subscribe();

    let p = cond_rx.borrow().reset_probability;
    if p > 0.0 && rand::rng().random::<f64>() < p {
        reset_stream(&shared, &client);
        return;
    }
    // A two-way cut stops the handshake: reset, or stall until heal.
    loop {
        let c = *cond_rx.borrow_and_update();
        match (c.cut, c.mode) {
            (Cut::Both, CutMode::Reset) => {
                reset_stream(&shared, &client);
                return;
            }
            (Cut::Both, _) => {
                tokio::select! {
                    r = cond_rx.changed() => if r.is_err() { return },
                    _ = shutdown_rx.wait_for(|s| *s) => return,
                }
            }
            _ => break,
        }
    }
    let upstream = tokio::select! {
        r = tokio::time::timeout(shared.connect_timeout, TcpStream::connect(shared.upstream.as_str())) => r,
        _ = shutdown_rx.wait_for(|s| *s) => return,
    };
    let upstream = match upstream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(link = %shared.name, error = %e, "WAN link upstream connect failed");
            reset_stream(&shared, &client);
            return;
        }
        Err(_) => {
            tracing::debug!(link = %shared.name, "WAN link upstream connect timed out");
            reset_stream(&shared, &client);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    proxy(client, upstream, &shared, shutdown_rx).await;
}

async fn proxy(
    client: TcpStream,
    upstream: TcpStream,
    shared: &Arc<LinkShared>,
    mut shutdown_rx: watch::Receiver<bool>,
) {
    let (client_r, mut client_w) = client.into_split();
    let (upstream_r, mut upstream_w) = upstream.into_split();
    let end = {
        let ab = direction(client_r, &mut upstream_w, Direction::AToB, shared);
        let ba = direction(upstream_r, &mut client_w, Direction::BToA, shared);
        let both = async move { tokio::try_join!(ab, ba) };
        let mut cond_rx = shared.conditions.subscribe();
        let reset_all = async move {
            loop {
                let c = *cond_rx.borrow_and_update();
                if c.cut == Cut::Both && c.mode == CutMode::Reset {
                    return;
                }
                if cond_rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            r = both => r.err(),
            _ = reset_all => Some(End::Reset),
            _ = shutdown_rx.wait_for(|s| *s) => Some(End::Shutdown),
        }
    };
    if let Some(End::Reset) = end {
        let _ = client_w.as_ref().set_zero_linger();
        let _ = upstream_w.as_ref().set_zero_linger();
        shared.counters.resets.fetch_add(1, Ordering::Relaxed);
        // `forget` skips the FIN a dropped write half would send, so the
        // peers see the RST.
        client_w.forget();
        upstream_w.forget();
        tracing::debug!(link = %shared.name, "WAN link connection reset");
    }
}

enum Chunk {
    Data(Instant, Vec<u8>),
    Eof(Instant),
}

/// Computes release times: serialization (bandwidth), propagation (latency ±
/// jitter) and loss stalls, never earlier than the previous chunk's release.
struct Scheduler {
    wire_free: Instant,
    last_release: Instant,
    rng: StdRng,
}

impl Scheduler {
    fn new(now: Instant, rng: StdRng) -> Self {
        Self { wire_free: now, last_release: now, rng }
    }

    fn schedule(&mut self, now: Instant, len: usize, shape: &Shape) -> Instant {
        let mut sent = now;
        if shape.bandwidth_kbps > 0 {
            let start = now.max(self.wire_free);
            // bits / (kbit/s) = ms; scaled to ns: len * 8 * 1e6 / kbps.
            let ns = (len as u128 * 8 * 1_000_000) / u128::from(shape.bandwidth_kbps);
            let tx = Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX));
            self.wire_free = start + tx;
            sent = self.wire_free;
        }
        let latency = Duration::from_millis(shape.latency_ms);
        let mut delay = latency;
        if shape.jitter_ms > 0 {
            let j = i64::try_from(shape.jitter_ms.saturating_mul(1000)).unwrap_or(i64::MAX);
            let offset_us = self.rng.random_range(-j..=j);
            let base_us = i64::try_from(shape.latency_ms.saturating_mul(1000)).unwrap_or(i64::MAX);
            let us = base_us.saturating_add(offset_us).max(0);
            delay = Duration::from_micros(u64::try_from(us).unwrap_or(0));
        }
        // NaN or <= 0 never triggers; >= 1 always does.
        if shape.loss > 0.0 && self.rng.random::<f64>() < shape.loss {
            delay += MIN_RTO.max(latency * 3);
        }
        let release = (sent + delay).max(self.last_release);
        self.last_release = release;
        release
    }
}

fn chunk_size(shape: &Shape) -> usize {
    if shape.bandwidth_kbps == 0 {
        return MAX_CHUNK;
    }
    // About 20 ms worth of bytes, so shaping is smooth.
    let per_20ms = shape.bandwidth_kbps.saturating_mul(1000) / 8 / 50;
    usize::try_from(per_20ms).unwrap_or(MAX_CHUNK).clamp(MIN_CHUNK, MAX_CHUNK)
}

/// One direction: a reader stamping chunks into the delay queue and a writer
/// releasing them when due, subject to cuts.
async fn direction(
    src: OwnedReadHalf,
    dst: &mut OwnedWriteHalf,
    dir: Direction,
    shared: &Arc<LinkShared>,
) -> Result<(), End> {
    let (tx, mut rx) = mpsc::channel::<Chunk>(QUEUE_CHUNKS);
    let reader = async move {
        let mut sched = Scheduler::new(Instant::now(), StdRng::from_rng(&mut rand::rng()));
        let mut src = arrival::StampedReader::new(src);
        loop {
            let shape = *shared.conditions.borrow().shape(dir);
            let mut buf = vec![0u8; chunk_size(&shape)];
            let chunk = match src.read(&mut buf).await {
                Ok((0, at)) => {
                    let shape = *shared.conditions.borrow().shape(dir);
                    Chunk::Eof(sched.schedule(at, 0, &shape))
                }
                Ok((n, arrived)) => {
                    buf.truncate(n);
                    let lag = Instant::now().saturating_duration_since(arrived);
                    shared.counters.chunks_read.fetch_add(1, Ordering::Relaxed);
                    let lag_us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
                    shared.counters.read_lag_us.fetch_add(lag_us, Ordering::Relaxed);
                    let shape = *shared.conditions.borrow().shape(dir);
                    Chunk::Data(sched.schedule(arrived, n, &shape), buf)
                }
                // The sender reset or failed: pass the reset on.
                Err(_) => return Err(End::Reset),
            };
            let eof = matches!(chunk, Chunk::Eof(_));
            if tx.send(chunk).await.is_err() || eof {
                // Writer gone (it reports why) or stream finished.
                return Ok(());
            }
        }
    };
    let writer = async move {
        let mut cond_rx = shared.conditions.subscribe();
        let mut poisoned = false;
        let delivered = match dir {
            Direction::AToB => &shared.counters.bytes_a_to_b,
            Direction::BToA => &shared.counters.bytes_b_to_a,
        };
        while let Some(chunk) = rx.recv().await {
            let at = match &chunk {
                Chunk::Data(at, _) | Chunk::Eof(at) => *at,
            };
            precise::sleep_until(at).await;
            // Before the cut gate: a blackhole's hold is not the emulator's lateness.
            let late = Instant::now().saturating_duration_since(at);
            // The cut gate, checked at release time: what is still "on the
            // wire" when the cut starts is affected too.
            loop {
                let c = *cond_rx.borrow_and_update();
                if !c.cut.cuts(dir) {
                    break;
                }
                match c.mode {
                    CutMode::Reset => return Err(End::Reset),
                    CutMode::Drop => {
                        poisoned = true;
                        break;
                    }
                    CutMode::Blackhole => {
                        if cond_rx.changed().await.is_err() {
                            return Err(End::Shutdown);
                        }
                    }
                }
            }
            match chunk {
                Chunk::Data(_, bytes) if poisoned => {
                    shared.counters.bytes_dropped.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                Chunk::Data(_, bytes) => {
                    // Counted on release, before the write, so a peer that
                    // has seen the bytes always sees them counted.
                    delivered.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    shared.counters.chunks_released.fetch_add(1, Ordering::Relaxed);
                    let late_us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
                    shared.counters.release_late_us.fetch_add(late_us, Ordering::Relaxed);
                    if dst.write_all(&bytes).await.is_err() {
                        return Err(End::Reset);
                    }
                }
                Chunk::Eof(_) => {
                    let _ = dst.shutdown().await;
                    return Ok(());
                }
            }
        }
        Ok(())
    };
    tokio::try_join!(reader, writer).map(|_| ())
}

/// Many links, controlled together (an inter-region path is many links).
#[derive(Clone, Default)]
pub struct WanController {
    links: Arc<Mutex<BTreeMap<String, WanLink>>>,
}

impl WanController {
    /// An empty controller.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, WanLink>> {
        // A poisoned lock only means a panic elsewhere; the map is still valid.
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a link and registers it.
    pub async fn add_link(&self, config: LinkConfig) -> Result<LinkHandle, WanError> {
        if self.lock().contains_key(&config.name) {
            return Err(WanError::DuplicateLink(config.name));
        }
        let name = config.name.clone();
        let link = WanLink::start(config).await?;
        let handle = link.handle();
        let mut links = self.lock();
        if links.contains_key(&name) {
            return Err(WanError::DuplicateLink(name));
        }
        links.insert(name, link);
        Ok(handle)
    }

    /// Stops and removes a link; false if unknown.
    pub fn remove_link(&self, name: &str) -> bool {
        self.lock().remove(name).is_some()
    }

    /// A link's handle.
    pub fn link(&self, name: &str) -> Option<LinkHandle> {
        self.lock().get(name).map(WanLink::handle)
    }

    /// Every link, sorted by name.
    pub fn links(&self) -> Vec<LinkInfo> {
        self.lock().values().map(|l| l.info()).collect()
    }

    /// Updates one link.
    pub fn update_link(&self, name: &str, update: &LinkUpdate) -> Result<LinkInfo, WanError> {
        let handle = self.link(name).ok_or_else(|| WanError::UnknownLink(name.to_owned()))?;
        handle.update(update)
    }

    /// Updates every link between regions `from` and `to`; `a_to_b` in the
    /// update means traffic from `from` to `to`, whatever each link's
    /// orientation.
    pub fn update_regions(&self, from: &str, to: &str, update: &LinkUpdate) -> Result<Vec<LinkInfo>, WanError> {
        update.validate()?;
        let reversed = update.reversed();
        let links = self.lock();
        let mut out = Vec::new();
        for link in links.values() {
            let u = match link.orientation(from, to) {
                Some(false) => update,
                Some(true) => &reversed,
                None => continue,
            };
            out.push(link.update(u)?);
        }
        if out.is_empty() {
            return Err(WanError::NoLinksBetween(from.to_owned(), to.to_owned()));
        }
        Ok(out)
    }

    /// Updates every link.
    pub fn update_all(&self, update: &LinkUpdate) -> Result<Vec<LinkInfo>, WanError> {
        update.validate()?;
        self.lock().values().map(|l| l.update(update)).collect()
    }

    /// Partitions region `from` from region `to`: `one_way` cuts only traffic
    /// from `from` to `to`.
    pub fn partition(&self, from: &str, to: &str, one_way: bool, mode: CutMode) -> Result<usize, WanError> {
        let cut = if one_way { Cut::AToB } else { Cut::Both };
        self.update_regions(from, to, &LinkUpdate::cut(cut, mode)).map(|v| v.len())
    }

    /// Removes every cut on every link.
    pub fn heal_all(&self) {
        for link in self.lock().values() {
            link.heal();
        }
    }

    /// Serves the HTTP control API on `addr` (port 0 = any).
    pub async fn serve_control(&self, addr: SocketAddr) -> Result<ControlServer, WanError> {
        let listener = TcpListener::bind(addr).await.map_err(io_err(format!("WAN control: bind {addr}")))?;
        let local = listener.local_addr().map_err(io_err("WAN control: local address"))?;
        let app = Router::new()
            .route("/links", get(api_list))
            .route("/links/{name}", get(api_get).post(api_update))
            .route("/regions/{from}/{to}", post(api_regions))
            .route("/all", post(api_all))
            .route("/heal", post(api_heal))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_CONTROL_BODY))
            .with_state(self.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "WAN control server stopped");
            }
        });
        tracing::info!(addr = %local, "WAN control API listening");
        Ok(ControlServer { addr: local, stop: Some(stop_tx), task })
    }
}

/// The running control API; dropping it stops the server.
pub struct ControlServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ControlServer {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:7400`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops gracefully and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct ApiError(WanError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0 {
            WanError::UnknownLink(_) | WanError::NoLinksBetween(..) => StatusCode::NOT_FOUND,
            WanError::InvalidUpdate(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = serde_json::json!({ "error": self.0.to_string() });
        (status, Json(body)).into_response()
    }
}

impl From<WanError> for ApiError {
    fn from(e: WanError) -> Self {
        Self(e)
    }
}

/// Parses the body without requiring a content type (friendly to `curl -d`).
fn parse_update(body: &[u8]) -> Result<LinkUpdate, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(LinkUpdate::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError(WanError::InvalidUpdate(format!("bad JSON body: {e}"))))
}

async fn api_list(State(c): State<WanController>) -> Json<Vec<LinkInfo>> {
    Json(c.links())
}

async fn api_get(State(c): State<WanController>, Path(name): Path<String>) -> Result<Json<LinkInfo>, ApiError> {
    c.link(&name).map(|l| Json(l.info())).ok_or(ApiError(WanError::UnknownLink(name)))
}

async fn api_update(
    State(c): State<WanController>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<LinkInfo>, ApiError> {
    let u = parse_update(&body)?;
    Ok(Json(c.update_link(&name, &u)?))
}

async fn api_regions(
    State(c): State<WanController>,
    Path((from, to)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Vec<LinkInfo>>, ApiError> {
    let u = parse_update(&body)?;
    Ok(Json(c.update_regions(&from, &to, &u)?))
}

async fn api_all(State(c): State<WanController>, body: Bytes) -> Result<Json<Vec<LinkInfo>>, ApiError> {
    let u = parse_update(&body)?;
    Ok(Json(c.update_all(&u)?))
}

async fn api_heal(State(c): State<WanController>) -> Json<Vec<LinkInfo>> {
    c.heal_all();
    Json(c.links())
}

/// Client of the control API, for drills running in another process.
#[derive(Clone)]
pub struct WanControlClient {
    base: String,
    http: reqwest::Client,
}

impl WanControlClient {
    /// `base` like `http://127.0.0.1:7400`.
    pub fn new(base: &str) -> Result<Self, WanError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| WanError::Control(e.to_string()))?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), http })
    }

    async fn send<T: serde::de::DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, WanError> {
        let resp = req.send().await.map_err(|e| WanError::Control(e.to_string()))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| WanError::Control(e.to_string()))?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(WanError::Control(format!("{status}: {msg}")));
        }
        serde_json::from_slice(&body).map_err(|e| WanError::Control(format!("bad response: {e}")))
    }

    /// `GET /links`.
    pub async fn links(&self) -> Result<Vec<LinkInfo>, WanError> {
        self.send(self.http.get(format!("{}/links", self.base))).await
    }

    /// `POST /links/{name}`.
    pub async fn update_link(&self, name: &str, u: &LinkUpdate) -> Result<LinkInfo, WanError> {
        self.send(self.http.post(format!("{}/links/{name}", self.base)).json(u)).await
    }

    /// `POST /regions/{from}/{to}`.
    pub async fn update_regions(&self, from: &str, to: &str, u: &LinkUpdate) -> Result<Vec<LinkInfo>, WanError> {
        self.send(self.http.post(format!("{}/regions/{from}/{to}", self.base)).json(u)).await
    }

    /// `POST /all`.
    pub async fn update_all(&self, u: &LinkUpdate) -> Result<Vec<LinkInfo>, WanError> {
        self.send(self.http.post(format!("{}/all", self.base)).json(u)).await
    }

    /// `POST /heal`.
    pub async fn heal_all(&self) -> Result<Vec<LinkInfo>, WanError> {
        self.send(self.http.post(format!("{}/heal", self.base))).await
    }
}

/// Configuration of a standalone proxy (TOML: `control = "..."` and
/// `[[links]]` tables with the fields of [`LinkConfig`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WanConfig {
    /// Control API address; `None` = no control API.
    #[serde(default)]
    pub control: Option<SocketAddr>,
    /// The links.
    #[serde(default)]
    pub links: Vec<LinkConfig>,
}

/// Arguments of `attest-chaos wan` (derive-ready for the CLI).
#[derive(Debug, Clone, clap::Args)]
pub struct WanProxyArgs {
    /// A link: `NAME=LISTEN,UPSTREAM[,A_REGION,B_REGION]`, e.g.
    /// `e1-c1=127.0.0.1:17001,127.0.0.1:7001,eastus2,centralus`. Repeatable.
    #[arg(long = "link", value_name = "SPEC", value_parser = parse_link_spec)]
    pub links: Vec<LinkConfig>,
    /// TOML file with more links (`[[links]]` tables) and `control`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP control API.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub control: SocketAddr,
    /// Initial one-way latency of every `--link`, in ms.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Initial jitter of every `--link`, in ms.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Initial bandwidth of every `--link`, in kbit/s (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub bandwidth_kbps: u64,
    /// Initial loss probability of every `--link` (0..=1).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// How long each `--link` tries to reach its upstream before it resets
    /// the client, in ms (see [`LinkConfig::connect_timeout_ms`]).
    #[arg(long)]
    pub connect_timeout_ms: Option<u64>,
}

/// Parses `NAME=LISTEN,UPSTREAM[,A_REGION,B_REGION]`.
pub fn parse_link_spec(spec: &str) -> Result<LinkConfig, String> {
    let (name, rest) =
        spec.split_once('=').ok_or_else(|| format!("link spec {spec:?}: expected NAME=LISTEN,UPSTREAM[,A,B]"))?;
    let parts: Vec<&str> = rest.split(',').map(str::trim).collect();
    let (listen, upstream, regions) = match parts.as_slice() {
        [l, u] => (*l, *u, None),
        [l, u, a, b] => (*l, *u, Some((*a, *b))),
        _ => return Err(format!("link spec {spec:?}: expected LISTEN,UPSTREAM or LISTEN,UPSTREAM,A_REGION,B_REGION")),
    };
    let name = name.trim();
    if name.is_empty() || upstream.is_empty() {
        return Err(format!("link spec {spec:?}: empty name or upstream"));
    }
    let listen: SocketAddr =
        listen.parse().map_err(|e| format!("link spec {spec:?}: listen address {listen:?}: {e}"))?;
    let mut cfg = LinkConfig::new(name, listen, upstream);
    if let Some((a, b)) = regions {
        cfg = cfg.between(a, b);
    }
    Ok(cfg)
}

impl WanProxyArgs {
    /// Merges the command line and the optional file into one configuration.
    pub fn to_config(&self) -> Result<WanConfig, WanError> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(io_err(format!("read {}", path.display())))?;
                toml::from_str::<WanConfig>(&text).map_err(|e| WanError::Config(format!("{}: {e}", path.display())))?
            }
            None => WanConfig::default(),
        };
        let shape = Shape {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            bandwidth_kbps: self.bandwidth_kbps,
            loss: self.loss,
        };
        for link in &self.links {
            let mut link = link.clone().with_conditions(LinkConditions::symmetric(shape));
            link.connect_timeout_ms = self.connect_timeout_ms.or(link.connect_timeout_ms);
            config.links.push(link);
        }
        config.control = Some(self.control);
        if config.links.is_empty() {
            return Err(WanError::Config("no links given (--link or --config)".into()));
        }
        Ok(config)
    }
}

/// Starts every link of `config` and its control API.
pub async fn start_wan_proxy(config: WanConfig) -> Result<(WanController, Option<ControlServer>), WanError> {
    let controller = WanController::new();
    for link in config.links {
        controller.add_link(link).await?;
    }
    let control = match config.control {
        Some(addr) => Some(controller.serve_control(addr).await?),
        None => None,
    };
    Ok((controller, control))
}

/// The `attest-chaos wan` command: runs the proxies until Ctrl-C.
pub async fn run_wan_proxy(args: WanProxyArgs) -> Result<(), WanError> {
    let config = args.to_config()?;
    let (controller, control) = start_wan_proxy(config).await?;
    for l in controller.links() {
        tracing::info!(link = %l.name, listen = %l.listen, upstream = %l.upstream, "proxying");
    }
    tokio::signal::ctrl_c().await.map_err(io_err("waiting for Ctrl-C"))?;
    if let Some(control) = control {
        control.shutdown().await;
    }
    drop(controller);
    Ok(())
}

/// When each chunk reached the emulator.
///
/// A chunk's delay counts from its arrival in the emulator's socket, not
/// from when the emulator got around to reading it: on a busy machine the
/// reading task wakes a few hundred microseconds after the bytes arrived
/// (BENCHMARKS.md, session 30), time a real link does not add. The kernel
/// stamps every received packet when a socket asks for it
/// (`SO_TIMESTAMPNS`) and hands the stamp of the last packet a read
/// consumed back with it (`SCM_TIMESTAMPNS`, wall-clock time); that stamp,
/// converted to the monotonic clock, is the chunk's arrival. Where the
/// kernel gives no stamp, the read's own time is used.
mod arrival {
    use std::io::{ErrorKind, IoSliceMut};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
    use nix::sys::time::TimeSpec;
    use tokio::io::{AsyncReadExt, Interest};
    use tokio::net::tcp::OwnedReadHalf;
    use tokio::time::Instant;

    /// A stamp further back than this is not believed (a wall-clock step):
    /// the read's own time is used instead.
    const MAX_AGE: Duration = Duration::from_secs(1);

    pub(super) struct StampedReader {
        half: OwnedReadHalf,
        /// Room for one `SCM_TIMESTAMPNS`; `None` when the socket refused
        /// the option (then plain reads).
        cmsg: Option<Vec<u8>>,
    }

    impl StampedReader {
        pub(super) fn new(half: OwnedReadHalf) -> Self {
            let stream: &tokio::net::TcpStream = half.as_ref();
            let cmsg = setsockopt(stream, sockopt::ReceiveTimestampns, &true).ok().map(|()| nix::cmsg_space!(TimeSpec));
            Self { half, cmsg }
        }

        /// Reads into `buf`: the byte count (0 at the end of the stream) and
        /// when the bytes arrived.
        pub(super) async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, Instant)> {
            let Some(cmsg) = self.cmsg.as_mut() else {
                let n = self.half.read(buf).await?;
                return Ok((n, Instant::now()));
            };
            let stream: &tokio::net::TcpStream = self.half.as_ref();
            loop {
                stream.readable().await?;
                let fd = stream.as_raw_fd();
                let got = stream.try_io(Interest::READABLE, || {
                    let mut iov = [IoSliceMut::new(buf)];
                    let msg = recvmsg::<()>(fd, &mut iov, Some(cmsg.as_mut_slice()), MsgFlags::empty())?;
                    let stamp = msg.cmsgs().ok().and_then(|mut c| {
                        c.find_map(|m| match m {
                            ControlMessageOwned::ScmTimestampns(ts) => Some(ts),
                            _ => None,
                        })
                    });
                    Ok((msg.bytes, stamp))
                });
                match got {
                    Ok((n, stamp)) => return Ok((n, arrived_at(stamp, SystemTime::now(), Instant::now()))),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// The monotonic time of a wall-clock receive stamp, given both clocks'
    /// readings now; `now` itself without a believable stamp.
    pub(super) fn arrived_at(stamp: Option<TimeSpec>, wall_now: SystemTime, now: Instant) -> Instant {
        let Some(ts) = stamp else { return now };
        let (Ok(secs), Ok(nanos)) = (u64::try_from(ts.tv_sec()), u32::try_from(ts.tv_nsec())) else {
            return now;
        };
        if nanos >= 1_000_000_000 {
            return now;
        }
        let at = UNIX_EPOCH + Duration::new(secs, nanos);
        match wall_now.duration_since(at) {
            Ok(age) if age <= MAX_AGE => now.checked_sub(age).unwrap_or(now),
            // A stamp from the future (clock stepped back) or too old.
            _ => now,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_stamp_moves_the_arrival_back_by_its_age() {
            let now = Instant::now();
            let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let stamp = TimeSpec::from_duration(Duration::from_secs(1_800_000_000) - Duration::from_micros(300));
            assert_eq!(arrived_at(Some(stamp), wall, now), now - Duration::from_micros(300));
        }

        #[test]
        fn no_stamp_a_future_stamp_or_an_old_one_mean_now() {
            let now = Instant::now();
            let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            assert_eq!(arrived_at(None, wall, now), now);
            let future = TimeSpec::from_duration(Duration::from_secs(1_800_000_001));
            assert_eq!(arrived_at(Some(future), wall, now), now);
            let old = TimeSpec::from_duration(Duration::from_secs(1_799_999_990));
            assert_eq!(arrived_at(Some(old), wall, now), now);
        }

        /// Over real loopback sockets: bytes written well before the read
        /// are stamped with their arrival, not with the read.
        #[tokio::test]
        async fn a_late_read_gets_the_arrival_time() {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (server, _) = listener.accept().await.expect("accept");
            let (r, _w) = server.into_split();
            let mut reader = StampedReader::new(r);
            assert!(reader.cmsg.is_some(), "the kernel takes SO_TIMESTAMPNS");
            let before = Instant::now();
            tokio::io::AsyncWriteExt::write_all(&mut client, b"hello").await.expect("write");
            let written = Instant::now();
            // Sleep well past the write so a read-time stamp would show.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let read_from = Instant::now();
            let mut buf = [0u8; 16];
            let (n, arrived) = reader.read(&mut buf).await.expect("read");
            assert_eq!(&buf[..n], b"hello");
            // Clocks are read at different instants; allow a little slack
            // either side, far less than the 50 ms gap.
            let slack = Duration::from_millis(5);
            assert!(arrived + slack >= before, "arrival {arrived:?} before the write began {before:?}");
            assert!(arrived <= written + slack, "arrival {arrived:?} is the read's time, not the write's");
            assert!(arrived < read_from, "stamped at the read");
            drop(client);
            let (n, _) = reader.read(&mut buf).await.expect("read eof");
            assert_eq!(n, 0);
        }
    }
}

/// Sub-millisecond release times for the delay queue.
///
/// tokio's timer wheel fires on the next millisecond tick, so
/// `sleep_until` ends on average ~0.5 ms (up to ~1 ms) late: on an
/// emulated 10 ms one-way link that is a 5–10 % error in exactly the
/// quantity a WAN benchmark compares against. The last stretch of every
/// wait is instead handed to one OS thread that sleeps on a condition
/// variable (a futex with an hrtimer deadline, ~50 µs slack on Linux) and
/// completes the waiter when its time comes.
mod precise {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    use std::sync::{Condvar, Mutex, OnceLock};
    use std::time::Duration;

    use tokio::sync::oneshot;
    use tokio::time::Instant;

    /// Below this remainder the precise thread takes over from tokio.
    const COARSE_MARGIN: Duration = Duration::from_millis(2);
    /// The timer thread busy-waits this last stretch before a deadline:
    /// more than the kernel's default timer slack (50 µs), which a timed
    /// wait may add.
    const SPIN: Duration = Duration::from_micros(60);

    struct Due {
        at: std::time::Instant,
        seq: u64,
        done: oneshot::Sender<()>,
    }
    impl PartialEq for Due {
        fn eq(&self, o: &Self) -> bool {
            (self.at, self.seq) == (o.at, o.seq)
        }
    }
    impl Eq for Due {}
    impl PartialOrd for Due {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Due {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            (self.at, self.seq).cmp(&(o.at, o.seq))
        }
    }

    #[derive(Default)]
    struct Timer {
        queue: Mutex<(u64, BinaryHeap<Reverse<Due>>)>,
        wake: Condvar,
    }

    fn timer() -> &'static Timer {
        static TIMER: OnceLock<&'static Timer> = OnceLock::new();
        TIMER.get_or_init(|| {
            let t: &'static Timer = Box::leak(Box::default());
            std::thread::Builder::new()
                .name("wan-timer".into())
                .spawn(move || run(t))
                .expect("spawning the WAN timer thread");
            t
        })
    }

    fn run(t: &'static Timer) {
        let mut q = t.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = std::time::Instant::now();
            while q.1.peek().is_some_and(|d| d.0.at <= now) {
                if let Some(Reverse(d)) = q.1.pop() {
                    let _ = d.done.send(());
                }
            }
            q = match q.1.peek().map(|d| d.0.at) {
                // Close to the deadline, spin (with the lock released)
                // rather than sleep: a wake-up from a timed wait lands tens
                // of microseconds late on a loaded machine.
                Some(at) if at - now <= SPIN => {
                    drop(q);
                    while std::time::Instant::now() < at {
                        std::hint::spin_loop();
                    }
                    t.queue.lock().unwrap_or_else(|p| p.into_inner())
                }
                Some(at) => t.wake.wait_timeout(q, at - now - SPIN).unwrap_or_else(|p| p.into_inner()).0,
                None => t.wake.wait(q).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    /// Waits until `at`, within tens of microseconds.
    pub(super) async fn sleep_until(at: Instant) {
        let now = Instant::now();
        if at <= now {
            return;
        }
        if at - now > COARSE_MARGIN {
            tokio::time::sleep_until(at - COARSE_MARGIN).await;
        }
        let (done, rx) = oneshot::channel();
        let t = timer();
        {
            let mut q = t.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.0 += 1;
            let seq = q.0;
            q.1.push(Reverse(Due { at: at.into_std(), seq, done }));
        }
        t.wake.notify_one();
        // The thread never exits; a dropped sender would only end the wait early.
        let _ = rx.await;
    }

    #[cfg(test)]
    mod tests {
        #[tokio::test]
        async fn wakes_after_the_deadline_in_order() {
            let start = tokio::time::Instant::now();
            let mut tasks = Vec::new();
            for ms in [7u64, 1, 4, 3] {
                tasks.push(tokio::spawn(async move {
                    let at = start + std::time::Duration::from_millis(ms);
                    super::sleep_until(at).await;
                    assert!(tokio::time::Instant::now() >= at, "woke before {ms} ms");
                }));
            }
            for t in tasks {
                t.await.expect("sleeper");
            }
        }
    }
}

#[cfg(test)]
mod tests;
