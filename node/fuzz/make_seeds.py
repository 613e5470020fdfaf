#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target from the real vectors.

    python3 node/fuzz/make_seeds.py [path/to/shared/vectors]

Seeds are named `seed-*`; libFuzzer adds its own finds next to them (kept
after `cargo fuzz cmin`). The corpus replay test (node/tests/fuzz_corpus.rs)
runs every file of every target's folder through the same harness in CI.
"""
import base64, json, os, pathlib, sys

here = pathlib.Path(__file__).resolve().parent
vec = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else here / "../../../shared/vectors").resolve()
node = here.parent


def rd(rel):
    return (vec / rel).read_bytes()


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64s(b):
    return base64.b64encode(b).decode()


def put(target, name, data):
    d = here / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data if isinstance(data, bytes) else data.encode())


for name, rel in [
    ("sgx-v3", "sgx/dcap-qvl/sgx_quote_v3.bin"),
    ("sgx-dcap-rs", "sgx/dcap-rs-occlum-00606a/dcap_rs_sgx_quote_v3.bin"),
    ("sgx-occlum", "sgx/dcap-rs-occlum-00606a/occlum_quote_v3.bin"),
    ("tdx-v4", "tdx/dcap-qvl/tdx_quote_v4.bin"),
    ("tdx-v5", "tdx/dcap-qvl/tdx_quote_v5_outdated.bin"),
    ("tdx-dcap-rs", "tdx/dcap-rs-00806f050000/quote_tdx_00806f050000.dat"),
    ("tdx-azure-cvm", "azure-cvm/tdx-vtpm/td-quote.bin"),
]:
    put("evidence_dcap_quote", name, rd(rel))

for name in ["debug", "nondebug"]:
    put("evidence_openenclave", name, rd(f"sgx/azure-sdk-oe/oe_report_{name}.bin"))

def cbor(v):
    """Minimal CBOR encoder (ints, bytes, text, lists, dicts, tag 18 via a tuple)."""
    def head(major, n):
        if n < 24:
            return bytes([major << 5 | n])
        for ai, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if n < 1 << (8 * size):
                return bytes([major << 5 | ai]) + n.to_bytes(size, "big")
    if isinstance(v, tuple):
        return head(6, v[0]) + cbor(v[1])
    if isinstance(v, int):
        return head(0, v) if v >= 0 else head(1, -1 - v)
    if isinstance(v, bytes):
        return head(2, len(v)) + v
    if isinstance(v, str):
        return head(3, len(v.encode())) + v.encode()
    if isinstance(v, list):
        return head(4, len(v)) + b"".join(cbor(i) for i in v)
    if isinstance(v, dict):
        return head(5, len(v)) + b"".join(cbor(k) + cbor(x) for k, x in v.items())
    raise TypeError(v)


def pem_to_ders(pem):
    parts = pem.split(b"-----BEGIN CERTIFICATE-----")[1:]
    return [base64.b64decode(b"".join(p.split(b"-----END")[0].split())) for p in parts]


def uvm_endorsement(report, vcek_der, ask_der):
    """A COSE_Sign1 UVM endorsement of the report's measurement whose x5chain
    is the real VCEK -> ASK chain and whose did:x509 resolves against it (a
    subject policy on the VCEK); only the signature is not real, so inputs
    reach the last check."""
    import hashlib
    fp = b64u(hashlib.sha256(ask_der).digest())
    did = f"did:x509:0:sha256:{fp}::subject:CN:SEV-VCEK"
    protected = cbor({1: -35, 3: "application/unknown+json", 33: [vcek_der, ask_der], "iss": did, "feed": "ContainerPlat-AMD-UVM"})
    payload = json.dumps({"x-ms-sevsnpvm-guestsvn": "101", "x-ms-sevsnpvm-launchmeasurement": report[0x90:0xC0].hex()}).encode()
    return cbor((18, [protected, {}, payload, bytes(96)]))


chain_pem = rd("sev-snp/virtee-milan/cert_chain_milan.pem")
ask_der = pem_to_ders(chain_pem)[0]
for name, report, cert in [
    ("go-sev-guest", "sev-snp/go-sev-guest-milan/attestation.bin", "sev-snp/go-sev-guest-milan/vcek.der"),
    ("trustee", "sev-snp/trustee-milan/report.bin", "sev-snp/trustee-milan/vcek.der"),
    ("vlek", "sev-snp/trustee-vlek-aws/report_vlek.bin", "sev-snp/trustee-vlek-aws/vlek.der"),
]:
    r, c = rd(report)[:1184], rd(cert)
    put("evidence_snp", f"raw-{name}", r + c)
    vcek_pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(c) + b"-----END CERTIFICATE-----\n"
    maa = {"SnpReport": b64u(r), "VcekCertChain": b64u(vcek_pem + chain_pem)}
    put("evidence_snp", f"maa-{name}", b64u(json.dumps(maa).encode()))
    maa["Endorsements"] = b64u(json.dumps({"Uvm": [b64u(uvm_endorsement(r, c, ask_der))]}).encode())
    put("evidence_snp", f"maa-uvm-{name}", json.dumps(maa))

g = "tpm/gce-vtpm-go-tpm-tools/extracted_nonce9009"
for bank in ["sha1", "sha256", "sha384"]:
    ev = {
        "quote": b64s(rd(f"{g}/quote_{bank}.tpms_attest")),
        "signature": b64s(rd(f"{g}/quote_{bank}.tpmt_signature")),
        "akPub": b64s(rd(f"{g}/ak_pub.tpmt_public")),
        "pcrs": {bank: json.loads(rd(f"{g}/pcrs_{bank}.json"))},
        "akCert": b64s(rd(f"{g}/ak_cert.der")),
        "akCertChain": [b64s(rd("roots/gce_tpm_ek_intermediate_2.der"))],
    }
    put("evidence_tpm", f"gce-{bank}", json.dumps(ev))
    if bank == "sha256":
        ev["eventLog"] = b64s(rd(f"{g}/event_log.bin"))
        put("evidence_tpm", "gce-sha256-eventlog", json.dumps(ev))

for name, rel in [
    ("sgx-dcap-qvl", "sgx/dcap-qvl/sgx_quote_collateral.json"),
    ("tdx-dcap-qvl", "tdx/dcap-qvl/tdx_quote_v4_collateral.json"),
    ("tdx-v5", "tdx/dcap-qvl/tdx_quote_v5_outdated_collateral.json"),
    ("tdx-dcap-rs", "tdx/assembled-collateral/dcap-rs_00806f050000_2025-02_collateral.json"),
    ("sgx-occlum", "sgx/dcap-rs-occlum-00606a/assembled_collateral_tcbinfo_v2.json"),
]:
    put("evidence_collateral", name, rd(rel))

src = (node / "src/policy/defaults.rs").read_text()
for i, chunk in enumerate(src.split('pub const ')[1:]):
    body = chunk.split('"', 1)[1].rsplit('";', 1)[0] if '"' in chunk else ""
    if body.startswith("version"):
        put("policy_parse", f"default-{i}", body.encode().decode("unicode_escape"))
for p in sorted((node / "tests/data/policy").glob("*.jws")) + sorted((node / "tests/data/policy").glob("*.json")):
    put("policy_jws", p.stem, p.read_bytes().strip().strip(b'"'))
print("seeds written under", here / "corpus")
