#!/usr/bin/env bash
# Runs the whole suite on this machine: formatting, clippy, unit and integration tests
# against a throwaway PostgreSQL cluster started here and removed afterwards.
#
#   scripts/test.sh                 # everything, with the quick modes of the resilience
#                                   # suite, the benchmark, the scale check and the failover drill
#   scripts/test.sh -E 'test(foo)'  # extra arguments go to cargo nextest run (and skip the
#                                   # resilience suite and the PgBouncer pass)
#   scripts/test.sh --pgbouncer [-E …]  # only the integration tests, with pisgate reaching
#                                   # PostgreSQL through PgBouncer 1.18 in transaction mode
#                                   # (PGBOUNCER_PASS=prepared with -E: through the 1.24 one)
#
# The whole run (no arguments) runs the integration tests twice: straight to PostgreSQL,
# then with every pisgate under test behind PgBouncer in transaction mode (found by
# database.pooler = "auto"; LISTEN and migrations on the direct URL): Debian's 1.18
# ("transaction") for one part, a 1.24 with prepared statements ("transaction-prepared")
# for the other, and not the bank-protocol modules (see nextest_through_pgbouncer).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source scripts/lib/pg.sh
source scripts/lib/pgbouncer.sh
source scripts/lib/pgbouncer-build.sh
source scripts/lib/env.sh

only_pgbouncer=
if [ "${1:-}" = "--pgbouncer" ]; then
    only_pgbouncer=yes
    shift
fi

# Each step's header carries the wall clock, so a slow step shows in CI's log.
suite_started=$(date +%s)
step() { echo "== [$(date -u +%T), +$(( $(date +%s) - suite_started ))s] $*"; }

cluster="test-$$"
cleanup() {
    ! declare -F prefetch_wait >/dev/null || prefetch_wait
    pgbouncer_stop "$cluster"
    pgbouncer_stop "$cluster-prepared"
    pg_destroy "$cluster"
}
trap cleanup EXIT
pg_start "$cluster"
# Tests create one database per test from a migrated template on this cluster.
export PISGATE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
unset DATABASE_URL PGDATABASE
export SQLX_OFFLINE=true

