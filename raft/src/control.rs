//! The control-plane write and read paths, shared by the HTTP API and the
//! node-to-node `NodeAdmin` service.
//!
//! A write is accepted on any node. The leader proposes it; any other node
//! forwards it to the leader it knows. Nodes never wait for a leader that
//! cannot exist: a node that has not heard from a leader for
//! `readonly_after` (one election timeout by default) answers
//! [`WriteError::ReadOnly`] at once, and a leader that has not had a quorum
//! acknowledge it for that long does the same, before proposing anything.
//!
//! In `sync` replication mode the leader acknowledges only once some node of
//! the secondary region has the entry on disk (openraft's per-follower
//! `matched` index is advanced only by an AppendEntries answer, and
//! followers answer only after the synced append, see `log_store`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use tokio::time::timeout_at;

use crate::batcher::ProposeError;
use crate::command::{Command, CommandError, ReplicationMode, Request};
use crate::forwarder::Forwarded;
use crate::network::Channels;
use crate::state_machine::StateHandle;
use crate::types::{NodeId, NodeInfo, Raft, RaftMetrics};

/// Timings of one deployment. Heartbeat ≈ RTT and election ≥ 10 × RTT
/// (etcd's rule of thumb) for WAN links.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Multiplies the election timeouts of secondary-region nodes, so that
    /// a primary node normally wins elections.
    pub secondary_election_factor: u64,
    /// A node without leader contact for this long answers writes with
    /// `ControlPlaneReadOnly`. Default: the maximum election timeout.
    pub readonly_after_ms: Option<u64>,
    /// Secondary region unreachable this long ⇒ the leader switches to `async`.
    pub async_after_ms: u64,
    /// Upper bound a write may wait overall (including the sync wait).
    pub write_timeout_ms: u64,
    /// Entries since the last snapshot that trigger a new one.
    pub snapshot_logs_since_last: u64,
    /// Bytes of requests applied since the last snapshot that trigger a new
    /// one, whichever of the two limits comes first. What a restart
    /// re-applies is the log after the snapshot, and an entry may carry up
    /// to ~1 MiB, so the entry count alone does not bound it (see
    /// `state_machine`). 0: by entries only.
    pub snapshot_bytes_since_last: u64,
    /// Entries kept in the log behind a snapshot (for slow followers).
    pub max_in_snapshot_log_to_keep: u64,
    /// Deadline of one snapshot transfer (install) RPC.
    pub install_snapshot_timeout_ms: u64,
    /// A leader outside the primary region hands leadership back once a
    /// quorum of primary voters has been reachable and replicating for this
    /// long (see `placement`); 0 = never on its own (`admin rebalance`).
    pub leader_return_ms: u64,
    /// In `sync` mode the leader also sends new entries straight to the
    /// secondary region's nodes, pipelined, so a sync write waits about one
    /// round trip instead of two (see `shipper`). Off: only openraft's own
    /// replication counts.
    pub ship_to_secondary: bool,
    /// The leader also sends new entries straight to its other followers
    /// (the primary region's), in every mode, before its own synced
    /// append: their fsyncs then run beside the leader's instead of after
    /// it (openraft 0.9 replicates only once the leader's append is
    /// flushed; see `shipper`). Off: openraft's stream only.
    pub ship_to_primary: bool,
    /// openraft's AppendEntries without entries (the commit notice it sends
    /// each follower after every commit, and heartbeats) to a peer whose
    /// latest shipment succeeded within half a heartbeat interval are
    /// answered on the leader instead of sent; never during a leadership
    /// check (linearizable read), nor towards a node waiting to apply a
    /// write it forwarded (it answers its client only once it has; see
    /// `Outbox::heard_lately`). Followers then learn a new commit index
    /// from the next shipment or heartbeat: under load with the next write,
    /// at most about 1.5 heartbeat intervals later once writes stop (see
    /// `shipper`). Off: every such request is sent.
    pub elide_empty_appends: bool,
    /// AppendEntries (openraft's and the shipper's) travel as messages of
    /// one long-lived gRPC stream per peer instead of one unary call each
    /// (see `append_stream`); a peer built without streams gets unary
    /// calls. Off: unary calls only.
    pub stream_appends: bool,
    /// TEST ONLY, breaks RPO = 0 on purpose: acknowledge `sync`-mode writes
    /// once committed, without waiting for a secondary-region node. It
    /// exists so the chaos harness can show that its RPO check catches a
    /// broken build; attestd refuses to start with it unless
    /// `ATTESTD_ALLOW_UNSAFE_TEST_SWITCHES=1` is set.
    pub unsafe_ack_before_secondary: bool,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 1500,
            secondary_election_factor: 3,
            readonly_after_ms: None,
            async_after_ms: 5000,
            write_timeout_ms: 10_000,
            snapshot_logs_since_last: 5000,
            snapshot_bytes_since_last: 64 << 20,
            max_in_snapshot_log_to_keep: 1000,
            install_snapshot_timeout_ms: 10_000,
            leader_return_ms: 3_000,
            ship_to_secondary: true,
            ship_to_primary: true,
            elide_empty_appends: true,
            stream_appends: true,
            unsafe_ack_before_secondary: false,
        }
    }
}

