//! Disaster recovery: forced promotion of the secondary region, fencing of
//! the lost primary, re-seeding and rebalancing (issue 9).
//!
//! # Why a forced promotion needs to step outside Raft
//!
//! The primary region holds the majority of the voters, so when it is lost
//! the secondary cannot commit anything, not even a membership change:
//! openraft (like every Raft) changes membership *through* the log, which
//! needs the old quorum. Like etcd's `--force-new-cluster`, CockroachDB's
//! loss-of-quorum recovery and TiKV's Online Unsafe Recovery, we therefore
//! rewrite the survivors' Raft storage directly, with Raft stopped. The
//! technique, and why each step is safe *among the survivors*:
//!
//! 1. **Plan** (`promote_plan`, read-only). Refuse unless this node belongs
//!    to the region being promoted, that region is the secondary, no leader
//!    has been heard for `[recovery] promote_min_outage_ms`, and no node of
//!    the primary region answers a probe right now. Collect every surviving
//!    secondary node's last log id, vote and applied index, and estimate
//!    the RPO from the replication mode the survivors last applied.
//! 2. **Prepare**: every survivor shuts its Raft down (it can neither vote
//!    nor campaign, so no term moves under our feet) and reports its exact
//!    storage state. A survivor that cannot be prepared is left out; one
//!    left prepared without a commit restarts unchanged after 60 s.
//! 3. **Choose**: the *source* is the survivor with the greatest last log
//!    id `(term, index)`. By Raft's leader-completeness and log-matching
//!    properties its log contains every entry any survivor holds that was
//!    committed in the old configuration; in `sync` mode every
//!    acknowledged write was on disk on some survivor, hence on the source
//!    (RPO = 0 for acknowledged writes). The new term `T` is one more than
//!    any term or vote any survivor has seen; the new epoch one more than
//!    any survivor's epoch.
//! 4. **Commit**: every survivor persists the new [`EpochRecord`] and the
//!    committed vote `(T, source)`; the source also appends one membership
//!    entry at `last_index + 1` with log id `(T, source)` whose only voters
//!    are the survivors. Then Raft restarts. openraft restores a node whose
//!    persisted vote is committed and its own as leader at once; its
//!    effective membership is the new entry, so the survivors alone are a
//!    quorum: the entry (and with it everything before it) commits as soon
//!    as they acknowledge it, and the other survivors, whose vote already
//!    names the source at `T`, accept its AppendEntries and drop any
//!    conflicting uncommitted tail. The first command of the new epoch,
//!    [`Command::Promoted`], makes the promoted region the primary and
//!    records the promotion in the replicated audit log.
//!
//! What makes this *unsafe* is exactly what the survivors cannot know: if
//! the old primary is in fact alive (a partition, not a loss), it still
//! has a quorum of its own configuration and keeps accepting writes: two
//! clusters. The epoch fences it at its first contact with the promoted
//! side (see `epoch`), and its writes that the promoted side lacks are
//! listed in the audit log as `divergent-writes`, never merged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{ChangeMembers, CommittedLeaderId, EntryPayload, Membership, ServerState};
use rocksdb::DB;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::command::{Command, ReplicationMode};
use crate::control::{now_ms, primary_holds_majority, ControlPlane, LogEntrySummary, WriteError};
use crate::epoch::{EpochRecord, FenceRecord};
use crate::log_store::LogStore;
use crate::network::NetworkFactory;
use crate::state_machine::{SmShared, StateMachineStore};
use crate::types::{Entry, LogId, NodeId, NodeInfo, Raft, Vote};

/// How long a prepared survivor waits for the commit before it restarts
/// Raft unchanged.
const PREPARE_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// A precondition does not hold; nothing was changed.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl RecoveryError {
    fn failed(e: impl std::fmt::Display) -> Self {
        RecoveryError::Failed(e.to_string())
    }
}

/// Restarts openraft on the node's existing storage (promotion commit,
/// re-seed). The state the API reads is shared, so nothing above notices.
pub struct Restarter {
    pub(crate) db: Arc<DB>,
    pub(crate) config: Arc<openraft::Config>,
    pub(crate) network: NetworkFactory,
    pub(crate) shared: SmShared,
    pub(crate) outbox: Arc<crate::shipper::Outbox>,
    pub(crate) log_cache: Arc<std::sync::Mutex<crate::log_store::EntryCache>>,
}

impl Restarter {
    async fn start(&self, id: NodeId) -> Result<Raft, RecoveryError> {
        let log_store = LogStore::shared(self.db.clone(), self.outbox.clone(), self.log_cache.clone());
        let sm = StateMachineStore::reopen(self.db.clone(), &self.shared).map_err(RecoveryError::failed)?;
        Raft::new(id, self.config.clone(), self.network.clone(), log_store, sm).await.map_err(RecoveryError::failed)
    }
}

/// A prepared (Raft stopped) survivor.
pub struct Freeze {
    pub token: String,
    pub since: Instant,
}

/// What one node holds, as a promotion plan and the audit log report it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub node_id: NodeId,
    pub info: NodeInfo,
    pub epoch: EpochRecord,
    pub fenced: bool,
    pub raft_role: String,
    /// The leader of this node's vote. Unlike `/health`, this storage view
    /// keeps it after a restart (`leader_contact_ms` is then `None`): it
    /// names the leader the node last followed, which a promotion audit
    /// wants to see.
    pub leader: Option<NodeId>,
    /// The leader's gRPC address, as this node knows it.
    #[serde(default)]
    pub leader_addr: Option<String>,
    /// ms since this node last heard a leader (None: never since start).
    pub leader_contact_ms: Option<u64>,
    pub last_log_term: u64,
    pub last_log_index: u64,
    pub vote_term: u64,
    pub applied_index: u64,
    pub replication_mode: ReplicationMode,
    pub replication_since_index: u64,
    pub replication_changed_at_ms: u64,
    pub replication_reason: String,
    /// Entries on disk beyond the applied index (held, not known committed).
    pub unapplied_tail: Vec<LogEntrySummary>,
}

