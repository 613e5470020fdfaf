//! Claims: what the evidence verifiers hand to the policy engine and what the
//! policy adds. A claim is a `(type, value, issuer)` triple; the same type may
//! occur more than once (MAA claim sets are multi-valued).

use std::fmt;

/// Who produced a claim. Policy conditions can filter on it (`issuer==…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimIssuer {
    /// Produced by the service from verified evidence (incoming claims).
    AttestationService,
    /// Produced by the policy itself (`add`/`issue`).
    AttestationPolicy,
    /// Anything else, e.g. claims supplied by a caller.
    CustomClaim,
}

impl ClaimIssuer {
    /// The name used in policy text.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimIssuer::AttestationService => "AttestationService",
            ClaimIssuer::AttestationPolicy => "AttestationPolicy",
            ClaimIssuer::CustomClaim => "CustomClaim",
        }
    }
}

/// A typed claim value.
///
/// The policy language has Integer, Boolean and String values (plus sets,
/// which are simply several claims of one type). `Json` carries structured
/// evidence (MAA's `events`, `pcrs`, `x-ms-runtime`) without re-parsing it for
/// every JmesPath query; in comparisons it behaves like the String claim that
/// holds its compact JSON text, which is how MAA represents JSON claims.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimValue {
    String(String),
    Integer(i64),
    Boolean(bool),
    Json(serde_json::Value),
}

impl ClaimValue {
    /// The `valueType` name policies compare against.
    pub fn value_type(&self) -> &'static str {
        match self {
            ClaimValue::String(_) | ClaimValue::Json(_) => "String",
            ClaimValue::Integer(_) => "Integer",
            ClaimValue::Boolean(_) => "Boolean",
        }
    }

    /// The value as it appears in an issued token.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ClaimValue::String(s) => serde_json::Value::String(s.clone()),
            ClaimValue::Integer(i) => serde_json::Value::from(*i),
            ClaimValue::Boolean(b) => serde_json::Value::Bool(*b),
            ClaimValue::Json(v) => v.clone(),
        }
    }

    /// Convert a JSON scalar into a claim value; objects and arrays stay JSON.
    pub fn from_json(value: serde_json::Value) -> ClaimValue {
        match value {
            serde_json::Value::String(s) => ClaimValue::String(s),
            serde_json::Value::Bool(b) => ClaimValue::Boolean(b),
            serde_json::Value::Number(ref n) => match n.as_i64() {
                Some(i) => ClaimValue::Integer(i),
                None => ClaimValue::Json(value),
            },
            other => ClaimValue::Json(other),
        }
    }

    /// Policy-language equality: same type and value; a JSON value equals a
    /// string holding its compact text.
    pub fn policy_eq(&self, other: &ClaimValue) -> bool {
        match (self, other) {
            (ClaimValue::Json(a), ClaimValue::String(b)) | (ClaimValue::String(b), ClaimValue::Json(a)) => {
                json_text_eq(a, b)
            }
            _ => self == other,
        }
    }
}

fn json_text_eq(v: &serde_json::Value, s: &str) -> bool {
    match v {
        // A JSON string's "text" for comparison purposes is its content.
        serde_json::Value::String(inner) => inner == s,
        // Compare without allocating: serialize into a bounded buffer.
        other => serde_json::to_string(other).is_ok_and(|t| t == s),
    }
}

impl fmt::Display for ClaimValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimValue::String(s) => write!(f, "{s:?}"),
            ClaimValue::Integer(i) => write!(f, "{i}"),
            ClaimValue::Boolean(b) => write!(f, "{b}"),
            ClaimValue::Json(v) => write!(f, "{v}"),
        }
    }
}

impl From<&str> for ClaimValue {
    fn from(s: &str) -> Self {
        ClaimValue::String(s.to_owned())
    }
}
impl From<String> for ClaimValue {
    fn from(s: String) -> Self {
        ClaimValue::String(s)
    }
}
impl From<i64> for ClaimValue {
    fn from(i: i64) -> Self {
        ClaimValue::Integer(i)
    }
}
impl From<bool> for ClaimValue {
    fn from(b: bool) -> Self {
        ClaimValue::Boolean(b)
    }
}

/// One claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub claim_type: String,
    pub value: ClaimValue,
    pub issuer: ClaimIssuer,
}

impl Claim {
    /// An incoming claim produced by the service from verified evidence.
    pub fn service(claim_type: impl Into<String>, value: impl Into<ClaimValue>) -> Claim {
        Claim { claim_type: claim_type.into(), value: value.into(), issuer: ClaimIssuer::AttestationService }
    }

    /// A claim with an explicit issuer.
    pub fn new(claim_type: impl Into<String>, value: impl Into<ClaimValue>, issuer: ClaimIssuer) -> Claim {
        Claim { claim_type: claim_type.into(), value: value.into(), issuer }
    }
}

/// Turn the verifier's JSON claims (MAA names → values) into incoming
/// claims issued by the service. Scalars keep their type; objects, arrays
/// and non-integer numbers stay JSON.
pub fn claims_from_json_map(map: &serde_json::Map<String, serde_json::Value>) -> Vec<Claim> {
    map.iter().map(|(k, v)| Claim::service(k.clone(), ClaimValue::from_json(v.clone()))).collect()
}

/// The deprecated incoming names MAA still offers SGX policies
/// (`$is-debuggable`, `$sgx-mrsigner`, `$sgx-mrenclave`, `$product-id`,
/// `$svn`, `$tee`), derived from the current ones; the legacy default
/// policy matches on them.
pub fn add_legacy_sgx_aliases(claims: &mut Vec<Claim>) {
    const ALIASES: [(&str, &str); 6] = [
        ("x-ms-sgx-is-debuggable", "$is-debuggable"),
        ("x-ms-sgx-mrsigner", "$sgx-mrsigner"),
        ("x-ms-sgx-mrenclave", "$sgx-mrenclave"),
        ("x-ms-sgx-product-id", "$product-id"),
        ("x-ms-sgx-svn", "$svn"),
        ("x-ms-attestation-type", "$tee"),
    ];
    let extra: Vec<Claim> = claims
        .iter()
        .filter_map(|c| {
            ALIASES
                .iter()
                .find(|(current, _)| *current == c.claim_type)
                .map(|(_, legacy)| Claim::new(*legacy, c.value.clone(), c.issuer))
        })
        .collect();
    claims.extend(extra);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_equals_its_text() {
        let j = ClaimValue::Json(serde_json::json!({"a": 1}));
        assert!(j.policy_eq(&ClaimValue::from("{\"a\":1}")));
        assert!(!j.policy_eq(&ClaimValue::Integer(1)));
        assert!(ClaimValue::Json(serde_json::json!("x")).policy_eq(&"x".into()));
    }

    #[test]
    fn from_json_scalars() {
        assert_eq!(ClaimValue::from_json(serde_json::json!(3)), ClaimValue::Integer(3));
        assert_eq!(ClaimValue::from_json(serde_json::json!(true)), ClaimValue::Boolean(true));
        assert_eq!(ClaimValue::from_json(serde_json::json!("s")), ClaimValue::from("s"));
    }
}
