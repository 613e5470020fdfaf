//! The drill workload: concurrent clients that attest with real evidence
//! through the gateways and write and read the control plane through the
//! gateways and individual nodes, recording every operation in the
//! [`History`].
//!
//! * **attest clients** send the recorded Azure SDK OpenEnclave report and
//!   its SGX quote ([`VectorSet`]) with a fresh nonce to the region's shared
//!   provider; the token is kept for the token check.
//! * **writers** set policies of the drill providers (the register keys
//!   `<provider>/<type>`), each with a unique value carried in a policy
//!   comment (`// drill-value:<value>`), and now and then create a provider
//!   (key `provider:<name>`, written once). The operation id is sent as
//!   `x-ms-client-request-id`, so it is also the command's request id in
//!   the Raft log.
//! * **readers** read a policy with `?consistency=linearizable`; together
//!   with the writes they form the per-key register history the
//!   linearizability checker judges.
//!
//! Clients are paced (each keeps its share of the configured rate) rather
//! than closed-loop, so availability per second means the same thing
//! before, during and after a fault.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::history::{Entry, History, Op, OpResult, OpType};

/// The policy types the writers set (any registered type works; these two
/// are the ones the shared SGX vectors would be judged by).
pub const POLICY_TYPES: &[&str] = &["SgxEnclave", "OpenEnclave"];

/// Marker that carries a written value inside a policy document.
const VALUE_MARKER: &str = "// drill-value:";

/// Where a client sends requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `gateway-<region>` or the node's name.
    pub name: String,
    /// The region behind it (for a gateway: the region it runs in).
    pub region: String,
    /// Base URL, e.g. `https://127.0.0.1:8443`.
    pub url: String,
    pub gateway: bool,
}

/// One evidence vector: request body and the claims its token must carry.
#[derive(Debug, Clone)]
pub struct AttestVector {
    pub name: String,
    /// `OpenEnclave` or `SgxEnclave`.
    pub attestation_type: String,
    /// Request body without the nonce.
    pub body: Map<String, Value>,
    /// Claims MAA issued for the same evidence, minus what differs by
    /// construction (issuer, times, token id, policy hash; collateral
    /// hashes other than `quotehash`, because our collateral is newer).
    pub expected_claims: Map<String, Value>,
}

/// The evidence vectors of the workload.
#[derive(Debug, Clone)]
pub struct VectorSet {
    pub vectors: Vec<AttestVector>,
    /// Collateral blobs to import before attesting: (name, bytes).
    pub collateral: Vec<(String, Vec<u8>)>,
}

/// Claims that differ between any two issuers or any two calls.
pub const SERVICE_SPECIFIC_CLAIMS: &[&str] = &["iss", "iat", "nbf", "exp", "jti", "x-ms-policy-hash"];
/// Claims holding collateral hashes (only `quotehash` inside is compared).
pub const COLLATERAL_CLAIMS: &[&str] = &["x-ms-sgx-collateral", "maa-attestationcollateral"];

