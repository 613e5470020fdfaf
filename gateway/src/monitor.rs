//! Traffic Manager's endpoint monitoring model as a pure state machine.
//!
//! Nothing here performs I/O or reads the time: every method takes `now`
//! from a [`Clock`], so tests can replay TM's documented timeline (30 s
//! interval, 10 s timeout, 3 tolerated failures → Degraded when the fourth
//! consecutive probe fails) deterministically. The probing itself lives in
//! `probe.rs`, which feeds [`ProbeResult`]s into [`NodeMonitor::record`].
//!
//! Rules (see `shared/research/bcdr.md` §1):
//! * A node starts `CheckingEndpoint` (routable, as TM still answers with it).
//! * Consecutive failures *exceeding* `tolerated_failures` → `Degraded`.
//!   The rule is the same whether the node is `CheckingEndpoint` or `Online`,
//!   so a node that never answers goes Degraded after the same number of
//!   probes as one that dies later.
//! * A Degraded node keeps being probed; `failback_successes` consecutive
//!   successes (TM: one) bring it back `Online`.
//! * Disabled / Stopped / Inactive nodes are not monitored; results are ignored.
//! * A region (TM endpoint with nested endpoints) is Online while at least one
//!   of its nodes is; see [`region_status`].
//! * If every eligible entry is Degraded, route as if all were Online
//!   ([`routable`]); TM's "best effort" rule, applied at both levels.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Source of "now", injected so the state machine can be tested without sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    pub fn new() -> Self {
        Self { base: Instant::now(), offset: Mutex::new(Duration::ZERO) }
    }
    /// The instant this clock calls `t = 0`.
    pub fn start(&self) -> Instant {
        self.base
    }
    /// Moves the clock to `t` after its start (never backwards).
    pub fn set(&self, t: Duration) {
        let mut o = self.offset.lock().unwrap_or_else(|p| p.into_inner());
        if t > *o {
            *o = t;
        }
    }
    pub fn advance(&self, d: Duration) {
        let mut o = self.offset.lock().unwrap_or_else(|p| p.into_inner());
        *o += d;
    }
    /// Time since start.
    pub fn elapsed(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.elapsed()
    }
}

/// Traffic Manager's endpoint monitor statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum MonitorStatus {
    CheckingEndpoint,
    Online,
    Degraded,
    Disabled,
    Stopped,
    Inactive,
}

impl MonitorStatus {
    /// Statuses TM would put in DNS answers (before the all-Degraded rule).
    pub fn is_available(self) -> bool {
        matches!(self, Self::Online | Self::CheckingEndpoint)
    }
    /// Disabled/Stopped/Inactive are never eligible, not even as a last resort.
    pub fn is_eligible(self) -> bool {
        matches!(self, Self::Online | Self::CheckingEndpoint | Self::Degraded)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CheckingEndpoint => "CheckingEndpoint",
            Self::Online => "Online",
            Self::Degraded => "Degraded",
            Self::Disabled => "Disabled",
            Self::Stopped => "Stopped",
            Self::Inactive => "Inactive",
        }
    }
}

/// Profile-level status (TM: "profile monitor status").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ProfileStatus {
    Disabled,
    Inactive,
    CheckingEndpoints,
    Online,
    Degraded,
}

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail")]
pub enum ProbeFailure {
    /// An HTTP answer outside the expected ranges (30x included: no redirects).
    UnexpectedStatus(u16),
    /// No answer within the probe timeout.
    Timeout,
    /// Refused, reset, TLS failure, …
    Connection(String),
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result")]
pub enum ProbeOutcome {
    Success { status: Option<u16> },
    Failure(ProbeFailure),
}

impl ProbeOutcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Success { .. })
    }
}

/// One finished probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub outcome: ProbeOutcome,
    pub started: Instant,
    pub latency: Duration,
}

/// Monitor settings one node needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub tolerated_failures: u8,
    pub failback_successes: u32,
}

/// A status change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: MonitorStatus,
    pub to: MonitorStatus,
    pub at: Instant,
}

/// Per-node monitor state.
#[derive(Debug, Clone)]
pub struct NodeMonitor {
    status: MonitorStatus,
    since: Instant,
    consecutive_failures: u32,
    consecutive_successes: u32,
    thresholds: Thresholds,
    last: Option<ProbeResult>,
}

impl NodeMonitor {
    /// A new node: `CheckingEndpoint` if monitored, else `Disabled`.
    pub fn new(enabled: bool, thresholds: Thresholds, now: Instant) -> Self {
        Self {
            status: if enabled { MonitorStatus::CheckingEndpoint } else { MonitorStatus::Disabled },
            since: now,
            consecutive_failures: 0,
            consecutive_successes: 0,
            thresholds,
            last: None,
        }
    }

    pub fn status(&self) -> MonitorStatus {
        self.status
    }
    pub fn since(&self) -> Instant {
        self.since
    }
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
    pub fn consecutive_successes(&self) -> u32 {
        self.consecutive_successes
    }
    pub fn last_probe(&self) -> Option<&ProbeResult> {
        self.last.as_ref()
    }
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// New settings after a config reload; the current status is kept.
    pub fn set_thresholds(&mut self, t: Thresholds) {
        self.thresholds = t;
    }

    /// Forces an administrative status (Disabled, Stopped, Inactive) or
    /// re-enables monitoring (`CheckingEndpoint`).
    pub fn set_admin_status(&mut self, status: MonitorStatus, now: Instant) -> Option<Transition> {
        self.consecutive_failures = 0;
        self.consecutive_successes = 0;
        self.change(status, now)
    }

