//! The claims of an attestation token, assembled from verified evidence
//! and the policy's outcome the way MAA lays them out
//! (research/maa-api.md §4; the recorded OpenEnclave tokens in
//! `vectors/sgx/azure-sdk-oe/` are the reference).
//!
//! Layout:
//! - every claim the verifier produced (`x-ms-sgx-*`, `x-ms-sevsnpvm-*`,
//!   `tdx_*`, TPM claims, `x-ms-runtime` / `x-ms-inittime`);
//! - the claims the issuance rules issued, at the top level *and* as the
//!   `x-ms-policy` object (MAA does both). An issued claim never replaces
//!   a verifier claim or a service claim of the same name: a policy must
//!   not be able to forge `x-ms-sgx-mrenclave`;
//! - SGX's deprecated aliases MAA still emits: `maa-ehd` / `aas-ehd`
//!   (= `x-ms-sgx-ehd`), `maa-attestationcollateral` (= `x-ms-sgx-collateral`);
//! - service claims: `x-ms-ver`, `x-ms-policy-hash`, `x-ms-policy-signer`
//!   (signed policies), `x-ms-sgx-tcbidentifier` (SGX), `nonce`, `iss`,
//!   `iat`, `nbf`, `exp`, `jti`, and `x-attestd-region` / `x-attestd-node`
//!   naming who issued the token (both regions issue under one `iss`).

use serde_json::{Map, Value};

use crate::evidence::{AttestationType, VerifiedEvidence};
use crate::policy::EvaluationOutcome;

/// Service-level inputs of a token.
pub struct ServiceClaims<'a> {
    pub issuer: &'a str,
    pub region: &'a str,
    pub node_id: u64,
    pub now: i64,
    pub validity_s: i64,
    pub jti: String,
    pub policy_hash: &'a str,
    pub policy_signer: Option<&'a Value>,
    pub nonce: Option<&'a Value>,
}

/// Build the token claims.
pub fn token_claims(ev: &VerifiedEvidence, outcome: &EvaluationOutcome, svc: &ServiceClaims<'_>) -> Map<String, Value> {
    let mut c = ev.claims.clone();
    let sgx = matches!(ev.attestation_type, AttestationType::SgxEnclave | AttestationType::OpenEnclave);
    if sgx {
        if let Some(ehd) = c.get("x-ms-sgx-ehd").cloned() {
            c.insert("maa-ehd".into(), ehd.clone());
            c.insert("aas-ehd".into(), ehd);
        }
        if let Some(col) = c.get("x-ms-sgx-collateral").cloned() {
            c.insert("maa-attestationcollateral".into(), col);
        }
        c.insert("x-ms-sgx-tcbidentifier".into(), outcome.properties.tcb_identifier_or_default().into());
    }
    c.insert("x-ms-ver".into(), "1.0".into());
    c.insert("x-ms-policy-hash".into(), svc.policy_hash.into());
    if let Some(s) = svc.policy_signer {
        c.insert("x-ms-policy-signer".into(), s.clone());
    }
    if let Some(n) = svc.nonce {
        c.insert("nonce".into(), n.clone());
    }
    c.insert("iss".into(), svc.issuer.into());
    c.insert("iat".into(), svc.now.into());
    c.insert("nbf".into(), svc.now.into());
    c.insert("exp".into(), svc.now.saturating_add(svc.validity_s).into());
    c.insert("jti".into(), svc.jti.clone().into());
    c.insert("x-attestd-region".into(), svc.region.into());
    c.insert("x-attestd-node".into(), svc.node_id.into());
    if !outcome.issued_claims.is_empty() {
        for (k, v) in &outcome.issued_claims {
            if !c.contains_key(k) {
                c.insert(k.clone(), v.clone());
            }
        }
        c.insert("x-ms-policy".into(), Value::Object(outcome.issued_claims.clone()));
    }
    c
}

/// A fresh `jti`: 32 random bytes as 64 hex characters, like MAA's.
pub fn new_jti() -> String {
    let mut b = [0u8; 32];
    rand::fill(&mut b);
    hex::encode(b)
}
