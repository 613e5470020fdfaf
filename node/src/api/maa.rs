//! Azure Attestation's data-plane REST contract (research/maa-api.md §1–4).
//!
//! Every route exists twice: at the root, where the provider is named by
//! the `Host` header (`{provider}.{region}.{tokens.domain}`, what MAA
//! clients use) and defaults to this region's shared provider, and under
//! `/providers/{provider}/…` for clients that only have an IP address.
//!
//! | route | who |
//! | --- | --- |
//! | `POST /attest/{type}` | anonymous (Reader if the provider requires it) |
//! | `GET /policies/{type}` | Reader |
//! | `PUT /policies/{type}`, `POST /policies/{type}:reset` | Contributor |
//! | `GET /certificates` | Reader |
//! | `POST /certificates:add`, `:remove` | Contributor (and a JWS signed by a current signer) |
//! | `GET /certs`, `GET /.well-known/openid-configuration` | anonymous |
//!
//! Policy and certificate results are JWTs signed by this node, like MAA's
//! (`x-ms-policy-result`, `x-ms-policy-token-hash`, `x-ms-policy`, …).
//! Write responses also carry the control-plane write's index and
//! replication mode (`x-attest-*` headers and extra body members that MAA
//! clients ignore).

use std::time::Duration;

use attest_raft::command::{Command, TrustModel};
use attest_raft::state::policy_key;
use attest_raft::WriteOutcome;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::control::{body_bytes, read_view, write, write_headers, ReadQuery};
use super::error::{ApiError, ApiResult};
use super::middleware::PathProvider;
use super::AppState;
use crate::auth::Role;
use crate::evidence::AttestationType;
use crate::policy::defaults::default_policy;
use crate::policy::jws::{
    certificates_jwks, token_hash, unsigned_policy_jws, Jws, JwsLimits, PolicyCertificateRequest, PolicyJwsError,
    PolicyUpload, TrustModel as PolicyTrust,
};
use crate::policy::CompiledPolicy;
use crate::providers::{self, ProviderView};
use crate::signing::published_certs;
use crate::token::keys::{pem_decode, pem_encode};

/// The provider a request addresses: the path prefix wins, then the
/// `Host` name, else this node's region's shared provider.
pub fn resolve_provider(app: &AppState, path_provider: Option<&str>, headers: &HeaderMap) -> ApiResult<ProviderView> {
    let domain = &app.config.tokens.domain;
    let (name, host_region) = match path_provider {
        Some(p) => (p.to_string(), None),
        None => {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
            match providers::from_host(host, domain) {
                Some((p, r)) => (p.to_string(), Some(r.to_ascii_lowercase())),
                None => (providers::shared_name(&app.config.node.region), None),
            }
        }
    };
    super::control::validate_provider_name(&name)?;
    let cfg = &app.config.cluster;
    let found = app.control.state.read(|s| {
        let regions = providers::regions(s, &cfg.primary_region, cfg.secondary_region.as_deref());
        providers::resolve(s, &name, &regions, domain)
    });
    match found {
        Some(p) if host_region.as_ref().is_none_or(|r| *r == p.location.to_ascii_lowercase()) => Ok(p),
        _ => Err(ApiError::not_found("ProviderNotFound", format!("attestation provider '{name}' does not exist"))),
    }
}

/// [`resolve_provider`] for writes: a provider created through another
/// node may not be applied here yet, so a miss waits for the leader's
/// commit index once (a linearizable read) before answering 404.
pub async fn resolve_provider_for_write(
    app: &AppState,
    path_provider: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult<ProviderView> {
    match resolve_provider(app, path_provider, headers) {
        Err(e) if e.code == "ProviderNotFound" => {
            let _ = app.control.read_barrier(Duration::from_millis(app.config.limits.read_timeout_ms)).await;
            resolve_provider(app, path_provider, headers)
        }
        other => other,
    }
}

fn attestation_type(s: &str) -> ApiResult<AttestationType> {
    AttestationType::parse(s).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown attestation type '{}'; expected one of SgxEnclave, OpenEnclave, TdxVm, SevSnpVm, Tpm",
            s.chars().take(64).collect::<String>()
        ))
    })
}

/// Check the caller's bearer token for `role`.
pub async fn authorize(app: &AppState, headers: &HeaderMap, role: Role) -> ApiResult<crate::auth::Principal> {
    let h = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    app.auth.authorize(h, role, (app.clock)()).await.map_err(|e| {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let code = match status {
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
            _ => "Unauthorized",
        };
        metrics::counter!("attest_auth_failures_total", "code" => code).increment(1);
        let mut err = ApiError::new(status, code, e.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            err = err.retry_after(5);
        }
        err
    })
}

