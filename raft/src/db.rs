//! The node's one RocksDB instance and its column families.
//!
//! Log and state machine share one database so that they share one WAL: a
//! synced log append also makes every earlier state-machine write durable,
//! and a crash never leaves the state machine ahead of the log it came from.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

/// Raft log entries, keyed by big-endian index.
pub const CF_LOGS: &str = "logs";
/// Vote, committed and purged log ids, state-machine metadata, snapshot.
pub const CF_META: &str = "meta";
/// The control-plane state, one key per item (see `state::Mutation`).
pub const CF_STATE: &str = "state";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("opening RocksDB at {path}: {source}")]
    Open { path: String, source: rocksdb::Error },
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
