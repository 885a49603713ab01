"""The independent Python TPP client of test_aspsp.py against the Rust Berlin Group simulator
(`pisgate sandbox --protocol berlin-group`): the Python signer (`cryptography`, its own CA and
QSealC-like certificate) must be accepted by the Rust verifier, the bodies the Python ASPSP
accepts must be accepted, the scenarios both banks share must end the same way, and the
simulator's self-check must stay empty.

    ~/.cache/pisgate/venv-bgaspsp/bin/python tests/bg-aspsp/interop_rust_simulator.py PISGATE_BINARY

Exit 0 when every check passed.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cryptography.hazmat.primitives import serialization  # noqa: E402

import test_aspsp as t  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(fn, want, timeout=10.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last == want:
            return last
        time.sleep(0.05)
    raise AssertionError(f"waited for {want!r}, last {last!r}")


def main(binary: str) -> None:
    ca_key, ca = t.make_ca("Test QTSP CA")
    rogue_ca_key, rogue_ca = t.make_ca("Rogue CA")
    key, cert = t.make_qseal(ca_key, ca)
    _, rogue_cert = t.make_qseal(rogue_ca_key, rogue_ca, cn="Rogue TPP")
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        ca_file = Path(d) / "ca.pem"
        ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        env = dict(os.environ)
        env.update({
            "PISGATE_CONFIG_DIR": str(HERE.parent.parent / "config"),
            "PISGATE__SANDBOX_BERLIN_GROUP__LISTEN": f"127.0.0.1:{port}",
            "PISGATE__SANDBOX_BERLIN_GROUP__TPP_CA_FILE": str(ca_file),
            "PISGATE__SANDBOX_BERLIN_GROUP__STATUS_STEP_MS": "100",
            "PISGATE__SANDBOX_BERLIN_GROUP__DECOUPLED_TIMEOUT_SECS": "1",
        })
        proc = subprocess.Popen([binary, "sandbox", "--protocol", "berlin-group"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            until(lambda: _health(port), True, timeout=20)
            run(port, key, cert, rogue_cert)
            failures = json.loads(t.raw_http(port, "GET", "/admin/selfcheck").raw)["failures"]
            assert failures == [], failures
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print("interop OK: the Python TPP client passes against the Rust simulator")


def _health(port):
    try:
        return t.raw_http(port, "GET", "/admin/health").status == 200
    except OSError:
        return False


def run(port, key, cert, rogue_cert):
    tpp = t.Tpp(port, key, cert)
    status = lambda pay: t.status_of(tpp, pay).json["transactionStatus"]  # noqa: E731

    # Default redirect: RCVD, the PSU approves, back to the redirect URI without parameters, ACSC.
    pay = t.redirect_and_approve(tpp)
    until(lambda: status(pay), "ACSC")
    # Shared scenarios by amount end as in the Python ASPSP.
    for amount, final in (("77.01", "RJCT"), ("77.03", "ACSC")):
        pay = t.redirect_and_approve(tpp, amount=amount)
        until(lambda: status(pay), final)
    pay = t.redirect_and_approve(tpp, amount="77.02")
    time.sleep(0.5)
    assert status(pay) == "ACSP"
    # 404 until the PSU opens the page.
    pay = tpp.initiate(amount="77.04")
    assert pay.status == 201, pay
    assert t.status_of(tpp, pay).status == 404
    assert t.psu(port, pay.json["_links"]["scaRedirect"]["href"], "approve") == t.REDIRECT
    until(lambda: status(pay), "ACSC")
    # Refused SCA goes to the Nok URI: RJCT and failed.
    pay = tpp.initiate()
    assert t.psu(port, pay.json["_links"]["scaRedirect"]["href"], "refuse") == t.NOK
    assert status(pay) == "RJCT"
    assert t.sca_status(tpp, pay.json["_links"]["scaStatus"]["href"]) == "failed"
    # Decoupled with PSU-ID, approved through the Python ASPSP's admin path. (Without PSU-ID
    # the Python ASPSP answers 400, this one 201 `received` + updatePsuIdentification: both
    # are spec-conformant.)
    pay = tpp.call("POST", "/psd2/v1/payments/sepa-credit-transfers", t._body(),
                   {"TPP-Redirect-Preferred": "false"})
    assert pay.status == 201 and pay.headers["aspsp-sca-approach"] == "DECOUPLED", pay
    start = t.path_of(pay.json["_links"]["startAuthorisationWithPsuIdentification"]["href"])
    auth = tpp.call("POST", start, {}, {"PSU-ID": "psu-1"})
    assert auth.status == 201 and auth.json["scaStatus"] == "started", auth
    r = t.raw_http(port, "POST", f"/admin/decoupled/{auth.json['authorisationId']}",
                   {"Content-Type": "application/json"}, b'{"approve": true}')
    assert r.status == 200, r
    until(lambda: status(pay), "ACSC")
    # Periodic payment.
    pay = tpp.initiate(service="periodic-payments")
    assert pay.status == 201, pay
    # Cancellation: 204 for an unsigned payment, 202 in scenario 77.06.
    pay = tpp.initiate()
    assert tpp.call("DELETE", t.path_of(pay.json["_links"]["self"]["href"])).status == 204
    assert status(pay) == "CANC"
    pay = tpp.initiate(amount="77.06")
    r = tpp.call("DELETE", t.path_of(pay.json["_links"]["self"]["href"]))
    assert r.status == 202 and "startAuthorisation" in r.json["_links"], r
    # Refusals with the same status and code as the Python ASPSP.
    assert (tpp.initiate(digest_body=b"other").status, tpp.initiate(digest_body=b"other").code) == (400, "FORMAT_ERROR")
    r = tpp.initiate(date="Mon, 01 Jan 2024 00:00:00 GMT")
    assert (r.status, r.code) == (400, "TIMESTAMP_INVALID"), r
    r = tpp.initiate(cert=rogue_cert)
    assert (r.status, r.code) == (401, "CERTIFICATE_INVALID"), r
    r = tpp.initiate(key_id_value="SN=1,CA=CN=Nobody")
    assert (r.status, r.code) == (401, "SIGNATURE_INVALID"), r
    r = tpp.initiate(omit=("Signature",))
    assert (r.status, r.code) == (401, "SIGNATURE_MISSING"), r
    r = tpp.initiate(amount="0.00")
    assert (r.status, r.code) == (400, "FORMAT_ERROR"), r
    r = tpp.initiate(product="target-2-payments")
    assert (r.status, r.code) == (404, "PRODUCT_UNKNOWN"), r


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
