//! History checkers used by the drills to turn a recorded run into verdicts.
//!
//! * [`linearizability`]: a Porcupine-style checker (Wing & Gong search with
//!   Lowe's just-in-time linearization and memoization) for per-key register
//!   histories, i.e. the control-plane objects (policies, signer certificates)
//!   that clients write and read concurrently while faults are injected.
//! * [`durability`]: lost-write detection on the final state of every node
//!   after heal (RPO = 0 for acknowledged writes), plus double-apply detection
//!   on applied-log listings.
//! * [`tokens`]: every issued token verifies against each region's JWKS and
//!   carries the claims its evidence implies.
//! * [`failover`]: read-only answers while a region has no quorum,
//!   data-plane availability per second, RPO at a primary loss, and the
//!   measurements (RTO, control-plane recovery, replication-mode changes).
//! * [`verdicts`]: runs all of them over a drill's history and final state.
//!
//! Why hand-written rather than `stateright`: the drills need Unknown
//! (timed-out) operations whose completion is +∞, partitioning by key,
//! a bounded search with an explicit "undecided" verdict, and serializable
//! explanations that name the offending operations; Porcupine's algorithm
//! gives all of that in a few hundred lines.
//!
//! All result types are serde-serializable: they are embedded in drill reports.

pub mod durability;
pub mod failover;
pub mod linearizability;
pub mod tokens;
pub mod verdicts;

pub use durability::{
    check_durability, AppliedEntry, DurabilityOptions, DurabilityReport, DurabilityViolation, DurabilityViolationKind,
    NodeSnapshot, WriteRecord,
};
pub use linearizability::{
    check_linearizability, CheckError, CheckOptions, KeyResult, LinearizabilityReport, OpKind, OpSummary, Operation,
    Outcome, Undecided, Verdict, Violation,
};