/// `promote_plan`'s answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromotePlan {
    pub region: String,
    pub lost_region: Option<String>,
    /// Empty when a promotion may proceed.
    pub refusals: Vec<String>,
    pub min_outage_ms: u64,
    /// How long this node has not heard a leader.
    pub outage_ms: u64,
    pub primary_probes: Vec<Value>,
    pub survivors: Vec<NodeReport>,
    pub unreachable: Vec<NodeId>,
    pub source: Option<NodeId>,
    pub base_term: u64,
    pub base_index: u64,
    pub current_epoch: u64,
    pub new_epoch: u64,
    pub replication_mode: ReplicationMode,
    /// The RPO estimate in words.
    pub rpo: String,
}

#[derive(Serialize, Deserialize)]
struct CommitPayload {
    token: String,
    record: EpochRecord,
    vote_term: u64,
    leader: NodeId,
    entry: Option<Entry>,
}

#[derive(Serialize, Deserialize)]
struct PreparePayload {
    token: String,
}

/// Why a fenced node refuses, for errors, logs and `/health`.
pub fn fence_reason(f: &FenceRecord) -> String {
    let region = if f.newer.region.is_empty() { "the other region".to_string() } else { f.newer.region.clone() };
    format!(
        "this node is fenced: its configuration epoch {} was superseded by epoch {} (forced promotion of {region}); it serves neither the data plane nor the control plane until an operator re-seeds it (attestd admin reseed)",
        f.own_epoch, f.newer.epoch
    )
}

/// The RPO estimate for a promotion, from the survivors' applied view.
pub fn rpo_estimate(
    mode: ReplicationMode,
    since_index: u64,
    changed_at_ms: u64,
    reason: &str,
    base_index: u64,
) -> String {
    match mode {
        ReplicationMode::Sync => format!(
            "RPO = 0 for acknowledged writes: the cluster was in sync mode, so every acknowledged write was on disk in this region, and the survivors hold the log up to index {base_index}. Writes the primary accepted but never acknowledged may be lost."
        ),
        other => format!(
            "writes acknowledged after index {since_index} may be MISSING: replication was '{}' since index {since_index} (at {changed_at_ms} ms Unix: {reason}), so the primary acknowledged writes on its own quorum; the survivors hold the log up to index {base_index}. Anything the lost primary acknowledged beyond that is lost, and is listed as divergent in the audit log if that primary ever reconnects.",
            other.as_str()
        ),
    }
}

