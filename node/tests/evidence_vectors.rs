//! Every vector in `shared/vectors/` verified (or refused) as its README says,
//! at the README's time, plus negative cases per type (issue 3).

use std::path::PathBuf;

use attest_node::evidence::{
    self, AttestationType, BoundData, CollateralStore, EvidenceError, EvidenceRequest, TrustAnchors, VerificationTime,
    VerifiedEvidence, VerifyOptions,
};
use serde_json::json;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors");

fn path(rel: &str) -> PathBuf {
    PathBuf::from(VECTORS).join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn t(rfc3339: &str) -> VerificationTime {
    VerificationTime::from_unix(
        attest_node::evidence::pki::parse_rfc3339(rfc3339).unwrap_or_else(|| panic!("{rfc3339}")),
    )
}

/// A store from vector files; every blob must be accepted.
fn store(files: &[&str]) -> CollateralStore {
    store_with(TrustAnchors::builtin(), files)
}

fn store_with(anchors: TrustAnchors, files: &[&str]) -> CollateralStore {
    let blobs: Vec<(String, Vec<u8>)> = files.iter().map(|f| (f.to_string(), read(f))).collect();
    let s = CollateralStore::from_blobs(anchors, 1, blobs);
    assert!(s.rejected().is_empty(), "rejected: {:?}", s.rejected());
    s
}

fn ok(ty: AttestationType, req: &EvidenceRequest, s: &CollateralStore, at: VerificationTime) -> VerifiedEvidence {
    evidence::verify(ty, req, s, at).unwrap_or_else(|e| panic!("{ty:?}: {e}"))
}

fn err(ty: AttestationType, req: &EvidenceRequest, s: &CollateralStore, at: VerificationTime) -> EvidenceError {
    match evidence::verify(ty, req, s, at) {
        Ok(v) => panic!("{ty:?} unexpectedly verified: {:?}", v.claims),
        Err(e) => e,
    }
}

fn flip(mut b: Vec<u8>, idx: usize, mask: u8) -> Vec<u8> {
    b[idx] ^= mask;
    b
}

#[test]
fn vectors_path_resolves() {
    assert!(path("README.md").is_file(), "{VECTORS} does not hold the vectors");
}

// ---------------------------------------------------------------- SGX ----

const SGX_QVL_COLL: &str = "sgx/dcap-qvl/sgx_quote_collateral.json";
const SGX_QVL_TIME: &str = "2025-07-19T10:01:17Z";

#[test]
fn sgx_dcap_qvl_vector() {
    let s = store(&[SGX_QVL_COLL]);
    let q = read("sgx/dcap-qvl/sgx_quote_v3.bin");
    let v = ok(AttestationType::SgxEnclave, &EvidenceRequest::new(q.clone()), &s, t(SGX_QVL_TIME));
    assert_eq!(v.tcb_status.as_deref(), Some("ConfigurationAndSWHardeningNeeded"));
    assert_eq!(v.advisory_ids, vec!["INTEL-SA-00289", "INTEL-SA-00615"]);
    let c = &v.claims;
    assert_eq!(c["x-ms-attestation-type"], "sgx");
    assert_eq!(c["x-ms-sgx-mrenclave"], "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb");
    assert_eq!(c["x-ms-sgx-mrsigner"], "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6");
    assert_eq!(c["x-ms-sgx-product-id"], 0);
    assert_eq!(c["x-ms-sgx-svn"], 0);
    assert_eq!(c["x-ms-sgx-is-debuggable"], false);
    assert_eq!(c["x-ms-sgx-fmspc"], "00A067110000");
    let mut rd = b"Hello, world!".to_vec();
    rd.resize(64, 0);
    assert_eq!(c["x-ms-sgx-report-data"], hex::encode(&rd));
    assert_eq!(c["x-ms-sgx-tcb-status"], "ConfigurationAndSWHardeningNeeded");

    // Same verdict as a bare dcap-qvl run on the same inputs.
    let coll: dcap_qvl::QuoteCollateralV3 = qvl_collateral(SGX_QVL_COLL);
    let r = dcap_qvl::verify::verify(&q, &coll, t(SGX_QVL_TIME).unix() as u64).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, v.tcb_status.unwrap_or_default());
    assert_eq!(r.advisory_ids, v.advisory_ids);
}

/// The repo's QuoteCollateralV3 JSON (hex byte fields) as dcap-qvl's struct.
fn qvl_collateral(rel: &str) -> dcap_qvl::QuoteCollateralV3 {
    let v: serde_json::Value = serde_json::from_slice(&read(rel)).unwrap_or_else(|e| panic!("{e}"));
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let h = |k: &str| hex::decode(s(k)).unwrap_or_else(|e| panic!("{k}: {e}"));
    dcap_qvl::QuoteCollateralV3 {
        pck_crl_issuer_chain: s("pck_crl_issuer_chain"),
        root_ca_crl: h("root_ca_crl"),
        pck_crl: h("pck_crl"),
        tcb_info_issuer_chain: s("tcb_info_issuer_chain"),
        tcb_info: s("tcb_info"),
        tcb_info_signature: h("tcb_info_signature"),
        qe_identity_issuer_chain: s("qe_identity_issuer_chain"),
        qe_identity: s("qe_identity"),
        qe_identity_signature: h("qe_identity_signature"),
        pck_certificate_chain: None,
    }
}

#[test]
fn sgx_dcap_qvl_vector_time_window() {
    let s = store(&[SGX_QVL_COLL]);
    let req = EvidenceRequest::new(read("sgx/dcap-qvl/sgx_quote_v3.bin"));
    // Before the TCB info was issued, and after the QE identity expired.
    assert!(matches!(
        err(AttestationType::SgxEnclave, &req, &s, t("2025-06-19T10:00:00Z")),
        EvidenceError::CollateralNotYetValid { .. }
    ));
    assert!(matches!(
        err(AttestationType::SgxEnclave, &req, &s, t("2025-07-25T00:00:00Z")),
        EvidenceError::CollateralExpired { .. }
    ));
    // Missing collateral names what is missing.
    let empty = CollateralStore::from_blobs(TrustAnchors::builtin(), 0, Vec::<(String, Vec<u8>)>::new());
    match err(AttestationType::SgxEnclave, &req, &empty, t(SGX_QVL_TIME)) {
        EvidenceError::CollateralMissing { what } => assert!(what.contains("CRL"), "{what}"),
        e => panic!("{e}"),
    }
}

