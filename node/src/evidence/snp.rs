//! `SevSnpVm`: AMD SEV-SNP attestation report → `x-ms-sevsnpvm-*` claims.
//!
//! Accepted evidence (the API layer passes the request's `report` bytes):
//! - MAA's shape: JSON `{"SnpReport": b64url(report), "VcekCertChain":
//!   b64url(PEM VCEK‖ASK‖ARK), "Endorsements": b64url(JSON)}`, either as JSON
//!   text or still base64url-encoded (padded or not);
//! - a raw 1184-byte report, optionally followed by the VCEK/VLEK (DER or PEM,
//!   optionally with its ASK); without one, the VCEK is looked up among the
//!   AMD certificates imported as collateral (by chip id).
//!
//! Checks: VCEK/VLEK → ASK/ASVK → ARK (Milan, Genoa, Turin; the ARK pinned
//! by key), validity at the given time, the report signature (ECDSA P-384,
//! little-endian r/s), report version 2, 3 or 5, the reported TCB against the
//! VCEK's TCB extensions and `chip_id` against its `hwID` (VCEK only).
//!
//! ## Why not the `sev` crate
//! `sev` 8.x verifies with OpenSSL by default; its `crypto_nossl` path pulls
//! the RustCrypto `rsa` crate and its own certificate types, and its report
//! parsing rejects nothing we need rejected while still leaving the VCEK TCB
//! and hwID comparison, VLEK/ASVK handling and MAA's JSON shape to us. ring +
//! x509-parser (already in the tree) verify RSA-PSS/SHA-384 and P-384 directly
//! and accept the VCEK's serial number 0, so we implement the ~300 lines here.

use std::sync::Arc;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::binding::{bind_init_time_data, bind_runtime_data};
use super::error::{EvidenceError, Result};
use super::pki::{certs_from_bytes, sha2_free::sha256, CertInfo, KeyKind};
use super::{
    put_data_claims, AttestationType, Claims, CollateralStore, EvidenceRequest, EvidenceVerifier, VerificationTime,
    VerifiedEvidence,
};

/// Size of an ATTESTATION_REPORT.
pub const REPORT_LEN: usize = 0x4A0;
/// Bytes covered by the report signature.
const SIGNED_LEN: usize = 0x2A0;
/// Largest SNP evidence accepted (report + chain + endorsements).
pub const MAX_SNP_EVIDENCE_LEN: usize = 256 * 1024;

const OID_BL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";

/// AMD product line, which fixes the TCB layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    Milan,
    Genoa,
    Turin,
    Unknown,
}

/// Decoded TCB_VERSION.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tcb {
    pub fmc: Option<u8>,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl Tcb {
    fn decode(raw: u64, product: Product) -> Self {
        let b = raw.to_le_bytes();
        if product == Product::Turin {
            Self { fmc: Some(b[0]), bootloader: b[1], tee: b[2], snp: b[3], microcode: b[7] }
        } else {
            Self { fmc: None, bootloader: b[0], tee: b[1], snp: b[6], microcode: b[7] }
        }
    }
}

/// The fields of an ATTESTATION_REPORT (versions 2, 3, 5).
#[derive(Debug, Clone)]
pub struct SnpReport {
    pub version: u32,
    pub guest_svn: u32,
    pub policy: u64,
    pub family_id: [u8; 16],
    pub image_id: [u8; 16],
    pub vmpl: u32,
    pub signature_algo: u32,
    pub current_tcb: u64,
    pub platform_info: u64,
    pub flags: u32,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub id_key_digest: [u8; 48],
    pub author_key_digest: [u8; 48],
    pub report_id: [u8; 32],
    pub report_id_ma: [u8; 32],
    pub reported_tcb: u64,
    pub cpuid_fam_id: Option<u8>,
    pub cpuid_mod_id: Option<u8>,
    pub chip_id: [u8; 64],
    pub committed_tcb: u64,
    pub launch_tcb: u64,
    raw: [u8; REPORT_LEN],
}

fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}

impl SnpReport {
    /// Parse the first [`REPORT_LEN`] bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < REPORT_LEN {
            return Err(EvidenceError::Truncated { what: "SEV-SNP report", needed: REPORT_LEN, got: b.len() });
        }
        let u32_at = |o: usize| u32::from_le_bytes(arr(b, o));
        let u64_at = |o: usize| u64::from_le_bytes(arr(b, o));
        let version = u32_at(0);
        if !matches!(version, 2 | 3 | 5) {
            return Err(EvidenceError::Unsupported { what: "SEV-SNP report version", value: version.to_string() });
        }
        let has_cpuid = version >= 3;
        Ok(Self {
            version,
            guest_svn: u32_at(0x04),
            policy: u64_at(0x08),
            family_id: arr(b, 0x10),
            image_id: arr(b, 0x20),
            vmpl: u32_at(0x30),
            signature_algo: u32_at(0x34),
            current_tcb: u64_at(0x38),
            platform_info: u64_at(0x40),
            flags: u32_at(0x48),
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xC0),
            id_key_digest: arr(b, 0xE0),
            author_key_digest: arr(b, 0x110),
            report_id: arr(b, 0x140),
            report_id_ma: arr(b, 0x160),
            reported_tcb: u64_at(0x180),
            cpuid_fam_id: has_cpuid.then(|| b[0x188]),
            cpuid_mod_id: has_cpuid.then(|| b[0x189]),
            chip_id: arr(b, 0x1A0),
            committed_tcb: u64_at(0x1E0),
            launch_tcb: u64_at(0x1F0),
            raw: arr(b, 0),
        })
    }

    /// 0 = VCEK, 1 = VLEK (report flags bits 2..4).
    pub fn signing_key(&self) -> u32 {
        (self.flags >> 2) & 0x7
    }

    /// Policy bit 19.
    pub fn is_debuggable(&self) -> bool {
        self.policy & (1 << 19) != 0
    }
}

/// MAA's JSON shape.
#[derive(Deserialize)]
struct MaaSnpEvidence {
    #[serde(rename = "SnpReport")]
    snp_report: String,
    #[serde(rename = "VcekCertChain", default)]
    vcek_cert_chain: Option<String>,
    #[serde(rename = "Endorsements", default)]
    endorsements: Option<String>,
}

/// base64url, padded or not; standard alphabet tolerated as well.
pub(super) fn b64url(s: &str, what: &'static str) -> Result<Vec<u8>> {
    let cleaned: String = s
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cleaned).map_err(|e| EvidenceError::malformed(what, e))
}

/// Report bytes, certificate chain (DER, leaf first) and the `Endorsements` JSON, if any.
struct Parsed {
    report: SnpReport,
    chain: Vec<Vec<u8>>,
    endorsements: Option<Vec<u8>>,
}

fn parse_evidence(ev: &[u8]) -> Result<Parsed> {
    if ev.len() > MAX_SNP_EVIDENCE_LEN {
        return Err(EvidenceError::TooLarge { what: "SEV-SNP evidence", len: ev.len(), max: MAX_SNP_EVIDENCE_LEN });
    }
    let trimmed = ev.trim_ascii();
    let json_bytes: Option<Vec<u8>> = if trimmed.first() == Some(&b'{') {
        Some(trimmed.to_vec())
    } else if trimmed.starts_with(b"eyJ") {
        let text = std::str::from_utf8(trimmed).map_err(|e| EvidenceError::malformed("SEV-SNP evidence", e))?;
        Some(b64url(text, "SEV-SNP evidence")?)
    } else {
        None
    };
    if let Some(j) = json_bytes {
        let m: MaaSnpEvidence =
            serde_json::from_slice(&j).map_err(|e| EvidenceError::malformed("SEV-SNP evidence JSON", e))?;
        let report_bytes = b64url(&m.snp_report, "SnpReport")?;
        let report = SnpReport::parse(&report_bytes)?;
        let chain = match m.vcek_cert_chain {
            Some(c) => certs_from_bytes(&b64url(&c, "VcekCertChain")?)?,
            None => Vec::new(),
        };
        let endorsements = match m.endorsements {
            Some(e) => Some(b64url(&e, "Endorsements")?),
            None => None,
        };
        return Ok(Parsed { report, chain, endorsements });
    }
    let report = SnpReport::parse(ev)?;
    let rest = &ev[REPORT_LEN..];
    let chain = if rest.trim_ascii().is_empty() {
        Vec::new()
    } else if rest.first() == Some(&0x30) {
        // Concatenated DER certificates.
        split_der(rest)?
    } else {
        certs_from_bytes(rest)?
    };
    Ok(Parsed { report, chain, endorsements: None })
}

