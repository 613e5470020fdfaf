//! TLS termination at the gateway and re-encryption to nodes, HTTP/2 and
//! HTTP/1.1 via ALPN, HTTPS probes — with a throw-away CA.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use attest_gateway::config::Config;
use attest_gateway::Gateway;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::ServerName;

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("attest-gw-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("leaf params")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf cert");
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write");
        std::fs::write(dir.join("leaf.pem"), leaf.pem()).expect("write");
        std::fs::write(dir.join("leaf.key"), leaf_key.serialize_pem()).expect("write");
        Self { dir }
    }
    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tls_request(
    pki: &Pki,
    gw: std::net::SocketAddr,
    alpn: &[u8],
    path: &str,
) -> (u16, http::HeaderMap, String, Option<Vec<u8>>) {
    let mut cfg =
        (*attest_gateway::tls::client_config(Some(pki.path("ca.pem").as_ref())).expect("client config")).clone();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(gw).await.expect("connect");
        let tls = connector
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake with the gateway");
        let negotiated = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
        let io = TokioIo::new(tls);
        let req = Request::post(format!("https://localhost{path}"))
            .header("host", "localhost")
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        let resp = if negotiated.as_deref() == Some(b"h2") {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.expect("h2 handshake");
            tokio::spawn(conn);
            send.send_request(req).await.expect("h2 response")
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.expect("h1 handshake");
            tokio::spawn(conn);
            send.send_request(req).await.expect("h1 response")
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned(), negotiated)
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.expect("bounded TLS request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_reencryption_h2_and_https_probes() {
    let pki = Pki::new();
    let server_cfg = attest_gateway::tls::server_config(pki.path("leaf.pem").as_ref(), pki.path("leaf.key").as_ref())
        .expect("server config");
    let node =
        Backend::start_on("127.0.0.1:0".parse().expect("addr"), Behavior::new("westeurope", false), Some(server_cfg))
            .await;
    let cfg = format!(
        r#"
[profile]
name = "tls"
[listen]
address = "127.0.0.1:0"
tls_cert = "{cert}"
tls_key = "{key}"
[upstream]
scheme = "https"
ca_file = "{ca}"
server_name = "localhost"
[monitor]
protocol = "HTTPS"
path = "/health"
# A generous probe deadline: the default (a third of the interval) leaves
# a fresh TLS handshake ~33 ms, which a loaded CI machine can miss on
# every probe; probe timing is not what this test is about.
interval = "500ms"
timeout = "500ms"
tolerated_failures = 0
[[endpoints]]
name = "westeurope"
nodes = ["{node}"]
"#,
        cert = pki.path("leaf.pem"),
        key = pki.path("leaf.key"),
        ca = pki.path("ca.pem"),
        node = node.addr,
    );
    let gw = Gateway::start(Config::parse(&cfg).expect("config")).await.expect("start");
    let addr = gw.local_addr();
    let router = gw.router().clone();
    wait_for(Duration::from_secs(10), "HTTPS probe marks node Online", || {
        let s = router.topology().region_statuses();
        async move { s == vec![attest_gateway::monitor::MonitorStatus::Online] }
    })
    .await;

    let (status, headers, body, alpn) = tls_request(&pki, addr, b"h2", "/attest/SgxEnclave").await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-attest-region"], "westeurope");
    assert!(body.contains("from-westeurope"));

    let (status, _, _, alpn) = tls_request(&pki, addr, b"http/1.1", "/attest/TdxVm").await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(status, 200);
}

#[test]
fn check_config_rejects_missing_tls_files() {
    let cfg = Config::parse(
        r#"
[profile]
name = "x"
[listen]
tls_cert = "/nonexistent/cert.pem"
tls_key = "/nonexistent/key.pem"
[[endpoints]]
name = "a"
nodes = ["127.0.0.1:1"]
"#,
    )
    .expect("syntactically valid");
    let tls = cfg.listen.tls.expect("tls configured");
    let err = attest_gateway::tls::server_config(&tls.cert, &tls.key).expect_err("missing files fail");
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
}
