# shellcheck shell=bash
# A whole local stack for checks that talk to a running service: scripts/run.sh on free
# ports with its own cluster, stopped (cluster removed) when the calling script exits.
#
#   source scripts/lib/stack.sh; stack_start fuzz
#   # then: $STACK_PORT (public), $STACK_ADMIN_PORT, $STACK_KEY (the demo merchant's key)
# shellcheck source=scripts/lib/pg.sh
source "$(dirname "${BASH_SOURCE[0]}")/pg.sh"

stack_start() {
    STACK_PORT=$(pg_free_port)
    STACK_ADMIN_PORT=$(pg_free_port)
    export PISGATE_SANDBOX_PORT=$(pg_free_port) PISGATE_BG_SANDBOX_PORT=$(pg_free_port)
    STACK_CLUSTER="$1-$$"
    STACK_LOG=$(mktemp)
    PISGATE_PORT=$STACK_PORT PISGATE_ADMIN_PORT=$STACK_ADMIN_PORT PISGATE_RUN_CLUSTER=$STACK_CLUSTER \
        setsid bash scripts/run.sh >"$STACK_LOG" 2>&1 &
    STACK_RUNNER=$!
    trap stack_stop EXIT
    for _ in $(seq 1 600); do
        if grep -q "pisgate is running" "$STACK_LOG"; then break; fi
        kill -0 "$STACK_RUNNER" 2>/dev/null || {
            cat "$STACK_LOG" >&2
            echo "run.sh exited early" >&2
            exit 1
        }
        sleep 0.5
    done
    STACK_KEY=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["api_key"])' \
        ".pisgate/demo-merchant-$STACK_CLUSTER.json")
    export STACK_PORT STACK_ADMIN_PORT STACK_KEY
}

stack_stop() {
    kill -TERM -- "-$STACK_RUNNER" 2>/dev/null || true
    wait "$STACK_RUNNER" 2>/dev/null || true
    pg_destroy "$STACK_CLUSTER"
    rm -f "$STACK_LOG" ".pisgate/demo-merchant-$STACK_CLUSTER.json"
}