/// Split concatenated DER SEQUENCEs (bounded count).
fn split_der(mut b: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if out.len() >= super::pki::MAX_CHAIN_LEN {
            return Err(EvidenceError::TooLarge {
                what: "certificate chain",
                len: out.len() + 1,
                max: super::pki::MAX_CHAIN_LEN,
            });
        }
        let len = der_len(b).ok_or_else(|| EvidenceError::malformed("VCEK", "bad DER length"))?;
        let (one, rest) = b.split_at(len);
        out.push(one.to_vec());
        b = rest;
    }
    Ok(out)
}

fn der_len(b: &[u8]) -> Option<usize> {
    if b.first()? != &0x30 {
        return None;
    }
    let l0 = *b.get(1)? as usize;
    let (hdr, len) = if l0 < 0x80 {
        (2, l0)
    } else {
        let n = l0 & 0x7f;
        if n == 0 || n > 3 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (2 + n, len)
    };
    let total = hdr.checked_add(len)?;
    (total <= b.len()).then_some(total)
}

/// A VCEK/VLEK verified up to a pinned ARK (cached by DER hash).
#[derive(Debug)]
struct VerifiedLeaf {
    leaf: Arc<CertInfo>,
    ask: Arc<CertInfo>,
    ark: Arc<CertInfo>,
    product: Product,
    is_vlek: bool,
}

fn product_of(issuer_cn: &str) -> Product {
    if issuer_cn.contains("Milan") {
        Product::Milan
    } else if issuer_cn.contains("Genoa") {
        Product::Genoa
    } else if issuer_cn.contains("Turin") {
        Product::Turin
    } else {
        Product::Unknown
    }
}

