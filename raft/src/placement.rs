//! Leader placement: in normal operation the leader is in the primary
//! region (brief §4), so that a write needs no WAN round trip to commit.
//!
//! A secondary node can still win an election: after a primary outage its
//! nodes have campaigned (and raised their terms) while the primary was
//! away, and the returning primary nodes, which know of no leader, vote for
//! them. openraft 0.9 has no leadership transfer, and followers ignore
//! candidates while their leader lease runs, so a secondary leader hands
//! leadership back like this (each step bounded):
//!
//! 1. the placement conditions hold for `leader_return_ms`: this node leads,
//!    it is outside the topology's primary region, no recovery step runs,
//!    and enough primary voters to form a quorum are reachable (recent
//!    contact) and replicating (they have matched some of its log);
//! 2. it stops taking writes (they wait and go to the next leader), waits
//!    for its in-flight writes to finish and then for a quorum of primary
//!    voters to hold every entry of its log. (Only now: under a steady
//!    write load some entry is nearly always in flight across the WAN, so
//!    "every primary voter is caught up" rarely holds at a given instant
//!    and never for `leader_return_ms` in a row.)
//! 3. it tells every member that a handoff runs (`handoff-notice`, two
//!    leases long): meanwhile followers do not answer writes with
//!    `ControlPlaneReadOnly` for want of leader contact, they wait for the
//!    next leader — and if this node dies mid-handoff, their read-only
//!    answers still come within two election timeouts of its last word;
//! 4. it stops sending AppendEntries / snapshots — to Raft this is the
//!    leader being partitioned away, which Raft is safe against — until the
//!    followers' leader leases have run out;
//! 5. it asks the most caught-up primary voter to campaign (`campaign`);
//!    that node has the longest log among a quorum, wins, and its first
//!    heartbeat makes this node a follower.
//!
//! Writes pause for about one leader lease (the maximum election timeout);
//! the data plane never notices. If no primary leader emerges in time the
//! old leader resumes and tries again after a back-off. `leader_return_ms
//! = 0` turns the mechanism off (then `admin rebalance` moves leadership
//! on demand).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::ServerState;
use serde_json::json;

use crate::control::ControlPlane;
use crate::network::PeerContacts;
use crate::types::NodeId;

/// Shared by the control plane (write gate, follower notice) and the Raft
/// network (the replication pause).
#[derive(Default)]
pub struct Handoff {
    /// Set on the handing-off leader: new writes wait for the next leader.
    draining: AtomicBool,
    /// Until then, the leader sends no AppendEntries / snapshots.
    pause_until: Mutex<Option<Instant>>,
    /// On followers: a leader announced a handoff that ends by then.
    notice_until: Mutex<Option<Instant>>,
    /// Writes this node is proposing as leader.
    inflight: AtomicUsize,
}

/// Counts one leader write while it lives.
pub struct InflightGuard<'a>(&'a Handoff);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn active(slot: &Mutex<Option<Instant>>) -> bool {
    slot.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| Instant::now() < t)
}

fn set(slot: &Mutex<Option<Instant>>, until: Option<Instant>) {
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = until;
}

impl Handoff {
    /// True while this leader hands its leadership over.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// True while replication from this node is paused.
    pub fn paused(&self) -> bool {
        active(&self.pause_until)
    }

    /// True while a handoff announced by the leader may still be running.
    pub fn noticed(&self) -> bool {
        active(&self.notice_until)
    }

    pub fn notice(&self, for_ms: u64) {
        set(&self.notice_until, Some(Instant::now() + Duration::from_millis(for_ms.min(60_000))));
    }

    /// Registers a leader write; `None` when the leader is handing off.
    pub fn begin_write(&self) -> Option<InflightGuard<'_>> {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        let guard = InflightGuard(self);
        (!self.draining()).then_some(guard)
    }

    fn end(&self) {
        self.draining.store(false, Ordering::SeqCst);
        set(&self.pause_until, None);
    }
}

/// Whether a handoff target must already hold this leader's whole log.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CaughtUp {
    /// Replicating at all is enough (the settle period, while writes flow).
    NotRequired,
    /// Every entry (after draining, when the log no longer grows).
    Required,
}

/// The primary voter to hand leadership to, when this node should hand it
/// over: it leads from outside the topology's primary region, takes writes,
/// and enough primary voters for a quorum are reachable and replicating —
/// or, with [`CaughtUp::Required`], hold its whole log (the most caught-up
/// of them is chosen). Runs every tick on every node, so the cheap checks
/// come before the metrics are read.
fn handoff_target(
    control: &ControlPlane,
    contacts: &PeerContacts,
    fresh: Duration,
    caught_up: CaughtUp,
) -> Option<NodeId> {
    let primary = control.state.read(|s| s.topology.as_ref().map(|t| t.primary.clone()))?;
    if control.region == primary || control.refusal().is_some() {
        return None;
    }
    let mut rx = control.raft().metrics();
    let m = rx.borrow_and_update();
    if m.state != ServerState::Leader {
        return None;
    }
    let membership = m.membership_config.membership();
    let quorum = membership.voter_ids().count() / 2 + 1;
    let last = m.last_log_index.unwrap_or(0);
    let ready: Vec<(u64, NodeId)> = membership
        .voter_ids()
        .filter(|id| membership.get_node(id).is_some_and(|n| n.region == primary))
        .filter(|id| contacts.last(*id).is_some_and(|t| t.elapsed() < fresh))
        .filter_map(|id| {
            let matched = m.replication.as_ref()?.get(&id).cloned().flatten()?.index;
            (caught_up == CaughtUp::NotRequired || matched >= last).then_some((matched, id))
        })
        .collect();
    if ready.len() < quorum {
        return None;
    }
    ready.into_iter().max().map(|(_, id)| id)
}

