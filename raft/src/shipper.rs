//! Express shipping of new log entries to the leader's followers.
//!
//! Why, towards the secondary region: in `sync` mode a write is
//! acknowledged once a secondary-region node has it on disk. openraft 0.9
//! keeps one AppendEntries in flight per follower, and after every commit
//! it sends each follower a commit-only AppendEntries; across a WAN that
//! message occupies the secondary's stream for a full round trip, so the
//! next write leaves only when it returns: two round trips per closed-loop
//! sync write (see BENCHMARKS.md).
//!
//! Why, towards the primary region's followers: openraft 0.9
//! (`RaftCore::append_to_log`) runs the replication commands for new
//! entries only once the leader's own synced append is flushed, so a
//! commit waits for two fsyncs in a row, the leader's and then a
//! follower's. Shipped, the followers' fsyncs run beside the leader's.
//!
//! The shipper is a second, pipelined sender, run only by the leader:
//! towards secondary-region members while the mode is `sync`
//! (`ship_to_secondary`), towards every other member always
//! (`ship_to_primary`). The log store hands it the leader's new entries
//! *before* its own synced write (Raft allows a leader to replicate in
//! parallel with its local append, Ongaro §10.2.1); it sends them at once
//! as an ordinary AppendEntries under the leader's committed vote, with up
//! to [`MAX_IN_FLIGHT`] requests per peer outstanding. The follower treats
//! it like any AppendEntries (vote check, log-consistency check, synced
//! append before it answers), so a success is a real "on disk there"
//! acknowledgement, which the sync wait (`ControlPlane::wait_durable`)
//! counts next to openraft's matched index for the secondary's members.
//!
//! Nothing is reported to openraft directly: its commit index and
//! per-follower progress stay its own. Its stream to a shipping target
//! waits for a shipment in flight that carries its entries
//! ([`Outbox::await_shipment`]), leaves out the entries acknowledged to the
//! shipper ([`Outbox::strip_acknowledged`]), and a request left with
//! nothing the peer has not seen — no entry, no newer commit index — is
//! answered `Success` without being sent ([`Outbox::delivered_already`]).
//! So is a request without entries — the commit notice openraft sends
//! after every commit, or a heartbeat — to a peer that accepted a
//! shipment within half a heartbeat interval, except while a leadership
//! check (a linearizable read) is under way and towards a peer waiting to
//! apply a write it forwarded ([`Outbox::heard_lately`]; the peer then
//! learns the commit index from its next shipment or heartbeat). The
//! local answer to a request with entries is the one the follower would
//! give (it holds the leader's log through the request's end, on disk),
//! and for a primary follower it is what lets openraft count the follower
//! towards a commit as soon as the leader's own append is flushed. Under
//! load that halved the secondaries' openraft traffic: without it, most
//! entries crossed twice (openraft's stream sends as soon as the shipper
//! does) and each entry cost one more AppendEntries per secondary.
//! Raft tolerates duplicated and reordered AppendEntries: a follower
//! truncates only entries that conflict with the leader's, and a request
//! that arrives ahead of its predecessor is refused as a conflict, which
//! only makes the shipper resend from the last acknowledged entry. The
//! commit index sent is the leader's applied index (never ahead of its
//! commit). Requests go through `PeerClient::call`, so a fenced node or a
//! leader pausing replication for a handoff ships nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{LeaderId, ServerState};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::command::ReplicationMode;
use crate::control::ControlPlane;
use crate::network::{entries_within, entry_len, NetworkFactory, PeerClient, MAX_APPEND_BYTES};
use crate::types::{Entry, LogId, NodeId, NodeInfo, TypeConfig};

/// Requests outstanding per peer.
pub const MAX_IN_FLIGHT: usize = 4;
/// Entries per request (which also keeps to `network::MAX_APPEND_BYTES`).
const MAX_BATCH: usize = 256;
/// Entries the outbox keeps for peers that have not acknowledged them, at
/// most, and their encoded size at most (a burst of megabyte collateral
/// uploads must not pin gigabytes); a peer further behind is sent entries
/// from the log.
const MAX_KEPT: usize = 4096;
const MAX_KEPT_BYTES: usize = 32 << 20;

type Leader = LeaderId<NodeId>;

/// The peers' acknowledgements to the shipper under the current leader.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acks {
    /// The leader (term, node) the acknowledgements belong to.
    pub leader: Option<Leader>,
    /// Peer → highest index it acknowledged (it holds the leader's log up
    /// to there, on disk).
    pub matched: BTreeMap<NodeId, u64>,
    /// Peer → highest index of the shipments still unanswered (absent when
    /// none is). Changing it alone wakes no watcher: only the answers do.
    pub in_flight: BTreeMap<NodeId, u64>,
    /// Peer → highest commit index an acknowledged shipment (or an
    /// AppendEntries of openraft's it answered) carried: the peer has seen
    /// the leader's commit up to there.
    pub commit_seen: BTreeMap<NodeId, u64>,
    /// Peer → when the latest shipment it accepted was sent, absent after
    /// a shipment it refused or that failed: the peer accepted this
    /// leader's vote at that time (see [`Outbox::heard_lately`]).
    pub accepted_at: BTreeMap<NodeId, Instant>,
}

/// New entries of this node's own leadership, kept for shipping, and what
/// the peers acknowledged. Shared by the log store (which offers
/// entries), the shipper task and the sync wait.
pub struct Outbox {
    kept: Mutex<Kept>,
    /// Mirrors `kept.leader.is_some()` so that followers' appends skip the lock.
    leading: AtomicBool,
    appended: Notify,
    acks: watch::Sender<Acks>,
    /// Leadership checks (linearizable reads) under way on this node.
    checks: AtomicUsize,
    /// Writes forwarded by each peer, as this leader handles them.
    forwards: Mutex<HashMap<NodeId, Forwards>>,
}

/// A peer's forwarded writes (see [`Outbox::forward_started`]).
#[derive(Default)]
struct Forwards {
    /// Being handled.
    pending: usize,
    /// Highest log index answered to one.
    owed: u64,
}

