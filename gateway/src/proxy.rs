//! The proxy as a stack of tower layers, assembled in one place ([`stack`]).
//!
//! Outer to inner:
//!
//! | layer | concern |
//! |---|---|
//! | [`RequestIdLayer`] | propagate or create `x-ms-request-id`, echo it on the response |
//! | [`AdminLayer`] | `/gateway/status`, `/gateway/`, `/metrics` answered locally |
//! | [`MetricsLayer`] | per-region request counts, errors, latency |
//! | [`BufferLayer`] | body size limit and read timeout; buffers the body so it can be replayed |
//! | [`RouteLayer`] | the plan (ordered candidate nodes), deadline, idempotency, retry budget |
//! | [`ErrorResponseLayer`] | turns transport failures into MAA-shaped 502/504 |
//! | `tower::retry::Retry` + [`RetryPolicy`] | walk the plan on failure, within deadline and budget |
//! | [`Forward`] | one attempt to one node; passive detection; `x-attest-region` |
//!
//! Retry rules: idempotent requests (GET, HEAD, `POST /attest/*`) are retried
//! on the next candidate after a transport error, timeout or 502/503/504.
//! Anything else (control-plane writes) is retried only when the connection
//! could not be *established* (nothing was sent, so a retry cannot apply a
//! write twice); any answer — notably `503 ControlPlaneReadOnly` — is passed
//! through unchanged. Bodies are buffered (bounded by `limits.max_body_bytes`)
//! because a streamed body cannot be replayed.
//!
//! Passive detection counts transport errors and timeouts for every request,
//! but 5xx only for idempotent requests: a read-only secondary answering a
//! write with 503 is healthy.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, RetryLayer};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

use crate::config::{Config, Scheme};
use crate::routing::{NodeState, Plan, Router};
use crate::tls::{self, TlsError, UpstreamConnector};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Response body of every response the gateway sends.
pub type Body = BoxBody<Bytes, BoxError>;
pub type Resp = Response<Body>;
type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");
pub const SERVED_BY_REGION: HeaderName = HeaderName::from_static("x-attest-region");

/// Hop-by-hop headers (RFC 9110 §7.6.1) that must not be forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

pub fn full_body(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// An error answer in MAA's shape: `{"error":{"code":..,"message":..}}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Resp {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut r = Response::new(full_body(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    r
}

// ------------------------------------------------------------ shared state

/// Things that change on reload, bundled so a request sees one consistent set.
pub struct Upstreams {
    pub cfg: Arc<Config>,
    pub client: Client<UpstreamConnector, Full<Bytes>>,
    pub connector: UpstreamConnector,
    pub budget: TpsBudget,
}

impl Upstreams {
    pub fn new(cfg: Arc<Config>) -> Result<Self, TlsError> {
        let tls = tls::client_config(cfg.upstream.ca_file.as_deref())?;
        let connector = UpstreamConnector::new(tls, cfg.upstream.server_name.as_deref(), cfg.upstream.connect_timeout)?;
        let client =
            Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(connector.clone());
        let budget =
            TpsBudget::new(Duration::from_secs(10), cfg.retry.budget_min_per_second, cfg.retry.budget_percent / 100.0);
        Ok(Self { cfg, client, connector, budget })
    }
}

/// State shared by every connection.
pub struct Shared {
    pub router: Arc<Router>,
    upstreams: RwLock<Arc<Upstreams>>,
}

