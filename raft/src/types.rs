//! The openraft type configuration, declared once for the whole cluster.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::command::{LogRequest, Response};

/// Raft node identifier. Stable for the life of a node's data directory.
pub type NodeId = u64;

/// What every member of the cluster knows about another member.
///
/// The region label is part of the replicated membership so that every node
/// (not only the one that configured it) can tell which peers belong to the
/// primary and which to the secondary region: the replication-mode logic and
/// the read-only detection both depend on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Region label, e.g. `eastus2`.
    pub region: String,
    /// `host:port` of the node's gRPC listener (Raft + node admin).
    pub raft_addr: String,
    /// `host:port` of the node's HTTPS API.
    pub api_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.region, self.raft_addr)
    }
}

openraft::declare_raft_types!(
    /// attestd's Raft types: JSON-serializable commands and responses,
    /// region-labelled nodes, snapshots held in memory (the control plane is
    /// small: providers, policies, certificates and collateral).
    pub TypeConfig:
        D = LogRequest,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, NodeInfo>;