#[derive(Default)]
struct Kept {
    leader: Option<Leader>,
    entries: VecDeque<Entry>,
    /// Encoded size of `entries`.
    bytes: usize,
}

impl Kept {
    /// `size` is `entry_len(&e)`, computed before the lock is taken.
    fn push_back(&mut self, e: Entry, size: usize) {
        self.bytes = self.bytes.saturating_add(size);
        self.entries.push_back(e);
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes = self.bytes.saturating_sub(entry_len(&e));
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// A forwarded write in the leader's hands (see [`Outbox::forward_started`]).
pub struct ForwardInHand<'a> {
    outbox: &'a Outbox,
    peer: NodeId,
}

impl ForwardInHand<'_> {
    /// The write was answered at log `index`: the peer is owed that commit.
    pub fn answered(&self, index: u64) {
        let mut f = self.outbox.forwards();
        let entry = f.entry(self.peer).or_default();
        entry.owed = entry.owed.max(index);
    }
}

impl Drop for ForwardInHand<'_> {
    fn drop(&mut self) {
        let mut f = self.outbox.forwards();
        if let Some(entry) = f.get_mut(&self.peer) {
            entry.pending = entry.pending.saturating_sub(1);
        }
    }
}

/// A leadership check under way (see [`Outbox::leadership_check`]).
pub struct LeadershipCheck<'a>(&'a AtomicUsize);

impl Drop for LeadershipCheck<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            kept: Mutex::default(),
            leading: AtomicBool::new(false),
            appended: Notify::new(),
            acks: watch::channel(Acks::default()).0,
            checks: AtomicUsize::new(0),
            forwards: Mutex::default(),
        }
    }
}

impl Outbox {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the log store before it writes `entries`: keeps those this
    /// node proposed as the current leader. True when it kept any (and woke
    /// the shipper to send them).
    pub(crate) fn offer(&self, entries: &[Entry]) -> bool {
        if !self.leading.load(Ordering::Acquire) || entries.is_empty() {
            return false;
        }
        // Sized (which encodes each entry once, as the log store's write
        // does next) outside the lock the shipper reads under.
        let sizes: Vec<usize> = entries.iter().map(entry_len).collect();
        let mut k = self.kept();
        let Some(leader) = k.leader else { return false };
        let mut added = false;
        for (e, size) in entries.iter().zip(sizes).filter(|(e, _)| e.log_id.leader_id == leader) {
            if k.entries.back().is_some_and(|last| last.log_id.index + 1 != e.log_id.index) {
                k.clear();
            }
            k.push_back(e.clone(), size);
            added = true;
        }
        // Always keep the newest entry, whatever its size.
        while k.entries.len() > 1 && (k.entries.len() > MAX_KEPT || k.bytes > MAX_KEPT_BYTES) {
            k.pop_front();
        }
        drop(k);
        if added {
            self.appended.notify_one();
        }
        added
    }

    /// Starts (or stops, with `None`) keeping entries for `leader`; a change
    /// drops what was kept and acknowledged under the previous one.
    fn set_leader(&self, leader: Option<Leader>) {
        let mut k = self.kept();
        if k.leader == leader {
            return;
        }
        k.leader = leader;
        k.clear();
        self.leading.store(leader.is_some(), Ordering::Release);
        drop(k);
        self.acks.send_modify(|a| {
            *a = Acks { leader, ..Acks::default() };
        });
    }

    /// Kept entries after `index`, if the outbox still holds the next one.
    fn after(&self, index: u64, max: usize) -> Option<Vec<Entry>> {
        let k = self.kept();
        let first = k.entries.front()?.log_id.index;
        if index + 1 < first {
            return None;
        }
        let skip = usize::try_from(index + 1 - first).ok()?;
        Some(k.entries.iter().skip(skip).take(max).cloned().collect())
    }

    fn last_index(&self) -> Option<u64> {
        self.kept().entries.back().map(|e| e.log_id.index)
    }

    fn trim_through(&self, index: u64) {
        let mut k = self.kept();
        while k.entries.front().is_some_and(|e| e.log_id.index <= index) {
            k.pop_front();
        }
    }

    #[cfg(test)]
    fn record_ack(&self, leader: Leader, peer: NodeId, index: u64) {
        self.shipment_answered(leader, peer, Some(index), None, None, None);
    }

    /// A shipment to `peer` left: `through` is the highest index now in
    /// flight to it. Wakes nobody (waiters wait for answers).
    fn shipment_sent(&self, leader: Leader, peer: NodeId, through: u64) {
        self.acks.send_if_modified(|a| {
            if a.leader == Some(leader) {
                let f = a.in_flight.entry(peer).or_insert(0);
                *f = (*f).max(through);
            }
            false
        });
    }

    /// A shipment to `peer` was answered: what it acknowledged (if it
    /// succeeded), the commit index it carried, what is still in flight to
    /// the peer (`None`: nothing), and when it was sent if the peer accepted
    /// it (`None`: refused or failed). Wakes the watchers when anything but
    /// that time changed.
    fn shipment_answered(
        &self,
        leader: Leader,
        peer: NodeId,
        acked: Option<u64>,
        commit: Option<u64>,
        in_flight: Option<u64>,
        accepted_at: Option<Instant>,
    ) {
        self.acks.send_if_modified(|a| {
            if a.leader != Some(leader) {
                return false;
            }
            let of_peer = |a: &Acks| {
                (a.matched.get(&peer).copied(), a.commit_seen.get(&peer).copied(), a.in_flight.get(&peer).copied())
            };
            let before = of_peer(a);
            if let Some(index) = acked {
                let m = a.matched.entry(peer).or_insert(0);
                *m = (*m).max(index);
                if let Some(c) = commit {
                    let seen = a.commit_seen.entry(peer).or_insert(0);
                    *seen = (*seen).max(c);
                }
            }
            match in_flight {
                Some(i) => a.in_flight.insert(peer, i),
                None => a.in_flight.remove(&peer),
            };
            match accepted_at {
                Some(t) => {
                    let at = a.accepted_at.entry(peer).or_insert(t);
                    *at = (*at).max(t);
                }
                None => {
                    a.accepted_at.remove(&peer);
                }
            }
            before != of_peer(a)
        });
    }

