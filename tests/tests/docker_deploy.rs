//! The container deployment of `deploy/` end to end (issue 8): build the
//! images from the binaries this test run uses, `compose up` both regions
//! (with the replay override, so the recorded SGX vectors attest), attest
//! through each gateway, `docker kill` region A's containers, check that
//! attest continues through region B's gateway and that writes are refused
//! with `503 ControlPlaneReadOnly`, `docker start` region A again and check
//! that no acknowledged write was lost. Everything is torn down by a Drop
//! guard, also when an assertion fails.
//!
//! A second test runs the short `primary-outage` drill against the compose
//! deployment exactly as an operator would (`attest-chaos drill
//! primary-outage --short --docker …`, faults by `docker kill` / `start`)
//! and checks that its report passes.
//!
//! Needs Docker (engine and `docker compose` or `docker-compose`); where it
//! is missing each test prints a loud SKIPPED line and passes. Set
//! `ATTEST_SKIP_DOCKER=1` to skip on purpose. The compose project gets a
//! unique name, its own image tag and free host ports, so it does not
//! collide with an operator's `attestd` project on the same engine.
//! Every wait is bounded; nothing asserts on durations.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use attest_chaos::cluster::{authed_client, find_attestd, free_ports};
use attest_node::token::jwt::{decode_unverified, verify_jwt};
use attest_tests::{b64u, import_collateral_via, tempdir, vector, vectors};
use serde_json::{json, Value};

const REGION_A: [&str; 4] = ["node-a1", "node-a2", "node-a3", "gateway-a"];
const REGION_B: [&str; 3] = ["node-b1", "node-b2", "gateway-b"];
const NODES: [&str; 5] = ["node-a1", "node-a2", "node-a3", "node-b1", "node-b2"];
/// Host-port variables of `deploy/compose.yaml`, in the order of [`Ports`].
const PORT_VARS: [&str; 8] = [
    "ATTESTD_GATEWAY_A_PORT",
    "ATTESTD_GATEWAY_B_PORT",
    "ATTESTD_WAN_CONTROL_PORT",
    "ATTESTD_NODE_A1_PORT",
    "ATTESTD_NODE_A2_PORT",
    "ATTESTD_NODE_A3_PORT",
    "ATTESTD_NODE_B1_PORT",
    "ATTESTD_NODE_B2_PORT",
];
const HEALTHY_WITHIN: Duration = Duration::from_secs(180);

/// The message of this test's panic, kept so that the teardown can print
/// it again after the container logs and the backtrace: CI shows only the
/// start and the end of a long failing output, and the middle — where the
/// panic message is — is what gets cut.
static PANIC_MESSAGE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn remember_panic_messages() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            *PANIC_MESSAGE.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("panicked{at}: {msg}"));
            default(info);
        }));
    });
}

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Runs `argv` with `env` added, bounded by `within`; stdout on success.
async fn run(argv: &[String], env: &[(String, String)], within: Duration) -> anyhow::Result<String> {
    let (prog, args) = argv.split_first().context("empty command")?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args).envs(env.iter().cloned()).kill_on_drop(true).stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(within, cmd.output())
        .await
        .map_err(|_| anyhow::anyhow!("`{}` did not finish within {within:?}", argv.join(" ")))?
        .with_context(|| format!("running `{}`", argv.join(" ")))?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", argv.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The deployment's compose files: the base and the replay override.
