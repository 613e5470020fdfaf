//! attest-raft: attestd's replicated control plane.
//!
//! openraft (0.9, storage-v2) over one RocksDB per node and a tonic
//! transport with mutual TLS. This crate knows nothing of HTTP or
//! attestation: it stores providers, policies, certificates, collateral and
//! the replication mode as commands and answers who leads, what is applied
//! and whether a write can be accepted. See `ARCHITECTURE.md`.
//!
//! Why openraft 0.9.25 and not a 0.10 alpha: 0.9 is the last stable line;
//! the storage-v2 API (`RaftLogStorage` + `RaftStateMachine`) gives us
//! control over when a log append counts as flushed, which is all the
//! durability contract needs.
#![forbid(unsafe_code)]
// openraft's `StorageError` (~224 bytes) is the error type its storage traits
// demand; boxing it in our helpers would only add conversions at every `?`.
#![allow(clippy::result_large_err)]

pub mod append_stream;
pub mod batcher;
pub mod command;
pub mod control;
pub mod db;
pub mod epoch;
pub mod forwarder;
pub mod log_store;
pub mod network;
pub mod placement;
pub mod recovery;
pub mod replication;
pub mod service;
pub mod shipper;
pub mod state;
pub mod state_machine;
#[cfg(test)]
mod test_support;
pub mod tls;
pub mod types;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use attest_proto::node_admin_server::NodeAdminServer;
use attest_proto::raft_server::RaftServer;
use openraft::{Config, SnapshotPolicy};

pub use command::{Command, ReplicationMode, Request, Response, TrustModel};
pub use control::{ControlPlane, ControlStatus, Outcome, Timing, WriteError, WriteOutcome};
pub use state::ControlState;
pub use state_machine::StateHandle;
pub use types::{NodeId, NodeInfo, Raft, TypeConfig};

use crate::network::{Channels, NetworkFactory, PeerContacts, MAX_MESSAGE_BYTES};
use crate::tls::{PeerTls, TlsFiles};

#[derive(Clone, Debug)]
pub struct RaftNodeConfig {
    pub id: NodeId,
    pub region: String,
    /// Where the gRPC server listens.
    pub listen: SocketAddr,
    /// Address peers use to reach this node's gRPC server.
    pub advertise_raft: String,
    /// Address clients use to reach this node's HTTPS API.
    pub advertise_api: String,
    /// RocksDB lives in `data_dir/raft`.
    pub data_dir: PathBuf,
    pub timing: Timing,
    pub tls: Option<TlsFiles>,
    pub primary_region: String,
    pub secondary_region: Option<String>,
    /// Advertised peer address → address to dial (see `network::Channels`).
    pub dial_overrides: std::collections::HashMap<String, String>,
    /// A forced promotion is refused until no leader was heard for this long.
    pub promote_min_outage: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("loading state: {0}")]
    Storage(#[from] types::StorageError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("invalid raft config: {0}")]
    Config(String),
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("starting raft: {0}")]
    Raft(String),
    #[error("grpc: {0}")]
    Grpc(String),
    #[error(transparent)]
    Epoch(#[from] epoch::EpochError),
}

