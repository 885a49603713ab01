#!/usr/bin/env bash
# Round trips per payment creation, straight to PostgreSQL and through PgBouncer in each
# pooler mode (scripts/roundtrips.py): the "why" behind scripts/scale.sh's throughput.
#
#   scripts/roundtrips.sh [N]     # debug build; N payments per mode (50)
#
# PISGATE_BIN=/path/to/pisgate skips the build. Everything on 127.0.0.1, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh
source scripts/lib/pgbouncer.sh
source scripts/lib/pgbouncer-build.sh
source scripts/lib/env.sh
source scripts/lib/drill.sh
export SQLX_OFFLINE=true

drill_build quick
cluster="rt-$$"
drill_workdir
cleanup() {
    drill_kill_pids
    drill_poolers_stop "$cluster"
    pg_destroy "$cluster" || true
    rm -rf "$work"
}
trap cleanup EXIT
pg_start "$cluster"
pg_port=$PG_PORT
drill_poolers "$cluster" "$pg_port" 10
sandbox_port=$(pg_free_port)
drill_stack_env "$work" "$sandbox_port" rt-client
export PISGATE__DATABASE__URL="postgres://postgres@127.0.0.1:$pg_port/pisgate"
export RUST_LOG=${RUST_LOG:-warn}
"$bin" migrate >/dev/null
"$bin" merchant create --name "Round trips" --return-origin "https://shop.example" >"$work/merchant.json"
python3 scripts/roundtrips.py --bin "$bin" --work "$work" --pids "$pids_file" --pg-port "$pg_port" \
    --best-port "$best_port" --ref-port "$ref_port" --sandbox "http://127.0.0.1:$sandbox_port" --payments "${1:-50}"
