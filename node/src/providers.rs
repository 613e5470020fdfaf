//! Attestation providers as the data plane sees them: stored (custom)
//! providers from the replicated state, plus one shared provider per region
//! that always exists.
//!
//! Shared providers are *virtual*: `shared{region}` (non-alphanumerics
//! dropped, at most 24 characters, MAA's `sharedeus2` pattern) for each
//! region of the topology, trust model AAD, RS256, anonymous attest and the
//! fixed default policies. Nothing about them is stored, so they exist from
//! the first second, in both regions, and also while the control plane is
//! read-only. Their names are reserved for custom providers.
//!
//! A provider's URI (its tokens' `iss`) is `https://{name}.{location}.{domain}`:
//! the home region is part of it, so a token issued by the paired region
//! after a failover carries the same `iss` (brief §3).

use attest_raft::command::TrustModel;
use attest_raft::state::{ControlState, Provider};

use crate::token::TokenAlg;

/// A provider resolved for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderView {
    /// Canonical (lower-case) name.
    pub name: String,
    pub trust_model: TrustModel,
    pub token_alg: TokenAlg,
    pub shared: bool,
    /// Home region.
    pub location: String,
    pub attest_requires_auth: bool,
    /// The provider's URI: the `iss` of its tokens.
    pub issuer: String,
}

/// Name of `region`'s shared provider.
pub fn shared_name(region: &str) -> String {
    let tail: String = region.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
    format!("shared{tail}").chars().take(24).collect()
}

/// `https://{name}.{location}.{domain}`.
pub fn issuer_uri(name: &str, location: &str, domain: &str) -> String {
    format!("https://{}.{}.{}", name.to_ascii_lowercase(), location.to_ascii_lowercase(), domain)
}

/// The regions of the cluster: from the replicated topology, else the
/// node's configuration (a node that has not applied the topology yet).
pub fn regions(state: &ControlState, primary: &str, secondary: Option<&str>) -> Vec<String> {
    match &state.topology {
        Some(t) => std::iter::once(t.primary.clone()).chain(t.secondary.clone()).collect(),
        None => std::iter::once(primary.to_string()).chain(secondary.map(str::to_string)).collect(),
    }
}

/// The shared provider named `name`, if `name` is one.
pub fn shared_provider(name: &str, regions: &[String], domain: &str) -> Option<ProviderView> {
    let lower = name.to_ascii_lowercase();
    let region = regions.iter().find(|r| shared_name(r) == lower)?;
    Some(ProviderView {
        issuer: issuer_uri(&lower, region, domain),
        name: lower,
        trust_model: TrustModel::Aad,
        token_alg: TokenAlg::Rs256,
        shared: true,
        location: region.clone(),
        attest_requires_auth: false,
    })
}

/// View of a stored provider.
pub fn stored_provider(p: &Provider, primary: &str, domain: &str) -> ProviderView {
    let location = if p.location.is_empty() { primary.to_string() } else { p.location.clone() };
    let name = p.name.to_ascii_lowercase();
    ProviderView {
        issuer: issuer_uri(&name, &location, domain),
        name,
        trust_model: p.trust_model,
        token_alg: TokenAlg::parse(&p.token_alg).unwrap_or(TokenAlg::Rs256),
        shared: p.shared,
        location,
        attest_requires_auth: p.attest_requires_auth,
    }
}

/// Resolve `name` against the state: shared providers first (their names
/// are reserved), then stored ones.
pub fn resolve(state: &ControlState, name: &str, regions: &[String], domain: &str) -> Option<ProviderView> {
    if let Some(p) = shared_provider(name, regions, domain) {
        return Some(p);
    }
    let primary = regions.first().map(String::as_str).unwrap_or_default();
    state.providers.get(&name.to_ascii_lowercase()).map(|p| stored_provider(p, primary, domain))
}

/// The provider a `Host` header names, when it has the shape
/// `{provider}.{region}.{domain}[:port]`. Returns `(provider, region)`.
pub fn from_host<'a>(host: &'a str, domain: &str) -> Option<(&'a str, &'a str)> {
    let host = host.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(host, |(h, _)| h);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.len() <= domain.len() + 1 || !host[host.len() - domain.len()..].eq_ignore_ascii_case(domain) {
        return None;
    }
    let prefix = host[..host.len() - domain.len()].strip_suffix('.')?;
    let (provider, region) = prefix.split_once('.')?;
    if provider.is_empty() || region.is_empty() || region.contains('.') {
        return None;
    }
    Some((provider, region))
}

/// MAA's provider name rule: 3–24 characters, letters, digits and `-`, no
/// leading or trailing hyphen.
pub fn valid_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_names_follow_the_region() {
        assert_eq!(shared_name("eastus2"), "sharedeastus2");
        assert_eq!(shared_name("west-europe"), "sharedwesteurope");
        assert!(shared_name("a-very-long-region-name-indeed").len() <= 24);
        let regions = vec!["eastus2".to_string(), "centralus".to_string()];
        let p = shared_provider("SharedCentralUS", &regions, "attest.localhost").expect("shared");
        assert_eq!(p.issuer, "https://sharedcentralus.centralus.attest.localhost");
        assert!(shared_provider("sharedwestus", &regions, "d").is_none());
    }

    #[test]
    fn host_names_address_providers() {
        let d = "attest.localhost";
        assert_eq!(from_host("myprov.eastus2.attest.localhost", d), Some(("myprov", "eastus2")));
        assert_eq!(from_host("myprov.eastus2.attest.localhost:8443", d), Some(("myprov", "eastus2")));
        assert_eq!(from_host("MyProv.EastUS2.Attest.Localhost.", d), Some(("MyProv", "EastUS2")));
        assert_eq!(from_host("127.0.0.1:8443", d), None);
        assert_eq!(from_host("attest.localhost", d), None);
        assert_eq!(from_host("eastus2.attest.localhost", d), None);
        assert_eq!(from_host("a.b.c.attest.localhost", d), None);
        assert_eq!(from_host("xattest.localhost", d), None);
    }

    #[test]
    fn name_rule() {
        assert!(valid_name("abc") && valid_name("my-prov-1"));
        assert!(!valid_name("ab") && !valid_name("-abc") && !valid_name("abc-") && !valid_name("a_bc"));
        assert!(!valid_name(&"a".repeat(25)));
    }
}
