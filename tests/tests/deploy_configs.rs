//! The hand-maintained deployment files of `deploy/` agree with each other
//! and with the code (issue 8), without Docker: every node and gateway
//! config parses with the daemons' own parsers; the compose nodes' dial
//! overrides and the gateways' cross-region endpoints all lead to a WAN
//! emulator link whose upstream is the right node; the Kubernetes
//! ConfigMaps hold one config per StatefulSet replica with unique ids and
//! one bootstrap node; the Grafana dashboard queries only metric names the
//! code exports; the Prometheus config scrapes every node and gateway.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use attest_chaos::wan::{parse_link_spec, LinkConfig};
use attest_node::config::Config;
use serde_json::Value;

const PRIMARY: &str = "eastus2";
const SECONDARY: &str = "centralus";
/// The SAN every dev-pki node certificate carries (`attest_raft::tls::PEER_SERVER_NAME`).
const PEER_NAME: &str = "node.attestd.internal";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn node_config(text: &str, origin: &str) -> Config {
    Config::from_toml_with_env(text, std::iter::empty(), origin).unwrap_or_else(|e| panic!("{origin}: {e}"))
}

/// The `--link` specs of the `wan` service in compose.yaml.
fn wan_links() -> Vec<LinkConfig> {
    let compose = read("deploy/compose.yaml");
    let links: Vec<LinkConfig> = compose
        .split("\"--link\", \"")
        .skip(1)
        .map(|rest| {
            let spec = rest.split('"').next().unwrap_or_default();
            parse_link_spec(spec).unwrap_or_else(|e| panic!("compose.yaml: {e}"))
        })
        .collect();
    assert!(!links.is_empty(), "compose.yaml has no --link for the wan service");
    links
}

/// The link that `wan:PORT` reaches.
fn link_at<'a>(links: &'a [LinkConfig], dial: &str) -> &'a LinkConfig {
    let port: u16 =
        dial.strip_prefix("wan:").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{dial} is not wan:<port>"));
    links.iter().find(|l| l.listen.port() == port).unwrap_or_else(|| panic!("no WAN link listens on {dial}"))
}

/// Checks what every set of node configs must satisfy; returns the
/// members (id → (region, raft, api)) they agree on.
fn check_cluster(configs: &[(String, Config)]) -> BTreeMap<u64, (String, String, String)> {
    let mut ids = BTreeSet::new();
    let mut bootstrap = Vec::new();
    let first = &configs[0].1;
    let members: BTreeMap<u64, (String, String, String)> = first
        .cluster
        .members
        .iter()
        .map(|m| (m.id, (m.region.clone(), m.raft_addr.clone(), m.api_addr.clone())))
        .collect();
    for (name, c) in configs {
        assert!(ids.insert(c.node.id), "{name}: node id {} used twice", c.node.id);
        if c.cluster.bootstrap {
            bootstrap.push(name.clone());
        }
        assert_eq!(c.cluster.primary_region, PRIMARY, "{name}");
        assert_eq!(c.cluster.secondary_region.as_deref(), Some(SECONDARY), "{name}");
        let mine: BTreeMap<u64, (String, String, String)> = c
            .cluster
            .members
            .iter()
            .map(|m| (m.id, (m.region.clone(), m.raft_addr.clone(), m.api_addr.clone())))
            .collect();
        assert_eq!(mine, members, "{name}: member list differs from {}", configs[0].0);
        let (region, raft, api) = members.get(&c.node.id).unwrap_or_else(|| panic!("{name}: not a member"));
        assert_eq!(&c.node.region, region, "{name}: region");
        assert_eq!(&c.advertise_raft(), raft, "{name}: advertised Raft address");
        assert_eq!(&c.advertise_api(), api, "{name}: advertised API address");
        assert!(c.tls.is_some(), "{name}: TLS off");
    }
    assert_eq!(bootstrap.len(), 1, "exactly one node bootstraps: {bootstrap:?}");
    assert_eq!(ids.len(), members.len(), "one config per member");
    let primary = members.values().filter(|(r, ..)| r == PRIMARY).count();
    assert!(primary * 2 > members.len(), "the primary region holds a majority");
    members
}

