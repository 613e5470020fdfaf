//! The scripts of the drills. Each one injects its faults through the
//! [`DrillCtx`], opens the expectation windows the checkers judge, and
//! sets the check options specific to it (expected replication modes).
//!
//! Every script leaves the deployment healed (the runner heals anything
//! left over, and the `scenario` check fails if it had to).

use std::time::Duration;

use anyhow::{anyhow, bail};
use serde_json::{json, Value};

use crate::checker::verdicts::CheckOptionsSet;
use crate::cluster::ClusterSpec;
use crate::faults::Fault;
use crate::history::Expectation;
use crate::workload::Endpoint;

use super::{DrillCtx, Scenario};

/// How long the gateways may take to absorb a fault (probe every second,
/// one failure tolerated, plus passive ejection) before every data-plane
/// call must succeed again.
const DISRUPTION_BUDGET: Duration = Duration::from_secs(8);
const HEALTHY_WITHIN: Duration = Duration::from_secs(90);
const MODE_WITHIN: Duration = Duration::from_secs(60);

/// The node whose data directory the disk-full drill fills (a primary follower at launch).
pub const DISK_FULL_NODE: u64 = 2;

/// How long the local cluster of `permanent-primary-loss` makes the nodes
/// wait, without a leader, before they accept a forced promotion (the
/// production default is 2 minutes; see `[recovery]` in docs/operations.md).
pub const PROMOTE_MIN_OUTAGE: Duration = Duration::from_secs(5);

/// Adjusts the local cluster a scenario needs.
pub fn local_spec(scenario: Scenario, spec: &mut ClusterSpec) {
    if scenario == Scenario::DiskFull {
        spec.small_disk_mb.insert(DISK_FULL_NODE, 64);
    }
    if scenario == Scenario::PermanentPrimaryLoss {
        spec.extra_toml
            .push_str(&format!("\n[recovery]\npromote_min_outage_ms = {}\n", PROMOTE_MIN_OUTAGE.as_millis()));
    }
}

pub async fn play(scenario: Scenario, ctx: &mut DrillCtx<'_>, opts: &mut CheckOptionsSet) -> anyhow::Result<()> {
    match scenario {
        Scenario::PrimaryOutage => primary_outage(ctx).await,
        Scenario::PlannedFailover => planned_failover(ctx).await,
        Scenario::SecondaryOutage => {
            opts.expected_modes = vec!["sync".into(), "async".into(), "sync".into()];
            secondary_outage(ctx).await
        }
        Scenario::WanPartition => {
            opts.expected_modes = ["sync", "async", "sync", "async", "sync"].map(String::from).to_vec();
            wan_partition(ctx).await
        }
        Scenario::LeaderKillLoop => leader_kill_loop(ctx).await,
        Scenario::RollingRestart => rolling_restart(ctx).await,
        Scenario::SlowWan => {
            opts.expected_modes = ["sync", "async", "sync"].map(String::from).to_vec();
            slow_wan(ctx).await
        }
        Scenario::PartitionThenPrimaryLoss => partition_then_primary_loss(ctx).await,
        Scenario::DiskFull => disk_full(ctx).await,
        Scenario::PermanentPrimaryLoss => {
            // Promoted: async (no secondary member left); after the
            // rebalance the leader returns to sync.
            opts.expected_modes = ["sync", "async", "sync"].map(String::from).to_vec();
            permanent_primary_loss(ctx).await
        }
    }
}

fn regions(ctx: &DrillCtx<'_>) -> (String, String) {
    (ctx.dep.primary_region.clone(), ctx.dep.secondary_region.clone())
}

/// Where the gateways reach the other region through the WAN (compose),
/// calls crossing a fresh cut may fail until the gateways route around it.
fn wan_cut_disrupts_gateways(ctx: &mut DrillCtx<'_>) {
    if ctx.dep.gateways_cross_wan {
        ctx.window_from_fault(
            Expectation::Disruption { label: "gateway calls across the cut WAN".into() },
            DISRUPTION_BUDGET,
        );
    }
}

