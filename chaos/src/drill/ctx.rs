//! What a scenario script works with: fault injection that is recorded in
//! the history (issue and return time, error), expectation windows, holds,
//! bounded waits on the nodes' status, captures of a region's state, and
//! the progress line.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::deployment::Deployment;
use super::Pace;
use crate::faults::Fault;
use crate::history::{Capture, Entry, Expectation, FaultEvent, History, Window};
use crate::workload::{Counters, Endpoint, Registers, WorkloadConfig};

pub struct DrillCtx<'a> {
    pub dep: &'a mut Deployment,
    pub history: History,
    pub pace: Pace,
    /// The workload's registers (for captures).
    pub registers: Registers,
    open: Vec<(usize, u64, Expectation)>,
    next_window: usize,
    /// When the last fault was issued (a `docker kill` takes a moment to return).
    last_fault_ns: Option<u64>,
    step: Arc<Mutex<String>>,
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl<'a> DrillCtx<'a> {
    pub fn new(
        dep: &'a mut Deployment,
        history: History,
        counters: Arc<Counters>,
        progress: bool,
        pace: Pace,
        workload: &WorkloadConfig,
    ) -> Self {
        let bar = if progress { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let step = Arc::new(Mutex::new(String::from("starting")));
        let (b, s) = (bar.clone(), step.clone());
        let ticker = tokio::spawn(async move {
            loop {
                let current = s.lock().map(|g| g.clone()).unwrap_or_default();
                b.set_message(format!("{current} · {}", counters.line()));
                b.tick();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Self {
            dep,
            history,
            pace,
            registers: workload.registers(),
            open: Vec::new(),
            next_window: 0,
            last_fault_ns: None,
            step,
            bar,
            ticker,
        }
    }

    /// Names what the drill is doing (progress line and history mark).
    pub fn step(&self, what: &str) {
        if let Ok(mut g) = self.step.lock() {
            *g = what.to_owned();
        }
        self.history.mark(what);
    }

    pub async fn hold(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// Applies a fault, recording it; an error is recorded and returned.
    pub async fn fault(&mut self, f: Fault) -> anyhow::Result<()> {
        self.step(&f.label());
        let at_ns = self.history.now_ns();
        self.last_fault_ns = Some(at_ns);
        let r = match self.dep.faults.as_mut() {
            Some(inj) => inj.apply(&f).await.map_err(|e| anyhow!("{e}")),
            None => Err(anyhow!("no fault backend: pass --docker or run against a local cluster")),
        };
        self.history.record(Entry::Fault(FaultEvent {
            at_ns,
            done_ns: self.history.now_ns(),
            label: f.label(),
            fault: serde_json::to_value(&f).unwrap_or_default(),
            error: r.as_ref().err().map(|e| format!("{e:#}")),
        }));
        if r.is_ok() {
            self.track(&f);
        }
        r
    }

    /// Keeps [`Deployment::broken`] current so that heal can undo the rest.
    fn track(&mut self, f: &Fault) {
        let in_region = |region: &str| -> Vec<String> {
            self.dep.nodes.iter().filter(|n| n.region == region).map(|n| n.name.clone()).collect()
        };
        let affected = match f {
            Fault::KillRegion { region }
            | Fault::StartRegion { region }
            | Fault::PauseRegion { region }
            | Fault::ResumeRegion { region } => in_region(region),
            _ => Vec::new(),
        };
        let b = &mut self.dep.broken;
        match f {
            Fault::Kill { node } | Fault::Stop { node } => {
                b.down.insert(node.clone());
                b.paused.remove(node);
            }
            Fault::Start { node } => {
                b.down.remove(node);
            }
            Fault::Pause { node } => {
                b.paused.insert(node.clone());
            }
            Fault::Resume { node } => {
                b.paused.remove(node);
            }
            Fault::KillRegion { .. } => {
                for n in affected {
                    b.paused.remove(&n);
                    b.down.insert(n);
                }
            }
            Fault::StartRegion { .. } => {
                for n in affected {
                    b.down.remove(&n);
                }
            }
            Fault::PauseRegion { .. } => b.paused.extend(affected),
            Fault::ResumeRegion { .. } => {
                for n in affected {
                    b.paused.remove(&n);
                }
            }
            Fault::Partition { .. } => b.wan_cut = true,
            Fault::Heal => b.wan_cut = false,
            Fault::WanLatency { one_way_ms, jitter_ms } => b.wan_slow = *one_way_ms > 0 || *jitter_ms > 0,
            Fault::FillDisk { node } => {
                b.disk_full.insert(node.clone());
            }
            Fault::FreeDisk { node } => {
                b.disk_full.remove(node);
            }
        }
    }

    /// Drains (`on`) or undrains a node through its admin API: an operator
    /// action, recorded like a fault.
    pub async fn drain(&mut self, node: &Endpoint, on: bool) -> anyhow::Result<()> {
        let verb = if on { "drain" } else { "undrain" };
        let label = format!("{verb} {}", node.name);
        self.step(&label);
        let at_ns = self.history.now_ns();
        let r = self.dep.http.post(format!("{}/admin/{verb}", node.url)).timeout(Duration::from_secs(10)).send().await;
        let err = match r {
            Ok(resp) if resp.status().is_success() => None,
            Ok(resp) => Some(format!("{} {}", resp.status(), resp.text().await.unwrap_or_default())),
            Err(e) => Some(e.to_string()),
        };
        self.history.record(Entry::Fault(FaultEvent {
            at_ns,
            done_ns: self.history.now_ns(),
            label,
            fault: json!({"action": verb, "node": node.name}),
            error: err.clone(),
        }));
        match err {
            None => {
                if on {
                    self.dep.broken.drained.insert(node.name.clone());
                } else {
                    self.dep.broken.drained.remove(&node.name);
                }
                Ok(())
            }
            Some(e) => bail!("{verb} {}: {e}", node.name),
        }
    }

    /// An operator call on a node's admin API (`POST path` with `body`),
    /// recorded like a fault; returns the answer's JSON. Used for the
    /// disaster-recovery steps (promote, reseed, rebalance).
    pub async fn admin(
        &mut self,
        node: &Endpoint,
        label: &str,
        path: &str,
        body: serde_json::Value,
        within: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        self.step(label);
        let at_ns = self.history.now_ns();
        let r = self.dep.http.post(format!("{}{path}", node.url)).timeout(within).json(&body).send().await;
        let (answer, err) = match r {
            Ok(resp) => {
                let code = resp.status();
                let v: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
                if code.is_success() {
                    (v, None)
                } else {
                    (v.clone(), Some(format!("{code} {v}")))
                }
            }
            Err(e) => (serde_json::Value::Null, Some(e.to_string())),
        };
        self.history.record(Entry::Fault(FaultEvent {
            at_ns,
            done_ns: self.history.now_ns(),
            label: label.to_owned(),
            fault: json!({"action": path.trim_start_matches('/'), "node": node.name, "body": body}),
            error: err.clone(),
        }));
        match err {
            None => Ok(answer),
            Some(e) => bail!("{label}: {e}"),
        }
    }

    /// Opens an expectation window now; returns its handle.
    pub fn open(&mut self, expect: Expectation) -> usize {
        let id = self.next_window;
        self.next_window += 1;
        self.open.push((id, self.history.now_ns(), expect));
        id
    }

    /// Opens a window that covers `[now, now + d]` and is recorded at once.
    pub fn window_for(&mut self, expect: Expectation, d: Duration) {
        let start_ns = self.history.now_ns();
        self.history.record(Entry::Window(Window { start_ns, end_ns: start_ns + d.as_nanos() as u64, expect }));
    }

    /// Like [`Self::window_for`], but starting when the last fault was
    /// issued: its effects begin before the command returns (instantly for
    /// a signal, over a second for `docker kill` of a region).
    pub fn window_from_fault(&mut self, expect: Expectation, d: Duration) {
        let now = self.history.now_ns();
        let start_ns = self.last_fault_ns.unwrap_or(now).min(now);
        self.history.record(Entry::Window(Window { start_ns, end_ns: now + d.as_nanos() as u64, expect }));
    }

    pub fn close(&mut self, id: usize) {
        if let Some(pos) = self.open.iter().position(|(i, ..)| *i == id) {
            let (_, start_ns, expect) = self.open.remove(pos);
            self.history.record(Entry::Window(Window { start_ns, end_ns: self.history.now_ns(), expect }));
        }
    }

    pub fn close_all(&mut self) {
        let ids: Vec<usize> = self.open.iter().map(|(i, ..)| *i).collect();
        for id in ids {
            self.close(id);
        }
    }

    /// The current writable leader (bounded wait).
    pub async fn leader(&self, within: Duration) -> anyhow::Result<Endpoint> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(l) = self.dep.leader().await {
                return Ok(l);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("no writable leader within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Records what every node of `region` holds now: its applied values and
    /// the request ids of the log entries it holds beyond them.
    pub async fn capture(&mut self, label: &str, region: &str) -> anyhow::Result<()> {
        self.step(&format!("capture {region}: {label}"));
        let nodes = self.dep.region_nodes(region);
        if nodes.is_empty() {
            bail!("no node of region {region} is known: nothing to capture");
        }
        let mut captured = 0;
        let mut errors = Vec::new();
        for n in nodes {
            let at_ns = self.history.now_ns();
            let state = match self.dep.admin_state(&n.url).await {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("{}: {e:#}", n.name));
                    continue;
                }
            };
            let applied = state["appliedIndex"].as_u64().unwrap_or(0);
            let unapplied = match self.dep.log_request_ids(&n.url, applied + 1).await {
                Ok(ids) => ids,
                Err(e) => {
                    errors.push(format!("{}: {e:#}", n.name));
                    continue;
                }
            };
            self.history.record(Entry::Capture(Capture {
                at_ns,
                label: label.to_owned(),
                node: n.name.clone(),
                region: region.to_owned(),
                values: self.registers.values(&state),
                applied_index: applied,
                unapplied_request_ids: unapplied,
            }));
            captured += 1;
        }
        if captured == 0 {
            bail!("could not capture any node of {region}: {}", errors.join("; "));
        }
        Ok(())
    }

    pub fn finish(&self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

impl Drop for DrillCtx<'_> {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}
