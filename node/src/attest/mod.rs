//! The attestation pipeline: request → evidence → policy → token.
//!
//! [`Engine::attest`] is what `POST /attest/{type}` runs, on the node's own
//! applied state only (brief §3: no Raft round trip, no call to another
//! node, region or vendor):
//! 1. decode the MAA request body ([`request`]);
//! 2. verify the evidence with the collateral of the replicated state
//!    ([`crate::evidence`]); the verified [`CollateralStore`] is rebuilt only
//!    when the replicated collateral changes;
//! 3. evaluate the provider's policy for the type (stored, else the
//!    default; a draft policy from the request overrides it). Compiled
//!    policies are cached per stored version;
//! 4. assemble MAA's claims ([`claims`]) and sign with this node's key
//!    for the provider's algorithm — or, for a draft policy, return an
//!    unsigned token as MAA does.
//!
//! The verification time is the clock, or `evidence.pinned_time` when set.

pub mod claims;
pub mod request;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use attest_raft::state::{policy_key, ControlState};
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::evidence::{
    self, AttestationType, CollateralStore, EvidenceError, EvidenceRequest, TrustAnchors, VerificationTime,
};
use crate::policy::defaults::{default_policy, DefaultPolicyError, PolicyNotSet};
use crate::policy::{
    claims::{add_legacy_sgx_aliases, claims_from_json_map},
    jws::policy_hash,
    CompiledPolicy, PolicyEvaluationError, PolicyParseError,
};
use crate::providers::ProviderView;
use crate::signing::KeyRing;
use crate::token::TokenError;

pub use request::{AttestRequest, RequestError};

/// Why an attestation failed, with MAA's code for each.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("{0}")]
    Evidence(#[from] EvidenceError),
    #[error(transparent)]
    PolicyParse(#[from] PolicyParseError),
    #[error("{0}")]
    PolicyEval(#[from] PolicyEvaluationError),
    #[error(transparent)]
    PolicyNotSet(#[from] PolicyNotSet),
    #[error("the stored policy cannot be used: {0}")]
    StoredPolicy(String),
    #[error("signing the token failed: {0}")]
    Signing(#[from] TokenError),
}

impl AttestError {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AttestError::Request(e) if e.is_too_large() => 413,
            AttestError::Evidence(EvidenceError::TooLarge { .. }) => 413,
            AttestError::StoredPolicy(_) | AttestError::Signing(_) => 500,
            _ => 400,
        }
    }

    /// MAA error code.
    pub fn code(&self) -> &'static str {
        match self {
            AttestError::Request(e) if e.is_too_large() => "RequestTooLarge",
            AttestError::Request(_) => "InvalidParameter",
            AttestError::Evidence(EvidenceError::TooLarge { .. }) => "RequestTooLarge",
            AttestError::Evidence(e) => e.maa_code(),
            AttestError::PolicyParse(e) => e.maa_code(),
            AttestError::PolicyEval(e) => e.maa_code(),
            AttestError::PolicyNotSet(e) => e.maa_code(),
            AttestError::StoredPolicy(_) | AttestError::Signing(_) => "InternalError",
        }
    }
}

/// Node-level settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub node_id: u64,
    pub region: String,
    pub pinned_time: Option<i64>,
    pub collateral_grace_s: u64,
    pub max_evidence_bytes: usize,
    pub default_validity_minutes: u32,
    pub max_validity_minutes: u32,
}

/// The policy used for one attestation.
struct ActivePolicy {
    compiled: Arc<CompiledPolicy>,
    hash: String,
    signer: Option<Value>,
}

/// A successful attestation.
#[derive(Debug, Clone)]
pub struct Attested {
    pub token: String,
    /// Whether the token is unsigned (draft policy).
    pub draft: bool,
}

pub struct Engine {
    cfg: EngineConfig,
    anchors: TrustAnchors,
    collateral: Mutex<Option<(CollateralKey, Arc<CollateralStore>)>>,
    policies: Mutex<HashMap<String, (u64, Arc<CompiledPolicy>)>>,
    defaults: HashMap<AttestationType, (Arc<CompiledPolicy>, String)>,
    pub keys: Arc<KeyRing>,
}

/// Identifies one version of the replicated collateral set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CollateralKey {
    count: usize,
    max_version: u64,
    version_sum: u64,
}

fn collateral_key(s: &ControlState) -> CollateralKey {
    CollateralKey {
        count: s.collateral.len(),
        max_version: s.collateral.values().map(|c| c.version).max().unwrap_or(0),
        version_sum: s.collateral.values().fold(0u64, |a, c| a.wrapping_add(c.version)),
    }
}

impl Engine {
    pub fn new(cfg: EngineConfig, anchors: TrustAnchors, keys: Arc<KeyRing>) -> Self {
        let mut defaults = HashMap::new();
        for ty in AttestationType::ALL {
            if let Ok(text) = default_policy(ty.as_str()) {
                // The defaults are fixed, test-covered texts.
                if let Ok(p) = CompiledPolicy::compile(text) {
                    defaults.insert(ty, (Arc::new(p), policy_hash(text)));
                }
            }
        }
        Self { cfg, anchors, collateral: Mutex::new(None), policies: Mutex::new(HashMap::new()), defaults, keys }
    }

    /// The trust anchors evidence is verified to.
    pub fn anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    /// The time evidence is verified at.
    pub fn verification_time(&self, now: i64) -> VerificationTime {
        VerificationTime::from_unix(self.cfg.pinned_time.unwrap_or(now))
    }

