//! Runtime routing state: regions, nodes, priority order, balancing, passive
//! outlier ejection, failover tracking and the event history.
//!
//! Design:
//! * The topology is an immutable snapshot (`Arc<Topology>`) swapped whole on
//!   reload; in-flight requests keep the snapshot they started with, so a
//!   reload never disturbs them. Per-node mutable state (`NodeState`) lives in
//!   `Arc`s that survive a reload when the node is still configured, so
//!   monitor statuses are not reset by an unrelated config change.
//! * A request gets a *plan*: every node it may try, in order. The first
//!   routable region (priority order; TM's all-Degraded rule applied) comes
//!   first, its nodes balanced round-robin or least-outstanding; then the next
//!   routable regions; finally, as a last resort, nodes that passive
//!   detection ejected. Retries simply walk the plan, so "retry on the next
//!   node or region" needs no further logic.
//! * Passive detection ejects a node for `base × 2^(n-1)` (capped) after
//!   connection failures, timeouts or 5xx, and asks its prober to probe now.
//!   Ejection is cleared when the monitor brings the node back Online.
//! * The *active region* is the region a fresh request would go to first;
//!   each change of it is a failover (or failback) event.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::Notify;

use crate::config::{Balance, Config, Endpoint};
use crate::monitor::{region_status, routable, Clock, MonitorStatus, NodeMonitor, ProbeResult, Thresholds, Transition};

/// Longest history kept for the status page.
const HISTORY_LEN: usize = 500;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind;
    // keep serving rather than poisoning the whole gateway.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Passive-detection state of one node.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ejection {
    pub until: Option<Instant>,
    pub count: u32,
}

/// Everything the gateway knows about one node.
#[derive(Debug)]
pub struct NodeState {
    pub region: Arc<str>,
    pub address: Arc<str>,
    pub monitor: Mutex<NodeMonitor>,
    pub ejection: Mutex<Ejection>,
    /// Requests sent and not yet answered (for least-outstanding balancing).
    pub outstanding: AtomicUsize,
    /// Last `/health` JSON body, shown on the status page.
    pub health: Mutex<Option<serde_json::Value>>,
    /// Wakes the prober early (after a passive failure).
    pub probe_now: Notify,
}

impl NodeState {
    pub fn status(&self) -> MonitorStatus {
        lock(&self.monitor).status()
    }
    pub fn is_ejected(&self, now: Instant) -> bool {
        lock(&self.ejection).until.is_some_and(|u| u > now)
    }
}

/// One region (a TM endpoint whose nested endpoints are nodes).
#[derive(Debug)]
pub struct RegionState {
    pub cfg: Endpoint,
    pub name: Arc<str>,
    pub nodes: Vec<Arc<NodeState>>,
    rr: AtomicUsize,
}

/// An immutable routing snapshot.
#[derive(Debug)]
pub struct Topology {
    pub cfg: Arc<Config>,
    /// Sorted by priority.
    pub regions: Vec<RegionState>,
}

impl Topology {
    pub fn region_statuses(&self) -> Vec<MonitorStatus> {
        self.regions
            .iter()
            .map(|r| {
                let nodes: Vec<_> = r.nodes.iter().map(|n| n.status()).collect();
                region_status(self.cfg.profile.enabled, r.cfg.enabled, &nodes)
            })
            .collect()
    }
}

/// One node a request may be sent to.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node: Arc<NodeState>,
}

/// The ordered list of nodes a request may try.
#[derive(Debug)]
pub struct Plan {
    pub candidates: Vec<Candidate>,
}

/// Kinds of history entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    NodeStatus,
    RegionStatus,
    Failover,
    Ejection,
    Reload,
}

/// One entry of the failover/status history.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub kind: EventKind,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u128,
    pub subject: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub detail: String,
}

/// Shared routing state of one gateway.
pub struct Router {
    topo: RwLock<Arc<Topology>>,
    clock: Arc<dyn Clock>,
    anchor: (Instant, SystemTime),
    history: Mutex<VecDeque<Event>>,
    active: Mutex<Option<Arc<str>>>,
    region_status: Mutex<Vec<(Arc<str>, MonitorStatus)>>,
}

fn thresholds(cfg: &Config) -> Thresholds {
    Thresholds {
        tolerated_failures: cfg.monitor.tolerated_failures,
        failback_successes: cfg.monitor.failback_successes,
    }
}

