#!/usr/bin/env python3
"""A small demo shop in front of a local pisgate: what a merchant's checkout backend does.

Started by scripts/run.sh (Python's standard library only). It is a merchant's side, done
the way pisgate asks merchants to do it:

  GET  /                 a checkout page: an order, a country, "Pay from your bank"
  POST /checkout         creates the payment with the merchant's API key (one
                         Idempotency-Key per order, so a double click cannot pay twice) and
                         sends the shopper to its authorization_url
  GET  /return           where the shopper lands after the bank: shows the payment's status
                         READ FROM THE API, never from the query string (the redirect is no
                         proof of payment), and refreshes itself until it is final
  POST /webhooks         the webhook receiver: checks the Standard Webhooks signature
                         (HMAC-SHA256 over "id.timestamp.body" with the endpoint's secret)
                         and the timestamp's age, then records the event
  GET  /webhooks         the deliveries that arrived and whether each verified
  GET  /api/orders/<id>  the same as JSON (for tests)

On start it registers its webhook endpoint for the demo merchant (once; the secret, shown
by pisgate only at creation, is kept in the state file with mode 0600; if the file was lost,
the secret is rotated to get a new one).

  demo_shop.py --port 3000 --api http://127.0.0.1:8080 --key-file .pisgate/demo-merchant-dev.json \
      --state .pisgate/demo-shop-dev.json
"""
import argparse
import base64
import hashlib
import hmac
import html
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FINAL = {"paid", "rejected", "authorization_failed", "cancelled", "expired", "failed"}
TOLERANCE_SECS = 300

# What the shop sells, per country: the currency, the merchant's own account and reference.
COUNTRIES = {
    "FI": ("EUR", {"account": {"type": "IBAN", "value": "FI1410093000123458"},
                   "name": "Demo shop Oy", "reference": {"type": "RF", "value": "RF18539007547034"}}),
    "SE": ("SEK", {"account": {"type": "BGNR", "value": "50501055"}, "name": "Demo shop AB",
                   "reference": {"type": "OCR", "value": "1234566"}}),
    "NO": ("NOK", {"account": {"type": "BBAN_NO", "value": "86011117947"}, "name": "Demo shop AS",
                   "reference": {"type": "OCR", "value": "1234566"}}),
    "DK": ("DKK", {"account": {"type": "BBAN_DK", "value": "30004010021337"},
                   "name": "Demo shop ApS", "message": "Order"}),
}


