//! Checks and measurements of how the cluster behaves through a fault,
//! computed from the drill's history (client operations, status samples,
//! fault events and the scenario's expectation windows):
//!
//! * [`check_read_only`]: while a region cannot reach a quorum, writes it
//!   answers fail fast with `503 ControlPlaneReadOnly` — never acknowledged,
//!   never hanging until a timeout (brief §4);
//! * [`check_availability`]: data-plane success per second; outside the
//!   windows in which a fault is being absorbed every call succeeds, and a
//!   planned action (drain) costs no error at all;
//! * [`check_rpo`]: what the secondary region holds while the primary is
//!   down — every write acknowledged in `sync` mode must be on a secondary
//!   node's disk (RPO = 0), which is what survives a permanent primary loss;
//! * [`check_fencing`]: after a forced promotion, the old primary's nodes
//!   that come back answer nothing, accept no write and never lead, and
//!   say `fenced` from their first answers on;
//! * [`measure`]: data-plane RTO per disruption, control-plane recovery time
//!   after each heal, replication-mode transitions as the leader reported them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::durability::{check_durability, DurabilityOptions, NodeSnapshot, WriteRecord};
use super::linearizability::Outcome;
use crate::history::{Capture, Expectation, Op, OpResult, OpType, StatusSample, Window};

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Listed violations per check (the count is always complete).
const MAX_LISTED: usize = 30;

// ------------------------------------------------------------- read-only

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadOnlyOptions {
    /// Writes invoked within this time after a window opens are not judged:
    /// detecting the lost quorum takes about one election timeout.
    pub grace: Duration,
    /// Slowest acceptable `ControlPlaneReadOnly` answer.
    pub max_answer: Duration,
}

impl Default for ReadOnlyOptions {
    fn default() -> Self {
        Self { grace: Duration::from_secs(3), max_answer: Duration::from_secs(5) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadOnlyWindowResult {
    pub region: String,
    pub start_s: f64,
    pub end_s: f64,
    /// Writes judged (invoked after the grace, completed inside the window).
    pub writes_judged: usize,
    /// Of those, answered `503 ControlPlaneReadOnly` in time.
    pub read_only_answers: usize,
    pub slowest_answer_ms: f64,
    pub median_answer_ms: f64,
    pub violation_count: usize,
    pub violations: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadOnlyReport {
    pub ok: bool,
    pub windows: Vec<ReadOnlyWindowResult>,
}

impl ReadOnlyReport {
    pub fn summary(&self) -> String {
        let mut s = format!("read-only behaviour: {}", if self.ok { "ok" } else { "VIOLATED" });
        for w in &self.windows {
            s.push_str(&format!(
                "\n  - {} from {:.1}s to {:.1}s: {}/{} writes answered ControlPlaneReadOnly (median {:.0} ms, slowest {:.0} ms), {} violations",
                w.region, w.start_s, w.end_s, w.read_only_answers, w.writes_judged, w.median_answer_ms, w.slowest_answer_ms, w.violation_count
            ));
            for v in w.violations.iter().take(5) {
                s.push_str(&format!("\n      {v}"));
            }
        }
        s
    }
}

/// Judges every write answered by a region while it is expected read-only.
/// A window in which no write was judged fails: it proved nothing.
pub fn check_read_only(ops: &[Op], windows: &[Window], opts: &ReadOnlyOptions) -> ReadOnlyReport {
    let mut out = Vec::new();
    for w in windows {
        let Expectation::ReadOnly { region, via_gateways } = &w.expect else { continue };
        let from = w.start_ns + opts.grace.as_nanos() as u64;
        let mut r = ReadOnlyWindowResult {
            region: region.clone(),
            start_s: secs(w.start_ns),
            end_s: secs(w.end_ns),
            writes_judged: 0,
            read_only_answers: 0,
            slowest_answer_ms: 0.0,
            median_answer_ms: 0.0,
            violation_count: 0,
            violations: Vec::new(),
        };
        let mut latencies = Vec::new();
        for op in ops.iter().filter(|o| o.kind == OpType::Write && o.start_ns >= from && o.end_ns <= w.end_ns) {
            let answered_here = op.region.as_deref() == Some(region.as_str());
            if !(answered_here || (*via_gateways && op.via_gateway)) {
                continue;
            }
            r.writes_judged += 1;
            let ms = op.latency_ms();
            let problem = if op.result == OpResult::Ok {
                Some("was acknowledged".to_string())
            } else if op.error_code.as_deref() != Some("ControlPlaneReadOnly") || op.status != Some(503) {
                Some(format!(
                    "failed with {} {} instead of 503 ControlPlaneReadOnly",
                    op.status.map_or("no answer".to_string(), |s| s.to_string()),
                    op.error_code.as_deref().unwrap_or("")
                ))
            } else if ms > opts.max_answer.as_secs_f64() * 1000.0 {
                Some(format!("answered ControlPlaneReadOnly only after {ms:.0} ms"))
            } else {
                None
            };
            match problem {
                None => {
                    r.read_only_answers += 1;
                    latencies.push(ms);
                }
                Some(p) => {
                    r.violation_count += 1;
                    if r.violations.len() < MAX_LISTED {
                        r.violations.push(format!(
                            "write #{} to {} at {:.2}s {p}",
                            op.id,
                            op.target,
                            secs(op.start_ns)
                        ));
                    }
                }
            }
        }
        latencies.sort_by(f64::total_cmp);
        r.slowest_answer_ms = latencies.last().copied().unwrap_or(0.0);
        r.median_answer_ms = latencies.get(latencies.len() / 2).copied().unwrap_or(0.0);
        if r.writes_judged == 0 {
            r.violation_count += 1;
            r.violations.push(format!("no write reached region {region} in the window: nothing was shown"));
        }
        out.push(r);
    }
    ReadOnlyReport { ok: out.iter().all(|w| w.violation_count == 0), windows: out }
}

// ---------------------------------------------------------- availability

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Start of the bucket, seconds since the history began.
    pub at_s: f64,
    pub total: u32,
    pub ok: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityReport {
    pub ok: bool,
    pub calls: usize,
    pub successes: usize,
    /// Over the whole run.
    pub availability: f64,
    /// Worst one-second bucket.
    pub min_availability: f64,
    /// Worst one-second bucket outside every disruption window.
    pub min_availability_outside_disruption: f64,
    pub required_outside_disruption: f64,
    /// Failed calls during planned actions (must be 0).
    pub errors_during_planned: usize,
    /// Failed calls outside every disruption window.
    pub errors_outside_disruption: usize,
    pub per_second: Vec<Bucket>,
    pub violations: Vec<String>,
}

impl AvailabilityReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "data-plane availability: {} ({:.2}% of {} calls; worst second {:.0}%, worst second outside disruption {:.0}%)",
            if self.ok { "ok" } else { "VIOLATED" },
            self.availability * 100.0,
            self.calls,
            self.min_availability * 100.0,
            self.min_availability_outside_disruption * 100.0
        );
        for v in self.violations.iter().take(5) {
            s.push_str(&format!("\n  - {v}"));
        }
        s
    }
}

fn overlaps(op: &Op, w: &Window) -> bool {
    op.start_ns <= w.end_ns && op.end_ns >= w.start_ns
}

/// Buckets the data-plane calls (`Attest`) by the second they started in.
pub fn per_bucket(ops: &[Op], width_ns: u64) -> Vec<Bucket> {
    let mut m: BTreeMap<u64, (u32, u32)> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.kind == OpType::Attest) {
        let e = m.entry(op.start_ns / width_ns).or_default();
        e.0 += 1;
        e.1 += u32::from(op.result == OpResult::Ok);
    }
    let (Some(first), Some(last)) = (m.keys().next().copied(), m.keys().last().copied()) else { return Vec::new() };
    (first..=last)
        .map(|b| {
            let (total, ok) = m.get(&b).copied().unwrap_or((0, 0));
            Bucket { at_s: secs(b * width_ns), total, ok }
        })
        .collect()
}

