//! Gateway benchmarks (issue 6), each in one run on one machine:
//!
//! - **Proxy overhead**: `wrk` against one primary node directly, through
//!   `attest-gateway`, and through HAProxy (Debian's `haproxy`) configured
//!   with the same backends, the same TLS (termination with the same dev CA
//!   certificate, re-encryption to the nodes, verified) and health checks on.
//!   With ≥ 2 CPUs the proxies run on the first half of the CPUs and wrk and
//!   the nodes on the other half, so that a proxy's figures are its own and
//!   not the share of a core it won from wrk; the two proxies are measured
//!   in alternating rounds (drift hits both alike) and each row also gives
//!   the proxy's own CPU time per request (`/proc/<pid>/stat`), the overhead
//!   figure least sensitive to a noisy machine.
//! - **Failover**: steady attestation load through the gateway, kill -9 of
//!   every primary node, then the time to the first attestation served by
//!   the secondary and the errors clients saw, per probe interval.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::cluster::{free_ports, Cluster, ClusterSpec, GatewayMonitor};

/// One `wrk` run.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyResult {
    pub target: String,
    pub connections: usize,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx/3xx answers and socket errors.
    pub errors: u64,
    /// CPU time (user + system) the proxy process spent per request, in µs;
    /// `None` for the direct row.
    pub proxy_cpu_us_per_req: Option<f64>,
}

/// One failover measurement.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverResult {
    pub probe_interval_ms: u64,
    pub tolerated_failures: u32,
    /// From the kill to the first attestation answered by the secondary.
    pub time_to_secondary_ms: f64,
    /// Attestations that failed, as clients saw them, over the whole run.
    pub client_errors: u64,
    pub attestations: u64,
}

/// `wrk`'s latency strings ("812.00us", "1.20ms", "2.01s") in milliseconds.
fn wrk_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * mult)
}

/// Parses the summary `wrk --latency` prints.
pub fn parse_wrk(target: &str, connections: usize, out: &str) -> anyhow::Result<ProxyResult> {
    let mut r = ProxyResult {
        target: target.into(),
        connections,
        requests_per_s: 0.0,
        p50_ms: 0.0,
        p90_ms: 0.0,
        p99_ms: 0.0,
        errors: 0,
        proxy_cpu_us_per_req: None,
    };
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => r.requests_per_s = v.parse().context("Requests/sec")?,
            ["50%", v] => r.p50_ms = wrk_ms(v).context("50%")?,
            ["90%", v] => r.p90_ms = wrk_ms(v).context("90%")?,
            ["99%", v] => r.p99_ms = wrk_ms(v).context("99%")?,
            ["Non-2xx", "or", "3xx", "responses:", v] => r.errors += v.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                r.errors += rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>();
            }
            _ => {}
        }
    }
    if r.requests_per_s == 0.0 {
        bail!("wrk printed no throughput for {target}:\n{out}");
    }
    Ok(r)
}