#[test]
fn sgx_dcap_rs_tcb_info_v2() {
    let s = store(&["sgx/dcap-rs-occlum-00606a/assembled_collateral_tcbinfo_v2.json"]);
    let at = VerificationTime::from_unix(1_739_419_232);
    let v = ok(
        AttestationType::SgxEnclave,
        &EvidenceRequest::new(read("sgx/dcap-rs-occlum-00606a/dcap_rs_sgx_quote_v3.bin")),
        &s,
        at,
    );
    assert_eq!(v.tcb_status.as_deref(), Some("OutOfDate"));
    assert!(v.advisory_ids.is_empty());
    assert_eq!(v.claims["x-ms-sgx-mrenclave"], "a4f45c39dac622cb1dd32ddb35a52ec92db41d0fa88a1c911c49e59c534f61cd");
    assert_eq!(v.claims["x-ms-sgx-mrsigner"], "1bda23eb3a807dfe735ddcebbfa2eac05e04a00df2804296612f770b594180ba");
    assert_eq!(v.claims["x-ms-sgx-pcesvn"], 13);
    assert_eq!(v.claims["x-ms-sgx-report-data"], hex::encode([0u8; 64]));

    let occlum = EvidenceRequest::new(read("sgx/dcap-rs-occlum-00606a/occlum_quote_v3.bin"));
    let v = ok(AttestationType::SgxEnclave, &occlum, &s, at);
    assert_eq!(v.tcb_status.as_deref(), Some("OutOfDate"));
    assert!(v.is_debuggable);
    assert_eq!(v.claims["x-ms-sgx-is-debuggable"], true);
    assert_eq!(v.claims["x-ms-sgx-mrenclave"], "8f173e4613ff05c52aaf04162d234edae8c9977eae47eb2299ae16a553011c68");
    assert_eq!(v.claims["x-ms-sgx-mrsigner"], "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e");
    assert_eq!(v.claims["x-ms-sgx-pcesvn"], 11);
    let mut rd = b"test".to_vec();
    rd.resize(64, 0);
    assert_eq!(v.claims["x-ms-sgx-report-data"], hex::encode(&rd));
    // A debug enclave is refused when the options forbid it.
    let strict = occlum.with_options(VerifyOptions { allow_debug: false });
    assert!(matches!(err(AttestationType::SgxEnclave, &strict, &s, at), EvidenceError::DebugNotAllowed { .. }));
}

#[test]
fn sgx_individual_pcs_files_build_the_same_store() {
    // The control plane stores PCS bodies, CRLs and chains as separate blobs.
    let s = store(&[
        "sgx/dcap-rs-occlum-00606a/tcbinfo_v2_00606a000000.json",
        "sgx/dcap-rs-occlum-00606a/qe_identity_v2.json",
        "sgx/dcap-rs-occlum-00606a/pck_platform_crl.der",
        "sgx/dcap-rs-occlum-00606a/root_ca_crl.der",
        "roots/intel_sgx_tcb_signing_2018_chain.pem",
        // The Platform CA comes inside the quote; the CRL needs it to verify.
        "tdx/assembled-collateral/dcap-rs_00806f050000_2025-02_collateral.json",
    ]);
    let v = ok(
        AttestationType::SgxEnclave,
        &EvidenceRequest::new(read("sgx/dcap-rs-occlum-00606a/dcap_rs_sgx_quote_v3.bin")),
        &s,
        VerificationTime::from_unix(1_739_419_232),
    );
    assert_eq!(v.tcb_status.as_deref(), Some("OutOfDate"));
}

// -------------------------------------------------------- OpenEnclave ----

#[test]
fn openenclave_reports_chain_to_the_older_root_encoding() {
    // No 2021 QE identity / PCK CRL exists, so full verification stops at the
    // (expired) Processor-CA CRL; every signature before that point verified,
    // including the chain ending in the 2018-05-21T10:41:11 root encoding.
    let s = store(&[SGX_QVL_COLL, "sgx/azure-sdk-oe/tcbInfo-sgx-00906ed50000_2025-09-28.json"]);
    let at = t("2025-10-01T00:00:00Z");
    for f in ["sgx/azure-sdk-oe/oe_report_debug.bin", "sgx/azure-sdk-oe/oe_report_nondebug.bin"] {
        let rep = read(f);
        match err(AttestationType::OpenEnclave, &EvidenceRequest::new(rep.clone()), &s, at) {
            EvidenceError::CollateralExpired { what, .. } => {
                assert!(what.contains("Processor CA"), "{what}")
            }
            e => panic!("{f}: {e}"),
        }
        // SgxEnclave takes the bare quote: same verdict.
        let q = rep[16..].to_vec();
        assert!(matches!(
            err(AttestationType::SgxEnclave, &EvidenceRequest::new(q), &s, at),
            EvidenceError::CollateralExpired { .. }
        ));
        // A flipped body bit is caught before collateral freshness.
        let bad = flip(rep.clone(), 16 + 48 + 64 + 5, 0x01);
        assert!(matches!(
            err(AttestationType::OpenEnclave, &EvidenceRequest::new(bad), &s, at),
            EvidenceError::BadSignature { what: "quote" }
        ));
    }
}

#[test]
fn openenclave_report_fields_match_recorded_maa_claims() {
    use attest_node::evidence::{openenclave::oe_quote, sgx::report_claims};
    let rep = read("sgx/azure-sdk-oe/oe_report_debug.bin");
    let q = oe_quote(&rep).unwrap_or_else(|e| panic!("{e}"));
    let c = report_claims(q).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c["x-ms-sgx-is-debuggable"], true);
    assert_eq!(c["x-ms-sgx-mrenclave"], "292a1f4b519e46627eb2478a3d9851405653c5b4b0a6925de843834d9216850e");
    assert_eq!(c["x-ms-sgx-mrsigner"], "4aea5f9a0ed04b11f889aadfe6a1d376213a29a95a85ce7337ae6f7fece6610c");
    assert_eq!(c["x-ms-sgx-product-id"], 1);
    assert_eq!(c["x-ms-sgx-svn"], 1);
    assert_eq!(
        c["x-ms-sgx-report-data"],
        "28542e44fe7e73f6610f6b31ae7576925f09ccdbb4c5646583ecc1561337a8ff0000000000000000000000000000000000000000000000000000000000000000"
    );
    let rep = read("sgx/azure-sdk-oe/oe_report_nondebug.bin");
    let c = report_claims(oe_quote(&rep).unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c["x-ms-sgx-is-debuggable"], false);
    assert_eq!(c["x-ms-sgx-mrenclave"], "b779202618becb636768e5d902f28d524222735fafb539ea9ba07c3fc171a1c2");
    assert_eq!(c["x-ms-sgx-mrsigner"], "2c1a44952ae8207135c6c29b75b8c029372ee94b677e15c20bd42340f10d41aa");

    // runtimeData binding: the JSON JWK with its trailing NUL.
    let rd = read("sgx/azure-sdk-oe/runtime_data.bin");
    let mut report_data = [0u8; 64];
    report_data[..32].copy_from_slice(
        &hex::decode("28542e44fe7e73f6610f6b31ae7576925f09ccdbb4c5646583ecc1561337a8ff").unwrap_or_default(),
    );
    let v = evidence::binding::bind_runtime_data(&BoundData::json(rd.clone()), &report_data)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_eq!(v["jwk"]["crv"], "P-256");
    assert!(
        evidence::binding::bind_runtime_data(&BoundData::binary(rd[..rd.len() - 1].to_vec()), &report_data).is_err()
    );
}

