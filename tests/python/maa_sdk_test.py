#!/usr/bin/env python3
"""Microsoft's Azure Attestation Python SDK, unmodified, against a running attestd cluster.

Run by `tests/tests/maa_sdk.rs` (which also builds the virtualenv from
`requirements.txt`); it can be run by hand against any cluster:

    ATTESTD_ENDPOINT=https://127.0.0.1:PORT   one node's API base URL
    ATTESTD_CA=/path/ca.pem                   the cluster CA (TLS is verified)
    ATTESTD_TOKEN_OWNER / _CONTRIBUTOR / _READER   bearer JWTs
    ATTESTD_VECTORS=/work/shared/vectors
    ATTESTD_SHARED_PROVIDER=sharedeastus2
    ATTESTD_SDK_DEBUG=1                       optional: log every HTTP exchange

Each case prints one `PASS` line; the first failure prints `FAIL`, the
reason (with the HTTP status and body when the service refused), tries to
delete the providers it created and exits 1. See docs/maa-sdk-compat.md for
what the SDK sends and checks.
"""

import base64
import datetime
import hashlib
import json
import logging
import os
import secrets
import sys
import time
import traceback

import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.security.attestation import (
    AttestationAdministrationClient,
    AttestationClient,
    AttestationPolicyToken,
    AttestationTokenValidationException,
    AttestationType,
    CertificateModification,
    PolicyModification,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

SCOPE = "https://attest.azure.net/.default"

# Expected values for the azure-sdk-oe vectors (vectors/sgx/README.md section 2).
DEBUG = {
    "file": "oe_report_debug.bin",
    "mrenclave": "292a1f4b519e46627eb2478a3d9851405653c5b4b0a6925de843834d9216850e",
    "mrsigner": "4aea5f9a0ed04b11f889aadfe6a1d376213a29a95a85ce7337ae6f7fece6610c",
    "debuggable": True,
}
NONDEBUG = {
    "file": "oe_report_nondebug.bin",
    "mrenclave": "b779202618becb636768e5d902f28d524222735fafb539ea9ba07c3fc171a1c2",
    "mrsigner": "2c1a44952ae8207135c6c29b75b8c029372ee94b677e15c20bd42340f10d41aa",
    "debuggable": False,
}
PRODUCT_ID = 1
SVN = 1

PERMIT_ALL = "version=1.0; authorizationrules{=> permit();}; issuancerules{};"

# How long to wait for a write acknowledged by the cluster to be visible on
# the node this script talks to (it may be a follower that applies later).
VISIBLE_WITHIN_S = 30.0


class CaseFailure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise CaseFailure(message)


def env(name):
    value = os.environ.get(name)
    if not value:
        raise SystemExit("maa_sdk_test: environment variable {} is required".format(name))
    return value


ENDPOINT = env("ATTESTD_ENDPOINT").rstrip("/")
CA = env("ATTESTD_CA")
TOKENS = {
    "Owner": env("ATTESTD_TOKEN_OWNER"),
    "Contributor": env("ATTESTD_TOKEN_CONTRIBUTOR"),
    "Reader": env("ATTESTD_TOKEN_READER"),
}
VECTORS = env("ATTESTD_VECTORS")
SHARED = env("ATTESTD_SHARED_PROVIDER")
RUN_ID = secrets.token_hex(4)

# Keep every SDK call bounded: few retries, finite socket timeouts.
TRANSPORT = {
    "connection_verify": CA,
    "connection_timeout": 10,
    "read_timeout": 60,
    "retry_total": 2,
    "retry_backoff_factor": 0.5,
}
if os.environ.get("ATTESTD_SDK_DEBUG"):
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG)
    TRANSPORT["logging_enable"] = True


def instance_url(provider):
    return "{}/providers/{}".format(ENDPOINT, provider)


