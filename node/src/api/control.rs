//! Providers and policies through the replicated control plane.
//!
//! Writes go through `ControlPlane::write` on any node (forwarded to the
//! leader). Reads answer from this node's applied state by default and say
//! which index they reflect (`x-attest-applied-index`) and whether the
//! control plane is currently read-only here (`x-attest-stale: true`);
//! `?consistency=linearizable` first waits for the leader's commit index.
//!
//! Idempotency: a client may send `x-ms-client-request-id`; it becomes the
//! command's request id, so a retried write is applied at most once and
//! answered with the first result.
//!
//! Policies are opaque documents here; the policy language and MAA's
//! `/policies/{type}` routes on provider host names build on this.

use std::time::Duration;

use attest_raft::command::{Command, TrustModel};
use attest_raft::state::policy_key;
use attest_raft::{Request as RaftRequest, WriteOutcome};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::middleware::CLIENT_REQUEST_ID;
use super::AppState;

/// MAA's attestation types, in their canonical spelling. Route segments
/// match case-insensitively.
pub const ATTESTATION_TYPES: &[&str] = &["SgxEnclave", "OpenEnclave", "TdxVm", "SevSnpVm", "Tpm"];

pub fn canonical_type(s: &str) -> ApiResult<&'static str> {
    ATTESTATION_TYPES.iter().copied().find(|t| t.eq_ignore_ascii_case(s)).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown attestation type '{s}'; expected one of {}",
            ATTESTATION_TYPES.join(", ")
        ))
    })
}

/// MAA's provider name rule: 3–24 characters, letters, digits and `-`
/// (no leading or trailing hyphen).
pub fn validate_provider_name(name: &str) -> ApiResult<()> {
    let ok = (3..=24).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid provider name '{}': use 3-24 letters, digits or '-'",
            name.chars().take(64).collect::<String>()
        )))
    }
}

#[derive(Deserialize, Default)]
pub struct ReadQuery {
    #[serde(default)]
    pub consistency: Option<String>,
    #[serde(rename = "api-version", default)]
    pub api_version: Option<String>,
}

fn request_id(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get(CLIENT_REQUEST_ID) else { return Ok(None) };
    let s = v.to_str().map_err(|_| ApiError::bad_request("x-ms-client-request-id must be ASCII"))?;
    if s.is_empty() || s.len() > 128 || !s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        return Err(ApiError::bad_request("x-ms-client-request-id must be 1-128 characters of [A-Za-z0-9-_.:]"));
    }
    Ok(Some(s.to_string()))
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLarge", "request body exceeds the configured limit")
        } else {
            ApiError::bad_request(format!("unreadable request body: {e}"))
        }
    })
}

fn require_json(headers: &HeaderMap) -> ApiResult<()> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "InvalidParameter",
            "Content-Type must be application/json",
        ))
    }
}

async fn write(app: &AppState, headers: &HeaderMap, command: Command) -> ApiResult<WriteOutcome> {
    let mut req: RaftRequest = app.control.request("api", command);
    if let Some(id) = request_id(headers)? {
        req.request_id = id;
    }
    let out = app.control.write(req, Duration::from_millis(app.config.limits.write_timeout_ms)).await?;
    if let Some(e) = &out.error {
        let status = match e.code.as_str() {
            "ProviderNotFound" => StatusCode::NOT_FOUND,
            "Conflict" => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        let code: &'static str = match e.code.as_str() {
            "ProviderNotFound" => "ProviderNotFound",
            "Conflict" => "Conflict",
            "InvalidOperation" => "InvalidOperation",
            _ => "InvalidParameter",
        };
        return Err(ApiError::new(status, code, e.message.clone()));
    }
    Ok(out)
}

