//! Tests of the policy engine: every sample policy of the research notes,
//! MAA's hash vectors, JWS handling and hostile input.

use std::sync::Arc;

use serde_json::json;

use super::claims::{add_legacy_sgx_aliases, claims_from_json_map};
use super::defaults::{DEFAULT_SGX_POLICY, LEGACY_SGX_POLICY};
use super::jws::{self, PolicyCertificateRequest, PolicyJwsError, PolicyUpload, SigningKey, TrustModel};
use super::*;

const MRSIGNER: &str = "2c1a44952ae8207135c6c29b75b8c029372ee94b677e15c20bd42340f10d41aa";
const MRENCLAVE: &str = "292a1f4b519e46627eb2478a3d9851405653c5b4b0a6925de843834d9216850e";

fn sgx_claims(debuggable: bool) -> Vec<Claim> {
    vec![
        Claim::service("x-ms-attestation-type", "sgx"),
        Claim::service("x-ms-sgx-is-debuggable", debuggable),
        Claim::service("x-ms-sgx-mrsigner", MRSIGNER),
        Claim::service("x-ms-sgx-mrenclave", MRENCLAVE),
        Claim::service("x-ms-sgx-product-id", 1i64),
        Claim::service("x-ms-sgx-svn", 1i64),
        Claim::service("x-ms-ver", "1.0"),
        Claim::service("x-ms-runtime", ClaimValue::Json(json!({"jwk": {"kty": "EC", "crv": "P-256"}}))),
    ]
}

fn compile(text: &str) -> CompiledPolicy {
    match CompiledPolicy::compile(text) {
        Ok(p) => p,
        Err(e) => panic!("policy failed to parse: {e}\n{text}"),
    }
}

// ---------------------------------------------------------------- samples

#[test]
fn sample_a_legacy_default_sgx() {
    let p = compile(LEGACY_SGX_POLICY);
    assert_eq!(p.version(), PolicyVersion::V1_0);
    let mut claims = sgx_claims(true);
    add_legacy_sgx_aliases(&mut claims);
    let out = p.evaluate(&claims).unwrap();
    let want = json!({
        "is-debuggable": true, "sgx-mrsigner": MRSIGNER, "sgx-mrenclave": MRENCLAVE,
        "product-id": 1, "svn": 1, "tee": "sgx"
    });
    assert_eq!(serde_json::Value::Object(out.issued_claims), want);
    // Without the legacy claim nothing permits.
    assert_eq!(p.evaluate(&sgx_claims(true)).unwrap_err(), PolicyEvaluationError::NotPermitted);
}

#[test]
fn sample_b_current_default_sgx() {
    let p = compile(DEFAULT_SGX_POLICY);
    assert_eq!(p.version(), PolicyVersion::V1_1);
    assert_eq!(p.configuration().tcb_identifier.as_deref(), Some("azuredefault"));
    let out = p.evaluate(&sgx_claims(false)).unwrap();
    let want = json!({
        "is-debuggable": false, "sgx-mrsigner": MRSIGNER, "sgx-mrenclave": MRENCLAVE,
        "product-id": 1, "svn": 1, "tee": "sgx"
    });
    assert_eq!(serde_json::Value::Object(out.issued_claims), want);
    assert_eq!(out.properties.tcb_identifier_or_default(), "azuredefault");
    assert_eq!(out.added_claims.len(), 6);
    assert!(out.added_claims.iter().all(|c| c.issuer == ClaimIssuer::AttestationPolicy));
}

