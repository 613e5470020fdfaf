//! Coalesced forwarding: the writes a follower forwards to the leader at
//! the same time travel in one RPC.
//!
//! Why: every forwarded write was one unary `NodeAdmin.Forward` call, an
//! HTTP/2 stream with its own headers, TLS records and tonic request task
//! on both ends. With 64 clients spread over the primary nodes that
//! per-call work was ~17 % of the leader's CPU (BENCHMARKS.md, session 12),
//! on a machine that is CPU-bound.
//!
//! Per leader address at most [`MAX_IN_FLIGHT`] calls are outstanding;
//! writes that arrive meanwhile wait and leave together in the next call,
//! a `ForwardBatch` of at most [`MAX_BATCH`]. A lone writer sees no added
//! wait, and a call carrying one write is the unary `Forward` of before.
//! The leader runs every member through its ordinary write path
//! concurrently (so they meet again in its group commit, `batcher`) and
//! answers each one separately: one member's failure is its own. A leader
//! built before `ForwardBatch` existed answers `Unimplemented`; the members
//! then go as one unary `Forward` each.
//!
//! Delivery: a member that never left (its caller gave up while it was
//! queued, or no channel could be built) is reported [`Forwarded::NotSent`];
//! any failure after the call started may have delivered it, and the caller
//! treats it that way (`control::ForwardFailure::Transport`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attest_proto::{ForwardBatchRequest, ForwardReply, ForwardRequest};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::control::bounded;
use crate::network::{byte_budget, Channels};
use crate::types::NodeId;

/// Forward calls outstanding per leader address.
pub const MAX_IN_FLIGHT: usize = 2;
/// Writes per `ForwardBatch` (the leader refuses more).
pub const MAX_BATCH: usize = 256;
/// Encoded commands per `ForwardBatch`, far below the gRPC message limit
/// (`network::MAX_MESSAGE_BYTES`); a larger single write goes alone.
pub const MAX_BATCH_BYTES: usize = 8 << 20;
/// Added to the longest member's RPC timeout for the whole call's bound.
const CALL_SLACK: Duration = Duration::from_millis(100);

/// The fate of one forwarded write.
#[derive(Debug)]
pub enum Forwarded {
    /// The leader answered (success or a write error in the reply).
    Reply(ForwardReply),
    /// It never left this node.
    NotSent,
    /// The call failed after it may have reached the leader.
    Failed(tonic::Status),
}

/// Whether a failed call may have reached the leader: only a refused or
/// failed connection proves it did not (a reset or a deadline may come
/// after the leader took the write).
pub fn maybe_delivered(status: &tonic::Status) -> bool {
    let msg = status.message().to_ascii_lowercase();
    !(status.code() == tonic::Code::Unavailable
        && (msg.contains("connect") || msg.contains("refused") || msg.contains("dns")))
}

struct Pending {
    command: Vec<u8>,
    deadline: Instant,
    rpc_timeout: Duration,
    done: oneshot::Sender<Forwarded>,
}

#[derive(Default)]
struct Lane {
    waiting: VecDeque<Pending>,
    in_flight: usize,
}

impl Lane {
    /// The next call's members: at least one, at most [`MAX_BATCH`] and,
    /// beyond the first, [`MAX_BATCH_BYTES`] of commands.
    fn take(&mut self) -> Vec<Pending> {
        let mut fits = byte_budget(MAX_BATCH_BYTES);
        let n = self.waiting.iter().take(MAX_BATCH).take_while(|p| fits(p.command.len())).count();
        self.waiting.drain(..n).collect()
    }
}

/// The follower's side: queues per leader address.
#[derive(Clone)]
pub struct Forwarder {
    lanes: Arc<Mutex<HashMap<String, Lane>>>,
    channels: Channels,
    /// This node, named in every forward (`ForwardRequest.from_node`).
    me: NodeId,
}

impl Forwarder {
    pub fn new(channels: Channels, me: NodeId) -> Self {
        Self { lanes: Arc::default(), channels, me }
    }

