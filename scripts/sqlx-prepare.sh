#!/usr/bin/env bash
# Regenerates the compile-time query data in .sqlx/ (commit it) so that building needs no
# database. Run after changing a query or a migration.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh
source scripts/lib/env.sh
cluster="sqlx-prepare-$$"
trap 'pg_destroy "$cluster"' EXIT
pg_start "$cluster"
psql -q -d pisgate -v ON_ERROR_STOP=1 -c "SELECT 1" >/dev/null
# sqlx's own bookkeeping table, as `pisgate migrate` leaves it.
psql -q -d pisgate -v ON_ERROR_STOP=1 -c "CREATE TABLE _sqlx_migrations (
    version bigint PRIMARY KEY, description text NOT NULL,
    installed_on timestamptz NOT NULL DEFAULT now(), success boolean NOT NULL,
    checksum bytea NOT NULL, execution_time bigint NOT NULL)" >/dev/null
for f in migrations/*.sql; do
    case "$f" in *.down.sql) continue ;; esac
    psql -q -d pisgate -v ON_ERROR_STOP=1 -f "$f" >/dev/null
    v=$(basename "$f" | cut -d_ -f1)
    psql -q -d pisgate -v ON_ERROR_STOP=1 -c "INSERT INTO _sqlx_migrations
        (version, description, success, checksum, execution_time) VALUES ($v, '', true, '', 0)" >/dev/null
done
rm -rf .sqlx && mkdir -p .sqlx
# The query macros write their data to SQLX_OFFLINE_DIR as they expand; force them to.
find src -name '*.rs' -exec touch {} +
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$PWD/.sqlx" cargo check --all-targets --locked
echo "wrote $(ls .sqlx | wc -l) query file(s) to .sqlx/"