#[test]
fn openenclave_header_errors() {
    let s = store(&[SGX_QVL_COLL]);
    let at = t(SGX_QVL_TIME);
    let rep = read("sgx/azure-sdk-oe/oe_report_debug.bin");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (rep[..10].to_vec(), "truncated"),
        (flip(rep.clone(), 0, 0x02), "version"),
        (flip(rep.clone(), 4, 0x01), "type"),
        (flip(rep.clone(), 15, 0x80), "size"),
        (rep[..rep.len() - 1].to_vec(), "size"),
    ];
    for (bad, what) in cases {
        let e = err(AttestationType::OpenEnclave, &EvidenceRequest::new(bad), &s, at);
        assert!(
            matches!(
                e,
                EvidenceError::Truncated { .. } | EvidenceError::Unsupported { .. } | EvidenceError::Malformed { .. }
            ),
            "{what}: {e}"
        );
    }
}

// --------------------------------------------------------------- TDX ----

#[test]
fn tdx_dcap_qvl_v4_up_to_date() {
    let s = store(&["tdx/dcap-qvl/tdx_quote_v4_collateral.json"]);
    let q = read("tdx/dcap-qvl/tdx_quote_v4.bin");
    let at = t("2025-07-19T10:00:34Z");
    let v = ok(AttestationType::TdxVm, &EvidenceRequest::new(q.clone()), &s, at);
    assert_eq!(v.tcb_status.as_deref(), Some("UpToDate"));
    assert!(v.advisory_ids.is_empty());
    let c = &v.claims;
    assert_eq!(c["x-ms-attestation-type"], "tdxvm");
    assert_eq!(c["attester_tcb_status"], "UpToDate");
    assert_eq!(
        c["tdx_mrtd"],
        "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
    );
    assert_eq!(c["tdx_report_data"], "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20");
    assert_eq!(c["tdx_td_attributes"], "0000001000000000");
    assert_eq!(c["tdx_td_attributes_septve_disable"], true);
    assert_eq!(c["tdx_td_attributes_debug"], false);
    assert_eq!(c["tdx_xfam"], "e702060000000000");
    assert_eq!(c["tdx_rtmr3"], hex::encode([0u8; 48]));
    assert!(c["tdx_rtmr0"].as_str().unwrap_or_default().starts_with("44c0197b"));
    assert_eq!(c["tdx_fmspc"], "B0C06F000000");
    assert_eq!(c["dbgstat"], "disabled");
    // 70 trailing zero bytes after the signature data were tolerated.
    assert_eq!(q.len(), 5006);
    let r =
        dcap_qvl::verify::verify(&q, &qvl_collateral("tdx/dcap-qvl/tdx_quote_v4_collateral.json"), at.unix() as u64)
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, "UpToDate");
}

#[test]
fn tdx_dcap_qvl_v5_outdated_has_no_tcb_level() {
    let s = store(&["tdx/dcap-qvl/tdx_quote_v5_outdated_collateral.json"]);
    let e = err(
        AttestationType::TdxVm,
        &EvidenceRequest::new(read("tdx/dcap-qvl/tdx_quote_v5_outdated.bin")),
        &s,
        t("2026-03-20T10:41:14Z"),
    );
    assert!(matches!(e, EvidenceError::TcbLevelNotFound { .. }), "{e}");
}

const DCAP_RS_TDX_COLL: &str = "tdx/assembled-collateral/dcap-rs_00806f050000_2025-02_collateral.json";

#[test]
fn tdx_dcap_rs_out_of_date() {
    let s = store(&[DCAP_RS_TDX_COLL]);
    let at = VerificationTime::from_unix(1_739_419_232);
    let v = ok(
        AttestationType::TdxVm,
        &EvidenceRequest::new(read("tdx/dcap-rs-00806f050000/quote_tdx_00806f050000.dat")),
        &s,
        at,
    );
    assert_eq!(v.tcb_status.as_deref(), Some("OutOfDate"));
    assert_eq!(v.advisory_ids, vec!["INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986"]);
    assert!(v.claims["tdx_mrtd"].as_str().unwrap_or_default().starts_with("935be774"));
    assert_eq!(v.claims["tdx_report_data"], hex::encode([0u8; 64]));
}

#[test]
fn tdx_azure_cvm_td_quote() {
    // dcap-qvl refuses it (SEPT_VE_DISABLE not set): policy, not verification.
    let s = store(&[DCAP_RS_TDX_COLL]);
    let at = VerificationTime::from_unix(1_739_419_232);
    let v = ok(AttestationType::TdxVm, &EvidenceRequest::new(read("azure-cvm/tdx-vtpm/td-quote.bin")), &s, at);
    assert_eq!(v.tcb_status.as_deref(), Some("OutOfDate"));
    assert_eq!(v.claims["tdx_module_id"], "TDX_01");
    assert_eq!(v.claims["tdx_module_tcb_status"], "OutOfDate");
    assert_eq!(v.claims["tdx_td_attributes"], "0000000000000000");
    assert_eq!(v.claims["tdx_td_attributes_septve_disable"], false);
    assert!(v.claims["tdx_mrtd"].as_str().unwrap_or_default().starts_with("024a32b0"));
    assert!(v.claims["tdx_report_data"]
        .as_str()
        .unwrap_or_default()
        .starts_with("9734504f161d104c74e3165c15f779b06a9bb40dfa71937817d7eee68e593839"));
    for adv in ["INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986"] {
        assert!(v.advisory_ids.iter().any(|a| a == adv), "{:?}", v.advisory_ids);
    }
}

const TEEKIT_AT: &str = "2025-10-01T00:00:00Z";

#[test]
fn tdx_teekit_collateral_bundles() {
    let at = t(TEEKIT_AT);
    // Second Azure TDX quote, UpToDate with the 2025-09 TCB info.
    let s = store(&["tdx/assembled-collateral/teekit_tdx_00806f050000_2025-10-01_collateral.json"]);
    let b64 = String::from_utf8(read("tdx/teekit-azure/tdx-v4-azure.b64")).unwrap_or_default();
    use base64::Engine as _;
    let q = base64::engine::general_purpose::STANDARD
        .decode(b64.split_whitespace().collect::<String>())
        .unwrap_or_else(|e| panic!("{e}"));
    let v = ok(AttestationType::TdxVm, &EvidenceRequest::new(q), &s, at);
    assert_eq!(v.tcb_status.as_deref(), Some("UpToDate"));
    assert_eq!(v.claims["tdx_module_tcb_status"], "UpToDate");
    assert!(v.claims["tdx_report_data"].as_str().unwrap_or_default().starts_with("675b293e4e395b2b"));
    // dcap-rs quote with the newer TCB info: still OutOfDate.
    let v = ok(
        AttestationType::TdxVm,
        &EvidenceRequest::new(read("tdx/dcap-rs-00806f050000/quote_tdx_00806f050000.dat")),
        &s,
        at,
    );
    assert_eq!(v.tcb_status.as_deref(), Some("OutOfDate"));

    // dcap-qvl's v4 sample against the b0c06f bundle.
    let s = store(&["tdx/assembled-collateral/teekit_tdx_b0c06f000000_2025-10-01_collateral.json"]);
    let v = ok(AttestationType::TdxVm, &EvidenceRequest::new(read("tdx/dcap-qvl/tdx_quote_v4.bin")), &s, at);
    assert_eq!(v.tcb_status.as_deref(), Some("UpToDate"));

    // trustee debug TD: OutOfDate (our match), debug refused only on request.
    let s = store(&["tdx/assembled-collateral/teekit_tdx_50806f000000_2025-10-01_collateral.json"]);
    let req = EvidenceRequest::new(read("tdx/trustee/tdx_quote_4.dat"));
    let v = ok(AttestationType::TdxVm, &req, &s, at);
    assert_eq!(v.tcb_status.as_deref(), Some("OutOfDate"));
    assert!(v.is_debuggable);
    assert_eq!(v.claims["tdx_td_attributes_debug"], true);
    assert_eq!(v.claims["dbgstat"], "enabled");
    for adv in ["INTEL-SA-00837", "INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986"] {
        assert!(v.advisory_ids.iter().any(|a| a == adv), "{:?}", v.advisory_ids);
    }
    let strict = req.with_options(VerifyOptions { allow_debug: false });
    assert!(matches!(err(AttestationType::TdxVm, &strict, &s, at), EvidenceError::DebugNotAllowed { .. }));

    // trustee v5 quote: no matching TCB level.
    let s = store(&["tdx/assembled-collateral/teekit_tdx_90c06f000000_2025-10-01_collateral.json"]);
    let e = err(AttestationType::TdxVm, &EvidenceRequest::new(read("tdx/trustee/tdx_quote_5.dat")), &s, at);
    assert!(matches!(e, EvidenceError::TcbLevelNotFound { .. }), "{e}");
}

