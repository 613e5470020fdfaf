//! Typed errors of evidence verification.
//!
//! Every variant says *what* failed so that the API layer can answer with a
//! precise message; [`EvidenceError::maa_code`] maps a variant to MAA's error
//! code (almost always `InvalidParameter`, as MAA does for bad evidence and bad
//! collateral).

use thiserror::Error;

/// Result alias used throughout the evidence module.
pub type Result<T, E = EvidenceError> = std::result::Result<T, E>;

/// Why a piece of evidence (or the collateral needed to judge it) was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvidenceError {
    // --- framing / parsing of untrusted input ---
    /// Input larger than the configured bound.
    #[error("{what} is too large: {len} bytes (limit {max})")]
    TooLarge { what: &'static str, len: usize, max: usize },
    /// Input shorter than its structure needs.
    #[error("{what} is truncated: need {needed} bytes, got {got}")]
    Truncated { what: &'static str, needed: usize, got: usize },
    /// Structurally invalid input.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// A version / type the verifier does not support.
    #[error("unsupported {what}: {value}")]
    Unsupported { what: &'static str, value: String },

    // --- certificates ---
    /// A certificate could not be parsed.
    #[error("certificate {which} could not be parsed: {reason}")]
    CertificateParse { which: String, reason: String },
    /// A certificate's signature does not verify with its issuer's key.
    #[error("signature of certificate {which} does not verify")]
    CertificateSignature { which: String },
    /// A certificate had expired at the verification time.
    #[error("certificate {which} expired at {not_after} (verification time {at})")]
    CertificateExpired { which: String, not_after: i64, at: i64 },
    /// A certificate was not yet valid at the verification time.
    #[error("certificate {which} is not valid before {not_before} (verification time {at})")]
    CertificateNotYetValid { which: String, not_before: i64, at: i64 },
    /// A certificate chain does not end in a configured trust anchor.
    #[error("certificate chain of {which} does not chain to a trusted root: {reason}")]
    UntrustedChain { which: String, reason: String },
    /// A certificate is listed in a (valid) CRL.
    #[error("certificate {which} (serial {serial}) is revoked")]
    CertificateRevoked { which: String, serial: String },

    // --- collateral ---
    /// Collateral needed for this evidence is not in the store.
    #[error("missing collateral: {what}")]
    CollateralMissing { what: String },
    /// Collateral is present but expired at the verification time.
    #[error("collateral {what} expired at {next_update} (verification time {at})")]
    CollateralExpired { what: String, next_update: i64, at: i64 },
    /// Collateral is present but not yet valid at the verification time.
    #[error("collateral {what} is not valid before {issue_date} (verification time {at})")]
    CollateralNotYetValid { what: String, issue_date: i64, at: i64 },
    /// Collateral blob failed parsing or its signature check.
    #[error("invalid collateral {what}: {reason}")]
    CollateralInvalid { what: String, reason: String },

    // --- evidence signatures and bindings ---
    /// The quote / report / TPM quote signature does not verify.
    #[error("{what} signature does not verify")]
    BadSignature { what: &'static str },
    /// QE report data does not commit to the attestation key.
    #[error("QE report data does not match SHA-256(attestation key || QE auth data)")]
    QeReportBinding,
    /// The QE does not match the QE identity collateral.
    #[error("quoting enclave does not match QE identity: {reason}")]
    QeIdentityMismatch { reason: String },
    /// No TCB level of the TCB info matches the platform.
    #[error("no matching TCB level: {reason}")]
    TcbLevelNotFound { reason: String },
    /// The platform TCB is revoked.
    #[error("TCB status is Revoked")]
    TcbRevoked,
    /// TDX module identity (MRSIGNERSEAM / SEAM attributes) mismatch.
    #[error("TDX module identity mismatch: {reason}")]
    TdxModuleMismatch { reason: String },
    /// The report's TCB / chip id does not match the VCEK.
    #[error("report does not match its endorsement key: {reason}")]
    EndorsementMismatch { reason: String },
    /// The enclave / TD / VM is debuggable and the options forbid it.
    #[error("debuggable {what} is not allowed")]
    DebugNotAllowed { what: &'static str },

    // --- runtime / init-time data ---
    /// SHA-256(runtimeData) does not match the report data.
    #[error("runtimeData hash does not match report data: expected {expected}, found {found}")]
    RuntimeDataMismatch { expected: String, found: String },
    /// SHA-256(initTimeData) does not match host data / config id.
    #[error("initTimeData hash does not match {field}: expected {expected}, found {found}")]
    InitTimeDataMismatch { field: &'static str, expected: String, found: String },
    /// runtimeData / initTimeData declared JSON is not JSON.
    #[error("{what} declared as JSON does not parse: {reason}")]
    DataNotJson { what: &'static str, reason: String },

    // --- TPM ---
    /// PCR values do not hash to the quote's PCR digest.
    #[error("PCR values do not match the quote's PCR digest")]
    PcrDigestMismatch,
    /// The quote's extraData is not the expected nonce.
    #[error("TPM quote nonce (extraData) does not match")]
    NonceMismatch,
    /// The replayed event log does not reproduce a PCR.
    #[error("event log replay does not reproduce PCR {pcr}")]
    EventLogMismatch { pcr: u32 },
    /// The AK public area does not match the AK certificate.
    #[error("attestation key does not match its certificate")]
    AkMismatch,
}

impl EvidenceError {
    /// MAA error code for this error (`{"error":{"code": ...}}`).
    pub fn maa_code(&self) -> &'static str {
        // MAA reports bad quotes, bad collateral and binding mismatches alike as
        // InvalidParameter (see research/maa-api.md §1.5).
        "InvalidParameter"
    }

    pub(crate) fn malformed(what: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Malformed { what, reason: reason.to_string() }
    }

    pub(crate) fn missing(what: impl Into<String>) -> Self {
        Self::CollateralMissing { what: what.into() }
    }
}