/// Entries of an old-epoch log that the new epoch does not have: every
/// normal entry with an index above the new epoch's base, or a term above
/// the base term (a later leader of the old configuration wrote it). An
/// entry at or below the base with a term at or below the base term is
/// either shared with the new epoch (log matching) or was never committed.
pub fn divergent_entries(log: &LogStore, base_term: u64, base_index: u64) -> Result<Vec<LogEntrySummary>, String> {
    let mut out = Vec::new();
    let mut from = 0u64;
    loop {
        let batch = log.entries_from(from, 1000).map_err(|e| e.to_string())?;
        let Some(last) = batch.last().map(|e| e.log_id.index) else { break };
        for e in &batch {
            if e.log_id.index > base_index || e.log_id.leader_id.term > base_term {
                if let EntryPayload::Normal(r) = &e.payload {
                    out.extend(r.client_requests().iter().map(|r| LogEntrySummary {
                        index: e.log_id.index,
                        term: e.log_id.leader_id.term,
                        kind: r.command.kind().to_string(),
                        request_id: Some(r.request_id.clone()),
                        actor: Some(r.actor.clone()),
                    }));
                }
            }
        }
        from = last + 1;
    }
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, RecoveryError> {
    serde_json::from_slice(payload).map_err(|e| RecoveryError::Failed(format!("undecodable recovery payload: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, RecoveryError> {
    serde_json::to_vec(v).map_err(RecoveryError::failed)
}

/// The node side of `NodeAdmin.Recovery`.
pub async fn handle_rpc(control: &Arc<ControlPlane>, phase: &str, payload: &[u8]) -> Result<Vec<u8>, RecoveryError> {
    match phase {
        "info" => encode(&control.local_report()),
        "prepare" => {
            let p: PreparePayload = decode(payload)?;
            let _g = control.recovery_lock.lock().await;
            let r = control.prepare_locked(&p.token).await?;
            control.schedule_thaw(p.token);
            encode(&r)
        }
        "commit" => {
            let p: CommitPayload = decode(payload)?;
            let _g = control.recovery_lock.lock().await;
            control.commit_locked(p).await?;
            encode(&json!({"ok": true}))
        }
        "abort" => {
            let p: PreparePayload = decode(payload)?;
            let _g = control.recovery_lock.lock().await;
            control.abort_locked(&p.token).await?;
            encode(&json!({"ok": true}))
        }
        "divergence" => {
            let v: Value = decode(payload)?;
            control.record_divergence(v).await?;
            encode(&json!({"ok": true}))
        }
        "rebalance" => {
            let v: Value = decode(payload)?;
            let primary = v["primary"].as_str().unwrap_or_default().to_string();
            let actor = v["actor"].as_str().unwrap_or("operator").to_string();
            encode(&control.rebalance(&primary, &actor).await?)
        }
        // Leadership handoff to the primary region (see `placement`).
        "handoff-notice" => {
            let v: Value = decode(payload)?;
            control.handoff.notice(v["forMs"].as_u64().unwrap_or(0));
            encode(&json!({"ok": true}))
        }
        "campaign" => {
            let voter =
                control.raft().metrics().borrow().membership_config.membership().voter_ids().any(|id| id == control.id);
            if !voter {
                return Err(RecoveryError::Refused("this node is not a voter".into()));
            }
            if control.refusal().is_some() {
                return Err(RecoveryError::Refused("this node refuses to lead (fenced or promoting)".into()));
            }
            control.raft().trigger().elect().await.map_err(RecoveryError::failed)?;
            encode(&json!({"ok": true}))
        }
        other => Err(RecoveryError::Refused(format!("unknown recovery phase '{other}'"))),
    }
}

impl ControlPlane {
    /// True when this node holds any Raft state (log, snapshot), read
    /// from storage: right after a (re)start openraft's metrics may not be
    /// published yet.
    pub fn has_raft_state(&self) -> bool {
        self.log.last_log_id().ok().flatten().is_some()
    }

    pub(crate) async fn recovery_rpc(
        &self,
        addr: &str,
        phase: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RecoveryError> {
        let mut client = self.channels.admin_client(addr).map_err(RecoveryError::failed)?;
        let mut req = tonic::Request::new(attest_proto::RecoveryRequest { phase: phase.into(), payload });
        req.set_timeout(timeout);
        let r = client
            .recovery(req)
            .await
            .map_err(|s| RecoveryError::Failed(format!("{addr}: {}", s.message())))?
            .into_inner();
        if r.error.is_empty() {
            Ok(r.payload)
        } else {
            Err(RecoveryError::Failed(format!("{addr}: {}", r.error)))
        }
    }

    /// This node's own storage view (works with Raft stopped).
    pub fn local_report(&self) -> NodeReport {
        let m = self.raft().metrics().borrow().clone();
        let last = self.log.last_log_id().ok().flatten();
        let vote = self.log.stored_vote().ok().flatten();
        let applied = self.state.applied_index();
        let (mode, since, changed, reason) = self.state.read(|s| {
            (s.replication.mode, s.replication.since_index, s.replication.changed_at_ms, s.replication.reason.clone())
        });
        let tail = self.local_log(applied + 1, 200).unwrap_or_default();
        NodeReport {
            node_id: self.id,
            info: self.me.clone(),
            epoch: self.epoch.record(),
            fenced: self.epoch.is_fenced(),
            raft_role: format!("{:?}", m.state),
            leader: m.current_leader,
            leader_addr: m
                .current_leader
                .and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.raft_addr.clone())),
            leader_contact_ms: self.leader_contact.ever().then(|| self.leader_contact.age().as_millis() as u64),
            last_log_term: last.map(|l| l.leader_id.term).unwrap_or(0),
            last_log_index: last.map(|l| l.index).unwrap_or(0),
            vote_term: vote.map(|v| v.leader_id.term).unwrap_or(0),
            applied_index: applied,
            replication_mode: mode,
            replication_since_index: since,
            replication_changed_at_ms: changed,
            replication_reason: reason,
            unapplied_tail: tail,
        }
    }

    async fn restart_raft(&self) -> Result<(), RecoveryError> {
        let raft = self.restarter.start(self.id).await?;
        *self.raft_cell.write().unwrap_or_else(|p| p.into_inner()) = raft;
        Ok(())
    }

    async fn prepare_locked(&self, token: &str) -> Result<NodeReport, RecoveryError> {
        if self.epoch.is_fenced() {
            return Err(RecoveryError::Refused(format!("node {} is fenced and cannot be a survivor", self.id)));
        }
        let already = self.frozen.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|f| f.token.clone());
        match already {
            Some(t) if t == token => {}
            Some(_) => {
                return Err(RecoveryError::Refused(format!("node {} is prepared for another promotion", self.id)))
            }
            None => {
                let _ = self.raft().shutdown().await;
                *self.frozen.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Freeze { token: token.to_string(), since: Instant::now() });
                tracing::warn!(token, "forced promotion: Raft stopped on this survivor (prepared)");
            }
        }
        Ok(self.local_report())
    }

    fn schedule_thaw(self: &Arc<Self>, token: String) {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PREPARE_TTL).await;
            let _g = me.recovery_lock.lock().await;
            if let Err(e) = me.abort_locked(&token).await {
                tracing::error!(error = %e, "restarting Raft after an abandoned promotion failed");
            }
        });
    }

    async fn abort_locked(&self, token: &str) -> Result<(), RecoveryError> {
        let mine = self.frozen.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|f| f.token.clone());
        if mine.as_deref() != Some(token) {
            return Ok(());
        }
        self.restart_raft().await?;
        *self.frozen.lock().unwrap_or_else(|p| p.into_inner()) = None;
        tracing::warn!(token, "forced promotion aborted: Raft restarted unchanged");
        Ok(())
    }

    async fn commit_locked(&self, p: CommitPayload) -> Result<(), RecoveryError> {
        let mine = self.frozen.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|f| f.token.clone());
        if mine.as_deref() != Some(p.token.as_str()) {
            return Err(RecoveryError::Refused(format!("node {} is not prepared for this promotion", self.id)));
        }
        self.epoch.set_record(p.record.clone()).map_err(RecoveryError::failed)?;
        self.log.force_vote(&Vote::new_committed(p.vote_term, p.leader)).map_err(RecoveryError::failed)?;
        if let Some(entry) = &p.entry {
            self.log.force_append(entry).map_err(RecoveryError::failed)?;
        }
        self.restart_raft().await?;
        *self.frozen.lock().unwrap_or_else(|p| p.into_inner()) = None;
        tracing::warn!(
            epoch = p.record.epoch,
            term = p.vote_term,
            leader = p.leader,
            source = p.entry.is_some(),
            "FORCED PROMOTION committed on this node: new configuration epoch"
        );
        Ok(())
    }

    /// Members of the applied membership labelled `region`.
    fn region_members(&self, region: &str) -> Vec<(NodeId, NodeInfo)> {
        let m = self.raft().metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .filter(|(_, n)| n.region == region)
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    /// Everything a promotion of `region` would do, and why it would be
    /// refused. Changes nothing.
    pub async fn promote_plan(&self, region: &str) -> PromotePlan {
        let mut refusals = Vec::new();
        let topo = self.state.read(|s| s.topology.clone());
        let lost = topo.as_ref().map(|t| t.primary.clone());
        if let Some(f) = self.epoch.fence() {
            refusals.push(fence_reason(&f));
        }
        if region != self.region {
            refusals.push(format!(
                "run the promotion on a node of the region being promoted ({region}); this node is in {}",
                self.region
            ));
        }
        match &topo {
            None => refusals.push("this node has no applied topology".into()),
            Some(t) if t.primary == region => refusals.push(format!("{region} is already the primary region")),
            Some(t) if t.secondary.as_deref() != Some(region) => {
                refusals.push(format!("{region} is not the secondary region of this cluster"))
            }
            _ => {}
        }
        let readonly_after = self.timing.readonly_after();
        let outage = self.leader_contact.age();
        let m = self.raft().metrics().borrow().clone();
        let leader_fresh = self.leader_contact.ever() && outage < readonly_after;
        if m.state == ServerState::Leader || (m.current_leader.is_some() && leader_fresh) {
            refusals.push(format!(
                "the primary is reachable: this node heard leader {:?} {} ms ago; a forced promotion is only for a lost primary",
                m.current_leader,
                outage.as_millis()
            ));
        }
        if outage < self.promote_min_outage {
            refusals.push(format!(
                "no leader heard for only {} ms; a forced promotion needs the primary to be unreachable for at least {} ms ([recovery] promote_min_outage_ms)",
                outage.as_millis(),
                self.promote_min_outage.as_millis()
            ));
        }
        // Probe the lost region right now, through the same links Raft uses.
        let mut probes = Vec::new();
        if let Some(lost) = &lost {
            for (id, info) in self.region_members(lost) {
                let r = self.recovery_rpc(&info.raft_addr, "info", Vec::new(), Duration::from_secs(1)).await;
                let reachable = r.is_ok();
                if reachable {
                    refusals.push(format!(
                        "node {id} of the primary region {lost} ({}) answers: the primary is not lost",
                        info.raft_addr
                    ));
                }
                probes.push(json!({"node": id, "addr": info.raft_addr, "reachable": reachable,
                    "detail": r.err().map(|e| e.to_string())}));
            }
        }
        // The survivors: every member of the promoted region that answers.
        let mut survivors = vec![self.local_report()];
        let mut unreachable = Vec::new();
        for (id, info) in self.region_members(region) {
            if id == self.id {
                continue;
            }
            match self.recovery_rpc(&info.raft_addr, "info", Vec::new(), Duration::from_secs(2)).await {
                Ok(b) => match serde_json::from_slice::<NodeReport>(&b) {
                    Ok(r) if !r.fenced => survivors.push(r),
                    _ => unreachable.push(id),
                },
                Err(_) => unreachable.push(id),
            }
        }
        let (source, base_term, base_index) = choose_source(&survivors);
        let src = survivors.iter().find(|s| Some(s.node_id) == source).cloned();
        let (mode, rpo) = match &src {
            Some(s) => (
                s.replication_mode,
                rpo_estimate(
                    s.replication_mode,
                    s.replication_since_index,
                    s.replication_changed_at_ms,
                    &s.replication_reason,
                    base_index,
                ),
            ),
            None => (ReplicationMode::Sync, "unknown".into()),
        };
        let current_epoch = survivors.iter().map(|s| s.epoch.epoch).max().unwrap_or(1);
        PromotePlan {
            region: region.to_string(),
            lost_region: lost,
            refusals,
            min_outage_ms: self.promote_min_outage.as_millis() as u64,
            outage_ms: outage.as_millis() as u64,
            primary_probes: probes,
            survivors,
            unreachable,
            source,
            base_term,
            base_index,
            current_epoch,
            new_epoch: current_epoch + 1,
            replication_mode: mode,
            rpo,
        }
    }

    /// The forced promotion itself (see the module docs). `force` and
    /// `confirm` are the operator's explicit assertions.
    pub async fn promote(
        self: &Arc<Self>,
        region: &str,
        actor: &str,
        force: bool,
        confirm: bool,
    ) -> Result<Value, RecoveryError> {
        if !force {
            return Err(RecoveryError::Refused(
                "a forced promotion needs --force (\"force\": true): it is lossy, and unsafe if the primary is in fact alive".into(),
            ));
        }
        if !confirm {
            return Err(RecoveryError::Refused(
                "a forced promotion needs the operator's confirmation (--yes, or \"confirm\": true after reading the plan)".into(),
            ));
        }
        let _g = self.recovery_lock.lock().await;
        let plan = self.promote_plan(region).await;
        if !plan.refusals.is_empty() {
            tracing::warn!(by = actor, refusals = ?plan.refusals, "forced promotion refused");
            return Err(RecoveryError::Refused(plan.refusals.join("; ")));
        }
        tracing::warn!(by = actor, region, new_epoch = plan.new_epoch, rpo = %plan.rpo, "FORCED PROMOTION starting");
        let token = uuid::Uuid::new_v4().to_string();
        // Prepare: stop Raft on every survivor, this node first.
        let mut prepared: Vec<NodeReport> = vec![self.prepare_locked(&token).await?];
        let mut left_out = plan.unreachable.clone();
        let payload = encode(&PreparePayload { token: token.clone() })?;
        for s in plan.survivors.iter().filter(|s| s.node_id != self.id) {
            match self.recovery_rpc(&s.info.raft_addr, "prepare", payload.clone(), Duration::from_secs(15)).await {
                Ok(b) => match serde_json::from_slice::<NodeReport>(&b) {
                    Ok(r) => prepared.push(r),
                    Err(_) => left_out.push(s.node_id),
                },
                Err(e) => {
                    tracing::warn!(node = s.node_id, error = %e, "survivor could not be prepared; leaving it out");
                    left_out.push(s.node_id);
                }
            }
        }
        let (source, base_term, base_index) = choose_source(&prepared);
        let Some(source) = source else {
            self.abort_all(&token, &prepared).await;
            return Err(RecoveryError::Failed("no survivor prepared".into()));
        };
        let term = prepared.iter().map(|r| r.vote_term.max(r.last_log_term)).max().unwrap_or(0) + 1;
        let epoch = prepared.iter().map(|r| r.epoch.epoch).max().unwrap_or(1) + 1;
        let mut record = EpochRecord {
            epoch,
            base_term,
            base_index,
            region: region.to_string(),
            promoted_at_ms: now_ms(),
            by: actor.to_string(),
            members: Vec::new(),
        };
        // Commit the other survivors first; the membership is whoever made it.
        let mut members: BTreeMap<NodeId, NodeInfo> = BTreeMap::new();
        let mut src_info = None;
        let all_ids: Vec<NodeId> = prepared.iter().map(|r| r.node_id).collect();
        record.members = all_ids.clone();
        for r in &prepared {
            if r.node_id == source {
                src_info = Some(r.info.clone());
                continue;
            }
            let p = CommitPayload {
                token: token.clone(),
                record: record.clone(),
                vote_term: term,
                leader: source,
                entry: None,
            };
            let res = if r.node_id == self.id {
                self.commit_locked(p).await
            } else {
                self.recovery_rpc(&r.info.raft_addr, "commit", encode(&p)?, Duration::from_secs(30)).await.map(|_| ())
            };
            match res {
                Ok(()) => {
                    members.insert(r.node_id, r.info.clone());
                }
                Err(e) => {
                    tracing::error!(node = r.node_id, error = %e, "survivor missed the promotion commit; it will be fenced");
                    left_out.push(r.node_id);
                }
            }
        }
        let Some(src_info) = src_info else {
            return Err(RecoveryError::Failed("the source survivor vanished from the plan".into()));
        };
        members.insert(source, src_info.clone());
        let voters: BTreeSet<NodeId> = members.keys().copied().collect();
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, source), base_index + 1),
            payload: EntryPayload::Membership(Membership::new(vec![voters.clone()], members.clone())),
        };
        let p = CommitPayload {
            token: token.clone(),
            record: record.clone(),
            vote_term: term,
            leader: source,
            entry: Some(entry),
        };
        let res = if source == self.id {
            self.commit_locked(p).await
        } else {
            self.recovery_rpc(&src_info.raft_addr, "commit", encode(&p)?, Duration::from_secs(30)).await.map(|_| ())
        };
        if let Err(e) = res {
            return Err(RecoveryError::Failed(format!(
                "the source survivor {source} failed to commit the new membership ({e}); the other survivors are in epoch {epoch} already: re-run the promotion once node {source} is back or without it"
            )));
        }
        // The first write of the new epoch: topology, mode, audit.
        let lost = plan.lost_region.clone();
        let report = json!({
            "survivors": prepared,
            "leftOut": left_out,
            "source": source,
            "term": term,
            "voters": voters,
            "outageMs": plan.outage_ms,
            "primaryProbes": plan.primary_probes,
            "replicationMode": plan.replication_mode,
        });
        let mut req = self.request(
            actor,
            Command::Promoted {
                epoch,
                primary: region.to_string(),
                secondary: lost,
                base_term,
                base_index,
                rpo: plan.rpo.clone(),
                detail: report.clone(),
            },
        );
        req.request_id = format!("promote-epoch-{epoch}");
        let audit_index = match self.write_retrying(req, Duration::from_secs(30)).await {
            Ok(o) => Some(o.index),
            Err(e) => {
                tracing::error!(error = %e, "the promotion is committed but its audit entry is not yet written; the new leader writes it");
                None
            }
        };
        tracing::warn!(epoch, source, ?voters, "FORCED PROMOTION complete: the control plane is writable in {region}");
        Ok(json!({
            "promoted": region,
            "epoch": record,
            "voters": voters,
            "leftOut": left_out,
            "rpo": plan.rpo,
            "replicationMode": plan.replication_mode,
            "auditIndex": audit_index,
            "report": report,
        }))
    }

    /// A write retried (same request id) until acknowledged or `within`
    /// elapses: right after a promotion or a join the node may not have
    /// heard its leader yet.
    async fn write_retrying(
        &self,
        req: crate::command::Request,
        within: Duration,
    ) -> Result<crate::control::WriteOutcome, WriteError> {
        let deadline = Instant::now() + within;
        loop {
            match self.write(req.clone(), Duration::from_secs(10)).await {
                Ok(o) => return Ok(o),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }

    async fn abort_all(&self, token: &str, prepared: &[NodeReport]) {
        let payload = encode(&PreparePayload { token: token.to_string() }).unwrap_or_default();
        for r in prepared {
            if r.node_id == self.id {
                let _ = self.abort_locked(token).await;
            } else {
                let _ = self.recovery_rpc(&r.info.raft_addr, "abort", payload.clone(), Duration::from_secs(10)).await;
            }
        }
    }

    /// On the promoted side: records a fenced node's divergent writes.
    async fn record_divergence(&self, v: Value) -> Result<(), RecoveryError> {
        let node = v["node"].as_u64().unwrap_or(0);
        let newer = v["newerEpoch"].as_u64().unwrap_or(0);
        // A fenced node with nothing the new epoch lacks is still recorded.
        let action = if v["count"].as_u64().unwrap_or(0) > 0 { "divergent-writes" } else { "fenced-node" };
        let mut req = self.request(
            &format!("node-{node}"),
            Command::Audit { action: action.into(), epoch: newer, rpo: None, detail: v },
        );
        req.request_id = format!("divergence-{node}-epoch-{newer}");
        self.write(req, Duration::from_millis(self.timing.write_timeout_ms)).await.map_err(RecoveryError::failed)?;
        Ok(())
    }

    /// On a fenced node: sends its divergent writes to the promoted side's
    /// audit log (idempotent: one record per node and epoch).
    pub async fn report_divergence(&self) -> Result<usize, RecoveryError> {
        let Some(f) = self.epoch.fence() else { return Ok(0) };
        let entries =
            divergent_entries(&self.log, f.newer.base_term, f.newer.base_index).map_err(RecoveryError::Failed)?;
        let n = entries.len();
        let last = self.log.last_log_id().ok().flatten();
        let payload = encode(&json!({
            "node": self.id,
            "region": self.region,
            "ownEpoch": f.own_epoch,
            "newerEpoch": f.newer.epoch,
            "baseTerm": f.newer.base_term,
            "baseIndex": f.newer.base_index,
            "lastLogIndex": last.map(|l| l.index),
            "lastLogTerm": last.map(|l| l.leader_id.term),
            "fencedAtMs": f.learned_at_ms,
            "count": n,
            "entries": entries,
        }))?;
        let mut targets: Vec<String> = Vec::new();
        if !f.from_addr.is_empty() {
            targets.push(f.from_addr.clone());
        }
        let m = self.raft().metrics().borrow().clone();
        for (id, info) in m.membership_config.membership().nodes() {
            if *id != self.id && !targets.contains(&info.raft_addr) {
                targets.push(info.raft_addr.clone());
            }
        }
        let mut last_err = String::from("no promoted-side node known");
        for addr in targets {
            match self.recovery_rpc(&addr, "divergence", payload.clone(), Duration::from_secs(15)).await {
                Ok(_) => {
                    self.epoch.mark_divergence_reported().map_err(RecoveryError::failed)?;
                    tracing::warn!(divergent = n, to = %addr, "divergent writes recorded in the promoted side's audit log");
                    return Ok(n);
                }
                Err(e) => last_err = e.to_string(),
            }
        }
        Err(RecoveryError::Failed(last_err))
    }

    /// `admin reseed` on a fenced node: record its divergent writes, wipe
    /// its Raft state, join the surviving cluster as a fresh learner, and
    /// become a voter if the topology rule allows it now.
    pub async fn reseed(
        self: &Arc<Self>,
        actor: &str,
        seeds: Vec<String>,
        confirm: bool,
    ) -> Result<Value, RecoveryError> {
        let _g = self.recovery_lock.lock().await;
        let Some(f) = self.epoch.fence() else {
            return Err(RecoveryError::Refused(format!(
                "node {} is not fenced; re-seeding a live member would throw its data away (only fenced nodes of a lost primary are re-seeded)",
                self.id
            )));
        };
        if !confirm {
            return Err(RecoveryError::Refused(
                "re-seeding wipes this node's control-plane state; confirm with --yes (\"confirm\": true)".into(),
            ));
        }
        if !f.divergence_reported {
            let n = self.report_divergence().await.map_err(|e| {
                RecoveryError::Refused(format!(
                    "this node's divergent writes could not be recorded in the promoted side's audit log ({e}); they would be lost without a record, so the re-seed is refused until the promoted side is reachable"
                ))
            })?;
            tracing::warn!(divergent = n, "divergence recorded before the wipe");
        }
        let explicit: Vec<String> = seeds.into_iter().filter(|s| !s.is_empty()).collect();
        // Without --join: the node that fenced us, then every member our
        // (old) membership knows; the promoted side's nodes are among them.
        let mut seeds = explicit.clone();
        if seeds.is_empty() {
            if !f.from_addr.is_empty() {
                seeds.push(f.from_addr.clone());
            }
            let m = self.raft().metrics().borrow().clone();
            for (id, n) in m.membership_config.membership().nodes() {
                if *id != self.id && !seeds.contains(&n.raft_addr) {
                    seeds.push(n.raft_addr.clone());
                }
            }
        }
        if seeds.is_empty() {
            return Err(RecoveryError::Refused(
                "no seed known: pass --join <raft address of a promoted-side node>".into(),
            ));
        }
        // The epoch to adopt, and the leader to join through, from the
        // promoted side itself (a blank node cannot resolve leader hints):
        // the unfenced seed in the newest epoch.
        let mut best: Option<NodeReport> = None;
        let mut tried = Vec::new();
        for s in &seeds {
            match self.recovery_rpc(s, "info", Vec::new(), Duration::from_secs(3)).await {
                Ok(b) => match serde_json::from_slice::<NodeReport>(&b) {
                    Ok(r) if r.fenced => tried.push(format!("{s}: fenced")),
                    Ok(r) if r.epoch.epoch < f.newer.epoch => tried.push(format!("{s}: epoch {}", r.epoch.epoch)),
                    Ok(r) => {
                        if best.as_ref().is_none_or(|b| r.epoch.epoch > b.epoch.epoch) {
                            best = Some(r);
                        }
                    }
                    Err(e) => tried.push(format!("{s}: {e}")),
                },
                Err(e) => tried.push(e.to_string()),
            }
        }
        let record = best.as_ref().map(|r| r.epoch.clone());
        if let Some(l) = best.and_then(|r| r.leader_addr) {
            seeds.retain(|s| *s != l);
            seeds.insert(0, l);
        }
        let record = record.ok_or_else(|| {
            RecoveryError::Refused(format!(
                "no node of the promoted side (epoch {} or newer, not fenced) answers: {}",
                f.newer.epoch,
                tried.join("; ")
            ))
        })?;
        let before = self.local_report();
        tracing::warn!(by = actor, epoch = record.epoch, "RE-SEED: wiping this node's Raft state");
        let _ = self.raft().shutdown().await;
        self.log.wipe_all().map_err(RecoveryError::failed)?;
        self.epoch.reset_after_reseed(record.clone()).map_err(RecoveryError::failed)?;
        self.restart_raft().await?;
        crate::join_cluster(self, &seeds, self.me.clone(), false, Duration::from_secs(120))
            .await
            .map_err(|e| RecoveryError::Failed(format!("wiped, but joining as a learner failed: {e}; retry reseed")))?;
        // Caught up (the leader's add_learner waits for it); now a voter if
        // the primary-majority rule allows it (one short attempt: while the
        // promoted region holds the majority the rule refuses every
        // old-primary node after the first, and `admin rebalance` makes
        // them voters).
        let voter = match crate::join_cluster(self, &seeds, self.me.clone(), true, Duration::from_secs(3)).await {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(reason = %e, "re-seeded node stays a learner (see admin rebalance)");
                false
            }
        };
        let detail = json!({
            "node": self.id, "region": self.region, "voter": voter, "seeds": seeds,
            "wiped": {"lastLogIndex": before.last_log_index, "lastLogTerm": before.last_log_term,
                      "appliedIndex": before.applied_index, "epoch": before.epoch.epoch},
        });
        let req = self.request(
            actor,
            Command::Audit { action: "reseed".into(), epoch: record.epoch, rpo: None, detail: detail.clone() },
        );
        let audit = self.write_retrying(req, Duration::from_secs(30)).await.map(|o| o.index).ok();
        Ok(json!({"reseeded": self.id, "epoch": record.epoch, "voter": voter, "auditIndex": audit, "detail": detail}))
    }

    /// `admin rebalance --primary <region>`: make `primary`'s members
    /// voters so that it holds the voter majority, record the topology,
    /// and move the leadership there. Runs on (or is sent to) the leader.
    pub async fn rebalance(&self, primary: &str, actor: &str) -> Result<Value, RecoveryError> {
        let m = self.raft().metrics().borrow().clone();
        if m.state != ServerState::Leader {
            let leader = m
                .current_leader
                .ok_or_else(|| RecoveryError::Refused("no leader: the control plane is read-only".into()))?;
            let addr = m
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.raft_addr.clone())
                .ok_or_else(|| RecoveryError::Failed("leader not in the membership".into()))?;
            let b = self
                .recovery_rpc(
                    &addr,
                    "rebalance",
                    encode(&json!({"primary": primary, "actor": actor}))?,
                    Duration::from_secs(200),
                )
                .await?;
            return decode(&b);
        }
        let _g = self.recovery_lock.lock().await;
        let topo =
            self.state.read(|s| s.topology.clone()).ok_or_else(|| RecoveryError::Refused("no topology".into()))?;
        let other = if topo.primary == primary { topo.secondary.clone() } else { Some(topo.primary.clone()) };
        if topo.primary != primary && topo.secondary.as_deref() != Some(primary) {
            return Err(RecoveryError::Refused(format!("{primary} is not a region of this cluster")));
        }
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let targets: Vec<NodeId> = membership.nodes().filter(|(_, n)| n.region == primary).map(|(id, _)| *id).collect();
        let mut new_voters = voters.clone();
        new_voters.extend(targets.iter().copied());
        let regions: Vec<&str> =
            new_voters.iter().filter_map(|id| membership.get_node(id).map(|n| n.region.as_str())).collect();
        if !primary_holds_majority(&regions, primary) {
            return Err(RecoveryError::Refused(format!(
                "{primary} would hold {} of {} voters, not a majority: re-seed more of its nodes first",
                targets.len(),
                new_voters.len()
            )));
        }
        let last = m.last_log_index.unwrap_or(0);
        for id in &targets {
            let matched =
                m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index).unwrap_or(0);
            if !voters.contains(id) && last.saturating_sub(matched) > 100 {
                return Err(RecoveryError::Refused(format!("node {id} is still catching up ({matched} of {last})")));
            }
        }
        let added: BTreeSet<NodeId> = targets.iter().copied().filter(|id| !voters.contains(id)).collect();
        if !added.is_empty() {
            self.raft()
                .change_membership(ChangeMembers::AddVoterIds(added.clone()), true)
                .await
                .map_err(RecoveryError::failed)?;
        }
        let epoch = self.epoch.epoch();
        let detail = json!({"addedVoters": added, "voters": new_voters, "epoch": epoch});
        let req = self.request(
            actor,
            Command::Rebalanced { primary: primary.to_string(), secondary: other.clone(), detail: detail.clone() },
        );
        let out = self.write(req, Duration::from_secs(10)).await.map_err(RecoveryError::failed)?;
        // Leadership: openraft 0.9 has no leadership transfer, a leader
        // lease makes followers ignore candidates while the leader lives,
        // and a leader kept as a learner goes on leading. So the members
        // outside the new primary leave the membership for a moment (the
        // leader steps down once that is committed), the new primary's
        // voters elect one of their own, and the new leader takes the others
        // back (learner, caught up, voter). Writes pause for about one
        // election; the data plane never notices.
        let mut leader_region = self.region.clone();
        if self.region != primary {
            let outside: BTreeSet<NodeId> = new_voters
                .iter()
                .copied()
                .filter(|id| membership.get_node(id).is_some_and(|n| n.region != primary))
                .collect();
            self.raft()
                .change_membership(ChangeMembers::RemoveVoters(outside.clone()), false)
                .await
                .map_err(RecoveryError::failed)?;
            let deadline = Instant::now() + Duration::from_secs(60);
            let target_nodes: Vec<NodeInfo> =
                targets.iter().filter_map(|id| membership.get_node(id).cloned()).collect();
            let new_leader = 'found: loop {
                for n in &target_nodes {
                    if let Ok(b) = self.recovery_rpc(&n.raft_addr, "info", Vec::new(), Duration::from_secs(2)).await {
                        if let Ok(r) = serde_json::from_slice::<NodeReport>(&b) {
                            if r.raft_role == "Leader" {
                                break 'found Some(r.info);
                            }
                        }
                    }
                }
                if Instant::now() >= deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let Some(leader_info) = new_leader else {
                return Err(RecoveryError::Failed(format!(
                    "nodes {outside:?} left the membership but no leader of {primary} was seen within 60 s: add them back with a join once one is (or re-run rebalance)"
                )));
            };
            leader_region = leader_info.region.clone();
            for id in &outside {
                let Some(info) = membership.get_node(id).cloned() else { continue };
                if let Err(e) = self.readd_voter(&leader_info.raft_addr, *id, info).await {
                    tracing::error!(node = id, error = %e, "could not make the node a voter again; re-run rebalance");
                }
            }
        }
        let m = self.raft().metrics().borrow().clone();
        Ok(json!({
            "primary": primary, "secondary": other, "addedVoters": added,
            "voters": m.membership_config.membership().voter_ids().collect::<Vec<_>>(),
            "leader": m.current_leader, "leaderRegion": leader_region, "auditIndex": out.index,
        }))
    }
}