async fn primary_outage(ctx: &mut DrillCtx<'_>) -> anyhow::Result<()> {
    let (p, s) = regions(ctx);
    ctx.dep.wait_mode("sync", MODE_WITHIN).await?;
    ctx.fault(Fault::KillRegion { region: p.clone() }).await?;
    ctx.window_from_fault(Expectation::Disruption { label: format!("region {p} lost") }, DISRUPTION_BUDGET);
    let ro = ctx.open(Expectation::ReadOnly { region: s.clone(), via_gateways: true });
    let served = ctx.open(Expectation::ServedBy { region: s.clone() });
    ctx.hold(Duration::from_secs(1)).await;
    ctx.capture("secondary while the primary is down", &s).await?;
    ctx.step(&format!("holding: {p} down"));
    ctx.hold(ctx.pace.hold.saturating_sub(Duration::from_secs(1))).await;
    ctx.close(served);
    ctx.close(ro);
    ctx.fault(Fault::StartRegion { region: p.clone() }).await?;
    ctx.open(Expectation::Recovery { label: format!("region {p} restarted") });
    ctx.step(&format!("waiting for {p} to rejoin"));
    ctx.dep.wait_all_healthy(HEALTHY_WITHIN).await?;
    ctx.dep.wait_mode("sync", MODE_WITHIN).await
}

async fn planned_failover(ctx: &mut DrillCtx<'_>) -> anyhow::Result<()> {
    let (p, s) = regions(ctx);
    let nodes = ctx.dep.region_nodes(&p);
    anyhow::ensure!(!nodes.is_empty(), "planned failover needs the primary's nodes (--node)");
    let planned = ctx.open(Expectation::NoDisruption { label: format!("planned failover to {s} and back") });
    for n in &nodes {
        ctx.drain(n, true).await?;
    }
    let served = ctx.open(Expectation::ServedBy { region: s.clone() });
    ctx.step(&format!("holding: {p} drained"));
    ctx.hold(ctx.pace.hold).await;
    ctx.close(served);
    for n in &nodes {
        ctx.drain(n, false).await?;
    }
    let back = ctx.open(Expectation::ServedBy { region: p.clone() });
    ctx.step("failback");
    ctx.hold(Duration::from_secs(6)).await;
    ctx.close(back);
    ctx.close(planned);
    Ok(())
}

async fn secondary_outage(ctx: &mut DrillCtx<'_>) -> anyhow::Result<()> {
    let (p, s) = regions(ctx);
    ctx.dep.wait_mode("sync", MODE_WITHIN).await?;
    ctx.fault(Fault::KillRegion { region: s.clone() }).await?;
    let served = ctx.open(Expectation::ServedBy { region: p.clone() });
    ctx.step("waiting for the switch to async");
    ctx.dep.wait_mode("async", MODE_WITHIN).await?;
    ctx.step(&format!("holding: {s} down"));
    ctx.hold(ctx.pace.hold).await;
    ctx.close(served);
    ctx.fault(Fault::StartRegion { region: s.clone() }).await?;
    ctx.open(Expectation::Recovery { label: format!("region {s} restarted") });
    ctx.step(&format!("waiting for {s} to catch up"));
    ctx.dep.wait_all_healthy(HEALTHY_WITHIN).await?;
    ctx.dep.wait_mode("sync", MODE_WITHIN).await
}