# The integration tests once more, each pisgate behind a PgBouncer in transaction mode (the
# tests themselves create and inspect their databases directly: tests/api/helpers.rs), in
# two halves: Debian's PgBouncer 1.18, where database.pooler = "auto" settles on
# "transaction" (DEALLOCATE ALL, every query in a transaction), and a PgBouncer 1.24 built
# from Debian's source (scripts/lib/pgbouncer-build.sh) with max_prepared_statements, where
# it settles on "transaction-prepared". The bank-protocol modules (one adapter each, their
# database work is the same payment flow the other modules drive) run in the first pass only.
PROTOCOL_MODULES='seb|op|op_flow|berlin_group|berlin_group_sca|bg_aspsp|bankid_flow|nordea|banks|scenarios'
PREPARED_MODULES='truth|payments|payment_search|ledger|tamper|events|webhooks|deferred|console|consent'
# Run through both: how an outage is answered depends on the pooler mode.
BOTH_MODULES='outages'
nextest_through_pgbouncer() {
    ensure_promtool
    # One database per test, so one PgBouncer pool per test: idle server connections are
    # closed after 2 s, or the finished tests' pools would pile up past max_connections.
    # Two more entries for the pooler probe's test (tests/api/pooler.rs): the same cluster
    # in session and in statement mode.
    pgbouncer_ensure_prepared_capable >/dev/null
    PGBOUNCER_BIN=$PGBOUNCER_PREPARED_BIN PGBOUNCER_MAX_PREPARED_STATEMENTS=200 \
        PGBOUNCER_SERVER_IDLE_TIMEOUT=2 pgbouncer_start "$cluster-prepared" "$PG_PORT" 10
    local prepared="postgres://postgres@127.0.0.1:$PGBOUNCER_PORT/postgres"
    PGBOUNCER_SERVER_IDLE_TIMEOUT=2 PGBOUNCER_EXTRA_DATABASES="\
pisgate_probe_session = host=127.0.0.1 port=$PG_PORT dbname=postgres pool_mode=session
pisgate_probe_statement = host=127.0.0.1 port=$PG_PORT dbname=postgres pool_mode=statement" \
        pgbouncer_start "$cluster" "$PG_PORT" 10
    local plain="postgres://postgres@127.0.0.1:$PGBOUNCER_PORT/postgres"
    # Only the integration tests (tests/api): they are the ones that start a pisgate on a
    # database; the unit tests beside the code never reach PgBouncer (PISGATE_TEST_PGBOUNCER_URL
    # is read only in tests/api) and ran in the first pass.
    export PISGATE_TEST_PGBOUNCER_PREPARED_URL=$prepared
    if [ $# -gt 0 ]; then
        # PGBOUNCER_PASS=prepared: the filtered run goes through the 1.24 one instead.
        if [ "${PGBOUNCER_PASS:-}" = prepared ]; then
            step "cargo nextest through PgBouncer 1.24 (transaction pooling with prepared statements, $prepared)"
            PISGATE_TEST_PGBOUNCER_URL=$prepared cargo nextest run --test api --locked --no-fail-fast "$@"
            return
        fi
        step "cargo nextest through PgBouncer 1.18 (transaction pooling, $plain)"
        PISGATE_TEST_PGBOUNCER_URL=$plain cargo nextest run --test api --locked --no-fail-fast "$@"
        return
    fi
    # Two tests per core, at most 8 (NEXTEST_TEST_THREADS overrides it): at nextest's
    # default of one per core the two passes kept 2 cores 45% busy and took 153 s + 85 s; at
    # four, 68% and 88 s + 58 s (2026-12-07), every test passing. The bound keeps a big
    # machine within the cluster's max_connections (300): a test's database has a PgBouncer
    # pool of up to 10 server connections and its direct ones.
    local threads=${NEXTEST_TEST_THREADS:-$(( 2 * $(nproc) < 8 ? 2 * $(nproc) : 8 ))}
    step "cargo nextest through PgBouncer 1.18 (transaction pooling, $plain)"
    PISGATE_TEST_PGBOUNCER_URL=$plain cargo nextest run --test api --locked --no-fail-fast \
        --test-threads "$threads" -E "not test(/^($PROTOCOL_MODULES|$PREPARED_MODULES)::/)"
    step "cargo nextest through PgBouncer 1.24 (transaction pooling with prepared statements, $prepared)"
    PISGATE_TEST_PGBOUNCER_URL=$prepared cargo nextest run --test api --locked --no-fail-fast \
        --test-threads "$threads" -E "test(/^($PREPARED_MODULES|$BOTH_MODULES)::/)"
}

# The metrics tests run `promtool check metrics` on a scrape.
ensure_promtool() {
    if ! command -v promtool >/dev/null 2>&1; then
        echo "promtool is missing; installing Debian's prometheus package" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
    fi
}

if [ -n "$only_pgbouncer" ]; then
    nextest_through_pgbouncer "$@"
    exit 0
fi

# On a fresh machine the tools later steps need (Debian's chromium, Patroni, etcd, HAProxy,
# PgBouncer, prometheus; the PgBouncer build; the browser tests' npm packages) are installed
# in the background while clippy compiles: downloads against CPU (its saving on a fresh
# machine is not measured yet). Every step still installs what it lacks itself; the run waits for this before
# the first step that needs any of it, so no two apt-gets meet. Its output is kept apart
# and shown if it failed.
# A filtered run (arguments) needs none of it. The job is waited for on exit too, so that a
# run that fails early leaves no apt-get or npm behind to meet the next run's.
prefetch_pid=
prefetch_log=$(mktemp)
if [ $# -eq 0 ]; then
    (
        set -e
        # Below clippy's priority: the PgBouncer build competes for the same two cores.
        renice -n 10 -p "$BASHPID" >/dev/null 2>&1 || true
        source scripts/lib/browser.sh
        source scripts/lib/patroni.sh
        browser_ensure
        patroni_ensure_installed
        pgbouncer_ensure_installed
        pgbouncer_ensure_prepared_capable >/dev/null
        ensure_promtool
    ) >"$prefetch_log" 2>&1 &
    prefetch_pid=$!
fi
prefetch_wait() {
    [ -n "${prefetch_pid:-}" ] || return 0
    if ! wait "$prefetch_pid"; then
        echo "installing the tools in the background failed (each step installs what it lacks):" >&2
        cat "$prefetch_log" >&2
    fi
    prefetch_pid=
    rm -f "$prefetch_log"
}

step "cargo fmt --check"
cargo fmt --all -- --check
step "scripts/readme-check.sh (README.md rendered: tables, links, anchors, commands)"
bash scripts/readme-check.sh
step "scripts/bg-aspsp-check.sh (the independent strict Berlin Group ASPSP's own tests)"
bash scripts/bg-aspsp-check.sh
# The venv exists now: the tests that run pisgate against that ASPSP must not skip.
export PISGATE_REQUIRE_BG_ASPSP=1
step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
# The debug binary and every test binary in one cargo run, used by every step below: a cold
# run compiled the graph twice before (the smoke test's build, then nextest's with the
# dev-dependencies' features): 536 s of building, now 427 s.
step "cargo build (the debug binary and the test binaries)"
cargo nextest run --no-run --lib --bins --tests --locked
# Every script below runs this binary (built with the tests' features) instead of building
# its own: a plain `cargo build` would compile much of the graph again without them.
export PISGATE_BIN="$CARGO_TARGET_DIR/debug/pisgate"
prefetch_wait
step "scripts/run.sh smoke test"
bash scripts/smoke-run.sh
step "scripts/browser-test.sh (the shopper's consent page in Debian's chromium)"
bash scripts/browser-test.sh
step "scripts/deploy-check.sh (kustomize, kubernetes-validate, checkov, promtool, hadolint)" && bash scripts/deploy-check.sh
step "scripts/openapi-check.sh (openapi-spec-validator, Redocly's recommended lint)"
bash scripts/openapi-check.sh
step "scripts/schemathesis.sh (the merchant API fuzzed from its served OpenAPI document)"
bash scripts/schemathesis.sh
step "scripts/sdk-check.sh (a Python SDK and a tsc --strict TypeScript client generated from openapi.json create payments and list their events)"
bash scripts/sdk-check.sh
if [ $# -eq 0 ]; then
    # The resilience suite's short mode (the full one: scripts/resilience.sh).
    step "scripts/resilience.sh --quick"
    bash scripts/resilience.sh --quick
    # The end-to-end benchmark's smoke run (the full one: scripts/bench.sh e2e).
    step "scripts/bench.sh e2e --quick"
    bash scripts/bench.sh e2e --quick
    # Scale-out: three replicas through PgBouncer (the full one adds the benchmark runs).
    step "scripts/scale.sh --quick"
    bash scripts/scale.sh --quick
    # The failover drill's short mode (the full one: scripts/failover.sh).
    step "scripts/failover.sh --quick"
    bash scripts/failover.sh --quick
fi
ensure_promtool
step "cargo nextest"
# Two test threads more than cores: most long tests wait on a simulated bank's clock (the
# horizon, signing windows), so a third thread on 2 cores cut the run from ~380 s to ~300 s,
# and with a fourth it took 307 s (321 s at three in the CI run before; 2026-12-07), every
# test passing.
# NEXTEST_TEST_THREADS overrides it, here and in the PgBouncer passes below.
# At most 16 (the cluster's max_connections, 300, against each test's pools).
cargo nextest run --lib --bins --tests --locked --no-fail-fast \
    --test-threads "${NEXTEST_TEST_THREADS:-$(( $(nproc) + 2 < 16 ? $(nproc) + 2 : 16 ))}" "$@"
if [ $# -eq 0 ]; then
    nextest_through_pgbouncer
fi
step "done"
