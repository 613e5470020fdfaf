//! attest-chaos: the Jepsen-style harness of attestd (issue 7).
//!
//! Library pieces used by the cluster launcher and the failover drills:
//!
//! * [`wan`]: a userspace WAN link emulator (toxiproxy-style TCP proxies with
//!   latency, jitter, bandwidth, loss, reset and one-way or two-way cuts),
//!   controllable in-process or over HTTP, because this kernel has no `tc netem`.
//! * [`checker`]: history checkers (per-key linearizability, lost and
//!   double-applied writes) whose serializable verdicts go into drill reports.
#![forbid(unsafe_code)]

pub mod bench;
pub mod bench_attest;
pub mod bench_gateway;
pub mod checker;
pub mod cluster;
pub mod wan;
