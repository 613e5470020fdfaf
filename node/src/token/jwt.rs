//! Compact JWTs and JWKS: what `/certs` serves, unsigned draft-policy
//! tokens, and decoding/verification for the CLI, tests and relying parties.
//! Everything here takes untrusted input and never panics on it.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};
use x509_parser::prelude::{FromDer as _, X509Certificate};
use x509_parser::public_key::PublicKey;

use super::{b64url, kid_for_cert, TokenAlg, TokenError};

type Json = Map<String, Value>;

/// base64url that accepts padding or none: JWK members from other issuers are not always unpadded.
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// Standard base64 (x5c) that accepts padding or none.
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// prime256v1 / secp256r1.
const OID_P256: &str = "1.2.840.10045.3.1.7";

/// A verification key, from a certificate or from JWK members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CertKey {
    /// `spki_key` is the RSAPublicKey DER (the SubjectPublicKeyInfo bit string, empty when built from n/e);
    /// `n` and `e` are big-endian without leading zeros.
    Rsa { spki_key: Vec<u8>, n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed P-256 point: 0x04 || x || y.
    Ec { point: Vec<u8> },
}

/// The public key of a DER certificate. Only RSA and P-256 keys are accepted.
pub(crate) fn cert_key(cert_der: &[u8]) -> Result<CertKey, TokenError> {
    let (_, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| TokenError::Key(format!("unparsable certificate: {e}")))?;
    let spki = cert.public_key();
    match spki.parsed().map_err(|e| TokenError::Key(format!("certificate public key: {e}")))? {
        PublicKey::RSA(k) => Ok(CertKey::Rsa {
            spki_key: spki.subject_public_key.data.to_vec(),
            n: unsigned(k.modulus).to_vec(),
            e: unsigned(k.exponent).to_vec(),
        }),
        PublicKey::EC(point) => {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
            if curve.as_deref() != Some(OID_P256) {
                return Err(TokenError::Key("certificate EC key is not on P-256".into()));
            }
            let point = point.data();
            if point.len() != 65 || point[0] != 4 {
                return Err(TokenError::Key("certificate EC key is not an uncompressed P-256 point".into()));
            }
            Ok(CertKey::Ec { point: point.to_vec() })
        }
        _ => Err(TokenError::Key("certificate key is neither RSA nor EC".into())),
    }
}

/// A big-endian integer without its leading zero bytes (DER INTEGERs carry a sign byte; JWK and ring want none).
fn unsigned(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// A JWKS entry for a certificate, MAA style plus standard public members so non-MAA relying parties work:
/// {"kid","kty","use":"sig","x5c":[std-base64 DER], and for RSA "n","e", for EC "crv":"P-256","x","y"}
/// (base64url no pad). No "alg": one RSA key serves both RS256 and PS256.
pub fn jwk_for_cert(cert_der: &[u8]) -> Result<Value, TokenError> {
    let key = cert_key(cert_der)?;
    let mut jwk = Json::new();
    jwk.insert("kid".into(), kid_for_cert(cert_der).into());
    match key {
        CertKey::Rsa { n, e, .. } => {
            jwk.insert("kty".into(), "RSA".into());
            jwk.insert("n".into(), b64url(&n).into());
            jwk.insert("e".into(), b64url(&e).into());
        }
        CertKey::Ec { point } => {
            jwk.insert("kty".into(), "EC".into());
            jwk.insert("crv".into(), "P-256".into());
            jwk.insert("x".into(), b64url(&point[1..33]).into());
            jwk.insert("y".into(), b64url(&point[33..65]).into());
        }
    }
    jwk.insert("use".into(), "sig".into());
    jwk.insert("x5c".into(), Value::Array(vec![STANDARD.encode(cert_der).into()]));
    Ok(Value::Object(jwk))
}

/// {"keys":[...]} for the given certificates (skips, and does not fail on, unparsable ones).
pub fn jwks(certs: &[Vec<u8>]) -> Value {
    let keys: Vec<Value> = certs.iter().filter_map(|c| jwk_for_cert(c).ok()).collect();
    serde_json::json!({ "keys": keys })
}

/// An unsigned JWT (header {"alg":"none","typ":"JWT"} and EMPTY signature part, i.e. "h.p.") — MAA returns these
/// for draft policies.
pub fn unsigned_jwt(claims: &Json) -> String {
    // Serialising a string-keyed map of JSON values cannot fail.
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    format!("{}.{}.", b64url(br#"{"alg":"none","typ":"JWT"}"#), b64url(&payload))
}

/// The three parts of a compact JWS.
fn split_compact(token: &str) -> Result<(&str, &str, &str), TokenError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => Ok((h, p, s)),
        _ => Err(TokenError::Malformed("expected three dot-separated parts".into())),
    }
}

/// A base64url JSON object part of a token.
fn json_part(part: &str, what: &str) -> Result<Json, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|e| TokenError::Malformed(format!("{what}: {e}")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(TokenError::Malformed(format!("{what} is not a JSON object"))),
        Err(e) => Err(TokenError::Malformed(format!("{what}: {e}"))),
    }
}

