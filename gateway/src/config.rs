//! Gateway configuration: a TOML file shaped like a Traffic Manager profile.
//!
//! The file is parsed into *raw* serde structs first and then validated into
//! typed [`Config`]. Validation collects every problem it finds instead of
//! stopping at the first, so `attest-gateway check-config` can report them all
//! in one go. The limits are Traffic Manager's wherever TM has one (priority
//! 1–1000 and unique, 0–9 tolerated failures, at most 8 expected-status ranges
//! and 8 custom headers, path required for HTTP(S) and forbidden for TCP);
//! where TM is DNS-bound (10/30 s probe intervals only) we allow faster values,
//! because fast failover is the point of a proxy.
//!
//! See `docs/gateway.md` for a fully commented example.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::Authority;
use serde::Deserialize;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown/mistyped keys.
    #[error("config is not valid TOML for attest-gateway: {0}")]
    Parse(#[from] toml::de::Error),
    /// The file parsed, but its values break one or more rules.
    #[error("invalid gateway config:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// Monitor protocol, as in Traffic Manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProbeProtocol {
    Http,
    Https,
    Tcp,
}

/// How requests are spread over the nodes of one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    RoundRobin,
    LeastRequests,
}

/// Scheme the gateway uses towards nodes (data plane and probes share it
/// unless the monitor protocol says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub profile: Profile,
    pub listen: Listen,
    pub upstream: Upstream,
    pub retry: Retry,
    pub limits: Limits,
    pub monitor: Monitor,
    pub passive: Passive,
    /// Sorted by priority, lowest (= most preferred) first.
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    /// A disabled profile makes every endpoint `Inactive` (TM: NXDOMAIN); the
    /// gateway answers 503.
    pub enabled: bool,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub address: SocketAddr,
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: Scheme,
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub connect_timeout: Duration,
    /// Deadline for a whole client request, retries included.
    pub request_timeout: Duration,
    /// Time one attempt may wait for response headers.
    pub attempt_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Retry {
    pub max_attempts: u32,
    pub budget_percent: f32,
    pub budget_min_per_second: u32,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct Monitor {
    pub protocol: ProbeProtocol,
    pub port: Option<u16>,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub tolerated_failures: u8,
    /// Inclusive ranges; default `[(200, 200)]`.
    pub expected_status: Vec<(u16, u16)>,
    pub custom_headers: Vec<(HeaderName, HeaderValue)>,
    /// Consecutive successes a Degraded node needs to be Online again.
    pub failback_successes: u32,
}

impl Monitor {
    /// Whether a probe answer with this status counts as healthy.
    pub fn status_expected(&self, status: u16) -> bool {
        self.expected_status.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

#[derive(Debug, Clone)]
pub struct Passive {
    pub enabled: bool,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub priority: u16,
    pub enabled: bool,
    pub balance: Balance,
    pub nodes: Vec<NodeCfg>,
    /// Profile headers merged with the endpoint's own (endpoint wins, as in TM).
    pub probe_headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCfg {
    /// `host:port`.
    pub address: String,
    pub enabled: bool,
}

// ---------------------------------------------------------------- raw serde

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    profile: RawProfile,
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    monitor: RawMonitor,
    #[serde(default)]
    passive: RawPassive,
    #[serde(default)]
    endpoints: Vec<RawEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    #[serde(default = "default_routing")]
    routing_method: String,
    #[serde(default = "yes")]
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    #[serde(default = "default_listen")]
    address: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

impl Default for RawListen {
    fn default() -> Self {
        Self { address: default_listen(), tls_cert: None, tls_key: None }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    #[serde(default = "default_scheme")]
    scheme: Scheme,
    ca_file: Option<PathBuf>,
    server_name: Option<String>,
    #[serde(default = "d1s")]
    connect_timeout: String,
    #[serde(default = "d30s")]
    request_timeout: String,
    #[serde(default = "d10s")]
    attempt_timeout: String,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            scheme: default_scheme(),
            ca_file: None,
            server_name: None,
            connect_timeout: d1s(),
            request_timeout: d30s(),
            attempt_timeout: d10s(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default = "default_attempts")]
    max_attempts: u32,
    #[serde(default = "default_budget_percent")]
    budget_percent: f32,
    #[serde(default = "default_budget_min")]
    budget_min_per_second: u32,
}

impl Default for RawRetry {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            budget_percent: default_budget_percent(),
            budget_min_per_second: default_budget_min(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default = "default_header_bytes")]
    max_header_bytes: usize,
    #[serde(default = "default_body_bytes")]
    max_body_bytes: usize,
    #[serde(default = "d10s")]
    header_read_timeout: String,
    #[serde(default = "d30s")]
    body_read_timeout: String,
    #[serde(default = "default_max_conns")]
    max_connections: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: default_header_bytes(),
            max_body_bytes: default_body_bytes(),
            header_read_timeout: d10s(),
            body_read_timeout: d30s(),
            max_connections: default_max_conns(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonitor {
    #[serde(default = "default_protocol")]
    protocol: ProbeProtocol,
    port: Option<u16>,
    path: Option<String>,
    #[serde(default = "d30s")]
    interval: String,
    timeout: Option<String>,
    #[serde(default = "default_tolerated")]
    tolerated_failures: u32,
    expected_status_codes: Option<StringOrList>,
    #[serde(default)]
    custom_headers: Vec<String>,
    #[serde(default = "one")]
    failback_successes: u32,
}

impl Default for RawMonitor {
    fn default() -> Self {
        Self {
            protocol: default_protocol(),
            port: None,
            path: None,
            interval: d30s(),
            timeout: None,
            tolerated_failures: default_tolerated(),
            expected_status_codes: None,
            custom_headers: Vec::new(),
            failback_successes: 1,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPassive {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "d1s")]
    base_ejection: String,
    #[serde(default = "d30s")]
    max_ejection: String,
}

impl Default for RawPassive {
    fn default() -> Self {
        Self { enabled: true, base_ejection: d1s(), max_ejection: d30s() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: String,
    priority: Option<u32>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_balance")]
    balance: Balance,
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default)]
    custom_headers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawNode {
    Address(String),
    Table {
        address: String,
        #[serde(default = "yes")]
        enabled: bool,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn default_routing() -> String {
    "priority".into()
}
fn default_listen() -> String {
    "0.0.0.0:8443".into()
}
fn default_scheme() -> Scheme {
    Scheme::Https
}
fn default_protocol() -> ProbeProtocol {
    ProbeProtocol::Https
}
fn default_balance() -> Balance {
    Balance::RoundRobin
}
fn d1s() -> String {
    "1s".into()
}
fn d10s() -> String {
    "10s".into()
}
fn d30s() -> String {
    "30s".into()
}
fn default_attempts() -> u32 {
    4
}
fn default_budget_percent() -> f32 {
    20.0
}
fn default_budget_min() -> u32 {
    10
}
fn default_header_bytes() -> usize {
    16 * 1024
}
fn default_body_bytes() -> usize {
    // Attestation evidence (quotes + collateral) is large but bounded.
    4 * 1024 * 1024
}
fn default_max_conns() -> usize {
    10_000
}
fn default_tolerated() -> u32 {
    3
}

/// Parses `500ms`, `10s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration (use e.g. 500ms, 10s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s or m)")),
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses Traffic Manager's `200-299, 301-301` (a single code is also accepted).
pub fn parse_status_ranges(items: &[String]) -> Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for item in items {
        for part in item.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let lo: u16 = lo.parse().map_err(|_| format!("expected status range `{part}` is not `NNN-NNN`"))?;
            let hi: u16 = hi.parse().map_err(|_| format!("expected status range `{part}` is not `NNN-NNN`"))?;
            if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
                return Err(format!("expected status range `{part}` must be within 100-599 with low <= high"));
            }
            out.push((lo, hi));
        }
    }
    Ok(out)
}

fn parse_headers(items: &[String], ctx: &str, errs: &mut Vec<String>) -> Vec<(HeaderName, HeaderValue)> {
    if items.len() > 8 {
        errs.push(format!("{ctx}: at most 8 custom headers are allowed (got {})", items.len()));
    }
    let mut out = Vec::new();
    for item in items {
        let Some((name, value)) = item.split_once(':') else {
            errs.push(format!("{ctx}: custom header `{item}` must look like `Name: value`"));
            continue;
        };
        match (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_str(value.trim())) {
            (Ok(n), Ok(v)) => out.push((n, v)),
            _ => errs.push(format!("{ctx}: custom header `{item}` is not a valid header")),
        }
    }
    out
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        let mut cfg = Config::parse(&text)?;
        // Relative certificate paths are relative to the config file.
        if let Some(dir) = path.parent() {
            let fix = |p: &mut PathBuf| {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            };
            if let Some(tls) = cfg.listen.tls.as_mut() {
                fix(&mut tls.cert);
                fix(&mut tls.key);
            }
            if let Some(ca) = cfg.upstream.ca_file.as_mut() {
                fix(ca);
            }
        }
        Ok(cfg)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)?;
        let mut errs = Vec::new();
        let mut dur = |field: &str, s: &str| match parse_duration(s) {
            Ok(d) => d,
            Err(e) => {
                errs.push(format!("{field}: {e}"));
                Duration::ZERO
            }
        };

        let connect_timeout = dur("upstream.connect_timeout", &raw.upstream.connect_timeout);
        let request_timeout = dur("upstream.request_timeout", &raw.upstream.request_timeout);
        let attempt_timeout = dur("upstream.attempt_timeout", &raw.upstream.attempt_timeout);
        let header_read_timeout = dur("limits.header_read_timeout", &raw.limits.header_read_timeout);
        let body_read_timeout = dur("limits.body_read_timeout", &raw.limits.body_read_timeout);
        let interval = dur("monitor.interval", &raw.monitor.interval);
        let timeout_default = if interval >= Duration::from_secs(30) {
            Duration::from_secs(10)
        } else if interval >= Duration::from_secs(10) {
            Duration::from_secs(9)
        } else {
            // Faster than TM allows: keep TM's ratio (roughly a third).
            interval / 3
        };
        let timeout = match &raw.monitor.timeout {
            Some(s) => dur("monitor.timeout", s),
            None => timeout_default,
        };
        let base_ejection = dur("passive.base_ejection", &raw.passive.base_ejection);
        let max_ejection = dur("passive.max_ejection", &raw.passive.max_ejection);

        if raw.profile.routing_method != "priority" {
            errs.push(format!(
                "profile.routing_method: only `priority` is supported (got `{}`)",
                raw.profile.routing_method
            ));
        }
        if raw.profile.name.trim().is_empty() {
            errs.push("profile.name must not be empty".into());
        }

        let address = match raw.listen.address.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                errs.push(format!("listen.address `{}` is not an ip:port socket address", raw.listen.address));
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
        };
        let tls = match (raw.listen.tls_cert, raw.listen.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                errs.push("listen.tls_cert and listen.tls_key must be given together".into());
                None
            }
        };

        if request_timeout.is_zero() || attempt_timeout.is_zero() || connect_timeout.is_zero() {
            errs.push("upstream timeouts must be greater than zero".into());
        }
        if raw.retry.max_attempts == 0 || raw.retry.max_attempts > 10 {
            errs.push(format!("retry.max_attempts must be 1-10 (got {})", raw.retry.max_attempts));
        }
        if !(0.0..=1000.0).contains(&raw.retry.budget_percent) {
            errs.push("retry.budget_percent must be 0-1000".into());
        }
        if raw.limits.max_header_bytes < 8192 {
            // hyper's HTTP/1 read buffer cannot go below 8 KiB.
            errs.push("limits.max_header_bytes must be at least 8192".into());
        }
        if raw.limits.max_connections == 0 {
            errs.push("limits.max_connections must be at least 1".into());
        }
        if header_read_timeout.is_zero() || body_read_timeout.is_zero() {
            errs.push("limits timeouts must be greater than zero".into());
        }

        // Monitor rules, mirroring Traffic Manager's.
        let m = &raw.monitor;
        if m.tolerated_failures > 9 {
            errs.push(format!("monitor.tolerated_failures must be 0-9 (got {})", m.tolerated_failures));
        }
        if interval < Duration::from_millis(50) {
            errs.push("monitor.interval must be at least 50ms".into());
        }
        if timeout.is_zero() || timeout > interval {
            errs.push(format!(
                "monitor.timeout ({timeout:?}) must be greater than zero and not longer than monitor.interval ({interval:?})"
            ));
        }
        if m.failback_successes == 0 || m.failback_successes > 100 {
            errs.push("monitor.failback_successes must be 1-100".into());
        }
        let path = match (m.protocol, &m.path) {
            (ProbeProtocol::Tcp, Some(_)) => {
                errs.push("monitor.path must not be set when protocol is TCP".into());
                String::new()
            }
            (ProbeProtocol::Tcp, None) => String::new(),
            (_, None) => "/health".into(),
            (_, Some(p)) if !p.starts_with('/') => {
                errs.push(format!("monitor.path `{p}` must start with `/`"));
                p.clone()
            }
            (_, Some(p)) => p.clone(),
        };
        let expected_items = match &m.expected_status_codes {
            None => vec!["200".to_string()],
            Some(StringOrList::One(s)) => vec![s.clone()],
            Some(StringOrList::Many(v)) => v.clone(),
        };
        let expected_status = match parse_status_ranges(&expected_items) {
            Ok(r) if r.len() > 8 => {
                errs.push(format!("monitor.expected_status_codes: at most 8 ranges are allowed (got {})", r.len()));
                r
            }
            Ok(r) if r.is_empty() => vec![(200, 200)],
            Ok(r) => r,
            Err(e) => {
                errs.push(format!("monitor.expected_status_codes: {e}"));
                vec![(200, 200)]
            }
        };
        if m.protocol == ProbeProtocol::Tcp && m.expected_status_codes.is_some() {
            errs.push("monitor.expected_status_codes only applies to HTTP/HTTPS probes".into());
        }
        let profile_headers = parse_headers(&m.custom_headers, "monitor.custom_headers", &mut errs);

        // Endpoints (regions) and their nested nodes.
        if raw.endpoints.is_empty() {
            errs.push("at least one [[endpoints]] entry is required".into());
        }
        let mut names = HashSet::new();
        let mut priorities = HashSet::new();
        let mut endpoints = Vec::new();
        for (i, ep) in raw.endpoints.into_iter().enumerate() {
            let ctx = format!("endpoints[{i}] ({})", ep.name);
            if ep.name.trim().is_empty() {
                errs.push(format!("endpoints[{i}]: name must not be empty"));
            }
            if !names.insert(ep.name.clone()) {
                errs.push(format!("{ctx}: endpoint names must be unique"));
            }
            // TM: priority is optional and defaults to list order.
            let priority = ep.priority.unwrap_or(i as u32 + 1);
            if !(1..=1000).contains(&priority) {
                errs.push(format!("{ctx}: priority must be 1-1000 (got {priority})"));
            } else if !priorities.insert(priority) {
                errs.push(format!("{ctx}: priority {priority} is already used; priorities must be unique"));
            }
            if ep.nodes.is_empty() {
                errs.push(format!("{ctx}: needs at least one node address"));
            }
            let mut addrs = HashSet::new();
            let mut nodes = Vec::new();
            for n in ep.nodes {
                let (address, enabled) = match n {
                    RawNode::Address(a) => (a, true),
                    RawNode::Table { address, enabled } => (address, enabled),
                };
                match address.parse::<Authority>() {
                    Ok(a) if a.port_u16().is_some() => {}
                    _ => errs.push(format!("{ctx}: node address `{address}` must be host:port")),
                }
                if !addrs.insert(address.clone()) {
                    errs.push(format!("{ctx}: node `{address}` is listed twice"));
                }
                nodes.push(NodeCfg { address, enabled });
            }
            let own = parse_headers(&ep.custom_headers, &ctx, &mut errs);
            let mut probe_headers: Vec<_> =
                profile_headers.iter().filter(|(n, _)| !own.iter().any(|(o, _)| o == n)).cloned().collect();
            probe_headers.extend(own);
            if probe_headers.len() > 8 {
                errs.push(format!("{ctx}: profile and endpoint custom headers together exceed 8"));
            }
            endpoints.push(Endpoint {
                name: ep.name,
                priority: priority.min(1000) as u16,
                enabled: ep.enabled,
                balance: ep.balance,
                nodes,
                probe_headers,
            });
        }
        endpoints.sort_by_key(|e| e.priority);

        if base_ejection > max_ejection {
            errs.push("passive.base_ejection must not exceed passive.max_ejection".into());
        }

        if !errs.is_empty() {
            return Err(ConfigError::Invalid(errs));
        }
        Ok(Config {
            profile: Profile { name: raw.profile.name, enabled: raw.profile.enabled },
            listen: Listen { address, tls },
            upstream: Upstream {
                scheme: raw.upstream.scheme,
                ca_file: raw.upstream.ca_file,
                server_name: raw.upstream.server_name,
                connect_timeout,
                request_timeout,
                attempt_timeout,
            },
            retry: Retry {
                max_attempts: raw.retry.max_attempts,
                budget_percent: raw.retry.budget_percent,
                budget_min_per_second: raw.retry.budget_min_per_second,
            },
            limits: Limits {
                max_header_bytes: raw.limits.max_header_bytes,
                max_body_bytes: raw.limits.max_body_bytes,
                header_read_timeout,
                body_read_timeout,
                max_connections: raw.limits.max_connections,
            },
            monitor: Monitor {
                protocol: raw.monitor.protocol,
                port: raw.monitor.port,
                path,
                interval,
                timeout,
                tolerated_failures: raw.monitor.tolerated_failures.min(9) as u8,
                expected_status,
                custom_headers: profile_headers,
                failback_successes: raw.monitor.failback_successes,
            },
            passive: Passive { enabled: raw.passive.enabled, base_ejection, max_ejection },
            endpoints,
        })
    }
}

/// A commented example, printed by `attest-gateway example-config`.
pub const EXAMPLE: &str = include_str!("example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_is_valid() {
        let c = Config::parse(EXAMPLE).expect("example config must validate");
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.monitor.tolerated_failures, 3);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn status_ranges_tm_format() {
        let r = parse_status_ranges(&["200-299, 301-301".into()]).unwrap();
        assert_eq!(r, vec![(200, 299), (301, 301)]);
        assert!(parse_status_ranges(&["299-200".into()]).is_err());
        assert!(parse_status_ranges(&["abc".into()]).is_err());
    }

    #[test]
    fn all_errors_reported() {
        let text = r#"
            [profile]
            name = "p"
            routing_method = "weighted"
            [monitor]
            protocol = "TCP"
            path = "/health"
            tolerated_failures = 12
            [[endpoints]]
            name = "a"
            priority = 1
            nodes = ["nohost"]
            [[endpoints]]
            name = "b"
            priority = 1
            nodes = ["127.0.0.1:1"]
            custom_headers = ["a:1","b:2","c:3","d:4","e:5","f:6","g:7","h:8","i:9"]
        "#;
        let Err(ConfigError::Invalid(errs)) = Config::parse(text) else {
            panic!("expected validation errors");
        };
        let all = errs.join("\n");
        for needle in [
            "routing_method",
            "tolerated_failures",
            "must not be set when protocol is TCP",
            "host:port",
            "already used",
            "at most 8 custom headers",
        ] {
            assert!(all.contains(needle), "missing `{needle}` in:\n{all}");
        }
    }

    #[test]
    fn endpoint_headers_override_profile() {
        let text = r#"
            [profile]
            name = "p"
            [monitor]
            protocol = "HTTP"
            custom_headers = ["Host: profile.example", "X-Probe: gw"]
            [[endpoints]]
            name = "a"
            nodes = ["127.0.0.1:1"]
            custom_headers = ["host: region-a.example"]
        "#;
        let c = Config::parse(text).unwrap();
        let h = &c.endpoints[0].probe_headers;
        assert_eq!(h.len(), 2);
        assert!(h.iter().any(|(n, v)| n == "host" && v == "region-a.example"));
        assert!(h.iter().any(|(n, v)| n == "x-probe" && v == "gw"));
        // Defaults follow TM: 30 s, 3 tolerated, 10 s timeout, 200 only.
        assert_eq!(c.monitor.interval, Duration::from_secs(30));
        assert_eq!(c.monitor.timeout, Duration::from_secs(10));
        assert_eq!(c.monitor.expected_status, vec![(200, 200)]);
        assert_eq!(c.endpoints[0].priority, 1);
    }
}
