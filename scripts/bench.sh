#!/usr/bin/env bash
# Runs the benchmarks against a throwaway PostgreSQL cluster and prints their numbers:
# RSA request signing (benches/signing.rs) and the workers (benches/workers.rs: status polls
# per second of one replica, and the delay from a bank status change to the webhook).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh
source scripts/lib/env.sh
cluster="bench-$$"
trap 'pg_destroy "$cluster"' EXIT
pg_start "$cluster"
export PISGATE_BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
export SQLX_OFFLINE=true
cargo bench --locked --bench signing --bench workers "$@"