fn verify_leaf(store: &CollateralStore, chain: &[Vec<u8>], report: &SnpReport) -> Result<Arc<VerifiedLeaf>> {
    let leaf_der: Vec<u8> = match chain.first() {
        Some(d) => d.clone(),
        None => store
            .amd_leaves
            .iter()
            .find(|c| c.extension(OID_HWID).map(hwid_bytes).as_deref() == Some(&report.chip_id[..]))
            .map(|c| c.der.clone())
            .ok_or_else(|| EvidenceError::missing(format!("VCEK for chip id {}", hex::encode(&report.chip_id[..8]))))?,
    };
    let mut key_input = leaf_der.clone();
    for c in chain.iter().skip(1) {
        key_input.extend_from_slice(c);
    }
    let key = sha256(&key_input);
    if let Some(v) = store.cache_get::<VerifiedLeaf>(&key) {
        return Ok(v);
    }
    let leaf = Arc::new(CertInfo::parse(&leaf_der, "VCEK")?);
    if leaf.key_kind != KeyKind::EcP384 {
        return Err(EvidenceError::CertificateParse { which: leaf.label(), reason: "VCEK key is not P-384".into() });
    }
    // Issuer: a store ASK/ASVK (verified at build), or one sent in the chain
    // that a pinned ARK signed.
    let mut ask: Option<Arc<CertInfo>> = store
        .amd_cas
        .get(&leaf.issuer_raw)
        .and_then(|cas| cas.iter().find(|ca| leaf.verify_issued_by(ca).is_ok()).cloned());
    if ask.is_none() {
        for der in chain.iter().skip(1) {
            let c = CertInfo::parse(der, "ASK")?;
            if c.subject_raw == leaf.issuer_raw {
                if leaf.verify_issued_by(&c).is_err() {
                    return Err(EvidenceError::CertificateSignature { which: leaf.label() });
                }
                ask = Some(Arc::new(c));
                break;
            }
        }
    }
    let issuer_known = store.amd_cas.contains_key(&leaf.issuer_raw);
    if ask.is_none() && issuer_known {
        // The named issuer is a trusted ASK/ASVK, but its key does not verify the VCEK.
        return Err(EvidenceError::CertificateSignature { which: leaf.label() });
    }
    let ask = ask.ok_or_else(|| EvidenceError::UntrustedChain {
        which: leaf.label(),
        reason: format!("no ASK/ASVK {:?} known or sent", leaf.issuer_cn),
    })?;
    let ark =
        store.anchors.amd_arks.iter().find(|ark| ask.verify_issued_by(ark).is_ok()).cloned().ok_or_else(|| {
            EvidenceError::UntrustedChain { which: ask.label(), reason: "not signed by a pinned AMD ARK".into() }
        })?;
    let v = Arc::new(VerifiedLeaf {
        product: product_of(&ask.subject_cn),
        is_vlek: ask.subject_cn.contains("VLEK"),
        leaf,
        ask,
        ark,
    });
    store.cache_put(key, v.clone());
    Ok(v)
}

/// hwID extension: raw 64 bytes, or an OCTET STRING wrapping them.
fn hwid_bytes(v: &[u8]) -> Vec<u8> {
    if v.len() == 66 && v[0] == 0x04 && v[1] == 64 {
        v[2..].to_vec()
    } else {
        v.to_vec()
    }
}

/// A small DER INTEGER extension value (AMD's *SPL extensions).
fn ext_u8(leaf: &CertInfo, oid: &str) -> Option<u8> {
    let v = leaf.extension(oid)?;
    if v.len() < 3 || v[0] != 0x02 || v[1] as usize != v.len() - 2 {
        return None;
    }
    let body = &v[2..];
    let mut n: u64 = 0;
    for b in body.iter().take(8) {
        n = (n << 8) | u64::from(*b);
    }
    u8::try_from(n).ok()
}

/// Verifier for `SevSnpVm`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnpVerifier;

impl EvidenceVerifier for SnpVerifier {
    fn attestation_type(&self) -> AttestationType {
        AttestationType::SevSnpVm
    }