pub fn check_availability(ops: &[Op], windows: &[Window], required_outside_disruption: f64) -> AvailabilityReport {
    let data: Vec<&Op> = ops.iter().filter(|o| o.kind == OpType::Attest).collect();
    let disruptions: Vec<&Window> =
        windows.iter().filter(|w| matches!(w.expect, Expectation::Disruption { .. })).collect();
    let planned: Vec<&Window> =
        windows.iter().filter(|w| matches!(w.expect, Expectation::NoDisruption { .. })).collect();
    let successes = data.iter().filter(|o| o.result == OpResult::Ok).count();
    let mut violations = Vec::new();
    let mut errors_outside = 0;
    let mut errors_planned = 0;
    for op in data.iter().filter(|o| o.result != OpResult::Ok) {
        // The error's message says why (e.g. the gateway's attempt count and
        // why it stopped retrying): a report read in a CI log has nothing else.
        let why = op.error.as_deref().map(|e| format!(" ({})", e.chars().take(200).collect::<String>()));
        let what = format!(
            "attest #{} via {} at {:.2}s failed: {} {}{}",
            op.id,
            op.target,
            secs(op.start_ns),
            op.status.map_or("no answer".to_string(), |s| s.to_string()),
            op.error_code.as_deref().unwrap_or(""),
            why.unwrap_or_default()
        );
        if planned.iter().any(|w| overlaps(op, w)) {
            errors_planned += 1;
            if violations.len() < MAX_LISTED {
                violations.push(format!("{what} during a planned action"));
            }
        }
        if !disruptions.iter().any(|w| overlaps(op, w)) {
            errors_outside += 1;
        }
    }
    // Per second, judged only where no disruption window touches the second.
    let width = 1_000_000_000;
    let buckets = per_bucket(ops, width);
    let mut min_all: f64 = 1.0;
    let mut min_outside: f64 = 1.0;
    for b in &buckets {
        if b.total == 0 {
            continue;
        }
        let a = f64::from(b.ok) / f64::from(b.total);
        min_all = min_all.min(a);
        let start = (b.at_s * 1e9) as u64;
        let touched = disruptions.iter().any(|w| start <= w.end_ns && start + width >= w.start_ns);
        if !touched {
            min_outside = min_outside.min(a);
            if a < required_outside_disruption && violations.len() < MAX_LISTED {
                violations.push(format!(
                    "second {:.0}: {}/{} calls succeeded outside any disruption window",
                    b.at_s, b.ok, b.total
                ));
            }
        }
    }
    if data.is_empty() {
        violations.push("no data-plane call was made".into());
    }
    let ok = !data.is_empty() && errors_planned == 0 && min_outside >= required_outside_disruption;
    AvailabilityReport {
        ok,
        calls: data.len(),
        successes,
        availability: if data.is_empty() { 0.0 } else { successes as f64 / data.len() as f64 },
        min_availability: min_all,
        min_availability_outside_disruption: min_outside,
        required_outside_disruption,
        errors_during_planned: errors_planned,
        errors_outside_disruption: errors_outside,
        per_second: buckets,
        violations,
    }
}

