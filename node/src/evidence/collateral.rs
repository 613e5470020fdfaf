//! Trust anchors and the verified-collateral cache.
//!
//! The control plane replicates collateral as opaque named blobs (Intel PCS /
//! PCCS TCB info, QE identity, CRLs, issuer chains; AMD ASK/ARK/VCEK
//! certificates; TPM CA certificates). [`CollateralStore::from_blobs`] turns one
//! *version* of that set into verified, indexed structures: every signature on
//! the collateral is checked once here, so a request only checks validity
//! windows (cheap comparisons against the injected time) and the signatures
//! that are unique to the evidence itself. The node keeps the store in an
//! `Arc` and swaps it when the replicated collateral version changes.
//!
//! Blobs are recognised by content, not by name (the name only labels errors):
//! - JSON `{"tcbInfo":{…},"signature":"…"}` — Intel TCB info (SGX v2/v3, TDX v3);
//! - JSON `{"enclaveIdentity":{…},"signature":"…"}` — QE / TD_QE identity;
//! - JSON QuoteCollateralV3 (dcap-qvl's bundle) — split into the above + CRLs + chains;
//! - PEM or DER certificates — Intel CAs (TCB signing, PCK Platform/Processor
//!   CA), AMD ASK/ASVK/VCEK/VLEK, TPM intermediates;
//! - PEM / DER / hex CRLs — Intel root CA CRL and PCK CRLs.
//!
//! A blob that fails its checks does not poison the store: it is listed in
//! [`CollateralStore::rejected`] (an import command should refuse such a set),
//! and evidence needing it fails with [`EvidenceError::CollateralMissing`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dcap_qvl::{QeTcbLevel, TcbInfo};
use serde::Deserialize;

use super::error::{EvidenceError, Result};
use super::pki::{certs_from_bytes, parse_rfc3339, CertInfo, CrlInfo, KeyKind};

const INTEL_ROOT_DER: &[u8] = include_bytes!("roots/intel_sgx_root_ca.der");
const AMD_ROOT_PEMS: &[(&str, &[u8])] = &[
    ("AMD ARK Milan", include_bytes!("roots/amd_ark_milan.pem")),
    ("AMD ARK Genoa", include_bytes!("roots/amd_ark_genoa.pem")),
    ("AMD ARK Turin", include_bytes!("roots/amd_ark_turin.pem")),
];
const AMD_INTERMEDIATE_PEMS: &[(&str, &[u8])] = &[
    ("AMD ASK Milan", include_bytes!("roots/amd_ask_milan.pem")),
    ("AMD ASK Genoa", include_bytes!("roots/amd_ask_genoa.pem")),
    ("AMD ASK Turin", include_bytes!("roots/amd_ask_turin.pem")),
    ("AMD ASVK Milan", include_bytes!("roots/amd_asvk_ark_milan_vlek.pem")),
    ("AMD ASVK Genoa", include_bytes!("roots/amd_asvk_ark_genoa_vlek.pem")),
    ("AMD ASVK Turin", include_bytes!("roots/amd_asvk_ark_turin_vlek.pem")),
];

/// Largest collateral blob accepted (PCK CRLs of big platforms are ~100 KiB).
pub const MAX_BLOB_LEN: usize = 4 * 1024 * 1024;
/// Bound of the per-store cache of certificates verified at request time.
const CERT_CACHE_CAP: usize = 4096;

/// The roots of trust: pinned by *key*. Certificates only carry the validity
/// window we enforce for the anchor itself.
#[derive(Debug, Clone)]
pub struct TrustAnchors {
    pub(crate) intel_root: Arc<CertInfo>,
    pub(crate) amd_arks: Vec<Arc<CertInfo>>,
    /// Default ASK/ASVK certificates (verified against the ARKs when a store is built).
    pub(crate) amd_default_cas: Vec<Vec<u8>>,
    pub(crate) tpm_roots: Vec<Arc<CertInfo>>,
}