impl Shared {
    pub fn new(router: Arc<Router>, up: Upstreams) -> Self {
        Self { router, upstreams: RwLock::new(Arc::new(up)) }
    }
    pub fn upstreams(&self) -> Arc<Upstreams> {
        self.upstreams.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn set_upstreams(&self, up: Upstreams) {
        *self.upstreams.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(up);
    }
}

// ------------------------------------------------------ request extensions

/// The client's address, set by the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);
/// Whether the request came over TLS.
#[derive(Clone, Copy, Debug)]
pub struct ClientTls(pub bool);
#[derive(Clone, Copy, Debug)]
struct Attempt(usize);
#[derive(Clone, Copy, Debug)]
struct Deadline(Instant);
#[derive(Clone, Copy, Debug)]
struct Idempotent(bool);

/// What became of one request's attempts, shared by its clones (the retry
/// layer clones the request per attempt), so the final error can say how
/// many nodes were tried, what each answered and why retrying stopped.
#[derive(Clone, Default)]
struct Trail(Arc<std::sync::Mutex<TrailInner>>);

#[derive(Default)]
struct TrailInner {
    /// `region/address: error` per failed attempt, in order.
    failures: Vec<String>,
    /// Why no further attempt was made.
    stop: Option<&'static str>,
}

impl Trail {
    fn with<R>(&self, f: impl FnOnce(&mut TrailInner) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Data-plane requests that are pure functions of their input.
pub fn is_idempotent(method: &Method, path: &str) -> bool {
    *method == Method::GET
        || *method == Method::HEAD
        || *method == Method::OPTIONS
        || (*method == Method::POST && path.starts_with("/attest/"))
}

// ------------------------------------------------------------ the stack

/// The full proxy stack for one gateway.
pub fn stack(
    shared: Arc<Shared>,
) -> impl Service<Request<Incoming>, Response = Resp, Error = Infallible, Future: Send> + Clone + Send + 'static {
    ServiceBuilder::new()
        .layer(RequestIdLayer)
        .layer(AdminLayer(shared.clone()))
        .layer(MetricsLayer)
        .layer(BufferLayer(shared.clone()))
        .layer(RouteLayer(shared.clone()))
        .layer(ErrorResponseLayer)
        .layer(RetryLayer::new(RetryPolicy))
        .service(Forward(shared))
}

// ------------------------------------------------------------ request id

#[derive(Clone)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestId(inner)
    }
}

#[derive(Clone)]
pub struct RequestId<S>(S);

impl<S, B> Service<Request<B>> for RequestId<S>
where
    S: Service<Request<B>, Response = Resp, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = BoxFut<Result<Resp, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = match req.headers().get(&REQUEST_ID) {
            // Keep the client's id if it is sane; otherwise mint one.
            Some(v) if !v.is_empty() && v.len() <= 128 => v.clone(),
            _ => {
                let v = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
                req.headers_mut().insert(REQUEST_ID, v.clone());
                v
            }
        };
        let inner = self.0.clone();
        Box::pin(async move {
            let mut resp = inner.oneshot(req).await?;
            resp.headers_mut().insert(REQUEST_ID, id);
            Ok(resp)
        })
    }
}

// ------------------------------------------------------------ admin

#[derive(Clone)]
pub struct AdminLayer(Arc<Shared>);

impl<S> Layer<S> for AdminLayer {
    type Service = Admin<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Admin(self.0.clone(), inner)
    }
}

#[derive(Clone)]
pub struct Admin<S>(Arc<Shared>, S);

impl<S, B> Service<Request<B>> for Admin<S>
where
    S: Service<Request<B>, Response = Resp, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = BoxFut<Result<Resp, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        let get = req.method() == Method::GET;
        let local = match path {
            "/gateway/status" if get => Some(crate::status::json_response(&self.0.router)),
            "/gateway" | "/gateway/" if get => Some(crate::status::html_response()),
            "/metrics" | "/gateway/metrics" if get => {
                let mut r = Response::new(full_body(crate::metrics::render()));
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
                Some(r)
            }
            p if p.starts_with("/gateway/") => {
                Some(error_response(StatusCode::NOT_FOUND, "NotFound", "unknown gateway path"))
            }
            _ => None,
        };
        if let Some(r) = local {
            return Box::pin(async move { Ok(r) });
        }
        Box::pin(self.1.clone().oneshot(req))
    }
}

// ------------------------------------------------------------ metrics

#[derive(Clone)]
pub struct MetricsLayer;

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Metrics(inner)
    }
}

#[derive(Clone)]
pub struct Metrics<S>(S);

impl<S, B> Service<Request<B>> for Metrics<S>
where
    S: Service<Request<B>, Response = Resp, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = BoxFut<Result<Resp, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let t0 = Instant::now();
            let resp = inner.oneshot(req).await?;
            let region =
                resp.headers().get(&SERVED_BY_REGION).and_then(|v| v.to_str().ok()).unwrap_or("none").to_string();
            let code = resp.status().as_u16();
            metrics::counter!("gateway_requests_total", "region" => region.clone(), "code" => code.to_string())
                .increment(1);
            if resp.status().is_server_error() {
                metrics::counter!("gateway_request_errors_total", "region" => region.clone(), "kind" => "5xx")
                    .increment(1);
            }
            metrics::histogram!("gateway_request_duration_seconds", "region" => region)
                .record(t0.elapsed().as_secs_f64());
            Ok(resp)
        })
    }
}

// ------------------------------------------------------------ buffering + limits

#[derive(Clone)]
pub struct BufferLayer(Arc<Shared>);

