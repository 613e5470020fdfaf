//! Control-plane write benchmark: closed-loop clients against attestd or,
//! with the same load generator, against a local etcd cluster — so the two
//! are measured in one run, on one machine, with one tool.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use serde::Serialize;

/// Shape of one run.
#[derive(Clone, Debug, Serialize)]
pub struct LoadSpec {
    pub clients: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub value_bytes: usize,
    /// Processes of the system under test (their threads included): their
    /// CPU time over the measured window, divided by the writes, is the
    /// row's CPU per write. Empty: not measured.
    pub servers: Vec<u32>,
    /// Each client's pause after each operation (0 = back to back). With a
    /// pause the machine idles between operations, as it does while a
    /// write crosses an emulated WAN: CPUs halt, caches cool down, the
    /// disk's next sync starts cold (BENCHMARKS.md, session 31).
    pub think: Duration,
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoadResult {
    pub target: String,
    pub clients: usize,
    pub value_bytes: usize,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The whole machine's CPU over the measured window (`/proc/stat`),
    /// `None` where it cannot be read.
    pub cpu: Option<CpuShare>,
    /// CPU time of [`LoadSpec::servers`] per acknowledged write over the
    /// measured window, in microseconds (`/proc/<pid>/stat`, 10 ms ticks).
    pub server_cpu_us_per_op: Option<f64>,
}

/// Header of the table [`LoadResult::row`] prints rows of.
pub const LOAD_TABLE_HEADER: &str = "| target | clients | value bytes | writes/s | p50 ms | p90 ms | p99 ms | max ms | errors | CPU busy % | CPU steal % | server CPU µs/write |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |";

impl LoadResult {
    pub fn row(&self) -> String {
        let (busy, steal) = match self.cpu {
            Some(c) => (format!("{:.0}", c.busy_pct), format!("{:.0}", c.steal_pct)),
            None => ("–".into(), "–".into()),
        };
        let per_write = self.server_cpu_us_per_op.map_or_else(|| "–".to_string(), |us| format!("{us:.0}"));
        format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {busy} | {steal} | {per_write} |",
            self.target,
            self.clients,
            self.value_bytes,
            self.ops_per_s,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms,
            self.errors
        )
    }
}

/// How the machine's CPU time was spent over a window, in percent of all
/// CPUs' time.
///
/// Why: on a virtual machine the host may run other work on our CPUs
/// (`steal`); a row measured while the host took a third of the CPU says
/// little about the system under test, and a comparison of two rows only
/// holds when both ran at a similar steal.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CpuShare {
    /// user + nice + system + irq + softirq.
    pub busy_pct: f64,
    pub steal_pct: f64,
}

/// Cumulative CPU ticks from the first line of `/proc/stat`:
/// (busy, steal, total).
fn cpu_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user and nice).
    let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = v[..] else { return None };
    let busy = user + nice + system + irq + softirq;
    Some((busy, steal, busy + idle + iowait + steal))
}

/// The machine's CPU share between two [`cpu_ticks`] readings.
fn cpu_share(from: Option<(u64, u64, u64)>, to: Option<(u64, u64, u64)>) -> Option<CpuShare> {
    let ((b0, s0, t0), (b1, s1, t1)) = (from?, to?);
    let total = t1.checked_sub(t0).filter(|t| *t > 0)? as f64;
    Some(CpuShare {
        busy_pct: b1.saturating_sub(b0) as f64 * 100.0 / total,
        steal_pct: s1.saturating_sub(s0) as f64 * 100.0 / total,
    })
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times: Linux reports
/// them in `USER_HZ`, which is 100 on every architecture it exports to user
/// space (x86, arm64, …), whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// utime + stime of one process (all its threads), in clock ticks, from the
/// text of its `/proc/<pid>/stat`. The command name may hold spaces and
/// parentheses, so the fields are counted after its last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields after the name start at `state` (field 3); utime and stime
    // are fields 14 and 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// utime + stime of process `pid` so far, in clock ticks.
fn process_cpu_ticks(pid: u32) -> Option<u64> {
    stat_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// User + system CPU seconds of process `pid` so far.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    Some(process_cpu_ticks(pid)? as f64 / USER_HZ)
}

/// Summed CPU ticks of `pids`; `None` when any of them cannot be read (a
/// process that exited mid-window would make the sum meaningless).
fn processes_cpu_ticks(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| process_cpu_ticks(*p)).sum()
}

/// The `p` quantile (0..=1, nearest rank) of `sorted`; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n => sorted[(((n - 1) as f64 * p).round() as usize).min(n - 1)],
    }
}

