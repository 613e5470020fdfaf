//! Policies and policy signer certificates as JWS (RFC 7515, compact form),
//! as MAA's `PUT /policies/{type}` and `POST /certificates:add|remove` take
//! them.
//!
//! * Unsigned: header `{"alg":"none"}`, empty signature.
//! * Signed: RS256 (and the Python SDK's non-standard `RSA256` alias),
//!   PS256 or ES256, the key in an `x5c` header (leaf first) or in a `jwk`
//!   header (which itself may carry `x5c`, or a bare RSA / P-256 key).
//! * Payload `{"AttestationPolicy": base64url(UTF-8 policy text)}`.
//!
//! Hashes (verified against recorded MAA responses, see the tests):
//! `x-ms-policy-hash = base64url(SHA-256(AttestationPolicy string))` and
//! `x-ms-policy-token-hash = base64url(SHA-256(compact JWS))`.
//!
//! Trust (`TrustModel::Isolated`): a policy must be signed by a registered
//! signer certificate or by a certificate chaining to one; every certificate
//! on the path must be valid at a time the caller passes in (this module
//! never reads the clock).
//!
//! Crypto is `ring` (signatures, SHA-1/256) and `x509-parser` (certificate
//! structure); certificate signatures are checked with ring directly so no
//! extra x509-parser feature is needed. Every input is untrusted: sizes are
//! bounded, and all failures are typed [`PolicyJwsError`]s.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde_json::{json, Map, Value};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CompiledPolicy, PolicyParseError};

/// base64url without padding for output; accepts padding on input.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// Standard base64 (x5c), padding optional on input.
const B64STD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Bounds on JWS input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwsLimits {
    /// Largest compact JWS accepted.
    pub max_token_bytes: usize,
    /// Most certificates in an `x5c` chain.
    pub max_chain_len: usize,
    /// Largest single DER certificate.
    pub max_cert_bytes: usize,
}

impl Default for JwsLimits {
    fn default() -> Self {
        JwsLimits { max_token_bytes: 1024 * 1024, max_chain_len: 10, max_cert_bytes: 16 * 1024 }
    }
}

/// Everything that can go wrong with a policy or certificate JWS.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PolicyJwsError {
    #[error("the token is {len} bytes, more than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// Structural problem, worded as MAA does ("Could not find first period
    /// in the token").
    #[error("{0}")]
    Malformed(String),
    #[error("the JWS {0} is not valid base64url")]
    BadBase64(&'static str),
    #[error("the JWS {part} is not a JSON object: {message}")]
    BadJson { part: &'static str, message: String },
    #[error("unsupported JWS algorithm '{0}' (supported: none, RS256, RSA256, PS256, ES256)")]
    UnsupportedAlgorithm(String),
    #[error("the JWS payload has no 'AttestationPolicy' claim")]
    MissingPolicy,
    #[error("the 'AttestationPolicy' claim is not base64url-encoded UTF-8 text")]
    BadPolicyEncoding,
    #[error("an unsigned JWS must have an empty signature")]
    UnexpectedSignature,
    #[error("a signed JWS needs an 'x5c' or 'jwk' header")]
    MissingSigningKey,
    #[error("invalid signing key: {0}")]
    BadKey(String),
    #[error("the JWS signature is invalid")]
    BadSignature,
    #[error("invalid certificate: {0}")]
    BadCertificate(String),
    #[error("the certificate '{thumbprint}' is not valid at the time of the request")]
    CertificateNotValid { thumbprint: String },
    /// Isolated providers accept only signed policies.
    #[error("the attestation provider requires signed policies; an unsigned policy was supplied")]
    UnsignedNotAllowed,
    /// The signer is not (and does not chain to) a registered signer.
    #[error("Unable to find issuer certificate: the signer is not a trusted policy signer")]
    UntrustedSigner,
    #[error("the JWS payload has no 'maa-policyCertificate' (or 'policyCertificate') claim")]
    MissingPolicyCertificate,
    #[error("the last policy signer certificate cannot be removed")]
    LastCertificate,
    #[error(transparent)]
    Policy(#[from] PolicyParseError),
}

impl PolicyJwsError {
    /// MAA's error code for this error.
    pub fn maa_code(&self) -> &'static str {
        match self {
            PolicyJwsError::Policy(e) => e.maa_code(),
            PolicyJwsError::BadSignature
            | PolicyJwsError::BadKey(_)
            | PolicyJwsError::BadCertificate(_)
            | PolicyJwsError::CertificateNotValid { .. }
            | PolicyJwsError::UntrustedSigner => "InvalidParameter",
            _ => "InvalidOperation",
        }
    }
}

/// JWS signature algorithms MAA accepts for policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwsAlgorithm {
    None,
    Rs256,
    Ps256,
    Es256,
}