impl<S> Layer<S> for BufferLayer {
    type Service = Buffer<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Buffer(self.0.clone(), inner)
    }
}

#[derive(Clone)]
pub struct Buffer<S>(Arc<Shared>, S);

impl<S> Service<Request<Incoming>> for Buffer<S>
where
    S: Service<Request<Bytes>, Response = Resp, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = BoxFut<Result<Resp, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let limits = self.0.upstreams().cfg.limits.clone();
        let inner = self.1.clone();
        Box::pin(async move {
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(n) = declared.filter(|n| *n > limits.max_body_bytes as u64) {
                // Clients write their whole body before reading the answer:
                // closing on one mid-body turns the 413 into a connection
                // reset on its side. A body at most `DRAIN_BEYOND_LIMIT`
                // over the limit is read and dropped first (within the body
                // timeout), so the client gets the answer; a larger one is
                // answered at once and the connection closes (said in the
                // answer, so that an HTTP/1 client does not reuse it).
                let version = req.version();
                if n <= limits.max_body_bytes as u64 + DRAIN_BEYOND_LIMIT {
                    let mut body = req.into_body();
                    let drain = async { while let Some(Ok(_)) = body.frame().await {} };
                    if tokio::time::timeout(limits.body_read_timeout, drain).await.is_ok() {
                        return Ok(too_large(limits.max_body_bytes));
                    }
                }
                return Ok(closing(too_large(limits.max_body_bytes), version));
            }
            let (parts, body) = req.into_parts();
            let collected =
                tokio::time::timeout(limits.body_read_timeout, Limited::new(body, limits.max_body_bytes).collect())
                    .await;
            let bytes = match collected {
                Err(_) => {
                    return Ok(error_response(
                        StatusCode::REQUEST_TIMEOUT,
                        "RequestTimeout",
                        "the request body was not received in time",
                    ))
                }
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    // The rest of the body is still on the connection.
                    return Ok(closing(too_large(limits.max_body_bytes), parts.version));
                }
                Ok(Err(_)) => {
                    return Ok(error_response(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "the request body could not be read",
                    ))
                }
                Ok(Ok(c)) => c.to_bytes(),
            };
            inner.oneshot(Request::from_parts(parts, bytes)).await
        })
    }
}

/// How far over `max_body_bytes` a declared body may be and still be read
/// (and dropped) before the 413, so that the client receives it.
const DRAIN_BEYOND_LIMIT: u64 = 1 << 20;

/// `resp` with `Connection: close` on HTTP/1, for an answer after which the
/// connection cannot be reused (part of the request body was never read);
/// HTTP/2 resets just the stream.
fn closing(mut resp: Resp, version: Version) -> Resp {
    if matches!(version, Version::HTTP_10 | Version::HTTP_11) {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn too_large(max: usize) -> Resp {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        &format!("the request body exceeds {max} bytes"),
    )
}

// ------------------------------------------------------------ routing

#[derive(Clone)]
pub struct RouteLayer(Arc<Shared>);

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Route(self.0.clone(), inner)
    }
}

#[derive(Clone)]
pub struct Route<S>(Arc<Shared>, S);

impl<S> Service<Request<Bytes>> for Route<S>
where
    S: Service<Request<Bytes>, Response = Resp, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = BoxFut<Result<Resp, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        let plan = self.0.router.plan();
        if plan.candidates.is_empty() {
            return Box::pin(async {
                Ok(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "NoHealthyEndpoint",
                    "no region of the attestation service is available",
                ))
            });
        }
        let up = self.0.upstreams();
        up.budget.deposit();
        let idem = is_idempotent(req.method(), req.uri().path());
        let ext = req.extensions_mut();
        ext.insert(Deadline(Instant::now() + up.cfg.upstream.request_timeout));
        ext.insert(Idempotent(idem));
        ext.insert(Attempt(0));
        ext.insert(Arc::new(plan));
        ext.insert(up);
        Box::pin(self.1.clone().oneshot(req))
    }
}

// ------------------------------------------------------------ errors → responses

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The connection could not be established: nothing was sent.
    #[error("cannot connect to {node}: {detail}")]
    Connect { node: String, detail: String },
    /// The exchange failed after the request may have been sent.
    #[error("{node} failed: {detail}")]
    Transport { node: String, detail: String },
    #[error("{node} did not answer within {ms} ms")]
    Timeout { node: String, ms: u128 },
    #[error("the request deadline passed")]
    DeadlineExceeded,
    #[error("no node left to try")]
    NoCandidate,
    #[error("internal: {0}")]
    Internal(String),
}

