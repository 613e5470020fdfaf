//! The control-plane state: what the Raft log builds, and what every node's
//! data plane reads from its own applied copy.
//!
//! [`ControlState::apply`] is a pure, deterministic function of the state and
//! the request: it changes the state in memory and returns the
//! [`Response`]. Free of I/O, it is unit-tested directly; the state machine
//! persists the state through snapshots and the log (`state_machine.rs`).
//!
//! The per-item key layout (`load_key`) is what earlier versions wrote on
//! every apply. It is still read, to load a node upgraded before its first
//! new snapshot, and no longer written; `apply` does not build those keys
//! (a JSON encoding of every record it changed, which the store discarded).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandError, ReplicationMode, Request, Response, TrustModel};
use crate::types::NodeId;

/// How many applied request ids are remembered for deduplication (at
/// least; up to [`DEDUP_EVICT_CHUNK`] more). A client retrying a write older
/// than this many writes would apply it again; at the control plane's write
/// rates that is months of history.
pub const DEDUP_CAPACITY: usize = 100_000;

/// The oldest request ids are forgotten this many at a time (one split of
/// the eviction order, not a removal per write).
pub const DEDUP_EVICT_CHUNK: usize = 1024;

/// Key prefix of the dedup table: `dedupslot/{slot:020}` holds a
/// [`DedupRecord`] (one key per request, in eviction order).
const DEDUP_SLOT_PREFIX: &str = "dedupslot/";
/// Earlier layout, still read (and migrated by the state machine store):
/// `dedup/{id}` held the response and `dedupidx/{slot:020}` the id, two keys
/// written and two deleted per request.
pub const LEGACY_DEDUP_PREFIXES: [&str; 2] = ["dedup/", "dedupidx/"];

/// One remembered request, as stored under its eviction slot (borrowed
/// when written, owned when loaded).
#[derive(Serialize, Deserialize)]
struct DedupRecord<'a> {
    id: Cow<'a, str>,
    response: Cow<'a, Response>,
}

