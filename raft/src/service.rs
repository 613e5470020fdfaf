//! The gRPC services a node serves to its peers: the Raft transport and the
//! node admin service (forwarded writes, joins, read-index requests).

use std::sync::Arc;
use std::time::Duration;

use attest_proto::node_admin_server::NodeAdmin;
use attest_proto::raft_server::Raft as RaftRpc;
use attest_proto::{
    ForwardReply, ForwardRequest, JoinReply, JoinRequest, LinearizableReadReply, LinearizableReadRequest, RaftMessage,
};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tonic::{Request, Response, Status};

use crate::control::{ControlPlane, WriteError};
use crate::types::{NodeId, NodeInfo, TypeConfig};

fn decode<T: serde::de::DeserializeOwned>(m: &RaftMessage) -> Result<T, Status> {
    serde_json::from_slice(&m.payload).map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Response<RaftMessage>, Status> {
    serde_json::to_vec(v)
        .map(|payload| Response::new(RaftMessage { payload }))
        .map_err(|e| Status::internal(e.to_string()))
}

pub struct RaftService {
    pub control: Arc<ControlPlane>,
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req.get_ref())?;
        let res = self.control.raft.append_entries(rpc).await;
        // Contact with a leader whose vote we accept keeps this node's
        // control plane "writable" (writes are forwarded to it).
        if let Ok(resp) = &res {
            if resp.is_success() || resp.is_conflict() {
                self.control.leader_contact.touch();
            }
        }
        encode(&res)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<NodeId> = decode(req.get_ref())?;
        encode(&self.control.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req.get_ref())?;
        let res = self.control.raft.install_snapshot(rpc).await;
        if res.is_ok() {
            self.control.leader_contact.touch();
        }
        encode(&res)
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

#[tonic::async_trait]
impl NodeAdmin for AdminService {
    async fn forward(&self, req: Request<ForwardRequest>) -> Result<Response<ForwardReply>, Status> {
        let req = req.into_inner();
        let command: crate::command::Request = serde_json::from_slice(&req.command)
            .map_err(|e| Status::invalid_argument(format!("undecodable command: {e}")))?;
        let within = Duration::from_millis(req.deadline_ms.clamp(1, self.control.timing.write_timeout_ms));
        let deadline = tokio::time::Instant::now() + within;
        let reply = match self.control.leader_write(command, deadline).await {
            Ok(out) => ForwardReply {
                outcome: serde_json::to_vec(&out).map_err(|e| Status::internal(e.to_string()))?,
                error_code: String::new(),
                error_message: String::new(),
                leader_id: out.leader,
            },
            Err(e) => error_reply(&e),
        };
        Ok(Response::new(reply))
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
