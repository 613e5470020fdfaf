//! The gRPC services a node serves to its peers: the Raft transport and the
//! node admin service (forwarded writes, joins, read-index requests).

use std::sync::Arc;
use std::time::Duration;

use attest_proto::node_admin_server::NodeAdmin;
use attest_proto::raft_server::Raft as RaftRpc;
use attest_proto::{
    ForwardBatchReply, ForwardBatchRequest, ForwardReply, ForwardRequest, JoinReply, JoinRequest,
    LinearizableReadReply, LinearizableReadRequest, RaftMessage, RecoveryReply, RecoveryRequest,
};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tonic::{Request, Response, Status};

use crate::control::{ControlPlane, WriteError};
use crate::types::{NodeId, NodeInfo, TypeConfig};

fn decode<T: serde::de::DeserializeOwned>(m: &RaftMessage) -> Result<T, Status> {
    serde_json::from_slice(&m.payload).map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode<T: serde::Serialize>(v: &T, epoch: u64) -> Result<RaftMessage, Status> {
    serde_json::to_vec(v)
        .map(|payload| RaftMessage { payload, epoch, seq: 0 })
        .map_err(|e| Status::internal(e.to_string()))
}

#[derive(Clone)]
pub struct RaftService {
    pub control: Arc<ControlPlane>,
    /// Becomes `true` when the node shuts down: open append streams end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl RaftService {
    /// The epoch gate in front of every Raft RPC (see `epoch`): a fenced
    /// node takes none; an RPC from an older epoch is refused with our
    /// record, which fences the sender; an RPC from a newer epoch is taken
    /// only by a node without Raft state (it adopts the epoch), and fences
    /// a node that has state (it missed a promotion).
    fn gate(&self, sender_epoch: u64) -> Result<(), Status> {
        let epoch = &self.control.epoch;
        if epoch.is_fenced() {
            return Err(crate::epoch::stale_epoch_status(&epoch.newest_known(), sender_epoch, true));
        }
        let mine = epoch.record();
        // Epoch 0 = a peer built before epochs existed: treat as epoch 1.
        let sender_epoch = sender_epoch.max(1);
        if sender_epoch < mine.epoch {
            metrics::counter!("attest_raft_stale_epoch_refusals_total").increment(1);
            return Err(crate::epoch::stale_epoch_status(&mine, sender_epoch, false));
        }
        if sender_epoch > mine.epoch {
            if self.control.has_raft_state() {
                let newer = crate::epoch::EpochRecord { epoch: sender_epoch, ..Default::default() };
                if let Ok(true) = epoch.learn_fence(newer, "") {
                    tracing::error!(
                        own_epoch = mine.epoch,
                        sender_epoch,
                        "FENCED: contacted by a node of a newer epoch while holding state of an older one; re-seed this node"
                    );
                }
                return Err(crate::epoch::stale_epoch_status(&epoch.newest_known(), sender_epoch, true));
            }
            let adopted = crate::epoch::EpochRecord { epoch: sender_epoch, ..mine };
            epoch.set_record(adopted).map_err(|e| Status::internal(e.to_string()))?;
            tracing::info!(epoch = sender_epoch, "adopted the configuration epoch of the cluster");
        }
        Ok(())
    }

    /// One AppendEntries, unary or from a stream.
    async fn append(&self, req: &RaftMessage) -> Result<RaftMessage, Status> {
        let _served = Served::start("append_entries");
        self.gate(req.epoch)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req)?;
        let res = self.control.raft().append_entries(rpc).await;
        // Contact with a leader whose vote we accept keeps this node's
        // control plane "writable" (writes are forwarded to it).
        if let Ok(resp) = &res {
            if resp.is_success() || resp.is_conflict() {
                self.control.leader_contact.touch();
            }
        }
        encode(&res, self.control.epoch.epoch())
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.append(req.get_ref()).await.map(Response::new)
    }

    type AppendStreamStream = tokio_stream::wrappers::ReceiverStream<Result<RaftMessage, Status>>;

    async fn append_stream(
        &self,
        req: Request<tonic::Streaming<RaftMessage>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let svc = self.clone();
        let mut shutdown = self.shutdown.clone();
        let stop = async move {
            // (A dropped sender: the node is gone.)
            let _ = shutdown.wait_for(|down| *down).await;
        };
        let handle = move |msg: RaftMessage| {
            let svc = svc.clone();
            async move { svc.append(&msg).await }
        };
        Ok(Response::new(crate::append_stream::serve(req.into_inner(), handle, stop)))
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let _served = Served::start("vote");
        self.gate(req.get_ref().epoch)?;
        let rpc: VoteRequest<NodeId> = decode(req.get_ref())?;
        encode(&self.control.raft().vote(rpc).await, self.control.epoch.epoch()).map(Response::new)
    }

    async fn install_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let _served = Served::start("install_snapshot");
        self.gate(req.get_ref().epoch)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req.get_ref())?;
        let res = self.control.raft().install_snapshot(rpc).await;
        if res.is_ok() {
            self.control.leader_contact.touch();
        }
        encode(&res, self.control.epoch.epoch()).map(Response::new)
    }
}

/// Records how long this node took to serve a Raft RPC, from its decoded
/// gRPC request to the encoded answer (synced log append included): next
/// to the sender's `attest_raft_rpc_seconds` it tells the network's share
/// of a round trip from the receiver's.
struct Served {
    rpc: &'static str,
    started: std::time::Instant,
}