impl JwsAlgorithm {
    /// Parse a header `alg`. `RSA256` is the Azure Python SDK's spelling of
    /// RS256, which MAA accepts.
    pub fn parse(alg: &str) -> Result<JwsAlgorithm, PolicyJwsError> {
        Ok(match alg {
            "none" => JwsAlgorithm::None,
            "RS256" | "RSA256" => JwsAlgorithm::Rs256,
            "PS256" => JwsAlgorithm::Ps256,
            "ES256" => JwsAlgorithm::Es256,
            other => return Err(PolicyJwsError::UnsupportedAlgorithm(other.chars().take(32).collect())),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JwsAlgorithm::None => "none",
            JwsAlgorithm::Rs256 => "RS256",
            JwsAlgorithm::Ps256 => "PS256",
            JwsAlgorithm::Es256 => "ES256",
        }
    }
}

/// The signer of a JWS whose signature has been checked.
#[derive(Debug, Clone, PartialEq)]
pub struct JwsSigner {
    /// DER certificates from `x5c`, leaf first (empty for a bare `jwk`).
    pub certificates: Vec<Vec<u8>>,
    /// The signer as a JWK, for `x-ms-policy-signer`.
    pub jwk: Value,
}

impl JwsSigner {
    /// Uppercase hex SHA-1 of the leaf certificate, MAA's thumbprint.
    pub fn thumbprint(&self) -> Option<String> {
        self.certificates.first().map(|c| thumbprint(c))
    }

