//! attest-chaos: the Jepsen-style harness of attestd (issue 7).
//!
//! Library pieces used by the cluster launcher and the failover drills:
//!
//! * [`cluster`]: a local two-region cluster of real `attestd` processes.
//! * [`wan`]: a userspace WAN link emulator (toxiproxy-style TCP proxies with
//!   latency, jitter, bandwidth, loss, reset and one-way or two-way cuts),
//!   controllable in-process or over HTTP, because this kernel has no `tc netem`.
//! * [`faults`]: the faults a drill injects, behind one trait with a local
//!   (processes, WAN links, tmpfs disks) and a docker compose implementation.
//! * [`workload`]: attest, write and read clients that record every operation
//!   in a [`history`]; [`monitor`] polls every node's status into it.
//! * [`checker`]: history checkers (per-key linearizability, lost writes,
//!   tokens, read-only behaviour, availability, RPO, RTO) whose serializable
//!   verdicts go into drill reports.
//! * [`drill`]: the scenarios (`attest-chaos drill <scenario>`) and their runner;
//!   [`report`] renders a run as Markdown and JSON, [`timeline`] as an SVG chart.
#![forbid(unsafe_code)]

pub mod bench;
pub mod bench_attest;
pub mod bench_gateway;
pub mod checker;
pub mod cluster;
pub mod drill;
pub mod faults;
pub mod history;
pub mod monitor;
pub mod report;
pub mod timeline;
pub mod wan;
pub mod workload;
