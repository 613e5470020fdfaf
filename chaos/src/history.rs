//! The history of a drill: every client operation, every injected fault,
//! every status sample and every expectation window, in the order they were
//! recorded, as JSON lines (one [`Entry`] per line).
//!
//! Times are nanoseconds on one monotonic clock that starts with the
//! history ([`History::now_ns`]); the header line carries the wall-clock
//! time of that origin so a history can be lined up with node logs.
//!
//! The recorder keeps the entries in memory (the checkers read them at the
//! end) and appends each one to the file as it happens, so a drill that is
//! stopped half-way still leaves a readable history behind.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpType {
    /// `POST /attest/{type}` (data plane).
    Attest,
    /// A control-plane write (policy set, provider create).
    Write,
    /// A linearizable control-plane read.
    Read,
}

/// What the client learnt about an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpResult {
    /// Succeeded (2xx); for writes: acknowledged.
    Ok,
    /// Definitely failed (an explicit error, or the connection was refused
    /// so nothing was sent).
    Failed,
    /// May or may not have taken effect (timeout, reset after sending,
    /// an explicit "outcome unknown").
    Unknown,
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Unique within the history; also the write's client request id.
    pub id: u64,
    #[serde(rename = "op")]
    pub kind: OpType,
    /// The client task that issued it (e.g. `attest-2`, `writer-0`).
    pub client: String,
    /// Where it was sent: `gateway-<region>` or a node name.
    pub target: String,
    /// Sent through a gateway (else straight to a node).
    #[serde(default)]
    pub via_gateway: bool,
    /// The region that answered: the gateway's `x-attest-region` header,
    /// else the target node's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The node that answered, when known (the token's `x-attestd-node`,
    /// or the target node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The client request id a write was sent with (`x-ms-client-request-id`,
    /// hence the command's request id in the Raft log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Register key for writes and reads (`<provider>/<type>` or `provider:<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Value written, or value a read returned (`None` = absent/default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Evidence vector used by an attest call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<String>,
    /// Nonce sent with an attest call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub result: OpResult,
    /// HTTP status, when an answer arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// MAA error code (`ControlPlaneReadOnly`, …) or a transport error
    /// class (`Timeout`, `ConnectionRefused`, `Transport`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The attestation token (attest) or policy token (read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Replication mode a write was acknowledged under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_mode: Option<String>,
    /// Whether the write's acknowledgement says a secondary-region node had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_durable: Option<bool>,
    /// Log index of an acknowledged write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
}

impl Op {
    /// A new operation of `kind` started at `start_ns`, to be completed by the caller.
    pub fn begin(id: u64, kind: OpType, client: &str, target: &str, start_ns: u64) -> Self {
        Self {
            id,
            kind,
            client: client.to_owned(),
            target: target.to_owned(),
            via_gateway: false,
            region: None,
            node: None,
            request_id: None,
            key: None,
            value: None,
            vector: None,
            nonce: None,
            start_ns,
            end_ns: start_ns,
            result: OpResult::Unknown,
            status: None,
            error_code: None,
            error: None,
            token: None,
            replication_mode: None,
            secondary_durable: None,
            index: None,
        }
    }

    pub fn latency_ms(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e6
    }
}

/// An injected fault or an operator action, as it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// When the action was issued.
    pub at_ns: u64,
    /// When it returned.
    pub done_ns: u64,
    /// Short label for charts (`kill region eastus2`).
    pub label: String,
    /// The action itself, as serialized by [`crate::faults::Fault`].
    pub fault: serde_json::Value,
    /// Set when the action failed (the drill then fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One `/health` probe of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StatusSample {
    pub at_ns: u64,
    pub node: String,
    pub region: String,
    /// HTTP status of `/health`; `None` = no answer (down, paused, cut).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// `writable` or `read-only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<bool>,
    /// Superseded by a forced promotion (issue 9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced: Option<bool>,
    /// The node's configuration epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl StatusSample {
    /// The node answered 200: it serves the data plane.
    pub fn serving(&self) -> bool {
        self.http == Some(200)
    }
}