fn compose_files() -> [PathBuf; 2] {
    let deploy = deploy_dir();
    [deploy.join("compose.yaml"), deploy.join("compose.replay.yaml")]
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The compose command that works here (`docker compose` or the
/// stand-alone `docker-compose`), or why the test cannot run.
async fn docker_and_compose() -> Result<Vec<String>, String> {
    if std::env::var_os("ATTEST_SKIP_DOCKER").is_some() {
        return Err("ATTEST_SKIP_DOCKER is set".into());
    }
    run(&argv(&["docker", "info"]), &[], Duration::from_secs(30))
        .await
        .map_err(|e| format!("`docker info` failed: {e:#}"))?;
    for candidate in [&["docker", "compose"][..], &["docker-compose"][..]] {
        let mut v = argv(candidate);
        v.push("version".into());
        if run(&v, &[], Duration::from_secs(30)).await.is_ok() {
            return Ok(argv(candidate));
        }
    }
    Err("neither `docker compose` nor `docker-compose` works".into())
}

/// Host ports of one deployment.
struct Ports {
    gateway_a: u16,
    gateway_b: u16,
    wan: u16,
    nodes: Vec<u16>,
}

/// A running compose project; `Drop` takes it down (volumes included) and
/// removes its images.
struct Deployment {
    /// The compose command alone (`docker compose` or `docker-compose`).
    command: Vec<String>,
    project: String,
    /// The compose command with project and files.
    compose: Vec<String>,
    env: Vec<(String, String)>,
    tag: String,
    ports: Ports,
    /// Container id of each service, read once after `up` (stopped
    /// containers keep their ids).
    ids: std::collections::BTreeMap<String, String>,
    dir: tempdir::Dir,
}

impl Deployment {
    async fn up(compose: Vec<String>) -> anyhow::Result<Self> {
        remember_panic_messages();
        let dir = tempdir::Dir::new("docker-deploy")?;
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let project = format!("attestd-test-{suffix}");
        let tag = format!("test-{suffix}");
        let p = free_ports(PORT_VARS.len())?;
        let ports = Ports { gateway_a: p[0], gateway_b: p[1], wan: p[2], nodes: p[3..].to_vec() };
        let mut env: Vec<(String, String)> =
            PORT_VARS.iter().zip(&p).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.push(("ATTESTD_IMAGE_TAG".into(), tag.clone()));
        env.push(("ATTESTD_PUBLISH_IP".into(), "127.0.0.1".into()));
        let mut full = compose.clone();
        full.push("-p".into());
        full.push(project.clone());
        for f in compose_files() {
            full.push("-f".into());
            full.push(f.display().to_string());
        }
        let mut d =
            Deployment { command: compose, project, compose: full, env, tag, ports, ids: Default::default(), dir };
        let deploy = deploy_dir();

        // The binaries of this test run, debug or release alike.
        let bin_dir = find_attestd()?.parent().map(Path::to_path_buf).context("attestd has no parent dir")?;
        let build = vec![
            deploy.join("build-images.sh").display().to_string(),
            "--tag".into(),
            d.tag.clone(),
            "--bin-dir".into(),
            bin_dir.display().to_string(),
        ];
        let sizes = run(&build, &[], Duration::from_secs(300)).await?;
        eprintln!("built images:\n{sizes}");
        d.compose(&["up", "-d"], Duration::from_secs(300)).await?;
        for svc in NODES.iter().chain(&["gateway-a", "gateway-b", "wan", "pki"]) {
            let id = d.compose(&["ps", "-q", svc], Duration::from_secs(60)).await?.trim().to_string();
            anyhow::ensure!(!id.is_empty(), "service {svc} has no container");
            d.ids.insert(svc.to_string(), id);
        }
        Ok(d)
    }

    async fn compose(&self, args: &[&str], within: Duration) -> anyhow::Result<String> {
        let mut v = self.compose.clone();
        v.extend(args.iter().map(|s| s.to_string()));
        run(&v, &self.env, within).await
    }

    fn id(&self, svc: &str) -> &str {
        self.ids.get(svc).map(String::as_str).unwrap_or("no-such-container")
    }

    async fn docker(&self, verb: &str, services: &[&str]) -> anyhow::Result<String> {
        let mut v = argv(&["docker", verb]);
        v.extend(services.iter().map(|s| self.id(s).to_string()));
        run(&v, &[], Duration::from_secs(120)).await
    }

    /// Waits until Docker reports every service's HEALTHCHECK healthy.
    async fn wait_healthy(&self, services: &[&str]) -> anyhow::Result<()> {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        let mut last = String::new();
        while Instant::now() < deadline {
            let mut v = argv(&["docker", "inspect", "-f", "{{.State.Health.Status}}"]);
            v.extend(services.iter().map(|s| self.id(s).to_string()));
            match run(&v, &[], Duration::from_secs(30)).await {
                Ok(out) if out.lines().all(|l| l.trim() == "healthy") => return Ok(()),
                Ok(out) => last = out.split_whitespace().collect::<Vec<_>>().join(" "),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        bail!("{services:?} not healthy within {HEALTHY_WITHIN:?}: {last}")
    }

    fn gateway(&self, which: char) -> String {
        format!("https://127.0.0.1:{}", if which == 'a' { self.ports.gateway_a } else { self.ports.gateway_b })
    }

    fn node(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.ports.nodes[i])
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // Synchronous and bounded: Drop also runs while a failed assertion
        // unwinds. Output goes to the test's stderr (logs) or nowhere.
        let run_blocking = |args: &[String], show: bool, within: Duration| {
            let Some((prog, rest)) = args.split_first() else { return };
            let out = || if show { std::process::Stdio::inherit() } else { std::process::Stdio::null() };
            let child = std::process::Command::new(prog)
                .args(rest)
                .envs(self.env.iter().cloned())
                .stdin(std::process::Stdio::null())
                .stdout(out())
                .stderr(out())
                .spawn();
            let Ok(mut child) = child else { return };
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("`{}` did not finish within {within:?}; killed", args.join(" "));
            let _ = child.kill();
            let _ = child.wait();
        };
        let compose = |args: &[&str]| {
            let mut v = self.compose.clone();
            v.extend(args.iter().map(|s| s.to_string()));
            v
        };
        if std::thread::panicking() {
            eprintln!("--- container logs (last lines per service) ---");
            run_blocking(&compose(&["logs", "--no-color", "--tail", "25"]), true, Duration::from_secs(60));
            if let Some(msg) = PANIC_MESSAGE.lock().unwrap_or_else(|p| p.into_inner()).take() {
                // At most the first lines: the failed checks come first.
                let head: Vec<&str> = msg.lines().take(40).collect();
                eprintln!("--- why the test failed (repeated from above) ---\n{}", head.join("\n"));
            }
        }
        run_blocking(&compose(&["down", "-v", "--remove-orphans", "-t", "5"]), false, Duration::from_secs(180));
        let images: Vec<String> =
            ["node", "gateway", "wan"].iter().map(|i| format!("attestd/{i}:{}", self.tag)).collect();
        let mut rmi = argv(&["docker", "rmi", "-f"]);
        rmi.extend(images);
        run_blocking(&rmi, false, Duration::from_secs(60));
    }
}

/// `POST /attest/OpenEnclave` of the recorded Azure SDK report; the status,
/// the region that served (`x-attest-region`) and the body.
async fn attest(http: &reqwest::Client, base: &str) -> anyhow::Result<(u16, String, Value)> {
    let body = json!({
        "report": b64u(&vector("sgx/azure-sdk-oe/oe_report_debug.bin")),
        "runtimeData": {"data": b64u(&vector("sgx/azure-sdk-oe/runtime_data.bin")), "dataType": "Binary"}
    });
    let r = http.post(format!("{base}/attest/OpenEnclave?api-version=2022-08-01")).json(&body).send().await?;
    let status = r.status().as_u16();
    let region = r.headers().get("x-attest-region").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    Ok((status, region, r.json().await.unwrap_or(Value::Null)))
}

/// Creates provider `name` through `base`: the status and the body.
async fn create_provider(http: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<(u16, Value)> {
    let r = http
        .put(format!("{base}/providers/{name}"))
        .header("x-ms-client-request-id", format!("docker-deploy-{name}"))
        .json(&json!({"trustModel": "AAD"}))
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
}

/// Retries `f` until it returns `Some`, for at most `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + within;
    let mut last = String::from("never tried");
    while Instant::now() < deadline {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("{what}: not within {within:?}; last: {last}")
}

/// Waits until every node reports the same state digest; returns it.
async fn wait_converged(http: &reqwest::Client, d: &Deployment, within: Duration) -> anyhow::Result<String> {
    eventually(within, "nodes converge", || async {
        let mut digests = Vec::new();
        for i in 0..NODES.len() {
            let r = http.get(format!("{}/admin/state", d.node(i))).send().await.map_err(|e| e.to_string())?;
            let s: Value = r.json().await.map_err(|e| e.to_string())?;
            digests.push(s["digest"].as_str().unwrap_or_default().to_string());
        }
        if !digests[0].is_empty() && digests.iter().all(|x| *x == digests[0]) {
            Ok(Some(digests[0].clone()))
        } else {
            Err(format!("digests {digests:?}"))
        }
    })
    .await
}

/// The compose command, or `None` after a loud SKIPPED banner.
async fn compose_or_skip(test: &str) -> Option<Vec<String>> {
    match docker_and_compose().await {
        Ok(c) => Some(c),
        Err(why) => {
            eprintln!("\n************************************************************************");
            eprintln!("*** SKIPPED docker_deploy::{test}: {why}");
            eprintln!("*** the container deployment (deploy/) was NOT tested");
            eprintln!("************************************************************************\n");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_in_containers_survive_the_loss_of_the_primary() {
    let Some(compose) = compose_or_skip("two_regions_in_containers_survive_the_loss_of_the_primary").await else {
        return;
    };
    let d = Deployment::up(compose).await.expect("images build and the deployment starts");
    let all: Vec<&str> = REGION_A.iter().chain(&REGION_B).copied().collect();
    d.wait_healthy(&all).await.expect("every node and gateway HEALTHCHECK passes");

    // The images run as the non-root user.
    for image in ["node", "gateway", "wan"] {
        let user = run(
            &argv(&["docker", "image", "inspect", "-f", "{{.Config.User}}", &format!("attestd/{image}:{}", d.tag)]),
            &[],
            Duration::from_secs(30),
        )
        .await
        .expect("image inspect");
        assert_eq!(user.trim(), "10001:10001", "attestd/{image} user");
    }
    // Every container has a read-only root file system (data on volumes).
    let mut ids: Vec<&str> = all.iter().map(|s| d.id(s)).collect();
    ids.push(d.id("wan"));
    let mut v = argv(&["docker", "inspect", "-f", "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}"]);
    v.extend(ids.iter().map(|s| s.to_string()));
    let out = run(&v, &[], Duration::from_secs(30)).await.expect("docker inspect");
    assert!(out.lines().all(|l| l.trim() == "true 10001:10001"), "read-only, non-root containers: {out}");

    // The CA and an Owner token come out of the deployment itself.
    let ca = d.dir.path().join("ca.pem");
    run(
        &argv(&["docker", "cp", &format!("{}:/certs/ca.pem", d.id("node-a1")), &ca.display().to_string()]),
        &[],
        Duration::from_secs(60),
    )
    .await
    .expect("docker cp the CA");
    let token = run(
        &argv(&["docker", "exec", d.id("node-a1"), "attestd", "dev-token", "--dir", "/certs", "--role", "Owner"]),
        &[],
        Duration::from_secs(60),
    )
    .await
    .expect("dev token from inside node-a1");
    let http = authed_client(Some(&ca), token.trim()).expect("client");

    // Collateral through gateway A, then every node applies it.
    eventually(Duration::from_secs(60), "collateral import through gateway-a", || async {
        import_collateral_via(&http, &d.gateway('a')).await.map(Some).map_err(|e| format!("{e:#}"))
    })
    .await
    .expect("collateral imported");
    wait_converged(&http, &d, Duration::from_secs(90)).await.expect("converged after the import");

    // Attest through each gateway: the primary region serves, and a token
    // verifies with the keys the other gateway publishes.
    let mut tokens = Vec::new();
    for g in ['a', 'b'] {
        let (status, region, body) = attest(&http, &d.gateway(g)).await.expect("attest sent");
        assert_eq!(status, 200, "attest via gateway-{g}: {body}");
        assert_eq!(region, "eastus2", "gateway-{g} routes to the primary region");
        tokens.push(body["token"].as_str().expect("token").to_string());
    }
    let (_, claims) = decode_unverified(&tokens[0]).expect("token decodes");
    assert_eq!(claims["iss"], "https://sharedeastus2.eastus2.attest.localhost");
    // Each node publishes its signing certificate through Raft after it
    // starts: wait (bounded) until the other gateway's /certs lists it.
    let (header, _) = decode_unverified(&tokens[0]).expect("token decodes");
    let kid = header["kid"].as_str().expect("kid").to_string();
    let jwks = eventually(Duration::from_secs(60), "the signing key in /certs", || async {
        let r = http.get(format!("{}/certs", d.gateway('b'))).send().await.map_err(|e| e.to_string())?;
        let jwks: Value = r.json().await.map_err(|e| e.to_string())?;
        let listed = jwks["keys"].as_array().is_some_and(|k| k.iter().any(|k| k["kid"] == kid.as_str()));
        Ok(listed.then_some(jwks))
    })
    .await
    .expect("kid published");
    verify_jwt(&tokens[0], &jwks, attest_node::api::system_clock(), 60).expect("token verifies with /certs");

    // Acknowledged writes through both gateways.
    let mut acknowledged = Vec::new();
    for i in 0..6 {
        let g = if i % 2 == 0 { 'a' } else { 'b' };
        let name = format!("before-{i}");
        let (status, body) = create_provider(&http, &d.gateway(g), &name).await.expect("write sent");
        assert!((200..300).contains(&status), "write {name} via gateway-{g}: {status} {body}");
        acknowledged.push(name);
    }

    // Inter-region traffic crossed the WAN emulator both ways.
    let links: Value = reqwest::get(format!("http://127.0.0.1:{}/links", d.ports.wan))
        .await
        .expect("WAN control API")
        .json()
        .await
        .expect("links");
    let bytes = |name: &str| {
        links.as_array().into_iter().flatten().find(|l| l["name"] == name).map_or(0, |l| {
            l["stats"]["bytes_a_to_b"].as_u64().unwrap_or(0) + l["stats"]["bytes_b_to_a"].as_u64().unwrap_or(0)
        })
    };
    for link in ["raft-node-b1", "raft-node-b2", "api-node-a1", "api-node-b1"] {
        assert!(bytes(link) > 0, "no traffic on WAN link {link}: {links}");
    }

    // --- lose region A: nodes and gateway, SIGKILL ------------------------
    d.docker("kill", &REGION_A).await.expect("docker kill region A");

    // Attest continues through gateway B (it fails over to centralus).
    for i in 0..5 {
        let (status, region, body) = attest(&http, &d.gateway('b')).await.expect("attest sent");
        assert_eq!(status, 200, "attest #{i} via gateway-b after region A died: {body}");
        assert_eq!(region, "centralus", "attest #{i} served by region B");
    }

    // Writes through gateway B are refused as read-only, explicitly.
    let mut n = 0;
    let readonly = eventually(Duration::from_secs(60), "writes refused as read-only", || {
        n += 1;
        let name = format!("during-{n}");
        let (http, base) = (http.clone(), d.gateway('b'));
        async move {
            let started = Instant::now();
            let (status, body) = create_provider(&http, &base, &name).await.map_err(|e| e.to_string())?;
            if (200..300).contains(&status) {
                return Err(format!("write {name} acknowledged without the primary region: {body}"));
            }
            if status == 503 && body["error"]["code"] == "ControlPlaneReadOnly" {
                return Ok(Some((name, body, started.elapsed())));
            }
            Err(format!("{status} {body}"))
        }
    })
    .await
    .expect("ControlPlaneReadOnly");
    let (refused, body, took) = readonly;
    eprintln!("write {refused} refused after {took:?}: {body}");
    // Reads still answer (every one of them), marked stale once the
    // answering node has itself gone a whole read-only bound without a
    // leader: each node times its own last leader contact, so the node
    // that refused the write may cross the bound a few milliseconds before
    // the one the gateway picks for the read.
    eventually(Duration::from_secs(10), "reads marked stale", || {
        let (http, base) = (http.clone(), d.gateway('b'));
        async move {
            let r = http.get(format!("{base}/providers")).send().await.map_err(|e| e.to_string())?;
            assert_eq!(r.status().as_u16(), 200, "reads answer while read-only");
            match r.headers().get("x-attest-stale").and_then(|v| v.to_str().ok()) {
                Some("true") => Ok(Some(())),
                other => Err(format!("x-attest-stale: {other:?}")),
            }
        }
    })
    .await
    .expect("reads marked stale");

    // --- region A returns ----------------------------------------------------
    d.docker("start", &REGION_A).await.expect("docker start region A");
    d.wait_healthy(&all).await.expect("region A healthy again");
    let (status, body) = eventually(Duration::from_secs(90), "writable again", || async {
        let (s, b) = create_provider(&http, &d.gateway('a'), "after-restart").await.map_err(|e| e.to_string())?;
        if (200..300).contains(&s) {
            Ok(Some((s, b)))
        } else {
            Err(format!("{s} {b}"))
        }
    })
    .await
    .expect("the control plane takes writes again");
    assert!((200..300).contains(&status), "{body}");
    acknowledged.push("after-restart".into());

    // Nothing acknowledged was lost, on any node.
    wait_converged(&http, &d, Duration::from_secs(120)).await.expect("converged after the restart");
    for (i, node) in NODES.iter().enumerate() {
        let list: Value =
            http.get(format!("{}/providers", d.node(i))).send().await.expect("list").json().await.expect("json");
        let names: Vec<&str> =
            list["value"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
        for want in &acknowledged {
            assert!(names.contains(&want.as_str()), "{node} lost acknowledged provider {want}: {names:?}");
        }
        assert!(!names.contains(&refused.as_str()), "{node}: the refused write {refused} appeared: {names:?}");
    }
    let (status, region, body) = attest(&http, &d.gateway('b')).await.expect("attest sent");
    assert_eq!(status, 200, "{body}");
    eprintln!("after the restart gateway-b is served by {region}");
}

/// `attest-chaos drill primary-outage --short --docker` against the compose
/// deployment: the drill finds the published ports, the CA and an Owner
/// token through compose, kills region A's node containers with `docker
/// kill`, holds, starts them again, and writes the same report as a local
/// drill; every check must pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_drill_passes_against_the_containers() {
    let Some(compose) = compose_or_skip("a_short_drill_passes_against_the_containers").await else {
        return;
    };
    let d = Deployment::up(compose).await.expect("images build and the deployment starts");
    let all: Vec<&str> = REGION_A.iter().chain(&REGION_B).copied().collect();
    d.wait_healthy(&all).await.expect("every node and gateway HEALTHCHECK passes");

    let chaos = find_attestd().expect("attestd binary").with_file_name("attest-chaos");
    let out = d.dir.path().join("report");
    let mut cmd = vec![
        chaos.display().to_string(),
        "drill".into(),
        "primary-outage".into(),
        "--short".into(),
        "--no-progress".into(),
        "--docker".into(),
        "--compose-command".into(),
        d.command.join(" "),
        "--compose-project".into(),
        d.project.clone(),
        "--out".into(),
        out.display().to_string(),
        "--dir".into(),
        d.dir.path().join("scratch").display().to_string(),
        "--vectors".into(),
        vectors().display().to_string(),
    ];
    for f in compose_files() {
        cmd.push("--compose-file".into());
        cmd.push(f.display().to_string());
    }
    for (k, v) in &d.env {
        cmd.push("--compose-env".into());
        cmd.push(format!("{k}={v}"));
    }
    eprintln!("running: {}", cmd.join(" "));
    // The drill's own output (progress, verdict) goes to the test's log.
    let status = tokio::time::timeout(
        Duration::from_secs(420),
        tokio::process::Command::new(&cmd[0]).args(&cmd[1..]).kill_on_drop(true).status(),
    )
    .await
    .expect("the drill finishes within 7 minutes")
    .expect("attest-chaos runs");

    // The report outlives the scratch directory when asked to (post-mortems,
    // the samples in docs/drills/docker/).
    if let Some(keep) = std::env::var_os("ATTEST_DRILL_REPORTS") {
        let to = PathBuf::from(keep).join("docker-primary-outage");
        let _ = std::fs::create_dir_all(&to);
        for f in ["report.md", "report.json", "timeline.svg", "history.jsonl"] {
            let _ = std::fs::copy(out.join(f), to.join(f));
        }
    }
    let report = attest_chaos::drill::load_report(&out).expect("the drill wrote report.json");
    let failed: Vec<String> = report.failed_checks().iter().map(|c| format!("{}: {}", c.id, c.summary)).collect();
    assert!(
        status.success(),
        "attest-chaos drill exited with {status}:\n{}\n\n{}",
        failed.join("\n"),
        report.markdown()
    );
    assert_eq!(
        report.verdict,
        attest_chaos::checker::verdicts::Status::Pass,
        "{}\n\n{}",
        failed.join("\n"),
        report.markdown()
    );
    assert_eq!(report.backend, "docker");
    for f in ["report.md", "report.json", "timeline.svg", "history.jsonl"] {
        assert!(out.join(f).is_file(), "the drill wrote {f}");
    }
    // The region was really killed and started through Docker, without an error.
    let labels: Vec<(&str, bool)> = report.faults.iter().map(|f| (f.label.as_str(), f.error.is_none())).collect();
    assert!(labels.contains(&("kill -9 region eastus2", true)), "{labels:?}");
    assert!(labels.contains(&("start region eastus2", true)), "{labels:?}");
    assert!(report.operations.attest.ok > 0 && report.operations.writes.ok > 0, "{:?}", report.operations);
    // The deployment is whole again afterwards.
    d.wait_healthy(&all).await.expect("every container healthy after the drill");
}
