//! Linearizability checking of per-key register histories.
//!
//! The model is a register per key: `Write{key, value}` sets it, `Read{key}`
//! returns its value (`None` until the first write). Each operation carries
//! its invoke and completion times (nanoseconds on one clock) and an outcome:
//!
//! * [`Outcome::Ok`]: it took effect atomically somewhere in
//!   `[invoke, complete]`;
//! * [`Outcome::Failed`]: it definitely did not take effect (explicit error
//!   such as `ControlPlaneReadOnly`), so it is left out of the search;
//! * [`Outcome::Unknown`]: timed out or indeterminate; it may or may not have
//!   taken effect, at any time after its invocation (completion = +∞). Reads
//!   with this outcome constrain nothing and are left out.
//!
//! Because registers of different keys are independent, linearizability is
//! compositional (P-compositionality): each key is checked on its own, which
//! keeps the search small.
//!
//! The search per key is the one Porcupine implements: the history becomes a
//! list of call/return entries sorted by time; a depth-first search tries to
//! "lift" (linearize) each pending call in turn, backtracking when it meets the
//! return of an operation it has not linearized yet. A cache of
//! (set of linearized operations, register value) pairs prunes states already
//! explored, which is what makes the search practical. The cache size is
//! bounded by [`CheckOptions::max_states_per_key`] and the run by an optional
//! time limit; when a bound is hit the key's verdict is [`Verdict::Unknown`]
//! rather than a guess.
//!
//! Ties: an operation invoked at exactly the time another completes is treated
//! as concurrent with it (calls sort before returns), the lenient choice, so a
//! coarse clock never produces a false violation.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

/// What happened to an operation, as far as the client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged: took effect between invoke and complete.
    Ok,
    /// Definitely did not take effect.
    Failed,
    /// May or may not have taken effect, at any time after invoke.
    Unknown,
}

/// The operation on a key's register.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OpKind {
    /// Set the register to `value`.
    Write {
        /// The value written; workloads write unique values.
        value: String,
    },
    /// Read the register; `value` is what the read returned (`None` = absent).
    Read {
        /// The observed value.
        value: Option<String>,
    },
}

/// One recorded client operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Unique id of the operation within the history.
    pub id: u64,
    /// Who issued it (client, node, region), for explanations only.
    #[serde(default)]
    pub process: String,
    /// The register (e.g. `provider/policy-type`).
    pub key: String,
    /// Write or read.
    pub kind: OpKind,
    /// Invocation time in nanoseconds.
    pub invoke_ns: u64,
    /// Completion time in nanoseconds; required for `Ok` and `Failed`,
    /// ignored for `Unknown` (treated as +∞).
    #[serde(default)]
    pub complete_ns: Option<u64>,
    /// What the client learnt.
    pub outcome: Outcome,
}

impl Operation {
    /// An acknowledged write.
    pub fn write(id: u64, key: &str, value: &str, invoke_ns: u64, complete_ns: u64) -> Self {
        Self {
            id,
            process: String::new(),
            key: key.to_owned(),
            kind: OpKind::Write { value: value.to_owned() },
            invoke_ns,
            complete_ns: Some(complete_ns),
            outcome: Outcome::Ok,
        }
    }

    /// A successful read that returned `value`.
    pub fn read(id: u64, key: &str, value: Option<&str>, invoke_ns: u64, complete_ns: u64) -> Self {
        Self {
            id,
            process: String::new(),
            key: key.to_owned(),
            kind: OpKind::Read { value: value.map(str::to_owned) },
            invoke_ns,
            complete_ns: Some(complete_ns),
            outcome: Outcome::Ok,
        }
    }

    /// Marks the operation as indeterminate (timed out).
    #[must_use]
    pub fn unknown(mut self) -> Self {
        self.outcome = Outcome::Unknown;
        self
    }

    /// Marks the operation as definitely failed.
    #[must_use]
    pub fn failed(mut self) -> Self {
        self.outcome = Outcome::Failed;
        self
    }

    /// Sets the issuing process (for explanations).
    #[must_use]
    pub fn by(mut self, process: &str) -> Self {
        self.process = process.to_owned();
        self
    }

    fn describe(&self) -> String {
        match &self.kind {
            OpKind::Write { value } => format!("write({}, {value:?})", self.key),
            OpKind::Read { value: Some(v) } => format!("read({}) -> {v:?}", self.key),
            OpKind::Read { value: None } => format!("read({}) -> none", self.key),
        }
    }

