//! Evidence verification throughput per type with collateral cached (issue 3).
//!
//! For SGX and TDX the same quote and collateral are also run through a bare
//! `dcap_qvl::verify::verify`, which re-verifies all collateral per call;
//! SEV-SNP also through a bare `sev` crate verification.
//! Run: `cargo bench -p attest-node --bench evidence_verify`.

use std::hint::black_box;

use attest_node::evidence::{self, AttestationType, CollateralStore, EvidenceRequest, TrustAnchors, VerificationTime};
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors");

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{VECTORS}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn at(s: &str) -> VerificationTime {
    VerificationTime::from_unix(evidence::pki::parse_rfc3339(s).unwrap_or_else(|| panic!("{s}")))
}

fn qvl_collateral(rel: &str) -> dcap_qvl::QuoteCollateralV3 {
    let v: serde_json::Value = serde_json::from_slice(&read(rel)).unwrap_or_default();
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let h = |k: &str| hex::decode(s(k)).unwrap_or_default();
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

fn bench_dcap(c: &mut Criterion, name: &str, ty: AttestationType, quote: &str, coll: &str, time: &str) {
    let store = CollateralStore::from_blobs(TrustAnchors::builtin(), 1, vec![(coll, read(coll))]);
    let req = EvidenceRequest::new(read(quote));
    let t = at(time);
    let qvl = qvl_collateral(coll);
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    g.bench_function("attestd_cached", |b| {
        b.iter(|| black_box(evidence::verify(ty, black_box(&req), &store, t)).is_ok())
    });
    g.bench_function("dcap_qvl_verify", |b| {
        b.iter(|| black_box(dcap_qvl::verify::verify(black_box(&req.evidence), &qvl, t.unix() as u64)).is_ok())
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_dcap(
        c,
        "sgx",
        AttestationType::SgxEnclave,
        "sgx/dcap-qvl/sgx_quote_v3.bin",
        "sgx/dcap-qvl/sgx_quote_collateral.json",
        "2025-07-19T10:01:17Z",
    );
    bench_dcap(
        c,
        "tdx",
        AttestationType::TdxVm,
        "tdx/dcap-qvl/tdx_quote_v4.bin",
        "tdx/dcap-qvl/tdx_quote_v4_collateral.json",
        "2025-07-19T10:00:34Z",
    );

    // SEV-SNP: raw report + VCEK, ASK/ARK built in (chain cached after the first call).
    let store = CollateralStore::from_blobs(TrustAnchors::builtin(), 1, Vec::<(String, Vec<u8>)>::new());
    let hex_text = String::from_utf8(read("sev-snp/virtee-milan/report_milan.hex")).unwrap_or_default();
    let mut ev = hex::decode(hex_text.split_whitespace().collect::<String>()).unwrap_or_default();
    ev.extend_from_slice(&read("sev-snp/virtee-milan/vcek_milan.der"));
    let req = EvidenceRequest::new(ev);
    let t = at("2024-01-01T00:00:00Z");
    let mut g = c.benchmark_group("snp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("attestd_cached", |b| {
        b.iter(|| black_box(evidence::verify(AttestationType::SevSnpVm, &req, &store, t)).is_ok())
    });
    // The per-request baseline: the `sev` crate (pure-Rust `crypto_nossl`)
    // parses the report and the VCEK/ASK/ARK and verifies ARK → ASK → VCEK →
    // report. It checks signatures only (no TCB-vs-VCEK, validity or chip-id
    // checks, which attestd also does), so it is the cheaper of the two tasks.
    let (report_bytes, vcek_der) = req.evidence.split_at(1184);
    let (ark_pem, ask_pem) = (read("roots/amd_ark_milan.pem"), read("roots/amd_ask_milan.pem"));
    let bare_sev = || -> std::io::Result<()> {
        use sev::certs::snp::{ca, Certificate, Chain, Verifiable};
        use sev::parser::ByteParser;
        let report = sev::firmware::guest::AttestationReport::from_bytes(report_bytes)?;
        let chain = Chain { ca: ca::Chain::from_pem(&ark_pem, &ask_pem)?, vek: Certificate::from_der(vcek_der)? };
        (&chain, &report).verify()
    };
    if let Err(e) = bare_sev() {
        panic!("the bare sev baseline must verify the vector: {e}");
    }
    g.bench_function("sev_verify", |b| b.iter(|| black_box(bare_sev()).is_ok()));
    g.finish();

    // TPM: GCE vTPM quote with AK certificate chain and event log replay.
    let dir = "tpm/gce-vtpm-go-tpm-tools/extracted_nonce9009";
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(b);
    let pcrs: serde_json::Value = serde_json::from_slice(&read(&format!("{dir}/pcrs_sha256.json"))).unwrap_or_default();
    let ev = json!({
        "quote": b64(read(&format!("{dir}/quote_sha256.tpms_attest"))),
        "signature": b64(read(&format!("{dir}/quote_sha256.tpmt_signature"))),
        "akPub": b64(read(&format!("{dir}/ak_pub.tpmt_public"))),
        "akCert": b64(read(&format!("{dir}/ak_cert.der"))),
        "akCertChain": [b64(read("roots/gce_tpm_ek_intermediate_2.der"))],
        "pcrs": { "sha256": pcrs },
    });
    let anchors =
        TrustAnchors::builtin().with_tpm_root(&read("roots/gce_tpm_ek_root_1.der")).unwrap_or_else(|e| panic!("{e}"));
    let store = CollateralStore::from_blobs(anchors, 1, Vec::<(String, Vec<u8>)>::new());
    let req = EvidenceRequest::new(serde_json::to_vec(&ev).unwrap_or_default()).with_nonce(vec![0x90, 0x09]);
    let mut g = c.benchmark_group("tpm");
    g.throughput(Throughput::Elements(1));
    g.bench_function("attestd", |b| {
        b.iter(|| black_box(evidence::verify(AttestationType::Tpm, &req, &store, t)).is_ok())
    });
    g.finish();
}

criterion_group!(evidence_benches, benches);
criterion_main!(evidence_benches);
