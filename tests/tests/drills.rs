//! Every failover drill in its short form (what `attest-chaos drill
//! <scenario> --short` runs), each against a fresh local 3 + 2 cluster with
//! WAN links and a gateway per region; a test fails when any check of its
//! report fails. The last test runs a deliberately broken build (the
//! test-only `raft.unsafe_ack_before_secondary` switch) and shows that the
//! RPO check then fails: the checks can fail.
//!
//! Timing is judged only by the drills' own generous budgets (seconds, not
//! milliseconds); every wait is bounded.

use attest_chaos::checker::verdicts::Status;
use attest_chaos::drill::{self, Deployment, DrillOptions, Scenario};
use attest_tests::{tempdir, vectors};

/// A drill's outcome and, when it failed, the warnings its gateways logged
/// (the report says what failed; these lines say why, and the scratch
/// directory with the full logs is gone when a CI log is read).
async fn run(
    scenario: Scenario,
    tweak: impl FnOnce(&mut attest_chaos::cluster::ClusterSpec),
) -> (drill::DrillOutcome, String) {
    let dir = tempdir::Dir::new(scenario.name()).expect("scratch directory");
    let dep = Deployment::local(dir.path(), |spec| {
        drill::scenarios::local_spec(scenario, spec);
        tweak(spec);
    })
    .await
    .expect("local cluster starts");
    let opts =
        DrillOptions { short: true, out_dir: dir.path().join("report"), vectors: vectors(), progress: false, seed: 7 };
    let outcome = drill::run(scenario, dep, &opts).await.expect("the drill runs to its report");
    // The report outlives the scratch directory when asked to (post-mortems).
    if let Some(keep) = std::env::var_os("ATTEST_DRILL_REPORTS") {
        let to = std::path::PathBuf::from(keep).join(scenario.name());
        let _ = std::fs::create_dir_all(&to);
        for f in ["report.md", "report.json", "timeline.svg", "history.jsonl"] {
            let _ = std::fs::copy(opts.out_dir.join(f), to.join(f));
        }
    }
    let warnings = match outcome.report.verdict {
        Status::Pass => String::new(),
        _ => gateway_warnings(dir.path()),
    };
    (outcome, warnings)
}

/// The last warning and error lines of every gateway's log (the local
/// deployment keeps them in `<dir>/cluster/gateway-<region>/gateway.log`).
fn gateway_warnings(dir: &std::path::Path) -> String {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("cluster"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("gateway-"))
        .map(|e| e.path().join("gateway.log"))
        .collect();
    files.sort();
    let mut out = String::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
        out.push_str(&format!("--- {} (last warnings)\n", f.display()));
        for l in &lines[lines.len().saturating_sub(20)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

async fn drill_passes(scenario: Scenario) {
    let (outcome, warnings) = run(scenario, |_| {}).await;
    let r = &outcome.report;
    let failed: Vec<String> = r.failed_checks().iter().map(|c| format!("{}: {}", c.id, c.summary)).collect();
    assert_eq!(
        r.verdict,
        Status::Pass,
        "drill {scenario} failed:\n{}\n\n{}\n\n{warnings}",
        failed.join("\n"),
        r.markdown()
    );
    // Every drill exercised the data and the control plane.
    assert!(r.operations.attest.ok > 0 && r.operations.writes.ok > 0, "{:?}", r.operations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_outage() {
    drill_passes(Scenario::PrimaryOutage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_failover() {
    drill_passes(Scenario::PlannedFailover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_outage() {
    drill_passes(Scenario::SecondaryOutage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_partition() {
    drill_passes(Scenario::WanPartition).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_loop() {
    drill_passes(Scenario::LeaderKillLoop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart() {
    drill_passes(Scenario::RollingRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_wan() {
    drill_passes(Scenario::SlowWan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_then_primary_loss() {
    drill_passes(Scenario::PartitionThenPrimaryLoss).await;
}

/// Mounts a tmpfs for one node's data directory: needs root (CI runs as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full() {
    drill_passes(Scenario::DiskFull).await;
}

/// Issue 9's whole disaster-recovery sequence (forced promotion, fenced
/// return of the old primary, re-seed, rebalance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_primary_loss() {
    drill_passes(Scenario::PermanentPrimaryLoss).await;
}

/// The broken build: sync-mode writes acknowledged before the secondary
/// has them. The same scenario that passes above must now fail its RPO
/// check, naming the acknowledged writes the secondary does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_build_fails_the_rpo_check() {
    let (outcome, _) = run(Scenario::PartitionThenPrimaryLoss, |spec| {
        spec.raft_toml.push_str("unsafe_ack_before_secondary = true\n");
        spec.node_env.insert("ATTESTD_ALLOW_UNSAFE_TEST_SWITCHES".into(), "1".into());
    })
    .await;
    let r = &outcome.report;
    let rpo = r.checks.iter().find(|c| c.id == "rpo").expect("an rpo check");
    assert_eq!(rpo.status, Status::Fail, "the RPO check passed on a broken build:\n{}", r.markdown());
    let lost = rpo.details["lost_write_ids"].as_array().map_or(0, Vec::len);
    assert!(lost > 0, "{}", rpo.summary);
    assert_eq!(r.verdict, Status::Fail);
    assert!(r.rpo.as_ref().is_some_and(|f| f.sync_acknowledged_writes_lost == lost));
    eprintln!("broken build caught: {}", rpo.summary);
}