impl Served {
    fn start(rpc: &'static str) -> Self {
        Self { rpc, started: std::time::Instant::now() }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        metrics::histogram!("attest_raft_rpc_served_seconds", "rpc" => self.rpc)
            .record(self.started.elapsed().as_secs_f64());
    }
}

pub struct AdminService {
    pub control: Arc<ControlPlane>,
}

fn error_reply(e: &WriteError) -> ForwardReply {
    let (code, message) = e.to_wire();
    let leader_id = match e {
        WriteError::NotLeader { leader } => leader.unwrap_or(0),
        _ => 0,
    };
    ForwardReply { outcome: Vec::new(), error_code: code, error_message: message, leader_id }
}

impl AdminService {
    /// One forwarded write, run through the leader's write path. A command
    /// that does not decode is answered as that write's own failure.
    async fn forward_one(&self, req: ForwardRequest) -> ForwardReply {
        let command: crate::command::Request = match serde_json::from_slice(&req.command) {
            Ok(c) => c,
            Err(e) => return error_reply(&WriteError::Internal(format!("undecodable command: {e}"))),
        };
        let within = Duration::from_millis(req.deadline_ms.clamp(1, self.control.timing.write_timeout_ms));
        let deadline = tokio::time::Instant::now() + within;
        // The forwarding node waits to apply the write before it answers its
        // client; the leader keeps telling it the commit index meanwhile.
        let in_hand = (req.from_node != 0).then(|| self.control.outbox.forward_started(req.from_node));
        match self.control.leader_write(command, deadline).await {
            Ok(out) => match serde_json::to_vec(&out) {
                Ok(outcome) => {
                    if let Some(h) = &in_hand {
                        h.answered(out.index);
                    }
                    ForwardReply {
                        outcome,
                        error_code: String::new(),
                        error_message: String::new(),
                        leader_id: out.leader,
                    }
                }
                Err(e) => error_reply(&WriteError::Internal(e.to_string())),
            },
            Err(e) => error_reply(&e),
        }
    }
}

#[tonic::async_trait]
impl NodeAdmin for AdminService {
    async fn forward(&self, req: Request<ForwardRequest>) -> Result<Response<ForwardReply>, Status> {
        Ok(Response::new(self.forward_one(req.into_inner()).await))
    }

    async fn forward_batch(&self, req: Request<ForwardBatchRequest>) -> Result<Response<ForwardBatchReply>, Status> {
        let items = req.into_inner().items;
        if items.len() > crate::forwarder::MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} writes in one forward batch (at most {})",
                items.len(),
                crate::forwarder::MAX_BATCH
            )));
        }
        // Concurrently, so they reach the group commit together.
        let replies = futures::future::join_all(items.into_iter().map(|item| self.forward_one(item))).await;
        Ok(Response::new(ForwardBatchReply { replies }))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let r = req.into_inner();
        if r.node_id == 0 || r.raft_addr.is_empty() || r.region.is_empty() {
            return Ok(Response::new(JoinReply {
                error_code: "InvalidParameter".into(),
                error_message: "node_id, region and raft_addr are required".into(),
                leader_id: 0,
            }));
        }
        let mine = self.control.epoch.epoch();
        if self.control.epoch.is_fenced() || (r.has_state && r.epoch.max(1) < mine) {
            let e = WriteError::Fenced {
                reason: format!(
                    "node {} holds state of configuration epoch {} but the cluster is in epoch {mine} (or this node is fenced): re-seed it (attestd admin reseed) instead of joining",
                    r.node_id, r.epoch
                ),
            };
            let (code, message) = e.to_wire();
            return Ok(Response::new(JoinReply { error_code: code, error_message: message, leader_id: 0 }));
        }
        let info = NodeInfo { region: r.region, raft_addr: r.raft_addr, api_addr: r.api_addr };
        let reply = match self.control.add_member(r.node_id, info, r.voter).await {
            Ok(()) => JoinReply::default(),
            Err(e) => {
                let (code, message) = e.to_wire();
                let leader_id = match e {
                    WriteError::NotLeader { leader } => leader.unwrap_or(0),
                    _ => 0,
                };
                JoinReply { error_code: code, error_message: message, leader_id }
            }
        };
        Ok(Response::new(reply))
    }

    async fn recovery(&self, req: Request<RecoveryRequest>) -> Result<Response<RecoveryReply>, Status> {
        let r = req.into_inner();
        let reply = match crate::recovery::handle_rpc(&self.control, &r.phase, &r.payload).await {
            Ok(payload) => RecoveryReply { payload, error: String::new() },
            Err(e) => RecoveryReply { payload: Vec::new(), error: e.to_string() },
        };
        Ok(Response::new(reply))
    }

    async fn read_index(
        &self,
        req: Request<LinearizableReadRequest>,
    ) -> Result<Response<LinearizableReadReply>, Status> {
        let within = Duration::from_millis(req.into_inner().deadline_ms.clamp(1, self.control.timing.write_timeout_ms));
        let deadline = tokio::time::Instant::now() + within;
        let reply = match self.control.leader_read_index(deadline).await {
            Ok(read_index) => LinearizableReadReply { read_index, ..Default::default() },
            Err(e) => {
                let (code, message) = e.to_wire();
                LinearizableReadReply { read_index: 0, error_code: code, error_message: message }
            }
        };
        Ok(Response::new(reply))
    }
}