    /// Check that this signer is a trusted signer, or chains to one, with
    /// every certificate on the path valid at `at_unix` (seconds).
    pub fn verify_trusted(&self, trusted: &[Vec<u8>], at_unix: i64) -> Result<(), PolicyJwsError> {
        if self.certificates.is_empty() {
            // A bare key cannot be tied to a registered certificate.
            return Err(PolicyJwsError::UntrustedSigner);
        }
        let chain = self.certificates.iter().map(|d| parse_cert(d)).collect::<Result<Vec<_>, _>>()?;
        let anchors = trusted.iter().filter_map(|d| parse_cert(d).ok().map(|c| (d.as_slice(), c))).collect::<Vec<_>>();
        for (i, cert) in chain.iter().enumerate() {
            check_validity(cert, &self.certificates[i], at_unix)?;
            // The certificate itself is registered.
            if trusted.iter().any(|t| t.as_slice() == self.certificates[i].as_slice()) {
                return Ok(());
            }
            // A registered CA certificate issued it.
            for (der, anchor) in &anchors {
                if is_ca(anchor)
                    && cert.issuer().as_raw() == anchor.subject().as_raw()
                    && verify_cert_signature(cert, anchor).is_ok()
                {
                    check_validity(anchor, der, at_unix)?;
                    return Ok(());
                }
            }
            // Otherwise the next certificate of the chain must have issued it.
            match chain.get(i + 1) {
                Some(next) => {
                    if cert.issuer().as_raw() != next.subject().as_raw() || !is_ca(next) {
                        return Err(PolicyJwsError::UntrustedSigner);
                    }
                    verify_cert_signature(cert, next).map_err(|_| PolicyJwsError::UntrustedSigner)?;
                }
                None => return Err(PolicyJwsError::UntrustedSigner),
            }
        }
        Err(PolicyJwsError::UntrustedSigner)
    }
}

/// A parsed compact JWS with its signature checked against its own key.
#[derive(Debug, Clone, PartialEq)]
pub struct Jws {
    pub algorithm: JwsAlgorithm,
    pub header: Map<String, Value>,
    pub payload: Map<String, Value>,
    /// `None` for `alg: none`.
    pub signer: Option<JwsSigner>,
    /// `x-ms-policy-token-hash`: base64url(SHA-256(token)).
    pub token_hash: String,
}

impl Jws {
    /// Parse `token` (surrounding whitespace, and the JSON-string quoting
    /// the certificate endpoints use, are ignored) and verify its signature.
    pub fn parse(token: &str, limits: &JwsLimits) -> Result<Jws, PolicyJwsError> {
        if token.len() > limits.max_token_bytes {
            return Err(PolicyJwsError::TooLarge { len: token.len(), max: limits.max_token_bytes });
        }
        let token = unquote(token.trim())?;
        let token = token.trim();
        let first = token
            .find('.')
            .ok_or_else(|| PolicyJwsError::Malformed("Could not find first period in the token".into()))?;
        let rest = &token[first + 1..];
        let second = rest
            .find('.')
            .ok_or_else(|| PolicyJwsError::Malformed("Could not find second period in the token".into()))?;
        let (h64, p64, s64) = (&token[..first], &rest[..second], &rest[second + 1..]);
        if s64.contains('.') {
            return Err(PolicyJwsError::Malformed("the token has more than three parts (JWE is not supported)".into()));
        }
        let header = decode_object(h64, "header")?;
        // An empty payload is legal: the SDKs reset policies with one
        // (`eyJhbGciOiJub25lIn0..`, or signed over `header.`).
        let payload = if p64.is_empty() { Map::new() } else { decode_object(p64, "payload")? };
        let signature = B64URL.decode(s64).map_err(|_| PolicyJwsError::BadBase64("signature"))?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| PolicyJwsError::Malformed("the JWS header has no 'alg'".into()))?;
        let algorithm = JwsAlgorithm::parse(alg)?;
        let signer = if algorithm == JwsAlgorithm::None {
            if !signature.is_empty() {
                return Err(PolicyJwsError::UnexpectedSignature);
            }
            None
        } else {
            let (key, signer) = signing_key(&header, algorithm, limits)?;
            let signing_input = &token[..first + 1 + second];
            key.verify(algorithm, signing_input.as_bytes(), &signature)?;
            Some(signer)
        };
        Ok(Jws { algorithm, header, payload, signer, token_hash: token_hash(token) })
    }
}

/// How a provider decides whom to accept policies from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustModel {
    /// Any authorized caller may set unsigned or signed policies.
    Aad,
    /// Only policies signed by a registered signer (or a chain to one).
    Isolated,
}

/// A policy upload, parsed, signature-checked and compiled.
#[derive(Debug)]
pub struct PolicyUpload {
    pub jws: Jws,
    /// The policy text.
    pub policy_text: String,
    /// `x-ms-policy-hash`.
    pub policy_hash: String,
    /// The policy, compiled (so a bad policy is rejected at upload).
    pub compiled: CompiledPolicy,
}

impl PolicyUpload {
    /// Parse a `PUT /policies/{type}` body with default limits.
    pub fn parse(token: &str) -> Result<PolicyUpload, PolicyJwsError> {
        Self::parse_with_limits(token, &JwsLimits::default())
    }

