//! Bearer-token authorization for management calls.
//!
//! ## Model
//!
//! Like Azure Attestation, attestd trusts one or more **OpenID issuers**
//! (`[[auth.issuers]]` in the node config: Entra ID, Keycloak, or the
//! development issuer made by [`dev_issuer`]). A management call carries
//! `Authorization: Bearer <JWT>`; the token is accepted when
//!
//! - it is a compact JWS signed with RS256, PS256 or ES256 (never `none`,
//!   never HMAC: a shared secret would let anyone holding the JWKS mint
//!   tokens) by a key of the issuer named in its `iss` — keys come from the
//!   issuer's JWKS (`jwks_path`, re-read when the file changes, or
//!   `jwks_uri`, fetched over HTTPS and refreshed every `refresh_s`, and at
//!   most once per 30 s when a token names an unknown `kid`);
//! - its `aud` (string or array) contains one of the issuer's audiences;
//! - it carries `exp` and `sub`, `exp`/`nbf` hold at the injected clock
//!   `now_unix` give or take `leeway_s`.
//!
//! The caller's **role** is the highest one its role claim (`roles` by
//! default; a string, space-separated string or array of strings) maps to
//! through the issuer's `role_map` (or, with an empty map, the literal
//! names `Reader`/`Contributor`/`Owner`, case-insensitively). Roles are
//! ordered, each including the ones below it:
//!
//! | role | may |
//! | --- | --- |
//! | `Reader` | GET policies, policy signer certificates, providers |
//! | `Contributor` | set/reset policies, add/remove policy signer certificates |
//! | `Owner` | create/delete providers, admin actions (drain, key rotation, collateral import) |
//!
//! Attestation itself on the shared providers is anonymous, as in MAA; a
//! custom provider may require `Reader` for attest
//! ([`Authenticator::authenticate_optional`] and a role check by the caller).
//!
//! Failures are typed ([`AuthError`]) and mapped to 401/403/503 by the HTTP
//! layer, which renders MAA's error JSON. Tokens are never logged or echoed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Map, Value};

use crate::token::keys::{pem_decode, pem_encode};

/// Largest accepted `Authorization` header value.
pub const MAX_AUTHORIZATION_LEN: usize = 16 * 1024;
/// Issuer (`iss`) of the development OpenID issuer.
pub const DEV_ISSUER: &str = "https://dev-issuer.attestd.local";
/// The audience the Azure SDK requests (scope `https://attest.azure.net/.default`).
pub const DEV_AUDIENCE: &str = "https://attest.azure.net";
/// File names of the development issuer inside its directory.
pub const DEV_KEY_FILE: &str = "auth-issuer.key";
pub const DEV_JWKS_FILE: &str = "auth-jwks.json";

/// A JWKS larger than this is refused (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Keys used from one JWKS; bounds the work of a token without `kid`.
const MAX_KEYS: usize = 64;
/// At most one JWKS fetch per this many seconds because of unknown kids
/// (or after a failed refresh), so junk tokens cannot make us hammer the IdP.
const UNKNOWN_KID_REFETCH_S: i64 = 30;
/// Retry interval while an issuer has no keys at all (first fetch failed).
const COLD_RETRY_S: i64 = 5;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest accepted `leeway_s`: more would quietly disable `exp`.
const MAX_LEEWAY_S: u64 = 3600;
const MIN_REFRESH_S: u64 = 60;
/// Where distributions keep their CA bundle; the first one found is trusted
/// for `jwks_uri` (reqwest is built without bundled roots).
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

// ---------------------------------------------------------------- roles

/// A caller's role; ordered so that `Owner > Contributor > Reader` and a
/// higher role satisfies every lower requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    #[serde(alias = "reader")]
    Reader,
    #[serde(alias = "contributor")]
    Contributor,
    #[serde(alias = "owner")]
    Owner,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Reader, Role::Contributor, Role::Owner];

    /// `Reader`/`Contributor`/`Owner`, case-insensitively.
    pub fn parse(s: &str) -> Option<Role> {
        let s = s.trim();
        Role::ALL.into_iter().find(|r| r.as_str().eq_ignore_ascii_case(s))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "Reader",
            Role::Contributor => "Contributor",
            Role::Owner => "Owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------- config

/// `[auth]` section of the node's TOML config. The default has no issuers,
/// which refuses every management call (see [`AuthError::NotConfigured`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Accepted clock skew in seconds (default 60, at most 3600).
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { issuers: Vec::new(), leeway_s: default_leeway_s() }
    }
}

/// One trusted OpenID issuer (`[[auth.issuers]]`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Exact `iss` value of its tokens.
    pub issuer: String,
    /// A token's `aud` must contain one of these.
    pub audience: Vec<String>,
    /// JWKS JSON file, re-read when it changes. Exactly one of `jwks_path`
    /// and `jwks_uri` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_path: Option<PathBuf>,
    /// JWKS fetched over HTTPS (refreshed every `refresh_s`, and at most
    /// once per 30 s when a token names an unknown `kid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Extra root CA(s) (PEM, may be a bundle) for `jwks_uri`, trusted in
    /// addition to the system bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Claim holding the caller's roles (default `roles`): a string, a
    /// space-separated string or an array of strings. A dotted name such as
    /// `realm_access.roles` reaches into nested objects when no top-level
    /// claim has that exact name.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Claim value -> role, e.g. `{"Attestation.Reader" = "Reader",
    /// "Attestation.Contributor" = "Contributor", "Attestation.Owner" = "Owner"}`.
    /// Exact matches win; otherwise keys match case-insensitively. When
    /// empty, the values `Reader`/`Contributor`/`Owner` (any case) map to
    /// themselves; a non-empty map replaces that default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub role_map: BTreeMap<String, Role>,
    /// Seconds between JWKS refreshes for `jwks_uri` (default 3600, at least 60).
    #[serde(default = "default_refresh_s")]
    pub refresh_s: u64,
}

fn default_leeway_s() -> u64 {
    60
}

fn default_role_claim() -> String {
    "roles".to_string()
}

fn default_refresh_s() -> u64 {
    3600
}

// ---------------------------------------------------------------- errors

/// Why a call was not authorized. [`AuthError::http_status`] gives the
/// status the HTTP layer answers with.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this operation requires an 'Authorization: Bearer <token>' header")]
    MissingToken,
    #[error("malformed Authorization header: {0}")]
    Malformed(String),
    #[error("token issuer '{0}' is not trusted by this service")]
    UnknownIssuer(String),
    #[error("invalid bearer token: {0}")]
    InvalidToken(String),
    #[error("the caller's role ({}) does not allow this operation; it requires {needed} or higher", .have.map_or("none", Role::as_str))]
    Forbidden { needed: Role, have: Option<Role> },
    #[error(
        "management operations require a bearer token from a trusted issuer, but this node trusts none; \
         the operator must configure at least one [[auth.issuers]] entry in the node configuration"
    )]
    NotConfigured,
    #[error("signing keys of the token issuer are unavailable: {0}")]
    JwksUnavailable(String),
    /// Invalid `[auth]` configuration or dev-issuer files (startup and CLI
    /// only, never returned by `authorize`).
    #[error("auth configuration: {0}")]
    Config(String),
}

impl AuthError {
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::MissingToken
            | AuthError::Malformed(_)
            | AuthError::UnknownIssuer(_)
            | AuthError::InvalidToken(_)
            | AuthError::NotConfigured => 401,
            AuthError::Forbidden { .. } => 403,
            AuthError::JwksUnavailable(_) => 503,
            AuthError::Config(_) => 500,
        }
    }
}

/// Who called (for audit logs).
#[derive(Debug, Clone)]
pub struct Principal {
    pub issuer: String,
    pub subject: String,
    /// Highest role held; `None` when the token maps to no role.
    pub role: Option<Role>,
}

// ---------------------------------------------------------------- keys

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcP256,
}

struct VerifyKey {
    kid: Option<String>,
    /// The JWK's own `alg`, if it names one: the key is then used for that
    /// algorithm only (RS256 keys are not tried for PS256 and vice versa).
    alg: Option<Algorithm>,
    kind: KeyKind,
    key: DecodingKey,
}

impl VerifyKey {
    fn fits(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        let kind_ok = matches!(
            (self.kind, alg),
            (KeyKind::Rsa, Algorithm::RS256 | Algorithm::PS256) | (KeyKind::EcP256, Algorithm::ES256)
        );
        let alg_ok = self.alg.is_none_or(|a| a == alg);
        let kid_ok = kid.is_none_or(|k| self.kid.as_deref() == Some(k));
        kind_ok && alg_ok && kid_ok
    }
}

#[derive(Default)]
struct KeySet {
    keys: Vec<VerifyKey>,
}

impl KeySet {
    fn matching<'a>(&'a self, kid: Option<&'a str>, alg: Algorithm) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        self.keys.iter().filter(move |k| k.fits(kid, alg))
    }
}

/// Parses a JWKS, keeping the RSA and P-256 signature keys. Keys of other
/// types or uses are skipped, not errors: real JWKS mix them.
fn parse_jwks(bytes: &[u8]) -> Result<KeySet, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let entries = doc.get("keys").and_then(Value::as_array).ok_or("no \"keys\" array")?;
    let keys: Vec<VerifyKey> = entries.iter().filter_map(verify_key).take(MAX_KEYS).collect();
    if keys.is_empty() {
        return Err(format!("none of its {} key(s) is an RSA or P-256 signature key", entries.len()));
    }
    Ok(KeySet { keys })
}

fn verify_key(entry: &Value) -> Option<VerifyKey> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).ok()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops.iter().any(|o| matches!(o, KeyOperations::Verify)) {
            return None;
        }
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::PS256) => Some(Algorithm::PS256),
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(_) => return None,
    };
    let (kind, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => (KeyKind::Rsa, DecodingKey::from_rsa_components(&p.n, &p.e).ok()?),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (KeyKind::EcP256, DecodingKey::from_ec_components(&p.x, &p.y).ok()?)
        }
        _ => return None,
    };
    Some(VerifyKey { kid: jwk.common.key_id, alg, kind, key })
}

/// What identifies one version of a JWKS file: any rewrite (in place or by
/// rename) changes at least one of these, even within one mtime tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    mtime: Option<SystemTime>,
    #[cfg(unix)]
    ino: u64,
    #[cfg(unix)]
    ctime: (i64, i64),
}