/// What the scenario expects during a window; the checkers judge it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expectation {
    /// Writes answered by `region` must fail fast with `ControlPlaneReadOnly`
    /// (the region cannot reach a quorum). With `via_gateways`, every write
    /// sent through a gateway counts too (the gateways can only route to
    /// that region), including those the gateway itself failed.
    ReadOnly { region: String, via_gateways: bool },
    /// The data plane may be disrupted (a fault is being absorbed); outside
    /// such windows every data-plane call must succeed.
    Disruption { label: String },
    /// A planned action: the data plane must not see a single error.
    NoDisruption { label: String },
    /// Successful data-plane calls are answered by `region` (after a
    /// failover has had time to happen).
    ServedBy { region: String },
    /// The leader's replication mode stays `mode` throughout.
    ModeStays { mode: String },
    /// From `start_ns` on the cluster is healed: the control plane must
    /// accept writes again (its recovery time is measured from here).
    Recovery { label: String },
    /// The nodes of `region` were superseded by a forced promotion: none
    /// of them may answer a call successfully, accept a write, or lead
    /// (their status must say `fenced` once they answer at all).
    Fenced { region: String },
}

/// A window `[start_ns, end_ns]` in which an [`Expectation`] applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
    #[serde(flatten)]
    pub expect: Expectation,
}

/// A snapshot of one node's log and state taken during the drill (e.g. of
/// the secondary region while the primary is down), for the RPO check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capture {
    pub at_ns: u64,
    /// Why it was taken (`secondary during primary outage`).
    pub label: String,
    pub node: String,
    pub region: String,
    /// Register values of the node's applied state (see [`crate::workload`] keys).
    pub values: std::collections::BTreeMap<String, Option<String>>,
    pub applied_index: u64,
    /// Request ids in the node's own log beyond its applied index, in log
    /// order: entries it holds on disk but has not applied yet.
    pub unapplied_request_ids: Vec<String>,
}

/// The first line of a history file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Format version of the file.
    pub version: u32,
    pub scenario: String,
    /// RFC 3339 wall-clock time of `t = 0`.
    pub started_at: String,
    /// Unix milliseconds of `t = 0`.
    pub started_unix_ms: u64,
    pub primary_region: String,
    pub secondary_region: String,
    /// Node name → region.
    pub nodes: std::collections::BTreeMap<String, String>,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    Header(Header),
    Op(Op),
    Fault(FaultEvent),
    Status(StatusSample),
    Window(Window),
    Capture(Capture),
    /// A free-form milestone (`warm-up done`, `heal`).
    Mark {
        at_ns: u64,
        label: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} line {line}: {source}")]
    Parse { path: String, line: usize, source: serde_json::Error },
    #[error("{0} has no header line")]
    NoHeader(String),
}

struct Inner {
    entries: Vec<Entry>,
    file: Option<BufWriter<std::fs::File>>,
    write_error: Option<String>,
}

/// The recorder: cheap to clone, shared by every client task.
#[derive(Clone)]
pub struct History {
    origin: Instant,
    next_id: Arc<std::sync::atomic::AtomicU64>,
    inner: Arc<Mutex<Inner>>,
    path: Option<PathBuf>,
}

impl History {
    /// A recorder writing JSON lines to `path` (when given), starting with `header`.
    pub fn create(path: Option<&Path>, mut header: Header) -> Result<Self, HistoryError> {
        let origin = Instant::now();
        let now = std::time::SystemTime::now();
        header.started_unix_ms =
            now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
        header.started_at = rfc3339_ms(header.started_unix_ms);
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|source| HistoryError::Io { path: dir.display().to_string(), source })?;
                }
                let f = std::fs::File::create(p)
                    .map_err(|source| HistoryError::Io { path: p.display().to_string(), source })?;
                Some(BufWriter::new(f))
            }
            None => None,
        };
        let h = Self {
            origin,
            next_id: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            inner: Arc::new(Mutex::new(Inner { entries: Vec::new(), file, write_error: None })),
            path: path.map(Path::to_path_buf),
        };
        h.record(Entry::Header(header));
        Ok(h)
    }

    /// Nanoseconds since the history started.
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// A fresh operation id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking recorder thread leaves plain data behind: keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, entry: Entry) {
        let mut inner = self.lock();
        if let Some(f) = inner.file.as_mut() {
            let line = serde_json::to_string(&entry).map(|mut s| {
                s.push('\n');
                s
            });
            let res = match line {
                Ok(l) => f.write_all(l.as_bytes()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = res {
                inner.write_error.get_or_insert(e);
            }
        }
        inner.entries.push(entry);
    }

    pub fn mark(&self, label: &str) {
        self.record(Entry::Mark { at_ns: self.now_ns(), label: label.to_owned() });
    }

    /// Every entry so far.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().entries.clone()
    }

    /// Flushes the file; reports the first write error seen, if any.
    pub fn flush(&self) -> Result<(), HistoryError> {
        let mut inner = self.lock();
        let path = self.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        if let Some(e) = inner.write_error.take() {
            return Err(HistoryError::Io { path, source: std::io::Error::other(e) });
        }
        if let Some(f) = inner.file.as_mut() {
            f.flush().map_err(|source| HistoryError::Io { path, source })?;
        }
        Ok(())
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// Reads a history file back (e.g. to re-check or re-plot a run).
pub fn load(path: &Path) -> Result<Vec<Entry>, HistoryError> {
    let p = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|source| HistoryError::Io { path: p.clone(), source })?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|source| HistoryError::Io { path: p.clone(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        let e: Entry = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            path: p.clone(),
            line: i + 1,
            source,
        })?;
        out.push(e);
    }
    if !matches!(out.first(), Some(Entry::Header(_))) {
        return Err(HistoryError::NoHeader(p));
    }
    Ok(out)
}