fn b64u(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl VectorSet {
    /// The Azure SDK OpenEnclave vectors under `<vectors>/sgx/azure-sdk-oe`
    /// with the SGX collateral they verify against (issue 3's test set):
    /// the report as OpenEnclave (binary and JSON runtime data) and its
    /// quote as SgxEnclave. They verify at [`PINNED_TIME`] with
    /// [`COLLATERAL_GRACE_S`].
    pub fn azure_sdk_oe(vectors: &Path) -> anyhow::Result<Self> {
        let read = |rel: &str| {
            let p = vectors.join(rel);
            std::fs::read(&p).with_context(|| format!("reading vector {}", p.display()))
        };
        let oe = read("sgx/azure-sdk-oe/oe_report_debug.bin")?;
        let runtime = read("sgx/azure-sdk-oe/runtime_data.bin")?;
        let recorded: Value =
            serde_json::from_slice(&read("sgx/azure-sdk-oe/maa_recorded_responses_debug_report.json")?)
                .context("parsing the recorded MAA responses")?;
        anyhow::ensure!(oe.len() > 16, "the OpenEnclave report is too short");
        let cases = [
            ("attest_openenclave_runtime_binary", "OpenEnclave", "report", oe.clone(), "Binary"),
            ("attest_sgxenclave_runtime_binary", "SgxEnclave", "quote", oe[16..].to_vec(), "Binary"),
            ("attest_openenclave_runtime_json", "OpenEnclave", "report", oe.clone(), "JSON"),
        ];
        let mut out = Vec::new();
        for (name, ty, field, evidence, data_type) in cases {
            let mut body = Map::new();
            body.insert(field.into(), b64u(&evidence).into());
            body.insert("runtimeData".into(), json!({"data": b64u(&runtime), "dataType": data_type}));
            let claims = recorded[name]["claims"]
                .as_object()
                .with_context(|| format!("recorded response {name} has no claims"))?;
            let mut expected = Map::new();
            for (k, v) in claims {
                if SERVICE_SPECIFIC_CLAIMS.contains(&k.as_str()) {
                    continue;
                }
                if COLLATERAL_CLAIMS.contains(&k.as_str()) {
                    expected.insert(k.clone(), json!({"quotehash": v["quotehash"].clone()}));
                    continue;
                }
                expected.insert(k.clone(), v.clone());
            }
            out.push(AttestVector { name: name.into(), attestation_type: ty.into(), body, expected_claims: expected });
        }
        let collateral = vec![
            ("sgx-qvl-bundle".to_string(), read("sgx/dcap-qvl/sgx_quote_collateral.json")?),
            ("tcbinfo-00906ed50000".to_string(), read("sgx/azure-sdk-oe/tcbInfo-sgx-00906ed50000_2025-09-28.json")?),
        ];
        Ok(Self { vectors: out, collateral })
    }

    pub fn get(&self, name: &str) -> Option<&AttestVector> {
        self.vectors.iter().find(|v| v.name == name)
    }
}

/// When the recorded SGX vectors verify: the 2025-09-28 TCB info is
/// current; the QE identity and PCK CRL expired 74 days earlier, inside a
/// 90-day collateral grace.
pub const PINNED_TIME: &str = "2025-10-01T00:00:00Z";
pub const COLLATERAL_GRACE_S: u64 = 90 * 86_400;

/// Rates, timeouts and what to write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadConfig {
    pub attest_clients: usize,
    /// Attestations per second, all clients together.
    pub attest_rate: f64,
    pub writers: usize,
    pub write_rate: f64,
    pub readers: usize,
    pub read_rate: f64,
    /// Share of writes that create a provider instead of setting a policy.
    pub create_share: f64,
    pub attest_timeout: Duration,
    /// Longer than the nodes' write timeout, so a slow write is answered
    /// by the node and a client timeout means the node hung.
    pub write_timeout: Duration,
    pub read_timeout: Duration,
    /// Providers whose policies are written (created before the run).
    pub providers: Vec<String>,
    /// The provider attest calls go to (a region's shared provider).
    pub attest_provider: String,
    /// Distinguishes values and request ids of this run from any other.
    pub run_tag: String,
    pub seed: u64,
}

impl WorkloadConfig {
    /// A light load that a 2-core machine carries next to a 3 + 2 cluster.
    pub fn light(attest_provider: &str, providers: Vec<String>, run_tag: &str) -> Self {
        Self {
            attest_clients: 4,
            attest_rate: 12.0,
            writers: 3,
            write_rate: 6.0,
            readers: 2,
            read_rate: 3.0,
            create_share: 0.15,
            attest_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(10),
            providers,
            attest_provider: attest_provider.to_owned(),
            run_tag: run_tag.to_owned(),
            seed: 7,
        }
    }

    /// The registers the writers touch.
    pub fn registers(&self) -> Registers {
        Registers {
            policy_keys: self
                .providers
                .iter()
                .flat_map(|p| POLICY_TYPES.iter().map(move |t| policy_key(p, t)))
                .collect(),
            created_prefix: format!("dw{}", &self.run_tag[..self.run_tag.len().min(8)]).to_ascii_lowercase(),
        }
    }
}

/// The registers of a run: its policy keys, and the providers its writers
/// create (named with the run's prefix, so that providers that existed
/// before, such as the drill's own, are not mistaken for written values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registers {
    pub policy_keys: Vec<String>,
    pub created_prefix: String,
}