    /// The verified collateral for the state's current collateral set.
    pub fn collateral(&self, state: &ControlState) -> Arc<CollateralStore> {
        let key = collateral_key(state);
        let mut guard = self.collateral.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, store)) = guard.as_ref() {
            if *k == key {
                return store.clone();
            }
        }
        let records = state.collateral.values().map(|c| (c.key.as_str(), c.blob_b64.as_str()));
        let store = Arc::new(build_store(&self.anchors, records, key.max_version, self.cfg.collateral_grace_s));
        for r in store.rejected() {
            tracing::warn!(blob = %r.name, error = %r.error, "stored collateral rejected");
        }
        metrics::gauge!("attest_collateral_version").set(key.max_version as f64);
        *guard = Some((key, store.clone()));
        store
    }

    fn stored_or_default(
        &self,
        state: &ControlState,
        provider: &ProviderView,
        ty: AttestationType,
    ) -> Result<ActivePolicy, AttestError> {
        let rec = if provider.shared { None } else { state.policies.get(&policy_key(&provider.name, ty.as_str())) };
        let Some(rec) = rec else {
            return match self.defaults.get(&ty) {
                Some((p, hash)) => Ok(ActivePolicy { compiled: p.clone(), hash: hash.clone(), signer: None }),
                None => match default_policy(ty.as_str()) {
                    Err(DefaultPolicyError::NotSet(e)) => Err(e.into()),
                    _ => Err(PolicyNotSet { type_name: ty.as_str().into() }.into()),
                },
            };
        };
        let key = policy_key(&provider.name, ty.as_str());
        let cached = {
            let g = self.policies.lock().unwrap_or_else(|e| e.into_inner());
            g.get(&key).filter(|(v, _)| *v == rec.version).map(|(_, p)| p.clone())
        };
        let compiled = match cached {
            Some(p) => p,
            None => {
                let p = Arc::new(
                    CompiledPolicy::compile(&rec.document).map_err(|e| AttestError::StoredPolicy(e.to_string()))?,
                );
                self.policies.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (rec.version, p.clone()));
                p
            }
        };
        let hash = rec.meta["policyHash"].as_str().map(str::to_string).unwrap_or_else(|| policy_hash(&rec.document));
        let signer = rec.meta.get("signer").filter(|v| !v.is_null()).cloned();
        Ok(ActivePolicy { compiled, hash, signer })
    }

    /// Attest `body` as type `ty` for `provider` at wall-clock `now`.
    /// CPU-bound (signature checks, RSA signing): call it off the async
    /// reactor.
    pub fn attest(
        &self,
        state: &ControlState,
        provider: &ProviderView,
        ty: AttestationType,
        body: &[u8],
        now: i64,
    ) -> Result<Attested, AttestError> {
        let req = request::parse(ty, body, self.cfg.max_evidence_bytes)?;
        let policy = match &req.draft_policy {
            Some(text) => ActivePolicy {
                compiled: Arc::new(CompiledPolicy::compile(text)?),
                hash: policy_hash(text),
                signer: None,
            },
            None => self.stored_or_default(state, provider, ty)?,
        };
        let store = self.collateral(state);
        let mut ereq = EvidenceRequest::new(req.evidence);
        ereq.runtime_data = req.runtime_data;
        ereq.init_time_data = req.init_time_data;
        if ty == AttestationType::Tpm {
            // The TPM quote's extraData must equal the caller's challenge,
            // sent as base64url in `nonce`.
            if let Some(Value::String(n)) = &req.nonce {
                ereq.nonce = Some(request::b64_decode(n).ok_or(RequestError::BadBase64("nonce"))?);
            }
        }
        let verified = evidence::verify(ty, &ereq, &store, self.verification_time(now))?;

        let mut incoming = claims_from_json_map(&verified.claims);
        if matches!(ty, AttestationType::SgxEnclave | AttestationType::OpenEnclave) {
            add_legacy_sgx_aliases(&mut incoming);
        }
        let outcome = policy.compiled.evaluate(&incoming)?;
        let minutes = outcome
            .properties
            .token_validity_minutes
            .unwrap_or(self.cfg.default_validity_minutes)
            .min(self.cfg.max_validity_minutes);
        let svc = claims::ServiceClaims {
            issuer: &provider.issuer,
            region: &self.cfg.region,
            node_id: self.cfg.node_id,
            now,
            validity_s: i64::from(minutes) * 60,
            jti: claims::new_jti(),
            policy_hash: &policy.hash,
            policy_signer: policy.signer.as_ref(),
            nonce: req.nonce.as_ref(),
        };
        let claims = claims::token_claims(&verified, &outcome, &svc);
        if req.draft_policy.is_some() {
            return Ok(Attested { token: crate::token::jwt::unsigned_jwt(&claims), draft: true });
        }
        let keys = self.keys.current();
        let mut header = Map::new();
        header.insert("jku".into(), format!("{}/certs", provider.issuer).into());
        if !outcome.properties.omit_x5c.unwrap_or(false) {
            let der = keys.cert_der(provider.token_alg);
            header.insert("x5c".into(), vec![base64::engine::general_purpose::STANDARD.encode(der)].into());
        }
        let token = keys.sign_jwt(provider.token_alg, &header, &claims)?;
        Ok(Attested { token, draft: false })
    }
}

/// Build the verified store from collateral records `(name, base64 blob)`
/// (undecodable blobs are left out, as the store would reject them).
pub fn build_store<'a>(
    anchors: &TrustAnchors,
    records: impl IntoIterator<Item = (&'a str, &'a str)>,
    version: u64,
    grace_s: u64,
) -> CollateralStore {
    let blobs: Vec<(String, Vec<u8>)> = records
        .into_iter()
        .filter_map(|(name, b64)| {
            base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()).ok().map(|b| (name.to_string(), b))
        })
        .collect();
    CollateralStore::from_blobs(anchors.clone(), version, blobs).with_grace(grace_s)
}
