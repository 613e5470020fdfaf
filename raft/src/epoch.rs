//! Configuration epochs and fencing.
//!
//! A forced promotion (see `recovery`) re-forms the Raft membership from the
//! surviving secondary nodes *outside* of Raft: the old primary's nodes never
//! agreed to it and still hold a membership in which they are a majority. If
//! they came back and were allowed to talk to the promoted side, openraft
//! would happily treat them as peers (votes, AppendEntries with a higher
//! term, …). The configuration **epoch** is what tells the two worlds apart:
//!
//! - Every node persists an [`EpochRecord`] in its `meta` column family.
//!   The bootstrap configuration is epoch 1; each forced promotion writes
//!   epoch `max(survivors) + 1` on every survivor before Raft restarts.
//! - Every Raft RPC carries the sender's epoch (`RaftMessage.epoch`). A node
//!   refuses RPCs from an older epoch with `FAILED_PRECONDITION` and the
//!   binary metadata [`EPOCH_METADATA`] (its own record, JSON). The sender
//!   learns from that refusal that it has been superseded and persists a
//!   [`FenceRecord`]: it is **fenced** at first contact.
//! - A fenced node sends no Raft RPC and accepts none (so it can neither
//!   elect a leader nor rejoin), its API answers `503 NodeFenced` for the
//!   data and the control plane, `/health` says why, and it reports the
//!   writes it holds that the promoted side does not have (divergent
//!   writes) to the promoted side's audit log. Only `attestd admin reseed`
//!   (which wipes its state) lifts the fence. The fence survives restarts.
//! - A node with *no* Raft state (brand new, or just re-seeded) adopts the
//!   newer epoch of whoever contacts it: it has nothing stale to serve.

use std::sync::{Arc, RwLock};

use rocksdb::{WriteOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::db::CF_META;
use crate::types::NodeId;

/// Binary gRPC metadata carrying an [`EpochRecord`] as JSON (tonic
/// base64-encodes `-bin` keys on the wire).
pub const EPOCH_METADATA: &str = "x-attest-epoch-bin";

const KEY_EPOCH: &[u8] = b"epoch";
const KEY_FENCE: &[u8] = b"fence";
const KEY_RESEEDED: &[u8] = b"reseeded";

/// `meta` keys a re-seed's wipe keeps: a crash between the wipe and the
/// new epoch record must leave the node fenced (re-run the re-seed), never
/// a blank epoch-1 node that might bootstrap the old cluster again.
pub const KEYS_KEPT_BY_WIPE: [&[u8]; 3] = [KEY_EPOCH, KEY_FENCE, KEY_RESEEDED];

/// One configuration epoch: which promotion created it and from which log
/// position. Epoch 1 is the bootstrap configuration (`base_*` = 0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u64,
    /// The last log id of the survivor the new configuration grew from:
    /// every entry up to it is shared by the old and the new epoch; any
    /// entry of an old-epoch node with a higher index, or a higher term,
    /// is divergent (see `recovery::divergent_entries`).
    pub base_term: u64,
    pub base_index: u64,
    /// The region that was promoted ("" for epoch 1).
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub promoted_at_ms: u64,
    /// Who asked for the promotion.
    #[serde(default)]
    pub by: String,
    /// The survivors that form the new voter set.
    #[serde(default)]
    pub members: Vec<NodeId>,
}

impl EpochRecord {
    pub fn initial() -> Self {
        Self { epoch: 1, ..Default::default() }
    }
}

/// Why and since when this node is fenced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceRecord {
    /// This node's epoch when it learned it was superseded.
    pub own_epoch: u64,
    /// The newer epoch, as the promoted side described it.
    pub newer: EpochRecord,
    pub learned_at_ms: u64,
    /// gRPC address of the promoted-side node that refused us (where the
    /// divergence report and the re-seed go).
    pub from_addr: String,
    /// The divergent writes were recorded in the promoted side's audit log.
    #[serde(default)]
    pub divergence_reported: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    #[error("epoch store: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("epoch record: {0}")]
    Decode(#[from] serde_json::Error),
}

struct Inner {
    record: EpochRecord,
    fence: Option<FenceRecord>,
    reseeded: bool,
}

/// The node's epoch and fence, persisted in `meta` and cached in memory
/// (read on every Raft RPC).
pub struct EpochState {
    db: Arc<DB>,
    inner: RwLock<Inner>,
    fenced_tx: watch::Sender<bool>,
}

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

impl EpochState {
    pub fn load(db: Arc<DB>) -> Result<Arc<Self>, EpochError> {
        let read = |k: &[u8]| -> Result<Option<Vec<u8>>, EpochError> {
            let Some(cf) = db.cf_handle(CF_META) else { return Ok(None) };
            Ok(db.get_cf(cf, k)?)
        };
        let record = match read(KEY_EPOCH)? {
            Some(b) => serde_json::from_slice(&b)?,
            None => EpochRecord::initial(),
        };
        let fence: Option<FenceRecord> = match read(KEY_FENCE)? {
            Some(b) => Some(serde_json::from_slice(&b)?),
            None => None,
        };
        let reseeded = read(KEY_RESEEDED)?.is_some();
        let (fenced_tx, _) = watch::channel(fence.is_some());
        Ok(Arc::new(Self { db, inner: RwLock::new(Inner { record, fence, reseeded }), fenced_tx }))
    }