fn dedup_slot_key(slot: u64) -> String {
    format!("{DEDUP_SLOT_PREFIX}{slot:020}")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub primary: String,
    pub secondary: Option<String>,
    pub set_at_index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    pub name: String,
    pub trust_model: TrustModel,
    pub token_alg: String,
    pub shared: bool,
    pub created_at_index: u64,
    /// Home region (empty in entries written before it existed: the
    /// cluster's primary region).
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub attest_requires_auth: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub provider: String,
    pub attestation_type: String,
    pub document: String,
    pub meta: serde_json::Value,
    /// Log index of the write that stored this version: compiled policies
    /// are cached per (provider, type, version).
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerRecord {
    pub provider: String,
    pub thumbprint: String,
    pub cert_pem: String,
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCertRecord {
    pub node_id: NodeId,
    pub kid: String,
    pub cert_pem: String,
    pub retired_at: Option<u64>,
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollateralRecord {
    pub key: String,
    pub blob_b64: String,
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReplicationRecord {
    pub mode: ReplicationMode,
    pub reason: String,
    /// Log index of the entry that set the mode (0: initial default).
    pub since_index: u64,
    /// Proposer's wall clock when the mode changed (informational).
    pub changed_at_ms: u64,
}

/// One entry of the replicated disaster-recovery audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Log index of the entry that recorded it.
    pub index: u64,
    /// What happened: `promote`, `reseed`, `rebalance`, `divergent-writes`, …
    pub action: String,
    /// Who: the operator's token subject, or the node that reported it.
    pub actor: String,
    /// When: the proposer's wall clock (Unix ms).
    pub at_ms: u64,
    /// The configuration epoch the event belongs to.
    pub epoch: u64,
    /// Estimated recovery point (promotions), in words.
    pub rpo: Option<String>,
    pub detail: serde_json::Value,
}

/// The whole replicated control plane.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    pub topology: Option<Topology>,
    pub providers: BTreeMap<String, Provider>,
    /// Keyed by [`policy_key`].
    pub policies: BTreeMap<String, PolicyRecord>,
    /// Keyed by [`signer_key`].
    pub signers: BTreeMap<String, SignerRecord>,
    /// Keyed by `kid`.
    pub node_certs: BTreeMap<String, NodeCertRecord>,
    pub collateral: BTreeMap<String, CollateralRecord>,
    pub replication: ReplicationRecord,
    /// The configuration epoch the applied log is in (1 until the first
    /// forced promotion; see `epoch`).
    #[serde(default)]
    pub epoch: u64,
    /// Disaster-recovery audit log, keyed by log index.
    #[serde(default)]
    pub audit: BTreeMap<u64, AuditRecord>,
    /// request id → first response. Persisted and part of snapshots so that
    /// deduplication survives restarts and leader changes.
    pub dedup: HashMap<String, Response>,
    /// applied index → request id, to evict the oldest ids first.
    pub dedup_order: BTreeMap<u64, String>,
}

/// Key of a policy: provider names are case-insensitive (DNS labels), the
/// attestation type is stored in its canonical spelling by the API layer.
pub fn policy_key(provider: &str, attestation_type: &str) -> String {
    format!("{}/{}", provider.to_ascii_lowercase(), attestation_type)
}

pub fn signer_key(provider: &str, thumbprint: &str) -> String {
    format!("{}/{}", provider.to_ascii_lowercase(), thumbprint.to_ascii_uppercase())
}

fn provider_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn err(code: &str, message: impl Into<String>) -> Option<CommandError> {
    Some(CommandError { code: code.to_string(), message: message.into() })
}

/// One key of the legacy per-item layout (see the module docs) and its value.
pub type LegacyKey = (String, Vec<u8>);

fn put<T: Serialize>(keys: &mut Vec<LegacyKey>, key: String, value: &T) {
    // Serializing these plain structs cannot fail; an empty value would be
    // caught by the loader's error path rather than panicking here.
    keys.push((key, serde_json::to_vec(value).unwrap_or_default()));
}

/// Requests one log entry may carry (see `batcher::MAX_BATCH`).
pub const MAX_REQUESTS_PER_ENTRY: u64 = 4096;

/// Position of the `pos`-th request of the entry at `index` in the dedup
/// table's eviction order: requests of one batch share the log index.
pub fn dedup_slot(index: u64, pos: u64) -> u64 {
    index.saturating_mul(MAX_REQUESTS_PER_ENTRY).saturating_add(pos.min(MAX_REQUESTS_PER_ENTRY - 1))
}

impl ControlState {
    /// Applies one request at log `index` and returns its response. A
    /// request id seen before returns the stored response with
    /// `duplicate = true` and changes nothing.
    pub fn apply(&mut self, index: u64, req: &Request, proposed_at_ms: u64) -> Response {
        let Command::Batch { requests } = &req.command else {
            return self.apply_one(index, 0, req, proposed_at_ms);
        };
        // The batch envelope itself is not remembered: its id is the
        // leader's, never a client's, and retries resend members, not it.
        let mut batch = Vec::with_capacity(requests.len());
        for (pos, r) in requests.iter().enumerate() {
            batch.push(if matches!(r.command, Command::Batch { .. }) {
                Response { index, error: err("InvalidOperation", "nested batch"), ..Default::default() }
            } else {
                self.apply_one(index, pos as u64, r, r.proposed_at_ms)
            });
        }
        Response { index, batch, ..Default::default() }
    }

    /// One client request, the `pos`-th of its log entry.
    fn apply_one(&mut self, index: u64, pos: u64, req: &Request, proposed_at_ms: u64) -> Response {
        if let Some(prev) = self.dedup.get(&req.request_id) {
            let mut r = prev.clone();
            r.duplicate = true;
            return r;
        }
        let (error, detail) = self.apply_command(index, &req.command, proposed_at_ms);
        if error.is_none() {
            self.audit_of(index, req);
        }
        let resp = Response { index, error, duplicate: false, detail, batch: Vec::new() };
        self.remember(dedup_slot(index, pos), &req.request_id, &resp);
        resp
    }

    /// `slot` orders the dedup table for eviction (see [`dedup_slot`]).
    fn remember(&mut self, slot: u64, id: &str, resp: &Response) {
        self.dedup.insert(id.to_string(), resp.clone());
        self.dedup_order.insert(slot, id.to_string());
        let len = self.dedup_order.len();
        if len > DEDUP_CAPACITY + DEDUP_EVICT_CHUNK {
            // Everything below the oldest slot kept goes at once.
            let Some(&keep_from) = self.dedup_order.keys().nth(len - DEDUP_CAPACITY) else { return };
            let kept = self.dedup_order.split_off(&keep_from);
            let evicted = std::mem::replace(&mut self.dedup_order, kept);
            for id in evicted.values() {
                self.dedup.remove(id);
            }
        }
    }

    /// The dedup table in the per-item layout's current form (to migrate
    /// [`LEGACY_DEDUP_PREFIXES`] in a store that still reads that layout).
    pub fn dedup_keys(&self) -> Vec<LegacyKey> {
        let mut m = Vec::with_capacity(self.dedup_order.len());
        for (slot, id) in &self.dedup_order {
            if let Some(response) = self.dedup.get(id) {
                put(&mut m, dedup_slot_key(*slot), &DedupRecord { id: id.into(), response: Cow::Borrowed(response) });
            }
        }
        m
    }

    fn apply_command(&mut self, index: u64, cmd: &Command, now_ms: u64) -> (Option<CommandError>, Option<String>) {
        match cmd {
            Command::Noop => (None, None),
            // `apply` unpacks batches; one nested inside another is refused there.
            Command::Batch { .. } => (err("InvalidOperation", "nested batch"), None),
            Command::SetTopology { primary, secondary } => {
                let t = Topology { primary: primary.clone(), secondary: secondary.clone(), set_at_index: index };
                self.topology = Some(t);
                (None, None)
            }
            Command::CreateProvider {
                name,
                trust_model,
                token_alg,
                signer_certs,
                shared,
                location,
                attest_requires_auth,
            } => {
                let key = provider_key(name);
                if self.providers.contains_key(&key) {
                    return (err("Conflict", format!("provider '{name}' already exists")), None);
                }
                let p = Provider {
                    name: name.clone(),
                    trust_model: *trust_model,
                    token_alg: token_alg.clone(),
                    shared: *shared,
                    created_at_index: index,
                    location: location.clone(),
                    attest_requires_auth: *attest_requires_auth,
                };
                self.providers.insert(key, p);
                for pem in signer_certs {
                    let thumbprint = pem_thumbprint(pem);
                    let rec = SignerRecord {
                        provider: name.clone(),
                        thumbprint: thumbprint.clone(),
                        cert_pem: pem.clone(),
                        version: index,
                    };
                    let k = signer_key(name, &thumbprint);
                    self.signers.insert(k, rec);
                }
                (None, None)
            }
            Command::DeleteProvider { name } => {
                let key = provider_key(name);
                match self.providers.get(&key) {
                    None => return (err("ProviderNotFound", format!("provider '{name}' does not exist")), None),
                    Some(p) if p.shared => {
                        return (err("InvalidOperation", format!("shared provider '{name}' cannot be deleted")), None)
                    }
                    Some(_) => {}
                }
                self.providers.remove(&key);
                let prefix = format!("{key}/");
                let pols: Vec<String> = self.policies.keys().filter(|k| k.starts_with(&prefix)).cloned().collect();
                for k in pols {
                    self.policies.remove(&k);
                }
                let sigs: Vec<String> = self.signers.keys().filter(|k| k.starts_with(&prefix)).cloned().collect();
                for k in sigs {
                    self.signers.remove(&k);
                }
                (None, None)
            }
            Command::SetPolicy { provider, attestation_type, document, meta } => {
                if let Some(e) = self.check_policy_writable(provider) {
                    return (Some(e), None);
                }
                let rec = PolicyRecord {
                    provider: provider.clone(),
                    attestation_type: attestation_type.clone(),
                    document: document.clone(),
                    meta: meta.clone(),
                    version: index,
                };
                let k = policy_key(provider, attestation_type);
                self.policies.insert(k, rec);
                (None, None)
            }
            Command::ResetPolicy { provider, attestation_type } => {
                if let Some(e) = self.check_policy_writable(provider) {
                    return (Some(e), None);
                }
                let k = policy_key(provider, attestation_type);
                self.policies.remove(&k);
                (None, None)
            }
            Command::AddSigner { provider, thumbprint, cert_pem } => {
                if !self.providers.contains_key(&provider_key(provider)) {
                    return (err("ProviderNotFound", format!("provider '{provider}' does not exist")), None);
                }
                let k = signer_key(provider, thumbprint);
                let rec = SignerRecord {
                    provider: provider.clone(),
                    thumbprint: thumbprint.to_ascii_uppercase(),
                    cert_pem: cert_pem.clone(),
                    version: index,
                };
                self.signers.insert(k, rec);
                (None, Some("IsPresent".into()))
            }
            Command::RemoveSigner { provider, thumbprint } => {
                if !self.providers.contains_key(&provider_key(provider)) {
                    return (err("ProviderNotFound", format!("provider '{provider}' does not exist")), None);
                }
                let k = signer_key(provider, thumbprint);
                // MAA refuses to remove an Isolated provider's last signer: it
                // could never change its policy again. Checked here, in the
                // log order, so two concurrent removals cannot both pass.
                let isolated =
                    self.providers.get(&provider_key(provider)).is_some_and(|p| p.trust_model == TrustModel::Isolated);
                let prefix = format!("{}/", provider_key(provider));
                let remaining = self.signers.keys().filter(|x| x.starts_with(&prefix) && **x != k).count();
                if isolated && self.signers.contains_key(&k) && remaining == 0 {
                    return (
                        err(
                            "InvalidOperation",
                            "the last policy signer certificate of an Isolated provider cannot be removed".to_string(),
                        ),
                        None,
                    );
                }
                self.signers.remove(&k);
                (None, Some("IsAbsent".into()))
            }
            Command::RegisterNodeCert { node_id, kid, cert_pem, retired_at } => {
                let rec = NodeCertRecord {
                    node_id: *node_id,
                    kid: kid.clone(),
                    cert_pem: cert_pem.clone(),
                    retired_at: *retired_at,
                    version: index,
                };
                self.node_certs.insert(kid.clone(), rec);
                (None, None)
            }
            Command::RemoveNodeCert { kid } => {
                self.node_certs.remove(kid);
                (None, None)
            }
            Command::PutCollateral { key, blob_b64 } => {
                let rec = CollateralRecord { key: key.clone(), blob_b64: blob_b64.clone(), version: index };
                self.collateral.insert(key.clone(), rec);
                (None, None)
            }
            Command::DeleteCollateral { key } => {
                self.collateral.remove(key);
                (None, None)
            }
            Command::Promoted { epoch, primary, secondary, .. } => {
                let t = Topology { primary: primary.clone(), secondary: secondary.clone(), set_at_index: index };
                self.topology = Some(t);
                self.epoch = (*epoch).max(self.epoch);
                self.replication = ReplicationRecord {
                    mode: ReplicationMode::Async,
                    reason: format!("forced promotion of {primary} (epoch {epoch}): no secondary-region member left"),
                    since_index: index,
                    changed_at_ms: now_ms,
                };
                (None, None)
            }
            Command::Rebalanced { primary, secondary, .. } => {
                let t = Topology { primary: primary.clone(), secondary: secondary.clone(), set_at_index: index };
                self.topology = Some(t);
                (None, None)
            }
            Command::Audit { .. } => (None, None),
            Command::SetReplicationMode { mode, reason } => {
                if self.replication.mode == *mode {
                    return (None, Some("unchanged".into()));
                }
                self.replication = ReplicationRecord {
                    mode: *mode,
                    reason: reason.clone(),
                    since_index: index,
                    changed_at_ms: now_ms,
                };
                (None, None)
            }
        }
    }

    /// Records the audit entry of a disaster-recovery command.
    fn audit_of(&mut self, index: u64, req: &Request) {
        let (action, epoch, rpo, detail) = match &req.command {
            Command::Promoted { epoch, primary, secondary, base_term, base_index, rpo, detail } => (
                "promote",
                *epoch,
                Some(rpo.clone()),
                serde_json::json!({
                    "primary": primary, "secondary": secondary,
                    "baseTerm": base_term, "baseIndex": base_index, "report": detail,
                }),
            ),
            Command::Rebalanced { primary, secondary, detail } => (
                "rebalance",
                self.epoch,
                None,
                serde_json::json!({"primary": primary, "secondary": secondary, "report": detail}),
            ),
            Command::Audit { action, epoch, rpo, detail } => (action.as_str(), *epoch, rpo.clone(), detail.clone()),
            _ => return,
        };
        let rec = AuditRecord {
            index,
            action: action.to_string(),
            actor: req.actor.clone(),
            at_ms: req.proposed_at_ms,
            epoch,
            rpo,
            detail,
        };
        self.audit.insert(index, rec);
    }

    fn check_policy_writable(&self, provider: &str) -> Option<CommandError> {
        match self.providers.get(&provider_key(provider)) {
            None => err("ProviderNotFound", format!("provider '{provider}' does not exist")),
            Some(p) if p.shared => err(
                "InvalidOperation",
                format!("the policy of shared provider '{provider}' cannot be changed; create a provider of your own"),
            ),
            Some(_) => None,
        }
    }

    /// Loads one key of the legacy per-item layout (see the module docs).
    pub fn load_key(&mut self, key: &str, value: &[u8]) -> Result<(), serde_json::Error> {
        if key == "topology" {
            self.topology = Some(serde_json::from_slice(value)?);
        } else if key == "replication" {
            self.replication = serde_json::from_slice(value)?;
        } else if key == "epoch" {
            self.epoch = serde_json::from_slice(value)?;
        } else if let Some(k) = key.strip_prefix("audit/") {
            if let Ok(idx) = k.parse::<u64>() {
                self.audit.insert(idx, serde_json::from_slice(value)?);
            }
        } else if let Some(k) = key.strip_prefix("provider/") {
            self.providers.insert(k.to_string(), serde_json::from_slice(value)?);
        } else if let Some(k) = key.strip_prefix("policy/") {
            self.policies.insert(k.to_string(), serde_json::from_slice(value)?);
        } else if let Some(k) = key.strip_prefix("signer/") {
            self.signers.insert(k.to_string(), serde_json::from_slice(value)?);
        } else if let Some(k) = key.strip_prefix("nodecert/") {
            self.node_certs.insert(k.to_string(), serde_json::from_slice(value)?);
        } else if let Some(k) = key.strip_prefix("collateral/") {
            self.collateral.insert(k.to_string(), serde_json::from_slice(value)?);
        } else if let Some(k) = key.strip_prefix(DEDUP_SLOT_PREFIX) {
            if let Ok(slot) = k.parse::<u64>() {
                let rec: DedupRecord = serde_json::from_slice(value)?;
                let id = rec.id.into_owned();
                self.dedup_order.insert(slot, id.clone());
                self.dedup.insert(id, rec.response.into_owned());
            }
        } else if let Some(k) = key.strip_prefix("dedup/") {
            self.dedup.insert(k.to_string(), serde_json::from_slice(value)?);
        } else if let Some(k) = key.strip_prefix("dedupidx/") {
            if let Ok(idx) = k.parse::<u64>() {
                self.dedup_order.insert(idx, String::from_utf8_lossy(value).into_owned());
            }
        }
        Ok(())
    }

    /// This state in the legacy per-item layout: what an earlier version
    /// would have on disk (tests of the loader and of upgrades).
    #[cfg(test)]
    pub fn all_keys(&self) -> Vec<LegacyKey> {
        let mut m = Vec::new();
        if let Some(t) = &self.topology {
            put(&mut m, "topology".into(), t);
        }
        put(&mut m, "replication".into(), &self.replication);
        if self.epoch != 0 {
            put(&mut m, "epoch".into(), &self.epoch);
        }
        for (idx, rec) in &self.audit {
            put(&mut m, format!("audit/{idx:020}"), rec);
        }
        for (k, v) in &self.providers {
            put(&mut m, format!("provider/{k}"), v);
        }
        for (k, v) in &self.policies {
            put(&mut m, format!("policy/{k}"), v);
        }
        for (k, v) in &self.signers {
            put(&mut m, format!("signer/{k}"), v);
        }
        for (k, v) in &self.node_certs {
            put(&mut m, format!("nodecert/{k}"), v);
        }
        for (k, v) in &self.collateral {
            put(&mut m, format!("collateral/{k}"), v);
        }
        m.extend(self.dedup_keys());
        m
    }

    /// SHA-256 over the user-visible state (not the dedup table), hex. Two
    /// nodes that applied the same log prefix report the same digest, which
    /// is how the tests and the chaos checker compare replicas.
    pub fn digest(&self) -> String {
        #[derive(Serialize)]
        struct View<'a> {
            topology: &'a Option<Topology>,
            providers: &'a BTreeMap<String, Provider>,
            policies: &'a BTreeMap<String, PolicyRecord>,
            signers: &'a BTreeMap<String, SignerRecord>,
            node_certs: &'a BTreeMap<String, NodeCertRecord>,
            collateral: &'a BTreeMap<String, CollateralRecord>,
            replication_mode: ReplicationMode,
            epoch: u64,
        }
        let v = View {
            topology: &self.topology,
            providers: &self.providers,
            policies: &self.policies,
            signers: &self.signers,
            node_certs: &self.node_certs,
            collateral: &self.collateral,
            replication_mode: self.replication.mode,
            epoch: self.epoch.max(1),
        };
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref())
    }
}

