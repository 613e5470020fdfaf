//! `Tpm`: TPM 2.0 quote verification.
//!
//! Evidence is JSON (base64 or base64url byte fields):
//! ```json
//! { "quote": "<TPMS_ATTEST>", "signature": "<TPMT_SIGNATURE>",
//!   "akPub": "<TPMT_PUBLIC>",            // optional if akCert is given
//!   "akCert": "<DER>", "akCertChain": ["<DER intermediate>", …],  // optional
//!   "pcrs": { "sha256": { "0": "<hex>", … } },
//!   "eventLog": "<TCG2 crypto-agile log>" }                       // optional
//! ```
//! Checks: the quote is a TPM2_Quote (magic `TPM_GENERATED`, type
//! `ATTEST_QUOTE`); its signature verifies with the AK (RSASSA / RSAPSS /
//! ECDSA-P256); the AK certificate, if given, matches the AK public area and
//! chains to a configured TPM root ([`super::TrustAnchors::with_tpm_root`]);
//! `extraData` equals the request nonce; the PCR values of the selected bank
//! hash to `pcrDigest`; a given event log replays to those PCR values.
//! Without an AK certificate the quote still verifies (the AK may be bound by
//! other evidence, e.g. an SNP/TDX report), and `aikValidated` is false.
//!
//! MAA's TPM/VBS protocol (JWS-wrapped `att_data`) is framing the API layer
//! owns; this module verifies the TPM structures inside it.

use std::collections::BTreeMap;

use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::json;

use super::error::{EvidenceError, Result};
use super::pki::{sha2_free::sha256, CertInfo, KeyKind};
use super::{
    AttestationType, Claims, CollateralStore, EvidenceRequest, EvidenceVerifier, VerificationTime, VerifiedEvidence,
};

/// Largest TPM evidence document accepted (event logs are the bulk).
pub const MAX_TPM_EVIDENCE_LEN: usize = 1024 * 1024;
/// Most events replayed from one log.
pub const MAX_EVENTS: usize = 10_000;

const TPM_GENERATED: u32 = 0xff54_4347;
const ST_ATTEST_QUOTE: u16 = 0x8018;
const ALG_RSA: u16 = 0x0001;
const ALG_SHA1: u16 = 0x0004;
const ALG_SHA256: u16 = 0x000b;
const ALG_SHA384: u16 = 0x000c;
const ALG_NULL: u16 = 0x0010;
const ALG_RSASSA: u16 = 0x0014;
const ALG_RSAPSS: u16 = 0x0016;
const ALG_ECDSA: u16 = 0x0018;
const ALG_ECC: u16 = 0x0023;
const ECC_NIST_P256: u16 = 0x0003;

