//! Built-in default policies, keyed by MAA's policy type name (the
//! `/attest/{type}` and `/policies/{type}` route segment, case-insensitive).
//!
//! * SgxEnclave / OpenEnclave: MAA's current default (version 1.1, from the
//!   public docs, verbatim): permit everything the verifier accepted, select
//!   the `azuredefault` TCB baseline, and issue the legacy claim names.
//! * TdxVm / SevSnpVm: MAA publishes no default. Ours permits every quote
//!   the verifier accepted (it has already checked the vendor chain, TCB and
//!   collateral) and issues nothing extra: the token already carries every
//!   verified `tdx_*` / `x-ms-sevsnpvm-*` claim, and which measurements to
//!   trust is the relying party's (or a custom policy's) decision. This is
//!   the same "verify, then describe" stance as the SGX default.
//! * Tpm: no default, as in MAA: attesting without a policy fails with
//!   [`PolicyNotSet`].

/// MAA's current default SGX / OpenEnclave policy (v1.1).
pub const DEFAULT_SGX_POLICY: &str = "version= 1.1;
configurationrules{
\t=> issueproperty(type=\"x-ms-sgx-tcbidentifier\", value=\"azuredefault\");
};
authorizationrules{
\t=> permit();
};
issuancerules{
\tc:[type==\"x-ms-sgx-is-debuggable\"] => issue(type=\"is-debuggable\", value=c.value);
\tc:[type==\"x-ms-sgx-mrsigner\"] => issue(type=\"sgx-mrsigner\", value=c.value);
\tc:[type==\"x-ms-sgx-mrenclave\"] => issue(type=\"sgx-mrenclave\", value=c.value);
\tc:[type==\"x-ms-sgx-product-id\"] => issue(type=\"product-id\", value=c.value);
\tc:[type==\"x-ms-sgx-svn\"] => issue(type=\"svn\", value=c.value);
\tc:[type==\"x-ms-attestation-type\"] => issue(type=\"tee\", value=c.value);
};
";

/// MAA's legacy (2020) default SGX policy, v1.0. Its `x-ms-policy-hash` is
/// `egjnANIzEpS2WgpE4Nk-QEwM69XRCgTs42_G0qLlbnk`.
pub const LEGACY_SGX_POLICY: &str = "version= 1.0;authorizationrules{c:[type==\"$is-debuggable\"] => permit();};issuancerules{c:[type==\"$is-debuggable\"] => issue(type=\"is-debuggable\", value=c.value);c:[type==\"$sgx-mrsigner\"] => issue(type=\"sgx-mrsigner\", value=c.value);c:[type==\"$sgx-mrenclave\"] => issue(type=\"sgx-mrenclave\", value=c.value);c:[type==\"$product-id\"] => issue(type=\"product-id\", value=c.value);c:[type==\"$svn\"] => issue(type=\"svn\", value=c.value);c:[type==\"$tee\"] => issue(type=\"tee\", value=c.value);};";

/// attestd's default TDX policy (see the module docs for the rationale).
pub const DEFAULT_TDX_POLICY: &str = "version= 1.0;
authorizationrules{
\t=> permit();
};
issuancerules{
};
";

/// attestd's default SEV-SNP policy (see the module docs for the rationale).
pub const DEFAULT_SEV_SNP_POLICY: &str = DEFAULT_TDX_POLICY;

/// The minimal permit-all policy every MAA SDK test uses.
pub const MINIMAL_PERMIT_ALL_POLICY: &str = "version=1.0; authorizationrules{=> permit();}; issuancerules{};";

/// No policy is set for this type and it has no default.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("A {type_name} attestation policy has not been set. Set a policy before attesting.")]
pub struct PolicyNotSet {
    pub type_name: String,
}

impl PolicyNotSet {
    /// MAA answers 400 with this code when attesting without a policy.
    pub fn maa_code(&self) -> &'static str {
        "PolicyNotFound"
    }
}

/// Look up a type's unknown-type error separately from "not set".
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DefaultPolicyError {
    #[error(transparent)]
    NotSet(#[from] PolicyNotSet),
    #[error("unknown attestation type '{0}'")]
    UnknownType(String),
}

/// The default policy text for a policy type name (`SgxEnclave`,
/// `OpenEnclave`, `TdxVm`, `SevSnpVm`, `Tpm`; case-insensitive).
pub fn default_policy(type_name: &str) -> Result<&'static str, DefaultPolicyError> {
    let t = type_name.to_ascii_lowercase();
    match t.as_str() {
        "sgxenclave" | "openenclave" => Ok(DEFAULT_SGX_POLICY),
        "tdxvm" => Ok(DEFAULT_TDX_POLICY),
        "sevsnpvm" => Ok(DEFAULT_SEV_SNP_POLICY),
        "tpm" => Err(PolicyNotSet { type_name: "TPM".into() }.into()),
        _ => Err(DefaultPolicyError::UnknownType(type_name.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::CompiledPolicy;

    #[test]
    fn every_default_compiles() {
        for t in ["SgxEnclave", "openenclave", "TdxVm", "SevSnpVm"] {
            let text = default_policy(t).unwrap();
            CompiledPolicy::compile(text).unwrap();
        }
        CompiledPolicy::compile(LEGACY_SGX_POLICY).unwrap();
        CompiledPolicy::compile(MINIMAL_PERMIT_ALL_POLICY).unwrap();
    }

    #[test]
    fn tpm_has_no_default() {
        match default_policy("Tpm") {
            Err(DefaultPolicyError::NotSet(e)) => {
                assert!(e.to_string().contains("has not been set"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(default_policy("Nope"), Err(DefaultPolicyError::UnknownType(_))));
    }
}
