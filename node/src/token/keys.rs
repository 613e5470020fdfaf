//! The node's token-signing keys: made once, kept on disk, rotated on
//! demand, and used to sign compact JWTs. See the module docs of
//! [`crate::token`] for the file layout and rotation semantics.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{Map, Value};

use super::jwt::{cert_key, CertKey};
use super::{b64url, TokenAlg, TokenError};

/// RSA modulus size of generated keys. MAA signs with RSA-2048.
const RSA_BITS: usize = 2048;
/// The last instant X.509 can express (9999-12-31T23:59:59Z); also keeps
/// the date arithmetic below from overflowing.
const MAX_X509_TIME: i64 = 253_402_300_799;

/// A certificate as `/certs` publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKey {
    pub kid: String,
    /// `"RSA"` or `"EC"`.
    pub kty: &'static str,
    pub cert_der: Vec<u8>,
}

impl PublishedKey {
    /// The certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert_der)
    }
}

/// kid = base64url (no padding) of SHA-256 over the certificate DER.
pub fn kid_for_cert(cert_der: &[u8]) -> String {
    b64url(ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref())
}

/// One node's current token-signing keys (one RSA, one P-256) with their
/// certificates. Private keys stay in here; `Debug` shows only the kids.
pub struct NodeKeys {
    rsa: RsaKeyPair,
    rsa_cert: Vec<u8>,
    rsa_kid: String,
    ec: EcdsaKeyPair,
    ec_cert: Vec<u8>,
    ec_kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKeys").field("rsa_kid", &self.rsa_kid).field("ec_kid", &self.ec_kid).finish_non_exhaustive()
    }
}