#[test]
fn tdx_trustee_quote_6_needs_a_pck_crl() {
    let s = store(&[
        "tdx/trustee/tcbInfo.json",
        "tdx/trustee/enclaveIdentity.json",
        "roots/intel_sgx_tcb_signing_2025_chain.pem",
    ]);
    let e = err(
        AttestationType::TdxVm,
        &EvidenceRequest::new(read("tdx/trustee/tdx_quote_6.dat")),
        &s,
        t("2025-11-01T00:00:00Z"),
    );
    match e {
        EvidenceError::CollateralMissing { what } => assert!(what.contains("CRL"), "{what}"),
        e => panic!("{e}"),
    }
}

#[test]
fn tdx_runtime_data_binding() {
    let s = store(&["tdx/dcap-qvl/tdx_quote_v4_collateral.json"]);
    let at = t("2025-07-19T10:00:34Z");
    let req = EvidenceRequest::new(read("tdx/dcap-qvl/tdx_quote_v4.bin"))
        .with_runtime_data(BoundData::binary(b"not the preimage".to_vec()));
    assert!(matches!(err(AttestationType::TdxVm, &req, &s, at), EvidenceError::RuntimeDataMismatch { .. }));
}

// ------------------------------------------------ DCAP negative cases ----

/// Offsets into the quote's PEM chain of each certificate's body.
fn pem_cert_offsets(q: &[u8]) -> Vec<usize> {
    let needle = b"-----BEGIN CERTIFICATE-----\n";
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(p) = q[i..].windows(needle.len()).position(|w| w == needle) {
        out.push(i + p + needle.len());
        i += p + needle.len();
    }
    out
}

#[test]
fn sgx_negative_cases() {
    let s = store(&[SGX_QVL_COLL]);
    let at = t(SGX_QVL_TIME);
    let q = read("sgx/dcap-qvl/sgx_quote_v3.bin");
    let sgx = |b: Vec<u8>| err(AttestationType::SgxEnclave, &EvidenceRequest::new(b), &s, at);

    // Body bit (MRENCLAVE) and quote signature bit.
    assert_eq!(sgx(flip(q.clone(), 48 + 64, 1)), EvidenceError::BadSignature { what: "quote" });
    assert_eq!(sgx(flip(q.clone(), 436 + 4, 1)), EvidenceError::BadSignature { what: "quote" });
    // Attestation key bit: breaks the QE report binding.
    assert_eq!(sgx(flip(q.clone(), 436 + 64 + 3, 1)), EvidenceError::QeReportBinding);
    // QE report body bit and QE report signature bit.
    assert_eq!(sgx(flip(q.clone(), 436 + 128 + 64, 1)), EvidenceError::BadSignature { what: "QE report" });
    assert_eq!(sgx(flip(q.clone(), 436 + 128 + 384 + 2, 1)), EvidenceError::BadSignature { what: "QE report" });
    // A bit inside each certificate of the PEM chain (base64 char 'A'<->'B' keeps PEM valid).
    for (i, off) in pem_cert_offsets(&q).into_iter().enumerate() {
        let mut bad = q.clone();
        let pos = off + 400; // inside the TBS, past the header
        bad[pos] = if bad[pos] == b'A' { b'B' } else { b'A' };
        let e = sgx(bad);
        assert!(
            matches!(
                e,
                EvidenceError::CertificateSignature { .. }
                    | EvidenceError::CertificateParse { .. }
                    | EvidenceError::UntrustedChain { .. }
                    | EvidenceError::Malformed { .. }
            ),
            "cert {i}: {e}"
        );
    }
    // Truncated input at every length class, and absurd length fields.
    for n in [0, 10, 47, 48, 100, 432, 436, 1000, q.len() - 1] {
        let e = sgx(q[..n].to_vec());
        assert!(matches!(e, EvidenceError::Truncated { .. } | EvidenceError::Malformed { .. }), "len {n}: {e}");
    }
    let mut absurd = q.clone();
    absurd[432..436].copy_from_slice(&u32::MAX.to_le_bytes()); // auth data length
    assert!(matches!(sgx(absurd), EvidenceError::Malformed { .. }));
    let mut absurd = q.clone();
    absurd[436 + 128 + 384 + 64..436 + 128 + 384 + 66].copy_from_slice(&u16::MAX.to_le_bytes()); // QE auth data length
    assert!(matches!(sgx(absurd), EvidenceError::Malformed { .. }));
    assert!(matches!(sgx(vec![0u8; 1 << 20]), EvidenceError::TooLarge { .. }));
    // A TDX quote sent as SgxEnclave.
    let tdx = read("tdx/dcap-qvl/tdx_quote_v4.bin");
    assert!(matches!(sgx(tdx), EvidenceError::CollateralMissing { .. } | EvidenceError::Unsupported { .. }));

    // runtimeData mismatch and match.
    let mut rd = b"Hello, world!".to_vec();
    rd.resize(64, 0);
    let req = EvidenceRequest::new(q.clone()).with_runtime_data(BoundData::binary(b"Hello".to_vec()));
    assert!(matches!(err(AttestationType::SgxEnclave, &req, &s, at), EvidenceError::RuntimeDataMismatch { .. }));
    let req = EvidenceRequest::new(q.clone()).with_init_time_data(BoundData::binary(b"x".to_vec()));
    assert!(matches!(err(AttestationType::SgxEnclave, &req, &s, at), EvidenceError::InitTimeDataMismatch { .. }));
}

