//! TLS on both sides, with rustls and the `ring` provider only.
//!
//! * Inbound: [`server_config`] terminates TLS and offers `h2` and
//!   `http/1.1` by ALPN.
//! * Outbound: [`UpstreamConnector`] is the connector of hyper-util's pooled
//!   client. It dials `host:port` with a connect timeout and re-encrypts with a
//!   client config that trusts only the configured CA file. We write our own
//!   connector rather than pulling in hyper-rustls so the verification name can
//!   be overridden (nodes are usually addressed by IP) and so no other crypto
//!   provider can sneak in through default features.
//!
//! Deviation from Traffic Manager: TM's HTTPS probe does not validate the
//! certificate. We do validate (probes share the data-plane connector),
//! because a node presenting a wrong certificate would fail real requests
//! too, so it is not healthy.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read PEM from {path}: {source}")]
    Pem {
        path: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} contains no certificates")]
    NoCertificates { path: String },
    #[error("rustls rejected the configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("upstream.server_name `{0}` is not a valid DNS name or IP address")]
    ServerName(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_err(path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError + '_ {
    move |source| TlsError::Pem { path: path.display().to_string(), source }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err(path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(path))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates { path: path.display().to_string() });
    }
    Ok(certs)
}

/// Server side: certificate chain and key from PEM files, ALPN h2 + http/1.1.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client side: trusts exactly the certificates in `ca_file` (none if absent,
/// which makes every HTTPS upstream fail verification — config validation
/// warns about that).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = ca_file {
        for cert in load_certs(path)? {
            roots.add(cert)?;
        }
    }
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Dials nodes; TLS when the URI scheme is `https`.
#[derive(Clone)]
pub struct UpstreamConnector {
    tls: TlsConnector,
    server_name: Option<ServerName<'static>>,
    connect_timeout: Duration,
}

impl UpstreamConnector {
    pub fn new(tls: Arc<ClientConfig>, server_name: Option<&str>, connect_timeout: Duration) -> Result<Self, TlsError> {
        let server_name = match server_name {
            Some(s) => Some(ServerName::try_from(s.to_owned()).map_err(|_| TlsError::ServerName(s.into()))?),
            None => None,
        };
        Ok(Self { tls: TlsConnector::from(tls), server_name, connect_timeout })
    }
}

/// A connection to a node, plain or TLS.
pub enum UpstreamIo {
    Plain(TokioIo<TcpStream>),
    // Boxed: a TLS session is ~1 KiB, a plain stream a few words.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(_) => Connected::new(),
            Self::Tls(s) => {
                let (_, conn) = s.inner().get_ref();
                if conn.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connector errors (hyper-util reports them as `is_connect()`).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("upstream URI has no host")]
    NoHost,
    #[error("connect to {0} timed out")]
    Timeout(String),
    #[error("connect to {addr} failed")]
    Io {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid TLS server name `{0}`")]
    ServerName(String),
}

impl tower::Service<Uri> for UpstreamConnector {
    type Response = UpstreamIo;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri.host().ok_or(ConnectError::NoHost)?;
            // IPv6 literals come bracketed in URIs; the resolver wants them bare.
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let tls = uri.scheme_str() == Some("https");
            let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
            let addr = format!("{host}:{port}");
            let tcp = tokio::time::timeout(this.connect_timeout, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| ConnectError::Timeout(addr.clone()))?
                .map_err(|source| ConnectError::Io { addr: addr.clone(), source })?;
            // Small request/response exchanges: latency matters more than batching.
            let _ = tcp.set_nodelay(true);
            if !tls {
                return Ok(UpstreamIo::Plain(TokioIo::new(tcp)));
            }
            let name = match &this.server_name {
                Some(n) => n.clone(),
                None => ServerName::try_from(host.clone()).map_err(|_| ConnectError::ServerName(host.clone()))?,
            };
            let stream = tokio::time::timeout(this.connect_timeout, this.tls.connect(name, tcp))
                .await
                .map_err(|_| ConnectError::Timeout(addr.clone()))?
                .map_err(|source| ConnectError::Io { addr, source })?;
            Ok(UpstreamIo::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}
