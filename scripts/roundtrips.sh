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

prepared_bin=$(pgbouncer_ensure_prepared_capable)
drill_build quick
cluster="rt-$$"
drill_workdir
cleanup() {
    drill_kill_pids
    pgbouncer_stop "$cluster" || true
    pgbouncer_stop "$cluster-118" || true
    pg_destroy "$cluster" || true
    rm -rf "$(pgbouncer_dir "$cluster")" "$(pgbouncer_dir "$cluster-118")" "$work"
}
trap cleanup EXIT
pg_start "$cluster"
pg_port=$PG_PORT
PGBOUNCER_BIN=$prepared_bin PGBOUNCER_MAX_PREPARED_STATEMENTS=200 pgbouncer_start "$cluster" "$pg_port" 10
best_port=$PGBOUNCER_PORT
pgbouncer_start "$cluster-118" "$pg_port" 10
ref_port=$PGBOUNCER_PORT
sandbox_port=$(pg_free_port)
drill_stack_env "$work" "$sandbox_port" rt-client
export PISGATE__DATABASE__URL="postgres://postgres@127.0.0.1:$pg_port/pisgate"
export RUST_LOG=${RUST_LOG:-warn}
"$bin" migrate >/dev/null
"$bin" merchant create --name "Round trips" --return-origin "https://shop.example" >"$work/merchant.json"
python3 scripts/roundtrips.py --bin "$bin" --work "$work" --pids "$pids_file" --pg-port "$pg_port" \
    --best-port "$best_port" --ref-port "$ref_port" --sandbox "http://127.0.0.1:$sandbox_port" --payments "${1:-50}"