impl NodeKeys {
    /// Loads the node's token-signing keys from `dir` (e.g. `<data_dir>/keys`), or on first start generates an
    /// RSA-2048 key and a P-256 key, each with a self-signed X.509 certificate (subject CN = `subject_cn`, validity
    /// from now-1h to now+`cert_days` days, digitalSignature key usage), and writes them: private keys as PKCS#8 PEM
    /// with mode 0600 (temp file opened 0600, fsync, rename), certificates as PEM, the directory created 0700.
    /// Reloading returns the same keys and kids. A key whose certificate file is missing (a crash between the two
    /// writes) gets a new certificate; a certificate that does not match its key is an error.
    pub fn load_or_generate(
        dir: &Path,
        subject_cn: &str,
        now_unix: i64,
        cert_days: u32,
    ) -> Result<NodeKeys, TokenError> {
        create_dir(dir)?;
        let rng = SystemRandom::new();
        let (rsa_pkcs8, rsa_cert) = load_or_make(dir, Kind::Rsa, subject_cn, now_unix, cert_days, &rng)?;
        let (ec_pkcs8, ec_cert) = load_or_make(dir, Kind::Ec, subject_cn, now_unix, cert_days, &rng)?;
        let rsa = RsaKeyPair::from_pkcs8(&rsa_pkcs8).map_err(|e| TokenError::Key(format!("RSA key: {e}")))?;
        let ec = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &ec_pkcs8, &rng)
            .map_err(|e| TokenError::Key(format!("EC key: {e}")))?;
        Ok(NodeKeys {
            rsa,
            rsa_kid: kid_for_cert(&rsa_cert),
            rsa_cert,
            ec,
            ec_kid: kid_for_cert(&ec_cert),
            ec_cert,
            rng,
        })
    }

    /// Generates a new key generation (RSA + EC) in `dir`, keeps the previous generation's files (renamed to
    /// `<name>.<N>.pem`, N the next generation number), and returns the new keys. The caller publishes the new
    /// certificates before switching signing to them, and keeps the old ones published until the tokens they
    /// signed have expired. Callers serialise rotations of one directory.
    pub fn rotate(dir: &Path, subject_cn: &str, now_unix: i64, cert_days: u32) -> Result<NodeKeys, TokenError> {
        create_dir(dir)?;
        let rng = SystemRandom::new();
        let generation = next_generation(dir)?;
        // Stage the whole new generation first: a failure here leaves the current keys untouched.
        for kind in Kind::ALL {
            let pkcs8 = generate_pkcs8(kind, &rng)?;
            let cert = make_cert(kind, &pkcs8, subject_cn, now_unix, cert_days, &rng)?;
            write_atomic(
                &dir.join(file_name(kind, Part::Key, Slot::Staged)),
                &pem_encode("PRIVATE KEY", &pkcs8),
                0o600,
            )?;
            write_atomic(
                &dir.join(file_name(kind, Part::Cert, Slot::Staged)),
                &pem_encode("CERTIFICATE", &cert),
                0o644,
            )?;
        }
        // Swap per kind. The order makes every crash point reload as a consistent key: the old key (whose
        // certificate may have moved away and is then re-issued) or the new key (likewise).
        for kind in Kind::ALL {
            let path = |part, slot| dir.join(file_name(kind, part, slot));
            rename_if_exists(&path(Part::Cert, Slot::Current), &path(Part::Cert, Slot::Retired(generation)))?;
            rename_if_exists(&path(Part::Key, Slot::Current), &path(Part::Key, Slot::Retired(generation)))?;
            rename(&path(Part::Key, Slot::Staged), &path(Part::Key, Slot::Current))?;
            rename(&path(Part::Cert, Slot::Staged), &path(Part::Cert, Slot::Current))?;
        }
        sync_dir(dir)?;
        Self::load_or_generate(dir, subject_cn, now_unix, cert_days)
    }

    /// The current generation's certificates (RSA first, then EC).
    pub fn published(&self) -> Vec<PublishedKey> {
        vec![
            PublishedKey { kid: self.rsa_kid.clone(), kty: Kind::Rsa.kty(), cert_der: self.rsa_cert.clone() },
            PublishedKey { kid: self.ec_kid.clone(), kty: Kind::Ec.kty(), cert_der: self.ec_cert.clone() },
        ]
    }

    /// kid used for `alg` (RS256/PS256 → the RSA key, ES256 → the EC key).
    pub fn kid(&self, alg: TokenAlg) -> &str {
        match alg {
            TokenAlg::Rs256 | TokenAlg::Ps256 => &self.rsa_kid,
            TokenAlg::Es256 => &self.ec_kid,
        }
    }

    /// DER of the certificate for `alg`'s key.
    pub fn cert_der(&self, alg: TokenAlg) -> &[u8] {
        match alg {
            TokenAlg::Rs256 | TokenAlg::Ps256 => &self.rsa_cert,
            TokenAlg::Es256 => &self.ec_cert,
        }
    }

    /// Signs a compact JWT: header = {"alg", "typ":"JWT", "kid", plus every member of `extra_header` (e.g. "jku",
    /// "x5c")}, payload = `claims`. `alg`, `typ` and `kid` in `extra_header` are ignored: they are fixed by the
    /// key, and a header naming another key would make the token unverifiable.
    pub fn sign_jwt(
        &self,
        alg: TokenAlg,
        extra_header: &Map<String, Value>,
        claims: &Map<String, Value>,
    ) -> Result<String, TokenError> {
        let mut header = Map::new();
        header.insert("alg".into(), alg.as_str().into());
        header.insert("typ".into(), "JWT".into());
        header.insert("kid".into(), self.kid(alg).into());
        for (k, v) in extra_header {
            if !matches!(k.as_str(), "alg" | "typ" | "kid") {
                header.insert(k.clone(), v.clone());
            }
        }
        self.sign_with_header(alg, &header, claims)
    }

    /// Signs `header`.`claims` as given (the header is not checked against `alg`; tests forge headers with it).
    pub(crate) fn sign_with_header(
        &self,
        alg: TokenAlg,
        header: &Map<String, Value>,
        claims: &Map<String, Value>,
    ) -> Result<String, TokenError> {
        let h = serde_json::to_vec(header).map_err(|e| TokenError::Malformed(format!("header: {e}")))?;
        let c = serde_json::to_vec(claims).map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
        let mut token = format!("{}.{}", b64url(&h), b64url(&c));
        let sig = match alg {
            TokenAlg::Rs256 | TokenAlg::Ps256 => {
                let padding: &'static dyn signature::RsaEncoding =
                    if alg == TokenAlg::Rs256 { &signature::RSA_PKCS1_SHA256 } else { &signature::RSA_PSS_SHA256 };
                let mut sig = vec![0u8; self.rsa.public().modulus_len()];
                self.rsa.sign(padding, &self.rng, token.as_bytes(), &mut sig).map_err(|_| TokenError::Sign)?;
                sig
            }
            TokenAlg::Es256 => {
                self.ec.sign(&self.rng, token.as_bytes()).map_err(|_| TokenError::Sign)?.as_ref().to_vec()
            }
        };
        token.push('.');
        token.push_str(&b64url(&sig));
        Ok(token)
    }
}

