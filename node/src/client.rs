//! HTTP client helpers for `attestd` subcommands that talk to a node.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

/// A client that trusts `ca` (PEM) in addition to nothing else: attestd
/// deployments use their own CA, and the dev CA is never in a system store.
pub fn http_client(ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(30)).use_rustls_tls();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading CA {}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem).context("parsing CA PEM")?;
        b = b.add_root_certificate(cert);
    }
    b.build().context("building HTTP client")
}