    pub fn parse_with_limits(token: &str, limits: &JwsLimits) -> Result<PolicyUpload, PolicyJwsError> {
        let jws = Jws::parse(token, limits)?;
        let encoded =
            jws.payload.get("AttestationPolicy").and_then(Value::as_str).ok_or(PolicyJwsError::MissingPolicy)?;
        let bytes = B64URL.decode(encoded).map_err(|_| PolicyJwsError::BadPolicyEncoding)?;
        let policy_text = String::from_utf8(bytes).map_err(|_| PolicyJwsError::BadPolicyEncoding)?;
        let policy_hash = sha256_b64url(encoded.as_bytes());
        let compiled = CompiledPolicy::compile(&policy_text)?;
        Ok(PolicyUpload { jws, policy_text, policy_hash, compiled })
    }

    /// Apply the provider's trust model: Isolated needs a signer that is, or
    /// chains to, one of `trusted` (DER), valid at `at_unix`.
    pub fn check_trust(&self, model: TrustModel, trusted: &[Vec<u8>], at_unix: i64) -> Result<(), PolicyJwsError> {
        match (model, &self.jws.signer) {
            (TrustModel::Aad, _) => Ok(()),
            (TrustModel::Isolated, None) => Err(PolicyJwsError::UnsignedNotAllowed),
            (TrustModel::Isolated, Some(s)) => s.verify_trusted(trusted, at_unix),
        }
    }

    /// `x-ms-policy-token-hash` of the upload.
    pub fn token_hash(&self) -> &str {
        &self.jws.token_hash
    }

    /// `x-ms-policy-signer` (a JWK) if the policy was signed.
    pub fn signer_jwk(&self) -> Option<&Value> {
        self.jws.signer.as_ref().map(|s| &s.jwk)
    }
}

/// `x-ms-policy-hash` of policy text: base64url(SHA-256(base64url(text))).
pub fn policy_hash(policy_text: &str) -> String {
    sha256_b64url(B64URL.encode(policy_text.as_bytes()).as_bytes())
}

/// `x-ms-policy-token-hash`: base64url(SHA-256(compact JWS)).
pub fn token_hash(token: &str) -> String {
    sha256_b64url(token.trim().as_bytes())
}

/// The unsigned JWS MAA stores and returns for a policy (the `x-ms-policy`
/// claim of a GET response): `{"alg":"none"}` . `{"AttestationPolicy": …}` .
pub fn unsigned_policy_jws(policy_text: &str) -> String {
    let header = B64URL.encode(br#"{"alg":"none"}"#);
    let payload = json!({ "AttestationPolicy": B64URL.encode(policy_text.as_bytes()) });
    format!("{header}.{}.", B64URL.encode(payload.to_string().as_bytes()))
}

/// MAA's certificate thumbprint: uppercase hex SHA-1 of the DER.
pub fn thumbprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    hex::encode_upper(d.as_ref())
}

fn sha256_b64url(bytes: &[u8]) -> String {
    B64URL.encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// The certificate endpoints take a JSON string holding the JWS.
fn unquote(s: &str) -> Result<std::borrow::Cow<'_, str>, PolicyJwsError> {
    if s.starts_with('"') {
        serde_json::from_str::<String>(s)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| PolicyJwsError::Malformed(format!("the body is not a JSON string: {e}")))
    } else {
        Ok(std::borrow::Cow::Borrowed(s))
    }
}

fn decode_object(b64: &str, part: &'static str) -> Result<Map<String, Value>, PolicyJwsError> {
    let bytes = B64URL.decode(b64).map_err(|_| PolicyJwsError::BadBase64(part))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(PolicyJwsError::BadJson { part, message: "not an object".into() }),
        Err(e) => Err(PolicyJwsError::BadJson { part, message: e.to_string() }),
    }
}

