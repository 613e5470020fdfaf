//! Attestation tokens: this node's signing keys and compact JWTs.
//!
//! - [`keys`]: [`NodeKeys`], the node's token-signing keys on disk and the
//!   signing of tokens with them; [`PublishedKey`], what `/certs` publishes.
//! - [`jwt`]: JWKS rendering, unsigned (draft-policy) tokens, decoding and
//!   verification of compact JWTs (for the CLI, tests and relying parties).
//!
//! Decisions:
//! - Every node has one RSA-2048 key (RS256 and PS256) and one P-256 key
//!   (ES256), each with a self-signed certificate, like MAA's per-instance
//!   self-signed signing certificates. Keys are made once and reloaded.
//! - `kid` = base64url (no padding) of SHA-256 over the certificate DER
//!   ([`kid_for_cert`]): derivable by anyone holding the certificate, unique
//!   per certificate, and URL/header safe.
//! - File layout in the key directory (mode 0700): `rsa-key.pem`,
//!   `ec-key.pem` (PKCS#8 PEM, mode 0600, written atomically via a 0600 temp
//!   file, fsync and rename) and `rsa-cert.pem`, `ec-cert.pem` (PEM). A
//!   rotation renames the current files to `rsa-key.<N>.pem` etc., N being
//!   the next retired-generation number (1, 2, …), then moves the new ones in.
//! - Rotation semantics: the new key is published first (its certificate
//!   registered so every node's `/certs` lists it) before tokens are signed
//!   with it, and the old certificate is kept published until every token it
//!   signed has expired. This module only makes the new generation and keeps
//!   the old files; publication and retention are the caller's job
//!   (`crate::signing`).
//! - No clock reads here: times are passed in as Unix seconds.

pub mod jwt;
pub mod keys;

use std::path::PathBuf;

pub use keys::{kid_for_cert, NodeKeys, PublishedKey};

/// Why a key or token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("token key: {0}")]
    Key(String),
    #[error("signing the token failed")]
    Sign,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token expired at {exp} (now {now})")]
    Expired { exp: i64, now: i64 },
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("no key with kid {0:?}")]
    UnknownKid(String),
    #[error("unsupported token algorithm {0:?}")]
    UnsupportedAlg(String),
}

/// A token signing algorithm. Serialised as its JWS name (`"RS256"` …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TokenAlg {
    #[serde(rename = "RS256")]
    Rs256,
    #[serde(rename = "PS256")]
    Ps256,
    #[serde(rename = "ES256")]
    Es256,
}

impl TokenAlg {
    /// `"RS256"`, `"PS256"` or `"ES256"`, in any case (MAA's API is lenient
    /// about the provider setting; JWS headers are matched exactly elsewhere).
    pub fn parse(s: &str) -> Option<TokenAlg> {
        [TokenAlg::Rs256, TokenAlg::Ps256, TokenAlg::Es256].into_iter().find(|a| a.as_str().eq_ignore_ascii_case(s))
    }

    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAlg::Rs256 => "RS256",
            TokenAlg::Ps256 => "PS256",
            TokenAlg::Es256 => "ES256",
        }
    }
}

impl std::fmt::Display for TokenAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// base64url without padding, as JWS compact serialisation requires.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alg_parse_and_names() {
        for (s, a) in [("RS256", TokenAlg::Rs256), ("ps256", TokenAlg::Ps256), ("Es256", TokenAlg::Es256)] {
            assert_eq!(TokenAlg::parse(s), Some(a));
            assert!(a.as_str().eq_ignore_ascii_case(s));
        }
        for bad in ["", "none", "HS256", "RS384", "RS2566"] {
            assert_eq!(TokenAlg::parse(bad), None, "{bad}");
        }
        assert_eq!(serde_json::to_string(&TokenAlg::Es256).unwrap(), "\"ES256\"");
        assert_eq!(serde_json::from_str::<TokenAlg>("\"PS256\"").unwrap(), TokenAlg::Ps256);
    }
}
