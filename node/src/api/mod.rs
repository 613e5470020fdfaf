//! The HTTP API. Only this module touches HTTP types.
//!
//! One route group per file: `health` (probes), `metrics` (Prometheus),
//! `control` (providers and policies through the replicated control
//! plane), `admin` (operator views and actions). `middleware` holds what
//! wraps every request: request ids, limits, load shedding, metrics.

pub mod admin;
pub mod control;
pub mod error;
pub mod health;
pub mod metrics;
pub mod middleware;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use attest_raft::ControlPlane;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;

/// Shared, cheap-to-clone state of the HTTP layer.
#[derive(Clone)]
pub struct AppState {
    pub control: Arc<ControlPlane>,
    pub config: Arc<Config>,
    pub prometheus: Option<PrometheusHandle>,
    /// Set by `POST /admin/drain`: health turns 503 so gateways move away.
    pub draining: Arc<AtomicBool>,
    pub started: Instant,
    pub limiter: Arc<tokio::sync::Semaphore>,
}

pub fn router(state: AppState) -> Router {
    let limits = state.config.limits.clone();
    Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::render))
        .route("/providers", get(control::list_providers))
        .route(
            "/providers/{provider}",
            get(control::get_provider).put(control::create_provider).delete(control::delete_provider),
        )
        .route(
            "/providers/{provider}/policies/{policy}",
            get(control::get_policy).put(control::set_policy).post(control::policy_action),
        )
        .route("/admin/status", get(admin::status))
        .route("/admin/state", get(admin::state))
        .route("/admin/log", get(admin::log))
        .route("/admin/drain", post(admin::drain))
        .route("/admin/undrain", post(admin::undrain))
        .fallback(control::not_found)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::wrap))
        .with_state(state)
}
