//! The Raft state machine: applies committed commands to [`ControlState`],
//! builds and installs snapshots.
//!
//! **Persistence is the snapshot plus the log.** Applying changes memory
//! only; the state on disk is the latest snapshot (stored synced, raw
//! bytes, in `meta`), and every entry after it is in the synced log, which
//! is purged only behind a stored snapshot. At start the snapshot is
//! decoded and openraft re-applies the committed entries after it
//! (`read_committed`, saved before each apply). Why: writing each applied
//! request's keys (the record, its dedup slot, its audit entry) into
//! RocksDB as well cost the loaded cluster ~15 % of its CPU per write
//! (BENCHMARKS.md, session 27), and the log already holds them durably.
//!
//! The `state` column family (one key per item, written on every apply by
//! earlier versions) is read only when it is newer than the stored
//! snapshot (a node upgraded before its first new snapshot), and cleared by
//! the next snapshot built or installed.
//!
//! **What a restart re-applies is bounded in bytes as well as entries.**
//! openraft's snapshot policy counts entries (`snapshot_logs_since_last`),
//! and one entry may carry up to ~1 MiB (a batch of writes, a collateral
//! upload), so the store also asks for a snapshot once the entries applied
//! since the last one hold `snapshot_bytes_since_last` bytes of requests
//! ([`SnapshotTrigger`]).
//!
//! A Raft restarted inside the process (forced promotion, re-seed) reloads
//! the state the same way, so for the moment between [`StateMachineStore::reopen`]
//! and openraft's re-apply the API reads the snapshot's state, not the
//! newer one it held before.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};
use serde::Deserialize;
use tokio::sync::watch;

use crate::command::Response;
use crate::db::{CF_META, CF_STATE};
use crate::state::{ControlState, LegacyKey, LEGACY_DEDUP_PREFIXES};
use crate::types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const KEY_APPLIED: &[u8] = b"sm_applied";
const KEY_MEMBERSHIP: &[u8] = b"sm_membership";
/// The current snapshot: its metadata as JSON and its data as raw bytes,
/// written together in one synced batch.
const KEY_SNAPSHOT_META: &[u8] = b"snapshot_meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"snapshot_data";
/// Earlier layout: one JSON document holding both, which serde encodes with
/// the data as an array of numbers (~3.5 bytes of JSON per byte: a 15 MB
/// state became ~50 MB synced through the WAL on every snapshot). Read
/// when the new keys are absent; removed by the next snapshot.
const KEY_SNAPSHOT_LEGACY: &[u8] = b"snapshot";

/// Read access to the applied control-plane state, shared with the API.
///
/// Readers hold the lock only long enough to copy what they need; the
/// state machine holds it only while applying one batch.
#[derive(Clone)]
pub struct StateHandle {
    state: Arc<RwLock<ControlState>>,
    applied: watch::Receiver<u64>,
}

impl StateHandle {
    /// Runs `f` on the current state.
    pub fn read<R>(&self, f: impl FnOnce(&ControlState) -> R) -> R {
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Highest log index applied to this node's state.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// A receiver that changes whenever more entries are applied.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Waits until `index` is applied here; false if `until` came first.
    pub async fn wait_applied(&self, index: u64, until: tokio::time::Instant) -> bool {
        let mut rx = self.applied.clone();
        while *rx.borrow_and_update() < index {
            if !matches!(tokio::time::timeout_at(until, rx.changed()).await, Ok(Ok(()))) {
                return false;
            }
        }
        true
    }
}

/// [`KEY_SNAPSHOT_LEGACY`]'s layout.
#[derive(Deserialize)]
struct LegacySnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// What survives a restart of Raft inside the process (forced promotion,
/// re-seed): the state the API reads, the applied-index channel and the
/// snapshot trigger.
#[derive(Clone)]
pub struct SmShared {
    state: Arc<RwLock<ControlState>>,
    applied_tx: Arc<watch::Sender<u64>>,
    trigger: Arc<SnapshotTrigger>,
}

/// The state machine's request for a snapshot by bytes (see the module
/// docs): set by `apply`, taken by [`SnapshotTrigger::run`], which asks
/// openraft to build one.
pub struct SnapshotTrigger {
    /// Bytes of requests applied since the last snapshot that ask for the next.
    bytes_limit: u64,
    wanted: tokio::sync::Notify,
}

impl SnapshotTrigger {
    /// Asks `raft()` (the current Raft: it may be restarted in-process) for
    /// a snapshot whenever the state machine wants one, until `shutdown`.
    /// openraft ignores the request while a snapshot is being built.
    pub async fn run(self: Arc<Self>, raft: impl Fn() -> crate::types::Raft, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                () = self.wanted.notified() => {}
            }
            metrics::counter!("attest_raft_snapshots_requested_by_bytes_total").increment(1);
            if let Err(e) = raft().trigger().snapshot().await {
                tracing::debug!(error = %e, "snapshot request not taken: Raft is stopped");
            }
        }
    }
}

