//! Client subcommands of `attestd`: attest, token verification, provider,
//! policy, signer-certificate and collateral management, admin actions.
//! Each one is a thin HTTPS call to a node (any node: writes are
//! forwarded to the leader) that prints the JSON answer.

use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::http_client;

#[derive(Args, Clone)]
pub struct Target {
    /// Base URL of any node (or a gateway), e.g. https://127.0.0.1:8101
    #[arg(long, env = "ATTESTD_URL")]
    pub url: String,
    /// CA certificate (PEM) that signed the node's TLS certificate.
    #[arg(long, env = "ATTESTD_CA")]
    pub ca: Option<PathBuf>,
    /// Bearer token for management calls (see `attestd dev-token`).
    #[arg(long, env = "ATTESTD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Target {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(String, Vec<u8>)>,
    ) -> anyhow::Result<Value> {
        let http = http_client(self.ca.as_deref())?;
        let url = format!("{}{}", self.url.trim_end_matches('/'), path);
        let mut req = http.request(method.clone(), &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some((ct, b)) = body {
            req = req.header("content-type", ct).body(b);
        }
        let resp = req.send().await.with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp.text().await.context("reading response")?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            bail!("{method} {url} answered {status}: {}", serde_json::to_string_pretty(&body)?);
        }
        Ok(body)
    }
}

fn prefix(provider: &Option<String>) -> String {
    provider.as_ref().map(|p| format!("/providers/{p}")).unwrap_or_default()
}

#[derive(Subcommand)]
pub enum ProviderCmd {
    /// List providers (the shared regional ones included).
    List(Target),
    /// Show one provider.
    Get {
        #[command(flatten)]
        target: Target,
        name: String,
    },
    /// Create a provider. Isolated providers need --signer certificates.
    Create {
        #[command(flatten)]
        target: Target,
        name: String,
        /// AAD (any Contributor may set policies) or Isolated (signed policies only).
        #[arg(long, default_value = "AAD")]
        trust_model: String,
        /// RS256 (MAA's default), PS256 or ES256.
        #[arg(long, default_value = "RS256")]
        alg: String,
        /// Home region (default: the primary region).
        #[arg(long)]
        location: Option<String>,
        /// PEM files of initial policy signer certificates.
        #[arg(long = "signer")]
        signers: Vec<PathBuf>,
        /// Require a Reader token for attest calls.
        #[arg(long)]
        attest_requires_auth: bool,
    },
    /// Delete a provider and its policies.
    Delete {
        #[command(flatten)]
        target: Target,
        name: String,
    },
}

/// A policy signer's key and certificate, for Isolated providers (whose
/// policies, resets and signer changes must be signed by a registered
/// signer or a certificate chaining to one).
#[derive(Args, Clone, Default)]
pub struct SignWith {
    /// Private key, PKCS#8 PEM ("BEGIN PRIVATE KEY"): RSA signs RS256
    /// (PS256 with --pss), P-256 signs ES256.
    #[arg(long, requires = "sign_cert")]
    pub sign_key: Option<PathBuf>,
    /// The key's certificate (PEM; a chain leaf first), sent in the JWS
    /// `x5c` header.
    #[arg(long, requires = "sign_key")]
    pub sign_cert: Option<PathBuf>,
    /// Sign RSA keys with PS256 instead of RS256.
    #[arg(long)]
    pub pss: bool,
}

impl SignWith {
    /// The key and DER chain, when `--sign-key` was given.
    fn load(&self) -> anyhow::Result<Option<(crate::policy::jws::SigningKey, Vec<Vec<u8>>)>> {
        let (Some(key), Some(cert)) = (&self.sign_key, &self.sign_cert) else {
            return Ok(None);
        };
        let key_pem = String::from_utf8(read(key)?).context("the key file is not PEM text")?;
        let der = crate::token::keys::pem_decode("PRIVATE KEY", &key_pem).with_context(|| {
            format!("{}: no PKCS#8 'PRIVATE KEY' block (convert with `openssl pkcs8 -topk8 -nocrypt`)", key.display())
        })?;
        let key = crate::policy::jws::SigningKey::from_pkcs8(&der, self.pss)?;
        let chain = crate::evidence::pki::pem_certs(&read(cert)?)
            .with_context(|| format!("reading certificates from {}", cert.display()))?;
        if chain.is_empty() {
            bail!("{}: no CERTIFICATE block", cert.display());
        }
        Ok(Some((key, chain)))
    }
}