/// Decoded but unverified parts (for the CLI to print): (header, claims).
pub fn decode_unverified(token: &str) -> Result<(Json, Json), TokenError> {
    let (h, p, _) = split_compact(token.trim())?;
    Ok((json_part(h, "header")?, json_part(p, "payload")?))
}

/// Verifies a compact JWT against a JWKS value ({"keys":[...]}): finds the key by the header's kid (or, with no
/// kid, tries each), uses the key from x5c (certificate public key) or from n/e / crv,x,y; supports RS256, PS256,
/// ES256; rejects alg none and anything else; checks exp and nbf against `now_unix` with `leeway_s`.
/// Returns (header, claims).
pub fn verify_jwt(token: &str, jwks: &Value, now_unix: i64, leeway_s: i64) -> Result<(Json, Json), TokenError> {
    let (h, p, s) = split_compact(token)?;
    let header = json_part(h, "header")?;
    let alg_name = header.get("alg").and_then(Value::as_str).ok_or_else(|| TokenError::Malformed("no alg".into()))?;
    // JWS alg names are case-sensitive, so no TokenAlg::parse here.
    let alg = [TokenAlg::Rs256, TokenAlg::Ps256, TokenAlg::Es256]
        .into_iter()
        .find(|a| a.as_str() == alg_name)
        .ok_or_else(|| TokenError::UnsupportedAlg(alg_name.to_string()))?;
    // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
    if header.contains_key("crit") {
        return Err(TokenError::Malformed("critical header extensions are not supported".into()));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(TokenError::Malformed("kid is not a string".into())),
    };
    let claims = json_part(p, "payload")?;
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|e| TokenError::Malformed(format!("signature: {e}")))?;
    if sig.is_empty() {
        return Err(TokenError::Malformed("empty signature".into()));
    }

    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| TokenError::Key("JWKS has no \"keys\" array".into()))?;
    let candidates: Vec<&Json> = keys
        .iter()
        .filter_map(Value::as_object)
        .filter(|k| kid.is_none_or(|kid| k.get("kid").and_then(Value::as_str) == Some(kid)))
        .collect();
    if candidates.is_empty() {
        return Err(match kid {
            Some(kid) => TokenError::UnknownKid(kid.to_string()),
            None => TokenError::Key("JWKS has no keys".into()),
        });
    }
    let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
    if !candidates.iter().any(|jwk| verify_with(jwk, alg, signing_input, &sig)) {
        return Err(TokenError::BadSignature);
    }

    if let Some(exp) = numeric_date(&claims, "exp")? {
        // RFC 7519 §4.1.4: valid only *before* exp.
        if now_unix.saturating_sub(leeway_s) >= exp {
            return Err(TokenError::Expired { exp, now: now_unix });
        }
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")? {
        if now_unix.saturating_add(leeway_s) < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    Ok((header, claims))
}

/// Whether `sig` over `msg` verifies under `jwk` for `alg`. Keys that are unusable, of the wrong type, or marked
/// for another use or algorithm simply do not verify.
fn verify_with(jwk: &Json, alg: TokenAlg, msg: &[u8], sig: &[u8]) -> bool {
    if jwk.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig") {
        return false;
    }
    if jwk.get("alg").and_then(Value::as_str).is_some_and(|a| a != alg.as_str()) {
        return false;
    }
    let Ok(key) = jwk_key(jwk) else { return false };
    match (alg, key) {
        (TokenAlg::Rs256 | TokenAlg::Ps256, CertKey::Rsa { n, e, .. }) => {
            let params = if alg == TokenAlg::Rs256 {
                &signature::RSA_PKCS1_2048_8192_SHA256
            } else {
                &signature::RSA_PSS_2048_8192_SHA256
            };
            RsaPublicKeyComponents { n: &n, e: &e }.verify(params, msg, sig).is_ok()
        }
        (TokenAlg::Es256, CertKey::Ec { point }) => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point).verify(msg, sig).is_ok()
        }
        _ => false,
    }
}

