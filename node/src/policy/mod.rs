//! The MAA attestation policy language (issue 4).
//!
//! This module is a library: the API layer (routes), the control plane
//! (storage through Raft) and the CLI call into it; it knows nothing of HTTP,
//! storage or evidence formats.
//!
//! * [`CompiledPolicy`]: policy text (versions 1.0, 1.1, 1.2) parsed and
//!   checked once, then evaluated many times against a claim set. It is
//!   `Send + Sync`, so the node caches it in an `Arc` keyed by the stored
//!   policy version.
//! * [`jws`]: policy upload and signer-certificate management as JWS
//!   (unsigned `alg: none` or signed with `x5c`/`jwk`), the
//!   `x-ms-policy-hash` / `x-ms-policy-token-hash` formulas, signer
//!   thumbprints, and the Isolated trust model.
//! * [`defaults`]: the built-in default policies per attestation type.
//!
//! Error mapping for the API layer (MAA codes):
//! [`PolicyParseError`] → `PolicyParsingError`;
//! [`PolicyEvaluationError`] → `PolicyEvaluationError`;
//! [`jws::PolicyJwsError`] → its [`jws::PolicyJwsError::maa_code`];
//! [`defaults::PolicyNotSet`] → `PolicyNotFound`-style 400 with MAA's
//! "policy has not been set" message.
//!
//! Structure: `grammar.pest` + `parse.rs` (text → [`ast`]), `eval.rs`
//! (semantics), `functions.rs` (1.2 built-ins), `claims.rs` (claim model),
//! `jws.rs` (JWS, hashes, certificates), `defaults.rs`.

pub mod ast;
pub mod claims;
pub mod defaults;
pub mod eval;
pub mod functions;
pub mod jws;
mod parse;

pub use ast::PolicyVersion;
pub use claims::{Claim, ClaimIssuer, ClaimValue};
pub use eval::{EvalError as PolicyEvaluationError, EvaluationOutcome, PolicyProperties};
pub use limits::ParseLimits;

/// Explicit bounds on untrusted input and on evaluation work.
pub mod limits {
    /// Largest policy text accepted by default (MAA documents no limit;
    /// real policies are a few KiB).
    pub const DEFAULT_MAX_POLICY_BYTES: usize = 256 * 1024;
    /// Deepest bracket/parenthesis nesting accepted in policy text.
    pub const MAX_NESTING: usize = 32;
    /// Most rules in one policy by default.
    pub const DEFAULT_MAX_RULES: usize = 2_000;
    /// Claim comparisons one evaluation may perform.
    pub const MAX_MATCH_STEPS: usize = 1_000_000;
    /// Times one rule may fire in one evaluation.
    pub const MAX_FIRINGS_PER_RULE: usize = 4_096;
    /// Claims one evaluation may add.
    pub const MAX_ADDED_CLAIMS: usize = 10_000;
    /// Longest JmesPath query.
    pub const MAX_JMESPATH_QUERY_BYTES: usize = 4 * 1024;
    /// Largest JSON text a function will parse.
    pub const MAX_JSON_ARGUMENT_BYTES: usize = 1024 * 1024;
    /// Longest string `AppendString` may build.
    pub const MAX_STRING_VALUE_BYTES: usize = 64 * 1024;
    /// Properties other than the known ones a policy may set.
    pub const MAX_OTHER_PROPERTIES: usize = 64;
    /// One year, MAA's documented maximum token validity.
    pub const MAX_TOKEN_VALIDITY_MINUTES: i64 = 525_600;

    /// Configurable parse limits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ParseLimits {
        pub max_policy_bytes: usize,
        pub max_nesting: usize,
        pub max_rules: usize,
    }

    impl Default for ParseLimits {
        fn default() -> Self {
            ParseLimits {
                max_policy_bytes: DEFAULT_MAX_POLICY_BYTES,
                max_nesting: MAX_NESTING,
                max_rules: DEFAULT_MAX_RULES,
            }
        }
    }
}

/// A policy that could not be parsed; maps to MAA's `PolicyParsingError`.
/// Every variant names the line and column (1-based) where it applies.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PolicyParseError {
    /// The text does not follow the grammar. The message imitates MAA's
    /// ANTLR-style one.
    #[error("Offending symbol: '{symbol}' Line: '{line}', Column: '{column}': expecting {expected}")]
    Syntax { line: usize, column: usize, symbol: String, expected: String },
    /// The text parses but breaks a rule of the language (unknown function,
    /// action not allowed in a section, version-gated feature, …).
    #[error("Line: '{line}', Column: '{column}': {message}")]
    Semantic { line: usize, column: usize, message: String },
    #[error("the policy is {len} bytes, more than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("Line: '{line}', Column: '{column}': the policy nests deeper than {max} levels")]
    TooDeep { line: usize, column: usize, max: usize },
    #[error("the policy text is not valid UTF-8")]
    NotUtf8,
}