    fn summary(&self) -> OpSummary {
        OpSummary {
            id: self.id,
            process: self.process.clone(),
            description: self.describe(),
            invoke_ns: self.invoke_ns,
            complete_ns: match self.outcome {
                Outcome::Unknown => None,
                _ => self.complete_ns,
            },
            outcome: self.outcome,
        }
    }
}

/// Malformed histories (a bug in the recorder, not a consistency violation).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckError {
    /// Two operations share an id.
    #[error("operation id {0} appears more than once in the history")]
    DuplicateId(u64),
    /// An `Ok`/`Failed` operation has no completion time.
    #[error("operation {0} is {1:?} but has no completion time")]
    MissingCompletion(u64, Outcome),
    /// Completion before invocation.
    #[error("operation {id} completes at {complete_ns} ns, before its invocation at {invoke_ns} ns")]
    CompletesBeforeInvoke {
        /// Operation id.
        id: u64,
        /// Invocation time.
        invoke_ns: u64,
        /// Completion time.
        complete_ns: u64,
    },
}

/// Bounds and starting state of the search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckOptions {
    /// Maximum number of memoized states per key before giving up with
    /// [`Verdict::Unknown`]. Each state holds a bitset of the key's operations.
    pub max_states_per_key: usize,
    /// Wall-clock limit for the whole check; `None` = unlimited.
    pub time_limit: Option<Duration>,
    /// Register values that existed before the history started (default: none).
    #[serde(default)]
    pub initial_values: BTreeMap<String, String>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            max_states_per_key: 1_000_000,
            time_limit: Some(Duration::from_secs(60)),
            initial_values: BTreeMap::new(),
        }
    }
}

/// Verdict of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// No linearization exists; see the violation.
    NotLinearizable,
    /// The search hit its bounds before deciding.
    Unknown,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "NOT linearizable",
            Verdict::Unknown => "unknown (search bound reached)",
        })
    }
}

/// A compact, human-readable view of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpSummary {
    /// Operation id.
    pub id: u64,
    /// Issuing process.
    pub process: String,
    /// E.g. `read(k) -> "v1"`.
    pub description: String,
    /// Invocation time (ns).
    pub invoke_ns: u64,
    /// Completion time (ns); `None` = unknown outcome (+∞).
    pub complete_ns: Option<u64>,
    /// Outcome as recorded.
    pub outcome: Outcome,
}

impl fmt::Display for OpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {}", self.id, self.description)?;
        if !self.process.is_empty() {
            write!(f, " by {}", self.process)?;
        }
        match self.complete_ns {
            Some(c) => write!(f, " [{} ns, {} ns]", self.invoke_ns, c),
            None => write!(f, " [{} ns, +inf) (outcome unknown)", self.invoke_ns),
        }
    }
}

/// Why a key's history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The key whose history is not linearizable.
    pub key: String,
    /// The operation that completed but could not be linearized after the
    /// longest consistent prefix the search found.
    pub op: OpSummary,
    /// Length of that longest consistent prefix.
    pub prefix_len: usize,
    /// Its last few operations, in linearization order.
    pub prefix_tail: Vec<OpSummary>,
    /// Register value after the prefix.
    pub register_after_prefix: Option<String>,
    /// Direct anomalies found on this key (e.g. a read of a value never written).
    pub anomalies: Vec<String>,
    /// One-paragraph explanation.
    pub explanation: String,
}

/// A key the search could not decide within its bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undecided {
    /// The key.
    pub key: String,
    /// States memoized when the search stopped.
    pub states_explored: usize,
    /// Which bound stopped it.
    pub reason: String,
}

/// Per-key statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyResult {
    /// The key.
    pub key: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Operations entering the search (after dropping failed writes, reads
    /// without a result and unknown writes nobody observed).
    pub ops: usize,
    /// Memoized states.
    pub states_explored: usize,
}

/// Result of [`check_linearizability`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearizabilityReport {
    /// Overall verdict: not linearizable if any key is, else unknown if any key
    /// is undecided, else linearizable.
    pub verdict: Verdict,
    /// Number of distinct keys.
    pub keys_checked: usize,
    /// Operations that entered the search.
    pub ops_checked: usize,
    /// Operations left out (failed, reads without result, unobserved unknown writes).
    pub ops_ignored: usize,
    /// One entry per non-linearizable key.
    pub violations: Vec<Violation>,
    /// Keys whose search hit a bound.
    pub undecided: Vec<Undecided>,
    /// Per-key details, sorted by key.
    pub per_key: Vec<KeyResult>,
}

