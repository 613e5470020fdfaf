//! Intel DCAP ECDSA quote verification shared by SGX (v3) and TDX (v4/v5).
//!
//! ## Why dcap-qvl, and why not its `verify()`
//!
//! We use `dcap-qvl` 0.7.1 (pure Rust, MIT) for what it does well and what
//! must match Intel exactly: the quote wire format (`Quote::parse`, v3/v4/v5,
//! TD 1.0/1.5 bodies), the PCK certificate's SGX extension
//! (`intel::parse_pck_extension`), the TCB info data model and Intel's
//! TCB-level matching rules (`TcbLevel::shortfalls`, TDX module identities,
//! status convergence via `TcbStatusWithAdvisory::merge`).
//!
//! We do *not* call `dcap_qvl::verify::verify` on the attest path because:
//! 1. it re-parses and re-verifies all collateral (TCB info and QE identity
//!    signatures, both CRLs, the issuer chains) on every call; attestd verifies
//!    collateral once per replicated version ([`CollateralStore`]) and caches
//!    verified PCK leaves, leaving two ECDSA verifications per request;
//! 2. it applies appraisal *policy* that MAA leaves to the tenant's policy: it
//!    rejects debug enclaves/TDs and TDs without `SEPT_VE_DISABLE` (every Azure
//!    TDX CVM quote in the vectors), which MAA accepts and reports as claims;
//! 3. it cannot read SGX TCB info v2 (`sgxtcbcompNNsvn`), which still appears in
//!    PCCS caches; we normalise v2 to the v3 data model before matching;
//! 4. it anchors on a root *certificate* through webpki; we pin the root *key*
//!    so that 2021 quotes ending in the older root encoding verify.
//!
//! The tests cross-check our result against `dcap_qvl::verify` wherever that
//! function accepts the vector, and the benchmark times both.

use std::sync::Arc;

use dcap_qvl::quote::{AuthDataV3, Quote, Report};
use dcap_qvl::{TcbStatus, TcbStatusWithAdvisory};

use super::collateral::{CollateralStore, TeeKind, VerifiedQeIdentity, VerifiedTcbInfo};
use super::error::{EvidenceError, Result};
use super::pki::{pem_certs, sha2_free::sha256, verify_p256_raw, CertInfo};

/// Largest quote accepted (real quotes are 4–8 KiB; PCK chains are ~3 KiB).
pub const MAX_QUOTE_LEN: usize = 64 * 1024;

const INTEL_QE_VENDOR_ID: [u8; 16] =
    [0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07];

/// The PCK leaf after chain verification, cached by its DER hash.
#[derive(Debug)]
pub(crate) struct VerifiedPck {
    pub leaf: Arc<CertInfo>,
    pub ca: Arc<CertInfo>,
    pub fmspc: [u8; 6],
    pub cpu_svn: [u8; 16],
    pub pce_svn: u16,
}

/// The outcome of verifying a DCAP quote.
#[derive(Debug)]
pub struct VerifiedQuote {
    pub quote: Quote,
    pub tcb_status: TcbStatus,
    pub advisory_ids: Vec<String>,
    pub fmspc: [u8; 6],
    pub pce_svn: u16,
    pub cpu_svn: [u8; 16],
    pub qe_isvsvn: u16,
    pub tcb_info: Arc<VerifiedTcbInfo>,
    pub qe_identity: Arc<VerifiedQeIdentity>,
    /// `tdxModuleIdentities` id used (e.g. `TDX_01`), TDX only.
    pub tdx_module_id: Option<String>,
    pub tdx_module_status: Option<TcbStatus>,
    pub platform_status: TcbStatus,
    pub tcb_date: String,
}

fn tee_of(q: &Quote) -> Result<TeeKind> {
    match (q.header.tee_type, q.header.version) {
        (0, 3) => Ok(TeeKind::Sgx),
        (0x81, 4 | 5) => Ok(TeeKind::Tdx),
        (t, v) => Err(EvidenceError::Unsupported {
            what: "quote TEE type / version",
            value: format!("tee type {t:#x}, version {v}"),
        }),
    }
}