class Pisgate:
    """The merchant API, with the merchant's key."""

    def __init__(self, base: str, key: str):
        self.base, self.key = base.rstrip("/"), key

    def call(self, method: str, path: str, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        h = {"Authorization": f"Bearer {self.key}", "Accept": "application/json"}
        if data is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        req = urllib.request.Request(self.base + path, data=data, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


class Shop:
    def __init__(self, api: Pisgate, public_url: str, state_file: str):
        self.api, self.public_url, self.state_file = api, public_url.rstrip("/"), state_file
        self.lock = threading.Lock()
        self.orders: dict[str, dict] = {}
        self.deliveries: list[dict] = []
        self.secrets: list[bytes] = []

    # --- the webhook endpoint ----------------------------------------------------------
    def register_webhooks(self) -> None:
        url = self.public_url + "/webhooks"
        state = {}
        if os.path.exists(self.state_file):
            with open(self.state_file) as f:
                state = json.load(f)
        status, listed = self.api.call("GET", "/v1/webhook-endpoints?limit=100")
        if status != 200:
            raise SystemExit(f"demo shop: listing webhook endpoints answered {status}: {listed}")
        mine = [e for e in listed["data"] if e["url"] == url]
        if mine and state.get("endpoint_id") == mine[0]["id"] and state.get("secret"):
            secret = state["secret"]
        elif mine:
            status, answer = self.api.call("POST", f"/v1/webhook-endpoints/{mine[0]['id']}/rotate-secret", {})
            if status != 200:
                raise SystemExit(f"demo shop: rotating the webhook secret answered {status}: {answer}")
            secret, state["endpoint_id"] = answer["secret"], mine[0]["id"]
        else:
            status, answer = self.api.call("POST", "/v1/webhook-endpoints",
                                           {"url": url, "description": "demo shop"})
            if status != 201:
                raise SystemExit(f"demo shop: registering {url} answered {status}: {answer}")
            secret, state["endpoint_id"] = answer["secret"], answer["id"]
        state["secret"] = secret
        fd = os.open(self.state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        os.chmod(self.state_file, 0o600)
        self.secrets = [base64.b64decode(secret.removeprefix("whsec_"))]

    def verify(self, headers, body: bytes) -> tuple[bool, str]:
        msg_id = headers.get("webhook-id", "")
        stamp = headers.get("webhook-timestamp", "")
        signatures = headers.get("webhook-signature", "").split()
        if not (msg_id and stamp.isdigit() and signatures):
            return False, "missing webhook-id, webhook-timestamp or webhook-signature"
        if abs(time.time() - int(stamp)) > TOLERANCE_SECS:
            return False, "timestamp too far from now (a replay?)"
        signed = f"{msg_id}.{stamp}.".encode() + body
        for secret in self.secrets:
            expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
            for s in signatures:
                version, _, value = s.partition(",")
                if version == "v1" and hmac.compare_digest(value, expected):
                    return True, "signature verified"
        return False, "no signature matches the endpoint's secret"


def page(title: str, body: str, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">{meta}
<title>{html.escape(title)} · Demo shop</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #1a1a1a; }}
h1 {{ font-size: 1.5rem; }} table {{ border-collapse: collapse; width: 100%; }}
td, th {{ text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #ddd; }}
button {{ font: inherit; padding: .6rem 1.2rem; background: #0b5cad; color: #fff; border: 0; border-radius: 4px; }}
.ok {{ color: #17692b; font-weight: 600; }} .bad {{ color: #a4161a; font-weight: 600; }}
.note {{ color: #555; font-size: .9rem; }}
</style></head><body><main>{body}</main></body></html>"""


def make_handler(shop: Shop):
    class Handler(BaseHTTPRequestHandler):
        def answer(self, code, text, kind="text/html; charset=utf-8", headers=None):
            data = text.encode()
            self.send_response(code)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            self.send_header("cache-control", "no-store")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            if url.path == "/":
                return self.checkout_page()
            if url.path == "/return":
                return self.return_page(query.get("payment_id", [""])[0])
            if url.path == "/webhooks":
                return self.webhooks_page()
            if url.path.startswith("/api/orders/"):
                return self.order_json(url.path.rsplit("/", 1)[1])
            self.answer(404, page("Not found", "<h1>Not found</h1>"))

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/checkout":
                return self.checkout(urllib.parse.parse_qs(body.decode()))
            if url.path == "/webhooks":
                return self.webhook(body)
            self.answer(404, "not found", "text/plain")

        def checkout_page(self):
            options = "".join(f'<option value="{c}">{c} ({cur})</option>' for c, (cur, _) in COUNTRIES.items())
            self.answer(200, page("Checkout", f"""<h1>Demo shop: checkout</h1>
<p>One cup of coffee, 10.50, paid from your bank account through pisgate.</p>
<form method="post" action="/checkout">
<p><label for="country">Your bank's country</label>
<select id="country" name="country">{options}</select></p>
<p><button type="submit">Pay from your bank</button></p>
</form>
<p class="note">The shop creates the payment with its API key, sends you to pisgate's page and
then to the bank's sandbox (approve there), and shows the status pisgate's API reports.
Webhooks received: <a href="/webhooks">/webhooks</a>.</p>"""))

        def checkout(self, form):
            country = form.get("country", ["FI"])[0]
            if country not in COUNTRIES:
                return self.answer(422, page("Checkout", "<h1>Unknown country</h1>"))
            currency, creditor = COUNTRIES[country]
            order = "order-" + uuid.uuid4().hex[:8]
            status, payment = shop.api.call("POST", "/v1/payments", {
                "amount": "10.50", "currency": currency, "country": country,
                "bank": "nordea", "creditor": creditor, "reference": order,
                "return_url": f"{shop.public_url}/return", "psu_id": "demo-shopper",
                "metadata": {"order": order},
            }, headers={"Idempotency-Key": order})
            if status != 201:
                return self.answer(502, page("Checkout failed", f"<h1>pisgate answered {status}</h1>"
                                             f"<pre>{html.escape(json.dumps(payment, indent=2))}</pre>"))
            with shop.lock:
                shop.orders[payment["id"]] = {"order": order, "payment_id": payment["id"]}
            self.answer(303, "", headers={"location": payment["authorization_url"]})

        def status_of(self, payment_id):
            status, payment = shop.api.call("GET", f"/v1/payments/{urllib.parse.quote(payment_id)}")
            return payment if status == 200 else None

        def hooks_for(self, payment_id):
            with shop.lock:
                return [d for d in shop.deliveries if d.get("payment_id") == payment_id]

        def return_page(self, payment_id):
            payment = self.status_of(payment_id) if payment_id else None
            if payment is None:
                return self.answer(404, page("Unknown payment", "<h1>We do not know this payment</h1>"))
            status = payment["status"]
            hooks = self.hooks_for(payment_id)
            rows = "".join(
                f'<tr><td>{html.escape(d["type"])}</td><td class="{"ok" if d["verified"] else "bad"}">'
                f'{"verified" if d["verified"] else "NOT verified"}</td></tr>' for d in hooks)
            final = status in FINAL
            verified = [d for d in hooks if d["verified"] and d["type"] == f"payment.{status}"]
            done = final and verified
            self.answer(200, page("Your payment", f"""<h1>Your payment</h1>
<p>Order {html.escape(payment.get("reference") or "")}: <strong id="status">{html.escape(status)}</strong>
(read from pisgate's API, not from the link you came back with)</p>
<table><caption>Webhooks for this payment</caption><tr><th>Event</th><th>Signature</th></tr>{rows}</table>
<p class="note">{"Final." if final else "Not final yet: this page refreshes every 2 seconds."}</p>
<p><a href="/">Back to the shop</a></p>""", refresh=None if done else 2))

        def webhooks_page(self):
            with shop.lock:
                rows = "".join(
                    f'<tr><td>{html.escape(d["id"])}</td><td>{html.escape(d["type"])}</td>'
                    f'<td>{html.escape(d.get("payment_id") or "")}</td>'
                    f'<td class="{"ok" if d["verified"] else "bad"}">{html.escape(d["why"])}</td></tr>'
                    for d in reversed(shop.deliveries))
            self.answer(200, page("Webhooks", f"""<h1>Webhooks received</h1>
<table><tr><th>Id</th><th>Event</th><th>Payment</th><th>Check</th></tr>{rows}</table>"""))

        def order_json(self, payment_id):
            payment = self.status_of(payment_id)
            body = {"payment": payment, "webhooks": self.hooks_for(payment_id)}
            self.answer(200 if payment else 404, json.dumps(body), "application/json")

        def webhook(self, body):
            verified, why = shop.verify(self.headers, body)
            try:
                event = json.loads(body)
            except ValueError:
                event = {}
            data = event.get("data") or {}
            with shop.lock:
                shop.deliveries.append({
                    "id": self.headers.get("webhook-id", ""), "type": str(event.get("type", "?")),
                    "payment_id": data.get("id"), "verified": verified, "why": why,
                })
            # A delivery that does not verify is refused, so pisgate retries it (and a forger
            # learns nothing).
            self.answer(200 if verified else 400, "ok" if verified else "invalid signature", "text/plain")

        def log_message(self, fmt, *args):
            sys.stderr.write("demo shop: " + (fmt % args) + "\n")

    return Handler


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=int(os.environ.get("PISGATE_SHOP_PORT", "3000")))
    p.add_argument("--api", required=True, help="pisgate's public URL")
    p.add_argument("--key-file", required=True, help="the demo merchant's JSON (id, api_key)")
    p.add_argument("--state", required=True, help="where the webhook secret is kept (0600)")
    p.add_argument("--public-url", help="how pisgate and browsers reach the shop "
                   "(default http://localhost:PORT)")
    args = p.parse_args()
    with open(args.key_file) as f:
        key = json.load(f)["api_key"]
    public = args.public_url or f"http://localhost:{args.port}"
    shop = Shop(Pisgate(args.api, key), public, args.state)
    shop.register_webhooks()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(shop))
    print(f"demo shop: {public} (webhooks at {public}/webhooks)", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
