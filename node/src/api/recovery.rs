//! Disaster-recovery admin API (issue 9) and the fence in front of every
//! route. The logic lives in `attest_raft::recovery`; see
//! docs/operations.md, "Disaster recovery".
//!
//! - `GET  /admin/promote/plan?region=R` — what a forced promotion of R
//!   would do: survivors' log positions, RPO estimate, refusals. Reader.
//! - `POST /admin/promote` `{"region","force","confirm"}` — the promotion. Owner.
//! - `POST /admin/reseed` `{"confirm","join":[…]}` — on a fenced node. Owner.
//! - `POST /admin/rebalance` `{"primary"}` — move the voter majority. Owner.
//! - `GET  /admin/audit` — the replicated audit log. Reader.
//! - `GET  /admin/epoch` — this node's epoch and fence. Reader.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use attest_raft::recovery::RecoveryError;

use super::error::{ApiError, ApiResult};
use super::maa::authorize;
use super::AppState;
use crate::auth::Role;

fn recovery_error(e: RecoveryError) -> ApiError {
    match e {
        RecoveryError::Refused(m) => ApiError::new(StatusCode::CONFLICT, "RecoveryRefused", m),
        RecoveryError::Failed(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "RecoveryFailed", m),
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    body.map(|Json(v)| v).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Paths a fenced node still answers: probes, metrics and the operator
/// views and actions that get it out of the fence.
fn allowed_while_fenced(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    p == "/health"
        || p == "/metrics"
        || p == "/admin/status"
        || p == "/admin/log"
        || p == "/admin/audit"
        || p == "/admin/epoch"
        || p == "/admin/reseed"
        || p == "/admin/drain"
        || p == "/admin/undrain"
}

/// The fence: a node superseded by a forced promotion answers neither the
/// data plane (attest, certs, policies, metadata) nor the control plane,
/// with `503 NodeFenced`, so that clients and gateways go elsewhere and
/// nobody gets a token or a read from stale state.
pub async fn fence_guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(f) = app.control.epoch.fence() {
        if !allowed_while_fenced(req.uri().path()) {
            metrics::counter!("attest_fenced_requests_total").increment(1);
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NodeFenced",
                attest_raft::recovery::fence_reason(&f),
            )
            .into_response();
        }
    }
    next.run(req).await
}

#[derive(Deserialize)]
pub struct PlanQuery {
    region: Option<String>,
}

pub async fn promote_plan(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PlanQuery>,
) -> ApiResult<Response> {
    authorize(&app, &headers, Role::Reader).await?;
    let region = q.region.unwrap_or_else(|| app.control.region.clone());
    let plan = app.control.promote_plan(&region).await;
    Ok(Json(plan).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    region: String,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    confirm: bool,
}

pub async fn promote(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<PromoteBody>, JsonRejection>,
) -> ApiResult<Response> {
    let who = authorize(&app, &headers, Role::Owner).await?;
    let b = json_body(body)?;
    tracing::warn!(by = %who.subject, region = %b.region, force = b.force, confirm = b.confirm, "forced promotion requested");
    let out = app.control.promote(&b.region, &who.subject, b.force, b.confirm).await.map_err(recovery_error)?;
    Ok(Json(out).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReseedBody {
    #[serde(default)]
    confirm: bool,
    /// gRPC addresses of promoted-side nodes (default: the one that fenced us).
    #[serde(default)]
    join: Vec<String>,
}

pub async fn reseed(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ReseedBody>, JsonRejection>,
) -> ApiResult<Response> {
    let who = authorize(&app, &headers, Role::Owner).await?;
    let b = json_body(body)?;
    tracing::warn!(by = %who.subject, "re-seed requested");
    let out = app.control.reseed(&who.subject, b.join, b.confirm).await.map_err(recovery_error)?;
    Ok(Json(out).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebalanceBody {
    primary: String,
}

pub async fn rebalance(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<RebalanceBody>, JsonRejection>,
) -> ApiResult<Response> {
    let who = authorize(&app, &headers, Role::Owner).await?;
    let b = json_body(body)?;
    tracing::warn!(by = %who.subject, primary = %b.primary, "rebalance requested");
    let out = app.control.rebalance(&b.primary, &who.subject).await.map_err(recovery_error)?;
    Ok(Json(out).into_response())
}

/// The replicated audit log as this node applied it (a fenced node shows
/// its own, old-epoch copy, plus its fence).
pub async fn audit(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    authorize(&app, &headers, Role::Reader).await?;
    let (records, epoch) = app.control.state.read(|s| (s.audit.values().cloned().collect::<Vec<_>>(), s.epoch.max(1)));
    Ok(Json(json!({
        "epoch": epoch,
        "nodeEpoch": app.control.epoch.epoch(),
        "fenced": app.control.epoch.fence(),
        "appliedIndex": app.control.state.applied_index(),
        "value": records,
    }))
    .into_response())
}

pub async fn epoch(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    authorize(&app, &headers, Role::Reader).await?;
    Ok(Json(json!({"epoch": app.control.epoch.record(), "fenced": app.control.epoch.fence()})).into_response())
}