/// Parse a quote without verifying it (bounded; never panics).
pub fn parse_quote(raw: &[u8]) -> Result<Quote> {
    if raw.len() > MAX_QUOTE_LEN {
        return Err(EvidenceError::TooLarge { what: "quote", len: raw.len(), max: MAX_QUOTE_LEN });
    }
    if raw.len() < 48 {
        return Err(EvidenceError::Truncated { what: "quote header", needed: 48, got: raw.len() });
    }
    let q = Quote::parse(raw).map_err(|e| EvidenceError::malformed("quote", e))?;
    tee_of(&q)?;
    Ok(q)
}

/// Verify a DCAP quote against the store at time `at` (unix seconds).
pub fn verify_quote(raw: &[u8], store: &CollateralStore, at: i64) -> Result<VerifiedQuote> {
    let quote = parse_quote(raw)?;
    let tee = tee_of(&quote)?;
    if quote.header.attestation_key_type != 2 {
        return Err(EvidenceError::Unsupported {
            what: "attestation key type",
            value: quote.header.attestation_key_type.to_string(),
        });
    }
    if quote.header.qe_vendor_id != INTEL_QE_VENDOR_ID {
        return Err(EvidenceError::Unsupported { what: "QE vendor id", value: hex::encode(quote.header.qe_vendor_id) });
    }
    let auth: AuthDataV3 = quote.auth_data.clone().into_v3();
    if auth.certification_data.cert_type != 5 {
        return Err(EvidenceError::Unsupported {
            what: "certification data type (need 5, PCK chain)",
            value: auth.certification_data.cert_type.to_string(),
        });
    }

    // 1. PCK chain (cached per leaf).
    // Evidence signatures come first, collateral freshness after, so that a
    // tampered quote is reported as such even when collateral is stale.
    let pck = verify_pck_chain(&auth.certification_data.body.data, store)?;

    // 2. QE report signed by the PCK key, and committing to the attestation key.
    if !verify_p256_raw(&pck.leaf.public_key, &auth.qe_report, &auth.qe_report_signature) {
        return Err(EvidenceError::BadSignature { what: "QE report" });
    }
    let mut hashed = Vec::with_capacity(64 + auth.qe_auth_data.data.len());
    hashed.extend_from_slice(&auth.ecdsa_attestation_key);
    hashed.extend_from_slice(&auth.qe_auth_data.data);
    let qe = parse_enclave_report(&auth.qe_report)?;
    if sha256(&hashed) != qe.report_data[..32] {
        return Err(EvidenceError::QeReportBinding);
    }

    // 3. The quote body signed by the attestation key.
    let signed_len = quote.signed_length();
    let signed = raw.get(..signed_len).ok_or(EvidenceError::Truncated {
        what: "quote body",
        needed: signed_len,
        got: raw.len(),
    })?;
    let mut point = [0x04u8; 65];
    point[1..].copy_from_slice(&auth.ecdsa_attestation_key);
    if !verify_p256_raw(&point, signed, &auth.ecdsa_signature) {
        return Err(EvidenceError::BadSignature { what: "quote" });
    }

    // 4. Certificate validity and revocation at `at`.
    let root = &store.anchors.intel_root;
    pck.leaf.check_time(at)?;
    pck.ca.check_time(at)?;
    root.check_time(at)?;
    store.check_revocation(&pck.ca, "Intel SGX Root CA", at)?;
    store.check_revocation(&pck.leaf, &pck.ca.label(), at)?;

    // 5. QE identity.
    let qe_id = store.qe_identity(if tee == TeeKind::Sgx { "QE" } else { "TD_QE" }, at)?;
    qe_id.signer.check_time(at)?;
    store.check_revocation(&qe_id.signer, "Intel SGX Root CA", at)?;
    let qe_status = match_qe_identity(&qe, &qe_id)?;

    // 6. Platform TCB level (+ TDX module) and convergence.
    let tcb_info = store.tcb_info(tee, &pck.fmspc, at)?;
    tcb_info.signer.check_time(at)?;
    store.check_revocation(&tcb_info.signer, "Intel SGX Root CA", at)?;
    let m = match_tcb(&quote, &tcb_info, &pck)?;
    let platform_status = m.status.status;
    let mut merged = m.status.merge(&qe_status);
    if let Some(current) = m.current {
        // TD 1.5 after a TD-preserving update: appraise the current TCB too.
        let cur = current.merge(&qe_status).status;
        if cur == TcbStatus::Revoked {
            merged.status = TcbStatus::Revoked;
        }
    }
    if merged.status == TcbStatus::Revoked {
        return Err(EvidenceError::TcbRevoked);
    }
    Ok(VerifiedQuote {
        tcb_status: merged.status,
        advisory_ids: merged.advisory_ids,
        fmspc: pck.fmspc,
        pce_svn: pck.pce_svn,
        cpu_svn: pck.cpu_svn,
        qe_isvsvn: qe.isv_svn,
        tcb_info,
        qe_identity: qe_id,
        tdx_module_id: m.module_id,
        tdx_module_status: m.module_status,
        platform_status,
        tcb_date: m.tcb_date,
        quote,
    })
}