/// A running Raft member: the control plane plus its background tasks.
pub struct RaftNode {
    pub control: Arc<ControlPlane>,
    pub contacts: Arc<PeerContacts>,
    /// The address the gRPC server actually bound.
    pub bound: SocketAddr,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl RaftNode {
    pub async fn start(cfg: RaftNodeConfig) -> Result<Self, StartError> {
        let db = db::open(&cfg.data_dir.join("raft"))?;
        let epoch = epoch::EpochState::load(db.clone())?;
        if let Some(f) = epoch.fence() {
            tracing::error!(reason = %recovery::fence_reason(&f), "starting FENCED");
        }
        let outbox = Arc::new(shipper::Outbox::default());
        let (batcher, batch_queue) = batcher::Batcher::channel();
        let log_store = log_store::LogStore::shared(db.clone(), outbox.clone(), Arc::default());
        let log_view = log_store.clone();
        let t = &cfg.timing;
        let (sm, state) = state_machine::StateMachineStore::open(db.clone(), t.snapshot_bytes_since_last)?;
        let sm_shared = sm.shared();
        let snapshot_trigger = sm.snapshot_trigger();

        let factor =
            if Some(&cfg.region) == cfg.secondary_region.as_ref() { t.secondary_election_factor.max(1) } else { 1 };
        let raft_config = Config {
            cluster_name: "attestd".into(),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_timeout_min_ms * factor,
            election_timeout_max: t.election_timeout_max_ms * factor,
            install_snapshot_timeout: t.install_snapshot_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: t.max_in_snapshot_log_to_keep,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;

        let tls = cfg.tls.as_ref().map(PeerTls::load).transpose()?;
        let channels = Channels::new(
            tls.clone(),
            Duration::from_millis(t.election_timeout_min_ms.max(200)),
            cfg.dial_overrides.clone(),
        )
        .stream_appends(t.stream_appends);
        let contacts = Arc::new(PeerContacts::default());
        let handoff = Arc::new(placement::Handoff::default());
        let network = NetworkFactory {
            handoff: handoff.clone(),
            channels: channels.clone(),
            contacts: contacts.clone(),
            backoff: Duration::from_millis(t.heartbeat_ms.clamp(20, 500)),
            epoch: epoch.clone(),
            outbox: outbox.clone(),
            elide_empty_within: t.elide_empty_appends.then(|| Duration::from_millis(t.heartbeat_ms / 2)),
        };
        // Before Raft runs or anything is served: were we superseded while
        // we were away? (See `recovery::check_epoch_before_start`.)
        if log_store.last_log_id().ok().flatten().is_some() {
            let peers = recovery::known_peers(&log_store, &sm, cfg.id);
            recovery::check_epoch_before_start(&channels, &epoch, peers, recovery::START_EPOCH_CHECK).await;
        }
        let raft_config = Arc::new(raft_config);
        let restarter = recovery::Restarter {
            db,
            config: raft_config.clone(),
            network: network.clone(),
            shared: sm_shared,
            outbox: outbox.clone(),
            log_cache: log_store.cache(),
        };
        let ship_network = network.clone();
        let raft = Raft::new(cfg.id, raft_config, network, log_store, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let control = Arc::new(ControlPlane {
            id: cfg.id,
            region: cfg.region.clone(),
            me: NodeInfo {
                region: cfg.region.clone(),
                raft_addr: cfg.advertise_raft.clone(),
                api_addr: cfg.advertise_api.clone(),
            },
            raft_cell: std::sync::RwLock::new(raft),
            epoch,
            restarter,
            frozen: Default::default(),
            recovery_lock: Default::default(),
            promote_min_outage: cfg.promote_min_outage,
            state,
            forwarder: forwarder::Forwarder::new(channels.clone(), cfg.id),
            channels,
            timing: cfg.timing.clone(),
            leader_contact: Default::default(),
            log: log_view,
            handoff,
            outbox,
            batcher,
        });

        if control.epoch.is_fenced() {
            // A superseded node runs no consensus (see `recovery::fence_watcher`).
            let _ = control.raft().shutdown().await;
        }

        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| StartError::Bind { addr: cfg.listen, source })?;
        let bound = listener.local_addr().map_err(|source| StartError::Bind { addr: cfg.listen, source })?;
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let mut builder = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)));
        if let Some(tls) = &tls {
            builder = builder.tls_config(tls.server_config()).map_err(|e| StartError::Grpc(e.to_string()))?;
        }
        let router = builder
            .add_service(
                RaftServer::new(service::RaftService { control: control.clone(), shutdown: shutdown_rx.clone() })
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                NodeAdminServer::new(service::AdminService { control: control.clone() })
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            );
        let mut srv_shutdown = shutdown_rx.clone();
        // tonic applies `tcp_nodelay` only to listeners it binds itself; on
        // our own listener Nagle would hold small Raft replies back for a
        // delayed ACK (~40 ms).
        let incoming = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |s| {
            s.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        });
        let server = tokio::spawn(async move {
            let signal = async move {
                let _ = srv_shutdown.changed().await;
            };
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
                tracing::error!(error = %e, "raft gRPC server stopped");
            }
        });

        let controller = replication::ModeController {
            control: control.clone(),
            contacts: contacts.clone(),
            primary_region: cfg.primary_region.clone(),
            secondary_region: cfg.secondary_region.clone(),
        };
        tokio::spawn(recovery::fence_watcher(control.clone(), shutdown_rx.clone()));
        tokio::spawn(recovery::divergence_reporter(control.clone(), shutdown_rx.clone()));
        tokio::spawn(
            placement::Placement { control: control.clone(), contacts: contacts.clone() }.run(shutdown_rx.clone()),
        );
        let proposer = control.clone();
        tokio::spawn(batch_queue.run(move || proposer.raft(), shutdown_rx.clone()));
        let snapshotter = control.clone();
        tokio::spawn(snapshot_trigger.run(move || snapshotter.raft(), shutdown_rx.clone()));
        tokio::spawn(shipper::Shipper { control: control.clone(), network: ship_network }.run(shutdown_rx.clone()));
        tokio::spawn(controller.run(shutdown_rx));

        Ok(Self { control, contacts, bound, shutdown_tx, server })
    }

    /// Initializes a brand-new cluster with `members` as voters. A node that
    /// is already initialized (any restart) does nothing.
    pub async fn bootstrap(&self, members: BTreeMap<NodeId, NodeInfo>) -> Result<bool, StartError> {
        // A re-seeded node only ever joins: bootstrapping it would found a
        // second cluster with the old member list.
        if self.control.epoch.reseeded() || self.control.epoch.is_fenced() {
            return Ok(false);
        }
        let raft = self.control.raft();
        if raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))? {
            return Ok(false);
        }
        match raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(StartError::Raft(e.to_string())),
        }
    }

    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let _ = self.control.raft().shutdown().await;
        let _ = self.server.await;
    }
}

