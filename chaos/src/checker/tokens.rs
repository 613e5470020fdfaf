//! Token checks: every token issued during a drill verifies against the
//! JWKS (`/certs`) of *each* region and carries the claims its evidence
//! implies (brief §3: a relying party verifies a token from either region
//! without caring which one issued it).
//!
//! A token passes when, for every region's JWKS:
//! * its signature verifies with the key its `kid` names (RS256/PS256/ES256),
//!   and it is within its validity period (small leeway);
//! * every expected claim (the claims MAA issued for the same evidence,
//!   minus what differs by construction) is present and equal; for the
//!   collateral objects only `quotehash` is compared;
//! * `nonce` echoes the nonce sent, `x-attestd-region` names the region
//!   that answered (when the gateway said which), and `iss` is the expected
//!   issuer, or at least the same for every token of the run (the
//!   provider's issuer does not change with the region that serves it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One token to judge.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub op_id: u64,
    pub token: String,
    /// Claims the evidence implies (see `workload::AttestVector`).
    pub expected_claims: Map<String, Value>,
    pub nonce: Option<String>,
    /// The region that answered, when known.
    pub served_by: Option<String>,
}

/// Why a token failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenFailure {
    pub op_id: u64,
    /// The region whose JWKS was used (empty for claim problems).
    pub jwks_region: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenReport {
    pub ok: bool,
    pub tokens_checked: usize,
    /// Number of keys in each region's JWKS.
    pub jwks_keys: BTreeMap<String, usize>,
    /// The issuer every token carried (when they agree).
    pub issuer: Option<String>,
    /// Number of failing tokens.
    pub failed_tokens: usize,
    /// The first failures (at most [`MAX_LISTED`]).
    pub failures: Vec<TokenFailure>,
}

/// Failures listed in a report; the count says how many there were.
pub const MAX_LISTED: usize = 50;

impl TokenReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "tokens: {} ({} checked against {} region JWKS, {} failed)",
            if self.ok { "ok" } else { "VIOLATED" },
            self.tokens_checked,
            self.jwks_keys.len(),
            self.failed_tokens
        );
        for f in self.failures.iter().take(5) {
            s.push_str(&format!("\n  - op #{} {}: {}", f.op_id, f.jwks_region, f.reason));
        }
        s
    }
}

/// Checks `tokens` against the JWKS of every region in `jwks_by_region`.
/// `now_unix` is the time at which validity is judged.
pub fn check_tokens(
    tokens: &[IssuedToken],
    jwks_by_region: &BTreeMap<String, Value>,
    now_unix: i64,
    leeway_s: i64,
    expected_issuer: Option<&str>,
) -> TokenReport {
    let mut failures = Vec::new();
    let mut failed = std::collections::BTreeSet::new();
    let mut issuer: Option<String> = expected_issuer.map(str::to_owned);
    let mut fail = |op_id: u64, region: &str, reason: String| {
        failed.insert(op_id);
        if failures.len() < MAX_LISTED {
            failures.push(TokenFailure { op_id, jwks_region: region.to_owned(), reason });
        }
    };
    if jwks_by_region.is_empty() && !tokens.is_empty() {
        fail(0, "", "no region's JWKS was available to verify against".into());
    }
    for t in tokens {
        let mut claims = None;
        for (region, jwks) in jwks_by_region {
            match attest_node::token::jwt::verify_jwt(&t.token, jwks, now_unix, leeway_s) {
                Ok((_, c)) => claims = Some(c),
                Err(e) => fail(t.op_id, region, format!("does not verify: {e}")),
            }
        }
        let Some(claims) = claims else { continue };
        for problem in claim_problems(&claims, t) {
            fail(t.op_id, "", problem);
        }
        match (claims.get("iss").and_then(Value::as_str), &issuer) {
            (None, _) => fail(t.op_id, "", "no iss claim".into()),
            (Some(i), None) => issuer = Some(i.to_owned()),
            (Some(i), Some(want)) if i != want => {
                fail(t.op_id, "", format!("iss {i:?} differs from {want:?}"));
            }
            _ => {}
        }
    }
    let jwks_keys = jwks_by_region.iter().map(|(r, j)| (r.clone(), j["keys"].as_array().map_or(0, Vec::len))).collect();
    TokenReport {
        ok: failed.is_empty(),
        tokens_checked: tokens.len(),
        jwks_keys,
        issuer,
        failed_tokens: failed.len(),
        failures,
    }
}

