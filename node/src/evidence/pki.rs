//! Certificates, CRLs and raw signatures, on `x509-parser` + `ring`.
//!
//! Why not webpki (which dcap-qvl uses internally): AMD VCEKs carry serial
//! number 0 and RSA-PSS signatures that webpki refuses, and the quote chains
//! of 2021 end in an older encoding of the Intel root, so we pin root *keys*
//! rather than certificates. A parsed certificate is kept as an owned
//! [`CertInfo`] so that verified certificates can be cached across requests.

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use sha2_free::sha256;
use x509_parser::prelude::*;

use super::error::{EvidenceError, Result};

/// Upper bound for one DER certificate or CRL we accept.
pub const MAX_CERT_LEN: usize = 64 * 1024;
/// Upper bound for the number of certificates in one chain / PEM bundle.
pub const MAX_CHAIN_LEN: usize = 16;

/// SHA-256 without pulling another crate: ring's digest.
pub(crate) mod sha2_free {
    pub fn sha256(data: &[u8]) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }
}

/// Public key algorithm of a certificate's subject key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcP256,
    EcP384,
    Rsa,
}

/// An owned, parsed certificate with the fields verification needs.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub der: Vec<u8>,
    pub sha256: [u8; 32],
    pub subject_raw: Vec<u8>,
    pub issuer_raw: Vec<u8>,
    pub subject_cn: String,
    pub issuer_cn: String,
    pub serial_raw: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    pub key_kind: KeyKind,
    /// EC: uncompressed point; RSA: the RSAPublicKey DER.
    pub public_key: Vec<u8>,
    pub tbs_raw: Vec<u8>,
    sig_alg: SigAlg,
    pub signature: Vec<u8>,
    /// (OID dotted string, extnValue contents) of every extension.
    pub extensions: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigAlg {
    EcdsaSha256,
    EcdsaSha384,
    RsaPkcs1Sha1,
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPssSha256,
    RsaPssSha384,
    Unknown,
}

const OID_SHA384: &[u8] = &[0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];

fn sig_alg_of(alg: &AlgorithmIdentifier<'_>) -> SigAlg {
    match alg.algorithm.to_id_string().as_str() {
        "1.2.840.10045.4.3.2" => SigAlg::EcdsaSha256,
        "1.2.840.10045.4.3.3" => SigAlg::EcdsaSha384,
        "1.2.840.113549.1.1.5" => SigAlg::RsaPkcs1Sha1,
        "1.2.840.113549.1.1.11" => SigAlg::RsaPkcs1Sha256,
        "1.2.840.113549.1.1.12" => SigAlg::RsaPkcs1Sha384,
        "1.2.840.113549.1.1.10" => {
            // RSASSA-PSS: the hash is in the parameters. AMD uses SHA-384.
            let params = alg.parameters.as_ref().map(|p| p.data).unwrap_or(&[]);
            if params.windows(OID_SHA384.len()).any(|w| w == OID_SHA384) {
                SigAlg::RsaPssSha384
            } else {
                SigAlg::RsaPssSha256
            }
        }
        _ => SigAlg::Unknown,
    }
}

fn cn_of(name: &X509Name<'_>) -> String {
    name.iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or("").to_string()
}

