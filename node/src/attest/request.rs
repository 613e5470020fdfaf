//! MAA attest request bodies, decoded from untrusted JSON.
//!
//! Shapes (research/maa-api.md §1.3): `quote` (SgxEnclave, TdxVm) or
//! `report` (OpenEnclave, SevSnpVm), `runtimeData` / `initTimeData` as
//! `{data, dataType}`, `draftPolicyForAttestation`, `nonce` (string, or a
//! number as some clients send). Member names match case-insensitively
//! (MAA is ASP.NET, whose JSON binding is), which also accepts the 2018
//! `Quote` / `EnclaveHeldData` spelling. Byte fields are base64url with or
//! without padding; the standard alphabet is tolerated. `Tpm` takes
//! `{"data": base64url(evidence JSON)}` in one round (see `docs/api.md`).
//! Unknown members are ignored, as MAA does.

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::evidence::{AttestationType, BoundData, DataType};

/// A decoded attest request.
#[derive(Debug, Clone, PartialEq)]
pub struct AttestRequest {
    pub evidence: Vec<u8>,
    pub runtime_data: Option<BoundData>,
    pub init_time_data: Option<BoundData>,
    pub draft_policy: Option<String>,
    /// Echoed as the `nonce` claim, with the JSON type it was sent with.
    pub nonce: Option<Value>,
}

/// Why a request body was refused (always the client's fault: 400/413).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RequestError {
    #[error("the request body is not valid JSON: {0}")]
    Json(String),
    #[error("the request body must be a JSON object")]
    NotObject,
    #[error("missing required member '{0}'")]
    Missing(&'static str),
    #[error("member '{name}' must be {expected}")]
    WrongType { name: &'static str, expected: &'static str },
    #[error("member '{0}' is not valid base64url")]
    BadBase64(&'static str),
    #[error("'{name}.dataType' must be 'Binary' or 'JSON', not '{value}'")]
    BadDataType { name: &'static str, value: String },
    #[error("{what} is {len} bytes, more than the limit of {max}")]
    TooLarge { what: &'static str, len: usize, max: usize },
    #[error("member '{0}' is not supported for {1}")]
    NotSupported(&'static str, &'static str),
}

impl RequestError {
    pub fn is_too_large(&self) -> bool {
        matches!(self, RequestError::TooLarge { .. })
    }
}

/// Decode base64url (padded or not; `+` `/` tolerated).
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    // One pass over the bytes of a multi-kilobyte quote, no copy, unless a
    // client used the standard alphabet.
    if !s.bytes().any(|b| b == b'+' || b == b'/') {
        return base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.as_bytes()).ok();
    }
    let mapped: Vec<u8> = s
        .bytes()
        .map(|b| match b {
            b'+' => b'-',
            b'/' => b'_',
            b => b,
        })
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&mapped).ok()
}

fn get<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

fn bytes_member(
    obj: &Map<String, Value>,
    name: &'static str,
    max: usize,
    what: &'static str,
) -> Result<Option<Vec<u8>>, RequestError> {
    match get(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            // Base64 is 4/3 of the bytes: refuse oversized text before decoding it.
            if s.len() / 4 * 3 > max {
                return Err(RequestError::TooLarge { what, len: s.len() / 4 * 3, max });
            }
            b64_decode(s).map(Some).ok_or(RequestError::BadBase64(name))
        }
        Some(_) => Err(RequestError::WrongType { name, expected: "a base64url string" }),
    }
}

fn data_member(obj: &Map<String, Value>, name: &'static str) -> Result<Option<BoundData>, RequestError> {
    let v = match get(obj, name) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let o = v.as_object().ok_or(RequestError::WrongType { name, expected: "an object {data, dataType}" })?;
    let data = bytes_member(o, "data", crate::evidence::binding::MAX_DATA_LEN, name)?.ok_or(RequestError::Missing(
        match name {
            "runtimeData" => "runtimeData.data",
            _ => "initTimeData.data",
        },
    ))?;
    let data_type = match get(o, "dataType") {
        None | Some(Value::Null) => DataType::Binary,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("binary") => DataType::Binary,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("json") => DataType::Json,
        Some(Value::String(s)) => {
            return Err(RequestError::BadDataType { name, value: s.chars().take(32).collect() });
        }
        Some(_) => return Err(RequestError::WrongType { name, expected: "an object whose dataType is a string" }),
    };
    Ok(Some(BoundData { data, data_type }))
}