fn file_stamp(path: &Path) -> std::io::Result<FileStamp> {
    let m = std::fs::metadata(path)?;
    #[cfg(unix)]
    use std::os::unix::fs::MetadataExt as _;
    Ok(FileStamp {
        len: m.len(),
        mtime: m.modified().ok(),
        #[cfg(unix)]
        ino: m.ino(),
        #[cfg(unix)]
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

fn load_jwks_file(path: &Path) -> Result<(FileStamp, KeySet), String> {
    let stamp = file_stamp(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if stamp.len > MAX_JWKS_BYTES as u64 {
        return Err(format!("{} is larger than {MAX_JWKS_BYTES} bytes", path.display()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let keys = parse_jwks(&bytes).map_err(|e| format!("JWKS {}: {e}", path.display()))?;
    Ok((stamp, keys))
}

#[derive(Default)]
struct FetchState {
    last_ok: Option<i64>,
    last_attempt: Option<i64>,
}

enum Source {
    File {
        path: PathBuf,
        /// Stamp of the version last looked at (loaded or refused); `None`
        /// after the file could not be read, so that is logged once.
        seen: Mutex<Option<FileStamp>>,
    },
    Uri {
        uri: String,
        client: reqwest::Client,
        refresh_s: i64,
        /// Serialises fetches; held across the request (tokio mutex).
        state: tokio::sync::Mutex<FetchState>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Refresh {
    Scheduled,
    UnknownKid,
}

/// Seconds from `then` to `now`; a clock that went backwards counts as
/// "long ago" so that state keyed to the old time does not get stuck.
fn since(now: i64, then: Option<i64>) -> i64 {
    match then {
        Some(t) if now >= t => now - t,
        _ => i64::MAX,
    }
}

struct Issuer {
    issuer: String,
    audience: Vec<String>,
    role_claim: String,
    role_map: BTreeMap<String, Role>,
    keys: RwLock<Arc<KeySet>>,
    source: Source,
}

impl Issuer {
    fn current(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn install(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    /// Brings the key set up to date (file changed, refresh due, or an
    /// unknown kid). Failures keep the previous keys and are logged.
    async fn refresh(&self, now: i64, why: Refresh) {
        match &self.source {
            Source::File { path, seen } => self.refresh_file(path, seen),
            Source::Uri { uri, client, refresh_s, state } => {
                self.refresh_uri(uri, client, *refresh_s, state, now, why).await
            }
        }
    }

    fn refresh_file(&self, path: &Path, seen: &Mutex<Option<FileStamp>>) {
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let stamp = match file_stamp(path) {
            Ok(s) => s,
            Err(e) => {
                if seen.take().is_some() {
                    tracing::warn!(issuer = %self.issuer, path = %path.display(), error = %e,
                        "JWKS file unreadable; keeping the keys loaded before");
                }
                return;
            }
        };
        if *seen == Some(stamp) {
            return;
        }
        match load_jwks_file(path) {
            Ok((loaded, keys)) => {
                *seen = Some(loaded);
                tracing::info!(issuer = %self.issuer, path = %path.display(), keys = keys.keys.len(), "JWKS reloaded");
                metrics::counter!("attest_auth_jwks_refresh_total", "source" => "file", "outcome" => "ok").increment(1);
                self.install(keys);
            }
            Err(e) => {
                // Remember this version so a half-written file is reported
                // once; the finished write changes the stamp again.
                *seen = Some(stamp);
                tracing::warn!(issuer = %self.issuer, error = %e, "JWKS file rejected; keeping the keys loaded before");
                metrics::counter!("attest_auth_jwks_refresh_total", "source" => "file", "outcome" => "error")
                    .increment(1);
            }
        }
    }

    async fn refresh_uri(
        &self,
        uri: &str,
        client: &reqwest::Client,
        refresh_s: i64,
        state: &tokio::sync::Mutex<FetchState>,
        now: i64,
        why: Refresh,
    ) {
        // With keys in hand, a request never queues behind another's fetch.
        let mut st = if self.current().keys.is_empty() {
            state.lock().await
        } else {
            match state.try_lock() {
                Ok(g) => g,
                Err(_) => return,
            }
        };
        let have_keys = !self.current().keys.is_empty();
        let since_attempt = since(now, st.last_attempt);
        let due = if !have_keys {
            since_attempt >= COLD_RETRY_S
        } else {
            match why {
                Refresh::Scheduled => {
                    since(now, st.last_ok) >= refresh_s && since_attempt >= UNKNOWN_KID_REFETCH_S.min(refresh_s)
                }
                Refresh::UnknownKid => since_attempt >= UNKNOWN_KID_REFETCH_S,
            }
        };
        if !due {
            return;
        }
        st.last_attempt = Some(now);
        match fetch_jwks(client, uri).await.and_then(|b| parse_jwks(&b).map_err(|e| format!("JWKS from {uri}: {e}"))) {
            Ok(keys) => {
                st.last_ok = Some(now);
                tracing::info!(issuer = %self.issuer, uri, keys = keys.keys.len(), "JWKS fetched");
                metrics::counter!("attest_auth_jwks_refresh_total", "source" => "uri", "outcome" => "ok").increment(1);
                self.install(keys);
            }
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, error = %e, have_keys, "JWKS fetch failed");
                metrics::counter!("attest_auth_jwks_refresh_total", "source" => "uri", "outcome" => "error")
                    .increment(1);
            }
        }
    }

    /// The key set to verify a token with `kid`/`alg`, refreshed as needed.
    async fn keys_for(&self, kid: Option<&str>, alg: Algorithm, now: i64) -> Result<Arc<KeySet>, AuthError> {
        self.refresh(now, Refresh::Scheduled).await;
        let mut keys = self.current();
        if kid.is_some() && keys.matching(kid, alg).next().is_none() && matches!(self.source, Source::Uri { .. }) {
            // Possibly a key the issuer rotated in since our last fetch.
            self.refresh(now, Refresh::UnknownKid).await;
            keys = self.current();
        }
        if keys.keys.is_empty() {
            return Err(AuthError::JwksUnavailable(format!("no signing keys loaded for issuer {}", self.issuer)));
        }
        if keys.matching(kid, alg).next().is_none() {
            return Err(AuthError::InvalidToken(match kid {
                Some(k) => format!("issuer {} has no {alg:?} key with kid '{}'", self.issuer, printable(k, 100)),
                None => format!("issuer {} has no {alg:?} key", self.issuer),
            }));
        }
        Ok(keys)
    }

    /// Checks the verified claims at `now` and builds the principal.
    fn principal(&self, claims: &Map<String, Value>, now: i64, leeway: i64) -> Result<Principal, AuthError> {
        let exp = numeric_claim(claims, "exp")?.ok_or_else(|| invalid("token has no exp claim"))?;
        if now >= exp.saturating_add(leeway) {
            return Err(AuthError::InvalidToken(format!("token expired at {exp} (now {now})")));
        }
        if let Some(nbf) = numeric_claim(claims, "nbf")? {
            if now.saturating_add(leeway) < nbf {
                return Err(AuthError::InvalidToken(format!("token not valid before {nbf} (now {now})")));
            }
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => self.audience.iter().any(|x| x == a),
            Some(Value::Array(items)) => {
                items.iter().filter_map(Value::as_str).any(|a| self.audience.iter().any(|x| x == a))
            }
            _ => return Err(invalid("token has no aud claim")),
        };
        if !aud_ok {
            return Err(AuthError::InvalidToken(format!(
                "token audience is not one this service accepts ({})",
                self.audience.join(", ")
            )));
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(invalid("token has no sub claim")),
        };
        Ok(Principal { issuer: self.issuer.clone(), subject, role: self.role_of(claims) })
    }

    fn role_of(&self, claims: &Map<String, Value>) -> Option<Role> {
        let values: Vec<&str> = match claim_value(claims, &self.role_claim)? {
            Value::String(s) => s.split_whitespace().collect(),
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        values.into_iter().filter_map(|v| self.map_role(v)).max()
    }

    fn map_role(&self, value: &str) -> Option<Role> {
        if self.role_map.is_empty() {
            return Role::parse(value);
        }
        self.role_map
            .get(value)
            .copied()
            .or_else(|| self.role_map.iter().find(|(k, _)| k.eq_ignore_ascii_case(value)).map(|(_, r)| *r))
    }
}

/// A claim by exact name, else by dotted path into nested objects.
fn claim_value<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let first = claims.get(parts.next()?)?;
    parts.try_fold(first, |v, p| v.get(p))
}

/// A NumericDate claim (integer or fractional seconds), if present.
fn numeric_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            // `as` saturates: a huge exp is "never expires", not an error.
            .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f.floor() as i64))
            .map(Some)
            .ok_or_else(|| AuthError::InvalidToken(format!("{name} claim is not a number"))),
    }
}

fn invalid(msg: &str) -> AuthError {
    AuthError::InvalidToken(msg.to_string())
}

/// Untrusted text for messages: control characters dropped, length bounded.
fn printable(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

async fn fetch_jwks(client: &reqwest::Client, uri: &str) -> Result<Vec<u8>, String> {
    let mut resp = client
        .get(uri)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {uri}: {}", error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("GET {uri}: HTTP {}", resp.status()));
    }
    if resp.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
        return Err(format!("GET {uri}: JWKS larger than {MAX_JWKS_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {uri}: {}", error_chain(&e)))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("GET {uri}: JWKS larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// HTTPS client for one issuer's `jwks_uri`: system roots plus `ca_file`,
/// no redirects (a redirect could leave HTTPS or the issuer's host).
fn jwks_client(ca_file: Option<&Path>) -> Result<reqwest::Client, AuthError> {
    let base = || {
        reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
    };
    let mut extra = Vec::new();
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| AuthError::Config(format!("reading ca_file {}: {e}", ca.display())))?;
        extra = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| AuthError::Config(format!("parsing ca_file {}: {e}", ca.display())))?;
        if extra.is_empty() {
            return Err(AuthError::Config(format!("ca_file {} holds no certificate", ca.display())));
        }
    }
    let system = SYSTEM_CA_BUNDLES
        .iter()
        .find_map(|p| std::fs::read(p).ok().and_then(|pem| reqwest::Certificate::from_pem_bundle(&pem).ok()))
        .unwrap_or_default();
    let with = |roots: &[reqwest::Certificate]| {
        roots.iter().chain(&extra).cloned().fold(base(), |b, c| b.add_root_certificate(c)).build()
    };
    match with(&system) {
        Ok(c) => Ok(c),
        Err(e) if !system.is_empty() => {
            // One odd certificate in the system bundle must not take down
            // authentication when the operator gave the CA explicitly.
            tracing::warn!(error = %error_chain(&e), "system CA bundle unusable for jwks_uri; using ca_file only");
            with(&[]).map_err(|e| AuthError::Config(format!("building the JWKS client: {}", error_chain(&e))))
        }
        Err(e) => Err(AuthError::Config(format!("building the JWKS client: {}", error_chain(&e)))),
    }
}

// ---------------------------------------------------------------- tokens

/// The token of a `Bearer` header; `None` when no (or an empty) header
/// was sent.
fn bearer_token(authorization: Option<&str>) -> Result<Option<&str>, AuthError> {
    let Some(h) = authorization else { return Ok(None) };
    if h.len() > MAX_AUTHORIZATION_LEN {
        return Err(AuthError::Malformed(format!("Authorization header is longer than {MAX_AUTHORIZATION_LEN} bytes")));
    }
    let h = h.trim();
    if h.is_empty() {
        return Ok(None);
    }
    let (scheme, rest) = h.split_once([' ', '\t']).unwrap_or((h, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // The scheme is safe to name; the credentials after it are not.
        let scheme: String = scheme.chars().filter(|c| c.is_ascii_alphanumeric()).take(16).collect();
        return Err(AuthError::Malformed(format!("expected the Bearer scheme, got '{scheme}'")));
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthError::Malformed("empty bearer token".into()));
    }
    if token.contains(char::is_whitespace) {
        return Err(AuthError::Malformed("bearer token contains whitespace".into()));
    }
    Ok(Some(token))
}

/// Unverified header and payload of a compact JWS.
/// A JWT's decoded header and claims.
type JwtParts = (Map<String, Value>, Map<String, Value>);

fn split_jwt(token: &str) -> Result<JwtParts, AuthError> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() == 5 {
        return Err(AuthError::Malformed("encrypted tokens (JWE) are not accepted".into()));
    }
    if parts.len() != 3 {
        return Err(AuthError::Malformed("bearer token is not a JWT (three dot-separated parts)".into()));
    }
    if !parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')) {
        return Err(AuthError::Malformed("JWT parts must be unpadded base64url".into()));
    }
    let part = |p: &str, what: &str| -> Result<Map<String, Value>, AuthError> {
        let bytes =
            URL_SAFE_NO_PAD.decode(p).map_err(|_| AuthError::Malformed(format!("JWT {what} is not base64url")))?;
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed(format!("JWT {what} is not a JSON object")))
    };
    Ok((part(parts[0], "header")?, part(parts[1], "payload")?))
}

fn accepted_alg(header: &Map<String, Value>) -> Result<Algorithm, AuthError> {
    match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => Ok(Algorithm::RS256),
        Some("PS256") => Ok(Algorithm::PS256),
        Some("ES256") => Ok(Algorithm::ES256),
        Some(other) => Err(AuthError::InvalidToken(format!(
            "signing algorithm '{}' is not accepted (only RS256, PS256, ES256)",
            printable(other, 16)
        ))),
        None => Err(invalid("token header has no alg")),
    }
}