// --------------------------------------------------------------- routing

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingWindowResult {
    pub region: String,
    pub start_s: f64,
    pub end_s: f64,
    /// Successful calls judged (started after the grace).
    pub calls: usize,
    pub served_by_region: usize,
    /// Who answered, per region.
    pub by_region: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingReport {
    pub ok: bool,
    /// Share of the calls the expected region must answer.
    pub required_share: f64,
    pub windows: Vec<RoutingWindowResult>,
}

impl RoutingReport {
    pub fn summary(&self) -> String {
        let mut s = format!("routing: {}", if self.ok { "ok" } else { "VIOLATED" });
        for w in &self.windows {
            s.push_str(&format!(
                "\n  - {:.1}s to {:.1}s: {}/{} successful calls answered by {} ({:?})",
                w.start_s, w.end_s, w.served_by_region, w.calls, w.region, w.by_region
            ));
        }
        s
    }
}

/// In every `ServedBy` window, successful data-plane calls started after
/// `grace` are answered by the expected region (at least `required_share`
/// of them, and at least one).
pub fn check_routing(ops: &[Op], windows: &[Window], grace: Duration, required_share: f64) -> RoutingReport {
    let mut out = Vec::new();
    for w in windows {
        let Expectation::ServedBy { region } = &w.expect else { continue };
        let from = w.start_ns + grace.as_nanos() as u64;
        let mut by_region: BTreeMap<String, usize> = BTreeMap::new();
        let mut calls = 0;
        for o in ops.iter().filter(|o| {
            o.kind == OpType::Attest && o.result == OpResult::Ok && o.start_ns >= from && o.end_ns <= w.end_ns
        }) {
            calls += 1;
            *by_region.entry(o.region.clone().unwrap_or_else(|| "unknown".into())).or_default() += 1;
        }
        out.push(RoutingWindowResult {
            region: region.clone(),
            start_s: secs(w.start_ns),
            end_s: secs(w.end_ns),
            calls,
            served_by_region: by_region.get(region).copied().unwrap_or(0),
            by_region,
        });
    }
    let ok = out.iter().all(|w| w.calls > 0 && w.served_by_region as f64 >= required_share * w.calls as f64);
    RoutingReport { ok, required_share, windows: out }
}

// ------------------------------------------------------------------- RPO

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpoReport {
    pub ok: bool,
    /// The capture groups (one per label) judged.
    pub captures: Vec<String>,
    /// Writes acknowledged in `sync` mode before the capture.
    pub sync_acknowledged: usize,
    /// Writes acknowledged in `async` or `sync-recover` mode before the
    /// capture (their loss is allowed and reported as RPO > 0).
    pub other_acknowledged: usize,
    /// `sync`-acknowledged writes no captured secondary node holds.
    pub lost_write_ids: Vec<String>,
    /// Acknowledged writes of any mode missing on the secondary (the RPO of
    /// a forced promotion at that moment).
    pub missing_any_mode: usize,
    /// From the first missing acknowledged write to the capture, seconds.
    pub rpo_window_s: f64,
}

impl RpoReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "RPO: {} ({} sync-acknowledged writes before the primary loss, {} missing on the secondary; {} acknowledged in other modes, {} of all modes missing, RPO window {:.1}s)",
            if self.ok { "ok" } else { "VIOLATED" },
            self.sync_acknowledged,
            self.lost_write_ids.len(),
            self.other_acknowledged,
            self.missing_any_mode,
            self.rpo_window_s
        );
        if !self.lost_write_ids.is_empty() {
            let shown: Vec<&str> = self.lost_write_ids.iter().take(10).map(String::as_str).collect();
            s.push_str(&format!("\n  - lost: {}", shown.join(", ")));
        }
        s
    }
}

/// Writes as the durability checker sees them; acknowledged writes that
/// `keep_acked` rejects count as of unknown outcome (they may still explain
/// a value, but their absence is not judged).
pub fn write_records(ops: &[Op], keep_acked: impl Fn(&Op) -> bool) -> Vec<WriteRecord> {
    ops.iter()
        .filter(|o| o.kind == OpType::Write)
        .filter_map(|o| {
            let outcome = match o.result {
                OpResult::Ok if keep_acked(o) => Outcome::Ok,
                OpResult::Failed => Outcome::Failed,
                // Acknowledged writes outside the judged set still explain values.
                _ => Outcome::Unknown,
            };
            let rec = WriteRecord {
                write_id: o.request_id.clone().unwrap_or_else(|| o.id.to_string()),
                key: o.key.clone()?,
                value: o.value.clone()?,
                invoke_ns: o.start_ns,
                complete_ns: Some(o.end_ns),
                outcome,
            };
            Some(if outcome == Outcome::Unknown { rec.with_outcome(Outcome::Unknown) } else { rec })
        })
        .collect()
}