    /// Waits, at most `max`, while a shipment to `peer` that carries the
    /// first entry of `rpc` is unanswered under the same leader: openraft's
    /// stream then sends only what the shipment did not deliver
    /// ([`Self::strip_acknowledged`]) instead of every entry a second time.
    pub(crate) async fn await_shipment(&self, peer: NodeId, rpc: &AppendEntriesRequest<TypeConfig>, max: Duration) {
        let Some(first) = rpc.entries.first().map(|e| e.log_id.index) else { return };
        if !rpc.vote.is_committed() {
            return;
        }
        let leader = *rpc.vote.leader_id();
        let deadline = Instant::now() + max;
        let mut rx = self.acks.subscribe();
        loop {
            let waiting = {
                let a = rx.borrow_and_update();
                a.leader == Some(leader)
                    && a.in_flight.get(&peer).is_some_and(|f| *f >= first)
                    && a.matched.get(&peer).is_none_or(|m| *m < first)
            };
            if !waiting || !matches!(tokio::time::timeout_at(deadline, rx.changed()).await, Ok(Ok(()))) {
                return;
            }
        }
    }

    /// True when `stripped` (the result of [`Self::strip_acknowledged`] on
    /// a request that carried entries) may be answered `Success` without
    /// sending it: every entry was acknowledged to the shipper under the
    /// request's leader, and an acknowledged shipment already carried the
    /// request's commit index. The answer is what the peer would give (it
    /// holds the leader's log through the request's end, on disk), and the
    /// peer loses nothing it would have learnt from it. Heartbeats and
    /// openraft's leadership checks carry no entries and always go out.
    pub(crate) fn delivered_already(&self, peer: NodeId, stripped: &AppendEntriesRequest<TypeConfig>) -> bool {
        if !stripped.entries.is_empty() || !stripped.vote.is_committed() {
            return false;
        }
        let Some(end) = stripped.prev_log_id else { return false };
        let a = self.acks.borrow();
        a.leader.as_ref() == Some(stripped.vote.leader_id())
            && a.matched.get(&peer).is_some_and(|m| *m >= end.index)
            && stripped.leader_commit.is_none_or(|c| a.commit_seen.get(&peer).is_some_and(|s| *s >= c.index))
    }

    /// True when `rpc`, an AppendEntries of openraft's without entries (the
    /// commit notice it sends after every commit, or a heartbeat), may be
    /// answered `Success` without sending it: the peer accepted a shipment
    /// under the request's leader sent at most `within` ago, nothing
    /// failed since, it holds the leader's log through the request's
    /// `prev_log_id`, and no leadership check is under way.
    ///
    /// The answer is the peer's own (vote accepted, log matching through
    /// `prev_log_id`, on disk), only older by at most `within`, which is
    /// also all that openraft's quorum-contact clock (read-only detection)
    /// can be early by. What the peer misses is the new commit index: it
    /// arrives with the next shipment (which carries the leader's applied
    /// index) or the next heartbeat that goes out — with `within` below
    /// the heartbeat interval, a heartbeat goes out once writes stop. A
    /// leadership check (a linearizable read's barrier) sends the same
    /// requests and must hear a quorum *after* it started, so none is
    /// answered here while one is under way ([`Self::leadership_check`]).
    /// Why: after every commit openraft sent each follower this notice, as
    /// many RPCs as the shipments themselves, and on a follower's stream it
    /// held back the next entries by one round trip.
    ///
    /// Nor is one answered here while the peer has a forwarded write in the
    /// leader's hands or has not yet been told the commit index of the
    /// last one answered ([`Self::forward_started`]): a node that forwarded
    /// a write waits to have applied it before it answers its client, so
    /// that its own reads show it.
    pub(crate) fn heard_lately(&self, peer: NodeId, rpc: &AppendEntriesRequest<TypeConfig>, within: Duration) -> bool {
        if !rpc.entries.is_empty() || !rpc.vote.is_committed() || self.checks.load(Ordering::Acquire) > 0 {
            return false;
        }
        let Some(prev) = rpc.prev_log_id else { return false };
        let owed = match self.forwards().get(&peer) {
            Some(f) if f.pending > 0 => return false,
            Some(f) => f.owed,
            None => 0,
        };
        let a = self.acks.borrow();
        a.leader.as_ref() == Some(rpc.vote.leader_id())
            && a.matched.get(&peer).is_some_and(|m| *m >= prev.index)
            && a.accepted_at.get(&peer).is_some_and(|t| t.elapsed() <= within)
            && (owed == 0 || a.commit_seen.get(&peer).is_some_and(|c| *c >= owed))
    }

    fn forwards(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Forwards>> {
        self.forwards.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write forwarded by `peer` reached this node (as leader); until the
    /// guard is dropped — after [`ForwardInHand::answered`], if it was
    /// written — every empty AppendEntries to `peer` is sent, and after it
    /// until one that carries the write's commit index was answered.
    pub fn forward_started(&self, peer: NodeId) -> ForwardInHand<'_> {
        self.forwards().entry(peer).or_default().pending += 1;
        ForwardInHand { outbox: self, peer }
    }

    /// `peer` answered `Success` to an AppendEntries of openraft's under
    /// `leader` that carried `commit` and matched the leader's log through
    /// `through`: it has seen the commit up to the lower of the two (a
    /// follower commits no further than what it accepted from the leader).
    pub(crate) fn commit_told(&self, leader: &Leader, peer: NodeId, commit: u64, through: u64) {
        let commit = commit.min(through);
        self.acks.send_if_modified(|a| {
            if a.leader.as_ref() == Some(leader) {
                let seen = a.commit_seen.entry(peer).or_insert(0);
                *seen = (*seen).max(commit);
            }
            false
        });
    }

    /// Marks a leadership check under way until the guard drops: openraft's
    /// empty AppendEntries are all sent meanwhile (see [`Self::heard_lately`]).
    pub fn leadership_check(&self) -> LeadershipCheck<'_> {
        self.checks.fetch_add(1, Ordering::AcqRel);
        LeadershipCheck(&self.checks)
    }

