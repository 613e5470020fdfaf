//! `attestd` configuration: a TOML file, overridden by environment
//! variables.
//!
//! Override rule: `ATTESTD_<SECTION>__<KEY>=value` sets `[section] key`
//! (double underscore between levels, case-insensitive), e.g.
//! `ATTESTD_NODE__ID=4`, `ATTESTD_RAFT__HEARTBEAT_MS=50`,
//! `ATTESTD_CLUSTER__JOIN=10.0.0.1:7101,10.0.0.2:7101`. Values are read as
//! TOML scalars (numbers, booleans) when they parse as such, as
//! comma-separated lists for list-valued keys, and as strings otherwise.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use attest_raft::{NodeId, NodeInfo, Timing};

use crate::evidence::pki::parse_rfc3339;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeSection,
    pub cluster: ClusterSection,
    pub listen: ListenSection,
    #[serde(default)]
    pub tls: Option<TlsSection>,
    #[serde(default)]
    pub raft: Timing,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub tokens: TokensSection,
    #[serde(default)]
    pub evidence: EvidenceSection,
    /// OpenID issuers whose bearer tokens authorize management calls.
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
    /// Disaster recovery (forced promotion) safety settings.
    #[serde(default)]
    pub recovery: RecoverySection,
    /// The node's async runtime.
    #[serde(default)]
    pub runtime: RuntimeSection,
}

/// `[runtime]`: the Tokio runtime the daemon runs on.
///
/// Why a setting: by default a node runs one worker thread per CPU, right
/// for a node with cores of its own. Several nodes packed onto few cores
/// (a local cluster, a test host) each keep that many workers busy waking
/// and stealing work from one another; one worker per node cut the server
/// CPU per control-plane write by 7–14 % with five nodes on two cores
/// (BENCHMARKS.md, sessions 18 and 21). Blocking work never holds the
/// worker: synced log writes and snapshot builds and installs run through
/// `attest_raft`'s `db::off_worker` (`block_in_place`), and attestations
/// on the blocking pool (`limits.attest_workers`).
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSection {
    /// Async worker threads; 0 = Tokio's default (one per CPU, or
    /// `TOKIO_WORKER_THREADS` when that is set).
    pub worker_threads: usize,
}

/// Upper bound of `runtime.worker_threads`: far beyond any core count a
/// node has, low enough that a typo cannot spawn thousands of threads.
pub const MAX_WORKER_THREADS: usize = 256;

/// `[recovery]`: the floors a forced promotion must clear (see
/// docs/operations.md, "Disaster recovery").
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoverySection {
    /// `admin promote` is refused until this node has heard no leader for
    /// at least this long (and no primary node answers a probe). Guards
    /// against promoting through a blip. Default: 2 minutes.
    pub promote_min_outage_ms: u64,
}

impl Default for RecoverySection {
    fn default() -> Self {
        Self { promote_min_outage_ms: 120_000 }
    }
}

/// How tokens are issued and which names they carry.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokensSection {
    /// DNS domain of provider URIs: a provider's issuer (`iss`) is
    /// `https://{provider}.{location}.{domain}`, the same in both regions,
    /// and requests whose `Host` has that shape address that provider.
    pub domain: String,
    /// Attestation token lifetime when the policy does not set one (MAA: 8 h).
    pub default_validity_minutes: u32,
    /// Upper bound on a policy's `x-ms-attestation-token-validity`-style
    /// setting; also how long a rotated-out signing key stays published.
    pub max_validity_minutes: u32,
    /// Lifetime of management-response tokens (policy and certificate results; MAA: 1 h).
    pub management_validity_minutes: u32,
    /// Validity of each node's self-signed signing certificate.
    pub cert_days: u32,
}

impl Default for TokensSection {
    fn default() -> Self {
        Self {
            domain: "attest.localhost".into(),
            default_validity_minutes: 480,
            max_validity_minutes: 525_600,
            management_validity_minutes: 60,
            cert_days: 3650,
        }
    }
}

/// Evidence appraisal settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceSection {
    /// Verify evidence as of this fixed time (RFC 3339) instead of the
    /// clock. For tests and for replaying old evidence only: a pinned
    /// clock accepts collateral that has since expired. Logged at start.
    pub pinned_time: Option<String>,
    /// Accept collateral (TCB info, QE identity, CRLs) up to this many
    /// seconds past its `nextUpdate` when nothing fresher is stored, the
    /// way Intel's QVL reports expiry as a status rather than a failure.
    /// 0 (default) = expired collateral fails verification.
    pub collateral_grace_s: u64,
    /// Largest decoded evidence (quote / report / TPM bundle) accepted.
    pub max_evidence_bytes: usize,
    /// PEM/DER files of TPM attestation-key roots (vendor or cloud vTPM CAs).
    pub tpm_roots: Vec<PathBuf>,
}