impl ForwardError {
    /// True when the request certainly never reached a node.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::NoCandidate)
    }
}

#[derive(Clone)]
pub struct ErrorResponseLayer;

impl<S> Layer<S> for ErrorResponseLayer {
    type Service = ErrorResponse<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponse(inner)
    }
}

#[derive(Clone)]
pub struct ErrorResponse<S>(S);

impl<S> Service<Request<Bytes>> for ErrorResponse<S>
where
    S: Service<Request<Bytes>, Response = Resp, Error = ForwardError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = BoxFut<Result<Resp, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        let inner = self.0.clone();
        let trail = Trail::default();
        req.extensions_mut().insert(trail.clone());
        Box::pin(async move {
            Ok(match inner.oneshot(req).await {
                Ok(r) => r,
                Err(e) => {
                    let (tried, stop) = trail.with(|t| (std::mem::take(&mut t.failures), t.stop));
                    let stop = stop.unwrap_or("not retryable");
                    tracing::warn!(error = %e, attempts = tried.len(), stop, failures = ?tried, "request failed");
                    let (status, code) = match e {
                        ForwardError::Timeout { .. } | ForwardError::DeadlineExceeded => {
                            (StatusCode::GATEWAY_TIMEOUT, "GatewayTimeout")
                        }
                        ForwardError::NoCandidate => (StatusCode::SERVICE_UNAVAILABLE, "NoHealthyEndpoint"),
                        _ => (StatusCode::BAD_GATEWAY, "BadGateway"),
                    };
                    // Details (node addresses) go to the log, not to clients;
                    // the attempt count and why retrying stopped do not name
                    // nodes and tell a client (and a drill report) what happened.
                    let message = match code {
                        "GatewayTimeout" => "no region answered in time; the request can be retried",
                        "NoHealthyEndpoint" => "no region of the attestation service is available",
                        _ => "no region could serve the request; it can be retried if idempotent",
                    };
                    let message = format!("{message} ({} attempt(s); {stop})", tried.len());
                    error_response(status, code, &message)
                }
            })
        })
    }
}

// ------------------------------------------------------------ retry policy

/// Walks the plan; see the module docs for the rules.
#[derive(Clone, Copy)]
pub struct RetryPolicy;

impl Policy<Request<Bytes>, Resp, ForwardError> for RetryPolicy {
    type Future = futures::future::Ready<()>;

    fn retry(&mut self, req: &mut Request<Bytes>, result: &mut Result<Resp, ForwardError>) -> Option<Self::Future> {
        let idem = req.extensions().get::<Idempotent>().is_some_and(|i| i.0);
        let trail = req.extensions().get::<Trail>().cloned().unwrap_or_default();
        let attempt = req.extensions().get::<Attempt>().map_or(0, |a| a.0);
        let plan = req.extensions().get::<Arc<Plan>>()?;
        let (reason, failure) = match result {
            Ok(r) if idem && matches!(r.status().as_u16(), 502..=504) => {
                let node = plan.candidates.get(attempt).map(|c| format!("{}/{}", c.node.region, c.node.address));
                ("status", format!("{}: HTTP {}", node.unwrap_or_default(), r.status().as_u16()))
            }
            Ok(_) => return None,
            Err(e) if idem || e.nothing_sent() => ("error", e.to_string()),
            Err(e) => {
                trail.with(|t| {
                    t.failures.push(e.to_string());
                    t.stop = Some("not retried: the request may have reached the node");
                });
                return None;
            }
        };
        let up = req.extensions().get::<Arc<Upstreams>>()?;
        let deadline = req.extensions().get::<Deadline>()?;
        let stop = if attempt + 1 >= plan.candidates.len() {
            Some("no other routable node")
        } else if attempt + 1 >= up.cfg.retry.max_attempts as usize {
            Some("retry.max_attempts reached")
        } else if Instant::now() >= deadline.0 {
            Some("request deadline passed")
        } else if !up.budget.withdraw() {
            metrics::counter!("gateway_retries_denied_total").increment(1);
            Some("retry budget exhausted")
        } else {
            None
        };
        trail.with(|t| {
            t.failures.push(failure);
            t.stop = stop;
        });
        if stop.is_some() {
            return None;
        }
        metrics::counter!("gateway_retries_total", "reason" => reason).increment(1);
        req.extensions_mut().insert(Attempt(attempt + 1));
        Some(futures::future::ready(()))
    }

