#!/usr/bin/env bash
# Only the Rust tests, against a throwaway PostgreSQL cluster: the quick loop while working.
# Everything else scripts/test.sh runs (fmt, clippy, the pages, the drills) is left out.
#
#   scripts/nextest.sh                        # every test
#   scripts/nextest.sh -E 'test(horizon)'     # arguments go to cargo nextest run
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh
source scripts/lib/env.sh
cluster="nextest-$$"
trap 'pg_destroy "$cluster"' EXIT
pg_start "$cluster"
export PISGATE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
unset DATABASE_URL PGDATABASE
export SQLX_OFFLINE=true
cargo nextest run --lib --bins --tests --locked --no-fail-fast "$@"