impl TrustAnchors {
    /// The public vendor roots embedded in the binary: Intel SGX Root CA, AMD
    /// ARK Milan/Genoa/Turin (plus their ASK/ASVK as default intermediates).
    /// No TPM root is trusted by default; add one with [`Self::with_tpm_root`].
    pub fn builtin() -> Self {
        // The embedded files are fixed test-covered inputs; a parse failure
        // here would be a build defect, caught by the unit test below.
        let intel_root = CertInfo::parse(INTEL_ROOT_DER, "Intel SGX Root CA")
            .map(Arc::new)
            .unwrap_or_else(|e| panic!("embedded Intel root invalid: {e}"));
        let amd_arks = AMD_ROOT_PEMS
            .iter()
            .flat_map(|(n, pem)| {
                certs_from_bytes(pem)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(move |der| CertInfo::parse(&der, n).ok())
            })
            .map(Arc::new)
            .collect();
        let amd_default_cas =
            AMD_INTERMEDIATE_PEMS.iter().flat_map(|(_, pem)| certs_from_bytes(pem).unwrap_or_default()).collect();
        Self { intel_root, amd_arks, amd_default_cas, tpm_roots: Vec::new() }
    }

    /// Replace the Intel root (DER or PEM). Only its key and validity matter.
    pub fn with_intel_root(mut self, cert: &[u8]) -> Result<Self> {
        let der = certs_from_bytes(cert)?
            .into_iter()
            .next()
            .ok_or_else(|| EvidenceError::malformed("Intel root", "no certificate"))?;
        self.intel_root = Arc::new(CertInfo::parse(&der, "Intel root")?);
        Ok(self)
    }

    /// Add a TPM AK/EK root (e.g. a vendor or cloud vTPM root), DER or PEM.
    pub fn with_tpm_root(mut self, cert: &[u8]) -> Result<Self> {
        for der in certs_from_bytes(cert)? {
            self.tpm_roots.push(Arc::new(CertInfo::parse(&der, "TPM root")?));
        }
        Ok(self)
    }

    /// Drop the built-in AMD ARKs and ASK/ASVKs (to pin a custom set).
    pub fn without_amd_defaults(mut self) -> Self {
        self.amd_arks.clear();
        self.amd_default_cas.clear();
        self
    }

    /// Add an AMD ARK (DER or PEM).
    pub fn with_amd_ark(mut self, cert: &[u8]) -> Result<Self> {
        for der in certs_from_bytes(cert)? {
            self.amd_arks.push(Arc::new(CertInfo::parse(&der, "AMD ARK")?));
        }
        Ok(self)
    }

    /// True if `cert` carries the pinned Intel root key (any encoding of the root).
    pub(crate) fn is_intel_root_key(&self, cert: &CertInfo) -> bool {
        cert.key_kind == self.intel_root.key_kind && cert.public_key == self.intel_root.public_key
    }
}

/// Which TEE a TCB info / QE identity belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TeeKind {
    Sgx,
    Tdx,
}

/// A TCB info whose signature chain to the Intel root was verified.
#[derive(Debug)]
pub struct VerifiedTcbInfo {
    pub info: TcbInfo,
    pub tee: TeeKind,
    pub fmspc: [u8; 6],
    pub issue_date: i64,
    pub next_update: i64,
    pub signer: Arc<CertInfo>,
    pub body_sha256: [u8; 32],
}

/// A verified QE identity (`QE` for SGX, `TD_QE` for TDX).
#[derive(Debug)]
pub struct VerifiedQeIdentity {
    pub id: String,
    pub version: u32,
    pub issue_date: i64,
    pub next_update: i64,
    pub tcb_evaluation_data_number: u32,
    pub miscselect: [u8; 4],
    pub miscselect_mask: [u8; 4],
    pub attributes: [u8; 16],
    pub attributes_mask: [u8; 16],
    pub mrsigner: [u8; 32],
    pub isvprodid: u16,
    pub tcb_levels: Vec<QeTcbLevel>,
    pub signer: Arc<CertInfo>,
    pub body_sha256: [u8; 32],
}

/// One named blob that was refused while building a store.
#[derive(Debug, Clone)]
pub struct RejectedBlob {
    pub name: String,
    pub error: EvidenceError,
}

