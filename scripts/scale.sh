#!/usr/bin/env bash
# Scale-out through PgBouncer (issue 16, acceptance 1 and 4):
#
#  (a) the check: three `serve` replicas through PgBouncer in transaction mode
#      (default_pool_size=10), PISGATE__DATABASE__POOLER=transaction and a DIRECT_URL (one
#      LISTEN session per replica, straight to PostgreSQL): 120 approved payments reach
#      `paid`, every webhook a local receiver gets verifies (Standard Webhooks signature),
#      each shopper's stored token is the bank's newest (the bank revokes older ones; the
#      token pisgate keeps still works at the bank and its issue time is the newest the
#      bank's answers named), and pg_stat_activity, sampled every 100 ms, never shows more
#      client backends of the pisgate database than the pool plus one per replica.
#  (b) the benchmark: payments/s creating payments with 1, 2 and 3 replicas through
#      PgBouncer (wrk, one process per replica, 32 connections in all).
#
#   scripts/scale.sh            # release build; benchmark: median of 3 runs of 10 s
#   scripts/scale.sh --quick    # debug build; the same check, benchmark 1 run of 3 s
#
# PISGATE_BIN=/path/to/pisgate skips the build. Everything runs on 127.0.0.1 and is removed
# on exit (processes, the cluster, PgBouncer).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh
source scripts/lib/pgbouncer.sh
source scripts/lib/env.sh
export SQLX_OFFLINE=true

mode=full
[ "${1:-}" = "--quick" ] && mode=quick

if ! command -v wrk >/dev/null 2>&1; then
    echo "wrk is missing; installing Debian's wrk" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
fi
build=debug
if [ -n "${PISGATE_BIN:-}" ]; then
    bin=$PISGATE_BIN
    build="given binary $bin"
elif [ "$mode" = full ]; then
    echo "== building pisgate (release)"
    cargo build --locked --release --bin pisgate
    bin="$CARGO_TARGET_DIR/release/pisgate"
    build=release
else
    echo "== building pisgate (debug)"
    cargo build --locked --bin pisgate
    bin="$CARGO_TARGET_DIR/debug/pisgate"
fi

# Whether this build has the pooler settings; without them serve cannot use a transaction
# pool (sqlx's named prepared statements), so it goes through a session-mode PgBouncer and
# the summary says so.
pooler=yes
grep -qi 'direct_url' src/config/mod.rs || pooler=no

cluster="scale-$$"
bouncer="scale-$$"
work=$(mktemp -d)
pids_file="$work/pids"
: >"$pids_file"
cleanup() {
    local p
    while read -r p; do
        if [ -n "$p" ]; then kill -KILL "$p" 2>/dev/null || true; fi
    done <"$pids_file"
    pgbouncer_stop "$bouncer" || true
    pg_destroy "$cluster" || true
    rm -rf "$(pgbouncer_dir "$bouncer")"
    if [ -n "${SCALE_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# Durable, like the e2e benchmark: fsync and synchronous_commit on.
PG_DURABILITY="-c fsync=on" pg_start "$cluster"
bindir=$(pg_bindir)
pg_port=$PG_PORT
pool=10
if [ "$pooler" = yes ]; then
    pgbouncer_start "$bouncer" "$pg_port" "$pool"
else
    echo "!! this build has no PISGATE__DATABASE__POOLER: PgBouncer runs in SESSION mode for it" >&2
    # A session holds a server connection: room for every replica's whole pool.
    pool=60
    PGBOUNCER_EXTRA_DATABASES="pisgate = host=127.0.0.1 port=$pg_port dbname=pisgate pool_mode=session pool_size=$pool" \
        pgbouncer_start "$bouncer" "$pg_port" "$pool"
fi
echo "PostgreSQL on $pg_port, PgBouncer on $PGBOUNCER_PORT (default_pool_size $pool)"

"$bin" keys generate --out "$work/keys" >/dev/null
python3 -c 'import base64,os;print(base64.b64encode(os.urandom(32)).decode())' >"$work/token-key"
python3 -c 'import base64,os;print(base64.b64encode(os.urandom(32)).decode())' >"$work/ledger-key"
sandbox_port=$(pg_free_port)

export PISGATE_ENV=sandbox
export PISGATE__DATABASE__URL="postgres://postgres@127.0.0.1:$PGBOUNCER_PORT/pisgate"
if [ "$pooler" = yes ]; then
    export PISGATE__DATABASE__POOLER=transaction
    export PISGATE__DATABASE__DIRECT_URL="postgres://postgres@127.0.0.1:$pg_port/pisgate"
fi
export PISGATE__SANDBOX__LISTEN="127.0.0.1:$sandbox_port"
export PISGATE__SANDBOX__CLIENT_ID=scale-client
export PISGATE__SANDBOX__CLIENT_SECRET=scale-secret
export PISGATE__SANDBOX__PUBLIC_KEY_FILE="$work/keys/public.pem"
export PISGATE__SANDBOX__CONFIRM_DELAY_MS=300
export PISGATE__SANDBOX__PAID_DELAY_MS=800
# Token answers name the shopper and their issue time: one token per bank shopper.
export PISGATE__SANDBOX__TOKEN_IDENTITY=true
export PISGATE__NORDEA__BASE_URL="http://127.0.0.1:$sandbox_port/personal"
export PISGATE__NORDEA__CLIENT_ID=scale-client
export PISGATE__NORDEA__CLIENT_SECRET=scale-secret
export PISGATE__NORDEA__PRIVATE_KEY_FILE="$work/keys/private.pem"
export PISGATE__TOKENS__ENCRYPTION_KEY_FILE="$work/token-key"
export PISGATE__LEDGER__KEY_FILE="$work/ledger-key"
export PISGATE__WEBHOOKS__ALLOW_INSECURE_URLS=true
export PISGATE__RATE_LIMIT__REQUESTS_PER_WINDOW=100000000
export PISGATE__TELEMETRY__LOG_FORMAT=json
export RUST_LOG=${RUST_LOG:-warn}

"$bin" migrate >/dev/null
"$bin" merchant create --name "Scale shop" --return-origin "https://shop.example" >"$work/merchant.json"

python3 scripts/scale.py --mode "$mode" --bin "$bin" --work "$work" --pids "$pids_file" \
    --pg-bindir "$bindir" --pg-port "$pg_port" --bouncer-port "$PGBOUNCER_PORT" --pool "$pool" \
    --sandbox "http://127.0.0.1:$sandbox_port" --pooler "$pooler" --build "$build"