async fn wan_partition(ctx: &mut DrillCtx<'_>) -> anyhow::Result<()> {
    let (p, s) = regions(ctx);
    ctx.dep.wait_mode("sync", MODE_WITHIN).await?;
    for one_way in [false, true] {
        ctx.fault(Fault::Partition { from: p.clone(), to: s.clone(), one_way }).await?;
        wan_cut_disrupts_gateways(ctx);
        // Writes sent to the secondary's nodes must be refused; through the
        // gateways they reach the primary, which stays writable.
        let ro = ctx.open(Expectation::ReadOnly { region: s.clone(), via_gateways: false });
        ctx.step("waiting for the switch to async");
        ctx.dep.wait_mode("async", MODE_WITHIN).await?;
        ctx.step("holding the partition");
        ctx.hold(ctx.pace.hold).await;
        ctx.close(ro);
        ctx.fault(Fault::Heal).await?;
        ctx.open(Expectation::Recovery {
            label: if one_way { "one-way cut healed".into() } else { "partition healed".into() },
        });
        ctx.step("waiting for sync");
        ctx.dep.wait_mode("sync", MODE_WITHIN).await?;
        ctx.dep.wait_all_healthy(HEALTHY_WITHIN).await?;
        ctx.hold(Duration::from_secs(2)).await;
    }
    Ok(())
}

async fn leader_kill_loop(ctx: &mut DrillCtx<'_>) -> anyhow::Result<()> {
    for round in 0..ctx.pace.rounds.max(2) {
        let leader = ctx.leader(Duration::from_secs(30)).await?;
        // Even rounds: SIGKILL; odd rounds: SIGSTOP (a frozen leader that still holds its sockets).
        let freeze = round % 2 == 1;
        if freeze {
            ctx.fault(Fault::Pause { node: leader.name.clone() }).await?;
        } else {
            ctx.fault(Fault::Kill { node: leader.name.clone() }).await?;
        }
        let what = if freeze { "frozen" } else { "killed" };
        // A frozen node accepts connections but never answers: calls routed to
        // it time out until the gateway ejects it.
        ctx.window_from_fault(
            Expectation::Disruption { label: format!("leader {} {what}", leader.name) },
            DISRUPTION_BUDGET,
        );
        ctx.window_for(
            Expectation::Recovery { label: format!("leader {} {what}", leader.name) },
            Duration::from_secs(4),
        );
        ctx.hold(Duration::from_secs(4)).await;
        if freeze {
            ctx.fault(Fault::Resume { node: leader.name.clone() }).await?;
        } else {
            ctx.fault(Fault::Start { node: leader.name.clone() }).await?;
        }
        ctx.step(&format!("round {}: waiting for {} to rejoin", round + 1, leader.name));
        ctx.dep.wait_all_healthy(HEALTHY_WITHIN).await?;
        ctx.hold(Duration::from_secs(2)).await;
    }
    Ok(())
}

async fn rolling_restart(ctx: &mut DrillCtx<'_>) -> anyhow::Result<()> {
    // The usual order: secondary nodes, primary followers, the leader last.
    let leader = ctx.leader(Duration::from_secs(30)).await?;
    let (p, s) = regions(ctx);
    let mut order = ctx.dep.region_nodes(&s);
    order.extend(ctx.dep.region_nodes(&p).into_iter().filter(|n| n.name != leader.name));
    order.push(leader);
    let planned = ctx.open(Expectation::NoDisruption { label: "rolling restart".into() });
    for n in order {
        ctx.fault(Fault::Stop { node: n.name.clone() }).await?;
        ctx.hold(Duration::from_secs(1)).await;
        ctx.fault(Fault::Start { node: n.name.clone() }).await?;
        ctx.open(Expectation::Recovery { label: format!("{} restarted", n.name) });
        ctx.step(&format!("waiting for {} to serve", n.name));
        ctx.dep.wait_all_healthy(HEALTHY_WITHIN).await?;
        ctx.hold(Duration::from_secs(1)).await;
    }
    ctx.close(planned);
    ctx.dep.wait_mode("sync", MODE_WITHIN).await
}