/// Decode the body of `POST /attest/{ty}`.
pub fn parse(ty: AttestationType, body: &[u8], max_evidence: usize) -> Result<AttestRequest, RequestError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| RequestError::Json(e.to_string()))?;
    let obj = v.as_object().ok_or(RequestError::NotObject)?;
    let evidence = match ty {
        AttestationType::SgxEnclave | AttestationType::TdxVm => {
            bytes_member(obj, "quote", max_evidence, "quote")?.ok_or(RequestError::Missing("quote"))?
        }
        AttestationType::OpenEnclave => bytes_member(obj, "report", max_evidence, "report")?
            .or(bytes_member(obj, "quote", max_evidence, "quote")?)
            .ok_or(RequestError::Missing("report"))?,
        // MAA's SNP `report` is base64url(JSON {SnpReport, VcekCertChain, Endorsements}).
        AttestationType::SevSnpVm => {
            bytes_member(obj, "report", max_evidence, "report")?.ok_or(RequestError::Missing("report"))?
        }
        AttestationType::Tpm => {
            bytes_member(obj, "data", max_evidence, "data")?.ok_or(RequestError::Missing("data"))?
        }
    };
    let mut runtime_data = data_member(obj, "runtimeData")?;
    if runtime_data.is_none() {
        // 2018 / early 2020 name of binary runtime data.
        if let Some(d) =
            bytes_member(obj, "enclaveHeldData", crate::evidence::binding::MAX_DATA_LEN, "enclaveHeldData")?
        {
            runtime_data = Some(BoundData::binary(d));
        }
    }
    let init_time_data = data_member(obj, "initTimeData")?;
    let draft_policy = match get(obj, "draftPolicyForAttestation") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => {
            if ty == AttestationType::TdxVm {
                return Err(RequestError::NotSupported("draftPolicyForAttestation", "TdxVm"));
            }
            Some(s.clone())
        }
        Some(_) => return Err(RequestError::WrongType { name: "draftPolicyForAttestation", expected: "a string" }),
    };
    let nonce = match get(obj, "nonce") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 1024 => Some(Value::String(s.clone())),
        Some(Value::String(s)) => return Err(RequestError::TooLarge { what: "nonce", len: s.len(), max: 1024 }),
        Some(Value::Number(n)) => Some(Value::Number(n.clone())),
        Some(_) => return Err(RequestError::WrongType { name: "nonce", expected: "a string or a number" }),
    };
    Ok(AttestRequest { evidence, runtime_data, init_time_data, draft_policy, nonce })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 16;

    #[test]
    fn sgx_body_with_padding_variants_and_case() {
        let b = br#"{"Quote":"AQID","runtimeData":{"data":"BAU=","dataType":"json"},"nonce":42}"#;
        let r = parse(AttestationType::SgxEnclave, b, MAX).unwrap();
        assert_eq!(r.evidence, vec![1, 2, 3]);
        let rd = r.runtime_data.unwrap();
        assert_eq!((rd.data, rd.data_type), (vec![4, 5], DataType::Json));
        assert_eq!(r.nonce, Some(serde_json::json!(42)));
        let r = parse(AttestationType::SgxEnclave, br#"{"quote":"AQID","enclaveHeldData":"_-8"}"#, MAX).unwrap();
        assert_eq!(r.runtime_data.unwrap().data, vec![0xff, 0xef]);
        assert_eq!(b64_decode("/+8=").unwrap(), vec![0xff, 0xef]);
    }

    #[test]
    fn errors_name_the_member() {
        let e = |ty, b: &[u8]| parse(ty, b, MAX).unwrap_err().to_string();
        assert!(e(AttestationType::SgxEnclave, b"{").contains("not valid JSON"));
        assert!(e(AttestationType::SgxEnclave, b"[]").contains("JSON object"));
        assert!(e(AttestationType::SgxEnclave, b"{}").contains("'quote'"));
        assert!(e(AttestationType::OpenEnclave, b"{}").contains("'report'"));
        assert!(e(AttestationType::SgxEnclave, br#"{"quote":5}"#).contains("base64url string"));
        assert!(e(AttestationType::SgxEnclave, br#"{"quote":"!!"}"#).contains("base64url"));
        assert!(e(AttestationType::SgxEnclave, br#"{"quote":"AA","runtimeData":"x"}"#).contains("object"));
        assert!(e(AttestationType::SgxEnclave, br#"{"quote":"AA","runtimeData":{"data":"AA","dataType":"xml"}}"#)
            .contains("dataType"));
        assert!(e(AttestationType::SgxEnclave, br#"{"quote":"AA","nonce":[1]}"#).contains("nonce"));
        assert!(e(AttestationType::TdxVm, br#"{"quote":"AA","draftPolicyForAttestation":"x"}"#).contains("TdxVm"));
        let big = format!(r#"{{"quote":"{}"}}"#, "A".repeat(MAX * 2));
        assert!(parse(AttestationType::SgxEnclave, big.as_bytes(), MAX).unwrap_err().is_too_large());
    }
}