impl Timing {
    pub fn readonly_after(&self) -> Duration {
        Duration::from_millis(self.readonly_after_ms.unwrap_or(self.election_timeout_max_ms))
    }
}

/// How an acknowledged write was acknowledged.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Log index at which the command was applied.
    pub index: u64,
    /// The replication mode the acknowledgement was given under.
    pub mode: ReplicationMode,
    /// True when a secondary-region node had the entry on disk at ack time.
    pub secondary_durable: bool,
    pub leader: NodeId,
    /// The state machine's verdict (a rejected command is still "written":
    /// it consumed a log index and will be answered the same way on retry).
    pub error: Option<CommandError>,
    pub detail: Option<String>,
    pub duplicate: bool,
}

/// Whether a failed write may still take effect.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Nothing was proposed: the write certainly did not happen.
    NotApplied,
    /// It may have been proposed; retry with the same request id to learn.
    Unknown,
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    #[error("the control plane is read-only: {reason}")]
    ReadOnly { reason: String, outcome: Outcome },
    #[error("committed at index {index} but not yet durable in the secondary region; retry with the same request id")]
    ReplicationPending { index: u64 },
    #[error("not the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Internal(String),
    /// This node was superseded by a forced promotion (see `epoch`).
    #[error("{reason}")]
    Fenced { reason: String },
    /// This node's Raft core stopped (storage error, e.g. a full disk).
    #[error("{reason}")]
    NodeFailed { reason: String },
}

impl WriteError {
    /// MAA-style error code for the API layer.
    pub fn code(&self) -> &'static str {
        match self {
            WriteError::ReadOnly { .. } => "ControlPlaneReadOnly",
            WriteError::ReplicationPending { .. } => "ReplicationPending",
            WriteError::NotLeader { .. } => "NotLeader",
            WriteError::Rejected(_) => "InvalidOperation",
            WriteError::Internal(_) => "InternalError",
            WriteError::Fenced { .. } => "NodeFenced",
            WriteError::NodeFailed { .. } => "NodeStorageFailed",
        }
    }

    pub fn from_code(code: &str, message: String, leader: Option<NodeId>) -> Self {
        match code {
            "ControlPlaneReadOnly" => WriteError::ReadOnly { reason: message, outcome: Outcome::NotApplied },
            "ControlPlaneReadOnlyUnknown" => WriteError::ReadOnly { reason: message, outcome: Outcome::Unknown },
            "NotLeader" => WriteError::NotLeader { leader },
            "InvalidOperation" => WriteError::Rejected(message),
            "ReplicationPending" => WriteError::ReplicationPending { index: message.parse().unwrap_or_default() },
            "NodeFenced" => WriteError::Fenced { reason: message },
            "NodeStorageFailed" => WriteError::NodeFailed { reason: message },
            _ => WriteError::Internal(message),
        }
    }

    /// Encodes for the wire (`ForwardReply.error_code` / message).
    pub fn to_wire(&self) -> (String, String) {
        match self {
            WriteError::ReadOnly { reason, outcome: Outcome::Unknown } => {
                ("ControlPlaneReadOnlyUnknown".into(), reason.clone())
            }
            WriteError::ReplicationPending { index } => ("ReplicationPending".into(), index.to_string()),
            other => (other.code().into(), other.to_string()),
        }
    }
}