    /// Watches the acknowledgements (the sync wait wakes on them).
    pub fn acks(&self) -> watch::Receiver<Acks> {
        self.acks.subscribe()
    }

    /// True when one of `members` acknowledged `index` (or later) to the
    /// shipper under `leader`.
    pub fn durable_on(&self, leader: &Leader, members: &[NodeId], index: u64) -> bool {
        let a = self.acks.borrow();
        a.leader.as_ref() == Some(leader) && members.iter().any(|id| a.matched.get(id).is_some_and(|m| *m >= index))
    }

    /// openraft's AppendEntries to `peer` without the entries the peer has
    /// already acknowledged to the shipper under the same leader: `prev_log_id`
    /// moves to the last acknowledged entry the request carries. Same meaning
    /// for the follower (it holds the leader's log through that entry, on
    /// disk), and openraft reads the answer against the request it built, so
    /// a success still moves the peer's matched index to the request's end.
    /// Why: without it a shipped entry crosses the network, is decoded and is
    /// looked up a second time by every node it was shipped to.
    pub(crate) fn strip_acknowledged(
        &self,
        peer: NodeId,
        mut rpc: AppendEntriesRequest<TypeConfig>,
    ) -> AppendEntriesRequest<TypeConfig> {
        let Some(first) = rpc.entries.first().map(|e| e.log_id.index) else { return rpc };
        let acked = {
            let a = self.acks.borrow();
            if !rpc.vote.is_committed() || a.leader.as_ref() != Some(rpc.vote.leader_id()) {
                return rpc;
            }
            match a.matched.get(&peer) {
                Some(m) if *m >= first => *m,
                _ => return rpc,
            }
        };
        let keep_from = rpc.entries.iter().position(|e| e.log_id.index > acked).unwrap_or(rpc.entries.len());
        if let Some(last_acked) = keep_from.checked_sub(1).and_then(|i| rpc.entries.get(i)) {
            rpc.prev_log_id = Some(last_acked.log_id);
            rpc.entries.drain(..keep_from);
            metrics::counter!("attest_raft_append_entries_stripped_total").increment(keep_from as u64);
        }
        rpc
    }
}

/// Per-peer shipping state within one leadership.
struct Peer {
    client: Arc<PeerClient>,
    /// Last entry sent (optimistically matched) and last acknowledged.
    sent: Option<LogId>,
    acked: Option<LogId>,
    in_flight: usize,
    /// After a failure, wait for the next tick before sending again.
    retry_at: Option<Instant>,
}

/// A shipment's answer: peer, leader, last entry sent, commit index sent,
/// when it was sent.
type Done = (NodeId, Leader, LogId, Option<u64>, Instant, Result<AppendEntriesResponse<NodeId>, String>);

/// The leader's shipping task (see the module docs).
pub struct Shipper {
    pub control: Arc<ControlPlane>,
    pub network: NetworkFactory,
}

