//! Turns a drill's history, the nodes' final state and the regions' JWKS
//! into the verdict of every check (the table at the top of a drill
//! report) and the measurements (RTO, recovery, mode changes).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::durability::{check_durability, DurabilityOptions, NodeSnapshot};
use super::failover::{self, Measurements, ReadOnlyOptions};
use super::linearizability::{check_linearizability, CheckOptions, OpKind, Operation, Outcome};
use super::tokens::{check_tokens, IssuedToken};
use crate::history::{Expectation, Op, OpResult, OpType, Parts};
use crate::workload::VectorSet;

/// Verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Not applicable to this scenario (said why in the summary).
    Skipped,
}

impl Status {
    fn of(ok: bool) -> Self {
        if ok {
            Status::Pass
        } else {
            Status::Fail
        }
    }
}

/// One row of the report's verdict table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Stable identifier (`durability`, `linearizability`, …).
    pub id: String,
    /// What it establishes, in one line.
    pub title: String,
    pub status: Status,
    /// Human-readable result, possibly several lines.
    pub summary: String,
    /// The checker's full report.
    pub details: Value,
}

/// What the scenario asks of the checks beyond the history's windows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckOptionsSet {
    pub read_only: ReadOnlyOptions,
    /// Minimum success ratio of any one-second bucket outside disruption windows.
    pub availability_outside_disruption: f64,
    /// Longest acceptable time from a heal to the first acknowledged write.
    pub max_control_plane_recovery: Duration,
    /// Replication modes the leader must go through, in order (a
    /// subsequence of what it reported), e.g. `sync, async, sync-recover, sync`.
    pub expected_modes: Vec<String>,
    /// The mode the run must end in (`sync`), if any.
    pub final_mode: Option<String>,
    /// Longest acceptable data-plane RTO of any disruption.
    pub max_rto: Duration,
    pub linearizability: CheckOptions,
    /// Issuer every token must carry (else: any, but one).
    pub expected_issuer: Option<String>,
    /// Time a failover may take before `ServedBy` windows are judged.
    pub routing_grace: Duration,
}

impl Default for CheckOptionsSet {
    fn default() -> Self {
        Self {
            read_only: ReadOnlyOptions::default(),
            availability_outside_disruption: 1.0,
            max_control_plane_recovery: Duration::from_secs(30),
            expected_modes: Vec::new(),
            final_mode: Some("sync".into()),
            max_rto: Duration::from_secs(10),
            linearizability: CheckOptions { time_limit: Some(Duration::from_secs(60)), ..CheckOptions::default() },
            expected_issuer: None,
            routing_grace: Duration::from_secs(4),
        }
    }
}

/// Everything gathered after the run.
pub struct Evidence<'a> {
    pub parts: &'a Parts,
    /// Every node's final values after heal; `Err` when they could not be read or did not converge.
    pub final_state: Result<Vec<NodeSnapshot>, String>,
    pub jwks_by_region: BTreeMap<String, Value>,
    pub vectors: &'a VectorSet,
    pub now_unix: i64,
}

/// The register operations the linearizability checker judges: policy
/// writes and linearizable reads (provider creations are written once and
/// never read back as registers, the durability check covers them).
pub fn register_history(ops: &[Op]) -> Vec<Operation> {
    ops.iter()
        .filter(|o| o.key.as_deref().is_some_and(|k| !k.starts_with("provider:")))
        .filter_map(|o| {
            let key = o.key.clone()?;
            let (kind, outcome) = match (o.kind, o.result) {
                (OpType::Write, r) => (
                    OpKind::Write { value: o.value.clone()? },
                    match r {
                        OpResult::Ok => Outcome::Ok,
                        OpResult::Failed => Outcome::Failed,
                        OpResult::Unknown => Outcome::Unknown,
                    },
                ),
                (OpType::Read, OpResult::Ok) => (OpKind::Read { value: o.value.clone() }, Outcome::Ok),
                _ => return None,
            };
            Some(Operation {
                id: o.id,
                process: format!("{}→{}", o.client, o.target),
                key,
                kind,
                invoke_ns: o.start_ns,
                complete_ns: (outcome != Outcome::Unknown).then_some(o.end_ns.max(o.start_ns)),
                outcome,
            })
        })
        .collect()
}

