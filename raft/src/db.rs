//! The node's one RocksDB instance and its column families.
//!
//! Log, snapshot and metadata share one database and one WAL, so a synced
//! write of any of them also makes every earlier write durable.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

/// Raft log entries, keyed by big-endian index.
pub const CF_LOGS: &str = "logs";
/// Vote, committed and purged log ids, state-machine metadata, snapshot.
pub const CF_META: &str = "meta";
/// The control-plane state, one key per item (see `state::Mutation`), as
/// earlier versions wrote it on every apply; now only read until the first
/// snapshot replaces it (see `state_machine`).
pub const CF_STATE: &str = "state";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("opening RocksDB at {path}: {source}")]
    Open { path: String, source: rocksdb::Error },
}

/// Runs blocking disk work (a snapshot's encoding and flush, its
/// installation) without keeping the runtime worker busy.
///
/// Why: a node may run on a single async worker (`[runtime]
/// worker_threads = 1`), and a worker blocked on the disk would stall
/// every task it owns, heartbeats included. `block_in_place` hands the
/// worker to another thread and runs the work here, for work that
/// borrows from its caller. On a current-thread runtime (unit tests) the
/// work simply runs inline. The log's synced appends, one per write, run
/// on the blocking pool instead (`LogStore::append` says why).
pub(crate) fn off_worker<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Opens (or creates) the database under `dir`.
pub fn open(dir: &Path) -> Result<Arc<DB>, DbError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // This reaches only the (unused) default column family: `logs`,
    // `meta` and `state` below are opened with RocksDB's defaults (64 MiB
    // write buffers), which is what every benchmark in BENCHMARKS.md ran
    // with. Smaller buffers there would trade memory for more flushes;
    // not measured yet, so not changed.
    opts.set_write_buffer_size(16 << 20);
    opts.set_max_background_jobs(2);
    let cfs = [CF_LOGS, CF_META, CF_STATE].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    DB::open_cf_descriptors(&opts, dir, cfs)
        .map(Arc::new)
        .map_err(|source| DbError::Open { path: dir.display().to_string(), source })
}

/// Big-endian so that RocksDB's byte order is log order.
pub fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn key_index(key: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}