/// Verified collateral of one version, plus a bounded cache of evidence
/// certificates (PCK leaves, VCEKs) verified at request time.
#[derive(Debug)]
pub struct CollateralStore {
    version: u64,
    pub(crate) anchors: TrustAnchors,
    tcb_infos: HashMap<(TeeKind, [u8; 6]), Vec<Arc<VerifiedTcbInfo>>>,
    qe_identities: HashMap<String, Vec<Arc<VerifiedQeIdentity>>>,
    crls: HashMap<Vec<u8>, Vec<Arc<CrlInfo>>>,
    /// Intel CAs verified against the root key, by subject.
    intel_cas: HashMap<Vec<u8>, Vec<Arc<CertInfo>>>,
    /// AMD ASK/ASVK verified against an ARK, by subject.
    pub(crate) amd_cas: HashMap<Vec<u8>, Vec<Arc<CertInfo>>>,
    /// AMD VCEK/VLEK imported as collateral (for raw reports sent without one).
    pub(crate) amd_leaves: Vec<Arc<CertInfo>>,
    /// TPM intermediates verified to a TPM root, by subject.
    pub(crate) tpm_cas: HashMap<Vec<u8>, Vec<Arc<CertInfo>>>,
    rejected: Vec<RejectedBlob>,
    cache: Mutex<HashMap<[u8; 32], Arc<dyn std::any::Any + Send + Sync>>>,
    /// Seconds past `nextUpdate` that collateral is still accepted when
    /// nothing current is stored (see [`CollateralStore::with_grace`]).
    grace_s: i64,
}

// --- raw JSON helpers -------------------------------------------------------

/// Return the exact text of the top-level object member `key` of `json`.
/// Intel signs the bytes of the inner object as sent, so it must not be
/// re-serialised.
fn raw_member<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("\"{key}\"");
    let start = json.find(&needle)? + needle.len();
    let rest = json.get(start..)?;
    let colon = rest.find(':')?;
    let rest = rest.get(colon + 1..)?;
    let off = rest.len() - rest.trim_start().len();
    let body = rest.get(off..)?;
    if !body.starts_with('{') {
        return None;
    }
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for (i, c) in body.char_indices() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => depth += 1,
            '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return body.get(..=i);
                }
            }
            _ => {}
        }
    }
    None
}

fn hex_fixed<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    let v =
        hex::decode(s).map_err(|e| EvidenceError::CollateralInvalid { what: what.into(), reason: e.to_string() })?;
    v.try_into()
        .map_err(|_| EvidenceError::CollateralInvalid { what: what.into(), reason: format!("expected {N} bytes") })
}