def vector(rel):
    with open(os.path.join(VECTORS, rel), "rb") as f:
        return f.read()


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def jwt_claims_unverified(token):
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class StaticTokenCredential(object):
    """A TokenCredential (azure-core protocol) handing out a fixed bearer JWT.

    The SDK asks for the scope https://attest.azure.net/.default; the scopes
    it asked for are recorded and checked once at the end.
    """

    scopes_seen = set()

    def __init__(self, token):
        self._token = token
        try:
            self._expires_on = int(jwt_claims_unverified(token)["exp"])
        except Exception:  # not a JWT (see FOREIGN_TOKEN) or no exp
            self._expires_on = int(time.time()) + 3600

    def get_token(self, *scopes, **kwargs):
        StaticTokenCredential.scopes_seen.add(scopes)
        return AccessToken(self._token, self._expires_on)


# What a real SDK user sends to a shared provider: the SDK insists on a
# credential, so an AAD token attestd cannot verify rides along on anonymous
# calls (attest, /certs, openid metadata). Shared-provider calls use this.
FOREIGN_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2F0dGVzdC5henVyZS5uZXQifQ.bm90LXZlcmlmaWFibGU"


def credential(role):
    return StaticTokenCredential(FOREIGN_TOKEN if role is None else TOKENS[role])


def metadata_issuer(provider, role=None):
    client = AttestationClient(instance_url(provider), credential(role), **TRANSPORT)
    meta = client.get_open_id_metadata()
    check(isinstance(meta, dict), "openid-configuration of {} is not a JSON object: {!r}".format(provider, meta))
    issuer = meta.get("issuer")
    check(isinstance(issuer, str) and issuer.startswith("https://"), "openid issuer of {}: {!r}".format(provider, issuer))
    check(
        meta.get("jwks_uri") == issuer + "/certs",
        "jwks_uri of {} is {!r}, expected {!r}".format(provider, meta.get("jwks_uri"), issuer + "/certs"),
    )
    return issuer


def validating_options(issuer):
    """The full client-side token validation the SDK offers (1.0.0 spellings)."""
    return dict(
        validate_token=True,
        validate_signature=True,
        validate_expiration=True,
        validate_not_before=True,
        validate_issuer=True,
        issuer=issuer,
        validation_slack=1.0,
    )


def attestation_client(provider, issuer, role=None):
    return AttestationClient(instance_url(provider), credential(role), **dict(TRANSPORT, **validating_options(issuer)))


def admin_client(provider, issuer, role):
    return AttestationAdministrationClient(
        instance_url(provider), credential(role), **dict(TRANSPORT, **validating_options(issuer))
    )


class Recorder(object):
    """validation_callback: the SDK calls it with the token and the signer it
    verified the signature with (None for an unsigned token)."""

    def __init__(self):
        self.calls = []

    def __call__(self, token, signer):
        self.calls.append((token, signer))

    def signed_by_service(self, what):
        check(len(self.calls) == 1, "{}: validation_callback ran {} times".format(what, len(self.calls)))
        token, signer = self.calls[-1]
        check(token.algorithm == "RS256", "{}: token alg {!r}, expected RS256".format(what, token.algorithm))
        check(signer is not None, "{}: the SDK found no signer for the token".format(what))
        check(
            token.key_id is not None and signer.key_id == token.key_id,
            "{}: signer kid {!r} != token kid {!r}".format(what, signer.key_id, token.key_id),
        )
        return token


def eventually(what, fn, within=VISIBLE_WITHIN_S):
    """Retry fn() (which returns a truthy value when satisfied) until `within` s."""
    deadline = time.monotonic() + within
    last = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = "condition not met"
        except (CaseFailure, HttpResponseError, requests.RequestException) as e:
            last = describe(e)
        if time.monotonic() > deadline:
            raise CaseFailure("{} not within {:.0f}s; last: {}".format(what, within, last))
        time.sleep(0.3)


def describe(e):
    if isinstance(e, HttpResponseError):
        body, call = "", ""
        try:
            body = e.response.text()
            call = "{} {} -> ".format(e.response.request.method, e.response.request.url)
        except Exception:
            pass
        return "{}HTTP {} {} (body: {})".format(call, e.status_code, e.reason, body[:600])
    return "{}: {}".format(type(e).__name__, e)


