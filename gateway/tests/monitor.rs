//! The monitor state machine and routing rules, driven by an injected clock:
//! no sockets, no sleeping, fully deterministic.

use std::sync::Arc;
use std::time::Duration;

use attest_gateway::config::Config;
use attest_gateway::monitor::{
    Clock, ManualClock, MonitorStatus, NodeMonitor, ProbeFailure, ProbeOutcome, ProbeResult, Thresholds,
};
use attest_gateway::routing::{EventKind, Router};

const S: fn(u64) -> Duration = Duration::from_secs;

fn timeout_at(clock: &ManualClock, started: Duration, timeout: Duration) -> ProbeResult {
    ProbeResult {
        outcome: ProbeOutcome::Failure(ProbeFailure::Timeout),
        started: clock.start() + started,
        latency: timeout,
    }
}

fn success_at(clock: &ManualClock, started: Duration) -> ProbeResult {
    ProbeResult {
        outcome: ProbeOutcome::Success { status: Some(200) },
        started: clock.start() + started,
        latency: Duration::from_millis(5),
    }
}

/// Traffic Manager's documented timeline: HTTP probe every 30 s, 10 s
/// timeout, 3 tolerated failures. The endpoint stops answering at t = 0; the
/// probe sent at 0 s times out at 10 s, then "three more times, at 30-second
/// intervals" (30, 60, 90 s); after the fourth consecutive failure (at 100 s)
/// it is Degraded.
#[test]
fn traffic_manager_documented_timeline() {
    let clock = ManualClock::new();
    let (interval, timeout) = (S(30), S(10));
    let mut m = NodeMonitor::new(true, Thresholds { tolerated_failures: 3, failback_successes: 1 }, clock.now());
    // Healthy before the outage: the probe at t = -30 s (shifted to +0 here).
    assert_eq!(m.status(), MonitorStatus::CheckingEndpoint);
    let _ = m.record(success_at(&clock, S(0)), clock.now());
    assert_eq!(m.status(), MonitorStatus::Online);

    // Outage begins at T = 30 s; probes go out at T, T+30, T+60, T+90.
    let outage = S(30);
    let mut degraded_at = None;
    for k in 0..4u32 {
        let sent = outage + interval * k;
        clock.set(sent + timeout);
        let tr = m.record(timeout_at(&clock, sent, timeout), clock.now());
        if k < 3 {
            assert!(tr.is_none(), "probe {k}: still within the tolerated failures");
            assert_eq!(m.status(), MonitorStatus::Online);
            assert_eq!(m.consecutive_failures(), k + 1);
        } else {
            let tr = tr.expect("the fourth consecutive failure degrades the endpoint");
            assert_eq!((tr.from, tr.to), (MonitorStatus::Online, MonitorStatus::Degraded));
            degraded_at = Some(tr.at - clock.start());
        }
    }
    // 3 × 30 s + 10 s after the outage began.
    assert_eq!(degraded_at, Some(outage + S(100)));
    assert_eq!(m.since() - clock.start(), outage + S(100));

    // Still probed while Degraded; one success brings it back (failback).
    let sent = outage + interval * 4;
    clock.set(sent);
    assert!(m.record(timeout_at(&clock, sent, timeout), clock.now()).is_none());
    let sent = outage + interval * 5;
    clock.set(sent);
    let tr = m.record(success_at(&clock, sent), clock.now()).expect("failback");
    assert_eq!(tr.to, MonitorStatus::Online);
}

/// TM's detection window: between `tolerated × interval + timeout` and
/// `(tolerated + 1) × interval + timeout` after the outage, wherever in the
/// probe cycle the outage falls, for every allowed tolerated count.
#[test]
fn detection_window_matches_traffic_manager() {
    for tolerated in 0..=9u8 {
        for phase in [0u64, 1, 15, 29] {
            let (interval, timeout) = (S(30), S(10));
            let clock = ManualClock::new();
            let mut m = NodeMonitor::new(
                true,
                Thresholds { tolerated_failures: tolerated, failback_successes: 1 },
                clock.now(),
            );
            let _ = m.record(success_at(&clock, S(0)), clock.now());
            // Probes at 30 k; the outage starts `phase` seconds before probe #2.
            let outage = S(60) - S(phase);
            let mut k = 2u32;
            let degraded = loop {
                let sent = interval * k;
                clock.set(sent + timeout);
                if let Some(tr) = m.record(timeout_at(&clock, sent, timeout), clock.now()) {
                    break tr.at - clock.start();
                }
                k += 1;
                assert!(k < 100, "never degraded");
            };
            let took = degraded - outage;
            let lo = interval * u32::from(tolerated) + timeout;
            let hi = interval * (u32::from(tolerated) + 1) + timeout;
            assert!(lo <= took && took <= hi, "tolerated {tolerated}, phase {phase}: {took:?} not in [{lo:?}, {hi:?}]");
        }
    }
}