/// Uppercase hex SHA-1 of the DER inside a PEM certificate (MAA's signer
/// thumbprint). Falls back to hashing the text if it is not PEM; shape
/// validation is the API layer's job.
pub fn pem_thumbprint(pem: &str) -> String {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    let der =
        base64::engine::general_purpose::STANDARD.decode(body.as_bytes()).unwrap_or_else(|_| pem.as_bytes().to_vec());
    hex::encode_upper(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, command: Command) -> Request {
        Request { request_id: id.into(), actor: "test".into(), proposed_at_ms: 0, command }
    }

    fn provider(name: &str, shared: bool) -> Command {
        Command::CreateProvider {
            name: name.into(),
            trust_model: TrustModel::Aad,
            token_alg: "RS256".into(),
            signer_certs: vec![],
            shared,
            location: String::new(),
            attest_requires_auth: false,
        }
    }

    #[test]
    fn last_isolated_signer_cannot_be_removed() {
        let mut s = ControlState::default();
        let create = Command::CreateProvider {
            name: "iso".into(),
            trust_model: TrustModel::Isolated,
            token_alg: "RS256".into(),
            signer_certs: vec!["a".into()],
            shared: false,
            location: "eastus2".into(),
            attest_requires_auth: false,
        };
        assert!(s.apply(1, &req("c", create), 0).error.is_none());
        let tp = pem_thumbprint("a");
        let add = Command::AddSigner { provider: "iso".into(), thumbprint: "B".into(), cert_pem: "b".into() };
        assert!(s.apply(2, &req("add", add), 0).error.is_none());
        let rm =
            |id: &str, t: &str| req(id, Command::RemoveSigner { provider: "iso".into(), thumbprint: t.to_string() });
        assert!(s.apply(3, &rm("r1", "B"), 0).error.is_none());
        let r = s.apply(4, &rm("r2", &tp), 0);
        assert_eq!(r.error.map(|e| e.code), Some("InvalidOperation".to_string()));
        assert_eq!(s.signers.len(), 1);
    }

    #[test]
    fn duplicate_request_applies_once() {
        let mut s = ControlState::default();
        let r1 = s.apply(1, &req("a", provider("p1", false)), 0);
        assert!(r1.error.is_none() && s.providers.contains_key("p1"));
        let before = s.clone();
        let r2 = s.apply(2, &req("a", provider("p1", false)), 0);
        assert!(r2.duplicate);
        assert_eq!(r2.index, 1);
        assert!(r2.error.is_none(), "the replay returns the first answer, not a conflict");
        assert_eq!(s, before, "a duplicate changes nothing");
    }

    #[test]
    fn shared_provider_policy_is_immutable() {
        let mut s = ControlState::default();
        s.apply(1, &req("a", provider("sharedeus2", true)), 0);
        let set = Command::SetPolicy {
            provider: "sharedeus2".into(),
            attestation_type: "SgxEnclave".into(),
            document: "x".into(),
            meta: serde_json::Value::Null,
        };
        let before = s.clone();
        let r = s.apply(2, &req("b", set), 0);
        assert_eq!(r.error.map(|e| e.code), Some("InvalidOperation".into()));
        assert!(s.policies.is_empty());
        // Only the answer is remembered (a retry gets the same refusal).
        assert_eq!(s.dedup.len(), before.dedup.len() + 1);
        s.dedup = before.dedup.clone();
        s.dedup_order = before.dedup_order.clone();
        assert_eq!(s, before);
    }

    #[test]
    fn delete_provider_cascades_and_persisted_keys_round_trip() {
        let mut s = ControlState::default();
        s.apply(1, &req("a", provider("p1", false)), 0);
        let set = Command::SetPolicy {
            provider: "p1".into(),
            attestation_type: "SgxEnclave".into(),
            document: "doc".into(),
            meta: serde_json::json!({"hash": "h"}),
        };
        s.apply(2, &req("b", set), 0);
        let mut loaded = ControlState::default();
        for (key, value) in s.all_keys() {
            loaded.load_key(&key, &value).unwrap();
        }
        assert_eq!(loaded, s);
        assert_eq!(loaded.digest(), s.digest());
        s.apply(3, &req("c", Command::DeleteProvider { name: "P1".into() }), 0);
        assert!(s.providers.is_empty() && s.policies.is_empty());
    }

    #[test]
    fn dedup_table_is_bounded_and_survives_a_reload() {
        let mut s = ControlState::default();
        let total = (DEDUP_CAPACITY + DEDUP_EVICT_CHUNK) as u64;
        for i in 0..total {
            s.apply(i + 1, &req(&format!("r{i}"), Command::Noop), 0);
        }
        assert_eq!(s.dedup.len(), DEDUP_CAPACITY + DEDUP_EVICT_CHUNK, "evicted only a chunk at a time");
        assert!(s.dedup.contains_key("r0"));
        s.apply(total + 1, &req("last", Command::Noop), 0);
        assert_eq!(s.dedup.len(), DEDUP_CAPACITY);
        assert_eq!(s.dedup_order.len(), DEDUP_CAPACITY);
        assert!(!s.dedup.contains_key("r0") && !s.dedup.contains_key(&format!("r{}", DEDUP_EVICT_CHUNK)));
        assert!(s.dedup.contains_key(&format!("r{}", DEDUP_EVICT_CHUNK + 1)) && s.dedup.contains_key("last"));
        // Both persisted forms load back to the same table — a snapshot (the
        // state's JSON) and the legacy per-item keys — and a replay of a
        // remembered request is still a duplicate after either reload.
        let from_snapshot: ControlState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        let mut from_keys = ControlState::default();
        for (k, v) in s.all_keys() {
            from_keys.load_key(&k, &v).unwrap();
        }
        for mut back in [from_snapshot, from_keys] {
            assert_eq!(back.dedup, s.dedup);
            assert_eq!(back.dedup_order, s.dedup_order);
            let before = back.clone();
            let r = back.apply(total + 2, &req("last", Command::Noop), 0);
            assert!(r.duplicate && r.index == total + 1);
            assert_eq!(back, before);
        }
    }

    #[test]
    fn the_legacy_dedup_layout_still_loads() {
        let mut s = ControlState::default();
        let resp = Response { index: 7, ..Default::default() };
        s.load_key("dedup/req-1", &serde_json::to_vec(&resp).unwrap()).unwrap();
        s.load_key(&format!("dedupidx/{:020}", dedup_slot(7, 0)), b"req-1").unwrap();
        assert_eq!(s.dedup.get("req-1"), Some(&resp));
        assert_eq!(s.dedup_order.get(&dedup_slot(7, 0)).map(String::as_str), Some("req-1"));
        let keys = s.dedup_keys();
        assert!(matches!(&keys[..], [(key, _)] if *key == dedup_slot_key(dedup_slot(7, 0))));
    }

    #[test]
    fn a_batch_applies_each_member_once_with_its_own_answer() {
        let mut s = ControlState::default();
        assert!(s.apply(1, &req("p", provider("p1", false)), 0).error.is_none());
        let members = vec![
            req("a", provider("p2", false)),
            // Already applied at index 1: replayed, not applied again.
            req("p", provider("p1", false)),
            req("b", provider("p2", false)),
            req("c", Command::Batch { requests: vec![req("d", Command::Noop)] }),
        ];
        let batch = req("batch-1", Command::Batch { requests: members.clone() });
        let r = s.apply(2, &batch, 0);
        assert!(r.error.is_none() && !r.duplicate);
        assert_eq!(r.batch.len(), 4);
        assert!(r.batch[0].error.is_none() && r.batch[0].index == 2);
        assert!(r.batch[1].duplicate && r.batch[1].index == 1);
        assert_eq!(r.batch[2].error.as_ref().map(|e| e.code.as_str()), Some("Conflict"), "{:?}", r.batch[2]);
        assert_eq!(r.batch[3].error.as_ref().map(|e| e.code.as_str()), Some("InvalidOperation"));
        assert!(!s.dedup.contains_key("batch-1"), "the envelope is not a client request");
        assert!(!s.dedup.contains_key("d"), "a nested batch applies nothing");
        // Members of one entry get distinct eviction slots.
        let slots: Vec<u64> =
            s.dedup_order.iter().filter(|(_, id)| ["a", "b"].contains(&id.as_str())).map(|(slot, _)| *slot).collect();
        assert_eq!(slots, [dedup_slot(2, 0), dedup_slot(2, 2)]);
        // A retry of the whole batch (same member ids) changes nothing.
        let before = s.clone();
        let again = s.apply(3, &req("batch-2", Command::Batch { requests: members }), 0);
        assert!(again.batch[0].duplicate && again.batch[0].index == 2);
        assert_eq!(s, before);
    }
}