/// One request of the workload; returns Ok(()) when acknowledged.
pub type Op = Arc<dyn Fn(u64, usize) -> futures::future::BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// Runs `spec.clients` closed-loop clients calling `op` with a unique
/// sequence number and client index; latencies after the warm-up count.
pub async fn run_load(target: &str, spec: &LoadSpec, op: Op) -> LoadResult {
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let servers = spec.servers.clone();
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let (from, servers_from) = (cpu_ticks(), processes_cpu_ticks(&servers));
        tokio::time::sleep_until(end.into()).await;
        let servers_ticks = servers_from.zip(processes_cpu_ticks(&servers)).map(|(a, b)| b.saturating_sub(a));
        (cpu_share(from, cpu_ticks()), servers_ticks)
    });
    let mut tasks = Vec::new();
    for client in 0..spec.clients {
        let op = op.clone();
        let seq = seq.clone();
        let think = spec.think;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < end {
                let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let t0 = Instant::now();
                let ok = tokio::time::timeout(Duration::from_secs(30), op(n, client)).await;
                let counted = t0 >= measure_from;
                match ok {
                    Ok(Ok(())) if counted => lat.push(t0.elapsed().as_secs_f64() * 1000.0),
                    Ok(Ok(())) => {}
                    _ if counted => errors += 1,
                    _ => {}
                }
                if !think.is_zero() {
                    tokio::time::sleep(think).await;
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let pct = |p: f64| percentile(&all, p);
    let seconds = spec.duration.as_secs_f64();
    let (cpu, server_ticks) = cpu.await.unwrap_or((None, None));
    let ops = all.len() as u64;
    LoadResult {
        target: if spec.think.is_zero() {
            target.into()
        } else {
            format!("{target}, {} ms think", spec.think.as_millis())
        },
        clients: spec.clients,
        value_bytes: spec.value_bytes,
        ops,
        errors,
        seconds,
        ops_per_s: ops as f64 / seconds,
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        max_ms: all.last().copied().unwrap_or(f64::NAN),
        cpu,
        server_cpu_us_per_op: server_ticks.filter(|_| ops > 0).map(|t| t as f64 * 1e6 / USER_HZ / ops as f64),
    }
}

/// What the WAN emulator really adds to a round trip: the p50 of echo round
/// trips of `bytes` through a link of `controller` with the cluster's
/// one-way latency, minus the p50 of the same exchange straight over
/// loopback (`(direct_ms, through_link_ms)`). The proxy's own reads, queue
/// and writes cost a few hundred microseconds on top of the nominal RTT;
/// that is charged to the system under test, so the bench reports it.
pub async fn emulated_rtt(
    controller: &crate::wan::WanController,
    one_way_ms: u64,
    bytes: usize,
    samples: usize,
) -> anyhow::Result<EmulatedRtt> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let shape = crate::wan::Shape { latency_ms: one_way_ms, ..Default::default() };
    let cfg = crate::wan::LinkConfig::new("bench-rtt-probe", "127.0.0.1:0".parse()?, &echo_addr.to_string())
        .with_conditions(crate::wan::LinkConditions::symmetric(shape));
    let link = controller.add_link(cfg).await.map_err(|e| anyhow::anyhow!("starting the probe link: {e}"))?;
    let probe = |addr: std::net::SocketAddr| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let msg = vec![7u8; bytes];
        let mut back = vec![0u8; bytes];
        let mut lat = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t = Instant::now();
            s.write_all(&msg).await?;
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back)).await??;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lat.sort_by(f64::total_cmp);
        lat.get(lat.len() / 2).copied().ok_or_else(|| anyhow::anyhow!("no probe samples"))
    };
    let direct = probe(echo_addr).await;
    let through = probe(link.local_addr()).await;
    let seen = ReleaseLateness::of([&link.stats()]);
    // The probe is not part of the cluster's WAN: leave no link behind.
    controller.remove_link(link.name());
    echo.abort();
    Ok(EmulatedRtt {
        direct_ms: direct?,
        through_ms: through?,
        late_us: seen.mean_us(),
        read_lag_us: seen.mean_read_lag_us(),
    })
}

/// What [`emulated_rtt`] measured: p50 round trips straight and through
/// the emulator, how late the emulator released the probe's chunks on
/// average (µs beyond their due time) and how long after their arrival it
/// read them (not part of their delay).
pub struct EmulatedRtt {
    pub direct_ms: f64,
    pub through_ms: f64,
    pub late_us: Option<f64>,
    pub read_lag_us: Option<f64>,
}