impl Shipper {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let outbox = self.control.outbox.clone();
        let tick = Duration::from_millis(self.control.timing.heartbeat_ms.clamp(10, 500));
        // openraft gives its AppendEntries the heartbeat interval; so do we,
        // so that a WAN slower than that envelope still reads as silence and
        // degrades the mode to `async` (the brief's slow-WAN semantics)
        // instead of being papered over by slower, successful shipments.
        let rpc_timeout = Duration::from_millis(self.control.timing.heartbeat_ms.max(1));
        let mut leader: Option<Leader> = None;
        let mut peers: HashMap<NodeId, Peer> = HashMap::new();
        let mut inflight: JoinSet<Done> = JoinSet::new();
        loop {
            tokio::select! {
                _ = outbox.appended.notified() => {}
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    if let Ok(done) = done {
                        Self::completed(&outbox, &mut peers, leader, done, tick);
                    }
                }
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => return,
            }
            let Some(plan) = self.plan() else {
                if leader.take().is_some() {
                    outbox.set_leader(None);
                    peers.clear();
                }
                continue;
            };
            if leader != Some(plan.leader) {
                leader = Some(plan.leader);
                outbox.set_leader(leader);
                peers.clear();
            }
            peers.retain(|id, _| plan.members.iter().any(|t| t.id == *id));
            let now = Instant::now();
            let mut lowest_ack: Option<u64> = None;
            let mut shipped_remote = false;
            for Target { id, info, matched, remote } in &plan.members {
                // The secondary's shipments come first (see `targets`); let
                // them reach the wire before the local ones are sent: a task
                // spawned from a worker takes that worker's LIFO slot and
                // runs before those spawned earlier.
                if !*remote && std::mem::take(&mut shipped_remote) {
                    tokio::task::yield_now().await;
                }
                let p = peers.entry(*id).or_insert_with(|| Peer {
                    client: Arc::new(self.network.peer(*id, info)),
                    sent: None,
                    acked: None,
                    in_flight: 0,
                    retry_at: None,
                });
                lowest_ack = Some(lowest_ack.map_or(index_of(p.acked), |l| l.min(index_of(p.acked))));
                if p.in_flight >= MAX_IN_FLIGHT || p.retry_at.is_some_and(|t| now < t) {
                    continue;
                }
                p.retry_at = None;
                // The furthest point the peer is known (or assumed, for
                // requests still in flight) to match the leader's log.
                let Some(base) = [p.sent, p.acked, *matched].into_iter().flatten().max_by_key(|l| l.index) else {
                    continue;
                };
                // A peer behind the purged log needs a snapshot: openraft's
                // to send. Entries the outbox still holds would bring it up
                // too, but by a path that skips the snapshot and races it.
                if base.index < plan.purged {
                    continue;
                }
                if outbox.last_index().is_none_or(|last| last <= base.index) {
                    continue;
                }
                let Some(entries) = self.entries_after(&outbox, base.index) else {
                    continue;
                };
                let Some(last) = entries.last().map(|e| e.log_id) else { continue };
                let req = AppendEntriesRequest::<TypeConfig> {
                    vote: plan.vote,
                    prev_log_id: Some(base),
                    entries,
                    leader_commit: plan.applied,
                };
                metrics::counter!("attest_raft_ship_entries_total").increment(last.index - base.index);
                p.sent = Some(last);
                p.in_flight += 1;
                outbox.shipment_sent(plan.leader, *id, last.index);
                shipped_remote |= *remote;
                let client = p.client.clone();
                let (peer, lead, commit) = (*id, plan.leader, plan.applied.map(|c| c.index));
                inflight.spawn(async move {
                    let sent_at = Instant::now();
                    let r = client.call::<_, _, openraft::error::Infallible>("ship", &req, rpc_timeout).await;
                    (peer, lead, last, commit, sent_at, r.map_err(|e| e.to_string()))
                });
            }
            if let Some(low) = lowest_ack.filter(|l| *l > 0) {
                outbox.trim_through(low);
            }
        }
    }

    /// What to ship to whom, or None when this node should not ship now.
    ///
    /// Targets: the secondary region's members while the mode is `sync`
    /// (`ship_to_secondary`; the leader outside that region), and every
    /// other member in any mode (`ship_to_primary`).
    fn plan(&self) -> Option<Plan> {
        let c = &self.control;
        let t = &c.timing;
        if !(t.ship_to_secondary || t.ship_to_primary) || c.epoch.is_fenced() || c.handoff.draining() {
            return None;
        }
        let (mode, secondary) =
            c.state.read(|s| (s.replication.mode, s.topology.as_ref().and_then(|t| t.secondary.clone())));
        // The region whose members count for the sync wait, seen from here.
        let remote = secondary.filter(|s| *s != c.region);
        let to_secondary = t.ship_to_secondary && mode == ReplicationMode::Sync;
        let rx = c.raft().metrics();
        let m = rx.borrow();
        if m.state != ServerState::Leader || !m.vote.is_committed() || m.vote.leader_id().node_id != c.id {
            return None;
        }
        let leader = *m.vote.leader_id();
        let nodes = m.membership_config.membership().nodes();
        let members = targets(nodes, m.replication.as_ref(), c.id, remote.as_deref(), to_secondary, t.ship_to_primary);
        if members.is_empty() {
            return None;
        }
        Some(Plan { leader, vote: m.vote, applied: m.last_applied, purged: index_of(m.purged), members })
    }

    /// Entries after `index`: from the outbox, or (a peer a little behind
    /// what the outbox keeps) from the local log. None when they are not
    /// contiguous from `index + 1`.
    fn entries_after(&self, outbox: &Outbox, index: u64) -> Option<Vec<Entry>> {
        let entries = match outbox.after(index, MAX_BATCH) {
            Some(mut e) => {
                e.truncate(entries_within(&e, MAX_APPEND_BYTES));
                e
            }
            None => self.control.log.entries_within(index + 1, MAX_BATCH, MAX_APPEND_BYTES).ok()?,
        };
        let contiguous = entries.iter().enumerate().all(|(i, e)| e.log_id.index == index + 1 + i as u64);
        (contiguous && !entries.is_empty()).then_some(entries)
    }

    fn completed(
        outbox: &Outbox,
        peers: &mut HashMap<NodeId, Peer>,
        leader: Option<Leader>,
        done: Done,
        tick: Duration,
    ) {
        let (peer, lead, last, commit, sent_at, result) = done;
        // Only a whole success shows the commit index was taken in; a
        // partial one acknowledged less than the request carried.
        let commit = commit.filter(|_| matches!(result, Ok(AppendEntriesResponse::Success)));
        if leader != Some(lead) {
            return;
        }
        let Some(p) = peers.get_mut(&peer) else {
            // No longer a target (e.g. the mode left `sync` while this was
            // in flight): its record must not stay "in flight", or every
            // AppendEntries of openraft's to it would wait out its deadline
            // for this answer (`Outbox::await_shipment`) and fail.
            outbox.shipment_answered(lead, peer, None, None, None, None);
            return;
        };
        p.in_flight = p.in_flight.saturating_sub(1);
        let peer_label = peer.to_string();
        let (acked, label) = match result {
            Ok(AppendEntriesResponse::Success) => (Some(last), "ok"),
            Ok(AppendEntriesResponse::PartialSuccess(m)) => (m, "partial"),
            Ok(AppendEntriesResponse::Conflict) => (None, "conflict"),
            Ok(AppendEntriesResponse::HigherVote(_)) => {
                p.retry_at = Some(Instant::now() + tick);
                (None, "higher_vote")
            }
            Err(_) => {
                p.retry_at = Some(Instant::now() + tick);
                (None, "error")
            }
        };
        metrics::counter!("attest_raft_ship_rpcs_total", "peer" => peer_label, "result" => label).increment(1);
        match acked {
            Some(a) if index_of(Some(a)) >= index_of(p.acked) => p.acked = Some(a),
            Some(_) => {}
            // Resend from what the peer acknowledged.
            None => p.sent = p.acked,
        }
        if p.sent.is_some_and(|s| s.index < index_of(p.acked)) {
            p.sent = p.acked;
        }
        // Still in flight: what was sent beyond the acknowledgement, unless
        // a failure sent the peer back to it.
        let in_flight = (p.in_flight > 0 && index_of(p.sent) > index_of(p.acked)).then(|| index_of(p.sent));
        let accepted_at = matches!(label, "ok" | "partial").then_some(sent_at);
        outbox.shipment_answered(lead, peer, acked.map(|a| a.index), commit, in_flight, accepted_at);
    }
}