/// Verifies the signature with the first fitting key that validates it
/// and returns the (now trusted) claims. Time, audience and issuer are
/// checked by the caller against the injected clock.
fn verify_signature(
    token: &str,
    keys: &KeySet,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Map<String, Value>, AuthError> {
    let mut v = Validation::new(alg);
    // jsonwebtoken would read the system clock; we check exp/nbf ourselves.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    for k in keys.matching(kid, alg) {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &v) {
            Ok(data) => return Ok(data.claims),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => continue,
            Err(e) => return Err(AuthError::InvalidToken(format!("token rejected: {e}"))),
        }
    }
    Err(invalid("signature verification failed"))
}

// ---------------------------------------------------------------- authenticator

/// Verifies bearer tokens against the configured issuers. `Send + Sync`;
/// share it in an `Arc`.
pub struct Authenticator {
    issuers: Vec<Issuer>,
    leeway: i64,
    /// Tokens whose signature already verified (see [`VerifiedCache`]).
    verified: VerifiedCache,
}

/// Bearer tokens whose signature verified, with their claims.
///
/// Clients send the same token on every call until it expires; checking
/// its ECDSA/RSA signature each time was the largest single cost of a
/// control-plane write under load (BENCHMARKS.md). An entry is keyed by
/// the SHA-256 of the whole token and remembers the issuer key set that
/// verified it: it is used only while that exact key set is current (a
/// rotation or JWKS refresh replaces the set, so the token is verified
/// again). Time-dependent checks (exp, nbf) and role mapping still run on
/// every call against the injected clock. Bounded: when full it is
/// cleared, which costs one verification per live token.
#[derive(Default)]
struct VerifiedCache {
    map: Mutex<HashMap<[u8; 32], Verified>>,
}

/// The key set that verified a token, and the token's claims.
type Verified = (Arc<KeySet>, Map<String, Value>);

const VERIFIED_CACHE_MAX: usize = 4096;

impl VerifiedCache {
    fn key(token: &str) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut k = [0u8; 32];
        k.copy_from_slice(d.as_ref());
        k
    }

    fn get(&self, key: &[u8; 32], keys: &Arc<KeySet>) -> Option<Map<String, Value>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).filter(|(set, _)| Arc::ptr_eq(set, keys)).map(|(_, claims)| claims.clone())
    }

    fn put(&self, key: [u8; 32], keys: Arc<KeySet>, claims: Map<String, Value>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= VERIFIED_CACHE_MAX {
            map.clear();
        }
        map.insert(key, (keys, claims));
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuers", &self.issuers.iter().map(|i| i.issuer.as_str()).collect::<Vec<_>>())
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl Authenticator {
    /// Validates the configuration and loads every `jwks_path` (an
    /// unreadable or keyless file is an error). `jwks_uri` issuers are
    /// fetched lazily on first use.
    pub fn new(cfg: &AuthConfig) -> Result<Authenticator, AuthError> {
        if cfg.leeway_s > MAX_LEEWAY_S {
            return Err(AuthError::Config(format!("leeway_s {} is above the maximum {MAX_LEEWAY_S}", cfg.leeway_s)));
        }
        let mut issuers: Vec<Issuer> = Vec::with_capacity(cfg.issuers.len());
        for ic in &cfg.issuers {
            let bad = |msg: String| AuthError::Config(format!("issuer '{}': {msg}", ic.issuer));
            if ic.issuer.trim().is_empty() {
                return Err(AuthError::Config("an issuer has an empty `issuer`".into()));
            }
            if issuers.iter().any(|i| i.issuer == ic.issuer) {
                return Err(bad("listed twice".into()));
            }
            if ic.audience.is_empty() || ic.audience.iter().any(|a| a.is_empty()) {
                return Err(bad("`audience` must list at least one non-empty value".into()));
            }
            if ic.role_claim.is_empty() {
                return Err(bad("`role_claim` is empty".into()));
            }
            let (source, keys) = match (&ic.jwks_path, &ic.jwks_uri) {
                (Some(path), None) => {
                    if ic.ca_file.is_some() {
                        return Err(bad("`ca_file` only applies to `jwks_uri`".into()));
                    }
                    let (stamp, keys) = load_jwks_file(path).map_err(bad)?;
                    (Source::File { path: path.clone(), seen: Mutex::new(Some(stamp)) }, keys)
                }
                (None, Some(uri)) => {
                    let parsed = reqwest::Url::parse(uri).map_err(|e| bad(format!("jwks_uri '{uri}': {e}")))?;
                    if parsed.scheme() != "https" {
                        return Err(bad(format!("jwks_uri '{uri}' must be https")));
                    }
                    if ic.refresh_s < MIN_REFRESH_S {
                        return Err(bad(format!("refresh_s must be at least {MIN_REFRESH_S}")));
                    }
                    let client = jwks_client(ic.ca_file.as_deref()).map_err(|e| bad(e.to_string()))?;
                    let source = Source::Uri {
                        uri: uri.clone(),
                        client,
                        refresh_s: i64::try_from(ic.refresh_s).unwrap_or(i64::MAX),
                        state: tokio::sync::Mutex::new(FetchState::default()),
                    };
                    (source, KeySet::default())
                }
                _ => return Err(bad("set exactly one of `jwks_path` and `jwks_uri`".into())),
            };
            issuers.push(Issuer {
                issuer: ic.issuer.clone(),
                audience: ic.audience.clone(),
                role_claim: ic.role_claim.clone(),
                role_map: ic.role_map.clone(),
                keys: RwLock::new(Arc::new(keys)),
                source,
            });
        }
        Ok(Authenticator {
            issuers,
            leeway: i64::try_from(cfg.leeway_s).unwrap_or(i64::MAX),
            verified: VerifiedCache::default(),
        })
    }

    /// Whether any issuer is configured (else every management call is refused).
    pub fn is_configured(&self) -> bool {
        !self.issuers.is_empty()
    }

    /// Verifies `authorization` (the raw Authorization header value, if
    /// any) at time `now_unix` and checks that the caller holds `needed`.
    pub async fn authorize(
        &self,
        authorization: Option<&str>,
        needed: Role,
        now_unix: i64,
    ) -> Result<Principal, AuthError> {
        // Checked before the header so the operator learns what is missing.
        if self.issuers.is_empty() {
            return Err(AuthError::NotConfigured);
        }
        let token = bearer_token(authorization)?.ok_or(AuthError::MissingToken)?;
        let p = self.verify(token, now_unix).await?;
        match p.role {
            Some(r) if r >= needed => Ok(p),
            have => {
                tracing::info!(issuer = %p.issuer, subject = %p.subject, %needed, have = have.map_or("none", Role::as_str),
                    "caller lacks the role for this operation");
                Err(AuthError::Forbidden { needed, have })
            }
        }
    }

    /// Like [`Self::authorize`] but only authenticates (no role needed);
    /// `Ok(None)` if no header was sent.
    pub async fn authenticate_optional(
        &self,
        authorization: Option<&str>,
        now_unix: i64,
    ) -> Result<Option<Principal>, AuthError> {
        let Some(token) = bearer_token(authorization)? else { return Ok(None) };
        if self.issuers.is_empty() {
            return Err(AuthError::NotConfigured);
        }
        self.verify(token, now_unix).await.map(Some)
    }

    async fn verify(&self, token: &str, now: i64) -> Result<Principal, AuthError> {
        let result = self.verify_inner(token, now).await;
        if let Err(e) = &result {
            tracing::debug!(error = %e, "bearer token refused");
        }
        result
    }

    async fn verify_inner(&self, token: &str, now: i64) -> Result<Principal, AuthError> {
        let (header, payload) = split_jwt(token)?;
        let alg = accepted_alg(&header)?;
        if header.contains_key("crit") {
            // RFC 7515 4.1.11: extensions we do not understand must fail.
            return Err(invalid("token header has critical extensions ('crit'), which are not supported"));
        }
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(invalid("token header kid is not a string")),
        };
        let iss = payload.get("iss").and_then(Value::as_str).ok_or_else(|| invalid("token has no iss claim"))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| AuthError::UnknownIssuer(printable(iss, 200)))?;
        let keys = issuer.keys_for(kid, alg, now).await?;
        let cache_key = VerifiedCache::key(token);
        let claims = match self.verified.get(&cache_key, &keys) {
            Some(claims) => claims,
            None => {
                let claims = verify_signature(token, &keys, kid, alg)?;
                self.verified.put(cache_key, keys.clone(), claims.clone());
                claims
            }
        };
        // The signed iss is the one we selected the issuer by (same bytes),
        // but check the verified copy rather than rely on that.
        if claims.get("iss").and_then(Value::as_str) != Some(issuer.issuer.as_str()) {
            return Err(invalid("issuer mismatch"));
        }
        issuer.principal(&claims, now, self.leeway)
    }
}

