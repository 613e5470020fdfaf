//! Status polling during a drill: every node's `GET /health` at a fixed
//! interval, recorded as [`StatusSample`]s. `/health` carries the same
//! control-plane view as `/admin/status` (role, leader, term, applied
//! index, `writable`/`read-only`, replication mode) plus whether the node
//! serves the data plane (200) or not (503: draining, no state), and it
//! needs no credentials, so it works against any deployment.
//!
//! Each probe is its own task with a short timeout: a paused node (SIGSTOP)
//! costs one timeout, not a stalled poller.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::history::{Entry, History, StatusSample};
use crate::workload::Endpoint;

/// A running poller.
pub struct Monitor {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    pub fn start(nodes: Vec<Endpoint>, http: reqwest::Client, history: History, interval: Duration) -> Self {
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let nodes = Arc::new(nodes);
        let timeout = interval.max(Duration::from_millis(300));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop_rx.changed() => return,
                }
                for n in nodes.iter() {
                    let (http, history, n) = (http.clone(), history.clone(), n.clone());
                    tokio::spawn(async move {
                        let at_ns = history.now_ns();
                        let r = http.get(format!("{}/health", n.url)).timeout(timeout).send().await;
                        let mut s = match r {
                            Ok(resp) => {
                                let code = resp.status().as_u16();
                                let body: Value = resp.json().await.unwrap_or(Value::Null);
                                sample_from_health(&n, at_ns, Some(code), &body)
                            }
                            Err(_) => sample_from_health(&n, at_ns, None, &Value::Null),
                        };
                        s.at_ns = at_ns;
                        history.record(Entry::Status(s));
                    });
                }
            }
        });
        Self { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// A sample from one `/health` answer (`http = None`: no answer).
pub fn sample_from_health(node: &Endpoint, at_ns: u64, http: Option<u16>, body: &Value) -> StatusSample {
    let s = |k: &str| body[k].as_str().map(str::to_owned);
    StatusSample {
        at_ns,
        node: node.name.clone(),
        region: node.region.clone(),
        http,
        raft_role: s("raft_role"),
        leader: body["leader"].as_u64(),
        term: body["term"].as_u64(),
        control_plane: s("control_plane"),
        replication_mode: s("replication_mode"),
        applied_index: body["applied_index"].as_u64(),
        draining: body["draining"].as_bool(),
        fenced: body["fenced"].as_bool(),
        epoch: body["epoch"].as_u64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_bodies_become_samples() {
        let n = Endpoint { name: "node-4".into(), region: "centralus".into(), url: String::new(), gateway: false };
        let body = serde_json::json!({
            "raft_role": "Follower", "leader": 1, "term": 3, "control_plane": "read-only",
            "replication_mode": "async", "applied_index": 17, "draining": false
        });
        let s = sample_from_health(&n, 5, Some(200), &body);
        assert!(s.serving());
        assert_eq!(s.control_plane.as_deref(), Some("read-only"));
        assert_eq!(s.replication_mode.as_deref(), Some("async"));
        assert_eq!((s.leader, s.term, s.applied_index), (Some(1), Some(3), Some(17)));
        let down = sample_from_health(&n, 6, None, &Value::Null);
        assert!(!down.serving());
        assert_eq!(down.raft_role, None);
    }
}
