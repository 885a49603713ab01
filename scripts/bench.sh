#!/usr/bin/env bash
# Runs the benchmarks against a throwaway PostgreSQL cluster and prints their numbers.
#
#   scripts/bench.sh              # RSA request signing (benches/signing.rs) and the workers
#                                 # (benches/workers.rs: polls/s of one replica, and the delay
#                                 # from a bank status change to the webhook), in process
#   scripts/bench.sh e2e          # end to end: release build, durable PostgreSQL, the sandbox
#                                 # and serve as separate processes, wrk at 8/32/128
#                                 # connections beside the pgbench floor (scripts/bench_e2e.py)
#   scripts/bench.sh e2e --quick  # the same in a few seconds on the debug build (CI smoke)
#   PISGATE_BIN=/path/to/pisgate scripts/bench.sh e2e   # that binary, no build
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh
source scripts/lib/env.sh
export SQLX_OFFLINE=true

if [ "${1:-}" = "e2e" ]; then
    shift
    if ! command -v wrk >/dev/null 2>&1; then
        echo "wrk is missing; installing Debian's wrk" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
    fi
    if [ -n "${PISGATE_BIN:-}" ]; then
        # A binary given (e.g. a copy of an earlier build, to compare two commits).
        export PISGATE_BIN
    elif [ "${1:-}" = "--quick" ]; then
        cargo build --locked --bin pisgate
        export PISGATE_BIN="$CARGO_TARGET_DIR/debug/pisgate"
    else
        cargo build --release --locked --bin pisgate
        export PISGATE_BIN="$CARGO_TARGET_DIR/release/pisgate"
    fi
    cluster="bench-e2e-$$"
    # PostgreSQL's log is kept (BENCH_PG_LOG) and summed up at the end: statements slower than
    # 500 ms (a COMMIT among them is a WAL flush the disk held up), lock waits past 100 ms,
    # checkpoints and autovacuum runs. A stalled run (a 5 s wait for a pool connection at 128
    # connections) is explained there or ruled out.
    pg_log=${BENCH_PG_LOG:-/tmp/pisgate-bench-postgres.log}
    bench_pg_log() {
        local log="$PG_STATE_DIR/pg-$cluster/server.log"
        [ -f "$log" ] || return 0
        cp "$log" "$pg_log"
        echo
        echo "PostgreSQL's log during the benchmark ($pg_log):"
        echo "| event | count |"
        echo "|---|---:|"
        printf '| statements slower than 500 ms | %s |\n' "$(grep -c 'duration: ' "$pg_log" || true)"
        printf '| of them COMMIT | %s |\n' "$(grep 'duration: ' "$pg_log" | grep -ci 'statement: COMMIT' || true)"
        printf '| lock waits past 100 ms | %s |\n' "$(grep -c 'still waiting for' "$pg_log" || true)"
        printf '| checkpoints | %s |\n' "$(grep -c 'checkpoint complete' "$pg_log" || true)"
        printf '| autovacuum/autoanalyze runs | %s |\n' "$(grep -cE 'automatic (vacuum|analyze)' "$pg_log" || true)"
        grep -E 'duration: |still waiting for' "$pg_log" | sort -t: -k5 -rn | head -5 | cut -c1-240 || true
    }
    trap 'bench_pg_log; pg_destroy "$cluster"' EXIT
    # Durable: fsync, synchronous_commit and full_page_writes at their defaults (on). No
    # checkpoint inside a measured run: bench_e2e.py takes one before the warm-up (checkpoint_first).
    PG_DURABILITY="-c fsync=on" \
        PG_EXTRA_OPTIONS="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_utility=on -c pg_stat_statements.track_planning=on -c max_wal_size=8GB -c checkpoint_timeout=1h -c log_min_duration_statement=500 -c log_lock_waits=on -c deadlock_timeout=100ms -c log_checkpoints=on -c log_autovacuum_min_duration=0" \
        pg_start "$cluster"
    psql -q -d pisgate -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
    export PGBENCH="$(pg_bindir)/pgbench"
    PATH="$(pg_bindir):$PATH" python3 scripts/bench_e2e.py "$@"
    exit
fi

cluster="bench-$$"
trap 'pg_destroy "$cluster"' EXIT
pg_start "$cluster"
export PISGATE_BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
cargo bench --locked --bench signing --bench workers "$@"