// ---------------------------------------------------------------- dev issuer

struct DevKey {
    pair: EcdsaKeyPair,
    kid: String,
    x: String,
    y: String,
}

fn io_err(action: &str, path: &Path, e: std::io::Error) -> AuthError {
    AuthError::Config(format!("{action} {}: {e}", path.display()))
}

/// A unique sibling path for writing `path` atomically.
fn tmp_path(path: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    path.with_file_name(format!(".{name}.{}.{nanos}.{}.tmp", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)))
}

fn write_new_file(path: &Path, contents: &[u8], private: bool) -> Result<(), AuthError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(|e| io_err("creating", path, e))?;
    f.write_all(contents).and_then(|()| f.sync_all()).map_err(|e| io_err("writing", path, e))
}

/// Creates the dev issuer key unless one exists. Written to a temporary
/// file and hard-linked into place, so concurrent callers (nodes of a local
/// cluster starting together) all end up with the one key that won.
fn create_dev_key(path: &Path) -> Result<(), AuthError> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| AuthError::Config("generating the dev issuer key failed".into()))?;
    let tmp = tmp_path(path);
    write_new_file(&tmp, pem_encode("PRIVATE KEY", pkcs8.as_ref()).as_bytes(), true)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("creating", path, e)),
    }
}

fn load_dev_key(dir: &Path) -> Result<DevKey, AuthError> {
    let path = dir.join(DEV_KEY_FILE);
    let pem = std::fs::read_to_string(&path).map_err(|e| io_err("reading the dev issuer key", &path, e))?;
    let der = pem_decode("PRIVATE KEY", &pem)
        .ok_or_else(|| AuthError::Config(format!("{} is not a PKCS#8 PEM key", path.display())))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
        .map_err(|e| AuthError::Config(format!("{} is not a P-256 PKCS#8 key: {e}", path.display())))?;
    // Uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
    let point = pair.public_key().as_ref();
    if point.len() != 65 {
        return Err(AuthError::Config(format!("{}: unexpected public key encoding", path.display())));
    }
    let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
    let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
    // RFC 7638 thumbprint: SHA-256 over the required members in lexical order.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()));
    Ok(DevKey { pair, kid, x, y })
}

fn dev_jwks(key: &DevKey) -> String {
    let doc = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "x": key.x, "y": key.y,
        "kid": key.kid, "use": "sig", "alg": "ES256",
    }]});
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// Signs `claims` as a compact ES256 JWS with `header`.
fn sign_es256(pair: &EcdsaKeyPair, header: &Value, claims: &Value) -> Result<String, AuthError> {
    let enc = |v: &Value| {
        serde_json::to_vec(v)
            .map(|b| URL_SAFE_NO_PAD.encode(b))
            .map_err(|e| AuthError::Config(format!("encoding token: {e}")))
    };
    let input = format!("{}.{}", enc(header)?, enc(claims)?);
    let sig = pair
        .sign(&SystemRandom::new(), input.as_bytes())
        .map_err(|_| AuthError::Config("signing the dev token failed".into()))?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
}

/// Creates (once; reuses if present) a development OpenID issuer in `dir`:
/// `dir/auth-issuer.key` (PKCS#8 PEM, P-256, mode 0600) and
/// `dir/auth-jwks.json` (its public JWKS with kid). Returns the issuer
/// config to put into nodes' `[auth]`: issuer
/// "https://dev-issuer.attestd.local", audience ["https://attest.azure.net"],
/// jwks_path = dir/auth-jwks.json (made absolute).
pub fn dev_issuer(dir: &Path) -> Result<IssuerConfig, AuthError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err("creating", dir, e))?;
    let key_path = dir.join(DEV_KEY_FILE);
    if !key_path.try_exists().map_err(|e| io_err("checking", &key_path, e))? {
        create_dev_key(&key_path)?;
    }
    let key = load_dev_key(dir)?;
    let jwks = dev_jwks(&key);
    let jwks_path = dir.join(DEV_JWKS_FILE);
    // Rewrite only on change: every rewrite makes running nodes reload.
    if std::fs::read(&jwks_path).ok().as_deref() != Some(jwks.as_bytes()) {
        let tmp = tmp_path(&jwks_path);
        write_new_file(&tmp, jwks.as_bytes(), false)?;
        std::fs::rename(&tmp, &jwks_path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err("writing", &jwks_path, e)
        })?;
    }
    Ok(IssuerConfig {
        issuer: DEV_ISSUER.to_string(),
        audience: vec![DEV_AUDIENCE.to_string()],
        jwks_path: Some(std::path::absolute(&jwks_path).unwrap_or(jwks_path)),
        jwks_uri: None,
        ca_file: None,
        role_claim: default_role_claim(),
        role_map: BTreeMap::new(),
        refresh_s: default_refresh_s(),
    })
}