/// Compiles policy text locally; a syntax error is shown at its line with
/// a caret under the column.
fn compile_locally(file: &std::path::Path, text: &str) -> anyhow::Result<crate::policy::CompiledPolicy> {
    crate::policy::CompiledPolicy::compile(text).map_err(|e| {
        let mut msg = format!("{}: PolicyParsingError: {e}", file.display());
        if let Some((line, column)) = e.position() {
            if let Some(src) = text.lines().nth(line.saturating_sub(1)) {
                let pad: String =
                    src.chars().take(column.saturating_sub(1)).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
                msg = format!("{}:{line}:{column}: PolicyParsingError: {e}\n  {src}\n  {pad}^", file.display());
            }
        }
        anyhow::anyhow!(msg)
    })
}

/// The policy text of FILE: plain text, or the payload of a policy JWS.
fn policy_text(file: &PathBuf) -> anyhow::Result<(String, bool)> {
    let bytes = read(file)?;
    let text = String::from_utf8(bytes).context("the policy file is not UTF-8 text")?;
    let trimmed = text.trim();
    if looks_like_jws(trimmed) {
        let jws = crate::policy::jws::Jws::parse(trimmed, &Default::default())
            .map_err(|e| anyhow::anyhow!("{}: {} ({e})", file.display(), e.maa_code()))?;
        let encoded = jws
            .payload
            .get("AttestationPolicy")
            .and_then(Value::as_str)
            .context("the JWS payload has no 'AttestationPolicy' claim")?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .context("'AttestationPolicy' is not base64url")?;
        return Ok((String::from_utf8(raw).context("the policy in the JWS is not UTF-8")?, true));
    }
    Ok((text, false))
}

/// A compact JWS is three base64url parts; policy text never is.
fn looks_like_jws(s: &str) -> bool {
    s.split('.').count() == 3 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Check a policy file locally (text or JWS) without sending it:
    /// errors name the line and column; on success prints the
    /// x-ms-policy-hash the service will report.
    Validate { file: PathBuf },
    /// Sign a policy text file for an Isolated provider; prints the JWS
    /// (`policy set` takes it, or use `policy set --sign-key …` directly).
    Sign {
        file: PathBuf,
        #[command(flatten)]
        sign: SignWith,
    },
    /// Print a provider's policy for a type (decoded).
    Get {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        provider: Option<String>,
        /// SgxEnclave, OpenEnclave, TdxVm, SevSnpVm or Tpm.
        r#type: String,
    },
    /// Set a policy from a file: policy text, or a JWS. With --sign-key
    /// and --sign-cert the text is signed first (Isolated providers). The
    /// policy is compiled locally before anything is sent.
    Set {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        provider: Option<String>,
        r#type: String,
        file: PathBuf,
        #[command(flatten)]
        sign: SignWith,
    },
    /// Remove a policy (back to the default).
    Reset {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        provider: Option<String>,
        r#type: String,
        /// A JWS file authorising the reset (Isolated providers).
        #[arg(long, conflicts_with = "sign_key")]
        jws: Option<PathBuf>,
        /// Or sign the reset here (Isolated providers).
        #[command(flatten)]
        sign: SignWith,
    },
}

