//! Every change to the control plane is one [`Command`], wrapped in a
//! [`Request`] that carries the client's request id.
//!
//! The request id makes writes idempotent: the state machine remembers the
//! response of every applied request id (see `state::ControlState::dedup`), so
//! a client that retries after a timeout or a leader change gets the original
//! answer instead of a second application.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::types::NodeId;

mod decode;

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

/// Defines [`Command`] and, from the same list, `CommandFields`: serde's
/// externally tagged twin of it (`#[serde(remote)]`), which
/// `command/decode.rs` decodes a variant's fields with. One list, so the
/// two cannot differ in a field, a type or a serde attribute (a
/// `#[serde(default)]` missing from the twin would refuse old log entries).
macro_rules! commands {
    (
        $(#[$enum_attr:meta])*
        pub enum Command {
            $(
                $(#[$variant_attr:meta])*
                $variant:ident $({
                    $( $(#[$field_attr:meta])* $field:ident : $ty:ty ),* $(,)?
                })?
            ),* $(,)?
        }
    ) => {
        $(#[$enum_attr])*
        pub enum Command {
            $( $(#[$variant_attr])* $variant $({ $( $(#[$field_attr])* $field: $ty ),* })? ),*
        }

        #[derive(Deserialize)]
        #[serde(remote = "Command", rename_all = "snake_case")]
        enum CommandFields {
            $( $(#[$variant_attr])* $variant $({ $( $(#[$field_attr])* $field: $ty ),* })? ),*
        }
    };
}

commands! {
    /// A control-plane change.
    ///
    /// Validation of shapes (names, sizes) happens before a command is proposed;
    /// the state machine checks only what depends on the state (existence,
    /// conflicts), deterministically, and answers with a [`Response`].
    ///
    /// Encoded as a JSON object with its `op` tag first; `command/decode.rs`
    /// decodes that order without buffering (and any order more slowly).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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

    /// About how many bytes the request takes in the log: its strings and
    /// JSON values plus an allowance for field names, ids and numbers.
    /// Cheap (nothing but the small JSON values is encoded), for bounding
    /// group-commit batches. JSON escaping can make the encoding larger;
    /// replication measures the real encoding (`network::MAX_APPEND_BYTES`).
    pub fn approx_bytes(&self) -> usize {
        const FIXED: usize = 256;
        let variable = match &self.command {
            Command::SetPolicy { provider, attestation_type, document, meta } => {
                provider.len() + attestation_type.len() + document.len() + json_len(meta)
            }
            Command::PutCollateral { key, blob_b64 } => key.len() + blob_b64.len(),
            Command::CreateProvider { signer_certs, .. } => signer_certs.iter().map(String::len).sum(),
            Command::AddSigner { cert_pem, .. } | Command::RegisterNodeCert { cert_pem, .. } => cert_pem.len(),
            Command::Promoted { detail, .. } | Command::Rebalanced { detail, .. } | Command::Audit { detail, .. } => {
                json_len(detail)
            }
            Command::Batch { requests } => requests.iter().map(Request::approx_bytes).sum(),
            _ => 0,
        };
        FIXED + self.request_id.len() + self.actor.len() + variable
    }
}

/// Length of `v`'s JSON encoding, counted without building it.
fn json_len(v: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a `Value` into a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// A [`Request`] as it sits in the Raft log: shared rather than copied
/// between the log store's cache, the replication streams and the shipper,
/// and encoded to JSON once.
///
/// Why: a leader hands each new entry to its log store, one replication
/// stream per follower and the shipper; cloning the request (policy text,
/// metadata) and encoding it again for each of them was the largest CPU
/// cost of a write after TLS (BENCHMARKS.md, session 10). The encoding is
/// exactly the request's own JSON, so log records and Raft RPCs are
/// unchanged on disk and on the wire. A decoded entry keeps the bytes it
/// was decoded from, so a follower stores what it received without encoding
/// it again. JSON only: every Raft message and log record is JSON.
#[derive(Clone)]
pub struct LogRequest(Arc<Encoded>);

struct Encoded {
    request: Request,
    /// `None` inside only if encoding failed (it cannot for these types);
    /// then the request is encoded directly each time.
    json: OnceLock<Option<Box<RawValue>>>,
}

impl LogRequest {
    pub fn new(request: Request) -> Self {
        Self(Arc::new(Encoded { request, json: OnceLock::new() }))
    }

    fn json(&self) -> Option<&RawValue> {
        self.0.json.get_or_init(|| serde_json::value::to_raw_value(&self.0.request).ok()).as_deref()
    }

    /// Length of the request's JSON encoding: exact, and free once the
    /// entry has been encoded (the log store encodes it before the
    /// transport sees it; the encoding is kept).
    pub fn encoded_len(&self) -> usize {
        match self.json() {
            Some(raw) => raw.get().len(),
            None => self.0.request.approx_bytes(),
        }
    }
}

impl From<Request> for LogRequest {
    fn from(r: Request) -> Self {
        Self::new(r)
    }
}

impl std::ops::Deref for LogRequest {
    type Target = Request;
    fn deref(&self) -> &Request {
        &self.0.request
    }
}

impl std::fmt::Debug for LogRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.request.fmt(f)
    }
}

impl PartialEq for LogRequest {
    fn eq(&self, o: &Self) -> bool {
        self.0.request == o.0.request
    }
}
impl Eq for LogRequest {}

impl Serialize for LogRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.json() {
            Some(raw) => raw.serialize(s),
            None => self.0.request.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for LogRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let request: Request = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
        Ok(Self(Arc::new(Encoded { request, json: OnceLock::from(Some(raw)) })))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_request() -> Request {
        Request {
            request_id: "r1".into(),
            actor: "alice".into(),
            proposed_at_ms: 7,
            command: Command::SetPolicy {
                provider: "p1".into(),
                attestation_type: "SgxEnclave".into(),
                document: "version=1.0; // \"quoted\" \\ and ünïcode\n".into(),
                meta: serde_json::json!({"jws": "a.b.", "setBy": "alice"}),
            },
        }
    }

    #[test]
    fn a_log_request_encodes_exactly_as_its_request_and_keeps_what_it_decoded() {
        let req = policy_request();
        let plain = serde_json::to_vec(&req).unwrap();
        let shared = LogRequest::new(req.clone());
        assert_eq!(serde_json::to_vec(&shared).unwrap(), plain);
        // Inside a log entry, as the log store and the transport encode it.
        let entry = crate::types::Entry {
            log_id: crate::types::LogId::new(openraft::CommittedLeaderId::new(3, 1), 9),
            payload: openraft::EntryPayload::Normal(shared.clone()),
        };
        let bytes = serde_json::to_vec(&entry).unwrap();
        let back: crate::types::Entry = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, entry);
        assert_eq!(serde_json::to_vec(&back).unwrap(), bytes, "re-encoding a decoded entry changes nothing");
        let openraft::EntryPayload::Normal(r) = &back.payload else { panic!("payload kind changed") };
        assert_eq!(&**r, &req);
    }

    #[test]
    fn a_malformed_request_inside_valid_json_is_refused() {
        let bad = br#"{"request_id":"r1","actor":"a","proposed_at_ms":1,"command":{"op":"no_such_op"}}"#;
        assert!(serde_json::from_slice::<LogRequest>(bad).is_err());
        assert!(serde_json::from_slice::<LogRequest>(b"{\"request_id\":").is_err());
    }
}
