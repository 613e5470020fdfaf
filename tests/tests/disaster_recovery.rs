//! Disaster recovery (issue 9) with real processes: forced promotion of
//! the secondary, fencing of the old primary, re-seeding, rebalancing, and
//! the split-brain case where the "lost" primary was alive all along.
//!
//! Every wait is bounded; nothing asserts on durations.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use attest_chaos::cluster::Cluster;
use attest_tests::{create_provider, create_until_ok, launch, status};
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(90);

/// Nodes refuse a promotion until no leader was heard for this long.
const MIN_OUTAGE_MS: u64 = 4000;

fn recovery_toml() -> String {
    format!("[recovery]\npromote_min_outage_ms = {MIN_OUTAGE_MS}\n")
}

async fn post(c: &Cluster, id: u64, path: &str, body: Value) -> (u16, Value) {
    let resp = c
        .http()
        .post(format!("{}{path}", c.url(id)))
        .timeout(Duration::from_secs(240))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path} on node {id}: {e}"));
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

async fn promote(c: &Cluster, id: u64, region: &str, force: bool, confirm: bool) -> (u16, Value) {
    post(c, id, "/admin/promote", json!({"region": region, "force": force, "confirm": confirm})).await
}

fn message(body: &Value) -> String {
    body["error"]["message"].as_str().unwrap_or_default().to_string()
}