/// A big-endian cursor over TPM wire structures; every read is bounds-checked.
struct Rd<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Rd<'a> {
    fn new(b: &'a [u8], what: &'static str) -> Self {
        Self { b, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(EvidenceError::Truncated { what: self.what, needed: n, got: self.b.len() });
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn tpm2b(&mut self) -> Result<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

/// A parsed TPMS_ATTEST of type quote.
#[derive(Debug, Clone)]
pub struct TpmQuote {
    pub qualified_signer: Vec<u8>,
    pub extra_data: Vec<u8>,
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
    pub firmware_version: u64,
    /// (hash alg, selected PCR indices ascending)
    pub selections: Vec<(u16, Vec<u32>)>,
    pub pcr_digest: Vec<u8>,
}

impl TpmQuote {
    /// Parse a TPMS_ATTEST holding a TPMS_QUOTE_INFO.
    pub fn parse(b: &[u8]) -> Result<Self> {
        let mut r = Rd::new(b, "TPMS_ATTEST");
        let magic = r.u32()?;
        if magic != TPM_GENERATED {
            return Err(EvidenceError::malformed("TPMS_ATTEST", format!("magic {magic:#x}")));
        }
        let ty = r.u16()?;
        if ty != ST_ATTEST_QUOTE {
            return Err(EvidenceError::Unsupported {
                what: "TPMS_ATTEST type (need quote 0x8018)",
                value: format!("{ty:#x}"),
            });
        }
        let qualified_signer = r.tpm2b()?.to_vec();
        let extra_data = r.tpm2b()?.to_vec();
        let clock = r.u64()?;
        let reset_count = r.u32()?;
        let restart_count = r.u32()?;
        let safe = r.u8()? != 0;
        let firmware_version = r.u64()?;
        let count = r.u32()?;
        if count > 16 {
            return Err(EvidenceError::malformed("TPML_PCR_SELECTION", format!("{count} banks")));
        }
        let mut selections = Vec::new();
        for _ in 0..count {
            let alg = r.u16()?;
            let size = r.u8()? as usize;
            if size > 8 {
                return Err(EvidenceError::malformed("TPMS_PCR_SELECTION", format!("sizeofSelect {size}")));
            }
            let bits = r.take(size)?;
            let mut idx = Vec::new();
            for (byte_i, byte) in bits.iter().enumerate() {
                for bit in 0..8 {
                    if byte & (1 << bit) != 0 {
                        idx.push((byte_i * 8 + bit) as u32);
                    }
                }
            }
            selections.push((alg, idx));
        }
        let pcr_digest = r.tpm2b()?.to_vec();
        Ok(Self {
            qualified_signer,
            extra_data,
            clock,
            reset_count,
            restart_count,
            safe,
            firmware_version,
            selections,
            pcr_digest,
        })
    }
}

/// A parsed TPMT_SIGNATURE.
#[derive(Debug, Clone)]
pub enum TpmSignature {
    Rsa { scheme: u16, hash: u16, sig: Vec<u8> },
    Ecdsa { hash: u16, r: Vec<u8>, s: Vec<u8> },
}

impl TpmSignature {
    pub fn parse(b: &[u8]) -> Result<Self> {
        let mut r = Rd::new(b, "TPMT_SIGNATURE");
        let alg = r.u16()?;
        match alg {
            ALG_RSASSA | ALG_RSAPSS => {
                let hash = r.u16()?;
                Ok(Self::Rsa { scheme: alg, hash, sig: r.tpm2b()?.to_vec() })
            }
            ALG_ECDSA => {
                let hash = r.u16()?;
                Ok(Self::Ecdsa { hash, r: r.tpm2b()?.to_vec(), s: r.tpm2b()?.to_vec() })
            }
            other => Err(EvidenceError::Unsupported { what: "TPM signature algorithm", value: format!("{other:#x}") }),
        }
    }

    fn hash(&self) -> u16 {
        match self {
            Self::Rsa { hash, .. } | Self::Ecdsa { hash, .. } => *hash,
        }
    }
}

/// The AK public key from a TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AkPublic {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    EcP256 { point: Vec<u8> },
}

impl AkPublic {
    /// Parse a TPMT_PUBLIC (RSA or ECC P-256).
    pub fn parse(b: &[u8]) -> Result<Self> {
        let mut r = Rd::new(b, "TPMT_PUBLIC");
        let ty = r.u16()?;
        let _name_alg = r.u16()?;
        let _attrs = r.u32()?;
        let _policy = r.tpm2b()?;
        let sym = r.u16()?;
        if sym != ALG_NULL {
            r.u16()?;
            r.u16()?;
        }
        let scheme = r.u16()?;
        if scheme != ALG_NULL {
            r.u16()?;
        }
        match ty {
            ALG_RSA => {
                let _bits = r.u16()?;
                let exp = r.u32()?;
                let n = r.tpm2b()?.to_vec();
                let exp = if exp == 0 { 65537 } else { exp };
                let e = exp.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
                Ok(Self::Rsa { n, e })
            }
            ALG_ECC => {
                let curve = r.u16()?;
                let kdf = r.u16()?;
                if kdf != ALG_NULL {
                    r.u16()?;
                }
                if curve != ECC_NIST_P256 {
                    return Err(EvidenceError::Unsupported { what: "TPM ECC curve", value: format!("{curve:#x}") });
                }
                let x = r.tpm2b()?;
                let y = r.tpm2b()?;
                if x.len() > 32 || y.len() > 32 {
                    return Err(EvidenceError::malformed("TPMT_PUBLIC", "ECC coordinate too long"));
                }
                let mut point = vec![0x04];
                point.extend(std::iter::repeat_n(0u8, 32 - x.len()));
                point.extend_from_slice(x);
                point.extend(std::iter::repeat_n(0u8, 32 - y.len()));
                point.extend_from_slice(y);
                Ok(Self::EcP256 { point })
            }
            other => Err(EvidenceError::Unsupported { what: "TPM key type", value: format!("{other:#x}") }),
        }
    }

    /// The key from a certificate (RSA modulus/exponent from RSAPublicKey DER).
    fn from_cert(c: &CertInfo) -> Result<Self> {
        match c.key_kind {
            KeyKind::EcP256 => Ok(Self::EcP256 { point: c.public_key.clone() }),
            KeyKind::Rsa => {
                let (n, e) = parse_rsa_public_key(&c.public_key)
                    .ok_or_else(|| EvidenceError::malformed("AK certificate", "bad RSA key"))?;
                Ok(Self::Rsa { n, e })
            }
            KeyKind::EcP384 => Err(EvidenceError::Unsupported { what: "AK certificate key", value: "P-384".into() }),
        }
    }

    fn verify(&self, sig: &TpmSignature, msg: &[u8]) -> bool {
        match (self, sig) {
            (Self::Rsa { n, e }, TpmSignature::Rsa { scheme, hash, sig }) => {
                let params: &signature::RsaParameters = match (*scheme, *hash) {
                    (ALG_RSASSA, ALG_SHA1) => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                    (ALG_RSASSA, ALG_SHA256) => &signature::RSA_PKCS1_2048_8192_SHA256,
                    (ALG_RSASSA, ALG_SHA384) => &signature::RSA_PKCS1_2048_8192_SHA384,
                    (ALG_RSAPSS, ALG_SHA256) => &signature::RSA_PSS_2048_8192_SHA256,
                    (ALG_RSAPSS, ALG_SHA384) => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => return false,
                };
                RsaPublicKeyComponents { n, e }.verify(params, msg, sig).is_ok()
            }
            (Self::EcP256 { point }, TpmSignature::Ecdsa { hash, r, s }) => {
                if *hash != ALG_SHA256 || r.len() > 32 || s.len() > 32 {
                    return false;
                }
                let mut fixed = [0u8; 64];
                fixed[32 - r.len()..32].copy_from_slice(r);
                fixed[64 - s.len()..].copy_from_slice(s);
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(msg, &fixed).is_ok()
            }
            _ => false,
        }
    }

    fn canonical(&self) -> Self {
        match self {
            Self::Rsa { n, e } => Self::Rsa { n: strip0(n).to_vec(), e: strip0(e).to_vec() },
            other => other.clone(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Rsa { n, .. } => strip0(n).to_vec(),
            Self::EcP256 { point } => point.clone(),
        }
    }
}

fn strip0(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[i..]
}

/// Minimal DER reader for RSAPublicKey ::= SEQUENCE { n INTEGER, e INTEGER }.
fn parse_rsa_public_key(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    fn tlv(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        if *b.first()? != tag {
            return None;
        }
        let l0 = *b.get(1)? as usize;
        let (hdr, len) = if l0 < 0x80 {
            (2, l0)
        } else {
            let n = l0 & 0x7f;
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | *b.get(2 + i)? as usize;
            }
            (2 + n, len)
        };
        let end = hdr.checked_add(len)?;
        Some((b.get(hdr..end)?, b.get(end..)?))
    }
    let (seq, _) = tlv(der, 0x30)?;
    let (n, rest) = tlv(seq, 0x02)?;
    let (e, _) = tlv(rest, 0x02)?;
    Some((strip0(n).to_vec(), strip0(e).to_vec()))
}

fn hash_alg(alg: u16) -> Option<&'static ring::digest::Algorithm> {
    match alg {
        ALG_SHA1 => Some(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
        ALG_SHA256 => Some(&ring::digest::SHA256),
        ALG_SHA384 => Some(&ring::digest::SHA384),
        _ => None,
    }
}

fn alg_name(alg: u16) -> &'static str {
    match alg {
        ALG_SHA1 => "sha1",
        ALG_SHA256 => "sha256",
        ALG_SHA384 => "sha384",
        _ => "unknown",
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TpmEvidenceJson {
    quote: String,
    signature: String,
    #[serde(default)]
    ak_pub: Option<String>,
    #[serde(default)]
    ak_cert: Option<String>,
    #[serde(default)]
    ak_cert_chain: Vec<String>,
    #[serde(default)]
    pcrs: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    event_log: Option<String>,
    /// AK as an RSA JWK (Azure vTPM: `HCLAkPub` from the HCL runtime data).
    #[serde(default)]
    ak_jwk: Option<AkJwk>,
    /// `signature` is a bare RSASSA-PKCS1-v1_5/SHA-256 signature, not a TPMT_SIGNATURE.
    #[serde(default)]
    raw_signature: bool,
}

#[derive(Deserialize)]
struct AkJwk {
    kty: String,
    n: String,
    e: String,
}

fn b64(s: &str, what: &'static str) -> Result<Vec<u8>> {
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

/// Verifier for `Tpm`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TpmVerifier;

impl EvidenceVerifier for TpmVerifier {
    fn attestation_type(&self) -> AttestationType {
        AttestationType::Tpm
    }

    fn verify(&self, req: &EvidenceRequest, store: &CollateralStore, at: VerificationTime) -> Result<VerifiedEvidence> {
        if req.evidence.len() > MAX_TPM_EVIDENCE_LEN {
            return Err(EvidenceError::TooLarge {
                what: "TPM evidence",
                len: req.evidence.len(),
                max: MAX_TPM_EVIDENCE_LEN,
            });
        }
        let j: TpmEvidenceJson =
            serde_json::from_slice(&req.evidence).map_err(|e| EvidenceError::malformed("TPM evidence JSON", e))?;
        let quote_bytes = b64(&j.quote, "quote")?;
        let quote = TpmQuote::parse(&quote_bytes)?;
        let sig_bytes = b64(&j.signature, "signature")?;
        let sig = if j.raw_signature {
            TpmSignature::Rsa { scheme: ALG_RSASSA, hash: ALG_SHA256, sig: sig_bytes }
        } else {
            TpmSignature::parse(&sig_bytes)?
        };

        // The AK: from its certificate (then chained), else the public area.
        let ak_pub = j.ak_pub.as_deref().map(|s| b64(s, "akPub")).transpose()?;
        let mut ak_pub = ak_pub.as_deref().map(AkPublic::parse).transpose()?;
        if let (None, Some(jwk)) = (&ak_pub, &j.ak_jwk) {
            if jwk.kty != "RSA" {
                return Err(EvidenceError::Unsupported { what: "AK JWK key type", value: jwk.kty.clone() });
            }
            ak_pub = Some(AkPublic::Rsa {
                n: strip0(&b64(&jwk.n, "akJwk.n")?).to_vec(),
                e: strip0(&b64(&jwk.e, "akJwk.e")?).to_vec(),
            });
        }
        let (ak, ak_validated, ak_hash) = match &j.ak_cert {
            Some(cert_b64) => {
                let cert = CertInfo::parse(&b64(cert_b64, "akCert")?, "AK certificate")?;
                let from_cert = AkPublic::from_cert(&cert)?;
                if let Some(p) = &ak_pub {
                    if p.canonical() != from_cert.canonical() {
                        return Err(EvidenceError::AkMismatch);
                    }
                }
                let chain = j
                    .ak_cert_chain
                    .iter()
                    .map(|c| b64(c, "akCertChain").and_then(|d| CertInfo::parse(&d, "AK chain certificate")))
                    .collect::<Result<Vec<_>>>()?;
                verify_ak_chain(&cert, &chain, store, at.unix())?;
                let h = sha256(&cert.der);
                (from_cert, true, h)
            }
            None => {
                let p =
                    ak_pub.ok_or_else(|| EvidenceError::malformed("TPM evidence", "none of akPub, akJwk, akCert"))?;
                let h = sha256(&p.bytes());
                (p, false, h)
            }
        };
        if !ak.verify(&sig, &quote_bytes) {
            return Err(EvidenceError::BadSignature { what: "TPM quote" });
        }
        if let Some(nonce) = &req.nonce {
            if &quote.extra_data != nonce {
                return Err(EvidenceError::NonceMismatch);
            }
        }

        // PCR values → pcrDigest (hashed with the signature's hash algorithm).
        let digest_alg = hash_alg(sig.hash())
            .ok_or(EvidenceError::Unsupported { what: "TPM quote hash", value: format!("{:#x}", sig.hash()) })?;
        let mut concat = Vec::new();
        let mut pcr_claims = Vec::new();
        let mut bank_values: BTreeMap<(u16, u32), Vec<u8>> = BTreeMap::new();
        for (alg, idx) in &quote.selections {
            let name = alg_name(*alg);
            let bank = j.pcrs.get(name).ok_or_else(|| {
                EvidenceError::malformed("TPM evidence", format!("no {name} PCR values for the quoted selection"))
            })?;
            let size = hash_alg(*alg).map(|a| a.output_len()).unwrap_or(0);
            for i in idx {
                let hexv = bank
                    .get(&i.to_string())
                    .ok_or_else(|| EvidenceError::malformed("TPM evidence", format!("PCR {i} ({name}) missing")))?;
                let v = hex::decode(hexv).map_err(|e| EvidenceError::malformed("PCR value", e))?;
                if v.len() != size {
                    return Err(EvidenceError::malformed("PCR value", format!("PCR {i} has {} bytes", v.len())));
                }
                concat.extend_from_slice(&v);
                pcr_claims.push(json!({"Index": i, "Digests": { name.to_uppercase(): hex::encode(&v) }}));
                bank_values.insert((*alg, *i), v);
            }
        }
        if ring::digest::digest(digest_alg, &concat).as_ref() != quote.pcr_digest.as_slice() {
            return Err(EvidenceError::PcrDigestMismatch);
        }

        let mut c = Claims::new();
        if let Some(log) = &j.event_log {
            let log = b64(log, "eventLog")?;
            let events = replay_event_log(&log, &bank_values)?;
            c.insert("events".into(), events.into());
        }
        c.insert("x-ms-attestation-type".into(), "tpm".into());
        c.insert("tpmVersion".into(), "2.0".into());
        c.insert("aikValidated".into(), ak_validated.into());
        c.insert("aikPubHash".into(), base64::engine::general_purpose::STANDARD.encode(ak_hash).into());
        c.insert("PCRs".into(), pcr_claims.into());
        c.insert("x-ms-tpm-nonce".into(), hex::encode(&quote.extra_data).into());
        c.insert("x-ms-tpm-firmware-version".into(), format!("{:016x}", quote.firmware_version).into());
        c.insert("x-ms-tpm-reset-count".into(), quote.reset_count.into());
        c.insert("x-ms-tpm-restart-count".into(), quote.restart_count.into());
        Ok(VerifiedEvidence {
            attestation_type: AttestationType::Tpm,
            claims: c,
            tcb_status: None,
            advisory_ids: Vec::new(),
            is_debuggable: false,
        })
    }
}

fn verify_ak_chain(leaf: &CertInfo, chain: &[CertInfo], store: &CollateralStore, at: i64) -> Result<()> {
    leaf.check_time(at)?;
    let mut cur = leaf.clone();
    for _ in 0..super::pki::MAX_CHAIN_LEN {
        if let Some(root) = store.anchors.tpm_roots.iter().find(|r| cur.verify_issued_by(r).is_ok()) {
            return root.check_time(at);
        }
        let next =
            chain.iter().find(|c| c.subject_raw == cur.issuer_raw && cur.verify_issued_by(c).is_ok()).cloned().or_else(
                || {
                    store
                        .tpm_cas
                        .get(&cur.issuer_raw)
                        .and_then(|cas| cas.iter().find(|c| cur.verify_issued_by(c).is_ok()))
                        .map(|c| (**c).clone())
                },
            );
        match next {
            Some(n) => {
                n.check_time(at)?;
                cur = n;
            }
            None => {
                return Err(EvidenceError::UntrustedChain {
                    which: leaf.label(),
                    reason: format!("no configured TPM root or CA issued {:?}", cur.issuer_cn),
                })
            }
        }
    }
    Err(EvidenceError::UntrustedChain { which: leaf.label(), reason: "chain too long".into() })
}

/// Replay a TCG2 crypto-agile event log; every replayed PCR that was quoted
/// must equal its quoted value. Returns a summary of the events.
fn replay_event_log(log: &[u8], quoted: &BTreeMap<(u16, u32), Vec<u8>>) -> Result<Vec<serde_json::Value>> {
    let mut r = Rd::new(log, "TCG event log");
    // Header: TCG_PCR_EVENT (SHA-1 format) holding the Spec ID event.
    let _pcr = r.u32le()?;
    let _ty = r.u32le()?;
    r.take(20)?;
    let hdr_len = r.u32le()? as usize;
    let spec = r.take(hdr_len)?;
    let algs = parse_spec_id(spec)?;
    let mut pcrs: BTreeMap<(u16, u32), Vec<u8>> = BTreeMap::new();
    let mut events = Vec::new();
    while !r.b.is_empty() {
        if events.len() >= MAX_EVENTS {
            return Err(EvidenceError::TooLarge { what: "event log (events)", len: events.len() + 1, max: MAX_EVENTS });
        }
        let pcr = r.u32le()?;
        let ty = r.u32le()?;
        let n = r.u32le()? as usize;
        if n > algs.len() {
            return Err(EvidenceError::malformed("TCG event log", "more digests than banks"));
        }
        let mut digests = Vec::new();
        for _ in 0..n {
            let alg = r.u16le()?;
            let size = algs
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, s)| *s)
                .ok_or_else(|| EvidenceError::malformed("TCG event log", format!("unknown alg {alg:#x}")))?;
            digests.push((alg, r.take(size)?.to_vec()));
        }
        let data_len = r.u32le()? as usize;
        let data = r.take(data_len)?;
        const EV_NO_ACTION: u32 = 0x3;
        if ty == EV_NO_ACTION {
            // StartupLocality sets PCR0's initial value to the locality.
            if pcr == 0 && data.starts_with(b"StartupLocality\0") {
                if let Some(loc) = data.get(16) {
                    for (alg, size) in &algs {
                        let mut init = vec![0u8; *size];
                        if let Some(last) = init.last_mut() {
                            *last = *loc;
                        }
                        pcrs.insert((*alg, 0), init);
                    }
                }
            }
            continue;
        }
        for (alg, d) in &digests {
            let Some(h) = hash_alg(*alg) else { continue };
            let cur = pcrs.entry((*alg, pcr)).or_insert_with(|| vec![0u8; h.output_len()]);
            let mut ctx = ring::digest::Context::new(h);
            ctx.update(cur);
            ctx.update(d);
            *cur = ctx.finish().as_ref().to_vec();
        }
        events.push(json!({
            "pcr": pcr,
            "type": ty,
            "digests": digests.iter().map(|(a, d)| (alg_name(*a).to_string(), serde_json::Value::from(hex::encode(d)))).collect::<serde_json::Map<_, _>>(),
        }));
    }
    for (key, value) in &pcrs {
        if let Some(q) = quoted.get(key) {
            if q != value {
                return Err(EvidenceError::EventLogMismatch { pcr: key.1 });
            }
        }
    }
    Ok(events)
}

fn parse_spec_id(spec: &[u8]) -> Result<Vec<(u16, usize)>> {
    let mut r = Rd::new(spec, "Spec ID event");
    let sig = r.take(16)?;
    if sig != b"Spec ID Event03\0" {
        return Err(EvidenceError::Unsupported {
            what: "event log format (need TCG2 crypto-agile)",
            value: String::from_utf8_lossy(sig).into_owned(),
        });
    }
    r.take(4 + 1 + 1 + 1 + 1)?; // platformClass, version minor/major, errata, uintnSize
    let n = r.u32le()?;
    if n > 8 {
        return Err(EvidenceError::malformed("Spec ID event", format!("{n} algorithms")));
    }
    (0..n).map(|_| Ok((r.u16le()?, r.u16le()? as usize))).collect()
}

impl Rd<'_> {
    fn u32le(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u16le(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
}
