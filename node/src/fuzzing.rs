//! The bodies of the `cargo fuzz` targets (`node/fuzz/`), kept here so that
//! the libFuzzer binaries and the corpus replay test (`tests/fuzz_corpus.rs`,
//! part of CI) run exactly the same code on the same bytes.
//!
//! Every parser of untrusted bytes has a target: the evidence of each TEE
//! type (through the full verifier, with real collateral loaded so that
//! inputs can reach the deep checks), collateral blobs, policy text and
//! policy JWS documents. "Passes" means: returns, with `Ok` or a typed
//! error, and never panics.

use crate::evidence::{self, AttestationType, CollateralStore, EvidenceRequest, TrustAnchors, VerificationTime};
use crate::policy::jws::{PolicyCertificateRequest, PolicyUpload};
use crate::policy::{Claim, CompiledPolicy};

/// One fuzz target; its name is the `cargo fuzz` binary and corpus folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// An SGX or TDX DCAP quote (both verifiers see every input).
    EvidenceDcapQuote,
    /// An OpenEnclave report (header around an SGX quote).
    EvidenceOpenEnclave,
    /// SEV-SNP evidence: MAA's JSON (report, VCEK chain, UVM endorsements) or a raw report.
    EvidenceSnp,
    /// A TPM quote, signature, AK public area, certificates and event log.
    EvidenceTpm,
    /// A collateral blob as the import command would store it.
    EvidenceCollateral,
    /// Policy text in MAA's language, compiled and then evaluated.
    PolicyParse,
    /// A signed (or unsigned) policy JWS and a signer-certificate JWS.
    PolicyJws,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::EvidenceDcapQuote,
        Target::EvidenceOpenEnclave,
        Target::EvidenceSnp,
        Target::EvidenceTpm,
        Target::EvidenceCollateral,
        Target::PolicyParse,
        Target::PolicyJws,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::EvidenceDcapQuote => "evidence_dcap_quote",
            Target::EvidenceOpenEnclave => "evidence_openenclave",
            Target::EvidenceSnp => "evidence_snp",
            Target::EvidenceTpm => "evidence_tpm",
            Target::EvidenceCollateral => "evidence_collateral",
            Target::PolicyParse => "policy_parse",
            Target::PolicyJws => "policy_jws",
        }
    }
}

/// The state the targets share: a collateral store loaded with real Intel
/// collateral, and the pinned verification time of the vectors.
pub struct Harness {
    store: CollateralStore,
    at: VerificationTime,
}

impl Harness {
    /// `collateral`: (name, PCCS-style JSON) blobs, e.g. the SGX and TDX
    /// collateral of the dcap-qvl vectors; `tpm_root`: a DER root for TPM AK
    /// chains (the GCE vTPM root), so TPM inputs can reach the chain checks.
    pub fn new(collateral: &[(&str, &[u8])], tpm_root: Option<&[u8]>) -> Self {
        let builtin = TrustAnchors::builtin();
        let anchors = match tpm_root {
            Some(der) => builtin.clone().with_tpm_root(der).unwrap_or(builtin),
            None => builtin,
        };
        let store = CollateralStore::from_blobs(anchors, 1, collateral.iter().copied());
        // 2025-07-19T10:00:00Z: inside the validity of the vectors' collateral.
        Harness { store, at: VerificationTime::from_unix(1_752_919_200) }
    }

    /// The harness every target and the replay test use: the SGX and TDX
    /// collateral of the dcap-qvl vectors and the GCE vTPM root, read from
    /// `vectors` (the shared vectors folder). Panics if they are missing —
    /// a harness without them would fuzz only the first checks.
    pub fn from_vectors(vectors: &std::path::Path) -> Self {
        let read = |rel: &str| {
            let p = vectors.join(rel);
            std::fs::read(&p).unwrap_or_else(|e| panic!("fuzz harness: {}: {e}", p.display()))
        };
        let sgx = read("sgx/dcap-qvl/sgx_quote_collateral.json");
        let tdx = read("tdx/dcap-qvl/tdx_quote_v4_collateral.json");
        let tpm_root = read("roots/gce_tpm_ek_root_1.der");
        Harness::new(&[("sgx", &sgx), ("tdx", &tdx)], Some(&tpm_root))
    }

    /// One process-wide [`Harness::from_vectors`], built on first use (a
    /// fuzz target calls this for every input).
    pub fn shared(vectors: &str) -> &'static Harness {
        static H: std::sync::OnceLock<Harness> = std::sync::OnceLock::new();
        H.get_or_init(|| Harness::from_vectors(std::path::Path::new(vectors)))
    }

    /// Runs `target` on `data`. A panic here is the bug a fuzzer looks for.
    pub fn run(&self, target: Target, data: &[u8]) {
        match target {
            Target::EvidenceDcapQuote => {
                let req = EvidenceRequest::new(data.to_vec());
                let _ = evidence::verify(AttestationType::SgxEnclave, &req, &self.store, self.at);
                let _ = evidence::verify(AttestationType::TdxVm, &req, &self.store, self.at);
            }
            Target::EvidenceOpenEnclave => self.verify(AttestationType::OpenEnclave, data),
            Target::EvidenceSnp => self.verify(AttestationType::SevSnpVm, data),
            Target::EvidenceTpm => {
                let req = EvidenceRequest::new(data.to_vec()).with_nonce(vec![0x90, 0x09]);
                let _ = evidence::verify(AttestationType::Tpm, &req, &self.store, self.at);
            }
            Target::EvidenceCollateral => {
                let s = CollateralStore::from_blobs(TrustAnchors::builtin(), 0, [("fuzz", data)]);
                let _ = s.rejected().len();
            }
            Target::PolicyParse => {
                if let Ok(policy) = CompiledPolicy::compile_bytes(data) {
                    let claims = [
                        Claim::service("x-ms-sgx-is-debuggable", false),
                        Claim::service("x-ms-sgx-svn", 1i64),
                        Claim::service("x-ms-sgx-mrsigner", "00"),
                        Claim::service("events", "{\"Events\":[]}"),
                    ];
                    let _ = policy.evaluate(&claims);
                }
            }
            Target::PolicyJws => {
                if let Ok(text) = std::str::from_utf8(data) {
                    let _ = PolicyUpload::parse(text);
                    let _ = PolicyCertificateRequest::parse(text);
                }
            }
        }
    }

    fn verify(&self, ty: AttestationType, data: &[u8]) {
        let req = EvidenceRequest::new(data.to_vec());
        let _ = evidence::verify(ty, &req, &self.store, self.at);
    }
}
