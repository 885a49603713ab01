#!/usr/bin/env bash
# Runs pisgate locally with nothing but this machine: a throwaway PostgreSQL cluster under
# .pisgate/ (reused between runs), migrations, a demo merchant, the Nordea sandbox simulator
# (`pisgate sandbox`), `pisgate serve` wired to it, and a demo shop (scripts/demo_shop.py:
# a checkout page, the return page and a webhook receiver). Ctrl-C stops everything.
#
#   scripts/run.sh                     # serve on 127.0.0.1:8080, admin on 127.0.0.1:9090,
#                                      # the demo shop on http://localhost:3000
#   PISGATE_PORT=8000 scripts/run.sh   # another port (admin: PISGATE_ADMIN_PORT, else +1010;
#                                      # the shop: PISGATE_SHOP_PORT)
#
# scripts/pisgate runs the CLI against this stack with the same settings.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh
source scripts/lib/env.sh
source scripts/lib/local.sh
local_ports
cluster=${PISGATE_RUN_CLUSTER:-dev}
state="$local_state"
mkdir -p "$state"

shop_port=${PISGATE_SHOP_PORT:-3000}
shop_url="http://localhost:$shop_port"

echo "== building pisgate (the first build takes several minutes; later ones seconds)"
bin=$(pisgate_debug_bin)

echo "== starting PostgreSQL"
pg_start "$cluster"
local_settings "$bin"

"$bin" migrate

# The demo merchant's key is shown only once, so keep it (in the ignored .pisgate/ folder).
demo="$state/demo-merchant-$cluster.json"
if [ ! -s "$demo" ] || ! "$bin" merchant list | grep -q "$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["id"])' "$demo")"; then
    (umask 077 && "$bin" merchant create --name "Demo shop" --return-origin "$shop_url" \
        --return-origin "https://shop.example" >"$demo")
fi
chmod 600 "$demo"
api_key=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["api_key"])' "$demo")

pids=()
stop() {
    trap - INT TERM EXIT
    for p in "${pids[@]}" ${bg_pid:+"$bg_pid"} ${seb_pid:+"$seb_pid"} ${op_pid:+"$op_pid"}; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pg_stop "$cluster"
}
trap stop INT TERM EXIT

"$bin" sandbox &
pids+=($!)
"$bin" serve &
pids+=($!)
if [ -n "${PISGATE__BANKS__BERLIN__PROTOCOL:-}" ]; then
    "$bin" sandbox --protocol berlin-group &
    bg_pid=$!
fi
if [ -n "${PISGATE__BANKS__SEB__PROTOCOL:-}" ]; then
    "$bin" sandbox --protocol seb &
    seb_pid=$!
fi
if [ -n "${PISGATE__BANKS__OP__PROTOCOL:-}" ]; then
    "$bin" sandbox --protocol op &
    op_pid=$!
fi

for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1; then break; fi
    kill -0 "${pids[1]}" 2>/dev/null || { echo "pisgate serve exited; see its log above" >&2; exit 1; }
    sleep 0.2
done
curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null

# The demo shop's origin may differ from the one the merchant was made with (another
# PISGATE_SHOP_PORT): register it, as a merchant does with PATCH /v1/merchant.
curl -fsS -o /dev/null -X PATCH "http://127.0.0.1:$port/v1/merchant" \
    -H "Authorization: Bearer $api_key" -H "Content-Type: application/json" \
    -d "{\"return_origins\": [\"$shop_url\", \"https://shop.example\"]}"
python3 scripts/demo_shop.py --port "$shop_port" --api "http://127.0.0.1:$port" \
    --key-file "$demo" --state "$state/demo-shop-$cluster.json" &
pids+=($!)
for _ in $(seq 1 50); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$shop_port/" 2>/dev/null; then break; fi
    kill -0 "${pids[2]}" 2>/dev/null || { echo "the demo shop exited; see its log above" >&2; exit 1; }
    sleep 0.2
done

cat <<TXT

pisgate is running. Everything below can be pasted into another terminal.

  export PISGATE=http://127.0.0.1:$port
  export API_KEY=$api_key

  Demo shop (pay a coffee in a browser):  $shop_url
    its webhook receiver:                 $shop_url/webhooks
  Nordea sandbox (the bank nordea):       http://127.0.0.1:$sandbox_port
    scenarios (e.g. reject the next one): http://127.0.0.1:$sandbox_port/sandbox/scenarios
  Berlin Group simulator (bank berlin):   http://127.0.0.1:$bg_sandbox_port/psd2
    scenarios (by amount, e.g. 77.01):    http://127.0.0.1:$bg_sandbox_port/admin/scenarios
  SEB simulator (bank seb, mutual TLS):   https://127.0.0.1:$seb_sandbox_port
    its test BankID app and scenarios:    http://127.0.0.1:$seb_app_port/admin/scenarios
  OP simulator (bank op, mutual TLS):     https://127.0.0.1:$op_sandbox_port
    its authorization page and admin:     http://127.0.0.1:$op_app_port/admin/payments
  Health, readiness, metrics:             http://127.0.0.1:$admin_port/{healthz,readyz,metrics}
  Operator console:                       http://127.0.0.1:$admin_port/console
    make an operator first:  scripts/pisgate operator create --email you@example.com
                             (it asks for the password on stdin)

Create a payment with curl:

  curl -s \$PISGATE/v1/payments \\
    -H "Authorization: Bearer \$API_KEY" -H "Idempotency-Key: \$(uuidgen || date +%s%N)" \\
    -H "Content-Type: application/json" \\
    -d '{"amount": "10.50", "currency": "EUR", "country": "FI", "bank": "nordea",
         "creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "Demo shop"},
         "return_url": "$shop_url/return", "psu_id": "shopper-1"}'

then open its authorization_url in a browser, press Continue, then Approve at the sandbox:
you land on the demo shop's return page, which reads the status from the API. For the
Berlin Group bank, send "bank": "berlin" and the shopper's own IBAN,
"debtor": {"account": {"type": "IBAN", "value": "FI2112345600000785"}}
For SEB (Mobilt BankID), send "currency": "SEK", "country": "SE", "bank": "seb" and a
Swedish creditor, e.g. a bankgiro: {"account": {"type": "BGNR", "value": "5402-9681"}};
its authorization_url shows pisgate's BankID page, whose "open BankID on this device"
link opens the simulator's test BankID app (Approve / Reject) in place of the phone.
For OP, send "bank": "op" (EUR, FI, an IBAN creditor); its authorization_url leads to the
OP simulator's page (Approve / Reject), which sends the shopper back through pisgate
to the shop; pisgate then submits the payment at OP
(GET \$PISGATE/v1/banks lists the banks and what each needs).
Ctrl-C stops pisgate, the sandbox, the shop and the database.

TXT
wait "${pids[1]}"
