# shellcheck shell=bash
# What the drills (scripts/resilience.sh, failover.sh, scale.sh) share: the pisgate binary
# they run, and the settings of a `serve` + sandbox stack on 127.0.0.1 with fresh keys.
#
#   source scripts/lib/env.sh scripts/lib/drill.sh
#   drill_build full|quick                     # sets $bin: release or debug build
#                                              # (PISGATE_BIN=/path skips the build)
#   drill_stack_env WORK SANDBOX_PORT CLIENT   # keys into WORK; exports the PISGATE_*
#                                              # settings every drill shares (the bank is the
#                                              # sandbox on SANDBOX_PORT, client id CLIENT)
#   drill_fast_clock LATE_SIGNING_HORIZON_SECS # a bank and workers on a seconds scale, so
#                                              # payments end within a drill's minutes
#   drill_workdir                              # sets $work (a temp dir) and $pids_file
#   drill_kill_pids                            # SIGKILLs every pid in $pids_file
#   drill_poolers NAME PG_PORT POOL            # PgBouncer 1.24 (max_prepared_statements
#                                              # $max_prepared, default 200) and Debian's 1.18
#                                              # on PG_PORT: sets $prepared_bin, $best_port
#                                              # (1.24) and $ref_port (1.18)
#   drill_poolers_stop NAME                    # stops both and removes their dirs

drill_build() {
    if [ -n "${PISGATE_BIN:-}" ]; then
        bin=$PISGATE_BIN
    elif [ "$1" = full ]; then
        echo "== building pisgate (release)"
        cargo build --locked --release --bin pisgate
        bin="$CARGO_TARGET_DIR/release/pisgate"
    else
        echo "== building pisgate (debug)"
        cargo build --locked --bin pisgate
        bin="$CARGO_TARGET_DIR/debug/pisgate"
    fi
}

drill_random_key() {
    python3 -c 'import base64,os;print(base64.b64encode(os.urandom(32)).decode())' >"$1"
}

drill_stack_env() {
    local work=$1 sandbox_port=$2 client=$3
    "$bin" keys generate --out "$work/keys" >/dev/null
    drill_random_key "$work/token-key"
    drill_random_key "$work/ledger-key"
    export PISGATE_ENV=sandbox
    export PISGATE__SANDBOX__LISTEN="127.0.0.1:$sandbox_port"
    export PISGATE__SANDBOX__CLIENT_ID=$client
    export PISGATE__SANDBOX__CLIENT_SECRET="$client-secret"
    export PISGATE__SANDBOX__PUBLIC_KEY_FILE="$work/keys/public.pem"
    export PISGATE__NORDEA__BASE_URL="http://127.0.0.1:$sandbox_port/personal"
    export PISGATE__NORDEA__CLIENT_ID=$client
    export PISGATE__NORDEA__CLIENT_SECRET="$client-secret"
    export PISGATE__NORDEA__PRIVATE_KEY_FILE="$work/keys/private.pem"
    export PISGATE__TOKENS__ENCRYPTION_KEY_FILE="$work/token-key"
    export PISGATE__LEDGER__KEY_FILE="$work/ledger-key"
    export PISGATE__TELEMETRY__LOG_FORMAT=json
}

drill_fast_clock() {
    export PISGATE__SANDBOX__CONFIRM_DELAY_MS=500
    export PISGATE__SANDBOX__PAID_DELAY_MS=1000
    export PISGATE__SANDBOX__APPROVAL_TIMEOUT_SECS=20
    export PISGATE__NORDEA__APPROVAL_TIMEOUT_SECS=20
    export PISGATE__NORDEA__REQUEST_TIMEOUT_SECS=3
    export PISGATE__PAYMENTS__SIGNING_WINDOW_SECS=10
    export PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS=$1
    export PISGATE__PAYMENTS__IDEMPOTENCY_STALE_AFTER_SECS=6
    export PISGATE__POLLER__SIGNING_INTERVAL=500ms
    export PISGATE__POLLER__LATE_SIGNING_INTERVAL=1s
    export PISGATE__POLLER__AUTHORIZED_INTERVAL=1s
    export PISGATE__POLLER__LEASE=15s
    export PISGATE__POLLER__MAX_BACKOFF=2s
    export PISGATE__POLLER__IDLE_WAIT=1s
}

drill_workdir() {
    work=$(mktemp -d)
    pids_file="$work/pids"
    : >"$pids_file"
}

drill_kill_pids() {
    local p
    while read -r p; do
        if [ -n "$p" ]; then kill -KILL "$p" 2>/dev/null || true; fi
    done <"$pids_file"
}

drill_poolers() {
    prepared_bin=$(pgbouncer_ensure_prepared_capable)
    PGBOUNCER_BIN=$prepared_bin PGBOUNCER_MAX_PREPARED_STATEMENTS=${max_prepared:-200} \
        pgbouncer_start "$1" "$2" "$3"
    best_port=$PGBOUNCER_PORT
    pgbouncer_start "$1-118" "$2" "$3"
    ref_port=$PGBOUNCER_PORT
}

drill_poolers_stop() {
    pgbouncer_stop "$1" || true
    pgbouncer_stop "$1-118" || true
    rm -rf "$(pgbouncer_dir "$1")" "$(pgbouncer_dir "$1-118")"
}