#[test]
fn failback_hysteresis_needs_n_successes() {
    let clock = ManualClock::new();
    let mut m = NodeMonitor::new(true, Thresholds { tolerated_failures: 0, failback_successes: 3 }, clock.now());
    let _ = m.record(success_at(&clock, S(0)), clock.now());
    let _ = m.record(timeout_at(&clock, S(1), S(1)), clock.now());
    assert_eq!(m.status(), MonitorStatus::Degraded);
    // Two successes, a failure (resets the streak), then three successes.
    assert!(m.record(success_at(&clock, S(2)), clock.now()).is_none());
    assert!(m.record(success_at(&clock, S(3)), clock.now()).is_none());
    assert!(m.record(timeout_at(&clock, S(4), S(1)), clock.now()).is_none());
    assert!(m.record(success_at(&clock, S(5)), clock.now()).is_none());
    assert!(m.record(success_at(&clock, S(6)), clock.now()).is_none());
    assert_eq!(m.status(), MonitorStatus::Degraded);
    let tr = m.record(success_at(&clock, S(7)), clock.now());
    assert_eq!(tr.map(|t| t.to), Some(MonitorStatus::Online));
}

#[test]
fn expected_status_ranges() {
    let cfg = Config::parse(
        r#"
        [profile]
        name = "p"
        [monitor]
        protocol = "HTTP"
        expected_status_codes = "200-299, 301-301"
        [[endpoints]]
        name = "a"
        nodes = ["127.0.0.1:1"]
    "#,
    )
    .expect("valid");
    let m = &cfg.monitor;
    assert!(m.status_expected(200) && m.status_expected(204) && m.status_expected(299));
    assert!(m.status_expected(301));
    assert!(!m.status_expected(302), "30x fails unless listed: TM follows no redirects");
    assert!(!m.status_expected(503));

    let default =
        Config::parse("[profile]\nname='p'\n[[endpoints]]\nname='a'\nnodes=['127.0.0.1:1']\n").expect("valid");
    assert!(default.monitor.status_expected(200));
    assert!(!default.monitor.status_expected(204), "default is 200 only");

    let too_many = Config::parse(
        r#"
        [profile]
        name = "p"
        [monitor]
        expected_status_codes = ["200","201","202","203","204","205","206","207","208"]
        [[endpoints]]
        name = "a"
        nodes = ["127.0.0.1:1"]
    "#,
    );
    assert!(too_many.is_err(), "at most 8 ranges");
}

// ---------------------------------------------------------------- routing

fn two_regions(extra_monitor: &str) -> Config {
    Config::parse(&format!(
        r#"
        [profile]
        name = "attestd"
        [monitor]
        protocol = "HTTP"
        interval = "30s"
        timeout = "10s"
        tolerated_failures = 0
        {extra_monitor}
        [[endpoints]]
        name = "primary"
        priority = 1
        nodes = ["10.0.0.1:80", "10.0.0.2:80"]
        [[endpoints]]
        name = "secondary"
        priority = 2
        nodes = ["10.0.1.1:80"]
        [[endpoints]]
        name = "off"
        priority = 3
        enabled = false
        nodes = ["10.0.2.1:80"]
    "#
    ))
    .expect("valid config")
}

fn probe(router: &Router, region: &str, addr: &str, ok: bool) {
    let topo = router.topology();
    let node = topo
        .regions
        .iter()
        .find(|r| &*r.name == region)
        .and_then(|r| r.nodes.iter().find(|n| &*n.address == addr))
        .expect("node exists")
        .clone();
    let now = router.clock().now();
    router.on_probe(
        &node,
        ProbeResult {
            outcome: if ok {
                ProbeOutcome::Success { status: Some(200) }
            } else {
                ProbeOutcome::Failure(ProbeFailure::UnexpectedStatus(503))
            },
            started: now,
            latency: Duration::from_millis(1),
        },
    );
}

fn plan_regions(router: &Router) -> Vec<String> {
    router.plan().candidates.iter().map(|c| c.node.region.to_string()).collect()
}

