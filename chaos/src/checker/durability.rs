//! Lost-write detection: "nothing acknowledged is lost" (brief §4, RPO = 0).
//!
//! Input: every write the workload attempted (with its outcome and real-time
//! interval) and, after heal, the final value of every key as read from each
//! node, optionally with the node's applied-log listing of write ids.
//!
//! A register keeps only its last value, so an acknowledged write `W` is
//! judged lost on a node when the node's final value for `W`'s key
//!
//! * is absent, or
//! * was never written by anyone (corruption or a phantom value), or
//! * comes only from writes that completed strictly before `W` was invoked
//!   (real time says `W` must have overwritten it).
//!
//! A final value coming from a write that is concurrent with or later than `W`
//! is a legitimate overwrite. Workloads should write unique values so that a
//! value identifies its write; duplicated values are handled leniently (any
//! writer of the value may explain it).
//!
//! Applied logs add: a write id applied twice (a retried command executed
//! twice), an acknowledged write missing from the log, and ids nobody issued.
//! Optionally all nodes must have converged to the same value per key.

use super::linearizability::Outcome;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// One attempted write, as recorded by the workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRecord {
    /// Unique id of the write (also what applied logs list).
    pub write_id: String,
    /// The key written.
    pub key: String,
    /// The value written (unique per workload).
    pub value: String,
    /// Invocation time (ns).
    pub invoke_ns: u64,
    /// Completion time (ns); `None` when the outcome is unknown.
    #[serde(default)]
    pub complete_ns: Option<u64>,
    /// `Ok` = acknowledged.
    pub outcome: Outcome,
}

impl WriteRecord {
    /// An acknowledged write.
    pub fn acked(write_id: &str, key: &str, value: &str, invoke_ns: u64, complete_ns: u64) -> Self {
        Self {
            write_id: write_id.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
            invoke_ns,
            complete_ns: Some(complete_ns),
            outcome: Outcome::Ok,
        }
    }

    /// Sets the outcome.
    #[must_use]
    pub fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        if outcome == Outcome::Unknown {
            self.complete_ns = None;
        }
        self
    }

    /// Completion time if the write definitely finished, else +∞.
    fn end(&self) -> u64 {
        match self.outcome {
            Outcome::Unknown => u64::MAX,
            _ => self.complete_ns.unwrap_or(u64::MAX),
        }
    }
}

/// One entry of a node's applied-log listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedEntry {
    /// The write id carried by the applied command.
    pub write_id: String,
    /// Log index, for explanations.
    #[serde(default)]
    pub index: Option<u64>,
}

/// The final state read from one node after heal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSnapshot {
    /// Node name (e.g. `eastus2-1`).
    pub node: String,
    /// Final value of every key on this node (`None` or missing = absent).
    pub values: BTreeMap<String, Option<String>>,
    /// Applied-log listing, if the node exposes one.
    #[serde(default)]
    pub applied_log: Option<Vec<AppliedEntry>>,
}

/// Options of [`check_durability`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DurabilityOptions {
    /// Report keys whose final value differs between nodes.
    pub require_convergence: bool,
    /// Values present before the run (they count as written at time 0).
    #[serde(default)]
    pub initial_values: BTreeMap<String, String>,
}

impl Default for DurabilityOptions {
    fn default() -> Self {
        Self { require_convergence: true, initial_values: BTreeMap::new() }
    }
}

/// Kinds of durability violations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityViolationKind {
    /// An acknowledged write is absent or overwritten by an older value.
    LostWrite,
    /// A node holds a value nobody wrote; acknowledged writes it replaced are lost.
    UnknownValue,
    /// A node holds a value written only by writes reported as failed.
    FailedWriteApplied,
    /// A write id appears more than once in an applied log.
    DuplicateApply,
    /// An acknowledged write id is absent from an applied log.
    MissingFromLog,
    /// An applied log lists a write id the workload never issued.
    PhantomApply,
    /// Nodes disagree on a key's final value.
    Divergence,
}

impl fmt::Display for DurabilityViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LostWrite => "lost acknowledged write",
            Self::UnknownValue => "value never written",
            Self::FailedWriteApplied => "failed write applied",
            Self::DuplicateApply => "write applied twice",
            Self::MissingFromLog => "acknowledged write missing from applied log",
            Self::PhantomApply => "unknown write applied",
            Self::Divergence => "nodes diverge",
        })
    }
}