/// A public key to check a JWS signature with.
enum VerifyKey {
    /// PKCS#1 RSAPublicKey DER (as in a certificate's SPKI bit string).
    RsaDer(Vec<u8>),
    RsaComponents {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed P-256 point.
    P256(Vec<u8>),
}

impl VerifyKey {
    fn verify(&self, alg: JwsAlgorithm, msg: &[u8], sig: &[u8]) -> Result<(), PolicyJwsError> {
        let rsa: &'static signature::RsaParameters = match alg {
            JwsAlgorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            JwsAlgorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            _ => &signature::RSA_PKCS1_2048_8192_SHA256,
        };
        let ok = match (self, alg) {
            (VerifyKey::RsaDer(der), JwsAlgorithm::Rs256 | JwsAlgorithm::Ps256) => {
                UnparsedPublicKey::new(rsa, der).verify(msg, sig).is_ok()
            }
            (VerifyKey::RsaComponents { n, e }, JwsAlgorithm::Rs256 | JwsAlgorithm::Ps256) => {
                signature::RsaPublicKeyComponents { n, e }.verify(rsa, msg, sig).is_ok()
            }
            (VerifyKey::P256(point), JwsAlgorithm::Es256) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(msg, sig).is_ok()
            }
            _ => return Err(PolicyJwsError::BadKey(format!("the key type does not match alg {}", alg.as_str()))),
        };
        if ok {
            Ok(())
        } else {
            Err(PolicyJwsError::BadSignature)
        }
    }
}

/// Find the signing key in the header (`x5c`, else `jwk`).
fn signing_key(
    header: &Map<String, Value>,
    alg: JwsAlgorithm,
    limits: &JwsLimits,
) -> Result<(VerifyKey, JwsSigner), PolicyJwsError> {
    let x5c = header.get("x5c").or_else(|| header.get("jwk").and_then(|j| j.get("x5c")));
    if let Some(x5c) = x5c {
        let certs = decode_x5c(x5c, limits)?;
        let leaf = certs.first().ok_or_else(|| PolicyJwsError::BadCertificate("x5c is empty".into()))?;
        let cert = parse_cert(leaf)?;
        let key = cert_key(&cert)?;
        let jwk = signer_jwk(alg, &key, x5c);
        return Ok((key, JwsSigner { certificates: certs, jwk }));
    }
    let jwk = header.get("jwk").and_then(Value::as_object).ok_or(PolicyJwsError::MissingSigningKey)?;
    let field = |name: &str| -> Result<Vec<u8>, PolicyJwsError> {
        jwk.get(name)
            .and_then(Value::as_str)
            .and_then(|s| B64URL.decode(s).ok())
            .ok_or_else(|| PolicyJwsError::BadKey(format!("jwk has no valid '{name}'")))
    };
    let key = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => VerifyKey::RsaComponents { n: field("n")?, e: field("e")? },
        Some("EC") => {
            if jwk.get("crv").and_then(Value::as_str) != Some("P-256") {
                return Err(PolicyJwsError::BadKey("only the P-256 curve is supported".into()));
            }
            let (x, y) = (field("x")?, field("y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err(PolicyJwsError::BadKey("bad P-256 coordinates".into()));
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            VerifyKey::P256(point)
        }
        _ => return Err(PolicyJwsError::BadKey("unsupported or missing 'kty'".into())),
    };
    Ok((key, JwsSigner { certificates: Vec::new(), jwk: Value::Object(jwk.clone()) }))
}

fn signer_jwk(alg: JwsAlgorithm, key: &VerifyKey, x5c: &Value) -> Value {
    let kty = match key {
        VerifyKey::P256(_) => "EC",
        _ => "RSA",
    };
    json!({ "alg": alg.as_str(), "kty": kty, "use": "sig", "x5c": x5c })
}

fn decode_x5c(x5c: &Value, limits: &JwsLimits) -> Result<Vec<Vec<u8>>, PolicyJwsError> {
    let arr = x5c.as_array().ok_or_else(|| PolicyJwsError::BadCertificate("x5c is not an array".into()))?;
    if arr.is_empty() || arr.len() > limits.max_chain_len {
        return Err(PolicyJwsError::BadCertificate(format!(
            "x5c must hold 1 to {} certificates",
            limits.max_chain_len
        )));
    }
    arr.iter()
        .map(|v| {
            let s = v.as_str().ok_or_else(|| PolicyJwsError::BadCertificate("x5c entry is not a string".into()))?;
            if s.len() > limits.max_cert_bytes * 2 {
                return Err(PolicyJwsError::BadCertificate("certificate too large".into()));
            }
            let der = B64STD.decode(s).map_err(|_| PolicyJwsError::BadCertificate("x5c entry is not base64".into()))?;
            if der.len() > limits.max_cert_bytes {
                return Err(PolicyJwsError::BadCertificate("certificate too large".into()));
            }
            Ok(der)
        })
        .collect()
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, PolicyJwsError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(PolicyJwsError::BadCertificate("trailing data after the certificate".into())),
        // MAA's wording when a key is not a certificate.
        Err(_) => {
            Err(PolicyJwsError::BadCertificate("PolicySigningCertificate key is not an X509 security key".into()))
        }
    }
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

fn curve_of(cert: &X509Certificate<'_>) -> Option<String> {
    cert.public_key().algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string())
}

