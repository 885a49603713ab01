# shellcheck shell=bash
# A throwaway high-availability PostgreSQL on 127.0.0.1, the way it runs in production: a
# three-member etcd (the DCS), two or three PostgreSQL 15 members each under its own Patroni
# (synchronous_mode on), and HAProxy routing clients to whichever member Patroni's REST API
# says is the primary (`GET /primary`) and, on a second port, to the replicas (`GET /replica`).
# Used by scripts/failover.sh (issue 27).
#
#   source scripts/lib/pg.sh scripts/lib/patroni.sh
#   patroni_cluster_start NAME [MEMBERS]   # 2 (default) or 3 members; waits until a leader
#                                          # runs, every member streams and one is the
#                                          # synchronous standby; creates database pisgate.
#                                          # Exports PATRONI_DIR, HAPROXY_PRIMARY_PORT,
#                                          # HAPROXY_REPLICA_PORT; writes
#                                          # $PATRONI_DIR/topology.json (ports, dirs, pids file)
#   patroni_leader NAME                    # the leader's member name (REST API /cluster)
#   patroni_list NAME                      # `patronictl list -f json`
#   patroni_cluster_destroy NAME           # SIGKILLs every process it started (etcd, Patroni,
#                                          # postgres and its children, HAProxy; stopped ones
#                                          # are continued first) and removes the directory
#
# Everything lives under $PG_STATE_DIR/patroni-NAME: etcd data, one folder per member (owned
# by `postgres`: PostgreSQL and Patroni refuse to run as root, so as root they run as the
# `postgres` system user like scripts/lib/pg.sh's clusters), the configuration files, the
# logs and `pids` (every process started here, appended as it starts).
#
# Needs Debian's etcd-server (3.4), patroni (3.0) and haproxy (2.6); installed with apt-get
# when missing. The packages start system services; those are stopped and disabled: only
# the binaries are used.
#
# The DCS API (PATRONI_DCS): `etcd` (default) is Patroni's `etcd:` section, etcd's v2 API, which
# etcd 3.4 serves with `--enable-v2` (deprecated there; gone in etcd 3.6). `etcd3` is Patroni's
# `etcd3:` section (the v3 gRPC gateway, on by default). Not the default because Debian
# bookworm's Patroni 3.0.2 has a race there that the drill's SIGSTOP phase hit: an old primary
# whose lease expired while it was frozen grants itself a new lease on waking and, when its
# HA loop runs before its watch cache has caught up (the cache still shows it as the leader),
# writes the leader key UNCONDITIONALLY, so the member that took over is demoted and rewound
# and the commits it acknowledged meanwhile are lost (fixed upstream in May 2023, after 3.0.2:
# patroni/patroni#2689 makes that write a compare-and-swap). In 1 of 2 runs on etcd3 (ttl 10):
# 81 payments answered 201 were lost. Over the v2 API the leader key is only ever updated by
# compare-and-swap on its value (test_and_set), so the woken old primary fails to update it
# and demotes itself. With a Patroni that has the fix, `etcd3` is the better choice (etcd 3.6
# drops the v2 API).
#
# Timing (bootstrap.dcs; Patroni's defaults are ttl 30, loop_wait 10, retry_timeout 10):
#   ttl 15            the leader key's lifetime: a primary whose Patroni stops renewing it (the
#                     SIGSTOP phase) is replaced ~15 s later. Short so a drill phase stays
#                     short; production keeps 30.
#   loop_wait 1       Patroni's HA loop runs every second: a crashed postmaster is noticed
#                     and a lost leader key acted on within ~1 s.
#   retry_timeout 6   how long DCS and PostgreSQL calls are retried before Patroni gives up; a
#                     leader that cannot update its key within it demotes itself. It must
#                     outlast an etcd leader election (etcd's 100 ms heartbeat and 1000 ms
#                     election timeout: 1-2 s, ~2 s on this box under load): with 3 the etcd
#                     phase demoted the primary every time (Patroni splits retry_timeout over
#                     the etcd members, 1 s each; both survivors were still electing) and it
#                     came back on a new timeline after ~4 s without writes. Patroni's rule
#                     loop_wait + 2 * retry_timeout <= ttl holds (1 + 12 <= 15).
#   synchronous_mode true (not strict): a commit waits for the synchronous standby Patroni
#                     chose (synchronous_standby_names), and only that standby may be promoted,
#                     so no acknowledged commit is lost. Not strict: a primary left alone (its
#                     standby dead) goes on accepting writes instead of blocking.
#   use_pg_rewind true, wal_log_hints on: an old primary whose WAL went past the point where
#                     the new one was promoted is rewound and rejoins as a replica.