#[test]
fn sgx_wrong_root_and_tampered_collateral() {
    // A different "Intel root" key: nothing chains.
    let other_root = read("roots/amd_ark_milan.pem");
    let anchors = TrustAnchors::builtin().with_intel_root(&other_root).unwrap_or_else(|e| panic!("{e}"));
    let s = CollateralStore::from_blobs(anchors, 1, vec![(SGX_QVL_COLL, read(SGX_QVL_COLL))]);
    assert!(!s.rejected().is_empty());
    let e = err(
        AttestationType::SgxEnclave,
        &EvidenceRequest::new(read("sgx/dcap-qvl/sgx_quote_v3.bin")),
        &s,
        t(SGX_QVL_TIME),
    );
    assert!(matches!(e, EvidenceError::UntrustedChain { .. }), "{e}");

    // A flipped bit in the signed TCB info body: the blob is rejected at import.
    let mut v: serde_json::Value = serde_json::from_slice(&read(SGX_QVL_COLL)).unwrap_or_default();
    let body = v["tcb_info"]
        .as_str()
        .unwrap_or_default()
        .replace("\"tcbEvaluationDataNumber\":17", "\"tcbEvaluationDataNumber\":18");
    v["tcb_info"] = json!(body);
    let s = CollateralStore::from_blobs(
        TrustAnchors::builtin(),
        2,
        vec![("tampered", serde_json::to_vec(&v).unwrap_or_default())],
    );
    assert_eq!(s.rejected().len(), 1, "{:?}", s.rejected());
    let e = err(
        AttestationType::SgxEnclave,
        &EvidenceRequest::new(read("sgx/dcap-qvl/sgx_quote_v3.bin")),
        &s,
        t(SGX_QVL_TIME),
    );
    assert!(matches!(e, EvidenceError::CollateralMissing { .. }), "{e}");
}

// ----------------------------------------------------------- SEV-SNP ----

fn snp_raw(report: &[u8], vcek: &[u8]) -> EvidenceRequest {
    let mut ev = report.to_vec();
    ev.extend_from_slice(vcek);
    EvidenceRequest::new(ev)
}

fn virtee_report() -> Vec<u8> {
    let text = String::from_utf8(read("sev-snp/virtee-milan/report_milan.hex")).unwrap_or_default();
    hex::decode(text.split_whitespace().collect::<String>()).unwrap_or_else(|e| panic!("{e}"))
}