/// The parts of a history, split by entry type (what the checkers consume).
#[derive(Debug, Clone, Default)]
pub struct Parts {
    pub header: Option<Header>,
    pub ops: Vec<Op>,
    pub faults: Vec<FaultEvent>,
    pub status: Vec<StatusSample>,
    pub windows: Vec<Window>,
    pub captures: Vec<Capture>,
    pub marks: Vec<(u64, String)>,
}

impl Parts {
    pub fn split(entries: &[Entry]) -> Self {
        let mut p = Parts::default();
        for e in entries {
            match e {
                Entry::Header(h) => p.header = Some(h.clone()),
                Entry::Op(o) => p.ops.push(o.clone()),
                Entry::Fault(f) => p.faults.push(f.clone()),
                Entry::Status(s) => p.status.push(s.clone()),
                Entry::Window(w) => p.windows.push(w.clone()),
                Entry::Capture(c) => p.captures.push(c.clone()),
                Entry::Mark { at_ns, label } => p.marks.push((*at_ns, label.clone())),
            }
        }
        p
    }

    /// End of the recorded run (the latest time any entry mentions).
    pub fn end_ns(&self) -> u64 {
        let ops = self.ops.iter().map(|o| o.end_ns);
        let faults = self.faults.iter().map(|f| f.done_ns);
        let status = self.status.iter().map(|s| s.at_ns);
        let marks = self.marks.iter().map(|m| m.0);
        ops.chain(faults).chain(status).chain(marks).max().unwrap_or(0)
    }
}

/// The wall clock in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for Unix milliseconds (civil-from-days, no
/// date library needed for one format).
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60, unix_ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: 1,
            scenario: "unit".into(),
            started_at: String::new(),
            started_unix_ms: 0,
            primary_region: "eastus2".into(),
            secondary_region: "centralus".into(),
            nodes: [("node-1".to_string(), "eastus2".to_string())].into_iter().collect(),
        }
    }

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_759_276_800_000), "2025-10-01T00:00:00.000Z");
    }

    #[test]
    fn history_round_trips_through_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let h = History::create(Some(&path), header()).expect("create");
        let mut op = Op::begin(h.next_id(), OpType::Write, "writer-0", "node-1", h.now_ns());
        op.key = Some("p/SgxEnclave".into());
        op.value = Some("v1".into());
        op.end_ns = op.start_ns + 5;
        op.result = OpResult::Ok;
        h.record(Entry::Op(op.clone()));
        h.record(Entry::Window(Window {
            start_ns: 1,
            end_ns: 2,
            expect: Expectation::ReadOnly { region: "centralus".into(), via_gateways: true },
        }));
        h.mark("done");
        h.flush().expect("flush");
        let back = load(&path).expect("load");
        assert_eq!(back.len(), 4);
        let parts = Parts::split(&back);
        assert_eq!(parts.ops, vec![op]);
        assert_eq!(parts.windows.len(), 1);
        assert_eq!(parts.header.map(|h| h.scenario), Some("unit".to_string()));
        // The header's origin was stamped with the wall clock.
        let first = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(first.lines().next().is_some_and(|l| l.contains("\"type\":\"header\"") && l.contains("started_at")));
    }

    #[test]
    fn a_file_without_header_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        std::fs::write(&path, "{\"type\":\"mark\",\"at_ns\":1,\"label\":\"x\"}\n").expect("write");
        assert!(matches!(load(&path), Err(HistoryError::NoHeader(_))));
        std::fs::write(&path, "not json\n").expect("write");
        assert!(matches!(load(&path), Err(HistoryError::Parse { line: 1, .. })));
    }
}