PATRONI_BINDIR_DEFAULT=/usr/lib/postgresql/15/bin

patroni_ensure_installed() {
    local missing=()
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    command -v patroni >/dev/null 2>&1 || missing+=(patroni)
    command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "patroni: ${missing[*]} not found; installing Debian's packages" >&2
        if [ "$(id -u)" -ne 0 ]; then
            echo "patroni: need root to apt-get install ${missing[*]}" >&2
            return 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
        # The packages start system instances (etcd on 2379, Patroni, HAProxy); only their
        # binaries are wanted.
        local s
        for s in etcd patroni haproxy; do
            systemctl disable --now "$s" >/dev/null 2>&1 || service "$s" stop >/dev/null 2>&1 || true
        done
    fi
}

patroni_dir() { echo "$PG_STATE_DIR/patroni-${1:-dev}"; }

# Runs a long-lived command in the background as `postgres` (as root) with a clean
# environment, its output to LOG; prints its pid (the exec'd process itself: setpriv execs).
patroni_spawn_as_owner() {
    local log=$1
    shift
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && exec env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME=/var/lib/postgresql LANG=C.UTF-8 \
            setpriv --reuid=postgres --regid=postgres --init-groups "$@" >>"$log" 2>&1) &
    else
        (cd / && exec env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$HOME" LANG=C.UTF-8 "$@" >>"$log" 2>&1) &
    fi
    echo $!
    # Not a job of this shell: no "Killed" line when the drill kills it.
    disown $!
}

# An HTTP GET against 127.0.0.1 (no proxy); prints the body, fails on no answer or >= 400.
patroni_http() {
    curl -fsS --noproxy '*' --max-time "${2:-2}" "$1" 2>/dev/null
}

patroni_cluster_start() {
    local name=${1:-dev} members=${2:-2} dcs=${PATRONI_DCS:-etcd} dir bindir i
    case $dcs in etcd | etcd3) ;; *) echo "patroni: PATRONI_DCS is etcd or etcd3, not $dcs" >&2; return 1 ;; esac
    [ "$members" -ge 2 ] && [ "$members" -le 3 ] || { echo "patroni: 2 or 3 members, not $members" >&2; return 1; }
    pg_ensure_installed || return 1
    patroni_ensure_installed || return 1
    [ -n "$pg_state_dir_given" ] || PG_STATE_DIR=$(pg_state_dir)
    bindir=$(pg_bindir || echo "$PATRONI_BINDIR_DEFAULT")
    dir=$(patroni_dir "$name")
    patroni_cluster_destroy "$name"
    mkdir -p "$dir"
    chmod 755 "$PG_STATE_DIR" "$dir"
    : >"$dir/pids"
    PATRONI_DIR=$dir
    export PATRONI_DIR

    # -- etcd: three members, loopback ports ------------------------------------------------
    # Tried up to three times, each on fresh ports and data dirs: a member that cannot bind
    # its port (taken meanwhile) never becomes healthy.
    local -a ecl epe ports
    local initial token attempt ok=""
    for attempt in 1 2 3; do
        token="pisgate-$name-$$-$attempt"
        mapfile -t ports < <(pg_free_ports 6)
        initial=""
        for i in 1 2 3; do
            ecl[i]=${ports[2 * i - 2]}
            epe[i]=${ports[2 * i - 1]}
            initial+="${initial:+,}e$i=http://127.0.0.1:${epe[i]}"
        done
        for i in 1 2 3; do
            rm -rf "$dir/etcd/e$i"
            mkdir -p "$dir/etcd/e$i"
            chmod 700 "$dir/etcd/e$i"
            # One argument a line: failover.py restarts a killed member with the same command.
            printf '%s\n' etcd --name "e$i" --data-dir "$dir/etcd/e$i" \
                --listen-client-urls "http://127.0.0.1:${ecl[i]}" --advertise-client-urls "http://127.0.0.1:${ecl[i]}" \
                --listen-peer-urls "http://127.0.0.1:${epe[i]}" --initial-advertise-peer-urls "http://127.0.0.1:${epe[i]}" \
                --initial-cluster "$initial" --initial-cluster-token "$token" --initial-cluster-state new \
                --heartbeat-interval 100 --election-timeout 1000 --logger zap --log-outputs stderr \
                $([ "$dcs" = etcd ] && echo --enable-v2=true) \
                >"$dir/etcd/e$i.args"
            mapfile -t args <"$dir/etcd/e$i.args"
            (cd / && exec "${args[@]}" >>"$dir/etcd/e$i.log" 2>&1) &
            echo $! >>"$dir/pids"
            echo $! >"$dir/etcd/e$i.pid"
            disown $!
        done
        for _ in $(seq 1 150); do
            ok=yes
            for i in 1 2 3; do
                patroni_http "http://127.0.0.1:${ecl[i]}/health" | grep -q '"health":"true"' || { ok=""; break; }
            done
            [ -n "$ok" ] && break
            sleep 0.2
        done
        [ -n "$ok" ] && break
        echo "patroni: etcd did not become healthy within 30 s (attempt $attempt of 3); its logs:" >&2
        for i in 1 2 3; do
            echo "-- e$i (client ${ecl[i]}, peer ${epe[i]})" >&2
            tail -n 15 "$dir/etcd/e$i.log" >&2
            kill -9 "$(cat "$dir/etcd/e$i.pid")" 2>/dev/null || true
            mv "$dir/etcd/e$i.log" "$dir/etcd/e$i.attempt$attempt.log"
        done
    done
    [ -n "$ok" ] || { echo "patroni: etcd did not become healthy" >&2; return 1; }

    # -- Patroni members ------------------------------------------------------------------------
    local hosts="127.0.0.1:${ecl[1]},127.0.0.1:${ecl[2]},127.0.0.1:${ecl[3]}"
    local -a pgp rest
    for i in $(seq 1 "$members"); do
        pgp[i]=$(pg_free_port)
        rest[i]=$(pg_free_port)
        mkdir -p "$dir/pg$i/run"
        chmod 700 "$dir/pg$i"
        cat >"$dir/pg$i/patroni.yml" <<EOF
