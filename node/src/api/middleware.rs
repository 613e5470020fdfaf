//! What wraps every request: case-insensitive route names
//! ([`normalize_path`]), an `x-ms-request-id` on every response
//! (propagated from the client's `x-ms-client-request-id` when given),
//! load shedding beyond `limits.max_concurrent_requests` (503 +
//! `Retry-After` instead of an unbounded queue), and request metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;

pub const REQUEST_ID: &str = "x-ms-request-id";
pub const CLIENT_REQUEST_ID: &str = "x-ms-client-request-id";

pub async fn wrap(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_id = req.headers().get(CLIENT_REQUEST_ID).cloned();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let mut resp = match app.limiter.clone().try_acquire_owned() {
        Ok(permit) => {
            let r = next.run(req).await;
            drop(permit);
            r
        }
        Err(_) => {
            metrics::counter!("attest_http_shed_total").increment(1);
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the node is at its concurrent request limit; retry shortly",
            )
            .retry_after(1)
            .into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    if let Some(c) = client_id {
        resp.headers_mut().insert(CLIENT_REQUEST_ID, c);
    }
    let status = resp.status().as_u16().to_string();
    metrics::counter!("attest_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("attest_http_request_seconds", "route" => route).record(started.elapsed().as_secs_f64());
    resp
}

/// Path segments that are route names, in their canonical spelling.
const ROUTE_WORDS: &[&str] = &[
    "attest",
    "policies",
    "certificates",
    "certificates:add",
    "certificates:remove",
    "certs",
    ".well-known",
    "openid-configuration",
    "providers",
    "admin",
    "health",
    "metrics",
];

/// The MAA route names that may follow `/providers/{provider}/`.
const MAA_WORDS: &[&str] =
    &["attest", "policies", "certificates", "certificates:add", "certificates:remove", "certs", ".well-known"];

/// The provider named by a `/providers/{provider}/…` path prefix, put in
/// the request's extensions by [`normalize_path`]; `None` when the MAA
/// route was addressed at the root (provider from the Host name).
#[derive(Clone, Debug, Default)]
pub struct PathProvider(pub Option<String>);

/// Rewrite route-name segments to their canonical case (`/Attest/…`,
/// `/CERTS`) so routing is case-insensitive; parameters (provider names,
/// attestation types) are matched case-insensitively by their handlers.
/// A data-plane path under `/providers/{p}/` is rewritten to its root
/// form with [`PathProvider`] naming `p`, so one handler serves both
/// addressing styles; `/providers` and `/providers/{p}` themselves are
/// provider management and stay as they are.
pub fn normalize_path(mut req: Request) -> Request {
    let path = req.uri().path();
    let segs: Vec<&str> = path
        .split('/')
        .map(|seg| ROUTE_WORDS.iter().copied().find(|w| w.eq_ignore_ascii_case(seg)).unwrap_or(seg))
        .collect();
    let (provider, segs) = match segs.as_slice() {
        ["", "providers", p, word, ..] if MAA_WORDS.contains(word) => {
            let mut rest = vec![""];
            rest.extend_from_slice(&segs[3..]);
            (Some((*p).to_string()), rest)
        }
        _ => (None, segs),
    };
    let fixed = segs.join("/");
    req.extensions_mut().insert(PathProvider(provider));
    if fixed == req.uri().path() {
        return req;
    }
    let mut p = fixed;
    if let Some(q) = req.uri().query() {
        p.push('?');
        p.push_str(q);
    }
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = p.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}
