//! Fuzz the tpm evidence parser and verifier (issue 3): no input may panic.
#![no_main]

use attest_node::evidence::{self, AttestationType, EvidenceRequest};
use libfuzzer_sys::fuzz_target;

use std::sync::OnceLock;

use attest_node::evidence::{CollateralStore, TrustAnchors, VerificationTime};

/// A store with real collateral, so that inputs can reach the deep checks.
fn store() -> &'static CollateralStore {
    static S: OnceLock<CollateralStore> = OnceLock::new();
    S.get_or_init(|| {
        let blobs: Vec<(&str, &[u8])> = vec![
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
        ];
        CollateralStore::from_blobs(TrustAnchors::builtin(), 1, blobs)
    })
}

fn at() -> VerificationTime {
    VerificationTime::from_unix(1_752_919_200) // 2025-07-19T10:00:00Z
}

fuzz_target!(|data: &[u8]| {
    let req = EvidenceRequest::new(data.to_vec()).with_nonce(vec![0x90, 0x09]);
    let _ = evidence::verify(AttestationType::Tpm, &req, store(), at());
});