impl PolicyParseError {
    /// MAA's error code for this error.
    pub fn maa_code(&self) -> &'static str {
        "PolicyParsingError"
    }

    /// The (line, column) the error points at, when it has one.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            PolicyParseError::Syntax { line, column, .. }
            | PolicyParseError::Semantic { line, column, .. }
            | PolicyParseError::TooDeep { line, column, .. } => Some((*line, *column)),
            _ => None,
        }
    }
}

impl PolicyEvaluationError {
    /// MAA's error code for this error.
    pub fn maa_code(&self) -> &'static str {
        "PolicyEvaluationError"
    }
}

/// A parsed, checked policy, ready to evaluate. Cheap to evaluate
/// repeatedly; share it as `Arc<CompiledPolicy>`.
#[derive(Debug)]
pub struct CompiledPolicy {
    policy: ast::Policy,
    /// Configuration rules, evaluated once at compile time: they set engine
    /// properties (TCB baseline, TPM settings) before evidence is verified,
    /// so they cannot depend on evidence claims.
    configuration: PolicyProperties,
}

impl CompiledPolicy {
    /// Parse policy text with the default limits.
    pub fn compile(text: &str) -> Result<CompiledPolicy, PolicyParseError> {
        Self::compile_with_limits(text, &ParseLimits::default())
    }

    /// Parse policy bytes (as stored or uploaded) with the default limits.
    pub fn compile_bytes(bytes: &[u8]) -> Result<CompiledPolicy, PolicyParseError> {
        let text = std::str::from_utf8(bytes).map_err(|_| PolicyParseError::NotUtf8)?;
        Self::compile(text)
    }

    /// Parse policy text with explicit limits.
    pub fn compile_with_limits(text: &str, limits: &ParseLimits) -> Result<CompiledPolicy, PolicyParseError> {
        let policy = parse::parse_policy(text, limits)?;
        let mut configuration = PolicyProperties::default();
        let mut added = Vec::new();
        let mut issued = Vec::new();
        let mut steps = 0usize;
        eval::run_section(
            &policy.configuration,
            ast::SectionKind::Configuration,
            &[],
            &mut added,
            &mut configuration,
            &mut issued,
            &mut steps,
        )
        .map_err(|e| {
            let (line, message) = match e {
                PolicyEvaluationError::InRule { line, source, .. } => (line, source.to_string()),
                other => (1, other.to_string()),
            };
            PolicyParseError::Semantic { line, column: 1, message: format!("configurationrules: {message}") }
        })?;
        Ok(CompiledPolicy { policy, configuration })
    }

    pub fn version(&self) -> PolicyVersion {
        self.policy.version
    }

    /// Engine properties set by the configuration rules.
    pub fn configuration(&self) -> &PolicyProperties {
        &self.configuration
    }

    /// Evaluate authorization then issuance rules on the incoming claims.
    ///
    /// Fails with [`PolicyEvaluationError::Denied`] /
    /// [`PolicyEvaluationError::NotPermitted`] (MAA: "A Deny claim was
    /// issued, authorization failed.") unless authorization permits.
    pub fn evaluate(&self, claims: &[Claim]) -> Result<EvaluationOutcome, PolicyEvaluationError> {
        let mut added = Vec::new();
        let mut properties = self.configuration.clone();
        let mut issued = Vec::new();
        let mut steps = 0usize;
        let (permitted, denied) = eval::run_section(
            &self.policy.authorization,
            ast::SectionKind::Authorization,
            claims,
            &mut added,
            &mut properties,
            &mut issued,
            &mut steps,
        )?;
        if denied {
            return Err(PolicyEvaluationError::Denied);
        }
        if !permitted {
            return Err(PolicyEvaluationError::NotPermitted);
        }
        eval::run_section(
            &self.policy.issuance,
            ast::SectionKind::Issuance,
            claims,
            &mut added,
            &mut properties,
            &mut issued,
            &mut steps,
        )?;
        Ok(EvaluationOutcome { issued_claims: eval::group_issued(&added, &issued), properties, added_claims: added })
    }
}

#[cfg(test)]
mod tests;
