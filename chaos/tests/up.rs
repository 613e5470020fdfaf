//! `attest-chaos up`, the README's quick-start command, as a user runs it:
//! the real binary starts the local 3 + 2 cluster with its gateways, a node
//! killed by hand is reported and reaped while the rest keeps running, and
//! Ctrl-C (SIGINT) stops every process it started.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use attest_chaos::cluster::process_state;

/// Forwards a child's output line by line (the test reads it with deadlines).
fn lines(from: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads lines until one satisfies `want`; everything read goes to `seen`.
fn wait_line(
    rx: &Receiver<String>,
    within: Duration,
    seen: &mut Vec<String>,
    want: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if want(&line) {
                    return Some(line);
                }
            }
            Err(_) => return None,
        }
    }
    None
}

/// The `pid N` field of an `up` listing line.
fn pid_of(line: &str) -> Option<i32> {
    let mut words = line.split_whitespace();
    words.by_ref().find(|w| *w == "pid")?;
    words.next()?.parse().ok()
}

/// Whether `pid` is a process at all (a zombie not yet reaped counts).
fn exists(pid: i32) -> bool {
    process_state(pid as u32).is_some()
}

fn is_zombie(pid: i32) -> bool {
    process_state(pid as u32) == Some('Z')
}

/// The running `up`: interrupted (and so cleaned up by itself) when the
/// test fails early, so a failure leaves no cluster behind.
struct Up {
    child: Child,
    /// Its stderr, line by line (exit reports go there).
    err: Receiver<String>,
    /// Its stdout up to the "press Ctrl-C" prompt (the listing).
    listing: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Up {
    /// Starts `attest-chaos up` in a fresh directory and waits for its prompt.
    fn start() -> Up {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_attest-chaos"))
            .arg("up")
            .arg("--dir")
            .arg(dir.path().join("cluster"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting attest-chaos up");
        let out = lines(child.stdout.take().expect("stdout"));
        let err = lines(child.stderr.take().expect("stderr"));
        let mut up = Up { child, err, listing: Vec::new(), _dir: dir };
        let ready = wait_line(&out, Duration::from_secs(240), &mut up.listing, |l| l.contains("press Ctrl-C to stop"));
        if ready.is_none() {
            let listing = std::mem::take(&mut up.listing).join("\n");
            let stderr: Vec<String> = up.err.try_iter().collect();
            drop(up);
            panic!("the cluster did not come up:\n{listing}\n{}", stderr.join("\n"));
        }
        up
    }

    /// The pids of the listed processes whose line starts with `prefix`.
    fn pids(&self, prefix: &str) -> Vec<i32> {
        self.listing.iter().filter(|l| l.trim_start().starts_with(prefix)).filter_map(|l| pid_of(l)).collect()
    }

    /// Sends `sig`, then the exit status within `within` (None: still running).
    fn signal(&mut self, sig: i32, within: Duration) -> Option<ExitStatus> {
        // SAFETY: kill(2) on our own child's pid; no memory involved.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => return None,
            }
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) && self.signal(libc::SIGINT, Duration::from_secs(30)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn up_reports_and_reaps_a_killed_node_and_ctrl_c_stops_everything() {
    let mut up = Up::start();
    let nodes = up.pids("node ");
    let gateways = up.pids("gateway ");
    assert_eq!(nodes.len(), 5, "five nodes with their pids in:\n{}", up.listing.join("\n"));
    assert_eq!(gateways.len(), 2, "two gateways with their pids in:\n{}", up.listing.join("\n"));
    assert!(nodes.iter().chain(&gateways).all(|p| exists(*p) && !is_zombie(*p)));

    // Kill the last node (a secondary-region node) behind `up`'s back.
    let victim = nodes[4];
    // SAFETY: kill(2) on a pid this test just read; no memory involved.
    assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
    let mut errs = Vec::new();
    let report =
        wait_line(&up.err, Duration::from_secs(30), &mut errs, |l| l.starts_with("node 5 ") && l.contains("exited"));
    assert!(report.is_some(), "no exit report for node 5; stderr:\n{}", errs.join("\n"));
    let report = report.unwrap_or_default();
    assert!(report.contains("SIGKILL") && report.contains("keep running"), "{report}");
    assert!(!(exists(victim) && is_zombie(victim)), "node 5 (pid {victim}) was left a zombie");
    assert!(
        nodes[..4].iter().chain(&gateways).all(|p| exists(*p) && !is_zombie(*p)),
        "the other processes keep running"
    );

    // Ctrl-C stops the rest and `up` exits cleanly.
    let status = up.signal(libc::SIGINT, Duration::from_secs(60)).expect("attest-chaos up exits within 60 s of SIGINT");
    assert!(status.success(), "attest-chaos up exited with {status}");
    let left: Vec<i32> = nodes[..4].iter().chain(&gateways).copied().filter(|p| exists(*p)).collect();
    assert!(left.is_empty(), "processes left running after Ctrl-C: {left:?}");
}

/// `kill <pid of up>` (or a process manager stopping it) must not leave the
/// cluster running orphaned.
#[test]
fn up_stops_everything_on_sigterm() {
    let mut up = Up::start();
    let all: Vec<i32> = up.pids("node ").into_iter().chain(up.pids("gateway ")).collect();
    assert_eq!(all.len(), 7, "five nodes and two gateways in:\n{}", up.listing.join("\n"));
    let status =
        up.signal(libc::SIGTERM, Duration::from_secs(60)).expect("attest-chaos up exits within 60 s of SIGTERM");
    assert!(status.success(), "attest-chaos up exited with {status}");
    let left: Vec<i32> = all.into_iter().filter(|p| exists(*p)).collect();
    assert!(left.is_empty(), "processes left running after SIGTERM: {left:?}");
}