/// The members to ship to, out of `nodes`, with openraft's matched log id
/// for each from `replication`: those of the `remote` region (the
/// secondary, seen from a leader outside it) when `to_secondary`, every
/// other one but `me` when `to_primary`. The remote ones come first: their
/// round trip is the long one, and the sync wait ends with their answer.
fn targets<'a>(
    nodes: impl Iterator<Item = (&'a NodeId, &'a NodeInfo)>,
    replication: Option<&BTreeMap<NodeId, Option<LogId>>>,
    me: NodeId,
    remote: Option<&str>,
    to_secondary: bool,
    to_primary: bool,
) -> Vec<Target> {
    let mut chosen: Vec<Target> = nodes
        .map(|(id, info)| Target {
            id: *id,
            info: info.clone(),
            matched: replication.and_then(|r| r.get(id).copied().flatten()),
            remote: remote == Some(info.region.as_str()),
        })
        .filter(|t| t.id != me && if t.remote { to_secondary } else { to_primary })
        .collect();
    chosen.sort_by_key(|t| (!t.remote, t.id));
    chosen
}

/// One member to ship to.
struct Target {
    id: NodeId,
    info: NodeInfo,
    /// openraft's matched log id for it.
    matched: Option<LogId>,
    /// In the secondary region, seen from a leader outside it.
    remote: bool,
}

struct Plan {
    leader: Leader,
    vote: crate::types::Vote,
    applied: Option<LogId>,
    /// The leader's log is purged through this index.
    purged: u64,
    /// The secondary's members first.
    members: Vec<Target>,
}