impl ControlPlane {
    /// Asks the leader at `leader_addr` to make member `id` a voter again.
    async fn readd_voter(&self, leader_addr: &str, id: NodeId, info: NodeInfo) -> Result<(), RecoveryError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            let mut client = self.channels.admin_client(leader_addr).map_err(RecoveryError::failed)?;
            let mut req = tonic::Request::new(attest_proto::JoinRequest {
                node_id: id,
                region: info.region.clone(),
                raft_addr: info.raft_addr.clone(),
                api_addr: info.api_addr.clone(),
                voter: true,
                epoch: self.epoch.epoch(),
                has_state: true,
            });
            req.set_timeout(Duration::from_secs(20));
            match client.join(req).await {
                Ok(r) if r.get_ref().error_code.is_empty() => return Ok(()),
                Ok(r) => last = format!("{}: {}", r.get_ref().error_code, r.get_ref().error_message),
                Err(s) => last = s.message().to_string(),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Err(RecoveryError::Failed(last))
    }
}

/// The survivor with the greatest last log id, and that log id.
fn choose_source(reports: &[NodeReport]) -> (Option<NodeId>, u64, u64) {
    reports
        .iter()
        .max_by_key(|r| (r.last_log_term, r.last_log_index, std::cmp::Reverse(r.node_id)))
        .map(|r| (Some(r.node_id), r.last_log_term, r.last_log_index))
        .unwrap_or((None, 0, 0))
}