def expect_http_error(what, statuses, fn):
    try:
        fn()
    except HttpResponseError as e:
        check(
            e.status_code in statuses,
            "{}: expected HTTP {}, got {}".format(what, "/".join(map(str, statuses)), describe(e)),
        )
        return e
    raise CaseFailure("{}: expected HTTP {}, but the call succeeded".format(what, "/".join(map(str, statuses))))


class JsonTextWithNul(bytes):
    """`runtime_data.bin` is JSON text followed by one NUL byte: the C++ SDK's
    test data, and exactly the bytes the enclave hashed into report_data (MAA
    accepts them as JSON). The Python SDK json.loads() runtime_json locally
    before sending and a trailing NUL fails that check, so its local check is
    shown the text without the NUL. The bytes on the wire are all of them
    (the SDK base64url-encodes the buffer); the SDK itself is not changed."""

    def decode(self, encoding="utf-8", errors="strict"):
        return bytes(self).rstrip(b"\x00").decode(encoding, errors)


# ---------------------------------------------------------------- management


def manage(method, provider, body=None):
    headers = {"Authorization": "Bearer " + TOKENS["Owner"]}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body)
    return requests.request(method, instance_url(provider), headers=headers, data=data, verify=CA, timeout=60)


CREATED = []


def create_provider(provider, trust_model, signing_pems=None):
    body = {"trustModel": trust_model, "tokenSigningAlgorithm": "RS256"}
    if signing_pems is not None:
        body["policySigningCertificates"] = signing_pems
    r = manage("PUT", provider, body)
    check(r.status_code == 201, "PUT /providers/{} ({}): HTTP {} {}".format(provider, trust_model, r.status_code, r.text[:600]))
    CREATED.append(provider)
    # Visible on this node (it may be a follower that applies later)?
    eventually(
        "provider {} visible on {}".format(provider, ENDPOINT),
        lambda: requests.get(
            instance_url(provider) + "/.well-known/openid-configuration", verify=CA, timeout=30
        ).status_code
        == 200,
    )


def delete_provider(provider):
    r = manage("DELETE", provider)
    check(r.status_code in (200, 202, 204), "DELETE /providers/{}: HTTP {} {}".format(provider, r.status_code, r.text[:600]))
    eventually(
        "provider {} gone from {}".format(provider, ENDPOINT),
        lambda: requests.get(
            instance_url(provider) + "/.well-known/openid-configuration", verify=CA, timeout=30
        ).status_code
        == 404,
    )


# ---------------------------------------------------------------- keys