/// What the captured node would hold after a forced promotion: its applied
/// values, then the writes of the log entries it holds but has not applied.
pub fn effective_values(c: &Capture, by_request: &HashMap<&str, &Op>) -> BTreeMap<String, Option<String>> {
    let mut values = c.values.clone();
    for rid in &c.unapplied_request_ids {
        if let Some(op) = by_request.get(rid.as_str()) {
            if let (Some(k), Some(v)) = (&op.key, &op.value) {
                values.insert(k.clone(), Some(v.clone()));
            }
        }
    }
    values
}

/// Returns `None` when the history holds no capture (no primary loss).
pub fn check_rpo(ops: &[Op], captures: &[Capture]) -> Option<RpoReport> {
    if captures.is_empty() {
        return None;
    }
    let by_request: HashMap<&str, &Op> = ops.iter().filter_map(|o| o.request_id.as_deref().map(|r| (r, o))).collect();
    let mut groups: BTreeMap<&str, Vec<&Capture>> = BTreeMap::new();
    for c in captures {
        groups.entry(c.label.as_str()).or_default().push(c);
    }
    let mut lost_all = BTreeSet::new();
    let mut missing_any = BTreeSet::new();
    let (mut sync_acked, mut other_acked) = (BTreeSet::new(), BTreeSet::new());
    let mut window: f64 = 0.0;
    for group in groups.values() {
        let at = group.iter().map(|c| c.at_ns).min().unwrap_or(0);
        let acked_before = |o: &Op| o.result == OpResult::Ok && o.end_ns <= at;
        for o in ops.iter().filter(|o| o.kind == OpType::Write && acked_before(o)) {
            let id = o.request_id.clone().unwrap_or_default();
            if o.replication_mode.as_deref() == Some("sync") {
                sync_acked.insert(id);
            } else {
                other_acked.insert(id);
            }
        }
        let snapshots: Vec<NodeSnapshot> = group
            .iter()
            .map(|c| NodeSnapshot { node: c.node.clone(), values: effective_values(c, &by_request), applied_log: None })
            .collect();
        let opts = DurabilityOptions { require_convergence: false, ..DurabilityOptions::default() };
        // A write counts as kept when at least one captured node keeps it.
        let lost_in = |keep: &dyn Fn(&Op) -> bool| -> BTreeSet<String> {
            let writes = write_records(ops, |o| acked_before(o) && keep(o));
            let mut lost: Option<BTreeSet<String>> = None;
            for s in &snapshots {
                let r = check_durability(&writes, std::slice::from_ref(s), &opts);
                let here: BTreeSet<String> = r.lost_write_ids.into_iter().collect();
                lost = Some(match lost {
                    None => here,
                    Some(prev) => prev.intersection(&here).cloned().collect(),
                });
            }
            lost.unwrap_or_default()
        };
        let lost = lost_in(&|o: &Op| o.replication_mode.as_deref() == Some("sync"));
        let any = lost_in(&|_: &Op| true);
        let first_missing = any.iter().filter_map(|id| by_request.get(id.as_str())).map(|o| o.end_ns).min();
        if let Some(first) = first_missing {
            window = window.max(secs(at.saturating_sub(first)));
        }
        lost_all.extend(lost);
        missing_any.extend(any);
    }
    Some(RpoReport {
        ok: lost_all.is_empty(),
        captures: groups.keys().map(|k| k.to_string()).collect(),
        sync_acknowledged: sync_acked.len(),
        other_acknowledged: other_acked.len(),
        lost_write_ids: lost_all.into_iter().collect(),
        missing_any_mode: missing_any.len(),
        rpo_window_s: window,
    })
}

// --------------------------------------------------------------- fencing

/// One returning node of a superseded region, as the fencing check saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FencedNode {
    pub node: String,
    /// `/health` answers from the node inside the window.
    pub answers: usize,
    /// Seconds from the window's start to its first answer, and to its
    /// first answer that said `fenced` (None: never).
    pub first_answer_s: Option<f64>,
    pub fenced_at_s: Option<f64>,
    /// Answers that did not (yet) say `fenced`.
    pub unfenced_answers: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FencingReport {
    pub ok: bool,
    pub nodes: Vec<FencedNode>,
    /// Client calls the superseded region answered successfully.
    pub served_calls: usize,
    pub violations: Vec<String>,
}

impl FencingReport {
    pub fn summary(&self) -> String {
        let mut s = if self.ok {
            format!(
                "{} returning node(s) fenced; 0 calls served, no write accepted, no leader among them",
                self.nodes.len()
            )
        } else {
            format!("{} violation(s)", self.violations.len())
        };
        for n in &self.nodes {
            s.push_str(&format!(
                "\n  - {}: {} answers, first at {}, fenced at {}, {} before the fence",
                n.node,
                n.answers,
                n.first_answer_s.map_or("never".into(), |x| format!("+{x:.1}s")),
                n.fenced_at_s.map_or("never".into(), |x| format!("+{x:.1}s")),
                n.unfenced_answers
            ));
        }
        for v in self.violations.iter().take(20) {
            s.push_str(&format!("\n  - {v}"));
        }
        s
    }
}

