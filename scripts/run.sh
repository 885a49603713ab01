#!/usr/bin/env bash
# Runs pisgate locally with nothing but this machine: a throwaway PostgreSQL cluster under
# .pisgate/ (reused between runs), migrations, a demo merchant, and `pisgate serve`.
# Ctrl-C stops everything.
#
#   scripts/run.sh                     # serve on 127.0.0.1:8080
#   PISGATE_PORT=9090 scripts/run.sh   # another port
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source scripts/lib/pg.sh
source scripts/lib/env.sh

port=${PISGATE_PORT:-8080}
cluster=${PISGATE_RUN_CLUSTER:-dev}
state="$root/.pisgate"
mkdir -p "$state"

echo "== building pisgate"
cargo build --locked --bin pisgate
bin="$CARGO_TARGET_DIR/debug/pisgate"

echo "== starting PostgreSQL"
pg_start "$cluster"
export PISGATE__DATABASE__URL=$DATABASE_URL
export PISGATE__SERVER__LISTEN="127.0.0.1:$port"
export PISGATE__SERVER__PUBLIC_URL=${PISGATE__SERVER__PUBLIC_URL:-http://127.0.0.1:$port}
export PISGATE_ENV=${PISGATE_ENV:-sandbox}

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

"$bin" serve &
pids+=($!)

for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
    kill -0 "${pids[0]}" 2>/dev/null || { echo "pisgate serve exited; see its log above" >&2; exit 1; }
    sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null

cat <<TXT

pisgate is running at http://127.0.0.1:$port  (Ctrl-C stops it and the database)

  demo merchant API key: $api_key

  curl -s http://127.0.0.1:$port/v1/merchant -H "Authorization: Bearer $api_key"

TXT
wait "${pids[0]}"