impl Default for EvidenceSection {
    fn default() -> Self {
        Self { pinned_time: None, collateral_grace_s: 0, max_evidence_bytes: 256 << 10, tpm_roots: Vec::new() }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Unique, non-zero, stable for the life of the data directory.
    pub id: NodeId,
    /// Region label, e.g. `eastus2`.
    pub region: String,
    pub data_dir: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub primary_region: String,
    /// The paired region; `None` for a single-region deployment.
    #[serde(default)]
    pub secondary_region: Option<String>,
    /// Initialize a new cluster with `members` if this node's log is empty.
    /// Set it on exactly one node of a new cluster.
    #[serde(default)]
    pub bootstrap: bool,
    #[serde(default)]
    pub members: Vec<MemberConfig>,
    /// gRPC addresses of existing members to ask for admission (new nodes).
    #[serde(default)]
    pub join: Vec<String>,
    /// Join as a voter (default) or stay a learner.
    #[serde(default = "yes")]
    pub join_as_voter: bool,
    /// Advertised peer gRPC address → address to dial instead, e.g. a WAN
    /// emulator in front of the other region. Empty in production.
    #[serde(default)]
    pub dial_overrides: std::collections::HashMap<String, String>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub id: NodeId,
    pub region: String,
    pub raft_addr: String,
    pub api_addr: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// HTTPS API (data plane, control plane, health, metrics).
    pub api: SocketAddr,
    /// gRPC between nodes.
    pub raft: SocketAddr,
    /// What peers and clients should dial; defaults to the listen address.
    #[serde(default)]
    pub advertise_api: Option<String>,
    #[serde(default)]
    pub advertise_raft: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA that issued every node certificate (peers are verified against it).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Upper bound of `limits.max_body_bytes` (see `Config::validate`).
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// Explicit limits on everything a client controls.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Largest policy document.
    pub max_policy_bytes: usize,
    /// Requests served at once; more get 503 with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Attestations served at once for one provider; more get 429 with
    /// `Retry-After`, so one tenant cannot take a node's whole capacity.
    pub max_concurrent_attest_per_provider: usize,
    /// Attestations verified and signed at once (the CPU-heavy part);
    /// further ones wait their turn in arrival order. 0 = one per CPU.
    /// Running more at once than there are cores only time-slices them:
    /// every request gets slower and the tail grows, for no throughput.
    pub attest_workers: usize,
    /// Per-request timeout for control-plane writes.
    pub write_timeout_ms: u64,
    /// Timeout for a linearizable read.
    pub read_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_policy_bytes: 256 << 10,
            max_concurrent_requests: 512,
            max_concurrent_attest_per_provider: 256,
            attest_workers: 0,
            write_timeout_ms: 10_000,
            read_timeout_ms: 3_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `json` for structured logs; anything else is human-readable.
    pub format: String,
    /// tracing filter, e.g. `info,openraft=warn`.
    pub filter: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("parsing {path}: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_toml_with_env(&text, std::env::vars(), &path.display().to_string())
    }

    pub fn from_toml_with_env(
        text: &str,
        env: impl Iterator<Item = (String, String)>,
        origin: &str,
    ) -> Result<Self, ConfigError> {
        let mut value: toml::Table =
            toml::from_str(text).map_err(|source| ConfigError::Parse { path: origin.into(), source })?;
        let mut allow_unsafe = false;
        for (k, v) in env {
            if k == ALLOW_UNSAFE_ENV {
                allow_unsafe = v == "1";
                continue;
            }
            let Some(rest) = k.strip_prefix("ATTESTD_") else { continue };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            if path.len() < 2 || path.iter().any(|p| p.is_empty()) {
                continue;
            }
            apply_override(&mut value, &path, &v);
        }
        let cfg: Config = Config::deserialize(toml::Value::Table(value))
            .map_err(|source| ConfigError::Parse { path: format!("{origin} (with ATTESTD_* overrides)"), source })?;
        cfg.validate()?;
        if cfg.raft.unsafe_ack_before_secondary && !allow_unsafe {
            return Err(ConfigError::Invalid(format!(
                "raft.unsafe_ack_before_secondary is a test-only switch that breaks RPO = 0; \
                 it is refused unless {ALLOW_UNSAFE_ENV}=1 is set"
            )));
        }
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.runtime.worker_threads > MAX_WORKER_THREADS {
            return bad(format!(
                "runtime.worker_threads is {}, more than {MAX_WORKER_THREADS}; 0 means one per CPU",
                self.runtime.worker_threads
            ));
        }
        if self.node.id == 0 {
            return bad("node.id must be non-zero".into());
        }
        if self.node.region.is_empty() {
            return bad("node.region must be set".into());
        }
        let regions: Vec<&String> =
            std::iter::once(&self.cluster.primary_region).chain(self.cluster.secondary_region.iter()).collect();
        if !regions.contains(&&self.node.region) {
            return bad(format!(
                "node.region '{}' is neither the primary ({}) nor the secondary region",
                self.node.region, self.cluster.primary_region
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        for m in &self.cluster.members {
            if !ids.insert(m.id) {
                return bad(format!("cluster.members lists node {} twice", m.id));
            }
            if !regions.contains(&&m.region) {
                return bad(format!("member {} is in unknown region '{}'", m.id, m.region));
            }
        }
        if self.cluster.bootstrap {
            let total = self.cluster.members.len();
            if total == 0 || !ids.contains(&self.node.id) {
                return bad("bootstrap needs cluster.members including this node".into());
            }
            let regions: Vec<&str> = self.cluster.members.iter().map(|m| m.region.as_str()).collect();
            if !attest_raft::control::primary_holds_majority(&regions, &self.cluster.primary_region) {
                let primary = regions.iter().filter(|r| **r == self.cluster.primary_region).count();
                return bad(format!(
                    "the primary region must hold a majority of voters ({primary} of {total} members are in {})",
                    self.cluster.primary_region
                ));
            }
        }
        if let Some(t) = &self.evidence.pinned_time {
            if parse_rfc3339(t).is_none() {
                return bad(format!("evidence.pinned_time '{t}' is not an RFC 3339 time"));
            }
        }
        let tk = &self.tokens;
        if tk.domain.is_empty() || tk.domain.starts_with('.') || tk.domain.contains('/') {
            return bad(format!("tokens.domain '{}' is not a DNS domain", tk.domain));
        }
        if tk.default_validity_minutes == 0 || tk.default_validity_minutes > tk.max_validity_minutes {
            return bad("tokens: need 0 < default_validity_minutes <= max_validity_minutes".into());
        }
        // One write is one log entry (or a member of one), sent whole in an
        // AppendEntries: even escaped six-fold as JSON it must stay below
        // the 64 MiB Raft message limit.
        if self.limits.max_body_bytes == 0 || self.limits.max_body_bytes > MAX_BODY_BYTES {
            return bad(format!("limits.max_body_bytes must be between 1 and {MAX_BODY_BYTES}"));
        }
        let t = &self.raft;
        if t.heartbeat_ms == 0
            || t.election_timeout_min_ms <= t.heartbeat_ms
            || t.election_timeout_max_ms < t.election_timeout_min_ms
        {
            return bad(
                "raft timings need 0 < heartbeat_ms < election_timeout_min_ms <= election_timeout_max_ms".into()
            );
        }
        Ok(())
    }

    pub fn advertise_api(&self) -> String {
        self.listen.advertise_api.clone().unwrap_or_else(|| self.listen.api.to_string())
    }

    pub fn advertise_raft(&self) -> String {
        self.listen.advertise_raft.clone().unwrap_or_else(|| self.listen.raft.to_string())
    }

    pub fn members(&self) -> BTreeMap<NodeId, NodeInfo> {
        self.cluster
            .members
            .iter()
            .map(|m| {
                (
                    m.id,
                    NodeInfo { region: m.region.clone(), raft_addr: m.raft_addr.clone(), api_addr: m.api_addr.clone() },
                )
            })
            .collect()
    }
}

/// Set to `1` to let test-only switches such as
/// `raft.unsafe_ack_before_secondary` through validation.
pub const ALLOW_UNSAFE_ENV: &str = "ATTESTD_ALLOW_UNSAFE_TEST_SWITCHES";

const LIST_KEYS: &[&str] = &["join", "tpm_roots"];

fn apply_override(table: &mut toml::Table, path: &[String], raw: &str) {
    let (last, parents) = match path.split_last() {
        Some(x) => x,
        None => return,
    };
    let mut cur = table;
    for p in parents {
        let entry = cur.entry(p.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => cur = t,
            _ => return,
        }
    }
    let value = if LIST_KEYS.contains(&last.as_str()) {
        toml::Value::Array(
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.into())).collect(),
        )
    } else if let Ok(i) = raw.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(b) = raw.parse::<bool>() {
        toml::Value::Boolean(b)
    } else {
        toml::Value::String(raw.to_string())
    };
    cur.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[node]
id = 1
region = "eastus2"
data_dir = "/tmp/x"
[cluster]
primary_region = "eastus2"
secondary_region = "centralus"
[listen]
api = "127.0.0.1:8101"
raft = "127.0.0.1:7101"
"#;

    #[test]
    fn env_overrides_nested_keys() {
        let env = vec![
            ("ATTESTD_NODE__ID".to_string(), "7".to_string()),
            ("ATTESTD_RAFT__HEARTBEAT_MS".to_string(), "50".to_string()),
            ("ATTESTD_CLUSTER__JOIN".to_string(), "a:1, b:2".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::from_toml_with_env(BASE, env.into_iter(), "test").unwrap();
        assert_eq!(c.node.id, 7);
        assert_eq!(c.raft.heartbeat_ms, 50);
        assert_eq!(c.cluster.join, vec!["a:1", "b:2"]);
    }

    #[test]
    fn rejects_minority_primary_and_unknown_keys() {
        let text = format!(
            "{BASE}bootstrap = true\n{}",
            r#"
[[cluster.members]]
id = 1
region = "eastus2"
raft_addr = "a"
api_addr = "a"
[[cluster.members]]
id = 2
region = "centralus"
raft_addr = "b"
api_addr = "b"
"#
        );
        // `bootstrap = true` lands after [listen]; put it in [cluster] instead.
        let text = text
            .replace("bootstrap = true\n", "")
            .replace("secondary_region = \"centralus\"\n", "secondary_region = \"centralus\"\nbootstrap = true\n");
        let err = Config::from_toml_with_env(&text, std::iter::empty(), "t").unwrap_err();
        assert!(err.to_string().contains("majority"), "{err}");
        let err = Config::from_toml_with_env(&format!("{BASE}\n[bogus]\nx=1\n"), std::iter::empty(), "t").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn a_body_limit_beyond_what_one_log_entry_may_hold_is_refused() {
        let env = |v: usize| vec![("ATTESTD_LIMITS__MAX_BODY_BYTES".to_string(), v.to_string())].into_iter();
        let err = Config::from_toml_with_env(BASE, env(MAX_BODY_BYTES + 1), "t").unwrap_err();
        assert!(err.to_string().contains("max_body_bytes"), "{err}");
        let c = Config::from_toml_with_env(BASE, env(MAX_BODY_BYTES), "t").unwrap();
        assert_eq!(c.limits.max_body_bytes, MAX_BODY_BYTES);
    }

    #[test]
    fn worker_threads_default_to_one_per_cpu_and_are_bounded() {
        let c = Config::from_toml_with_env(BASE, std::iter::empty(), "t").unwrap();
        assert_eq!(c.runtime.worker_threads, 0, "0 = Tokio's default");
        let env = |v: usize| vec![("ATTESTD_RUNTIME__WORKER_THREADS".to_string(), v.to_string())].into_iter();
        let c = Config::from_toml_with_env(BASE, env(1), "t").unwrap();
        assert_eq!(c.runtime.worker_threads, 1);
        let err = Config::from_toml_with_env(BASE, env(MAX_WORKER_THREADS + 1), "t").unwrap_err();
        assert!(err.to_string().contains("worker_threads"), "{err}");
    }

    #[test]
    fn unsafe_test_switches_need_the_environment_variable() {
        let text = format!("{BASE}\n[raft]\nunsafe_ack_before_secondary = true\n");
        let err = Config::from_toml_with_env(&text, std::iter::empty(), "t").unwrap_err();
        assert!(err.to_string().contains(ALLOW_UNSAFE_ENV), "{err}");
        let wrong = vec![(ALLOW_UNSAFE_ENV.to_string(), "yes".to_string())];
        assert!(Config::from_toml_with_env(&text, wrong.into_iter(), "t").is_err());
        let env = vec![(ALLOW_UNSAFE_ENV.to_string(), "1".to_string())];
        let c = Config::from_toml_with_env(&text, env.into_iter(), "t").unwrap();
        assert!(c.raft.unsafe_ack_before_secondary);
        assert!(!Config::from_toml_with_env(BASE, std::iter::empty(), "t").unwrap().raft.unsafe_ack_before_secondary);
    }
}