impl CertInfo {
    /// Parse one DER certificate. `which` names it in errors.
    pub fn parse(der: &[u8], which: &str) -> Result<Self> {
        if der.len() > MAX_CERT_LEN {
            return Err(EvidenceError::TooLarge { what: "certificate", len: der.len(), max: MAX_CERT_LEN });
        }
        let perr = |reason: String| EvidenceError::CertificateParse { which: which.to_string(), reason };
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| perr(e.to_string()))?;
        let used = der.len() - rest.len();
        let der = &der[..used];
        let tbs = &cert.tbs_certificate;
        let spki = tbs.public_key();
        let key_kind = match spki.algorithm.algorithm.to_id_string().as_str() {
            "1.2.840.10045.2.1" => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .unwrap_or_default();
                match curve.as_str() {
                    "1.2.840.10045.3.1.7" => KeyKind::EcP256,
                    "1.3.132.0.34" => KeyKind::EcP384,
                    other => return Err(perr(format!("unsupported EC curve {other}"))),
                }
            }
            "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => KeyKind::Rsa,
            other => return Err(perr(format!("unsupported key algorithm {other}"))),
        };
        let extensions = tbs.extensions().iter().map(|e| (e.oid.to_id_string(), e.value.to_vec())).collect();
        Ok(Self {
            der: der.to_vec(),
            sha256: sha256(der),
            subject_raw: tbs.subject.as_raw().to_vec(),
            issuer_raw: tbs.issuer.as_raw().to_vec(),
            subject_cn: cn_of(&tbs.subject),
            issuer_cn: cn_of(&tbs.issuer),
            serial_raw: tbs.raw_serial().to_vec(),
            not_before: tbs.validity.not_before.timestamp(),
            not_after: tbs.validity.not_after.timestamp(),
            key_kind,
            public_key: spki.subject_public_key.data.to_vec(),
            tbs_raw: tbs.as_ref().to_vec(),
            sig_alg: sig_alg_of(&cert.signature_algorithm),
            signature: cert.signature_value.data.to_vec(),
            extensions,
        })
    }

    /// Label for errors: the subject CN (or "unnamed").
    pub fn label(&self) -> String {
        if self.subject_cn.is_empty() {
            "unnamed".into()
        } else {
            self.subject_cn.clone()
        }
    }

    /// The contents of extension `oid`, if present.
    pub fn extension(&self, oid: &str) -> Option<&[u8]> {
        self.extensions.iter().find(|(o, _)| o == oid).map(|(_, v)| v.as_slice())
    }

    /// True if `self` was signed by the key of `issuer`.
    pub fn is_signed_by(&self, issuer_kind: KeyKind, issuer_key: &[u8]) -> bool {
        verify_x509_sig(self.sig_alg, issuer_kind, issuer_key, &self.tbs_raw, &self.signature)
    }

    /// Verify that `issuer` signed `self` (names and signature).
    pub fn verify_issued_by(&self, issuer: &CertInfo) -> Result<()> {
        if self.issuer_raw != issuer.subject_raw || !self.is_signed_by(issuer.key_kind, &issuer.public_key) {
            return Err(EvidenceError::CertificateSignature { which: self.label() });
        }
        Ok(())
    }

    /// Check the validity window at `at` (unix seconds).
    pub fn check_time(&self, at: i64) -> Result<()> {
        if at < self.not_before {
            return Err(EvidenceError::CertificateNotYetValid { which: self.label(), not_before: self.not_before, at });
        }
        if at > self.not_after {
            return Err(EvidenceError::CertificateExpired { which: self.label(), not_after: self.not_after, at });
        }
        Ok(())
    }
}

