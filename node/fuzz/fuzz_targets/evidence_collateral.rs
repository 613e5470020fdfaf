//! `cargo fuzz run evidence_collateral`: see `attest_node::fuzzing` for what it feeds and why.
#![no_main]

use attest_node::fuzzing::{Harness, Target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    Harness::shared(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/vectors")).run(Target::EvidenceCollateral, data)
});