/// The two key types a node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rsa,
    Ec,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::Rsa, Kind::Ec];

    fn stem(self) -> &'static str {
        match self {
            Kind::Rsa => "rsa",
            Kind::Ec => "ec",
        }
    }

    fn kty(self) -> &'static str {
        match self {
            Kind::Rsa => "RSA",
            Kind::Ec => "EC",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Part {
    Key,
    Cert,
}

/// Which generation a file belongs to.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Current,
    /// A previous generation, numbered from 1.
    Retired(u32),
    /// A new generation being put in place by `rotate`.
    Staged,
}

/// `rsa-key.pem`, `rsa-key.3.pem`, `rsa-key.next.pem`, `ec-cert.pem`, …
fn file_name(kind: Kind, part: Part, slot: Slot) -> String {
    let part = match part {
        Part::Key => "key",
        Part::Cert => "cert",
    };
    match slot {
        Slot::Current => format!("{}-{part}.pem", kind.stem()),
        Slot::Retired(n) => format!("{}-{part}.{n}.pem", kind.stem()),
        Slot::Staged => format!("{}-{part}.next.pem", kind.stem()),
    }
}

/// One more than the highest retired generation number in `dir` (1 if none).
fn next_generation(dir: &Path) -> Result<u32, TokenError> {
    let mut max = 0u32;
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        for kind in Kind::ALL {
            for part in [Part::Key, Part::Cert] {
                let current = file_name(kind, part, Slot::Current);
                let stem = current.trim_end_matches(".pem");
                let n = name
                    .strip_prefix(stem)
                    .and_then(|r| r.strip_prefix('.'))
                    .and_then(|r| r.strip_suffix(".pem"))
                    .and_then(|r| r.parse::<u32>().ok());
                if let Some(n) = n {
                    max = max.max(n);
                }
            }
        }
    }
    max.checked_add(1).ok_or_else(|| TokenError::Key(format!("{}: no generation numbers left", dir.display())))
}

/// Loads `kind`'s key and certificate from `dir`, making whichever is missing. Returns (PKCS#8 DER, cert DER).
fn load_or_make(
    dir: &Path,
    kind: Kind,
    subject_cn: &str,
    now_unix: i64,
    cert_days: u32,
    rng: &SystemRandom,
) -> Result<(Vec<u8>, Vec<u8>), TokenError> {
    let key_path = dir.join(file_name(kind, Part::Key, Slot::Current));
    let cert_path = dir.join(file_name(kind, Part::Cert, Slot::Current));
    let (pkcs8, fresh) = match read_optional(&key_path)? {
        Some(text) => {
            let der = pem_decode("PRIVATE KEY", &text)
                .ok_or_else(|| TokenError::Key(format!("{}: no PRIVATE KEY PEM block", key_path.display())))?;
            (der, false)
        }
        None => {
            let der = generate_pkcs8(kind, rng)?;
            write_atomic(&key_path, &pem_encode("PRIVATE KEY", &der), 0o600)?;
            (der, true)
        }
    };
    let public = public_key(kind, &pkcs8, rng).map_err(|e| TokenError::Key(format!("{}: {e}", key_path.display())))?;
    // A fresh key never reuses a certificate file left behind: it cannot be this key's.
    if !fresh {
        if let Some(text) = read_optional(&cert_path)? {
            let der = pem_decode("CERTIFICATE", &text)
                .ok_or_else(|| TokenError::Key(format!("{}: no CERTIFICATE PEM block", cert_path.display())))?;
            let matches = match cert_key(&der)? {
                CertKey::Rsa { spki_key, .. } => kind == Kind::Rsa && spki_key == public,
                CertKey::Ec { point } => kind == Kind::Ec && point == public,
            };
            if !matches {
                return Err(TokenError::Key(format!(
                    "{} does not certify the key in {}",
                    cert_path.display(),
                    key_path.display()
                )));
            }
            return Ok((pkcs8, der));
        }
    }
    let der = make_cert(kind, &pkcs8, subject_cn, now_unix, cert_days, rng)?;
    write_atomic(&cert_path, &pem_encode("CERTIFICATE", &der), 0o644)?;
    Ok((pkcs8, der))
}