/// What `/health` and `/metrics` report about the control plane.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControlStatus {
    pub node_id: NodeId,
    pub region: String,
    pub raft_role: String,
    pub term: u64,
    /// The leader this node follows: itself when it leads, otherwise the
    /// one it has heard from since it started. Not the leader of the vote
    /// it loaded from disk: after a restart that names the leader of the
    /// term it went down in, which may be long gone.
    pub leader: Option<NodeId>,
    pub leader_region: Option<String>,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    /// "writable" or "read-only".
    pub control_plane: String,
    pub replication_mode: ReplicationMode,
    pub replication_reason: String,
    pub primary_region: Option<String>,
    pub secondary_region: Option<String>,
    /// Milliseconds since this node last heard from a leader (0 on the leader).
    pub leader_contact_ms: Option<u64>,
    /// Per-peer replication lag in entries (leader only).
    pub peer_lag: std::collections::BTreeMap<NodeId, u64>,
    pub members: Vec<MemberStatus>,
    /// This node's configuration epoch (1 until a forced promotion).
    pub epoch: u64,
    /// Set when a newer epoch superseded this node (see `epoch`).
    pub fenced: Option<crate::epoch::FenceRecord>,
    /// Set when this node's Raft core stopped on a storage error or a
    /// panic: the node follows the cluster no more until it is restarted.
    #[serde(default)]
    pub raft_failure: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub region: String,
    pub raft_addr: String,
    pub api_addr: String,
    pub voter: bool,
}

/// Millisecond clock local to this process, for "time since" bookkeeping.
#[derive(Clone)]
pub struct LeaderContact {
    start: Instant,
    /// ms since `start` of the last AppendEntries accepted from a leader
    /// (0 = never).
    last: Arc<AtomicU64>,
}

impl Default for LeaderContact {
    fn default() -> Self {
        Self { start: Instant::now(), last: Arc::default() }
    }
}

impl LeaderContact {
    pub fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.store(ms.max(1), Ordering::Relaxed);
    }

    /// Time since the last contact, or since process start if never.
    pub fn age(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last.load(Ordering::Relaxed)))
    }

    pub fn ever(&self) -> bool {
        self.last.load(Ordering::Relaxed) != 0
    }
}

pub struct ControlPlane {
    pub id: NodeId,
    pub region: String,
    /// This node as the membership records it.
    pub me: NodeInfo,
    /// The running openraft instance. Behind a lock only because a forced
    /// promotion or a re-seed restarts Raft inside the process; everything
    /// else clones it (`raft()`, a cheap handle) and never holds the lock.
    pub(crate) raft_cell: std::sync::RwLock<Raft>,
    /// This node's configuration epoch and fence (see `epoch`).
    pub epoch: Arc<crate::epoch::EpochState>,
    /// How to restart Raft on the same storage (see `recovery`).
    pub(crate) restarter: crate::recovery::Restarter,
    /// Set while a forced promotion has Raft shut down on this node.
    pub(crate) frozen: std::sync::Mutex<Option<crate::recovery::Freeze>>,
    /// Serializes recovery steps on this node.
    pub(crate) recovery_lock: tokio::sync::Mutex<()>,
    /// `[recovery] promote_min_outage_ms` of this node's configuration.
    pub promote_min_outage: Duration,
    pub state: StateHandle,
    pub channels: Channels,
    pub timing: Timing,
    pub leader_contact: LeaderContact,
    /// Read-only view of the local log (operators, recovery reports).
    pub log: crate::log_store::LogStore,
    /// Leadership handoff to the primary region (see `placement`).
    pub handoff: Arc<crate::placement::Handoff>,
    /// Express shipping to the secondary region (see `shipper`).
    pub outbox: Arc<crate::shipper::Outbox>,
    /// Group commit of the leader's proposals (see `batcher`).
    pub(crate) batcher: crate::batcher::Batcher,
    /// Coalesces writes forwarded to the leader (see `forwarder`).
    pub(crate) forwarder: crate::forwarder::Forwarder,
}