fn run_wrk(
    target: &str,
    url: &str,
    connections: usize,
    seconds: u64,
    cpus: Option<&str>,
    proxy_pid: Option<u32>,
) -> anyhow::Result<ProxyResult> {
    let mut cmd = match cpus {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.args(["-c", c, "wrk"]);
            t
        }
        None => Command::new("wrk"),
    };
    let cpu_before = proxy_pid.and_then(crate::bench::process_cpu_seconds);
    let out = cmd
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", url])
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let cpu_used = match (cpu_before, proxy_pid.and_then(crate::bench::process_cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    if !out.status.success() {
        bail!("wrk against {url} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut r = parse_wrk(target, connections, &String::from_utf8_lossy(&out.stdout))?;
    let requests = r.requests_per_s * seconds as f64;
    r.proxy_cpu_us_per_req = cpu_used.filter(|_| requests > 0.0).map(|c| c * 1e6 / requests);
    Ok(r)
}

/// A HAProxy process; killed on drop.
struct Haproxy {
    child: Child,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy with the gateway's job: TLS termination with the same dev
/// certificate, round-robin over `backends` re-encrypted and verified
/// against the cluster CA, `/health` checks every second.
fn start_haproxy(
    dir: &Path,
    listen: &str,
    certs: &Path,
    backends: &[String],
    threads: usize,
) -> anyhow::Result<Haproxy> {
    // HAProxy wants certificate and key in one PEM file.
    let mut pem = std::fs::read(certs.join("gateway-haproxy.pem")).context("haproxy certificate")?;
    pem.extend(std::fs::read(certs.join("gateway-haproxy.key")).context("haproxy key")?);
    let bundle = dir.join("haproxy-bundle.pem");
    std::fs::write(&bundle, pem)?;
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "    server n{i} {b} ssl verify required ca-file {ca} check inter 1s fall 2 rise 1\n",
                ca = certs.join("ca.pem").display()
            )
        })
        .collect();
    let cfg = format!(
        "global\n    maxconn 4096\n    nbthread {threads}\n\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n    option http-keep-alive\n\n\
         frontend fe\n    bind {listen} ssl crt {bundle}\n    default_backend nodes\n\n\
         backend nodes\n    balance roundrobin\n    option httpchk GET /health\n    http-reuse always\n{servers}",
        bundle = bundle.display()
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg)?;
    let check =
        Command::new("haproxy").arg("-c").arg("-f").arg(&path).output().context("haproxy (apt-get install haproxy)")?;
    if !check.status.success() {
        bail!("haproxy rejected its config: {}", String::from_utf8_lossy(&check.stderr));
    }
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting haproxy")?;
    Ok(Haproxy { child })
}

async fn wait_ok(http: &reqwest::Client, url: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} never answered 200");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Direct, gateway and HAProxy throughput/latency of `GET /certs` (a cheap
/// read every node answers from memory, so the proxies' cost shows), in
/// `rounds` alternating rounds; `split`: proxies on one half of the CPUs,
/// wrk and the nodes on the other.
pub async fn proxy_overhead(
    dir: PathBuf,
    connections: usize,
    seconds: u64,
    rounds: usize,
    split: Option<crate::bench::CoreSplit>,
) -> anyhow::Result<Vec<ProxyResult>> {
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut spec = ClusterSpec::local(dir.join("cluster"));
    spec.extra_toml = "[log]\nfilter = \"warn\"\n".into();
    let cluster = Cluster::launch(spec, Duration::from_secs(120)).await?;
    let gateways = cluster.start_gateways(Duration::from_secs(30)).await?;
    let certs = dir.join("cluster/certs");
    crate::cluster::dev_pki(&cluster.bin, &certs, &["gateway-haproxy".to_string()])?;
    let backends: Vec<String> =
        cluster.primary_ids().iter().filter_map(|id| cluster.nodes.get(id).map(|n| n.api_addr.clone())).collect();
    let port = free_ports(1)?[0];
    let ha_addr = format!("127.0.0.1:{port}");
    // HAProxy gets as many threads as the CPUs it may use; the gateway's
    // tokio runtime likewise sizes itself to the machine.
    let ha_threads = split.as_ref().map(|s| s.node_cpus).unwrap_or(2);
    let ha = start_haproxy(&dir, &ha_addr, &certs, &backends, ha_threads)?;
    let gw = gateways.first().context("no gateway")?;
    if let Some(sp) = &split {
        for n in cluster.nodes.values() {
            if let Some(pid) = n.pid() {
                crate::bench::pin(pid, &sp.rest)?;
            }
        }
        for g in &gateways {
            crate::bench::pin(g.pid(), &sp.node)?;
        }
        crate::bench::pin(ha.child.id(), &sp.node)?;
        eprintln!("cores split: proxies on CPUs {}, wrk and the nodes on {}", sp.node, sp.rest);
    }
    let direct = ("direct to one node", format!("https://{}/certs", backends[0]), None);
    let targets = [
        ("attest-gateway", format!("https://{}/certs", gw.addr), Some(gw.pid())),
        ("haproxy 2.6", format!("https://{ha_addr}/certs"), Some(ha.child.id())),
    ];
    for (_, url, _) in std::iter::once(&direct).chain(&targets) {
        wait_ok(cluster.http(), url, Duration::from_secs(30)).await?;
    }
    let wrk_cpus = split.as_ref().map(|s| s.rest.as_str());
    let mut out = Vec::new();
    let (name, url, _) = &direct;
    let _ = run_wrk(name, url, connections, 2, wrk_cpus, None);
    out.push(run_wrk(name, url, connections, seconds, wrk_cpus, None)?);
    for (name, url, pid) in &targets {
        // Warm the connection pools and caches first.
        let _ = run_wrk(name, url, connections, 2, wrk_cpus, *pid);
    }
    for round in 0..rounds.max(1) {
        // Alternate which proxy goes first, so neither always follows the other.
        let order: Vec<&(&str, String, Option<u32>)> =
            if round % 2 == 0 { targets.iter().collect() } else { targets.iter().rev().collect() };
        for (name, url, pid) in order {
            eprintln!("round {}: {name} for {seconds} s ...", round + 1);
            out.push(run_wrk(name, url, connections, seconds, wrk_cpus, *pid)?);
        }
    }
    Ok(out)
}

/// Per target, the median of each figure over its rounds.
pub fn medians(rows: &[ProxyResult]) -> Vec<ProxyResult> {
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        if !names.contains(&r.target.as_str()) {
            names.push(&r.target);
        }
    }
    let med = |mut v: Vec<f64>| -> f64 {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    names
        .into_iter()
        .map(|n| {
            let of: Vec<&ProxyResult> = rows.iter().filter(|r| r.target == n).collect();
            let cpu: Vec<f64> = of.iter().filter_map(|r| r.proxy_cpu_us_per_req).collect();
            ProxyResult {
                target: format!("{n} (median of {})", of.len()),
                connections: of[0].connections,
                requests_per_s: med(of.iter().map(|r| r.requests_per_s).collect()),
                p50_ms: med(of.iter().map(|r| r.p50_ms).collect()),
                p90_ms: med(of.iter().map(|r| r.p90_ms).collect()),
                p99_ms: med(of.iter().map(|r| r.p99_ms).collect()),
                errors: of.iter().map(|r| r.errors).sum(),
                proxy_cpu_us_per_req: if cpu.is_empty() { None } else { Some(med(cpu)) },
            }
        })
        .collect()
}

/// Kill every primary node under attestation load through the gateway,
/// for each probe interval; see the module docs.
pub async fn failover(
    dir: PathBuf,
    vectors: &Path,
    intervals: &[Duration],
    tolerated_failures: u32,
    clients: usize,
) -> anyhow::Result<Vec<FailoverResult>> {
    let body = crate::bench_attest::oe_request(vectors)?;
    let mut results = Vec::new();
    for interval in intervals {
        let run_dir = dir.join(format!("interval-{}ms", interval.as_millis()));
        let _ = std::fs::remove_dir_all(&run_dir);
        let mut spec = ClusterSpec::local(&run_dir);
        spec.pinned_verification_time = Some(crate::bench_attest::PINNED.into());
        spec.collateral_grace_s = crate::bench_attest::GRACE_S;
        spec.extra_toml = "[log]\nfilter = \"warn\"\n".into();
        let mut cluster = Cluster::launch(spec, Duration::from_secs(120)).await?;
        crate::bench_attest::import_collateral(&cluster, vectors).await?;
        cluster.wait_converged(&cluster.ids(), 0, Duration::from_secs(60)).await?;
        // TM requires timeout < interval; keep the ratio of its 10 s / 5 s.
        let monitor = GatewayMonitor { interval: *interval, timeout: *interval / 2, tolerated_failures };
        let gateways = cluster.start_gateways_with(Duration::from_secs(30), &monitor).await?;
        let gw = gateways.first().context("no gateway")?;
        let url = format!("https://{}/attest/OpenEnclave", gw.addr);
        let primary = cluster.spec.primary_region.clone();
        let secondary = cluster.spec.secondary_region.clone();

        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let oks = Arc::new(AtomicU64::new(0));
        let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
        let first_secondary: Arc<Mutex<Option<Instant>>> = Arc::default();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (http, url, body) = (cluster.http().clone(), url.clone(), body.clone());
            let (stop, errors, oks) = (stop.clone(), errors.clone(), oks.clone());
            let (killed_at, first_secondary, secondary) =
                (killed_at.clone(), first_secondary.clone(), secondary.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            oks.fetch_add(1, Ordering::Relaxed);
                            let region = r.headers().get("x-attest-region").and_then(|v| v.to_str().ok()).unwrap_or("");
                            if region == secondary && killed_at.lock().is_ok_and(|k| k.is_some()) {
                                if let Ok(mut f) = first_secondary.lock() {
                                    f.get_or_insert_with(Instant::now);
                                }
                            }
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        // Steady state on the primary first.
        let warm = Instant::now() + Duration::from_secs(60);
        while oks.load(Ordering::Relaxed) < 50 {
            if Instant::now() > warm {
                bail!("no steady attestation load through the gateway (errors: {})", errors.load(Ordering::Relaxed));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Ok(mut k) = killed_at.lock() {
            *k = Some(Instant::now());
        }
        cluster.kill_region(&primary)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let took = loop {
            let (k, f) = (killed_at.lock().ok().and_then(|k| *k), first_secondary.lock().ok().and_then(|f| *f));
            if let (Some(k), Some(f)) = (k, f) {
                break f.duration_since(k);
            }
            if Instant::now() > deadline {
                bail!("the secondary never served an attestation within 60 s of the kill");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // Keep the load on a little longer: late errors count too.
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        results.push(FailoverResult {
            probe_interval_ms: interval.as_millis() as u64,
            tolerated_failures,
            time_to_secondary_ms: took.as_secs_f64() * 1000.0,
            client_errors: errors.load(Ordering::Relaxed),
            attestations: oks.load(Ordering::Relaxed),
        });
        drop(gateways);
        drop(cluster);
    }
    Ok(results)
}

pub fn proxy_markdown(rows: &[ProxyResult]) -> String {
    let mut s = String::from(
        "| target | connections | requests/s | p50 ms | p90 ms | p99 ms | proxy CPU µs/req | errors |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let cpu = r.proxy_cpu_us_per_req.map(|c| format!("{c:.0}")).unwrap_or_else(|| "—".into());
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
            r.target, r.connections, r.requests_per_s, r.p50_ms, r.p90_ms, r.p99_ms, cpu, r.errors
        ));
    }
    s
}

pub fn failover_markdown(rows: &[FailoverResult]) -> String {
    let mut s = String::from(
        "| probe interval | tolerated failures | kill → first attest on secondary | client errors | attestations |\n| --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} s | {} | {:.0} ms | {} | {} |\n",
            r.probe_interval_ms as f64 / 1000.0,
            r.tolerated_failures,
            r.time_to_secondary_ms,
            r.client_errors,
            r.attestations
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 10s test @ https://127.0.0.1:1/certs\n  2 threads and 64 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     5.10ms    2.01ms  40.00ms   80.00%\n  Latency Distribution\n     50%  812.00us\n     75%    5.00ms\n     90%    7.25ms\n     99%    1.20s\n  120000 requests in 10.00s, 50.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 4\nRequests/sec:  12000.50\nTransfer/sec:      5.00MB\n";
        let r = parse_wrk("x", 64, out).expect("parses");
        assert!((r.requests_per_s - 12000.5).abs() < 1e-9);
        assert!((r.p50_ms - 0.812).abs() < 1e-9);
        assert!((r.p90_ms - 7.25).abs() < 1e-9);
        assert!((r.p99_ms - 1200.0).abs() < 1e-9);
        assert_eq!(r.errors, 7);
        assert!(parse_wrk("x", 1, "garbage").is_err());
    }
}
