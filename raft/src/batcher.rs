//! Group commit: concurrent writes on the leader proposed as one log entry.
//!
//! Why: openraft 0.9's core runs its storage commands after every
//! `client_write` message (`process_raft_msg`), so each proposal costs the
//! leader one synced log append, and the followers one per AppendEntries
//! that carries it, all inside the single Raft core task. Under many
//! concurrent writers that per-proposal cost, not the disk's bandwidth,
//! caps throughput (see BENCHMARKS.md).
//!
//! The batcher keeps at most [`MAX_PROPOSALS_IN_FLIGHT`] proposals
//! outstanding; requests that arrive meanwhile wait in a queue and leave
//! together in the next proposal, as one `Command::Batch` entry of at most
//! [`MAX_BATCH`] requests and about [`MAX_BATCH_BYTES`]. A lone writer sees
//! no added wait: with a free slot its request is proposed at once,
//! unwrapped. Each member keeps its own request id, deduplication and
//! response (`ControlState::apply`); a batch applies in queue order,
//! atomically. Commands that must stand alone
//! in the log (`Command::batchable`) are proposed alone. A request whose
//! caller has given up (deadline) before it left the queue is dropped
//! unproposed.

use std::collections::VecDeque;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::command::{Command, Request, Response};
use crate::network::byte_budget;
use crate::types::{NodeId, NodeInfo, Raft};

/// Requests per log entry (well below `state::MAX_REQUESTS_PER_ENTRY`).
pub const MAX_BATCH: usize = 256;
/// Approximate bytes of requests per log entry beyond its first request
/// ([`Request::approx_bytes`]): a burst of megabyte collateral uploads
/// becomes a run of entries of about a megabyte each, not one entry of
/// hundreds, which every node would have to encode, send and write at once.
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Proposals the leader has outstanding at once. One: every proposal costs
/// a synced append on each of the five nodes and its own AppendEntries to
/// each follower, so under load the cluster's CPU per write falls with the
/// size of the batch. With one proposal in flight instead of two, entries
/// carried ~23 requests instead of ~14.5 at 64 clients (the cluster's CPU
/// per write fell 10-25 % in two of three paired runs, BENCHMARKS.md,
/// session 13); a lone writer still proposes at once.
pub const MAX_PROPOSALS_IN_FLIGHT: usize = 1;

/// Why a proposal did not commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This node does not lead (openraft's hint, if any).
    NotLeader(Option<NodeId>),
    Failed(String),
}

/// The log index the request was applied at and the state machine's answer.
pub type Proposed = Result<(u64, Response), ProposeError>;

struct Pending {
    req: Request,
    done: oneshot::Sender<Proposed>,
}

/// The handle writers propose through.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<Pending>,
}

/// The queue the proposing task drains (see [`BatchQueue::run`]).
pub struct BatchQueue {
    rx: mpsc::UnboundedReceiver<Pending>,
}

impl Batcher {
    pub fn channel() -> (Self, BatchQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, BatchQueue { rx })
    }

    /// Proposes `req` (alone or with others) and waits until it is applied
    /// on this node. The caller bounds the wait.
    pub async fn propose(&self, req: Request) -> Proposed {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Pending { req, done }).is_err() {
            return Err(ProposeError::Failed("the proposer has stopped".into()));
        }
        rx.await.unwrap_or_else(|_| Err(ProposeError::Failed("the proposer stopped before answering".into())))
    }
}

impl BatchQueue {
    /// Proposes queued requests through `raft()` (the current Raft handle;
    /// it changes when recovery restarts Raft) until shutdown.
    pub async fn run(mut self, raft: impl Fn() -> Raft, mut shutdown: watch::Receiver<bool>) {
        let mut queue: VecDeque<Pending> = VecDeque::new();
        let mut in_flight: JoinSet<()> = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                p = self.rx.recv() => match p {
                    Some(p) => queue.push_back(p),
                    None => return,
                },
            }
            while let Ok(p) = self.rx.try_recv() {
                queue.push_back(p);
            }
            queue.retain(|p| !p.done.is_closed());
            while in_flight.len() < MAX_PROPOSALS_IN_FLIGHT && !queue.is_empty() {
                let group: Vec<Pending> = queue.drain(..next_group(&queue)).collect();
                in_flight.spawn(propose_group(raft(), group));
            }
            metrics::gauge!("attest_control_proposal_queue").set(queue.len() as f64);
        }
    }
}

