#!/usr/bin/env bash
# The resilience suite: PostgreSQL, the Nordea sandbox and `pisgate serve` as separate
# processes, load with unique keys and same-key retries, and faults: SIGKILLs of serve during
# creation and polling, a PostgreSQL restart and a 10 s stop, 5xx, a 429 storm,
# dropped connections, malformed answers, latency beyond pisgate's timeouts, forged and
# replayed callbacks, late signing, signing just before the late-signing horizon with the
# bank's status lagging, a SIGKILL between OP's authorization and pisgate's submission, shoppers who pass the hop but never load the bank's page,
# SEB's BankID page under lost initiation answers, 503s and a SIGKILL. Then it reconciles pisgate's database with the sandbox
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
bg_port=$(pg_free_port)
op_port=$(pg_free_port)
op_app_port=$(pg_free_port)
seb_port=$(pg_free_port)
seb_app_port=$(pg_free_port)

drill_stack_env "$work" "$sandbox_port" resilience-client
export PISGATE__DATABASE__URL=$DATABASE_URL
export PISGATE__DATABASE__ACQUIRE_TIMEOUT_SECS=2
export PISGATE__SERVER__LISTEN="127.0.0.1:$port"
export PISGATE__SERVER__PUBLIC_URL="http://127.0.0.1:$port"
export PISGATE__ADMIN__LISTEN="127.0.0.1:$admin_port"
drill_fast_clock 30
# The fast clock has every open payment polled every 0.5-1 s. The full mode keeps thousands
# open at once, far more than the production pacing of 50 bank calls per second per replica
# serves at that cadence: with it, payments waited minutes for a poll and were still open
# when the drill settled (a full run on 2026-12-06: 2,451 of 16,210). The simulators take
# far more.
export PISGATE__POLLER__RATE_PER_SEC=1000
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
# The Berlin Group bank `berlin` (FI, beside Nordea): the strict simulator with a test PKI.
"$bin" keys test-pki --out "$work/bg" 2>/dev/null
export PISGATE__SANDBOX_BERLIN_GROUP__LISTEN="127.0.0.1:$bg_port"
export PISGATE__SANDBOX_BERLIN_GROUP__TPP_CA_FILE="$work/bg/ca.pem"
export PISGATE__SANDBOX_BERLIN_GROUP__STATUS_STEP_MS=1000
export PISGATE__BANKS__BERLIN__PROTOCOL=berlin-group PISGATE__BANKS__BERLIN__NAME="Berlin Test Bank"
export PISGATE__BANKS__BERLIN__COUNTRIES=FI PISGATE__BANKS__BERLIN__ENVIRONMENT=sandbox
export PISGATE__BANKS__BERLIN__BASE_URL="http://127.0.0.1:$bg_port/psd2"
export PISGATE__BANKS__BERLIN__PRIVATE_KEY_FILE="$work/bg/tpp-key.pem"
export PISGATE__BANKS__BERLIN__CERTIFICATE_FILE="$work/bg/tpp-cert.pem"
export PISGATE__BANKS__BERLIN__PSU_IP_FALLBACK=127.0.0.1
export PISGATE__BANKS__BERLIN__REQUEST_TIMEOUT_SECS=3
# The bank `op` (FI): OP's FAPI simulator over mutual TLS, for the crash between the
# shopper's authorization and the submission (resilience.py's OP phase).
"$bin" keys test-pki --out "$work/op" 2>/dev/null
export PISGATE__SANDBOX_OP__LISTEN="127.0.0.1:$op_port" PISGATE__SANDBOX_OP__APP_LISTEN="127.0.0.1:$op_app_port"
export PISGATE__SANDBOX_OP__TLS_CERTIFICATE_FILE="$work/op/server-cert.pem"
export PISGATE__SANDBOX_OP__TLS_PRIVATE_KEY_FILE="$work/op/server-key.pem"
export PISGATE__SANDBOX_OP__TPP_CA_FILE="$work/op/ca.pem"
export PISGATE__SANDBOX_OP__TPP_SIGNING_CERTIFICATE_FILE="$work/op/tpp-cert.pem"
export PISGATE__SANDBOX_OP__TPP_SIGNING_KEY_ID=resilience-qsealc
export PISGATE__SANDBOX_OP__CLIENT_ID=resilience-op PISGATE__SANDBOX_OP__CLIENT_SECRET=resilience-op-secret
export PISGATE__SANDBOX_OP__API_KEY=resilience-op-api-key
export PISGATE__SANDBOX_OP__REDIRECT_URIS="http://127.0.0.1:$port/v1/callbacks/oidc"
export PISGATE__BANKS__OP__PROTOCOL=op PISGATE__BANKS__OP__NAME=OP PISGATE__BANKS__OP__COUNTRIES=FI
export PISGATE__BANKS__OP__ENVIRONMENT=sandbox PISGATE__BANKS__OP__BASE_URL="https://127.0.0.1:$op_port"
export PISGATE__BANKS__OP__AUTHORIZE_URL="http://127.0.0.1:$op_app_port/oauth/authorize"
export PISGATE__BANKS__OP__ISSUER="http://127.0.0.1:$op_app_port"
export PISGATE__BANKS__OP__JWKS_URL="http://127.0.0.1:$op_app_port/oauth/jwks"
export PISGATE__BANKS__OP__PAYMENTS_JWKS_URL="http://127.0.0.1:$op_app_port/jwks/payments"
export PISGATE__BANKS__OP__CLIENT_ID=resilience-op PISGATE__BANKS__OP__CLIENT_SECRET=resilience-op-secret
export PISGATE__BANKS__OP__API_KEY=resilience-op-api-key
export PISGATE__BANKS__OP__TLS_CERTIFICATE_FILE="$work/op/tpp-cert.pem" PISGATE__BANKS__OP__TLS_PRIVATE_KEY_FILE="$work/op/tpp-key.pem"
export PISGATE__BANKS__OP__TLS_CA_FILE="$work/op/ca.pem"
export PISGATE__BANKS__OP__PRIVATE_KEY_FILE="$work/op/tpp-key.pem" PISGATE__BANKS__OP__CERTIFICATE_FILE="$work/op/tpp-cert.pem"
export PISGATE__BANKS__OP__SIGNING_KEY_ID=resilience-qsealc PISGATE__BANKS__OP__REQUEST_TIMEOUT_SECS=3
# The bank `seb` (SE): SEB's simulator over mutual TLS with its test BankID app, for the
# BankID page under SEB's faults (resilience.py's SEB phase).
"$bin" keys test-pki --out "$work/seb" 2>/dev/null
export PISGATE__SANDBOX_SEB__LISTEN="127.0.0.1:$seb_port" PISGATE__SANDBOX_SEB__APP_LISTEN="127.0.0.1:$seb_app_port"
export PISGATE__SANDBOX_SEB__TLS_CERTIFICATE_FILE="$work/seb/server-cert.pem"
export PISGATE__SANDBOX_SEB__TLS_PRIVATE_KEY_FILE="$work/seb/server-key.pem"
export PISGATE__SANDBOX_SEB__CLIENT_CA_FILE="$work/seb/ca.pem"
export PISGATE__SANDBOX_SEB__CLIENT_ID=resilience-seb PISGATE__SANDBOX_SEB__CLIENT_SECRET=resilience-seb-secret
export PISGATE__SANDBOX_SEB__STATUS_STEP_MS=1000
export PISGATE__BANKS__SEB__PROTOCOL=seb PISGATE__BANKS__SEB__NAME=SEB PISGATE__BANKS__SEB__COUNTRIES=SE
export PISGATE__BANKS__SEB__ENVIRONMENT=sandbox PISGATE__BANKS__SEB__BASE_URL="https://127.0.0.1:$seb_port"
export PISGATE__BANKS__SEB__CLIENT_ID=resilience-seb PISGATE__BANKS__SEB__CLIENT_SECRET=resilience-seb-secret
export PISGATE__BANKS__SEB__TLS_CERTIFICATE_FILE="$work/seb/tpp-cert.pem" PISGATE__BANKS__SEB__TLS_PRIVATE_KEY_FILE="$work/seb/tpp-key.pem"
export PISGATE__BANKS__SEB__TLS_CA_FILE="$work/seb/ca.pem"
export PISGATE__BANKS__SEB__PSU_IP_FALLBACK=127.0.0.1 PISGATE__BANKS__SEB__REQUEST_TIMEOUT_SECS=3
export PISGATE__BANKS__SEB__BANKID_APP_URL="http://127.0.0.1:$seb_app_port/test-bankid"

"$bin" migrate >/dev/null
"$bin" merchant create --name "Resilience shop" --return-origin "https://shop.example" >"$work/merchant.json"
"$bin" sandbox >"$work/sandbox.log" 2>&1 &
echo $! >>"$pids_file"
"$bin" sandbox --protocol berlin-group >"$work/bg-sandbox.log" 2>&1 &
echo $! >>"$pids_file"
"$bin" sandbox --protocol op >"$work/op-sandbox.log" 2>&1 &
echo $! >>"$pids_file"
"$bin" sandbox --protocol seb >"$work/seb-sandbox.log" 2>&1 &
echo $! >>"$pids_file"

python3 scripts/resilience.py --mode "$mode" --bin "$bin" --work "$work" \
    --base "http://127.0.0.1:$port" --admin "http://127.0.0.1:$admin_port" --sandbox "http://127.0.0.1:$sandbox_port" --bg-sandbox "http://127.0.0.1:$bg_port" --op-app "http://127.0.0.1:$op_app_port" --seb-app "http://127.0.0.1:$seb_app_port" \
    --pg-bindir "$(pg_bindir)" --pg-data "$PG_STATE_DIR/pg-$cluster" --pids "$pids_file"
