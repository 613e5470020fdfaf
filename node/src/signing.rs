//! This node's token-signing keys and their publication.
//!
//! The keys live in `<data_dir>/keys` ([`crate::token::NodeKeys`]); the
//! private halves never leave the node. Their certificates are published
//! through the control plane (`RegisterNodeCert`), so `/certs` on every
//! node of both regions lists every node's keys.
//!
//! Rotation (`attestd admin rotate-keys`): the new certificates are
//! registered *first*; only once that write is acknowledged does the node
//! sign with the new keys, and the old certificates are re-registered with
//! `retired_at`. A retired certificate stays in `/certs` for
//! `tokens.max_validity_minutes` after retirement — no token it signed can
//! outlive that — and is then removed by its node.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use attest_raft::command::Command;
use attest_raft::state::ControlState;
use attest_raft::{ControlPlane, WriteError};

use crate::token::keys::pem_decode;
use crate::token::{NodeKeys, TokenError};

pub struct KeyRing {
    dir: PathBuf,
    subject: String,
    cert_days: u32,
    node_id: u64,
    current: RwLock<Arc<NodeKeys>>,
}

/// Why a rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Keys(#[from] TokenError),
    #[error("publishing the new certificates failed; still signing with the old keys: {0}")]
    Publish(#[from] WriteError),
    #[error("publishing the new certificates was refused: {0}")]
    Refused(String),
}

impl KeyRing {
    /// Load or create the keys under `data_dir/keys`.
    pub fn open(data_dir: &Path, node_id: u64, region: &str, now: i64, cert_days: u32) -> Result<Self, TokenError> {
        let dir = data_dir.join("keys");
        let subject = format!("attestd node {node_id} ({region}) token signing");
        let keys = NodeKeys::load_or_generate(&dir, &subject, now, cert_days)?;
        Ok(Self { dir, subject, cert_days, node_id, current: RwLock::new(Arc::new(keys)) })
    }

    /// The keys tokens are signed with now.
    pub fn current(&self) -> Arc<NodeKeys> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Kids of the current keys that the replicated state does not list yet.
    pub fn unpublished(&self, state: &ControlState) -> Vec<String> {
        self.current()
            .published()
            .into_iter()
            .map(|k| k.kid)
            .filter(|kid| !state.node_certs.contains_key(kid))
            .collect()
    }

    /// Register every current certificate missing from the state. Returns
    /// how many were written.
    pub async fn publish(&self, control: &ControlPlane, timeout: Duration) -> Result<usize, WriteError> {
        let missing: Vec<String> = control.state.read(|s| self.unpublished(s));
        let keys = self.current();
        let mut n = 0;
        for k in keys.published().into_iter().filter(|k| missing.contains(&k.kid)) {
            let cmd = Command::RegisterNodeCert {
                node_id: self.node_id,
                kid: k.kid.clone(),
                cert_pem: k.cert_pem(),
                retired_at: None,
            };
            let mut req = control.request(&format!("node-{}", self.node_id), cmd);
            req.request_id = format!("nodecert-{}-{}", self.node_id, k.kid);
            let out = control.write(req, timeout).await?;
            if out.error.is_none() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Remove this node's retired certificates older than `retention_s`.
    pub async fn collect_retired(
        &self,
        control: &ControlPlane,
        now: i64,
        retention_s: i64,
        timeout: Duration,
    ) -> Result<usize, WriteError> {
        let expired: Vec<String> = control.state.read(|s| {
            s.node_certs
                .values()
                .filter(|r| r.node_id == self.node_id)
                .filter(|r| r.retired_at.is_some_and(|t| i64::try_from(t).unwrap_or(i64::MAX) + retention_s < now))
                .map(|r| r.kid.clone())
                .collect()
        });
        for kid in &expired {
            let req = control.request(&format!("node-{}", self.node_id), Command::RemoveNodeCert { kid: kid.clone() });
            control.write(req, timeout).await?;
        }
        Ok(expired.len())
    }

    /// Rotate: new keys published first, then used; old ones retired.
    /// Returns the new kids.
    pub async fn rotate(
        &self,
        control: &ControlPlane,
        now: i64,
        timeout: Duration,
    ) -> Result<Vec<String>, RotateError> {
        let old = self.current();
        let new = NodeKeys::rotate(&self.dir, &self.subject, now, self.cert_days)?;
        let actor = format!("node-{}", self.node_id);
        for k in new.published() {
            let cmd = Command::RegisterNodeCert {
                node_id: self.node_id,
                kid: k.kid.clone(),
                cert_pem: k.cert_pem(),
                retired_at: None,
            };
            let out = control.write(control.request(&actor, cmd), timeout).await?;
            if let Some(e) = out.error {
                return Err(RotateError::Refused(e.message));
            }
        }
        let kids = new.published().into_iter().map(|k| k.kid).collect();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        let retired_at = u64::try_from(now).ok();
        for k in old.published() {
            let cmd = Command::RegisterNodeCert {
                node_id: self.node_id,
                kid: k.kid.clone(),
                cert_pem: k.cert_pem(),
                retired_at,
            };
            control.write(control.request(&actor, cmd), timeout).await?;
        }
        Ok(kids)
    }
}

/// DER certificates `/certs` publishes at `now`: every registered node
/// certificate not retired for longer than `retention_s`, plus this node's
/// current ones (so its own tokens verify even before registration lands).
pub fn published_certs(state: &ControlState, own: &NodeKeys, now: i64, retention_s: i64) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for r in state.node_certs.values() {
        if r.retired_at.is_some_and(|t| i64::try_from(t).unwrap_or(i64::MAX).saturating_add(retention_s) < now) {
            continue;
        }
        if let Some(der) = pem_decode("CERTIFICATE", &r.cert_pem) {
            if !out.contains(&der) {
                out.push(der);
            }
        }
    }
    for k in own.published() {
        if !out.contains(&k.cert_der) {
            out.push(k.cert_der);
        }
    }
    out
}
