//! Operator views and actions: cluster status, the applied state (for
//! audits and convergence checks), drain and undrain.

use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::control::ReadQuery;
use super::error::{ApiError, ApiResult};
use super::AppState;

pub async fn status(State(app): State<AppState>) -> Json<attest_raft::ControlStatus> {
    Json(app.control.status())
}

/// The whole applied control-plane state with its digest and index. The
/// digest is equal on two nodes exactly when they applied the same state.
pub async fn state(State(app): State<AppState>, Query(q): Query<ReadQuery>) -> ApiResult<Response> {
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
            "collateral": s.collateral.keys().collect::<Vec<_>>(),
        })
    });
    Ok(Json(body).into_response())
}

pub async fn drain(State(app): State<AppState>) -> Json<serde_json::Value> {
    app.draining.store(true, Ordering::Relaxed);
    tracing::warn!("node draining: /health now answers 503");
    Json(json!({"draining": true}))
}

pub async fn undrain(State(app): State<AppState>) -> Json<serde_json::Value> {
    app.draining.store(false, Ordering::Relaxed);
    tracing::info!("node undrained");
    Json(json!({"draining": false}))
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
pub async fn log(State(app): State<AppState>, Query(q): Query<LogQuery>) -> ApiResult<Json<serde_json::Value>> {
    let entries = app.control.local_log(q.from, q.limit.min(10_000)).map_err(ApiError::from)?;
    Ok(Json(json!({"entries": entries})))
}
