#!/usr/bin/env bash
# Proves scripts/run.sh works on this machine: starts it on a free port with its own
# cluster, waits for /readyz to answer 200 and the demo key to work, then stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh
port=$(pg_free_port)
cluster="smoke-$$"
log=$(mktemp)
PISGATE_PORT=$port PISGATE_RUN_CLUSTER=$cluster setsid bash scripts/run.sh >"$log" 2>&1 &
runner=$!
cleanup() {
    kill -TERM -- "-$runner" 2>/dev/null || true
    wait "$runner" 2>/dev/null || true
    pg_destroy "$cluster"
    rm -f "$log" ".pisgate/demo-merchant-$cluster.json"
}
trap cleanup EXIT
for _ in $(seq 1 600); do
    if grep -q "pisgate is running" "$log"; then break; fi
    kill -0 "$runner" 2>/dev/null || { cat "$log" >&2; echo "smoke: run.sh exited early" >&2; exit 1; }
    sleep 0.5
done
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")
[ "$code" = 200 ] || { cat "$log" >&2; echo "smoke: /readyz answered $code" >&2; exit 1; }
key=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["api_key"])' ".pisgate/demo-merchant-$cluster.json")
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/merchant" -H "Authorization: Bearer $key")
[ "$code" = 200 ] || { cat "$log" >&2; echo "smoke: the demo key answered $code" >&2; exit 1; }
echo "smoke: scripts/run.sh serves /readyz 200 and the demo merchant's key works"