/// Chunks released by a set of WAN links and their summed lateness (see
/// `LinkStats::release_late_us`), from the links' counters; the
/// difference of two readings covers what the links carried in between.
/// Also how long after their arrival the emulator read chunks
/// (`LinkStats::read_lag_us`): not charged to the system under test, but
/// shown, as the share a read-time stamp would have added.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReleaseLateness {
    pub chunks: u64,
    pub late_us: u64,
    pub reads: u64,
    pub read_lag_us: u64,
}

impl ReleaseLateness {
    pub fn of<'a>(links: impl IntoIterator<Item = &'a crate::wan::LinkStats>) -> Self {
        links.into_iter().fold(Self::default(), |a, s| Self {
            chunks: a.chunks + s.chunks_released,
            late_us: a.late_us + s.release_late_us,
            reads: a.reads + s.chunks_read,
            read_lag_us: a.read_lag_us + s.read_lag_us,
        })
    }

    /// What was released after `earlier` (a reading of the same links).
    pub fn since(self, earlier: Self) -> Self {
        Self {
            chunks: self.chunks.saturating_sub(earlier.chunks),
            late_us: self.late_us.saturating_sub(earlier.late_us),
            reads: self.reads.saturating_sub(earlier.reads),
            read_lag_us: self.read_lag_us.saturating_sub(earlier.read_lag_us),
        }
    }

    /// Mean lateness per chunk, if any chunk was released.
    pub fn mean_us(self) -> Option<f64> {
        (self.chunks > 0).then(|| self.late_us as f64 / self.chunks as f64)
    }

    /// Mean time from a chunk's arrival to the emulator's read of it, if
    /// any chunk was read.
    pub fn mean_read_lag_us(self) -> Option<f64> {
        (self.reads > 0).then(|| self.read_lag_us as f64 / self.reads as f64)
    }
}

/// Policy writes to attestd: one provider, one policy per client (distinct
/// keys, as etcd gets distinct keys), `value_bytes` of text each.
pub fn attestd_policy_writes(http: reqwest::Client, urls: Vec<String>, provider: String, value_bytes: usize) -> Op {
    Arc::new(move |n, client| {
        let http = http.clone();
        let url = format!(
            "{}/providers/{provider}/policies/{}",
            urls[client % urls.len()],
            ["SgxEnclave", "OpenEnclave", "TdxVm", "SevSnpVm", "Tpm"][client % 5]
        );
        let body = policy_text(n, value_bytes);
        Box::pin(async move {
            let r = http.put(url).header("content-type", "text/plain").body(body).send().await?;
            if !r.status().is_success() {
                bail!("status {}", r.status());
            }
            // Read the body: a dropped, unread HTTP/2 response is a stream
            // reset, and h2 closes a connection after 1024 of them.
            r.bytes().await?;
            Ok(())
        })
    })
}

/// `PUT` through etcd's v3 JSON gateway with the same value sizes.
pub fn etcd_puts(http: reqwest::Client, endpoints: Vec<String>, value_bytes: usize) -> Op {
    Arc::new(move |n, client| {
        let http = http.clone();
        let url = format!("{}/v3/kv/put", endpoints[client % endpoints.len()]);
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = serde_json::json!({"key": b64.encode(format!("bench/{client}")), "value": b64.encode(policy_text(n, value_bytes))});
        Box::pin(async move {
            let r = http.post(url).json(&body).send().await?;
            if !r.status().is_success() {
                bail!("status {}", r.status());
            }
            r.bytes().await?;
            Ok(())
        })
    })
}

/// A valid policy of about `len` bytes (padded with a trailing comment),
/// unique per write: attestd compiles every policy it stores.
pub fn policy_text(n: u64, len: usize) -> String {
    let mut s = format!("version=1.0; authorizationrules {{ => permit(); }}; issuancerules {{ }}; // write {n} ");
    while s.len() < len {
        s.push('x');
    }
    s
}

/// A 3-member etcd cluster on loopback (Debian's `etcd-server`).
pub struct Etcd {
    children: Vec<Child>,
    pub client_urls: Vec<String>,
    /// The client to use: trusts the cluster's CA when it serves TLS.
    pub http: reqwest::Client,
    _dir: PathBuf,
}

/// How the benchmark's etcd is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdSecurity {
    /// Plain HTTP for clients and peers (etcd's default).
    Plaintext,
    /// Configured like attestd: clients over TLS (server certificate), peers
    /// over mutual TLS, P-256 certificates from the same development PKI.
    Tls,
}

