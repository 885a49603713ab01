#!/usr/bin/env bash
# The failover drill (issue 16): a PostgreSQL primary and a streaming standby built from the
# installed PostgreSQL 15 binaries (pg_basebackup -R, a physical replication slot,
# SYNCHRONOUS replication: synchronous_standby_names names the standby and
# synchronous_commit=on, so a commit the primary acknowledged is on the standby when it is
# promoted), PgBouncer in transaction mode in front of the primary, two `serve` replicas
# through it (PISGATE__DATABASE__POOLER=transaction; the direct URL for LISTEN and
# migrations goes through a session-mode alias of the same PgBouncer, so repointing
# PgBouncer repoints both), the sandbox bank in its own process, and load from several
# clients that retry with the same Idempotency-Key while shoppers sign. Mid-load it SIGKILLs
# the primary (the postmaster and its backends), promotes the standby (pg_ctl promote),
# repoints PgBouncer (pgbouncer_repoint: new upstream, RELOAD), keeps loading, lets every
# payment settle, reconciles pisgate's database with the bank and prints a summary. Before the
# kill it checks the read replica (PISGATE__DATABASE__READ_URL = the standby): in use, its
# lag, and 50 payment lists served by the standby. Exits non-zero unless lost = doubled =
# initiated twice = HTTP 500s = 0, every payment is final and the replica check passed.
#
#   scripts/failover.sh            # full: release build, 25 s of load before the kill, 40 s after
#   scripts/failover.sh --quick    # debug build, under ~2 minutes (CI)
#
# PISGATE_BIN=/path/to/pisgate skips the build. Everything runs on 127.0.0.1 and is removed
# on exit (processes, clusters, PgBouncer).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source scripts/lib/pg.sh
source scripts/lib/pgbouncer.sh
source scripts/lib/env.sh
source scripts/lib/drill.sh
export SQLX_OFFLINE=true

mode=full
[ "${1:-}" = "--quick" ] && mode=quick

drill_build "$mode"

primary="failover-primary-$$"
standby="failover-standby-$$"
bouncer="failover-$$"
drill_workdir
cleanup() {
    drill_kill_pids
    pgbouncer_stop "$bouncer" || true
    pg_destroy "$standby" || true
    pg_destroy "$primary" || true
    rm -rf "$(pgbouncer_dir "$bouncer")"
    if [ -n "${FAILOVER_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
bindir=$(pg_bindir 2>/dev/null || true)

# -- the primary -------------------------------------------------------------------------------
echo "== primary and synchronous standby (PostgreSQL $("${bindir:-/usr/lib/postgresql/15/bin}/postgres" --version 2>/dev/null | awk '{print $3}'))"
# Durable: fsync and synchronous_commit on (the drill is about acknowledged commits).
PG_DURABILITY="-c fsync=on -c synchronous_commit=on" \
    PG_EXTRA_OPTIONS="-c wal_level=replica -c max_wal_senders=10 -c max_replication_slots=10 -c wal_keep_size=256MB" \
    pg_start "$primary"
bindir=$(pg_bindir)
primary_port=$PG_PORT
primary_dir="$PG_STATE_DIR/pg-$primary"
"$bindir/psql" -qtAX -h 127.0.0.1 -p "$primary_port" -U postgres -d postgres \
    -c "SELECT pg_create_physical_replication_slot('standby1')" >/dev/null

# -- the standby: a base backup of the primary that follows it -------------------------------------
standby_dir="$PG_STATE_DIR/pg-$standby"
rm -rf "$standby_dir"
mkdir -p "$standby_dir/run"
[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$standby_dir"
# -c fast: an immediate checkpoint (a spread one takes minutes).
pg_as_owner "$bindir/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres \
    -D "$standby_dir/data" -R -S standby1 -X stream -c fast >/dev/null
# The walreceiver introduces itself as standby1: the name synchronous_standby_names waits for.
pg_as_owner sh -c "echo \"primary_conninfo = 'host=127.0.0.1 port=$primary_port user=postgres application_name=standby1'\" >> '$standby_dir/data/postgresql.auto.conf'"
PG_DURABILITY="-c fsync=on -c synchronous_commit=on" \
    PG_EXTRA_OPTIONS="-c wal_level=replica -c max_wal_senders=10 -c max_replication_slots=10 -c hot_standby=on" \
    pg_start "$standby"
standby_port=$PG_PORT
# Set after the base backup, so the standby (a primary after promotion) waits for nobody.
"$bindir/psql" -qtAX -h 127.0.0.1 -p "$primary_port" -U postgres -d postgres \
    -c "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (standby1)'" -c "SELECT pg_reload_conf()" >/dev/null
sync=""
for _ in $(seq 1 100); do
    sync=$("$bindir/psql" -qtAX -h 127.0.0.1 -p "$primary_port" -U postgres -d postgres \
        -c "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'")
    [ "$sync" = sync ] && break
    sleep 0.1
done
[ "$sync" = sync ] || { echo "the standby never became synchronous (sync_state '$sync')" >&2; exit 1; }
echo "primary on $primary_port, standby on $standby_port streaming from it (sync_state $sync)"
export PGHOST=127.0.0.1 PGPORT=$primary_port PGUSER=postgres

# -- PgBouncer in front of the primary ----------------------------------------------------------
# `pisgate` in transaction mode for the pooled URL; `pisgate_session` a session-mode alias of
# the same database for the direct URL (LISTEN, migrations). pgbouncer_repoint rewrites both.
# In session mode a client holds its server connection for its whole session: only the LISTEN
# connections (one per replica) and migrations use it.
session_pool=5
PGBOUNCER_EXTRA_DATABASES="pisgate_session = host=127.0.0.1 port=$primary_port dbname=pisgate pool_mode=session pool_size=$session_pool" \
    pgbouncer_start "$bouncer" "$primary_port" 10
echo "PgBouncer (transaction mode, default_pool_size 10) on $PGBOUNCER_PORT"
pooled_url="postgres://postgres@127.0.0.1:$PGBOUNCER_PORT/pisgate"
session_url="postgres://postgres@127.0.0.1:$PGBOUNCER_PORT/pisgate_session"

sandbox_port=$(pg_free_port)

drill_stack_env "$work" "$sandbox_port" failover-client
export PISGATE__DATABASE__URL=$pooled_url
export PISGATE__DATABASE__POOLER=transaction
export PISGATE__DATABASE__DIRECT_URL=$session_url
# Payment lists and events from the standby while it is within 5 s (before the kill a
# streaming replica; after it the promoted primary itself).
export PISGATE__DATABASE__READ_URL="postgres://postgres@127.0.0.1:$standby_port/pisgate"
export PISGATE__DATABASE__ACQUIRE_TIMEOUT_SECS=2
drill_fast_clock 20
export PISGATE__WEBHOOKS__ENABLED=false
export PISGATE__RATE_LIMIT__REQUESTS_PER_WINDOW=1000000
export RUST_LOG=${RUST_LOG:-warn}

echo "== migrations and a merchant"
"$bin" migrate >/dev/null
"$bin" merchant create --name "Failover shop" --return-origin "https://shop.example" >"$work/merchant.json"

export PG_STATE_DIR
python3 scripts/failover.py --mode "$mode" --bin "$bin" --work "$work" --pids "$pids_file" \
    --root "$root" --pg-bindir "$bindir" --sandbox "http://127.0.0.1:$sandbox_port" \
    --primary-dir "$primary_dir" --standby-dir "$standby_dir" --standby-port "$standby_port" \
    --primary-port "$primary_port" --bouncer "$bouncer"
