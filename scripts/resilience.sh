#!/usr/bin/env bash
# The resilience suite: PostgreSQL, the Nordea sandbox and `pisgate serve` as separate
# processes, load with unique keys and same-key retries, and faults: SIGKILLs of serve during
# creation and polling, a PostgreSQL restart and a 10 s stop, sandbox 5xx, a 429 storm,
# dropped connections, malformed answers, latency beyond pisgate's timeouts, forged and
# replayed callbacks, late signing, signing just before the late-signing horizon with the
# bank's status lagging, shoppers who pass the hop but never load the bank's page. Then it reconciles pisgate's database with the sandbox
# bank's records and prints one table. Exits non-zero unless lost, doubled and
# disagreements are all 0.
#
#   scripts/resilience.sh            # full: release build, 10 kill rounds, every fault
#   scripts/resilience.sh --quick    # under 3 minutes, debug build (scripts/test.sh runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh
source scripts/lib/env.sh
source scripts/lib/drill.sh

mode=full
[ "${1:-}" = "--quick" ] && mode=quick

drill_build "$mode"

cluster="resilience-$$"
drill_workdir
cleanup() {
    drill_kill_pids
    pg_destroy "$cluster"
    rm -rf "$work"
}
trap cleanup EXIT
pg_start "$cluster"

port=$(pg_free_port)
admin_port=$(pg_free_port)
sandbox_port=$(pg_free_port)

drill_stack_env "$work" "$sandbox_port" resilience-client
export PISGATE__DATABASE__URL=$DATABASE_URL
export PISGATE__DATABASE__ACQUIRE_TIMEOUT_SECS=2
export PISGATE__SERVER__LISTEN="127.0.0.1:$port"
export PISGATE__SERVER__PUBLIC_URL="http://127.0.0.1:$port"
export PISGATE__ADMIN__LISTEN="127.0.0.1:$admin_port"
drill_fast_clock 30
# The horizon case (resilience.py's plan sign_at_horizon): the bank confirms a signature only
# after 3 s (PendingUserApproval until then), and its own approval timeout comes after the
# 30 s horizon, so it is pisgate's delete at the horizon that ends an unsigned payment (with
# that shopper's own token; without one, the bank's timeout does, or for a link nobody opened
# at the bank, which the bank answers 404 for even after its timeout, pisgate's knowing that
# timeout: nordea.approval_timeout_secs, the same 45 s).
export PISGATE__SANDBOX__CONFIRM_DELAY_MS=3000
export PISGATE__SANDBOX__APPROVAL_TIMEOUT_SECS=45
export PISGATE__NORDEA__APPROVAL_TIMEOUT_SECS=45
export PISGATE__WEBHOOKS__ENABLED=false
# The load here is one merchant far above a real one's budget.
export PISGATE__RATE_LIMIT__REQUESTS_PER_WINDOW=1000000
export RUST_LOG=warn

"$bin" migrate >/dev/null
"$bin" merchant create --name "Resilience shop" --return-origin "https://shop.example" >"$work/merchant.json"
"$bin" sandbox >"$work/sandbox.log" 2>&1 &
echo $! >>"$pids_file"

python3 scripts/resilience.py --mode "$mode" --bin "$bin" --work "$work" \
    --base "http://127.0.0.1:$port" --admin "http://127.0.0.1:$admin_port" --sandbox "http://127.0.0.1:$sandbox_port" \
    --pg-bindir "$(pg_bindir)" --pg-data "$PG_STATE_DIR/pg-$cluster" --pids "$pids_file"