/// Writes `cmd` and signs the policy result token meanwhile: the token does
/// not depend on the write's outcome, and signing it (RSA: ~0.8 ms) after a
/// sync write had returned added to every policy write's latency. The
/// token is returned only with an acknowledged write, the write's error
/// first.
async fn write_and_sign(
    app: &AppState,
    headers: &HeaderMap,
    cmd: Command,
    provider: &ProviderView,
    claims: Map<String, Value>,
) -> ApiResult<(WriteOutcome, String)> {
    // The result token is signed on its own task, in parallel with the
    // write. Signing inline (even joined after the write's first await)
    // would delay the write by the signature: the write wakes the proposer
    // or the forward's connection task into this worker's LIFO slot, which
    // no other worker may steal, so it waits until this task yields.
    //
    // The task yields once before it signs. Spawned, it joins the worker's
    // queue ahead of the tasks the write wakes next (tokio runs at most
    // three LIFO wake-ups in a row, then the queue in order), so on a node
    // with one worker the signature (~0.1 ms ES256, ~0.8 ms RSA) ran before
    // the shipper sent the entry to the secondary region. Yielded, it runs
    // once the worker has run everything runnable — the proposal and the
    // shipment — in the time the write waits for its answers. Not on the
    // blocking pool: a woken pool thread preempted the worker on its CPU
    // for the whole signature (BENCHMARKS.md, session 30).
    let signing = {
        let (app, provider) = (app.clone(), provider.clone());
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            result_token(&app, &provider, claims)
        })
    };
    let out = write(app, headers, cmd).await;
    let token = signing.await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("signing the result token failed: {e}"),
        )
    })?;
    Ok((out?, token?))
}

/// A management-result JWT signed by this node for `provider`.
fn result_token(app: &AppState, provider: &ProviderView, body: Map<String, Value>) -> ApiResult<String> {
    use base64::Engine as _;
    let now = (app.clock)();
    let mut claims = body;
    claims.insert("iss".into(), provider.issuer.clone().into());
    claims.insert("iat".into(), now.into());
    claims.insert("nbf".into(), now.into());
    claims.insert("exp".into(), (now + i64::from(app.config.tokens.management_validity_minutes) * 60).into());
    claims.insert("jti".into(), crate::attest::claims::new_jti().into());
    let keys = app.engine.keys.current();
    let mut header = Map::new();
    header.insert("jku".into(), format!("{}/certs", provider.issuer).into());
    header.insert(
        "x5c".into(),
        vec![base64::engine::general_purpose::STANDARD.encode(keys.cert_der(provider.token_alg))].into(),
    );
    keys.sign_jwt(provider.token_alg, &header, &claims)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", format!("signing failed: {e}")))
}

fn token_response(status: StatusCode, token: String, out: Option<&WriteOutcome>) -> Response {
    let mut body = json!({ "token": token });
    let mut resp_headers = HeaderMap::new();
    if let Some(out) = out {
        body["index"] = json!(out.index);
        body["replicationMode"] = json!(out.mode.as_str());
        body["secondaryDurable"] = json!(out.secondary_durable);
        body["duplicate"] = json!(out.duplicate);
        resp_headers = write_headers(out);
    }
    (status, resp_headers, Json(body)).into_response()
}

fn jws_error(e: PolicyJwsError) -> ApiError {
    ApiError::bad_request(e.to_string()).with_code(e.maa_code())
}

fn body_text(body: &Bytes) -> ApiResult<String> {
    let s = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the request body must be UTF-8 text"))?;
    let t = s.trim();
    // The SDKs send the JWS as text/plain; a JSON string is accepted too.
    if t.starts_with('"') {
        return serde_json::from_str::<String>(t)
            .map_err(|e| ApiError::bad_request(format!("the request body is not a JSON string: {e}")));
    }
    Ok(t.to_string())
}

fn is_compact_jws(s: &str) -> bool {
    s.split('.').count() == 3 && !s.chars().any(char::is_whitespace)
}

fn trust(p: &ProviderView) -> PolicyTrust {
    match p.trust_model {
        TrustModel::Aad => PolicyTrust::Aad,
        TrustModel::Isolated => PolicyTrust::Isolated,
    }
}

fn signer_ders(app: &AppState, provider: &ProviderView) -> Vec<Vec<u8>> {
    let prefix = format!("{}/", provider.name);
    app.control.state.read(|s| {
        s.signers
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(_, r)| pem_decode("CERTIFICATE", &r.cert_pem))
            .collect()
    })
}