impl Etcd {
    /// The members' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// `http1`: the client speaks HTTP/1.1 only (over TLS it would
    /// otherwise negotiate HTTP/2; plain HTTP is HTTP/1.1 either way).
    pub async fn start(dir: &Path, security: EtcdSecurity, http1: bool) -> anyhow::Result<Self> {
        let bin = which("etcd").context("etcd not found: apt-get install etcd-server")?;
        let ports = crate::cluster::free_ports(6)?;
        let tls = security == EtcdSecurity::Tls;
        let scheme = if tls { "https" } else { "http" };
        let certs = dir.join("certs");
        if tls {
            let names: Vec<String> = (0..3).map(|i| format!("e{i}")).collect();
            attest_node::pki::generate(&certs, &names, &[]).context("generating etcd certificates")?;
        }
        let initial: Vec<String> = (0..3).map(|i| format!("e{i}={scheme}://127.0.0.1:{}", ports[2 * i + 1])).collect();
        let mut children = Vec::new();
        let mut client_urls = Vec::new();
        for i in 0..3 {
            let data = dir.join(format!("etcd-{i}"));
            std::fs::create_dir_all(&data)?;
            let client = format!("{scheme}://127.0.0.1:{}", ports[2 * i]);
            let peer = format!("{scheme}://127.0.0.1:{}", ports[2 * i + 1]);
            let log = std::fs::File::create(dir.join(format!("etcd-{i}.log")))?;
            let mut cmd = Command::new(&bin);
            cmd.args(["--name", &format!("e{i}"), "--data-dir"])
                .arg(&data)
                .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "attest-bench", "--log-level", "warn"]);
            if tls {
                let pem = certs.join(format!("e{i}.pem"));
                let key = certs.join(format!("e{i}.key"));
                let ca = certs.join("ca.pem");
                cmd.arg("--cert-file")
                    .arg(&pem)
                    .arg("--key-file")
                    .arg(&key)
                    .arg("--peer-cert-file")
                    .arg(&pem)
                    .arg("--peer-key-file")
                    .arg(&key)
                    .arg("--peer-trusted-ca-file")
                    .arg(&ca)
                    .arg("--peer-client-cert-auth");
            }
            let child = cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()?;
            children.push(child);
            client_urls.push(client);
        }
        let mut http = reqwest::Client::builder().pool_max_idle_per_host(256);
        if http1 {
            http = http.http1_only();
        }
        if tls {
            let ca = std::fs::read(certs.join("ca.pem")).context("reading the etcd CA")?;
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&ca)?);
        }
        let http = http.build()?;
        // Started first so a failed start still kills the members (Drop).
        let etcd = Self { children, client_urls, http, _dir: dir.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = etcd.http.get(format!("{}/health", etcd.client_urls[0])).send().await;
            if let Ok(r) = r {
                if r.status().is_success() && r.text().await.unwrap_or_default().contains("true") {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("etcd ({security:?}) did not become healthy; logs in {}", dir.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(etcd)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// Which CPUs the system under test (a node, a proxy) gets, and which
/// everything else (load generator, other processes) gets.
#[derive(Debug, Clone)]
pub struct CoreSplit {
    pub node: String,
    pub rest: String,
    pub node_cpus: usize,
}

impl CoreSplit {
    /// First half of the CPUs for the system under test, the rest for
    /// everything else;
    /// `None` on a single CPU.
    pub fn halves() -> Option<Self> {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if n < 2 {
            return None;
        }
        let half = n / 2;
        Some(CoreSplit { node: format!("0-{}", half - 1), rest: format!("{half}-{}", n - 1), node_cpus: half })
    }
}

/// Pins every thread of `pid` to `cpus` (a `taskset` list); threads created
/// later inherit it from their creators.
pub fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let mut last = String::new();
    // A thread that exits while taskset walks the list fails the call
    // (blocking-pool threads come and go): try again.
    for _ in 0..5 {
        let out = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid.to_string()])
            .output()
            .context("running taskset (util-linux)")?;
        if out.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("taskset -a -p -c {cpus} {pid}: {last}")
}

/// One row of [`disk_sync_latency`]: appends after `gap_ms` of idleness.
#[derive(Clone, Debug, Serialize)]
pub struct DiskRow {
    pub gap_ms: u64,
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

/// Latency of appending `bytes` to a file under `dir` and `fdatasync`ing
/// it (what a synced log append costs the disk), for each idle gap before
/// the append.
///
/// Why: on this project's virtual machines a sync after a pause is several
/// times slower than one of a steady stream (the host's I/O path idles),
/// so a node syncing every 20 ms (one client across a WAN) pays more per
/// sync than one syncing every millisecond (one client on loopback). The
/// control-plane bench's comparisons read differently once that is known;
/// operators can run it on their own disks.
pub fn disk_sync_latency(dir: &Path, bytes: usize, gaps_ms: &[u64], samples: usize) -> anyhow::Result<Vec<DiskRow>> {
    use std::io::Write;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("sync-probe.log");
    let buf = vec![b'x'; bytes];
    let mut rows = Vec::new();
    for &gap in gaps_ms {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut lat = Vec::with_capacity(samples);
        for _ in 0..samples {
            std::thread::sleep(Duration::from_millis(gap));
            let t = Instant::now();
            f.write_all(&buf)?;
            f.sync_data()?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(f64::total_cmp);
        rows.push(DiskRow {
            gap_ms: gap,
            samples,
            p50_ms: percentile(&lat, 0.5),
            p90_ms: percentile(&lat, 0.9),
            p99_ms: percentile(&lat, 0.99),
        });
    }
    let _ = std::fs::remove_file(&path);
    Ok(rows)
}

/// [`disk_sync_latency`]'s rows as a Markdown table.
pub fn disk_markdown(bytes: usize, rows: &[DiskRow]) -> String {
    let mut out = format!(
        "| idle gap before each append | appends | {bytes} B append + fdatasync p50 ms | p90 ms | p99 ms |\n| --- | --- | --- | --- | --- |\n"
    );
    for r in rows {
        out.push_str(&format!(
            "| {} ms | {} | {:.3} | {:.3} | {:.3} |\n",
            r.gap_ms, r.samples, r.p50_ms, r.p90_ms, r.p99_ms
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_lateness_is_a_mean_over_the_chunks_in_between() {
        let link = |chunks, late_us| crate::wan::LinkStats {
            chunks_released: chunks,
            release_late_us: late_us,
            chunks_read: chunks,
            read_lag_us: 2 * late_us,
            ..Default::default()
        };
        let before = ReleaseLateness::of(&[link(10, 1000), link(5, 500)]);
        assert_eq!(before, ReleaseLateness { chunks: 15, late_us: 1500, reads: 15, read_lag_us: 3000 });
        let after = ReleaseLateness::of(&[link(14, 1400), link(9, 1300)]);
        assert_eq!(after.since(before).mean_us(), Some(150.0));
        assert_eq!(after.since(before).mean_read_lag_us(), Some(300.0));
        assert_eq!(before.since(before).mean_us(), None, "nothing released in between");
        assert_eq!(before.since(before).mean_read_lag_us(), None, "nothing read in between");
    }

    #[test]
    fn cpu_shares_come_from_tick_differences() {
        // busy, steal, total
        let c = cpu_share(Some((100, 10, 1000)), Some((160, 30, 1200))).expect("a share");
        assert!((c.busy_pct - 30.0).abs() < 1e-9, "{c:?}");
        assert!((c.steal_pct - 10.0).abs() < 1e-9, "{c:?}");
        assert!(cpu_share(Some((1, 1, 10)), Some((1, 1, 10))).is_none(), "no time passed");
        assert!(cpu_share(None, Some((1, 1, 10))).is_none());
    }

    #[test]
    fn process_cpu_comes_from_utime_and_stime() {
        // A name with a space and a parenthesis, then state ppid … utime stime.
        let stat = "42 (tokio (x) rt) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 5 1 1";
        assert_eq!(stat_cpu_ticks(stat), Some(325));
        assert_eq!(stat_cpu_ticks("42 (short) S 1"), None);
        let me = processes_cpu_ticks(&[std::process::id()]).expect("our own /proc/<pid>/stat");
        assert!(processes_cpu_ticks(&[std::process::id(), std::process::id()]).expect("twice") >= 2 * me);
        assert_eq!(processes_cpu_ticks(&[]), None, "no servers, nothing measured");
        assert_eq!(processes_cpu_ticks(&[std::process::id(), u32::MAX]), None, "one unreadable spoils the sum");
    }

    #[test]
    fn this_machine_reports_cpu_ticks() {
        let (busy, steal, total) = cpu_ticks().expect("/proc/stat on Linux");
        assert!(busy + steal <= total);
    }

    #[test]
    fn the_disk_probe_measures_every_gap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = disk_sync_latency(dir.path(), 512, &[0, 1], 5).expect("probe");
        assert_eq!(rows.iter().map(|r| r.gap_ms).collect::<Vec<_>>(), vec![0, 1]);
        assert!(rows.iter().all(|r| r.samples == 5 && r.p50_ms > 0.0 && r.p50_ms <= r.p99_ms));
        assert!(!dir.path().join("sync-probe.log").exists(), "the probe file is removed");
        assert!(disk_markdown(512, &rows).contains("| 1 ms | 5 |"));
    }
}