/// A new private key as PKCS#8 DER. RSA comes from the `rsa` crate (ring cannot generate RSA keys), P-256 from ring.
fn generate_pkcs8(kind: Kind, rng: &SystemRandom) -> Result<Vec<u8>, TokenError> {
    match kind {
        Kind::Rsa => {
            use rsa::pkcs8::EncodePrivateKey as _;
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
                .map_err(|e| TokenError::Key(format!("generating the RSA key: {e}")))?;
            let doc = key.to_pkcs8_der().map_err(|e| TokenError::Key(format!("encoding the RSA key: {e}")))?;
            Ok(doc.as_bytes().to_vec())
        }
        Kind::Ec => EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, rng)
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| TokenError::Key("generating the EC key failed".into())),
    }
}

/// The public key of a PKCS#8 private key as it appears in a certificate's SubjectPublicKeyInfo bit string
/// (RSAPublicKey DER, or the uncompressed EC point). Also proves ring can sign with the key.
fn public_key(kind: Kind, pkcs8: &[u8], rng: &SystemRandom) -> Result<Vec<u8>, String> {
    match kind {
        Kind::Rsa => {
            let key = RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| format!("RSA key rejected: {e}"))?;
            Ok(key.public_key().as_ref().to_vec())
        }
        Kind::Ec => {
            let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, rng)
                .map_err(|e| format!("EC key rejected: {e}"))?;
            Ok(key.public_key().as_ref().to_vec())
        }
    }
}

/// A self-signed certificate for the key: CN = `subject_cn`, valid from now-1h (clock skew between nodes and
/// relying parties) to now+`cert_days`, digitalSignature only, random serial.
fn make_cert(
    kind: Kind,
    pkcs8: &[u8],
    subject_cn: &str,
    now_unix: i64,
    cert_days: u32,
    rng: &SystemRandom,
) -> Result<Vec<u8>, TokenError> {
    let alg = match kind {
        Kind::Rsa => &rcgen::PKCS_RSA_SHA256,
        Kind::Ec => &rcgen::PKCS_ECDSA_P256_SHA256,
    };
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8), alg)
        .map_err(|e| TokenError::Key(format!("key for the certificate: {e}")))?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, subject_cn);
    params.distinguished_name = dn;
    let not_before = now_unix.saturating_sub(3600);
    let not_after = now_unix.saturating_add(i64::from(cert_days) * 86_400);
    if not_before < 0 || not_after > MAX_X509_TIME {
        return Err(TokenError::Key(format!("certificate validity {not_before}..{not_after} is out of range")));
    }
    // rcgen takes `time` values; adding std Durations to its epoch avoids a direct `time` dependency. The range
    // check above keeps the additions from overflowing.
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + std::time::Duration::from_secs(not_before.unsigned_abs());
    params.not_after = epoch + std::time::Duration::from_secs(not_after.unsigned_abs());
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let mut serial = [0u8; 16];
    rng.fill(&mut serial).map_err(|_| TokenError::Key("no randomness for the serial number".into()))?;
    // Positive (top bit clear) and full length (next bit set), as RFC 5280 asks of serials.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = params.self_signed(&key).map_err(|e| TokenError::Key(format!("making the certificate: {e}")))?;
    Ok(cert.der().to_vec())
}