    /// Forwards one JSON-encoded `Request` to the leader at `addr` and
    /// waits for its answer, at most `rpc_timeout` (plus a little slack for
    /// the call carrying it).
    pub async fn forward(&self, addr: &str, command: Vec<u8>, deadline: Instant, rpc_timeout: Duration) -> Forwarded {
        let (done, answer) = oneshot::channel();
        let start = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
            let lane = lanes.entry(addr.to_string()).or_default();
            lane.waiting.push_back(Pending { command, deadline, rpc_timeout, done });
            (lane.in_flight < MAX_IN_FLIGHT).then(|| {
                lane.in_flight += 1;
                lane.take()
            })
        };
        if let Some(batch) = start {
            // Its own task: the call outlives any one caller giving up.
            tokio::spawn(self.clone().drive(addr.to_string(), batch));
        }
        match tokio::time::timeout(rpc_timeout + CALL_SLACK, answer).await {
            Ok(Ok(f)) => f,
            // Queued or sent, we cannot tell which: assume it may be there.
            Err(_) => Forwarded::Failed(tonic::Status::deadline_exceeded("forward timed out")),
            Ok(Err(_)) => Forwarded::Failed(tonic::Status::internal("the forwarder dropped the write")),
        }
    }

    /// Sends `batch`, then whatever queued meanwhile, until the lane is idle.
    async fn drive(self, addr: String, mut batch: Vec<Pending>) {
        loop {
            self.send(&addr, batch).await;
            let next = {
                let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
                let Some(lane) = lanes.get_mut(&addr) else { return };
                if lane.waiting.is_empty() {
                    lane.in_flight -= 1;
                    if lane.in_flight == 0 {
                        lanes.remove(&addr);
                    }
                    None
                } else {
                    Some(lane.take())
                }
            };
            match next {
                Some(b) => batch = b,
                None => return,
            }
        }
    }

    async fn send(&self, addr: &str, batch: Vec<Pending>) {
        let now = Instant::now();
        let (live, gone): (Vec<Pending>, Vec<Pending>) =
            batch.into_iter().partition(|p| !p.done.is_closed() && p.deadline > now);
        for p in gone {
            let _ = p.done.send(Forwarded::NotSent);
        }
        if live.is_empty() {
            return;
        }
        let Ok(client) = self.channels.admin_client(addr) else {
            for p in live {
                let _ = p.done.send(Forwarded::NotSent);
            }
            return;
        };
        metrics::histogram!("attest_control_forward_batch_size").record(live.len() as f64);
        if live.len() == 1 {
            return send_each(client, live, self.me).await;
        }
        let timeout = live.iter().map(|p| p.rpc_timeout).max().unwrap_or(CALL_SLACK);
        let items: Vec<ForwardRequest> = live
            .iter()
            .map(|p| ForwardRequest {
                command: p.command.clone(),
                deadline_ms: p.deadline.saturating_duration_since(now).as_millis() as u64,
                from_node: self.me,
            })
            .collect();
        let mut request = tonic::Request::new(ForwardBatchRequest { items });
        request.set_timeout(timeout);
        let mut batch_client = client.clone();
        let call = bounded(timeout + CALL_SLACK, "forward", batch_client.forward_batch(request)).await;
        match call {
            Ok(reply) => {
                let mut replies = reply.into_inner().replies.into_iter();
                for p in live {
                    let f = match replies.next() {
                        Some(r) => Forwarded::Reply(r),
                        None => {
                            Forwarded::Failed(tonic::Status::internal("the leader answered fewer writes than sent"))
                        }
                    };
                    let _ = p.done.send(f);
                }
            }
            // A leader from before `ForwardBatch`: nothing was delivered.
            Err(s) if s.code() == tonic::Code::Unimplemented => send_each(client, live, self.me).await,
            Err(s) => {
                for p in live {
                    let _ = p.done.send(Forwarded::Failed(s.clone()));
                }
            }
        }
    }
}

