//! `GET /health`: 200 when this node can serve the data plane (state
//! applied, not draining, not fenced, its Raft core running), 503
//! otherwise; the JSON body carries the control plane's view for operators
//! and the gateway.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;

pub async fn health(State(app): State<AppState>) -> Response {
    let s = app.control.status();
    let draining = app.draining.load(Ordering::Relaxed);
    // A node serves attest from its own applied copy, so "ready" needs an
    // applied state (topology recorded), not a reachable leader: a
    // secondary node keeps serving through a primary outage.
    let has_state = app.control.state.read(|st| st.topology.is_some());
    let mut reasons = Vec::new();
    let fence = s.fenced.as_ref().map(attest_raft::recovery::fence_reason);
    if let Some(f) = &fence {
        reasons.push(f.as_str());
    }
    // A node whose Raft core died cannot follow the cluster: its state
    // would age without bound (a removed signer or policy would stay in
    // force here), so it leaves rotation until restarted.
    if let Some(f) = &s.raft_failure {
        reasons.push(f.as_str());
    }
    if draining {
        reasons.push("draining");
    }
    if !has_state {
        reasons.push("no applied control-plane state yet");
    }
    let ok = reasons.is_empty();
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "reasons": reasons,
        "region": s.region,
        "node_id": s.node_id,
        "raft_role": s.raft_role,
        "term": s.term,
        "leader": s.leader,
        "leader_region": s.leader_region,
        "last_log_index": s.last_log_index,
        "applied_index": s.applied_index,
        "lag": s.last_log_index.saturating_sub(s.applied_index),
        "leader_contact_ms": s.leader_contact_ms,
        "control_plane": s.control_plane,
        "replication_mode": s.replication_mode.as_str(),
        "replication_reason": s.replication_reason,
        "primary_region": s.primary_region,
        "secondary_region": s.secondary_region,
        "draining": draining,
        "epoch": s.epoch,
        "fenced": fence.is_some(),
        "fence": s.fenced,
        "raft_failure": s.raft_failure,
        "uptime_s": app.started.elapsed().as_secs(),
    });
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}