impl LinearizabilityReport {
    /// True when the verdict is [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        self.verdict == Verdict::Linearizable
    }

    /// Multi-line human-readable summary for reports and logs.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "linearizability: {} ({} keys, {} ops checked, {} ignored)",
            self.verdict, self.keys_checked, self.ops_checked, self.ops_ignored
        );
        for v in &self.violations {
            s.push_str("\n  - ");
            s.push_str(&v.explanation);
        }
        for u in &self.undecided {
            s.push_str(&format!("\n  - key {:?} undecided after {} states: {}", u.key, u.states_explored, u.reason));
        }
        s
    }
}

/// Checks a multi-key register history for linearizability.
///
/// Returns an error only for malformed histories; consistency problems are
/// reported in the [`LinearizabilityReport`].
pub fn check_linearizability(
    history: &[Operation],
    options: &CheckOptions,
) -> Result<LinearizabilityReport, CheckError> {
    validate(history)?;
    let deadline = options.time_limit.map(|d| Instant::now() + d);

    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }

    let mut report = LinearizabilityReport {
        verdict: Verdict::Linearizable,
        keys_checked: by_key.len(),
        ops_checked: 0,
        ops_ignored: 0,
        violations: Vec::new(),
        undecided: Vec::new(),
        per_key: Vec::new(),
    };
    for (key, ops) in by_key {
        let initial = options.initial_values.get(key).map(String::as_str);
        let keyed = KeyHistory::build(key, &ops, initial);
        report.ops_checked += keyed.ops.len();
        report.ops_ignored += ops.len() - keyed.ops.len();
        let outcome = keyed.search(options.max_states_per_key, deadline);
        let (verdict, states) = match outcome {
            SearchOutcome::Linearizable { states } => (Verdict::Linearizable, states),
            SearchOutcome::Violation { states, failure } => {
                report.violations.push(keyed.explain(&failure, anomalies(key, &ops)));
                (Verdict::NotLinearizable, states)
            }
            SearchOutcome::Bounded { states, reason } => {
                report.undecided.push(Undecided { key: key.to_owned(), states_explored: states, reason });
                (Verdict::Unknown, states)
            }
        };
        report.per_key.push(KeyResult { key: key.to_owned(), verdict, ops: keyed.ops.len(), states_explored: states });
    }
    report.verdict = if !report.violations.is_empty() {
        Verdict::NotLinearizable
    } else if !report.undecided.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Linearizable
    };
    Ok(report)
}

fn validate(history: &[Operation]) -> Result<(), CheckError> {
    let mut ids = HashSet::with_capacity(history.len());
    for op in history {
        if !ids.insert(op.id) {
            return Err(CheckError::DuplicateId(op.id));
        }
        match (op.outcome, op.complete_ns) {
            (Outcome::Unknown, _) => {}
            (o, None) => return Err(CheckError::MissingCompletion(op.id, o)),
            (_, Some(c)) if c < op.invoke_ns => {
                return Err(CheckError::CompletesBeforeInvoke { id: op.id, invoke_ns: op.invoke_ns, complete_ns: c })
            }
            _ => {}
        }
    }
    Ok(())
}

/// Direct, search-free anomalies on one key's reads: they make violations
/// easy to understand ("read a value nobody wrote").
fn anomalies(key: &str, ops: &[&Operation]) -> Vec<String> {
    let mut writers: HashMap<&str, Vec<&Operation>> = HashMap::new();
    for op in ops {
        if let OpKind::Write { value } = &op.kind {
            writers.entry(value.as_str()).or_default().push(op);
        }
    }
    let mut out = Vec::new();
    for op in ops {
        let (OpKind::Read { value: Some(v) }, Outcome::Ok) = (&op.kind, op.outcome) else {
            continue;
        };
        let complete = op.complete_ns.unwrap_or(u64::MAX);
        match writers.get(v.as_str()) {
            None => out.push(format!("{} returned {v:?}, a value never written to key {key:?}", op.summary())),
            Some(ws) if ws.iter().all(|w| w.outcome == Outcome::Failed) => out.push(format!(
                "{} returned {v:?}, written only by write(s) reported as failed: {}",
                op.summary(),
                join_ids(ws)
            )),
            Some(ws) if ws.iter().all(|w| w.invoke_ns > complete) => out.push(format!(
                "{} returned {v:?} before any write of it was invoked: {}",
                op.summary(),
                join_ids(ws)
            )),
            Some(_) => {}
        }
    }
    out
}