fn sample_c(product_id: i64, mrsigner: &str) -> String {
    format!(
        "version= 1.0;
authorizationrules
{{
       [ type==\"x-ms-sgx-is-debuggable\", value==false ]
        && [ type==\"x-ms-sgx-product-id\", value=={product_id} ]
        && [ type==\"x-ms-sgx-svn\", value>= 0 ]
        && [ type==\"x-ms-sgx-mrsigner\", value==\"{mrsigner}\"]
    => permit();
}};
issuancerules {{
c:[type==\"x-ms-sgx-mrsigner\"] => issue(type=\"custom-signer\", value=c.value);
}};"
    )
}

#[test]
fn sample_c_custom_sgx() {
    let p = compile(&sample_c(1, MRSIGNER));
    let out = p.evaluate(&sgx_claims(false)).unwrap();
    assert_eq!(out.issued_claims["custom-signer"], json!(MRSIGNER));
    // A debuggable enclave, a wrong product id or signer: not permitted.
    assert!(p.evaluate(&sgx_claims(true)).is_err());
    assert!(compile(&sample_c(2, MRSIGNER)).evaluate(&sgx_claims(false)).is_err());
    let err = compile(&sample_c(1, "00")).evaluate(&sgx_claims(false)).unwrap_err();
    assert_eq!(err.to_string().split(" (").next(), Some("A Deny claim was issued, authorization failed."));
    assert_eq!(err.maa_code(), "PolicyEvaluationError");
}

#[test]
fn sample_d_key_rotation() {
    let p = compile(
        "version= 1.0;
authorizationrules
{
[ type==\"x-ms-sgx-is-debuggable\", value==false]&&
[ type==\"x-ms-sgx-mrsigner\", value==\"mrsigner1\"] => permit();
[ type==\"x-ms-sgx-is-debuggable\", value==false ]&&
[ type==\"x-ms-sgx-mrsigner\", value==\"mrsigner2\"] => permit();
};",
    );
    let with = |signer: &str| {
        vec![Claim::service("x-ms-sgx-is-debuggable", false), Claim::service("x-ms-sgx-mrsigner", signer)]
    };
    assert!(p.evaluate(&with("mrsigner1")).is_ok());
    assert!(p.evaluate(&with("mrsigner2")).is_ok());
    assert!(p.evaluate(&with("mrsigner3")).is_err());
    // No issuancerules section: nothing issued.
    assert!(p.evaluate(&with("mrsigner1")).unwrap().issued_claims.is_empty());
}

#[test]
fn sample_e_f_permit_and_deny_all() {
    let permit = compile("version=1.0; authorizationrules{=> permit();}; issuancerules{};");
    assert!(permit.evaluate(&[]).is_ok());
    let deny = compile("version=1.0; authorizationrules { =>deny(); }; issuancerules { };");
    let err = deny.evaluate(&sgx_claims(false)).unwrap_err();
    assert_eq!(err, PolicyEvaluationError::Denied);
    assert_eq!(err.to_string(), "A Deny claim was issued, authorization failed.");
    // A deny after a permit still wins.
    let both = compile("version=1.0; authorizationrules{=> permit(); => deny();};");
    assert_eq!(both.evaluate(&[]).unwrap_err(), PolicyEvaluationError::Denied);
}

const SAMPLE_G: &str = "version=1.1;
configurationrules{
=> issueproperty(type = \"required_pcr_mask\", value = 15);
=> issueproperty(type = \"require_valid_aik_cert\", value = false);
};
authorizationrules {
    => permit();
};
issuancerules
{
[type==\"aikValidated\", value==true]&&
[type==\"secureBootEnabled\", value==true] &&
[type==\"bootDebuggingDisabled\", value==true] &&
[type==\"notSafeMode\", value==true] => issue(type=\"PlatformAttested\", value=true);
[type==\"aikValidated\", value==false]&&
[type==\"secureBootEnabled\", value==true] &&
[type==\"bootDebuggingDisabled\", value==true] &&
[type==\"notSafeMode\", value==true] => issue(type=\"PlatformAttested\", value=false);
};";

#[test]
fn sample_g_tpm_configuration() {
    let p = compile(SAMPLE_G);
    assert_eq!(p.configuration().required_pcr_mask, Some(15));
    assert_eq!(p.configuration().require_valid_aik_cert, Some(false));
    let tpm = |aik: bool| {
        vec![
            Claim::service("aikValidated", aik),
            Claim::service("secureBootEnabled", true),
            Claim::service("bootDebuggingDisabled", true),
            Claim::service("notSafeMode", true),
        ]
    };
    let out = p.evaluate(&tpm(true)).unwrap();
    assert_eq!(out.issued_claims["PlatformAttested"], json!(true));
    assert_eq!(out.properties.required_pcr_mask_or_default(), 15);
    assert!(!out.properties.require_valid_aik_cert_or_default());
    let out = p.evaluate(&tpm(false)).unwrap();
    assert_eq!(out.issued_claims["PlatformAttested"], json!(false));
    // Defaults when a policy sets nothing.
    let plain = compile(super::defaults::MINIMAL_PERMIT_ALL_POLICY);
    assert_eq!(plain.configuration().required_pcr_mask_or_default(), 0xFF_FFFF);
    assert!(plain.configuration().require_valid_aik_cert_or_default());
}

const SAMPLE_H: &str = "version=1.2;
authorizationrules {
  => permit();
};
issuancerules
{
c:[type == \"events\", issuer==\"AttestationService\"] => add(type = \"efiConfigVariables\", value = JmesPath(c.value, \"Events[?EventTypeString == 'EV_EFI_VARIABLE_DRIVER_CONFIG' && ProcessedData.VariableGuid == '8BE4DF61-93CA-11D2-AA0D-00E098032B8C']\"));
c:[type==\"efiConfigVariables\", issuer=\"AttestationPolicy\"]=> issue(type = \"secureBootEnabled\", value = JsonToClaimValue(JmesPath(c.value, \"[?ProcessedData.UnicodeName == 'SecureBoot'] | length(@) == `1` && @[0].ProcessedData.VariableData == 'AQ'\")));
![type==\"secureBootEnabled\", issuer==\"AttestationPolicy\"] => issue(type=\"secureBootEnabled\", value=false);
};";

fn events(secure_boot_data: &str) -> serde_json::Value {
    json!({"Events": [
        {"EventTypeString": "EV_EFI_VARIABLE_DRIVER_CONFIG",
         "ProcessedData": {"VariableGuid": "8BE4DF61-93CA-11D2-AA0D-00E098032B8C",
                           "UnicodeName": "SecureBoot", "VariableData": secure_boot_data}},
        {"EventTypeString": "EV_EFI_VARIABLE_DRIVER_CONFIG",
         "ProcessedData": {"VariableGuid": "8BE4DF61-93CA-11D2-AA0D-00E098032B8C",
                           "UnicodeName": "PK", "VariableData": "xyz"}},
        {"EventTypeString": "EV_SEPARATOR", "ProcessedData": {}}
    ]})
}

#[test]
fn sample_h_jmespath_secure_boot() {
    let p = compile(SAMPLE_H);
    assert_eq!(p.version(), PolicyVersion::V1_2);
    // As a JSON claim.
    let on = p.evaluate(&[Claim::service("events", ClaimValue::Json(events("AQ")))]).unwrap();
    assert_eq!(on.issued_claims["secureBootEnabled"], json!(true));
    let efi = on.added_claims.iter().find(|c| c.claim_type == "efiConfigVariables").unwrap();
    assert!(matches!(&efi.value, ClaimValue::Json(serde_json::Value::Array(a)) if a.len() == 2));
    // As a string holding JSON, as MAA represents JSON claims.
    let off = p.evaluate(&[Claim::service("events", events("AA").to_string())]).unwrap();
    assert_eq!(off.issued_claims["secureBootEnabled"], json!(false));
    // No events at all: the `!` rule issues false.
    let none = p.evaluate(&[]).unwrap();
    assert_eq!(none.issued_claims["secureBootEnabled"], json!(false));
    // A claim not issued by the service is ignored by the first rule.
    let custom = p.evaluate(&[Claim::new("events", ClaimValue::Json(events("AQ")), ClaimIssuer::CustomClaim)]).unwrap();
    assert_eq!(custom.issued_claims["secureBootEnabled"], json!(false));
}

#[test]
fn sample_i_vbs_enclave() {
    let p = compile(
        "version=1.2;
authorizationrules {
    [type==\"vsmReportPresent\", value==true] &&
    [type==\"enclaveAuthorId\", value==\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"] &&
    [type==\"enclaveImageId\", value==\"AQEAAAAAAAAAAAAAAAAAAA\"] &&
    [type==\"enclaveSvn\", value>=0] =>  permit();
};
issuancerules
{
};",
    );
    let mut claims = vec![
        Claim::service("vsmReportPresent", true),
        Claim::service("enclaveAuthorId", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Claim::service("enclaveImageId", "AQEAAAAAAAAAAAAAAAAAAA"),
        Claim::service("enclaveSvn", 3i64),
    ];
    assert!(p.evaluate(&claims).is_ok());
    claims[3] = Claim::service("enclaveSvn", -1i64);
    assert!(p.evaluate(&claims).is_err());
}

// ------------------------------------------------------- functions in rules

#[test]
fn documented_function_examples() {
    let p = compile(
        "version=1.2; authorizationrules{=>permit();}; issuancerules{
        => add(type=\"JmesPathResult\", value=JmesPath(\"{\\\"foo\\\": \\\"bar\\\"}\", \"foo\"));
        c1:[type==\"JsonData\"] && c2:[type==\"JmesPathQuery\"] => issue(type=\"q\", value=JmesPath(c1.value, c2.value));
        c1:[type == \"Subset\"] && c2:[type==\"Superset\"] => issue(type=\"IsSubset\", value=IsSubsetOf(c1.value, c2.value));
        c:[type==\"Set\"] => issue(type=\"only100\", value=ContainsOnlyValue(c.value, 100));
        c:[type==\"String1\"] && c2:[type==\"String2\"] => issue(type=\"Appended\", value=AppendString(c.value, c2.value));
        c:[type==\"Input\"] => issue(type=\"Negated\", value=NegateBool(c.value));
        c:[type==\"JsonArray\"] => issue(type=\"Result\", value=JsonToClaimValue(c.value));
        c:[type==\"JsonNull\"] => issue(type=\"Nothing\", value=JsonToClaimValue(c.value));
        c:[type==\"JmesPathResult\"] => issue(claim=c);
        };",
    );
    let claims = vec![
        Claim::service("JsonData", "{\"values\": [0,1,2,3,4]}"),
        Claim::service("JmesPathQuery", "values[2]"),
        Claim::service("Subset", "abc"),
        Claim::service("Subset", 100i64),
        Claim::service("Superset", true),
        Claim::service("Superset", "abc"),
        Claim::service("Superset", 100i64),
        Claim::service("Set", 100i64),
        Claim::service("Set", 101i64),
        Claim::service("String1", "abc"),
        Claim::service("String2", "xyz"),
        Claim::service("Input", true),
        Claim::service("JsonArray", "[0, \"abc\", true]"),
        Claim::service("JsonNull", "null"),
    ];
    let out = p.evaluate(&claims).unwrap();
    let c = &out.issued_claims;
    assert_eq!(c["q"], json!(2));
    assert_eq!(c["IsSubset"], json!(true), "set semantics: fires once");
    assert_eq!(c["only100"], json!(false));
    assert_eq!(c["Appended"], json!("abcxyz"));
    assert_eq!(c["Negated"], json!(false));
    assert_eq!(c["Result"], json!([0, "abc", true]));
    assert!(!c.contains_key("Nothing"), "a null value adds nothing");
    assert_eq!(c["JmesPathResult"], json!("bar"));
}

#[test]
fn multi_valued_claims_fire_per_match() {
    let p = compile(
        "version=1.0; authorizationrules{=>permit();};
         issuancerules{ c:[type==\"pcr\", value>=2] => issue(type=\"big\", value=c.value); };",
    );
    let claims: Vec<Claim> = (0..5).map(|i| Claim::service("pcr", i as i64)).collect();
    let out = p.evaluate(&claims).unwrap();
    assert_eq!(out.issued_claims["big"], json!([2, 3, 4]));
}

#[test]
fn conditions_on_issuer_value_type_and_bindings() {
    let p = compile(
        "version=1.0; authorizationrules{
            [type==\"a\", valueType==\"Integer\", issuer==\"AttestationService\"] => permit();
         };
         issuancerules{
            c:[type==\"a\"] && [type==\"b\", value==c.value] => issue(type=\"same\", value=true);
            c:[type==\"a\"] && [type==\"b\", value!=c.value] => issue(type=\"different\", value=true);
            [type==\"a\", value<10] => issue(type=\"small\", value=true);
         };",
    );
    let out = p.evaluate(&[Claim::service("a", 5i64), Claim::service("b", 5i64)]).unwrap();
    assert_eq!(out.issued_claims["same"], json!(true));
    assert!(!out.issued_claims.contains_key("different"));
    assert_eq!(out.issued_claims["small"], json!(true));
    // A string "5" is not the integer 5.
    assert!(p.evaluate(&[Claim::service("a", "5"), Claim::service("b", 5i64)]).is_err());
}

#[test]
fn claims_from_verifier_json() {
    let map = json!({"x-ms-sgx-svn": 3, "x-ms-sgx-is-debuggable": false, "x-ms-sgx-mrsigner": "ab",
                     "x-ms-runtime": {"k": 1}});
    let claims = claims_from_json_map(map.as_object().unwrap());
    assert!(claims.contains(&Claim::service("x-ms-sgx-svn", 3i64)));
    assert!(claims.contains(&Claim::service("x-ms-sgx-is-debuggable", false)));
    assert!(claims.iter().any(|c| c.claim_type == "x-ms-runtime" && matches!(c.value, ClaimValue::Json(_))));
}

#[test]
fn issueproperty_in_issuance() {
    let p = compile(
        "version=1.0; authorizationrules{=>permit();};
         issuancerules{ => issueproperty(type=\"report_validity_in_minutes\", value=60);
                        => issueproperty(type=\"omit_x5c\", value=true); };",
    );
    let out = p.evaluate(&[]).unwrap();
    assert_eq!(out.properties.token_validity_minutes, Some(60));
    assert_eq!(out.properties.omit_x5c, Some(true));
    let bad = compile(
        "version=1.0; authorizationrules{=>permit();};
         issuancerules{ => issueproperty(type=\"report_validity_in_minutes\", value=0); };",
    );
    assert!(matches!(bad.evaluate(&[]).unwrap_err(), PolicyEvaluationError::InRule { line: 2, .. }));
    // A bad configuration value is caught when the policy is compiled.
    let e = CompiledPolicy::compile(
        "version=1.1; configurationrules{ => issueproperty(type=\"required_pcr_mask\", value=\"x\"); };
         authorizationrules{=>permit();};",
    )
    .unwrap_err();
    assert!(matches!(e, PolicyParseError::Semantic { .. }), "{e}");
}

#[test]
fn compiled_policy_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledPolicy>();
    let p = Arc::new(compile(SAMPLE_H));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let p = Arc::clone(&p);
            std::thread::spawn(move || p.evaluate(&[]).map(|o| o.issued_claims.len()))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), Ok(1));
    }
}

#[test]
fn evaluation_is_bounded() {
    // Six chained, enumerated conditions over 30 claims: ~30^6 firings.
    let p = compile(
        "version=1.0; authorizationrules{=>permit();}; issuancerules{
         a:[type==\"x\"] && b:[type==\"x\", value!=a.value] && c:[type==\"x\", value!=b.value]
         && d:[type==\"x\", value!=c.value] && e:[type==\"x\", value!=d.value] && f:[type==\"x\", value!=e.value]
           => add(type=\"y\", value=f.value); };",
    );
    let claims: Vec<Claim> = (0..30).map(|i| Claim::service("x", i as i64)).collect();
    assert!(matches!(p.evaluate(&claims).unwrap_err(), PolicyEvaluationError::TooExpensive(_)));
    // Unbound conditions are existence tests and never multiply.
    let q = compile(
        "version=1.0; authorizationrules{
         [type==\"x\"] && [type==\"x\"] && [type==\"x\"] && [type==\"x\"] && [type==\"x\"] => permit(); };",
    );
    assert!(q.evaluate(&claims).is_ok());
}

// ------------------------------------------------------------- parse errors

fn parse_err(text: &str) -> PolicyParseError {
    match CompiledPolicy::compile(text) {
        Ok(_) => panic!("expected a parse error for {text:?}"),
        Err(e) => e,
    }
}

#[test]
fn syntax_errors_name_line_column_symbol_and_expectation() {
    let e = parse_err("version=1.0;\n[type==\"a\"] => permit();");
    match &e {
        PolicyParseError::Syntax { line, column, symbol, expected } => {
            assert_eq!((*line, *column), (2, 1));
            assert_eq!(symbol, "[");
            assert!(expected.contains("authorizationrules"), "{expected}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.maa_code(), "PolicyParsingError");
    assert!(e.to_string().starts_with("Offending symbol: '[' Line: '2', Column: '1'"));

    // Missing semicolon after a rule.
    let e = parse_err("version=1.0;\nauthorizationrules{\n  => permit()\n};");
    match e {
        PolicyParseError::Syntax { line, expected, symbol, .. } => {
            assert_eq!(line, 4);
            assert_eq!(symbol, "}");
            assert!(expected.contains("';'"), "{expected}");
        }
        other => panic!("{other:?}"),
    }
    // Missing version.
    assert!(matches!(
        parse_err("authorizationrules{=>permit();};"),
        PolicyParseError::Syntax { line: 1, column: 1, .. }
    ));
    // Truncated input.
    match parse_err("version=1.0; authorizationrules{ => permit(") {
        PolicyParseError::Syntax { symbol, .. } => assert_eq!(symbol, "<EOF>"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn semantic_errors() {
    let cases = [
        ("version=2.0; authorizationrules{=>permit();};", "unsupported policy version"),
        (
            "version=1.0; configurationrules{=>issueproperty(type=\"a\", value=1);}; authorizationrules{=>permit();};",
            "require policy version 1.1",
        ),
        ("version=1.1; authorizationrules{![type==\"a\"] => permit();};", "requires policy version 1.2"),
        (
            "version=1.1; authorizationrules{=>permit();}; issuancerules{c:[type==\"a\"] => issue(type=\"b\", value=NegateBool(c.value));};",
            "functions require policy version 1.2",
        ),
        (
            "version=1.2; authorizationrules{=>permit();}; issuancerules{c:[type==\"a\"] => issue(type=\"b\", value=NegateBol(c.value));};",
            "unknown function 'NegateBol'",
        ),
        (
            "version=1.2; authorizationrules{=>permit();}; issuancerules{=> issue(type=\"b\", value=AppendString(\"a\"));};",
            "takes 2 argument(s)",
        ),
        ("version=1.0; authorizationrules{=>issue(type=\"a\", value=1);};", "not allowed in authorizationrules"),
        ("version=1.0; authorizationrules{=>permit();}; issuancerules{=>permit();};", "not allowed in issuancerules"),
        ("version=1.0; authorizationrules{[type==\"a\"] => issue(type=\"b\", value=c.value);};", "not allowed"),
        (
            "version=1.0; authorizationrules{=>permit();}; issuancerules{[type==\"a\"] => issue(type=\"b\", value=c.value);};",
            "unknown identifier 'c'",
        ),
        ("version=1.0; authorizationrules{[type==\"a\", value<\"x\"] => permit();};", "needs an integer"),
        ("version=1.0; authorizationrules{[type<\"a\"] => permit();};", "applies only to integer"),
        ("version=1.0; authorizationrules{[type==\"a\", value==99999999999999999999] => permit();};", "out of range"),
        ("version=1.0; issuancerules{};", "no authorizationrules"),
        ("version=1.0; authorizationrules{=>permit();}; authorizationrules{=>permit();};", "more than once"),
        ("version=1.0; authorizationrules{=>permit(type=\"a\");};", "takes no arguments"),
        (
            "version=1.2; authorizationrules{=>permit();}; issuancerules{=> issue(type=\"a\", value=JmesPath(\"{}\", \"[[\"));};",
            "invalid query",
        ),
    ];
    for (text, want) in cases {
        let e = parse_err(text);
        assert!(e.to_string().contains(want), "{text}\n  got: {e}\n  want: {want}");
        assert_eq!(e.maa_code(), "PolicyParsingError");
    }
}

#[test]
fn comments_whitespace_and_escapes() {
    let p = compile(
        "// a comment\r\nversion = 1.0 ;\n/* block\n comment */ authorizationrules { => permit ( ) ; } ;\n\
         issuancerules { => issue(type=\"q\\\"uote\", value=\"a\\\\b\"); };",
    );
    let out = p.evaluate(&[]).unwrap();
    assert_eq!(out.issued_claims["q\"uote"], json!("a\\b"));
}

#[test]
fn comments_end_where_the_language_says() {
    // A line comment runs to the newline only (not to `\r`, not past `*/`);
    // a block comment runs to the first `*/`, across lines; one at the end
    // of the text needs no newline. Comments never show in rule numbering.
    let p = compile(
        "version=1.0; // x */ y \u{00e9}\u{1F600}\r still the comment\n\
         authorizationrules { /* a // b\n c * / d */ => permit(); };\n\
         issuancerules { c:[type==\"https://a//b\"] => issue(type=\"u\", value=\"//not a comment\"); }; // end",
    );
    let out = p.evaluate(&[Claim::service("https://a//b", 1i64)]).unwrap();
    assert_eq!(out.issued_claims["u"], json!("//not a comment"));
    // An unterminated block comment is a syntax error at the comment.
    let e = parse_err("version=1.0; authorizationrules { => permit(); }; /* open");
    assert!(matches!(e, PolicyParseError::Syntax { line: 1, .. }), "{e:?}");
    // A comment cannot hide the rest of a line it does not end.
    let e = parse_err("version=1.0; authorizationrules { // => permit(); };");
    assert!(matches!(e, PolicyParseError::Syntax { .. }), "{e:?}");
}

#[test]
fn hostile_policy_text() {
    // Huge input is rejected before parsing.
    let huge = format!("version=1.0; authorizationrules{{{}}};", "=>permit();".repeat(30_000));
    assert!(matches!(parse_err(&huge), PolicyParseError::TooLarge { .. }));
    // Deep nesting is rejected before pest recurses.
    let deep = format!(
        "version=1.2; authorizationrules{{=>permit();}}; issuancerules{{=> issue(type=\"a\", value={}true{});}};",
        "NegateBool(".repeat(100_000),
        ")".repeat(100_000)
    );
    let limits = ParseLimits { max_policy_bytes: 10 * 1024 * 1024, ..ParseLimits::default() };
    assert!(matches!(
        CompiledPolicy::compile_with_limits(&deep, &limits).unwrap_err(),
        PolicyParseError::TooDeep { line: 1, .. }
    ));
    // Nesting within the limit works.
    let ok = format!(
        "version=1.2; authorizationrules{{=>permit();}}; issuancerules{{=> issue(type=\"a\", value={}true{});}};",
        "NegateBool(".repeat(10),
        ")".repeat(10)
    );
    assert_eq!(compile(&ok).evaluate(&[]).unwrap().issued_claims["a"], json!(true));
    // Brackets inside strings do not count.
    let s = format!("version=1.0; authorizationrules{{[type==\"{}\"] => permit();}};", "(".repeat(1000));
    compile(&s);
    // Rule count limit.
    let many = format!("version=1.0; authorizationrules{{{}}};", "=>permit();".repeat(3000));
    assert!(parse_err(&many).to_string().contains("more than 2000 rules"));
    // Invalid UTF-8 and junk never panic.
    assert_eq!(CompiledPolicy::compile_bytes(&[0xff, 0xfe]).unwrap_err(), PolicyParseError::NotUtf8);
    for junk in ["", "\0", "version", "version=1.0", "version=1.0;}", "version=1.0;authorizationrules{[", "\"", "/*"] {
        let _ = CompiledPolicy::compile(junk);
    }
}

// ------------------------------------------------------------------ hashes

const SDK_UNSIGNED_JWS: &str = "eyJhbGciOiJub25lIn0.eyJBdHRlc3RhdGlvblBvbGljeSI6ICJkbVZ5YzJsdmJqMHhMakE3SUdGMWRHaHZjbWw2WVhScGIyNXlkV3hsYzNzOVBpQndaWEp0YVhRb0tUdDlPeUJwYzNOMVlXNWpaWEoxYkdWemUzMDcifQ.";
const SDK_SIGNED_JWS: &str = include_str!("../../tests/data/policy/sdk_signed_policy_rsa256_jwk.jws");
const SDK_ADD_CERT_BODY: &str = include_str!("../../tests/data/policy/sdk_add_policy_certificate_body.json");
const TEST_RSA_KEY: &[u8] = include_bytes!("../../tests/data/policy/test_rsa2048_pkcs8.der");

#[test]
fn policy_hash_vector() {
    assert_eq!(jws::policy_hash(LEGACY_SGX_POLICY), "egjnANIzEpS2WgpE4Nk-QEwM69XRCgTs42_G0qLlbnk");
}

#[test]
fn unsigned_upload_vector() {
    let up = PolicyUpload::parse(SDK_UNSIGNED_JWS).unwrap();
    assert_eq!(up.token_hash(), "pyhI2FKMjRkvpvwS07hLclAyvsi5O4TrnzL5OPsIxzM");
    assert_eq!(up.policy_text, "version=1.0; authorizationrules{=> permit();}; issuancerules{};");
    assert_eq!(up.policy_hash, jws::policy_hash(&up.policy_text));
    assert!(up.jws.signer.is_none());
    assert!(up.check_trust(TrustModel::Aad, &[], 0).is_ok());
    assert_eq!(up.check_trust(TrustModel::Isolated, &[], 0).unwrap_err(), PolicyJwsError::UnsignedNotAllowed);
    // Our own unsigned JWS round-trips to the same policy hash.
    let ours = PolicyUpload::parse(&jws::unsigned_policy_jws(LEGACY_SGX_POLICY)).unwrap();
    assert_eq!(ours.policy_hash, "egjnANIzEpS2WgpE4Nk-QEwM69XRCgTs42_G0qLlbnk");
}

/// 2021-05-01T00:00:00Z, inside the SDK test certificates' validity.
const MAY_2021: i64 = 1_619_827_200;
/// 2021-07-01T00:00:00Z.
const JULY_2021: i64 = 1_625_097_600;

#[test]
fn signed_sdk_vector_rsa256_jwk_header() {
    let up = PolicyUpload::parse(SDK_SIGNED_JWS).unwrap();
    assert_eq!(up.token_hash(), "h6bWT3Mqp8UQ2ciVtxhlk3WsMH8cnFgEjpEcfA6ySs4");
    assert_eq!(up.jws.algorithm, jws::JwsAlgorithm::Rs256);
    let signer = up.jws.signer.clone().unwrap();
    assert_eq!(signer.certificates.len(), 1);
    let jwk = up.signer_jwk().unwrap();
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["alg"], "RS256");
    // Isolated: trusted when its own certificate is registered, at a time
    // the certificate is valid.
    let cert = signer.certificates[0].clone();
    up.check_trust(TrustModel::Isolated, std::slice::from_ref(&cert), MAY_2021).unwrap();
    assert!(matches!(
        up.check_trust(TrustModel::Isolated, std::slice::from_ref(&cert), JULY_2021 + 365 * 86_400),
        Err(PolicyJwsError::CertificateNotValid { .. })
    ));
    assert_eq!(up.check_trust(TrustModel::Isolated, &[], MAY_2021).unwrap_err(), PolicyJwsError::UntrustedSigner);
    // Any change to the signed bytes breaks the signature.
    let tampered = SDK_SIGNED_JWS.replacen("eyJBdHRlc3RhdGlvblBvbGljeSI6", "eyJBdHRlc3RhdGlvblBvbGljeSI7", 1);
    assert!(matches!(
        PolicyUpload::parse(&tampered),
        Err(PolicyJwsError::BadSignature | PolicyJwsError::BadJson { .. })
    ));
    let mut bad_sig = SDK_SIGNED_JWS.trim().to_owned();
    bad_sig.pop();
    bad_sig.push('A');
    assert_eq!(PolicyUpload::parse(&bad_sig).unwrap_err(), PolicyJwsError::BadSignature);
}

#[test]
fn add_certificate_sdk_vector() {
    let req = PolicyCertificateRequest::parse(SDK_ADD_CERT_BODY).unwrap();
    assert_eq!(req.thumbprint, "357E7DA457168E19CE7B3490865F489376ACA381");
    let signer = req.jws.signer.clone().unwrap();
    assert_eq!(signer.thumbprint().as_deref(), Some("B23E06608E27AEF3EB34E28BCB70ACE1E9177E3E"));
    let current = vec![signer.certificates[0].clone()];
    let (next, result) = req.apply_add(&current, JULY_2021).unwrap();
    assert_eq!(result, jws::CertificateModification::IsPresent);
    assert_eq!(result.as_str(), "IsPresent");
    assert_eq!(next.len(), 2);
    // Adding again changes nothing.
    let (again, _) = req.apply_add(&next, JULY_2021).unwrap();
    assert_eq!(again, next);
    let (removed, result) = req.apply_remove(&next, JULY_2021).unwrap();
    assert_eq!(result.as_str(), "IsAbsent");
    assert_eq!(removed, current);
    // Not signed by a current signer.
    assert_eq!(
        req.apply_add(std::slice::from_ref(&req.certificate), JULY_2021).unwrap_err(),
        PolicyJwsError::UntrustedSigner
    );
    let jwks = jws::certificates_jwks(&next);
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2));
    assert_eq!(jwks["keys"][1]["kid"], "357E7DA457168E19CE7B3490865F489376ACA381");
}

// ---------------------------------------------- generated keys and chains

/// 2020-01-01, 2030-01-01, 2025-01-01, 2031-01-01 (UTC).
const Y2020: i64 = 1_577_836_800;
const Y2025: i64 = 1_735_689_600;
const Y2031: i64 = 1_924_992_000;

struct Pki {
    root_der: Vec<u8>,
    leaf_der: Vec<u8>,
    leaf_key: SigningKey,
    other_root_der: Vec<u8>,
}

fn ca_params(name: &str) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2030, 1, 1);
    p
}

/// A root CA and a leaf it issued, with the leaf key as `leaf_kp`.
fn make_pki(leaf_kp: rcgen::KeyPair, leaf_key: SigningKey) -> Pki {
    let root_kp = rcgen::KeyPair::generate().unwrap();
    let root_params = ca_params("attestd test policy root");
    let root = root_params.self_signed(&root_kp).unwrap();
    let issuer = rcgen::Issuer::from_params(&root_params, &root_kp);
    let mut leaf_params = ca_params("attestd test policy signer");
    leaf_params.is_ca = rcgen::IsCa::NoCa;
    let leaf = leaf_params.signed_by(&leaf_kp, &issuer).unwrap();
    let other_kp = rcgen::KeyPair::generate().unwrap();
    let other = ca_params("someone else").self_signed(&other_kp).unwrap();
    Pki { root_der: root.der().to_vec(), leaf_der: leaf.der().to_vec(), leaf_key, other_root_der: other.der().to_vec() }
}

fn ec_pki() -> Pki {
    let kp = rcgen::KeyPair::generate().unwrap();
    let key = SigningKey::from_pkcs8(&kp.serialize_der(), false).unwrap();
    make_pki(kp, key)
}

fn rsa_pki(pss: bool) -> Pki {
    use base64::Engine as _;
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(TEST_RSA_KEY)
    );
    let kp = rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let key = SigningKey::from_pkcs8(TEST_RSA_KEY, pss).unwrap();
    make_pki(kp, key)
}

fn isolated_round_trip(pki: &Pki, alg: jws::JwsAlgorithm) {
    let token = jws::signed_policy_jws(DEFAULT_SGX_POLICY, &pki.leaf_key, std::slice::from_ref(&pki.leaf_der)).unwrap();
    let up = PolicyUpload::parse(&token).unwrap();
    assert_eq!(up.jws.algorithm, alg);
    assert_eq!(up.policy_text, DEFAULT_SGX_POLICY);
    assert_eq!(up.policy_hash, jws::policy_hash(DEFAULT_SGX_POLICY));
    assert_eq!(up.token_hash(), jws::token_hash(&token));
    // Trusted: the root is registered and the leaf chains to it.
    up.check_trust(TrustModel::Isolated, std::slice::from_ref(&pki.root_der), Y2025).unwrap();
    // Trusted: the leaf itself is registered.
    up.check_trust(TrustModel::Isolated, std::slice::from_ref(&pki.leaf_der), Y2025).unwrap();
    // Wrong signer.
    assert_eq!(
        up.check_trust(TrustModel::Isolated, std::slice::from_ref(&pki.other_root_der), Y2025).unwrap_err(),
        PolicyJwsError::UntrustedSigner
    );
    // Expired, and not yet valid.
    for t in [Y2031, Y2020 - 1] {
        assert!(matches!(
            up.check_trust(TrustModel::Isolated, std::slice::from_ref(&pki.root_der), t),
            Err(PolicyJwsError::CertificateNotValid { .. })
        ));
    }
    // With the whole chain in x5c, trusting the root also works.
    let chain = vec![pki.leaf_der.clone(), pki.root_der.clone()];
    let token = jws::signed_policy_jws(DEFAULT_SGX_POLICY, &pki.leaf_key, &chain).unwrap();
    PolicyUpload::parse(&token)
        .unwrap()
        .check_trust(TrustModel::Isolated, std::slice::from_ref(&pki.root_der), Y2025)
        .unwrap();
    // The evaluated policy is the uploaded one.
    assert!(up.compiled.evaluate(&sgx_claims(false)).is_ok());
}

#[test]
fn es256_isolated_round_trip() {
    isolated_round_trip(&ec_pki(), jws::JwsAlgorithm::Es256);
}

#[test]
fn rs256_isolated_round_trip() {
    isolated_round_trip(&rsa_pki(false), jws::JwsAlgorithm::Rs256);
}

#[test]
fn ps256_isolated_round_trip() {
    isolated_round_trip(&rsa_pki(true), jws::JwsAlgorithm::Ps256);
}

#[test]
fn signed_certificate_add_remove_round_trip() {
    let pki = ec_pki();
    let new_kp = rcgen::KeyPair::generate().unwrap();
    let new_cert = ca_params("new signer").self_signed(&new_kp).unwrap().der().to_vec();
    let body = jws::signed_certificate_jws(&new_cert, &pki.leaf_key, std::slice::from_ref(&pki.leaf_der)).unwrap();
    // The body arrives as a JSON string.
    let quoted = serde_json::to_string(&body).unwrap();
    let req = PolicyCertificateRequest::parse(&quoted).unwrap();
    assert_eq!(req.thumbprint, jws::thumbprint(&new_cert));
    assert_eq!(req.thumbprint.len(), 40);
    assert!(req.thumbprint.chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
    let current = vec![pki.root_der.clone()];
    let (next, r) = req.apply_add(&current, Y2025).unwrap();
    assert_eq!((next.len(), r.as_str()), (2, "IsPresent"));
    let (after, r) = req.apply_remove(&next, Y2025).unwrap();
    assert_eq!((after, r.as_str()), (current.clone(), "IsAbsent"));
    // The last certificate cannot be removed.
    let body = jws::signed_certificate_jws(&pki.root_der, &pki.leaf_key, std::slice::from_ref(&pki.leaf_der)).unwrap();
    let req = PolicyCertificateRequest::parse(&body).unwrap();
    assert_eq!(req.apply_remove(&current, Y2025).unwrap_err(), PolicyJwsError::LastCertificate);
    // An unsigned request is refused.
    let unsigned = format!(
        "eyJhbGciOiJub25lIn0.{}.",
        base64_url(&json!({"policyCertificate": {"kty": "RSA", "x5c": []}}).to_string())
    );
    assert_eq!(PolicyCertificateRequest::parse(&unsigned).unwrap_err(), PolicyJwsError::UnsignedNotAllowed);
}

fn base64_url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s.as_bytes())
}

// -------------------------------------------------------- malformed JWS

#[test]
fn malformed_jws() {
    use PolicyJwsError as E;
    let none = base64_url("{\"alg\":\"none\"}");
    let payload = base64_url("{\"AttestationPolicy\":\"dmVyc2lvbj0xLjA7\"}");
    type Check = fn(&E) -> bool;
    let cases: Vec<(String, Check)> = vec![
        (
            "no periods at all".into(),
            |e| matches!(e, E::Malformed(m) if m == "Could not find first period in the token"),
        ),
        (none.to_string(), |e| matches!(e, E::Malformed(_))),
        (format!("{none}.{payload}"), |e| matches!(e, E::Malformed(m) if m.contains("second period"))),
        (format!("{none}.{payload}.."), |e| matches!(e, E::Malformed(_))),
        (format!("!!!.{payload}."), |e| matches!(e, E::BadBase64("header"))),
        (format!("{none}.***."), |e| matches!(e, E::BadBase64("payload"))),
        (format!("{}.{payload}.", base64_url("[1]")), |e| matches!(e, E::BadJson { .. })),
        (
            format!("{}.{payload}.", base64_url("{\"alg\":\"HS256\"}")),
            |e| matches!(e, E::UnsupportedAlgorithm(a) if a == "HS256"),
        ),
        (format!("{}.{payload}.", base64_url("{}")), |e| matches!(e, E::Malformed(_))),
        (format!("{}.{payload}.AAAA", base64_url("{\"alg\":\"RS256\"}")), |e| matches!(e, E::MissingSigningKey)),
        (format!("{none}.{payload}.AAAA"), |e| matches!(e, E::UnexpectedSignature)),
        (format!("{none}.{}.", base64_url("{}")), |e| matches!(e, E::MissingPolicy)),
        (format!("{none}.{}.", base64_url("{\"AttestationPolicy\":\"%%%\"}")), |e| matches!(e, E::BadPolicyEncoding)),
        (format!("{none}.{}.", base64_url("{\"AttestationPolicy\":\"__8\"}")), |e| matches!(e, E::BadPolicyEncoding)),
        (format!("{}.{payload}.AAAA", base64_url("{\"alg\":\"RS256\",\"x5c\":[\"AAAA\"]}")), |e| {
            matches!(e, E::BadCertificate(_))
        }),
        (
            format!(
                "{}.{payload}.AAAA",
                base64_url("{\"alg\":\"ES256\",\"jwk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"}}")
            ),
            |e| matches!(e, E::BadKey(_)),
        ),
        (format!("{none}.{}.", base64_url("{\"AttestationPolicy\":\"dmVyc2lvbj0xLjA7IFs\"}")), |e| {
            matches!(e, E::Policy(PolicyParseError::Syntax { .. }))
        }),
        ("x".repeat(2 * 1024 * 1024), |e| matches!(e, E::TooLarge { .. })),
    ];
    for (token, check) in cases {
        let err = PolicyUpload::parse(&token).unwrap_err();
        let shown: String = token.chars().take(60).collect();
        assert!(check(&err), "{shown}: unexpected {err:?}");
        assert!(!err.maa_code().is_empty());
    }
    assert_eq!(PolicyUpload::parse("abc").unwrap_err().maa_code(), "InvalidOperation");
}

#[test]
fn bare_jwk_signatures_verify_but_are_not_trusted() {
    // An ES256 JWS whose key is a bare JWK (no certificate).
    let kp = rcgen::KeyPair::generate().unwrap();
    let key = SigningKey::from_pkcs8(&kp.serialize_der(), false).unwrap();
    let point = kp.public_key_raw().to_vec();
    let (x, y) = (base64_url_bytes(&point[1..33]), base64_url_bytes(&point[33..65]));
    let header = json!({"alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": y}});
    let payload = json!({"AttestationPolicy": base64_url(super::defaults::MINIMAL_PERMIT_ALL_POLICY)});
    let input = format!("{}.{}", base64_url(&header.to_string()), base64_url(&payload.to_string()));
    // Sign the same input through a throwaway JWS to reuse the key's signer.
    let token = jws::sign_jws(&payload, &key, &[]).unwrap();
    let sig = token.rsplit('.').next().unwrap();
    // The signature was made over a different header, so verify ours fails…
    assert_eq!(PolicyUpload::parse(&format!("{input}.{sig}")).unwrap_err(), PolicyJwsError::BadSignature);
    // …and a correctly signed one verifies, but Isolated still refuses it.
    let rng = ring::rand::SystemRandom::new();
    let ec = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &kp.serialize_der(),
        &rng,
    )
    .unwrap();
    let good_sig = ec.sign(&rng, input.as_bytes()).unwrap();
    let up = PolicyUpload::parse(&format!("{input}.{}", base64_url_bytes(good_sig.as_ref()))).unwrap();
    assert!(up.check_trust(TrustModel::Aad, &[], Y2025).is_ok());
    assert_eq!(up.check_trust(TrustModel::Isolated, &[], Y2025).unwrap_err(), PolicyJwsError::UntrustedSigner);
}

fn base64_url_bytes(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