/// One durability violation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurabilityViolation {
    /// What went wrong.
    pub kind: DurabilityViolationKind,
    /// The key concerned, if any.
    pub key: Option<String>,
    /// The node concerned (`None` for cross-node divergence).
    pub node: Option<String>,
    /// The write ids concerned (e.g. every lost acknowledged write).
    pub write_ids: Vec<String>,
    /// Human-readable explanation.
    pub explanation: String,
}

/// Result of [`check_durability`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurabilityReport {
    /// True when no violation was found.
    pub ok: bool,
    /// Number of acknowledged writes.
    pub acknowledged_writes: usize,
    /// Number of node snapshots.
    pub nodes_checked: usize,
    /// Number of distinct keys examined.
    pub keys_checked: usize,
    /// Acknowledged write ids lost on at least one node (sorted, deduplicated).
    pub lost_write_ids: Vec<String>,
    /// All violations, sorted by kind, node and key.
    pub violations: Vec<DurabilityViolation>,
}

impl DurabilityReport {
    /// Multi-line human-readable summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "durability: {} ({} acknowledged writes, {} nodes, {} keys, {} violations)",
            if self.ok { "ok" } else { "VIOLATED" },
            self.acknowledged_writes,
            self.nodes_checked,
            self.keys_checked,
            self.violations.len()
        );
        for v in &self.violations {
            s.push_str(&format!("\n  - {}: {}", v.kind, v.explanation));
        }
        s
    }
}

fn ids(ws: &[&WriteRecord]) -> Vec<String> {
    ws.iter().map(|w| w.write_id.clone()).collect()
}

fn show(v: Option<&str>) -> String {
    v.map_or_else(|| "nothing".to_owned(), |v| format!("{v:?}"))
}