/// One unary `Forward` per member, concurrently.
async fn send_each(
    client: attest_proto::node_admin_client::NodeAdminClient<tonic::transport::Channel>,
    live: Vec<Pending>,
    me: NodeId,
) {
    let calls = live.into_iter().map(|p| {
        let mut client = client.clone();
        async move {
            let remaining = p.deadline.saturating_duration_since(Instant::now());
            let mut request = tonic::Request::new(ForwardRequest {
                command: p.command,
                deadline_ms: remaining.as_millis() as u64,
                from_node: me,
            });
            request.set_timeout(p.rpc_timeout);
            let f = match bounded(p.rpc_timeout + CALL_SLACK, "forward", client.forward(request)).await {
                Ok(r) => Forwarded::Reply(r.into_inner()),
                Err(s) => Forwarded::Failed(s),
            };
            let _ = p.done.send(f);
        }
    });
    futures::future::join_all(calls).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Request};
    use crate::control::WriteOutcome;
    use crate::RaftNode;

    fn request(id: &str, name: &str) -> Vec<u8> {
        let req = Request {
            request_id: id.into(),
            actor: "test".into(),
            proposed_at_ms: 0,
            command: Command::DeleteCollateral { key: name.into() },
        };
        serde_json::to_vec(&req).expect("encodes")
    }

    fn pending(command: Vec<u8>) -> (Pending, oneshot::Receiver<Forwarded>) {
        let (done, rx) = oneshot::channel();
        let deadline = Instant::now() + Duration::from_secs(10);
        (Pending { command, deadline, rpc_timeout: Duration::from_secs(10), done }, rx)
    }

    /// A one-node cluster that leads, and a forwarder aimed at it.
    async fn leader() -> (RaftNode, Forwarder, String, tempfile::TempDir) {
        let (node, dir) = crate::test_support::leader().await;
        let addr = node.bound.to_string();
        let forwarder = Forwarder::new(node.control.channels.clone(), 2);
        (node, forwarder, addr, dir)
    }

    fn outcome(f: Forwarded) -> Result<WriteOutcome, String> {
        match f {
            Forwarded::Reply(r) if r.error_code.is_empty() => {
                serde_json::from_slice(&r.outcome).map_err(|e| format!("undecodable outcome: {e}"))
            }
            Forwarded::Reply(r) => Err(format!("{}: {}", r.error_code, r.error_message)),
            other => Err(format!("{other:?}")),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_answers_each_write_on_its_own() {
        let (node, forwarder, addr, _dir) = leader().await;
        let (first, first_rx) = pending(request("r-1", "a"));
        let (garbage, garbage_rx) = pending(b"{not json".to_vec());
        let (again, again_rx) = pending(request("r-1", "a"));
        let (second, second_rx) = pending(request("r-2", "b"));
        let (gone, gone_rx) = pending(request("r-3", "c"));
        drop(gone_rx);
        // One call: the leader answers every member separately, in order.
        forwarder.send(&addr, vec![first, garbage, again, second, gone]).await;
        let first = outcome(first_rx.await.expect("answered")).expect("applied");
        let err = outcome(garbage_rx.await.expect("answered")).expect_err("refused");
        assert!(err.contains("undecodable command"), "{err}");
        let again = outcome(again_rx.await.expect("answered")).expect("answered from the dedup table");
        let second = outcome(second_rx.await.expect("answered")).expect("applied");
        assert!(!first.duplicate && !second.duplicate);
        assert!(again.duplicate, "a resent request id is not applied twice");
        assert_eq!(again.index, first.index);
        // Both applied (in one group commit, so possibly at one index); the
        // member whose caller left was never proposed.
        assert!(second.index >= first.index);
        assert!(node.control.state.read(|s| s.dedup.contains_key("r-1") && s.dedup.contains_key("r-2")));
        assert!(node.control.state.read(|s| !s.dedup.contains_key("r-3")));
        node.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_forwards_all_get_their_own_answer() {
        let (node, forwarder, addr, _dir) = leader().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let calls = (0..40).map(|i| {
            let forwarder = forwarder.clone();
            let addr = addr.clone();
            async move {
                outcome(
                    forwarder.forward(&addr, request(&format!("c-{i}"), "k"), deadline, Duration::from_secs(10)).await,
                )
            }
        });
        let outcomes = futures::future::join_all(calls).await;
        let mut indexes = std::collections::BTreeSet::new();
        for (i, o) in outcomes.into_iter().enumerate() {
            let o = o.unwrap_or_else(|e| panic!("write {i}: {e}"));
            assert!(!o.duplicate, "write {i}");
            indexes.insert(o.index);
        }
        assert!(node.control.state.read(|s| (0..40).all(|i| s.dedup.contains_key(&format!("c-{i}")))));
        // The lanes are dropped once idle (by the task that answered the
        // last call, just after it answered: wait for it, bounded).
        let idle = tokio::time::timeout(Duration::from_secs(10), async {
            while !forwarder.lanes.lock().expect("lock").is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(idle.await.is_ok(), "a lane outlived its last call");
        node.shutdown().await;
    }

    #[test]
    fn a_call_is_bounded_in_writes_and_bytes() {
        let mut lane = Lane::default();
        let mut answers = Vec::new();
        for len in [MAX_BATCH_BYTES + 1, 3 << 20, 3 << 20, 3 << 20, 10] {
            let (p, rx) = pending(vec![b'x'; len]);
            lane.waiting.push_back(p);
            answers.push(rx);
        }
        // An oversized write goes alone; then as many as fit in the bytes.
        assert_eq!(lane.take().len(), 1);
        assert_eq!(lane.take().len(), 2);
        assert_eq!(lane.take().len(), 2);
        assert!(lane.waiting.is_empty());
        for _ in 0..MAX_BATCH + 5 {
            let (p, rx) = pending(b"{}".to_vec());
            lane.waiting.push_back(p);
            answers.push(rx);
        }
        assert_eq!(lane.take().len(), MAX_BATCH);
        assert_eq!(lane.take().len(), 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_listening_means_not_delivered() {
        // A port that was bound and released: connecting is refused.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").to_string();
        let channels = crate::network::Channels::new(None, Duration::from_millis(500), Default::default());
        let forwarder = Forwarder::new(channels, 2);
        let deadline = Instant::now() + Duration::from_secs(5);
        let (a, b) = tokio::join!(
            forwarder.forward(&addr, request("x-1", "a"), deadline, Duration::from_secs(2)),
            forwarder.forward(&addr, request("x-2", "b"), deadline, Duration::from_secs(2)),
        );
        for f in [a, b] {
            match f {
                Forwarded::Failed(s) => assert!(!maybe_delivered(&s), "{s:?}"),
                other => panic!("expected a connection failure, got {other:?}"),
            }
        }
    }
}
