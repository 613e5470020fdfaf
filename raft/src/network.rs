//! Raft transport over tonic: one long-lived HTTP/2 channel per peer
//! address (reused across leader changes and by forwarded writes), on it
//! one long-lived stream for AppendEntries (`append_stream`), a deadline on
//! every RPC, and a record of the last successful contact with
//! each peer, which the replication-mode controller reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attest_proto::node_admin_client::NodeAdminClient;
use attest_proto::raft_client::RaftClient;
use attest_proto::RaftMessage;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::EntryPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::append_stream::AppendStreams;
use crate::epoch::EpochState;
use crate::tls::PeerTls;
use crate::types::{Entry, NodeId, NodeInfo, TypeConfig};

/// Largest gRPC message a node accepts (a batch of log entries or one
/// snapshot chunk). Policy and collateral sizes are bounded far below this
/// at the API.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Encoded entries per AppendEntries beyond its first entry: the log
/// store's reads for openraft's replication (`limited_get_log_entries`) and
/// the shipper keep to it. Why: openraft bounds a request by entry count
/// only (`max_payload_entries`, 300), and an entry may hold a megabyte of
/// collateral: 300 of them would exceed [`MAX_MESSAGE_BYTES`] and be
/// refused on every retry, stalling the follower for good. openraft also
/// gives an AppendEntries one heartbeat interval to be sent, decoded and
/// synced to disk; a megabyte fits in that on a LAN or a WAN link, hundreds
/// do not. Under load an entry holds tens of kilobytes, so this only splits
/// a lagging follower's catch-up into more round trips.
pub const MAX_APPEND_BYTES: usize = 1 << 20;

/// A running byte budget for cutting a run of items into one message:
/// admits the first item whatever its size (a single write is bounded by
/// the API's body limit, far below the message limit), then items while
/// the total stays within `max`. Use it in a `take_while`.
pub(crate) fn byte_budget(max: usize) -> impl FnMut(usize) -> bool {
    let mut used: Option<usize> = None;
    move |size| {
        let total = used.map_or(size, |u| u.saturating_add(size));
        let first = used.is_none();
        used = Some(total);
        first || total <= max
    }
}

/// How many of `entries`, from the first, fit in `budget` encoded bytes
/// (see [`byte_budget`]).
pub(crate) fn entries_within(entries: &[Entry], budget: usize) -> usize {
    let mut fits = byte_budget(budget);
    entries.iter().take_while(|e| fits(entry_len(e))).count()
}

/// An entry's encoded size: exact for a request (its kept encoding);
/// membership lists a handful of nodes and a blank entry is empty.
pub(crate) fn entry_len(e: &Entry) -> usize {
    match &e.payload {
        EntryPayload::Normal(r) => r.encoded_len(),
        _ => 1024,
    }
}

/// Long-lived channels keyed by peer address.
#[derive(Clone)]
pub struct Channels {
    tls: Option<PeerTls>,
    connect_timeout: Duration,
    /// Advertised address → address to dial. Lets a test cluster route
    /// inter-region traffic through a WAN emulator without changing the
    /// addresses recorded in the membership.
    dial_overrides: Arc<HashMap<String, String>>,
    map: Arc<Mutex<HashMap<String, Channel>>>,
    /// AppendEntries travel on one stream per peer (see `append_stream`);
    /// `None`: one unary call each (`raft.stream_appends = false`).
    streams: Option<Arc<AppendStreams>>,
}

impl Channels {
    pub fn new(tls: Option<PeerTls>, connect_timeout: Duration, dial_overrides: HashMap<String, String>) -> Self {
        Self {
            tls,
            connect_timeout,
            dial_overrides: Arc::new(dial_overrides),
            map: Arc::default(),
            streams: Some(Arc::default()),
        }
    }

    /// Whether AppendEntries go on one stream per peer (the default) or
    /// as unary calls.
    pub fn stream_appends(mut self, on: bool) -> Self {
        self.streams = on.then(Arc::default);
        self
    }

    /// One AppendEntries to `addr`: on its stream when streams are on and
    /// the peer serves them, else a unary call. A peer that answers the
    /// stream `Unimplemented` (an older build) is sent unary calls from
    /// then on, until this node restarts; this request fails with that status (nothing was taken)
    /// and the caller sends it again.
    pub async fn append_entries(&self, addr: &str, msg: RaftMessage, timeout: Duration) -> Result<RaftMessage, Status> {
        let Some(streams) = self.streams.as_ref().filter(|s| s.streams_to(addr)) else {
            return self.unary(addr, "append_entries", msg, timeout).await;
        };
        let result = streams.call(self, addr, msg, timeout).await;
        if result.as_ref().is_err_and(|s| s.code() == tonic::Code::Unimplemented) {
            streams.unary_from_now(addr);
        }
        result
    }