scope: pisgate-$name
namespace: /pisgate/
name: pg$i
log:
  level: INFO
restapi:
  listen: 127.0.0.1:${rest[i]}
  connect_address: 127.0.0.1:${rest[i]}
$dcs:
  hosts: $hosts
bootstrap:
  dcs:
    ttl: 15
    loop_wait: 1
    retry_timeout: 6
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: false
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        fsync: 'on'
        synchronous_commit: 'on'
        full_page_writes: 'on'
        wal_log_hints: 'on'
        wal_level: replica
        hot_standby: 'on'
        max_connections: 300
        shared_buffers: 128MB
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 256MB
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - auth: trust
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:${pgp[i]}
  connect_address: 127.0.0.1:${pgp[i]}
  data_dir: $dir/pg$i/data
  bin_dir: $bindir
  pgpass: $dir/pg$i/pgpass
  authentication:
    superuser:
      username: postgres
    replication:
      username: postgres
    rewind:
      username: postgres
  parameters:
    unix_socket_directories: $dir/pg$i/run
watchdog:
  mode: off
tags:
  nofailover: false
  noloadbalance: false
EOF
    done
    [ "$(id -u)" -eq 0 ] && for i in $(seq 1 "$members"); do chown -R postgres:postgres "$dir/pg$i"; done
    # The first member bootstraps (initdb); the others clone it once it leads (pg_basebackup).
    for i in $(seq 1 "$members"); do
        patroni_spawn_as_owner "$dir/pg$i/patroni.log" patroni "$dir/pg$i/patroni.yml" >"$dir/pg$i/patroni.pid"
        cat "$dir/pg$i/patroni.pid" >>"$dir/pids"
        if [ "$i" -eq 1 ]; then
            for _ in $(seq 1 300); do
                patroni_http "http://127.0.0.1:${rest[1]}/primary" >/dev/null && break
                sleep 0.2
            done
            patroni_http "http://127.0.0.1:${rest[1]}/primary" >/dev/null \
                || { echo "patroni: pg1 did not bootstrap" >&2; tail -n 30 "$dir/pg1/patroni.log" >&2; return 1; }
        fi
    done

    # -- HAProxy: the primary port (GET /primary) and the replica port (GET /replica) ----------
    HAPROXY_PRIMARY_PORT=$(pg_free_port)
    HAPROXY_REPLICA_PORT=$(pg_free_port)
    export HAPROXY_PRIMARY_PORT HAPROXY_REPLICA_PORT
    {
        cat <<EOF
global
    maxconn 2000
    log stderr format short local0 notice

defaults
    mode tcp
    log global
    retries 2
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s

EOF
        # Checked every 500 ms against Patroni's REST API: 2 failed checks mark a member down
        # and shut its sessions (so no client keeps a connection to a demoted or frozen
        # primary); one good check brings it back.
        local listen role port
        for listen in "primary $HAPROXY_PRIMARY_PORT" "replica $HAPROXY_REPLICA_PORT"; do
            read -r role port <<<"$listen"
            printf '\nlisten %s\n    bind 127.0.0.1:%s\n' "$role" "$port"
            [ "$role" = replica ] && echo "    balance roundrobin"
            printf '    option httpchk GET /%s\n    http-check expect status 200\n' "$role"
            echo "    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions"
            for i in $(seq 1 "$members"); do
                echo "    server pg$i 127.0.0.1:${pgp[i]} check port ${rest[i]}"
            done
        done
    } >"$dir/haproxy.cfg"
    haproxy -c -q -f "$dir/haproxy.cfg" || { echo "patroni: bad haproxy.cfg" >&2; return 1; }
    (cd / && exec haproxy -db -f "$dir/haproxy.cfg" >>"$dir/haproxy.log" 2>&1) &
    echo $! >>"$dir/pids"
    echo $! >"$dir/haproxy.pid"
    disown $!

    # -- the topology, for failover.py ------------------------------------------------------------
    {
        printf '{"name": "%s", "dir": "%s", "bindir": "%s", "pids": "%s/pids", "scope": "pisgate-%s", "dcs": "%s",\n' \
            "$name" "$dir" "$bindir" "$dir" "$name" "$dcs"
        printf ' "haproxy_primary": %s, "haproxy_replica": %s,\n' "$HAPROXY_PRIMARY_PORT" "$HAPROXY_REPLICA_PORT"
        printf ' "etcd": ['
        for i in 1 2 3; do
            printf '%s{"name": "e%s", "client": %s, "peer": %s, "args": "%s/etcd/e%s.args", "pid": "%s/etcd/e%s.pid", "log": "%s/etcd/e%s.log"}' \
                "$([ "$i" -gt 1 ] && echo ', ')" "$i" "${ecl[i]}" "${epe[i]}" "$dir" "$i" "$dir" "$i" "$dir" "$i"
        done
        printf '],\n "members": ['
        for i in $(seq 1 "$members"); do
            printf '%s{"name": "pg%s", "port": %s, "rest": %s, "data": "%s/pg%s/data", "config": "%s/pg%s/patroni.yml", "patroni_pid": "%s/pg%s/patroni.pid", "log": "%s/pg%s/patroni.log"}' \
                "$([ "$i" -gt 1 ] && echo ', ')" "$i" "${pgp[i]}" "${rest[i]}" "$dir" "$i" "$dir" "$i" "$dir" "$i" "$dir" "$i"
        done
        printf ']}\n'
    } >"$dir/topology.json"

    # -- wait: a leader, every member streaming, a synchronous standby, HAProxy routing ----------
    local state=""
    for _ in $(seq 1 600); do
        state=$(python3 - "$dir/topology.json" <<'PY' 2>/dev/null || true
import json, sys, urllib.request
t = json.load(open(sys.argv[1]))
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
c = json.load(opener.open(f"http://127.0.0.1:{t['members'][0]['rest']}/cluster", timeout=2))
ms = c.get("members", [])
leader = [m for m in ms if m.get("role") == "leader" and m.get("state") == "running"]
sync = [m for m in ms if m.get("role") == "sync_standby" and m.get("state") in ("running", "streaming")]
streaming = [m for m in ms if m.get("role") != "leader" and m.get("state") in ("running", "streaming")]
ok = len(ms) == len(t["members"]) and leader and sync and len(streaming) == len(ms) - 1
print("ok" if ok else "waiting: " + ", ".join(f"{m.get('name')} {m.get('role')} {m.get('state')}" for m in ms))
PY
)
        [ "$state" = ok ] && break
        sleep 0.2
    done
    [ "$state" = ok ] || { echo "patroni: the cluster did not settle ($state)" >&2; tail -n 20 "$dir"/pg*/patroni.log >&2; return 1; }
    for _ in $(seq 1 100); do
        "$bindir/pg_isready" -q -h 127.0.0.1 -p "$HAPROXY_PRIMARY_PORT" -t 1 2>/dev/null \
            && "$bindir/psql" -qtAX -h 127.0.0.1 -p "$HAPROXY_PRIMARY_PORT" -U postgres -d postgres -c "SELECT 1" >/dev/null 2>&1 \
            && break
        sleep 0.2
    done
    "$bindir/psql" -qtAX -h 127.0.0.1 -p "$HAPROXY_PRIMARY_PORT" -U postgres -d postgres \
        -c "SELECT 1 FROM pg_database WHERE datname = 'pisgate'" | grep -q 1 \
        || "$bindir/psql" -qtAX -h 127.0.0.1 -p "$HAPROXY_PRIMARY_PORT" -U postgres -d postgres -c "CREATE DATABASE pisgate" >/dev/null
}