#[test]
fn priority_routing_failover_all_degraded_and_failback() {
    let clock = Arc::new(ManualClock::new());
    let router = Router::new(Arc::new(two_regions("")), clock.clone());
    let statuses = |r: &Router| r.topology().region_statuses();

    // Before any probe: CheckingEndpoint is routable; disabled region is Disabled.
    use MonitorStatus::*;
    assert_eq!(statuses(&router), vec![CheckingEndpoint, CheckingEndpoint, Disabled]);
    assert_eq!(router.active_region().as_deref(), Some("primary"));

    for (r, a) in [("primary", "10.0.0.1:80"), ("primary", "10.0.0.2:80"), ("secondary", "10.0.1.1:80")] {
        probe(&router, r, a, true);
    }
    assert_eq!(statuses(&router), vec![Online, Online, Disabled]);
    assert_eq!(plan_regions(&router), vec!["primary", "primary", "secondary"]);

    // One primary node down: the region stays Online with its other node.
    clock.advance(S(30));
    probe(&router, "primary", "10.0.0.1:80", false);
    assert_eq!(statuses(&router)[0], Online);
    assert_eq!(plan_regions(&router), vec!["primary", "secondary"]);

    // Both down: failover to secondary.
    probe(&router, "primary", "10.0.0.2:80", false);
    assert_eq!(statuses(&router)[0], Degraded);
    assert_eq!(router.active_region().as_deref(), Some("secondary"));
    assert_eq!(plan_regions(&router), vec!["secondary"]);

    // Everything Degraded: route as if all were Online, in priority order,
    // but never to the Disabled region.
    probe(&router, "secondary", "10.0.1.1:80", false);
    assert_eq!(statuses(&router), vec![Degraded, Degraded, Disabled]);
    assert_eq!(plan_regions(&router), vec!["primary", "primary", "secondary"]);
    assert_eq!(router.active_region().as_deref(), Some("primary"));

    // Secondary recovers: it alone is routable.
    probe(&router, "secondary", "10.0.1.1:80", true);
    assert_eq!(plan_regions(&router), vec!["secondary"]);

    // Primary recovers: failback.
    probe(&router, "primary", "10.0.0.2:80", true);
    assert_eq!(router.active_region().as_deref(), Some("primary"));
    assert_eq!(plan_regions(&router), vec!["primary", "secondary"]);

    let failovers: Vec<(Option<String>, Option<String>)> =
        router.history().into_iter().filter(|e| e.kind == EventKind::Failover).map(|e| (e.from, e.to)).collect();
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        failovers,
        vec![
            (None, s("primary")),
            (s("primary"), s("secondary")),
            (s("secondary"), s("primary")),
            (s("primary"), s("secondary")),
            (s("secondary"), s("primary")),
        ]
    );
}

#[test]
fn region_failback_respects_hysteresis() {
    let clock = Arc::new(ManualClock::new());
    let router = Router::new(Arc::new(two_regions("failback_successes = 2")), clock.clone());
    for (r, a) in [("primary", "10.0.0.1:80"), ("primary", "10.0.0.2:80"), ("secondary", "10.0.1.1:80")] {
        probe(&router, r, a, true);
    }
    probe(&router, "primary", "10.0.0.1:80", false);
    probe(&router, "primary", "10.0.0.2:80", false);
    assert_eq!(router.active_region().as_deref(), Some("secondary"));
    clock.advance(S(30));
    probe(&router, "primary", "10.0.0.1:80", true);
    assert_eq!(router.active_region().as_deref(), Some("secondary"), "one success is not enough");
    clock.advance(S(30));
    probe(&router, "primary", "10.0.0.1:80", true);
    assert_eq!(router.active_region().as_deref(), Some("primary"));
}

#[test]
fn passive_ejection_moves_traffic_at_once_with_backoff() {
    let clock = Arc::new(ManualClock::new());
    let router = Router::new(Arc::new(two_regions("")), clock.clone());
    for (r, a) in [("primary", "10.0.0.1:80"), ("primary", "10.0.0.2:80"), ("secondary", "10.0.1.1:80")] {
        probe(&router, r, a, true);
    }
    let topo = router.topology();
    let p1 = topo.regions[0].nodes[0].clone();
    let p2 = topo.regions[0].nodes[1].clone();
    router.report_failure(&p1, "connection refused");
    router.report_failure(&p2, "connection refused");
    // Monitor still says Online, but requests go to the secondary first; the
    // ejected nodes stay at the end of the plan as a last resort.
    assert_eq!(topo.region_statuses()[0], MonitorStatus::Online);
    assert_eq!(router.active_region().as_deref(), Some("secondary"));
    assert_eq!(plan_regions(&router), vec!["secondary", "primary", "primary"]);

    // Back-off: 1 s, then 2 s for a repeat offender.
    clock.advance(Duration::from_millis(1001));
    assert!(!p1.is_ejected(clock.now()));
    router.report_failure(&p1, "reset");
    clock.advance(Duration::from_millis(1500));
    assert!(p1.is_ejected(clock.now()), "second ejection lasts 2 s");
    clock.advance(Duration::from_millis(600));
    assert!(!p1.is_ejected(clock.now()));
}