/// openraft times an AppendEntries out after one heartbeat interval, so
/// replication to the secondary needs a WAN round trip below `heartbeat_ms`
/// (etcd's "heartbeat ≈ RTT" is a floor here, not a target). Inside that
/// envelope the mode must stay `sync`; beyond it the leader must degrade to
/// `async` explicitly, keep acknowledging, and return to `sync` afterwards.
async fn slow_wan(ctx: &mut DrillCtx<'_>) -> anyhow::Result<()> {
    let hb = ctx.dep.heartbeat.as_millis() as u64;
    ctx.dep.wait_mode("sync", MODE_WITHIN).await?;
    // Inside the envelope: round trip about half a heartbeat.
    let (inside, jitter) = (hb / 4, hb / 20);
    ctx.fault(Fault::WanLatency { one_way_ms: inside, jitter_ms: jitter }).await?;
    let stays = ctx.open(Expectation::ModeStays { mode: "sync".into() });
    ctx.step(&format!("holding: WAN {inside}±{jitter} ms one way (inside the heartbeat)"));
    ctx.hold(ctx.pace.hold).await;
    ctx.close(stays);
    // Beyond it: round trip about twice the heartbeat.
    let (beyond, jitter) = (hb, hb / 5);
    ctx.fault(Fault::WanLatency { one_way_ms: beyond, jitter_ms: jitter }).await?;
    ctx.step("waiting for the switch to async");
    ctx.dep.wait_mode("async", MODE_WITHIN).await?;
    ctx.step(&format!("holding: WAN {beyond}±{jitter} ms one way (beyond the heartbeat)"));
    ctx.hold(ctx.pace.hold / 2).await;
    ctx.fault(Fault::WanLatency { one_way_ms: 0, jitter_ms: 0 }).await?;
    ctx.open(Expectation::Recovery { label: "WAN latency removed".into() });
    ctx.step("waiting for sync");
    ctx.dep.wait_mode("sync", MODE_WITHIN).await
}

async fn partition_then_primary_loss(ctx: &mut DrillCtx<'_>) -> anyhow::Result<()> {
    let (p, s) = regions(ctx);
    ctx.dep.wait_mode("sync", MODE_WITHIN).await?;
    ctx.fault(Fault::Partition { from: p.clone(), to: s.clone(), one_way: false }).await?;
    // Writes issued now wait for the secondary (a correct build) — lose the
    // primary before the leader gives up on it and records async.
    ctx.step("partitioned: writes wait for the secondary");
    ctx.hold(ctx.dep.async_after / 2).await;
    ctx.fault(Fault::KillRegion { region: p.clone() }).await?;
    ctx.window_from_fault(Expectation::Disruption { label: format!("region {p} lost") }, DISRUPTION_BUDGET);
    let ro = ctx.open(Expectation::ReadOnly { region: s.clone(), via_gateways: true });
    let served = ctx.open(Expectation::ServedBy { region: s.clone() });
    ctx.hold(Duration::from_secs(1)).await;
    ctx.capture("secondary while the primary is down", &s).await?;
    ctx.step(&format!("holding: {p} down, WAN cut"));
    ctx.hold(ctx.pace.hold.saturating_sub(Duration::from_secs(1))).await;
    ctx.close(served);
    ctx.close(ro);
    ctx.fault(Fault::Heal).await?;
    ctx.fault(Fault::StartRegion { region: p.clone() }).await?;
    ctx.open(Expectation::Recovery { label: format!("region {p} restarted, WAN healed") });
    ctx.step(&format!("waiting for {p} to rejoin"));
    ctx.dep.wait_all_healthy(HEALTHY_WITHIN).await?;
    ctx.dep.wait_mode("sync", MODE_WITHIN).await
}

