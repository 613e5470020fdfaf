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

/// Runs blocking disk work (a synced write, a snapshot's encoding and
/// flush) without keeping the runtime worker busy.
///
/// Why: a node may run on a single async worker (`[runtime]
/// worker_threads = 1`), and a worker blocked in fsync would stall every
/// task it owns, heartbeats included. After a log append there is a second
/// reason: `append` has just woken the shipper (`Outbox::offer`), and tokio
/// puts a task woken from a worker into that worker's LIFO slot, which
/// other workers may not steal, so a worker blocked in fsync would hold
/// the express shipment back until its own write is done.
/// `block_in_place` hands the worker (LIFO slot included) to another thread
/// and runs the work here, so the caller continues without a wake-up hop.
/// On a current-thread runtime (unit tests) the work simply runs inline.
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