    fn clone_request(&mut self, req: &Request<Bytes>) -> Option<Request<Bytes>> {
        let mut r = Request::new(req.body().clone());
        *r.method_mut() = req.method().clone();
        *r.uri_mut() = req.uri().clone();
        *r.version_mut() = req.version();
        *r.headers_mut() = req.headers().clone();
        *r.extensions_mut() = req.extensions().clone();
        Some(r)
    }
}

// ------------------------------------------------------------ forwarding

/// Sends one attempt to the node the plan names for it.
#[derive(Clone)]
pub struct Forward(Arc<Shared>);

/// Decrements a node's outstanding count when the attempt ends, however it ends.
struct Outstanding(Arc<NodeState>);
impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop as well.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    h.remove(header::UPGRADE);
}

impl Service<Request<Bytes>> for Forward {
    type Response = Resp;
    type Error = ForwardError;
    type Future = BoxFut<Result<Resp, ForwardError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ForwardError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            let ext = req.extensions();
            let plan = ext.get::<Arc<Plan>>().cloned().ok_or_else(|| ForwardError::Internal("no plan".into()))?;
            let up =
                ext.get::<Arc<Upstreams>>().cloned().ok_or_else(|| ForwardError::Internal("no upstreams".into()))?;
            let attempt = ext.get::<Attempt>().map_or(0, |a| a.0);
            let deadline =
                ext.get::<Deadline>().map_or_else(|| Instant::now() + up.cfg.upstream.request_timeout, |d| d.0);
            let idem = ext.get::<Idempotent>().is_some_and(|i| i.0);
            let client_addr = ext.get::<ClientAddr>().copied();
            let client_tls = ext.get::<ClientTls>().is_some_and(|t| t.0);
            let node = plan.candidates.get(attempt).map(|c| c.node.clone()).ok_or(ForwardError::NoCandidate)?;
            let budget = deadline.saturating_duration_since(Instant::now()).min(up.cfg.upstream.attempt_timeout);
            if budget.is_zero() {
                return Err(ForwardError::DeadlineExceeded);
            }

            let (parts, body) = req.into_parts();
            let scheme = match up.cfg.upstream.scheme {
                Scheme::Http => "http",
                Scheme::Https => "https",
            };
            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            let uri = Uri::try_from(format!("{scheme}://{}{pq}", node.address))
                .map_err(|e| ForwardError::Internal(e.to_string()))?;
            let mut headers = parts.headers;
            strip_hop_by_hop(&mut headers);
            // HTTP/2 clients send :authority instead of Host; keep the name
            // the client used so the node sees the same Host either way.
            if !headers.contains_key(header::HOST) {
                if let Some(a) = parts.uri.authority() {
                    if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                        headers.insert(header::HOST, v);
                    }
                }
            }
            if let Some(ClientAddr(addr)) = client_addr {
                if let Ok(v) = HeaderValue::from_str(&addr.ip().to_string()) {
                    headers.append(HeaderName::from_static("x-forwarded-for"), v);
                }
            }
            headers.insert(
                HeaderName::from_static("x-forwarded-proto"),
                HeaderValue::from_static(if client_tls { "https" } else { "http" }),
            );
            let mut out = Request::new(Full::new(body));
            *out.method_mut() = parts.method;
            *out.uri_mut() = uri;
            *out.version_mut() = Version::HTTP_11;
            *out.headers_mut() = headers;

            node.outstanding.fetch_add(1, Ordering::Relaxed);
            let guard = Outstanding(node.clone());
            let result = tokio::time::timeout(budget, up.client.request(out)).await;
            drop(guard);
            let name = format!("{}/{}", node.region, node.address);
            let resp = match result {
                Err(_) => {
                    shared.router.report_failure(&node, "timeout");
                    return Err(ForwardError::Timeout { node: name, ms: budget.as_millis() });
                }
                Ok(Err(e)) => {
                    let detail = crate::probe::error_chain(&e);
                    shared.router.report_failure(&node, &detail);
                    return Err(if e.is_connect() {
                        ForwardError::Connect { node: name, detail }
                    } else {
                        ForwardError::Transport { node: name, detail }
                    });
                }
                Ok(Ok(r)) => r,
            };
            if idem && resp.status().is_server_error() {
                shared.router.report_failure(&node, &format!("HTTP {}", resp.status().as_u16()));
            } else {
                shared.router.report_success(&node);
            }
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if let Ok(v) = HeaderValue::from_str(&node.region) {
                parts.headers.insert(SERVED_BY_REGION, v);
            }
            Ok(Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed()))
        })
    }
}
