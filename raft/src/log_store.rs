//! The Raft log in RocksDB.
//!
//! Durability contract: `append` writes all entries in one `WriteBatch` with
//! a synced WAL and only then tells openraft that the entries are flushed.
//! openraft 0.9 counts the leader's own copy (and answers a follower's
//! AppendEntries) once `append` returns, so syncing inside `append`, not
//! later, is what makes "acknowledged ⇒ on disk" hold on every node.
//! The vote is saved with a synced write too; a node that forgot its vote
//! could vote twice in one term.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::db::{index_key, key_index, CF_LOGS, CF_META};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
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
        Self { db }
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
    /// or not). For operators and recovery reports, not for Raft.
    pub fn entries_from(&self, from: u64, limit: usize) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        let it = self.db.iterator_cf(self.cf_logs(), IteratorMode::From(&index_key(from), Direction::Forward));
        for item in it.take(limit) {
            let (_, v) = item.map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            out.push(serde_json::from_slice(&v).map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?);
        }
        Ok(out)
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
        let mut out = Vec::new();
        let it = self.db.iterator_cf(self.cf_logs(), IteratorMode::From(&index_key(start), Direction::Forward));
        for item in it {
            let (k, v) = item.map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let Some(idx) = key_index(&k) else { continue };
            if !range.contains(&idx) {
                break;
            }
            let e: Entry = serde_json::from_slice(&v).map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            out.push(e);
        }
        Ok(out)
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
        let mut batch = WriteBatch::default();
        let mut n = 0u64;
        for e in entries {
            let v = serde_json::to_vec(&e).map_err(|err| sto_err(ErrorSubject::Logs, ErrorVerb::Write, err))?;
            batch.put_cf(self.cf_logs(), index_key(e.log_id.index), v);
            n += 1;
        }
        let started = std::time::Instant::now();
        let res = self.db.write_opt(batch, &synced());
        metrics::histogram!("attest_raft_log_append_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("attest_raft_log_entries_appended_total").increment(n);
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let io = std::io::Error::other(e.to_string());
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Write, io))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
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
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf_logs(), index_key(0), index_key(log_id.index.saturating_add(1)));
        self.db.write(batch).map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        metrics::gauge!("attest_raft_log_purged_index").set(log_id.index as f64);
        Ok(())
    }
}