async fn disk_full(ctx: &mut DrillCtx<'_>) -> anyhow::Result<()> {
    let node = format!("node-{DISK_FULL_NODE}");
    ctx.fault(Fault::FillDisk { node: node.clone() }).await?;
    // The node may stop serving (a storage error stops its Raft): the
    // gateways route around it.
    ctx.window_from_fault(
        Expectation::Disruption { label: format!("disk of {node} full") },
        ctx.pace.hold + DISRUPTION_BUDGET,
    );
    ctx.step(&format!("holding: disk of {node} full"));
    let held = tokio::time::Instant::now();
    // The full node must say so and leave rotation (docs/operations.md:
    // a node whose storage failed answers /health 503, control plane
    // `failed`), not keep serving from a state it can no longer update.
    ctx.dep
        .wait_health(&format!("{node} reports its storage failure (503, control plane failed)"), ctx.pace.hold, |all| {
            all.iter().any(|(n, h)| {
                n.name == node && h.as_ref().is_some_and(|(c, b)| *c == 503 && b["control_plane"] == "failed")
            })
        })
        .await?;
    ctx.hold(ctx.pace.hold.saturating_sub(held.elapsed())).await;
    ctx.fault(Fault::FreeDisk { node: node.clone() }).await?;
    // A node whose log append failed may have shut its Raft down: restart it.
    ctx.fault(Fault::Stop { node: node.clone() }).await?;
    ctx.fault(Fault::Start { node: node.clone() }).await?;
    ctx.window_from_fault(Expectation::Disruption { label: format!("{node} restarted") }, DISRUPTION_BUDGET);
    ctx.open(Expectation::Recovery { label: format!("disk of {node} freed, node restarted") });
    ctx.step(&format!("waiting for {node} to serve"));
    ctx.dep.wait_all_healthy(HEALTHY_WITHIN).await?;
    ctx.dep.wait_mode("sync", MODE_WITHIN).await
}

