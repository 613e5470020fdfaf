//! `cargo fuzz run evidence_tpm`: see `attest_node::fuzzing` for what it feeds and why.
#![no_main]

use attest_node::fuzzing::{Harness, Target};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        Harness::new(
            &[
                (
                    "sgx",
                    include_bytes!(concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/../../../shared/vectors/sgx/dcap-qvl/sgx_quote_collateral.json"
                    )),
                ),
                (
                    "tdx",
                    include_bytes!(concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/../../../shared/vectors/tdx/dcap-qvl/tdx_quote_v4_collateral.json"
                    )),
                ),
            ],
            Some(include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/vectors/roots/gce_tpm_ek_root_1.der"
            ))),
        )
    })
}

fuzz_target!(|data: &[u8]| harness().run(Target::EvidenceTpm, data));