impl Registers {
    /// Register values of one node's applied state (`/admin/state` body).
    pub fn values(&self, state: &Value) -> BTreeMap<String, Option<String>> {
        let mut out = BTreeMap::new();
        for k in &self.policy_keys {
            let v = state["policies"][k.as_str()]["document"].as_str().and_then(value_of_document);
            out.insert(k.clone(), v);
        }
        if let Some(providers) = state["providers"].as_object() {
            for name in providers.keys().filter(|n| n.starts_with(&self.created_prefix)) {
                out.insert(provider_key(name), Some(name.to_ascii_lowercase()));
            }
        }
        out
    }
}

/// The register key of a provider's policy of one type, as `/admin/state` names it.
pub fn policy_key(provider: &str, ty: &str) -> String {
    format!("{}/{ty}", provider.to_ascii_lowercase())
}

/// The register key of a provider's existence.
pub fn provider_key(name: &str) -> String {
    format!("provider:{}", name.to_ascii_lowercase())
}

/// The policy document that carries `value`.
pub fn policy_document(value: &str) -> String {
    format!("version=1.0; authorizationrules {{ => permit(); }}; issuancerules {{ }}; {VALUE_MARKER}{value}\n")
}

/// The value carried by a policy document (`None` for a document that
/// carries none, e.g. the default policy).
pub fn value_of_document(doc: &str) -> Option<String> {
    let rest = &doc[doc.find(VALUE_MARKER)? + VALUE_MARKER.len()..];
    let v: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    (!v.is_empty()).then_some(v)
}

/// Running totals, for the progress bar.
#[derive(Debug, Default)]
pub struct Counters {
    pub attest_ok: AtomicU64,
    pub attest_err: AtomicU64,
    pub write_ok: AtomicU64,
    pub write_err: AtomicU64,
    pub read_ok: AtomicU64,
    pub read_err: AtomicU64,
}

impl Counters {
    pub fn line(&self) -> String {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "attest {}/{} err · writes {}/{} err · reads {}/{} err",
            l(&self.attest_ok),
            l(&self.attest_err),
            l(&self.write_ok),
            l(&self.write_err),
            l(&self.read_ok),
            l(&self.read_err)
        )
    }
}

/// Who to send what to.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Attest calls go here (the gateways).
    pub data: Vec<Endpoint>,
    /// Writes and reads go here (gateways and nodes).
    pub control: Vec<Endpoint>,
}

/// A running workload.
pub struct Workload {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub counters: Arc<Counters>,
}

impl Workload {
    /// Starts every client. `http` must trust the cluster's CA and carry a
    /// bearer token with the Contributor role.
    pub fn start(
        cfg: &WorkloadConfig,
        targets: Targets,
        vectors: Arc<VectorSet>,
        http: reqwest::Client,
        history: History,
    ) -> Self {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let counters = Arc::new(Counters::default());
        let targets = Arc::new(targets);
        let cfg = Arc::new(cfg.clone());
        let mut tasks = Vec::new();
        let mut spawn = |kind: OpType, n: usize, rate: f64| {
            for i in 0..n {
                let ctx = ClientCtx {
                    name: format!("{}-{i}", kind_name(kind)),
                    kind,
                    cfg: cfg.clone(),
                    targets: targets.clone(),
                    vectors: vectors.clone(),
                    http: http.clone(),
                    history: history.clone(),
                    counters: counters.clone(),
                    rng: StdRng::seed_from_u64(cfg.seed.wrapping_mul(1000).wrapping_add(i as u64 + kind as u64 * 100)),
                    created_prefix: cfg.registers().created_prefix,
                };
                let interval = Duration::from_secs_f64(n as f64 / rate.max(0.01));
                tasks.push(tokio::spawn(ctx.run(interval, stop_rx.clone())));
            }
        };
        if !targets.data.is_empty() && !vectors.vectors.is_empty() {
            spawn(OpType::Attest, cfg.attest_clients, cfg.attest_rate);
        }
        if !targets.control.is_empty() && !cfg.providers.is_empty() {
            spawn(OpType::Write, cfg.writers, cfg.write_rate);
            spawn(OpType::Read, cfg.readers, cfg.read_rate);
        }
        Self { stop, tasks, counters }
    }

    /// Stops issuing operations and waits for those in flight (each is
    /// bounded by its timeout).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn kind_name(k: OpType) -> &'static str {
    match k {
        OpType::Attest => "attest",
        OpType::Write => "writer",
        OpType::Read => "reader",
    }
}