fn join_ids(ops: &[&Operation]) -> String {
    ops.iter().map(|o| format!("#{}", o.id)).collect::<Vec<_>>().join(", ")
}

/// An operation as the search sees it: values interned to small integers.
struct SearchOp<'a> {
    orig: &'a Operation,
    is_write: bool,
    /// Written value, or value the read returned; 0 = none.
    value: u32,
}

struct KeyHistory<'a> {
    key: &'a str,
    initial: u32,
    ops: Vec<SearchOp<'a>>,
    /// Interned value -> text (index 0 = none).
    values: Vec<Option<String>>,
}

/// Where the search failed: the deepest prefix and the op it could not place.
struct Failure {
    prefix_len: usize,
    prefix_tail: Vec<usize>,
    state: u32,
    blocking: usize,
}

enum SearchOutcome {
    Linearizable { states: usize },
    Violation { states: usize, failure: Failure },
    Bounded { states: usize, reason: String },
}

const NONE: usize = usize::MAX;
const PREFIX_TAIL: usize = 10;

/// A fixed-size bitset of linearized operations (memoization key).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

impl<'a> KeyHistory<'a> {
    fn build(key: &'a str, ops: &[&'a Operation], initial: Option<&str>) -> Self {
        // Values read by successful reads: unknown writes of anything else can
        // be dropped (placing them last, where they affect nothing, is always
        // allowed since their completion is +inf), which prunes the search.
        let observed: HashSet<&str> = ops
            .iter()
            .filter_map(|o| match (&o.kind, o.outcome) {
                (OpKind::Read { value: Some(v) }, Outcome::Ok) => Some(v.as_str()),
                _ => None,
            })
            .collect();
        let mut values: Vec<Option<String>> = vec![None];
        let mut interned: HashMap<String, u32> = HashMap::new();
        let mut intern = |v: &str, values: &mut Vec<Option<String>>| -> u32 {
            if let Some(&id) = interned.get(v) {
                return id;
            }
            values.push(Some(v.to_owned()));
            // More than 4 billion distinct values per key cannot be checked anyway.
            let id = u32::try_from(values.len() - 1).unwrap_or(u32::MAX);
            interned.insert(v.to_owned(), id);
            id
        };
        let initial_id = match initial {
            Some(v) => intern(v, &mut values),
            None => 0,
        };
        let mut search_ops = Vec::new();
        for op in ops {
            let keep = match (&op.kind, op.outcome) {
                (_, Outcome::Failed) => None,
                (OpKind::Read { .. }, Outcome::Unknown) => None,
                (OpKind::Write { value }, Outcome::Unknown) if !observed.contains(value.as_str()) => None,
                (OpKind::Write { value }, _) => Some((true, intern(value, &mut values))),
                (OpKind::Read { value: Some(v) }, _) => Some((false, intern(v, &mut values))),
                (OpKind::Read { value: None }, _) => Some((false, 0)),
            };
            if let Some((is_write, value)) = keep {
                search_ops.push(SearchOp { orig: op, is_write, value });
            }
        }
        Self { key, initial: initial_id, ops: search_ops, values }
    }

    fn complete_time(op: &Operation) -> u64 {
        match op.outcome {
            Outcome::Unknown => u64::MAX,
            _ => op.complete_ns.unwrap_or(u64::MAX),
        }
    }

    /// Wing & Gong / Lowe DFS over a doubly linked list of call/return entries.
    fn search(&self, max_states: usize, deadline: Option<Instant>) -> SearchOutcome {
        let n = self.ops.len();
        if n == 0 {
            return SearchOutcome::Linearizable { states: 0 };
        }
        // Entries: (time, is_return, op). Calls sort before returns at equal
        // times, so touching intervals count as concurrent.
        let mut entries: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
        for (i, op) in self.ops.iter().enumerate() {
            entries.push((op.orig.invoke_ns, false, i));
            entries.push((Self::complete_time(op.orig), true, i));
        }
        entries.sort_unstable();

        // Node 0 is the head sentinel; entry k is node k + 1.
        let len = entries.len() + 1;
        let mut next = vec![NONE; len];
        let mut prev = vec![NONE; len];
        let mut node_op = vec![0usize; len];
        let mut is_call = vec![false; len];
        let mut matching = vec![NONE; len];
        let mut call_node = vec![NONE; n];
        for (k, &(_, is_ret, op)) in entries.iter().enumerate() {
            let node = k + 1;
            prev[node] = k;
            next[k] = node;
            node_op[node] = op;
            is_call[node] = !is_ret;
            if is_ret {
                matching[call_node[op]] = node;
            } else {
                call_node[op] = node;
            }
        }

        let lift = |c: usize, next: &mut [usize], prev: &mut [usize]| {
            for node in [c, matching[c]] {
                next[prev[node]] = next[node];
                if next[node] != NONE {
                    prev[next[node]] = prev[node];
                }
            }
        };
        let unlift = |c: usize, next: &mut [usize], prev: &mut [usize]| {
            for node in [matching[c], c] {
                next[prev[node]] = node;
                if next[node] != NONE {
                    prev[next[node]] = node;
                }
            }
        };

        let mut state = self.initial;
        let mut linearized = Bits::new(n);
        let mut cache: HashSet<(Bits, u32)> = HashSet::new();
        let mut calls: Vec<(usize, u32)> = Vec::new();
        let mut best: Option<Failure> = None;
        let mut entry = next[0];
        let mut steps: u64 = 0;

        while next[0] != NONE {
            steps += 1;
            if steps & 4095 == 0 {
                if let Some(d) = deadline {
                    if Instant::now() >= d {
                        return SearchOutcome::Bounded { states: cache.len(), reason: "time limit reached".into() };
                    }
                }
            }
            if entry == NONE {
                // Cannot happen: every call is followed by its return. Treat
                // defensively as a dead end.
                return SearchOutcome::Bounded {
                    states: cache.len(),
                    reason: "internal: ran past the end of the entry list".into(),
                };
            }
            if is_call[entry] {
                let i = node_op[entry];
                let op = &self.ops[i];
                let (ok, new_state) = if op.is_write { (true, op.value) } else { (op.value == state, state) };
                if ok {
                    linearized.set(i);
                    if cache.insert((linearized.clone(), new_state)) {
                        if cache.len() > max_states {
                            return SearchOutcome::Bounded {
                                states: cache.len(),
                                reason: format!("more than {max_states} states"),
                            };
                        }
                        calls.push((entry, state));
                        state = new_state;
                        lift(entry, &mut next, &mut prev);
                        entry = next[0];
                        continue;
                    }
                    linearized.clear(i);
                }
                entry = next[entry];
            } else {
                // The return of an op not linearized yet: dead end.
                if best.as_ref().is_none_or(|b| calls.len() > b.prefix_len) {
                    best = Some(Failure {
                        prefix_len: calls.len(),
                        prefix_tail: calls.iter().rev().take(PREFIX_TAIL).rev().map(|&(c, _)| node_op[c]).collect(),
                        state,
                        blocking: node_op[entry],
                    });
                }
                let Some((c, s)) = calls.pop() else {
                    let failure = best.unwrap_or(Failure {
                        prefix_len: 0,
                        prefix_tail: Vec::new(),
                        state: self.initial,
                        blocking: node_op[entry],
                    });
                    return SearchOutcome::Violation { states: cache.len(), failure };
                };
                linearized.clear(node_op[c]);
                state = s;
                unlift(c, &mut next, &mut prev);
                entry = next[c];
            }
        }
        SearchOutcome::Linearizable { states: cache.len() }
    }

    fn value_text(&self, v: u32) -> Option<String> {
        self.values.get(v as usize).cloned().flatten()
    }

    fn explain(&self, f: &Failure, anomalies: Vec<String>) -> Violation {
        let blocking = &self.ops[f.blocking];
        let op = blocking.orig.summary();
        let register = self.value_text(f.state);
        let shown = |v: &Option<String>| match v {
            Some(v) => format!("{v:?}"),
            None => "none".to_owned(),
        };
        let reason = if blocking.is_write {
            "every placement of it within its interval leads to a state the search already \
             refuted"
                .to_owned()
        } else {
            format!(
                "it returned {} but, in every order consistent with real time, the register \
                 could not hold that value at any point before the read completed (after the \
                 longest consistent prefix it held {})",
                shown(&self.value_text(blocking.value)),
                shown(&register)
            )
        };
        let prefix_tail: Vec<OpSummary> = f.prefix_tail.iter().map(|&i| self.ops[i].orig.summary()).collect();
        let mut explanation = format!(
            "key {:?} is not linearizable: operation {op} completed but cannot be linearized: \
             {reason}.",
            self.key
        );
        if let Some(last) = prefix_tail.last() {
            explanation.push_str(&format!(" Longest consistent prefix: {} op(s), ending with {last}.", f.prefix_len));
        }
        for a in &anomalies {
            explanation.push_str(&format!(" Anomaly: {a}."));
        }
        Violation {
            key: self.key.to_owned(),
            op,
            prefix_len: f.prefix_len,
            prefix_tail,
            register_after_prefix: register,
            anomalies,
            explanation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn check(h: &[Operation]) -> LinearizabilityReport {
        match check_linearizability(h, &CheckOptions::default()) {
            Ok(r) => r,
            Err(e) => panic!("malformed history: {e}"),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert!(check(&[]).is_linearizable());
    }

    #[test]
    fn sequential_write_then_read() {
        let h = [
            Operation::write(1, "k", "a", 0, 10),
            Operation::read(2, "k", Some("a"), 20, 30),
            Operation::read(3, "k2", None, 20, 30),
        ];
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Linearizable, "{}", r.summary());
        assert_eq!(r.keys_checked, 2);
    }

    #[test]
    fn stale_read_after_completed_write_is_caught() {
        let h = [
            Operation::write(1, "k", "a", 0, 10),
            Operation::write(2, "k", "b", 20, 30),
            Operation::read(3, "k", Some("a"), 40, 50).by("client-2@centralus"),
        ];
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::NotLinearizable);
        assert_eq!(r.violations.len(), 1);
        let v = &r.violations[0];
        assert_eq!(v.key, "k");
        assert_eq!(v.op.id, 3);
        assert!(v.explanation.contains("#3"), "{}", v.explanation);
        assert!(v.explanation.contains("client-2@centralus"));
        // Serializable for the drill report.
        let json = serde_json::to_string(&r).unwrap_or_default();
        assert!(json.contains("not_linearizable"));
    }

    #[test]
    fn read_of_initial_value_after_write_is_caught() {
        let h = [Operation::write(1, "k", "a", 0, 10), Operation::read(2, "k", None, 11, 12)];
        assert_eq!(check(&h).verdict, Verdict::NotLinearizable);
    }

    #[test]
    fn concurrent_writes_reads_in_both_orders() {
        // Two overlapping writes; one reader sees a then b, another b then ...
        // consistent with the order a < b: linearizable.
        let ok = [
            Operation::write(1, "k", "a", 0, 100),
            Operation::write(2, "k", "b", 0, 100),
            Operation::read(3, "k", Some("a"), 10, 20),
            Operation::read(4, "k", Some("b"), 30, 40),
            Operation::read(5, "k", Some("b"), 110, 120),
        ];
        assert!(check(&ok).is_linearizable());
        // The mirrored order (b then a) is just as valid.
        let ok2 = [
            Operation::write(1, "k", "a", 0, 100),
            Operation::write(2, "k", "b", 0, 100),
            Operation::read(3, "k", Some("b"), 10, 20),
            Operation::read(4, "k", Some("a"), 30, 40),
            Operation::read(5, "k", Some("a"), 110, 120),
        ];
        assert!(check(&ok2).is_linearizable());
        // But after both writes completed, readers cannot disagree in both
        // orders: a, b, a needs a third write.
        let bad = [
            Operation::write(1, "k", "a", 0, 100),
            Operation::write(2, "k", "b", 0, 100),
            Operation::read(3, "k", Some("a"), 10, 20),
            Operation::read(4, "k", Some("b"), 30, 40),
            Operation::read(5, "k", Some("a"), 50, 60),
        ];
        let r = check(&bad);
        assert_eq!(r.verdict, Verdict::NotLinearizable, "{}", r.summary());
    }

    #[test]
    fn concurrent_reads_may_see_either_value() {
        // Reads concurrent with the write may return old or new, and a later
        // read may not go back to the old one once a read saw the new value.
        let ok = [
            Operation::write(1, "k", "a", 0, 5),
            Operation::write(2, "k", "b", 10, 100),
            Operation::read(3, "k", Some("b"), 20, 30),
            Operation::read(4, "k", Some("a"), 15, 35),
        ];
        assert!(check(&ok).is_linearizable());
        let bad = [
            Operation::write(1, "k", "a", 0, 5),
            Operation::write(2, "k", "b", 10, 100),
            Operation::read(3, "k", Some("b"), 20, 30),
            Operation::read(4, "k", Some("a"), 40, 50),
        ];
        assert_eq!(check(&bad).verdict, Verdict::NotLinearizable);
    }

    #[test]
    fn unknown_write_that_later_becomes_visible_is_linearizable() {
        let h = [
            Operation::write(1, "k", "a", 0, 10),
            Operation::write(2, "k", "b", 20, 30).unknown(),
            Operation::read(3, "k", Some("a"), 40, 50),
            Operation::read(4, "k", Some("b"), 1_000, 1_010),
            Operation::read(5, "k", Some("b"), 2_000, 2_010),
        ];
        let r = check(&h);
        assert!(r.is_linearizable(), "{}", r.summary());
    }

    #[test]
    fn unknown_write_that_never_appears_is_linearizable() {
        let h = [
            Operation::write(1, "k", "a", 0, 10),
            Operation::write(2, "k", "b", 20, 30).unknown(),
            Operation::read(3, "k", Some("a"), 40, 50),
            Operation::read(4, "k", Some("a"), 1_000, 1_010),
        ];
        let r = check(&h);
        assert!(r.is_linearizable());
        // The unobserved unknown write is pruned from the search.
        assert_eq!(r.ops_ignored, 1);
    }

    #[test]
    fn unknown_write_cannot_take_effect_before_invocation() {
        let h = [Operation::read(1, "k", Some("b"), 0, 10), Operation::write(2, "k", "b", 20, 30).unknown()];
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::NotLinearizable);
        assert!(r.violations[0].anomalies.iter().any(|a| a.contains("before any write")));
    }

    #[test]
    fn read_of_value_never_written_is_caught() {
        let h = [Operation::write(1, "p/policy", "v1", 0, 10), Operation::read(2, "p/policy", Some("garbage"), 20, 30)];
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::NotLinearizable);
        let v = &r.violations[0];
        assert_eq!(v.key, "p/policy");
        assert!(v.anomalies[0].contains("never written"), "{:?}", v.anomalies);
    }

    #[test]
    fn failed_write_must_not_be_visible() {
        let h = [
            Operation::write(1, "k", "a", 0, 10),
            Operation::write(2, "k", "b", 20, 30).failed(),
            Operation::read(3, "k", Some("b"), 40, 50),
        ];
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::NotLinearizable);
        assert!(r.violations[0].anomalies[0].contains("reported as failed"));
        // The failed write itself, never observed, is fine.
        let ok = [
            Operation::write(1, "k", "a", 0, 10),
            Operation::write(2, "k", "b", 20, 30).failed(),
            Operation::read(3, "k", Some("a"), 40, 50),
        ];
        assert!(check(&ok).is_linearizable());
    }

    #[test]
    fn touching_intervals_count_as_concurrent() {
        let h = [Operation::write(1, "k", "a", 0, 10), Operation::read(2, "k", None, 10, 20)];
        assert!(check(&h).is_linearizable());
    }

    #[test]
    fn only_the_bad_key_is_reported() {
        let h = [
            Operation::write(1, "good", "a", 0, 10),
            Operation::read(2, "good", Some("a"), 20, 30),
            Operation::write(3, "bad", "a", 0, 10),
            Operation::read(4, "bad", None, 20, 30),
        ];
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::NotLinearizable);
        assert_eq!(r.violations.len(), 1);
        assert_eq!(r.violations[0].key, "bad");
        assert_eq!(r.per_key.len(), 2);
    }

    #[test]
    fn initial_values_are_honoured() {
        let h = [Operation::read(1, "k", Some("seed"), 0, 10)];
        assert_eq!(check(&h).verdict, Verdict::NotLinearizable);
        let mut opts = CheckOptions::default();
        opts.initial_values.insert("k".into(), "seed".into());
        let r = check_linearizability(&h, &opts).map(|r| r.verdict);
        assert_eq!(r, Ok(Verdict::Linearizable));
    }

    #[test]
    fn malformed_histories_are_rejected() {
        let dup = [Operation::write(1, "k", "a", 0, 10), Operation::read(1, "k", None, 0, 10)];
        assert_eq!(
            check_linearizability(&dup, &CheckOptions::default()).map(|r| r.verdict),
            Err(CheckError::DuplicateId(1))
        );
        let backwards = [Operation::write(1, "k", "a", 10, 5)];
        assert!(matches!(
            check_linearizability(&backwards, &CheckOptions::default()),
            Err(CheckError::CompletesBeforeInvoke { id: 1, .. })
        ));
        let mut missing = Operation::write(1, "k", "a", 0, 5);
        missing.complete_ns = None;
        assert!(check_linearizability(&[missing.clone().unknown()], &CheckOptions::default()).is_ok());
        assert!(matches!(
            check_linearizability(&[missing], &CheckOptions::default()),
            Err(CheckError::MissingCompletion(1, Outcome::Ok))
        ));
    }

    #[test]
    fn search_bound_gives_unknown_verdict() {
        // Many fully concurrent writes, each observed, plus reads: a big space.
        let mut h = Vec::new();
        for i in 0..40u64 {
            h.push(Operation::write(i, "k", &format!("v{i}"), 0, 1_000));
            h.push(Operation::read(100 + i, "k", Some(&format!("v{i}")), 0, 1_000));
        }
        let opts = CheckOptions { max_states_per_key: 50, ..CheckOptions::default() };
        let r = check_linearizability(&h, &opts);
        let Ok(r) = r else { panic!("malformed") };
        assert_eq!(r.verdict, Verdict::Unknown);
        assert_eq!(r.undecided.len(), 1);
        assert!(r.summary().contains("undecided"));
    }

    /// Generates a history from a real sequential register run: each op takes
    /// effect at a strictly increasing instant, and its recorded interval is
    /// widened randomly around it, producing overlaps. Such a history is
    /// linearizable by construction.
    fn generated_history(seed: u64, ops: usize, keys: usize) -> Vec<Operation> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut registers: Vec<Option<String>> = vec![None; keys];
        let mut history = Vec::with_capacity(ops);
        let mut t: u64 = 1_000_000;
        for id in 0..ops as u64 {
            t += rng.random_range(1..50);
            let k = rng.random_range(0..keys);
            let key = format!("key-{k}");
            let invoke = t.saturating_sub(rng.random_range(0..400));
            let complete = t + rng.random_range(0..400);
            let op = if rng.random_bool(0.4) {
                let value = format!("w{id}");
                match rng.random_range(0..10) {
                    // A failed write: did not happen, the register is unchanged.
                    0 => Operation::write(id, &key, &value, invoke, complete).failed(),
                    // Took effect, but the client timed out.
                    1 => {
                        registers[k] = Some(value.clone());
                        Operation::write(id, &key, &value, invoke, complete).unknown()
                    }
                    _ => {
                        registers[k] = Some(value.clone());
                        Operation::write(id, &key, &value, invoke, complete)
                    }
                }
            } else {
                let op = Operation::read(id, &key, registers[k].as_deref(), invoke, complete);
                if rng.random_range(0..20) == 0 {
                    op.unknown()
                } else {
                    op
                }
            };
            history.push(op.by(&format!("client-{}", id % 7)));
        }
        history
    }

    #[test]
    fn randomized_sequential_runs_are_linearizable() {
        for seed in 0..20u64 {
            let h = generated_history(seed, 400, 3);
            let r = check(&h);
            assert_eq!(r.verdict, Verdict::Linearizable, "seed {seed}: {}", r.summary());
        }
    }

    #[test]
    fn randomized_run_with_a_corrupted_read_is_caught() {
        let mut h = generated_history(42, 300, 2);
        let Some(victim) =
            h.iter_mut().rev().find(|o| matches!(o.kind, OpKind::Read { .. }) && o.outcome == Outcome::Ok)
        else {
            panic!("no read generated");
        };
        victim.kind = OpKind::Read { value: Some("phantom".into()) };
        let id = victim.id;
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::NotLinearizable);
        assert_eq!(r.violations.len(), 1);
        assert!(r.violations[0].anomalies[0].contains(&format!("#{id}")));
    }
}
