//! Policy evaluation benchmark (issue 4): a cached, compiled policy
//! evaluated against a realistic SGX claim set. Targets: default SGX policy
//! < 5 µs, 20-rule policy < 20 µs per evaluation.
//!
//! Run: `cargo bench -p attest-node --bench policy_eval`.

use std::hint::black_box;
use std::sync::Arc;

use attest_node::policy::defaults::DEFAULT_SGX_POLICY;
use attest_node::policy::{Claim, ClaimValue, CompiledPolicy};
use criterion::{criterion_group, criterion_main, Criterion};

/// The claims an SGX verifier produces for a typical quote.
fn sgx_claims() -> Vec<Claim> {
    let hex = |b: u8| format!("{b:02x}").repeat(32);
    vec![
        Claim::service("x-ms-ver", "1.0"),
        Claim::service("x-ms-attestation-type", "sgx"),
        Claim::service("x-ms-sgx-is-debuggable", false),
        Claim::service("x-ms-sgx-mrsigner", hex(0x4a)),
        Claim::service("x-ms-sgx-mrenclave", hex(0x29)),
        Claim::service("x-ms-sgx-product-id", 1i64),
        Claim::service("x-ms-sgx-svn", 3i64),
        Claim::service("x-ms-sgx-report-data", format!("{}{}", hex(0x28), "00".repeat(32))),
        Claim::service("x-ms-sgx-config-id", "00".repeat(64)),
        Claim::service("x-ms-sgx-config-svn", 0i64),
        Claim::service("x-ms-sgx-isv-extended-product-id", "00".repeat(16)),
        Claim::service("x-ms-sgx-isv-family-id", "00".repeat(16)),
        Claim::service(
            "x-ms-sgx-collateral",
            ClaimValue::Json(serde_json::json!({
                "qeidcertshash": hex(1), "qeidcrlhash": hex(2), "qeidhash": hex(3),
                "quotehash": hex(4), "tcbinfocertshash": hex(5), "tcbinfocrlhash": hex(6),
                "tcbinfohash": hex(7)
            })),
        ),
        Claim::service(
            "x-ms-runtime",
            ClaimValue::Json(serde_json::json!({"jwk": {"kty": "EC", "crv": "P-256",
                "x": "18wHLeIgW9wVN6VD1Txgpqy2LszYkMf6J8njVAibvhM",
                "y": "cV4dS4UaLMgP_4fY4j8ir7cl1TXlFdAgcx55o7TkcSA"}})),
        ),
        Claim::service("x-ms-sgx-tcbidentifier", "azuredefault"),
    ]
}

/// 20 rules: 1 configuration, 5 authorization, 14 issuance.
fn twenty_rule_policy() -> String {
    let mrsigner = "4a".repeat(32);
    let mut p = String::from(
        "version=1.1;\nconfigurationrules{\n => issueproperty(type=\"x-ms-sgx-tcbidentifier\", value=\"azuredefault\");\n};\nauthorizationrules{\n",
    );
    for (i, signer) in ["aa".repeat(32), "bb".repeat(32), "cc".repeat(32), "dd".repeat(32), mrsigner].iter().enumerate()
    {
        p.push_str(&format!(
            " [type==\"x-ms-sgx-is-debuggable\", value==false] && [type==\"x-ms-sgx-product-id\", value=={}] && [type==\"x-ms-sgx-svn\", value>=1] && [type==\"x-ms-sgx-mrsigner\", value==\"{signer}\"] => permit();\n",
            if i == 4 { 1 } else { i + 10 }
        ));
    }
    p.push_str("};\nissuancerules{\n");
    for (from, to) in [
        ("x-ms-sgx-is-debuggable", "is-debuggable"),
        ("x-ms-sgx-mrsigner", "sgx-mrsigner"),
        ("x-ms-sgx-mrenclave", "sgx-mrenclave"),
        ("x-ms-sgx-product-id", "product-id"),
        ("x-ms-sgx-svn", "svn"),
        ("x-ms-attestation-type", "tee"),
        ("x-ms-sgx-config-svn", "config-svn"),
        ("x-ms-sgx-isv-family-id", "family-id"),
    ] {
        p.push_str(&format!(" c:[type==\"{from}\"] => issue(type=\"{to}\", value=c.value);\n"));
    }
    p.push_str(" [type==\"x-ms-sgx-svn\", value>=3] => issue(type=\"svn-ok\", value=true);\n");
    p.push_str(" [type==\"x-ms-sgx-svn\", value<3] => issue(type=\"svn-ok\", value=false);\n");
    p.push_str(" c:[type==\"x-ms-sgx-mrenclave\"] && [type==\"x-ms-sgx-is-debuggable\", value==false] => add(type=\"prod-enclave\", value=c.value);\n");
    p.push_str(" c:[type==\"prod-enclave\", issuer==\"AttestationPolicy\"] => issue(type=\"production-enclave\", value=c.value);\n");
    p.push_str(" [type==\"x-ms-sgx-tcbidentifier\", value==\"azuredefault\"] => issue(type=\"baseline\", value=\"azuredefault\");\n");
    p.push_str(" => issue(type=\"policy-name\", value=\"bench-20\");\n};\n");
    p
}

fn bench(c: &mut Criterion) {
    let claims = sgx_claims();
    let default = Arc::new(CompiledPolicy::compile(DEFAULT_SGX_POLICY).expect("default policy"));
    let twenty_text = twenty_rule_policy();
    let twenty = Arc::new(CompiledPolicy::compile(&twenty_text).expect("20-rule policy"));
    // Sanity: both permit and issue what they should.
    assert_eq!(default.evaluate(&claims).expect("permit").issued_claims.len(), 6);
    assert_eq!(twenty.evaluate(&claims).expect("permit").issued_claims.len(), 12);

    c.bench_function("policy_eval/default_sgx", |b| b.iter(|| black_box(default.evaluate(black_box(&claims)))));
    c.bench_function("policy_eval/twenty_rules", |b| b.iter(|| black_box(twenty.evaluate(black_box(&claims)))));
    c.bench_function("policy_compile/default_sgx", |b| {
        b.iter(|| black_box(CompiledPolicy::compile(black_box(DEFAULT_SGX_POLICY))))
    });
    // What `attest-chaos bench control-plane` writes: a minimal policy
    // padded to 1 KiB with a line comment.
    let mut commented =
        String::from("version=1.0; authorizationrules { => permit(); }; issuancerules { }; // write 1 ");
    commented.extend(std::iter::repeat_n('x', 1024 - commented.len()));
    c.bench_function("policy_compile/commented_1k", |b| {
        b.iter(|| black_box(CompiledPolicy::compile(black_box(&commented))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
