//! `GET /metrics`: Prometheus text. Gauges describing Raft and the
//! replication mode are refreshed here, at scrape time, from the same status
//! `/health` reports, so the two never disagree.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;

pub fn refresh_gauges(app: &AppState) {
    let s = app.control.status();
    metrics::gauge!("attest_raft_term").set(s.term as f64);
    metrics::gauge!("attest_raft_last_log_index").set(s.last_log_index as f64);
    metrics::gauge!("attest_raft_applied_index").set(s.applied_index as f64);
    metrics::gauge!("attest_raft_snapshot_index").set(s.snapshot_index as f64);
    metrics::gauge!("attest_raft_purged_index").set(s.purged_index as f64);
    metrics::gauge!("attest_raft_leader_id").set(s.leader.unwrap_or(0) as f64);
    for role in ["Leader", "Follower", "Candidate", "Learner", "Shutdown"] {
        metrics::gauge!("attest_raft_role", "role" => role).set(if s.raft_role == role { 1.0 } else { 0.0 });
    }
    metrics::gauge!("attest_raft_leader_contact_ms").set(s.leader_contact_ms.unwrap_or(u64::MAX) as f64);
    metrics::gauge!("attest_raft_failed").set(if s.raft_failure.is_some() { 1.0 } else { 0.0 });
    metrics::gauge!("attest_control_plane_writable").set(if s.control_plane == "writable" { 1.0 } else { 0.0 });
    for mode in ["sync", "async", "sync-recover"] {
        metrics::gauge!("attest_replication_mode", "mode" => mode).set(if s.replication_mode.as_str() == mode {
            1.0
        } else {
            0.0
        });
    }
    for (peer, lag) in &s.peer_lag {
        metrics::gauge!("attest_raft_peer_lag_entries", "peer" => peer.to_string()).set(*lag as f64);
    }
}

pub async fn render(State(app): State<AppState>) -> Response {
    refresh_gauges(&app);
    match &app.prometheus {
        Some(h) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder not installed").into_response(),
    }
}