/// Verify (or fetch from cache) the PCK leaf and its CA from the quote's PEM chain.
fn verify_pck_chain(pem: &[u8], store: &CollateralStore) -> Result<Arc<VerifiedPck>> {
    let ders = pem_certs(pem)?;
    let leaf_der = ders.first().ok_or_else(|| EvidenceError::malformed("PCK chain", "empty"))?;
    let key = sha256(pem);
    if let Some(v) = store.cache_get::<VerifiedPck>(&key) {
        return Ok(v);
    }
    let leaf = Arc::new(CertInfo::parse(leaf_der, "PCK certificate")?);
    let ca_der = ders.get(1).ok_or_else(|| EvidenceError::UntrustedChain {
        which: "PCK certificate".into(),
        reason: "chain has no issuing CA".into(),
    })?;
    let ca_hash = sha256(ca_der);
    let ca = match store.intel_ca(&leaf.issuer_raw, &ca_hash) {
        Some(ca) => ca,
        None => {
            let ca = CertInfo::parse(ca_der, "PCK CA certificate")?;
            let root = &store.anchors.intel_root;
            if ca.issuer_raw != root.subject_raw {
                return Err(EvidenceError::UntrustedChain {
                    which: ca.label(),
                    reason: format!("issued by {:?}, not the Intel SGX Root CA", ca.issuer_cn),
                });
            }
            if !ca.is_signed_by(root.key_kind, &root.public_key) {
                return Err(EvidenceError::UntrustedChain {
                    which: ca.label(),
                    reason: "not signed by the pinned Intel SGX Root CA key".into(),
                });
            }
            Arc::new(ca)
        }
    };
    // The chain's last certificate, if it claims to be the root, must carry the pinned key.
    if let Some(last) = ders.get(2) {
        let last = CertInfo::parse(last, "quote root certificate")?;
        // Pinned key, and an intact self-signature (either root encoding).
        if !store.anchors.is_intel_root_key(&last) || last.verify_issued_by(&last).is_err() {
            return Err(EvidenceError::UntrustedChain {
                which: "PCK certificate".into(),
                reason: "chain ends in a root whose key is not the pinned Intel SGX Root CA key".into(),
            });
        }
    }
    leaf.verify_issued_by(&ca)?;
    let ext = dcap_qvl::intel::parse_pck_extension(&leaf.der)
        .map_err(|e| EvidenceError::malformed("PCK certificate SGX extension", e))?;
    let v = Arc::new(VerifiedPck { leaf, ca, fmspc: ext.fmspc, cpu_svn: ext.cpu_svn, pce_svn: ext.pce_svn });
    store.cache_put(key, v.clone());
    Ok(v)
}

/// Parse a 384-byte SGX report body.
pub fn parse_enclave_report(b: &[u8]) -> Result<dcap_qvl::quote::EnclaveReport> {
    use scale_like::decode_enclave_report;
    decode_enclave_report(b)
}