// ------------------------------------------------------------------ attest

pub async fn attest(
    State(app): State<AppState>,
    Extension(PathProvider(provider)): Extension<PathProvider>,
    Path(ty): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let started = std::time::Instant::now();
    let ty = attestation_type(&ty)?;
    let provider = resolve_provider(&app, provider.as_deref(), &headers)?;
    if provider.attest_requires_auth {
        authorize(&app, &headers, Role::Reader).await?;
    }
    let Some(slot) = app.attest_slots.try_acquire(&provider.name) else {
        metrics::counter!("attest_attest_throttled_total").increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            format!("provider '{}' is at its concurrent attestation limit; retry shortly", provider.name),
        )
        .retry_after(1));
    };
    let body = body_bytes(body)?;
    let now = (app.clock)();
    let engine = app.engine.clone();
    let control = app.control.clone();
    let p = provider.clone();
    // Signature checks and signing are CPU work: keep them off the reactor,
    // and at most one per core at a time (FIFO), so a burst queues instead
    // of time-slicing every request in it.
    let queued = std::time::Instant::now();
    let worker = app
        .attest_workers
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", e.to_string()))?;
    metrics::histogram!("attest_attest_queue_seconds").record(queued.elapsed().as_secs_f64());
    let result = tokio::task::spawn_blocking(move || control.state.read(|s| engine.attest(s, &p, ty, &body, now)))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()))?;
    drop(worker);
    drop(slot);
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    metrics::counter!("attest_attestations_total", "type" => ty.as_str(), "result" => outcome).increment(1);
    metrics::histogram!("attest_attestation_seconds", "type" => ty.as_str()).record(started.elapsed().as_secs_f64());
    match result {
        Ok(a) => Ok((StatusCode::OK, Json(json!({ "token": a.token }))).into_response()),
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            Err(ApiError::new(status, e.code(), e.to_string()))
        }
    }
}

// ---------------------------------------------------------------- policies

pub async fn get_policy(
    State(app): State<AppState>,
    Extension(PathProvider(provider)): Extension<PathProvider>,
    Path(ty): Path<String>,
    headers: HeaderMap,
    Query(q): Query<ReadQuery>,
) -> ApiResult<Response> {
    let ty = attestation_type(&ty)?;
    let provider = resolve_provider(&app, provider.as_deref(), &headers)?;
    if !provider.shared {
        authorize(&app, &headers, Role::Reader).await?;
    }
    let view = read_view(&app, &q).await?;
    let rec = if provider.shared {
        None
    } else {
        app.control.state.read(|s| s.policies.get(&policy_key(&provider.name, ty.as_str())).cloned())
    };
    let mut claims = Map::new();
    match rec {
        Some(r) => {
            let jws = r.meta["jws"].as_str().map(str::to_string).unwrap_or_else(|| unsigned_policy_jws(&r.document));
            claims.insert("x-ms-policy".into(), jws.into());
            if let Some(s) = r.meta.get("signer").filter(|s| !s.is_null()) {
                claims.insert("x-ms-policy-signer".into(), s.clone());
            }
        }
        None => {
            if let Ok(text) = default_policy(ty.as_str()) {
                claims.insert("x-ms-policy".into(), unsigned_policy_jws(text).into());
            }
        }
    }
    let token = result_token(&app, &provider, claims)?;
    let mut resp = token_response(StatusCode::OK, token, None);
    resp.headers_mut().extend(view);
    Ok(resp)
}

fn refuse_shared(p: &ProviderView) -> ApiResult<()> {
    if p.shared {
        return Err(ApiError::bad_request(format!(
            "the policy of shared provider '{}' cannot be changed; create a provider of your own",
            p.name
        ))
        .with_code("InvalidOperation"));
    }
    Ok(())
}

