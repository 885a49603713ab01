#!/usr/bin/env bash
# The failover drill on a real HA engine (issues 16 and 27): Patroni and etcd decide who is
# the primary, not the drill.
#
# The stack, all on 127.0.0.1 (scripts/lib/patroni.sh starts and removes it):
#   etcd 3.4 x 3             the DCS (loopback ports picked free)
#   PostgreSQL 15 x 2        each under its own Patroni 3.0 (synchronous_mode on, fsync=on,
#                            synchronous_commit=on, use_pg_rewind), data under $PG_STATE_DIR
#                            owned by `postgres`
#   HAProxy 2.6              port P: `option httpchk GET /primary` against every member's
#                            Patroni REST API, `on-marked-down shutdown-sessions`; port R:
#                            `GET /replica` (pisgate's READ_URL)
#   PgBouncer 1.18           transaction mode in front of HAProxy's port P (`pisgate`), with a
#                            session-mode alias (`pisgate_session`) for DIRECT_URL (LISTEN,
#                            migrations); nobody repoints it: HAProxy follows Patroni
#   2 x `serve`, the sandbox bank, and clients creating payments (retrying with the same
#   Idempotency-Key) while shoppers sign (scripts/failover.py)
#
# Patroni timing (bootstrap.dcs): ttl 15, loop_wait 1, retry_timeout 6 (Patroni's defaults
# are 30/10/10). ttl is how long a primary whose Patroni went silent keeps the leader key (the
# SIGSTOP phase waits that long for a new primary); loop_wait 1 notices a crashed postmaster
# within a second; retry_timeout 6 outlasts an etcd leader election (~2 s here; with 3 the
# primary demoted itself during it) and keeps loop_wait + 2 x retry_timeout <= ttl. Short so
# the quick run stays short; production keeps the defaults (a 30 s ttl means up to ~30 s
# without a primary when a node freezes). Details in scripts/lib/patroni.sh.
#
# Phases, under load, in order (scripts/failover.py prints a table for each and a summary):
#   1 planned switchover      `patronictl switchover --force` to the synchronous standby
#   2 unplanned failure       SIGKILL of the primary's postmaster and every backend (its
#                             Patroni stays up; the drill reports whether Patroni restarted
#                             PostgreSQL in place or failed over)
#   3 etcd leader lost        SIGKILL of the etcd member that leads the raft; restarted after
#   4 partition-like stop     SIGSTOP of the primary's Patroni and PostgreSQL until the other
#                             member takes over, then SIGCONT: the old primary must never
#                             acknowledge a commit once the new one accepts writes (synchronous
#                             mode fences it: see failover.py), and rejoins as a replica
#                             (pg_rewind)
#   5 whole node lost         (full run, or FAILOVER_NODE_LOSS=1) SIGKILL of the primary's
#                             Patroni, postmaster and backends at once: the other member takes
#                             over once the leader key expires (ttl), then the node's Patroni
#                             starts again and it rejoins as a replica
# Exits non-zero unless, in every phase, HTTP 500s = lost = doubled = initiated twice =
# disagreements with the bank = 0, ledger verify passes on the new primary, every payment is
# final at the end, no two members ever acknowledged writes at the same time, and the read
# replica check (payment lists served by the standby through HAProxy's replica port) passes.
#
#   scripts/failover.sh            # full: release build, 20 s of load per phase
#   scripts/failover.sh --quick    # debug build, a few seconds per phase, ~3 minutes (CI)
#
# FAILOVER_POOLER=transaction-prepared runs pisgate in that mode behind a PgBouncer 1.24 with
# max_prepared_statements (the default: "transaction" behind Debian's 1.18).
# PISGATE_BIN=/path/to/pisgate skips the build. FAILOVER_KEEP=1 keeps the work dir (logs; the
# HA stack's logs and configuration in ha/). PATRONI_DCS=etcd3 runs Patroni on etcd's v3 API
# (see scripts/lib/patroni.sh for why the default is the v2 API with Debian's Patroni 3.0.2).
# Every process (etcd, Patroni, PostgreSQL, HAProxy, PgBouncer, serve, sandbox) is killed and
# every directory removed on exit, also when the drill fails halfway.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source scripts/lib/pg.sh
source scripts/lib/pgbouncer.sh
source scripts/lib/patroni.sh
source scripts/lib/env.sh
source scripts/lib/drill.sh
export SQLX_OFFLINE=true

mode=full
[ "${1:-}" = "--quick" ] && mode=quick

drill_build "$mode"