fn write_response(status: StatusCode, out: &WriteOutcome, mut body: Value) -> Response {
    body["index"] = json!(out.index);
    body["replicationMode"] = json!(out.mode.as_str());
    body["secondaryDurable"] = json!(out.secondary_durable);
    body["duplicate"] = json!(out.duplicate);
    let mut resp = (status, Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert("x-attest-replication-mode", HeaderValue::from_static(out.mode.as_str()));
    if let Ok(v) = HeaderValue::from_str(&out.index.to_string()) {
        h.insert("x-attest-log-index", v);
    }
    resp
}

/// Applies the read consistency and returns headers describing it.
async fn read_view(app: &AppState, q: &ReadQuery) -> ApiResult<HeaderMap> {
    let linearizable = match q.consistency.as_deref() {
        None | Some("local") => false,
        Some("linearizable") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!("consistency must be 'local' or 'linearizable', not '{other}'")))
        }
    };
    if linearizable {
        app.control.read_barrier(Duration::from_millis(app.config.limits.read_timeout_ms)).await?;
    }
    let mut h = HeaderMap::new();
    let s = app.control.status();
    if let Ok(v) = HeaderValue::from_str(&s.applied_index.to_string()) {
        h.insert("x-attest-applied-index", v);
    }
    h.insert("x-attest-stale", HeaderValue::from_static(if s.control_plane == "writable" { "false" } else { "true" }));
    Ok(h)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateProvider {
    #[serde(default = "default_trust")]
    trust_model: String,
    #[serde(default = "default_alg")]
    token_signing_algorithm: String,
    #[serde(default)]
    policy_signing_certificates: Vec<String>,
}

fn default_trust() -> String {
    "AAD".into()
}
fn default_alg() -> String {
    "RS256".into()
}

fn provider_json(p: &attest_raft::state::Provider) -> Value {
    json!({
        "name": p.name,
        "trustModel": match p.trust_model { TrustModel::Aad => "AAD", TrustModel::Isolated => "Isolated" },
        "tokenSigningAlgorithm": p.token_alg,
        "shared": p.shared,
        "createdAtIndex": p.created_at_index,
    })
}

pub async fn create_provider(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    validate_provider_name(&name)?;
    let body = body_bytes(body)?;
    let req: CreateProvider = if body.is_empty() {
        CreateProvider {
            trust_model: default_trust(),
            token_signing_algorithm: default_alg(),
            policy_signing_certificates: vec![],
        }
    } else {
        require_json(&headers)?;
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("malformed provider JSON: {e}")))?
    };
    let trust_model = match req.trust_model.as_str() {
        t if t.eq_ignore_ascii_case("aad") => TrustModel::Aad,
        t if t.eq_ignore_ascii_case("isolated") => TrustModel::Isolated,
        other => return Err(ApiError::bad_request(format!("trustModel must be AAD or Isolated, not '{other}'"))),
    };
    if !["RS256", "ES256", "PS256"].contains(&req.token_signing_algorithm.as_str()) {
        return Err(ApiError::bad_request("tokenSigningAlgorithm must be RS256, ES256 or PS256"));
    }
    if trust_model == TrustModel::Isolated && req.policy_signing_certificates.is_empty() {
        return Err(ApiError::bad_request("an Isolated provider needs at least one policy signing certificate"));
    }
    for pem in &req.policy_signing_certificates {
        if !pem.contains("-----BEGIN CERTIFICATE-----") || pem.len() > 64 << 10 {
            return Err(ApiError::bad_request(
                "policySigningCertificates must be PEM certificates (at most 64 KiB each)",
            ));
        }
    }
    let cmd = Command::CreateProvider {
        name: name.clone(),
        trust_model,
        token_alg: req.token_signing_algorithm,
        signer_certs: req.policy_signing_certificates,
        shared: false,
    };
    let out = write(&app, &headers, cmd).await?;
    let p = app.control.state.read(|s| s.providers.get(&name.to_ascii_lowercase()).cloned());
    let body = p.as_ref().map(provider_json).unwrap_or_else(|| json!({"name": name}));
    Ok(write_response(StatusCode::CREATED, &out, body))
}