pub async fn put_policy(
    State(app): State<AppState>,
    Extension(PathProvider(provider)): Extension<PathProvider>,
    Path(ty): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let ty = attestation_type(&ty)?;
    let provider = resolve_provider_for_write(&app, provider.as_deref(), &headers).await?;
    refuse_shared(&provider)?;
    let principal = authorize(&app, &headers, Role::Contributor).await?;
    let body = body_bytes(body)?;
    let text = body_text(&body)?;
    if text.is_empty() {
        return Err(ApiError::bad_request("the policy is empty; to remove a policy use POST /policies/{type}:reset"));
    }
    let max = app.config.limits.max_policy_bytes;
    if text.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLarge",
            format!("the policy is {} bytes, more than the limit of {max}", text.len()),
        ));
    }
    let now = (app.clock)();
    // A compact JWS as MAA specifies; AAD providers also take the bare
    // policy text (what the 2018 API accepted), served back as an unsigned
    // JWS. `stored_jws` is None for bare text: that JWS is a pure function
    // of the text (`unsigned_policy_jws`, rebuilt on read), and storing it
    // would replicate the policy a second time, base64url-encoded twice
    // (~1.8x its size). An uploaded JWS is kept verbatim, signed or not.
    let (policy_text, stored_jws, signer, tok_hash) = if is_compact_jws(&text) {
        let limits = JwsLimits { max_token_bytes: max * 2, ..JwsLimits::default() };
        let up = PolicyUpload::parse_with_limits(&text, &limits).map_err(jws_error)?;
        up.check_trust(trust(&provider), &signer_ders(&app, &provider), now).map_err(jws_error)?;
        let signer = up.signer_jwk().cloned();
        let h = up.token_hash().to_string();
        (up.policy_text, Some(text.clone()), signer, h)
    } else {
        if provider.trust_model == TrustModel::Isolated {
            return Err(jws_error(PolicyJwsError::UnsignedNotAllowed));
        }
        CompiledPolicy::compile(&text).map_err(|e| ApiError::bad_request(e.to_string()).with_code(e.maa_code()))?;
        let h = token_hash(&unsigned_policy_jws(&text));
        (text.clone(), None, None, h)
    };
    let mut meta = json!({
        "policyHash": crate::policy::jws::policy_hash(&policy_text),
        "tokenHash": tok_hash,
        "signer": signer.clone(),
        "setBy": principal.subject,
    });
    if let Some(jws) = stored_jws {
        meta["jws"] = jws.into();
    }
    let cmd = Command::SetPolicy {
        provider: provider.name.clone(),
        attestation_type: ty.as_str().to_string(),
        document: policy_text,
        meta,
    };
    let mut claims = Map::new();
    claims.insert("x-ms-policy-result".into(), "Updated".into());
    claims.insert("x-ms-policy-token-hash".into(), tok_hash.into());
    if let Some(s) = signer {
        claims.insert("x-ms-policy-signer".into(), s);
    }
    let (out, token) = write_and_sign(&app, &headers, cmd, &provider, claims).await?;
    Ok(token_response(StatusCode::OK, token, Some(&out)))
}

/// `POST /policies/{type}:reset` (axum sees `{type}:reset` as one segment).
pub async fn policy_action(
    State(app): State<AppState>,
    Extension(PathProvider(provider)): Extension<PathProvider>,
    Path(seg): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let Some((ty, action)) = seg.split_once(':') else {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "InvalidOperation",
            "POST supports only {type}:reset",
        ));
    };
    if !action.eq_ignore_ascii_case("reset") {
        return Err(ApiError::not_found("NotFound", format!("unknown policy action '{action}'")));
    }
    let ty = attestation_type(ty)?;
    let provider = resolve_provider_for_write(&app, provider.as_deref(), &headers).await?;
    refuse_shared(&provider)?;
    authorize(&app, &headers, Role::Contributor).await?;
    let body = body_bytes(body)?;
    let text = body_text(&body)?;
    let mut signer = None;
    if !text.is_empty() {
        let jws = Jws::parse(&text, &JwsLimits::default()).map_err(jws_error)?;
        signer = jws.signer;
    }
    if provider.trust_model == TrustModel::Isolated {
        // Isolated providers need the reset itself signed by a signer.
        let s = signer.as_ref().ok_or_else(|| jws_error(PolicyJwsError::UnsignedNotAllowed))?;
        s.verify_trusted(&signer_ders(&app, &provider), (app.clock)()).map_err(jws_error)?;
    }
    let cmd = Command::ResetPolicy { provider: provider.name.clone(), attestation_type: ty.as_str().to_string() };
    let mut claims = Map::new();
    claims.insert("x-ms-policy-result".into(), "Removed".into());
    if let Some(s) = signer {
        claims.insert("x-ms-policy-signer".into(), s.jwk);
    }
    let (out, token) = write_and_sign(&app, &headers, cmd, &provider, claims).await?;
    Ok(token_response(StatusCode::OK, token, Some(&out)))
}

// ------------------------------------------------------------ certificates

