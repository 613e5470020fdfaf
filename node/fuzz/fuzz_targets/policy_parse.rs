//! Fuzz the policy parser: any bytes must give a policy or a typed error,
//! never a panic or a stack overflow; a policy that parses must evaluate
//! (to permit or a typed error) on a small claim set.
#![no_main]

use attest_node::policy::{Claim, CompiledPolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = CompiledPolicy::compile_bytes(data) {
        let claims = [
            Claim::service("x-ms-sgx-is-debuggable", false),
            Claim::service("x-ms-sgx-svn", 1i64),
            Claim::service("x-ms-sgx-mrsigner", "00"),
            Claim::service("events", "{\"Events\":[]}"),
        ];
        let _ = policy.evaluate(&claims);
    }
});