ha="failover-$$"
bouncer="failover-$$"
drill_workdir
cleanup() {
    set +e
    drill_kill_pids
    pgbouncer_stop "$bouncer"
    rm -rf "$(pgbouncer_dir "$bouncer")"
    [ -n "${FAILOVER_KEEP:-}" ] && patroni_save_logs "$ha" "$work/ha"
    patroni_cluster_destroy "$ha"
    if [ -n "${FAILOVER_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== etcd x3, PostgreSQL x${FAILOVER_MEMBERS:-2} under Patroni (synchronous_mode, DCS API ${PATRONI_DCS:-etcd}), HAProxy"
t_stack=$(date +%s)
patroni_cluster_start "$ha" "${FAILOVER_MEMBERS:-2}"
bindir=$(pg_bindir)
echo "Patroni $(patroni --version | awk '{print $2}'), etcd $(etcd --version | awk '/etcd Version/ {print $3}'),"\
     "$(haproxy -v | awk 'NR==1 {print $1, $3}'), PostgreSQL $("$bindir/postgres" --version | awk '{print $3}');"\
     "up in $(( $(date +%s) - t_stack )) s"
patroni_list "$ha" | python3 -c 'import json,sys
for m in json.load(sys.stdin):
    print("  %s %s %s %s TL %s" % (m["Member"], m["Role"], m["State"], m["Host"], m.get("TL")))'
echo "HAProxy: primary port $HAPROXY_PRIMARY_PORT (GET /primary), replica port $HAPROXY_REPLICA_PORT (GET /replica)"

# -- PgBouncer in front of HAProxy's primary port --------------------------------------------------
# `pisgate` in transaction mode for the pooled URL; `pisgate_session` a session-mode alias for
# the direct URL (LISTEN, migrations). HAProxy follows the primary, so PgBouncer is never
# repointed; when HAProxy marks a primary down it shuts its sessions and PgBouncer opens new
# server connections to whichever member is the primary next.
# FAILOVER_POOLER picks pisgate's pooler mode and so the PgBouncer: "transaction" (Debian's
# 1.18; the default) or "transaction-prepared" (1.24 with max_prepared_statements, built once
# by scripts/lib/pgbouncer-build.sh).
pooler_mode=${FAILOVER_POOLER:-transaction}
case "$pooler_mode" in
    transaction) bouncer_label="PgBouncer 1.18 (transaction mode)" ;;
    transaction-prepared)
        source scripts/lib/pgbouncer-build.sh
        pgbouncer_ensure_prepared_capable >/dev/null
        export PGBOUNCER_BIN=$PGBOUNCER_PREPARED_BIN PGBOUNCER_MAX_PREPARED_STATEMENTS=200
        bouncer_label="PgBouncer 1.24 (transaction mode, max_prepared_statements 200)" ;;
    *) echo "FAILOVER_POOLER must be transaction or transaction-prepared, not '$pooler_mode'" >&2; exit 2 ;;
esac
export FAILOVER_BOUNCER_LABEL=$bouncer_label
session_pool=5
PGBOUNCER_EXTRA_DATABASES="pisgate_session = host=127.0.0.1 port=$HAPROXY_PRIMARY_PORT dbname=pisgate pool_mode=session pool_size=$session_pool" \
    pgbouncer_start "$bouncer" "$HAPROXY_PRIMARY_PORT" 10
echo "$bouncer_label, default_pool_size 10, on $PGBOUNCER_PORT -> HAProxy $HAPROXY_PRIMARY_PORT"
pooled_url="postgres://postgres@127.0.0.1:$PGBOUNCER_PORT/pisgate"
session_url="postgres://postgres@127.0.0.1:$PGBOUNCER_PORT/pisgate_session"
export PGHOST=127.0.0.1 PGPORT=$HAPROXY_PRIMARY_PORT PGUSER=postgres

sandbox_port=$(pg_free_port)

drill_stack_env "$work" "$sandbox_port" failover-client
export PISGATE__DATABASE__URL=$pooled_url
export PISGATE__DATABASE__POOLER=$pooler_mode
export PISGATE__DATABASE__DIRECT_URL=$session_url
# Payment lists and events from a replica within 5 s, through HAProxy's replica port.
export PISGATE__DATABASE__READ_URL="postgres://postgres@127.0.0.1:$HAPROXY_REPLICA_PORT/pisgate"
export PISGATE__DATABASE__ACQUIRE_TIMEOUT_SECS=2
drill_fast_clock 20
export PISGATE__WEBHOOKS__ENABLED=false
export PISGATE__RATE_LIMIT__REQUESTS_PER_WINDOW=1000000
export RUST_LOG=${RUST_LOG:-warn}

echo "== migrations and a merchant"
"$bin" migrate >/dev/null
"$bin" merchant create --name "Failover shop" --return-origin "https://shop.example" >"$work/merchant.json"

export PG_STATE_DIR
# In the background and waited for, so that a SIGTERM or SIGINT to this script runs the
# cleanup at once (bash runs traps only between commands); the driver's pid is in the pids
# file, so the cleanup ends it too.
python3 scripts/failover.py --mode "$mode" --bin "$bin" --work "$work" --pids "$pids_file" \
    --root "$root" --pg-bindir "$bindir" --sandbox "http://127.0.0.1:$sandbox_port" \
    --topology "$PATRONI_DIR/topology.json" --bouncer "$bouncer" &
driver=$!
echo "$driver" >>"$pids_file"
wait "$driver"