/// PEM with 64-column base64 lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // base64 output is ASCII, so byte chunks are valid UTF-8.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER of the first `label` block in `text`.
pub fn pem_decode(label: &str, text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut lines = text.lines().map(str::trim).skip_while(|l| *l != begin);
    lines.next()?;
    let mut body = String::new();
    for line in lines {
        if line == end {
            return base64::engine::general_purpose::STANDARD.decode(body.as_bytes()).ok();
        }
        body.push_str(line);
    }
    None
}

fn io_err(path: &Path, source: io::Error) -> TokenError {
    TokenError::Io { path: path.to_path_buf(), source }
}

fn create_dir(dir: &Path) -> Result<(), TokenError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| io_err(dir, e))
}

fn read_optional(path: &Path) -> Result<Option<String>, TokenError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Writes `path` so that it either has the old content or all of `data`, and is never readable by others: a
/// temp file in the same directory is created with `mode`, synced, then renamed over `path`.
fn write_atomic(path: &Path, data: &str, mode: u32) -> Result<(), TokenError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // Unique per process and call, so concurrent writers never share a temp file.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp: PathBuf = dir.join(format!(".{name}.{}-{seq}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(data.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        // Best effort: a leftover temp file holds nothing the real file does not.
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    sync_dir(dir)
}

/// Makes renames and creations in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), TokenError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))
}

fn rename(from: &Path, to: &Path) -> Result<(), TokenError> {
    fs::rename(from, to).map_err(|e| io_err(from, e))
}

fn rename_if_exists(from: &Path, to: &Path) -> Result<(), TokenError> {
    match fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|e| io_err(from, e)),
    }
}