/// How long a restarting node asks its peers for their epoch before it
/// starts Raft (see [`check_epoch_before_start`]).
pub const START_EPOCH_CHECK: Duration = Duration::from_secs(2);

/// The gRPC addresses of every other member this node's storage knows:
/// the applied membership and any membership entry in the log after it.
pub fn known_peers(log: &LogStore, sm: &StateMachineStore, me: NodeId) -> Vec<String> {
    let mut addrs = BTreeSet::new();
    for (id, n) in sm.stored_membership().membership().nodes() {
        if *id != me {
            addrs.insert(n.raft_addr.clone());
        }
    }
    // The stored membership may predate the log's purge point (it comes
    // with the snapshot): scan what the log still holds after both.
    let from = sm.stored_membership().log_id().map(|l| l.index + 1).unwrap_or(0);
    let from = from.max(log.last_purged_index().map_or(0, |i| i + 1));
    if let Ok(tail) = log.membership_entries_from(from) {
        for e in tail {
            if let EntryPayload::Membership(m) = &e.payload {
                for (id, n) in m.nodes() {
                    if *id != me {
                        addrs.insert(n.raft_addr.clone());
                    }
                }
            }
        }
    }
    addrs.into_iter().collect()
}

/// Before Raft starts on a node that holds state: asks every member its
/// storage knows for its epoch. A node of a lost primary that comes back
/// while the promoted side is reachable learns here that it was
/// superseded — before its Raft runs (a former leader would otherwise be
/// restored as leader from its vote) and before its API answers a single
/// call: fenced at first contact. Peers that do not answer within `within`
/// are skipped; with nobody reachable, the RPC gate fences the node at its
/// first later contact instead. Returns true if the node is fenced.
pub async fn check_epoch_before_start(
    channels: &crate::network::Channels,
    epoch: &crate::epoch::EpochState,
    peers: Vec<String>,
    within: Duration,
) -> bool {
    if epoch.is_fenced() {
        return true;
    }
    let mut probes = tokio::task::JoinSet::new();
    for addr in peers {
        let channels = channels.clone();
        probes.spawn(async move {
            let report = async {
                let mut client = channels.admin_client(&addr).ok()?;
                let mut req =
                    tonic::Request::new(attest_proto::RecoveryRequest { phase: "info".into(), payload: Vec::new() });
                req.set_timeout(within);
                let r = client.recovery(req).await.ok()?.into_inner();
                if !r.error.is_empty() {
                    return None;
                }
                serde_json::from_slice::<NodeReport>(&r.payload).ok()
            }
            .await;
            (addr, report)
        });
    }
    let mine = epoch.epoch();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, probes.join_next()).await {
        let Ok((addr, Some(report))) = joined else { continue };
        if report.fenced || report.epoch.epoch <= mine {
            continue;
        }
        match epoch.learn_fence(report.epoch.clone(), &addr) {
            Ok(true) => {
                metrics::counter!("attest_node_fenced_total").increment(1);
                tracing::error!(
                    peer_addr = %addr,
                    newer_epoch = report.epoch.epoch,
                    promoted_region = %report.epoch.region,
                    "FENCED at start: a peer is in a newer configuration epoch; this node runs no Raft and serves nothing until it is re-seeded (attestd admin reseed)"
                );
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "could not persist the fence record"),
        }
        return true;
    }
    false
}

