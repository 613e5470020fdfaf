//! Evidence verification (issue 3): turns TEE evidence into trusted claims.
//!
//! One verifier per TEE type behind [`EvidenceVerifier`]; [`AttestationType`] is
//! the single dispatch point (as `Command` is in mini-redis). The API layer
//! decodes the request body into an [`EvidenceRequest`], picks the type from
//! the route and calls [`verify`] with the node's current [`CollateralStore`]
//! and the injected [`VerificationTime`]. Nothing here reads the clock, does
//! I/O or knows about policies and tokens.
//!
//! | type | module | evidence bytes |
//! | --- | --- | --- |
//! | `SgxEnclave` | [`sgx`] | DCAP ECDSA quote v3 |
//! | `OpenEnclave` | [`openenclave`] | OE report header + SGX quote |
//! | `TdxVm` | [`tdx`] | DCAP quote v4 / v5 (trailing bytes tolerated) |
//! | `SevSnpVm` | [`snp`] | MAA's JSON (`SnpReport`, `VcekCertChain`, `Endorsements`), or a raw report (+ VCEK) |
//! | `Tpm` | [`tpm`] | JSON with TPMS_ATTEST, TPMT_SIGNATURE, AK public, AK cert chain, PCRs, event log |
//!
//! Collateral (Intel TCB info / QE identity / CRLs, AMD certificates, TPM CAs)
//! is verified once per replicated version in [`collateral`]; a request only
//! checks its validity windows against the given time.

pub mod binding;
pub mod collateral;
pub mod dcap;
pub mod error;
pub mod openenclave;
pub mod pki;
pub mod sgx;
pub mod snp;
pub mod tdx;
pub mod tpm;
pub mod uvm;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

pub use binding::{BoundData, DataType};
pub use collateral::{CollateralStore, RejectedBlob, TrustAnchors};
pub use error::{EvidenceError, Result};

/// Claims as a JSON object, keyed by MAA's claim names.
pub type Claims = Map<String, Value>;

/// MAA attestation types (the `/attest/{type}` route segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AttestationType {
    SgxEnclave,
    OpenEnclave,
    TdxVm,
    SevSnpVm,
    Tpm,
}

impl AttestationType {
    /// Every type, in route order.
    pub const ALL: [AttestationType; 5] = [Self::SgxEnclave, Self::OpenEnclave, Self::TdxVm, Self::SevSnpVm, Self::Tpm];

    /// The route segment / policy type name (`SgxEnclave`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SgxEnclave => "SgxEnclave",
            Self::OpenEnclave => "OpenEnclave",
            Self::TdxVm => "TdxVm",
            Self::SevSnpVm => "SevSnpVm",
            Self::Tpm => "Tpm",
        }
    }

    /// Parse a route segment, case-insensitively as MAA does.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    /// The verifier for this type.
    pub fn verifier(self) -> &'static dyn EvidenceVerifier {
        match self {
            Self::SgxEnclave => &sgx::SgxVerifier,
            Self::OpenEnclave => &openenclave::OpenEnclaveVerifier,
            Self::TdxVm => &tdx::TdxVerifier,
            Self::SevSnpVm => &snp::SnpVerifier,
            Self::Tpm => &tpm::TpmVerifier,
        }
    }
}

/// The verification time: the one injectable clock of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct VerificationTime(i64);

impl VerificationTime {
    /// Seconds since the Unix epoch.
    pub fn from_unix(secs: i64) -> Self {
        Self(secs)
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> i64 {
        self.0
    }
}

impl From<SystemTime> for VerificationTime {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX)),
        }
    }
}

/// Appraisal switches the verifier applies itself (everything else is policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Accept debuggable enclaves / TDs / VMs (MAA does, and reports
    /// `x-ms-sgx-is-debuggable` etc. for the policy). Default true.
    pub allow_debug: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self { allow_debug: true }
    }
}

/// One attest request, already base64url-decoded by the API layer.
#[derive(Debug, Clone, Default)]
pub struct EvidenceRequest {
    /// The quote / report / TPM evidence (see the module table).
    pub evidence: Vec<u8>,
    /// `runtimeData`: bound to the report data.
    pub runtime_data: Option<BoundData>,
    /// `initTimeData`: bound to SNP host data / SGX CONFIGID.
    pub init_time_data: Option<BoundData>,
    /// Expected TPM quote `extraData` (the verifier's challenge), TPM only.
    pub nonce: Option<Vec<u8>>,
    pub options: VerifyOptions,
}

impl EvidenceRequest {
    /// A request with just the evidence bytes.
    pub fn new(evidence: impl Into<Vec<u8>>) -> Self {
        Self { evidence: evidence.into(), ..Self::default() }
    }

    /// Builder: attach runtimeData.
    pub fn with_runtime_data(mut self, d: BoundData) -> Self {
        self.runtime_data = Some(d);
        self
    }

    /// Builder: attach initTimeData.
    pub fn with_init_time_data(mut self, d: BoundData) -> Self {
        self.init_time_data = Some(d);
        self
    }

    /// Builder: expected TPM nonce.
    pub fn with_nonce(mut self, n: impl Into<Vec<u8>>) -> Self {
        self.nonce = Some(n.into());
        self
    }

    /// Builder: options.
    pub fn with_options(mut self, o: VerifyOptions) -> Self {
        self.options = o;
        self
    }
}

/// Verified evidence: the claims the policy engine sees.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedEvidence {
    pub attestation_type: AttestationType,
    /// MAA-named claims (`x-ms-sgx-*`, `x-ms-sevsnpvm-*`, `tdx_*`, TPM's).
    pub claims: Claims,
    /// Intel TCB status (SGX/TDX) when the type has one.
    pub tcb_status: Option<String>,
    /// Intel security advisories for the matched TCB level.
    pub advisory_ids: Vec<String>,
    pub is_debuggable: bool,
}

/// One verifier per TEE type.
pub trait EvidenceVerifier: Send + Sync {
    /// The type this verifier handles.
    fn attestation_type(&self) -> AttestationType;

    /// Verify `req` with the collateral of `store` at time `at`.
    fn verify(&self, req: &EvidenceRequest, store: &CollateralStore, at: VerificationTime) -> Result<VerifiedEvidence>;
}

/// Verify evidence of type `ty`: the entry point for the API layer.
pub fn verify(
    ty: AttestationType,
    req: &EvidenceRequest,
    store: &CollateralStore,
    at: VerificationTime,
) -> Result<VerifiedEvidence> {
    ty.verifier().verify(req, store, at)
}

/// Attach runtime / init-time JSON claims the way MAA names them.
pub(crate) fn put_data_claims(claims: &mut Claims, runtime: Option<Value>, init_time: Option<Value>) {
    if let Some(v) = runtime {
        claims.insert("x-ms-runtime".into(), v);
    }
    if let Some(v) = init_time {
        claims.insert("x-ms-inittime".into(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_parse_roundtrip() {
        for t in AttestationType::ALL {
            assert_eq!(AttestationType::parse(t.as_str()), Some(t));
            assert_eq!(t.verifier().attestation_type(), t);
        }
        assert_eq!(AttestationType::parse("sgxenclave"), Some(AttestationType::SgxEnclave));
        assert_eq!(AttestationType::parse("nope"), None);
    }

    #[test]
    fn time_from_system_time() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_739_419_232);
        assert_eq!(VerificationTime::from(t).unix(), 1_739_419_232);
    }
}