/// Checks the final node states against the recorded writes.
pub fn check_durability(
    writes: &[WriteRecord],
    nodes: &[NodeSnapshot],
    options: &DurabilityOptions,
) -> DurabilityReport {
    // key -> value -> writers, and key -> acknowledged writes.
    let mut writers: HashMap<(&str, &str), Vec<&WriteRecord>> = HashMap::new();
    let mut acked: BTreeMap<&str, Vec<&WriteRecord>> = BTreeMap::new();
    let mut by_id: HashMap<&str, &WriteRecord> = HashMap::new();
    for w in writes {
        writers.entry((w.key.as_str(), w.value.as_str())).or_default().push(w);
        by_id.insert(w.write_id.as_str(), w);
        if w.outcome == Outcome::Ok {
            acked.entry(w.key.as_str()).or_default().push(w);
        }
    }
    let mut keys: BTreeSet<&str> = acked.keys().copied().collect();
    for n in nodes {
        keys.extend(n.values.keys().map(String::as_str));
    }

    let mut violations = Vec::new();
    for node in nodes {
        for &key in &keys {
            let final_value = node.values.get(key).and_then(|v| v.as_deref());
            check_key(
                node,
                key,
                final_value,
                acked.get(key).map(Vec::as_slice).unwrap_or(&[]),
                &writers,
                options,
                &mut violations,
            );
        }
        if let Some(log) = &node.applied_log {
            check_log(node, log, &acked, &by_id, &mut violations);
        }
    }

    if options.require_convergence && nodes.len() > 1 {
        for &key in &keys {
            let mut seen: BTreeMap<Option<&str>, Vec<&str>> = BTreeMap::new();
            for n in nodes {
                let v = n.values.get(key).and_then(|v| v.as_deref());
                seen.entry(v).or_default().push(n.node.as_str());
            }
            if seen.len() > 1 {
                let detail = seen
                    .iter()
                    .map(|(v, ns)| format!("{} on {}", show(*v), ns.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ");
                violations.push(DurabilityViolation {
                    kind: DurabilityViolationKind::Divergence,
                    key: Some(key.to_owned()),
                    node: None,
                    write_ids: Vec::new(),
                    explanation: format!("nodes disagree on key {key:?}: {detail}"),
                });
            }
        }
    }

    violations.sort_by(|a, b| (a.kind, &a.node, &a.key).cmp(&(b.kind, &b.node, &b.key)));
    let lost: BTreeSet<String> = violations
        .iter()
        .filter(|v| {
            matches!(
                v.kind,
                DurabilityViolationKind::LostWrite
                    | DurabilityViolationKind::UnknownValue
                    | DurabilityViolationKind::MissingFromLog
            )
        })
        .flat_map(|v| v.write_ids.iter().cloned())
        .collect();
    DurabilityReport {
        ok: violations.is_empty(),
        acknowledged_writes: acked.values().map(Vec::len).sum(),
        nodes_checked: nodes.len(),
        keys_checked: keys.len(),
        lost_write_ids: lost.into_iter().collect(),
        violations,
    }
}

fn check_key(
    node: &NodeSnapshot,
    key: &str,
    final_value: Option<&str>,
    acked: &[&WriteRecord],
    writers: &HashMap<(&str, &str), Vec<&WriteRecord>>,
    options: &DurabilityOptions,
    out: &mut Vec<DurabilityViolation>,
) {
    let n = node.node.as_str();
    let violation = |kind, write_ids, explanation| DurabilityViolation {
        kind,
        key: Some(key.to_owned()),
        node: Some(n.to_owned()),
        write_ids,
        explanation,
    };
    let Some(value) = final_value else {
        if !acked.is_empty() {
            out.push(violation(
                DurabilityViolationKind::LostWrite,
                ids(acked),
                format!(
                    "node {n} has no value for key {key:?}, losing {} acknowledged write(s): {}",
                    acked.len(),
                    ids(acked).join(", ")
                ),
            ));
        }
        return;
    };
    let is_initial = options.initial_values.get(key).map(String::as_str) == Some(value);
    let value_writers = writers.get(&(key, value)).map(Vec::as_slice).unwrap_or(&[]);
    if value_writers.is_empty() && !is_initial {
        out.push(violation(
            DurabilityViolationKind::UnknownValue,
            ids(acked),
            format!(
                "node {n} holds {value:?} for key {key:?}, a value no client ever wrote; it \
                 overwrote {} acknowledged write(s){}",
                acked.len(),
                if acked.is_empty() { String::new() } else { format!(": {}", ids(acked).join(", ")) }
            ),
        ));
        return;
    }
    let live: Vec<&WriteRecord> = value_writers.iter().copied().filter(|w| w.outcome != Outcome::Failed).collect();
    if !value_writers.is_empty() && live.is_empty() && !is_initial {
        out.push(violation(
            DurabilityViolationKind::FailedWriteApplied,
            ids(value_writers),
            format!(
                "node {n} holds {value:?} for key {key:?}, written only by write(s) reported as \
                 failed: {}",
                ids(value_writers).join(", ")
            ),
        ));
        // Fall through: acknowledged writes may also have been lost.
    }
    // The latest end among the writes that could explain the value; the initial
    // value counts as written at time 0. Failed writers count too so that a
    // failed-but-applied write is not double-reported as a loss.
    let explain_end = value_writers.iter().map(|w| w.end()).chain(is_initial.then_some(0)).max().unwrap_or(0);
    let lost: Vec<&WriteRecord> =
        acked.iter().copied().filter(|w| w.value != value && explain_end < w.invoke_ns).collect();
    if !lost.is_empty() {
        let source = value_writers
            .iter()
            .max_by_key(|w| w.end())
            .map(|w| format!("write {} which completed at {} ns", w.write_id, w.end()))
            .unwrap_or_else(|| "the initial state".to_owned());
        out.push(violation(
            DurabilityViolationKind::LostWrite,
            ids(&lost),
            format!(
                "node {n} holds {value:?} for key {key:?}, from {source}; acknowledged write(s) \
                 invoked later are lost: {}",
                lost.iter()
                    .map(|w| format!("{} (value {:?}, invoked at {} ns)", w.write_id, w.value, w.invoke_ns))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
}

fn check_log(
    node: &NodeSnapshot,
    log: &[AppliedEntry],
    acked: &BTreeMap<&str, Vec<&WriteRecord>>,
    by_id: &HashMap<&str, &WriteRecord>,
    out: &mut Vec<DurabilityViolation>,
) {
    let n = node.node.as_str();
    let mut seen: BTreeMap<&str, Vec<Option<u64>>> = BTreeMap::new();
    for e in log {
        seen.entry(e.write_id.as_str()).or_default().push(e.index);
    }
    for (id, indexes) in &seen {
        let key = by_id.get(id).map(|w| w.key.clone());
        if indexes.len() > 1 {
            let at = indexes
                .iter()
                .map(|i| i.map_or_else(|| "?".to_owned(), |i| i.to_string()))
                .collect::<Vec<_>>()
                .join(", ");
            out.push(DurabilityViolation {
                kind: DurabilityViolationKind::DuplicateApply,
                key: key.clone(),
                node: Some(n.to_owned()),
                write_ids: vec![(*id).to_owned()],
                explanation: format!("node {n} applied write {id} {} times (log indexes {at})", indexes.len()),
            });
        }
        if !by_id.contains_key(id) {
            out.push(DurabilityViolation {
                kind: DurabilityViolationKind::PhantomApply,
                key: None,
                node: Some(n.to_owned()),
                write_ids: vec![(*id).to_owned()],
                explanation: format!("node {n} applied write {id}, which no client issued"),
            });
        }
    }
    for (key, ws) in acked {
        let missing: Vec<&WriteRecord> =
            ws.iter().copied().filter(|w| !seen.contains_key(w.write_id.as_str())).collect();
        if !missing.is_empty() {
            out.push(DurabilityViolation {
                kind: DurabilityViolationKind::MissingFromLog,
                key: Some((*key).to_owned()),
                node: Some(n.to_owned()),
                write_ids: ids(&missing),
                explanation: format!(
                    "node {n}'s applied log lacks {} acknowledged write(s) to key {key:?}: {}",
                    missing.len(),
                    ids(&missing).join(", ")
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, kv: &[(&str, Option<&str>)]) -> NodeSnapshot {
        NodeSnapshot {
            node: name.to_owned(),
            values: kv.iter().map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned))).collect(),
            applied_log: None,
        }
    }

    fn log(ids: &[&str]) -> Option<Vec<AppliedEntry>> {
        Some(
            ids.iter()
                .enumerate()
                .map(|(i, id)| AppliedEntry { write_id: (*id).to_owned(), index: Some(i as u64 + 1) })
                .collect(),
        )
    }

    fn writes() -> Vec<WriteRecord> {
        vec![
            WriteRecord::acked("w1", "p1", "a", 0, 10),
            WriteRecord::acked("w2", "p1", "b", 20, 30),
            WriteRecord::acked("w3", "p2", "x", 0, 10),
        ]
    }

    #[test]
    fn clean_run_passes() {
        let mut n1 = node("east-1", &[("p1", Some("b")), ("p2", Some("x"))]);
        n1.applied_log = log(&["w1", "w3", "w2"]);
        let n2 = node("central-1", &[("p1", Some("b")), ("p2", Some("x"))]);
        let r = check_durability(&writes(), &[n1, n2], &DurabilityOptions::default());
        assert!(r.ok, "{}", r.summary());
        assert_eq!(r.acknowledged_writes, 3);
        assert_eq!(r.keys_checked, 2);
    }

    #[test]
    fn missing_key_loses_acknowledged_writes() {
        let n1 = node("east-1", &[("p1", Some("b")), ("p2", Some("x"))]);
        let n2 = node("central-1", &[("p1", Some("b"))]);
        let r = check_durability(&writes(), &[n1, n2], &DurabilityOptions::default());
        assert!(!r.ok);
        assert_eq!(r.lost_write_ids, vec!["w3".to_owned()]);
        let lost = r.violations.iter().find(|v| v.kind == DurabilityViolationKind::LostWrite).cloned();
        let Some(lost) = lost else { panic!("no lost write: {}", r.summary()) };
        assert_eq!(lost.node.as_deref(), Some("central-1"));
        assert_eq!(lost.key.as_deref(), Some("p2"));
        assert!(lost.explanation.contains("w3"));
    }

    #[test]
    fn overwritten_by_older_value_is_a_lost_write() {
        // central-1 still holds "a" although w2 ("b") was acknowledged after
        // w1 completed: w2 is lost there.
        let n1 = node("east-1", &[("p1", Some("b")), ("p2", Some("x"))]);
        let n2 = node("central-1", &[("p1", Some("a")), ("p2", Some("x"))]);
        let opts = DurabilityOptions { require_convergence: false, ..DurabilityOptions::default() };
        let r = check_durability(&writes(), &[n1, n2], &opts);
        assert!(!r.ok);
        assert_eq!(r.violations.len(), 1, "{}", r.summary());
        assert_eq!(r.violations[0].kind, DurabilityViolationKind::LostWrite);
        assert_eq!(r.violations[0].write_ids, vec!["w2".to_owned()]);
        assert!(r.summary().contains("central-1"));
    }

    #[test]
    fn concurrent_overwrite_is_not_a_loss() {
        // w1 and w2 overlap: either may be last.
        let ws = [WriteRecord::acked("w1", "k", "a", 0, 100), WriteRecord::acked("w2", "k", "b", 50, 150)];
        let r = check_durability(
            &ws,
            &[node("n1", &[("k", Some("a"))]), node("n2", &[("k", Some("a"))])],
            &DurabilityOptions::default(),
        );
        assert!(r.ok, "{}", r.summary());
        // An unknown-outcome write may legitimately be the last value too.
        let ws = [
            WriteRecord::acked("w1", "k", "a", 0, 10),
            WriteRecord::acked("w2", "k", "b", 20, 30).with_outcome(Outcome::Unknown),
        ];
        let r = check_durability(&ws, &[node("n1", &[("k", Some("b"))])], &DurabilityOptions::default());
        assert!(r.ok, "{}", r.summary());
    }

    #[test]
    fn value_never_written_is_caught() {
        let n1 = node("east-1", &[("p1", Some("garbage")), ("p2", Some("x"))]);
        let r = check_durability(&writes(), &[n1], &DurabilityOptions::default());
        assert!(!r.ok);
        let v = &r.violations[0];
        assert_eq!(v.kind, DurabilityViolationKind::UnknownValue);
        assert_eq!(v.write_ids, vec!["w1".to_owned(), "w2".to_owned()]);
        assert!(v.explanation.contains("no client ever wrote"));
        assert_eq!(r.lost_write_ids, vec!["w1".to_owned(), "w2".to_owned()]);
    }

    #[test]
    fn double_applied_write_is_caught() {
        let mut n1 = node("east-1", &[("p1", Some("b")), ("p2", Some("x"))]);
        n1.applied_log = log(&["w1", "w2", "w3", "w2"]);
        let r = check_durability(&writes(), &[n1], &DurabilityOptions::default());
        assert!(!r.ok);
        assert_eq!(r.violations.len(), 1, "{}", r.summary());
        let v = &r.violations[0];
        assert_eq!(v.kind, DurabilityViolationKind::DuplicateApply);
        assert_eq!(v.write_ids, vec!["w2".to_owned()]);
        assert_eq!(v.key.as_deref(), Some("p1"));
        assert!(v.explanation.contains("2 times"), "{}", v.explanation);
        let json = serde_json::to_string(&r).unwrap_or_default();
        assert!(json.contains("duplicate_apply"));
    }

    #[test]
    fn log_gaps_phantoms_and_failed_writes_are_caught() {
        let mut ws = writes();
        ws.push(WriteRecord::acked("w4", "p2", "y", 40, 50).with_outcome(Outcome::Failed));
        let mut n1 = node("east-1", &[("p1", Some("b")), ("p2", Some("y"))]);
        n1.applied_log = log(&["w1", "w3", "w4", "zz"]);
        let r = check_durability(&ws, &[n1], &DurabilityOptions::default());
        let kinds: Vec<_> = r.violations.iter().map(|v| v.kind).collect();
        assert!(kinds.contains(&DurabilityViolationKind::FailedWriteApplied), "{kinds:?}");
        assert!(kinds.contains(&DurabilityViolationKind::MissingFromLog), "{kinds:?}");
        assert!(kinds.contains(&DurabilityViolationKind::PhantomApply), "{kinds:?}");
        assert_eq!(r.lost_write_ids, vec!["w2".to_owned()]);
    }

    #[test]
    fn divergence_is_reported() {
        let ws = [WriteRecord::acked("w1", "k", "a", 0, 100), WriteRecord::acked("w2", "k", "b", 50, 150)];
        let r = check_durability(
            &ws,
            &[node("n1", &[("k", Some("a"))]), node("n2", &[("k", Some("b"))])],
            &DurabilityOptions::default(),
        );
        assert!(!r.ok);
        assert_eq!(r.violations.len(), 1);
        assert_eq!(r.violations[0].kind, DurabilityViolationKind::Divergence);
        assert!(r.lost_write_ids.is_empty());
    }

    #[test]
    fn initial_values_count_as_written_at_time_zero() {
        let mut opts = DurabilityOptions::default();
        opts.initial_values.insert("k".into(), "seed".into());
        let r = check_durability(&[], &[node("n1", &[("k", Some("seed"))])], &opts);
        assert!(r.ok, "{}", r.summary());
        let ws = [WriteRecord::acked("w1", "k", "a", 5, 10)];
        let r = check_durability(&ws, &[node("n1", &[("k", Some("seed"))])], &opts);
        assert_eq!(r.lost_write_ids, vec!["w1".to_owned()]);
    }
}