#[test]
fn compose_nodes_reach_the_other_region_only_through_the_wan_emulator() {
    let links = wan_links();
    let dir = repo().join("deploy/config");
    let mut configs = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/config") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if name.starts_with("node-") && name.ends_with(".toml") {
            let text = std::fs::read_to_string(&path).expect("config");
            configs.push((name.clone(), node_config(&text, &name)));
        }
    }
    configs.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(configs.len(), 5, "node-a1..a3, node-b1..b2");
    let members = check_cluster(&configs);
    for (name, c) in &configs {
        let service = name.trim_end_matches(".toml");
        assert!(c.advertise_raft().starts_with(&format!("{service}:")), "{name}: advertises its service name");
        // Every node of the other region, and only those, through the WAN.
        let others: BTreeSet<&String> =
            members.values().filter(|(r, ..)| *r != c.node.region).map(|(_, raft, _)| raft).collect();
        let overridden: BTreeSet<&String> = c.cluster.dial_overrides.keys().collect();
        assert_eq!(overridden, others, "{name}: dial_overrides");
        for (advertised, dial) in &c.cluster.dial_overrides {
            let link = link_at(&links, dial);
            assert_eq!(&link.upstream, advertised, "{name}: {dial} leads to {}", link.upstream);
            assert_eq!(link.a_region.as_deref(), Some(c.node.region.as_str()), "{name}: link {} a side", link.name);
            let far = members.values().find(|(_, raft, _)| raft == advertised).map(|(r, ..)| r.as_str());
            assert_eq!(link.b_region.as_deref(), far, "{name}: link {} b side", link.name);
        }
    }
}

#[test]
fn compose_gateways_probe_every_node_and_cross_regions_through_the_wan() {
    let links = wan_links();
    let mut members = BTreeMap::new();
    for n in ["a1", "a2", "a3", "b1", "b2"] {
        let c = node_config(&read(&format!("deploy/config/node-{n}.toml")), n);
        members.insert(c.advertise_api(), c.node.region.clone());
    }
    for (g, home) in [("a", PRIMARY), ("b", SECONDARY)] {
        let origin = format!("gateway-{g}.toml");
        let cfg = attest_gateway::config::Config::parse(&read(&format!("deploy/config/{origin}")))
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
        assert_eq!(cfg.upstream.server_name.as_deref(), Some(PEER_NAME), "{origin}: nodes verified by their peer SAN");
        let order: Vec<(&str, u16)> = cfg.endpoints.iter().map(|e| (e.name.as_str(), e.priority)).collect();
        assert_eq!(order, vec![(PRIMARY, 1), (SECONDARY, 2)], "{origin}: priority order");
        for ep in &cfg.endpoints {
            let mut reached = BTreeSet::new();
            for node in &ep.nodes {
                let api = if ep.name == home {
                    node.address.clone()
                } else {
                    let link = link_at(&links, &node.address);
                    assert_eq!(link.a_region.as_deref(), Some(home), "{origin}: link {} a side", link.name);
                    link.upstream.clone()
                };
                assert_eq!(members.get(&api).map(String::as_str), Some(ep.name.as_str()), "{origin}: {api}");
                reached.insert(api);
            }
            let want: BTreeSet<String> =
                members.iter().filter(|(_, r)| **r == ep.name).map(|(a, _)| a.clone()).collect();
            assert_eq!(reached, want, "{origin}: endpoint {} lists every node of its region", ep.name);
        }
    }
}

/// The `|` blocks of a ConfigMap manifest whose key ends with `suffix`:
/// key → dedented text.
fn configmap_files(manifest: &str, suffix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in manifest.lines() {
        if let Some((key, text)) = &mut current {
            if let Some(body) = line.strip_prefix("    ") {
                text.push_str(body);
                text.push('\n');
                continue;
            }
            if line.trim().is_empty() {
                text.push('\n');
                continue;
            }
            out.insert(key.clone(), std::mem::take(text));
            current = None;
        }
        if let Some(key) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(": |")) {
            if key.ends_with(suffix) && !key.starts_with(' ') {
                current = Some((key.to_string(), String::new()));
            }
        }
    }
    if let Some((key, text)) = current {
        out.insert(key, text);
    }
    out
}