#[derive(Subcommand)]
pub enum CertificateCmd {
    /// List an Isolated provider's policy signer certificates.
    List {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        provider: Option<String>,
    },
    /// Add a signer: FILE is a JWS signed by a current signer whose payload
    /// is {"policyCertificate": {"kty":…, "x5c":[…]}}.
    Add {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        provider: Option<String>,
        file: PathBuf,
    },
    /// Remove a signer (same JWS form as add).
    Remove {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        provider: Option<String>,
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum CollateralCmd {
    /// Import collateral files (Intel TCB info / QE identity / CRLs /
    /// chains, QuoteCollateralV3 bundles, AMD or TPM CA certificates) into
    /// the replicated state. Each file is verified before it is stored.
    Import {
        #[command(flatten)]
        target: Target,
        files: Vec<PathBuf>,
    },
    /// List stored collateral and what the node's verifier rejected.
    List(Target),
    /// Delete one stored blob by name.
    Delete {
        #[command(flatten)]
        target: Target,
        name: String,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Verify a token (file or `-` for stdin) against a node's /certs and print its claims.
    Verify {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        provider: Option<String>,
        file: PathBuf,
        /// Also require this issuer (`iss`).
        #[arg(long)]
        issuer: Option<String>,
    },
    /// Print a token's header and claims without verifying it.
    Decode { file: PathBuf },
}

/// `attestd attest`: send evidence, print the decoded token.
#[derive(Args)]
pub struct AttestArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long)]
    pub provider: Option<String>,
    /// SgxEnclave, OpenEnclave, TdxVm, SevSnpVm or Tpm.
    #[arg(long = "type")]
    pub ty: String,
    /// Evidence file (raw quote / report bytes; SevSnpVm: MAA's JSON, or raw report).
    pub evidence: PathBuf,
    /// runtimeData file.
    #[arg(long)]
    pub runtime_data: Option<PathBuf>,
    /// Send runtimeData as JSON (claim x-ms-runtime) instead of Binary.
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub nonce: Option<String>,
    /// Evaluate this policy text instead of the stored one (unsigned token).
    #[arg(long)]
    pub draft_policy: Option<PathBuf>,
}

fn read(p: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if p.as_os_str() == "-" {
        use std::io::Read;
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b)?;
        return Ok(b);
    }
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

fn b64u(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn print(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Header and claims of a token, unverified.
fn decoded(token: &str) -> anyhow::Result<Value> {
    let (h, c) = crate::token::jwt::decode_unverified(token).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(json!({"header": h, "claims": c}))
}

pub async fn attest(a: AttestArgs) -> anyhow::Result<()> {
    let ev = read(&a.evidence)?;
    let field = match a.ty.to_ascii_lowercase().as_str() {
        "openenclave" | "sevsnpvm" => "report",
        "tpm" => "data",
        _ => "quote",
    };
    let mut body = json!({ field: b64u(&ev) });
    if let Some(rd) = &a.runtime_data {
        body["runtimeData"] = json!({"data": b64u(&read(rd)?), "dataType": if a.json { "JSON" } else { "Binary" }});
    }
    if let Some(n) = &a.nonce {
        body["nonce"] = json!(n);
    }
    if let Some(p) = &a.draft_policy {
        body["draftPolicyForAttestation"] = json!(String::from_utf8(read(p)?).context("policy is not UTF-8")?);
    }
    let path = format!("{}/attest/{}?api-version=2022-08-01", prefix(&a.provider), a.ty);
    let resp = a
        .target
        .call(reqwest::Method::POST, &path, Some(("application/json".into(), body.to_string().into_bytes())))
        .await?;
    let token = resp["token"].as_str().context("no token in the response")?;
    print(&decoded(token)?)?;
    eprintln!("(token: {} bytes; verify it with `attestd token verify`)", token.len());
    Ok(())
}

pub async fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Decode { file } => {
            let t = String::from_utf8(read(&file)?)?;
            print(&decoded(t.trim())?)
        }
        TokenCmd::Verify { target, provider, file, issuer } => {
            let t = String::from_utf8(read(&file)?)?;
            let jwks = target.call(reqwest::Method::GET, &format!("{}/certs", prefix(&provider)), None).await?;
            let now = crate::api::system_clock();
            let (h, c) = crate::token::jwt::verify_jwt(t.trim(), &jwks, now, 60)
                .map_err(|e| anyhow::anyhow!("token does NOT verify: {e}"))?;
            if let Some(iss) = issuer {
                if c.get("iss").and_then(Value::as_str) != Some(iss.as_str()) {
                    bail!("token verifies but its issuer is {:?}, not {iss}", c.get("iss"));
                }
            }
            print(&json!({"verified": true, "header": h, "claims": c}))
        }
    }
}