/// Polls the promotion plan until it has no refusals (bounded).
async fn wait_promotable(c: &Cluster, id: u64, region: &str) -> Value {
    let deadline = Instant::now() + CONVERGE;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok((200, plan)) = c.get_json(id, &format!("/admin/promote/plan?region={region}")).await {
            if plan["refusals"].as_array().is_some_and(|r| r.is_empty()) {
                return plan;
            }
            last = plan;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("region {region} never became promotable; last plan: {last}");
}

/// Retries a create until acknowledged (bounded); returns the answer.
async fn audit(c: &Cluster, id: u64) -> Vec<Value> {
    let (code, body) = c.get_json(id, "/admin/audit").await.expect("audit answered");
    assert_eq!(code, 200, "{body}");
    body["value"].as_array().cloned().unwrap_or_default()
}

/// Waits until node `id`'s audit log has a record satisfying `pred`.
async fn wait_audit(c: &Cluster, id: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + CONVERGE;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        if let Ok((200, body)) = c.get_json(id, "/admin/audit").await {
            let records = body["value"].as_array().cloned().unwrap_or_default();
            if let Some(r) = records.iter().find(|r| pred(r)) {
                return r.clone();
            }
            last = records;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("audit log of node {id} never showed {what}; last: {last:?}");
}

/// A fenced node answers neither the data plane nor the control plane.
async fn assert_fenced_refuses_everything(c: &Cluster, id: u64) {
    let h = c.health(id).await.expect("health answered").1;
    assert_eq!(h["fenced"], true, "node {id} health: {h}");
    let (code, _) = c.health(id).await.expect("health");
    assert_eq!(code, 503, "a fenced node is unhealthy");
    let http = c.http();
    let shared = c.shared_provider(&c.spec.primary_region);
    let checks: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "attest",
            http.post(format!("{}/attest/SgxEnclave?api-version=2022-08-01", c.url(id)))
                .header("content-type", "application/json")
                .body(r#"{"quote":"AAAA"}"#),
        ),
        (
            "attest under a provider prefix",
            http.post(format!("{}/providers/{shared}/attest/TdxVm", c.url(id))).body("{}"),
        ),
        ("certs", http.get(format!("{}/certs", c.url(id)))),
        ("openid metadata", http.get(format!("{}/.well-known/openid-configuration", c.url(id)))),
        ("provider read", http.get(format!("{}/providers", c.url(id)))),
        (
            "provider write",
            http.put(format!("{}/providers/fencedwrite", c.url(id)))
                .header("content-type", "application/json")
                .body(r#"{"trustModel":"AAD"}"#),
        ),
    ];
    for (what, req) in checks {
        let resp = req.send().await.unwrap_or_else(|e| panic!("{what} on fenced node {id}: {e}"));
        let code = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(code, 503, "{what} on fenced node {id}: {body}");
        assert_eq!(body["error"]["code"], "NodeFenced", "{what} on fenced node {id}: {body}");
        assert!(message(&body).contains("epoch"), "{what}: the message names the epoch: {body}");
    }
}

fn provider_names(state: &Value) -> BTreeSet<String> {
    state["providers"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_promotion_fencing_reseed_and_rebalance() {
    let (mut c, _dir) = launch("dr-promote", |s| s.extra_toml.push_str(&recovery_toml())).await.expect("cluster");
    let primary = c.spec.primary_region.clone();
    let secondary = c.spec.secondary_region.clone();
    let sec = c.secondary_ids();
    let (s1, s2) = (sec[0], sec[1]);
    let mut acked = BTreeSet::new();
    for i in 0..5 {
        let body = create_until_ok(&c, 1 + (i % 3), &format!("before{i}"), CONVERGE).await;
        assert_eq!(body["replicationMode"], "sync", "{body}");
        acked.insert(format!("before{i}"));
    }
    c.wait_converged(&c.ids(), 0, CONVERGE).await.expect("converged");

    // Refused while the primary is reachable, without --force, without
    // confirmation, and on a node of the wrong region.
    let (code, body) = promote(&c, s1, &secondary, true, true).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["code"], "RecoveryRefused");
    assert!(message(&body).contains("reachable") || message(&body).contains("answers"), "{body}");
    let (code, body) = promote(&c, s1, &secondary, false, true).await;
    assert_eq!(code, 409, "{body}");
    assert!(message(&body).contains("--force"), "{body}");
    let (code, body) = promote(&c, s1, &secondary, true, false).await;
    assert_eq!(code, 409, "{body}");
    assert!(message(&body).contains("confirm"), "{body}");
    let (code, body) = promote(&c, 1, &primary, true, true).await;
    assert_eq!(code, 409, "{body}");

    // The primary region is lost.
    c.kill_region(&primary).expect("kill the primary region");
    let plan = c.get_json(s1, &format!("/admin/promote/plan?region={secondary}")).await.expect("plan").1;
    if plan["outageMs"].as_u64().unwrap_or(u64::MAX) + 1000 < MIN_OUTAGE_MS {
        // Still inside the minimum outage: refused, and it says why.
        let (code, body) = promote(&c, s1, &secondary, true, true).await;
        assert_eq!(code, 409, "{body}");
        assert!(message(&body).contains("promote_min_outage_ms"), "{body}");
    }
    let r = create_provider(&c, s1, "readonly", "readonly").await.expect("answered");
    assert_eq!(r.status, 503, "read-only before the promotion: {}", r.body);

    // The plan reports what the secondary holds and the RPO.
    let plan = wait_promotable(&c, s1, &secondary).await;
    assert_eq!(plan["survivors"].as_array().map(Vec::len), Some(2), "{plan}");
    assert!(plan["baseIndex"].as_u64().unwrap_or(0) > 0, "{plan}");
    assert!(plan["rpo"].as_str().unwrap_or("").contains("RPO = 0"), "sync mode: nothing acknowledged lost: {plan}");
    assert_eq!(plan["newEpoch"], 2);

    // Promote through the CLI, as an operator would.
    let bin = c.bin.clone();
    let (url, ca, token) = (c.url(s1), c.ca_path(), c.bearer("Owner").expect("token"));
    let region = secondary.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["admin", "promote", "--url", &url, "--token", &token, "--region", &region, "--force", "--yes"])
            .arg("--ca")
            .arg(ca)
            .output()
    })
    .await
    .expect("join")
    .expect("attestd admin promote runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "promote failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    // The control plane is writable in the secondary, in epoch 2.
    for (n, id) in [s1, s2].iter().enumerate() {
        let body = create_until_ok(&c, *id, &format!("after{n}"), CONVERGE).await;
        assert_eq!(body["replicationMode"], "async", "{body}");
        acked.insert(format!("after{n}"));
    }
    let st = status(&c, s1).await.expect("status");
    assert_eq!(st["epoch"], 2, "{st}");
    assert_eq!(st["primary_region"], secondary.as_str(), "{st}");
    let promote_rec = wait_audit(&c, s2, "the promotion", |r| r["action"] == "promote").await;
    assert_eq!(promote_rec["epoch"], 2);
    assert!(promote_rec["rpo"].as_str().unwrap_or("").contains("RPO = 0"), "{promote_rec}");
    assert_eq!(promote_rec["actor"], "attest-chaos", "who: {promote_rec}");
    assert!(promote_rec["at_ms"].as_u64().unwrap_or(0) > 0, "when: {promote_rec}");
    let state = c.state(s2).await.expect("state");
    for name in &acked {
        assert!(provider_names(&state).contains(name), "acknowledged {name} survived the promotion");
    }

    // The old primary comes back: fenced at first contact, serves nothing.
    c.start_region(&primary).expect("restart the old primary");
    for id in c.primary_ids() {
        c.wait_health_where(id, CONVERGE, "fenced", |h| h["fenced"] == true).await.expect("old primary fenced");
        assert_fenced_refuses_everything(&c, id).await;
    }
    // The fencing is recorded (with whatever the old node held beyond the base).
    for id in c.primary_ids() {
        wait_audit(&c, s1, "the fenced node", |r| {
            (r["action"] == "fenced-node" || r["action"] == "divergent-writes") && r["detail"]["node"] == id
        })
        .await;
    }
    // Still writable on the promoted side, and the fenced nodes did not
    // take part: their state did not move.
    create_until_ok(&c, s2, "whilefenced", CONVERGE).await;
    acked.insert("whilefenced".into());

    // Re-seed the old primary, node by node.
    for id in c.primary_ids() {
        let (code, body) = post(&c, id, "/admin/reseed", json!({"confirm": true})).await;
        assert_eq!(code, 200, "reseed node {id}: {body}");
        c.wait_healthy(id, CONVERGE).await.expect("re-seeded node healthy");
    }
    // A healthy member is never re-seeded.
    let (code, body) = post(&c, s1, "/admin/reseed", json!({"confirm": true})).await;
    assert_eq!(code, 409, "{body}");
    let digest = c.wait_converged(&c.ids(), 0, CONVERGE).await.expect("re-seeded nodes converge");
    assert_eq!(digest.len(), 64);
    let h = c.health(1).await.expect("health").1;
    assert_eq!(h["fenced"], false, "{h}");
    assert_eq!(h["epoch"], 2, "{h}");

    // Move the majority back to the old primary region.
    let (code, body) = post(&c, 1, "/admin/rebalance", json!({"primary": primary})).await;
    assert_eq!(code, 200, "rebalance: {body}");
    let st = c
        .wait_health_where(1, CONVERGE, "leader back in the primary", |h| {
            h["leader_region"] == primary.as_str() && h["primary_region"] == primary.as_str()
        })
        .await
        .expect("leader in the old primary region");
    let _ = st;
    let st = status(&c, 1).await.expect("status");
    let voters: BTreeSet<u64> = st["members"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["voter"] == true).filter_map(|m| m["id"].as_u64()).collect())
        .unwrap_or_default();
    let in_primary = voters.iter().filter(|v| c.primary_ids().contains(v)).count();
    assert!(in_primary * 2 > voters.len(), "primary holds the voter majority again: {st}");
    for id in c.ids() {
        let body = create_until_ok(&c, id, &format!("final{id}"), CONVERGE).await;
        acked.insert(format!("final{id}"));
        let _ = body;
    }
    c.wait_converged(&c.ids(), 0, CONVERGE).await.expect("converged after rebalance");
    let state = c.state(2).await.expect("state");
    for name in &acked {
        assert!(provider_names(&state).contains(name), "acknowledged {name} present at the end");
    }
    let records = audit(&c, 3).await;
    let actions: Vec<&str> = records.iter().filter_map(|r| r["action"].as_str()).collect();
    for want in ["promote", "reseed", "rebalance"] {
        assert!(actions.contains(&want), "audit has {want}: {actions:?}");
    }
    assert_eq!(actions.iter().filter(|a| **a == "reseed").count(), 3, "{actions:?}");
    // The audit command prints it too.
    let out = std::process::Command::new(&c.bin)
        .args(["admin", "audit", "--url", &c.url(4), "--token", &c.bearer("Reader").expect("token")])
        .arg("--ca")
        .arg(c.ca_path())
        .output()
        .expect("attestd admin audit runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"promote\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_writes_of_the_old_primary_are_fenced_and_listed_as_divergent() {
    let (c, _dir) = launch("dr-split", |s| {
        s.wan = true;
        s.extra_toml.push_str(&recovery_toml());
    })
    .await
    .expect("cluster");
    let primary = c.spec.primary_region.clone();
    let secondary = c.spec.secondary_region.clone();
    let s1 = c.secondary_ids()[0];
    create_until_ok(&c, 1, "shared0", CONVERGE).await;
    c.wait_converged(&c.ids(), 0, CONVERGE).await.expect("converged");

    // A partition, not a loss: the primary lives on and keeps its quorum.
    let wan = c.wan.as_ref().expect("wan links");
    wan.partition(&primary, &secondary, false, attest_chaos::wan::CutMode::Reset).expect("cut p->s");
    wan.partition(&secondary, &primary, false, attest_chaos::wan::CutMode::Reset).expect("cut s->p");
    let mut split_rids = Vec::new();
    for i in 0..3 {
        let body = create_until_ok(&c, 1 + i, &format!("split{i}"), CONVERGE).await;
        assert_eq!(body["replicationMode"], "async", "acknowledged on the primary's own quorum: {body}");
        split_rids.push(format!("rid-split{i}"));
    }

    // The operator wrongly declares the primary lost.
    wait_promotable(&c, s1, &secondary).await;
    let (code, body) = promote(&c, s1, &secondary, true, true).await;
    assert_eq!(code, 200, "{body}");
    create_until_ok(&c, s1, "promoted0", CONVERGE).await;
    // Both sides accept writes now: the split brain the docs warn about.
    create_until_ok(&c, 2, "split3", CONVERGE).await;
    split_rids.push("rid-split3".into());

    // The partition heals: the old primary is fenced at first contact.
    wan.heal_all();
    for id in c.primary_ids() {
        c.wait_health_where(id, CONVERGE, "fenced", |h| h["fenced"] == true).await.expect("fenced after heal");
    }
    for id in c.primary_ids() {
        assert_fenced_refuses_everything(&c, id).await;
    }
    // Its writes are listed as divergent on the promoted side, by request id.
    let rec = wait_audit(&c, s1, "divergent writes", |r| {
        r["action"] == "divergent-writes"
            && r["detail"]["entries"]
                .as_array()
                .is_some_and(|e| split_rids.iter().all(|rid| e.iter().any(|x| x["request_id"] == rid.as_str())))
    })
    .await;
    assert_eq!(rec["epoch"], 2, "{rec}");
    // Never merged: the promoted side does not have them.
    let state = c.state(s1).await.expect("state");
    let names = provider_names(&state);
    assert!(names.contains("promoted0") && names.contains("shared0"), "{names:?}");
    for i in 0..4 {
        assert!(!names.contains(&format!("split{i}")), "divergent write split{i} was merged: {names:?}");
    }
    // The promoted side stays writable.
    create_until_ok(&c, c.secondary_ids()[1], "promoted1", CONVERGE).await;
}