/// Convert a v2 SGX TCB info (`sgxtcbcompNNsvn` members) to the v3 shape that
/// dcap-qvl's data model reads; v3 input is returned unchanged.
fn normalise_tcb_info(mut v: serde_json::Value) -> serde_json::Value {
    let is_v2 = v.get("version").and_then(|x| x.as_u64()) == Some(2);
    if let Some(obj) = v.as_object_mut() {
        obj.entry("id").or_insert_with(|| "SGX".into());
    }
    if !is_v2 {
        return v;
    }
    if let Some(levels) = v.get_mut("tcbLevels").and_then(|l| l.as_array_mut()) {
        for level in levels {
            if let Some(tcb) = level.get_mut("tcb").and_then(|t| t.as_object_mut()) {
                let comps: Vec<serde_json::Value> = (1..=16)
                    .map(|i| {
                        let svn = tcb.get(&format!("sgxtcbcomp{i:02}svn")).cloned().unwrap_or(0.into());
                        serde_json::json!({ "svn": svn })
                    })
                    .collect();
                tcb.insert("sgxtcbcomponents".into(), comps.into());
            }
        }
    }
    v
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QeIdentityJson {
    id: String,
    version: u32,
    issue_date: String,
    next_update: String,
    #[serde(default)]
    tcb_evaluation_data_number: u32,
    miscselect: String,
    miscselect_mask: String,
    attributes: String,
    attributes_mask: String,
    mrsigner: String,
    isvprodid: u16,
    tcb_levels: Vec<QeTcbLevel>,
}

#[derive(Deserialize)]
struct QvlBundle {
    #[serde(default)]
    pck_crl_issuer_chain: String,
    #[serde(default)]
    root_ca_crl: String,
    #[serde(default)]
    pck_crl: String,
    #[serde(default)]
    tcb_info_issuer_chain: String,
    tcb_info: String,
    tcb_info_signature: String,
    #[serde(default)]
    qe_identity_issuer_chain: String,
    qe_identity: String,
    qe_identity_signature: String,
}

enum Item {
    Cert(Vec<u8>),
    Crl(Vec<u8>),
    /// (inner object text, signature hex)
    TcbInfo(String, String),
    QeIdentity(String, String),
}

fn classify(name: &str, bytes: &[u8], out: &mut Vec<(String, Item)>) -> Result<()> {
    let inv = |reason: String| EvidenceError::CollateralInvalid { what: name.to_string(), reason };
    if bytes.len() > MAX_BLOB_LEN {
        return Err(EvidenceError::TooLarge { what: "collateral blob", len: bytes.len(), max: MAX_BLOB_LEN });
    }
    let trimmed = bytes.trim_ascii();
    if trimmed.first() == Some(&b'{') {
        let text = std::str::from_utf8(trimmed).map_err(|e| inv(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| inv(e.to_string()))?;
        let sig = || {
            v.get("signature")
                .and_then(|s| s.as_str())
                .map(str::to_owned)
                .ok_or_else(|| inv("no signature member".into()))
        };
        if v.get("tcbInfo").is_some() {
            let raw = raw_member(text, "tcbInfo").ok_or_else(|| inv("bad tcbInfo".into()))?;
            out.push((name.into(), Item::TcbInfo(raw.into(), sig()?)));
        } else if v.get("enclaveIdentity").is_some() {
            let raw = raw_member(text, "enclaveIdentity").ok_or_else(|| inv("bad enclaveIdentity".into()))?;
            out.push((name.into(), Item::QeIdentity(raw.into(), sig()?)));
        } else if v.get("tcb_info").is_some() {
            let b: QvlBundle = serde_json::from_value(v).map_err(|e| inv(e.to_string()))?;
            for chain in [&b.pck_crl_issuer_chain, &b.tcb_info_issuer_chain, &b.qe_identity_issuer_chain] {
                for der in certs_from_bytes(chain.as_bytes())? {
                    out.push((format!("{name}/issuer-chain"), Item::Cert(der)));
                }
            }
            for (what, crl) in [("root_ca_crl", &b.root_ca_crl), ("pck_crl", &b.pck_crl)] {
                if !crl.is_empty() {
                    let der = hex::decode(crl).map_err(|e| inv(format!("{what}: {e}")))?;
                    out.push((format!("{name}/{what}"), Item::Crl(der)));
                }
            }
            out.push((format!("{name}/tcb_info"), Item::TcbInfo(b.tcb_info, b.tcb_info_signature)));
            out.push((format!("{name}/qe_identity"), Item::QeIdentity(b.qe_identity, b.qe_identity_signature)));
        } else {
            return Err(inv("unrecognised JSON collateral".into()));
        }
        return Ok(());
    }
    if trimmed.starts_with(b"-----BEGIN") {
        for item in x509_parser::pem::Pem::iter_from_buffer(trimmed) {
            let item = item.map_err(|e| inv(e.to_string()))?;
            match item.label.as_str() {
                "CERTIFICATE" => out.push((name.into(), Item::Cert(item.contents))),
                "X509 CRL" => out.push((name.into(), Item::Crl(item.contents))),
                _ => {}
            }
        }
        return Ok(());
    }
    if trimmed.first() == Some(&0x30) {
        // A certificate's TBS starts with an explicit [0] version tag (0xA0);
        // a CRL's TBS starts with an INTEGER version or the signature alg.
        let is_cert = x509_parser::parse_x509_certificate(trimmed).is_ok();
        out.push((name.into(), if is_cert { Item::Cert(trimmed.to_vec()) } else { Item::Crl(trimmed.to_vec()) }));
        return Ok(());
    }
    // Hex text of DER (QuoteCollateralV3 style). The decoded blob is half the
    // size and must start with a DER SEQUENCE, so this recursion ends (an empty
    // blob once recursed forever: found by the evidence_collateral fuzz target).
    if let Ok(text) = std::str::from_utf8(trimmed) {
        if let Ok(der) = hex::decode(text) {
            if der.first() == Some(&0x30) {
                return classify(name, &der, out);
            }
        }
    }
    Err(inv("unrecognised collateral format".into()))
}

/// Builder state shared by the phases of [`CollateralStore::from_blobs`].
impl CollateralStore {
    /// Build a store from named collateral blobs (one replicated version).
    pub fn from_blobs<N, B>(anchors: TrustAnchors, version: u64, blobs: impl IntoIterator<Item = (N, B)>) -> Self
    where
        N: AsRef<str>,
        B: AsRef<[u8]>,
    {
        let mut items = Vec::new();
        let mut rejected = Vec::new();
        for (name, bytes) in blobs {
            if let Err(error) = classify(name.as_ref(), bytes.as_ref(), &mut items) {
                rejected.push(RejectedBlob { name: name.as_ref().to_string(), error });
            }
        }
        for der in &anchors.amd_default_cas {
            items.push(("builtin AMD intermediate".into(), Item::Cert(der.clone())));
        }

        let mut store = Self {
            version,
            anchors,
            tcb_infos: HashMap::new(),
            qe_identities: HashMap::new(),
            crls: HashMap::new(),
            intel_cas: HashMap::new(),
            amd_cas: HashMap::new(),
            amd_leaves: Vec::new(),
            tpm_cas: HashMap::new(),
            rejected,
            cache: Mutex::new(HashMap::new()),
            grace_s: 0,
        };

        // Phase 1: certificates. CAs first (issued by a root), then leaves.
        let mut certs = Vec::new();
        for (name, item) in &items {
            if let Item::Cert(der) = item {
                match CertInfo::parse(der, name) {
                    Ok(c) => certs.push((name.clone(), Arc::new(c))),
                    Err(error) => store.reject(name, error),
                }
            }
        }
        let mut leaves = Vec::new();
        for (name, cert) in certs {
            if store.anchors.is_intel_root_key(&cert) {
                continue; // another encoding of the pinned root
            }
            if store.anchors.amd_arks.iter().any(|a| a.public_key == cert.public_key)
                || store.anchors.tpm_roots.iter().any(|a| a.public_key == cert.public_key)
            {
                continue;
            }
            let root = store.anchors.intel_root.clone();
            if cert.issuer_raw == root.subject_raw {
                if cert.is_signed_by(root.key_kind, &root.public_key) {
                    store.intel_cas.entry(cert.subject_raw.clone()).or_default().push(cert);
                } else {
                    store.reject(&name, EvidenceError::CertificateSignature { which: cert.label() });
                }
                continue;
            }
            if let Some(_ark) = store.anchors.amd_arks.iter().find(|a| cert.verify_issued_by(a).is_ok()) {
                store.amd_cas.entry(cert.subject_raw.clone()).or_default().push(cert);
                continue;
            }
            if store.anchors.tpm_roots.iter().any(|a| cert.verify_issued_by(a).is_ok()) {
                store.tpm_cas.entry(cert.subject_raw.clone()).or_default().push(cert);
                continue;
            }
            leaves.push((name, cert));
        }
        for (name, cert) in leaves {
            let amd = store
                .amd_cas
                .get(&cert.issuer_raw)
                .map(|cas| cas.iter().any(|ca| cert.verify_issued_by(ca).is_ok()))
                .unwrap_or(false);
            if amd {
                store.amd_leaves.push(cert);
            } else if cert.issuer_raw != cert.subject_raw {
                store.reject(
                    &name,
                    EvidenceError::UntrustedChain {
                        which: cert.label(),
                        reason: "issuer is not a configured root or verified CA".into(),
                    },
                );
            }
        }

        // Phase 2: CRLs, signed by the root or by a verified Intel CA.
        for (name, item) in &items {
            if let Item::Crl(der) = item {
                let issuers: Vec<&CertInfo> = std::iter::once(store.anchors.intel_root.as_ref())
                    .chain(store.intel_cas.values().flatten().map(|c| c.as_ref()))
                    .collect();
                match CrlInfo::parse_and_verify(der, issuers, name) {
                    Ok(crl) => {
                        let list = store.crls.entry(crl.issuer_raw.clone()).or_default();
                        if !list.iter().any(|c| c.sha256 == crl.sha256) {
                            list.push(Arc::new(crl));
                        }
                    }
                    Err(e) => store.reject(name, e),
                }
            }
        }

        // Phase 3: TCB infos and QE identities, signed by an Intel CA.
        for (name, item) in &items {
            let res = match item {
                Item::TcbInfo(body, sig) => store.add_tcb_info(name, body, sig),
                Item::QeIdentity(body, sig) => store.add_qe_identity(name, body, sig),
                _ => Ok(()),
            };
            if let Err(e) = res {
                store.reject(name, e);
            }
        }
        store
    }

    fn reject(&mut self, name: &str, error: EvidenceError) {
        self.rejected.push(RejectedBlob { name: name.to_string(), error });
    }

    /// Find the Intel CA that signed `body` with raw `r||s` signature `sig_hex`.
    fn intel_signer(&self, name: &str, body: &str, sig_hex: &str) -> Result<Arc<CertInfo>> {
        let sig = hex::decode(sig_hex.trim())
            .map_err(|e| EvidenceError::CollateralInvalid { what: name.into(), reason: format!("signature: {e}") })?;
        self.intel_cas
            .values()
            .flatten()
            .find(|ca| {
                ca.key_kind == KeyKind::EcP256 && super::pki::verify_p256_raw(&ca.public_key, body.as_bytes(), &sig)
            })
            .cloned()
            .ok_or_else(|| EvidenceError::CollateralInvalid {
                what: name.into(),
                reason: "signature does not verify with any Intel CA issued by the root".into(),
            })
    }

    fn add_tcb_info(&mut self, name: &str, body: &str, sig: &str) -> Result<()> {
        let signer = self.intel_signer(name, body, sig)?;
        let inv = |reason: String| EvidenceError::CollateralInvalid { what: name.into(), reason };
        let v: serde_json::Value = serde_json::from_str(body).map_err(|e| inv(e.to_string()))?;
        let mut info: TcbInfo = serde_json::from_value(normalise_tcb_info(v)).map_err(|e| inv(e.to_string()))?;
        let tee = match info.id.as_str() {
            "SGX" => TeeKind::Sgx,
            "TDX" => TeeKind::Tdx,
            other => return Err(inv(format!("unknown TCB info id {other}"))),
        };
        let is_tdx = tee == TeeKind::Tdx;
        // Intel's QVL orders levels highest first regardless of the JSON order.
        info.tcb_levels.sort_by(|a, b| {
            b.tcb.sgx_components.cmp(&a.tcb.sgx_components).then_with(|| b.tcb.pce_svn.cmp(&a.tcb.pce_svn)).then_with(
                || {
                    if is_tdx {
                        b.tcb.tdx_components.cmp(&a.tcb.tdx_components)
                    } else {
                        std::cmp::Ordering::Equal
                    }
                },
            )
        });
        let fmspc = hex_fixed::<6>(&info.fmspc, name)?;
        let issue_date = parse_rfc3339(&info.issue_date).ok_or_else(|| inv("bad issueDate".into()))?;
        let next_update = parse_rfc3339(&info.next_update).ok_or_else(|| inv("bad nextUpdate".into()))?;
        let v = Arc::new(VerifiedTcbInfo {
            info,
            tee,
            fmspc,
            issue_date,
            next_update,
            signer,
            body_sha256: super::pki::sha2_free::sha256(body.as_bytes()),
        });
        let list = self.tcb_infos.entry((tee, fmspc)).or_default();
        if !list.iter().any(|x| x.body_sha256 == v.body_sha256) {
            list.push(v);
        }
        Ok(())
    }

    fn add_qe_identity(&mut self, name: &str, body: &str, sig: &str) -> Result<()> {
        let signer = self.intel_signer(name, body, sig)?;
        let inv = |reason: String| EvidenceError::CollateralInvalid { what: name.into(), reason };
        let j: QeIdentityJson = serde_json::from_str(body).map_err(|e| inv(e.to_string()))?;
        let mut tcb_levels = j.tcb_levels;
        tcb_levels.sort_by_key(|l| std::cmp::Reverse(l.tcb.isvsvn));
        let v = Arc::new(VerifiedQeIdentity {
            issue_date: parse_rfc3339(&j.issue_date).ok_or_else(|| inv("bad issueDate".into()))?,
            next_update: parse_rfc3339(&j.next_update).ok_or_else(|| inv("bad nextUpdate".into()))?,
            miscselect: hex_fixed(&j.miscselect, name)?,
            miscselect_mask: hex_fixed(&j.miscselect_mask, name)?,
            attributes: hex_fixed(&j.attributes, name)?,
            attributes_mask: hex_fixed(&j.attributes_mask, name)?,
            mrsigner: hex_fixed(&j.mrsigner, name)?,
            isvprodid: j.isvprodid,
            version: j.version,
            tcb_evaluation_data_number: j.tcb_evaluation_data_number,
            tcb_levels,
            signer,
            body_sha256: super::pki::sha2_free::sha256(body.as_bytes()),
            id: j.id,
        });
        let list = self.qe_identities.entry(v.id.clone()).or_default();
        if !list.iter().any(|x| x.body_sha256 == v.body_sha256) {
            list.push(v);
        }
        Ok(())
    }

    /// Accept collateral up to `secs` past its `nextUpdate` when no current
    /// copy is stored. Intel's QVL reports expired collateral as a status
    /// rather than failing; an operator who cannot refresh collateral for a
    /// while (PCS outage, air gap) sets a bounded grace instead of letting
    /// every attestation fail. Uses are counted in
    /// `attest_collateral_grace_used_total`. Default 0.
    pub fn with_grace(mut self, secs: u64) -> Self {
        self.grace_s = i64::try_from(secs).unwrap_or(i64::MAX);
        self
    }

    /// The replicated collateral version this store was built from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Blobs refused while building (bad signature, unknown issuer, bad format).
    pub fn rejected(&self) -> &[RejectedBlob] {
        &self.rejected
    }

    /// The trust anchors in force.
    pub fn anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    /// Intel CA (Platform / Processor CA, TCB signing) with this subject, verified at build.
    pub(crate) fn intel_ca(&self, subject_raw: &[u8], sha256: &[u8; 32]) -> Option<Arc<CertInfo>> {
        self.intel_cas.get(subject_raw)?.iter().find(|c| &c.sha256 == sha256).cloned()
    }

    /// The TCB info for `(tee, fmspc)` valid at `at`; newest evaluation number wins.
    pub(crate) fn tcb_info(&self, tee: TeeKind, fmspc: &[u8; 6], at: i64) -> Result<Arc<VerifiedTcbInfo>> {
        let what = || format!("{tee:?} TCB info for FMSPC {}", hex::encode_upper(fmspc));
        let list = self.tcb_infos.get(&(tee, *fmspc)).ok_or_else(|| EvidenceError::missing(what()))?;
        pick_valid(list, at, self.grace_s, |t| (t.issue_date, t.next_update, t.info.tcb_evaluation_data_number), what)
    }

    /// The QE identity `id` (`QE` / `TD_QE`) valid at `at`.
    pub(crate) fn qe_identity(&self, id: &str, at: i64) -> Result<Arc<VerifiedQeIdentity>> {
        let what = || format!("{id} identity");
        let list = self.qe_identities.get(id).ok_or_else(|| EvidenceError::missing(what()))?;
        pick_valid(list, at, self.grace_s, |q| (q.issue_date, q.next_update, q.tcb_evaluation_data_number), what)
    }

    /// Check `cert` against the CRL of its issuer, which must be present and current.
    pub(crate) fn check_revocation(&self, cert: &CertInfo, issuer_label: &str, at: i64) -> Result<Arc<CrlInfo>> {
        let what = || format!("CRL of {issuer_label}");
        let list = self.crls.get(&cert.issuer_raw).ok_or_else(|| EvidenceError::missing(what()))?;
        let crl = pick_valid(
            list,
            at,
            self.grace_s,
            |c| (c.this_update, c.next_update.unwrap_or(i64::MAX), c.this_update.max(0) as u32),
            what,
        )?;
        if crl.is_revoked(&cert.serial_raw) {
            return Err(EvidenceError::CertificateRevoked {
                which: cert.label(),
                serial: hex::encode(&cert.serial_raw),
            });
        }
        Ok(crl)
    }

    /// Look up a value cached under `key` (a SHA-256 of the inputs that produced it).
    pub(crate) fn cache_get<T: Send + Sync + 'static>(&self, key: &[u8; 32]) -> Option<Arc<T>> {
        let guard = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        guard.get(key).cloned().and_then(|v| v.downcast::<T>().ok())
    }

    /// Cache `value` under `key`; the cache is cleared when it reaches its bound.
    pub(crate) fn cache_put<T: Send + Sync + 'static>(&self, key: [u8; 32], value: Arc<T>) {
        let mut guard = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if guard.len() >= CERT_CACHE_CAP {
            guard.clear();
        }
        guard.insert(key, value);
    }
}