/// One local log entry as operators see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogEntrySummary {
    pub index: u64,
    pub term: u64,
    /// "blank", "membership" or the command kind.
    pub kind: String,
    pub request_id: Option<String>,
    pub actor: Option<String>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl ControlPlane {
    /// The running Raft instance (a cheap, cloneable handle).
    pub fn raft(&self) -> Raft {
        self.raft_cell.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn metrics(&self) -> RaftMetrics {
        self.raft().metrics().borrow().clone()
    }

    /// Builds a request envelope with a fresh id.
    pub fn request(&self, actor: &str, command: Command) -> Request {
        Request { request_id: uuid::Uuid::new_v4().to_string(), actor: actor.into(), proposed_at_ms: now_ms(), command }
    }

    /// Writes through whichever node leads; see the module docs.
    pub async fn write(&self, req: Request, within: Duration) -> Result<WriteOutcome, WriteError> {
        let started = Instant::now();
        let kind = req.command.kind();
        let deadline = tokio::time::Instant::now() + within.min(Duration::from_millis(self.timing.write_timeout_ms));
        let result = match self.refusal() {
            Some(e) => Err(e),
            None => self.write_inner(req, deadline).await,
        };
        let status = match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        metrics::counter!("attest_control_writes_total", "kind" => kind, "result" => status).increment(1);
        metrics::histogram!("attest_control_write_seconds", "kind" => kind).record(started.elapsed().as_secs_f64());
        result
    }

    async fn write_inner(&self, req: Request, deadline: tokio::time::Instant) -> Result<WriteOutcome, WriteError> {
        let readonly_after = self.timing.readonly_after();
        // Set once a forward may have reached a leader: from then on a
        // failure cannot claim the write did not happen.
        let mut maybe_delivered = false;
        let fail = |reason: String, delivered: bool| WriteError::ReadOnly {
            reason,
            outcome: if delivered { Outcome::Unknown } else { Outcome::NotApplied },
        };
        loop {
            let m = self.metrics();
            if m.state == ServerState::Leader {
                return match self.leader_write(req.clone(), deadline).await {
                    Err(WriteError::NotLeader { .. }) => {
                        self.wait_metrics_change(Duration::from_millis(20), deadline).await;
                        continue;
                    }
                    Err(e) => Err(unknown_if_delivered(e, maybe_delivered)),
                    ok => ok,
                };
            }
            let leader = m.current_leader.filter(|l| *l != self.id);
            let fresh = self.leader_contact.ever() && self.leader_contact.age() < readonly_after;
            if let (Some(leader), true) = (leader, fresh) {
                let Some(addr) = member_addr(&m, leader) else {
                    return Err(WriteError::Internal(format!("leader {leader} is not in the membership")));
                };
                match self.forward(&addr, &req, deadline).await {
                    Ok(out) => {
                        self.wait_applied_after_forward(out.index, deadline).await;
                        return Ok(out);
                    }
                    Err(ForwardFailure::Remote(WriteError::NotLeader { .. })) => {}
                    Err(ForwardFailure::Remote(e)) => return Err(unknown_if_delivered(e, maybe_delivered)),
                    Err(ForwardFailure::Transport { delivered }) => maybe_delivered |= delivered,
                }
            } else if !fresh
                && !self.handoff.noticed()
                && (self.leader_contact.ever() || self.leader_contact.age() >= readonly_after)
            {
                // No usable leader, and this is not a fresh process still
                // looking for one: answer now instead of waiting for a
                // leader that cannot exist on this side.
                let reason = if self.leader_contact.ever() {
                    format!(
                        "no leader with a quorum reachable from region {} for {} ms (the primary region may be down or partitioned)",
                        self.region,
                        self.leader_contact.age().as_millis()
                    )
                } else {
                    "this node has not reached a leader since it started".to_string()
                };
                return Err(fail(reason, maybe_delivered));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(fail("timed out waiting for a leader".into(), maybe_delivered));
            }
            self.wait_metrics_change(Duration::from_millis(50), deadline).await;
        }
    }

    /// A write this node forwarded was answered at log `index`: waits until
    /// it is applied here too, so that this node's own (local) reads show
    /// it — read-your-writes through the node a client wrote to. The
    /// leader tells a node with a forward in its hands the commit index at
    /// once (`Outbox::forward_started`), so this rarely waits longer than
    /// that message; it gives up (the write stands) at the write's deadline
    /// or after `readonly_after`, when the leader may be gone.
    async fn wait_applied_after_forward(&self, index: u64, deadline: tokio::time::Instant) {
        let until = deadline.min(tokio::time::Instant::now() + self.timing.readonly_after());
        if !self.state.wait_applied(index, until).await {
            metrics::counter!("attest_control_forwarded_unapplied_total").increment(1);
        }
    }

    async fn wait_metrics_change(&self, max: Duration, deadline: tokio::time::Instant) {
        let mut rx = self.raft().metrics();
        let until = (tokio::time::Instant::now() + max).min(deadline);
        let _ = timeout_at(until, rx.changed()).await;
    }

    /// Why this node must not accept a write at all: it is fenced by a
    /// newer epoch, or a forced promotion has its Raft stopped.
    pub fn refusal(&self) -> Option<WriteError> {
        if let Some(f) = self.epoch.fence() {
            return Some(WriteError::Fenced { reason: crate::recovery::fence_reason(&f) });
        }
        if let Some(reason) = self.raft_failure() {
            return Some(WriteError::NodeFailed { reason });
        }
        if self.frozen.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return Some(WriteError::ReadOnly {
                reason: "a forced promotion is in progress on this node".into(),
                outcome: Outcome::NotApplied,
            });
        }
        None
    }

    /// Proposes on this node, which believes it leads.
    pub async fn leader_write(&self, req: Request, deadline: tokio::time::Instant) -> Result<WriteOutcome, WriteError> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let m = self.metrics();
        if m.state != ServerState::Leader {
            return Err(WriteError::NotLeader { leader: m.current_leader });
        }
        // A leader handing over leadership takes no new write: the caller
        // waits for (or is forwarded to) the next leader.
        let Some(_inflight) = self.handoff.begin_write() else {
            return Err(WriteError::NotLeader { leader: None });
        };
        let readonly_after = self.timing.readonly_after();
        if let Some(ms) = m.millis_since_quorum_ack {
            if Duration::from_millis(ms) > readonly_after {
                return Err(WriteError::ReadOnly {
                    reason: format!("leader {} has had no quorum acknowledgement for {ms} ms", self.id),
                    outcome: Outcome::NotApplied,
                });
            }
        }
        let (log_index, data) = match timeout_at(deadline, self.batcher.propose(req)).await {
            Err(_) => {
                return Err(WriteError::ReadOnly {
                    reason: "proposed but not committed before the deadline (quorum lost?)".into(),
                    outcome: Outcome::Unknown,
                })
            }
            Ok(Err(ProposeError::NotLeader(leader))) => return Err(WriteError::NotLeader { leader }),
            Ok(Err(ProposeError::Failed(e))) => return Err(WriteError::Internal(e)),
            Ok(Ok(r)) => r,
        };
        let index = if data.duplicate { data.index } else { log_index };
        let (mode, secondary_durable) = if self.timing.unsafe_ack_before_secondary {
            (self.state.read(|s| s.replication.mode), false)
        } else {
            self.wait_durable(index, deadline).await?
        };
        Ok(WriteOutcome {
            index,
            mode,
            secondary_durable,
            leader: self.id,
            error: data.error,
            detail: data.detail,
            duplicate: data.duplicate,
        })
    }

    /// In `sync` mode, waits until a secondary-region node has `index` on
    /// disk, or until the mode changes (the leader's controller switches to
    /// `async` when the secondary stays unreachable).
    async fn wait_durable(
        &self,
        index: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(ReplicationMode, bool), WriteError> {
        let mut metrics_rx = self.raft().metrics();
        let mut applied_rx = self.state.watch_applied();
        let mut acks_rx = self.outbox.acks();
        loop {
            let (mode, secondary) =
                self.state.read(|s| (s.replication.mode, s.topology.as_ref().and_then(|t| t.secondary.clone())));
            let m = metrics_rx.borrow_and_update().clone();
            let Some(secondary) = secondary else { return Ok((mode, false)) };
            let members = secondary_members(&m, &secondary);
            if self.region == secondary {
                return Ok((mode, true));
            }
            let durable = members.iter().any(|id| {
                m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).is_some_and(|l| l.index >= index)
            }) || self.outbox.durable_on(m.vote.leader_id(), &members, index);
            if durable {
                return Ok((mode, true));
            }
            if mode != ReplicationMode::Sync || members.is_empty() {
                return Ok((mode, false));
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    metrics::counter!("attest_control_sync_wait_timeouts_total").increment(1);
                    return Err(WriteError::ReplicationPending { index });
                }
                _ = metrics_rx.changed() => {}
                _ = applied_rx.changed() => {}
                _ = acks_rx.changed() => {}
            }
        }
    }

    async fn forward(
        &self,
        addr: &str,
        req: &Request,
        deadline: tokio::time::Instant,
    ) -> Result<WriteOutcome, ForwardFailure> {
        let command =
            serde_json::to_vec(req).map_err(|e| ForwardFailure::Remote(WriteError::Internal(e.to_string())))?;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        // A dead leader must not eat the whole budget: give the forward at
        // most one readonly window, then re-evaluate who leads.
        let rpc_timeout = remaining.min(self.timing.readonly_after()).max(Duration::from_millis(10));
        metrics::counter!("attest_control_forwarded_writes_total").increment(1);
        match self.forwarder.forward(addr, command, deadline, rpc_timeout).await {
            Forwarded::Reply(r) => {
                if r.error_code.is_empty() {
                    serde_json::from_slice(&r.outcome)
                        .map_err(|e| ForwardFailure::Remote(WriteError::Internal(e.to_string())))
                } else {
                    let leader = (r.leader_id != 0).then_some(r.leader_id);
                    Err(ForwardFailure::Remote(WriteError::from_code(&r.error_code, r.error_message, leader)))
                }
            }
            Forwarded::NotSent => Err(ForwardFailure::Transport { delivered: false }),
            Forwarded::Failed(status) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(ForwardFailure::Transport { delivered: crate::forwarder::maybe_delivered(&status) })
            }
        }
    }

    /// Returns once this node has applied everything the leader had
    /// committed when the call started (a linearizable read barrier).
    pub async fn read_barrier(&self, within: Duration) -> Result<u64, WriteError> {
        let deadline = tokio::time::Instant::now() + within;
        let m = self.metrics();
        let read_index = if m.state == ServerState::Leader {
            self.leader_read_index(deadline).await?
        } else {
            let leader = m.current_leader.filter(|l| *l != self.id).ok_or_else(|| WriteError::ReadOnly {
                reason: "no leader known: a linearizable read is impossible; read without consistency=linearizable for the local (possibly stale) state".into(),
                outcome: Outcome::NotApplied,
            })?;
            let addr =
                member_addr(&m, leader).ok_or_else(|| WriteError::Internal("leader not in membership".into()))?;
            let mut client = self.channels.admin_client(&addr).map_err(|e| WriteError::Internal(e.to_string()))?;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let mut request = tonic::Request::new(attest_proto::LinearizableReadRequest {
                deadline_ms: remaining.as_millis() as u64,
            });
            request.set_timeout(remaining.max(Duration::from_millis(10)));
            let bound = remaining.max(Duration::from_millis(10)) + Duration::from_millis(100);
            let r = bounded(bound, "read-index", client.read_index(request))
                .await
                .map_err(|e| WriteError::ReadOnly {
                    reason: format!("leader unreachable: {}", e.message()),
                    outcome: Outcome::NotApplied,
                })?
                .into_inner();
            if !r.error_code.is_empty() {
                return Err(WriteError::from_code(&r.error_code, r.error_message, None));
            }
            r.read_index
        };
        if !self.state.wait_applied(read_index, deadline).await {
            return Err(WriteError::ReadOnly {
                reason: format!("did not apply up to read index {read_index} in time"),
                outcome: Outcome::NotApplied,
            });
        }
        Ok(read_index)
    }

    /// On the leader: confirms leadership with a quorum and returns the
    /// index a linearizable read must wait for.
    pub async fn leader_read_index(&self, deadline: tokio::time::Instant) -> Result<u64, WriteError> {
        // Every peer must really be asked (see `Outbox::heard_lately`).
        let _check = self.outbox.leadership_check();
        match timeout_at(deadline, self.raft().get_read_log_id()).await {
            Err(_) => Err(WriteError::ReadOnly {
                reason: "leadership not confirmed in time".into(),
                outcome: Outcome::NotApplied,
            }),
            Ok(Err(RaftError::APIError(e))) => Err(WriteError::NotLeader {
                leader: match e {
                    openraft::error::CheckIsLeaderError::ForwardToLeader(f) => f.leader_id,
                    _ => None,
                },
            }),
            Ok(Err(e)) => Err(WriteError::Internal(e.to_string())),
            Ok(Ok((read, _applied))) => Ok(read.map(|l| l.index).unwrap_or(0)),
        }
    }

    /// Adds a node: first as a learner (it catches up by log or snapshot),
    /// then, if asked, as a voter. Runs on the leader.
    pub async fn add_member(&self, id: NodeId, info: NodeInfo, voter: bool) -> Result<(), WriteError> {
        let m = self.metrics();
        if m.state != ServerState::Leader {
            return Err(WriteError::NotLeader { leader: m.current_leader });
        }
        let info_region = info.region.clone();
        let known = m.membership_config.membership().get_node(&id).cloned();
        if known.as_ref() != Some(&info) {
            self.raft().add_learner(id, info, true).await.map_err(map_client_err)?;
        }
        if voter {
            let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
            if let Some(primary) = self.state.read(|s| s.topology.as_ref().map(|t| t.primary.clone())) {
                let membership = m.membership_config.membership();
                let mut regions: Vec<&str> = voters
                    .iter()
                    .filter(|n| **n != id)
                    .filter_map(|n| membership.get_node(n).map(|i| i.region.as_str()))
                    .collect();
                regions.push(&info_region);
                if !primary_holds_majority(&regions, &primary) {
                    return Err(WriteError::Rejected(format!(
                        "adding node {id} as a voter would leave the primary region {primary} without a majority of the {} voters; join it as a learner",
                        regions.len()
                    )));
                }
            }
            if !voters.contains(&id) {
                self.raft()
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                    .await
                    .map_err(map_client_err)?;
            }
        }
        Ok(())
    }

    /// Entries of this node's own log from `from` on (at most `limit`).
    pub fn local_log(&self, from: u64, limit: usize) -> Result<Vec<LogEntrySummary>, WriteError> {
        let entries = self.log.entries_from(from, limit).map_err(|e| WriteError::Internal(e.to_string()))?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let (index, term) = (e.log_id.index, e.log_id.leader_id.term);
            let summary = |kind: String, request_id, actor| LogEntrySummary { index, term, kind, request_id, actor };
            match &e.payload {
                openraft::EntryPayload::Blank => out.push(summary("blank".into(), None, None)),
                openraft::EntryPayload::Membership(_) => out.push(summary("membership".into(), None, None)),
                // One line per client request: members of a group-committed
                // batch share the entry's index.
                openraft::EntryPayload::Normal(r) => {
                    out.extend(r.client_requests().iter().map(|r| {
                        summary(r.command.kind().to_string(), Some(r.request_id.clone()), Some(r.actor.clone()))
                    }))
                }
            }
        }
        Ok(out)
    }

    /// Why this node's Raft core is no longer running, when it stopped on
    /// its own (see [`stopped_reason`]).
    pub fn raft_failure(&self) -> Option<String> {
        stopped_reason(&self.raft().metrics().borrow())
    }

    pub fn status(&self) -> ControlStatus {
        let m = self.metrics();
        let (mode, reason, topo) =
            self.state.read(|s| (s.replication.mode, s.replication.reason.clone(), s.topology.clone()));
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members: Vec<MemberStatus> = membership
            .nodes()
            .map(|(id, n)| MemberStatus {
                id: *id,
                region: n.region.clone(),
                raft_addr: n.raft_addr.clone(),
                api_addr: n.api_addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        let raft_failure = stopped_reason(&m);
        let is_leader = m.state == ServerState::Leader;
        let leader = m.current_leader.filter(|_| is_leader || self.leader_contact.ever());
        let leader_region = leader.and_then(|l| membership.get_node(&l).map(|n| n.region.clone()));
        let readonly_after = self.timing.readonly_after();
        let writable = if self.refusal().is_some() {
            false
        } else if is_leader {
            m.millis_since_quorum_ack.is_none_or(|ms| Duration::from_millis(ms) <= readonly_after)
        } else {
            leader.is_some() && self.leader_contact.age() < readonly_after
        };
        let last_log = m.last_log_index.unwrap_or(0);
        let peer_lag = m
            .replication
            .as_ref()
            .map(|r| r.iter().map(|(id, l)| (*id, last_log.saturating_sub(l.map(|l| l.index).unwrap_or(0)))).collect())
            .unwrap_or_default();
        ControlStatus {
            node_id: self.id,
            region: self.region.clone(),
            raft_role: format!("{:?}", m.state),
            term: m.current_term,
            leader,
            leader_region,
            last_log_index: last_log,
            applied_index: self.state.applied_index(),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
            control_plane: if raft_failure.is_some() {
                "failed".into()
            } else if writable {
                "writable".into()
            } else {
                "read-only".into()
            },
            replication_mode: mode,
            replication_reason: reason,
            primary_region: topo.as_ref().map(|t| t.primary.clone()),
            secondary_region: topo.and_then(|t| t.secondary),
            leader_contact_ms: if is_leader {
                Some(0)
            } else if self.leader_contact.ever() {
                Some(self.leader_contact.age().as_millis() as u64)
            } else {
                None
            },
            peer_lag,
            members,
            epoch: self.epoch.epoch(),
            fenced: self.epoch.fence(),
            raft_failure,
        }
    }
}

/// Why the Raft core behind `m` stopped on its own: a storage error (e.g. a
/// full disk) or a panic. A fence or a forced promotion stops it on purpose
/// and says so itself, so `Stopped` is not a failure here.
fn stopped_reason(m: &RaftMetrics) -> Option<String> {
    match &m.running_state {
        Err(openraft::error::Fatal::StorageError(e)) => Some(format!(
            "this node's control-plane storage failed ({e}); it no longer follows the cluster: free the disk or fix the storage, then restart the node"
        )),
        Err(openraft::error::Fatal::Panicked) => {
            Some("this node's Raft core panicked; it no longer follows the cluster: restart the node".into())
        }
        _ => None,
    }
}

/// Bounds a call to another node by `bound` on top of tonic's own
/// grpc-timeout handling (which tonic's channel also enforces on the
/// client); a call that runs over gets `DEADLINE_EXCEEDED`.
pub(crate) async fn bounded<T>(
    bound: Duration,
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    timeout_at(tokio::time::Instant::now() + bound, call)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded(format!("{what} timed out"))))
}