/// Keys generated once per test binary: RSA generation is slow in debug builds.
#[cfg(test)]
pub(crate) fn test_keys() -> &'static NodeKeys {
    static KEYS: std::sync::OnceLock<NodeKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        NodeKeys::load_or_generate(&dir.path().join("keys"), "attestd test", tests::NOW, 30).unwrap()
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use x509_parser::prelude::*;

    use super::*;
    use crate::token::jwt;

    pub(super) const NOW: i64 = 1_700_000_000;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn generate_then_reload_gives_same_keys_with_private_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data").join("keys");
        let keys = NodeKeys::load_or_generate(&dir, "attestd node 1", NOW, 30).unwrap();

        assert_eq!(names(&dir), ["ec-cert.pem", "ec-key.pem", "rsa-cert.pem", "rsa-key.pem"]);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("rsa-key.pem")), 0o600);
        assert_eq!(mode(&dir.join("ec-key.pem")), 0o600);
        let key_pem = fs::read_to_string(dir.join("rsa-key.pem")).unwrap();
        assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));

        let published = keys.published();
        assert_eq!(published.len(), 2);
        assert_eq!((published[0].kty, published[1].kty), ("RSA", "EC"));
        assert_eq!(keys.kid(TokenAlg::Rs256), published[0].kid);
        assert_eq!(keys.kid(TokenAlg::Ps256), published[0].kid);
        assert_eq!(keys.kid(TokenAlg::Es256), published[1].kid);
        assert_ne!(published[0].kid, published[1].kid);
        for p in &published {
            assert_eq!(p.kid, kid_for_cert(&p.cert_der));
            assert_eq!(pem_decode("CERTIFICATE", &p.cert_pem()).unwrap(), p.cert_der);
        }
        assert_eq!(keys.cert_der(TokenAlg::Es256), published[1].cert_der);
        assert_eq!(fs::read_to_string(dir.join("rsa-cert.pem")).unwrap(), published[0].cert_pem());

        let again = NodeKeys::load_or_generate(&dir, "ignored on reload", NOW + 999, 1).unwrap();
        assert_eq!(again.published(), published);
        assert!(format!("{again:?}").contains(&published[0].kid));
    }

    #[test]
    fn certificates_have_the_requested_subject_validity_and_usage() {
        let keys = test_keys();
        for p in keys.published() {
            let (_, cert) = X509Certificate::from_der(&p.cert_der).unwrap();
            let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap();
            assert_eq!(cn, "attestd test");
            assert_eq!(cert.subject(), cert.issuer());
            assert_eq!(cert.validity().not_before.timestamp(), NOW - 3600);
            assert_eq!(cert.validity().not_after.timestamp(), NOW + 30 * 86_400);
            let ku = cert.key_usage().unwrap().unwrap().value;
            assert!(ku.digital_signature() && !ku.key_cert_sign());
            // Self-signed: the certificate verifies under its own key.
            let (alg, key): (&dyn signature::VerificationAlgorithm, Vec<u8>) = match cert_key(&p.cert_der).unwrap() {
                CertKey::Rsa { spki_key, .. } => (&signature::RSA_PKCS1_2048_8192_SHA256, spki_key),
                CertKey::Ec { point } => (&signature::ECDSA_P256_SHA256_ASN1, point),
            };
            let tbs: &[u8] = cert.tbs_certificate.as_ref();
            signature::UnparsedPublicKey::new(alg, key).verify(tbs, &cert.signature_value.data).unwrap();
        }
    }

    #[test]
    fn rotate_makes_new_kids_and_keeps_the_old_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let first = NodeKeys::load_or_generate(&dir, "n", NOW, 30).unwrap();
        let first_rsa_cert = fs::read_to_string(dir.join("rsa-cert.pem")).unwrap();
        let first_ec_key = fs::read_to_string(dir.join("ec-key.pem")).unwrap();

        let second = NodeKeys::rotate(&dir, "n", NOW + 10, 30).unwrap();
        for (old, new) in first.published().iter().zip(second.published()) {
            assert_ne!(old.kid, new.kid);
            assert_eq!(old.kty, new.kty);
        }
        assert_eq!(fs::read_to_string(dir.join("rsa-cert.1.pem")).unwrap(), first_rsa_cert);
        assert_eq!(fs::read_to_string(dir.join("ec-key.1.pem")).unwrap(), first_ec_key);
        assert_eq!(mode(&dir.join("rsa-key.1.pem")), 0o600);
        assert_eq!(mode(&dir.join("rsa-key.pem")), 0o600);
        // A restart picks up the rotated generation.
        assert_eq!(NodeKeys::load_or_generate(&dir, "n", NOW + 20, 30).unwrap().published(), second.published());

        let third = NodeKeys::rotate(&dir, "n", NOW + 30, 30).unwrap();
        assert_ne!(third.kid(TokenAlg::Es256), second.kid(TokenAlg::Es256));
        let retired_ec_cert = pem_decode("CERTIFICATE", &fs::read_to_string(dir.join("ec-cert.2.pem")).unwrap());
        assert_eq!(retired_ec_cert.unwrap(), second.cert_der(TokenAlg::Es256));
        assert_eq!(
            names(&dir),
            [
                "ec-cert.1.pem",
                "ec-cert.2.pem",
                "ec-cert.pem",
                "ec-key.1.pem",
                "ec-key.2.pem",
                "ec-key.pem",
                "rsa-cert.1.pem",
                "rsa-cert.2.pem",
                "rsa-cert.pem",
                "rsa-key.1.pem",
                "rsa-key.2.pem",
                "rsa-key.pem"
            ]
        );

        // The new keys sign tokens that verify against their published certificates.
        let certs: Vec<Vec<u8>> = third.published().into_iter().map(|p| p.cert_der).collect();
        let token = third.sign_jwt(TokenAlg::Rs256, &Map::new(), &Map::new()).unwrap();
        jwt::verify_jwt(&token, &jwt::jwks(&certs), NOW, 0).unwrap();
    }

    #[test]
    fn missing_certificate_is_reissued_and_bad_files_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let keys = NodeKeys::load_or_generate(&dir, "n", NOW, 30).unwrap();
        let copy = |name: &str| {
            let d = tmp.path().join(name);
            fs::create_dir(&d).unwrap();
            for f in names(&dir) {
                fs::copy(dir.join(&f), d.join(&f)).unwrap();
            }
            d
        };

        // A crash between writing a key and its certificate: the key is kept and certified again.
        let d = copy("no-ec-cert");
        fs::remove_file(d.join("ec-cert.pem")).unwrap();
        let reloaded = NodeKeys::load_or_generate(&d, "n", NOW, 30).unwrap();
        assert_eq!(reloaded.kid(TokenAlg::Rs256), keys.kid(TokenAlg::Rs256));
        assert_ne!(reloaded.kid(TokenAlg::Es256), keys.kid(TokenAlg::Es256));
        let point = |der: &[u8]| match cert_key(der).unwrap() {
            CertKey::Ec { point } => point,
            CertKey::Rsa { .. } => panic!("not EC"),
        };
        assert_eq!(point(reloaded.cert_der(TokenAlg::Es256)), point(keys.cert_der(TokenAlg::Es256)));

        let d = copy("garbage-key");
        fs::write(d.join("rsa-key.pem"), "not a key").unwrap();
        assert!(matches!(NodeKeys::load_or_generate(&d, "n", NOW, 30), Err(TokenError::Key(_))));

        let d = copy("bad-der");
        fs::write(d.join("ec-key.pem"), pem_encode("PRIVATE KEY", b"\x30\x03\x02\x01\x00")).unwrap();
        assert!(matches!(NodeKeys::load_or_generate(&d, "n", NOW, 30), Err(TokenError::Key(_))));

        let d = copy("swapped-cert");
        fs::copy(d.join("ec-cert.pem"), d.join("rsa-cert.pem")).unwrap();
        assert!(matches!(NodeKeys::load_or_generate(&d, "n", NOW, 30), Err(TokenError::Key(_))));

        let d = copy("garbage-cert");
        fs::write(d.join("ec-cert.pem"), pem_encode("CERTIFICATE", b"junk")).unwrap();
        assert!(matches!(NodeKeys::load_or_generate(&d, "n", NOW, 30), Err(TokenError::Key(_))));

        // The key directory path is a file.
        let file = tmp.path().join("file");
        fs::write(&file, "x").unwrap();
        assert!(matches!(NodeKeys::load_or_generate(&file, "n", NOW, 30), Err(TokenError::Io { .. })));
    }

    #[test]
    fn out_of_range_validity_is_an_error() {
        let rng = SystemRandom::new();
        let pkcs8 = generate_pkcs8(Kind::Ec, &rng).unwrap();
        assert!(matches!(make_cert(Kind::Ec, &pkcs8, "n", -10, 1, &rng), Err(TokenError::Key(_))));
        assert!(matches!(make_cert(Kind::Ec, &pkcs8, "n", MAX_X509_TIME, 1, &rng), Err(TokenError::Key(_))));
        assert!(make_cert(Kind::Ec, &pkcs8, "n", NOW, 365 * 100, &rng).is_ok());
    }

    #[test]
    fn sign_jwt_header_has_fixed_and_extra_members() {
        let keys = test_keys();
        let mut extra = Map::new();
        extra.insert("jku".into(), "https://p.weu.attest.example/certs".into());
        extra.insert("kid".into(), "spoofed".into());
        extra.insert("alg".into(), "none".into());
        let mut claims = Map::new();
        claims.insert("x-ms-ver".into(), "1.0".into());
        for alg in [TokenAlg::Rs256, TokenAlg::Ps256, TokenAlg::Es256] {
            let token = keys.sign_jwt(alg, &extra, &claims).unwrap();
            let (h, c) = jwt::decode_unverified(&token).unwrap();
            assert_eq!(h["alg"], alg.as_str());
            assert_eq!(h["typ"], "JWT");
            assert_eq!(h["kid"], keys.kid(alg));
            assert_eq!(h["jku"], "https://p.weu.attest.example/certs");
            assert_eq!(h.len(), 4);
            assert_eq!(c, claims);
        }
    }

    #[test]
    fn pem_decode_handles_noise() {
        let pem = format!("junk\n{}trailer\n", pem_encode("CERTIFICATE", b"hello world"));
        assert_eq!(pem_decode("CERTIFICATE", &pem).unwrap(), b"hello world");
        assert_eq!(pem_decode("PRIVATE KEY", &pem), None);
        assert_eq!(pem_decode("CERTIFICATE", "-----BEGIN CERTIFICATE-----\naGVsbG8=\n"), None);
        assert_eq!(pem_decode("CERTIFICATE", "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----"), None);
    }
}
