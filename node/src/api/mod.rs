//! The HTTP API. Only this module touches HTTP types.
//!
//! One route group per file: `health` (probes), `metrics` (Prometheus),
//! `maa` (Azure Attestation's data-plane contract: attest, policies,
//! certificates, certs, OpenID metadata), `control` (provider management
//! through the replicated control plane), `admin` (operator views and
//! actions). `middleware` holds what wraps every request: request ids,
//! path normalisation, limits, load shedding, metrics.

pub mod admin;
pub mod control;
pub mod error;
pub mod health;
pub mod limits;
pub mod maa;
pub mod metrics;
pub mod middleware;
pub mod recovery;

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
    /// Per-provider attestation concurrency (429 beyond).
    pub attest_slots: Arc<limits::ProviderSlots>,
    /// Attestations on the CPU at once (`limits.attest_workers`); waiters
    /// are served first come, first served.
    pub attest_workers: Arc<tokio::sync::Semaphore>,
    pub engine: Arc<crate::attest::Engine>,
    pub auth: Arc<crate::auth::Authenticator>,
    /// Wall clock in Unix seconds (injectable for tests).
    pub clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

/// The system clock in Unix seconds.
pub fn system_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn router(state: AppState) -> Router {
    let limits = state.config.limits.clone();
    let inner = Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::render))
        // MAA data plane. The provider comes from a `/providers/{p}/` prefix
        // (rewritten away by `normalize_path`), the Host name, or is the
        // region's shared one.
        .route("/attest/{type}", post(maa::attest))
        .route("/policies/{type}", get(maa::get_policy).put(maa::put_policy).post(maa::policy_action))
        .route("/certificates", get(maa::get_certificates))
        .route("/certificates:add", post(maa::add_certificate))
        .route("/certificates:remove", post(maa::remove_certificate))
        .route("/certs", get(maa::certs))
        .route("/.well-known/openid-configuration", get(maa::openid))
        // Provider management.
        .route("/providers", get(control::list_providers))
        .route(
            "/providers/{provider}",
            get(control::get_provider).put(control::create_provider).delete(control::delete_provider),
        )
        .route("/admin/collateral", get(admin::list_collateral))
        .route("/admin/collateral/{name}", axum::routing::put(admin::put_collateral).delete(admin::delete_collateral))
        .route("/admin/rotate-keys", post(admin::rotate_keys))
        .route("/admin/status", get(admin::status))
        .route("/admin/state", get(admin::state))
        .route("/admin/log", get(admin::log))
        .route("/admin/drain", post(admin::drain))
        .route("/admin/undrain", post(admin::undrain))
        // Disaster recovery (issue 9).
        .route("/admin/promote/plan", get(recovery::promote_plan))
        .route("/admin/promote", post(recovery::promote))
        .route("/admin/reseed", post(recovery::reseed))
        .route("/admin/rebalance", post(recovery::rebalance))
        .route("/admin/audit", get(recovery::audit))
        .route("/admin/epoch", get(recovery::epoch))
        .fallback(control::not_found)
        .method_not_allowed_fallback(control::method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        // A node fenced by a forced promotion serves nothing but health,
        // metrics and the recovery views (inside `wrap`: still counted).
        .layer(axum::middleware::from_fn_with_state(state.clone(), recovery::fence_guard))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::wrap))
        .with_state(state);
    // Route names match case-insensitively (MAA's do): normalise the path
    // before routing, which a layer on the router itself would run after.
    Router::new().fallback_service(tower::util::MapRequest::new(inner, middleware::normalize_path))
}
