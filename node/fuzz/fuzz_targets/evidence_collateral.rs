//! Fuzz collateral import (issue 3): any blob is classified, verified or rejected, never a panic.
#![no_main]

use attest_node::evidence::{CollateralStore, TrustAnchors};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = CollateralStore::from_blobs(TrustAnchors::builtin(), 0, vec![("fuzz", data)]);
    let _ = s.rejected().len();
});