fn index_of(l: Option<LogId>) -> u64 {
    l.map_or(0, |l| l.index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Request};

    fn entry(term: u64, node: NodeId, index: u64) -> Entry {
        let req = Request {
            request_id: format!("r{index}"),
            actor: "t".into(),
            proposed_at_ms: 0,
            command: Command::DeleteCollateral { key: "k".into() },
        };
        Entry {
            log_id: LogId::new(LeaderId::new(term, node), index),
            payload: openraft::EntryPayload::Normal(req.into()),
        }
    }

    #[test]
    fn keeps_only_the_current_leaders_own_contiguous_entries() {
        let o = Outbox::default();
        assert!(!o.offer(&[entry(1, 1, 1)]));
        assert_eq!(o.last_index(), None, "nothing is kept while not leading");
        o.set_leader(Some(LeaderId::new(2, 1)));
        // A follower append from another leader is not ours to ship.
        assert!(!o.offer(&[entry(2, 3, 5)]), "kept nothing: the log store does not wait for the shipper");
        assert!(o.offer(&[entry(2, 3, 5), entry(2, 1, 6)]));
        assert_eq!(o.last_index(), Some(6));
        assert!(o.offer(&[entry(2, 1, 7), entry(2, 1, 8)]));
        assert_eq!(o.after(6, 10).map(|v| v.len()), Some(2));
        assert!(o.after(4, 10).is_none(), "index 5 is not kept: the caller must read the log");
        // A gap restarts the kept run.
        o.offer(&[entry(2, 1, 20)]);
        assert!(o.after(8, 10).is_none());
        assert_eq!(o.after(19, 10).map(|v| v.len()), Some(1));
        o.trim_through(20);
        assert_eq!(o.last_index(), None);
        o.set_leader(None);
        assert!(!o.offer(&[entry(2, 1, 21)]));
        assert_eq!(o.last_index(), None);
    }

    #[test]
    fn keeps_a_bounded_number_of_bytes() {
        let o = Outbox::default();
        o.set_leader(Some(LeaderId::new(2, 1)));
        let big = |index: u64| {
            let command = Command::PutCollateral { key: "k".into(), blob_b64: "A".repeat(MAX_KEPT_BYTES / 4) };
            let req = Request { request_id: format!("r{index}"), actor: "t".into(), proposed_at_ms: 0, command };
            Entry {
                log_id: LogId::new(LeaderId::new(2, 1), index),
                payload: openraft::EntryPayload::Normal(req.into()),
            }
        };
        for i in 1..=6 {
            o.offer(&[big(i)]);
        }
        // Three quarter-bound entries fit (a fourth passes by its framing).
        assert!(o.after(2, 10).is_none(), "the oldest were dropped");
        assert_eq!(o.after(3, 10).map(|v| v.len()), Some(3));
        assert!(o.kept().bytes <= MAX_KEPT_BYTES);
        let huge = Request {
            request_id: "h".into(),
            actor: "t".into(),
            proposed_at_ms: 0,
            command: Command::PutCollateral { key: "k".into(), blob_b64: "A".repeat(MAX_KEPT_BYTES + 1) },
        };
        o.offer(&[Entry {
            log_id: LogId::new(LeaderId::new(2, 1), 7),
            payload: openraft::EntryPayload::Normal(huge.into()),
        }]);
        assert_eq!(o.after(6, 10).map(|v| v.len()), Some(1), "the newest entry is kept whatever its size");
        o.trim_through(7);
        assert_eq!(o.kept().bytes, 0);
    }

    fn append(
        term: u64,
        node: NodeId,
        prev: u64,
        entries: std::ops::RangeInclusive<u64>,
    ) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: crate::types::Vote::new_committed(term, node),
            prev_log_id: Some(LogId::new(LeaderId::new(term, node), prev)),
            entries: entries.map(|i| entry(term, node, i)).collect(),
            leader_commit: None,
        }
    }

    fn shape(r: &AppendEntriesRequest<TypeConfig>) -> (Option<u64>, Vec<u64>) {
        (r.prev_log_id.map(|l| l.index), r.entries.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn openraft_appends_leave_out_what_the_shipper_delivered() {
        let o = Outbox::default();
        let l = LeaderId::new(3, 1);
        o.set_leader(Some(l));
        // Nothing acknowledged by peer 4 yet: unchanged.
        assert_eq!(shape(&o.strip_acknowledged(4, append(3, 1, 9, 10..=12))), (Some(9), vec![10, 11, 12]));
        o.record_ack(l, 4, 11);
        assert_eq!(shape(&o.strip_acknowledged(4, append(3, 1, 9, 10..=12))), (Some(11), vec![12]));
        // Everything delivered: an empty append that confirms the end.
        assert_eq!(shape(&o.strip_acknowledged(4, append(3, 1, 5, 6..=8))), (Some(8), vec![]));
        // Requests that start past the acknowledgement, other peers, heartbeats
        // and other leaders' requests go as they are.
        assert_eq!(shape(&o.strip_acknowledged(4, append(3, 1, 11, 12..=13))), (Some(11), vec![12, 13]));
        assert_eq!(shape(&o.strip_acknowledged(5, append(3, 1, 9, 10..=12))), (Some(9), vec![10, 11, 12]));
        let mut heartbeat = append(3, 1, 9, 10..=10);
        heartbeat.entries.clear();
        assert_eq!(shape(&o.strip_acknowledged(4, heartbeat)), (Some(9), vec![]));
        assert_eq!(shape(&o.strip_acknowledged(4, append(4, 1, 9, 10..=12))), (Some(9), vec![10, 11, 12]));
        let mut uncommitted = append(3, 1, 9, 10..=12);
        uncommitted.vote = crate::types::Vote::new(3, 1);
        assert_eq!(shape(&o.strip_acknowledged(4, uncommitted)), (Some(9), vec![10, 11, 12]));
    }

    #[test]
    fn a_request_the_shipper_fully_delivered_is_answered_without_sending() {
        let o = Outbox::default();
        let l = LeaderId::new(3, 1);
        o.set_leader(Some(l));
        let with_commit = |prev, entries, commit: Option<u64>| {
            let mut r = append(3, 1, prev, entries);
            r.leader_commit = commit.map(|c| LogId::new(l, c));
            r
        };
        o.shipment_sent(l, 4, 12);
        o.shipment_answered(l, 4, Some(12), Some(9), None, None);
        let stripped = |r| o.strip_acknowledged(4, r);
        // Every entry delivered, and the commit index it carries seen.
        assert!(o.delivered_already(4, &stripped(with_commit(9, 10..=12, Some(9)))));
        assert!(o.delivered_already(4, &stripped(with_commit(9, 10..=12, None))));
        // A newer commit index must still reach the peer.
        assert!(!o.delivered_already(4, &stripped(with_commit(9, 10..=12, Some(10)))));
        // An entry left to send, another peer, another leader: sent.
        assert!(!o.delivered_already(4, &stripped(with_commit(9, 10..=13, Some(9)))));
        assert!(!o.delivered_already(5, &o.strip_acknowledged(5, with_commit(9, 10..=12, Some(9)))));
        let mut other = with_commit(9, 10..=12, None);
        other.vote = crate::types::Vote::new_committed(4, 2);
        assert!(!o.delivered_already(4, &o.strip_acknowledged(4, other)));
        // A partial success acknowledges no commit index.
        o.shipment_answered(l, 5, Some(12), None, None, None);
        assert!(o.delivered_already(5, &o.strip_acknowledged(5, with_commit(9, 10..=12, None))));
        assert!(!o.delivered_already(5, &o.strip_acknowledged(5, with_commit(9, 10..=12, Some(1)))));
    }

    #[test]
    fn an_empty_append_to_a_peer_that_just_accepted_a_shipment_is_answered_without_sending() {
        let o = Outbox::default();
        let l = LeaderId::new(3, 1);
        let within = Duration::from_millis(50);
        o.set_leader(Some(l));
        // A commit notice: no entries, prev = the peer's matched entry, a
        // commit index the peer has not seen.
        let notice = |prev: u64| {
            let mut r = append(3, 1, prev, 1..=1);
            r.entries.clear();
            r.leader_commit = Some(LogId::new(l, prev));
            r
        };
        assert!(!o.heard_lately(4, &notice(12), within), "nothing accepted yet: sent");
        o.shipment_sent(l, 4, 12);
        o.shipment_answered(l, 4, Some(12), Some(11), None, Some(Instant::now()));
        assert!(o.heard_lately(4, &notice(12), within));
        assert!(o.heard_lately(4, &notice(10), within), "an older match point is still held");
        assert!(!o.heard_lately(4, &notice(13), within), "the peer does not hold entry 13");
        assert!(!o.heard_lately(5, &notice(12), within), "another peer");
        assert!(!o.heard_lately(4, &append(3, 1, 9, 10..=12), within), "entries are not this rule's");
        let mut other = notice(12);
        other.vote = crate::types::Vote::new_committed(4, 2);
        assert!(!o.heard_lately(4, &other, within), "another leader");
        let mut no_prev = notice(12);
        no_prev.prev_log_id = None;
        assert!(!o.heard_lately(4, &no_prev, within));
        // A leadership check hears every peer for itself.
        {
            let _check = o.leadership_check();
            assert!(!o.heard_lately(4, &notice(12), within), "sent during a leadership check");
        }
        assert!(o.heard_lately(4, &notice(12), within));
        // Too long ago: sent (a heartbeat goes out once writes stop). An
        // older shipment answered late does not move the time back.
        let o = Outbox::default();
        o.set_leader(Some(l));
        let long_ago = Instant::now().checked_sub(Duration::from_millis(60)).expect("uptime beyond 60 ms");
        o.shipment_answered(l, 4, Some(12), Some(12), None, Some(long_ago));
        assert!(!o.heard_lately(4, &notice(12), within), "the acceptance is too old");
        o.shipment_answered(l, 4, Some(12), Some(12), None, Some(Instant::now()));
        o.shipment_answered(l, 4, Some(11), Some(11), None, Some(long_ago));
        assert!(o.heard_lately(4, &notice(12), within));
        // A refused or failed shipment since: sent, until one is accepted.
        o.shipment_answered(l, 4, None, None, None, None);
        assert!(!o.heard_lately(4, &notice(12), within), "the last shipment failed");
        o.shipment_answered(l, 4, Some(12), None, None, Some(Instant::now()));
        assert!(o.heard_lately(4, &notice(12), within));
        // A peer with a forwarded write in hand is told every commit, and
        // after the answer until it has seen the write's commit index.
        o.shipment_answered(l, 5, Some(12), None, None, Some(Instant::now()));
        {
            let in_hand = o.forward_started(4);
            assert!(!o.heard_lately(4, &notice(12), within), "a forward in hand");
            assert!(o.heard_lately(5, &notice(12), within), "another peer's forward changes nothing");
            in_hand.answered(14);
        }
        assert!(!o.heard_lately(4, &notice(12), within), "owed commit 14");
        o.commit_told(&l, 4, 13, 20);
        assert!(!o.heard_lately(4, &notice(12), within), "told 13 only");
        o.commit_told(&l, 4, 14, 13);
        assert!(!o.heard_lately(4, &notice(12), within), "commit 14 told with the log matched through 13 only");
        o.commit_told(&l, 4, 14, 14);
        assert!(o.heard_lately(4, &notice(12), within), "told the write's commit");
        // A new leadership forgets every acceptance.
        o.set_leader(Some(LeaderId::new(4, 1)));
        assert!(!o.heard_lately(4, &notice(12), within));
    }

    #[tokio::test]
    async fn openraft_waits_for_a_shipment_in_flight_instead_of_sending_its_entries_twice() {
        // Waits that must end on an event get an hour as their own bound,
        // and the test a minute: ending at the bound would fail the test.
        const HOUR: Duration = Duration::from_secs(3600);
        async fn within(o: &Outbox, rpc: AppendEntriesRequest<TypeConfig>, max: Duration) -> bool {
            tokio::time::timeout(Duration::from_secs(60), o.await_shipment(4, &rpc, max)).await.is_ok()
        }
        // Runs `event` on the outbox shortly after, while the test waits.
        fn soon(o: &Arc<Outbox>, event: impl FnOnce(&Outbox) + Send + 'static) -> tokio::task::JoinHandle<()> {
            let o = o.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                event(&o);
            })
        }
        let o = Arc::new(Outbox::default());
        let l = LeaderId::new(3, 1);
        o.set_leader(Some(l));
        assert!(within(&o, append(3, 1, 9, 10..=12), HOUR).await, "nothing in flight: no wait");
        // A shipment through 12 in flight: the wait ends with its answer.
        o.shipment_sent(l, 4, 12);
        let answer = soon(&o, move |o| o.shipment_answered(l, 4, Some(12), Some(9), None, None));
        assert!(within(&o, append(3, 1, 9, 10..=12), HOUR).await, "ends with the answer");
        assert_eq!(shape(&o.strip_acknowledged(4, append(3, 1, 9, 10..=12))), (Some(12), vec![]));
        answer.await.unwrap();
        // A failed shipment ends the wait with nothing acknowledged.
        o.shipment_sent(l, 4, 15);
        let fail = soon(&o, move |o| o.shipment_answered(l, 4, None, None, None, None));
        assert!(within(&o, append(3, 1, 12, 13..=15), HOUR).await, "ends with the failure");
        assert_eq!(shape(&o.strip_acknowledged(4, append(3, 1, 12, 13..=15))), (Some(12), vec![13, 14, 15]));
        fail.await.unwrap();
        // Another peer's shipment, or a leader change, ends or skips the wait.
        o.shipment_sent(l, 5, 20);
        assert!(within(&o, append(3, 1, 15, 16..=20), HOUR).await, "peer 4 has nothing in flight");
        o.shipment_sent(l, 4, 20);
        let change = soon(&o, move |o| o.set_leader(Some(LeaderId::new(4, 1))));
        assert!(within(&o, append(3, 1, 15, 16..=20), HOUR).await, "ends with the leadership");
        change.await.unwrap();
        // An unanswered shipment is waited for no longer than the bound.
        o.shipment_sent(LeaderId::new(4, 1), 4, 20);
        assert!(within(&o, append(4, 1, 15, 16..=20), Duration::from_millis(10)).await, "the bound ends the wait");
    }

    #[test]
    fn ships_to_the_secondary_first_and_to_the_other_followers_as_configured() {
        let node = |region: &str| NodeInfo { region: region.into(), ..NodeInfo::default() };
        let nodes: BTreeMap<NodeId, NodeInfo> =
            [(1, node("east")), (2, node("east")), (3, node("east")), (4, node("west")), (5, node("west"))].into();
        let ids = |v: Vec<Target>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
        let pick = |me, remote, sec, prim| ids(targets(nodes.iter(), None, me, remote, sec, prim));
        assert_eq!(pick(2, Some("west"), true, true), vec![4, 5, 1, 3]);
        assert_eq!(pick(2, Some("west"), false, true), vec![1, 3], "not sync (or switched off): own region only");
        assert_eq!(pick(2, Some("west"), true, false), vec![4, 5]);
        assert_eq!(pick(2, Some("west"), false, false), Vec::<NodeId>::new());
        // A leader in the secondary region (or without one) has no remote
        // region: everyone else is a follower like any other.
        assert_eq!(pick(4, None, true, true), vec![1, 2, 3, 5]);
        assert_eq!(pick(4, None, true, false), Vec::<NodeId>::new());
    }

    #[test]
    fn acknowledgements_count_only_under_their_leader() {
        let o = Outbox::default();
        let l = LeaderId::new(3, 1);
        o.set_leader(Some(l));
        o.record_ack(l, 4, 10);
        o.record_ack(l, 4, 7);
        o.record_ack(LeaderId::new(2, 1), 5, 99);
        assert!(o.durable_on(&l, &[4, 5], 10));
        assert!(!o.durable_on(&l, &[4, 5], 11));
        assert!(!o.durable_on(&l, &[5], 1));
        assert!(!o.durable_on(&LeaderId::new(4, 2), &[4], 1));
        o.set_leader(Some(LeaderId::new(4, 1)));
        assert!(!o.durable_on(&LeaderId::new(4, 1), &[4], 1), "a new leadership starts with no acknowledgements");
    }
}
