//! The Raft log in RocksDB.
//!
//! Durability contract: `append` writes all entries in one `WriteBatch` with
//! a synced WAL and only then tells openraft that the entries are flushed.
//! openraft 0.9 counts the leader's own copy (and answers a follower's
//! AppendEntries) once `append` returns, so syncing inside `append`, not
//! later, is what makes "acknowledged ⇒ on disk" hold on every node.
//! The vote is saved with a synced write too; a node that forgot its vote
//! could vote twice in one term.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::db::{index_key, key_index, CF_LOGS, CF_META};
use crate::network::{byte_budget, MAX_APPEND_BYTES};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    /// The leader's new entries go here too, for express shipping to the
    /// secondary region (see `shipper`).
    outbox: Option<Arc<crate::shipper::Outbox>>,
    /// The latest entries in memory; shared by every handle on this log
    /// (including those of a Raft restarted in-process).
    cache: Arc<Mutex<EntryCache>>,
}

/// Entries kept in memory at most, and their encoded size at most (each
/// holds its encoding too, see `command::LogRequest`: about twice this in
/// memory).
const CACHE_MAX_ENTRIES: usize = 8192;
const CACHE_MAX_BYTES: usize = 32 << 20;

/// The latest appended entries, decoded.
///
/// openraft 0.9 reads every entry back from the log store once per
/// follower (to replicate it) and once more to apply it; decoding JSON from
/// RocksDB each time was the largest single cost on a busy leader
/// (BENCHMARKS.md). The cache holds a contiguous run that always ends at
/// the log's last entry (appends push after their synced write, truncation
/// pops, purge and the recovery rewrites trim or clear it), so a read
/// starting inside the run is complete; any other read goes to disk.
#[derive(Default)]
pub struct EntryCache {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl EntryCache {
    fn push(&mut self, e: Entry, size: usize) {
        if self.entries.back().is_some_and(|(last, _)| last.log_id.index + 1 != e.log_id.index) {
            self.clear();
        }
        self.bytes += size;
        self.entries.push_back((e, size));
        while self.entries.len() > CACHE_MAX_ENTRIES || self.bytes > CACHE_MAX_BYTES {
            match self.entries.pop_front() {
                Some((_, n)) => self.bytes -= n,
                None => break,
            }
        }
    }

    fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|(e, _)| e.log_id.index >= index) {
            if let Some((_, n)) = self.entries.pop_back() {
                self.bytes -= n;
            }
        }
    }

    fn purge_through(&mut self, index: u64) {
        while self.entries.front().is_some_and(|(e, _)| e.log_id.index <= index) {
            if let Some((_, n)) = self.entries.pop_front() {
                self.bytes -= n;
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries of `range` from `start` on (at most `max_bytes` beyond
    /// the first), if the run covers `start`.
    fn read<RB: RangeBounds<u64>>(&self, start: u64, range: &RB, max_bytes: usize) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.0.log_id.index;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        let mut fits = byte_budget(max_bytes);
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take_while(|(e, size)| range.contains(&e.log_id.index) && fits(*size))
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

fn sto_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> Self {
        Self { db, outbox: None, cache: Arc::default() }
    }

    /// A log store that also offers appended entries to `outbox` and keeps
    /// its latest entries in `cache` (one cache per log, whatever the
    /// number of handles).
    pub fn shared(db: Arc<DB>, outbox: Arc<crate::shipper::Outbox>, cache: Arc<Mutex<EntryCache>>) -> Self {
        Self { db, outbox: Some(outbox), cache }
    }

    /// The entry cache this handle shares.
    pub fn cache(&self) -> Arc<Mutex<EntryCache>> {
        self.cache.clone()
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, EntryCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cf_logs(&self) -> &rocksdb::ColumnFamily {
        // Column families are created at open; their absence is a bug in
        // `db::open`, not a runtime condition.
        self.db.cf_handle(CF_LOGS).expect("logs column family exists")
    }

    fn cf_meta(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_META).expect("meta column family exists")
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let raw = self.db.get_cf(self.cf_meta(), key).map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        match raw {
            None => Ok(None),
            Some(b) => {
                serde_json::from_slice(&b).map(Some).map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Read, e))
            }
        }
    }

    fn put_meta_synced<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let v = serde_json::to_vec(value).map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.db
            .put_cf_opt(self.cf_meta(), key, v, &synced())
            .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    /// Up to `limit` entries from `from` on, as stored locally (committed
    /// or not): operators and recovery reports.
    pub fn entries_from(&self, from: u64, limit: usize) -> Result<Vec<Entry>, StorageError> {
        self.entries_within(from, limit, usize::MAX)
    }

    /// Like [`Self::entries_from`], cut at `max_bytes` of stored entries
    /// beyond the first (what one AppendEntries may carry): the shipper's
    /// catch-up of a peer the outbox no longer covers.
    pub fn entries_within(&self, from: u64, limit: usize, max_bytes: usize) -> Result<Vec<Entry>, StorageError> {
        let end = from.saturating_add(u64::try_from(limit).unwrap_or(u64::MAX));
        self.read_range(from, &(from..end), max_bytes)
    }

    /// The entries of `range` from `start` on, at most `max_bytes` of them
    /// beyond the first: from the cache when it covers `start`, else
    /// decoded from disk (only those kept).
    fn read_range<RB: RangeBounds<u64>>(
        &self,
        start: u64,
        range: &RB,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        if let Some(hit) = self.cached().read(start, range, max_bytes) {
            return Ok(hit);
        }
        let mut fits = byte_budget(max_bytes);
        let mut out = Vec::new();
        let it = self.db.iterator_cf(self.cf_logs(), IteratorMode::From(&index_key(start), Direction::Forward));
        for item in it {
            let (k, v) = item.map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let Some(idx) = key_index(&k) else { continue };
            if !range.contains(&idx) || !fits(v.len()) {
                break;
            }
            out.push(serde_json::from_slice(&v).map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?);
        }
        Ok(out)
    }

    /// The membership entries at index `from` and after, read from disk.
    /// Every other entry is skipped by its payload tag, without decoding
    /// it: a node starts by asking its peers for their epoch
    /// (`recovery::known_peers`), and the log it scans for them may hold
    /// hundreds of megabytes of policies and collateral.
    pub fn membership_entries_from(&self, from: u64) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        let it = self.db.iterator_cf(self.cf_logs(), IteratorMode::From(&index_key(from), Direction::Forward));
        for item in it {
            let (k, v) = item.map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            if key_index(&k).is_none() || is_normal_entry(&v) {
                continue;
            }
            let e: Entry = serde_json::from_slice(&v).map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            if matches!(e.payload, openraft::EntryPayload::Membership(_)) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Index of the last purged entry, if the log was ever purged (the
    /// first entry on disk follows it); unreadable counts as never.
    pub fn last_purged_index(&self) -> Option<u64> {
        self.get_meta::<LogId>(KEY_PURGED).ok().flatten().map(|l| l.index)
    }

    /// The vote on disk (recovery reports; Raft reads it through the trait).
    pub fn stored_vote(&self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    /// The last log id on disk, counting a purge point as the last entry
    /// of an empty log.
    pub fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        Ok(self.last_entry_log_id()?.or(last_purged))
    }

    /// UNSAFE RECOVERY ONLY, with Raft shut down: overwrite the vote. See
    /// `recovery` for why a forced promotion may do this.
    pub fn force_vote(&self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta_synced(KEY_VOTE, vote)
    }

    /// UNSAFE RECOVERY ONLY, with Raft shut down: append `entry` right after
    /// the last one (synced), dropping anything at or after its index.
    pub fn force_append(&self, entry: &Entry) -> Result<(), StorageError> {
        let v = serde_json::to_vec(entry).map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf_logs(), index_key(entry.log_id.index), index_key(u64::MAX));
        batch.delete_cf(self.cf_logs(), index_key(u64::MAX));
        batch.put_cf(self.cf_logs(), index_key(entry.log_id.index), v);
        self.cached().clear();
        self.db.write_opt(batch, &synced()).map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    /// RE-SEED ONLY, with Raft shut down: deletes every log entry, the vote,
    /// the state machine and its snapshot: the node becomes a blank member
    /// (its epoch and fence records stay until the caller replaces them).
    pub fn wipe_all(&self) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for cf in [crate::db::CF_LOGS, CF_META, crate::db::CF_STATE] {
            let Some(h) = self.db.cf_handle(cf) else { continue };
            let it = self.db.iterator_cf(h, IteratorMode::Start);
            for item in it {
                let (k, _) = item.map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
                if cf == CF_META && crate::epoch::KEYS_KEPT_BY_WIPE.contains(&&*k) {
                    continue;
                }
                batch.delete_cf(h, k);
            }
        }
        self.cached().clear();
        self.db.write_opt(batch, &synced()).map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Delete, e))
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut it = self.db.iterator_cf(self.cf_logs(), IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(Err(e)) => Err(sto_err(ErrorSubject::Logs, ErrorVerb::Read, e)),
            Some(Ok((_, v))) => {
                let e: Entry =
                    serde_json::from_slice(&v).map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Ok(Some(e.log_id))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        self.read_range(start, &range, usize::MAX)
    }

    /// What openraft replicates in one AppendEntries: the first entries of
    /// `[start, end)` within [`MAX_APPEND_BYTES`] (openraft itself counts
    /// entries only; see there). openraft sends the rest in the next request.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        self.read_range(start, &(start..end), MAX_APPEND_BYTES)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last = self.last_entry_log_id()?.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta_synced(KEY_VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: a lost committed index is recomputed by the leader; it
        // only lets a restarted node apply sooner.
        let v = serde_json::to_vec(&committed).map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.db.put_cf(self.cf_meta(), KEY_COMMITTED, v).map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // Before our own fsync: the secondary may get them in parallel.
        // A leader that kept them for shipping yields once first, so the
        // shipper and the connections it wakes put them on the wire before
        // the synced write starts (the order of Ongaro §10.2.1). Without
        // the yield the shipment left ~0.25 ms later: the pool thread
        // woken for the write below preempts this worker on its CPU and
        // runs RocksDB's write up to the fsync first (BENCHMARKS.md,
        // session 30). The leader's own fsync is not what a sync write
        // waits for across the WAN; the secondary's is.
        if let Some(outbox) = &self.outbox {
            if outbox.offer(&entries) {
                tokio::task::yield_now().await;
            }
        }
        let mut batch = WriteBatch::default();
        let n = entries.len() as u64;
        let mut sizes = Vec::with_capacity(entries.len());
        for e in &entries {
            let v = serde_json::to_vec(e).map_err(|err| sto_err(ErrorSubject::Logs, ErrorVerb::Write, err))?;
            sizes.push(v.len());
            batch.put_cf(self.cf_logs(), index_key(e.log_id.index), v);
        }
        // On tokio's blocking pool, awaited, rather than under
        // `block_in_place` (`db::off_worker`): this worker stays where it
        // is and goes on with its other tasks while a pool thread writes.
        // Under `block_in_place` the shipper and the connections that send
        // its shipments waited for another thread to be woken and take the
        // worker over (the leader's own fsync started ~0.2 ms before its
        // shipment left), and every append moved the worker between
        // threads. (The yield above covers the rest: the woken pool thread
        // itself runs first on this CPU.) BENCHMARKS.md, session 29:
        // loopback 1-client p50 2.1–2.7 → 1.3–1.5 ms, server CPU per write
        // −30 to −40 %, 64-client throughput 3 155–3 655 → 3 871–4 623
        // writes/s; the 20 ms row unchanged within its noise.
        //
        // The recorded time includes the wait for a pool thread. Once
        // started, the write runs to its end even if this future were
        // dropped; openraft runs storage commands outside its shutdown
        // `select!`, so a Raft stopped (or restarted in-process) has waited
        // for this append's answer.
        let started = std::time::Instant::now();
        let db = self.db.clone();
        let res = tokio::task::spawn_blocking(move || db.write_opt(batch, &synced()).map_err(|e| e.to_string()))
            .await
            .unwrap_or_else(|e| Err(format!("the log write's thread failed: {e}")));
        metrics::histogram!("attest_raft_log_append_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("attest_raft_log_entries_appended_total").increment(n);
        match res {
            Ok(()) => {
                let mut cache = self.cached();
                for (e, size) in entries.into_iter().zip(sizes) {
                    cache.push(e, size);
                }
                drop(cache);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let io = std::io::Error::other(e.clone());
                callback.log_io_completed(Err(std::io::Error::other(e)));
                Err(StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Write, io))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.cached().truncate_from(log_id.index);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf_logs(), index_key(log_id.index), index_key(u64::MAX));
        batch.delete_cf(self.cf_logs(), index_key(u64::MAX));
        self.db.write_opt(batch, &synced()).map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: if we crash in between, a too-old
        // purge marker with entries still present is harmless; the reverse
        // (entries gone, marker missing) would make the log look empty.
        self.put_meta_synced(KEY_PURGED, &log_id)?;
        self.cached().purge_through(log_id.index);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf_logs(), index_key(0), index_key(log_id.index.saturating_add(1)));
        self.db.write(batch).map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        metrics::gauge!("attest_raft_log_purged_index").set(log_id.index as f64);
        Ok(())
    }
}

/// Whether a stored entry is certainly an `EntryPayload::Normal`, from its
/// first bytes: serde writes the log id (numbers only) and then the payload
/// tag, so the first `"payload":` is the entry's own. Anything else
/// (a membership, a blank, an unexpected layout) is decoded by the caller.
fn is_normal_entry(raw: &[u8]) -> bool {
    const FIELD: &[u8] = b"\"payload\":";
    const NORMAL: &[u8] = b"{\"Normal\"";
    let head = &raw[..raw.len().min(256)];
    head.windows(FIELD.len()).position(|w| w == FIELD).is_some_and(|at| head[at + FIELD.len()..].starts_with(NORMAL))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Request};

    fn entry(index: u64) -> Entry {
        let req =
            Request { request_id: format!("r{index}"), actor: "t".into(), proposed_at_ms: 0, command: Command::Noop };
        Entry { log_id: entries_log_id(index), payload: openraft::EntryPayload::Normal(req.into()) }
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn the_cache_serves_only_reads_it_fully_covers() {
        let mut c = EntryCache::default();
        for i in 5..=9 {
            c.push(entry(i), 10);
        }
        assert_eq!(indexes(c.read(7, &(7..), usize::MAX)), Some(vec![7, 8, 9]));
        assert_eq!(indexes(c.read(6, &(6..8), usize::MAX)), Some(vec![6, 7]));
        assert_eq!(c.read(4, &(4..), usize::MAX), None, "index 4 is only on disk");
        assert_eq!(indexes(c.read(12, &(12..), usize::MAX)), Some(vec![]), "nothing past the log's end");
        c.truncate_from(8);
        assert_eq!(indexes(c.read(5, &(5..), usize::MAX)), Some(vec![5, 6, 7]));
        c.purge_through(5);
        assert_eq!(c.read(5, &(5..), usize::MAX), None);
        // A gap (after a recovery rewrite) restarts the run.
        c.push(entry(20), 10);
        assert_eq!(c.read(7, &(7..), usize::MAX), None);
        assert_eq!(indexes(c.read(20, &(20..), usize::MAX)), Some(vec![20]));
        assert_eq!(c.bytes, 10);
    }

    fn collateral(index: u64, bytes: usize) -> Entry {
        let command = Command::PutCollateral { key: format!("k{index}"), blob_b64: "A".repeat(bytes) };
        let req = Request { request_id: format!("r{index}"), actor: "t".into(), proposed_at_ms: 0, command };
        Entry { log_id: entries_log_id(index), payload: openraft::EntryPayload::Normal(req.into()) }
    }

    /// openraft asks for up to 300 entries per AppendEntries; it gets the
    /// first ones within `MAX_APPEND_BYTES` (and always one), from disk and
    /// from the cache alike. Other reads are not cut.
    #[tokio::test]
    async fn replication_reads_are_bounded_by_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = LogStore::new(crate::db::open(dir.path()).expect("opens"));
        let quarter = MAX_APPEND_BYTES / 4;
        let entries: Vec<Entry> =
            (1..=10).map(|i| collateral(i, if i == 5 { 2 * MAX_APPEND_BYTES } else { quarter })).collect();
        for e in &entries {
            let v = serde_json::to_vec(e).expect("encodes");
            store.db.put_cf(store.cf_logs(), index_key(e.log_id.index), v).expect("written");
        }
        let got = |v: Vec<Entry>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        // Four quarter-budget entries pass the budget by their framing.
        assert_eq!(got(store.limited_get_log_entries(1, 301).await.expect("read")), vec![1, 2, 3]);
        assert_eq!(got(store.limited_get_log_entries(4, 301).await.expect("read")), vec![4]);
        assert_eq!(
            got(store.limited_get_log_entries(5, 301).await.expect("read")),
            vec![5],
            "an oversized entry goes alone"
        );
        assert_eq!(got(store.limited_get_log_entries(9, 10).await.expect("read")), vec![9]);
        assert_eq!(store.try_get_log_entries(1..).await.expect("read").len(), 10);
        assert_eq!(got(store.entries_within(6, 256, MAX_APPEND_BYTES).expect("read")), vec![6, 7, 8]);
        for e in entries {
            let size = serde_json::to_vec(&e).expect("encodes").len();
            store.cached().push(e, size);
        }
        assert_eq!(got(store.limited_get_log_entries(2, 301).await.expect("read")), vec![2, 3, 4]);
        assert_eq!(got(store.limited_get_log_entries(5, 301).await.expect("read")), vec![5]);
        assert_eq!(store.entries_from(1, 256).expect("read").len(), 10);
        assert_eq!(store.last_purged_index(), None);
        store.purge(entries_log_id(4)).await.expect("purged");
        assert_eq!(store.last_purged_index(), Some(4));
        assert_eq!(got(store.entries_from(1, 256).expect("read")), (5..=10).collect::<Vec<_>>());
    }

    /// Only membership entries are decoded, also when a request's text
    /// (here a policy) spells the membership tag.
    #[test]
    fn membership_entries_are_found_without_decoding_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LogStore::new(crate::db::open(dir.path()).expect("opens"));
        let membership = openraft::Membership::new(vec![std::collections::BTreeSet::from([1, 2])], None);
        let tricky = Command::SetPolicy {
            provider: "p".into(),
            attestation_type: "Tpm".into(),
            document: r#"// "payload":{"Membership":{}}"#.into(),
            meta: serde_json::Value::Null,
        };
        let req = Request { request_id: "r2".into(), actor: "t".into(), proposed_at_ms: 0, command: tricky };
        let entries = [
            entry(1),
            Entry { log_id: entries_log_id(2), payload: openraft::EntryPayload::Normal(req.into()) },
            Entry { log_id: entries_log_id(3), payload: openraft::EntryPayload::Membership(membership) },
            Entry { log_id: entries_log_id(4), payload: openraft::EntryPayload::Blank },
            collateral(5, 4096),
        ];
        for e in &entries {
            let v = serde_json::to_vec(e).expect("encodes");
            assert_eq!(is_normal_entry(&v), matches!(e.payload, openraft::EntryPayload::Normal(_)), "entry {e:?}");
            store.db.put_cf(store.cf_logs(), index_key(e.log_id.index), v).expect("written");
        }
        let found = |from| store.membership_entries_from(from).expect("read");
        assert_eq!(found(1).iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![3]);
        assert!(found(4).is_empty());
        // Bytes that are no entry at all are an error, not skipped.
        store.db.put_cf(store.cf_logs(), index_key(6), b"{\"payload\":\"garbage").expect("written");
        assert!(store.membership_entries_from(1).is_err());
    }

    fn entries_log_id(index: u64) -> LogId {
        LogId::new(openraft::CommittedLeaderId::new(1, 1), index)
    }

    #[test]
    fn the_cache_is_bounded_by_bytes() {
        let mut c = EntryCache::default();
        for i in 1..=4 {
            c.push(entry(i), CACHE_MAX_BYTES / 3);
        }
        assert_eq!(c.entries.len(), 3);
        assert_eq!(c.read(1, &(1..), usize::MAX), None);
        assert_eq!(indexes(c.read(2, &(2..), usize::MAX)), Some(vec![2, 3, 4]));
    }
}
