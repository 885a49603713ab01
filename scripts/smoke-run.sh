#!/usr/bin/env bash
# Proves scripts/run.sh works on this machine: starts it on a free port with its own
# cluster, waits for /readyz to answer 200 on the admin port (where /metrics is, and not on
# the public one) and the demo key to work, then stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh
source scripts/lib/env.sh
# Build first: run.sh builds too, and on a clean target directory that takes longer than
# the start-up this script waits for.
pisgate_debug_bin >/dev/null
port=$(pg_free_port)
admin_port=$(pg_free_port)
shop_port=$(pg_free_port)
export PISGATE_SANDBOX_PORT=$(pg_free_port) PISGATE_BG_SANDBOX_PORT=$(pg_free_port)
export PISGATE_SEB_SANDBOX_PORT=$(pg_free_port) PISGATE_SEB_APP_PORT=$(pg_free_port)
export PISGATE_OP_SANDBOX_PORT=$(pg_free_port) PISGATE_OP_APP_PORT=$(pg_free_port)
cluster="smoke-$$"
log=$(mktemp)
PISGATE_PORT=$port PISGATE_ADMIN_PORT=$admin_port PISGATE_SHOP_PORT=$shop_port PISGATE_RUN_CLUSTER=$cluster setsid bash scripts/run.sh >"$log" 2>&1 &
runner=$!
cleanup() {
    kill -TERM -- "-$runner" 2>/dev/null || true
    wait "$runner" 2>/dev/null || true
    pg_destroy "$cluster"
    rm -f "$log" ".pisgate/demo-merchant-$cluster.json" ".pisgate/demo-shop-$cluster.json"
}
trap cleanup EXIT
for _ in $(seq 1 600); do
    if grep -q "pisgate is running" "$log"; then break; fi
    kill -0 "$runner" 2>/dev/null || { cat "$log" >&2; echo "smoke: run.sh exited early" >&2; exit 1; }
    sleep 0.5
done
grep -q "pisgate is running" "$log" || { cat "$log" >&2; echo "smoke: run.sh did not start within 300 s" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/readyz")
[ "$code" = 200 ] || { cat "$log" >&2; echo "smoke: /readyz answered $code" >&2; exit 1; }
# Metrics on the admin listener only.
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/metrics")
[ "$code" = 200 ] || { cat "$log" >&2; echo "smoke: admin /metrics answered $code" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/metrics")
[ "$code" = 404 ] || { cat "$log" >&2; echo "smoke: public /metrics answered $code" >&2; exit 1; }
key=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["api_key"])' ".pisgate/demo-merchant-$cluster.json")
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/merchant" -H "Authorization: Bearer $key")
[ "$code" = 200 ] || { cat "$log" >&2; echo "smoke: the demo key answered $code" >&2; exit 1; }
# scripts/pisgate reaches the same stack: the demo merchant is in its list.
id=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["id"])' ".pisgate/demo-merchant-$cluster.json")
listed=$(cd / && PISGATE_RUN_CLUSTER=$cluster PISGATE_PORT=$port PISGATE_ADMIN_PORT=$admin_port "$OLDPWD/scripts/pisgate" merchant list)
grep -q "$id" <<<"$listed" || { echo "smoke: scripts/pisgate merchant list: $listed" >&2; exit 1; }
# The README's walkthrough: create a payment, approve it at the sandbox like a browser, and
# land on the return URL (its payment id only: the status is the API's to tell); then the
# poller alone takes it to paid.
python3 - "$port" "$key" "$shop_port" <<'PY'
import json, re, sys, urllib.error, urllib.parse, urllib.request

port, key, shop_port = sys.argv[1], sys.argv[2], sys.argv[3]
shop = f"http://localhost:{shop_port}"
base = f"http://127.0.0.1:{port}"

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

opener = urllib.request.build_opener(NoRedirect)

