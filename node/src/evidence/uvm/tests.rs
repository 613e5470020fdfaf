//! UVM endorsements built here the way ACI's are (COSE_Sign1, ES384,
//! x5chain, did:x509 issuer with an EKU policy) around the launch
//! measurement of a real SEV-SNP report, then verified, and broken one
//! piece at a time.

use super::*;
use coset::{CoseSign1Builder, HeaderBuilder};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};

const EKU: &str = "1.3.6.1.4.1.311.76.59.1.2";
const EKU_ARCS: [u64; 10] = [1, 3, 6, 1, 4, 1, 311, 76, 59, 1];

struct Signer {
    ca_der: Vec<u8>,
    leaf_der: Vec<u8>,
    leaf_key: EcdsaKeyPair,
}

fn signer(leaf_eku_last_arc: u64) -> Signer {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Test UVM Root");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("leaf key");
    let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
    leaf.distinguished_name.push(DnType::CommonName, "Test UVM Signer");
    let mut arcs = EKU_ARCS.to_vec();
    arcs.push(leaf_eku_last_arc);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(arcs)];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
    let rng = ring::rand::SystemRandom::new();
    let leaf_key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &leaf_key.serialize_der(), &rng).expect("ring key");
    Signer { ca_der: ca_cert.der().to_vec(), leaf_der: leaf_cert.der().to_vec(), leaf_key }
}

fn did_for(ca_der: &[u8]) -> String {
    use base64::Engine as _;
    let fp = ring::digest::digest(&ring::digest::SHA256, ca_der);
    format!("did:x509:0:sha256:{}::eku:{EKU}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(fp))
}

fn endorse(s: &Signer, did: &str, payload: &[u8]) -> Vec<u8> {
    let chain = ciborium::Value::Array(vec![
        ciborium::Value::Bytes(s.leaf_der.clone()),
        ciborium::Value::Bytes(s.ca_der.clone()),
    ]);
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES384)
        .content_type("application/unknown+json".into())
        .value(iana::HeaderParameter::X5Chain as i64, chain)
        .text_value("iss".into(), ciborium::Value::Text(did.into()))
        .text_value("feed".into(), ciborium::Value::Text("ContainerPlat-AMD-UVM".into()))
        .build();
    let rng = ring::rand::SystemRandom::new();
    let sign1 = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload.to_vec())
        .create_signature(b"", |tbs| s.leaf_key.sign(&rng, tbs).expect("sign").as_ref().to_vec())
        .build();
    sign1.to_tagged_vec().expect("cbor")
}

fn payload(measurement: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "x-ms-sevsnpvm-guestsvn": "101",
        "x-ms-sevsnpvm-launchmeasurement": hex::encode_upper(measurement),
    }))
    .expect("json")
}

/// The launch measurement of the virtee Milan vector.
fn measurement() -> Vec<u8> {
    hex::decode("7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f")
        .expect("hex")
}

#[test]
fn a_valid_endorsement_verifies_and_yields_maa_claims() {
    let s = signer(2);
    let m = measurement();
    let did = did_for(&s.ca_der);
    let e = verify(&endorse(&s, &did, &payload(&m)), &m).expect("verifies");
    assert_eq!(e.issuer, did);
    assert_eq!(e.feed, "ContainerPlat-AMD-UVM");
    assert_eq!(e.guest_svn, "101");
    assert_eq!(e.launch_measurement, hex::encode(&m));
    let c = e.claim();
    assert_eq!(c["x-ms-sevsnpvm-uvm-endorsement-headers"]["iss"], did);
    assert_eq!(c["x-ms-sevsnpvm-launchmeasurement"], hex::encode(&m));
}

#[test]
fn each_broken_piece_gives_its_own_error() {
    let s = signer(2);
    let m = measurement();
    let did = did_for(&s.ca_der);
    // Another image's measurement.
    let mut other = m.clone();
    other[0] ^= 1;
    let e = verify(&endorse(&s, &did, &payload(&other)), &m).expect_err("mismatch");
    assert!(matches!(e, EvidenceError::EndorsementMismatch { .. }), "{e}");
    // One bit of the signed bytes flipped (inside the payload's JSON).
    let mut cose = endorse(&s, &did, &payload(&m));
    let at = cose.len() - 120;
    cose[at] ^= 0x01;
    let e = verify(&cose, &m).expect_err("tampered");
    assert!(matches!(e, EvidenceError::BadSignature { .. } | EvidenceError::Malformed { .. }), "{e}");
    // A DID naming a different CA.
    let stranger = signer(2);
    let e = verify(&endorse(&s, &did_for(&stranger.ca_der), &payload(&m)), &m).expect_err("wrong CA");
    assert!(matches!(e, EvidenceError::UntrustedChain { .. }), "{e}");
    // The leaf lacks the EKU the DID requires.
    let wrong_eku = signer(3);
    let e = verify(&endorse(&wrong_eku, &did_for(&wrong_eku.ca_der), &payload(&m)), &m).expect_err("EKU");
    assert!(matches!(e, EvidenceError::UntrustedChain { .. }), "{e}");
    // A leaf not issued by the CA the DID names (chain of two strangers).
    let mixed = Signer { ca_der: s.ca_der.clone(), leaf_der: stranger.leaf_der.clone(), leaf_key: stranger.leaf_key };
    let e = verify(&endorse(&mixed, &did, &payload(&m)), &m).expect_err("foreign leaf");
    assert!(matches!(e, EvidenceError::CertificateSignature { .. }), "{e}");
    // A bare CA pin without a policy on the leaf is refused.
    let bare = did.split("::").next().unwrap_or_default().to_string();
    let e = verify(&endorse(&s, &bare, &payload(&m)), &m).expect_err("no policy");
    assert!(matches!(e, EvidenceError::UntrustedChain { .. }), "{e}");
    // Garbage and truncation.
    assert!(matches!(verify(b"\xd2\x84", &m), Err(EvidenceError::Malformed { .. })));
    let cose = endorse(&s, &did, &payload(&m));
    assert!(verify(&cose[..cose.len() / 2], &m).is_err());
}

