//! `attest-chaos up`, the README's quick-start command, as a user runs it:
//! the real binary starts the local 3 + 2 cluster with its gateways, a node
//! killed by hand is reported and reaped while the rest keeps running, and
//! Ctrl-C (SIGINT) stops every process it started.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

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

/// Whether `pid` is a live process (a zombie counts as not reaped, i.e. alive).
fn exists(pid: i32) -> bool {
    std::fs::metadata(format!("/proc/{pid}")).is_ok()
}

fn is_zombie(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (comm) state ...`: the state follows the last ')'.
    stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')).unwrap_or(false)
}

/// The running `up`: interrupted (and so cleaned up by itself) when the
/// test fails early, so a failure leaves no cluster behind.
struct Up(Child);

impl Up {
    /// SIGINT, then the exit status within `within` (None: still running).
    fn interrupt(&mut self, within: Duration) -> Option<ExitStatus> {
        // SAFETY: kill(2) on our own child's pid; no memory involved.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + within;
        loop {
            match self.0.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => return None,
            }
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) && self.interrupt(Duration::from_secs(30)).is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn up_reports_and_reaps_a_killed_node_and_ctrl_c_stops_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = Command::new(env!("CARGO_BIN_EXE_attest-chaos"))
        .arg("up")
        .arg("--dir")
        .arg(dir.path().join("cluster"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting attest-chaos up");
    let mut up = Up(child);
    let out = lines(up.0.stdout.take().expect("stdout"));
    let err = lines(up.0.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    let ready = wait_line(&out, Duration::from_secs(240), &mut seen, |l| l.contains("press Ctrl-C to stop"));
    if ready.is_none() {
        drop(up);
        let stderr: Vec<String> = err.try_iter().collect();
        panic!("the cluster did not come up:\n{}\n{}", seen.join("\n"), stderr.join("\n"));
    }
    let listed = |prefix: &str| -> Vec<i32> {
        seen.iter().filter(|l| l.trim_start().starts_with(prefix)).filter_map(|l| pid_of(l)).collect()
    };
    let nodes = listed("node ");
    let gateways = listed("gateway ");
    assert_eq!(nodes.len(), 5, "five nodes with their pids in:\n{}", seen.join("\n"));
    assert_eq!(gateways.len(), 2, "two gateways with their pids in:\n{}", seen.join("\n"));
    assert!(nodes.iter().chain(&gateways).all(|p| exists(*p) && !is_zombie(*p)));

    // Kill the last node (a secondary-region node) behind `up`'s back.
    let victim = nodes[4];
    // SAFETY: kill(2) on a pid this test just read; no memory involved.
    assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
    let mut errs = Vec::new();
    let report =
        wait_line(&err, Duration::from_secs(30), &mut errs, |l| l.starts_with("node 5 ") && l.contains("exited"));
    assert!(report.is_some(), "no exit report for node 5; stderr:\n{}", errs.join("\n"));
    let report = report.unwrap_or_default();
    assert!(report.contains("SIGKILL") && report.contains("keep running"), "{report}");
    assert!(!(exists(victim) && is_zombie(victim)), "node 5 (pid {victim}) was left a zombie");
    assert!(
        nodes[..4].iter().chain(&gateways).all(|p| exists(*p) && !is_zombie(*p)),
        "the other processes keep running"
    );

    // Ctrl-C stops the rest and `up` exits cleanly.
    let status = up.interrupt(Duration::from_secs(60)).expect("attest-chaos up exits within 60 s of SIGINT");
    assert!(status.success(), "attest-chaos up exited with {status}");
    let left: Vec<i32> = nodes[..4].iter().chain(&gateways).copied().filter(|p| exists(*p)).collect();
    assert!(left.is_empty(), "processes left running after Ctrl-C: {left:?}");
}