pub struct StateMachineStore {
    db: Arc<DB>,
    state: Arc<RwLock<ControlState>>,
    applied_tx: Arc<watch::Sender<u64>>,
    trigger: Arc<SnapshotTrigger>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshot_seq: u64,
    /// Bytes of requests applied since the last snapshot (built, installed
    /// or loaded), and that count when a snapshot was last asked for.
    bytes_since_snapshot: u64,
    bytes_when_asked: u64,
}

fn sto_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

impl StateMachineStore {
    /// Loads the persisted state (the stored snapshot, or the legacy state
    /// column family; see the module docs). openraft then re-applies the
    /// committed entries after it. `snapshot_bytes` is
    /// `snapshot_bytes_since_last` (see the module docs); 0 asks for none.
    pub fn open(db: Arc<DB>, snapshot_bytes: u64) -> Result<(Self, StateHandle), StorageError> {
        let (applied_tx, applied_rx) = watch::channel(0);
        let bytes_limit = if snapshot_bytes == 0 { u64::MAX } else { snapshot_bytes };
        let trigger = Arc::new(SnapshotTrigger { bytes_limit, wanted: Default::default() });
        let shared = SmShared { state: Arc::default(), applied_tx: Arc::new(applied_tx), trigger };
        let sm = Self::reopen(db, &shared)?;
        let handle = StateHandle { state: shared.state.clone(), applied: applied_rx };
        Ok((sm, handle))
    }

    /// The last applied membership (peers to ask for their epoch at start).
    pub fn stored_membership(&self) -> &StoredMembership {
        &self.membership
    }

    /// The parts a restarted Raft's state machine must share with the API.
    pub fn shared(&self) -> SmShared {
        SmShared { state: self.state.clone(), applied_tx: self.applied_tx.clone(), trigger: self.trigger.clone() }
    }

    /// The snapshot trigger, to run beside Raft ([`SnapshotTrigger::run`]).
    pub fn snapshot_trigger(&self) -> Arc<SnapshotTrigger> {
        self.trigger.clone()
    }