struct ClientCtx {
    name: String,
    kind: OpType,
    cfg: Arc<WorkloadConfig>,
    targets: Arc<Targets>,
    vectors: Arc<VectorSet>,
    http: reqwest::Client,
    history: History,
    counters: Arc<Counters>,
    rng: StdRng,
    created_prefix: String,
}

impl ClientCtx {
    async fn run(mut self, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        // Spread the clients' first ticks over one interval.
        let offset = Duration::from_secs_f64(interval.as_secs_f64() * self.rng.random_range(0.0..1.0));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let op = match self.kind {
                OpType::Attest => self.attest().await,
                OpType::Write => self.write().await,
                OpType::Read => self.read().await,
            };
            let (ok, err) = match self.kind {
                OpType::Attest => (&self.counters.attest_ok, &self.counters.attest_err),
                OpType::Write => (&self.counters.write_ok, &self.counters.write_err),
                OpType::Read => (&self.counters.read_ok, &self.counters.read_err),
            };
            if op.result == OpResult::Ok { ok } else { err }.fetch_add(1, Ordering::Relaxed);
            self.history.record(Entry::Op(op));
        }
    }

    fn pick<'a>(&mut self, from: &'a [Endpoint]) -> &'a Endpoint {
        &from[self.rng.random_range(0..from.len())]
    }

    async fn attest(&mut self) -> Op {
        let targets = self.targets.clone();
        let target = self.pick(&targets.data);
        let vectors = self.vectors.clone();
        let v = &vectors.vectors[self.rng.random_range(0..vectors.vectors.len())];
        let id = self.history.next_id();
        let nonce = format!("{}-{id}", self.cfg.run_tag);
        let mut body = v.body.clone();
        body.insert("nonce".into(), nonce.clone().into());
        let mut op = Op::begin(id, OpType::Attest, &self.name, &target.name, self.history.now_ns());
        op.vector = Some(v.name.clone());
        op.nonce = Some(nonce);
        let url = format!("{}/providers/{}/attest/{}", target.url, self.cfg.attest_provider, v.attestation_type);
        let sent = self.http.post(url).timeout(self.cfg.attest_timeout).json(&body).send().await;
        let answer = finish(&mut op, target, sent, &self.history).await;
        if let Some(body) = answer {
            op.token = body["token"].as_str().map(str::to_owned);
            if let Some(t) = &op.token {
                if let Ok((_, claims)) = attest_node::token::jwt::decode_unverified(t) {
                    op.node = claims.get("x-attestd-node").map(|n| format!("node-{}", n.as_u64().unwrap_or(0)));
                }
            }
            if op.token.is_none() {
                op.result = OpResult::Failed;
                op.error_code = Some("NoToken".into());
            }
        }
        // Attestation changes nothing: an unknown outcome is just a failure.
        if op.result == OpResult::Unknown {
            op.result = OpResult::Failed;
        }
        op
    }

    async fn write(&mut self) -> Op {
        let targets = self.targets.clone();
        let target = self.pick(&targets.control);
        let id = self.history.next_id();
        let rid = format!("{}-{id}", self.cfg.run_tag);
        let mut op = Op::begin(id, OpType::Write, &self.name, &target.name, self.history.now_ns());
        op.request_id = Some(rid.clone());
        let req = if self.rng.random_bool(self.cfg.create_share.clamp(0.0, 1.0)) {
            // Provider names: 3-24 characters of letters, digits and '-'.
            let name = format!("{}{id}", self.created_prefix);
            op.key = Some(provider_key(&name));
            op.value = Some(name.clone());
            self.http
                .put(format!("{}/providers/{name}", target.url))
                .header("content-type", "application/json")
                .body(r#"{"trustModel":"AAD"}"#)
        } else {
            let p = self.cfg.providers[self.rng.random_range(0..self.cfg.providers.len())].clone();
            let ty = POLICY_TYPES[self.rng.random_range(0..POLICY_TYPES.len())];
            op.key = Some(policy_key(&p, ty));
            op.value = Some(rid.clone());
            self.http
                .put(format!("{}/providers/{p}/policies/{ty}", target.url))
                .header("content-type", "text/plain")
                .body(policy_document(&rid))
        };
        let sent = req.header("x-ms-client-request-id", &rid).timeout(self.cfg.write_timeout).send().await;
        if let Some(body) = finish(&mut op, target, sent, &self.history).await {
            op.replication_mode = body["replicationMode"].as_str().map(str::to_owned);
            op.secondary_durable = body["secondaryDurable"].as_bool();
            op.index = body["index"].as_u64();
        }
        op
    }

    async fn read(&mut self) -> Op {
        let targets = self.targets.clone();
        let target = self.pick(&targets.control);
        let id = self.history.next_id();
        let p = self.cfg.providers[self.rng.random_range(0..self.cfg.providers.len())].clone();
        let ty = POLICY_TYPES[self.rng.random_range(0..POLICY_TYPES.len())];
        let mut op = Op::begin(id, OpType::Read, &self.name, &target.name, self.history.now_ns());
        op.key = Some(policy_key(&p, ty));
        let sent = self
            .http
            .get(format!("{}/providers/{p}/policies/{ty}?consistency=linearizable", target.url))
            .timeout(self.cfg.read_timeout)
            .send()
            .await;
        if let Some(body) = finish(&mut op, target, sent, &self.history).await {
            match body["token"].as_str().map(policy_text_of_token) {
                Some(Ok(text)) => {
                    op.value = value_of_document(&text);
                    op.token = body["token"].as_str().map(str::to_owned);
                }
                Some(Err(e)) => {
                    op.result = OpResult::Failed;
                    op.error_code = Some("BadPolicyToken".into());
                    op.error = Some(e);
                }
                None => {
                    op.result = OpResult::Failed;
                    op.error_code = Some("NoToken".into());
                }
            }
        }
        // A read that failed or timed out observed nothing.
        if op.result == OpResult::Unknown {
            op.result = OpResult::Failed;
        }
        op
    }
}