/// The key of a JWK: from its first x5c certificate if it has one (that is what MAA publishes), else from the
/// RSA or EC members.
fn jwk_key(jwk: &Json) -> Result<CertKey, TokenError> {
    if let Some(first) = jwk.get("x5c").and_then(Value::as_array).and_then(|a| a.first()) {
        let der = first
            .as_str()
            .and_then(|s| B64_LENIENT.decode(s).ok())
            .ok_or_else(|| TokenError::Key("x5c entry is not base64".into()))?;
        return cert_key(&der);
    }
    let member = |name: &str| -> Result<Vec<u8>, TokenError> {
        jwk.get(name)
            .and_then(Value::as_str)
            .and_then(|s| B64URL_LENIENT.decode(s).ok())
            .ok_or_else(|| TokenError::Key(format!("JWK member {name:?} missing or not base64url")))
    };
    match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => Ok(CertKey::Rsa {
            spki_key: Vec::new(),
            n: unsigned(&member("n")?).to_vec(),
            e: unsigned(&member("e")?).to_vec(),
        }),
        Some("EC") => {
            if jwk.get("crv").and_then(Value::as_str) != Some("P-256") {
                return Err(TokenError::Key("EC JWK is not on P-256".into()));
            }
            let (x, y) = (member("x")?, member("y")?);
            // RFC 7518 §6.2.1.2: coordinates are full-length (32 bytes for P-256).
            if x.len() != 32 || y.len() != 32 {
                return Err(TokenError::Key("EC JWK coordinates are not 32 bytes".into()));
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Ok(CertKey::Ec { point })
        }
        other => Err(TokenError::Key(format!("unsupported JWK kty {other:?}"))),
    }
}

