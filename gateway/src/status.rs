//! Operator view: `GET /gateway/status` (JSON) and `GET /gateway/` (HTML
//! that polls the JSON every second, so it is "live" without websockets and
//! the gateway stays stateless).

use http::header::{self, HeaderValue};
use http::Response;
use serde_json::{json, Value};

use crate::config::ProbeProtocol;
use crate::monitor::{profile_status, ProbeOutcome};
use crate::proxy::{full_body, Resp};
use crate::routing::Router;

/// The status document.
pub fn status_json(router: &Router) -> Value {
    let topo = router.topology();
    let cfg = &topo.cfg;
    let now = router.clock().now();
    let statuses = topo.region_statuses();
    let endpoints: Vec<Value> = topo
        .regions
        .iter()
        .zip(&statuses)
        .map(|(r, st)| {
            let nodes: Vec<Value> = r
                .nodes
                .iter()
                .map(|n| {
                    let m = n.monitor.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let ej = *n.ejection.lock().unwrap_or_else(|p| p.into_inner());
                    let health = n.health.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let last = m.last_probe().map(|p| {
                        let (ok, status, error) = match &p.outcome {
                            ProbeOutcome::Success { status } => (true, *status, None),
                            ProbeOutcome::Failure(f) => {
                                let st = match f {
                                    crate::monitor::ProbeFailure::UnexpectedStatus(s) => Some(*s),
                                    _ => None,
                                };
                                (false, st, Some(format!("{f:?}")))
                            }
                        };
                        json!({
                            "at_unix_ms": router.unix_ms(p.started) as u64,
                            "ok": ok,
                            "status": status,
                            "latency_ms": p.latency.as_secs_f64() * 1000.0,
                            "error": error,
                        })
                    });
                    let ejected_ms =
                        ej.until.filter(|u| *u > now).map(|u| u.saturating_duration_since(now).as_millis() as u64);
                    json!({
                        "address": &*n.address,
                        "monitor_status": m.status(),
                        "since_unix_ms": router.unix_ms(m.since()) as u64,
                        "consecutive_failures": m.consecutive_failures(),
                        "consecutive_successes": m.consecutive_successes(),
                        "ejected_for_ms": ejected_ms,
                        "ejections": ej.count,
                        "outstanding": n.outstanding.load(std::sync::atomic::Ordering::Relaxed),
                        "last_probe": last,
                        "health": health,
                    })
                })
                .collect();
            json!({
                "name": &*r.name,
                "priority": r.cfg.priority,
                "enabled": r.cfg.enabled,
                "balance": r.cfg.balance,
                "monitor_status": st,
                "nodes": nodes,
            })
        })
        .collect();
    let m = &cfg.monitor;
    let history: Vec<Value> =
        router.history().into_iter().rev().map(|e| serde_json::to_value(e).unwrap_or(Value::Null)).collect();
    json!({
        "profile": {
            "name": cfg.profile.name,
            "routing_method": "priority",
            "enabled": cfg.profile.enabled,
            "monitor_status": profile_status(cfg.profile.enabled, &statuses),
        },
        "monitor": {
            "protocol": m.protocol,
            "port": m.port,
            "path": if m.protocol == ProbeProtocol::Tcp { None } else { Some(&m.path) },
            "interval_ms": m.interval.as_millis() as u64,
            "timeout_ms": m.timeout.as_millis() as u64,
            "tolerated_failures": m.tolerated_failures,
            "expected_status_codes": m.expected_status.iter().map(|(a, b)| format!("{a}-{b}")).collect::<Vec<_>>(),
            "custom_headers": m.custom_headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            "failback_successes": m.failback_successes,
        },
        "active_region": router.active_region().map(|s| s.to_string()),
        "endpoints": endpoints,
        "history": history,
        "generated_unix_ms": router.unix_ms(now) as u64,
    })
}

pub fn json_response(router: &Router) -> Resp {
    let mut r = Response::new(full_body(status_json(router).to_string()));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub fn html_response() -> Resp {
    let mut r = Response::new(full_body(PAGE));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>attest-gateway</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.Online{background:#d4f7d4}.Degraded{background:#f9d0d0}.CheckingEndpoint{background:#fdf3c4}
.Disabled,.Stopped,.Inactive{background:#e4e4e4}small{color:#666}
</style></head><body>
<h1>attest-gateway <small id="profile"></small></h1>
<p>Active region: <b id="active">?</b> &middot; <small id="updated"></small></p>
<div id="endpoints"></div>
<h2>History</h2><table id="history"><tr><th>time</th><th>kind</th><th>subject</th><th>from</th><th>to</th><th>detail</th></tr></table>
<script>
const esc=s=>String(s??'').replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
const t=ms=>ms?new Date(ms).toISOString().replace('T',' ').replace('Z',''):'';
async function tick(){
 try{
  const s=await (await fetch('/gateway/status',{cache:'no-store'})).json();
  document.getElementById('profile').textContent=`${s.profile.name} · ${s.profile.monitor_status} · ${s.monitor.protocol} every ${s.monitor.interval_ms} ms, timeout ${s.monitor.timeout_ms} ms, tolerated ${s.monitor.tolerated_failures}`;
  document.getElementById('active').textContent=s.active_region??'none';
  document.getElementById('updated').textContent='updated '+new Date().toLocaleTimeString();
  let h='';
  for(const e of s.endpoints){
   h+=`<h2 class="${e.monitor_status}">${esc(e.name)} <small>priority ${e.priority} · ${e.monitor_status} · ${e.balance}</small></h2><table><tr><th>node</th><th>status</th><th>fails</th><th>last probe</th><th>latency ms</th><th>ejected ms</th><th>in flight</th><th>health</th></tr>`;
   for(const n of e.nodes){
    const p=n.last_probe;
    h+=`<tr><td>${esc(n.address)}</td><td class="${n.monitor_status}">${n.monitor_status}</td><td>${n.consecutive_failures}</td><td>${p?(p.ok?'ok ':'FAIL ')+esc(p.status??'')+' '+esc(p.error??''):''}</td><td>${p?p.latency_ms.toFixed(1):''}</td><td>${n.ejected_for_ms??''}</td><td>${n.outstanding}</td><td><small>${esc(n.health?JSON.stringify(n.health):'')}</small></td></tr>`;
   }
   h+='</table>';
  }
  document.getElementById('endpoints').innerHTML=h;
  let r='<tr><th>time</th><th>kind</th><th>subject</th><th>from</th><th>to</th><th>detail</th></tr>';
  for(const e of s.history.slice(0,200)) r+=`<tr><td>${t(e.at_unix_ms)}</td><td>${e.kind}</td><td>${esc(e.subject)}</td><td>${esc(e.from)}</td><td>${esc(e.to)}</td><td>${esc(e.detail)}</td></tr>`;
  document.getElementById('history').innerHTML=r;
 }catch(e){document.getElementById('updated').textContent='error: '+e}
}
tick();setInterval(tick,1000);
</script></body></html>
"#;