/// Choose the entry valid at `at` with the highest evaluation number; if none
/// is valid, say whether the candidates are expired or not yet valid.
fn pick_valid<T>(
    list: &[Arc<T>],
    at: i64,
    grace_s: i64,
    window: impl Fn(&T) -> (i64, i64, u32),
    what: impl Fn() -> String,
) -> Result<Arc<T>> {
    let best = list
        .iter()
        .filter(|x| {
            let (from, to, _) = window(x);
            from <= at && at <= to
        })
        .max_by_key(|x| {
            let (from, _, n) = window(x);
            (n, from)
        });
    if let Some(b) = best {
        return Ok(b.clone());
    }
    // Nothing current: the most recently expired copy still inside the grace.
    if grace_s > 0 {
        let stale = list
            .iter()
            .filter(|x| {
                let (from, to, _) = window(x);
                from <= at && to < at && at <= to.saturating_add(grace_s)
            })
            .max_by_key(|x| window(x).1);
        if let Some(x) = stale {
            metrics::counter!("attest_collateral_grace_used_total").increment(1);
            tracing::debug!(what = %what(), "using expired collateral inside the configured grace");
            return Ok(x.clone());
        }
    }
    // Nothing valid: report the newest expired one, else the earliest future one.
    if let Some(x) = list.iter().filter(|x| window(x).1 < at).max_by_key(|x| window(x).1) {
        return Err(EvidenceError::CollateralExpired { what: what(), next_update: window(x).1, at });
    }
    match list.iter().min_by_key(|x| window(x).0) {
        Some(x) => Err(EvidenceError::CollateralNotYetValid { what: what(), issue_date: window(x).0, at }),
        None => Err(EvidenceError::missing(what())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_anchors_parse() {
        let a = TrustAnchors::builtin();
        assert_eq!(a.intel_root.subject_cn, "Intel SGX Root CA");
        assert_eq!(a.amd_arks.len(), 3);
        assert!(a.amd_default_cas.len() >= 6);
    }

    #[test]
    fn degenerate_blobs_are_rejected_not_looped() {
        for blob in [&b""[..], b"   ", b"00", b"3030", b"{}", b"-----BEGIN X-----"] {
            let s = CollateralStore::from_blobs(TrustAnchors::builtin(), 0, vec![("b", blob)]);
            assert!(s.tcb_infos.is_empty());
        }
    }

    #[test]
    fn raw_member_extracts_exact_text() {
        let j = r#"{"tcbInfo":{"a":"}{\"","b":{"c":1}},"signature":"ab"}"#;
        assert_eq!(raw_member(j, "tcbInfo"), Some(r#"{"a":"}{\"","b":{"c":1}}"#));
        assert_eq!(raw_member("{\"tcbInfo\":{", "tcbInfo"), None);
    }
}