    fn change(&mut self, to: MonitorStatus, now: Instant) -> Option<Transition> {
        if to == self.status {
            return None;
        }
        let from = self.status;
        self.status = to;
        self.since = now;
        Some(Transition { from, to, at: now })
    }

    /// Feeds one probe result; returns the transition it caused, if any.
    pub fn record(&mut self, result: ProbeResult, now: Instant) -> Option<Transition> {
        if !self.status.is_eligible() {
            // Not monitored: TM does not probe Disabled/Stopped/Inactive.
            return None;
        }
        let ok = result.outcome.is_success();
        self.last = Some(result);
        if ok {
            self.consecutive_failures = 0;
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            match self.status {
                MonitorStatus::Degraded if self.consecutive_successes < self.thresholds.failback_successes => None,
                _ => self.change(MonitorStatus::Online, now),
            }
        } else {
            self.consecutive_successes = 0;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if self.consecutive_failures > u32::from(self.thresholds.tolerated_failures) {
                self.change(MonitorStatus::Degraded, now)
            } else {
                None
            }
        }
    }
}

/// A region's status from its configuration and its nodes' statuses.
pub fn region_status(profile_enabled: bool, endpoint_enabled: bool, nodes: &[MonitorStatus]) -> MonitorStatus {
    if !profile_enabled {
        return MonitorStatus::Inactive;
    }
    if !endpoint_enabled {
        return MonitorStatus::Disabled;
    }
    if nodes.contains(&MonitorStatus::Online) {
        MonitorStatus::Online
    } else if nodes.contains(&MonitorStatus::CheckingEndpoint) {
        MonitorStatus::CheckingEndpoint
    } else if nodes.contains(&MonitorStatus::Degraded) {
        MonitorStatus::Degraded
    } else {
        // TM: a nested endpoint whose children are all disabled is Stopped.
        MonitorStatus::Stopped
    }
}

/// The profile status from the region statuses (TM's definitions).
pub fn profile_status(profile_enabled: bool, regions: &[MonitorStatus]) -> ProfileStatus {
    if !profile_enabled {
        return ProfileStatus::Disabled;
    }
    if !regions.iter().any(|s| s.is_eligible()) {
        ProfileStatus::Inactive
    } else if regions.contains(&MonitorStatus::Degraded) {
        ProfileStatus::Degraded
    } else if regions.contains(&MonitorStatus::Online) {
        ProfileStatus::Online
    } else {
        ProfileStatus::CheckingEndpoints
    }
}

/// Indices (in the given order) that may receive traffic: the available ones,
/// or — if none is available but some are Degraded — all the Degraded ones,
/// as if they were Online (TM's all-Degraded rule).
pub fn routable(statuses: &[MonitorStatus]) -> Vec<usize> {
    let avail: Vec<usize> = (0..statuses.len()).filter(|&i| statuses[i].is_available()).collect();
    if !avail.is_empty() {
        return avail;
    }
    (0..statuses.len()).filter(|&i| statuses[i] == MonitorStatus::Degraded).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(at: Instant) -> ProbeResult {
        ProbeResult {
            outcome: ProbeOutcome::Failure(ProbeFailure::Timeout),
            started: at,
            latency: Duration::from_secs(10),
        }
    }
    fn ok(at: Instant) -> ProbeResult {
        ProbeResult {
            outcome: ProbeOutcome::Success { status: Some(200) },
            started: at,
            latency: Duration::from_millis(3),
        }
    }

    #[test]
    fn zero_tolerated_degrades_on_first_failure() {
        let t = Instant::now();
        let th = Thresholds { tolerated_failures: 0, failback_successes: 1 };
        let mut m = NodeMonitor::new(true, th, t);
        assert!(m.record(ok(t), t).is_some());
        let tr = m.record(fail(t), t).expect("transition");
        assert_eq!(tr.to, MonitorStatus::Degraded);
    }

    #[test]
    fn disabled_is_not_monitored() {
        let t = Instant::now();
        let th = Thresholds { tolerated_failures: 0, failback_successes: 1 };
        let mut m = NodeMonitor::new(false, th, t);
        assert_eq!(m.status(), MonitorStatus::Disabled);
        assert!(m.record(ok(t), t).is_none());
        assert_eq!(m.status(), MonitorStatus::Disabled);
    }

    #[test]
    fn region_rules() {
        use MonitorStatus::*;
        assert_eq!(region_status(true, true, &[Degraded, Online]), Online);
        assert_eq!(region_status(true, true, &[Degraded, Degraded]), Degraded);
        assert_eq!(region_status(true, true, &[Degraded, CheckingEndpoint]), CheckingEndpoint);
        assert_eq!(region_status(true, true, &[Disabled, Disabled]), Stopped);
        assert_eq!(region_status(true, false, &[Online]), Disabled);
        assert_eq!(region_status(false, true, &[Online]), Inactive);
        assert_eq!(profile_status(true, &[Online, Degraded]), ProfileStatus::Degraded);
        assert_eq!(profile_status(true, &[Disabled, Stopped]), ProfileStatus::Inactive);
        assert_eq!(profile_status(false, &[Online]), ProfileStatus::Disabled);
    }

    #[test]
    fn all_degraded_rule() {
        use MonitorStatus::*;
        assert_eq!(routable(&[Degraded, Online, Degraded]), vec![1]);
        assert_eq!(routable(&[Degraded, Disabled, Degraded]), vec![0, 2]);
        assert!(routable(&[Disabled, Stopped]).is_empty());
    }
}
