#!/usr/bin/env python3
"""An independent, strict Berlin Group NextGenPSD2 ASPSP (bank) for payment initiation (PIS).

Written from the Berlin Group OpenAPI 1.3.12 (specs/berlin-group/) and the protocol notes,
without any of pisgate's code, so that pisgate's Berlin Group adapter can be proven against
something it did not write. It refuses what a strict bank refuses (see README.md beside this
file), validates every request body and every answer it gives against the vendored OpenAPI
(an answer that does not conform is never sent: the server answers 500 and records the
violation at /admin/selfcheck), and plays scenarios chosen by the payment.

It must never be used as a real bank: it keeps everything in memory, speaks plain HTTP and
its admin paths are unauthenticated.

Run: python3 aspsp.py --port 8091 --tpp-ca ca.pem [--base-path /psd2] [--max-clock-skew 120]
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import email.utils
import hashlib
import html
import ipaddress
import json
import re
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from openapi_schema_validator import OAS30Validator

SPEC_FILE = (
    Path(__file__).resolve().parents[2] / "specs" / "berlin-group" / "psd2-api_v1.3.12-2022-07-06.yaml"
)

SERVICES = ("payments", "periodic-payments")
SPEC_SERVICES = ("payments", "bulk-payments", "periodic-payments")
DEFAULT_PRODUCTS = ("sepa-credit-transfers", "instant-sepa-credit-transfers")
FINAL_TX = ("ACSC", "ACCC", "RJCT", "CANC")
FINAL_SCA = ("finalised", "failed", "exempted")

# Scenarios: chosen by a marker in creditorName (case-insensitive) or by the amount (EUR).
# "after_sca" is the sequence of transaction statuses after a finalised SCA: each read of the
# status (or of the payment) returns the current one and then moves one step on; the last one
# stays.
SCENARIOS = {
    "acsc-after-acsp": {"amount": None, "after_sca": ["ACSP", "ACSC"],
                        "text": "ACSP on the first read after SCA, then ACSC (the default)"},
    "acsp-then-rjct": {"amount": "77.01", "after_sca": ["ACSP", "RJCT"],
                       "text": "ACSP on the first read after SCA, then RJCT (funds at execution)"},
    "acsp-forever": {"amount": "77.02", "after_sca": ["ACSP"],
                     "text": "ACSP after SCA, for good (never ACSC)"},
    "pdng-then-acsc": {"amount": "77.03", "after_sca": ["PDNG", "ACSC"],
                       "text": "PDNG on the first read after SCA, then ACSC"},
    "unknown-until-opened": {"amount": "77.04", "after_sca": ["ACSP", "ACSC"],
                             "text": "404 RESOURCE_UNKNOWN on every read of the payment until the "
                                     "PSU opens the SCA page; then as the default"},
    "decoupled-timeout": {"amount": "77.05", "after_sca": ["ACSP", "ACSC"],
                          "text": "decoupled SCA that the PSU never approves: scaStatus failed and "
                                  "RJCT after --decoupled-timeout seconds (admin approval refused)"},
    "cancel-needs-sca": {"amount": "77.06", "after_sca": ["ACSP", "ACSC"],
                         "text": "DELETE of the unsigned payment answers 202 and needs a "
                                 "cancellation authorisation (redirect) before CANC"},
}

IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GI": 23, "GR": 27, "HR": 21, "HU": 28,
    "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31,
    "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "VA": 22,
}

IMF_FIXDATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} GMT$"
)
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SIG_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*"([^"]*)"\s*(?:,|$)')


class Refusal(Exception):
    """A request the bank refuses: HTTP status, tppMessages code, text."""

    def __init__(self, status: int, code: str | None, text: str = "", path: str | None = None):
        super().__init__(f"{status} {code}: {text}")
        self.status, self.code, self.text, self.path = status, code, text, path


class SelfCheckFailure(Exception):
    pass


def iban_valid(iban: str) -> bool:
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{1,30}", iban):
        return False
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    digits = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


# ---------------------------------------------------------------------------------------------
# The OpenAPI document
# ---------------------------------------------------------------------------------------------
class Spec:
    def __init__(self, path: Path):
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with open(path, encoding="utf-8") as f:
            self.doc = yaml.load(f, Loader=loader)
        self.components = self.doc["components"]
        self._validators: dict[str, OAS30Validator] = {}

    def _deref(self, node):
        while isinstance(node, dict) and "$ref" in node:
            parts = node["$ref"].lstrip("#/").split("/")
            node = self.doc
            for p in parts:
                node = node[p]
        return node

    def validator(self, schema: dict) -> OAS30Validator:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._validators:
            root = dict(schema)
            root["components"] = self.components  # "#/components/..." resolves in this root
            self._validators[key] = OAS30Validator(root, format_checker=OAS30Validator.FORMAT_CHECKER)
        return self._validators[key]

    def named(self, name: str) -> dict:
        return {"$ref": f"#/components/schemas/{name}"}

    def errors(self, schema: dict, instance) -> list[str]:
        out = []
        for e in sorted(self.validator(schema).iter_errors(instance), key=lambda e: list(e.path)):
            where = "/".join(str(p) for p in e.path) or "(body)"
            out.append(f"{where}: {e.message[:200]}")
        return out

    def header_params(self, template: str, method: str) -> list[dict]:
        op = self.doc["paths"][template][method.lower()]
        params = [self._deref(p) for p in op.get("parameters", [])]
        return [p for p in params if p.get("in") == "header"]

    def response(self, template: str, method: str, status: int) -> dict | None:
        op = self.doc["paths"][template][method.lower()]
        resp = op["responses"].get(str(status))
        if resp is None:
            raise SelfCheckFailure(f"{method} {template} has no {status} response in the spec")
        return self._deref(resp)

    def unknown_fields(self, schema, instance, where="") -> list[str]:
        """Fields the schema does not define (the spec's objects are open; this bank is strict)."""
        schema = self._deref(schema)
        out = []
        if isinstance(instance, dict) and isinstance(schema, dict) and "properties" in schema:
            props = schema["properties"]
            for k, v in instance.items():
                if k not in props:
                    out.append(f"{where}{k}")
                else:
                    out += self.unknown_fields(props[k], v, f"{where}{k}.")
        elif isinstance(instance, list) and isinstance(schema, dict) and "items" in schema:
            for i, v in enumerate(instance):
                out += self.unknown_fields(schema["items"], v, f"{where}{i}.")
        return out


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------
class Authorisation:
    def __init__(self, payment, kind: str, approach: str, psu_id: str | None = None):
        self.id = "auth-" + uuid.uuid4().hex[:20]
        self.payment = payment
        self.kind = kind  # "payment" or "cancellation"
        self.approach = approach  # "REDIRECT" or "DECOUPLED"
        self.sca_status = "received"
        self.psu_id = psu_id
        self.started_at: float | None = None

    def view(self):
        return {"authorisationId": self.id, "kind": self.kind, "approach": self.approach,
                "scaStatus": self.sca_status, "psuId": self.psu_id}


class Payment:
    def __init__(self, service, product, body, scenario, approach, redirect_uri, nok_uri, psu_id, tpp):
        self.id = "pay-" + uuid.uuid4().hex[:24]
        self.service, self.product, self.body = service, product, body
        self.scenario = scenario
        self.approach = approach
        self.redirect_uri, self.nok_uri, self.psu_id = redirect_uri, nok_uri, psu_id
        self.tpp = tpp
        self.status = "RCVD"
        self.after_sca: list[str] | None = None
        self.page_opened = False
        self.auths: list[Authorisation] = []
        self.cancel_auths: list[Authorisation] = []
        self.signed = False
        self.cancel_pending = False

    def hidden(self) -> bool:
        return self.scenario == "unknown-until-opened" and not self.page_opened

    def read_status(self) -> str:
        """The status a read returns; moves the after-SCA sequence on by one."""
        if self.after_sca:
            self.status = self.after_sca.pop(0) if len(self.after_sca) > 1 else self.after_sca[0]
        return self.status

    def view(self):
        return {"paymentId": self.id, "paymentService": self.service, "paymentProduct": self.product,
                "scenario": self.scenario, "approach": self.approach, "transactionStatus": self.status,
                "pendingAfterSca": list(self.after_sca or []), "signed": self.signed,
                "pageOpened": self.page_opened, "creditorName": self.body.get("creditorName"),
                "instructedAmount": self.body.get("instructedAmount"),
                "authorisations": [a.view() for a in self.auths],
                "cancellationAuthorisations": [a.view() for a in self.cancel_auths]}


class Bank:
    def __init__(self, args):
        self.args = args
        self.spec = Spec(Path(args.spec))
        self.cas = []
        for ca_file in args.tpp_ca:
            self.cas += x509.load_pem_x509_certificates(Path(ca_file).read_bytes())
        self.products = tuple(p.strip() for p in args.products.split(",") if p.strip())
        self.lock = threading.RLock()
        self.payments: dict[str, Payment] = {}
        self.auths: dict[str, Authorisation] = {}
        self.log: list[dict] = []
        self.selfcheck_failures: list[str] = []
        self.request_ids: set[str] = set()

    def reset(self):
        with self.lock:
            self.request_ids.clear()
            self.payments.clear()
            self.auths.clear()
            self.log.clear()
            self.selfcheck_failures.clear()

    def tick(self, auth: Authorisation):
        """Decoupled timeout: an unapproved decoupled SCA fails after --decoupled-timeout."""
        if (auth.approach == "DECOUPLED" and auth.sca_status == "started" and auth.started_at is not None
                and time.monotonic() - auth.started_at >= self.args.decoupled_timeout):
            self.finish(auth, approve=False)

    def finish(self, auth: Authorisation, approve: bool):
        p = auth.payment
        if auth.sca_status in FINAL_SCA:
            return
        if p.status in FINAL_TX and (auth.kind == "cancellation" or p.status in ("CANC", "RJCT")):
            auth.sca_status = "failed"  # too late: the payment is final (e.g. cancelled meanwhile)
            return
        auth.sca_status = "finalised" if approve else "failed"
        if auth.kind == "payment":
            if approve:
                p.signed = True
                p.after_sca = list(SCENARIOS[p.scenario]["after_sca"])
                p.status = "ACTC"
            else:
                p.status = "RJCT"
                p.after_sca = None
        else:
            if approve:
                p.status = "CANC"
                p.after_sca = None


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------
ROUTES = [
    # (regex after base path, kind, spec template)
    (r"^/v1/(?P<service>[^/]+)/(?P<product>[^/]+)$", "initiate", "/v1/{payment-service}/{payment-product}"),
    (r"^/v1/(?P<service>[^/]+)/(?P<product>[^/]+)/(?P<pid>[^/]+)$", "payment",
     "/v1/{payment-service}/{payment-product}/{paymentId}"),
    (r"^/v1/(?P<service>[^/]+)/(?P<product>[^/]+)/(?P<pid>[^/]+)/status$", "status",
     "/v1/{payment-service}/{payment-product}/{paymentId}/status"),
    (r"^/v1/(?P<service>[^/]+)/(?P<product>[^/]+)/(?P<pid>[^/]+)/authorisations$", "auths",
     "/v1/{payment-service}/{payment-product}/{paymentId}/authorisations"),
    (r"^/v1/(?P<service>[^/]+)/(?P<product>[^/]+)/(?P<pid>[^/]+)/authorisations/(?P<aid>[^/]+)$", "auth",
     "/v1/{payment-service}/{payment-product}/{paymentId}/authorisations/{authorisationId}"),
    (r"^/v1/(?P<service>[^/]+)/(?P<product>[^/]+)/(?P<pid>[^/]+)/cancellation-authorisations$", "cauths",
     "/v1/{payment-service}/{payment-product}/{paymentId}/cancellation-authorisations"),
    (r"^/v1/(?P<service>[^/]+)/(?P<product>[^/]+)/(?P<pid>[^/]+)/cancellation-authorisations/(?P<aid>[^/]+)$",
     "cauth", "/v1/{payment-service}/{payment-product}/{paymentId}/cancellation-authorisations/{authorisationId}"),
]
ALLOWED = {"initiate": ("POST",), "payment": ("GET", "DELETE"), "status": ("GET",),
           "auths": ("POST", "GET"), "auth": ("GET",), "cauths": ("POST", "GET"), "cauth": ("GET",)}


class Handler(BaseHTTPRequestHandler):
    server_version = "bg-aspsp/1"
    protocol_version = "HTTP/1.1"
    bank: Bank  # set on the class by main()

    def log_message(self, fmt, *a):  # quiet; the request log is at /admin/requests
        if self.bank.args.verbose:
            sys.stderr.write("bg-aspsp: " + (fmt % a) + "\n")

    # -- plumbing --------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, status: int, body: bytes | None, headers: dict[str, str], ctype="application/json"):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _base_url(self) -> str:
        return self.bank.args.public_url or f"http://{self.headers.get('Host') or '127.0.0.1'}"

    def _api(self, path: str) -> str:
        return self._base_url() + self.bank.args.base_path + path

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_PATCH(self):
        self._dispatch()

    def _dispatch(self):
        try:
            self._dispatch_inner()
        except Exception as e:  # a bug of this bank must be loud, never a silent reset
            import traceback
            text = f"INTERNAL ERROR on {self.command} {self.path}: {e!r}"
            sys.stderr.write("bg-aspsp: " + text + "\n" + traceback.format_exc())
            with self.bank.lock:
                self.bank.selfcheck_failures.append(text)
            try:
                self._send(500, None, {"X-Request-ID": str(uuid.uuid4())})
            except OSError:
                pass

    def _dispatch_inner(self):
        url = urllib.parse.urlsplit(self.path)
        body = self._read_body()
        bank = self.bank
        if url.path.startswith("/admin/"):
            return self._admin(url, body)
        if url.path.startswith("/sca/"):
            return self._sca_page(url, body)
        entry = {"at": dt.datetime.now(dt.timezone.utc).isoformat(), "method": self.command,
                 "path": self.path, "headers": {k: v for k, v in self.headers.items()},
                 "body": body.decode("utf-8", "replace")}
        rid = self.headers.get("X-Request-ID")
        # The spec makes X-Request-ID a required response header: echo it, or (when the request
        # had none or a bad one) answer with a fresh one.
        out_headers = {"X-Request-ID": rid if rid and UUID_RE.match(rid) else str(uuid.uuid4())}
        template = None
        try:
            base = bank.args.base_path
            if not url.path.startswith(base + "/v1/"):
                raise Refusal(404, "RESOURCE_UNKNOWN", "no such resource")
            sub = url.path[len(base):]
            m = kind = None
            for rx, k, tpl in ROUTES:
                m = re.match(rx, sub)
                if m:
                    kind, template = k, tpl
                    break
            if not m:
                raise Refusal(404, "RESOURCE_UNKNOWN", "no such resource")
            params = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()}
            with bank.lock:
                status, payload, extra = self._api_call(kind, template, params, body)
            out_headers.update(extra)
            self._reply(entry, template, status, payload, out_headers)
        except Refusal as r:
            payload = None
            if r.code is not None:
                msg = {"category": "ERROR", "code": r.code}
                if r.path:
                    msg["path"] = r.path
                if r.text:
                    msg["text"] = r.text[:500]
                payload = {"tppMessages": [msg]}
            self._reply(entry, template, r.status, payload, out_headers)

    def _reply(self, entry, template, status, payload, headers):
        bank = self.bank
        body = None if payload is None else json.dumps(payload).encode()
        if template is not None:
            problems = self._selfcheck(template, status, payload) + self._selfcheck_headers(
                template, status, headers)
            if problems:
                text = f"SELF-CHECK FAILED: {self.command} {template} {status}: " + "; ".join(problems)
                sys.stderr.write("bg-aspsp: " + text + "\n")
                with bank.lock:
                    bank.selfcheck_failures.append(text)
                status, body = 500, None
        entry.update({"status": status, "responseBody": payload if body is not None else None,
                      "code": (payload or {}).get("tppMessages", [{}])[0].get("code")
                      if isinstance(payload, dict) and payload.get("tppMessages") else None})
        with bank.lock:
            bank.log.append(entry)
        self._send(status, body, headers)

    def _selfcheck_headers(self, template, status, headers) -> list[str]:
        spec = self.bank.spec
        try:
            resp = spec.response(template, self.command, status)
        except SelfCheckFailure:
            return []  # reported by _selfcheck
        out = []
        for name, h in (resp.get("headers") or {}).items():
            h = spec._deref(h)
            v = headers.get(name)
            if v is None:
                if h.get("required"):
                    out.append(f"response header {name} is required")
                continue
            errs = spec.errors(h.get("schema", {}), v)
            out += [f"response header {name}: {e}" for e in errs]
        for name in headers:
            if name not in (resp.get("headers") or {}):
                out.append(f"response header {name} is not in the spec for {status}")
        return out

    def _selfcheck(self, template, status, payload) -> list[str]:
        spec = self.bank.spec
        try:
            resp = spec.response(template, self.command, status)
        except SelfCheckFailure as e:
            return [str(e)]
        content = resp.get("content")
        if payload is None:
            if content and status < 400:
                return [f"the spec defines a body for {status} but none was sent"]
            return []
        if not content or "application/json" not in content:
            return [f"the spec defines no JSON body for {status}"]
        schema = content["application/json"]["schema"]
        if template == "/v1/{payment-service}/{payment-product}/{paymentId}" and status == 200:
            # The spec's oneOf is ambiguous for periodic bodies (its objects are open): check
            # against the branch of this payment service.
            schema = spec.named("periodicPaymentInitiationWithStatusResponse"
                                if "startDate" in payload else "paymentInitiationWithStatusResponse")
        return spec.errors(schema, payload)

    # -- security checks -------------------------------------------------------------------
    def _check_common(self, body: bytes, template: str):
        h = self.headers
        rid = h.get("X-Request-ID")
        if rid is None:
            raise Refusal(400, "FORMAT_ERROR", "header X-Request-ID is missing", "X-Request-ID")
        if not UUID_RE.match(rid):
            raise Refusal(400, "FORMAT_ERROR", "header X-Request-ID is not a UUID", "X-Request-ID")
        self._check_spec_headers(template)
        accept = h.get("Accept")
        if accept and not any(a.split(";")[0].strip() in ("application/json", "*/*", "application/*")
                              for a in accept.split(",")):
            raise Refusal(406, None)
        return self._check_signature(body)

    def _check_spec_headers(self, template: str):
        """Every header parameter the spec defines for this operation: present when required,
        and of the spec's type, format, enum and pattern when present."""
        for p in self.bank.spec.header_params(template, self.command):
            name, schema = p["name"], self.bank.spec._deref(p.get("schema", {}))
            v = self.headers.get(name)
            if v is None:
                if p.get("required"):
                    raise Refusal(400, "FORMAT_ERROR", f"header {name} is missing", name)
                continue
            v = v.strip()
            ok = True
            if schema.get("type") == "boolean":
                ok = v in ("true", "false")
            fmt = schema.get("format")
            if fmt == "uuid":
                ok = ok and bool(UUID_RE.match(v))
            elif fmt == "ipv4":
                # The spec says ipv4; like the reference ASPSP, this bank takes IPv6 too.
                try:
                    ipaddress.ip_address(v)
                except ValueError:
                    ok = False
            elif fmt in ("uri", "url"):
                u = urllib.parse.urlsplit(v)
                ok = ok and u.scheme in ("http", "https") and bool(u.netloc)
            if "enum" in schema:
                ok = ok and v in schema["enum"]
            if "pattern" in schema:
                ok = ok and re.search(schema["pattern"], v) is not None
            if not ok:
                raise Refusal(400, "FORMAT_ERROR", f"header {name} is not valid", name)

    def _check_signature(self, body: bytes):
        h, args = self.headers, self.bank.args
        sig = h.get("Signature")
        if sig is None:
            raise Refusal(401, "SIGNATURE_MISSING", "header Signature is missing", "Signature")
        for name in ("Digest", "Date"):
            if h.get(name) is None:
                raise Refusal(400, "FORMAT_ERROR", f"header {name} is missing (required with Signature)", name)
        date = h["Date"]
        if not IMF_FIXDATE.match(date):
            raise Refusal(400, "FORMAT_ERROR", "header Date is not an RFC 7231 IMF-fixdate", "Date")
        when = email.utils.parsedate_to_datetime(date)
        skew = abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds())
        if skew > args.max_clock_skew:
            raise Refusal(400, "TIMESTAMP_INVALID", f"header Date is {int(skew)} s away from the bank's clock", "Date")
        cert_b64 = h.get("TPP-Signature-Certificate")
        if cert_b64 is None:
            raise Refusal(401, "CERTIFICATE_MISSING", "header TPP-Signature-Certificate is missing")
        cert = self._load_cert(cert_b64)
        # keyId, algorithm, headers, signature
        params = {}
        pos = 0
        while pos < len(sig):
            m = SIG_PARAM.match(sig, pos)
            if not m:
                raise Refusal(401, "SIGNATURE_INVALID", "header Signature is malformed", "Signature")
            params[m.group(1)] = m.group(2)
            pos = m.end()
        for p in ("keyId", "headers", "signature"):
            if p not in params:
                raise Refusal(401, "SIGNATURE_INVALID", f"Signature has no {p}", "Signature")
        if params.get("algorithm", "rsa-sha256").lower() != "rsa-sha256":
            raise Refusal(401, "SIGNATURE_INVALID", "Signature algorithm must be rsa-sha256", "Signature")
        self._check_key_id(params["keyId"], cert)
        listed = params["headers"].lower().split()
        required = ["digest", "x-request-id", "date"] + [
            n for n in ("psu-id", "psu-corporate-id", "tpp-redirect-uri") if h.get(n) is not None]
        missing = [n for n in required if n not in listed]
        if missing:
            raise Refusal(401, "SIGNATURE_INVALID", "Signature headers lack " + ", ".join(missing), "Signature")
        self._check_digest(h["Digest"], body)
        lines = []
        for n in listed:
            if n == "(request-target)":
                lines.append(f"(request-target): {self.command.lower()} {self.path}")
                continue
            v = h.get(n)
            if v is None:
                raise Refusal(401, "SIGNATURE_INVALID", f"signed header {n} is not in the request", "Signature")
            lines.append(f"{n}: {v.strip()}")
        try:
            signature = base64.b64decode(params["signature"], validate=True)
            key = cert.public_key()
            if not isinstance(key, rsa.RSAPublicKey):
                raise Refusal(401, "CERTIFICATE_INVALID", "the certificate's key is not RSA")
            key.verify(signature, "\n".join(lines).encode(), padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            raise Refusal(401, "SIGNATURE_INVALID", "the signature does not verify", "Signature") from None
        return cert

    def _load_cert(self, b64: str) -> x509.Certificate:
        try:
            raw = base64.b64decode(b64.strip(), validate=True)
            cert = (x509.load_pem_x509_certificate(raw) if raw.lstrip().startswith(b"-----BEGIN")
                    else x509.load_der_x509_certificate(raw))
        except ValueError:
            raise Refusal(401, "CERTIFICATE_INVALID", "TPP-Signature-Certificate is not a base64 certificate") from None
        now = dt.datetime.now(dt.timezone.utc)
        issued = False
        for ca in self.bank.cas:
            try:
                cert.verify_directly_issued_by(ca)
                issued = True
                break
            except (ValueError, TypeError, InvalidSignature):
                continue
        if not issued:
            raise Refusal(401, "CERTIFICATE_INVALID", "the certificate is not issued by a trusted CA")
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            raise Refusal(401, "CERTIFICATE_EXPIRED", "the certificate is not valid now")
        return cert

    def _check_key_id(self, key_id: str, cert: x509.Certificate):
        m = re.fullmatch(r"SN=([0-9A-Fa-f]+),CA=(.+)", key_id)
        if not m:
            raise Refusal(401, "SIGNATURE_INVALID", "keyId is not SN=<serial hex>,CA=<issuer DN>", "Signature")
        if int(m.group(1), 16) != cert.serial_number:
            raise Refusal(401, "SIGNATURE_INVALID", "keyId serial is not the certificate's", "Signature")
        if urllib.parse.unquote(m.group(2)) != cert.issuer.rfc4514_string():
            raise Refusal(401, "SIGNATURE_INVALID", "keyId CA is not the certificate's issuer", "Signature")

    def _check_digest(self, header: str, body: bytes):
        algos = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
        seen = False
        for part in header.split(","):
            name, _, value = part.strip().partition("=")
            fn = algos.get(name.lower())
            if fn is None:
                continue
            seen = True
            if base64.b64encode(fn(body).digest()).decode() != value:
                raise Refusal(400, "FORMAT_ERROR", "header Digest does not match the body", "Digest")
        if not seen:
            raise Refusal(400, "FORMAT_ERROR", "header Digest has no SHA-256 or SHA-512 value", "Digest")

    # -- API -------------------------------------------------------------------------------
    def _api_call(self, kind, template, params, body):
        bank = self.bank
        if self.command.lower() not in bank.spec.doc["paths"][template]:
            raise Refusal(405, "SERVICE_INVALID", f"{self.command} is not a method of this resource")
        cert = self._check_common(body, template)
        rid = self.headers["X-Request-ID"].lower()
        if rid in bank.request_ids and not bank.args.allow_request_id_reuse:
            raise Refusal(400, "FORMAT_ERROR", "X-Request-ID was already used; it must be unique to the call",
                          "X-Request-ID")
        bank.request_ids.add(rid)
        tpp = cert.fingerprint(hashes.SHA256()).hex()
        service, product = params["service"], params["product"]
        if service not in SERVICES:
            raise Refusal(400, "PARAMETER_NOT_SUPPORTED", f"payment-service {service} is not supported")
        if product not in bank.products:
            raise Refusal(404, "PRODUCT_UNKNOWN", f"payment-product {product} is not offered")
        if self.command not in ALLOWED[kind]:
            raise Refusal(405, "SERVICE_INVALID", f"{self.command} is not offered on this resource")
        if kind == "initiate":
            return self._initiate(service, product, body, tpp)
        p = bank.payments.get(params["pid"])
        if p is None:
            raise Refusal(404, "RESOURCE_UNKNOWN", "no such payment", "paymentId")
        if p.tpp != tpp:
            raise Refusal(403, "RESOURCE_UNKNOWN", "the payment belongs to another TPP", "paymentId")
        if p.service != service:
            raise Refusal(405, "SERVICE_INVALID", "the payment is of another payment-service")
        if p.product != product:
            raise Refusal(403, "PRODUCT_INVALID", "the payment is of another payment-product")
        for a in p.auths + p.cancel_auths:
            bank.tick(a)
        if p.hidden():
            raise Refusal(404, "RESOURCE_UNKNOWN", "the payment is still being created", "paymentId")
        links_base = f"/v1/{service}/{product}/{p.id}"
        if kind == "status":
            return 200, {"transactionStatus": p.read_status()}, {}
        if kind == "payment" and self.command == "GET":
            return 200, dict(p.body, transactionStatus=p.read_status()), {}
        if kind == "payment":
            return self._cancel(p, links_base)
        if kind in ("auths", "cauths"):
            lst = p.auths if kind == "auths" else p.cancel_auths
            if self.command == "GET":
                return 200, {"authorisationIds": [a.id for a in lst]}, {}
            return self._start_auth(p, kind, body, links_base)
        auth = bank.auths.get(params["aid"])
        want = "payment" if kind == "auth" else "cancellation"
        if auth is None or auth.payment is not p or auth.kind != want:
            raise Refusal(404, "RESOURCE_UNKNOWN", "no such authorisation", "authorisationId")
        return 200, {"scaStatus": auth.sca_status}, {}

    def _json_body(self, body: bytes, allow_empty=False):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not body and allow_empty:
            return {}
        if ctype != "application/json":
            raise Refusal(415, None)
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise Refusal(400, "FORMAT_ERROR", "the body is not JSON") from None
        if not isinstance(value, dict):
            raise Refusal(400, "FORMAT_ERROR", "the body is not a JSON object")
        return value

    def _initiate(self, service, product, raw, tpp):
        bank, h = self.bank, self.headers
        ip = h.get("PSU-IP-Address")
        if ip is None:
            raise Refusal(400, "FORMAT_ERROR", "header PSU-IP-Address is missing", "PSU-IP-Address")
        try:
            ipaddress.ip_address(ip.strip())
        except ValueError:
            raise Refusal(400, "FORMAT_ERROR", "header PSU-IP-Address is not an IP address", "PSU-IP-Address") from None
        body = self._json_body(raw)
        schema_name = "paymentInitiation_json" if service == "payments" else "periodicPaymentInitiation_json"
        errs = bank.spec.errors(bank.spec.named(schema_name), body)
        if errs:
            raise Refusal(400, "FORMAT_ERROR", "; ".join(errs))
        unknown = bank.spec.unknown_fields(bank.spec.named(schema_name), body)
        if unknown:
            raise Refusal(400, "FORMAT_ERROR", "unknown field " + ", ".join(unknown), unknown[0])
        self._check_payment_semantics(service, body)
        # SCA approach
        redirect_pref = (h.get("TPP-Redirect-Preferred") or "").lower()
        decoupled_pref = (h.get("TPP-Decoupled-Preferred") or "").lower()
        approach = "DECOUPLED" if redirect_pref == "false" or decoupled_pref == "true" else "REDIRECT"
        redirect_uri, nok_uri = h.get("TPP-Redirect-URI"), h.get("TPP-Nok-Redirect-URI")
        if approach == "REDIRECT" and not redirect_uri:
            raise Refusal(400, "FORMAT_ERROR", "header TPP-Redirect-URI is required for redirect SCA",
                          "TPP-Redirect-URI")
        for name, v in (("TPP-Redirect-URI", redirect_uri), ("TPP-Nok-Redirect-URI", nok_uri)):
            if v is not None and urllib.parse.urlsplit(v).scheme not in ("http", "https"):
                raise Refusal(400, "FORMAT_ERROR", f"header {name} is not an http(s) URI", name)
        scenario = self._scenario(body)
        p = Payment(service, product, body, scenario, approach, redirect_uri, nok_uri, h.get("PSU-ID"), tpp)
        bank.payments[p.id] = p
        base = f"/v1/{service}/{product}/{p.id}"
        links = {"self": {"href": self._api(base)}, "status": {"href": self._api(base + "/status")}}
        explicit = (h.get("TPP-Explicit-Authorisation-Preferred") or "").lower() == "true"
        if approach == "DECOUPLED":
            links["startAuthorisationWithPsuIdentification"] = {"href": self._api(base + "/authorisations")}
        elif explicit:
            links["startAuthorisation"] = {"href": self._api(base + "/authorisations")}
        else:
            a = Authorisation(p, "payment", "REDIRECT")
            p.auths.append(a)
            bank.auths[a.id] = a
            links["scaRedirect"] = {"href": self._base_url() + "/sca/" + a.id}
            links["scaStatus"] = {"href": self._api(base + "/authorisations/" + a.id)}
        payload = {"transactionStatus": "RCVD", "paymentId": p.id, "_links": links}
        return 201, payload, {"Location": self._api(base), "ASPSP-SCA-Approach": approach}

    def _check_payment_semantics(self, service, body):
        for side in ("debtorAccount", "creditorAccount"):
            acc = body[side]
            if "iban" not in acc:
                raise Refusal(400, "FORMAT_ERROR", f"{side} needs an iban for this product", side)
            if not iban_valid(acc["iban"]):
                raise Refusal(400, "FORMAT_ERROR", f"{side}.iban is not a valid IBAN", f"{side}.iban")
            if acc.get("currency", "EUR") != "EUR":
                raise Refusal(400, "FORMAT_ERROR", f"{side}.currency must be EUR", f"{side}.currency")
        amt = body["instructedAmount"]
        if amt["currency"] != "EUR":
            raise Refusal(400, "FORMAT_ERROR", "instructedAmount.currency must be EUR for SEPA",
                          "instructedAmount.currency")
        if not re.fullmatch(r"[0-9]{1,14}(\.[0-9]{1,2})?", amt["amount"]) or float(amt["amount"]) <= 0:
            raise Refusal(400, "FORMAT_ERROR", "instructedAmount.amount must be a positive decimal string "
                          "with at most 2 decimals", "instructedAmount.amount")
        if "creditorAgent" in body and not re.fullmatch(r"[A-Z]{6}[A-Z2-9][A-NP-Z0-9]([A-Z0-9]{3})?",
                                                         body["creditorAgent"]):
            raise Refusal(400, "FORMAT_ERROR", "creditorAgent is not a BIC", "creditorAgent")
        addr = body.get("creditorAddress")
        if addr is not None and not re.fullmatch(r"[A-Z]{2}", addr.get("country", "")):
            raise Refusal(400, "FORMAT_ERROR", "creditorAddress.country is not a country code",
                          "creditorAddress.country")
        today = dt.datetime.now(dt.timezone.utc).date()

        def day(field):
            try:
                return dt.date.fromisoformat(body[field])
            except ValueError:
                raise Refusal(400, "FORMAT_ERROR", f"{field} is not a date", field) from None

        if service == "payments" and "requestedExecutionDate" in body:
            if day("requestedExecutionDate") < today:
                raise Refusal(400, "EXECUTION_DATE_INVALID", "requestedExecutionDate is in the past",
                              "requestedExecutionDate")
        if service == "periodic-payments":
            start = day("startDate")
            if start < today:
                raise Refusal(400, "FORMAT_ERROR", "startDate is in the past", "startDate")
            if "endDate" in body and day("endDate") < start:
                raise Refusal(400, "FORMAT_ERROR", "endDate is before startDate", "endDate")
            if ("monthsOfExecution" in body) != (body["frequency"] == "MonthlyVariable"):
                raise Refusal(400, "FORMAT_ERROR", "monthsOfExecution goes with frequency MonthlyVariable only",
                              "monthsOfExecution")

    @staticmethod
    def _scenario(body) -> str:
        name = body.get("creditorName", "").lower()
        for sid in SCENARIOS:
            if sid in name:
                return sid
        amount = body["instructedAmount"]["amount"]
        for sid, s in SCENARIOS.items():
            if s["amount"] is not None and s["amount"] == amount:
                return sid
        return "acsc-after-acsp"

    def _start_auth(self, p: Payment, kind, raw, base):
        bank, h = self.bank, self.headers
        body = self._json_body(raw, allow_empty=True)
        if body:
            raise Refusal(400, "FORMAT_ERROR", "this ASPSP takes no PSU data in the body (no embedded SCA)")
        if kind == "auths":
            if p.signed or p.status in FINAL_TX or any(a.sca_status not in ("failed",) for a in p.auths):
                raise Refusal(409, "STATUS_INVALID", "the payment does not allow another authorisation")
            auth_kind, approach, lst = "payment", p.approach, p.auths
        else:
            if p.status in FINAL_TX or not p.cancel_pending or any(
                    a.sca_status not in ("failed",) for a in p.cancel_auths):
                raise Refusal(409, "STATUS_INVALID", "the payment does not allow a cancellation authorisation")
            auth_kind, approach, lst = "cancellation", "REDIRECT", p.cancel_auths
        psu_id = h.get("PSU-ID") or p.psu_id
        if approach == "DECOUPLED" and not psu_id:
            raise Refusal(400, "FORMAT_ERROR", "header PSU-ID is required for decoupled SCA", "PSU-ID")
        a = Authorisation(p, auth_kind, approach, psu_id)
        lst.append(a)
        bank.auths[a.id] = a
        sub = "/authorisations/" if auth_kind == "payment" else "/cancellation-authorisations/"
        links = {"scaStatus": {"href": self._api(base + sub + a.id)}}
        payload = {"scaStatus": "received", "authorisationId": a.id, "_links": links}
        if approach == "DECOUPLED":
            a.sca_status = "started"
            a.started_at = time.monotonic()
            payload["scaStatus"] = "started"
            payload["psuMessage"] = "Please approve the payment in your bank app."
        else:
            if auth_kind == "cancellation" and h.get("TPP-Redirect-URI"):
                p.redirect_uri, p.nok_uri = h.get("TPP-Redirect-URI"), h.get("TPP-Nok-Redirect-URI") or p.nok_uri
            if not p.redirect_uri:
                raise Refusal(400, "FORMAT_ERROR", "header TPP-Redirect-URI is required for redirect SCA",
                              "TPP-Redirect-URI")
            links["scaRedirect"] = {"href": self._base_url() + "/sca/" + a.id}
        return 201, payload, {"ASPSP-SCA-Approach": approach}  # the spec gives this 201 no Location

    def _cancel(self, p: Payment, base):
        if p.after_sca:
            p.status = p.after_sca[0]  # peek without moving on
        if p.status in FINAL_TX:
            raise Refusal(400, "RESOURCE_BLOCKED", f"the payment is final ({p.status})")
        if not p.signed and p.scenario != "cancel-needs-sca":
            p.status, p.after_sca = "CANC", None
            for a in p.auths:
                if a.sca_status not in FINAL_SCA:
                    a.sca_status = "failed"
            return 204, None, {}
        if p.signed and p.product == "instant-sepa-credit-transfers":
            raise Refusal(405, "CANCELLATION_INVALID", "an authorised instant payment cannot be cancelled")
        p.cancel_pending = True
        if self.headers.get("TPP-Redirect-URI"):
            p.redirect_uri = self.headers["TPP-Redirect-URI"]
            p.nok_uri = self.headers.get("TPP-Nok-Redirect-URI") or p.nok_uri
        links = {"self": {"href": self._api(base)}, "status": {"href": self._api(base + "/status")},
                 "startAuthorisation": {"href": self._api(base + "/cancellation-authorisations")}}
        return 202, {"transactionStatus": p.status, "_links": links}, {}

    # -- the PSU's pages -------------------------------------------------------------------
    def _sca_page(self, url, raw):
        bank = self.bank
        aid = url.path[len("/sca/"):]
        with bank.lock:
            a = bank.auths.get(aid)
            if a is None or a.approach != "REDIRECT":
                return self._send(404, b"<!doctype html><title>Unknown</title><p>No such authorisation.</p>",
                                  {}, "text/html; charset=utf-8")
            p = a.payment
            bank.tick(a)
            if self.command == "GET":
                p.page_opened = True
                if a.sca_status == "received":
                    a.sca_status = "started"
                return self._send(200, self._page(a).encode(), {"Cache-Control": "no-store"},
                                  "text/html; charset=utf-8")
            if self.command != "POST":
                return self._send(405, b"", {"Allow": "GET, POST"}, "text/plain")
            form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"))
            decision = (form.get("decision") or [""])[0]
            if decision not in ("approve", "refuse"):
                return self._send(400, b"decision must be approve or refuse", {}, "text/plain")
            p.page_opened = True
            if a.sca_status in FINAL_SCA or (a.kind == "payment" and p.status in ("CANC", "RJCT")):
                return self._send(409, self._page(a).encode(), {}, "text/html; charset=utf-8")
            bank.finish(a, decision == "approve")
            target = p.redirect_uri if decision == "approve" else (p.nok_uri or p.redirect_uri)
            bank.log.append({"at": dt.datetime.now(dt.timezone.utc).isoformat(), "method": "POST",
                             "path": self.path, "psuDecision": decision, "status": 303, "location": target})
            return self._send(303, b"", {"Location": target}, "text/plain")

    def _page(self, a: Authorisation) -> str:
        p = a.payment
        amt = p.body["instructedAmount"]
        what = "Cancel this payment?" if a.kind == "cancellation" else "Approve this payment?"
        final = a.sca_status in FINAL_SCA or (a.kind == "payment" and p.status in ("CANC", "RJCT"))
        form = "" if final else (
            f'<form method="post" action="/sca/{html.escape(a.id)}">'
            '<button name="decision" value="approve">Approve</button> '
            '<button name="decision" value="refuse">Refuse</button></form>')
        return (
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Test bank: SCA</title></head>"
            f"<body><main><h1>{what}</h1><dl>"
            f"<dt>Amount</dt><dd>{html.escape(amt['amount'])} {html.escape(amt['currency'])}</dd>"
            f"<dt>Creditor</dt><dd>{html.escape(p.body['creditorName'])}</dd>"
            f"<dt>Scenario</dt><dd>{html.escape(p.scenario)}</dd>"
            f"<dt>SCA status</dt><dd id=\"sca-status\">{html.escape(a.sca_status)}</dd></dl>{form}</main></body></html>")

    # -- admin -----------------------------------------------------------------------------
    def _admin(self, url, raw):
        bank = self.bank
        path = url.path
        with bank.lock:
            if self.command == "GET" and path == "/admin/requests":
                out = bank.log
            elif self.command == "GET" and path == "/admin/payments":
                for p in bank.payments.values():
                    for a in p.auths + p.cancel_auths:
                        bank.tick(a)
                out = [p.view() for p in bank.payments.values()]
            elif self.command == "GET" and path == "/admin/selfcheck":
                out = {"failures": bank.selfcheck_failures}
            elif self.command == "GET" and path == "/admin/scenarios":
                out = [{"id": k, "amount": v["amount"], "after_sca": v["after_sca"], "text": v["text"]}
                       for k, v in SCENARIOS.items()]
            elif self.command == "POST" and path == "/admin/reset":
                bank.reset()
                out = {"reset": True}
            elif self.command == "POST" and path.startswith("/admin/decoupled/"):
                a = bank.auths.get(path[len("/admin/decoupled/"):])
                if a is None or a.approach != "DECOUPLED":
                    return self._send(404, b'{"error":"no such decoupled authorisation"}', {})
                bank.tick(a)
                try:
                    approve = bool(json.loads(raw or b"{}").get("approve", True))
                except (ValueError, AttributeError):
                    return self._send(400, b'{"error":"body must be {\\"approve\\": true|false}"}', {})
                if a.sca_status != "started" or a.payment.scenario == "decoupled-timeout":
                    return self._send(409, json.dumps({"error": "the authorisation cannot be decided",
                                                       "scaStatus": a.sca_status}).encode(), {})
                bank.finish(a, approve)
                out = a.view()
            else:
                return self._send(404, b'{"error":"no such admin path"}', {})
            body = json.dumps(out, default=str).encode()
        return self._send(200, body, {})


def make_test_pki(directory: str, cn: str = "Test TPP QSealC") -> None:
    """Writes a test CA (ca.pem, ca-key.pem) and a QSealC-like TPP certificate issued by it
    (tpp-cert.pem, tpp-key.pem, RSA-2048) into directory, for a TPP under test (e.g. pisgate)
    and for --tpp-ca. Test material only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    def name(common, org):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                          x509.NameAttribute(NameOID.COUNTRY_NAME, "FI")])

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (x509.CertificateBuilder().subject_name(name("bg-aspsp Test CA", "Test Trust Services"))
          .issuer_name(name("bg-aspsp Test CA", "Test Trust Services")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder().subject_name(name(cn, "Test TPP")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
            .sign(ca_key, hashes.SHA256()))
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    nokey = serialization.NoEncryption()
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "ca-key.pem").write_bytes(ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, nokey))
    (d / "tpp-cert.pem").write_bytes(cert.public_bytes(pem))
    (d / "tpp-key.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, nokey))
    for f in ("ca-key.pem", "tpp-key.pem"):
        (d / f).chmod(0o600)
    print(f"keyId for {d / 'tpp-cert.pem'}: SN={cert.serial_number:x},CA="
          + cert.issuer.rfc4514_string().replace(" ", "%20"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8091)
    ap.add_argument("--make-test-pki", metavar="DIR",
                    help="write a test CA and a TPP signing certificate and key into DIR, then exit")
    ap.add_argument("--tpp-ca", action="append",
                    help="PEM file of a CA that issues TPP signing certificates (repeatable)")
    ap.add_argument("--base-path", default="/psd2", help="prefix before /v1 (default /psd2)")
    ap.add_argument("--public-url", default=None, help="scheme://host:port used in links (default: from Host)")
    ap.add_argument("--products", default=",".join(DEFAULT_PRODUCTS))
    ap.add_argument("--max-clock-skew", type=float, default=120.0, help="seconds a Date may be off")
    ap.add_argument("--decoupled-timeout", type=float, default=30.0, help="seconds the PSU has to approve")
    ap.add_argument("--allow-request-id-reuse", action="store_true",
                    help="accept an X-Request-ID already seen (default: 400 FORMAT_ERROR)")
    ap.add_argument("--spec", default=str(SPEC_FILE))
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.make_test_pki:
        make_test_pki(args.make_test_pki)
        return
    if not args.tpp_ca:
        ap.error("--tpp-ca is required")
    args.base_path = args.base_path.rstrip("/")
    Handler.bank = Bank(args)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"bg-aspsp: listening on http://{args.host}:{server.server_address[1]}{args.base_path}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