#[test]
fn subject_policies_and_percent_encoding() {
    let s = signer(2);
    let leaf = CertInfo::parse(&s.leaf_der, "leaf").expect("leaf");
    let ca = CertInfo::parse(&s.ca_der, "ca").expect("ca");
    let base = did_for(&s.ca_der).split("::").next().unwrap_or_default().to_string();
    resolve_did(&format!("{base}::subject:CN:Test%20UVM%20Signer"), &[leaf.clone(), ca.clone()]).expect("subject");
    let e = resolve_did(&format!("{base}::subject:CN:Someone%20Else"), &[leaf.clone(), ca.clone()]);
    assert!(matches!(e, Err(EvidenceError::UntrustedChain { .. })));
    let e = resolve_did(&format!("{base}::san:dns:example.com"), &[leaf.clone(), ca.clone()]);
    assert!(matches!(e, Err(EvidenceError::Unsupported { .. })));
    // The leaf itself is never the pinned CA.
    let self_pin = did_for(&s.leaf_der);
    assert!(matches!(resolve_did(&self_pin, &[leaf, ca]), Err(EvidenceError::UntrustedChain { .. })));
}

#[test]
fn maa_endorsements_json() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let s = signer(2);
    let m = measurement();
    let cose = endorse(&s, &did_for(&s.ca_der), &payload(&m));
    let json = serde_json::to_vec(&json!({ "Uvm": [b64(&cose)] })).expect("json");
    assert!(verify_endorsements(&json, &m).expect("ok").is_some());
    assert_eq!(verify_endorsements(br#"{"Uvm":[]}"#, &m), Ok(None));
    assert_eq!(verify_endorsements(br#"{}"#, &m), Ok(None));
    assert!(matches!(verify_endorsements(br#"{"Uvm":"x"}"#, &m), Err(EvidenceError::Malformed { .. })));
    let many = serde_json::to_vec(&json!({ "Uvm": vec![b64(&cose); MAX_ENDORSEMENTS + 1] })).expect("json");
    assert!(matches!(verify_endorsements(&many, &m), Err(EvidenceError::TooLarge { .. })));
}

/// The full SEV-SNP verifier on a real Milan report in MAA's request shape,
/// with an endorsement of its measurement; then with one of another image.
#[test]
fn a_real_snp_report_with_its_uvm_endorsement() {
    use crate::evidence::{AttestationType, CollateralStore, EvidenceRequest, TrustAnchors, VerificationTime};
    use base64::Engine as _;
    const V: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/sev-snp/virtee-milan");
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let text = std::fs::read_to_string(format!("{V}/report_milan.hex")).expect("report");
    let report = hex::decode(text.split_whitespace().collect::<String>()).expect("hex");
    let vcek = std::fs::read(format!("{V}/vcek_milan.der")).expect("vcek");
    let mut chain = crate::token::keys::pem_encode("CERTIFICATE", &vcek).into_bytes();
    chain.extend(std::fs::read(format!("{V}/cert_chain_milan.pem")).expect("chain"));
    let store = CollateralStore::from_blobs(TrustAnchors::builtin(), 1, Vec::<(&str, Vec<u8>)>::new());
    let at = VerificationTime::from_unix(1_704_067_200); // 2024-01-01, as the vector's README says
    let s = signer(2);
    let request = |m: &[u8]| {
        let cose = endorse(&s, &did_for(&s.ca_der), &payload(m));
        let endorsements = json!({ "Uvm": [b64(&cose)] }).to_string();
        let evidence = json!({
            "SnpReport": b64(&report),
            "VcekCertChain": b64(&chain),
            "Endorsements": b64(endorsements.as_bytes()),
        });
        EvidenceRequest::new(b64(evidence.to_string().as_bytes()).into_bytes())
    };
    let m = measurement();
    let v = crate::evidence::verify(AttestationType::SevSnpVm, &request(&m), &store, at).expect("verifies");
    let claim = &v.claims["x-ms-sevsnpvm-uvm-endorsement"];
    assert_eq!(claim["x-ms-sevsnpvm-guestsvn"], "101");
    assert_eq!(claim["x-ms-sevsnpvm-launchmeasurement"], v.claims["x-ms-sevsnpvm-launchmeasurement"]);
    let mut other = m.clone();
    other[47] ^= 0x80;
    let e = crate::evidence::verify(AttestationType::SevSnpVm, &request(&other), &store, at).expect_err("refused");
    assert!(matches!(e, EvidenceError::EndorsementMismatch { .. }), "{e}");
}