/// In every `Fenced` window: no call answered successfully by the region,
/// no status sample of its nodes healthy, writable or leading, and every
/// node that answers at all says `fenced` from its first answer on ("fenced
/// at first contact": the node checks its peers' epoch before it serves).
pub fn check_fencing(ops: &[Op], windows: &[Window], status: &[StatusSample]) -> Option<FencingReport> {
    let mut found = false;
    let mut nodes = Vec::new();
    let mut violations = Vec::new();
    let mut served_calls = 0;
    for w in windows {
        let Expectation::Fenced { region } = &w.expect else { continue };
        found = true;
        let inside = |t: u64| t >= w.start_ns && t <= w.end_ns;
        for o in ops.iter().filter(|o| o.result == OpResult::Ok && inside(o.start_ns)) {
            if o.region.as_deref() == Some(region.as_str()) {
                served_calls += 1;
                if violations.len() < 50 {
                    violations.push(format!(
                        "{:?} call {} answered OK by {} at {:.1}s",
                        o.kind,
                        o.id,
                        o.node.as_deref().unwrap_or(region),
                        secs(o.start_ns)
                    ));
                }
            }
        }
        let mut per_node: BTreeMap<&str, Vec<&StatusSample>> = BTreeMap::new();
        for s in status.iter().filter(|s| s.region == *region && inside(s.at_ns) && s.http.is_some()) {
            per_node.entry(s.node.as_str()).or_default().push(s);
        }
        for (node, samples) in per_node {
            let fenced_at = samples.iter().find(|s| s.fenced == Some(true)).map(|s| s.at_ns);
            let unfenced = samples.iter().filter(|s| s.fenced != Some(true)).count();
            for s in &samples {
                let what = if s.serving() {
                    Some("healthy (serving)")
                } else if s.control_plane.as_deref() == Some("writable") {
                    Some("writable")
                } else if s.raft_role.as_deref() == Some("Leader") {
                    Some("Raft leader")
                } else {
                    None
                };
                if let Some(what) = what {
                    violations.push(format!("{node} was {what} at {:.1}s", secs(s.at_ns)));
                }
            }
            if unfenced > 0 {
                violations.push(format!("{node} answered {unfenced} time(s) without saying fenced"));
            }
            nodes.push(FencedNode {
                node: node.to_owned(),
                answers: samples.len(),
                first_answer_s: samples.first().map(|s| secs(s.at_ns - w.start_ns)),
                fenced_at_s: fenced_at.map(|t| secs(t - w.start_ns)),
                unfenced_answers: unfenced,
            });
        }
        if nodes.is_empty() {
            violations.push(format!("no node of {region} answered inside the window: fencing was not observed"));
        }
    }
    found.then_some(FencingReport { ok: violations.is_empty(), nodes, served_calls, violations })
}

// ---------------------------------------------------------- measurements

/// Data-plane impact of one disruption window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rto {
    pub label: String,
    pub at_s: f64,
    /// Failed data-plane calls that overlap the window.
    pub errors: usize,
    /// From the window's start to the first success after its last failure
    /// (0 when no call failed: retries and failover hid the fault).
    pub rto_s: f64,
}

/// Control-plane recovery after a heal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    pub label: String,
    pub at_s: f64,
    /// Until the first write invoked after the heal was acknowledged.
    pub first_write_ack_s: Option<f64>,
    /// Until every polled node reported `writable`.
    pub all_writable_s: Option<f64>,
    /// Until the leader reported replication mode `sync`.
    pub sync_again_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeChange {
    pub at_s: f64,
    pub from: String,
    pub to: String,
    /// The leader that reported it.
    pub node: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    pub data_plane: Vec<Rto>,
    pub control_plane: Vec<Recovery>,
    pub mode_changes: Vec<ModeChange>,
    /// Longest data-plane RTO of the run.
    pub max_rto_s: f64,
    /// Longest control-plane recovery (first acknowledged write) after a heal.
    pub max_control_plane_recovery_s: Option<f64>,
    /// The last writable leader the status polls saw, and its region.
    pub leader_at_end: Option<(String, String)>,
}

/// Replication mode over time as the leader saw it (the mode is replicated
/// state; a cut-off node would report a stale one, the leader does not).
pub fn mode_changes(status: &[StatusSample]) -> Vec<ModeChange> {
    let mut samples: Vec<&StatusSample> = status
        .iter()
        .filter(|s| s.raft_role.as_deref() == Some("Leader") && s.control_plane.as_deref() == Some("writable"))
        .collect();
    samples.sort_by_key(|s| s.at_ns);
    let mut out = Vec::new();
    let mut current: Option<&str> = None;
    for s in samples {
        let Some(m) = s.replication_mode.as_deref() else { continue };
        match current {
            Some(c) if c == m => {}
            Some(c) => {
                out.push(ModeChange {
                    at_s: secs(s.at_ns),
                    from: c.to_owned(),
                    to: m.to_owned(),
                    node: s.node.clone(),
                });
                current = Some(m);
            }
            None => current = Some(m),
        }
    }
    out
}