/// The policy text inside a policy-get token: the `x-ms-policy` claim is a
/// JWS whose payload's `AttestationPolicy` is the base64url text.
pub fn policy_text_of_token(token: &str) -> Result<String, String> {
    let (_, claims) = attest_node::token::jwt::decode_unverified(token).map_err(|e| e.to_string())?;
    let jws = claims.get("x-ms-policy").and_then(Value::as_str).ok_or("no x-ms-policy claim")?;
    let payload = jws.split('.').nth(1).ok_or("x-ms-policy is not a JWS")?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("x-ms-policy payload: {e}"))?;
    let payload: Value = serde_json::from_slice(&payload).map_err(|e| format!("x-ms-policy payload: {e}"))?;
    let text = payload["AttestationPolicy"].as_str().ok_or("no AttestationPolicy")?;
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| format!("AttestationPolicy: {e}"))?;
    String::from_utf8(text).map_err(|e| format!("AttestationPolicy: {e}"))
}

/// Records the answer (or the transport error) on `op` and classifies it.
/// Returns the JSON body of a 2xx answer.
async fn finish(
    op: &mut Op,
    target: &Endpoint,
    sent: reqwest::Result<reqwest::Response>,
    history: &History,
) -> Option<Value> {
    // Through a gateway, only its `x-attest-region` header says who answered.
    op.via_gateway = target.gateway;
    if !target.gateway {
        op.region = Some(target.region.clone());
        op.node = Some(target.name.clone());
    }
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            op.end_ns = history.now_ns();
            let (result, code) = classify_transport(&e);
            op.result = result;
            op.error_code = Some(code.into());
            op.error = Some(error_chain(&e));
            return None;
        }
    };
    let status = resp.status().as_u16();
    if let Some(r) = resp.headers().get("x-attest-region").and_then(|v| v.to_str().ok()) {
        op.region = Some(r.to_owned());
    }
    let body: Result<Value, _> = resp.json().await;
    op.end_ns = history.now_ns();
    op.status = Some(status);
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            op.result = if (200..300).contains(&status) { OpResult::Unknown } else { classify_status(status, None) };
            op.error_code = Some("UnreadableBody".into());
            op.error = Some(error_chain(&e));
            return None;
        }
    };
    if (200..300).contains(&status) {
        op.result = OpResult::Ok;
        return Some(body);
    }
    let code = body["error"]["code"].as_str().map(str::to_owned);
    let inner = body["error"]["innererror"]["code"].as_str();
    op.result = classify_status(status, inner);
    if code.as_deref() == Some("ReplicationPending") {
        op.result = OpResult::Unknown;
    }
    op.error_code = code.or_else(|| Some(format!("HTTP{status}")));
    op.error = body["error"]["message"].as_str().map(|m| m.chars().take(300).collect());
    None
}