/// Asks the cluster (through any of `seeds`, gRPC addresses) to add the
/// node behind `control`; retries until `within` elapses. A node that is
/// already a member gets an immediate success from the leader.
pub async fn join_cluster(
    control: &ControlPlane,
    seeds: &[String],
    me: NodeInfo,
    voter: bool,
    within: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut last_err = String::from("no seeds given");
    let mut targets: Vec<String> = seeds.to_vec();
    while tokio::time::Instant::now() < deadline {
        for addr in targets.clone() {
            let Ok(mut client) = control.channels.admin_client(&addr) else { continue };
            let mut req = tonic::Request::new(attest_proto::JoinRequest {
                node_id: control.id,
                region: me.region.clone(),
                raft_addr: me.raft_addr.clone(),
                api_addr: me.api_addr.clone(),
                voter,
                epoch: control.epoch.epoch(),
                has_state: control.has_raft_state(),
            });
            req.set_timeout(Duration::from_secs(30));
            match client.join(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if r.error_code.is_empty() {
                        return Ok(());
                    }
                    last_err = format!("{}: {}", r.error_code, r.error_message);
                    // A fence does not change by asking again.
                    if r.error_code == "NodeFenced" {
                        return Err(last_err);
                    }
                    // Follow the leader hint when we know its address.
                    if r.leader_id != 0 {
                        let m = control.raft().metrics().borrow().clone();
                        if let Some(n) = m.membership_config.membership().get_node(&r.leader_id) {
                            if !targets.contains(&n.raft_addr) {
                                targets.insert(0, n.raft_addr.clone());
                            }
                        }
                    }
                }
                Err(s) => last_err = format!("{addr}: {}", s.message()),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last_err)
}
