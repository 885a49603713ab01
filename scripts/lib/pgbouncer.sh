# shellcheck shell=bash
# A throwaway PgBouncer in TRANSACTION pooling mode in front of a local PostgreSQL cluster
# (scripts/lib/pg.sh), the way pisgate is meant to run at scale:
#
#   source scripts/lib/pg.sh scripts/lib/pgbouncer.sh
#   pg_start NAME
#   pgbouncer_start NAME "$PG_PORT" [POOL_SIZE]
#       # exports PGBOUNCER_PORT: postgres://postgres@127.0.0.1:$PGBOUNCER_PORT/<any db>
#       # reaches database <any db> of the cluster through the pool (wildcard entry, transaction
#       # mode, default_pool_size POOL_SIZE (10), max_client_conn 1000);
#       # PGBOUNCER_SERVER_IDLE_TIMEOUT (60 s) closes idle server connections sooner (the test
#       # suite makes a database per test: their pools must not pile up);
#       # PGBOUNCER_EXTRA_DATABASES adds lines to [databases] (e.g. a session-mode alias:
#       #   "pisgate_session = host=127.0.0.1 port=5432 dbname=pisgate pool_mode=session")
#       # PGBOUNCER_BIN runs that binary instead of Debian's (e.g. the 1.24 one that
#       #   scripts/lib/pgbouncer-build.sh builds);
#       # PGBOUNCER_MAX_PREPARED_STATEMENTS writes max_prepared_statements (PgBouncer >= 1.21
#       #   only: protocol-level prepared statements in transaction mode, for
#       #   database.pooler = "transaction-prepared"); unset, the line is not written;
#       # PGBOUNCER_QUIET=1 turns off log_connections/log_disconnections (a line per
#       #   connection costs PgBouncer's single thread CPU under load).
#   pgbouncer_repoint NAME NEW_PG_PORT   # new upstream for every entry, then RELOAD (failover)
#   pgbouncer_admin NAME "SHOW POOLS"    # the admin console
#   pgbouncer_stop NAME
#
# Needs Debian's pgbouncer (installed when missing; 1.18 on bookworm: no protocol-level
# prepared statements in transaction mode, which is what pisgate's POOLER=transaction handles).
# PgBouncer refuses to run as root: as root it runs as the `postgres` user, like the cluster.

pgbouncer_ensure_installed() {
    [ -n "${PGBOUNCER_BIN:-}" ] && return 0
    if ! command -v pgbouncer >/dev/null 2>&1 && ! [ -x /usr/sbin/pgbouncer ]; then
        echo "pgbouncer: not found; installing Debian's pgbouncer package" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >&2
        # The package starts a system instance; we only want its binary.
        systemctl disable --now pgbouncer >/dev/null 2>&1 || service pgbouncer stop >/dev/null 2>&1 || true
    fi
}

pgbouncer_bin() {
    [ -n "${PGBOUNCER_BIN:-}" ] && { echo "$PGBOUNCER_BIN"; return 0; }
    command -v pgbouncer 2>/dev/null || echo /usr/sbin/pgbouncer
}

pgbouncer_dir() { echo "$PG_STATE_DIR/pgbouncer-${1:-dev}"; }

pgbouncer_write_ini() {
    local dir=$1 upstream=$2 listen=$3 pool=$4
    cat >"$dir/pgbouncer.ini" <<EOF
[databases]
* = host=127.0.0.1 port=$upstream
$(sed -E "s/port=[0-9]+/port=$upstream/g" "$dir/extra")

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $listen
unix_socket_dir = $dir
auth_type = trust
auth_file = $dir/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = $pool
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 1000
max_db_connections = 0
server_lifetime = 3600
server_idle_timeout = ${PGBOUNCER_SERVER_IDLE_TIMEOUT:-60}
server_connect_timeout = 3
server_login_retry = 1
query_wait_timeout = 30
ignore_startup_parameters = extra_float_digits,options
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
${PGBOUNCER_MAX_PREPARED_STATEMENTS:+max_prepared_statements = $PGBOUNCER_MAX_PREPARED_STATEMENTS}
${PGBOUNCER_QUIET:+log_connections = 0}
${PGBOUNCER_QUIET:+log_disconnections = 0}
EOF
    printf '"postgres" ""\n' >"$dir/userlist.txt"
}

pgbouncer_start() {
    local name=${1:-dev} upstream=$2 pool=${3:-10} dir port
    pgbouncer_ensure_installed
    dir=$(pgbouncer_dir "$name")
    pgbouncer_stop "$name"
    rm -rf "$dir"
    mkdir -p "$dir"
    port=$(pg_free_port)
    echo "$port" >"$dir/port"
    echo "$pool" >"$dir/pool"
    printf '%s\n' "${PGBOUNCER_EXTRA_DATABASES:-}" >"$dir/extra"
    pgbouncer_write_ini "$dir" "$upstream" "$port" "$pool"
    local bin
    bin=$(pgbouncer_bin)
    if [ -n "${PGBOUNCER_BIN:-}" ] && [ "$(id -u)" -eq 0 ]; then
        # A built binary under /root, which `postgres` cannot enter: run a copy.
        cp "$PGBOUNCER_BIN" "$dir/pgbouncer-bin"
        bin=$dir/pgbouncer-bin
    fi
    [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$dir"
    pg_as_owner "$bin" -d "$dir/pgbouncer.ini" >/dev/null 2>&1 \
        || { tail -n 20 "$dir/pgbouncer.log" >&2; return 1; }
    local i
    for i in $(seq 1 100); do
        "$(pg_bindir)/pg_isready" -q -h 127.0.0.1 -p "$port" 2>/dev/null && break
        sleep 0.1
    done
    PGBOUNCER_PORT=$port
    export PGBOUNCER_PORT
}

pgbouncer_admin() {
    local name=${1:-dev} dir
    dir=$(pgbouncer_dir "$name")
    "$(pg_bindir)/psql" -h 127.0.0.1 -p "$(cat "$dir/port")" -U postgres -d pgbouncer -tAc "$2"
}

pgbouncer_repoint() {
    local name=${1:-dev} upstream=$2 dir
    dir=$(pgbouncer_dir "$name")
    pgbouncer_write_ini "$dir" "$upstream" "$(cat "$dir/port")" "$(cat "$dir/pool")"
    [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$dir"
    pgbouncer_admin "$name" "RELOAD" >/dev/null
}

pgbouncer_stop() {
    local name=${1:-dev} dir pid
    dir=$(pgbouncer_dir "$name")
    [ -f "$dir/pgbouncer.pid" ] || return 0
    pid=$(cat "$dir/pgbouncer.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/pgbouncer.pid"
}
