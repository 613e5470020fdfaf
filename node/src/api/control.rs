//! Provider management through the replicated control plane (attestd's
//! own API; MAA does this through ARM), and the write/read plumbing the
//! MAA routes in [`super::maa`] share.
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
//! Roles: listing and reading providers needs Reader, creating and
//! deleting them Owner.

use std::time::Duration;

use attest_raft::command::{Command, TrustModel};
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
use super::maa::authorize;
use super::middleware::CLIENT_REQUEST_ID;
use super::AppState;
use crate::auth::Role;
use crate::providers::{self, ProviderView};

/// MAA's provider name rule (see [`providers::valid_name`]).
pub fn validate_provider_name(name: &str) -> ApiResult<()> {
    if providers::valid_name(name) {
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

pub(super) fn body_bytes(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
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

pub(super) async fn write(app: &AppState, headers: &HeaderMap, command: Command) -> ApiResult<WriteOutcome> {
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

/// Headers describing a control-plane write: its log index and the
/// replication mode it was acknowledged in.
pub(super) fn write_headers(out: &WriteOutcome) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-attest-replication-mode", HeaderValue::from_static(out.mode.as_str()));
    if let Ok(v) = HeaderValue::from_str(&out.index.to_string()) {
        h.insert("x-attest-log-index", v);
    }
    h
}

fn write_response(status: StatusCode, out: &WriteOutcome, mut body: Value) -> Response {
    body["index"] = json!(out.index);
    body["replicationMode"] = json!(out.mode.as_str());
    body["secondaryDurable"] = json!(out.secondary_durable);
    body["duplicate"] = json!(out.duplicate);
    (status, write_headers(out), Json(body)).into_response()
}

/// Applies the read consistency and returns headers describing it.
pub(super) async fn read_view(app: &AppState, q: &ReadQuery) -> ApiResult<HeaderMap> {
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
    /// Home region (default: the primary region).
    #[serde(default)]
    location: Option<String>,
    /// Attest calls need a Reader token.
    #[serde(default)]
    attest_requires_auth: bool,
}

fn default_trust() -> String {
    "AAD".into()
}
fn default_alg() -> String {
    "RS256".into()
}

fn provider_json(p: &ProviderView, created_at_index: Option<u64>) -> Value {
    json!({
        "name": p.name,
        "trustModel": match p.trust_model { TrustModel::Aad => "AAD", TrustModel::Isolated => "Isolated" },
        "tokenSigningAlgorithm": p.token_alg.as_str(),
        "shared": p.shared,
        "location": p.location,
        "attestUri": p.issuer,
        "attestRequiresAuth": p.attest_requires_auth,
        "status": "Ready",
        "createdAtIndex": created_at_index,
    })
}

fn regions(app: &AppState) -> Vec<String> {
    let c = &app.config.cluster;
    app.control.state.read(|s| providers::regions(s, &c.primary_region, c.secondary_region.as_deref()))
}

fn view(app: &AppState, name: &str) -> Option<(ProviderView, Option<u64>)> {
    let domain = &app.config.tokens.domain;
    let regions = regions(app);
    if let Some(p) = providers::shared_provider(name, &regions, domain) {
        return Some((p, None));
    }
    let primary = regions.first().cloned().unwrap_or_default();
    app.control.state.read(|s| {
        s.providers
            .get(&name.to_ascii_lowercase())
            .map(|p| (providers::stored_provider(p, &primary, domain), Some(p.created_at_index)))
    })
}

pub async fn create_provider(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    validate_provider_name(&name)?;
    authorize(&app, &headers, Role::Owner).await?;
    let regions = regions(&app);
    if regions.iter().any(|r| providers::shared_name(r) == name.to_ascii_lowercase()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("'{name}' is the name of a shared regional provider"),
        ));
    }
    let body = body_bytes(body)?;
    let req: CreateProvider = if body.is_empty() {
        CreateProvider {
            trust_model: default_trust(),
            token_signing_algorithm: default_alg(),
            policy_signing_certificates: vec![],
            location: None,
            attest_requires_auth: false,
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
    let alg = crate::token::TokenAlg::parse(&req.token_signing_algorithm)
        .ok_or_else(|| ApiError::bad_request("tokenSigningAlgorithm must be RS256, ES256 or PS256"))?;
    if trust_model == TrustModel::Isolated && req.policy_signing_certificates.is_empty() {
        return Err(ApiError::bad_request("an Isolated provider needs at least one policy signing certificate"));
    }
    for pem in &req.policy_signing_certificates {
        let der = crate::token::keys::pem_decode("CERTIFICATE", pem);
        let ok =
            pem.len() <= 64 << 10 && der.as_deref().is_some_and(|d| x509_parser::parse_x509_certificate(d).is_ok());
        if !ok {
            return Err(ApiError::bad_request(
                "policySigningCertificates must be PEM X.509 certificates (at most 64 KiB each)",
            ));
        }
    }
    let location = match req.location {
        None => regions.first().cloned().unwrap_or_else(|| app.config.cluster.primary_region.clone()),
        Some(l) => regions.iter().find(|r| r.eq_ignore_ascii_case(&l)).cloned().ok_or_else(|| {
            ApiError::bad_request(format!("location '{l}' is not a region of this cluster ({})", regions.join(", ")))
        })?,
    };
    let cmd = Command::CreateProvider {
        name: name.to_ascii_lowercase(),
        trust_model,
        token_alg: alg.as_str().to_string(),
        signer_certs: req.policy_signing_certificates,
        shared: false,
        location,
        attest_requires_auth: req.attest_requires_auth,
    };
    let out = write(&app, &headers, cmd).await?;
    let body = view(&app, &name).map(|(p, i)| provider_json(&p, i)).unwrap_or_else(|| json!({"name": name}));
    Ok(write_response(StatusCode::CREATED, &out, body))
}

pub async fn get_provider(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Query<ReadQuery>,
) -> ApiResult<Response> {
    validate_provider_name(&name)?;
    authorize(&app, &headers, Role::Reader).await?;
    let h = read_view(&app, &q).await?;
    match view(&app, &name) {
        Some((p, i)) => Ok((h, Json(provider_json(&p, i))).into_response()),
        None => Err(ApiError::not_found("ProviderNotFound", format!("provider '{name}' does not exist"))),
    }
}

pub async fn list_providers(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ReadQuery>,
) -> ApiResult<Response> {
    authorize(&app, &headers, Role::Reader).await?;
    let h = read_view(&app, &q).await?;
    let domain = &app.config.tokens.domain;
    let regions = regions(&app);
    let mut list: Vec<Value> = regions
        .iter()
        .filter_map(|r| providers::shared_provider(&providers::shared_name(r), &regions, domain))
        .map(|p| provider_json(&p, None))
        .collect();
    let primary = regions.first().cloned().unwrap_or_default();
    list.extend(app.control.state.read(|s| {
        s.providers
            .values()
            .map(|p| provider_json(&providers::stored_provider(p, &primary, domain), Some(p.created_at_index)))
            .collect::<Vec<_>>()
    }));
    Ok((h, Json(json!({"value": list}))).into_response())
}

pub async fn delete_provider(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    validate_provider_name(&name)?;
    authorize(&app, &headers, Role::Owner).await?;
    if view(&app, &name).is_some_and(|(p, _)| p.shared) {
        return Err(
            ApiError::bad_request(format!("shared provider '{name}' cannot be deleted")).with_code("InvalidOperation")
        );
    }
    let out = write(&app, &headers, Command::DeleteProvider { name: name.to_ascii_lowercase() }).await?;
    Ok(write_response(StatusCode::OK, &out, json!({"name": name, "deleted": true})))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("NotFound", "no such route")
}

/// A known route called with a method it does not take.
pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("this route does not accept {method}"),
    )
}