fn cert_key(cert: &X509Certificate<'_>) -> Result<VerifyKey, PolicyJwsError> {
    let spki = cert.public_key();
    let bits = spki.subject_public_key.data.to_vec();
    match spki.algorithm.algorithm.to_id_string().as_str() {
        OID_RSA => Ok(VerifyKey::RsaDer(bits)),
        OID_EC if curve_of(cert).as_deref() == Some(OID_P256) => Ok(VerifyKey::P256(bits)),
        _ => Err(PolicyJwsError::BadKey("the certificate key must be RSA or EC P-256".into())),
    }
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

fn check_validity(cert: &X509Certificate<'_>, der: &[u8], at: i64) -> Result<(), PolicyJwsError> {
    let v = cert.validity();
    if at < v.not_before.timestamp() || at > v.not_after.timestamp() {
        return Err(PolicyJwsError::CertificateNotValid { thumbprint: thumbprint(der) });
    }
    Ok(())
}

/// Verify that `issuer`'s key signed `cert`.
fn verify_cert_signature(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> Result<(), PolicyJwsError> {
    let curve = curve_of(issuer);
    let alg: &'static dyn VerificationAlgorithm =
        match (cert.signature_algorithm.algorithm.to_id_string().as_str(), curve.as_deref()) {
            ("1.2.840.113549.1.1.11", _) => &signature::RSA_PKCS1_2048_8192_SHA256,
            ("1.2.840.113549.1.1.12", _) => &signature::RSA_PKCS1_2048_8192_SHA384,
            ("1.2.840.113549.1.1.13", _) => &signature::RSA_PKCS1_2048_8192_SHA512,
            ("1.2.840.10045.4.3.2", Some(OID_P256)) => &signature::ECDSA_P256_SHA256_ASN1,
            ("1.2.840.10045.4.3.2", Some(OID_P384)) => &signature::ECDSA_P384_SHA256_ASN1,
            ("1.2.840.10045.4.3.3", Some(OID_P256)) => &signature::ECDSA_P256_SHA384_ASN1,
            ("1.2.840.10045.4.3.3", Some(OID_P384)) => &signature::ECDSA_P384_SHA384_ASN1,
            (other, _) => {
                return Err(PolicyJwsError::BadCertificate(format!(
                    "unsupported certificate signature algorithm {other}"
                )))
            }
        };
    UnparsedPublicKey::new(alg, &issuer.public_key().subject_public_key.data)
        .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .map_err(|_| PolicyJwsError::BadSignature)
}

// ---------------------------------------------------------------------------
// Policy signer certificates (`/certificates:add`, `/certificates:remove`).

/// `x-ms-policycertificates-result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateModification {
    IsPresent,
    IsAbsent,
}

impl CertificateModification {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateModification::IsPresent => "IsPresent",
            CertificateModification::IsAbsent => "IsAbsent",
        }
    }
}

