# shellcheck shell=bash
# A throwaway PostgreSQL cluster under the repository's ignored .pisgate/ folder (or, where
# the cluster's owner cannot reach that folder, under /var/tmp; see pg_state_dir).
#
#   source scripts/lib/pg.sh
#   pg_start NAME      # starts (or reuses) .pisgate/NAME, exports DATABASE_URL and PG_PORT
#   pg_running NAME    # whether it is up
#   pg_stop NAME       # stops it
#
# Tests run without fsync; PG_DURABILITY="-c fsync=on" (benchmarks) keeps the defaults
# (fsync, synchronous_commit and full_page_writes on); PG_EXTRA_OPTIONS adds settings.
#
# Needs the PostgreSQL 15 server binaries; installs Debian's postgresql package if they are
# missing. initdb refuses to run as root, so as root the cluster belongs to the `postgres`
# system user (created by the package).

PISGATE_ROOT=${PISGATE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}

# Where clusters live: .pisgate/ in the clone, unless the cluster's owner (as root: the
# `postgres` user) cannot reach the clone, as when it lives under /root (mode 0700). Then
# /var/tmp/pisgate-pg-<uid>-<hash of the clone's path>/, one folder per clone, kept across
# runs like .pisgate/ (PG_STATE_DIR overrides both).
pg_state_dir() {
    local in_clone="$PISGATE_ROOT/.pisgate" hash
    if [ "$(id -u)" -ne 0 ] || runuser -u postgres -- test -x "$PISGATE_ROOT" 2>/dev/null \
        || ! id postgres >/dev/null 2>&1; then
        echo "$in_clone"
        return
    fi
    hash=$(printf '%s' "$PISGATE_ROOT" | sha256sum | cut -c1-12)
    echo "/var/tmp/pisgate-pg-$(id -u)-$hash"
}
pg_state_dir_given=${PG_STATE_DIR:+yes}
PG_STATE_DIR=${PG_STATE_DIR:-$(pg_state_dir)}

pg_bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
    return 1
}

pg_ensure_installed() {
    if ! pg_bindir >/dev/null; then
        echo "pg: PostgreSQL server binaries not found; installing Debian's postgresql package" >&2
        if [ "$(id -u)" -ne 0 ]; then
            echo "pg: need root to apt-get install postgresql" >&2
            return 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    pg_bindir >/dev/null
}

# Runs a command as the cluster's owner.
pg_as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        # From /: the working directory may be one `postgres` cannot enter (paths are absolute).
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# N distinct free TCP ports on 127.0.0.1 (one a line; N defaults to 1). Picked below the
# kernel's ephemeral range (net.ipv4.ip_local_port_range), so an outgoing connection cannot
# take one between this check and the server's bind, and held open until all are picked, so
# no two are the same.
pg_free_ports() {
    python3 - "${1:-1}" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
try:
    low, high = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[:2])
except (OSError, ValueError):
    low, high = 32768, 60999
# Below the ephemeral range when it leaves room, else above it, else any port the kernel
# gives (bind to 0).
if low - 10000 >= 1000:
    pick = lambda: random.randrange(10000, low)
elif 65535 - high >= 1000:
    pick = lambda: random.randrange(high + 1, 65536)
else:
    pick = lambda: 0
held, ports = [], set()
for _ in range(5000):
    if len(held) == n:
        break
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", pick()))
    except OSError:
        s.close()
        continue
    port = s.getsockname()[1]
    if port in ports:
        s.close()
        continue
    held.append(s)
    ports.add(port)
if len(held) < n:
    sys.exit("pg_free_ports: found only %d free ports of %d" % (len(held), n))
for s in held:
    print(s.getsockname()[1])
    s.close()
PY
}

pg_free_port() { pg_free_ports 1; }

pg_start() {
    local name=${1:-dev} bindir dir port
    pg_ensure_installed || return 1
    # The `postgres` user may only exist now that the package is installed.
    [ -n "$pg_state_dir_given" ] || PG_STATE_DIR=$(pg_state_dir)
    bindir=$(pg_bindir)
    dir="$PG_STATE_DIR/pg-$name"
    mkdir -p "$PG_STATE_DIR"
    chmod 755 "$PG_STATE_DIR"
    if [ -f "$dir/data/PG_VERSION" ] && [ -f "$dir/port" ] && pg_as_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        port=$(cat "$dir/port")
    else
        if [ ! -f "$dir/data/PG_VERSION" ]; then
            rm -rf "$dir"
            mkdir -p "$dir/data" "$dir/run"
            [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$dir"
            pg_as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust \
                --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
                || { cat "$dir/initdb.log" >&2; return 1; }
        fi
        port=$(pg_free_port)
        echo "$port" >"$dir/port.tmp" && mv "$dir/port.tmp" "$dir/port"
        pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-p $port -k $dir/run -c listen_addresses=127.0.0.1 ${PG_DURABILITY:--c fsync=off \
                -c synchronous_commit=off -c full_page_writes=off} -c max_connections=300 \
                -c shared_buffers=256MB ${PG_EXTRA_OPTIONS:-}" start >/dev/null \
            || { tail -n 20 "$dir/server.log" >&2; return 1; }
    fi
    PG_PORT=$port
    export PG_PORT
    export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres
    DATABASE_URL="postgres://postgres@127.0.0.1:$port/pisgate"
    export DATABASE_URL
    "$bindir/psql" -q -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'pisgate'" | grep -q 1 \
        || "$bindir/createdb" pisgate
}

# Whether the cluster NAME is up.
pg_running() {
    local name=${1:-dev} bindir dir
    bindir=$(pg_bindir) || return 1
    dir="$PG_STATE_DIR/pg-$name"
    [ -f "$dir/data/PG_VERSION" ] && pg_as_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

pg_stop() {
    local name=${1:-dev} mode=${2:-fast} bindir dir
    bindir=$(pg_bindir) || return 0
    dir="$PG_STATE_DIR/pg-$name"
    [ -d "$dir/data" ] || return 0
    pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -m "$mode" -w stop >/dev/null 2>&1 || true
}

# Stops the cluster without its shutdown checkpoint (its files are deleted next: after a test
# run, thousands of databases copied from the template are dirty in its buffers) and deletes
# it.
pg_destroy() {
    local name=${1:-dev}
    pg_stop "$name" immediate
    rm -rf "${PG_STATE_DIR:?}/pg-$name"
}