/// Stops Raft whenever the node becomes fenced: a superseded node takes
/// part in no consensus at all (a former leader would otherwise still call
/// itself leader). `admin reseed` starts Raft again on wiped storage.
pub async fn fence_watcher(control: Arc<ControlPlane>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut fenced = control.epoch.watch_fenced();
    loop {
        if control.epoch.is_fenced() {
            let _g = control.recovery_lock.lock().await;
            if control.epoch.is_fenced() && control.raft().metrics().borrow().state != ServerState::Shutdown {
                tracing::warn!("fenced: stopping Raft on this node");
                let _ = control.raft().shutdown().await;
            }
        }
        tokio::select! {
            r = fenced.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// Runs on every node: once fenced, reports the divergent writes to the
/// promoted side (retrying while it is unreachable) until recorded.
pub async fn divergence_reporter(control: Arc<ControlPlane>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut fenced = control.epoch.watch_fenced();
    loop {
        let pending = control.epoch.fence().is_some_and(|f| !f.divergence_reported);
        if pending {
            match control.report_divergence().await {
                Ok(_) => continue,
                Err(e) => tracing::warn!(error = %e, "divergent writes not yet recorded; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.changed() => return,
            }
        } else {
            tokio::select! {
                r = fenced.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Used by the replication controller: a leader whose local epoch record
/// is newer than the applied state writes the `Promoted` entry itself (the
/// coordinator of the promotion may have died right after the commit).
pub fn pending_promotion(control: &ControlPlane) -> Option<Command> {
    let rec = control.epoch.record();
    let applied = control.state.read(|s| s.epoch.max(1));
    // Give the coordinator 30 s to write its own, fuller report first.
    if rec.epoch <= applied || rec.region.is_empty() || now_ms() < rec.promoted_at_ms.saturating_add(30_000) {
        return None;
    }
    let lost = control.state.read(|s| s.topology.as_ref().map(|t| t.primary.clone())).filter(|p| *p != rec.region);
    Some(Command::Promoted {
        epoch: rec.epoch,
        primary: rec.region.clone(),
        secondary: lost,
        base_term: rec.base_term,
        base_index: rec.base_index,
        rpo: "recorded by the new leader: the promotion's coordinator did not write its report".into(),
        detail: json!({"members": rec.members, "by": rec.by, "promotedAtMs": rec.promoted_at_ms}),
    })
}

impl From<RecoveryError> for WriteError {
    fn from(e: RecoveryError) -> Self {
        match e {
            RecoveryError::Refused(m) => WriteError::Rejected(m),
            RecoveryError::Failed(m) => WriteError::Internal(m),
        }
    }
}
