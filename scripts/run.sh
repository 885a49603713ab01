#!/usr/bin/env bash
# Runs pisgate locally with nothing but this machine: a throwaway PostgreSQL cluster under
# .pisgate/ (reused between runs), migrations, a demo merchant, the Nordea sandbox simulator
# (`pisgate sandbox`) and `pisgate serve` wired to it. Ctrl-C stops everything.
#
#   scripts/run.sh                     # serve on 127.0.0.1:8080, admin on 127.0.0.1:9090
#   PISGATE_PORT=8000 scripts/run.sh   # another port (admin: PISGATE_ADMIN_PORT, else +1010)
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

echo "== building pisgate"
cargo build --locked --bin pisgate
bin="$CARGO_TARGET_DIR/debug/pisgate"

echo "== starting PostgreSQL"
pg_start "$cluster"
local_settings "$bin"

"$bin" migrate

# The demo merchant's key is shown only once, so keep it (in the ignored .pisgate/ folder).
demo="$state/demo-merchant-$cluster.json"
if [ ! -s "$demo" ] || ! "$bin" merchant list | grep -q "$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["id"])' "$demo")"; then
    "$bin" merchant create --name "Demo shop" --return-origin "http://localhost:3000" \
        --return-origin "https://shop.example" >"$demo"
fi
api_key=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["api_key"])' "$demo")

pids=()
stop() {
    trap - INT TERM EXIT
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pg_stop "$cluster"
}
trap stop INT TERM EXIT

"$bin" sandbox &
pids+=($!)
"$bin" serve &
pids+=($!)

for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1; then break; fi
    kill -0 "${pids[1]}" 2>/dev/null || { echo "pisgate serve exited; see its log above" >&2; exit 1; }
    sleep 0.2
done
curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null

cat <<TXT

pisgate is running at http://127.0.0.1:$port, with the Nordea sandbox at
http://127.0.0.1:$sandbox_port (Ctrl-C stops them and the database). Health, readiness and
metrics: http://127.0.0.1:$admin_port/{healthz,readyz,metrics}. Operator commands against
this stack: scripts/pisgate merchant list (and the rest of pisgate --help).

  demo merchant API key: $api_key

Create a payment:

  curl -s http://127.0.0.1:$port/v1/payments \\
    -H "Authorization: Bearer $api_key" -H "Idempotency-Key: \$(uuidgen || date +%s%N)" \\
    -H "Content-Type: application/json" \\
    -d '{"amount": "10.50", "currency": "EUR", "country": "FI",
         "creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "Demo shop"},
         "return_url": "http://localhost:3000/done", "psu_id": "shopper-1"}'

then open its authorization_url in a browser, press Continue to Nordea, then Approve.

TXT
wait "${pids[1]}"