def new_signer(common_name, issuer_cert=None, issuer_key=None):
    """RSA-2048 key and an X.509 certificate for it (self-signed unless an
    issuer is given), both PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer_key if issuer_key is not None else key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return key_pem, cert_pem, cert, key


def der_of_pem(pem):
    return x509.load_pem_x509_certificate(pem.encode("ascii")).public_bytes(serialization.Encoding.DER)


def policy_token_hash(policy, signing_key=None, signing_certificate=None):
    """What the SDK's own tests compare x-ms-policy-token-hash with: SHA-256
    of the exact JWS the SDK sends (AttestationPolicyToken builds the same)."""
    jws = AttestationPolicyToken(policy, signing_key=signing_key, signing_certificate=signing_certificate)
    return hashlib.sha256(jws.to_jwt_string().encode("utf-8")).digest()


# ---------------------------------------------------------------- cases

STATE = {}


def check_sgx_result(what, result, token, report, evidence, issuer):
    check(result.issuer == issuer, "{}: iss {!r} != openid issuer {!r}".format(what, result.issuer, issuer))
    check(
        token.issuer == issuer, "{}: token iss {!r} != {!r}".format(what, token.issuer, issuer)
    )
    check(result.verifier_type == "sgx", "{}: x-ms-attestation-type {!r}".format(what, result.verifier_type))
    check(result.version == "1.0", "{}: x-ms-ver {!r}".format(what, result.version))
    check(result.mr_enclave == report["mrenclave"], "{}: mrenclave {!r}".format(what, result.mr_enclave))
    check(result.mr_signer == report["mrsigner"], "{}: mrsigner {!r}".format(what, result.mr_signer))
    check(result.product_id == PRODUCT_ID, "{}: product id {!r}".format(what, result.product_id))
    check(result.svn == SVN, "{}: svn {!r}".format(what, result.svn))
    check(result.is_debuggable is report["debuggable"], "{}: is-debuggable {!r}".format(what, result.is_debuggable))
    check(
        isinstance(result.policy_hash, bytes) and len(result.policy_hash) == 32,
        "{}: x-ms-policy-hash must be base64url of 32 bytes, the SDK decoded {!r}".format(what, result.policy_hash),
    )
    collateral = result.sgx_collateral
    check(isinstance(collateral, dict), "{}: x-ms-sgx-collateral {!r}".format(what, collateral))
    check(
        collateral.get("quotehash") == sha256_hex(evidence),
        "{}: x-ms-sgx-collateral.quotehash {!r} != sha256(evidence sent)".format(what, collateral.get("quotehash")),
    )
    exp, iat = token.expires, token.issued
    check(exp is not None and iat is not None and exp > iat, "{}: exp/iat {!r}/{!r}".format(what, exp, iat))


def case_sgx_binary():
    issuer = metadata_issuer(SHARED)
    STATE["shared_issuer"] = issuer
    client = attestation_client(SHARED, issuer)
    signers = client.get_signing_certificates()
    check(len(signers) > 0, "/certs of {} lists no keys".format(SHARED))
    for s in signers:
        check(s.key_id, "/certs entry without kid")
        x509.load_pem_x509_certificate(s.certificates[0].encode("ascii"))
    oe = vector("sgx/azure-sdk-oe/" + DEBUG["file"])
    runtime = vector("sgx/azure-sdk-oe/runtime_data.bin")
    quote = oe[16:]
    rec = Recorder()
    result, token = client.attest_sgx_enclave(quote, runtime_data=runtime, validation_callback=rec)
    rec.signed_by_service("attest_sgx_enclave")
    check(token.key_id in {s.key_id for s in signers}, "token kid {!r} not in /certs".format(token.key_id))
    check_sgx_result("attest_sgx_enclave", result, token, DEBUG, quote, issuer)
    check(result.enclave_held_data == runtime, "x-ms-sgx-ehd is not the runtime data: {!r}".format(result.enclave_held_data))
    check(result.runtime_claims is None, "x-ms-runtime present for Binary runtime data")
    # The same token, verified again with a wrong expected issuer, must be
    # refused: proves the issuer check ran (the SDK skips it without iss).
    wrong = attestation_client(SHARED, issuer + ".invalid")
    try:
        wrong.attest_sgx_enclave(quote, runtime_data=runtime)
    except AttestationTokenValidationException:
        pass
    else:
        raise CaseFailure("a client expecting another issuer accepted the token")
    return "attest_sgx_enclave, Binary runtime data, signature/exp/nbf/iss validated (kid {})".format(token.key_id)


def case_sgx_json():
    issuer = STATE["shared_issuer"]
    client = attestation_client(SHARED, issuer)
    quote = vector("sgx/azure-sdk-oe/" + DEBUG["file"])[16:]
    runtime = vector("sgx/azure-sdk-oe/runtime_data.bin")
    rec = Recorder()
    result, token = client.attest_sgx_enclave(quote, runtime_json=JsonTextWithNul(runtime), validation_callback=rec)
    rec.signed_by_service("attest_sgx_enclave (JSON)")
    check_sgx_result("attest_sgx_enclave (JSON)", result, token, DEBUG, quote, issuer)
    check(result.enclave_held_data is None, "x-ms-sgx-ehd present for JSON runtime data")
    claims = result.runtime_claims
    check(isinstance(claims, dict) and isinstance(claims.get("jwk"), dict), "x-ms-runtime: {!r}".format(claims))
    check(claims["jwk"].get("crv") == "P-256", "x-ms-runtime.jwk.crv {!r}".format(claims["jwk"].get("crv")))
    check(claims["jwk"].get("kty") == "EC", "x-ms-runtime.jwk.kty {!r}".format(claims["jwk"].get("kty")))
    return "attest_sgx_enclave, JSON runtime data -> runtime_claims.jwk (P-256), no enclave_held_data"


def case_open_enclave():
    issuer = STATE["shared_issuer"]
    client = attestation_client(SHARED, issuer)
    runtime = vector("sgx/azure-sdk-oe/runtime_data.bin")
    for report in (DEBUG, NONDEBUG):
        oe = vector("sgx/azure-sdk-oe/" + report["file"])
        what = "attest_open_enclave ({})".format(report["file"])
        rec = Recorder()
        result, token = client.attest_open_enclave(oe, runtime_data=runtime, validation_callback=rec)
        rec.signed_by_service(what)
        check_sgx_result(what, result, token, report, oe, issuer)
        check(result.enclave_held_data == runtime, "{}: x-ms-sgx-ehd is not the runtime data".format(what))
    return "attest_open_enclave, debug and non-debug reports"


def case_draft_policy():
    issuer = STATE["shared_issuer"]
    client = attestation_client(SHARED, issuer)
    quote = vector("sgx/azure-sdk-oe/" + DEBUG["file"])[16:]
    runtime = vector("sgx/azure-sdk-oe/runtime_data.bin")
    marker = "draft-" + RUN_ID
    draft = 'version=1.0; authorizationrules{=> permit();}; issuancerules{=> issue(type="sdk-draft", value="%s");};' % marker
    rec = Recorder()
    result, token = client.attest_sgx_enclave(quote, runtime_data=runtime, draft_policy=draft, validation_callback=rec)
    # As the SDK's own test: a draft-policy token is unsecured.
    check(token.algorithm == "none", "draft policy token alg {!r}, expected none".format(token.algorithm))
    check(token.signature_bytes == b"", "draft policy token carries a signature")
    check(rec.calls and rec.calls[-1][1] is None, "the SDK reported a signer for an unsigned token")
    check_sgx_result("draft policy", result, token, DEBUG, quote, issuer)
    check(result.enclave_held_data == runtime, "draft policy: x-ms-sgx-ehd is not the runtime data")
    policy_claims = result.policy_claims or {}
    check(
        policy_claims.get("sdk-draft") == marker,
        "the draft policy's issued claim is missing from x-ms-policy: {!r}".format(policy_claims),
    )
    # The plain permit-all text the SDK's test uses works too.
    _, token = client.attest_sgx_enclave(quote, runtime_data=runtime, draft_policy=PERMIT_ALL)
    check(token.algorithm == "none", "permit-all draft token alg {!r}".format(token.algorithm))
    return "attest_sgx_enclave with draft_policy -> unsigned (alg none) token evaluated with the draft"


def case_aad_provider():
    name = "sdkaad" + RUN_ID
    create_provider(name, "AAD")
    issuer = metadata_issuer(name, "Reader")
    STATE["aad"] = (name, issuer)
    sgx = AttestationType.SGX_ENCLAVE
    reader = admin_client(name, issuer, "Reader")
    contributor = admin_client(name, issuer, "Contributor")

    default, _ = reader.get_policy(sgx)
    check(default.startswith("version"), "default SgxEnclave policy of a new AAD provider: {!r}".format(default[:200]))
    STATE["default_policy"] = default

    marker = "aad-" + RUN_ID
    policy = 'version=1.0; authorizationrules{=> permit();}; issuancerules{=> issue(type="sdk-marker", value="%s");};' % marker
    rec = Recorder()
    result, _ = contributor.set_policy(sgx, policy, validation_callback=rec)
    rec.signed_by_service("set_policy")
    check(result.policy_resolution == PolicyModification.UPDATED, "set_policy result {!r}".format(result.policy_resolution))
    check(result.policy_signer is None, "unsigned set_policy reported a signer")
    want = policy_token_hash(policy)
    check(
        result.policy_token_hash == want,
        "x-ms-policy-token-hash {!r} != SHA-256 of the JWS the SDK sent {!r}".format(result.policy_token_hash, want),
    )
    eventually("get_policy returns the policy just set", lambda: reader.get_policy(sgx)[0] == policy)

    # The stored policy is the one attestation runs.
    attest = attestation_client(name, issuer, "Reader")
    quote = vector("sgx/azure-sdk-oe/" + DEBUG["file"])[16:]
    eventually(
        "attestation on {} issues the stored policy's claim".format(name),
        lambda: (attest.attest_sgx_enclave(quote)[0].policy_claims or {}).get("sdk-marker") == marker,
    )

    err = expect_http_error("set_policy with a Reader token", (401, 403), lambda: reader.set_policy(sgx, PERMIT_ALL))
    reset, _ = contributor.reset_policy(sgx)
    check(reset.policy_resolution == PolicyModification.REMOVED, "reset_policy result {!r}".format(reset.policy_resolution))
    check(reset.policy_token_hash is None, "reset_policy returned a policy token hash")
    eventually("get_policy returns the default after reset", lambda: reader.get_policy(sgx)[0] == default)
    return "AAD provider: get/set(unsigned)/get/reset policy, token hash matches, Reader refused with {}".format(
        err.status_code
    )


def case_isolated_provider():
    name = "sdkiso" + RUN_ID
    key1, cert1, _, _ = new_signer("attestd sdk test signer 1 " + RUN_ID)
    key2, cert2, _, _ = new_signer("attestd sdk test signer 2 " + RUN_ID)
    create_provider(name, "Isolated", [cert1])
    issuer = metadata_issuer(name, "Reader")
    sgx = AttestationType.SGX_ENCLAVE
    reader = admin_client(name, issuer, "Reader")
    # Signing key and certificate given once, for every call (as the SDK's tests do).
    admin = AttestationAdministrationClient(
        instance_url(name),
        credential("Contributor"),
        signing_key=key1,
        signing_certificate=cert1,
        **dict(TRANSPORT, **validating_options(issuer))
    )
    der1, der2 = der_of_pem(cert1), der_of_pem(cert2)

    def signer_ders():
        certs, _ = reader.get_policy_management_certificates()
        return [der_of_pem(chain[0]) for chain in certs]

    check(signer_ders() == [der1], "get_policy_management_certificates does not list exactly the creation certificate")

    policy = 'version=1.0; authorizationrules{=> permit();}; issuancerules{=> issue(type="sdk-marker", value="iso-%s");};' % RUN_ID
    rec = Recorder()
    result, _ = admin.set_policy(sgx, policy, signing_key=key1, signing_certificate=cert1, validation_callback=rec)
    rec.signed_by_service("signed set_policy")
    check(result.policy_resolution == PolicyModification.UPDATED, "signed set_policy result {!r}".format(result.policy_resolution))
    check(
        result.policy_token_hash == policy_token_hash(policy, key1, cert1),
        "signed set_policy: x-ms-policy-token-hash does not match the JWS the SDK sent",
    )
    check(
        result.policy_signer is not None and der_of_pem(result.policy_signer.certificates[0]) == der1,
        "signed set_policy: x-ms-policy-signer is not the signing certificate",
    )
    eventually("get_policy returns the signed policy", lambda: reader.get_policy(sgx)[0] == policy)

    # Policy writes must be signed by a trusted signer on an Isolated provider.
    unsigned = AttestationAdministrationClient(
        instance_url(name), credential("Contributor"), **dict(TRANSPORT, **validating_options(issuer))
    )
    expect_http_error("unsigned set_policy on an Isolated provider", (400,), lambda: unsigned.set_policy(sgx, PERMIT_ALL))
    expect_http_error(
        "set_policy signed by an untrusted certificate",
        (400,),
        lambda: admin.set_policy(sgx, PERMIT_ALL, signing_key=key2, signing_certificate=cert2),
    )

    thumb2 = hashlib.sha1(der2).hexdigest()
    for attempt in ("add", "add again"):
        rec = Recorder()
        added, _ = admin.add_policy_management_certificate(cert2, validation_callback=rec)
        rec.signed_by_service("add_policy_management_certificate")
        check(
            added.certificate_resolution == CertificateModification.IS_PRESENT,
            "{}: result {!r}".format(attempt, added.certificate_resolution),
        )
        check(
            (added.certificate_thumbprint or "").lower() == thumb2,
            "{}: thumbprint {!r} != SHA-1 of the certificate {}".format(attempt, added.certificate_thumbprint, thumb2),
        )
    eventually("the added certificate is listed", lambda: sorted(signer_ders()) == sorted([der1, der2]))
    # The new signer is trusted now.
    result, _ = admin.set_policy(sgx, PERMIT_ALL, signing_key=key2, signing_certificate=cert2)
    check(result.policy_resolution == PolicyModification.UPDATED, "set_policy signed by the added certificate")

    for attempt in ("remove", "remove again"):
        removed, _ = admin.remove_policy_management_certificate(cert2)
        check(
            removed.certificate_resolution == CertificateModification.IS_ABSENT,
            "{}: result {!r}".format(attempt, removed.certificate_resolution),
        )
        check(
            (removed.certificate_thumbprint or "").lower() == thumb2,
            "{}: thumbprint {!r}".format(attempt, removed.certificate_thumbprint),
        )
    eventually("the removed certificate is gone", lambda: signer_ders() == [der1])
    expect_http_error(
        "set_policy signed by the removed certificate",
        (400,),
        lambda: admin.set_policy(sgx, PERMIT_ALL, signing_key=key2, signing_certificate=cert2),
    )

    reset, _ = admin.reset_policy(sgx)  # signed with key1 (client default)
    check(reset.policy_resolution == PolicyModification.REMOVED, "signed reset_policy result {!r}".format(reset.policy_resolution))
    expect_http_error("unsigned reset_policy on an Isolated provider", (400,), lambda: unsigned.reset_policy(sgx))
    return "Isolated provider: signed set/reset, unsigned refused, certificate add/remove (idempotent)"


def case_cleanup():
    while CREATED:
        delete_provider(CREATED[-1])
        CREATED.pop()
    check(
        StaticTokenCredential.scopes_seen == {(SCOPE,)},
        "the SDK asked for unexpected scopes: {}".format(StaticTokenCredential.scopes_seen),
    )
    return "providers deleted"


CASES = [
    ("1", case_sgx_binary),
    ("2", case_sgx_json),
    ("3", case_open_enclave),
    ("4", case_draft_policy),
    ("5", case_aad_provider),
    ("6", case_isolated_provider),
    ("7", case_cleanup),
]


def main():
    import azure.core
    import azure.security.attestation

    print(
        "maa_sdk_test: azure-security-attestation {}, azure-core {}, endpoint {}, shared provider {}, run {}".format(
            azure.security.attestation.VERSION, azure.core.__version__, ENDPOINT, SHARED, RUN_ID
        ),
        flush=True,
    )
    runtime = vector("sgx/azure-sdk-oe/runtime_data.bin")
    quote = vector("sgx/azure-sdk-oe/" + DEBUG["file"])[16:]
    # report_data (bytes 320..352 of the report body that follows the 48-byte quote header).
    if quote[48 + 320 : 48 + 352] != hashlib.sha256(runtime).digest():
        raise SystemExit("maa_sdk_test: the vectors under {} are not the expected ones".format(VECTORS))

    for number, case in CASES:
        started = time.monotonic()
        try:
            summary = case()
        except Exception as e:  # report the first failure clearly, then clean up
            print("FAIL {} {}: {}".format(number, case.__name__, describe(e) if not isinstance(e, CaseFailure) else e), flush=True)
            traceback.print_exc(file=sys.stderr)
            for provider in reversed(CREATED):
                try:
                    manage("DELETE", provider)
                except Exception:
                    pass
            return 1
        print("PASS {} {}: {} ({:.1f}s)".format(number, case.__name__, summary, time.monotonic() - started), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
