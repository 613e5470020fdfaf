//! UVM endorsements: the `Endorsements` member of MAA's SEV-SNP evidence
//! (`{"Uvm": [b64url(COSE_Sign1)]}`), as Azure Container Instances send it.
//!
//! A UVM endorsement is a COSE_Sign1 statement by the publisher of a
//! utility-VM image: "the launch measurement of my UVM at this SVN is M".
//! Its protected header carries the signing certificate chain (`x5chain`,
//! leaf first), the issuer as a `did:x509` DID naming a CA of that chain by
//! fingerprint plus a policy on the leaf (its EKU or subject), and the feed
//! (the image line). The payload is JSON with
//! `x-ms-sevsnpvm-launchmeasurement` and `x-ms-sevsnpvm-guestsvn`.
//!
//! What is verified here: the DID resolves against the chain (the named CA
//! is in it, every certificate up to it is signed by the next, the leaf
//! satisfies the DID's policies), the COSE signature verifies with the leaf
//! key, and the endorsed launch measurement equals the report's. The result
//! is the `x-ms-sevsnpvm-uvm-endorsement` claim (endorsed SVN, measurement,
//! and the `iss` / `feed` headers).
//!
//! Decisions: *which* issuers and feeds are trusted, and the minimum SVN, is
//! the tenant policy's call, as in MAA (ACI's policies compare the `iss`
//! claim to Microsoft's DID) — the DID pins the CA by hash, so a claim with
//! that DID cannot be produced without that CA. Certificate validity
//! windows are not enforced: the endorsement states a fact about a
//! published image that outlives its short-lived signing certificate
//! (CCF's UVM endorsement check makes the same choice).

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde_json::{json, Value};
use x509_parser::prelude::*;

use coset::{iana, CborSerializable, CoseSign1, Label, RegisteredLabelWithPrivate, TaggedCborSerializable};

use super::error::{EvidenceError, Result};
use super::pki::{CertInfo, KeyKind, MAX_CHAIN_LEN};

/// Largest single COSE_Sign1 endorsement accepted.
pub const MAX_ENDORSEMENT_LEN: usize = 64 * 1024;
/// Most endorsements accepted in one piece of evidence.
pub const MAX_ENDORSEMENTS: usize = 4;

const WHAT: &str = "UVM endorsement";

/// A verified UVM endorsement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UvmEndorsement {
    /// The `did:x509` issuer, as signed.
    pub issuer: String,
    /// The feed (image line), as signed; empty when absent.
    pub feed: String,
    /// The endorsed guest SVN, as the payload states it.
    pub guest_svn: String,
    /// The endorsed launch measurement (lower-case hex).
    pub launch_measurement: String,
}

impl UvmEndorsement {
    /// The `x-ms-sevsnpvm-uvm-endorsement` claim value (MAA's shape).
    pub fn claim(&self) -> Value {
        json!({
            "x-ms-sevsnpvm-guestsvn": self.guest_svn,
            "x-ms-sevsnpvm-launchmeasurement": self.launch_measurement,
            "x-ms-sevsnpvm-uvm-endorsement-headers": { "iss": self.issuer, "feed": self.feed },
        })
    }
}

fn malformed(reason: impl std::fmt::Display) -> EvidenceError {
    EvidenceError::Malformed { what: WHAT, reason: reason.to_string() }
}

/// Verifies one COSE_Sign1 UVM endorsement against the report's launch
/// `measurement`.
pub fn verify(cose: &[u8], measurement: &[u8]) -> Result<UvmEndorsement> {
    if cose.len() > MAX_ENDORSEMENT_LEN {
        return Err(EvidenceError::TooLarge { what: WHAT, len: cose.len(), max: MAX_ENDORSEMENT_LEN });
    }
    // Tagged (CBOR tag 18) as ACI sends it, or bare.
    let sign1 = CoseSign1::from_tagged_slice(cose).or_else(|_| CoseSign1::from_slice(cose)).map_err(malformed)?;
    let header = &sign1.protected.header;
    let alg = match &header.alg {
        Some(RegisteredLabelWithPrivate::Assigned(a)) => *a,
        Some(other) => {
            return Err(EvidenceError::Unsupported { what: "UVM endorsement algorithm", value: format!("{other:?}") })
        }
        None => return Err(malformed("no alg in the protected header")),
    };
    let chain = x5chain(header)?;
    let issuer = text_header(header, "iss", 1)?.ok_or_else(|| malformed("no iss in the protected header"))?;
    let feed = text_header(header, "feed", 2)?.unwrap_or_default();
    resolve_did(&issuer, &chain)?;

    let leaf = &chain[0];
    let tbs = sign1.tbs_data(b"");
    if !verify_cose_sig(alg, leaf, &tbs, &sign1.signature)? {
        return Err(EvidenceError::BadSignature { what: WHAT });
    }

    let payload = sign1.payload.as_deref().ok_or_else(|| malformed("detached payload"))?;
    let body: Value = serde_json::from_slice(payload).map_err(|e| malformed(format!("payload: {e}")))?;
    let endorsed = body
        .get("x-ms-sevsnpvm-launchmeasurement")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("payload has no x-ms-sevsnpvm-launchmeasurement"))?
        .to_ascii_lowercase();
    let guest_svn = match body.get("x-ms-sevsnpvm-guestsvn") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(malformed("payload has no x-ms-sevsnpvm-guestsvn")),
    };
    let actual = hex::encode(measurement);
    if endorsed != actual {
        return Err(EvidenceError::EndorsementMismatch {
            reason: format!("UVM endorsement is for launch measurement {endorsed}, the report has {actual}"),
        });
    }
    Ok(UvmEndorsement { issuer, feed, guest_svn, launch_measurement: endorsed })
}