/// Runs every check.
pub fn evaluate(ev: &Evidence<'_>, opts: &CheckOptionsSet) -> (Vec<Check>, Measurements) {
    let p = ev.parts;
    let mut checks = Vec::new();

    // (0) The drill did what it claims: every fault action succeeded.
    let failed_faults: Vec<String> = p
        .faults
        .iter()
        .filter_map(|f| f.error.as_ref().map(|e| format!("{} at {:.1}s: {e}", f.label, f.at_ns as f64 / 1e9)))
        .collect();
    checks.push(Check {
        id: "faults".into(),
        title: "every fault and operator action was carried out".into(),
        status: Status::of(failed_faults.is_empty()),
        summary: if failed_faults.is_empty() {
            format!("{} actions carried out", p.faults.len())
        } else {
            format!("{} actions failed:\n  - {}", failed_faults.len(), failed_faults.join("\n  - "))
        },
        details: json!({"actions": p.faults.len(), "failed": failed_faults}),
    });

    // (1) Nothing acknowledged is lost; every node converged after heal.
    let writes = failover::write_records(&p.ops, |_| true);
    checks.push(match &ev.final_state {
        Ok(snaps) => {
            let r = check_durability(&writes, snaps, &DurabilityOptions::default());
            Check {
                id: "durability".into(),
                title: "every acknowledged write is present on every node after heal".into(),
                status: Status::of(r.ok && !snaps.is_empty()),
                summary: r.summary(),
                details: serde_json::to_value(&r).unwrap_or(Value::Null),
            }
        }
        Err(e) => Check {
            id: "durability".into(),
            title: "every acknowledged write is present on every node after heal".into(),
            status: Status::Fail,
            summary: format!("the final state could not be collected: {e}"),
            details: Value::Null,
        },
    });

    // (2) Linearizable per key.
    let registers = register_history(&p.ops);
    checks.push(match check_linearizability(&registers, &opts.linearizability) {
        Ok(r) => Check {
            id: "linearizability".into(),
            title: "control-plane history is linearizable per key".into(),
            status: Status::of(r.is_linearizable() && r.ops_checked > 0),
            summary: if r.ops_checked == 0 { format!("{} (no operation to check)", r.summary()) } else { r.summary() },
            details: serde_json::to_value(&r).unwrap_or(Value::Null),
        },
        Err(e) => Check {
            id: "linearizability".into(),
            title: "control-plane history is linearizable per key".into(),
            status: Status::Fail,
            summary: format!("malformed history: {e}"),
            details: Value::Null,
        },
    });

    // (3) Tokens verify against either region's JWKS and carry the evidence's claims.
    let expected: HashMap<&str, &serde_json::Map<String, Value>> =
        ev.vectors.vectors.iter().map(|v| (v.name.as_str(), &v.expected_claims)).collect();
    let tokens: Vec<IssuedToken> = p
        .ops
        .iter()
        .filter(|o| o.kind == OpType::Attest && o.result == OpResult::Ok)
        .filter_map(|o| {
            Some(IssuedToken {
                op_id: o.id,
                token: o.token.clone()?,
                expected_claims: o
                    .vector
                    .as_deref()
                    .and_then(|v| expected.get(v))
                    .map(|m| (*m).clone())
                    .unwrap_or_default(),
                nonce: o.nonce.clone(),
                served_by: o.region.clone(),
            })
        })
        .collect();
    let r = check_tokens(&tokens, &ev.jwks_by_region, ev.now_unix, 120, opts.expected_issuer.as_deref());
    checks.push(Check {
        id: "tokens".into(),
        title: "every token verifies against each region's JWKS and has the claims its evidence implies".into(),
        status: Status::of(r.ok && r.tokens_checked > 0),
        summary: if r.tokens_checked == 0 { format!("{} (no token was issued)", r.summary()) } else { r.summary() },
        details: serde_json::to_value(&r).unwrap_or(Value::Null),
    });

    // (4) Explicit, fast read-only answers while a region has no quorum.
    let has_ro = p.windows.iter().any(|w| matches!(w.expect, Expectation::ReadOnly { .. }));
    checks.push(if has_ro {
        let r = failover::check_read_only(&p.ops, &p.windows, &opts.read_only);
        Check {
            id: "read-only".into(),
            title: "writes fail fast with ControlPlaneReadOnly where no quorum is reachable".into(),
            status: Status::of(r.ok),
            summary: r.summary(),
            details: serde_json::to_value(&r).unwrap_or(Value::Null),
        }
    } else {
        skipped(
            "read-only",
            "writes fail fast with ControlPlaneReadOnly where no quorum is reachable",
            "no region loses its quorum in this scenario",
        )
    });

    // (5) Data-plane availability through the gateways.
    let a = failover::check_availability(&p.ops, &p.windows, opts.availability_outside_disruption);
    checks.push(Check {
        id: "availability".into(),
        title: "data plane answers through the gateways (per second, outside fault transitions)".into(),
        status: Status::of(a.ok),
        summary: a.summary(),
        details: serde_json::to_value(&a).unwrap_or(Value::Null),
    });

    // Failover moved the traffic where it should be.
    let has_routing = p.windows.iter().any(|w| matches!(w.expect, Expectation::ServedBy { .. }));
    checks.push(if has_routing {
        let r = failover::check_routing(&p.ops, &p.windows, opts.routing_grace, 0.9);
        Check {
            id: "routing".into(),
            title: "the gateways send attestation to the region that should answer".into(),
            status: Status::of(r.ok),
            summary: r.summary(),
            details: serde_json::to_value(&r).unwrap_or(Value::Null),
        }
    } else {
        skipped(
            "routing",
            "the gateways send attestation to the region that should answer",
            "no failover in this scenario",
        )
    });

    // (6) RTO, control-plane recovery, replication modes.
    let m = failover::measure(&p.ops, &p.windows, &p.status);
    let mut problems = Vec::new();
    for r in &m.data_plane {
        if r.rto_s > opts.max_rto.as_secs_f64() {
            problems
                .push(format!("data-plane RTO after '{}' was {:.1}s (budget {:?})", r.label, r.rto_s, opts.max_rto));
        }
    }
    for r in &m.control_plane {
        match r.first_write_ack_s {
            None => problems.push(format!("no write was acknowledged after '{}'", r.label)),
            Some(s) if s > opts.max_control_plane_recovery.as_secs_f64() => problems.push(format!(
                "first write acknowledged {s:.1}s after '{}' (budget {:?})",
                r.label, opts.max_control_plane_recovery
            )),
            _ => {}
        }
    }
    let seen: Vec<&str> = std::iter::once(m.mode_changes.first().map(|c| c.from.as_str()))
        .flatten()
        .chain(m.mode_changes.iter().map(|c| c.to.as_str()))
        .collect();
    if !is_subsequence(&opts.expected_modes, &seen) {
        problems.push(format!("replication modes went {seen:?}, expected to pass through {:?}", opts.expected_modes));
    }
    for w in &p.windows {
        let Expectation::ModeStays { mode } = &w.expect else { continue };
        let moved: Vec<String> = p
            .status
            .iter()
            .filter(|s| s.at_ns >= w.start_ns && s.at_ns <= w.end_ns)
            .filter(|s| s.raft_role.as_deref() == Some("Leader") && s.control_plane.as_deref() == Some("writable"))
            .filter(|s| s.replication_mode.as_deref() != Some(mode.as_str()))
            .map(|s| format!("{} at {:.1}s", s.replication_mode.as_deref().unwrap_or("?"), s.at_ns as f64 / 1e9))
            .collect();
        if let Some(first) = moved.first() {
            problems.push(format!(
                "the leader left {mode} between {:.1}s and {:.1}s ({} samples, first: {first})",
                w.start_ns as f64 / 1e9,
                w.end_ns as f64 / 1e9,
                moved.len()
            ));
        }
    }
    if let (Some((node, region)), Some(h)) = (&m.leader_at_end, &p.header) {
        if *region != h.primary_region {
            problems.push(format!(
                "the run ended with the leader outside the primary region ({node} in {region}); brief §4 wants it in {}",
                h.primary_region
            ));
        }
    }
    if let Some(want) = &opts.final_mode {
        let last = last_leader_mode(&p.status);
        if last.as_deref() != Some(want.as_str()) {
            problems.push(format!("the run ended in replication mode {last:?}, not {want}"));
        }
    }
    checks.push(Check {
        id: "recovery".into(),
        title: "RTO within budget, control plane writable again after heal, replication modes as expected".into(),
        status: Status::of(problems.is_empty()),
        summary: if problems.is_empty() {
            format!(
                "max data-plane RTO {:.1}s, max control-plane recovery {}, modes {}",
                m.max_rto_s,
                m.max_control_plane_recovery_s.map_or("n/a".into(), |s| format!("{s:.1}s")),
                if seen.is_empty() { "unchanged".to_string() } else { seen.join(" → ") }
            )
        } else {
            problems.join("\n")
        },
        details: json!({"problems": problems, "modes": seen}),
    });

    // A forced promotion's superseded nodes serve nothing.
    checks.push(match failover::check_fencing(&p.ops, &p.windows, &p.status) {
        Some(r) => Check {
            id: "fencing".into(),
            title: "nodes superseded by a forced promotion are fenced at first contact and serve nothing".into(),
            status: Status::of(r.ok),
            summary: r.summary(),
            details: serde_json::to_value(&r).unwrap_or(Value::Null),
        },
        None => skipped(
            "fencing",
            "nodes superseded by a forced promotion are fenced at first contact and serve nothing",
            "no forced promotion in this scenario",
        ),
    });

    // RPO at the moment of a primary loss.
    checks.push(match failover::check_rpo(&p.ops, &p.captures) {
        Some(r) => Check {
            id: "rpo".into(),
            title: "RPO = 0: the secondary holds every write acknowledged in sync mode when the primary is lost".into(),
            status: Status::of(r.ok && r.sync_acknowledged > 0),
            summary: if r.sync_acknowledged == 0 {
                format!("{} (no sync-acknowledged write to judge)", r.summary())
            } else {
                r.summary()
            },
            details: serde_json::to_value(&r).unwrap_or(Value::Null),
        },
        None => skipped(
            "rpo",
            "RPO = 0: the secondary holds every write acknowledged in sync mode when the primary is lost",
            "the primary region is not lost in this scenario",
        ),
    });
    (checks, m)
}