mod scale_like {
    //! Fixed-layout decoding of an SGX REPORT body (Intel SDK `sgx_report_body_t`).
    use super::*;
    pub fn decode_enclave_report(b: &[u8]) -> Result<dcap_qvl::quote::EnclaveReport> {
        if b.len() < 384 {
            return Err(EvidenceError::Truncated { what: "SGX report body", needed: 384, got: b.len() });
        }
        let arr = |o: usize, n: usize| &b[o..o + n];
        let mut r = dcap_qvl::quote::EnclaveReport {
            cpu_svn: [0; 16],
            misc_select: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
            reserved1: [0; 28],
            attributes: [0; 16],
            mr_enclave: [0; 32],
            reserved2: [0; 32],
            mr_signer: [0; 32],
            reserved3: [0; 96],
            isv_prod_id: u16::from_le_bytes([b[256], b[257]]),
            isv_svn: u16::from_le_bytes([b[258], b[259]]),
            reserved4: [0; 60],
            report_data: [0; 64],
        };
        r.cpu_svn.copy_from_slice(arr(0, 16));
        r.reserved1.copy_from_slice(arr(20, 28));
        r.attributes.copy_from_slice(arr(48, 16));
        r.mr_enclave.copy_from_slice(arr(64, 32));
        r.reserved2.copy_from_slice(arr(96, 32));
        r.mr_signer.copy_from_slice(arr(128, 32));
        r.reserved3.copy_from_slice(arr(160, 96));
        r.reserved4.copy_from_slice(arr(260, 60));
        r.report_data.copy_from_slice(arr(320, 64));
        Ok(r)
    }
}

fn match_qe_identity(qe: &dcap_qvl::quote::EnclaveReport, id: &VerifiedQeIdentity) -> Result<TcbStatusWithAdvisory> {
    let mismatch = |reason: String| EvidenceError::QeIdentityMismatch { reason };
    if qe.mr_signer != id.mrsigner {
        return Err(mismatch(format!("MRSIGNER {}", hex::encode(qe.mr_signer))));
    }
    if qe.isv_prod_id != id.isvprodid {
        return Err(mismatch(format!("ISVPRODID {}", qe.isv_prod_id)));
    }
    let misc = qe.misc_select.to_le_bytes();
    let misc_ok = (0..4).all(|i| misc[i] & id.miscselect_mask[i] == id.miscselect[i]);
    if !misc_ok {
        return Err(mismatch("MISCSELECT".into()));
    }
    let attr_ok = (0..16).all(|i| qe.attributes[i] & id.attributes_mask[i] == id.attributes[i]);
    if !attr_ok {
        return Err(mismatch("ATTRIBUTES".into()));
    }
    let level = id
        .tcb_levels
        .iter()
        .find(|l| l.tcb.isvsvn <= qe.isv_svn)
        .ok_or_else(|| mismatch(format!("QE ISVSVN {} below every TCB level", qe.isv_svn)))?;
    Ok(TcbStatusWithAdvisory::new(level.tcb_status, level.advisory_ids.clone()))
}

struct TcbMatch {
    status: TcbStatusWithAdvisory,
    current: Option<TcbStatusWithAdvisory>,
    module_id: Option<String>,
    module_status: Option<TcbStatus>,
    tcb_date: String,
}

fn find_level(
    info: &VerifiedTcbInfo,
    pck: &VerifiedPck,
    tee_tcb_svn: Option<&[u8; 16]>,
) -> Result<(TcbStatusWithAdvisory, String)> {
    for level in &info.info.tcb_levels {
        let short = level
            .shortfalls(&pck.cpu_svn, pck.pce_svn, tee_tcb_svn)
            .map_err(|e| EvidenceError::CollateralInvalid { what: "TCB info".into(), reason: e.to_string() })?;
        if short.is_empty() {
            return Ok((
                TcbStatusWithAdvisory::new(level.tcb_status, level.advisory_ids.clone()),
                level.tcb_date.clone(),
            ));
        }
    }
    Err(EvidenceError::TcbLevelNotFound {
        reason: format!(
            "CPUSVN {} PCESVN {}{}",
            hex::encode(pck.cpu_svn),
            pck.pce_svn,
            tee_tcb_svn.map(|t| format!(" TEE_TCB_SVN {}", hex::encode(t))).unwrap_or_default()
        ),
    })
}