# The REST API of the first member that answers: /cluster as JSON.
patroni_cluster_json() {
    local dir port
    dir=$(patroni_dir "$1")
    for port in $(python3 -c 'import json,sys;print(" ".join(str(m["rest"]) for m in json.load(open(sys.argv[1]))["members"]))' "$dir/topology.json"); do
        patroni_http "http://127.0.0.1:$port/cluster" && return 0
    done
    return 1
}

patroni_leader() {
    patroni_cluster_json "$1" | python3 -c 'import json,sys;print(next((m["name"] for m in json.load(sys.stdin)["members"] if m.get("role") == "leader"), ""))'
}

patroni_list() {
    local dir
    dir=$(patroni_dir "$1")
    patronictl -c "$dir/pg1/patroni.yml" list -f json
}

# Copies the logs and configuration (not the data) to DEST, for a post-mortem.
patroni_save_logs() {
    local dir
    dir=$(patroni_dir "$1")
    [ -d "$dir" ] || return 0
    mkdir -p "$2"
    (cd "$dir" && find . -path '*/data' -prune -o -path './etcd/e?/*' -prune -o -type f -print \
        | while read -r f; do mkdir -p "$2/$(dirname "$f")"; cp "$f" "$2/$f"; done)
    local d
    for d in "$dir"/pg*/data/log "$dir"/pg*/data/pg_log; do
        [ -d "$d" ] && cp -r "$d" "$2/$(basename "$(dirname "$(dirname "$d")")")-pglog"
    done
    return 0
}