pub async fn get_provider(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ReadQuery>,
) -> ApiResult<Response> {
    validate_provider_name(&name)?;
    let h = read_view(&app, &q).await?;
    let p = app.control.state.read(|s| s.providers.get(&name.to_ascii_lowercase()).cloned());
    match p {
        Some(p) => Ok((h, Json(provider_json(&p))).into_response()),
        None => Err(ApiError::not_found("ProviderNotFound", format!("provider '{name}' does not exist"))),
    }
}

pub async fn list_providers(State(app): State<AppState>, Query(q): Query<ReadQuery>) -> ApiResult<Response> {
    let h = read_view(&app, &q).await?;
    let list: Vec<Value> = app.control.state.read(|s| s.providers.values().map(provider_json).collect());
    Ok((h, Json(json!({"value": list}))).into_response())
}

pub async fn delete_provider(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    validate_provider_name(&name)?;
    let out = write(&app, &headers, Command::DeleteProvider { name: name.clone() }).await?;
    Ok(write_response(StatusCode::OK, &out, json!({"name": name, "deleted": true})))
}

pub async fn get_policy(
    State(app): State<AppState>,
    Path((provider, policy)): Path<(String, String)>,
    Query(q): Query<ReadQuery>,
) -> ApiResult<Response> {
    validate_provider_name(&provider)?;
    let ty = canonical_type(&policy)?;
    let h = read_view(&app, &q).await?;
    let (exists, rec) = app.control.state.read(|s| {
        (s.providers.contains_key(&provider.to_ascii_lowercase()), s.policies.get(&policy_key(&provider, ty)).cloned())
    });
    if !exists {
        return Err(ApiError::not_found("ProviderNotFound", format!("provider '{provider}' does not exist")));
    }
    let body = match rec {
        Some(r) => json!({"attestationType": ty, "policy": r.document, "version": r.version, "meta": r.meta}),
        None => json!({"attestationType": ty, "policy": null, "version": 0}),
    };
    Ok((h, Json(body)).into_response())
}

/// `PUT /providers/{p}/policies/{type}`: the body is the policy document,
/// as `text/plain` (MAA sends a JWS this way) or a JSON string.
pub async fn set_policy(
    State(app): State<AppState>,
    Path((provider, policy)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    validate_provider_name(&provider)?;
    let ty = canonical_type(&policy)?;
    let body = body_bytes(body)?;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let document = match mime.as_str() {
        "text/plain" => String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("policy must be UTF-8"))?,
        "application/json" => serde_json::from_slice::<String>(&body)
            .map_err(|e| ApiError::bad_request(format!("policy body must be a JSON string: {e}")))?,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "InvalidParameter",
                "Content-Type must be text/plain or application/json",
            ))
        }
    };
    if document.trim().is_empty() {
        return Err(ApiError::bad_request("policy document is empty"));
    }
    if document.len() > app.config.limits.max_policy_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLarge",
            format!("policy exceeds {} bytes", app.config.limits.max_policy_bytes),
        ));
    }
    let hash = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(ring::digest::digest(&ring::digest::SHA256, document.as_bytes()).as_ref())
    };
    let cmd = Command::SetPolicy {
        provider: provider.clone(),
        attestation_type: ty.to_string(),
        document,
        meta: json!({"sha256": hash}),
    };
    let out = write(&app, &headers, cmd).await?;
    Ok(write_response(
        StatusCode::OK,
        &out,
        json!({"attestationType": ty, "policyResolution": "Updated", "sha256": hash}),
    ))
}

/// `POST /providers/{p}/policies/{type}:reset` (axum sees `{type}:reset`
/// as one segment).
pub async fn policy_action(
    State(app): State<AppState>,
    Path((provider, policy)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    validate_provider_name(&provider)?;
    let Some(ty) = policy.strip_suffix(":reset") else {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "InvalidOperation",
            "POST supports only {type}:reset",
        ));
    };
    let ty = canonical_type(ty)?;
    let cmd = Command::ResetPolicy { provider: provider.clone(), attestation_type: ty.to_string() };
    let out = write(&app, &headers, cmd).await?;
    Ok(write_response(StatusCode::OK, &out, json!({"attestationType": ty, "policyResolution": "Removed"})))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("NotFound", "no such route")
}
