//! The replication-mode controller (after TiKV's DR Auto-Sync).
//!
//! Runs on every node and acts only while the node leads:
//! - `sync` and no secondary-region node answered for `async_after`
//!   → records `async` in the log (a replicated, audited event) so that
//!   waiting writes are acknowledged on plain quorum;
//! - `async` and a secondary node answers again → `sync-recover`;
//! - `sync-recover` and a secondary node has every entry up to the
//!   `sync-recover` record on disk → `sync`.
//!
//! It also writes the region topology once, at bootstrap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;

use crate::command::{Command, ReplicationMode};
use crate::control::{secondary_members, ControlPlane};
use crate::network::PeerContacts;

pub struct ModeController {
    pub control: Arc<ControlPlane>,
    pub contacts: Arc<PeerContacts>,
    pub primary_region: String,
    pub secondary_region: Option<String>,
}

impl ModeController {
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let tick = Duration::from_millis(self.control.timing.heartbeat_ms.max(10));
        let async_after = Duration::from_millis(self.control.timing.async_after_ms);
        let mut leading_since: Option<(u64, Instant)> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => return,
            }
            let m = self.control.raft().metrics().borrow().clone();
            metrics::gauge!("attest_raft_term").set(m.current_term as f64);
            metrics::gauge!("attest_raft_is_leader").set(if m.state == ServerState::Leader { 1.0 } else { 0.0 });
            if m.state != ServerState::Leader || self.control.epoch.is_fenced() || self.control.handoff.draining() {
                leading_since = None;
                continue;
            }
            let since = match leading_since {
                Some((term, at)) if term == m.current_term => at,
                _ => {
                    let now = Instant::now();
                    leading_since = Some((m.current_term, now));
                    now
                }
            };
            // A forced promotion whose report the coordinator did not write.
            if let Some(cmd) = crate::recovery::pending_promotion(&self.control) {
                let epoch = self.control.epoch.epoch();
                let mut req = self.control.request("promotion-recorder", cmd);
                req.request_id = format!("promote-epoch-{epoch}");
                let deadline =
                    tokio::time::Instant::now() + Duration::from_millis(self.control.timing.write_timeout_ms);
                if let Err(e) = self.control.leader_write(req, deadline).await {
                    tracing::warn!(error = %e, "recording the promotion failed; will retry");
                }
                continue;
            }
            let (topology, repl) = self.control.state.read(|s| (s.topology.clone(), s.replication.clone()));
            if topology.is_none() {
                self.propose(Command::SetTopology {
                    primary: self.primary_region.clone(),
                    secondary: self.secondary_region.clone(),
                })
                .await;
                continue;
            }
            let Some(secondary) = topology.and_then(|t| t.secondary) else { continue };
            let members = secondary_members(&m, &secondary);
            if members.is_empty() || self.control.region == secondary {
                continue;
            }
            // Contact older than our leadership does not count: a new leader
            // gives the secondary a full window before degrading.
            let last_contact = members.iter().filter_map(|id| self.contacts.last(*id)).max().map(|c| c.max(since));
            let silent_for = last_contact.unwrap_or(since).elapsed();
            let reachable_now = silent_for < tick * 3;
            let matched_max = members
                .iter()
                .filter_map(|id| m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()))
                .map(|l| l.index)
                .max()
                .unwrap_or(0);
            let next = match repl.mode {
                ReplicationMode::Sync if silent_for >= async_after => Some((
                    ReplicationMode::Async,
                    format!("secondary region {secondary} unreachable for {} ms", silent_for.as_millis()),
                )),
                ReplicationMode::Async if reachable_now => Some((
                    ReplicationMode::SyncRecover,
                    format!("secondary region {secondary} reachable again; catching up"),
                )),
                ReplicationMode::SyncRecover if silent_for >= async_after => {
                    Some((ReplicationMode::Async, format!("secondary region {secondary} lost again while recovering")))
                }
                ReplicationMode::SyncRecover if matched_max >= repl.since_index && reachable_now => Some((
                    ReplicationMode::Sync,
                    format!("secondary region {secondary} caught up to index {matched_max}"),
                )),
                _ => None,
            };
            if let Some((mode, reason)) = next {
                tracing::warn!(from = repl.mode.as_str(), to = mode.as_str(), %reason, "replication mode change");
                metrics::counter!("attest_replication_mode_changes_total", "to" => mode.as_str()).increment(1);
                self.propose(Command::SetReplicationMode { mode, reason }).await;
            }
            let mode_now = self.control.state.read(|s| s.replication.mode);
            for (name, v) in [
                ("sync", ReplicationMode::Sync),
                ("async", ReplicationMode::Async),
                ("sync-recover", ReplicationMode::SyncRecover),
            ] {
                metrics::gauge!("attest_replication_mode", "mode" => name).set(if mode_now == v { 1.0 } else { 0.0 });
            }
        }
    }

    async fn propose(&self, command: Command) {
        let req = self.control.request("replication-controller", command);
        let t = &self.control.timing;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(t.write_timeout_ms.min(t.async_after_ms));
        // Mode changes are themselves exempt from the sync wait: they are
        // what ends it. `leader_write` returns after commit when the mode
        // is no longer `sync`, and a switch *to* sync is acknowledged once a
        // secondary node has it, which is exactly when it holds.
        if let Err(e) = self.control.leader_write(req, deadline).await {
            tracing::warn!(error = %e, "control-plane self-write failed");
        }
    }
}
