//! Test helpers: tiny real attestd-like backends on ephemeral ports, and a
//! client. Every wait is bounded.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What a fake node does and what it saw.
pub struct Behavior {
    pub region: String,
    pub health_status: AtomicU16,
    /// Control-plane writes answered `503 ControlPlaneReadOnly`.
    pub read_only: bool,
    pub data_hits: AtomicUsize,
    pub write_hits: AtomicUsize,
    pub probe_headers: Mutex<Vec<HeaderMap>>,
    pub last_request: Mutex<Option<(String, HeaderMap)>>,
    /// Status for data-plane requests (200 normally).
    pub data_status: AtomicU16,
}

impl Behavior {
    pub fn new(region: &str, read_only: bool) -> Arc<Self> {
        Arc::new(Self {
            region: region.into(),
            health_status: AtomicU16::new(200),
            read_only,
            data_hits: AtomicUsize::new(0),
            write_hits: AtomicUsize::new(0),
            probe_headers: Mutex::new(Vec::new()),
            last_request: Mutex::new(None),
            data_status: AtomicU16::new(200),
        })
    }
}

pub const READ_ONLY_BODY: &str = r#"{"error":{"code":"ControlPlaneReadOnly","message":"this region is read-only while the primary is unavailable"}}"#;

async fn handle(b: Arc<Behavior>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let pq = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let method = req.method().clone();
    let headers = req.headers().clone();
    let _ = req.into_body().collect().await;
    let reply = |status: u16, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        r.headers_mut().insert("content-type", "application/json".parse().expect("static"));
        Ok(r)
    };
    if path == "/health" {
        b.probe_headers.lock().expect("lock").push(headers);
        let st = b.health_status.load(Ordering::SeqCst);
        return reply(
            st,
            format!(
                r#"{{"region":"{}","node_id":"n","raft_role":"follower","control_plane":"{}"}}"#,
                b.region,
                if b.read_only { "read-only" } else { "writable" }
            ),
        );
    }
    *b.last_request.lock().expect("lock") = Some((pq, headers));
    let data_plane = method == Method::GET || (method == Method::POST && path.starts_with("/attest/"));
    if data_plane {
        b.data_hits.fetch_add(1, Ordering::SeqCst);
        let st = b.data_status.load(Ordering::SeqCst);
        return reply(st, format!(r#"{{"token":"from-{}"}}"#, b.region));
    }
    b.write_hits.fetch_add(1, Ordering::SeqCst);
    if b.read_only {
        return reply(503, READ_ONLY_BODY.to_string());
    }
    reply(200, format!(r#"{{"written_by":"{}"}}"#, b.region))
}

/// A running fake node. Dropping or [`Backend::kill`]ing it closes the
/// listener and every open connection at once (like kill -9).
pub struct Backend {
    pub addr: SocketAddr,
    pub behavior: Arc<Behavior>,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    pub async fn start(behavior: Arc<Behavior>) -> Backend {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), behavior, None).await
    }

    pub async fn start_on(
        addr: SocketAddr,
        behavior: Arc<Behavior>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Backend {
        // Re-binding a just-closed port can race its teardown: retry briefly.
        let mut listener = None;
        for _ in 0..100 {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let listener = listener.expect("bind backend");
        let addr = listener.local_addr().expect("local addr");
        let b = behavior.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let b = b.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(b.clone(), req));
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(cfg) => {
                            let acc = tokio_rustls::TlsAcceptor::from(cfg);
                            if let Ok(s) = acc.accept(tcp).await {
                                let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Backend { addr, behavior, task: Some(task) }
    }

    pub fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

pub type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

/// One request through the gateway, bounded by 10 s.
pub async fn send(
    c: &TestClient,
    gw: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Answer, String> {
    let mut req = Request::builder().method(method).uri(format!("http://{gw}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).map_err(|e| e.to_string())?;
    let fut = async {
        let resp = c.request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.map_err(|_| "client timeout".to_string())?
}

/// Polls `cond` every 20 ms for at most `limit`; panics with `what` otherwise.
pub async fn wait_for<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() > end {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gateway config for tests: plain HTTP, fast probes.
pub fn config(regions: &[(&str, u16, Vec<SocketAddr>, bool)], extra: &str) -> String {
    let mut s = format!(
        r#"
[profile]
name = "test"

[listen]
address = "127.0.0.1:0"

[upstream]
scheme = "http"
connect_timeout = "500ms"
request_timeout = "8s"
attempt_timeout = "3s"

[retry]
max_attempts = 5
budget_percent = 100
budget_min_per_second = 1000

[limits]
header_read_timeout = "500ms"
body_read_timeout = "1s"
max_header_bytes = 8192
max_body_bytes = 65536

[monitor]
protocol = "HTTP"
path = "/health"
interval = "100ms"
timeout = "80ms"
tolerated_failures = 1
custom_headers = ["X-Probe: attest-gateway"]

[passive]
base_ejection = "300ms"
max_ejection = "2s"
{extra}
"#
    );
    for (name, prio, nodes, enabled) in regions {
        let nodes: Vec<String> = nodes.iter().map(|a| format!("\"{a}\"")).collect();
        s.push_str(&format!(
            "\n[[endpoints]]\nname = \"{name}\"\npriority = {prio}\nenabled = {enabled}\nnodes = [{}]\n",
            nodes.join(", ")
        ));
    }
    s
}