def call(url, data=None, headers=None, method=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with opener.open(req) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()

body = json.dumps({
    "amount": "10.50", "currency": "EUR", "country": "FI", "bank": "nordea",
    "creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "Demo shop"},
    "return_url": f"{shop}/return", "psu_id": "shopper-1",
}).encode()
status, _, text = call(f"{base}/v1/payments", body, {
    "Authorization": f"Bearer {key}", "Idempotency-Key": "smoke-1", "Content-Type": "application/json"})
assert status == 201, (status, text)
payment = json.loads(text)
# authorization_url is pisgate's hop: the consent page, whose button (a form posting the
# hop's token back) sends the browser on to the bank's signing page.
status, headers, page = call(payment["authorization_url"])
assert status == 200 and "Continue to Nordea" in page, (status, page)
hop, token = payment["authorization_url"].split("?t=")
status, headers, page = call(hop, urllib.parse.urlencode({"t": token}).encode(),
                             {"Content-Type": "application/x-www-form-urlencoded"})
assert status == 303, (status, page)
status, _, page = call(headers["Location"])
assert status == 200, (status, page)
action = re.search(r'action="([^"]+)"', page).group(1).replace("&amp;", "&")
form = urllib.parse.urlencode({"decision": "approve", "psu_id": "smoke-shopper"}).encode()
status, headers, _ = call(action, form, {"Content-Type": "application/x-www-form-urlencoded"})
assert status == 303, status
status, headers, text = call(headers["Location"])
assert status == 303, (status, text)
landing = headers["Location"]
assert landing.startswith(f"{shop}/return?payment_id="), landing
assert "status=" not in landing, landing
print(f"smoke: a payment went from curl to {landing}")

# Nobody asks again: the status poller follows it to paid (the sandbox pays ~3 s after signing).
import time
deadline = time.time() + 30
while True:
    status, _, text = call(f"{base}/v1/payments/{payment['id']}", headers={"Authorization": f"Bearer {key}"})
    assert status == 200, (status, text)
    current = json.loads(text)["status"]
    if current == "paid":
        break
    assert current == "authorized", current
    assert time.time() < deadline, "the poller did not bring the payment to paid"
    time.sleep(0.5)
print("smoke: the status poller brought it to paid")

# The same at the Berlin Group bank run.sh configures (`berlin`, its strict simulator):
# the bank's SCA page, the return without a code, the poller to ACSC.
body = json.dumps({
    "amount": "12.00", "currency": "EUR", "country": "FI", "bank": "berlin",
    "creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "Demo shop"},
    "debtor": {"account": {"type": "IBAN", "value": "FI2112345600000785"}},
    "return_url": f"{shop}/return", "psu_id": "shopper-2",
}).encode()
status, _, text = call(f"{base}/v1/payments", body, {
    "Authorization": f"Bearer {key}", "Idempotency-Key": "smoke-2", "Content-Type": "application/json"})
assert status == 201, (status, text)
payment = json.loads(text)
assert payment["bank"] == "berlin" and payment["bank_status"] == "RCVD", payment
status, _, page = call(payment["authorization_url"])
assert status == 200 and "Berlin Test Bank" in page, (status, page)
hop, token = payment["authorization_url"].split("?t=")
status, headers, page = call(hop, urllib.parse.urlencode({"t": token}).encode(),
                             {"Content-Type": "application/x-www-form-urlencoded"})
assert status == 303, (status, page)
bank_page = headers["Location"]
status, _, page = call(bank_page)
assert status == 200 and "Approve" in page, (status, page)
status, headers, _ = call(bank_page, urllib.parse.urlencode({"decision": "approve"}).encode(),
                          {"Content-Type": "application/x-www-form-urlencoded"})
assert status == 303, status
assert headers["Location"].startswith(f"{base}/v1/callbacks/return"), headers["Location"]
status, headers, text = call(headers["Location"])
assert status == 303 and headers["Location"].startswith(f"{shop}/return?payment_id="), (status, text)
deadline = time.time() + 30
while True:
    status, _, text = call(f"{base}/v1/payments/{payment['id']}", headers={"Authorization": f"Bearer {key}"})
    current = json.loads(text)
    if current["status"] == "paid":
        break
    assert current["status"] in ("awaiting_authorization", "authorized"), current
    assert time.time() < deadline, f"the Berlin Group payment did not reach paid: {current}"
    time.sleep(0.5)
assert current["bank_status"] == "ACSC", current
print("smoke: a Berlin Group payment went from curl through the bank's page to paid (ACSC)")

# And at SEB (`seb`, its simulator over mutual TLS): nothing at the bank before the shopper
# identifies with BankID on pisgate's page; the page's "open BankID on this device" link
# opens the simulator's test BankID app, whose Approve stands in for the phone (twice:
# identify, then sign); the page then sends the shopper to the shop; the poller to ACSC.
body = json.dumps({
    "amount": "125.00", "currency": "SEK", "country": "SE", "bank": "seb",
    "creditor": {"account": {"type": "BGNR", "value": "5402-9681"}, "name": "Demo shop",
                 "reference": {"type": "OCR", "value": "1234566"}},
    "return_url": f"{shop}/return", "psu_id": "shopper-3", "language": "sv",
}).encode()
status, _, text = call(f"{base}/v1/payments", body, {
    "Authorization": f"Bearer {key}", "Idempotency-Key": "smoke-3", "Content-Type": "application/json"})
assert status == 201, (status, text)
payment = json.loads(text)
assert payment["bank"] == "seb" and payment["initiation"] == "awaiting_shopper_identification", payment
status, headers, text = call(payment["authorization_url"])
assert status == 303 and "/bankid?t=" in headers["Location"], (status, text)
bankid = headers["Location"]
if bankid.startswith("/"):
    bankid = base + bankid

def autostart(page):
    m = re.search(r'href="([^"]*test-bankid\?autostarttoken=([^&"]+)[^"]*)"', page)
    return (m.group(1).replace("&amp;", "&"), urllib.parse.unquote(m.group(2))) if m else (None, None)

def phone_approves(not_token):
    deadline = time.time() + 20
    while True:
        status, headers, page = call(bankid)
        assert status == 200, (status, page)
        link, token = autostart(page)
        if token and token != not_token:
            break
        assert time.time() < deadline, f"no new BankID order on the page: {page[:2000]}"
        time.sleep(0.5)
    assert 'lang="sv"' in page, page[:500]
    status, _, app = call(link)
    assert status == 200 and "Approve" in app, (status, app)
    status, _, _ = call(link.split("?")[0] + "/approve",
                        urllib.parse.urlencode({"autostarttoken": token}).encode(),
                        {"Content-Type": "application/x-www-form-urlencoded"})
    assert status in (200, 303), status
    return token

identified = phone_approves(None)
phone_approves(identified)
deadline = time.time() + 20
while True:
    status, headers, page = call(bankid)
    if status == 303:
        break
    assert status == 200 and time.time() < deadline, (status, page[:2000])
    time.sleep(0.5)
assert headers["Location"].startswith(f"{shop}/return?payment_id={payment['id']}"), headers["Location"]
deadline = time.time() + 30
while True:
    status, _, text = call(f"{base}/v1/payments/{payment['id']}", headers={"Authorization": f"Bearer {key}"})
    current = json.loads(text)
    if current["status"] == "paid":
        break
    assert current["status"] in ("awaiting_authorization", "authorized"), current
    assert time.time() < deadline, f"the SEB payment did not reach paid: {current}"
    time.sleep(0.5)
assert current["bank_status"] == "ACSC", current
print("smoke: a SEB payment went from curl through pisgate's BankID page and the test BankID app (identify, sign) to paid (ACSC)")

# And at OP (`op`, its FAPI simulator over mutual TLS): pisgate creates the payment at OP and
# sends the shopper, with a signed request object, to OP's authorization page; Approve sends
# the browser back to pisgate with the code and the ID token in the URL fragment, which
# pisgate's return page moves into the query (done here as its script does); pisgate checks
# the ID token, exchanges the code, submits the payment and sends the shopper to the shop.
body = json.dumps({
    "amount": "42.00", "currency": "EUR", "country": "FI", "bank": "op",
    "creditor": {"account": {"type": "IBAN", "value": "FI2112345600000785"}, "name": "Demo shop",
                 "message": "Order 42"},
    "return_url": f"{shop}/return", "language": "fi",
}).encode()
status, _, text = call(f"{base}/v1/payments", body, {
    "Authorization": f"Bearer {key}", "Idempotency-Key": "smoke-4", "Content-Type": "application/json"})
assert status == 201, (status, text)
payment = json.loads(text)
assert payment["bank"] == "op" and payment["bank_status"] == "Unauthorized", payment
url = payment["authorization_url"]
status, headers, _ = call(url)
if status == 200:  # pisgate's consent page: its button posts the hop's token back
    hop, token = url.split("?t=")
    status, headers, _ = call(hop, urllib.parse.urlencode({"t": token}).encode(),
                              {"Content-Type": "application/x-www-form-urlencoded"})
assert status == 303 and "/oauth/authorize?request=" in headers["Location"], (status, headers)
op_page = headers["Location"]
status, _, page = call(op_page)
assert status == 200 and "Approve" in page, (status, page[:2000])
fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
fields["decision"] = "approve"
status, headers, _ = call(urllib.parse.urljoin(op_page, "/oauth/authorize/decision"),
                          urllib.parse.urlencode(fields).encode(),
                          {"Content-Type": "application/x-www-form-urlencoded"})
back = headers.get("Location", "")
assert status == 303 and "/v1/callbacks/oidc#" in back and "id_token=" in back, (status, back)
status, _, page = call(back.split("#")[0])
assert status == 200 and "location.replace" in page, (status, page[:1000])
status, headers, _ = call(back.replace("#", "?", 1))
assert status == 303 and headers["Location"].startswith(f"{shop}/return?payment_id={payment['id']}"), (status, headers)
deadline = time.time() + 30
while True:
    status, _, text = call(f"{base}/v1/payments/{payment['id']}", headers={"Authorization": f"Bearer {key}"})
    current = json.loads(text)
    if current["status"] == "paid":
        break
    assert current["status"] in ("awaiting_authorization", "authorized"), current
    assert time.time() < deadline, f"the OP payment did not reach paid: {current}"
    time.sleep(0.5)
assert current["bank_status"] == "Debited", current
print("smoke: an OP payment went from curl through OP's authorization page (signed request object), the fragment return and the submit step to paid (Debited)")
PY
echo "smoke: scripts/run.sh serves /readyz 200 and /metrics on the admin port, scripts/pisgate reaches its database, the demo merchant's key works, and a payment goes from curl to paid"
# The demo shop run.sh started, in a real browser: checkout, consent, approve, the return
# page shows "paid" read from the API and the webhook verified (scripts/browser/demo_shop.mjs).
source scripts/lib/browser.sh
browser_ensure
shots="${SCREENSHOTS:-$CARGO_TARGET_DIR/browser}"
mkdir -p "$shots"
SHOP_URL="http://localhost:$shop_port" SCREENSHOTS="$shots" \
    node scripts/browser/demo_shop.mjs || { tail -n 60 "$log" >&2; exit 1; }