pub async fn provider(cmd: ProviderCmd) -> anyhow::Result<()> {
    use reqwest::Method;
    let v = match cmd {
        ProviderCmd::List(t) => t.call(Method::GET, "/providers", None).await?,
        ProviderCmd::Get { target, name } => target.call(Method::GET, &format!("/providers/{name}"), None).await?,
        ProviderCmd::Delete { target, name } => {
            target.call(Method::DELETE, &format!("/providers/{name}"), None).await?
        }
        ProviderCmd::Create { target, name, trust_model, alg, location, signers, attest_requires_auth } => {
            let pems = signers
                .iter()
                .map(|p| read(p).and_then(|b| String::from_utf8(b).context("signer certificate is not PEM text")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let body = json!({
                "trustModel": trust_model, "tokenSigningAlgorithm": alg, "policySigningCertificates": pems,
                "location": location, "attestRequiresAuth": attest_requires_auth,
            });
            target
                .call(
                    Method::PUT,
                    &format!("/providers/{name}"),
                    Some(("application/json".into(), body.to_string().into_bytes())),
                )
                .await?
        }
    };
    print(&v)
}

pub async fn policy(cmd: PolicyCmd) -> anyhow::Result<()> {
    use reqwest::Method;
    let v = match cmd {
        PolicyCmd::Get { target, provider, r#type } => {
            let v = target
                .call(Method::GET, &format!("{}/policies/{type}", prefix(&provider), type = r#type), None)
                .await?;
            let token = v["token"].as_str().context("no token in the response")?;
            let (_, claims) = crate::token::jwt::decode_unverified(token).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut out = json!({"claims": claims});
            if let Some(p) = claims.get("x-ms-policy").and_then(Value::as_str) {
                if let Ok((_, body)) = crate::token::jwt::decode_unverified(p) {
                    if let Some(text) = body
                        .get("AttestationPolicy")
                        .and_then(Value::as_str)
                        .and_then(crate::attest::request::b64_decode)
                        .and_then(|b| String::from_utf8(b).ok())
                    {
                        println!("{text}");
                        return Ok(());
                    }
                }
            }
            out["note"] = json!("no policy text in the response");
            out
        }
        PolicyCmd::Validate { file } => {
            let (text, was_jws) = policy_text(&file)?;
            compile_locally(&file, &text)?;
            json!({
                "valid": true,
                "jws": was_jws,
                "x-ms-policy-hash": crate::policy::jws::policy_hash(&text),
            })
        }
        PolicyCmd::Sign { file, sign } => {
            let (key, chain) = sign.load()?.context("policy sign needs --sign-key and --sign-cert")?;
            let (text, _) = policy_text(&file)?;
            compile_locally(&file, &text)?;
            println!("{}", crate::policy::jws::signed_policy_jws(&text, &key, &chain)?);
            return Ok(());
        }
        PolicyCmd::Set { target, provider, r#type, file, sign } => {
            let body = match sign.load()? {
                Some((key, chain)) => {
                    let (text, _) = policy_text(&file)?;
                    compile_locally(&file, &text)?;
                    crate::policy::jws::signed_policy_jws(&text, &key, &chain)?.into_bytes()
                }
                None => {
                    let (text, _) = policy_text(&file)?;
                    compile_locally(&file, &text)?;
                    read(&file)?
                }
            };
            let v = target
                .call(
                    Method::PUT,
                    &format!("{}/policies/{type}", prefix(&provider), type = r#type),
                    Some(("text/plain".into(), body)),
                )
                .await?;
            with_decoded(v)?
        }
        PolicyCmd::Reset { target, provider, r#type, jws, sign } => {
            let body = match (jws, sign.load()?) {
                (Some(p), _) => read(&p)?,
                // MAA's reset body: a JWS over an empty object.
                (None, Some((key, chain))) => crate::policy::jws::sign_jws(&json!({}), &key, &chain)?.into_bytes(),
                (None, None) => b"eyJhbGciOiJub25lIn0..".to_vec(),
            };
            let v = target
                .call(
                    Method::POST,
                    &format!("{}/policies/{type}:reset", prefix(&provider), type = r#type),
                    Some(("text/plain".into(), body)),
                )
                .await?;
            with_decoded(v)?
        }
    };
    print(&v)
}

fn with_decoded(mut v: Value) -> anyhow::Result<Value> {
    if let Some(t) = v["token"].as_str() {
        v["decoded"] = decoded(t)?;
    }
    Ok(v)
}

pub async fn certificate(cmd: CertificateCmd) -> anyhow::Result<()> {
    match cmd {
        CertificateCmd::List { target, provider } => print(&with_decoded(
            target.call(reqwest::Method::GET, &format!("{}/certificates", prefix(&provider)), None).await?,
        )?),
        CertificateCmd::Add { target, provider, file } => certificate_modify(true, target, provider, file).await,
        CertificateCmd::Remove { target, provider, file } => certificate_modify(false, target, provider, file).await,
    }
}

/// `certificate add|remove`.
async fn certificate_modify(add: bool, target: Target, provider: Option<String>, file: PathBuf) -> anyhow::Result<()> {
    let jws = String::from_utf8(read(&file)?).context("the JWS file is not text")?;
    let action = if add { "add" } else { "remove" };
    let body = serde_json::to_string(jws.trim())?;
    let v = target
        .call(
            reqwest::Method::POST,
            &format!("{}/certificates:{action}", prefix(&provider)),
            Some(("application/json".into(), body.into_bytes())),
        )
        .await?;
    print(&with_decoded(v)?)
}

pub async fn collateral(cmd: CollateralCmd) -> anyhow::Result<()> {
    use reqwest::Method;
    match cmd {
        CollateralCmd::List(t) => print(&t.call(Method::GET, "/admin/collateral", None).await?),
        CollateralCmd::Delete { target, name } => {
            print(&target.call(Method::DELETE, &format!("/admin/collateral/{name}"), None).await?)
        }
        CollateralCmd::Import { target, files } => {
            if files.is_empty() {
                bail!("name at least one collateral file");
            }
            let bar = indicatif::ProgressBar::new(files.len() as u64);
            for f in &files {
                let name: String = f
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("collateral")
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
                    .collect();
                let body = read(f)?;
                target
                    .call(
                        Method::PUT,
                        &format!("/admin/collateral/{name}"),
                        Some(("application/octet-stream".into(), body)),
                    )
                    .await
                    .with_context(|| format!("importing {}", f.display()))?;
                bar.inc(1);
                bar.println(format!("imported {} as '{name}'", f.display()));
            }
            bar.finish_and_clear();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::jws::PolicyUpload;

    const POLICY: &str = "version= 1.0;\nauthorizationrules\n{\n    => permit();\n};\nissuancerules\n{\n};\n";

    #[test]
    fn signs_a_policy_that_the_service_accepts_from_that_signer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["policy signer".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (kp, cp, pp) = (dir.path().join("k.pem"), dir.path().join("c.pem"), dir.path().join("p.txt"));
        std::fs::write(&kp, key.serialize_pem()).expect("write key");
        std::fs::write(&cp, cert.pem()).expect("write cert");
        std::fs::write(&pp, POLICY).expect("write policy");
        let sign = SignWith { sign_key: Some(kp), sign_cert: Some(cp), pss: false };
        let (key, chain) = sign.load().expect("loads").expect("given");
        let (text, was_jws) = policy_text(&pp).expect("reads");
        assert!(!was_jws);
        let jws = crate::policy::jws::signed_policy_jws(&text, &key, &chain).expect("signs");
        assert!(looks_like_jws(&jws));
        let upload = PolicyUpload::parse(&jws).expect("a valid upload");
        assert_eq!(upload.policy_text, POLICY);
        let trusted = vec![cert.der().to_vec()];
        upload.check_trust(crate::policy::jws::TrustModel::Isolated, &trusted, 1_800_000_000).expect("trusted signer");
        // The JWS round-trips through `policy_text` too.
        std::fs::write(&pp, &jws).expect("write jws");
        assert_eq!(policy_text(&pp).expect("reads the JWS"), (POLICY.to_string(), true));
    }

    #[test]
    fn local_validation_points_at_the_line_and_column() {
        let bad = "version= 1.0;\nauthorizationrules\n{\n    => permitt();\n};\n";
        let err = compile_locally(std::path::Path::new("p.txt"), bad).expect_err("a syntax error").to_string();
        assert!(err.starts_with("p.txt:4:"), "{err}");
        assert!(err.contains("PolicyParsingError"), "{err}");
        assert!(err.contains("    => permitt();\n"), "{err}");
        assert!(err.trim_end().ends_with('^'), "{err}");
        assert!(compile_locally(std::path::Path::new("p.txt"), POLICY).is_ok());
        assert!(!looks_like_jws(POLICY));
    }
}