    /// Loads the persisted state into `shared` (replacing what it held):
    /// used at start and whenever Raft restarts inside the process.
    pub fn reopen(db: Arc<DB>, shared: &SmShared) -> Result<Self, StorageError> {
        let cf_meta = db.cf_handle(CF_META).expect("meta column family exists");
        let cf_state = db.cf_handle(CF_STATE).expect("state column family exists");
        let read = |k: &[u8]| -> Result<Option<Vec<u8>>, StorageError> {
            db.get_cf(cf_meta, k).map_err(|e| sto_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))
        };
        let last_applied: Option<LogId> = match read(KEY_APPLIED)? {
            Some(b) => {
                serde_json::from_slice(&b).map_err(|e| sto_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?
            }
            None => None,
        };
        let snapshot = load_snapshot(&db)?;
        let legacy_newer = last_applied.is_some_and(|a| snapshot.as_ref().is_none_or(|(m, _)| m.last_log_id < Some(a)));
        if let Some((meta, data)) = snapshot.filter(|_| !legacy_newer) {
            let state: ControlState = serde_json::from_slice(&data)
                .map_err(|e| sto_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Read, e))?;
            return Ok(Self::install(db, shared, state, meta.last_log_id, meta.last_membership));
        }
        let membership: StoredMembership = match read(KEY_MEMBERSHIP)? {
            Some(b) => {
                serde_json::from_slice(&b).map_err(|e| sto_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?
            }
            None => StoredMembership::default(),
        };
        let mut state = ControlState::default();
        let mut legacy_dedup = false;
        for item in db.iterator_cf(cf_state, IteratorMode::Start) {
            let (k, v) = item.map_err(|e| sto_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
            let key = String::from_utf8_lossy(&k);
            legacy_dedup |= LEGACY_DEDUP_PREFIXES.iter().any(|p| key.starts_with(p));
            state
                .load_key(&key, &v)
                .map_err(|e| sto_err(ErrorSubject::StateMachine, ErrorVerb::Read, format!("key {key}: {e}")))?;
        }
        if legacy_dedup {
            migrate_dedup(&db, &state)?;
        }
        Ok(Self::install(db, shared, state, last_applied, membership))
    }

    /// Makes `state` (applied through `last_applied`) the one the API reads.
    fn install(
        db: Arc<DB>,
        shared: &SmShared,
        state: ControlState,
        last_applied: Option<LogId>,
        membership: StoredMembership,
    ) -> Self {
        {
            let mut guard = shared.state.write().unwrap_or_else(|p| p.into_inner());
            *guard = state;
        }
        shared.applied_tx.send_replace(last_applied.map(|l| l.index).unwrap_or(0));
        Self {
            db,
            state: shared.state.clone(),
            applied_tx: shared.applied_tx.clone(),
            trigger: shared.trigger.clone(),
            last_applied,
            membership,
            snapshot_seq: 0,
            bytes_since_snapshot: 0,
            bytes_when_asked: 0,
        }
    }

    /// Counts `bytes` applied and asks for a snapshot once another
    /// `bytes_limit` of them came since the last snapshot or request.
    fn count_applied(&mut self, bytes: u64) {
        self.bytes_since_snapshot += bytes;
        if self.bytes_since_snapshot - self.bytes_when_asked >= self.trigger.bytes_limit {
            self.bytes_when_asked = self.bytes_since_snapshot;
            self.trigger.wanted.notify_one();
        }
    }

    /// A snapshot now covers everything applied.
    fn snapshot_taken(&mut self) {
        self.bytes_since_snapshot = 0;
        self.bytes_when_asked = 0;
        metrics::gauge!("attest_raft_applied_bytes_since_snapshot").set(0.0);
    }
}

/// Adds `keys` (of the legacy per-item layout) to `batch`, in column family `cf`.
fn put_legacy_keys(batch: &mut WriteBatch, cf: &rocksdb::ColumnFamily, keys: Vec<LegacyKey>) {
    for (key, value) in keys {
        batch.put_cf(cf, key.as_bytes(), value);
    }
}

/// Rewrites a dedup table stored in the legacy layout in the current one
/// (one synced batch: a crash leaves either layout whole).
fn migrate_dedup(db: &DB, state: &ControlState) -> Result<(), StorageError> {
    let cf = db.cf_handle(CF_STATE).expect("state column family exists");
    let mut batch = WriteBatch::default();
    for prefix in LEGACY_DEDUP_PREFIXES {
        // `0` follows `/` in ASCII: the range is exactly the prefix's keys.
        let end = format!("{}0", prefix.trim_end_matches('/'));
        batch.delete_range_cf(cf, prefix.as_bytes(), end.as_bytes());
    }
    put_legacy_keys(&mut batch, cf, state.dedup_keys());
    let mut w = WriteOptions::default();
    w.set_sync(true);
    db.write_opt(batch, &w).map_err(|e| sto_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
    tracing::info!(requests = state.dedup_order.len(), "moved the dedup table to its one-key-per-request layout");
    Ok(())
}

/// Stores the snapshot as the node's persisted state, in one synced batch
/// that also drops the legacy per-item state (see the module docs).
fn store_snapshot(db: &DB, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
    let meta_json = serde_json::to_vec(meta).map_err(|e| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
    let cf = db.cf_handle(CF_META).expect("meta column family exists");
    let cf_state = db.cf_handle(CF_STATE).expect("state column family exists");
    let mut batch = WriteBatch::default();
    batch.put_cf(cf, KEY_SNAPSHOT_META, meta_json);
    batch.put_cf(cf, KEY_SNAPSHOT_DATA, data);
    batch.delete_cf(cf, KEY_SNAPSHOT_LEGACY);
    batch.delete_cf(cf, KEY_APPLIED);
    batch.delete_cf(cf, KEY_MEMBERSHIP);
    batch.delete_range_cf(cf_state, b"".as_slice(), [0xffu8; 64].as_slice());
    let mut w = WriteOptions::default();
    w.set_sync(true);
    db.write_opt(batch, &w).map_err(|e| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))
}

/// The stored snapshot, in either layout.
fn load_snapshot(db: &DB) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
    let read_err = |e: &dyn std::fmt::Display| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
    let cf = db.cf_handle(CF_META).expect("meta column family exists");
    let meta = db.get_cf(cf, KEY_SNAPSHOT_META).map_err(|e| read_err(&e))?;
    if let Some(meta) = meta {
        let meta: SnapshotMeta = serde_json::from_slice(&meta).map_err(|e| read_err(&e))?;
        let data = db.get_cf(cf, KEY_SNAPSHOT_DATA).map_err(|e| read_err(&e))?;
        let data = data.ok_or_else(|| read_err(&"snapshot metadata without its data"))?;
        return Ok(Some((meta, data)));
    }
    let Some(raw) = db.get_cf(cf, KEY_SNAPSHOT_LEGACY).map_err(|e| read_err(&e))? else { return Ok(None) };
    let legacy: LegacySnapshot = serde_json::from_slice(&raw).map_err(|e| read_err(&e))?;
    Ok(Some((legacy.meta, legacy.data)))
}

/// Builds a snapshot from a point-in-time copy of the state, taken while
/// the state machine had exclusive access (so state and applied id agree).
pub struct SnapshotBuilder {
    db: Arc<DB>,
    state: ControlState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.seq),
            None => format!("0-0-{}", self.seq),
        };
        let meta =
            SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone(), snapshot_id };
        // The whole state's encoding and a synced flush: tens of
        // milliseconds with many policies, kept off the runtime worker.
        let data = crate::db::off_worker(|| {
            let data =
                serde_json::to_vec(&self.state).map_err(|e| sto_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
            // Synced: openraft purges the log behind it once this returns.
            store_snapshot(&self.db, &meta, &data)?;
            Ok::<_, StorageError>(data)
        })?;
        metrics::counter!("attest_raft_snapshots_built_total").increment(1);
        metrics::gauge!("attest_raft_snapshot_bytes").set(data.len() as f64);
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let mut bytes = 0;
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            for entry in entries {
                self.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => out.push(Response { index: entry.log_id.index, ..Default::default() }),
                    EntryPayload::Normal(req) => {
                        // Free: the entry's encoding is kept from the log
                        // store or the wire (`LogRequest`).
                        bytes += req.encoded_len() as u64;
                        let resp = state.apply(entry.log_id.index, &req, req.proposed_at_ms);
                        for r in req.client_requests() {
                            metrics::counter!("attest_control_commands_applied_total", "kind" => r.command.kind())
                                .increment(1);
                        }
                        out.push(resp);
                    }
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), m);
                        out.push(Response { index: entry.log_id.index, ..Default::default() });
                    }
                }
            }
        }
        self.count_applied(bytes);
        let idx = self.last_applied.map(|l| l.index).unwrap_or(0);
        self.applied_tx.send_replace(idx);
        metrics::gauge!("attest_raft_applied_index").set(idx as f64);
        metrics::gauge!("attest_raft_applied_bytes_since_snapshot").set(self.bytes_since_snapshot as f64);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_seq += 1;
        self.snapshot_taken();
        let state = self.state.read().unwrap_or_else(|p| p.into_inner()).clone();
        SnapshotBuilder {
            db: self.db.clone(),
            state,
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            seq: self.snapshot_seq,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        // Decoding the whole state and a synced rewrite: kept off the
        // runtime worker like every long disk operation (`db::off_worker`).
        let new_state = crate::db::off_worker(|| {
            let new_state: ControlState = serde_json::from_slice(&data)
                .map_err(|e| sto_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Read, e))?;
            store_snapshot(&self.db, meta, &data)?;
            Ok::<_, StorageError>(new_state)
        })?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.snapshot_taken();
        {
            let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
            *guard = new_state;
        }
        let idx = self.last_applied.map(|l| l.index).unwrap_or(0);
        self.applied_tx.send_replace(idx);
        metrics::counter!("attest_raft_snapshots_installed_total").increment(1);
        tracing::info!(snapshot = %meta.snapshot_id, index = idx, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(load_snapshot(&self.db)?.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Request};

    const NO_BYTES_TRIGGER: u64 = u64::MAX;

    fn meta(index: u64) -> SnapshotMeta {
        let log_id = LogId::new(openraft::CommittedLeaderId::new(1, 1), index);
        SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("1-{index}-1"),
        }
    }

    fn noop(index: u64) -> Entry {
        let req =
            Request { request_id: format!("r{index}"), actor: "t".into(), proposed_at_ms: 0, command: Command::Noop };
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(req.into()),
        }
    }

    fn remembered(h: &StateHandle) -> Vec<String> {
        let mut ids: Vec<String> = h.read(|s| s.dedup.keys().cloned().collect());
        ids.sort();
        ids
    }

    /// Applying writes nothing to disk; a reopened store holds the stored
    /// snapshot and its applied id (openraft re-applies the log after it).
    /// A legacy state column family newer than the snapshot wins, and the
    /// next stored snapshot clears it.
    #[tokio::test]
    async fn the_persisted_state_is_the_snapshot_and_the_legacy_state_only_while_newer() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let (mut sm, _) = StateMachineStore::open(db.clone(), NO_BYTES_TRIGGER).unwrap();
        sm.apply((1..=3).map(noop)).await.unwrap();
        let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(3));
        sm.apply([noop(4)]).await.unwrap();
        let cf_state = db.cf_handle(CF_STATE).unwrap();
        assert_eq!(db.iterator_cf(cf_state, IteratorMode::Start).count(), 0, "apply writes nothing");
        drop(sm);

        let (mut sm, h) = StateMachineStore::open(db.clone(), NO_BYTES_TRIGGER).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0.map(|l| l.index), Some(3));
        assert_eq!((h.applied_index(), remembered(&h)), (3, vec!["r1".to_string(), "r2".into(), "r3".into()]));

        // An earlier version's per-item state at index 5, newer than the snapshot.
        let (mut legacy, _) = StateMachineStore::open(db.clone(), NO_BYTES_TRIGGER).unwrap();
        legacy.apply((4..=5).map(noop)).await.unwrap();
        let keys = legacy.state.read().unwrap().all_keys();
        let mut batch = WriteBatch::default();
        put_legacy_keys(&mut batch, cf_state, keys);
        let cf_meta = db.cf_handle(CF_META).unwrap();
        batch.put_cf(cf_meta, KEY_APPLIED, serde_json::to_vec(&Some(noop(5).log_id)).unwrap());
        db.write(batch).unwrap();
        let (_, h) = StateMachineStore::open(db.clone(), NO_BYTES_TRIGGER).unwrap();
        assert_eq!((h.applied_index(), remembered(&h).len()), (5, 5), "the newer legacy state is loaded");

        // A snapshot stored later is the state from then on; the legacy keys go.
        sm.apply((4..=6).map(noop)).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(db.iterator_cf(cf_state, IteratorMode::Start).count(), 0);
        assert!(db.get_cf(cf_meta, KEY_APPLIED).unwrap().is_none());
        let (_, h) = StateMachineStore::open(db, NO_BYTES_TRIGGER).unwrap();
        assert_eq!((h.applied_index(), remembered(&h).len()), (6, 6));
    }

    #[tokio::test]
    async fn the_store_asks_for_a_snapshot_per_limit_of_bytes_applied() {
        use futures::FutureExt as _;
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let len = |e: &Entry| match &e.payload {
            EntryPayload::Normal(r) => r.encoded_len() as u64,
            _ => 0,
        };
        // noop(1) to noop(9) encode to the same length.
        let (mut sm, _) = StateMachineStore::open(db, 3 * len(&noop(1))).unwrap();
        let trigger = sm.snapshot_trigger();
        let asked = || trigger.wanted.notified().now_or_never().is_some();
        sm.apply((1..=2).map(noop)).await.unwrap();
        assert!(!asked(), "two requests are below the limit");
        sm.apply([noop(3)]).await.unwrap();
        assert!(asked(), "three reach it");
        assert!(!asked(), "asked once");
        sm.apply((4..=5).map(noop)).await.unwrap();
        assert!(!asked(), "not again before another limit's worth");
        sm.apply([noop(6)]).await.unwrap();
        assert!(asked(), "again after another limit's worth: the first request may have been ignored");
        // A snapshot (here: the builder taken for one) starts the count anew.
        let _builder = sm.get_snapshot_builder().await;
        sm.apply((7..=8).map(noop)).await.unwrap();
        assert!(!asked());
        sm.apply([noop(9)]).await.unwrap();
        assert!(asked());
        // 0: by entries only.
        let dir = tempfile::tempdir().unwrap();
        let (mut sm, _) = StateMachineStore::open(crate::db::open(dir.path()).unwrap(), 0).unwrap();
        sm.apply((1..=9).map(noop)).await.unwrap();
        assert!(sm.snapshot_trigger().wanted.notified().now_or_never().is_none());
    }

    /// The wiring: with openraft's entry count out of reach, a running
    /// node still takes a snapshot once enough bytes were applied.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_running_node_snapshots_by_bytes_applied() {
        let timing = crate::Timing {
            snapshot_logs_since_last: 1_000_000,
            snapshot_bytes_since_last: 32 << 10,
            ..crate::Timing::default()
        };
        let (node, _dir) = crate::test_support::leader_timed(timing).await;
        let mut metrics = node.control.raft().metrics();
        assert!(metrics.borrow().snapshot.is_none(), "no snapshot before the writes");
        // 12 writes of ~4 KiB: over the 32 KiB limit once (by ~20 KiB,
        // less than another limit's worth).
        for i in 0..12 {
            let cmd = Command::PutCollateral { key: format!("k{i}"), blob_b64: "A".repeat(4 << 10) };
            let req = node.control.request("test", cmd);
            node.control.write(req, std::time::Duration::from_secs(20)).await.expect("written");
        }
        let taken =
            tokio::time::timeout(std::time::Duration::from_secs(30), metrics.wait_for(|m| m.snapshot.is_some()))
                .await
                .is_ok_and(|r| r.is_ok());
        assert!(taken, "no snapshot within 30 s of writing 48 KiB");
        node.shutdown().await;
    }

    #[test]
    fn snapshots_are_stored_raw_and_the_legacy_layout_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let cf = db.cf_handle(CF_META).unwrap();
        assert!(load_snapshot(&db).unwrap().is_none());
        // A store of the earlier version: one JSON document, data as numbers.
        let legacy = serde_json::json!({"meta": meta(5), "data": b"{\"old\":1}".to_vec()});
        db.put_cf(cf, KEY_SNAPSHOT_LEGACY, serde_json::to_vec(&legacy).unwrap()).unwrap();
        let (m, data) = load_snapshot(&db).unwrap().unwrap();
        assert_eq!((m.snapshot_id.as_str(), data.as_slice()), ("1-5-1", b"{\"old\":1}".as_slice()));
        // The next snapshot replaces it, its data stored byte for byte.
        store_snapshot(&db, &meta(9), b"{\"new\":2}").unwrap();
        assert!(db.get_cf(cf, KEY_SNAPSHOT_LEGACY).unwrap().is_none());
        assert_eq!(db.get_cf(cf, KEY_SNAPSHOT_DATA).unwrap().as_deref(), Some(b"{\"new\":2}".as_slice()));
        let (m, data) = load_snapshot(&db).unwrap().unwrap();
        assert_eq!((m.snapshot_id.as_str(), data.as_slice()), ("1-9-1", b"{\"new\":2}".as_slice()));
        // Metadata without its data is an error, not an empty snapshot.
        db.delete_cf(cf, KEY_SNAPSHOT_DATA).unwrap();
        assert!(load_snapshot(&db).is_err());
    }

    #[test]
    fn a_legacy_dedup_table_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let cf = db.cf_handle(CF_STATE).unwrap();
        let resp = Response { index: 3, ..Default::default() };
        let slot = crate::state::dedup_slot(3, 0);
        db.put_cf(cf, "dedup/req-1", serde_json::to_vec(&resp).unwrap()).unwrap();
        db.put_cf(cf, format!("dedupidx/{slot:020}"), "req-1").unwrap();
        db.put_cf(cf, "dedupz", "unrelated key after the legacy prefixes").unwrap();
        let (_, handle) = StateMachineStore::open(db.clone(), NO_BYTES_TRIGGER).unwrap();
        assert_eq!(handle.read(|s| s.dedup.get("req-1").cloned()), Some(resp.clone()));
        let keys: Vec<String> = db
            .iterator_cf(cf, IteratorMode::Start)
            .map(|kv| String::from_utf8_lossy(&kv.unwrap().0).into_owned())
            .collect();
        assert_eq!(keys, vec![format!("dedupslot/{slot:020}"), "dedupz".to_string()]);
        // Reopening reads the new layout to the same table, and a request
        // applied before the migration is still recognized as a duplicate.
        drop(handle);
        let (_, handle) = StateMachineStore::open(db.clone(), NO_BYTES_TRIGGER).unwrap();
        let mut state = handle.read(|s| s.clone());
        let req = Request { request_id: "req-1".into(), actor: "t".into(), proposed_at_ms: 0, command: Command::Noop };
        let r = state.apply(4, &req, 0);
        assert!(r.duplicate && r.index == 3);
    }
}
