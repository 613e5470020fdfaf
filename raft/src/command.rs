//! Every change to the control plane is one [`Command`], wrapped in a
//! [`Request`] that carries the client's request id.
//!
//! The request id makes writes idempotent: the state machine remembers the
//! response of every applied request id (see `state::ControlState::dedup`), so
//! a client that retries after a timeout or a leader change gets the original
//! answer instead of a second application.

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// Trust model of an attestation provider (MAA's `AAD` or `Isolated`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrustModel {
    #[serde(rename = "AAD")]
    Aad,
    Isolated,
}

/// Cross-region replication mode (after TiKV's DR Auto-Sync).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicationMode {
    /// Acknowledge only once durable in the secondary region too.
    #[default]
    Sync,
    /// Secondary unreachable: acknowledge on plain quorum.
    Async,
    /// Secondary back and catching up; `Sync` resumes once it has.
    SyncRecover,
}

impl ReplicationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationMode::Sync => "sync",
            ReplicationMode::Async => "async",
            ReplicationMode::SyncRecover => "sync-recover",
        }
    }
}

/// One client write, as it travels through the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Client-chosen id (a UUID by default). Applied at most once.
    pub request_id: String,
    /// Who asked (subject of the caller's token, or the node for internal
    /// commands). Kept for audit.
    pub actor: String,
    /// Wall-clock milliseconds at the proposing node. Informational only:
    /// the state machine never branches on it.
    pub proposed_at_ms: u64,
    pub command: Command,
}

/// A control-plane change.
///
/// Validation of shapes (names, sizes) happens before a command is proposed;
/// the state machine checks only what depends on the state (existence,
/// conflicts), deterministically, and answers with a [`Response`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Records which region is primary; written once at bootstrap.
    SetTopology {
        primary: String,
        secondary: Option<String>,
    },
    CreateProvider {
        name: String,
        trust_model: TrustModel,
        /// Token signing algorithm for this provider (`RS256`, `ES256`, `PS256`).
        token_alg: String,
        /// Initial policy signer certificates (PEM).
        signer_certs: Vec<String>,
        /// Shared (regional default) providers cannot have their policies changed.
        shared: bool,
        /// Home region: part of the provider's URI and so of its tokens'
        /// `iss`, which stays the same when the other region serves it.
        #[serde(default)]
        location: String,
        /// Attest calls need a Reader bearer token (custom providers only).
        #[serde(default)]
        attest_requires_auth: bool,
    },
    DeleteProvider {
        name: String,
    },
    /// Stores a policy document (text or JWS), opaque to the control plane.
    SetPolicy {
        provider: String,
        attestation_type: String,
        document: String,
        /// Precomputed by the API layer (e.g. MAA's policy hash); stored as is.
        meta: serde_json::Value,
    },
    ResetPolicy {
        provider: String,
        attestation_type: String,
    },
    AddSigner {
        provider: String,
        thumbprint: String,
        cert_pem: String,
    },
    RemoveSigner {
        provider: String,
        thumbprint: String,
    },
    /// Publishes a node's token-signing certificate (never its private key).
    RegisterNodeCert {
        node_id: NodeId,
        kid: String,
        cert_pem: String,
        /// Unix seconds after which the key signs no more tokens (rotation).
        retired_at: Option<u64>,
    },
    RemoveNodeCert {
        kid: String,
    },
    /// Opaque collateral blob (base64), e.g. Intel TCB info or AMD certs.
    PutCollateral {
        key: String,
        blob_b64: String,
    },
    DeleteCollateral {
        key: String,
    },
    SetReplicationMode {
        mode: ReplicationMode,
        reason: String,
    },
    /// The first entry of a new configuration epoch after a forced
    /// promotion: `primary` (the promoted region) becomes the primary, the
    /// lost region the secondary, replication `async` (no secondary member
    /// is left), and the promotion is recorded in the audit log.
    Promoted {
        epoch: u64,
        primary: String,
        secondary: Option<String>,
        /// The survivor log position the new epoch grew from.
        base_term: u64,
        base_index: u64,
        /// Estimated recovery point, in words (see `recovery::rpo_estimate`).
        rpo: String,
        detail: serde_json::Value,
    },
    /// `admin rebalance`: the voter majority moved to `primary`.
    Rebalanced {
        primary: String,
        secondary: Option<String>,
        detail: serde_json::Value,
    },
    /// A disaster-recovery event for the audit log (re-seed, divergent
    /// writes of a fenced node, …). Changes nothing else.
    Audit {
        action: String,
        epoch: u64,
        #[serde(default)]
        rpo: Option<String>,
        detail: serde_json::Value,
    },
    /// Does nothing; used to probe that writes go through.
    Noop,
    /// Several client requests proposed as one log entry by the leader's
    /// group commit (see `batcher`). Each keeps its own request id,
    /// deduplication and response; they apply in order, atomically.
    Batch {
        requests: Vec<Request>,
    },
}

impl Command {
    /// Short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::SetTopology { .. } => "set_topology",
            Command::CreateProvider { .. } => "create_provider",
            Command::DeleteProvider { .. } => "delete_provider",
            Command::SetPolicy { .. } => "set_policy",
            Command::ResetPolicy { .. } => "reset_policy",
            Command::AddSigner { .. } => "add_signer",
            Command::RemoveSigner { .. } => "remove_signer",
            Command::RegisterNodeCert { .. } => "register_node_cert",
            Command::RemoveNodeCert { .. } => "remove_node_cert",
            Command::PutCollateral { .. } => "put_collateral",
            Command::DeleteCollateral { .. } => "delete_collateral",
            Command::SetReplicationMode { .. } => "set_replication_mode",
            Command::Promoted { .. } => "promoted",
            Command::Rebalanced { .. } => "rebalanced",
            Command::Audit { .. } => "audit",
            Command::Noop => "noop",
            Command::Batch { .. } => "batch",
        }
    }

    /// May share a log entry with other requests. Commands that record an
    /// audit event (keyed by log index) or change the topology or the
    /// replication mode are proposed alone.
    pub fn batchable(&self) -> bool {
        !matches!(
            self,
            Command::SetTopology { .. }
                | Command::SetReplicationMode { .. }
                | Command::Promoted { .. }
                | Command::Rebalanced { .. }
                | Command::Audit { .. }
                | Command::Batch { .. }
        )
    }
}

impl Request {
    /// The client requests this log payload carries: the members of a
    /// batch, or the request itself.
    pub fn client_requests(&self) -> &[Request] {
        match &self.command {
            Command::Batch { requests } => requests,
            _ => std::slice::from_ref(self),
        }
    }
}

/// What the state machine answered to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Response {
    /// Log index at which the request was applied (the first time).
    pub index: u64,
    /// `None` when applied; otherwise an MAA-style error code, e.g.
    /// `ProviderNotFound`, `Conflict`, `InvalidOperation`.
    pub error: Option<CommandError>,
    /// True when this answer was replayed from the dedup table.
    #[serde(default)]
    pub duplicate: bool,
    /// Result detail, e.g. `IsPresent`/`IsAbsent` for signer changes.
    #[serde(default)]
    pub detail: Option<String>,
    /// For a `Batch`: one response per member request, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<Response>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandError {
    pub code: String,
    pub message: String,
}
