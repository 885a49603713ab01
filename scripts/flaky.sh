#!/usr/bin/env bash
# Runs the integration suite N times in a row against one throwaway PostgreSQL cluster and
# prints every test that failed at least once, with its failure count. Builds once.
#
#   scripts/flaky.sh 20                   # 20 runs of everything
#   scripts/flaky.sh 5 -E 'test(/truth/)' # extra arguments go to cargo nextest run
#
# Exits non-zero if any run failed. No retries: a test that needs one is a bug to fix.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
shift || true
source scripts/lib/pg.sh
source scripts/lib/env.sh
cluster="flaky-$$"
out=$(mktemp -d)
cleanup() { pg_destroy "$cluster"; rm -rf "$out"; }
trap cleanup EXIT
pg_start "$cluster"
export PISGATE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
unset DATABASE_URL PGDATABASE
export SQLX_OFFLINE=true
cargo nextest run --no-run --lib --bins --tests --locked >/dev/null
green=0
for i in $(seq 1 "$runs"); do
    started=$(date +%s)
    if cargo nextest run --lib --bins --tests --locked --no-fail-fast "$@" >"$out/run-$i.log" 2>&1; then
        green=$((green + 1))
        verdict=green
    else
        verdict=RED
    fi
    summary=$(grep -E '^\s+Summary' "$out/run-$i.log" | tail -1 | sed 's/^ *//')
    echo "run $i/$runs: $verdict in $(( $(date +%s) - started )) s: $summary"
    grep -E '^\s+(FAIL|TIMEOUT|SIGSEGV|SIGABRT) \[' "$out/run-$i.log" \
        | sed -E 's/^ *[A-Z]+ \[[^]]*\] +(\([^)]*\) +)?//' | sort -u >"$out/failed-$i.txt" || true
    if [ "$verdict" = RED ]; then
        sed 's/^/    failed: /' "$out/failed-$i.txt"
        mkdir -p target-flaky-logs 2>/dev/null && cp "$out/run-$i.log" "target-flaky-logs/run-$i.log" 2>/dev/null || true
    fi
done
echo "== $green of $runs runs green"
failed=$(cat "$out"/failed-*.txt 2>/dev/null | sort | uniq -c | sort -rn)
if [ -n "$failed" ]; then
    echo "== tests that failed at least once (count, test):"
    echo "$failed"
    exit 1
fi
echo "== no test failed"
