//! Prometheus metrics via the `metrics` facade.
//!
//! The recorder is process-global, so it is installed once ([`handle`]); a
//! second gateway in the same process (tests) shares it. If some other
//! recorder is already installed we fall back to a private one so `/metrics`
//! still answers (empty) rather than failing.
//!
//! Names (all prefixed `gateway_`):
//! * `probe_total{region,node,result}` and `probe_latency_seconds{region,node}`
//! * `status_transitions_total{scope,region,node,to}`; `node_online{region,node}` gauge
//! * `requests_total{region,code}`, `request_errors_total{region,kind}`,
//!   `request_duration_seconds{region}` — `region` is the one that served
//! * `retries_total{reason}`, `failovers_total{from,to}`, `ejections_total{region,node}`

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus handle (installing the recorder on first use).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| match PrometheusBuilder::new().install_recorder() {
        Ok(h) => h,
        Err(_) => PrometheusBuilder::new().build_recorder().handle(),
    })
}

/// Prometheus text exposition.
pub fn render() -> String {
    let h = handle();
    // Histograms/summaries need periodic upkeep; doing it on scrape is enough.
    h.run_upkeep();
    h.render()
}