/// The outcome of a non-2xx answer to a write: the node says whether the
/// write may still happen; without that, a 4xx is a refusal and a 5xx may
/// hide anything.
fn classify_status(status: u16, inner: Option<&str>) -> OpResult {
    match inner {
        Some("NotApplied") => OpResult::Failed,
        Some("OutcomeUnknown") => OpResult::Unknown,
        _ if (400..500).contains(&status) => OpResult::Failed,
        // 503 without an inner error: load shedding or NotLeader before proposing.
        _ if status == 503 => OpResult::Failed,
        _ => OpResult::Unknown,
    }
}

fn classify_transport(e: &reqwest::Error) -> (OpResult, &'static str) {
    if e.is_connect() {
        // The connection (TCP or TLS) was never established: nothing was sent.
        (OpResult::Failed, "ConnectionRefused")
    } else if e.is_timeout() {
        (OpResult::Unknown, "Timeout")
    } else {
        (OpResult::Unknown, "Transport")
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_travel_in_policy_documents() {
        let doc = policy_document("run1-42");
        assert_eq!(value_of_document(&doc).as_deref(), Some("run1-42"));
        assert_eq!(value_of_document("version=1.0; authorizationrules { => permit(); };"), None);
        assert_eq!(value_of_document("// drill-value:"), None);
    }

    #[test]
    fn policy_text_is_read_back_from_a_policy_token() {
        let text = policy_document("abc-1");
        let jws = attest_node::policy::jws::unsigned_policy_jws(&text);
        let claims = json!({"x-ms-policy": jws});
        let token = format!("{}.{}.", b64u(br#"{"alg":"none"}"#), b64u(claims.to_string().as_bytes()));
        assert_eq!(policy_text_of_token(&token), Ok(text));
        assert!(policy_text_of_token("garbage").is_err());
    }

    #[test]
    fn state_values_cover_policies_and_created_providers() {
        let state = json!({
            "policies": {"drill1/SgxEnclave": {"document": policy_document("v9")}},
            "providers": {"drill1": {}, "dwab12cd341": {}},
        });
        let cfg = WorkloadConfig::light("sharedeastus2", vec!["drill1".into()], "ab12cd34ef");
        let r = cfg.registers();
        assert_eq!(r.created_prefix, "dwab12cd34");
        let v = r.values(&state);
        assert_eq!(v["drill1/SgxEnclave"].as_deref(), Some("v9"));
        assert_eq!(v["drill1/OpenEnclave"], None);
        assert_eq!(v["provider:dwab12cd341"].as_deref(), Some("dwab12cd341"));
        // The drill's own provider existed before the run: not a register.
        assert!(!v.contains_key("provider:drill1"));
    }

    #[test]
    fn outcomes_follow_what_the_node_says() {
        assert_eq!(classify_status(503, Some("NotApplied")), OpResult::Failed);
        assert_eq!(classify_status(503, Some("OutcomeUnknown")), OpResult::Unknown);
        assert_eq!(classify_status(409, None), OpResult::Failed);
        assert_eq!(classify_status(502, None), OpResult::Unknown);
        assert_eq!(classify_status(504, None), OpResult::Unknown);
    }

    #[test]
    fn shared_vectors_load_with_their_expected_claims() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors");
        let dir = std::env::var_os("ATTEST_VECTORS").map(std::path::PathBuf::from).unwrap_or(dir);
        let set = VectorSet::azure_sdk_oe(&dir).expect("vectors load");
        assert_eq!(set.vectors.len(), 3);
        let v = set.get("attest_openenclave_runtime_json").expect("json case");
        assert_eq!(v.expected_claims["x-ms-sgx-mrsigner"].as_str().map(str::len), Some(64));
        assert!(!v.expected_claims.contains_key("iss"));
        assert_eq!(v.expected_claims["x-ms-sgx-collateral"].as_object().map(|o| o.len()), Some(1));
    }
}
