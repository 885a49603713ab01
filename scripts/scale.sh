#!/usr/bin/env bash
# Scale-out through PgBouncer (issue 16, acceptance 1 and 4):
#
#  (a) the check: three `serve` replicas through PgBouncer in transaction mode
#      (default_pool_size=10), PISGATE__DATABASE__POOLER=transaction-prepared and a DIRECT_URL (one
#      LISTEN session per replica, straight to PostgreSQL): 120 approved payments reach
#      `paid`, every webhook a local receiver gets verifies (Standard Webhooks signature),
#      each shopper's stored token is the bank's newest (the bank revokes older ones; the
#      token pisgate keeps still works at the bank and its issue time is the newest the
#      bank's answers named), and pg_stat_activity, sampled every 100 ms, never shows more
#      client backends of the pisgate database than the pool plus one per replica.
#  (b) the benchmark: payments/s creating payments with 1 replica straight to PostgreSQL,
#      1, 2 and 3 replicas through PgBouncer, and (for reference) 1 replica through Debian's
#      PgBouncer 1.18 in transaction mode with POOLER=transaction (wrk, one process per
#      replica, 32 connections in all), with PgBouncer's own count of exchanges and
#      transactions per payment; then the ratio of 1 replica through PgBouncer to 1 direct,
#      which must be at least 0.85 in the full run (the quick run prints it only: 3 s of a
#      debug build are noise).
#
# PgBouncer here is 1.24.1 (built once from Debian's pinned source by
# scripts/lib/pgbouncer-build.sh, about 30 s plus its build dependencies), in transaction mode
# with max_prepared_statements = 200, and pisgate runs with POOLER=transaction-prepared: the
# check (a) and the benchmark's "through PgBouncer" rows use it.
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
source scripts/lib/pgbouncer-build.sh
source scripts/lib/env.sh
source scripts/lib/drill.sh
export SQLX_OFFLINE=true

mode=full
[ "${1:-}" = "--quick" ] && mode=quick

if ! command -v wrk >/dev/null 2>&1; then
    echo "wrk is missing; installing Debian's wrk" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
fi
built_at=$(date +%s)
prepared_bin=$(pgbouncer_ensure_prepared_capable)
echo "PgBouncer for POOLER=transaction-prepared: $("$prepared_bin" --version | head -1) ($(($(date +%s) - built_at)) s to have it)"
drill_build "$mode"
build=debug
[ "$mode" = full ] && build=release
[ -n "${PISGATE_BIN:-}" ] && build="given binary $bin"

cluster="scale-$$"
bouncer="scale-$$"
drill_workdir
cleanup() {
    drill_kill_pids
    drill_poolers_stop "$bouncer"
    pg_destroy "$cluster" || true
    if [ -n "${SCALE_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# Durable, like the e2e benchmark: fsync and synchronous_commit on.
PG_DURABILITY="-c fsync=on" pg_start "$cluster"
bindir=$(pg_bindir)
pg_port=$PG_PORT
pool=10
max_prepared=200
# 1.24 for POOLER=transaction-prepared, and the reference: Debian's PgBouncer (1.18 on
# bookworm), no prepared statements.
drill_poolers "$bouncer" "$pg_port" "$pool"
ref_version=$("$(PGBOUNCER_BIN='' pgbouncer_bin)" --version | head -1)
echo "PostgreSQL on $pg_port, PgBouncer 1.24.1 on $best_port (max_prepared_statements $max_prepared)," \
    "$ref_version on $ref_port (default_pool_size $pool each)"

sandbox_port=$(pg_free_port)

drill_stack_env "$work" "$sandbox_port" scale-client
export PISGATE__DATABASE__URL="postgres://postgres@127.0.0.1:$best_port/pisgate"
export PISGATE__DATABASE__POOLER=transaction-prepared
export PISGATE__DATABASE__DIRECT_URL="postgres://postgres@127.0.0.1:$pg_port/pisgate"
export PISGATE__SANDBOX__CONFIRM_DELAY_MS=300
export PISGATE__SANDBOX__PAID_DELAY_MS=800
# Token answers name the shopper and their issue time: one token per bank shopper.
export PISGATE__SANDBOX__TOKEN_IDENTITY=true
export PISGATE__WEBHOOKS__ALLOW_INSECURE_URLS=true
export PISGATE__RATE_LIMIT__REQUESTS_PER_WINDOW=100000000
export RUST_LOG=${RUST_LOG:-warn}

"$bin" migrate >/dev/null
"$bin" merchant create --name "Scale shop" --return-origin "https://shop.example" >"$work/merchant.json"

python3 scripts/scale.py --mode "$mode" --bin "$bin" --work "$work" --pids "$pids_file" \
    --pg-bindir "$bindir" --pg-port "$pg_port" --bouncer-port "$best_port" --pool "$pool" \
    --ref-bouncer-port "$ref_port" --ref-bouncer-version "$ref_version" --max-prepared "$max_prepared" \
    --sandbox "http://127.0.0.1:$sandbox_port" --build "$build"
