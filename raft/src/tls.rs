//! Mutual TLS for node-to-node gRPC.
//!
//! Every node presents a certificate issued by the cluster CA and accepts
//! only peers that do the same. Certificates name the fixed SAN
//! [`PEER_SERVER_NAME`] (besides their own host names), so that a node can
//! verify a peer whatever address it was reached at: authorization is "holds
//! a certificate of this cluster's CA", as in etcd's peer TLS.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The SAN every node certificate carries and every peer client expects.
pub const PEER_SERVER_NAME: &str = "node.attestd.internal";

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone)]
pub struct PeerTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("reading TLS file {path}: {source}")]
pub struct TlsError {
    path: String,
    source: std::io::Error,
}

fn read(p: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(p).map_err(|source| TlsError { path: p.display().to_string(), source })
}

impl PeerTls {
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Self { ca_pem: read(&files.ca)?, cert_pem: read(&files.cert)?, key_pem: read(&files.key)? })
    }

    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(PEER_SERVER_NAME)
    }
}