    /// One unary Raft call: `rpc` is `append_entries`, `vote` or
    /// `install_snapshot`.
    pub async fn unary(
        &self,
        addr: &str,
        rpc: &str,
        msg: RaftMessage,
        timeout: Duration,
    ) -> Result<RaftMessage, Status> {
        let mut client = self.raft_client(addr).map_err(|e| Status::unavailable(e.to_string()))?;
        let mut request = tonic::Request::new(msg);
        request.set_timeout(timeout);
        match rpc {
            "append_entries" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        }
        .map(tonic::Response::into_inner)
    }

    /// The channel to `addr`, created lazily (connects on first use and
    /// reconnects by itself after failures).
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let dial = self.dial_overrides.get(addr).map(String::as_str).unwrap_or(addr);
        let mut ep = Endpoint::from_shared(format!("{scheme}://{dial}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        if let Some(tls) = &self.tls {
            ep = ep.tls_config(tls.client_config())?;
        }
        let ch = ep.connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    pub fn raft_client(&self, addr: &str) -> Result<RaftClient<Channel>, tonic::transport::Error> {
        Ok(RaftClient::new(self.get(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub fn admin_client(&self, addr: &str) -> Result<NodeAdminClient<Channel>, tonic::transport::Error> {
        Ok(NodeAdminClient::new(self.get(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// When this node last heard back from each peer (any successful Raft RPC).
#[derive(Default)]
pub struct PeerContacts {
    map: Mutex<HashMap<NodeId, Instant>>,
}

impl PeerContacts {
    pub fn record(&self, id: NodeId) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Instant::now());
    }

    pub fn last(&self, id: NodeId) -> Option<Instant> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).get(&id).copied()
    }
}

#[derive(Clone)]
pub struct NetworkFactory {
    pub channels: Channels,
    pub contacts: Arc<PeerContacts>,
    pub backoff: Duration,
    /// Stamped on every RPC; a refusal naming a newer epoch fences us.
    pub epoch: Arc<EpochState>,
    /// While a handoff pauses replication (see `placement`).
    pub handoff: Arc<crate::placement::Handoff>,
    /// The shipper's acknowledgements: openraft's AppendEntries leave out
    /// what a peer already holds (see [`Outbox::strip_acknowledged`]).
    ///
    /// [`Outbox::strip_acknowledged`]: crate::shipper::Outbox::strip_acknowledged
    pub outbox: Arc<crate::shipper::Outbox>,
    /// openraft's empty AppendEntries to a peer that accepted a shipment
    /// this recently are answered here (see [`Outbox::heard_lately`]);
    /// `None`: always sent (`raft.elide_empty_appends = false`).
    ///
    /// [`Outbox::heard_lately`]: crate::shipper::Outbox::heard_lately
    pub elide_empty_within: Option<Duration>,
}

impl NetworkFactory {
    /// A client for `target`, with every check openraft's own clients make.
    pub(crate) fn peer(&self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient {
            target,
            addr: node.raft_addr.clone(),
            channels: self.channels.clone(),
            contacts: self.contacts.clone(),
            backoff: self.backoff,
            epoch: self.epoch.clone(),
            handoff: self.handoff.clone(),
            outbox: self.outbox.clone(),
            elide_empty_within: self.elide_empty_within,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        self.peer(target, node)
    }
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    channels: Channels,
    contacts: Arc<PeerContacts>,
    backoff: Duration,
    epoch: Arc<EpochState>,
    handoff: Arc<crate::placement::Handoff>,
    outbox: Arc<crate::shipper::Outbox>,
    elide_empty_within: Option<Duration>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>;

impl PeerClient {
    /// One RPC: `rpc` is `append_entries`, `vote`, `install_snapshot`, or
    /// `ship` (an AppendEntries of the `shipper`, metered apart).
    pub(crate) async fn call<Req, Resp, E>(
        &self,
        rpc: &'static str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        // A fenced node takes part in no Raft traffic: it cannot elect a
        // leader, replicate, or rejoin until it is re-seeded.
        if self.epoch.is_fenced() {
            return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
                "this node is fenced by a newer configuration epoch",
            ))));
        }
        // A leader handing off leadership goes silent, as if partitioned,
        // so that the followers' leases on it run out (see `placement`).
        if rpc != "vote" && self.handoff.paused() {
            return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
                "replication paused for a leadership handoff",
            ))));
        }
        let encode = || {
            serde_json::to_vec(req)
                .map(|payload| RaftMessage { payload, epoch: self.epoch.epoch(), seq: 0 })
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))
        };
        let started = Instant::now();
        let result = match rpc {
            "append_entries" | "ship" => match self.channels.append_entries(&self.addr, encode()?, timeout).await {
                // The peer serves no streams (see `Channels::append_entries`).
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    self.channels.append_entries(&self.addr, encode()?, timeout.saturating_sub(started.elapsed())).await
                }
                result => result,
            },
            _ => self.channels.unary(&self.addr, rpc, encode()?, timeout).await,
        };
        let elapsed = started.elapsed().as_secs_f64();
        let target = self.target.to_string();
        metrics::histogram!("attest_raft_rpc_seconds", "rpc" => rpc, "peer" => target.clone()).record(elapsed);
        let reply = match result {
            Ok(r) => r,
            Err(status) => {
                metrics::counter!("attest_raft_rpc_errors_total", "rpc" => rpc, "peer" => target).increment(1);
                if let Some(newer) = crate::epoch::epoch_from_status(&status) {
                    match self.epoch.learn_fence(newer.clone(), &self.addr) {
                        Ok(true) => {
                            metrics::counter!("attest_node_fenced_total").increment(1);
                            tracing::error!(
                                peer = self.target,
                                peer_addr = %self.addr,
                                newer_epoch = newer.epoch,
                                promoted_region = %newer.region,
                                "FENCED: a peer refused this node's epoch; this node no longer serves the data plane or the control plane and must be re-seeded (attestd admin reseed)"
                            );
                        }
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = %e, "could not persist the fence record"),
                    }
                }
                return Err(match status.code() {
                    tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
                    _ => RPCError::Network(NetworkError::new(&status)),
                });
            }
        };
        self.contacts.record(self.target);
        let decoded: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        // Entries the shipper is delivering to this peer right now are
        // waited for rather than sent twice; a request left with nothing
        // the peer has not seen is answered here
        // (`Outbox::delivered_already`): on a loaded cluster that was one
        // AppendEntries per entry per secondary-region node. The wait may
        // take the whole deadline: the shipment left earlier with the same
        // one (the heartbeat interval), so it is answered within it unless
        // the link fails, when a second copy would not have fared better.
        let started = Instant::now();
        let ttl = option.hard_ttl();
        self.outbox.await_shipment(self.target, &rpc, ttl).await;
        // An empty request (a commit notice or heartbeat) to a peer that
        // just accepted a shipment is answered here too
        // (`Outbox::heard_lately`): under load that was one RPC per commit
        // and follower, and it held the follower's stream back.
        let carried_entries = !rpc.entries.is_empty();
        let rpc = self.outbox.strip_acknowledged(self.target, rpc);
        let answered = !self.epoch.is_fenced()
            && !self.handoff.paused()
            && if carried_entries {
                self.outbox.delivered_already(self.target, &rpc)
            } else {
                self.elide_empty_within.is_some_and(|w| self.outbox.heard_lately(self.target, &rpc, w))
            };
        if answered {
            metrics::counter!(
                "attest_raft_append_entries_answered_locally_total",
                "peer" => self.target.to_string(),
                "carried" => if carried_entries { "entries" } else { "none" }
            )
            .increment(1);
            return Ok(AppendEntriesResponse::Success);
        }
        let res = self.call("append_entries", &rpc, ttl.saturating_sub(started.elapsed())).await;
        if let (Ok(AppendEntriesResponse::Success), Some(commit)) = (&res, rpc.leader_commit) {
            let through = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id).map_or(0, |l| l.index);
            if rpc.vote.is_committed() {
                self.outbox.commit_told(rpc.vote.leader_id(), self.target, commit.index, through);
            }
        }
        res
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call("install_snapshot", &rpc, option.hard_ttl()).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.call("vote", &rpc, option.hard_ttl()).await
    }

    fn backoff(&self) -> Backoff {
        // Retry an unreachable peer at about the heartbeat rate: a restarted
        // node should rejoin within a beat, not after openraft's 500 ms.
        Backoff::new(std::iter::repeat(self.backoff))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::CommittedLeaderId;

    use super::*;
    use crate::command::{Command, LogRequest, Request};
    use crate::test_support;
    use crate::types::LogId;

    fn collateral(key: &str, bytes: usize) -> Request {
        Request {
            request_id: format!("put-{key}"),
            actor: "test".into(),
            proposed_at_ms: 0,
            command: Command::PutCollateral { key: key.into(), blob_b64: "QUJD".repeat(bytes / 4) },
        }
    }

    fn entry(index: u64, req: Request) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(LogRequest::new(req)),
        }
    }

    #[test]
    fn an_append_carries_what_fits_and_always_its_first_entry() {
        let quarter = |i: u64| entry(i, collateral(&i.to_string(), MAX_APPEND_BYTES / 4));
        // Four quarter-budget entries would pass the budget by their framing.
        let entries: Vec<Entry> = (1..=10).map(quarter).collect();
        assert_eq!(entries_within(&entries, MAX_APPEND_BYTES), 3);
        // One entry larger than the whole budget still goes (alone).
        let huge = vec![entry(1, collateral("h", MAX_APPEND_BYTES + 10)), quarter(2)];
        assert_eq!(entries_within(&huge, MAX_APPEND_BYTES), 1);
        assert_eq!(entries_within(&[], MAX_APPEND_BYTES), 0);
        let small: Vec<Entry> = (1..=300).map(|i| entry(i, collateral(&i.to_string(), 100))).collect();
        assert_eq!(entries_within(&small, MAX_APPEND_BYTES), 300);
    }

    #[test]
    fn a_budget_admits_the_first_item_then_what_fits() {
        let mut fits = byte_budget(10);
        assert!(fits(25), "the first item goes whatever its size");
        assert!(!fits(1));
        let mut fits = byte_budget(10);
        let taken: Vec<usize> = [4, 4, 2, 1, 1].into_iter().take_while(|n| fits(*n)).collect();
        assert_eq!(taken, vec![4, 4, 2]);
    }

    /// A learner that joins behind more entries than one AppendEntries may
    /// carry gets them all, over several requests.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_catches_up_on_more_than_one_append_of_entries() {
        let (leader, _dir1) = test_support::leader().await;
        // Two of these per AppendEntries: a dozen requests to catch up.
        let blobs = 24;
        for i in 0..blobs {
            let req = leader.control.request("test", collateral(&format!("k{i}"), 400 << 10).command);
            let out = leader.control.write(req, Duration::from_secs(20)).await.expect("written");
            assert!(out.error.is_none(), "{:?}", out.error);
        }
        let (learner, _dir2) = test_support::start(2).await;
        test_support::add(&leader, &learner, false, Duration::from_secs(60)).await;
        let applied = leader.control.raft().metrics().borrow().last_applied;
        let caught_up = learner
            .control
            .raft()
            .wait(Some(Duration::from_secs(30)))
            .applied_index_at_least(applied.map(|l| l.index), "caught up")
            .await;
        assert!(caught_up.is_ok(), "the learner did not apply the leader's log");
        let held = learner.control.state.read(|s| s.collateral.len());
        assert_eq!(held, blobs);
        learner.shutdown().await;
        leader.shutdown().await;
    }

    /// openraft's empty AppendEntries to a peer that just accepted a
    /// shipment are answered on the leader, except a leadership check's:
    /// a linearizable read must hear a quorum after it started. Here the
    /// only follower accepted a shipment well within the window and is
    /// then stopped: the read must fail, not be confirmed from memory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leadership_check_is_answered_by_the_peers_not_by_recent_shipments() {
        // A heartbeat of 20 s: a shipment counts as "heard lately" for 10 s,
        // far longer than this test takes (it checks that premise too).
        let timing = crate::Timing {
            heartbeat_ms: 20_000,
            election_timeout_min_ms: 60_000,
            election_timeout_max_ms: 80_000,
            ..crate::Timing::default()
        };
        let window = Duration::from_millis(timing.heartbeat_ms / 2);
        let (leader, _dir1) = test_support::leader_timed(timing.clone()).await;
        let (follower, _dir2) = test_support::start_timed(2, timing).await;
        test_support::add(&leader, &follower, true, Duration::from_secs(30)).await;
        let req = leader.control.request("test", collateral("k", 100).command);
        leader.control.write(req, Duration::from_secs(20)).await.expect("written");
        let (vote, applied) = {
            let m = leader.control.raft().metrics().borrow().clone();
            (m.vote, m.last_applied.expect("applied the write"))
        };
        let outbox = leader.control.outbox.clone();
        let mut acks = outbox.acks();
        // (The watch's read guard must not outlive the statement.)
        let accepted = matches!(
            tokio::time::timeout(
                Duration::from_secs(30),
                acks.wait_for(
                    |a| a.matched.get(&2).is_some_and(|m| *m >= applied.index) && a.accepted_at.contains_key(&2)
                ),
            )
            .await,
            Ok(Ok(_))
        );
        assert!(accepted, "the follower accepted no shipment within 30 s");
        // openraft's commit notice for the write, as it would send it.
        let probe = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: Some(applied),
            entries: vec![],
            leader_commit: Some(applied),
        };
        follower.shutdown().await;
        assert!(outbox.heard_lately(2, &probe, window), "premise: an empty append would be answered from memory");
        let read = leader.control.leader_read_index(tokio::time::Instant::now() + Duration::from_secs(10)).await;
        assert!(read.is_err(), "leadership confirmed without the only follower: {read:?}");
        leader.shutdown().await;
    }
}