/// A parsed, signature-checked certificate add/remove request.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyCertificateRequest {
    pub jws: Jws,
    /// The certificate to add or remove (DER).
    pub certificate: Vec<u8>,
    /// `x-ms-certificate-thumbprint` of that certificate.
    pub thumbprint: String,
}

impl PolicyCertificateRequest {
    /// Parse a request body: a (possibly JSON-quoted) JWS whose payload has
    /// `maa-policyCertificate` (2018 API) or `policyCertificate` (2020+), a
    /// JWK carrying `x5c`. The JWS must be signed.
    pub fn parse(body: &str) -> Result<PolicyCertificateRequest, PolicyJwsError> {
        let limits = JwsLimits::default();
        let jws = Jws::parse(body, &limits)?;
        if jws.signer.is_none() {
            return Err(PolicyJwsError::UnsignedNotAllowed);
        }
        let jwk = jws
            .payload
            .get("maa-policyCertificate")
            .or_else(|| jws.payload.get("policyCertificate"))
            .or_else(|| jws.payload.get("x-ms-policyCertificate"))
            .ok_or(PolicyJwsError::MissingPolicyCertificate)?;
        let x5c = jwk.get("x5c").ok_or_else(|| PolicyJwsError::BadCertificate("the JWK has no x5c".into()))?;
        let certificate = decode_x5c(x5c, &limits)?
            .into_iter()
            .next()
            .ok_or_else(|| PolicyJwsError::BadCertificate("x5c is empty".into()))?;
        parse_cert(&certificate)?;
        let thumbprint = thumbprint(&certificate);
        Ok(PolicyCertificateRequest { jws, certificate, thumbprint })
    }

    /// Check the request is signed by a current signer (or a chain to one).
    pub fn check_signer(&self, current: &[Vec<u8>], at_unix: i64) -> Result<(), PolicyJwsError> {
        match &self.jws.signer {
            Some(s) => s.verify_trusted(current, at_unix),
            None => Err(PolicyJwsError::UnsignedNotAllowed),
        }
    }

    /// Verify the signer and compute the signer set after an add. Adding a
    /// certificate that is already present changes nothing; the result is
    /// `IsPresent` either way.
    pub fn apply_add(
        &self,
        current: &[Vec<u8>],
        at_unix: i64,
    ) -> Result<(Vec<Vec<u8>>, CertificateModification), PolicyJwsError> {
        self.check_signer(current, at_unix)?;
        let mut next = current.to_vec();
        if !next.contains(&self.certificate) {
            next.push(self.certificate.clone());
        }
        Ok((next, CertificateModification::IsPresent))
    }

    /// Verify the signer and compute the signer set after a remove; the
    /// result is `IsAbsent` (also when it was not there). The last
    /// certificate cannot be removed.
    pub fn apply_remove(
        &self,
        current: &[Vec<u8>],
        at_unix: i64,
    ) -> Result<(Vec<Vec<u8>>, CertificateModification), PolicyJwsError> {
        self.check_signer(current, at_unix)?;
        let next: Vec<Vec<u8>> = current.iter().filter(|c| **c != self.certificate).cloned().collect();
        if next.is_empty() {
            return Err(PolicyJwsError::LastCertificate);
        }
        Ok((next, CertificateModification::IsAbsent))
    }
}

/// The JWKS MAA returns from `GET /certificates`
/// (`x-ms-policy-certificates`): one key per signer certificate.
pub fn certificates_jwks(certs: &[Vec<u8>]) -> Value {
    let keys: Vec<Value> = certs
        .iter()
        .map(|der| {
            let kty = match parse_cert(der).ok().and_then(|c| cert_key(&c).ok()) {
                Some(VerifyKey::P256(_)) => "EC",
                _ => "RSA",
            };
            json!({ "kid": thumbprint(der), "kty": kty, "x5c": [B64STD.encode(der)] })
        })
        .collect();
    json!({ "keys": keys })
}