fn maa_snp_json(report: &[u8], chain_pem: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let e = base64::engine::general_purpose::URL_SAFE;
    let inner = json!({
        "SnpReport": e.encode(report),
        "VcekCertChain": e.encode(chain_pem),
        "Endorsements": e.encode(br#"{"Uvm":[]}"#),
    });
    // MAA's `report` field is base64url(JSON), padded as Go's URLEncoding does.
    e.encode(serde_json::to_vec(&inner).unwrap_or_default()).into_bytes()
}

fn der_to_pem(der: &[u8]) -> Vec<u8> {
    attest_node::token::keys::pem_encode("CERTIFICATE", der).into_bytes()
}

#[test]
fn snp_virtee_milan() {
    let s = store(&[]);
    let at = t("2024-01-01T00:00:00Z");
    let rep = virtee_report();
    let vcek = read("sev-snp/virtee-milan/vcek_milan.der");
    let v = ok(AttestationType::SevSnpVm, &snp_raw(&rep, &vcek), &s, at);
    let c = &v.claims;
    assert_eq!(c["x-ms-attestation-type"], "sevsnpvm");
    assert_eq!(c["x-ms-sevsnpvm-report-version"], 2);
    assert_eq!(c["x-ms-sevsnpvm-policy"], 0x30000);
    assert_eq!(c["x-ms-sevsnpvm-vmpl"], 0);
    assert_eq!(c["x-ms-sevsnpvm-reported-tcb"], "0300000000000873");
    assert_eq!(c["x-ms-sevsnpvm-bootloader-svn"], 3);
    assert_eq!(c["x-ms-sevsnpvm-snpfw-svn"], 8);
    assert_eq!(c["x-ms-sevsnpvm-microcode-svn"], 0x73);
    assert_eq!(c["x-ms-sevsnpvm-tee-svn"], 0);
    assert_eq!(
        c["x-ms-sevsnpvm-launchmeasurement"],
        "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
    );
    assert!(c["x-ms-sevsnpvm-reportdata"].as_str().unwrap_or_default().starts_with("d447b55d"));
    assert!(c["x-ms-sevsnpvm-chipid"].as_str().unwrap_or_default().starts_with("d49554ec717f4e5b"));
    assert_eq!(c["x-ms-sevsnpvm-is-debuggable"], false);
    assert_eq!(c["x-ms-sevsnpvm-smt-allowed"], true);
    assert_eq!(c["x-ms-sevsnpvm-product"], "Milan");

    // The repo's negative: bit 0x80 of byte 21.
    let e = err(AttestationType::SevSnpVm, &snp_raw(&flip(rep.clone(), 21, 0x80), &vcek), &s, at);
    assert_eq!(e, EvidenceError::BadSignature { what: "SEV-SNP report" });

    // MAA's JSON request shape with the PEM chain (VCEK, ASK, ARK).
    let mut chain = der_to_pem(&vcek);
    chain.extend_from_slice(&read("sev-snp/virtee-milan/cert_chain_milan.pem"));
    let req = EvidenceRequest::new(maa_snp_json(&rep, &chain));
    let v2 = ok(AttestationType::SevSnpVm, &req, &s, at);
    assert_eq!(v2.claims["x-ms-sevsnpvm-launchmeasurement"], c["x-ms-sevsnpvm-launchmeasurement"]);
    assert_eq!(v2.claims["x-ms-sevsnpvm-endorsements-present"], true);
    // The JSON itself (not base64url) is accepted too, and a PEM VCEK after a raw report.
    let v3 = ok(AttestationType::SevSnpVm, &snp_raw(&rep, &der_to_pem(&vcek)), &s, at);
    assert_eq!(v3.claims, v.claims);

    // runtimeData must hash to report_data[..32].
    let req = snp_raw(&rep, &vcek).with_runtime_data(BoundData::json(b"{}".to_vec()));
    assert!(matches!(err(AttestationType::SevSnpVm, &req, &s, at), EvidenceError::RuntimeDataMismatch { .. }));
    let req = snp_raw(&rep, &vcek).with_init_time_data(BoundData::binary(b"x".to_vec()));
    assert!(matches!(err(AttestationType::SevSnpVm, &req, &s, at), EvidenceError::InitTimeDataMismatch { .. }));
}

#[test]
fn snp_other_milan_vectors_and_vlek() {
    let s = store(&[]);
    let at = t("2025-06-01T00:00:00Z");
    let v = ok(
        AttestationType::SevSnpVm,
        &snp_raw(&read("sev-snp/go-sev-guest-milan/attestation.bin"), &read("sev-snp/go-sev-guest-milan/vcek.der")),
        &s,
        at,
    );
    assert_eq!(v.claims["x-ms-sevsnpvm-policy"], 0xb0000);
    assert_eq!(v.claims["x-ms-sevsnpvm-reported-tcb"], "0200000000000544");
    assert!(v.claims["x-ms-sevsnpvm-launchmeasurement"].as_str().unwrap_or_default().starts_with("b07af962"));
    let mut rd = vec![1u8, 2, 3, 4, 5];
    rd.resize(64, 0);
    assert_eq!(v.claims["x-ms-sevsnpvm-reportdata"], hex::encode(rd));

    let v = ok(
        AttestationType::SevSnpVm,
        &snp_raw(&read("sev-snp/trustee-milan/report.bin"), &read("sev-snp/trustee-milan/vcek.der")),
        &s,
        at,
    );
    assert_eq!(v.claims["x-ms-sevsnpvm-policy"], 0x3001f);
    assert!(v.claims["x-ms-sevsnpvm-launchmeasurement"].as_str().unwrap_or_default().starts_with("a1f39304"));
    assert!(v.claims["x-ms-sevsnpvm-reportdata"].as_str().unwrap_or_default().starts_with("ec6c52d7533cc2c4"));

    // VLEK (AWS), report v3, VMPL 1, chip id masked; VLEK valid only to 2025-12-10.
    let vlek = snp_raw(&read("sev-snp/trustee-vlek-aws/report_vlek.bin"), &read("sev-snp/trustee-vlek-aws/vlek.der"));
    let v = ok(AttestationType::SevSnpVm, &vlek, &s, at);
    assert_eq!(v.claims["x-ms-sevsnpvm-report-version"], 3);
    assert_eq!(v.claims["x-ms-sevsnpvm-vmpl"], 1);
    assert_eq!(v.claims["x-ms-sevsnpvm-signing-key"], "VLEK");
    assert_eq!(v.claims["x-ms-sevsnpvm-reported-tcb"], "04000000000018d9");
    assert!(v.claims["x-ms-sevsnpvm-launchmeasurement"].as_str().unwrap_or_default().starts_with("8922ebbd"));
    assert!(matches!(
        err(AttestationType::SevSnpVm, &vlek, &s, t("2026-01-01T00:00:00Z")),
        EvidenceError::CertificateExpired { .. }
    ));
}

/// The SNP report inside an Azure HCL report (offset 0x20).
fn hcl_snp_report(hcl: &[u8]) -> Vec<u8> {
    hcl[0x20..0x20 + 1184].to_vec()
}

#[test]
fn snp_azure_cvm_milan_and_genoa() {
    let s = store(&[]);
    let at = t("2025-06-01T00:00:00Z");
    // Milan: vcek.pem holds VCEK + ASK + ARK.
    let rep = hcl_snp_report(&read("azure-cvm/snp-vtpm/hcl-report.bin"));
    let v = ok(AttestationType::SevSnpVm, &snp_raw(&rep, &read("azure-cvm/snp-vtpm/vcek.pem")), &s, at);
    assert_eq!(v.claims["x-ms-sevsnpvm-reported-tcb"], "0300000000000873");
    assert!(v.claims["x-ms-sevsnpvm-launchmeasurement"].as_str().unwrap_or_default().starts_with("9ac48fca"));
    assert!(v.claims["x-ms-sevsnpvm-reportdata"].as_str().unwrap_or_default().starts_with("b3fbad65"));

    // Genoa: the only Genoa report in the vectors.
    let j: serde_json::Value =
        serde_json::from_slice(&read("azure-cvm/snp-vtpm/evidence-genoa.json")).unwrap_or_default();
    let hcl: Vec<u8> =
        j["report"].as_array().map(|a| a.iter().map(|x| x.as_u64().unwrap_or(0) as u8).collect()).unwrap_or_default();
    let rep = hcl_snp_report(&hcl);
    let vcek = read("azure-cvm/snp-vtpm/vcek-genoa.pem");
    let v = ok(AttestationType::SevSnpVm, &snp_raw(&rep, &vcek), &s, at);
    assert_eq!(v.claims["x-ms-sevsnpvm-product"], "Genoa");
    assert_eq!(v.claims["x-ms-sevsnpvm-reported-tcb"], "0a00000000001754");
    assert!(v.claims["x-ms-sevsnpvm-launchmeasurement"].as_str().unwrap_or_default().starts_with("f57dc09a"));
    // Binding: report_data[..32] = SHA-256(HCL variable data).
    let var_len = u32::from_le_bytes([hcl[0x4C0 + 16], hcl[0x4C1 + 16], hcl[0x4C2 + 16], hcl[0x4C3 + 16]]) as usize;
    let var = hcl[0x4D4..0x4D4 + var_len].to_vec();
    let req = snp_raw(&rep, &vcek).with_runtime_data(BoundData::json(var));
    let v = ok(AttestationType::SevSnpVm, &req, &s, at);
    assert!(v.claims["x-ms-runtime"]["keys"].is_array());
}

#[test]
fn snp_turin_vcek_chains_to_turin_ark() {
    // No Turin report exists; the VCEK imported as collateral must verify.
    let s = store(&["sev-snp/virtee-milan/vcek_turin.der"]);
    assert!(s.rejected().is_empty());
}

#[test]
fn snp_negative_cases() {
    let s = store(&[]);
    let at = t("2024-01-01T00:00:00Z");
    let rep = virtee_report();
    let vcek = read("sev-snp/virtee-milan/vcek_milan.der");
    let snp = |req: EvidenceRequest| err(AttestationType::SevSnpVm, &req, &s, at);
    // Body, signature (r and s), and the VCEK's TBS and signature.
    assert_eq!(
        snp(snp_raw(&flip(rep.clone(), 0x90, 1), &vcek)),
        EvidenceError::BadSignature { what: "SEV-SNP report" }
    );
    assert_eq!(
        snp(snp_raw(&flip(rep.clone(), 0x2A0, 1), &vcek)),
        EvidenceError::BadSignature { what: "SEV-SNP report" }
    );
    assert_eq!(
        snp(snp_raw(&flip(rep.clone(), 0x2A0 + 72 + 5, 1), &vcek)),
        EvidenceError::BadSignature { what: "SEV-SNP report" }
    );
    assert_eq!(
        snp(snp_raw(&flip(rep.clone(), 0x2A0 + 60, 1), &vcek)),
        EvidenceError::BadSignature { what: "SEV-SNP report" }
    );
    for pos in [200, 400, 700] {
        let e = snp(snp_raw(&rep, &flip(vcek.clone(), pos, 1)));
        assert!(
            matches!(
                e,
                EvidenceError::CertificateSignature { .. }
                    | EvidenceError::CertificateParse { .. }
                    | EvidenceError::UntrustedChain { .. }
                    | EvidenceError::EndorsementMismatch { .. }
                    | EvidenceError::BadSignature { .. }
            ),
            "byte {pos}: {e}"
        );
    }
    let e = snp(snp_raw(&rep, &flip(vcek.clone(), vcek.len() - 3, 1)));
    assert!(matches!(e, EvidenceError::CertificateSignature { .. }), "{e}");
    // A flipped ASK sent in the chain is ignored in favour of the pinned one;
    // with no built-in AMD trust at all the chain is untrusted.
    let genoa_only = TrustAnchors::builtin()
        .without_amd_defaults()
        .with_amd_ark(&read("roots/amd_ark_genoa.pem"))
        .unwrap_or_else(|e| panic!("{e}"));
    let s2 = CollateralStore::from_blobs(genoa_only, 1, Vec::<(String, Vec<u8>)>::new());
    let mut chain = der_to_pem(&vcek);
    chain.extend_from_slice(&read("sev-snp/virtee-milan/cert_chain_milan.pem"));
    let e = err(AttestationType::SevSnpVm, &snp_raw(&rep, &chain), &s2, at);
    assert!(matches!(e, EvidenceError::UntrustedChain { .. }), "{e}");
    // Another chip's VCEK.
    let e = snp(snp_raw(&rep, &read("sev-snp/trustee-milan/vcek.der")));
    assert!(matches!(e, EvidenceError::BadSignature { .. } | EvidenceError::EndorsementMismatch { .. }), "{e}");
    // Expired / not yet valid VCEK.
    let req = snp_raw(&rep, &vcek);
    assert!(matches!(
        err(AttestationType::SevSnpVm, &req, &s, t("2031-01-01T00:00:00Z")),
        EvidenceError::CertificateExpired { .. }
    ));
    assert!(matches!(
        err(AttestationType::SevSnpVm, &req, &s, t("2022-01-01T00:00:00Z")),
        EvidenceError::CertificateNotYetValid { .. }
    ));
    // Truncated, wrong version, absurd DER length, no VCEK, garbage JSON.
    assert!(matches!(snp(snp_raw(&rep[..1000], &[])), EvidenceError::Truncated { .. }));
    assert!(matches!(snp(snp_raw(&flip(rep.clone(), 0, 0x04), &vcek)), EvidenceError::Unsupported { .. }));
    assert!(matches!(snp(snp_raw(&rep, &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff])), EvidenceError::Malformed { .. }));
    assert!(matches!(snp(snp_raw(&rep, &[])), EvidenceError::CollateralMissing { .. }));
    assert!(matches!(snp(EvidenceRequest::new(b"{\"SnpReport\":1}".to_vec())), EvidenceError::Malformed { .. }));
    assert!(matches!(snp(EvidenceRequest::new(vec![b'{'; 300_000])), EvidenceError::TooLarge { .. }));
    // A VCEK imported as collateral serves raw reports sent without one.
    let s3 = store(&["sev-snp/virtee-milan/vcek_milan.der"]);
    ok(AttestationType::SevSnpVm, &EvidenceRequest::new(rep.clone()), &s3, at);
}