#[test]
fn k8s_configmaps_hold_one_node_config_per_replica() {
    let mut configs = Vec::new();
    for (region, file) in [(PRIMARY, "deploy/k8s/eastus2.yaml"), (SECONDARY, "deploy/k8s/centralus.yaml")] {
        let manifest = read(file);
        let files = configmap_files(&manifest, ".toml");
        let replicas: usize = manifest
            .lines()
            .find_map(|l| l.trim().strip_prefix("replicas: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{file}: no replicas"));
        assert_eq!(files.len(), replicas, "{file}: one config per replica");
        for i in 0..replicas {
            // The pod reads /etc/attestd/$(POD_NAME).toml.
            let key = format!("attestd-{region}-{i}.toml");
            let text = files.get(&key).unwrap_or_else(|| panic!("{file}: no {key}"));
            let c = node_config(text, &key);
            assert_eq!(c.node.region, region, "{key}");
            assert!(c.advertise_raft().starts_with(&format!("attestd-{region}-{i}.attestd-{region}:")), "{key}");
            configs.push((key, c));
        }
    }
    let members = check_cluster(&configs);
    let gw = configmap_files(&read("deploy/k8s/gateway.yaml"), "gateway.toml");
    let cfg = attest_gateway::config::Config::parse(gw.get("gateway.toml").expect("gateway.toml in the ConfigMap"))
        .unwrap_or_else(|e| panic!("k8s gateway.toml: {e}"));
    assert_eq!(cfg.upstream.server_name.as_deref(), Some(PEER_NAME));
    for ep in &cfg.endpoints {
        let listed: BTreeSet<&str> = ep.nodes.iter().map(|n| n.address.as_str()).collect();
        let want: BTreeSet<&str> =
            members.values().filter(|(r, ..)| *r == ep.name).map(|(_, _, api)| api.as_str()).collect();
        assert_eq!(listed, want, "k8s gateway endpoint {}", ep.name);
    }
}

/// The Rust sources under `dirs`, concatenated.
fn sources(dirs: &[&str]) -> String {
    fn walk(p: &Path, out: &mut String) {
        let Ok(entries) = std::fs::read_dir(p) else { return };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    let mut out = String::new();
    for d in dirs {
        walk(&repo().join(d), &mut out);
    }
    out
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let dash: Value = serde_json::from_str(&read("deploy/grafana/attestd.json")).expect("dashboard JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
        exprs.extend(a["expr"].as_str().map(str::to_string));
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        exprs.extend(v["definition"].as_str().map(str::to_string));
        exprs.extend(v["query"]["query"].as_str().map(str::to_string));
    }
    assert!(exprs.len() > 20, "dashboard has {} queries", exprs.len());
    let code = sources(&["node/src", "raft/src", "gateway/src"]);
    let exported = |name: &str| code.contains(&format!("\"{name}\""));
    let mut used = BTreeSet::new();
    for e in &exprs {
        for token in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if token.starts_with("attest_") || token.starts_with("gateway_") {
                // Summaries add _sum/_count series to the exported name.
                let base = ["_sum", "_count"]
                    .iter()
                    .find_map(|s| token.strip_suffix(s).filter(|b| exported(b)))
                    .unwrap_or(token);
                used.insert(base.to_string());
            }
        }
    }
    let unknown: Vec<&String> = used.iter().filter(|m| !exported(m)).collect();
    assert!(unknown.is_empty(), "dashboard queries metrics the code does not export: {unknown:?}");
    assert!(used.len() > 20, "only {} metrics used", used.len());
}

#[test]
fn prometheus_scrapes_every_node_and_gateway() {
    let prom = read("deploy/prometheus/prometheus.yml");
    for svc in ["node-a1", "node-a2", "node-a3", "node-b1", "node-b2", "gateway-a", "gateway-b"] {
        assert!(prom.contains(&format!("{svc}:8443")), "prometheus.yml does not scrape {svc}");
    }
    assert!(prom.contains("ca_file: /certs/ca.pem"), "scrapes verify the cluster CA");
}