fn claim_problems(claims: &Map<String, Value>, t: &IssuedToken) -> Vec<String> {
    let mut out = Vec::new();
    for (name, want) in &t.expected_claims {
        let Some(got) = claims.get(name) else {
            out.push(format!("claim {name} missing"));
            continue;
        };
        if crate::workload::COLLATERAL_CLAIMS.contains(&name.as_str()) {
            if got["quotehash"] != want["quotehash"] {
                out.push(format!("{name}.quotehash is {} instead of {}", got["quotehash"], want["quotehash"]));
            }
            continue;
        }
        if got != want {
            out.push(format!("claim {name} is {} instead of {}", clip(got), clip(want)));
        }
    }
    if let Some(n) = &t.nonce {
        if claims.get("nonce").and_then(Value::as_str) != Some(n.as_str()) {
            out.push(format!("nonce is {:?}, sent {n:?}", claims.get("nonce")));
        }
    }
    if let Some(r) = &t.served_by {
        if claims.get("x-attestd-region").and_then(Value::as_str) != Some(r.as_str()) {
            out.push(format!("x-attestd-region is {:?}, but region {r} answered", claims.get("x-attestd-region")));
        }
    }
    out
}

fn clip(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!("{}…", &s[..s.char_indices().nth(80).map_or(s.len(), |(i, _)| i)])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest_node::token::{NodeKeys, TokenAlg};
    use serde_json::json;

    struct Keys {
        a: NodeKeys,
        b: NodeKeys,
        _dirs: (tempfile::TempDir, tempfile::TempDir),
    }

    /// Two independent nodes' signing keys (RSA generation is slow in a debug build: once per test).
    fn keys() -> Keys {
        let now = attest_node::api::system_clock();
        let (da, db) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let a = NodeKeys::load_or_generate(da.path(), "node-a", now, 30).expect("keys a");
        let b = NodeKeys::load_or_generate(db.path(), "node-b", now, 30).expect("keys b");
        Keys { a, b, _dirs: (da, db) }
    }

    fn claims(nonce: &str, region: &str) -> Map<String, Value> {
        let now = attest_node::api::system_clock();
        let v = json!({
            "iss": "https://shared.eastus2.attest.localhost", "iat": now, "nbf": now, "exp": now + 3600,
            "x-ms-sgx-mrsigner": "4aea", "x-ms-sgx-collateral": {"quotehash": "q1", "tcbinfohash": "t"},
            "nonce": nonce, "x-attestd-region": region,
        });
        v.as_object().cloned().unwrap_or_default()
    }

    fn expected() -> Map<String, Value> {
        json!({"x-ms-sgx-mrsigner": "4aea", "x-ms-sgx-collateral": {"quotehash": "q1"}})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    fn jwks(k: &NodeKeys) -> Value {
        let certs: Vec<Vec<u8>> = k.published().into_iter().map(|p| p.cert_der).collect();
        attest_node::token::jwt::jwks(&certs)
    }

    fn issued(op_id: u64, token: String, nonce: &str, region: &str) -> IssuedToken {
        IssuedToken {
            op_id,
            token,
            expected_claims: expected(),
            nonce: Some(nonce.into()),
            served_by: Some(region.into()),
        }
    }

    #[test]
    fn genuine_forged_and_tampered_tokens() {
        let k = keys();
        let now = attest_node::api::system_clock();
        // Both regions publish node a's key (the JWKS is replicated state).
        let regions: BTreeMap<String, Value> =
            [("eastus2".to_string(), jwks(&k.a)), ("centralus".to_string(), jwks(&k.a))].into_iter().collect();
        let good = k.a.sign_jwt(TokenAlg::Rs256, &Map::new(), &claims("n1", "eastus2")).expect("sign");
        let r = check_tokens(&[issued(1, good.clone(), "n1", "eastus2")], &regions, now, 60, None);
        assert!(r.ok, "{}", r.summary());
        assert_eq!(r.issuer.as_deref(), Some("https://shared.eastus2.attest.localhost"));

        // Forged: node b's signature under node a's header and claims.
        let other = k.b.sign_jwt(TokenAlg::Rs256, &Map::new(), &claims("n1", "eastus2")).expect("sign");
        let mut parts: Vec<&str> = good.split('.').collect();
        let sig_b = other.split('.').nth(2).unwrap_or_default();
        parts[2] = sig_b;
        let forged = parts.join(".");
        let r = check_tokens(&[issued(2, forged, "n1", "eastus2")], &regions, now, 60, None);
        assert!(!r.ok);
        assert_eq!(r.failed_tokens, 1);
        // Caught against each region's JWKS.
        assert_eq!(r.failures.len(), 2, "{}", r.summary());
        assert!(r.failures.iter().all(|f| f.reason.contains("does not verify")), "{}", r.summary());

        // Signed by a key no region publishes.
        let r = check_tokens(&[issued(3, other, "n1", "eastus2")], &regions, now, 60, None);
        assert!(!r.ok && r.failures[0].reason.contains("does not verify"), "{}", r.summary());

        // Claims changed after signing.
        let mut tampered: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut c = claims("n1", "eastus2");
        c.insert("x-ms-sgx-mrsigner".into(), "ffff".into());
        tampered[1] = crate::checker::tokens::tests::b64u(&serde_json::to_vec(&c).unwrap_or_default());
        let r = check_tokens(&[issued(4, tampered.join("."), "n1", "eastus2")], &regions, now, 60, None);
        assert!(!r.ok, "{}", r.summary());
    }

    #[test]
    fn wrong_claims_are_caught() {
        let k = keys();
        let now = attest_node::api::system_clock();
        let regions: BTreeMap<String, Value> = [("eastus2".to_string(), jwks(&k.a))].into_iter().collect();
        let sign = |c: &Map<String, Value>| k.a.sign_jwt(TokenAlg::Rs256, &Map::new(), c).expect("sign");
        // Another nonce than the one sent, and another region than the one that answered.
        let t = sign(&claims("n-other", "centralus"));
        let r = check_tokens(&[issued(1, t, "n1", "eastus2")], &regions, now, 60, None);
        assert_eq!(r.failed_tokens, 1);
        let reasons: Vec<&str> = r.failures.iter().map(|f| f.reason.as_str()).collect();
        assert!(reasons.iter().any(|r| r.contains("nonce")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("x-attestd-region")), "{reasons:?}");
        // A missing claim and a different quote hash.
        let mut c = claims("n1", "eastus2");
        c.remove("x-ms-sgx-mrsigner");
        c.insert("x-ms-sgx-collateral".into(), json!({"quotehash": "other"}));
        let r = check_tokens(&[issued(2, sign(&c), "n1", "eastus2")], &regions, now, 60, None);
        let reasons: Vec<&str> = r.failures.iter().map(|f| f.reason.as_str()).collect();
        assert!(reasons.iter().any(|r| r.contains("missing")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("quotehash")), "{reasons:?}");
        // Two issuers in one run.
        let mut c2 = claims("n1", "eastus2");
        c2.insert("iss".into(), "https://elsewhere".into());
        let toks = [issued(3, sign(&claims("n1", "eastus2")), "n1", "eastus2"), issued(4, sign(&c2), "n1", "eastus2")];
        let r = check_tokens(&toks, &regions, now, 60, None);
        assert_eq!(r.failed_tokens, 1, "{}", r.summary());
        assert!(r.failures[0].reason.contains("iss"));
        // Expired.
        let mut c3 = claims("n1", "eastus2");
        c3.insert("exp".into(), (now - 7200).into());
        let r = check_tokens(&[issued(5, sign(&c3), "n1", "eastus2")], &regions, now, 60, None);
        assert!(!r.ok);
        // No JWKS at all is a failure, not a pass.
        let r = check_tokens(
            &[issued(6, sign(&claims("n1", "eastus2")), "n1", "eastus2")],
            &BTreeMap::new(),
            now,
            60,
            None,
        );
        assert!(!r.ok);
    }

    pub(super) fn b64u(b: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }
}