fn match_tcb(quote: &Quote, info: &VerifiedTcbInfo, pck: &VerifiedPck) -> Result<TcbMatch> {
    if info.fmspc != pck.fmspc {
        return Err(EvidenceError::missing(format!("TCB info for FMSPC {}", hex::encode_upper(pck.fmspc))));
    }
    let td = match &quote.report {
        Report::SgxEnclave(_) => {
            let (status, date) = find_level(info, pck, None)?;
            return Ok(TcbMatch { status, current: None, module_id: None, module_status: None, tcb_date: date });
        }
        other => other.as_td10().ok_or(EvidenceError::Unsupported { what: "quote body", value: "unknown".into() })?,
    };
    check_tdx_module(info, td)?;
    let (mut status, date) = find_level(info, pck, Some(&td.tee_tcb_svn))?;
    let (module_id, module_status) = match module_level(info, &td.tee_tcb_svn)? {
        Some((id, m)) => {
            status = status.merge(&m);
            (Some(id), Some(m.status))
        }
        None => (None, None),
    };
    let current = match quote.report.as_td15() {
        Some(td15) => {
            let (mut cur, _) = find_level(info, pck, Some(&td15.tee_tcb_svn2))?;
            if let Some((_, m)) = module_level(info, &td15.tee_tcb_svn2)? {
                cur = cur.merge(&m);
            }
            Some(cur)
        }
        None => None,
    };
    Ok(TcbMatch { status, current, module_id, module_status, tcb_date: date })
}

/// The TDX module TCB level for `tee_tcb_svn` (module version in byte 1).
fn module_level(info: &VerifiedTcbInfo, tee_tcb_svn: &[u8; 16]) -> Result<Option<(String, TcbStatusWithAdvisory)>> {
    let ident = info
        .info
        .tdx_module_identity(tee_tcb_svn)
        .map_err(|e| EvidenceError::TdxModuleMismatch { reason: e.to_string() })?;
    let Some(ident) = ident else {
        return Ok(None);
    };
    let level = ident.tcb_levels.iter().find(|l| l.shortfall(tee_tcb_svn).is_none()).ok_or_else(|| {
        EvidenceError::TcbLevelNotFound { reason: format!("TDX module {} ISVSVN {}", ident.id, tee_tcb_svn[0]) }
    })?;
    Ok(Some((ident.id.clone(), TcbStatusWithAdvisory::new(level.tcb_status, level.advisory_ids.clone()))))
}

/// MRSIGNERSEAM and SEAM attributes must match the TDX module identity.
fn check_tdx_module(info: &VerifiedTcbInfo, td: &dcap_qvl::quote::TDReport10) -> Result<()> {
    let bad = |reason: String| EvidenceError::TdxModuleMismatch { reason };
    let (signer, attrs, mask) = match info.info.tdx_module_identity(&td.tee_tcb_svn).map_err(|e| bad(e.to_string()))? {
        Some(id) => (&id.mrsigner, &id.attributes, &id.attributes_mask),
        None => {
            let m = info.info.tdx_module.as_ref().ok_or_else(|| bad("TCB info has no tdxModule".into()))?;
            (&m.mrsigner, &m.attributes, &m.attributes_mask)
        }
    };
    let dec = |s: &str| hex::decode(s).map_err(|e| bad(e.to_string()));
    let (signer, attrs, mask) = (dec(signer)?, dec(attrs)?, dec(mask)?);
    if signer != td.mr_signer_seam {
        return Err(bad(format!("MRSIGNERSEAM {}", hex::encode(td.mr_signer_seam))));
    }
    if attrs.len() != 8 || mask.len() != 8 {
        return Err(bad("bad attribute lengths in TCB info".into()));
    }
    for i in 0..8 {
        if td.seam_attributes[i] & mask[i] != attrs[i] & mask[i] {
            return Err(bad("SEAMATTRIBUTES".into()));
        }
    }
    Ok(())
}