pub async fn get_certificates(
    State(app): State<AppState>,
    Extension(PathProvider(provider)): Extension<PathProvider>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let provider = resolve_provider(&app, provider.as_deref(), &headers)?;
    authorize(&app, &headers, Role::Reader).await?;
    let ders = signer_ders(&app, &provider);
    let mut claims = Map::new();
    claims.insert("x-ms-policy-certificates".into(), certificates_jwks(&ders));
    let token = result_token(&app, &provider, claims)?;
    Ok(token_response(StatusCode::OK, token, None))
}

/// `POST /certificates:add` / `:remove`.
pub async fn add_certificate(
    State(app): State<AppState>,
    Extension(PathProvider(provider)): Extension<PathProvider>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    modify_certificates(app, provider, true, headers, body).await
}

pub async fn remove_certificate(
    State(app): State<AppState>,
    Extension(PathProvider(provider)): Extension<PathProvider>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    modify_certificates(app, provider, false, headers, body).await
}

async fn modify_certificates(
    app: AppState,
    provider: Option<String>,
    add: bool,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let provider = resolve_provider_for_write(&app, provider.as_deref(), &headers).await?;
    authorize(&app, &headers, Role::Contributor).await?;
    if provider.trust_model != TrustModel::Isolated {
        return Err(ApiError::bad_request(format!(
            "provider '{}' uses the AAD trust model; policy signer certificates belong to Isolated providers",
            provider.name
        ))
        .with_code("InvalidOperation"));
    }
    let body = body_bytes(body)?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the request body must be UTF-8 text"))?;
    let req = PolicyCertificateRequest::parse(text.trim()).map_err(jws_error)?;
    let current = signer_ders(&app, &provider);
    let now = (app.clock)();
    let (cmd, result) = if add {
        req.apply_add(&current, now).map_err(jws_error)?;
        let pem = pem_encode("CERTIFICATE", &req.certificate);
        (
            Command::AddSigner { provider: provider.name.clone(), thumbprint: req.thumbprint.clone(), cert_pem: pem },
            "IsPresent",
        )
    } else {
        req.apply_remove(&current, now).map_err(jws_error)?;
        (Command::RemoveSigner { provider: provider.name.clone(), thumbprint: req.thumbprint.clone() }, "IsAbsent")
    };
    let out = write(&app, &headers, cmd).await?;
    let mut claims = Map::new();
    claims.insert("x-ms-certificate-thumbprint".into(), req.thumbprint.clone().into());
    claims.insert("x-ms-policycertificates-result".into(), result.into());
    let token = result_token(&app, &provider, claims)?;
    Ok(token_response(StatusCode::OK, token, Some(&out)))
}

// ------------------------------------------------------- certs and metadata

/// `GET /certs`: every node's token-signing certificates (both regions).
pub async fn certs(
    State(app): State<AppState>,
    Extension(PathProvider(provider)): Extension<PathProvider>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if provider.is_some() {
        resolve_provider(&app, provider.as_deref(), &headers)?;
    }
    let now = (app.clock)();
    let retention = i64::from(app.config.tokens.max_validity_minutes) * 60;
    let keys = app.engine.keys.current();
    let ders = app.control.state.read(|s| published_certs(s, &keys, now, retention));
    let mut resp = Json(crate::token::jwt::jwks(&ders)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    Ok(resp)
}

pub async fn openid(
    State(app): State<AppState>,
    Extension(PathProvider(provider)): Extension<PathProvider>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = resolve_provider(&app, provider.as_deref(), &headers)?;
    Ok(Json(json!({
        "issuer": p.issuer,
        "jwks_uri": format!("{}/certs", p.issuer),
        "response_types_supported": ["token", "none"],
        "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256"],
        "revocation_endpoint": format!("{}/revoke", p.issuer),
        "claims_supported": [
            "cnf", "nonce", "x-ms-ver", "x-ms-attestation-type", "x-ms-policy-hash", "x-ms-policy-signer",
            "x-ms-sgx-is-debuggable", "x-ms-sgx-mrenclave", "x-ms-sgx-mrsigner", "x-ms-sgx-svn",
            "x-ms-sgx-product-id", "x-ms-sgx-ehd", "x-ms-sgx-collateral", "x-ms-sgx-report-data",
            "x-ms-runtime", "x-ms-inittime", "is-debuggable", "sgx-mrsigner", "sgx-mrenclave", "product-id",
            "svn", "tee", "x-attestd-region", "x-attestd-node"
        ],
    }))
    .into_response())
}

/// How long a write may take before the client gets an answer.
pub fn write_timeout(app: &AppState) -> Duration {
    Duration::from_millis(app.config.limits.write_timeout_ms)
}