pub struct Placement {
    pub control: Arc<ControlPlane>,
    pub contacts: Arc<PeerContacts>,
}

impl Placement {
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let t = self.control.timing.clone();
        if t.leader_return_ms == 0 {
            return;
        }
        let tick = Duration::from_millis(t.heartbeat_ms.clamp(20, 500));
        let settle = Duration::from_millis(t.leader_return_ms);
        let fresh = Duration::from_millis(t.heartbeat_ms.max(10) * 5);
        let mut since: Option<Instant> = None;
        let mut not_before = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => return,
            }
            let Some(target) = handoff_target(&self.control, &self.contacts, fresh, CaughtUp::NotRequired) else {
                since = None;
                continue;
            };
            let at = *since.get_or_insert_with(Instant::now);
            if at.elapsed() < settle || Instant::now() < not_before {
                continue;
            }
            // Recovery steps move membership and leadership themselves.
            let Ok(_recovery) = self.control.recovery_lock.try_lock() else { continue };
            let started = Instant::now();
            let result = self.hand_off(fresh).await;
            self.control.handoff.end();
            since = None;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(_) => "failed",
            };
            metrics::counter!("attest_raft_leader_handoffs_total", "result" => outcome).increment(1);
            match result {
                Ok(to) => tracing::info!(
                    to,
                    took_ms = started.elapsed().as_millis() as u64,
                    "leadership handed back to the primary region"
                ),
                Err(e) => {
                    not_before = Instant::now() + Duration::from_secs(30);
                    tracing::warn!(candidate = target, error = %e, "leadership handoff to the primary region failed; retrying in 30 s");
                }
            }
        }
    }

    /// Hands leadership to the most caught-up primary voter; returns it.
    async fn hand_off(&self, fresh: Duration) -> Result<NodeId, String> {
        let c = &self.control;
        let t = &c.timing;
        let lease = Duration::from_millis(t.election_timeout_max_ms);
        let beat = Duration::from_millis(t.heartbeat_ms.max(10));
        tracing::info!(
            term = c.raft().metrics().borrow().current_term,
            "leader outside the primary region: handing leadership back (writes pause for about {} ms)",
            lease.as_millis()
        );
        c.handoff.draining.store(true, Ordering::SeqCst);
        // This leader is in the secondary region, so its writes are durable
        // there once committed: in-flight ones finish within a commit.
        let drain_deadline = Instant::now() + lease;
        while c.handoff.inflight.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= drain_deadline {
                return Err("in-flight writes did not finish within one lease".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The log no longer grows: a quorum of primary voters catches up
        // within a replication round trip (bounded by one lease).
        let catch_up_deadline = Instant::now() + lease;
        let target = loop {
            if let Some(t) = handoff_target(c, &self.contacts, fresh, CaughtUp::Required) {
                break t;
            }
            if Instant::now() >= catch_up_deadline {
                return Err(format!(
                    "no quorum of primary voters held the whole log within {} ms of draining",
                    lease.as_millis()
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let m = c.raft().metrics().borrow().clone();
        let members: Vec<(NodeId, String)> = m
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != c.id)
            .map(|(id, n)| (*id, n.raft_addr.clone()))
            .collect();
        let target_addr = members
            .iter()
            .find(|(id, _)| *id == target)
            .map(|(_, a)| a.clone())
            .ok_or_else(|| format!("node {target} is not a member"))?;
        tracing::info!(to = target, term = m.current_term, "primary voters caught up; handing over");
        // Pause (one lease) + election fit in two leases: followers hold
        // back read-only answers no longer than the read-only bound
        // (2 × the election timeout), even if this node dies now.
        let notice = serde_json::to_vec(&json!({"forMs": (lease * 2).as_millis() as u64, "leader": c.id}))
            .map_err(|e| e.to_string())?;
        let notices = members.iter().map(|(_, addr)| c.recovery_rpc(addr, "handoff-notice", notice.clone(), beat * 5));
        let _ = futures::future::join_all(notices).await;
        let term = m.current_term;
        set(&c.handoff.pause_until, Some(Instant::now() + lease * 2 + beat * 4));
        // Followers grant votes only once their lease on us has run out.
        tokio::time::sleep(lease + beat * 2).await;
        c.recovery_rpc(&target_addr, "campaign", Vec::new(), lease)
            .await
            .map_err(|e| format!("asking node {target} to campaign: {e}"))?;
        let deadline = Instant::now() + lease * 2;
        let mut rx = c.raft().metrics();
        loop {
            let m = rx.borrow_and_update().clone();
            if m.state != ServerState::Leader || m.current_term > term {
                return Ok(target);
            }
            if Instant::now() >= deadline {
                return Err(format!("node {target} did not take over within {} ms", (lease * 2).as_millis()));
            }
            let _ = tokio::time::timeout(beat, rx.changed()).await;
        }
    }
}