    fn verify(&self, req: &EvidenceRequest, store: &CollateralStore, at: VerificationTime) -> Result<VerifiedEvidence> {
        let p = parse_evidence(&req.evidence)?;
        let r = &p.report;
        if r.signature_algo != 1 {
            return Err(EvidenceError::Unsupported {
                what: "SEV-SNP signature algorithm",
                value: r.signature_algo.to_string(),
            });
        }
        let v = verify_leaf(store, &p.chain, r)?;
        verify_report_signature(r, &v.leaf)?;
        for c in [&v.leaf, &v.ask, &v.ark] {
            c.check_time(at.unix())?;
        }
        // Signing key kind must match the chain (VCEK vs VLEK).
        let wants_vlek = r.signing_key() == 1;
        if wants_vlek != v.is_vlek {
            return Err(EvidenceError::EndorsementMismatch {
                reason: format!(
                    "report signing_key {} but certificate issued by {:?}",
                    r.signing_key(),
                    v.ask.subject_cn
                ),
            });
        }
        let product = match (r.cpuid_fam_id, v.product) {
            (Some(0x1A), _) => Product::Turin,
            (_, p) => p,
        };
        let tcb = Tcb::decode(r.reported_tcb, product);
        check_tcb(&v.leaf, &tcb)?;
        let mask_chip_id = r.flags & 0x2 != 0;
        if !v.is_vlek && !mask_chip_id {
            let hw =
                v.leaf.extension(OID_HWID).map(hwid_bytes).ok_or_else(|| EvidenceError::EndorsementMismatch {
                    reason: "VCEK has no hwID extension".into(),
                })?;
            if hw != r.chip_id {
                return Err(EvidenceError::EndorsementMismatch {
                    reason: "report chip_id differs from the VCEK hwID".into(),
                });
            }
        }
        let debug = r.is_debuggable();
        if debug && !req.options.allow_debug {
            return Err(EvidenceError::DebugNotAllowed { what: "SEV-SNP VM" });
        }
        let mut c = snp_claims(r, &tcb, product, v.is_vlek);
        if let Some(json) = &p.endorsements {
            // Verified after the report itself: the endorsement is judged
            // against a measurement we already trust.
            c.insert("x-ms-sevsnpvm-endorsements-present".into(), true.into());
            if let Some(uvm) = super::uvm::verify_endorsements(json, &r.measurement)? {
                c.insert("x-ms-sevsnpvm-uvm-endorsement".into(), uvm.claim());
            }
        }
        let runtime = match &req.runtime_data {
            Some(rd) => bind_runtime_data(rd, &r.report_data)?,
            None => None,
        };
        let init = match &req.init_time_data {
            Some(itd) => bind_init_time_data(itd, "SEV-SNP host_data", &r.host_data)?,
            None => None,
        };
        put_data_claims(&mut c, runtime, init);
        Ok(VerifiedEvidence {
            attestation_type: AttestationType::SevSnpVm,
            claims: c,
            tcb_status: None,
            advisory_ids: Vec::new(),
            is_debuggable: debug,
        })
    }
}

fn verify_report_signature(r: &SnpReport, leaf: &CertInfo) -> Result<()> {
    let sig = &r.raw[SIGNED_LEN..SIGNED_LEN + 144];
    let (r_le, s_le) = sig.split_at(72);
    // Components are 72-byte little-endian; P-384 values occupy the low 48 bytes.
    if r_le[48..].iter().chain(&s_le[48..]).any(|b| *b != 0) {
        return Err(EvidenceError::BadSignature { what: "SEV-SNP report" });
    }
    let mut fixed = [0u8; 96];
    for i in 0..48 {
        fixed[i] = r_le[47 - i];
        fixed[48 + i] = s_le[47 - i];
    }
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P384_SHA384_FIXED, &leaf.public_key)
        .verify(&r.raw[..SIGNED_LEN], &fixed)
        .map_err(|_| EvidenceError::BadSignature { what: "SEV-SNP report" })
}

fn check_tcb(leaf: &CertInfo, tcb: &Tcb) -> Result<()> {
    let checks = [
        ("bootloader", OID_BL, Some(tcb.bootloader)),
        ("TEE", OID_TEE, Some(tcb.tee)),
        ("SNP", OID_SNP, Some(tcb.snp)),
        ("microcode", OID_UCODE, Some(tcb.microcode)),
        ("FMC", OID_FMC, tcb.fmc),
    ];
    for (name, oid, have) in checks {
        let Some(have) = have else { continue };
        let want = ext_u8(leaf, oid).ok_or_else(|| EvidenceError::EndorsementMismatch {
            reason: format!("VCEK lacks the {name} SPL extension"),
        })?;
        if want != have {
            return Err(EvidenceError::EndorsementMismatch {
                reason: format!("reported {name} SVN {have} but the VCEK certifies {want}"),
            });
        }
    }
    Ok(())
}