# Every pid of a member's PostgreSQL: the postmaster (postmaster.pid) and its children.
patroni_pg_pids() {
    local data=$1 pm
    [ -f "$data/postmaster.pid" ] || return 0
    pm=$(head -1 "$data/postmaster.pid" 2>/dev/null || true)
    [ -n "$pm" ] && kill -0 "$pm" 2>/dev/null || return 0
    echo "$pm"
    pgrep -P "$pm" 2>/dev/null || true
}

# Whether pid runs (a zombie waiting for its parent to reap it does not).
patroni_alive() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

patroni_cluster_destroy() {
    local name=${1:-dev} dir p all=()
    dir=$(patroni_dir "$name")
    [ -d "$dir" ] || return 0
    # Patroni first (else it restarts what is killed next), with whatever it runs
    # (pg_basebackup, pg_rewind); then PostgreSQL; then etcd and HAProxy. Each is continued
    # first: a SIGSTOPped process would otherwise keep its pid and ports.
    if [ -f "$dir/pids" ]; then
        while read -r p; do
            [ -n "$p" ] || continue
            all+=("$p")
            mapfile -t -O "${#all[@]}" all < <(pgrep -P "$p" 2>/dev/null || true)
        done <"$dir/pids"
    fi
    local data
    for data in "$dir"/pg*/data; do
        [ -d "$data" ] || continue
        mapfile -t -O "${#all[@]}" all < <(patroni_pg_pids "$data")
    done
    for p in "${all[@]}"; do kill -CONT "$p" 2>/dev/null || true; done
    for p in "${all[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${all[@]}"; do
        for _ in $(seq 1 50); do patroni_alive "$p" || break; sleep 0.1; done
    done
    rm -rf "$dir"
}