/// A NumericDate claim as whole seconds (fractions are allowed by RFC 7519 and rounded down).
fn numeric_date(claims: &Json, name: &str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i,
            (None, Some(_), _) => i64::MAX,
            // `as` saturates; serde_json numbers are always finite.
            (None, None, Some(f)) => f.floor() as i64,
            (None, None, None) => return Err(TokenError::Malformed(format!("{name} is not a number"))),
        })),
        Some(_) => Err(TokenError::Malformed(format!("{name} is not a number"))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::token::keys::test_keys;
    use crate::token::NodeKeys;

    const NOW: i64 = 1_700_000_000;
    const ALGS: [TokenAlg; 3] = [TokenAlg::Rs256, TokenAlg::Ps256, TokenAlg::Es256];

    fn obj(v: Value) -> Json {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn certs(keys: &NodeKeys) -> Vec<Vec<u8>> {
        keys.published().into_iter().map(|p| p.cert_der).collect()
    }

    fn claims() -> Json {
        obj(json!({"iss": "https://p.weu.attest.example", "iat": NOW, "nbf": NOW, "exp": NOW + 28_800,
                   "x-ms-ver": "1.0", "nested": {"a": [1, 2, 3]}}))
    }

    fn sign(alg: TokenAlg, claims: &Json) -> String {
        test_keys().sign_jwt(alg, &Json::new(), claims).unwrap()
    }

    /// Replaces part `i` of a token.
    fn with_part(token: &str, i: usize, part: &str) -> String {
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[i] = part;
        parts.join(".")
    }

    #[test]
    fn sign_then_verify_roundtrips_for_every_alg() {
        let keys = test_keys();
        let set = jwks(&certs(keys));
        let mut extra = Json::new();
        extra.insert("jku".into(), "https://p.weu.attest.example/certs".into());
        for alg in ALGS {
            let token = keys.sign_jwt(alg, &extra, &claims()).unwrap();
            let (h, c) = verify_jwt(&token, &set, NOW + 60, 0).unwrap();
            assert_eq!(c, claims());
            assert_eq!(h["alg"], alg.as_str());
            assert_eq!(h["kid"], keys.kid(alg));
            assert_eq!(h["jku"], "https://p.weu.attest.example/certs");
            assert_eq!(decode_unverified(&token).unwrap(), (h, c));
        }
    }

    #[test]
    fn verifies_from_bare_public_members_and_without_kid() {
        let keys = test_keys();
        // JWKS without x5c: keys come from n/e and crv/x/y.
        let mut set = jwks(&certs(keys));
        for k in set["keys"].as_array_mut().unwrap() {
            k.as_object_mut().unwrap().remove("x5c");
        }
        for alg in ALGS {
            verify_jwt(&sign(alg, &claims()), &set, NOW, 0).unwrap();
        }
        // No kid in the header: every key is tried.
        let full = jwks(&certs(keys));
        for alg in ALGS {
            let header = obj(json!({"alg": alg.as_str(), "typ": "JWT"}));
            let token = keys.sign_with_header(alg, &header, &claims()).unwrap();
            verify_jwt(&token, &full, NOW, 0).unwrap();
            verify_jwt(&token, &set, NOW, 0).unwrap();
        }
    }

    #[test]
    fn tampered_tokens_are_rejected() {
        let set = jwks(&certs(test_keys()));
        for alg in ALGS {
            let token = sign(alg, &claims());
            let mut forged = claims();
            forged.insert("x-ms-ver".into(), "2.0".into());
            let forged = with_part(&token, 1, &b64url(&serde_json::to_vec(&forged).unwrap()));
            assert!(matches!(verify_jwt(&forged, &set, NOW, 0), Err(TokenError::BadSignature)), "{alg:?}");

            let sig = URL_SAFE_NO_PAD.decode(token.rsplit('.').next().unwrap()).unwrap();
            let mut flipped = sig.clone();
            flipped[10] ^= 1;
            let bad = with_part(&token, 2, &b64url(&flipped));
            assert!(matches!(verify_jwt(&bad, &set, NOW, 0), Err(TokenError::BadSignature)), "{alg:?}");
            let short = with_part(&token, 2, &b64url(&sig[..sig.len() - 1]));
            assert!(matches!(verify_jwt(&short, &set, NOW, 0), Err(TokenError::BadSignature)), "{alg:?}");
        }
        // RS256 and PS256 signatures are not interchangeable.
        let rs = sign(TokenAlg::Rs256, &claims());
        let ps = sign(TokenAlg::Ps256, &claims());
        let mixed = with_part(&ps, 2, rs.rsplit('.').next().unwrap());
        assert!(matches!(verify_jwt(&mixed, &set, NOW, 0), Err(TokenError::BadSignature)));
    }

    #[test]
    fn wrong_or_unknown_kid_is_rejected() {
        let keys = test_keys();
        let set = jwks(&certs(keys));
        let header = obj(json!({"alg": "RS256", "typ": "JWT", "kid": "no-such-key"}));
        let token = keys.sign_with_header(TokenAlg::Rs256, &header, &claims()).unwrap();
        assert!(matches!(verify_jwt(&token, &set, NOW, 0), Err(TokenError::UnknownKid(k)) if k == "no-such-key"));
        // A kid naming the EC key on an RS256 token.
        let header = obj(json!({"alg": "RS256", "typ": "JWT", "kid": keys.kid(TokenAlg::Es256)}));
        let token = keys.sign_with_header(TokenAlg::Rs256, &header, &claims()).unwrap();
        assert!(matches!(verify_jwt(&token, &set, NOW, 0), Err(TokenError::BadSignature)));
        // An empty JWKS knows no kid.
        let token = sign(TokenAlg::Es256, &claims());
        assert!(matches!(verify_jwt(&token, &jwks(&[]), NOW, 0), Err(TokenError::UnknownKid(_))));
        assert!(matches!(verify_jwt(&token, &json!({}), NOW, 0), Err(TokenError::Key(_))));
        // A JWK restricted to another alg does not verify.
        let mut set = jwks(&certs(keys));
        for k in set["keys"].as_array_mut().unwrap() {
            k.as_object_mut().unwrap().insert("alg".into(), "PS256".into());
        }
        assert!(verify_jwt(&sign(TokenAlg::Ps256, &claims()), &set, NOW, 0).is_ok());
        assert!(matches!(verify_jwt(&sign(TokenAlg::Rs256, &claims()), &set, NOW, 0), Err(TokenError::BadSignature)));
    }

    #[test]
    fn alg_none_and_other_algs_are_rejected() {
        let set = jwks(&certs(test_keys()));
        let unsigned = unsigned_jwt(&claims());
        assert!(matches!(verify_jwt(&unsigned, &set, NOW, 0), Err(TokenError::UnsupportedAlg(a)) if a == "none"));
        // A real signature under a header rewritten to "none" or another alg.
        let token = sign(TokenAlg::Rs256, &claims());
        for alg in ["none", "None", "HS256", "rs256", "RS384", "EdDSA"] {
            let h = b64url(&serde_json::to_vec(&json!({"alg": alg, "kid": test_keys().kid(TokenAlg::Rs256)})).unwrap());
            let forged = with_part(&token, 0, &h);
            assert!(matches!(verify_jwt(&forged, &set, NOW, 0), Err(TokenError::UnsupportedAlg(a)) if a == alg));
        }
        let crit = obj(json!({"alg": "ES256", "crit": ["b64"], "b64": false}));
        let token = test_keys().sign_with_header(TokenAlg::Es256, &crit, &claims()).unwrap();
        assert!(matches!(verify_jwt(&token, &set, NOW, 0), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn exp_and_nbf_are_checked_with_leeway() {
        let set = jwks(&certs(test_keys()));
        let mut c = claims();
        c.insert("exp".into(), (NOW - 30).into());
        // nbf = NOW would make the NOW - 31 check below fail on nbf instead.
        c.remove("nbf");
        let token = sign(TokenAlg::Es256, &c);
        assert!(verify_jwt(&token, &set, NOW, 60).is_ok());
        assert!(
            matches!(verify_jwt(&token, &set, NOW, 0), Err(TokenError::Expired { exp, now }) if exp == NOW - 30 && now == NOW)
        );
        // exp itself is already expired.
        assert!(matches!(verify_jwt(&token, &set, NOW - 30, 0), Err(TokenError::Expired { .. })));
        assert!(verify_jwt(&token, &set, NOW - 31, 0).is_ok());

        let mut c = claims();
        c.insert("nbf".into(), (NOW + 30).into());
        let token = sign(TokenAlg::Rs256, &c);
        assert!(verify_jwt(&token, &set, NOW, 60).is_ok());
        assert!(verify_jwt(&token, &set, NOW + 30, 0).is_ok());
        assert!(matches!(verify_jwt(&token, &set, NOW, 0), Err(TokenError::NotYetValid)));

        // Fractional NumericDates are fine; non-numbers are not.
        let mut c = claims();
        c.insert("exp".into(), json!(NOW as f64 + 10.5));
        assert!(verify_jwt(&sign(TokenAlg::Rs256, &c), &set, NOW, 0).is_ok());
        c.insert("exp".into(), json!(u64::MAX));
        assert!(verify_jwt(&sign(TokenAlg::Rs256, &c), &set, NOW, 0).is_ok());
        c.insert("exp".into(), json!("tomorrow"));
        assert!(matches!(verify_jwt(&sign(TokenAlg::Rs256, &c), &set, NOW, 0), Err(TokenError::Malformed(_))));
        // No exp/nbf at all: nothing to check.
        assert!(verify_jwt(&sign(TokenAlg::Ps256, &Json::new()), &set, i64::MAX, i64::MAX).is_ok());
    }

    #[test]
    fn jwks_entries_carry_public_members_and_the_certificate() {
        let keys = test_keys();
        let mut input = certs(keys);
        input.insert(1, b"not a certificate".to_vec());
        let set = jwks(&input);
        let entries = set["keys"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "the unparsable certificate is skipped");
        for (entry, p) in entries.iter().zip(keys.published()) {
            assert_eq!(entry["kid"], p.kid.as_str());
            assert_eq!(entry["kty"], p.kty);
            assert_eq!(entry["use"], "sig");
            let x5c = entry["x5c"].as_array().unwrap();
            assert_eq!(x5c.len(), 1);
            assert_eq!(STANDARD.decode(x5c[0].as_str().unwrap()).unwrap(), p.cert_der);
            let b64 = |m: &str| URL_SAFE_NO_PAD.decode(entry[m].as_str().unwrap()).unwrap();
            match p.kty {
                "RSA" => {
                    assert_eq!(b64("n").len(), 256);
                    assert_eq!(b64("e"), [1, 0, 1]);
                }
                _ => {
                    assert_eq!(entry["crv"], "P-256");
                    assert_eq!((b64("x").len(), b64("y").len()), (32, 32));
                }
            }
        }
        assert!(jwk_for_cert(b"junk").is_err());
        assert_eq!(jwks(&[]), json!({"keys": []}));
    }

    #[test]
    fn unsigned_jwt_has_none_header_and_empty_signature() {
        let token = unsigned_jwt(&claims());
        assert!(token.ends_with('.'));
        assert_eq!(token.split('.').count(), 3);
        let (h, c) = decode_unverified(&token).unwrap();
        assert_eq!(Value::Object(h), json!({"alg": "none", "typ": "JWT"}));
        assert_eq!(c, claims());
    }

    #[test]
    fn malformed_tokens_are_errors_not_panics() {
        let set = jwks(&certs(test_keys()));
        let good = sign(TokenAlg::Rs256, &claims());
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            String::new(),
            ".".into(),
            "..".into(),
            "...".into(),
            "a.b".into(),
            "a.b.c.d.e".into(),
            "!!.??.**".into(),
            format!("{}.{}", parts[0], parts[1]),
            format!("{}.{}.", parts[0], parts[1]),
            format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}", b64url(b"[1,2]"), parts[1], parts[2]),
            format!("{}.{}.{}", b64url(b"{\"alg\":5}"), parts[1], parts[2]),
            format!("{}.{}.{}", b64url(br#"{"alg":"RS256","kid":7}"#), parts[1], parts[2]),
            format!("{}.{}.{}", parts[0], b64url(b"not json"), parts[2]),
            format!("{}.{}.{}", parts[0], b64url(b"\"string\""), parts[2]),
            format!("{}\u{e9}.{}.{}", parts[0], parts[1], parts[2]),
        ];
        for t in &cases {
            assert!(verify_jwt(t, &set, NOW, 0).is_err(), "{t:?}");
        }
        assert!(decode_unverified("a.b").is_err());
        assert!(decode_unverified(&format!("{}.x.", parts[0])).is_err());

        // Broken JWKS entries are skipped, not fatal, and never panic.
        let kid = test_keys().kid(TokenAlg::Rs256);
        for bad in [
            json!({"kid": kid, "x5c": ["@@@"]}),
            json!({"kid": kid, "x5c": [b64url(b"junk")]}),
            json!({"kid": kid, "x5c": [5]}),
            json!({"kid": kid, "kty": "RSA", "n": "AA", "e": "AQAB"}),
            json!({"kid": kid, "kty": "RSA"}),
            json!({"kid": kid, "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
            json!({"kid": kid, "kty": "EC", "crv": "P-384"}),
            json!({"kid": kid, "kty": "oct", "k": "AA"}),
            json!({"kid": kid, "use": "enc", "kty": "RSA"}),
            json!("not an object"),
        ] {
            let set = json!({"keys": [bad]});
            assert!(verify_jwt(&good, &set, NOW, 0).is_err());
        }
        assert!(matches!(verify_jwt(&good, &json!({"keys": 3}), NOW, 0), Err(TokenError::Key(_))));
    }

    #[test]
    fn tokens_verify_with_jsonwebtoken() {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation};
        let keys = test_keys();
        let set = jwks(&certs(keys));
        let entry =
            |alg: TokenAlg| set["keys"].as_array().unwrap().iter().find(|k| k["kid"] == keys.kid(alg)).unwrap().clone();
        // No clock reads in tests: time claims are checked by verify_jwt's tests, not here.
        let validation = |alg| {
            let mut v = Validation::new(alg);
            v.validate_exp = false;
            v.required_spec_claims.clear();
            v
        };
        for (alg, jalg) in [
            (TokenAlg::Rs256, Algorithm::RS256),
            (TokenAlg::Ps256, Algorithm::PS256),
            (TokenAlg::Es256, Algorithm::ES256),
        ] {
            let token = sign(alg, &claims());
            let jwk = entry(alg);
            let key = match alg {
                TokenAlg::Es256 => {
                    DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap()).unwrap()
                }
                _ => DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap()).unwrap(),
            };
            let data = jsonwebtoken::decode::<Value>(&token, &key, &validation(jalg)).unwrap();
            assert_eq!(data.claims, Value::Object(claims()));
            assert_eq!(data.header.kid.as_deref(), Some(keys.kid(alg)));
            // Our JWK parses as jsonwebtoken's JWK type and yields a working key too.
            let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).unwrap();
            let key = DecodingKey::from_jwk(&parsed).unwrap();
            jsonwebtoken::decode::<Value>(&token, &key, &validation(jalg)).unwrap();
            // And a tampered token fails there as well.
            let mut c = claims();
            c.insert("iss".into(), "https://evil.example".into());
            let forged = with_part(&token, 1, &b64url(&serde_json::to_vec(&c).unwrap()));
            assert!(jsonwebtoken::decode::<Value>(&forged, &key, &validation(jalg)).is_err());
        }
    }
}