/// How many requests from the front of `queue` the next proposal carries:
/// one that must stand alone, or a run of batchable requests of at most
/// [`MAX_BATCH`] requests and, beyond the first, [`MAX_BATCH_BYTES`].
fn next_group(queue: &VecDeque<Pending>) -> usize {
    if !queue.front().is_some_and(|p| p.req.command.batchable()) {
        return queue.len().min(1);
    }
    let mut fits = byte_budget(MAX_BATCH_BYTES);
    queue.iter().take(MAX_BATCH).take_while(|p| p.req.command.batchable() && fits(p.req.approx_bytes())).count()
}

async fn propose_group(raft: Raft, mut group: Vec<Pending>) {
    metrics::histogram!("attest_control_batch_requests").record(group.len() as f64);
    if group.len() == 1 {
        if let Some(p) = group.pop() {
            let r = raft.client_write(p.req.into()).await.map(|r| (r.log_id.index, r.data)).map_err(propose_error);
            let _ = p.done.send(r);
        }
        return;
    }
    let (requests, dones): (Vec<Request>, Vec<_>) = group.into_iter().map(|p| (p.req, p.done)).unzip();
    let batch = Request {
        request_id: format!("batch-{}", uuid::Uuid::new_v4()),
        actor: "group-commit".into(),
        proposed_at_ms: crate::control::now_ms(),
        command: Command::Batch { requests },
    };
    match raft.client_write(batch.into()).await {
        Ok(r) => {
            let index = r.log_id.index;
            let mut answers = r.data.batch.into_iter();
            for done in dones {
                let answer = answers.next().map(|a| (index, a)).ok_or_else(|| {
                    ProposeError::Failed("the batch was answered for fewer requests than it held".into())
                });
                let _ = done.send(answer);
            }
        }
        Err(e) => {
            let e = propose_error(e);
            for done in dones {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}

fn propose_error(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ProposeError::NotLeader(f.leader_id),
        e => ProposeError::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(command: Command) -> Pending {
        let (done, _) = oneshot::channel();
        Pending { req: Request { request_id: "r".into(), actor: "t".into(), proposed_at_ms: 0, command }, done }
    }

    fn collateral(bytes: usize) -> Command {
        Command::PutCollateral { key: "k".into(), blob_b64: "A".repeat(bytes) }
    }

    #[test]
    fn a_proposal_is_bounded_in_requests_bytes_and_kind() {
        let noop = || pending(Command::Noop);
        let mut q: VecDeque<Pending> = (0..MAX_BATCH + 10).map(|_| noop()).collect();
        assert_eq!(next_group(&q), MAX_BATCH);
        // 400 KiB uploads: two per entry; a larger one than the bound alone.
        q = [400 << 10, 400 << 10, 400 << 10, 2 << 20, 10].into_iter().map(|b| pending(collateral(b))).collect();
        assert_eq!(next_group(&q), 2);
        q.drain(..2);
        assert_eq!(next_group(&q), 1);
        q.drain(..1);
        assert_eq!(next_group(&q), 1, "the oversized upload goes alone");
        // A command that must stand alone ends a run, and goes alone.
        let mode = || {
            pending(Command::SetReplicationMode { mode: crate::command::ReplicationMode::Async, reason: "t".into() })
        };
        q = VecDeque::from([noop(), noop(), mode(), noop()]);
        assert_eq!(next_group(&q), 2);
        q.drain(..2);
        assert_eq!(next_group(&q), 1);
        assert_eq!(next_group(&VecDeque::new()), 0);
    }
}
