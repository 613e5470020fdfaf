//! Replays every fuzz target's corpus (`node/fuzz/corpus/<target>/`: the
//! seeds from the real vectors plus what the fuzz runs kept) through the very
//! harness the `cargo fuzz` binaries run (`attest_node::fuzzing`), so CI
//! catches a regression on any input a fuzzer once reached, in seconds and
//! on the stable toolchain.

use attest_node::fuzzing::{Harness, Target};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors");
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus");

fn read(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(VECTORS).join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_fuzz_corpus_replays_without_a_panic() {
    let harness = Harness::from_vectors(std::path::Path::new(VECTORS));
    let mut failures = Vec::new();
    for target in Target::ALL {
        let dir = PathBuf::from(CORPUS).join(target.name());
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(
            files.iter().any(|f| f.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-"))),
            "{}: no seeds (python3 node/fuzz/make_seeds.py)",
            target.name()
        );
        for f in files {
            let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if catch_unwind(AssertUnwindSafe(|| harness.run(target, &data))).is_err() {
                failures.push(f.display().to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "inputs that panic (reproduce with cargo fuzz run <target> <file>):\n{}",
        failures.join("\n")
    );
}

/// The seeds are real evidence: the harness must accept them, or the
/// fuzzer starts from inputs that fail at the first check and explores
/// nothing deep. (Guards the corpus, and that the harness is wired.)
#[test]
fn the_seeds_are_real_evidence_that_verifies() {
    use attest_node::evidence::{
        self, AttestationType, CollateralStore, EvidenceRequest, TrustAnchors, VerificationTime,
    };
    let store = CollateralStore::from_blobs(
        TrustAnchors::builtin(),
        1,
        [
            ("sgx", read("sgx/dcap-qvl/sgx_quote_collateral.json")),
            ("tdx", read("tdx/dcap-qvl/tdx_quote_v4_collateral.json")),
        ],
    );
    let at = VerificationTime::from_unix(1_752_919_200);
    let seed = |t: &str, n: &str| std::fs::read(PathBuf::from(CORPUS).join(t).join(n)).unwrap_or_default();
    let ok = |ty, data: Vec<u8>| evidence::verify(ty, &EvidenceRequest::new(data), &store, at);
    assert!(ok(AttestationType::SgxEnclave, seed("evidence_dcap_quote", "seed-sgx-v3")).is_ok());
    assert!(ok(AttestationType::TdxVm, seed("evidence_dcap_quote", "seed-tdx-v4")).is_ok());
    let snp = ok(AttestationType::SevSnpVm, seed("evidence_snp", "seed-maa-trustee"));
    assert!(snp.is_ok(), "{snp:?}");
    // The UVM endorsement seeds get through the report, the COSE parsing
    // and the did:x509 resolution; only their signature is not real.
    let uvm = ok(AttestationType::SevSnpVm, seed("evidence_snp", "seed-maa-uvm-trustee"));
    assert_eq!(uvm.err(), Some(evidence::EvidenceError::BadSignature { what: "UVM endorsement" }));
}
