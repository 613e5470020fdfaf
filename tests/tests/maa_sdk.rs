//! Microsoft's Azure Attestation Python SDK, unmodified, against a real
//! 3 + 2 cluster: `tests/python/maa_sdk_test.py` attests the SDK's own
//! OpenEnclave vectors with full client-side token validation, manages
//! policies and policy signers on AAD and Isolated providers, and cleans up.
//! `docs/maa-sdk-compat.md` says what the SDK sends and checks.
//!
//! The SDK lives in a virtualenv at `$HOME/.cache/attestd/pyenv` (override:
//! `ATTEST_PYENV`), built from `tests/python/requirements.txt` with
//! `python3` (override: `ATTEST_PYTHON`) and rebuilt only when the
//! requirements change. `ATTEST_SKIP_SDK_TEST=1` skips the test (machines
//! without Python or without access to PyPI).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use attest_tests::{import_collateral, launch, vectors, GRACE_S, PINNED};

const VENV_CREATE_TIMEOUT: Duration = Duration::from_secs(180);
const PIP_INSTALL_TIMEOUT: Duration = Duration::from_secs(900);
const IMPORT_CHECK_TIMEOUT: Duration = Duration::from_secs(60);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pyenv_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("ATTEST_PYENV") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("attestd").join("pyenv")
}

/// 64-bit FNV-1a: a stable content hash for the stamp file (no hashing
/// crate is a dependency of this crate, and `DefaultHasher` is not stable
/// across Rust releases).
fn fnv1a64(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

struct Ran {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn dump(&self) -> String {
        format!("exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `cmd` to completion within `limit`; the child is killed when the
/// limit passes (kill_on_drop) and that is an error.
async fn run(mut cmd: tokio::process::Command, limit: Duration, what: &str) -> anyhow::Result<Ran> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| anyhow::anyhow!("{what}: cannot start: {e}"))?;
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(r) => r.map_err(|e| anyhow::anyhow!("{what}: {e}"))?,
        Err(_) => anyhow::bail!("{what}: still running after {limit:?}; killed"),
    };
    Ok(Ran {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn py_cmd(python: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(python);
    // No __pycache__ next to the script, no pip self-update chatter.
    cmd.env("PYTHONDONTWRITEBYTECODE", "1").env("PYTHONUNBUFFERED", "1").env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
    cmd
}

async fn importable(python: &Path) -> anyhow::Result<Ran> {
    let mut cmd = py_cmd(python);
    cmd.arg("-c").arg("import azure.security.attestation, azure.core, cryptography, requests");
    run(cmd, IMPORT_CHECK_TIMEOUT, "import check").await
}

/// Creates or refreshes the virtualenv and returns its interpreter. pip runs
/// only when the stamp (hash of requirements.txt and the interpreter's
/// version) differs or the SDK cannot be imported.
async fn ensure_pyenv() -> anyhow::Result<PathBuf> {
    let requirements = workspace_root().join("tests/python/requirements.txt");
    let req_text =
        std::fs::read(&requirements).map_err(|e| anyhow::anyhow!("reading {}: {e}", requirements.display()))?;
    let dir = pyenv_dir();
    let python = dir.join("bin").join("python3");
    if !python.exists() {
        std::fs::create_dir_all(dir.parent().unwrap_or(dir.as_path()))?;
        let base = std::env::var("ATTEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut cmd = tokio::process::Command::new(&base);
        cmd.arg("-m").arg("venv").arg("--clear").arg(&dir);
        let r = run(cmd, VENV_CREATE_TIMEOUT, "python3 -m venv").await?;
        anyhow::ensure!(r.status.success(), "`{base} -m venv {}` failed\n{}", dir.display(), r.dump());
    }
    let mut cmd = py_cmd(&python);
    cmd.arg("-c").arg("import sys; print(sys.version)");
    let version = run(cmd, IMPORT_CHECK_TIMEOUT, "python --version").await?;
    anyhow::ensure!(version.status.success(), "the virtualenv's python does not run\n{}", version.dump());
    let stamp_path = dir.join("attestd-requirements.stamp");
    let stamp = fnv1a64(&[req_text.as_slice(), version.stdout.trim().as_bytes()]);
    let current = std::fs::read_to_string(&stamp_path).unwrap_or_default();
    if current.trim() == stamp && importable(&python).await.is_ok_and(|r| r.status.success()) {
        return Ok(python);
    }
    eprintln!("maa_sdk: installing {} into {}", requirements.display(), dir.display());
    let _ = std::fs::remove_file(&stamp_path);
    let mut cmd = py_cmd(&python);
    cmd.args(["-m", "pip", "install", "--quiet", "--no-input", "-r"]).arg(&requirements);
    let r = run(cmd, PIP_INSTALL_TIMEOUT, "pip install -r tests/python/requirements.txt").await?;
    anyhow::ensure!(r.status.success(), "pip install failed\n{}", r.dump());
    let check = importable(&python).await?;
    anyhow::ensure!(check.status.success(), "the SDK is not importable after pip install\n{}", check.dump());
    let tmp = dir.join("attestd-requirements.stamp.tmp");
    std::fs::write(&tmp, format!("{stamp}\n"))?;
    std::fs::rename(&tmp, &stamp_path)?;
    Ok(python)
}

/// The Intel collateral the azure-sdk-oe vectors verify against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_python_sdk_against_the_cluster() {
    if std::env::var_os("ATTEST_SKIP_SDK_TEST").is_some() {
        eprintln!("maa_sdk: skipped (ATTEST_SKIP_SDK_TEST is set)");
        return;
    }
    // The virtualenv first: it may take minutes the first time, and a
    // machine without Python should fail before a cluster is started.
    let python = ensure_pyenv().await.expect("the Python SDK environment");

    let (c, _dir) = launch("maa-sdk", |s| {
        s.pinned_verification_time = Some(PINNED.into());
        s.collateral_grace_s = GRACE_S;
    })
    .await
    .expect("cluster starts");
    let node = c.primary_ids()[0];
    import_collateral(&c, node).await;
    c.wait_converged(&c.ids(), 0, Duration::from_secs(60)).await.expect("converged");

    let script = workspace_root().join("tests/python/maa_sdk_test.py");
    let mut cmd = py_cmd(&python);
    cmd.arg(&script)
        .current_dir(workspace_root())
        .env("ATTESTD_ENDPOINT", c.url(node))
        .env("ATTESTD_CA", c.ca_path())
        .env("ATTESTD_TOKEN_OWNER", c.bearer("Owner").expect("owner token"))
        .env("ATTESTD_TOKEN_CONTRIBUTOR", c.bearer("Contributor").expect("contributor token"))
        .env("ATTESTD_TOKEN_READER", c.bearer("Reader").expect("reader token"))
        .env("ATTESTD_VECTORS", vectors())
        .env("ATTESTD_SHARED_PROVIDER", c.shared_provider(&c.spec.primary_region));
    let r = match run(cmd, SCRIPT_TIMEOUT, "maa_sdk_test.py").await {
        Ok(r) => r,
        Err(e) => panic!("{e}\n--- node {node} log (tail) ---\n{}", c.tail_log(node)),
    };
    if !r.status.success() {
        panic!("the Azure SDK test failed\n{}\n--- node {node} log (tail) ---\n{}", r.dump(), c.tail_log(node));
    }
    print!("{}", r.stdout);
    assert!(r.stdout.contains("PASS 7 "), "the script exited 0 without running every case\n{}", r.dump());
}