/// Polls the promotion plan on `node` until it has no refusal (bounded).
async fn wait_promotable(ctx: &DrillCtx<'_>, node: &Endpoint, region: &str, within: Duration) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = Value::Null;
    loop {
        let r = ctx
            .dep
            .http
            .get(format!("{}/admin/promote/plan?region={region}", node.url))
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        if let Ok(resp) = r {
            let plan: Value = resp.json().await.unwrap_or(Value::Null);
            if plan["refusals"].as_array().is_some_and(|r| r.is_empty()) {
                return Ok(plan);
            }
            last = plan;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{region} did not become promotable within {within:?}; refusals: {}", last["refusals"]);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Issue 9's whole sequence: outage → read-only → promote → writes resume
/// on the secondary → the old primary returns fenced → re-seed → majority
/// moved back.
async fn permanent_primary_loss(ctx: &mut DrillCtx<'_>) -> anyhow::Result<()> {
    let (p, s) = regions(ctx);
    let survivors = ctx.dep.region_nodes(&s);
    let lost = ctx.dep.region_nodes(&p);
    let coordinator = survivors.first().cloned().ok_or_else(|| anyhow!("no node of {s} is known (--node)"))?;
    anyhow::ensure!(!lost.is_empty(), "no node of {p} is known (--node)");
    ctx.dep.wait_mode("sync", MODE_WITHIN).await?;

    ctx.fault(Fault::KillRegion { region: p.clone() }).await?;
    ctx.window_for(Expectation::Disruption { label: format!("region {p} lost") }, DISRUPTION_BUDGET);
    let ro = ctx.open(Expectation::ReadOnly { region: s.clone(), via_gateways: true });
    let served = ctx.open(Expectation::ServedBy { region: s.clone() });
    ctx.hold(Duration::from_secs(1)).await;
    // What the secondary holds before anything is rewritten: the RPO check.
    ctx.capture("secondary before the forced promotion", &s).await?;
    ctx.step(&format!("waiting until {s} may be promoted (primary unreachable long enough)"));
    let plan = wait_promotable(ctx, &coordinator, &s, PROMOTE_MIN_OUTAGE + MODE_WITHIN).await?;
    ctx.history.mark(&format!(
        "promotion plan: source node {}, base index {}, epoch {} → {}; {}",
        plan["source"], plan["baseIndex"], plan["currentEpoch"], plan["newEpoch"], plan["rpo"]
    ));
    ctx.close(ro);
    ctx.admin(
        &coordinator,
        &format!("promote {s} (forced)"),
        "/admin/promote",
        json!({"region": s, "force": true, "confirm": true}),
        Duration::from_secs(240),
    )
    .await?;
    ctx.open(Expectation::Recovery { label: format!("{s} promoted") });
    ctx.step(&format!("holding: {s} promoted, {p} gone"));
    ctx.hold(ctx.pace.hold).await;

    // The old primary comes back with its stale state: fenced at once.
    let fenced = ctx.open(Expectation::Fenced { region: p.clone() });
    ctx.fault(Fault::StartRegion { region: p.clone() }).await?;
    ctx.step(&format!("waiting for {p} to report itself fenced"));
    let names: Vec<String> = lost.iter().map(|n| n.name.clone()).collect();
    ctx.dep
        .wait_health(&format!("every node of {p} fenced"), HEALTHY_WITHIN, |all| {
            all.iter()
                .filter(|(n, _)| names.contains(&n.name))
                .all(|(_, h)| h.as_ref().is_some_and(|(_, b)| b["fenced"] == true))
        })
        .await?;
    ctx.hold(Duration::from_secs(3)).await;
    ctx.close(fenced);
    // Until the re-seeded nodes serve again, attestation stays in the secondary.
    ctx.close(served);

    // Re-seed the old primary node by node, then move the majority back.
    for n in &lost {
        ctx.admin(
            n,
            &format!("reseed {}", n.name),
            "/admin/reseed",
            json!({"confirm": true}),
            Duration::from_secs(240),
        )
        .await?;
    }
    ctx.step(&format!("waiting for the re-seeded {p} nodes to serve"));
    ctx.dep.wait_all_healthy(HEALTHY_WITHIN).await?;
    ctx.admin(
        &coordinator,
        &format!("rebalance: majority back to {p}"),
        "/admin/rebalance",
        json!({"primary": p}),
        Duration::from_secs(240),
    )
    .await?;
    ctx.open(Expectation::Recovery { label: format!("majority moved back to {p}") });
    ctx.step(&format!("waiting for a leader in {p} in sync mode"));
    let want = p.clone();
    let lost_names = names.clone();
    ctx.dep
        .wait_health(&format!("a writable leader in {want} in sync mode"), MODE_WITHIN, |all| {
            all.iter().any(|(n, h)| {
                lost_names.contains(&n.name)
                    && h.as_ref().is_some_and(|(_, b)| {
                        b["raft_role"] == "Leader"
                            && b["control_plane"] == "writable"
                            && b["replication_mode"] == "sync"
                    })
            })
        })
        .await?;
    ctx.dep.wait_all_healthy(HEALTHY_WITHIN).await?;

    // Every step is in the replicated audit log.
    let r =
        ctx.dep.http.get(format!("{}/admin/audit", coordinator.url)).timeout(Duration::from_secs(10)).send().await?;
    let audit: Value = r.json().await.unwrap_or(Value::Null);
    let actions: Vec<String> = audit["value"]
        .as_array()
        .map(|v| v.iter().filter_map(|r| r["action"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    ctx.history.mark(&format!("audit log: {}", actions.join(", ")));
    let count = |a: &str| actions.iter().filter(|x| *x == a).count();
    anyhow::ensure!(
        count("promote") == 1 && count("rebalance") == 1 && count("reseed") == lost.len(),
        "the audit log lacks a step (want promote, {} reseed, rebalance): {actions:?}",
        lost.len()
    );
    anyhow::ensure!(
        count("fenced-node") + count("divergent-writes") == lost.len(),
        "the audit log lacks the fencing of {} node(s): {actions:?}",
        lost.len()
    );
    Ok(())
}