// --------------------------------------------------------------- TPM ----

const GCE: &str = "tpm/gce-vtpm-go-tpm-tools/extracted_nonce9009";

fn b64std(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn gce_evidence(bank: &str, with_cert: bool, with_log: bool) -> serde_json::Value {
    let pcrs: serde_json::Value = serde_json::from_slice(&read(&format!("{GCE}/pcrs_{bank}.json"))).unwrap_or_default();
    let mut ev = json!({
        "quote": b64std(&read(&format!("{GCE}/quote_{bank}.tpms_attest"))),
        "signature": b64std(&read(&format!("{GCE}/quote_{bank}.tpmt_signature"))),
        "akPub": b64std(&read(&format!("{GCE}/ak_pub.tpmt_public"))),
        "pcrs": { bank: pcrs },
    });
    if with_cert {
        ev["akCert"] = json!(b64std(&read(&format!("{GCE}/ak_cert.der"))));
        ev["akCertChain"] = json!([b64std(&read("roots/gce_tpm_ek_intermediate_2.der"))]);
    }
    if with_log {
        ev["eventLog"] = json!(b64std(&read(&format!("{GCE}/event_log.bin"))));
    }
    ev
}

fn gce_store() -> CollateralStore {
    let anchors =
        TrustAnchors::builtin().with_tpm_root(&read("roots/gce_tpm_ek_root_1.der")).unwrap_or_else(|e| panic!("{e}"));
    store_with(anchors, &[])
}

fn tpm_req(ev: &serde_json::Value) -> EvidenceRequest {
    EvidenceRequest::new(serde_json::to_vec(ev).unwrap_or_default()).with_nonce(vec![0x90, 0x09])
}

#[test]
fn tpm_gce_vtpm_quotes() {
    let s = gce_store();
    let at = t("2024-01-01T00:00:00Z");
    for bank in ["sha1", "sha256", "sha384"] {
        let v = ok(AttestationType::Tpm, &tpm_req(&gce_evidence(bank, true, true)), &s, at);
        assert_eq!(v.claims["aikValidated"], true, "{bank}");
        assert_eq!(v.claims["x-ms-tpm-nonce"], "9009");
        assert_eq!(v.claims["x-ms-tpm-firmware-version"], "2016051100162800");
        assert_eq!(v.claims["PCRs"].as_array().map(|a| a.len()), Some(24));
        assert!(v.claims["events"].as_array().map(|a| !a.is_empty()).unwrap_or(false));
    }
    // Without the AK certificate the quote verifies but the AK is not validated.
    let v = ok(AttestationType::Tpm, &tpm_req(&gce_evidence("sha256", false, false)), &s, at);
    assert_eq!(v.claims["aikValidated"], false);
}

#[test]
fn tpm_negative_cases() {
    let s = gce_store();
    let at = t("2024-01-01T00:00:00Z");
    let tpm = |ev: &serde_json::Value| err(AttestationType::Tpm, &tpm_req(ev), &s, at);
    let base = gce_evidence("sha256", true, true);
    let quote = read(&format!("{GCE}/quote_sha256.tpms_attest"));
    let sig = read(&format!("{GCE}/quote_sha256.tpmt_signature"));
    let cert = read(&format!("{GCE}/ak_cert.der"));

    let mut ev = base.clone();
    ev["quote"] = json!(b64std(&flip(quote.clone(), quote.len() - 5, 1)));
    assert_eq!(tpm(&ev), EvidenceError::BadSignature { what: "TPM quote" });
    let mut ev = base.clone();
    ev["signature"] = json!(b64std(&flip(sig.clone(), 40, 1)));
    assert_eq!(tpm(&ev), EvidenceError::BadSignature { what: "TPM quote" });
    let mut ev = base.clone();
    ev["akCert"] = json!(b64std(&flip(cert.clone(), cert.len() - 10, 1)));
    assert!(matches!(tpm(&ev), EvidenceError::UntrustedChain { .. } | EvidenceError::CertificateSignature { .. }));
    let mut ev = base.clone();
    ev["pcrs"]["sha256"]["7"] = json!(hex::encode([0u8; 32]));
    assert_eq!(tpm(&ev), EvidenceError::PcrDigestMismatch);
    // Wrong nonce.
    let e = err(AttestationType::Tpm, &tpm_req(&base).with_nonce(b"other".to_vec()), &s, at);
    assert_eq!(e, EvidenceError::NonceMismatch);
    // Wrong root: the chain does not reach a configured TPM root.
    let e = err(AttestationType::Tpm, &tpm_req(&base), &store(&[]), at);
    assert!(matches!(e, EvidenceError::UntrustedChain { .. }), "{e}");
    // Expired / not yet valid AK certificate.
    assert!(matches!(
        err(AttestationType::Tpm, &tpm_req(&base), &s, t("2019-01-01T00:00:00Z")),
        EvidenceError::CertificateNotYetValid { .. }
    ));
    // An AK public area that is not the certificate's key.
    let mut ev = base.clone();
    let akpub = read(&format!("{GCE}/ak_pub.tpmt_public"));
    ev["akPub"] = json!(b64std(&flip(akpub.clone(), akpub.len() - 3, 1)));
    assert_eq!(tpm(&ev), EvidenceError::AkMismatch);
    // Truncated quote, absurd selection count, garbage.
    let mut ev = base.clone();
    ev["quote"] = json!(b64std(&quote[..30]));
    assert!(matches!(tpm(&ev), EvidenceError::Truncated { .. }));
    let mut ev = base.clone();
    let mut q = quote.clone();
    // TPML_PCR_SELECTION.count sits after magic, type, signer, extraData, clockInfo and firmware.
    let signer_len = u16::from_be_bytes([q[6], q[7]]) as usize;
    let extra_off = 8 + signer_len;
    let extra_len = u16::from_be_bytes([q[extra_off], q[extra_off + 1]]) as usize;
    let count_off = extra_off + 2 + extra_len + 17 + 8;
    q[count_off..count_off + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    ev["quote"] = json!(b64std(&q));
    assert!(matches!(tpm(&ev), EvidenceError::Malformed { .. }));
    assert!(matches!(
        err(AttestationType::Tpm, &EvidenceRequest::new(b"nope".to_vec()), &s, at),
        EvidenceError::Malformed { .. }
    ));
    // A tampered event log no longer replays to the quoted PCRs.
    let mut log = read(&format!("{GCE}/event_log.bin"));
    let u32le = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as usize;
    // Skip the Spec ID header event and any EV_NO_ACTION events, then flip
    // a bit of the first measured event's digest.
    let mut off = 32 + u32le(&log, 28);
    while u32le(&log, off + 4) == 3 {
        let mut p = off + 12;
        for _ in 0..u32le(&log, off + 8) {
            let alg = u16::from_le_bytes([log[p], log[p + 1]]);
            p += 2 + match alg {
                0x0004 => 20,
                0x000b => 32,
                _ => 48,
            };
        }
        off = p + 4 + u32le(&log, p);
    }
    let mut p = off + 12;
    while u16::from_le_bytes([log[p], log[p + 1]]) != 0x000b {
        p += 2 + if log[p] == 0x04 { 20 } else { 48 };
    }
    log[p + 2 + 3] ^= 0x01; // inside the SHA-256 digest (the quoted bank)
    let mut ev = base.clone();
    ev["eventLog"] = json!(b64std(&log));
    let e = tpm(&ev);
    assert!(
        matches!(
            e,
            EvidenceError::EventLogMismatch { .. } | EvidenceError::Malformed { .. } | EvidenceError::Truncated { .. }
        ),
        "{e}"
    );
}

#[test]
fn tpm_azure_vtpm_quote_bound_by_snp_report() {
    // Azure CVM: the vTPM AK (HCLAkPub) is bound by the SNP report, not a certificate.
    let hcl = read("azure-cvm/snp-vtpm/hcl-report.bin");
    let var_len = u32::from_le_bytes([hcl[0x4D0], hcl[0x4D1], hcl[0x4D2], hcl[0x4D3]]) as usize;
    let var = &hcl[0x4D4..0x4D4 + var_len];
    let rt: serde_json::Value = serde_json::from_slice(var).unwrap_or_default();
    let ak = rt["keys"].as_array().and_then(|k| k.iter().find(|k| k["kid"] == "HCLAkPub")).cloned().unwrap_or_default();
    let q: serde_json::Value =
        serde_json::from_slice(&read("azure-cvm/snp-vtpm/tpm-quote-v1.json")).unwrap_or_default();
    let h = |v: &serde_json::Value| hex::decode(v.as_str().unwrap_or_default()).unwrap_or_default();
    let pcrs: serde_json::Map<String, serde_json::Value> = q["pcrs"]
        .as_array()
        .map(|a| a.iter().enumerate().map(|(i, p)| (i.to_string(), json!(p.as_str().unwrap_or_default()))).collect())
        .unwrap_or_default();
    let ev = json!({
        "quote": b64std(&h(&q["message"])),
        "signature": b64std(&h(&q["signature"])),
        "rawSignature": true,
        "akJwk": { "kty": ak["kty"], "n": ak["n"], "e": ak["e"] },
        "pcrs": { "sha256": pcrs },
    });
    let req = EvidenceRequest::new(serde_json::to_vec(&ev).unwrap_or_default()).with_nonce(b"challenge".to_vec());
    let v = ok(AttestationType::Tpm, &req, &store(&[]), t("2025-06-01T00:00:00Z"));
    assert_eq!(
        v.claims["PCRs"][0]["Digests"]["SHA256"],
        "f3a7e99a5f819a034386bce753a48a73cfdaa0bea0ecfc124bedbf5a8c4799be"
    );
    assert_eq!(v.claims["aikValidated"], false);
}

// ------------------------------------------------ mutation smoke test ----

/// Deterministic random mutations of every kind of evidence: each must end in
/// `Ok` or a typed error, never a panic (the fuzz targets in `node/fuzz/` do
/// the same with coverage guidance).
#[test]
fn random_mutations_never_panic() {
    let sgx = store(&[SGX_QVL_COLL, "tdx/dcap-qvl/tdx_quote_v4_collateral.json"]);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut rep = virtee_report();
    rep.extend_from_slice(&read("sev-snp/virtee-milan/vcek_milan.der"));
    let inputs: Vec<(AttestationType, Vec<u8>)> = vec![
        (AttestationType::SgxEnclave, read("sgx/dcap-qvl/sgx_quote_v3.bin")),
        (AttestationType::OpenEnclave, read("sgx/azure-sdk-oe/oe_report_debug.bin")),
        (AttestationType::TdxVm, read("tdx/dcap-qvl/tdx_quote_v4.bin")),
        (AttestationType::SevSnpVm, rep),
        (AttestationType::Tpm, serde_json::to_vec(&gce_evidence("sha256", true, false)).unwrap_or_default()),
    ];
    for (ty, base) in inputs {
        for _ in 0..300 {
            let mut b = base.clone();
            match rnd() % 4 {
                0 => {
                    let i = (rnd() as usize) % b.len();
                    b[i] ^= 1 << (rnd() % 8);
                }
                1 => b.truncate((rnd() as usize) % b.len()),
                2 => {
                    let i = (rnd() as usize) % b.len().saturating_sub(4).max(1);
                    let v = (rnd() as u32).to_le_bytes();
                    for (k, x) in v.iter().enumerate() {
                        if let Some(slot) = b.get_mut(i + k) {
                            *slot = *x;
                        }
                    }
                }
                _ => {
                    let i = (rnd() as usize) % b.len();
                    b[i] = 0xff;
                }
            }
            let _ = evidence::verify(ty, &EvidenceRequest::new(b), &sgx, t(SGX_QVL_TIME));
        }
    }
}