/// A "not applied" answer speaks only for the attempt it answers: when an
/// earlier forward of the same request may have reached a leader (it timed
/// out after sending), that one may still commit, so the write's fate is
/// unknown. Found by the chaos drills (wan-partition under CPU stalls).
fn unknown_if_delivered(e: WriteError, maybe_delivered: bool) -> WriteError {
    match e {
        WriteError::ReadOnly { reason, outcome: Outcome::NotApplied } if maybe_delivered => {
            WriteError::ReadOnly { reason, outcome: Outcome::Unknown }
        }
        other => other,
    }
}

enum ForwardFailure {
    Remote(WriteError),
    Transport { delivered: bool },
}

fn map_client_err(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> WriteError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => WriteError::NotLeader { leader: f.leader_id },
        other => WriteError::Internal(other.to_string()),
    }
}

fn member_addr(m: &RaftMetrics, id: NodeId) -> Option<String> {
    m.membership_config.membership().get_node(&id).map(|n| n.raft_addr.clone())
}

/// The brief's topology rule: the primary region holds a strict majority of
/// the voters (given as their region labels), so losing the secondary
/// region never costs the quorum.
pub fn primary_holds_majority(voter_regions: &[&str], primary: &str) -> bool {
    let in_primary = voter_regions.iter().filter(|r| **r == primary).count();
    in_primary * 2 > voter_regions.len()
}

/// Members (voters and learners) labelled with the secondary region.
pub fn secondary_members(m: &RaftMetrics, secondary: &str) -> Vec<NodeId> {
    m.membership_config.membership().nodes().filter(|(_, n)| n.region == secondary).map(|(id, _)| *id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_after_a_possibly_delivered_forward_is_unknown() {
        let refused = || WriteError::ReadOnly { reason: "no quorum".into(), outcome: Outcome::NotApplied };
        assert_eq!(unknown_if_delivered(refused(), false), refused());
        assert_eq!(
            unknown_if_delivered(refused(), true),
            WriteError::ReadOnly { reason: "no quorum".into(), outcome: Outcome::Unknown }
        );
        assert_eq!(unknown_if_delivered(WriteError::Rejected("x".into()), true), WriteError::Rejected("x".into()));
    }
}