fn verify_x509_sig(alg: SigAlg, kind: KeyKind, key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let algo: &dyn VerificationAlgorithm = match (alg, kind) {
        (SigAlg::EcdsaSha256, KeyKind::EcP256) => &signature::ECDSA_P256_SHA256_ASN1,
        (SigAlg::EcdsaSha384, KeyKind::EcP256) => &signature::ECDSA_P256_SHA384_ASN1,
        (SigAlg::EcdsaSha256, KeyKind::EcP384) => &signature::ECDSA_P384_SHA256_ASN1,
        (SigAlg::EcdsaSha384, KeyKind::EcP384) => &signature::ECDSA_P384_SHA384_ASN1,
        (SigAlg::RsaPkcs1Sha1, KeyKind::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        (SigAlg::RsaPkcs1Sha256, KeyKind::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (SigAlg::RsaPkcs1Sha384, KeyKind::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (SigAlg::RsaPssSha256, KeyKind::Rsa) => &signature::RSA_PSS_2048_8192_SHA256,
        (SigAlg::RsaPssSha384, KeyKind::Rsa) => &signature::RSA_PSS_2048_8192_SHA384,
        _ => return false,
    };
    UnparsedPublicKey::new(algo, key).verify(msg, sig).is_ok()
}

/// Verify a raw `r || s` ECDSA P-256/SHA-256 signature by an uncompressed point.
pub fn verify_p256_raw(point: &[u8], msg: &[u8], sig_rs: &[u8]) -> bool {
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(msg, sig_rs).is_ok()
}

/// Split a PEM bundle into DER certificates (at most [`MAX_CHAIN_LEN`]).
pub fn pem_certs(pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for item in Pem::iter_from_buffer(pem) {
        let item = item.map_err(|e| EvidenceError::malformed("PEM certificate bundle", e))?;
        if item.label != "CERTIFICATE" {
            continue;
        }
        if out.len() >= MAX_CHAIN_LEN {
            return Err(EvidenceError::TooLarge { what: "certificate chain", len: out.len() + 1, max: MAX_CHAIN_LEN });
        }
        out.push(item.contents);
    }
    Ok(out)
}

/// Parse certificates given as PEM or a single DER blob.
pub fn certs_from_bytes(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    if bytes.first() == Some(&0x30) {
        Ok(vec![bytes.to_vec()])
    } else {
        pem_certs(bytes)
    }
}

/// A parsed, signature-checked CRL.
#[derive(Debug, Clone)]
pub struct CrlInfo {
    pub issuer_raw: Vec<u8>,
    pub issuer_cn: String,
    pub this_update: i64,
    pub next_update: Option<i64>,
    pub revoked: std::collections::HashSet<Vec<u8>>,
    pub sha256: [u8; 32],
}

impl CrlInfo {
    /// Parse a DER CRL and verify it against one of `issuers`.
    pub fn parse_and_verify<'a>(
        der: &[u8],
        issuers: impl IntoIterator<Item = &'a CertInfo>,
        which: &str,
    ) -> Result<Self> {
        let inv = |reason: String| EvidenceError::CollateralInvalid { what: which.to_string(), reason };
        if der.len() > 4 * 1024 * 1024 {
            return Err(inv("CRL larger than 4 MiB".into()));
        }
        let (_, crl) = CertificateRevocationList::from_der(der).map_err(|e| inv(e.to_string()))?;
        let issuer_raw = crl.issuer().as_raw().to_vec();
        let alg = sig_alg_of(&crl.signature_algorithm);
        let tbs = crl.tbs_cert_list.as_ref();
        let sig = crl.signature_value.data.as_ref();
        let signer = issuers
            .into_iter()
            .find(|c| c.subject_raw == issuer_raw && verify_x509_sig(alg, c.key_kind, &c.public_key, tbs, sig));
        if signer.is_none() {
            return Err(inv(format!("no trusted issuer verifies this CRL (issuer CN {:?})", cn_of(crl.issuer()))));
        }
        Ok(Self {
            issuer_raw,
            issuer_cn: cn_of(crl.issuer()),
            this_update: crl.last_update().timestamp(),
            next_update: crl.next_update().map(|t| t.timestamp()),
            revoked: crl.iter_revoked_certificates().map(|r| strip_int(r.raw_serial()).to_vec()).collect(),
            sha256: sha256(der),
        })
    }

    /// True if `serial_raw` (DER INTEGER contents) is listed.
    pub fn is_revoked(&self, serial_raw: &[u8]) -> bool {
        self.revoked.contains(strip_int(serial_raw))
    }
}

/// Strip leading zero bytes of a DER INTEGER so serial comparisons are canonical.
fn strip_int(b: &[u8]) -> &[u8] {
    let mut i = 0;
    while i + 1 < b.len() && b[i] == 0 {
        i += 1;
    }
    &b[i..]
}

/// Parse an RFC 3339 UTC timestamp like `2025-06-19T10:56:11Z` (fractions allowed).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse::<i64>().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    if !s.ends_with('Z') {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2025-02-13T04:00:32Z"), Some(1_739_419_232));
        assert_eq!(parse_rfc3339("2025-02-13T04:00:32.123Z"), Some(1_739_419_232));
        assert_eq!(parse_rfc3339("2025-02-13"), None);
        assert_eq!(parse_rfc3339("2025-13-13T04:00:32Z"), None);
    }
}