// ---------------------------------------------------------------------------
// Signing (for the CLI's `policy set --key --cert` and for tests).

/// A private key to sign a policy JWS with.
pub enum SigningKey {
    /// RSA key (PKCS#8), signing RS256 or PS256.
    Rsa { key: ring::rsa::KeyPair, pss: bool },
    /// P-256 key (PKCS#8), signing ES256.
    EcdsaP256(signature::EcdsaKeyPair),
}

impl SigningKey {
    /// Load a PKCS#8 DER key: RSA if it parses as RSA, else P-256.
    pub fn from_pkcs8(der: &[u8], rsa_pss: bool) -> Result<SigningKey, PolicyJwsError> {
        if let Ok(key) = ring::rsa::KeyPair::from_pkcs8(der) {
            return Ok(SigningKey::Rsa { key, pss: rsa_pss });
        }
        let rng = ring::rand::SystemRandom::new();
        signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map(SigningKey::EcdsaP256)
            .map_err(|_| PolicyJwsError::BadKey("not an RSA or P-256 PKCS#8 key".into()))
    }

    pub fn algorithm(&self) -> JwsAlgorithm {
        match self {
            SigningKey::Rsa { pss: false, .. } => JwsAlgorithm::Rs256,
            SigningKey::Rsa { pss: true, .. } => JwsAlgorithm::Ps256,
            SigningKey::EcdsaP256(_) => JwsAlgorithm::Es256,
        }
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, PolicyJwsError> {
        let rng = ring::rand::SystemRandom::new();
        match self {
            SigningKey::Rsa { key, pss } => {
                let mut sig = vec![0u8; key.public().modulus_len()];
                let pad: &'static dyn signature::RsaEncoding =
                    if *pss { &signature::RSA_PSS_SHA256 } else { &signature::RSA_PKCS1_SHA256 };
                key.sign(pad, &rng, msg, &mut sig).map_err(|_| PolicyJwsError::BadKey("RSA signing failed".into()))?;
                Ok(sig)
            }
            SigningKey::EcdsaP256(key) => key
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| PolicyJwsError::BadKey("ECDSA signing failed".into())),
        }
    }
}

/// Build a compact JWS over `payload`, signed with `key`, with the DER
/// `chain` (leaf first) in an `x5c` header.
pub fn sign_jws(payload: &Value, key: &SigningKey, chain: &[Vec<u8>]) -> Result<String, PolicyJwsError> {
    let x5c: Vec<String> = chain.iter().map(|c| B64STD.encode(c)).collect();
    let header = json!({ "alg": key.algorithm().as_str(), "x5c": x5c });
    let signing_input =
        format!("{}.{}", B64URL.encode(header.to_string().as_bytes()), B64URL.encode(payload.to_string().as_bytes()));
    let sig = key.sign(signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", B64URL.encode(sig)))
}

/// A signed policy JWS for `policy_text`.
pub fn signed_policy_jws(policy_text: &str, key: &SigningKey, chain: &[Vec<u8>]) -> Result<String, PolicyJwsError> {
    let payload = json!({ "AttestationPolicy": B64URL.encode(policy_text.as_bytes()) });
    sign_jws(&payload, key, chain)
}

/// A signed certificate add/remove body (the JWS, not JSON-quoted).
pub fn signed_certificate_jws(
    certificate_der: &[u8],
    key: &SigningKey,
    chain: &[Vec<u8>],
) -> Result<String, PolicyJwsError> {
    let payload = json!({
        "policyCertificate": { "kty": "RSA", "x5c": [B64STD.encode(certificate_der)] }
    });
    sign_jws(&payload, key, chain)
}