/// Mints a bearer JWT (ES256, kid set) from the dev issuer in `dir` with
/// `sub`, `roles: [role]`, aud "https://attest.azure.net", iat=now,
/// exp=now+ttl_s.
pub fn mint_dev_token(dir: &Path, subject: &str, role: Role, now_unix: i64, ttl_s: i64) -> Result<String, AuthError> {
    let key = load_dev_key(dir)?;
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": key.kid});
    let claims = json!({
        "iss": DEV_ISSUER,
        "sub": subject,
        "aud": DEV_AUDIENCE,
        "roles": [role.as_str()],
        "iat": now_unix,
        "exp": now_unix.saturating_add(ttl_s),
    });
    sign_es256(&key.pair, &header, &claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256, RSA_PSS_SHA256};

    const NOW: i64 = 1_750_000_000;

    /// 2048-bit RSA test key (PKCS#8) and its public modulus.
    const RSA_PKCS8_PEM: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCuPfe7mN9B+4B6
QtDT1g9gZBweWGA8TZv2hRsM89cbrfZX92tDM8BILvdDRFSNc7+LDVvpRaOeSOQ5
28YNvU81+yzA3pH1WAkHGibk9mYDcf9EbSjxhmE15VFHhHY/IRr08l/lhoXYx/bf
9UDXwrSmqoFc2w9xekl9pEK2tpRIiiFpEYLlyHRdmVW8K8IQ6dHrTjvBH4zKRD6e
iz397pvmZeKpO6WomKT0J6ZyEV9BD0gySpuxW4j/w1d0nuGvk6g+H5JUxjc0qsbf
sb864169kEL5PC1ZZTyErICWcIGKPfC32o6hz7WTNwtB9X1N3HKRi1mhA/FPFfpm
J/csbHfxAgMBAAECggEAOOdd73M2flr/k24cuwHulaE8GaDtFOSXqcPAmNNNjemb
SRExg4n0It7Lu7kmD+gcRvI+8QjgLYJKnqaqoLQRmWSFMhu9+S0eDaa5yw65NCjX
n+Yyd+ZV+v8AM2YMJAPQxOwe61uqfKiZdHypB427565JfyS/f2TbeV/atccc2C9R
wCYp0+Lr17vZdNSCyrMxKsk+ZawkGJwOPZ69jGULulY8wgKiUQRZdhUGH/pN3MkV
Kp5015egZzRZTyKJwVadbYLpCxcH5BDxKa31LIGzVy+eahGRse5981oaLvogXcHy
HcUbcXwtapw3ybwO/+6WPMcO8X90CpCpaIcN7ULTDQKBgQDnfXIlAl8MXrkUQJ+J
qe03oUiwmBzE5ASMAyfTCjCVa643CD8ArL1j6C2nyAlyH4CUG92fTuXsnwDZdnax
wNpLFyf0lQ4DPnEEplqgdTuyGb6eSTazx6LIMcDs5ukTF6oRSuJtmqrH1f9XegO1
fQ8HWtxUTWqlbTsqZRimQKxsfwKBgQDAsM/F4Er+KEnYPfw0ApY3+HFw6C0W54bd
+CI6iFmQXEoMGlNw7AlACXJtUJgImrLQaiglKKumgsqktF8sSTE0DYvUXNBK48iq
Tn9uKcsg4LBJ/dPW/YNyEK4OLTwb+nAuzUasiIGgi7czfRIgR2Nb72SXWdyR/C8v
cC7yhXmjjwKBgAPFu5J20220LXfzBaaMqlz5t+GI2Q8sWBagBood5GTK+G/VJpGw
PvXd1sChNeYyNTo0qgvqkTyl6rGgiJak+em3WuNVeoD7B4R34Yoz3uEsIjsaHlYX
rsNsbCRwLuQswoy9l6sJljbjeeHHD0Bp5VDNXkHRcSd4/DnYo+oxq52pAoGBALFL
vtFWEAqM7W0/k2gTnT6ApXh62MoDXE+uuWfb/3TZxfQe4Pm85MH8L0Iv7sOz+6XS
l3+hTVcXbvdfU1a/PbukXy2V/L17my5ArfWiFNn6g5qBJ8LgXmq8uDopGu6vXztg
+49Sxtr+0yFYCi6TIPP9cDPmphHY1V2zvi696283AoGAI4KwN1myyJbGqrpCdDge
TQWG+H3J67B8GU+wL30Op9yp+C/hpJWqJd+29GxgHdLuh5/XK+xe7jAV4T6PWW+Q
lXLZt5PZVQlyiPve00kB/UIPMDIVuxNOm4UWQDRRv7mXImIQ1q0Fn0LLBFyyG8Qj
h3GFQAjzRhFpe4ZuoA1TFrE=
-----END PRIVATE KEY-----
";
    const RSA_N: &str = "rj33u5jfQfuAekLQ09YPYGQcHlhgPE2b9oUbDPPXG632V_drQzPASC73Q0RUjXO_iw1b6UWjnkjkOdvGDb1PNfsswN6R9VgJBxom5PZmA3H_RG0o8YZhNeVRR4R2PyEa9PJf5YaF2Mf23_VA18K0pqqBXNsPcXpJfaRCtraUSIohaRGC5ch0XZlVvCvCEOnR6047wR-MykQ-nos9_e6b5mXiqTulqJik9CemchFfQQ9IMkqbsVuI_8NXdJ7hr5OoPh-SVMY3NKrG37G_OuNevZBC-TwtWWU8hKyAlnCBij3wt9qOoc-1kzcLQfV9TdxykYtZoQPxTxX6Zif3LGx38Q";

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    fn dev() -> (tempfile::TempDir, Authenticator) {
        let dir = tempfile::tempdir().unwrap();
        let ic = dev_issuer(dir.path()).unwrap();
        let a = Authenticator::new(&AuthConfig { issuers: vec![ic], leeway_s: 60 }).unwrap();
        (dir, a)
    }

    async fn auth(a: &Authenticator, token: &str, needed: Role, now: i64) -> Result<Principal, AuthError> {
        a.authorize(Some(&bearer(token)), needed, now).await
    }

    fn dev_claims(roles: Value) -> Value {
        json!({"iss": DEV_ISSUER, "sub": "alice", "aud": DEV_AUDIENCE, "roles": roles, "iat": NOW, "exp": NOW + 600})
    }

    /// Signs arbitrary claims with the dev issuer key (kid set).
    fn dev_token(dir: &Path, claims: &Value) -> String {
        let key = load_dev_key(dir).unwrap();
        sign_es256(&key.pair, &json!({"alg": "ES256", "kid": key.kid}), claims).unwrap()
    }

    fn b64json(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    struct EcKey {
        pair: EcdsaKeyPair,
        kid: String,
    }

    fn ec_key(kid: &str) -> EcKey {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng).unwrap();
        EcKey { pair, kid: kid.to_string() }
    }

    fn ec_jwk(k: &EcKey) -> Value {
        let p = k.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": k.kid,
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])})
    }

    fn ec_token(k: &EcKey, with_kid: bool, claims: &Value) -> String {
        let header = if with_kid { json!({"alg": "ES256", "kid": k.kid}) } else { json!({"alg": "ES256"}) };
        sign_es256(&k.pair, &header, claims).unwrap()
    }

    fn jwks(keys: &[Value]) -> String {
        json!({ "keys": keys }).to_string()
    }

    /// Writes a JWKS and moves its mtime, as an operator's rewrite would.
    fn write_jwks(path: &Path, body: &str, mtime_offset_s: u64) {
        std::fs::write(path, body).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + mtime_offset_s)).unwrap();
    }

    const IDP: &str = "https://login.example.test/tenant/v2.0";
    const API: &str = "api://attestd";

    fn idp_claims(roles: Value) -> Value {
        json!({"iss": IDP, "sub": "svc-1", "aud": [API, "other"], "roles": roles, "exp": NOW + 600})
    }

    fn file_issuer(path: &Path) -> IssuerConfig {
        IssuerConfig {
            issuer: IDP.into(),
            audience: vec![API.into()],
            jwks_path: Some(path.to_path_buf()),
            jwks_uri: None,
            ca_file: None,
            role_claim: default_role_claim(),
            role_map: BTreeMap::new(),
            refresh_s: default_refresh_s(),
        }
    }

    fn one(ic: IssuerConfig) -> Authenticator {
        Authenticator::new(&AuthConfig { issuers: vec![ic], ..AuthConfig::default() }).unwrap()
    }

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Owner > Role::Contributor && Role::Contributor > Role::Reader);
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(Role::parse(&r.as_str().to_uppercase()), Some(r));
            assert_eq!(serde_json::from_value::<Role>(json!(r.as_str())).unwrap(), r);
        }
        assert_eq!(Role::parse("admin"), None);
        assert_eq!(serde_json::to_value(Role::Contributor).unwrap(), json!("Contributor"));
    }

    #[test]
    fn authenticator_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Authenticator>();
        check::<Arc<Authenticator>>();
    }

    #[tokio::test]
    async fn futures_are_send() {
        fn send<T: Send>(_: &T) {}
        let (_dir, a) = dev();
        let f = a.authorize(None, Role::Reader, NOW);
        send(&f);
        let g = a.authenticate_optional(None, NOW);
        send(&g);
    }

    #[tokio::test]
    async fn dev_issuer_roundtrip_each_role() {
        let (dir, a) = dev();
        for role in Role::ALL {
            let t = mint_dev_token(dir.path(), "alice", role, NOW, 600).unwrap();
            let p = auth(&a, &t, Role::Reader, NOW + 1).await.unwrap();
            assert_eq!((p.issuer.as_str(), p.subject.as_str(), p.role), (DEV_ISSUER, "alice", Some(role)));
            let p = auth(&a, &t, role, NOW).await.unwrap();
            assert_eq!(p.role, Some(role));
            let p = a.authenticate_optional(Some(&bearer(&t)), NOW).await.unwrap().unwrap();
            assert_eq!(p.role, Some(role));
        }
        // The scheme is case-insensitive and surrounding whitespace is fine.
        let t = mint_dev_token(dir.path(), "bob", Role::Reader, NOW, 600).unwrap();
        assert!(a.authorize(Some(&format!("  bearer   {t} ")), Role::Reader, NOW).await.is_ok());
    }

    #[tokio::test]
    async fn dev_issuer_files_are_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ic = dev_issuer(dir.path()).unwrap();
        assert_eq!(ic.issuer, DEV_ISSUER);
        assert_eq!(ic.audience, vec![DEV_AUDIENCE.to_string()]);
        let jwks_path = ic.jwks_path.clone().unwrap();
        assert!(jwks_path.is_absolute());
        assert_eq!(jwks_path, std::path::absolute(dir.path().join(DEV_JWKS_FILE)).unwrap());
        assert!(ic.jwks_uri.is_none() && ic.role_map.is_empty() && ic.role_claim == "roles");

        let key_path = dir.path().join(DEV_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let key_pem = std::fs::read_to_string(&key_path).unwrap();
        assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&jwks_path).unwrap()).unwrap();
        let jwk = &doc["keys"][0];
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str(), jwk["alg"].as_str()),
            (Some("EC"), Some("P-256"), Some("ES256"))
        );
        let kid = jwk["kid"].as_str().unwrap().to_string();
        assert_eq!(kid.len(), 43, "RFC 7638 SHA-256 thumbprint");

        // Second call: same key, JWKS untouched (running nodes do not reload).
        let stamp = file_stamp(&jwks_path).unwrap();
        dev_issuer(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&key_path).unwrap(), key_pem);
        assert_eq!(file_stamp(&jwks_path).unwrap(), stamp);

        // A lost JWKS is rebuilt from the key.
        std::fs::remove_file(&jwks_path).unwrap();
        dev_issuer(dir.path()).unwrap();
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&jwks_path).unwrap()).unwrap();
        assert_eq!(doc["keys"][0]["kid"].as_str(), Some(kid.as_str()));

        // Minted tokens carry that kid and the documented claims.
        let t = mint_dev_token(dir.path(), "carol", Role::Owner, NOW, 300).unwrap();
        let (h, c) = split_jwt(&t).unwrap();
        assert_eq!(h["alg"], json!("ES256"));
        assert_eq!(h["kid"], json!(kid));
        assert_eq!(c["sub"], json!("carol"));
        assert_eq!(c["roles"], json!(["Owner"]));
        assert_eq!(c["aud"], json!(DEV_AUDIENCE));
        assert_eq!((c["iat"].as_i64(), c["exp"].as_i64()), (Some(NOW), Some(NOW + 300)));

        // No issuer in a directory: a typed error, not a panic.
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(mint_dev_token(empty.path(), "x", Role::Reader, NOW, 60), Err(AuthError::Config(_))));
    }

    #[test]
    fn dev_issuer_concurrent_creation_agrees_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let d = d.clone();
                std::thread::spawn(move || dev_issuer(&d).unwrap())
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let kid = load_dev_key(&d).unwrap().kid;
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(d.join(DEV_JWKS_FILE)).unwrap()).unwrap();
        assert_eq!(doc["keys"][0]["kid"].as_str(), Some(kid.as_str()));
        let leftovers: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[tokio::test]
    async fn roles_gate_operations() {
        let (dir, a) = dev();
        let reader = mint_dev_token(dir.path(), "r", Role::Reader, NOW, 600).unwrap();
        let contributor = mint_dev_token(dir.path(), "c", Role::Contributor, NOW, 600).unwrap();
        let owner = mint_dev_token(dir.path(), "o", Role::Owner, NOW, 600).unwrap();

        let e = auth(&a, &reader, Role::Contributor, NOW).await.unwrap_err();
        assert!(matches!(e, AuthError::Forbidden { needed: Role::Contributor, have: Some(Role::Reader) }), "{e:?}");
        assert_eq!(e.http_status(), 403);
        assert!(e.to_string().contains("Contributor"));
        let e = auth(&a, &contributor, Role::Owner, NOW).await.unwrap_err();
        assert!(matches!(e, AuthError::Forbidden { needed: Role::Owner, have: Some(Role::Contributor) }));
        assert!(auth(&a, &contributor, Role::Contributor, NOW).await.is_ok());
        assert!(auth(&a, &contributor, Role::Reader, NOW).await.is_ok());
        for needed in Role::ALL {
            assert_eq!(auth(&a, &owner, needed, NOW).await.unwrap().role, Some(Role::Owner));
        }
        // Several role values: the highest counts; unknown ones are ignored.
        let t = dev_token(dir.path(), &dev_claims(json!(["Janitor", "Reader", "Owner"])));
        assert_eq!(auth(&a, &t, Role::Owner, NOW).await.unwrap().role, Some(Role::Owner));
        // No role at all: authenticated, but forbidden even for Reader.
        let t = dev_token(dir.path(), &dev_claims(json!(["Janitor"])));
        assert_eq!(a.authenticate_optional(Some(&bearer(&t)), NOW).await.unwrap().unwrap().role, None);
        let e = auth(&a, &t, Role::Reader, NOW).await.unwrap_err();
        assert!(matches!(e, AuthError::Forbidden { needed: Role::Reader, have: None }));
    }

    #[tokio::test]
    async fn exp_nbf_and_leeway_use_the_injected_clock() {
        let (dir, a) = dev();
        let t = mint_dev_token(dir.path(), "alice", Role::Reader, NOW, 600).unwrap();
        // Leeway 60: valid until exp + 60.
        assert!(auth(&a, &t, Role::Reader, NOW + 659).await.is_ok());
        let e = auth(&a, &t, Role::Reader, NOW + 660).await.unwrap_err();
        assert!(matches!(&e, AuthError::InvalidToken(m) if m.contains("expired")), "{e:?}");
        assert_eq!(e.http_status(), 401);
        // Leeway 0: expired at exp exactly.
        let strict =
            Authenticator::new(&AuthConfig { issuers: vec![dev_issuer(dir.path()).unwrap()], leeway_s: 0 }).unwrap();
        assert!(auth(&strict, &t, Role::Reader, NOW + 599).await.is_ok());
        assert!(matches!(auth(&strict, &t, Role::Reader, NOW + 600).await, Err(AuthError::InvalidToken(_))));
        // Long ago or far ahead of the real clock: only the injected one counts.
        let old = mint_dev_token(dir.path(), "alice", Role::Reader, 1_000, 600).unwrap();
        assert!(auth(&a, &old, Role::Reader, 1_100).await.is_ok());

        let mut c = dev_claims(json!(["Reader"]));
        c["nbf"] = json!(NOW + 30);
        let t = dev_token(dir.path(), &c);
        assert!(auth(&a, &t, Role::Reader, NOW).await.is_ok(), "nbf within leeway");
        assert!(
            matches!(auth(&strict, &t, Role::Reader, NOW).await, Err(AuthError::InvalidToken(m)) if m.contains("not valid before"))
        );
        c["nbf"] = json!(NOW + 90);
        let t = dev_token(dir.path(), &c);
        assert!(matches!(auth(&a, &t, Role::Reader, NOW).await, Err(AuthError::InvalidToken(_))));
        assert!(auth(&a, &t, Role::Reader, NOW + 30).await.is_ok());

        // exp is required and must be a number; fractional seconds are fine.
        let mut c = dev_claims(json!(["Reader"]));
        c.as_object_mut().unwrap().remove("exp");
        let t = dev_token(dir.path(), &c);
        assert!(matches!(auth(&a, &t, Role::Reader, NOW).await, Err(AuthError::InvalidToken(m)) if m.contains("exp")));
        c["exp"] = json!("tomorrow");
        let t = dev_token(dir.path(), &c);
        assert!(matches!(auth(&a, &t, Role::Reader, NOW).await, Err(AuthError::InvalidToken(_))));
        c["exp"] = json!((NOW + 10) as f64 + 0.5);
        let t = dev_token(dir.path(), &c);
        assert!(auth(&a, &t, Role::Reader, NOW).await.is_ok());
    }

    #[tokio::test]
    async fn bad_tokens_get_the_right_error() {
        let (dir, a) = dev();
        let good = mint_dev_token(dir.path(), "alice", Role::Owner, NOW, 600).unwrap();
        let check = |r: Result<Principal, AuthError>, what: &str| -> AuthError {
            let e = r.expect_err(what);
            assert!(!e.to_string().contains(&good), "{what}: error echoes the token");
            e
        };

        // Missing or empty header.
        let e = check(a.authorize(None, Role::Reader, NOW).await, "no header");
        assert!(matches!(e, AuthError::MissingToken) && e.http_status() == 401);
        assert!(matches!(a.authorize(Some("  "), Role::Reader, NOW).await, Err(AuthError::MissingToken)));
        assert!(a.authenticate_optional(None, NOW).await.unwrap().is_none());

        // Wrong scheme, empty token, not a JWT, JWE, oversized.
        let e = check(a.authorize(Some("Basic xyz"), Role::Reader, NOW).await, "basic");
        assert!(matches!(&e, AuthError::Malformed(m) if m.contains("Basic") && !m.contains("xyz")), "{e:?}");
        assert!(matches!(a.authenticate_optional(Some("Basic xyz"), NOW).await, Err(AuthError::Malformed(_))));
        assert!(matches!(a.authorize(Some("Bearer"), Role::Reader, NOW).await, Err(AuthError::Malformed(_))));
        assert!(matches!(a.authorize(Some("Bearer a.b"), Role::Reader, NOW).await, Err(AuthError::Malformed(_))));
        assert!(
            matches!(a.authorize(Some("Bearer a.b.c.d.e"), Role::Reader, NOW).await, Err(AuthError::Malformed(m)) if m.contains("JWE"))
        );
        assert!(matches!(a.authorize(Some("Bearer !!.??.**"), Role::Reader, NOW).await, Err(AuthError::Malformed(_))));
        assert!(matches!(
            a.authorize(Some("Bearer e30.e30=.e30"), Role::Reader, NOW).await,
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            a.authorize(Some("Bearer bm90anNvbg.e30.e30"), Role::Reader, NOW).await,
            Err(AuthError::Malformed(_))
        ));
        let huge = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_LEN));
        assert!(
            matches!(a.authorize(Some(&huge), Role::Reader, NOW).await, Err(AuthError::Malformed(m)) if m.contains("16384"))
        );

        // Wrong audience (string and array), missing audience.
        let mut c = dev_claims(json!(["Owner"]));
        c["aud"] = json!("https://management.azure.com");
        let e = check(auth(&a, &dev_token(dir.path(), &c), Role::Reader, NOW).await, "aud");
        assert!(matches!(&e, AuthError::InvalidToken(m) if m.contains("audience")), "{e:?}");
        c["aud"] = json!(["x", "y"]);
        assert!(matches!(
            auth(&a, &dev_token(dir.path(), &c), Role::Reader, NOW).await,
            Err(AuthError::InvalidToken(_))
        ));
        c["aud"] = json!(["x", DEV_AUDIENCE]);
        assert!(auth(&a, &dev_token(dir.path(), &c), Role::Reader, NOW).await.is_ok());
        c.as_object_mut().unwrap().remove("aud");
        assert!(matches!(
            auth(&a, &dev_token(dir.path(), &c), Role::Reader, NOW).await,
            Err(AuthError::InvalidToken(_))
        ));

        // Unknown issuer, missing issuer, missing subject.
        let mut c = dev_claims(json!(["Owner"]));
        c["iss"] = json!("https://evil.example");
        let e = check(auth(&a, &dev_token(dir.path(), &c), Role::Reader, NOW).await, "iss");
        assert!(matches!(&e, AuthError::UnknownIssuer(i) if i == "https://evil.example"), "{e:?}");
        assert_eq!(e.http_status(), 401);
        c.as_object_mut().unwrap().remove("iss");
        assert!(matches!(
            auth(&a, &dev_token(dir.path(), &c), Role::Reader, NOW).await,
            Err(AuthError::InvalidToken(_))
        ));
        let mut c = dev_claims(json!(["Owner"]));
        c.as_object_mut().unwrap().remove("sub");
        assert!(
            matches!(auth(&a, &dev_token(dir.path(), &c), Role::Reader, NOW).await, Err(AuthError::InvalidToken(m)) if m.contains("sub"))
        );

        // Tampered payload (Reader token upgraded to Owner) and tampered signature.
        let reader = mint_dev_token(dir.path(), "alice", Role::Reader, NOW, 600).unwrap();
        let parts: Vec<&str> = reader.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], b64json(&dev_claims(json!(["Owner"]))), parts[2]);
        let e = check(auth(&a, &forged, Role::Reader, NOW).await, "forged");
        assert!(matches!(&e, AuthError::InvalidToken(m) if m.contains("signature")), "{e:?}");
        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[10] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig));
        assert!(matches!(auth(&a, &flipped, Role::Reader, NOW).await, Err(AuthError::InvalidToken(_))));

        // alg none (with and without signature), HS256 keyed with public data.
        let kid = load_dev_key(dir.path()).unwrap().kid;
        let claims = b64json(&dev_claims(json!(["Owner"])));
        for none in [
            format!("{}.{claims}.", b64json(&json!({"alg": "none"}))),
            format!("{}.{claims}.{}", b64json(&json!({"alg": "none", "kid": kid})), parts[2]),
        ] {
            let e = check(auth(&a, &none, Role::Reader, NOW).await, "none");
            assert!(matches!(&e, AuthError::InvalidToken(m) if m.contains("'none'")), "{e:?}");
        }
        let jwks_text = std::fs::read_to_string(dir.path().join(DEV_JWKS_FILE)).unwrap();
        let input = format!("{}.{claims}", b64json(&json!({"alg": "HS256", "kid": kid})));
        let mac =
            ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwks_text.as_bytes()), input.as_bytes());
        let hs = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
        let e = check(auth(&a, &hs, Role::Reader, NOW).await, "hs256");
        assert!(matches!(&e, AuthError::InvalidToken(m) if m.contains("HS256")), "{e:?}");
        // Header without alg; unknown critical extensions; unknown kid.
        let key = load_dev_key(dir.path()).unwrap();
        let c = dev_claims(json!(["Owner"]));
        let t = sign_es256(&key.pair, &json!({"kid": kid}), &c).unwrap();
        assert!(matches!(auth(&a, &t, Role::Reader, NOW).await, Err(AuthError::InvalidToken(_))));
        let t = sign_es256(&key.pair, &json!({"alg": "ES256", "kid": kid, "crit": ["exp"], "exp": 1}), &c).unwrap();
        assert!(matches!(auth(&a, &t, Role::Reader, NOW).await, Err(AuthError::InvalidToken(m)) if m.contains("crit")));
        let t = sign_es256(&key.pair, &json!({"alg": "ES256", "kid": "nope"}), &c).unwrap();
        assert!(matches!(auth(&a, &t, Role::Reader, NOW).await, Err(AuthError::InvalidToken(m)) if m.contains("nope")));
        // Signed by a key the issuer does not have, claiming its kid.
        let other = ec_key(&kid);
        let t = ec_token(&other, true, &c);
        assert!(matches!(auth(&a, &t, Role::Reader, NOW).await, Err(AuthError::InvalidToken(_))));
        // And the untouched token still works.
        assert!(auth(&a, &good, Role::Owner, NOW).await.is_ok());
    }

    #[tokio::test]
    async fn role_map_and_claim_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let k = ec_key("k1");
        let path = dir.path().join("jwks.json");
        write_jwks(&path, &jwks(&[ec_jwk(&k)]), 0);
        let mut ic = file_issuer(&path);
        ic.role_map = BTreeMap::from([
            ("Attestation.Reader".to_string(), Role::Reader),
            ("Attestation.Contributor".to_string(), Role::Contributor),
            ("Attestation.Owner".to_string(), Role::Owner),
        ]);
        let a = one(ic.clone());
        let role = |roles: Value| {
            let t = ec_token(&k, true, &idp_claims(roles));
            let a = &a;
            async move { a.authenticate_optional(Some(&bearer(&t)), NOW).await.unwrap().unwrap().role }
        };
        assert_eq!(role(json!(["Other", "Attestation.Contributor"])).await, Some(Role::Contributor));
        assert_eq!(role(json!("Attestation.Owner")).await, Some(Role::Owner));
        assert_eq!(role(json!(["attestation.reader"])).await, Some(Role::Reader), "case-insensitive key match");
        assert_eq!(role(json!(["Attestation.Reader", "Attestation.Owner"])).await, Some(Role::Owner));
        assert_eq!(role(json!("Attestation.Reader Attestation.Contributor")).await, Some(Role::Contributor));
        // A non-empty map replaces the literal names.
        assert_eq!(role(json!(["Owner"])).await, None);
        assert_eq!(role(json!(42)).await, None);
        assert_eq!(role(json!([1, "Attestation.Reader"])).await, Some(Role::Reader));
        let t = ec_token(&k, true, &idp_claims(json!(["Attestation.Owner"])));
        let p = a.authorize(Some(&bearer(&t)), Role::Owner, NOW).await.unwrap();
        assert_eq!((p.issuer.as_str(), p.subject.as_str()), (IDP, "svc-1"));

        // Another claim name, string valued; and a nested (Keycloak-style) path.
        let mut ic2 = file_issuer(&path);
        ic2.role_claim = "groups".into();
        let a2 = one(ic2);
        let mut c = idp_claims(json!(["Owner"]));
        c["groups"] = json!("contributor");
        let t = ec_token(&k, true, &c);
        assert_eq!(
            a2.authenticate_optional(Some(&bearer(&t)), NOW).await.unwrap().unwrap().role,
            Some(Role::Contributor)
        );
        let mut ic3 = file_issuer(&path);
        ic3.role_claim = "realm_access.roles".into();
        let a3 = one(ic3);
        let mut c = idp_claims(json!(null));
        c["realm_access"] = json!({"roles": ["reader", "offline_access"]});
        let t = ec_token(&k, true, &c);
        assert_eq!(a3.authenticate_optional(Some(&bearer(&t)), NOW).await.unwrap().unwrap().role, Some(Role::Reader));

        // Two issuers side by side: each token goes to its own.
        let dev_dir = tempfile::tempdir().unwrap();
        let both =
            Authenticator::new(&AuthConfig { issuers: vec![ic, dev_issuer(dev_dir.path()).unwrap()], leeway_s: 60 })
                .unwrap();
        let t = ec_token(&k, true, &idp_claims(json!(["Attestation.Contributor"])));
        assert_eq!(both.authorize(Some(&bearer(&t)), Role::Contributor, NOW).await.unwrap().issuer, IDP);
        let t = mint_dev_token(dev_dir.path(), "d", Role::Owner, NOW, 60).unwrap();
        assert_eq!(both.authorize(Some(&bearer(&t)), Role::Owner, NOW).await.unwrap().issuer, DEV_ISSUER);
    }

    #[tokio::test]
    async fn rsa_keys_rs256_and_ps256() {
        let der = pem_decode("PRIVATE KEY", RSA_PKCS8_PEM).unwrap();
        let pair = RsaKeyPair::from_pkcs8(&der).unwrap();
        let sign = |alg: &str, kid: &str, claims: &Value| {
            let input = format!("{}.{}", b64json(&json!({"alg": alg, "kid": kid, "typ": "JWT"})), b64json(claims));
            let mut sig = vec![0; pair.public().modulus_len()];
            let enc: &'static dyn ring::signature::RsaEncoding =
                if alg == "PS256" { &RSA_PSS_SHA256 } else { &RSA_PKCS1_SHA256 };
            pair.sign(enc, &SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig))
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let ec = ec_key("ec");
        // "r" may do either RSA algorithm; "r256" is pinned to RS256 by its JWK alg;
        // an encryption key and an HMAC key are ignored.
        write_jwks(
            &path,
            &jwks(&[
                json!({"kty": "RSA", "kid": "r", "n": RSA_N, "e": "AQAB", "use": "sig"}),
                json!({"kty": "RSA", "kid": "r256", "n": RSA_N, "e": "AQAB", "alg": "RS256"}),
                json!({"kty": "RSA", "kid": "renc", "n": RSA_N, "e": "AQAB", "use": "enc"}),
                json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"}),
                json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"}),
                ec_jwk(&ec),
            ]),
            0,
        );
        let a = one(file_issuer(&path));
        let c = idp_claims(json!(["Owner"]));
        for (alg, kid) in [("RS256", "r"), ("PS256", "r"), ("RS256", "r256")] {
            let p = a.authorize(Some(&bearer(&sign(alg, kid, &c))), Role::Owner, NOW).await;
            assert!(p.is_ok(), "{alg}/{kid}: {p:?}");
        }
        for (alg, kid) in [("PS256", "r256"), ("RS256", "renc"), ("RS256", "ec")] {
            let e = a.authorize(Some(&bearer(&sign(alg, kid, &c))), Role::Owner, NOW).await.unwrap_err();
            assert!(matches!(e, AuthError::InvalidToken(_)), "{alg}/{kid}: {e:?}");
        }
        for alg in ["RS384", "PS512", "ES384", "EdDSA"] {
            let e = a.authorize(Some(&bearer(&sign(alg, "r", &c))), Role::Owner, NOW).await.unwrap_err();
            assert!(matches!(&e, AuthError::InvalidToken(m) if m.contains("not accepted")), "{alg}: {e:?}");
        }
        // An HS256 token keyed with the JWKS's own oct key is still refused.
        let input = format!("{}.{}", b64json(&json!({"alg": "HS256", "kid": "h"})), b64json(&c));
        let mac = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret"), input.as_bytes());
        let hs = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
        assert!(matches!(a.authorize(Some(&bearer(&hs)), Role::Reader, NOW).await, Err(AuthError::InvalidToken(_))));
    }

    #[tokio::test]
    async fn token_without_kid_tries_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, k2, stranger) = (ec_key("one"), ec_key("two"), ec_key("three"));
        let path = dir.path().join("jwks.json");
        write_jwks(&path, &jwks(&[ec_jwk(&k1), ec_jwk(&k2)]), 0);
        let a = one(file_issuer(&path));
        let c = idp_claims(json!(["Reader"]));
        assert!(a.authorize(Some(&bearer(&ec_token(&k2, false, &c))), Role::Reader, NOW).await.is_ok());
        assert!(a.authorize(Some(&bearer(&ec_token(&k1, false, &c))), Role::Reader, NOW).await.is_ok());
        let e = a.authorize(Some(&bearer(&ec_token(&stranger, false, &c))), Role::Reader, NOW).await.unwrap_err();
        assert!(matches!(&e, AuthError::InvalidToken(m) if m.contains("signature")), "{e:?}");
    }

    #[tokio::test]
    async fn a_verified_token_is_still_checked_for_time_and_tampering() {
        let (dir, a) = dev();
        let t = mint_dev_token(dir.path(), "alice", Role::Owner, NOW, 600).unwrap();
        assert!(a.authorize(Some(&bearer(&t)), Role::Owner, NOW).await.is_ok());
        // Second use comes from the verified cache: expiry still applies.
        assert!(a.authorize(Some(&bearer(&t)), Role::Owner, NOW + 1).await.is_ok());
        assert!(matches!(
            a.authorize(Some(&bearer(&t)), Role::Owner, NOW + 700).await,
            Err(AuthError::InvalidToken(_))
        ));
        // A token differing in one signature character is not a cache hit.
        let mut chars: Vec<char> = t.chars().collect();
        let i = chars.len() - 10;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let forged: String = chars.into_iter().collect();
        assert!(a.authorize(Some(&bearer(&forged)), Role::Owner, NOW).await.is_err());
    }

    #[tokio::test]
    async fn jwks_file_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (ec_key("old"), ec_key("new"));
        let path = dir.path().join("jwks.json");
        write_jwks(&path, &jwks(&[ec_jwk(&old)]), 0);
        let a = one(file_issuer(&path));
        let c = idp_claims(json!(["Reader"]));
        let (t_old, t_new) = (ec_token(&old, true, &c), ec_token(&new, true, &c));
        assert!(a.authorize(Some(&bearer(&t_old)), Role::Reader, NOW).await.is_ok());
        assert!(matches!(a.authorize(Some(&bearer(&t_new)), Role::Reader, NOW).await, Err(AuthError::InvalidToken(_))));

        // Rotate: new key only, new mtime.
        write_jwks(&path, &jwks(&[ec_jwk(&new)]), 10);
        assert!(a.authorize(Some(&bearer(&t_new)), Role::Reader, NOW).await.is_ok());
        assert!(matches!(a.authorize(Some(&bearer(&t_old)), Role::Reader, NOW).await, Err(AuthError::InvalidToken(_))));

        // A broken rewrite or a vanished file keeps the last good keys.
        write_jwks(&path, "{\"keys\": [", 20);
        assert!(a.authorize(Some(&bearer(&t_new)), Role::Reader, NOW).await.is_ok());
        std::fs::remove_file(&path).unwrap();
        assert!(a.authorize(Some(&bearer(&t_new)), Role::Reader, NOW).await.is_ok());
        // Replacing the file by rename (as dev_issuer does) is picked up too.
        let tmp = dir.path().join("jwks.tmp");
        std::fs::write(&tmp, jwks(&[ec_jwk(&old), ec_jwk(&new)])).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(a.authorize(Some(&bearer(&t_old)), Role::Reader, NOW).await.is_ok());
        assert!(a.authorize(Some(&bearer(&t_new)), Role::Reader, NOW).await.is_ok());
    }

    #[tokio::test]
    async fn not_configured() {
        let a = Authenticator::new(&AuthConfig::default()).unwrap();
        assert!(!a.is_configured());
        let e = a.authorize(None, Role::Reader, NOW).await.unwrap_err();
        assert!(matches!(e, AuthError::NotConfigured));
        assert_eq!(e.http_status(), 401);
        assert!(e.to_string().contains("[[auth.issuers]]"));
        assert!(matches!(a.authorize(Some("Bearer a.b.c"), Role::Owner, NOW).await, Err(AuthError::NotConfigured)));
        // Anonymous calls stay anonymous; a token cannot be checked.
        assert!(a.authenticate_optional(None, NOW).await.unwrap().is_none());
        assert!(matches!(a.authenticate_optional(Some("Bearer a.b.c"), NOW).await, Err(AuthError::NotConfigured)));
    }

    #[test]
    fn config_parsing_and_validation() {
        #[derive(serde::Deserialize)]
        struct Node {
            #[serde(default)]
            auth: AuthConfig,
        }
        let n: Node = toml::from_str("").unwrap();
        assert!(n.auth.issuers.is_empty());
        assert_eq!(n.auth.leeway_s, 60);
        assert_eq!(AuthConfig::default().leeway_s, 60);

        let n: Node = toml::from_str(
            r#"
            [auth]
            leeway_s = 30
            [[auth.issuers]]
            issuer = "https://login.microsoftonline.com/tid/v2.0"
            audience = ["https://attest.azure.net"]
            jwks_uri = "https://login.microsoftonline.com/tid/discovery/v2.0/keys"
            role_map = { "Attestation.Reader" = "Reader", "Attestation.Owner" = "Owner" }
            "#,
        )
        .unwrap();
        assert_eq!(n.auth.leeway_s, 30);
        let ic = &n.auth.issuers[0];
        assert_eq!((ic.role_claim.as_str(), ic.refresh_s), ("roles", 3600));
        assert_eq!(ic.role_map.get("Attestation.Owner"), Some(&Role::Owner));
        // Builds without touching the network (keys are fetched on first use).
        assert!(Authenticator::new(&n.auth).unwrap().is_configured());
        // Serializes back to TOML (None fields skipped) and parses again.
        let text = toml::to_string(&n.auth).unwrap();
        let again: AuthConfig = toml::from_str(&text).unwrap();
        assert_eq!(again.issuers[0].jwks_uri, ic.jwks_uri);

        assert!(toml::from_str::<Node>("[auth]\nleway_s = 1\n").is_err(), "unknown [auth] key");
        assert!(toml::from_str::<Node>("[[auth.issuers]]\nissuer=\"x\"\naudience=[\"a\"]\njwks_url=\"https://x\"\n")
            .is_err());

        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("jwks.json");
        write_jwks(&good, &jwks(&[ec_jwk(&ec_key("k"))]), 0);
        let keyless = dir.path().join("keyless.json");
        write_jwks(&keyless, &jwks(&[json!({"kty": "oct", "k": "c2VjcmV0"})]), 0);
        let build = |f: &dyn Fn(&mut IssuerConfig)| {
            let mut ic = file_issuer(&good);
            f(&mut ic);
            Authenticator::new(&AuthConfig { issuers: vec![ic], leeway_s: 60 })
        };
        assert!(build(&|_: &mut IssuerConfig| {}).is_ok());
        type Mutate<'a> = (&'a str, &'a dyn Fn(&mut IssuerConfig));
        let bad: Vec<Mutate> = vec![
            ("empty audience", &|ic: &mut IssuerConfig| ic.audience.clear()),
            ("no source", &|ic: &mut IssuerConfig| ic.jwks_path = None),
            ("two sources", &|ic: &mut IssuerConfig| ic.jwks_uri = Some("https://x.test/keys".into())),
            ("http uri", &|ic: &mut IssuerConfig| {
                ic.jwks_path = None;
                ic.jwks_uri = Some("http://x.test/keys".into())
            }),
            ("tiny refresh", &|ic: &mut IssuerConfig| {
                ic.jwks_path = None;
                ic.jwks_uri = Some("https://x.test/keys".into());
                ic.refresh_s = 1
            }),
            ("missing ca_file", &|ic: &mut IssuerConfig| {
                ic.jwks_path = None;
                ic.jwks_uri = Some("https://x.test/keys".into());
                ic.ca_file = Some("/nonexistent/ca.pem".into())
            }),
            ("unreadable jwks", &|ic: &mut IssuerConfig| ic.jwks_path = Some("/nonexistent/jwks.json".into())),
            ("empty role claim", &|ic: &mut IssuerConfig| ic.role_claim.clear()),
            ("empty issuer", &|ic: &mut IssuerConfig| ic.issuer.clear()),
        ];
        for (what, f) in bad {
            assert!(matches!(build(f), Err(AuthError::Config(_))), "{what}");
        }
        let mut ic = file_issuer(&keyless);
        assert!(
            matches!(Authenticator::new(&AuthConfig { issuers: vec![ic.clone()], leeway_s: 60 }), Err(AuthError::Config(m)) if m.contains("none of its"))
        );
        ic.jwks_path = Some(good.clone());
        assert!(
            Authenticator::new(&AuthConfig { issuers: vec![ic.clone(), ic.clone()], leeway_s: 60 }).is_err(),
            "duplicate issuer"
        );
        assert!(Authenticator::new(&AuthConfig { issuers: vec![ic], leeway_s: 100_000 }).is_err(), "huge leeway");
    }

    /// A one-route HTTPS server on loopback serving `body` as the JWKS,
    /// counting requests. Returns its port and CA file.
    async fn jwks_server(dir: &Path, body: Arc<Mutex<String>>, hits: Arc<AtomicUsize>) -> (u16, PathBuf) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "auth test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();

        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf_cert.der().clone()], key)
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, body, hits) = (acceptor.clone(), body.clone(), hits.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    hits.fetch_add(1, Ordering::SeqCst);
                    let b = body.lock().unwrap().clone();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                        b.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, ca_path)
    }

    #[tokio::test]
    async fn jwks_uri_fetch_refresh_and_unknown_kid() {
        let dir = tempfile::tempdir().unwrap();
        let (ka, kb) = (ec_key("a"), ec_key("b"));
        let body = Arc::new(Mutex::new(jwks(&[ec_jwk(&ka)])));
        let hits = Arc::new(AtomicUsize::new(0));
        let (port, ca) = jwks_server(dir.path(), body.clone(), hits.clone()).await;
        let mut ic = file_issuer(Path::new("/unused"));
        ic.jwks_path = None;
        ic.jwks_uri = Some(format!("https://127.0.0.1:{port}/keys"));
        ic.ca_file = Some(ca);
        let a = one(ic);
        let mut c = idp_claims(json!(["Reader"]));
        c["exp"] = json!(NOW + 100_000);
        let (ta, tb) = (ec_token(&ka, true, &c), ec_token(&kb, true, &c));
        let hits_now = || hits.load(Ordering::SeqCst);

        // Fetched lazily, then cached.
        assert!(a.authorize(Some(&bearer(&ta)), Role::Reader, NOW).await.is_ok());
        assert_eq!(hits_now(), 1);
        assert!(a.authorize(Some(&bearer(&ta)), Role::Reader, NOW + 10).await.is_ok());
        assert_eq!(hits_now(), 1);

        // The issuer adds key b. Within 30 s of the last fetch an unknown kid
        // does not refetch; after that it does, once.
        *body.lock().unwrap() = jwks(&[ec_jwk(&ka), ec_jwk(&kb)]);
        assert!(matches!(
            a.authorize(Some(&bearer(&tb)), Role::Reader, NOW + 20).await,
            Err(AuthError::InvalidToken(_))
        ));
        assert_eq!(hits_now(), 1);
        assert!(a.authorize(Some(&bearer(&tb)), Role::Reader, NOW + 31).await.is_ok());
        assert_eq!(hits_now(), 2);
        let stranger = ec_token(&ec_key("zzz"), true, &c);
        for dt in [32, 33, 40] {
            assert!(matches!(
                a.authorize(Some(&bearer(&stranger)), Role::Reader, NOW + dt).await,
                Err(AuthError::InvalidToken(_))
            ));
        }
        assert_eq!(hits_now(), 2, "junk kids are rate-limited");

        // Scheduled refresh after refresh_s drops the removed key.
        *body.lock().unwrap() = jwks(&[ec_jwk(&kb)]);
        assert!(a.authorize(Some(&bearer(&ta)), Role::Reader, NOW + 1000).await.is_ok());
        assert_eq!(hits_now(), 2);
        assert!(a.authorize(Some(&bearer(&tb)), Role::Reader, NOW + 31 + 3600).await.is_ok());
        assert_eq!(hits_now(), 3);
        assert!(matches!(
            a.authorize(Some(&bearer(&ta)), Role::Reader, NOW + 31 + 3600).await,
            Err(AuthError::InvalidToken(_))
        ));

        // A garbage answer keeps the keys we have.
        *body.lock().unwrap() = "not json".into();
        assert!(a.authorize(Some(&bearer(&tb)), Role::Reader, NOW + 31 + 7200).await.is_ok());
        assert_eq!(hits_now(), 4);
    }

    #[tokio::test]
    async fn jwks_uri_unreachable_is_503() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut ic = file_issuer(Path::new("/unused"));
        ic.jwks_path = None;
        ic.jwks_uri = Some(format!("https://127.0.0.1:{port}/keys"));
        let a = one(ic);
        let k = ec_key("a");
        let t = ec_token(&k, true, &idp_claims(json!(["Reader"])));
        let e = a.authorize(Some(&bearer(&t)), Role::Reader, NOW).await.unwrap_err();
        assert!(matches!(e, AuthError::JwksUnavailable(_)), "{e:?}");
        assert_eq!(e.http_status(), 503);
    }
}