fn snp_claims(r: &SnpReport, tcb: &Tcb, product: Product, vlek: bool) -> Claims {
    let h = |b: &[u8]| hex::encode(b);
    let mut c = Claims::new();
    c.insert("x-ms-attestation-type".into(), "sevsnpvm".into());
    c.insert("x-ms-sevsnpvm-authorkeydigest".into(), h(&r.author_key_digest).into());
    c.insert("x-ms-sevsnpvm-bootloader-svn".into(), tcb.bootloader.into());
    c.insert("x-ms-sevsnpvm-familyId".into(), hex::encode_upper(r.family_id).into());
    c.insert("x-ms-sevsnpvm-guestsvn".into(), r.guest_svn.into());
    c.insert("x-ms-sevsnpvm-hostdata".into(), h(&r.host_data).into());
    c.insert("x-ms-sevsnpvm-idkeydigest".into(), h(&r.id_key_digest).into());
    c.insert("x-ms-sevsnpvm-imageId".into(), hex::encode_upper(r.image_id).into());
    c.insert("x-ms-sevsnpvm-is-debuggable".into(), r.is_debuggable().into());
    c.insert("x-ms-sevsnpvm-launchmeasurement".into(), h(&r.measurement).into());
    c.insert("x-ms-sevsnpvm-microcode-svn".into(), tcb.microcode.into());
    c.insert("x-ms-sevsnpvm-migration-allowed".into(), (r.policy & (1 << 18) != 0).into());
    c.insert("x-ms-sevsnpvm-reportdata".into(), h(&r.report_data).into());
    c.insert("x-ms-sevsnpvm-reportid".into(), h(&r.report_id).into());
    c.insert("x-ms-sevsnpvm-smt-allowed".into(), (r.policy & (1 << 16) != 0).into());
    c.insert("x-ms-sevsnpvm-snpfw-svn".into(), tcb.snp.into());
    c.insert("x-ms-sevsnpvm-tee-svn".into(), tcb.tee.into());
    c.insert("x-ms-sevsnpvm-vmpl".into(), r.vmpl.into());
    // Not in MAA's list, useful to policies: raw TCB values and provenance.
    if let Some(fmc) = tcb.fmc {
        c.insert("x-ms-sevsnpvm-fmc-svn".into(), fmc.into());
    }
    c.insert("x-ms-sevsnpvm-report-version".into(), r.version.into());
    c.insert("x-ms-sevsnpvm-policy".into(), r.policy.into());
    // TCB_VERSION bytes in report order (bootloader first on Milan/Genoa).
    c.insert("x-ms-sevsnpvm-reported-tcb".into(), hex::encode(r.reported_tcb.to_le_bytes()).into());
    c.insert("x-ms-sevsnpvm-chipid".into(), h(&r.chip_id).into());
    c.insert("x-ms-sevsnpvm-product".into(), format!("{product:?}").into());
    c.insert("x-ms-sevsnpvm-signing-key".into(), json!(if vlek { "VLEK" } else { "VCEK" }));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_len_bounds() {
        assert_eq!(der_len(&[0x30, 0x00]), Some(2));
        assert_eq!(der_len(&[0x30, 0x82, 0xff, 0xff]), None);
        assert_eq!(der_len(&[0x30, 0x80]), None);
        assert_eq!(der_len(&[0x31, 0x00]), None);
    }

    #[test]
    fn tcb_layouts() {
        let raw = u64::from_le_bytes([3, 0, 0, 0, 0, 0, 8, 0x73]);
        let t = Tcb::decode(raw, Product::Milan);
        assert_eq!((t.bootloader, t.tee, t.snp, t.microcode), (3, 0, 8, 0x73));
        let t = Tcb::decode(u64::from_le_bytes([1, 2, 3, 4, 0, 0, 0, 5]), Product::Turin);
        assert_eq!((t.fmc, t.bootloader, t.tee, t.snp, t.microcode), (Some(1), 2, 3, 4, 5));
    }

    #[test]
    fn report_parse_rejects_short_and_bad_version() {
        assert!(matches!(SnpReport::parse(&[0u8; 10]), Err(EvidenceError::Truncated { .. })));
        let mut b = vec![0u8; REPORT_LEN];
        b[0] = 4;
        assert!(matches!(SnpReport::parse(&b), Err(EvidenceError::Unsupported { .. })));
    }
}