    fn put(&self, key: &[u8], value: &impl Serialize) -> Result<(), EpochError> {
        let v = serde_json::to_vec(value)?;
        if let Some(cf) = self.db.cf_handle(CF_META) {
            self.db.put_cf_opt(cf, key, v, &synced())?;
        }
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), EpochError> {
        if let Some(cf) = self.db.cf_handle(CF_META) {
            self.db.delete_cf_opt(cf, key, &synced())?;
        }
        Ok(())
    }

    fn read_inner<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        f(&self.inner.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn write_inner<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.write().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn record(&self) -> EpochRecord {
        self.read_inner(|i| i.record.clone())
    }

    pub fn epoch(&self) -> u64 {
        self.read_inner(|i| i.record.epoch)
    }

    pub fn fence(&self) -> Option<FenceRecord> {
        self.read_inner(|i| i.fence.clone())
    }

    pub fn is_fenced(&self) -> bool {
        self.read_inner(|i| i.fence.is_some())
    }

    /// True once `admin reseed` wiped this node: it must never bootstrap a
    /// cluster of its own again, only join.
    pub fn reseeded(&self) -> bool {
        self.read_inner(|i| i.reseeded)
    }

    /// Changes whenever the node becomes fenced (or is re-seeded).
    pub fn watch_fenced(&self) -> watch::Receiver<bool> {
        self.fenced_tx.subscribe()
    }

    /// Persists a new epoch for this node (promotion commit, or a fresh
    /// node adopting the epoch of the cluster it joins).
    pub fn set_record(&self, record: EpochRecord) -> Result<(), EpochError> {
        self.put(KEY_EPOCH, &record)?;
        self.write_inner(|i| i.record = record);
        Ok(())
    }

    /// Records that `newer` supersedes this node's epoch. Returns true when
    /// the node was not fenced before (the caller logs and reports once).
    pub fn learn_fence(&self, newer: EpochRecord, from_addr: &str) -> Result<bool, EpochError> {
        let (own, already) = self.read_inner(|i| (i.record.epoch, i.fence.as_ref().map(|f| f.newer.epoch)));
        if newer.epoch <= own || already.is_some_and(|e| e >= newer.epoch) {
            return Ok(false);
        }
        let f = FenceRecord {
            own_epoch: own,
            newer,
            learned_at_ms: crate::control::now_ms(),
            from_addr: from_addr.to_string(),
            divergence_reported: false,
        };
        self.put(KEY_FENCE, &f)?;
        let first = already.is_none();
        self.write_inner(|i| i.fence = Some(f));
        self.fenced_tx.send_replace(true);
        Ok(first)
    }

    pub fn mark_divergence_reported(&self) -> Result<(), EpochError> {
        let Some(mut f) = self.fence() else { return Ok(()) };
        f.divergence_reported = true;
        self.put(KEY_FENCE, &f)?;
        self.write_inner(|i| i.fence = Some(f));
        Ok(())
    }

    /// After a wipe: adopt `record`, drop the fence, remember the re-seed.
    pub fn reset_after_reseed(&self, record: EpochRecord) -> Result<(), EpochError> {
        self.put(KEY_EPOCH, &record)?;
        self.put(KEY_RESEEDED, &crate::control::now_ms())?;
        self.delete(KEY_FENCE)?;
        self.write_inner(|i| {
            i.record = record;
            i.fence = None;
            i.reseeded = true;
        });
        self.fenced_tx.send_replace(false);
        Ok(())
    }

    /// The record a refusal carries: the newest epoch this node knows of
    /// (its own, or the one that fenced it).
    pub fn newest_known(&self) -> EpochRecord {
        self.read_inner(|i| match &i.fence {
            Some(f) if f.newer.epoch > i.record.epoch => f.newer.clone(),
            _ => i.record.clone(),
        })
    }
}

/// The refusal a node sends to an RPC from an older epoch.
pub fn stale_epoch_status(newest: &EpochRecord, sender_epoch: u64, fenced_self: bool) -> tonic::Status {
    let msg = if fenced_self {
        format!(
            "this node is fenced: epoch {} was superseded by epoch {} (promotion of {}); it takes part in no Raft traffic",
            sender_epoch.min(newest.epoch),
            newest.epoch,
            newest.region
        )
    } else {
        format!(
            "stale configuration epoch {sender_epoch}: the cluster is in epoch {} since the forced promotion of region {}; the sender is fenced and must be re-seeded",
            newest.epoch, newest.region
        )
    };
    let mut status = tonic::Status::failed_precondition(msg);
    if let Ok(json) = serde_json::to_vec(newest) {
        status.metadata_mut().insert_bin(EPOCH_METADATA, tonic::metadata::MetadataValue::from_bytes(&json));
    }
    status
}

/// The newer epoch named by a refusal, if the status is one.
pub fn epoch_from_status(status: &tonic::Status) -> Option<EpochRecord> {
    if status.code() != tonic::Code::FailedPrecondition {
        return None;
    }
    let v = status.metadata().get_bin(EPOCH_METADATA)?;
    let bytes = v.to_bytes().ok()?;
    serde_json::from_slice(&bytes).ok()
}
