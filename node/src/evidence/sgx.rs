//! `SgxEnclave`: DCAP ECDSA quote v3 → `x-ms-sgx-*` claims.
//!
//! Quote, PCK chain, QE and TCB checks are in [`super::dcap`]; this module
//! adds the SGX-specific appraisal (debug flag), the runtimeData /
//! initTimeData binding and MAA's claim names (research/maa-api.md §4.3).

use serde_json::{json, Value};

use super::binding::{bind_init_time_data, bind_runtime_data, DataType};
use super::dcap::{self, VerifiedQuote};
use super::error::{EvidenceError, Result};
use super::pki::sha2_free::sha256;
use super::{
    put_data_claims, AttestationType, Claims, CollateralStore, EvidenceRequest, EvidenceVerifier, VerificationTime,
    VerifiedEvidence,
};
use base64::Engine as _;

/// Verifier for `SgxEnclave`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SgxVerifier;

impl EvidenceVerifier for SgxVerifier {
    fn attestation_type(&self) -> AttestationType {
        AttestationType::SgxEnclave
    }

    fn verify(&self, req: &EvidenceRequest, store: &CollateralStore, at: VerificationTime) -> Result<VerifiedEvidence> {
        verify_sgx_quote(&req.evidence, &req.evidence, req, store, at, AttestationType::SgxEnclave)
    }
}

/// Verify an SGX quote; `sent` is what the client sent (hashed for `quotehash`).
pub(crate) fn verify_sgx_quote(
    quote: &[u8],
    sent: &[u8],
    req: &EvidenceRequest,
    store: &CollateralStore,
    at: VerificationTime,
    ty: AttestationType,
) -> Result<VerifiedEvidence> {
    let vq = dcap::verify_quote(quote, store, at.unix())?;
    let report = *vq
        .quote
        .report
        .as_sgx()
        .ok_or(EvidenceError::Unsupported { what: "quote body for SgxEnclave", value: "TD report".into() })?;
    let is_debuggable = report.attributes[0] & 0x02 != 0;
    if is_debuggable && !req.options.allow_debug {
        return Err(EvidenceError::DebugNotAllowed { what: "SGX enclave" });
    }
    let mut claims = sgx_claims(&report, &vq, sent, store, at);
    let runtime = match &req.runtime_data {
        Some(rd) => {
            let v = bind_runtime_data(rd, &report.report_data)?;
            if rd.data_type == DataType::Binary {
                claims.insert(
                    "x-ms-sgx-ehd".into(),
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&rd.data).into(),
                );
            }
            v
        }
        None => None,
    };
    let init = match &req.init_time_data {
        // CONFIGID is bytes 32..96 of the reserved3 field (SGX report offset 192).
        Some(itd) => bind_init_time_data(itd, "SGX CONFIGID", &report.reserved3[32..96])?,
        None => None,
    };
    put_data_claims(&mut claims, runtime, init);
    Ok(VerifiedEvidence {
        attestation_type: ty,
        claims,
        tcb_status: Some(vq.tcb_status.to_string()),
        advisory_ids: vq.advisory_ids.clone(),
        is_debuggable,
    })
}

/// The report-body claims of an SGX quote **without verifying it** (for
/// diagnostics and tests of the claim mapping; never feed these to a policy).
pub fn report_claims(quote: &[u8]) -> Result<Claims> {
    let q = dcap::parse_quote(quote)?;
    let r = q
        .report
        .as_sgx()
        .ok_or(EvidenceError::Unsupported { what: "quote body for SgxEnclave", value: "TD report".into() })?;
    Ok(body_claims(r))
}

fn body_claims(r: &dcap_qvl::quote::EnclaveReport) -> Claims {
    let mut c = Claims::new();
    c.insert("x-ms-attestation-type".into(), "sgx".into());
    c.insert("x-ms-sgx-is-debuggable".into(), (r.attributes[0] & 0x02 != 0).into());
    c.insert("x-ms-sgx-mrenclave".into(), hex::encode(r.mr_enclave).into());
    c.insert("x-ms-sgx-mrsigner".into(), hex::encode(r.mr_signer).into());
    c.insert("x-ms-sgx-product-id".into(), r.isv_prod_id.into());
    c.insert("x-ms-sgx-svn".into(), r.isv_svn.into());
    c.insert("x-ms-sgx-report-data".into(), hex::encode(r.report_data).into());
    c.insert("x-ms-sgx-attributes".into(), hex::encode(r.attributes).into());
    // KSS fields are only reported when used, as MAA does.
    let config_id = &r.reserved3[32..96];
    let config_svn = u16::from_le_bytes([r.reserved4[0], r.reserved4[1]]);
    let ext_prod_id = &r.reserved1[12..28];
    let family_id = &r.reserved4[44..60];
    if config_id.iter().any(|b| *b != 0) || config_svn != 0 {
        c.insert("x-ms-sgx-config-id".into(), hex::encode(config_id).into());
        c.insert("x-ms-sgx-config-svn".into(), config_svn.into());
    }
    if ext_prod_id.iter().any(|b| *b != 0) || family_id.iter().any(|b| *b != 0) {
        c.insert("x-ms-sgx-isv-extended-product-id".into(), hex::encode(ext_prod_id).into());
        c.insert("x-ms-sgx-isv-family-id".into(), hex::encode(family_id).into());
    }
    c
}

fn sgx_claims(
    r: &dcap_qvl::quote::EnclaveReport,
    vq: &VerifiedQuote,
    sent: &[u8],
    store: &CollateralStore,
    at: VerificationTime,
) -> Claims {
    let mut c = body_claims(r);
    c.insert("x-ms-sgx-tcb-status".into(), vq.tcb_status.to_string().into());
    c.insert("x-ms-sgx-advisory-ids".into(), json!(vq.advisory_ids));
    c.insert("x-ms-sgx-fmspc".into(), hex::encode_upper(vq.fmspc).into());
    c.insert("x-ms-sgx-pcesvn".into(), vq.pce_svn.into());
    c.insert("x-ms-sgx-cpusvn".into(), hex::encode(vq.cpu_svn).into());
    c.insert("x-ms-sgx-tcb-evaluation-data-number".into(), vq.tcb_info.info.tcb_evaluation_data_number.into());
    c.insert("x-ms-sgx-collateral".into(), collateral_claim(vq, sent, store, at));
    c
}

/// `x-ms-sgx-collateral`: SHA-256 (hex) of the collateral used and of the quote.
pub(crate) fn collateral_claim(
    vq: &VerifiedQuote,
    sent: &[u8],
    store: &CollateralStore,
    at: VerificationTime,
) -> Value {
    let crl_hash = store
        .check_revocation(&vq.tcb_info.signer, "Intel SGX Root CA", at.unix())
        .map(|c| hex::encode(c.sha256))
        .unwrap_or_default();
    json!({
        "quotehash": hex::encode(sha256(sent)),
        "tcbinfohash": hex::encode(vq.tcb_info.body_sha256),
        "tcbinfocertshash": hex::encode(vq.tcb_info.signer.sha256),
        "tcbinfocrlhash": crl_hash,
        "qeidhash": hex::encode(vq.qe_identity.body_sha256),
        "qeidcertshash": hex::encode(vq.qe_identity.signer.sha256),
        "qeidcrlhash": crl_hash,
    })
}