pub fn measure(ops: &[Op], windows: &[Window], status: &[StatusSample]) -> Measurements {
    let mut data_plane = Vec::new();
    let mut attests: Vec<&Op> = ops.iter().filter(|o| o.kind == OpType::Attest).collect();
    attests.sort_by_key(|o| o.start_ns);
    for w in windows {
        let Expectation::Disruption { label } = &w.expect else { continue };
        let failed: Vec<&&Op> = attests.iter().filter(|o| o.result != OpResult::Ok && overlaps(o, w)).collect();
        let rto_s = match failed.iter().map(|o| o.end_ns).max() {
            None => 0.0,
            Some(last_fail) => {
                let recovered = attests
                    .iter()
                    .filter(|o| o.result == OpResult::Ok && o.end_ns > last_fail)
                    .map(|o| o.end_ns)
                    .min()
                    .unwrap_or(last_fail);
                secs(recovered.saturating_sub(w.start_ns))
            }
        };
        data_plane.push(Rto { label: label.clone(), at_s: secs(w.start_ns), errors: failed.len(), rto_s });
    }
    let changes = mode_changes(status);
    let mut control_plane = Vec::new();
    for w in windows {
        let Expectation::Recovery { label } = &w.expect else { continue };
        let first_write_ack_s = ops
            .iter()
            .filter(|o| o.kind == OpType::Write && o.result == OpResult::Ok && o.start_ns >= w.start_ns)
            .map(|o| o.end_ns)
            .min()
            .map(|t| secs(t - w.start_ns));
        // Every node's latest sample from the heal on says writable.
        let mut nodes: BTreeMap<&str, bool> = BTreeMap::new();
        let mut all_writable_s = None;
        let mut sorted: Vec<&StatusSample> = status.iter().filter(|s| s.at_ns >= w.start_ns).collect();
        sorted.sort_by_key(|s| s.at_ns);
        let known: BTreeSet<&str> = status.iter().map(|s| s.node.as_str()).collect();
        for s in &sorted {
            nodes.insert(s.node.as_str(), s.control_plane.as_deref() == Some("writable"));
            if nodes.len() == known.len() && nodes.values().all(|w| *w) {
                all_writable_s = Some(secs(s.at_ns - w.start_ns));
                break;
            }
        }
        let sync_again_s = sorted
            .iter()
            .find(|s| {
                s.raft_role.as_deref() == Some("Leader")
                    && s.control_plane.as_deref() == Some("writable")
                    && s.replication_mode.as_deref() == Some("sync")
            })
            .map(|s| secs(s.at_ns - w.start_ns));
        control_plane.push(Recovery {
            label: label.clone(),
            at_s: secs(w.start_ns),
            first_write_ack_s,
            all_writable_s,
            sync_again_s,
        });
    }
    let max_rto_s = data_plane.iter().map(|r| r.rto_s).fold(0.0, f64::max);
    let max_control_plane_recovery_s = control_plane
        .iter()
        .filter_map(|r| r.first_write_ack_s)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let leader_at_end = status
        .iter()
        .filter(|s| s.raft_role.as_deref() == Some("Leader") && s.control_plane.as_deref() == Some("writable"))
        .max_by_key(|s| s.at_ns)
        .map(|s| (s.node.clone(), s.region.clone()));
    Measurements {
        data_plane,
        control_plane,
        mode_changes: changes,
        max_rto_s,
        max_control_plane_recovery_s,
        leader_at_end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Op;

    const S: u64 = 1_000_000_000;

    fn write(id: u64, target: &str, region: Option<&str>, start: u64, end: u64, result: OpResult) -> Op {
        let mut o = Op::begin(id, OpType::Write, "writer-0", target, start);
        o.end_ns = end;
        o.result = result;
        o.region = region.map(str::to_owned);
        if target.starts_with("node") {
            o.node = Some(target.to_owned());
        } else {
            o.via_gateway = true;
        }
        o.key = Some("p/SgxEnclave".into());
        o.value = Some(format!("v{id}"));
        o.request_id = Some(format!("r-{id}"));
        o
    }

    fn read_only(mut o: Op) -> Op {
        o.status = Some(503);
        o.error_code = Some("ControlPlaneReadOnly".into());
        o
    }

    fn attest(id: u64, start: u64, end: u64, ok: bool) -> Op {
        let mut o = Op::begin(id, OpType::Attest, "attest-0", "gateway-eastus2", start);
        o.end_ns = end;
        o.result = if ok { OpResult::Ok } else { OpResult::Failed };
        o
    }

    fn window(start: u64, end: u64, expect: Expectation) -> Window {
        Window { start_ns: start, end_ns: end, expect }
    }

    #[test]
    fn read_only_windows_accept_only_fast_explicit_refusals() {
        let w = [window(10 * S, 30 * S, Expectation::ReadOnly { region: "centralus".into(), via_gateways: true })];
        let opts = ReadOnlyOptions::default();
        let good = vec![
            // Inside the grace: not judged, whatever happened.
            write(1, "node-4", Some("centralus"), 11 * S, 20 * S, OpResult::Unknown),
            read_only(write(2, "node-4", Some("centralus"), 15 * S, 15 * S + S / 10, OpResult::Failed)),
            read_only(write(3, "gateway-eastus2", Some("centralus"), 16 * S, 16 * S + S / 10, OpResult::Failed)),
            // Another region's writes are not this window's business.
            write(4, "node-1", Some("eastus2"), 16 * S, 16 * S + S, OpResult::Ok),
        ];
        let r = check_read_only(&good, &w, &opts);
        assert!(r.ok, "{}", r.summary());
        assert_eq!(r.windows[0].writes_judged, 2);

        // Acknowledged, hung until the client's timeout, slow, or the wrong error.
        let mut timed_out = write(6, "gateway-centralus", None, 17 * S, 29 * S, OpResult::Unknown);
        timed_out.error_code = Some("Timeout".into());
        let bad = vec![
            write(5, "node-5", Some("centralus"), 16 * S, 16 * S + S, OpResult::Ok),
            timed_out,
            read_only(write(7, "node-4", Some("centralus"), 18 * S, 27 * S, OpResult::Failed)),
            {
                let mut o = write(8, "node-4", Some("centralus"), 19 * S, 19 * S + 1, OpResult::Failed);
                o.status = Some(500);
                o.error_code = Some("InternalError".into());
                o
            },
        ];
        let r = check_read_only(&bad, &w, &opts);
        assert!(!r.ok);
        assert_eq!(r.windows[0].violation_count, 4, "{}", r.summary());
        let text = r.summary();
        assert!(text.contains("acknowledged") && text.contains("Timeout") && text.contains("only after"), "{text}");

        // A window nobody wrote into proves nothing and fails.
        let r = check_read_only(&[], &w, &opts);
        assert!(!r.ok);
    }

    #[test]
    fn availability_is_judged_outside_disruption_windows() {
        let mut ops = Vec::new();
        for s in 0..20u64 {
            ops.push(attest(s * 2, s * S, s * S + S / 10, true));
            // One failure per second between 5 s and 7 s.
            ops.push(attest(s * 2 + 1, s * S + S / 2, s * S + S / 2 + 1, !(5..=7).contains(&s)));
        }
        let disrupted = [window(5 * S, 8 * S, Expectation::Disruption { label: "kill".into() })];
        let r = check_availability(&ops, &disrupted, 1.0);
        assert!(r.ok, "{}", r.summary());
        assert_eq!(r.errors_outside_disruption, 0);
        assert_eq!(r.per_second.len(), 20);
        assert!((r.min_availability - 0.5).abs() < 1e-9);
        // Without the window the same errors fail the check.
        let r = check_availability(&ops, &[], 1.0);
        assert!(!r.ok);
        assert_eq!(r.errors_outside_disruption, 3);
        // A planned action tolerates no error at all.
        let planned = [
            window(0, 20 * S, Expectation::Disruption { label: "x".into() }),
            window(6 * S, 7 * S, Expectation::NoDisruption { label: "drain".into() }),
        ];
        let r = check_availability(&ops, &planned, 1.0);
        assert!(!r.ok);
        assert!(r.errors_during_planned >= 1);
        // Nothing measured is not a pass.
        assert!(!check_availability(&[], &[], 1.0).ok);
    }

    #[test]
    fn routing_follows_the_expected_region() {
        let mut ops = Vec::new();
        for i in 0..10u64 {
            let mut o = attest(i, (10 + i) * S, (10 + i) * S + 1, true);
            o.region = Some(if i < 2 { "eastus2" } else { "centralus" }.into());
            ops.push(o);
        }
        let w = [window(10 * S, 30 * S, Expectation::ServedBy { region: "centralus".into() })];
        // The first two calls fall in the grace.
        let r = check_routing(&ops, &w, Duration::from_secs(2), 0.9);
        assert!(r.ok, "{}", r.summary());
        assert_eq!(r.windows[0].calls, 8);
        let r = check_routing(&ops, &w, Duration::ZERO, 0.9);
        assert!(!r.ok, "{}", r.summary());
        assert!(!check_routing(&[], &w, Duration::ZERO, 0.9).ok);
    }

    #[test]
    fn rto_and_recovery_are_measured() {
        let ops = vec![
            attest(1, 9 * S, 9 * S + 1, true),
            attest(2, 10 * S, 10 * S + 1, false),
            attest(3, 12 * S, 12 * S + 1, false),
            attest(4, 13 * S, 13 * S + S / 2, true),
            write(5, "node-1", Some("eastus2"), 21 * S, 22 * S, OpResult::Ok),
        ];
        let windows = [
            window(10 * S, 15 * S, Expectation::Disruption { label: "kill".into() }),
            window(20 * S, 30 * S, Expectation::Recovery { label: "restart".into() }),
        ];
        let status = vec![StatusSample {
            at_ns: 25 * S,
            node: "node-1".into(),
            region: "eastus2".into(),
            http: Some(200),
            raft_role: Some("Leader".into()),
            leader: Some(1),
            term: Some(2),
            control_plane: Some("writable".into()),
            replication_mode: Some("sync".into()),
            applied_index: Some(10),
            draining: Some(false),
            ..Default::default()
        }];
        let m = measure(&ops, &windows, &status);
        assert_eq!(m.data_plane[0].errors, 2);
        assert!((m.data_plane[0].rto_s - 3.5).abs() < 1e-6, "{:?}", m.data_plane);
        assert_eq!(m.control_plane[0].first_write_ack_s, Some(2.0));
        assert_eq!(m.control_plane[0].all_writable_s, Some(5.0));
        assert_eq!(m.control_plane[0].sync_again_s, Some(5.0));
        assert_eq!(m.max_control_plane_recovery_s, Some(2.0));
        assert_eq!(m.leader_at_end, Some(("node-1".to_string(), "eastus2".to_string())));
    }

    #[test]
    fn mode_changes_follow_the_leader() {
        let s = |at: u64, node: &str, role: &str, mode: &str| StatusSample {
            at_ns: at * S,
            node: node.into(),
            region: "eastus2".into(),
            http: Some(200),
            raft_role: Some(role.into()),
            leader: None,
            term: None,
            control_plane: Some("writable".into()),
            replication_mode: Some(mode.into()),
            applied_index: None,
            draining: None,
            ..Default::default()
        };
        let samples = vec![
            s(1, "node-1", "Leader", "sync"),
            s(2, "node-4", "Follower", "sync"),
            s(3, "node-1", "Leader", "async"),
            // A cut-off follower still says sync: ignored.
            s(4, "node-4", "Follower", "sync"),
            s(5, "node-2", "Leader", "sync-recover"),
            s(6, "node-2", "Leader", "sync"),
        ];
        let m = mode_changes(&samples);
        let seq: Vec<(&str, &str)> = m.iter().map(|c| (c.from.as_str(), c.to.as_str())).collect();
        assert_eq!(seq, vec![("sync", "async"), ("async", "sync-recover"), ("sync-recover", "sync")]);
    }

    fn capture(node: &str, at: u64, values: &[(&str, &str)], unapplied: &[&str]) -> Capture {
        Capture {
            at_ns: at,
            label: "secondary during primary outage".into(),
            node: node.into(),
            region: "centralus".into(),
            values: values.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect(),
            applied_index: 0,
            unapplied_request_ids: unapplied.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn rpo_counts_sync_acknowledged_writes_missing_on_the_secondary() {
        let mut w1 = write(1, "node-1", Some("eastus2"), S, 2 * S, OpResult::Ok);
        w1.replication_mode = Some("sync".into());
        let mut w2 = write(2, "node-1", Some("eastus2"), 3 * S, 4 * S, OpResult::Ok);
        w2.replication_mode = Some("sync".into());
        w2.key = Some("q/SgxEnclave".into());
        let ops = vec![w1.clone(), w2.clone()];
        // Node 4 applied w1 and holds w2 in its log, unapplied: nothing lost.
        let caps = vec![capture("node-4", 10 * S, &[("p/SgxEnclave", "v1")], &["r-2"])];
        let r = check_rpo(&ops, &caps).expect("captures");
        assert!(r.ok, "{}", r.summary());
        assert_eq!(r.sync_acknowledged, 2);
        // One of two secondary nodes holding a write is enough.
        let caps = vec![
            capture("node-4", 10 * S, &[("p/SgxEnclave", "v1")], &[]),
            capture("node-5", 10 * S, &[], &["r-1", "r-2"]),
        ];
        assert!(check_rpo(&ops, &caps).is_some_and(|r| r.ok));
        // A lost acknowledged write.
        let caps = vec![capture("node-4", 10 * S, &[("p/SgxEnclave", "v1")], &[])];
        let r = check_rpo(&ops, &caps).expect("captures");
        assert!(!r.ok);
        assert_eq!(r.lost_write_ids, vec!["r-2".to_string()]);
        assert!((r.rpo_window_s - 6.0).abs() < 1e-6);
        // Acknowledged under async: missing is reported but allowed.
        let mut w2a = w2.clone();
        w2a.replication_mode = Some("async".into());
        let r = check_rpo(&[w1, w2a], &caps).expect("captures");
        assert!(r.ok, "{}", r.summary());
        assert_eq!(r.missing_any_mode, 1);
        assert_eq!(r.other_acknowledged, 1);
        // No capture, no verdict.
        assert!(check_rpo(&ops, &[]).is_none());
    }

    #[test]
    fn fencing_requires_silence_and_a_fence_from_the_first_answer() {
        let w = [window(10 * S, 30 * S, Expectation::Fenced { region: "eastus2".into() })];
        let sample = |at: u64, http: u16, fenced: bool| StatusSample {
            at_ns: at * S,
            node: "node-1".into(),
            region: "eastus2".into(),
            http: Some(http),
            raft_role: Some("Follower".into()),
            control_plane: Some("read-only".into()),
            fenced: Some(fenced),
            ..Default::default()
        };
        let good = vec![sample(12, 503, true), sample(13, 503, true)];
        let r = check_fencing(&[], &w, &good).expect("a fenced window");
        assert!(r.ok, "{}", r.summary());
        assert_eq!(r.nodes[0].fenced_at_s, Some(2.0));

        // Answered once before it knew: a violation, as is serving a call.
        let late = vec![sample(12, 503, false), sample(13, 503, true)];
        assert!(!check_fencing(&[], &w, &late).expect("window").ok);
        let mut served = attest(7, 14 * S, 14 * S + 1000, true);
        served.region = Some("eastus2".into());
        let r = check_fencing(&[served], &w, &good).expect("window");
        assert!(!r.ok);
        assert_eq!(r.served_calls, 1);
        // Healthy or leading is a violation even when it says fenced.
        let mut leader = sample(14, 503, true);
        leader.raft_role = Some("Leader".into());
        assert!(!check_fencing(&[], &w, &[sample(12, 503, true), leader]).expect("window").ok);
        assert!(!check_fencing(&[], &w, &[sample(12, 200, true)]).expect("window").ok);
        // Never observed: not a pass.
        assert!(!check_fencing(&[], &w, &[]).expect("window").ok);
        // No window: not applicable.
        assert!(check_fencing(&[], &[], &good).is_none());
    }
}
