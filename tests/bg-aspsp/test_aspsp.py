"""End-to-end tests of the strict Berlin Group ASPSP (aspsp.py), independent of pisgate.

A small TPP client lives here: its own draft-cavage signer, a test CA and a QSealC-like
certificate generated with `cryptography`. Every scenario runs over HTTP against a real
server process, and every refusal asserts the HTTP status and the tppMessages code. After
the run, the server's self-check (its answers validated against the OpenAPI) must have found
nothing.
"""
from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import http.client
import json
import re
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
REDIRECT = "https://tpp.example/return/ok"
NOK = "https://tpp.example/return/nok"
DEBTOR = "FI2112345600000785"
CREDITOR = "DE89370400440532013000"


# ---------------------------------------------------------------------------------------------
# PKI made here
# ---------------------------------------------------------------------------------------------
def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn, o="Test Trust Services", c="FI"):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
                      x509.NameAttribute(NameOID.COUNTRY_NAME, c)])


def make_ca(cn):
    key = _key()
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_qseal(ca_key, ca_cert, cn="Test TPP Oy QSealC", expired=False):
    key = _key()
    now = dt.datetime.now(dt.timezone.utc)
    start, end = ((now - dt.timedelta(days=10), now - dt.timedelta(days=1)) if expired
                  else (now - dt.timedelta(days=1), now + dt.timedelta(days=30)))
    cert = (x509.CertificateBuilder().subject_name(_name(cn, "Test TPP Oy"))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def key_id(cert):
    return f"SN={cert.serial_number:x},CA=" + cert.issuer.rfc4514_string().replace(" ", "%20")


# ---------------------------------------------------------------------------------------------
# The TPP client
# ---------------------------------------------------------------------------------------------
class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.raw = status, headers, body
        self.json = json.loads(body) if body and headers.get("content-type", "").startswith("application/json") else None

    @property
    def code(self):
        return (self.json or {}).get("tppMessages", [{}])[0].get("code")

    def __repr__(self):
        return f"<{self.status} {self.raw[:300]!r}>"


def raw_http(port, method, path, headers=None, body=b""):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    return Resp(r.status, hdrs, data)


class Tpp:
    def __init__(self, port, key, cert):
        self.port, self.key, self.cert = port, key, cert

    def call(self, method, path, body=None, headers=None, *, omit=(), override=None, signed_headers=None,
             sign_key=None, key_id_value=None, digest_body=None, date=None, cert=None):
        """A signed BG request. `omit` drops headers; `override` replaces them after signing."""
        raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        h = {"X-Request-ID": str(uuid.uuid4()),
             "Date": date or email.utils.formatdate(usegmt=True),
             "Digest": "SHA-256=" + base64.b64encode(hashlib.sha256(raw if digest_body is None else digest_body)
                                                     .digest()).decode(),
             "TPP-Signature-Certificate": base64.b64encode((cert or self.cert).public_bytes(serialization.Encoding.DER)).decode()}
        if body is not None:
            h["Content-Type"] = "application/json"
        if method == "POST" and re.fullmatch(r"/psd2/v1/[^/]+/[^/]+", path):
            h["PSU-IP-Address"] = "192.0.2.10"
        h.update(headers or {})
        names = signed_headers or [n for n in ("Digest", "X-Request-ID", "PSU-ID", "PSU-Corporate-ID",
                                               "TPP-Redirect-URI", "Date") if n in h]
        signing = "\n".join(f"{n.lower()}: {h[n]}" for n in names if n in h)
        sig = base64.b64encode((sign_key or self.key).sign(signing.encode(), padding.PKCS1v15(),
                                                           hashes.SHA256())).decode()
        h["Signature"] = (f'keyId="{key_id_value or key_id(cert or self.cert)}",algorithm="rsa-sha256",'
                          f'headers="{" ".join(n.lower() for n in names)}",signature="{sig}"')
        for n in omit:
            h.pop(n, None)
        h.update(override or {})
        return raw_http(self.port, method, path, h, raw)

    def initiate(self, creditor_name="Merchant Oy", amount="12.50", service="payments",
                 product="sepa-credit-transfers", headers=None, extra=None, **kw):
        body = {"instructedAmount": {"currency": "EUR", "amount": amount},
                "debtorAccount": {"iban": DEBTOR}, "creditorName": creditor_name,
                "creditorAccount": {"iban": CREDITOR}, "remittanceInformationUnstructured": "Order 42"}
        if service == "periodic-payments":
            body.update(startDate=(dt.date.today() + dt.timedelta(days=1)).isoformat(), frequency="Monthly",
                        dayOfExecution="5")
        body.update(extra or {})
        h = {"TPP-Redirect-URI": REDIRECT, "TPP-Nok-Redirect-URI": NOK}
        h.update(headers or {})
        return self.call("POST", f"/psd2/v1/{service}/{product}", body, h, **kw)


def path_of(href):
    return urllib.parse.urlsplit(href).path


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = make_ca("Test QTSP CA")
    other_ca_key, other_ca = make_ca("Rogue CA")
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    key, cert = make_qseal(ca_key, ca)
    rogue_key, rogue_cert = make_qseal(other_ca_key, other_ca, cn="Rogue TPP")
    _, expired = make_qseal(ca_key, ca, expired=True)
    key2, cert2 = make_qseal(ca_key, ca, cn="Another TPP")
    return {"dir": d, "key": key, "cert": cert, "rogue_key": rogue_key, "rogue_cert": rogue_cert,
            "expired": expired, "key2": key2, "cert2": cert2}


@pytest.fixture(scope="session")
def server(pki):
    proc = subprocess.Popen([sys.executable, str(HERE / "aspsp.py"), "--port", "0", "--tpp-ca",
                             str(pki["dir"] / "ca.pem"), "--decoupled-timeout", "1", "--max-clock-skew", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r":(\d+)/psd2", line)
    assert m, f"the server did not start: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
    port = int(m.group(1))
    yield port
    failures = json.loads(raw_http(port, "GET", "/admin/selfcheck").raw)["failures"]
    proc.terminate()
    proc.wait(timeout=10)
    assert failures == [], f"the ASPSP's answers violated the OpenAPI: {failures}"


@pytest.fixture()
def tpp(server, pki):
    return Tpp(server, pki["key"], pki["cert"])


def status_of(tpp, pay):
    return tpp.call("GET", path_of(pay.json["_links"]["status"]["href"]))


def sca_status(tpp, href):
    return tpp.call("GET", path_of(href)).json["scaStatus"]


def psu(port, sca_redirect, decision):
    """The PSU opens the bank's page and approves or refuses; returns the redirect target."""
    p = path_of(sca_redirect)
    page = raw_http(port, "GET", p)
    assert page.status == 200 and b"<form" in page.raw, page
    r = raw_http(port, "POST", p, {"Content-Type": "application/x-www-form-urlencoded"},
                 f"decision={decision}".encode())
    assert r.status == 303, r
    return r.headers["location"]


# ---------------------------------------------------------------------------------------------
# Scenarios end to end
# ---------------------------------------------------------------------------------------------
def redirect_and_approve(tpp, **kw):
    pay = tpp.initiate(**kw)
    assert pay.status == 201, pay
    assert pay.headers["aspsp-sca-approach"] == "REDIRECT"
    assert pay.headers["x-request-id"]
    assert pay.json["transactionStatus"] == "RCVD"
    assert status_of(tpp, pay).json["transactionStatus"] == "RCVD"
    assert psu(tpp.port, pay.json["_links"]["scaRedirect"]["href"], "approve") == REDIRECT
    assert sca_status(tpp, pay.json["_links"]["scaStatus"]["href"]) == "finalised"
    return pay


def test_default_scenario_is_acsc_after_acsp(tpp):
    pay = redirect_and_approve(tpp)
    assert [status_of(tpp, pay).json["transactionStatus"] for _ in range(3)] == ["ACSP", "ACSC", "ACSC"]
    details = tpp.call("GET", path_of(pay.json["_links"]["self"]["href"]))
    assert details.status == 200 and details.json["transactionStatus"] == "ACSC"
    assert details.json["creditorName"] == "Merchant Oy"


def test_acsp_then_rjct_by_amount(tpp):
    pay = redirect_and_approve(tpp, amount="77.01")
    assert [status_of(tpp, pay).json["transactionStatus"] for _ in range(3)] == ["ACSP", "RJCT", "RJCT"]


def test_acsp_then_rjct_by_creditor_name(tpp):
    pay = redirect_and_approve(tpp, creditor_name="Shop acsp-then-rjct")
    assert [status_of(tpp, pay).json["transactionStatus"] for _ in range(2)] == ["ACSP", "RJCT"]


def test_acsp_for_good(tpp):
    pay = redirect_and_approve(tpp, amount="77.02")
    assert {status_of(tpp, pay).json["transactionStatus"] for _ in range(5)} == {"ACSP"}


def test_pdng_then_acsc(tpp):
    pay = redirect_and_approve(tpp, amount="77.03")
    assert [status_of(tpp, pay).json["transactionStatus"] for _ in range(3)] == ["PDNG", "ACSC", "ACSC"]


def test_unknown_until_the_psu_opens_the_page(tpp):
    pay = tpp.initiate(amount="77.04")
    assert pay.status == 201
    for path in (pay.json["_links"]["status"]["href"], pay.json["_links"]["self"]["href"],
                 pay.json["_links"]["scaStatus"]["href"]):
        r = tpp.call("GET", path_of(path))
        assert (r.status, r.code) == (404, "RESOURCE_UNKNOWN"), r
    raw_http(tpp.port, "GET", path_of(pay.json["_links"]["scaRedirect"]["href"]))
    assert status_of(tpp, pay).json["transactionStatus"] == "RCVD"
    assert psu(tpp.port, pay.json["_links"]["scaRedirect"]["href"], "approve") == REDIRECT
    assert [status_of(tpp, pay).json["transactionStatus"] for _ in range(2)] == ["ACSP", "ACSC"]


def test_refused_sca_is_rjct_with_sca_status_failed(tpp):
    pay = tpp.initiate()
    assert psu(tpp.port, pay.json["_links"]["scaRedirect"]["href"], "refuse") == NOK
    assert sca_status(tpp, pay.json["_links"]["scaStatus"]["href"]) == "failed"
    assert status_of(tpp, pay).json["transactionStatus"] == "RJCT"


def test_explicit_redirect_authorisation(tpp):
    pay = tpp.initiate(headers={"TPP-Explicit-Authorisation-Preferred": "true"})
    assert pay.status == 201 and "scaRedirect" not in pay.json["_links"]
    start = tpp.call("POST", path_of(pay.json["_links"]["startAuthorisation"]["href"]), {})
    assert start.status == 201 and start.json["scaStatus"] == "received", start
    assert psu(tpp.port, start.json["_links"]["scaRedirect"]["href"], "approve") == REDIRECT
    assert sca_status(tpp, start.json["_links"]["scaStatus"]["href"]) == "finalised"
    ids = tpp.call("GET", path_of(pay.json["_links"]["startAuthorisation"]["href"]))
    assert ids.json == {"authorisationIds": [start.json["authorisationId"]]}


def decoupled_start(tpp, **kw):
    pay = tpp.call("POST", "/psd2/v1/payments/sepa-credit-transfers", _body(**kw),
                   {"TPP-Redirect-Preferred": "false"})
    assert pay.status == 201, pay
    assert pay.headers["aspsp-sca-approach"] == "DECOUPLED"
    href = pay.json["_links"]["startAuthorisationWithPsuIdentification"]["href"]
    no_psu = tpp.call("POST", path_of(href), {})
    assert (no_psu.status, no_psu.code) == (400, "FORMAT_ERROR")
    start = tpp.call("POST", path_of(href), {}, {"PSU-ID": "psu-4711"})
    assert start.status == 201 and start.json["scaStatus"] == "started", start
    return pay, start


def _body(amount="12.50", creditor_name="Merchant Oy"):
    return {"instructedAmount": {"currency": "EUR", "amount": amount}, "debtorAccount": {"iban": DEBTOR},
            "creditorName": creditor_name, "creditorAccount": {"iban": CREDITOR}}


def test_decoupled_approval(tpp):
    pay, start = decoupled_start(tpp)
    assert status_of(tpp, pay).json["transactionStatus"] == "RCVD"
    r = raw_http(tpp.port, "POST", f"/admin/decoupled/{start.json['authorisationId']}", {}, b'{"approve": true}')
    assert r.status == 200, r
    assert sca_status(tpp, start.json["_links"]["scaStatus"]["href"]) == "finalised"
    assert [status_of(tpp, pay).json["transactionStatus"] for _ in range(2)] == ["ACSP", "ACSC"]


def test_decoupled_refusal(tpp):
    pay, start = decoupled_start(tpp)
    raw_http(tpp.port, "POST", f"/admin/decoupled/{start.json['authorisationId']}", {}, b'{"approve": false}')
    assert sca_status(tpp, start.json["_links"]["scaStatus"]["href"]) == "failed"
    assert status_of(tpp, pay).json["transactionStatus"] == "RJCT"


def test_decoupled_timeout(tpp):
    pay, start = decoupled_start(tpp, amount="77.05")
    r = raw_http(tpp.port, "POST", f"/admin/decoupled/{start.json['authorisationId']}", {}, b'{"approve": true}')
    assert r.status == 409
    assert sca_status(tpp, start.json["_links"]["scaStatus"]["href"]) == "started"
    time.sleep(1.2)
    assert sca_status(tpp, start.json["_links"]["scaStatus"]["href"]) == "failed"
    assert status_of(tpp, pay).json["transactionStatus"] == "RJCT"


def test_cancel_of_an_unsigned_payment_is_204(tpp):
    pay = tpp.initiate()
    raw_http(tpp.port, "GET", path_of(pay.json["_links"]["scaRedirect"]["href"]))  # the PSU opened it
    r = tpp.call("DELETE", path_of(pay.json["_links"]["self"]["href"]))
    assert r.status == 204 and r.raw == b"", r
    assert status_of(tpp, pay).json["transactionStatus"] == "CANC"
    assert sca_status(tpp, pay.json["_links"]["scaStatus"]["href"]) == "failed"
    again = tpp.call("DELETE", path_of(pay.json["_links"]["self"]["href"]))
    assert (again.status, again.code) == (400, "RESOURCE_BLOCKED")


def test_cancel_that_needs_sca_is_202_then_cancellation_authorisation(tpp):
    pay = tpp.initiate(amount="77.06")
    r = tpp.call("DELETE", path_of(pay.json["_links"]["self"]["href"]), headers={"TPP-Redirect-URI": REDIRECT})
    assert r.status == 202 and r.json["transactionStatus"] == "RCVD", r
    start = tpp.call("POST", path_of(r.json["_links"]["startAuthorisation"]["href"]), {})
    assert start.status == 201, start
    assert psu(tpp.port, start.json["_links"]["scaRedirect"]["href"], "approve") == REDIRECT
    assert sca_status(tpp, start.json["_links"]["scaStatus"]["href"]) == "finalised"
    assert status_of(tpp, pay).json["transactionStatus"] == "CANC"


def test_cancel_of_a_signed_pending_payment_is_202(tpp):
    pay = redirect_and_approve(tpp, amount="77.02")
    r = tpp.call("DELETE", path_of(pay.json["_links"]["self"]["href"]))
    assert r.status == 202 and r.json["transactionStatus"] == "ACSP", r


def test_cancel_of_a_signed_instant_payment_is_cancellation_invalid(tpp):
    pay = redirect_and_approve(tpp, amount="77.02", product="instant-sepa-credit-transfers")
    r = tpp.call("DELETE", path_of(pay.json["_links"]["self"]["href"]))
    assert (r.status, r.code) == (405, "CANCELLATION_INVALID"), r


def test_periodic_payment_end_to_end(tpp):
    pay = redirect_and_approve(tpp, service="periodic-payments")
    assert "/periodic-payments/" in pay.json["_links"]["self"]["href"]
    details = tpp.call("GET", path_of(pay.json["_links"]["self"]["href"]))
    assert details.status == 200 and details.json["frequency"] == "Monthly"


def test_request_log_shows_what_the_tpp_sent(tpp):
    pay = tpp.initiate(creditor_name="Logged Shop")
    log = json.loads(raw_http(tpp.port, "GET", "/admin/requests").raw)
    mine = [e for e in log if e.get("method") == "POST" and "Logged Shop" in (e.get("body") or "")]
    assert mine and mine[-1]["status"] == 201 and "Signature" in mine[-1]["headers"]
    states = json.loads(raw_http(tpp.port, "GET", "/admin/payments").raw)
    assert any(p["paymentId"] == pay.json["paymentId"] and p["transactionStatus"] == "RCVD" for p in states)


# ---------------------------------------------------------------------------------------------
# Refusals (§8)
# ---------------------------------------------------------------------------------------------
def refused(r, status, code):
    assert (r.status, r.code) == (status, code), r
    assert r.headers.get("x-request-id"), r


def test_refuses_a_wrong_digest(tpp):
    refused(tpp.initiate(digest_body=b'{"other": "body"}'), 400, "FORMAT_ERROR")


def test_refuses_a_wrong_digest_on_an_empty_body(tpp):
    pay = tpp.initiate()
    refused(tpp.call("GET", path_of(pay.json["_links"]["status"]["href"]), digest_body=b"x"), 400, "FORMAT_ERROR")


def test_refuses_a_stale_date(tpp):
    stale = email.utils.formatdate(time.time() - 600, usegmt=True)
    refused(tpp.initiate(date=stale), 400, "TIMESTAMP_INVALID")


def test_refuses_a_date_that_is_not_imf_fixdate(tpp):
    refused(tpp.initiate(date=dt.datetime.now(dt.timezone.utc).isoformat()), 400, "FORMAT_ERROR")


def test_refuses_a_signature_by_another_key(tpp, pki):
    refused(tpp.initiate(sign_key=pki["key2"]), 401, "SIGNATURE_INVALID")


def test_refuses_a_key_id_that_does_not_match_the_certificate(tpp, pki):
    refused(tpp.initiate(key_id_value=key_id(pki["cert2"])), 401, "SIGNATURE_INVALID")
    wrong_ca = f"SN={pki['cert'].serial_number:x},CA=CN=Someone%20Else,C=FI"
    refused(tpp.initiate(key_id_value=wrong_ca), 401, "SIGNATURE_INVALID")


def test_refuses_a_certificate_not_from_the_ca(tpp, pki):
    refused(tpp.initiate(sign_key=pki["rogue_key"], cert=pki["rogue_cert"]), 401, "CERTIFICATE_INVALID")


def test_refuses_an_expired_certificate(tpp, pki):
    refused(tpp.initiate(cert=pki["expired"]), 401, "CERTIFICATE_EXPIRED")


def test_refuses_a_signature_whose_headers_lack_a_required_one(tpp):
    refused(tpp.initiate(signed_headers=["Digest", "X-Request-ID", "Date"]), 401, "SIGNATURE_INVALID")  # no tpp-redirect-uri
    refused(tpp.initiate(signed_headers=["X-Request-ID", "Date", "TPP-Redirect-URI"]), 401, "SIGNATURE_INVALID")


def test_refuses_a_header_changed_after_signing(tpp):
    refused(tpp.initiate(override={"TPP-Redirect-URI": "https://evil.example/"}), 401, "SIGNATURE_INVALID")


@pytest.mark.parametrize("header,status,code", [
    ("Signature", 401, "SIGNATURE_MISSING"),
    ("Digest", 400, "FORMAT_ERROR"),
    ("Date", 400, "FORMAT_ERROR"),
    ("TPP-Signature-Certificate", 401, "CERTIFICATE_MISSING"),
    ("X-Request-ID", 400, "FORMAT_ERROR"),
    ("PSU-IP-Address", 400, "FORMAT_ERROR"),
    ("TPP-Redirect-URI", 400, "FORMAT_ERROR"),
])
def test_refuses_a_missing_header(tpp, header, status, code):
    if header == "TPP-Redirect-URI":
        r = tpp.call("POST", "/psd2/v1/payments/sepa-credit-transfers", _body())
    else:
        r = tpp.initiate(omit=(header,))
    assert (r.status, r.code) == (status, code), r


def test_refuses_a_request_id_that_is_not_a_uuid(tpp):
    refused(tpp.initiate(headers={"X-Request-ID": "12345"}), 400, "FORMAT_ERROR")


@pytest.mark.parametrize("extra,path", [
    ({"creditorAccount": {"iban": "DE89370400440532013001"}}, "creditorAccount.iban"),  # bad check digits
    ({"debtorAccount": {"iban": "FI21123456000007"}}, "debtorAccount.iban"),  # wrong length for FI
    ({"instructedAmount": {"currency": "EUR", "amount": "12.505"}}, "instructedAmount.amount"),
    ({"instructedAmount": {"currency": "EUR", "amount": "0"}}, "instructedAmount.amount"),
    ({"instructedAmount": {"currency": "EUR", "amount": 12.5}}, None),  # a JSON number
    ({"instructedAmount": {"currency": "SEK", "amount": "12.50"}}, "instructedAmount.currency"),
    ({"creditorName": "x" * 71}, None),
    ({"remittanceInformationUnstructured": "r" * 141}, None),
    ({"endToEndIdentification": "e" * 36}, None),
    ({"creditorAddress": {"townName": "Helsinki"}}, None),  # country is required
    ({"favouriteColour": "green"}, "favouriteColour"),
    ({"requestedExecutionDate": "2020-01-01"}, "requestedExecutionDate"),
])
def test_refuses_a_bad_body(tpp, extra, path):
    r = tpp.initiate(extra=extra)
    code = "EXECUTION_DATE_INVALID" if "requestedExecutionDate" in extra else "FORMAT_ERROR"
    refused(r, 400, code)
    if path:
        assert r.json["tppMessages"][0].get("path") == path, r


def test_refuses_a_body_without_a_required_field(tpp):
    r = tpp.call("POST", "/psd2/v1/payments/sepa-credit-transfers",
                 {"instructedAmount": {"currency": "EUR", "amount": "1"}, "creditorName": "X",
                  "creditorAccount": {"iban": CREDITOR}}, {"TPP-Redirect-URI": REDIRECT})
    refused(r, 400, "FORMAT_ERROR")
    assert "debtorAccount" in r.json["tppMessages"][0]["text"]


@pytest.mark.parametrize("extra", [
    {"startDate": "2020-01-01"},
    {"dayOfExecution": "01"},
    {"frequency": "Fortnightly"},
    {"monthsOfExecution": ["1", "6"]},
    {"dayOfExecution": "32"},
    {"endDate": "2020-01-01"},
    {"frequency": "MonthlyVariable"},  # without monthsOfExecution
    {"executionRule": "nearest"},
])
def test_refuses_a_bad_periodic_body(tpp, extra):
    refused(tpp.initiate(service="periodic-payments", extra=extra), 400, "FORMAT_ERROR")


def test_refuses_an_unknown_product(tpp):
    refused(tpp.initiate(product="target-2-payments"), 404, "PRODUCT_UNKNOWN")
    refused(tpp.initiate(product="no-such-product"), 404, "PRODUCT_UNKNOWN")


def test_refuses_an_unknown_payment_service(tpp):
    refused(tpp.initiate(service="bulk-payments"), 400, "PARAMETER_NOT_SUPPORTED")


def test_refuses_unknown_ids(tpp):
    refused(tpp.call("GET", "/psd2/v1/payments/sepa-credit-transfers/pay-nope/status"), 404, "RESOURCE_UNKNOWN")
    refused(tpp.call("GET", "/psd2/v1/payments/sepa-credit-transfers/pay-nope"), 404, "RESOURCE_UNKNOWN")
    refused(tpp.call("DELETE", "/psd2/v1/payments/sepa-credit-transfers/pay-nope"), 404, "RESOURCE_UNKNOWN")
    pay = tpp.initiate()
    base = path_of(pay.json["_links"]["self"]["href"])
    refused(tpp.call("GET", base + "/authorisations/auth-nope"), 404, "RESOURCE_UNKNOWN")


def test_refuses_the_right_id_on_the_wrong_product_or_service_or_tpp(tpp, pki):
    pay = tpp.initiate()
    pid = pay.json["paymentId"]
    refused(tpp.call("GET", f"/psd2/v1/payments/instant-sepa-credit-transfers/{pid}/status"), 403, "PRODUCT_INVALID")
    refused(tpp.call("GET", f"/psd2/v1/periodic-payments/sepa-credit-transfers/{pid}/status"), 405, "SERVICE_INVALID")
    other = Tpp(tpp.port, pki["key2"], pki["cert2"])
    refused(other.call("GET", f"/psd2/v1/payments/sepa-credit-transfers/{pid}/status"), 403, "RESOURCE_UNKNOWN")


def test_refuses_a_second_authorisation_and_an_unsupported_method(tpp):
    pay = tpp.initiate()
    base = path_of(pay.json["_links"]["self"]["href"])
    refused(tpp.call("POST", base + "/authorisations", {}), 409, "STATUS_INVALID")
    refused(tpp.call("PUT", base + "/authorisations/" + pay.json["_links"]["scaStatus"]["href"].rsplit("/", 1)[1], {}),
            405, "SERVICE_INVALID")


def test_refuses_a_wrong_content_type_and_accept(tpp):
    r = tpp.initiate(override={"Content-Type": "text/plain"})
    assert r.status == 415, r
    r = tpp.initiate(headers={"Accept": "application/xml"})
    assert r.status == 406, r


def test_accepts_a_sha512_digest_and_a_base64_pem_certificate(tpp, pki):
    body = json.dumps(_body()).encode()
    pem = base64.b64encode(pki["cert"].public_bytes(serialization.Encoding.PEM)).decode()
    r = tpp.call("POST", "/psd2/v1/payments/sepa-credit-transfers", body,
                 {"TPP-Redirect-URI": REDIRECT,
                  "Digest": "SHA-512=" + base64.b64encode(hashlib.sha512(body).digest()).decode()},
                 override={"TPP-Signature-Certificate": pem})
    assert r.status == 201, r


def test_sca_page_refuses_a_second_decision(tpp):
    pay = tpp.initiate()
    href = pay.json["_links"]["scaRedirect"]["href"]
    psu(tpp.port, href, "approve")
    r = raw_http(tpp.port, "POST", path_of(href), {"Content-Type": "application/x-www-form-urlencoded"},
                 b"decision=refuse")
    assert r.status == 409


def test_refuses_a_reused_request_id(tpp):
    rid = str(uuid.uuid4())
    first = tpp.initiate(headers={"X-Request-ID": rid})
    assert first.status == 201 and first.headers["x-request-id"] == rid
    refused(tpp.initiate(headers={"X-Request-ID": rid}), 400, "FORMAT_ERROR")


@pytest.mark.parametrize("header,value", [
    ("TPP-Redirect-Preferred", "yes"),
    ("PSU-IP-Address", "not-an-ip"),
    ("TPP-Redirect-URI", "not a uri"),
    ("PSU-Geo-Location", "somewhere"),
    ("PSU-Http-Method", "FETCH"),
])
def test_refuses_a_header_the_spec_types_otherwise(tpp, header, value):
    r = tpp.initiate(headers={header: value})
    refused(r, 400, "FORMAT_ERROR")
    assert r.json["tppMessages"][0]["path"] == header


def test_every_answer_carries_an_x_request_id(tpp):
    r = tpp.initiate(omit=("X-Request-ID",))
    assert r.status == 400 and re.fullmatch(r"[0-9a-f-]{36}", r.headers["x-request-id"])


def test_refuses_a_psu_id_that_is_not_signed(tpp):
    pay = tpp.call("POST", "/psd2/v1/payments/sepa-credit-transfers", _body(), {"TPP-Redirect-Preferred": "false"})
    href = path_of(pay.json["_links"]["startAuthorisationWithPsuIdentification"]["href"])
    r = tpp.call("POST", href, {}, {"PSU-ID": "psu-4711"}, signed_headers=["Digest", "X-Request-ID", "Date"])
    refused(r, 401, "SIGNATURE_INVALID")


def test_accepts_an_upper_case_serial_and_request_target_in_the_signature(tpp, pki):
    kid = f"SN={pki['cert'].serial_number:X},CA=" + pki["cert"].issuer.rfc4514_string().replace(" ", "%20")
    assert tpp.initiate(key_id_value=kid).status == 201
    pay = tpp.initiate()
    # (request-target) is not in the BG base set, but a TPP may sign it too
    status_path = path_of(pay.json["_links"]["status"]["href"])
    h = {"X-Request-ID": str(uuid.uuid4()), "Date": email.utils.formatdate(usegmt=True),
         "Digest": "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
         "TPP-Signature-Certificate": base64.b64encode(pki["cert"].public_bytes(serialization.Encoding.DER)).decode()}
    signing = f"(request-target): get {status_path}\ndigest: {h['Digest']}\nx-request-id: {h['X-Request-ID']}\ndate: {h['Date']}"
    sig = base64.b64encode(pki["key"].sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()
    h["Signature"] = (f'keyId="{key_id(pki["cert"])}",algorithm="rsa-sha256",'
                      f'headers="(request-target) digest x-request-id date",signature="{sig}"')
    r = raw_http(tpp.port, "GET", status_path, h)
    assert r.status == 200 and r.json["transactionStatus"] == "RCVD", r


def test_reads_a_chunked_body(tpp, pki):
    body = json.dumps(_body()).encode()
    h = {"X-Request-ID": str(uuid.uuid4()), "Date": email.utils.formatdate(usegmt=True),
         "Digest": "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode(),
         "TPP-Signature-Certificate": base64.b64encode(pki["cert"].public_bytes(serialization.Encoding.DER)).decode(),
         "TPP-Redirect-URI": REDIRECT, "PSU-IP-Address": "2001:db8::1", "Content-Type": "application/json"}
    names = ["Digest", "X-Request-ID", "TPP-Redirect-URI", "Date"]
    signing = "\n".join(f"{n.lower()}: {h[n]}" for n in names)
    sig = base64.b64encode(pki["key"].sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()
    h["Signature"] = (f'keyId="{key_id(pki["cert"])}",algorithm="rsa-sha256",'
                      f'headers="{" ".join(n.lower() for n in names)}",signature="{sig}"')
    conn = http.client.HTTPConnection("127.0.0.1", tpp.port, timeout=10)
    conn.request("POST", "/psd2/v1/payments/sepa-credit-transfers", body=iter([body[:20], body[20:]]),
                 headers=h, encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 201, r.read()
    conn.close()


def test_make_test_pki_gives_a_tpp_the_bank_accepts(tmp_path):
    out = subprocess.run([sys.executable, str(HERE / "aspsp.py"), "--make-test-pki", str(tmp_path)],
                         capture_output=True, text=True, check=True)
    assert "keyId" in out.stdout
    key = serialization.load_pem_private_key((tmp_path / "tpp-key.pem").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((tmp_path / "tpp-cert.pem").read_bytes())
    proc = subprocess.Popen([sys.executable, str(HERE / "aspsp.py"), "--port", "0", "--tpp-ca",
                             str(tmp_path / "ca.pem")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r":(\d+)/psd2", proc.stdout.readline()).group(1))
        assert Tpp(port, key, cert).initiate().status == 201
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_cancelled_payment_can_no_longer_be_signed(tpp):
    pay, start = decoupled_start(tpp)
    r = tpp.call("DELETE", path_of(pay.json["_links"]["self"]["href"]))
    assert r.status == 204, r
    approve = raw_http(tpp.port, "POST", f"/admin/decoupled/{start.json['authorisationId']}", {}, b'{"approve": true}')
    assert approve.status == 409
    assert sca_status(tpp, start.json["_links"]["scaStatus"]["href"]) == "failed"
    assert status_of(tpp, pay).json["transactionStatus"] == "CANC"
