#!/usr/bin/env bash
# Real-browser tests of the pages people see (the shopper's consent page, the operator console): Debian's chromium, driven by playwright-core
# (scripts/browser/), against a real `pisgate serve` and `pisgate sandbox` on a throwaway
# PostgreSQL cluster, with a tiny shop (scripts/browser/shop.py) as the merchant's return URL
# and webhook receiver.
# Installs what it needs when missing (apt: chromium; npm: scripts/browser/node_modules).
#
#   bash scripts/browser-test.sh          # screenshots go to $CARGO_TARGET_DIR/browser/
#   SCREENSHOTS=$PWD/docs/screenshots bash scripts/browser-test.sh   # refreshes the README's
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh
source scripts/lib/env.sh
source scripts/lib/local.sh

source scripts/lib/browser.sh
browser_ensure

bin=$(pisgate_debug_bin)

port=$(pg_free_port)
admin_port=$(pg_free_port)
sandbox_port=$(pg_free_port)
shop_port=$(pg_free_port)
export PISGATE_PORT=$port PISGATE_ADMIN_PORT=$admin_port PISGATE_SANDBOX_PORT=$sandbox_port
# Nordea and SEB: consent and bank-choice pages are Nordea's, the BankID page SEB's (a
# country with two banks defers to the shopper: the tests name their bank).
export PISGATE_LOCAL_BANKS=nordea,seb,op
PISGATE_SEB_SANDBOX_PORT=$(pg_free_port)
PISGATE_SEB_APP_PORT=$(pg_free_port)
PISGATE_OP_SANDBOX_PORT=$(pg_free_port)
PISGATE_OP_APP_PORT=$(pg_free_port)
export PISGATE_SEB_SANDBOX_PORT PISGATE_SEB_APP_PORT PISGATE_OP_SANDBOX_PORT PISGATE_OP_APP_PORT
local_ports
cluster="browser-$$"
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pg_destroy "$cluster"
    rm -rf "$work"
}
trap cleanup EXIT

pg_start "$cluster"
local_settings "$bin"
# Webhooks retried quickly, so the console test's delivery is dead within a second.
export PISGATE__WEBHOOKS__RETRY_SCHEDULE="200ms,200ms" PISGATE__WEBHOOKS__IDLE_WAIT="200ms"
# Two more Nordea-protocol banks for DK on the same sandbox, for bank_choice.mjs: the shopper
# chooses among three there, and Kontobanken needs the shopper's IBAN.
for b in ANDELS:Andelsbanken:false KONTO:Kontobanken:true; do
    IFS=: read -r id name needs <<<"$b"
    export "PISGATE__BANKS__${id}__PROTOCOL=nordea" "PISGATE__BANKS__${id}__NAME=$name" \
        "PISGATE__BANKS__${id}__COUNTRIES=DK" "PISGATE__BANKS__${id}__BASE_URL=$PISGATE__NORDEA__BASE_URL" \
        "PISGATE__BANKS__${id}__CLIENT_ID=$PISGATE__NORDEA__CLIENT_ID" \
        "PISGATE__BANKS__${id}__CLIENT_SECRET=$PISGATE__NORDEA__CLIENT_SECRET" \
        "PISGATE__BANKS__${id}__PRIVATE_KEY_FILE=$PISGATE__NORDEA__PRIVATE_KEY_FILE" \
        "PISGATE__BANKS__${id}__ENVIRONMENT=sandbox" "PISGATE__BANKS__${id}__NEEDS_DEBTOR_ACCOUNT=$needs"
done
# SEB's simulator (scripts/lib/local.sh, as run.sh wires it), for bankid.mjs: the BankID
# page's "open BankID on this device" link goes to the simulator's test BankID app.
export SEB_APP_URL="http://127.0.0.1:$seb_app_port"
# OP's simulator, for op.mjs: its authorization page (Approve/Reject) and admin.
export OP_APP_URL="http://127.0.0.1:$op_app_port"
"$bin" migrate >/dev/null
"$bin" merchant create --name "Kahvila Aalto" --return-origin "http://127.0.0.1:$shop_port" >"$work/merchant.json"
operator_email="operator@pisgate.example"
operator_password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
"$bin" operator create --email "$operator_email" <<<"$operator_password" >/dev/null

python3 scripts/browser/shop.py "$shop_port" >"$work/shop.log" 2>&1 &
pids+=($!)
"$bin" sandbox >"$work/sandbox.log" 2>&1 &
pids+=($!)
"$bin" sandbox --protocol seb >"$work/seb.log" 2>&1 &
pids+=($!)
"$bin" sandbox --protocol op >"$work/op.log" 2>&1 &
pids+=($!)
"$bin" serve >"$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 150); do
    if curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 \
        && curl -fsS -o /dev/null "http://127.0.0.1:$shop_port/hooks/count" 2>/dev/null; then break; fi
    kill -0 "${pids[4]}" 2>/dev/null || { cat "$work/serve.log" >&2; echo "pisgate serve exited" >&2; exit 1; }
    sleep 0.2
done

screenshots=${SCREENSHOTS:-$CARGO_TARGET_DIR/browser}
mkdir -p "$screenshots"
export PISGATE_URL="http://127.0.0.1:$port" ADMIN_URL="http://127.0.0.1:$admin_port" \
    SHOP_URL="http://127.0.0.1:$shop_port" MERCHANT_FILE="$work/merchant.json" \
    SCREENSHOTS="$screenshots" OPERATOR_EMAIL="$operator_email" OPERATOR_PASSWORD="$operator_password"
for test in ${BROWSER_TESTS:-consent bank_choice console bankid op}; do
    node "scripts/browser/$test.mjs" || {
        echo "--- pisgate serve's log (tail)" >&2
        tail -n 40 "$work/serve.log" >&2
        exit 1
    }
done