/// Parses MAA's `Endorsements` JSON and verifies every `Uvm` entry;
/// returns the first (ACI sends one). `None` when there is no `Uvm` entry.
pub fn verify_endorsements(json_bytes: &[u8], measurement: &[u8]) -> Result<Option<UvmEndorsement>> {
    #[derive(serde::Deserialize)]
    struct Endorsements {
        #[serde(rename = "Uvm", default)]
        uvm: Vec<String>,
    }
    let e: Endorsements =
        serde_json::from_slice(json_bytes).map_err(|e| EvidenceError::malformed("Endorsements", e))?;
    if e.uvm.len() > MAX_ENDORSEMENTS {
        return Err(EvidenceError::TooLarge { what: "UVM endorsement list", len: e.uvm.len(), max: MAX_ENDORSEMENTS });
    }
    let mut first = None;
    for item in &e.uvm {
        let bytes = super::snp::b64url(item, WHAT)?;
        let v = verify(&bytes, measurement)?;
        first.get_or_insert(v);
    }
    Ok(first)
}

/// The `x5chain` header (label 33): one certificate or an array, leaf first.
fn x5chain(header: &coset::Header) -> Result<Vec<CertInfo>> {
    let label = Label::Int(iana::HeaderParameter::X5Chain as i64);
    let value = header
        .rest
        .iter()
        .find(|(l, _)| *l == label)
        .map(|(_, v)| v)
        .ok_or_else(|| malformed("no x5chain in the protected header"))?;
    let ders: Vec<&[u8]> = match value {
        ciborium::Value::Bytes(b) => vec![b.as_slice()],
        ciborium::Value::Array(items) => items
            .iter()
            .map(|i| i.as_bytes().map(Vec::as_slice).ok_or_else(|| malformed("x5chain holds a non-bytes item")))
            .collect::<Result<_>>()?,
        _ => return Err(malformed("x5chain is neither bytes nor an array")),
    };
    if ders.is_empty() {
        return Err(malformed("empty x5chain"));
    }
    if ders.len() > MAX_CHAIN_LEN {
        return Err(EvidenceError::TooLarge { what: "UVM endorsement x5chain", len: ders.len(), max: MAX_CHAIN_LEN });
    }
    ders.iter().enumerate().map(|(i, d)| CertInfo::parse(d, &format!("UVM endorsement x5chain[{i}]"))).collect()
}

/// A text header by its name (ACI's `iss` / `feed`), or the same claim in
/// the CWT claims header (label 15, claim key `cwt_key`).
fn text_header(header: &coset::Header, name: &str, cwt_key: i64) -> Result<Option<String>> {
    for (l, v) in &header.rest {
        if *l == Label::Text(name.to_string()) {
            return v.as_text().map(|s| Some(s.to_string())).ok_or_else(|| malformed(format!("{name} is not text")));
        }
    }
    let cwt = header.rest.iter().find(|(l, _)| *l == Label::Int(15)).map(|(_, v)| v);
    if let Some(ciborium::Value::Map(claims)) = cwt {
        for (k, v) in claims {
            if k.as_integer().and_then(|i| i64::try_from(i).ok()) == Some(cwt_key) {
                return v
                    .as_text()
                    .map(|s| Some(s.to_string()))
                    .ok_or_else(|| malformed(format!("CWT {name} is not text")));
            }
        }
    }
    Ok(None)
}

fn untrusted(reason: impl Into<String>) -> EvidenceError {
    EvidenceError::UntrustedChain { which: WHAT.into(), reason: reason.into() }
}

