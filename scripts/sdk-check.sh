#!/usr/bin/env bash
# Proves the committed openapi.json makes working SDKs, against a run.sh stack:
# - Python: a client generated with openapi-python-client (installed from PyPI into
#   ~/.cache/pisgate/venv-sdk when missing) creates a payment, the shopper approves it at the
#   sandbox, and the client's listEvents finds the payment's events;
# - TypeScript: types generated with openapi-typescript, a merchant backend on openapi-fetch
#   (scripts/sdk-ts/check.mts) type-checked by `tsc --strict` (with noUncheckedIndexedAccess
#   and exactOptionalPropertyTypes), then run: it creates a payment with metadata, has it
#   approved, finds it by metadata[order] and lists its events. npm packages from
#   scripts/sdk-ts/package-lock.json, installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/stack.sh
venv=${HOME:-/root}/.cache/pisgate/venv-sdk
if ! [ -x "$venv/bin/openapi-python-client" ]; then
    echo "openapi-python-client is missing; installing it from PyPI into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'openapi-python-client<1' >&2
fi
stack_start sdk
out=$(mktemp -d)
trap 'stack_stop; rm -rf "$out"' EXIT
# No post hooks: they would format the client with ruff, which this check does not need.
echo 'post_hooks: []' >"$out/config.yml"
"$venv/bin/openapi-python-client" generate --path openapi.json --output-path "$out/pisgate_client" \
    --meta none --config "$out/config.yml" >/dev/null
PYTHONPATH=$out "$venv/bin/python" - "$STACK_PORT" "$STACK_KEY" <<'PY'
import re, sys, time, urllib.error, urllib.parse, urllib.request, uuid

from pisgate_client import AuthenticatedClient
from pisgate_client.api.events import list_events
from pisgate_client.api.payments import create_payment
from pisgate_client.models import PaymentCreate

port, key = sys.argv[1], sys.argv[2]
client = AuthenticatedClient(base_url=f"http://127.0.0.1:{port}", token=key)
body = PaymentCreate.from_dict({
    "amount": "10.50", "currency": "EUR", "country": "FI", "bank": "nordea",
    "creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "Demo shop"},
    "return_url": "http://localhost:3000/checkout/done", "psu_id": "shopper-1",
})
created = create_payment.sync_detailed(client=client, body=body, idempotency_key=str(uuid.uuid4()))
assert created.status_code == 201, (created.status_code, created.content)
payment = created.parsed
print(f"sdk: created {payment.id} ({payment.status})")

# The shopper approves at the sandbox, as a browser would.
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

opener = urllib.request.build_opener(NoRedirect)

def call(url, data=None, headers=None):
    try:
        with opener.open(urllib.request.Request(url, data=data, headers=headers or {})) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()

# The consent page, then its "Continue" button (a POST of the hop's token) to the bank.
status, _, _ = call(payment.authorization_url)
assert status == 200, status
hop, token = payment.authorization_url.split("?t=", 1)
status, headers, _ = call(hop, urllib.parse.urlencode({"t": token}).encode(),
                          {"Content-Type": "application/x-www-form-urlencoded"})
assert status == 303, status
status, _, page = call(headers["Location"])
action = re.search(r'action="([^"]+)"', page).group(1).replace("&amp;", "&")
form = urllib.parse.urlencode({"decision": "approve", "psu_id": "sdk-shopper"}).encode()
status, headers, _ = call(action, form, {"Content-Type": "application/x-www-form-urlencoded"})
status, headers, _ = call(headers["Location"])
assert status == 303, status

deadline = time.time() + 30
while True:
    page = list_events.sync(client=client, payment_id=uuid.UUID(str(payment.id)))
    types = [e.type_ for e in page.data]
    if "payment.authorized" in types:
        break
    assert time.time() < deadline, types
    time.sleep(0.5)
event = page.data[types.index("payment.authorized")]
assert event.id.startswith("evt_"), event.id
assert str(event.data.id) == str(payment.id), event.data
print(f"sdk: listEvents found {event.id} ({event.type_}) for {payment.id}")
PY

if ! [ -x scripts/sdk-ts/node_modules/.bin/tsc ]; then
    echo "installing scripts/sdk-ts's npm packages" >&2
    (cd scripts/sdk-ts && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
(
    cd scripts/sdk-ts
    rm -rf out schema.d.ts
    # --default-non-nullable false: a field with a default (consent) stays optional in
    # request bodies, as the API treats it.
    node_modules/.bin/openapi-typescript ../../openapi.json --default-non-nullable false \
        -o schema.d.ts >/dev/null 2>&1
    node_modules/.bin/tsc -p .
    echo "sdk-ts: tsc --strict passed"
    node out/check.mjs "$STACK_PORT" "$STACK_KEY"
)
