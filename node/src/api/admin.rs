//! Operator views and actions: cluster status, the applied state (for
//! audits and convergence checks), drain and undrain, collateral import,
//! signing-key rotation. Views need Reader, actions Owner.

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::json;

use attest_raft::command::Command;

use super::control::{body_bytes, write};
use super::maa::{authorize, write_timeout};
use crate::auth::Role;

use super::control::ReadQuery;
use super::error::{ApiError, ApiResult};
use super::AppState;

pub async fn status(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Json<attest_raft::ControlStatus>> {
    authorize(&app, &headers, Role::Reader).await?;
    Ok(Json(app.control.status()))
}

/// The whole applied control-plane state with its digest and index. The
/// digest is equal on two nodes exactly when they applied the same state.
pub async fn state(State(app): State<AppState>, headers: HeaderMap, Query(q): Query<ReadQuery>) -> ApiResult<Response> {
    authorize(&app, &headers, Role::Reader).await?;
    if q.consistency.as_deref() == Some("linearizable") {
        app.control
            .read_barrier(std::time::Duration::from_millis(app.config.limits.read_timeout_ms))
            .await
            .map_err(ApiError::from)?;
    }
    let applied = app.control.state.applied_index();
    let body = app.control.state.read(|s| {
        json!({
            "appliedIndex": applied,
            "digest": s.digest(),
            "topology": s.topology,
            "replication": s.replication,
            "providers": s.providers,
            "policies": s.policies,
            "signers": s.signers,
            "nodeCerts": s.node_certs,
            "collateral": s.collateral.values().map(|c| json!({"name": c.key, "version": c.version})).collect::<Vec<_>>(),
        })
    });
    Ok(Json(body).into_response())
}

pub async fn drain(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Json<serde_json::Value>> {
    let who = authorize(&app, &headers, Role::Owner).await?;
    app.draining.store(true, Ordering::Relaxed);
    tracing::warn!(by = %who.subject, "node draining: /health now answers 503");
    Ok(Json(json!({"draining": true})))
}

pub async fn undrain(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Json<serde_json::Value>> {
    let who = authorize(&app, &headers, Role::Owner).await?;
    app.draining.store(false, Ordering::Relaxed);
    tracing::info!(by = %who.subject, "node undrained");
    Ok(Json(json!({"draining": false})))
}

/// `PUT /admin/collateral/{name}`: store one collateral blob (Intel TCB
/// info / QE identity / CRL / chain, a QuoteCollateralV3 bundle, AMD or TPM
/// CA certificates) in the replicated state. The blob is verified together
/// with the collateral already stored, as every node will; one that fails
/// (bad signature, unknown issuer, unrecognised format) is refused and
/// changes nothing.
pub async fn put_collateral(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    authorize(&app, &headers, Role::Owner).await?;
    if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(ApiError::bad_request("collateral names are 1-128 characters of [A-Za-z0-9-_.]"));
    }
    let body = body_bytes(body)?;
    if body.is_empty() || body.len() > crate::evidence::collateral::MAX_BLOB_LEN {
        return Err(ApiError::bad_request("the collateral blob is empty or larger than 4 MiB"));
    }
    let blob_b64 = base64::engine::general_purpose::STANDARD.encode(&body);
    let rejected = app.control.state.read(|s| {
        // The candidate judged alongside what is stored (minus the record it
        // replaces), without copying the rest of the control state.
        let others = s.collateral.values().filter(|c| c.key != name).map(|c| (c.key.as_str(), c.blob_b64.as_str()));
        let trial = others.chain(std::iter::once((name.as_str(), blob_b64.as_str())));
        let store = crate::attest::build_store(app.engine.anchors(), trial, 0, 0);
        store.rejected().iter().find(|r| r.name == name).map(|r| r.error.to_string())
    });
    if let Some(e) = rejected {
        return Err(ApiError::bad_request(format!("collateral '{name}' rejected: {e}")));
    }
    let out = write(&app, &headers, Command::PutCollateral { key: name.clone(), blob_b64 }).await?;
    Ok((StatusCode::OK, Json(json!({"name": name, "index": out.index, "replicationMode": out.mode.as_str()})))
        .into_response())
}

pub async fn delete_collateral(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&app, &headers, Role::Owner).await?;
    let out = write(&app, &headers, Command::DeleteCollateral { key: name.clone() }).await?;
    Ok(Json(json!({"name": name, "deleted": true, "index": out.index})).into_response())
}

/// `GET /admin/collateral`: what is stored and how this node's verifier
/// judged it.
pub async fn list_collateral(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    authorize(&app, &headers, Role::Reader).await?;
    let (items, rejected) = app.control.state.read(|s| {
        let store = app.engine.collateral(s);
        let items: Vec<serde_json::Value> = s
            .collateral
            .values()
            .map(|c| json!({"name": c.key, "version": c.version, "bytes": c.blob_b64.len() / 4 * 3}))
            .collect();
        let rejected: Vec<serde_json::Value> =
            store.rejected().iter().map(|r| json!({"name": r.name, "error": r.error.to_string()})).collect();
        (items, rejected)
    });
    Ok(Json(json!({"value": items, "rejected": rejected})).into_response())
}

/// `POST /admin/rotate-keys`: new signing keys on this node, published
/// before use; the old ones stay in `/certs` until their tokens expire.
pub async fn rotate_keys(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let who = authorize(&app, &headers, Role::Owner).await?;
    let now = (app.clock)();
    let kids =
        app.engine.keys.rotate(&app.control, now, write_timeout(&app)).await.map_err(|e| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "RotationFailed", e.to_string()).retry_after(5)
        })?;
    tracing::warn!(by = %who.subject, ?kids, "token signing keys rotated");
    Ok(Json(json!({"kids": kids})).into_response())
}

#[derive(serde::Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    from: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// Entries of this node's own Raft log (committed or not) from `from` on:
/// what a node holds on disk, e.g. to see which acknowledged writes a
/// secondary node has before a forced promotion.
pub async fn log(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(&app, &headers, Role::Reader).await?;
    let entries = app.control.local_log(q.from, q.limit.min(10_000)).map_err(ApiError::from)?;
    Ok(Json(json!({"entries": entries})))
}