/// Resolves `did:x509:0:<hash>:<b64url fingerprint>::<policy>:<value>…`
/// against `chain`: the fingerprint names a CA certificate of the chain
/// (not the leaf), every certificate below it is signed by its successor,
/// and the leaf meets each policy (`eku:<oid>`, `subject:<attr>:<value>`).
pub fn resolve_did(did: &str, chain: &[CertInfo]) -> Result<()> {
    let mut parts = did.split("::");
    let head = parts.next().unwrap_or_default();
    let fields: Vec<&str> = head.split(':').collect();
    let [scheme, method, version, hash, fingerprint] = fields.as_slice() else {
        return Err(untrusted(format!("issuer {did} is not did:x509:0:<hash>:<fingerprint>")));
    };
    if *scheme != "did" || *method != "x509" || *version != "0" {
        return Err(untrusted(format!("issuer {did} is not a did:x509 version 0 DID")));
    }
    let alg: &'static ring::digest::Algorithm = match *hash {
        "sha256" => &ring::digest::SHA256,
        "sha384" => &ring::digest::SHA384,
        "sha512" => &ring::digest::SHA512,
        other => return Err(EvidenceError::Unsupported { what: "did:x509 hash", value: other.to_string() }),
    };
    let want = super::snp::b64url(fingerprint, "did:x509 fingerprint")?;
    let ca_at = chain
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, c)| ring::digest::digest(alg, &c.der).as_ref() == want.as_slice())
        .map(|(i, _)| i)
        .ok_or_else(|| untrusted(format!("no CA certificate of x5chain has the fingerprint of {did}")))?;
    for i in 0..ca_at {
        chain[i].verify_issued_by(&chain[i + 1])?;
    }
    let leaf = X509Certificate::from_der(&chain[0].der).map_err(|e| malformed(e.to_string()))?.1;
    let mut policies = 0;
    for policy in parts {
        policies += 1;
        let (name, value) = policy.split_once(':').ok_or_else(|| untrusted(format!("did:x509 policy {policy}")))?;
        match name {
            "eku" => {
                if !leaf_ekus(&leaf).iter().any(|o| o == value) {
                    return Err(untrusted(format!("the leaf certificate has no EKU {value}")));
                }
            }
            "subject" => check_subject(&leaf, value)?,
            other => {
                return Err(EvidenceError::Unsupported { what: "did:x509 policy", value: other.to_string() });
            }
        }
    }
    if policies == 0 {
        // A bare CA pin would accept any certificate that CA ever issued.
        return Err(untrusted(format!("issuer {did} has no policy on the leaf certificate")));
    }
    Ok(())
}

fn leaf_ekus(leaf: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(ext)) = leaf.extended_key_usage() else { return Vec::new() };
    let e = ext.value;
    let mut out: Vec<String> = e.other.iter().map(|o| o.to_id_string()).collect();
    for (set, oid) in [
        (e.server_auth, "1.3.6.1.5.5.7.3.1"),
        (e.client_auth, "1.3.6.1.5.5.7.3.2"),
        (e.code_signing, "1.3.6.1.5.5.7.3.3"),
        (e.email_protection, "1.3.6.1.5.5.7.3.4"),
        (e.time_stamping, "1.3.6.1.5.5.7.3.8"),
        (e.ocsp_signing, "1.3.6.1.5.5.7.3.9"),
    ] {
        if set {
            out.push(oid.to_string());
        }
    }
    out
}

/// `subject:<attr>:<value>[:<attr>:<value>…]`, values percent-encoded.
fn check_subject(leaf: &X509Certificate<'_>, spec: &str) -> Result<()> {
    let items: Vec<&str> = spec.split(':').collect();
    if items.is_empty() || !items.len().is_multiple_of(2) {
        return Err(untrusted(format!("did:x509 subject policy {spec}")));
    }
    for pair in items.chunks(2) {
        let oid = match pair[0] {
            "CN" => "2.5.4.3",
            "C" => "2.5.4.6",
            "L" => "2.5.4.7",
            "ST" => "2.5.4.8",
            "O" => "2.5.4.10",
            "OU" => "2.5.4.11",
            other => {
                return Err(EvidenceError::Unsupported { what: "did:x509 subject attribute", value: other.into() })
            }
        };
        let want = percent_decode(pair[1]);
        let found = leaf
            .subject()
            .iter_attributes()
            .any(|a| a.attr_type().to_id_string() == oid && a.as_str().ok() == Some(want.as_str()));
        if !found {
            return Err(untrusted(format!("the leaf certificate's subject has no {}={want}", pair[0])));
        }
    }
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// COSE signature by the leaf key. ECDSA in COSE is the fixed `r || s` form.
fn verify_cose_sig(alg: iana::Algorithm, leaf: &CertInfo, msg: &[u8], sig: &[u8]) -> Result<bool> {
    let algo: &dyn VerificationAlgorithm = match (alg, leaf.key_kind) {
        (iana::Algorithm::PS256, KeyKind::Rsa) => &signature::RSA_PSS_2048_8192_SHA256,
        (iana::Algorithm::PS384, KeyKind::Rsa) => &signature::RSA_PSS_2048_8192_SHA384,
        (iana::Algorithm::PS512, KeyKind::Rsa) => &signature::RSA_PSS_2048_8192_SHA512,
        (iana::Algorithm::ES256, KeyKind::EcP256) => &signature::ECDSA_P256_SHA256_FIXED,
        (iana::Algorithm::ES384, KeyKind::EcP384) => &signature::ECDSA_P384_SHA384_FIXED,
        (a, k) => {
            return Err(EvidenceError::Unsupported {
                what: "UVM endorsement algorithm for its key",
                value: format!("{a:?} with a {k:?} key"),
            })
        }
    };
    Ok(UnparsedPublicKey::new(algo, &leaf.public_key).verify(msg, sig).is_ok())
}

#[cfg(test)]
mod tests;