fn skipped(id: &str, title: &str, why: &str) -> Check {
    Check { id: id.into(), title: title.into(), status: Status::Skipped, summary: why.into(), details: Value::Null }
}

fn is_subsequence(want: &[String], seen: &[&str]) -> bool {
    let mut it = seen.iter();
    want.iter().all(|w| it.any(|s| s == w))
}

/// The replication mode in the last sample of a writable leader.
pub fn last_leader_mode(status: &[crate::history::StatusSample]) -> Option<String> {
    status
        .iter()
        .filter(|s| s.raft_role.as_deref() == Some("Leader") && s.control_plane.as_deref() == Some("writable"))
        .max_by_key(|s| s.at_ns)
        .and_then(|s| s.replication_mode.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsequences() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(is_subsequence(&s(&["sync", "async", "sync"]), &["sync", "async", "sync-recover", "sync"]));
        assert!(!is_subsequence(&s(&["async", "sync"]), &["sync"]));
        assert!(is_subsequence(&[], &[]));
    }

    #[test]
    fn register_history_keeps_writes_and_successful_reads() {
        let mut w = Op::begin(1, OpType::Write, "w", "node-1", 0);
        w.key = Some("p/SgxEnclave".into());
        w.value = Some("v1".into());
        w.end_ns = 10;
        w.result = OpResult::Unknown;
        let mut r = Op::begin(2, OpType::Read, "r", "node-2", 20);
        r.key = Some("p/SgxEnclave".into());
        r.value = Some("v1".into());
        r.end_ns = 30;
        r.result = OpResult::Ok;
        let mut failed_read = r.clone();
        failed_read.id = 3;
        failed_read.result = OpResult::Failed;
        let mut create = w.clone();
        create.id = 4;
        create.key = Some("provider:x".into());
        let h = register_history(&[w, r, failed_read, create]);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].outcome, Outcome::Unknown);
        assert_eq!(h[0].complete_ns, None);
        assert!(check_linearizability(&h, &CheckOptions::default()).is_ok_and(|r| r.is_linearizable()));
    }
}