impl Router {
    pub fn new(cfg: Arc<Config>, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        let topo = Arc::new(build_topology(cfg, None, now));
        let r = Self {
            topo: RwLock::new(topo),
            anchor: (now, SystemTime::now()),
            clock,
            history: Mutex::new(VecDeque::new()),
            active: Mutex::new(None),
            region_status: Mutex::new(Vec::new()),
        };
        r.reevaluate();
        r
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn topology(&self) -> Arc<Topology> {
        self.topo.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Swaps in a new config, keeping the state of nodes that remain.
    pub fn reload(&self, cfg: Arc<Config>) {
        let now = self.clock.now();
        let old = self.topology();
        let topo = Arc::new(build_topology(cfg, Some(&old), now));
        *self.topo.write().unwrap_or_else(|p| p.into_inner()) = topo;
        self.push(EventKind::Reload, "profile".into(), None, None, "config reloaded".into());
        self.reevaluate();
    }

    /// Wall-clock time of a monotonic instant.
    pub fn unix_ms(&self, at: Instant) -> u128 {
        let (i0, s0) = self.anchor;
        let sys = if at >= i0 { s0 + (at - i0) } else { s0.checked_sub(i0 - at).unwrap_or(s0) };
        sys.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
    }

    fn push(&self, kind: EventKind, subject: String, from: Option<String>, to: Option<String>, detail: String) {
        let ev = Event { kind, at_unix_ms: self.unix_ms(self.clock.now()), subject, from, to, detail };
        tracing::info!(kind = ?ev.kind, subject = %ev.subject, from = ?ev.from, to = ?ev.to, detail = %ev.detail, "gateway event");
        let mut h = lock(&self.history);
        if h.len() >= HISTORY_LEN {
            h.pop_front();
        }
        h.push_back(ev);
    }

    pub fn history(&self) -> Vec<Event> {
        lock(&self.history).iter().cloned().collect()
    }

    pub fn active_region(&self) -> Option<Arc<str>> {
        lock(&self.active).clone()
    }

    /// Records a probe result and reacts to any status change.
    pub fn on_probe(&self, node: &NodeState, result: ProbeResult) {
        let now = self.clock.now();
        let ok = result.outcome.is_success();
        let labels = [("region", node.region.to_string()), ("node", node.address.to_string())];
        metrics::counter!(
            "gateway_probe_total",
            &[
                ("region", node.region.to_string()),
                ("node", node.address.to_string()),
                ("result", if ok { "success" } else { "failure" }.to_string()),
            ]
        )
        .increment(1);
        metrics::histogram!("gateway_probe_latency_seconds", &labels).record(result.latency.as_secs_f64());
        let detail = format!("{:?}", result.outcome);
        let tr = lock(&node.monitor).record(result, now);
        if let Some(tr) = tr {
            self.on_node_transition(node, &tr, &detail);
        }
        self.reevaluate();
    }

    fn on_node_transition(&self, node: &NodeState, tr: &Transition, detail: &str) {
        metrics::counter!(
            "gateway_status_transitions_total",
            &[
                ("scope", "node".to_string()),
                ("region", node.region.to_string()),
                ("node", node.address.to_string()),
                ("to", tr.to.as_str().to_string()),
            ]
        )
        .increment(1);
        metrics::gauge!(
            "gateway_node_online",
            &[("region", node.region.to_string()), ("node", node.address.to_string()),]
        )
        .set(if tr.to == MonitorStatus::Online { 1.0 } else { 0.0 });
        if tr.to == MonitorStatus::Online {
            // The monitor vouches for it again: forget passive ejections.
            *lock(&node.ejection) = Ejection::default();
        }
        self.push(
            EventKind::NodeStatus,
            format!("{}/{}", node.region, node.address),
            Some(tr.from.as_str().into()),
            Some(tr.to.as_str().into()),
            detail.into(),
        );
    }

    /// Passive signal: the node failed a real request.
    pub fn report_failure(&self, node: &NodeState, why: &str) {
        let cfg = self.topology().cfg.clone();
        if !cfg.passive.enabled {
            return;
        }
        let now = self.clock.now();
        let newly = {
            let mut e = lock(&node.ejection);
            if e.until.is_some_and(|u| u > now) {
                // Already ejected (concurrent failures): do not compound.
                None
            } else {
                e.count = e.count.saturating_add(1);
                let factor = 1u32 << (e.count - 1).min(16);
                let d = cfg.passive.base_ejection.saturating_mul(factor).min(cfg.passive.max_ejection);
                e.until = Some(now + d);
                Some(d)
            }
        };
        if let Some(d) = newly {
            metrics::counter!(
                "gateway_ejections_total",
                &[("region", node.region.to_string()), ("node", node.address.to_string()),]
            )
            .increment(1);
            self.push(
                EventKind::Ejection,
                format!("{}/{}", node.region, node.address),
                None,
                None,
                format!("ejected for {} ms: {why}", d.as_millis()),
            );
            node.probe_now.notify_one();
            self.reevaluate();
        }
    }

    /// Passive signal: the node answered a real request.
    pub fn report_success(&self, node: &NodeState) {
        let now = self.clock.now();
        let mut e = lock(&node.ejection);
        if e.count > 0 && e.until.is_none_or(|u| u <= now) {
            *e = Ejection::default();
        }
    }

    /// Recomputes region statuses and the active region, recording changes.
    pub fn reevaluate(&self) {
        let topo = self.topology();
        let now = self.clock.now();
        let statuses = topo.region_statuses();
        {
            let mut prev = lock(&self.region_status);
            for (r, s) in topo.regions.iter().zip(&statuses) {
                let old = prev.iter().find(|(n, _)| *n == r.name).map(|(_, s)| *s);
                if old != Some(*s) {
                    metrics::counter!(
                        "gateway_status_transitions_total",
                        &[
                            ("scope", "region".to_string()),
                            ("region", r.name.to_string()),
                            ("node", String::new()),
                            ("to", s.as_str().to_string()),
                        ]
                    )
                    .increment(1);
                    self.push(
                        EventKind::RegionStatus,
                        r.name.to_string(),
                        old.map(|o| o.as_str().into()),
                        Some(s.as_str().into()),
                        String::new(),
                    );
                }
            }
            *prev = topo.regions.iter().map(|r| r.name.clone()).zip(statuses.iter().copied()).collect();
        }
        let first = first_region(&topo, &statuses, now);
        let mut active = lock(&self.active);
        if *active != first {
            let from = active.as_ref().map(|s| s.to_string());
            let to = first.as_ref().map(|s| s.to_string());
            metrics::counter!(
                "gateway_failovers_total",
                &[("from", from.clone().unwrap_or_default()), ("to", to.clone().unwrap_or_default()),]
            )
            .increment(1);
            let detail = match (&from, &to) {
                (None, Some(_)) => "initial region",
                (Some(_), None) => "no routable region",
                _ => "active region changed",
            };
            *active = first;
            drop(active);
            self.push(EventKind::Failover, "profile".into(), from, to, detail.into());
        }
    }

    /// The nodes a new request may try, in order.
    pub fn plan(&self) -> Plan {
        let topo = self.topology();
        let now = self.clock.now();
        let statuses = topo.region_statuses();
        let mut out = Vec::new();
        let mut last_resort = Vec::new();
        for ri in routable(&statuses) {
            let region = &topo.regions[ri];
            let node_status: Vec<_> = region.nodes.iter().map(|n| n.status()).collect();
            let mut nodes: Vec<&Arc<NodeState>> =
                routable(&node_status).into_iter().map(|i| &region.nodes[i]).collect();
            if nodes.is_empty() {
                continue;
            }
            // Rotate for round-robin (also breaks ties for least-requests).
            let start = region.rr.fetch_add(1, Ordering::Relaxed) % nodes.len();
            nodes.rotate_left(start);
            if region.cfg.balance == Balance::LeastRequests {
                nodes.sort_by_key(|n| n.outstanding.load(Ordering::Relaxed));
            }
            for n in nodes {
                let c = Candidate { node: n.clone() };
                if n.is_ejected(now) {
                    last_resort.push(c);
                } else {
                    out.push(c);
                }
            }
        }
        out.extend(last_resort);
        Plan { candidates: out }
    }
}

/// The first region a request would reach: routable and with a node that is
/// not ejected (if every routable node is ejected, the first routable region).
fn first_region(topo: &Topology, statuses: &[MonitorStatus], now: Instant) -> Option<Arc<str>> {
    let order = routable(statuses);
    let live = order.iter().find(|&&ri| {
        let r = &topo.regions[ri];
        let ns: Vec<_> = r.nodes.iter().map(|n| n.status()).collect();
        routable(&ns).into_iter().any(|i| !r.nodes[i].is_ejected(now))
    });
    live.or(order.first()).map(|&ri| topo.regions[ri].name.clone())
}

fn build_topology(cfg: Arc<Config>, old: Option<&Topology>, now: Instant) -> Topology {
    let th = thresholds(&cfg);
    let regions = cfg
        .endpoints
        .iter()
        .map(|ep| {
            let name: Arc<str> = Arc::from(ep.name.as_str());
            let nodes = ep
                .nodes
                .iter()
                .map(|n| {
                    let existing = old.and_then(|t| {
                        t.regions
                            .iter()
                            .find(|r| r.cfg.name == ep.name)
                            .and_then(|r| r.nodes.iter().find(|x| *x.address == *n.address))
                    });
                    match existing {
                        Some(node) => {
                            {
                                let mut m = lock(&node.monitor);
                                m.set_thresholds(th);
                                let cur = m.status();
                                if !n.enabled && cur != MonitorStatus::Disabled {
                                    m.set_admin_status(MonitorStatus::Disabled, now);
                                } else if n.enabled && cur == MonitorStatus::Disabled {
                                    m.set_admin_status(MonitorStatus::CheckingEndpoint, now);
                                }
                            }
                            node.clone()
                        }
                        None => Arc::new(NodeState {
                            region: name.clone(),
                            address: Arc::from(n.address.as_str()),
                            monitor: Mutex::new(NodeMonitor::new(n.enabled, th, now)),
                            ejection: Mutex::new(Ejection::default()),
                            outstanding: AtomicUsize::new(0),
                            health: Mutex::new(None),
                            probe_now: Notify::new(),
                        }),
                    }
                })
                .collect();
            RegionState { cfg: ep.clone(), name, nodes, rr: AtomicUsize::new(0) }
        })
        .collect();
    Topology { cfg, regions }
}

/// How long until `d` after `since`, saturating at zero.
pub fn remaining(since: Instant, d: Duration, now: Instant) -> Duration {
    (since + d).saturating_duration_since(now)
}
