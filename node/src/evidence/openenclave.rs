//! `OpenEnclave`: an OE remote report = 16-byte OE header + SGX quote.
//!
//! Header (`oe_report_header_t`): `version: u32 = 1`, `report_type: u32 = 2`
//! (remote), `report_size: u64` = length of the quote that follows. MAA
//! reports OE evidence with the same `sgx` claims as `SgxEnclave`; the
//! `quotehash` is over the whole OE report as sent.

use super::error::{EvidenceError, Result};
use super::sgx::verify_sgx_quote;
use super::{AttestationType, CollateralStore, EvidenceRequest, EvidenceVerifier, VerificationTime, VerifiedEvidence};

/// Length of the OE report header.
pub const OE_HEADER_LEN: usize = 16;

/// Verifier for `OpenEnclave`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenEnclaveVerifier;

/// Split an OE report into its SGX quote (bounded; never panics).
pub fn oe_quote(report: &[u8]) -> Result<&[u8]> {
    let header = report.get(..OE_HEADER_LEN).ok_or(EvidenceError::Truncated {
        what: "OE report header",
        needed: OE_HEADER_LEN,
        got: report.len(),
    })?;
    let u32_at = |o: usize| u32::from_le_bytes([header[o], header[o + 1], header[o + 2], header[o + 3]]);
    let version = u32_at(0);
    let report_type = u32_at(4);
    let mut size = [0u8; 8];
    size.copy_from_slice(&header[8..16]);
    let size = u64::from_le_bytes(size);
    if version != 1 {
        return Err(EvidenceError::Unsupported { what: "OE report version", value: version.to_string() });
    }
    if report_type != 2 {
        return Err(EvidenceError::Unsupported {
            what: "OE report type (need 2, remote)",
            value: report_type.to_string(),
        });
    }
    let body = &report[OE_HEADER_LEN..];
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if size != body.len() {
        return Err(EvidenceError::Malformed {
            what: "OE report",
            reason: format!("header says {size} bytes of quote, {} follow", body.len()),
        });
    }
    Ok(body)
}

impl EvidenceVerifier for OpenEnclaveVerifier {
    fn attestation_type(&self) -> AttestationType {
        AttestationType::OpenEnclave
    }

    fn verify(&self, req: &EvidenceRequest, store: &CollateralStore, at: VerificationTime) -> Result<VerifiedEvidence> {
        let quote = oe_quote(&req.evidence)?;
        verify_sgx_quote(quote, &req.evidence, req, store, at, AttestationType::OpenEnclave)
    }
}
