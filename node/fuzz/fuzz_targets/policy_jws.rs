//! Fuzz policy-upload and signer-certificate JWS parsing.
#![no_main]

use attest_node::policy::jws::{PolicyCertificateRequest, PolicyUpload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PolicyUpload::parse(text);
        let _ = PolicyCertificateRequest::parse(text);
    }
});
