//! Binding of caller-supplied data to the hardware report.
//!
//! MAA's rules (research/maa-api.md §1.3): SHA-256(runtimeData) must equal the
//! first 32 bytes of the report data (SGX, TDX, SEV-SNP); SHA-256(initTimeData)
//! must equal SNP `host_data` or the first 32 bytes of the SGX `CONFIGID`.
//! The hash is over the bytes exactly as sent (an OpenEnclave client's JSON
//! ends in a NUL, and the hash includes it). With `dataType: JSON` the data is
//! also parsed (trailing NULs and whitespace ignored) and returned as the
//! `x-ms-runtime` / `x-ms-inittime` claim; with `Binary` it is not parsed.

use serde_json::Value;

use super::error::{EvidenceError, Result};
use super::pki::sha2_free::sha256;

/// Largest runtimeData / initTimeData accepted.
pub const MAX_DATA_LEN: usize = 64 * 1024;

/// MAA's `dataType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
pub enum DataType {
    /// Opaque bytes.
    #[default]
    Binary,
    /// UTF-8 JSON; parsed into a claim.
    #[serde(rename = "JSON", alias = "Json", alias = "json")]
    Json,
}

/// Caller-supplied runtimeData or initTimeData (already base64url-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundData {
    pub data: Vec<u8>,
    pub data_type: DataType,
}

impl BoundData {
    /// Binary data.
    pub fn binary(data: impl Into<Vec<u8>>) -> Self {
        Self { data: data.into(), data_type: DataType::Binary }
    }

    /// JSON data.
    pub fn json(data: impl Into<Vec<u8>>) -> Self {
        Self { data: data.into(), data_type: DataType::Json }
    }

    /// SHA-256 of the data as sent.
    pub fn digest(&self) -> [u8; 32] {
        sha256(&self.data)
    }

    /// Parse as JSON if declared JSON (tolerating trailing NULs / whitespace).
    pub fn json_value(&self, what: &'static str) -> Result<Option<Value>> {
        if self.data_type != DataType::Json {
            return Ok(None);
        }
        let mut end = self.data.len();
        while end > 0 && matches!(self.data[end - 1], 0 | b' ' | b'\n' | b'\r' | b'\t') {
            end -= 1;
        }
        serde_json::from_slice(&self.data[..end])
            .map(Some)
            .map_err(|e| EvidenceError::DataNotJson { what, reason: e.to_string() })
    }
}

fn check_len(d: &BoundData, what: &'static str) -> Result<()> {
    if d.data.len() > MAX_DATA_LEN {
        return Err(EvidenceError::TooLarge { what, len: d.data.len(), max: MAX_DATA_LEN });
    }
    Ok(())
}

/// Check SHA-256(runtimeData) == `report_data[..32]`; returns the parsed JSON if any.
pub fn bind_runtime_data(rd: &BoundData, report_data: &[u8]) -> Result<Option<Value>> {
    check_len(rd, "runtimeData")?;
    let want = rd.digest();
    let found = report_data.get(..32).unwrap_or(report_data);
    if found != want {
        return Err(EvidenceError::RuntimeDataMismatch { expected: hex::encode(want), found: hex::encode(found) });
    }
    rd.json_value("runtimeData")
}

/// Check SHA-256(initTimeData) == `field[..32]`; returns the parsed JSON if any.
pub fn bind_init_time_data(itd: &BoundData, field_name: &'static str, field: &[u8]) -> Result<Option<Value>> {
    check_len(itd, "initTimeData")?;
    let want = itd.digest();
    let found = field.get(..32).unwrap_or(field);
    if found != want {
        return Err(EvidenceError::InitTimeDataMismatch {
            field: field_name,
            expected: hex::encode(want),
            found: hex::encode(found),
        });
    }
    itd.json_value("initTimeData")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_with_trailing_nul_parses_and_hash_includes_nul() {
        let d = BoundData::json(b"{\"a\":1}\0".to_vec());
        let mut rd = [0u8; 64];
        rd[..32].copy_from_slice(&sha256(b"{\"a\":1}\0"));
        let v = bind_runtime_data(&d, &rd).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v, Some(serde_json::json!({"a":1})));
    }

    #[test]
    fn mismatch_is_typed() {
        let d = BoundData::binary(b"x".to_vec());
        let err = bind_runtime_data(&d, &[0u8; 64]);
        assert!(matches!(err, Err(EvidenceError::RuntimeDataMismatch { .. })));
        let bad_json = BoundData::json(b"{nope".to_vec());
        let mut rd = [0u8; 64];
        rd[..32].copy_from_slice(&sha256(b"{nope"));
        assert!(matches!(bind_runtime_data(&bad_json, &rd), Err(EvidenceError::DataNotJson { .. })));
    }
}
