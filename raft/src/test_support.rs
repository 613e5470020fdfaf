//! In-process nodes for this crate's tests: real RocksDB in a temporary
//! directory, real gRPC on an ephemeral loopback port, plaintext.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{NodeId, NodeInfo, RaftNode, RaftNodeConfig, Timing};

/// Starts node `id` of region `east` (not bootstrapped). Keep the
/// directory alive as long as the node.
pub(crate) async fn start(id: NodeId) -> (RaftNode, tempfile::TempDir) {
    start_timed(id, Timing::default()).await
}

/// [`start`] with other Raft timings.
pub(crate) async fn start_timed(id: NodeId, timing: Timing) -> (RaftNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = RaftNodeConfig {
        id,
        region: "east".into(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        advertise_raft: String::new(),
        advertise_api: String::new(),
        data_dir: dir.path().to_path_buf(),
        timing,
        tls: None,
        primary_region: "east".into(),
        secondary_region: None,
        dial_overrides: Default::default(),
        promote_min_outage: Duration::from_secs(60),
    };
    let node = RaftNode::start(cfg).await.expect("starts");
    (node, dir)
}

/// How the cluster knows `node`.
pub(crate) fn info(node: &RaftNode) -> NodeInfo {
    NodeInfo { region: "east".into(), raft_addr: node.bound.to_string(), api_addr: String::new() }
}

/// Adds `node` (a learner, or a voter once caught up) to `leader`'s
/// cluster; panics unless that is done `within`.
pub(crate) async fn add(leader: &RaftNode, node: &RaftNode, voter: bool, within: Duration) {
    let id = node.control.id;
    tokio::time::timeout(within, leader.control.add_member(id, info(node), voter))
        .await
        .unwrap_or_else(|_| panic!("node {id} not added within {within:?}"))
        .unwrap_or_else(|e| panic!("node {id} not added: {e}"));
}

/// A one-node cluster of node 1 that leads (bounded wait: 30 s).
pub(crate) async fn leader() -> (RaftNode, tempfile::TempDir) {
    leader_timed(Timing::default()).await
}

/// [`leader`] with other Raft timings.
pub(crate) async fn leader_timed(timing: Timing) -> (RaftNode, tempfile::TempDir) {
    let (node, dir) = start_timed(1, timing).await;
    node.bootstrap(BTreeMap::from([(1, info(&node))])).await.expect("bootstraps");
    node.control
        .raft()
        .wait(Some(Duration::from_secs(30)))
        .state(openraft::ServerState::Leader, "leads")
        .await
        .expect("leads within 30 s");
    (node, dir)
}
