# shellcheck shell=bash
# The local stack's settings, shared by scripts/run.sh (which starts it) and scripts/pisgate
# (which runs the CLI against it): its ports, its secrets under .pisgate/ (made once) and the
# PISGATE__* variables of `pisgate serve`, `pisgate sandbox` and the operator commands.
#
#   source scripts/lib/pg.sh; source scripts/lib/local.sh
#   local_ports                # port, admin_port, sandbox_port (PISGATE_PORT, ... override)
#   pg_start "$cluster"
#   local_settings "$bin"      # exports the settings; makes the secrets on first use

local_state="$PISGATE_ROOT/.pisgate"

local_ports() {
    port=${PISGATE_PORT:-8080}
    sandbox_port=${PISGATE_SANDBOX_PORT:-$((port + 10))}
    bg_sandbox_port=${PISGATE_BG_SANDBOX_PORT:-$((port + 12))}
    # The SEB simulator: its API (HTTPS, mutual TLS) and its test BankID app (plain HTTP).
    seb_sandbox_port=${PISGATE_SEB_SANDBOX_PORT:-$((port + 14))}
    seb_app_port=${PISGATE_SEB_APP_PORT:-$((port + 15))}
    # The OP simulator: its API and token endpoint (HTTPS, mutual TLS) and its plain HTTP
    # side (the authorization page with Approve/Reject, the JWKS, admin).
    op_sandbox_port=${PISGATE_OP_SANDBOX_PORT:-$((port + 16))}
    op_app_port=${PISGATE_OP_APP_PORT:-$((port + 17))}
    admin_port=${PISGATE_ADMIN_PORT:-$((port + 1010))}
}

# Needs DATABASE_URL (pg_start sets it) and the pisgate binary (to make the key pair).
local_settings() {
    local bin=$1 keys="$local_state/keys" secret
    mkdir -p "$local_state"
    export PISGATE__DATABASE__URL=$DATABASE_URL
    export PISGATE__SERVER__LISTEN="127.0.0.1:$port"
    export PISGATE__SERVER__PUBLIC_URL=${PISGATE__SERVER__PUBLIC_URL:-http://127.0.0.1:$port}
    export PISGATE__ADMIN__LISTEN="127.0.0.1:$admin_port"
    export PISGATE_ENV=${PISGATE_ENV:-sandbox}
    export PISGATE_CONFIG_DIR=${PISGATE_CONFIG_DIR:-$PISGATE_ROOT/config}

    # Local secrets, made once: the app's signing key pair (the sandbox gets the public
    # half), the key that encrypts shoppers' tokens at rest and the key that signs the ledger.
    [ -s "$keys/private.pem" ] || "$bin" keys generate --out "$keys" >&2
    for secret in token-key ledger-key; do
        [ -s "$local_state/$secret" ] || (umask 077 && "$bin" keys "$secret" >"$local_state/$secret")
        chmod 600 "$local_state/$secret"
    done

    export PISGATE__SANDBOX__LISTEN="127.0.0.1:$sandbox_port"
    export PISGATE__SANDBOX__CLIENT_ID=local-client
    export PISGATE__SANDBOX__CLIENT_SECRET=local-secret
    export PISGATE__SANDBOX__PUBLIC_KEY_FILE="$keys/public.pem"
    export PISGATE__NORDEA__BASE_URL="http://127.0.0.1:$sandbox_port/personal"
    export PISGATE__NORDEA__CLIENT_ID=local-client
    export PISGATE__NORDEA__CLIENT_SECRET=local-secret
    export PISGATE__NORDEA__PRIVATE_KEY_FILE="$keys/private.pem"
    # The bank `berlin` (FI): the strict Berlin Group simulator, with a throwaway test CA
    # and TPP certificate (made once) standing in for a QSealC. PISGATE_LOCAL_BANKS=nordea
    # leaves it out.
    if [[ ",${PISGATE_LOCAL_BANKS:-nordea,berlin}," == *,berlin,* ]]; then
        [ -s "$keys/berlin/tpp-cert.pem" ] || "$bin" keys test-pki --out "$keys/berlin" >&2
        export PISGATE__SANDBOX_BERLIN_GROUP__LISTEN="127.0.0.1:$bg_sandbox_port"
        export PISGATE__SANDBOX_BERLIN_GROUP__TPP_CA_FILE="$keys/berlin/ca.pem"
        export PISGATE__BANKS__BERLIN__PROTOCOL=berlin-group
        export PISGATE__BANKS__BERLIN__NAME="Berlin Test Bank"
        export PISGATE__BANKS__BERLIN__COUNTRIES=FI
        export PISGATE__BANKS__BERLIN__ENVIRONMENT=sandbox
        export PISGATE__BANKS__BERLIN__BASE_URL="http://127.0.0.1:$bg_sandbox_port/psd2"
        export PISGATE__BANKS__BERLIN__PRIVATE_KEY_FILE="$keys/berlin/tpp-key.pem"
        export PISGATE__BANKS__BERLIN__CERTIFICATE_FILE="$keys/berlin/tpp-cert.pem"
        export PISGATE__BANKS__BERLIN__PSU_IP_FALLBACK=127.0.0.1
    fi
    # The bank `seb` (SE): the strict SEB simulator over mutual TLS, with the same kind of
    # throwaway test PKI (a CA, its server certificate for 127.0.0.1 and the TPP's QWAC).
    # Its "open BankID on this device" link goes to the simulator's test BankID app, a page
    # with Approve and Reject that stands in for the phone. PISGATE_LOCAL_BANKS leaves it out.
    if [[ ",${PISGATE_LOCAL_BANKS:-nordea,berlin,seb}," == *,seb,* ]]; then
        [ -s "$keys/seb/server-cert.pem" ] || "$bin" keys test-pki --out "$keys/seb" >&2
        export PISGATE__SANDBOX_SEB__LISTEN="127.0.0.1:$seb_sandbox_port"
        export PISGATE__SANDBOX_SEB__APP_LISTEN="127.0.0.1:$seb_app_port"
        export PISGATE__SANDBOX_SEB__TLS_CERTIFICATE_FILE="$keys/seb/server-cert.pem"
        export PISGATE__SANDBOX_SEB__TLS_PRIVATE_KEY_FILE="$keys/seb/server-key.pem"
        export PISGATE__SANDBOX_SEB__CLIENT_CA_FILE="$keys/seb/ca.pem"
        export PISGATE__SANDBOX_SEB__CLIENT_ID=local-seb-client
        export PISGATE__SANDBOX_SEB__CLIENT_SECRET=local-seb-secret
        export PISGATE__BANKS__SEB__PROTOCOL=seb
        export PISGATE__BANKS__SEB__NAME=SEB
        export PISGATE__BANKS__SEB__COUNTRIES=SE
        export PISGATE__BANKS__SEB__ENVIRONMENT=sandbox
        export PISGATE__BANKS__SEB__BASE_URL="https://127.0.0.1:$seb_sandbox_port"
        export PISGATE__BANKS__SEB__CLIENT_ID=local-seb-client
        export PISGATE__BANKS__SEB__CLIENT_SECRET=local-seb-secret
        export PISGATE__BANKS__SEB__TLS_CERTIFICATE_FILE="$keys/seb/tpp-cert.pem"
        export PISGATE__BANKS__SEB__TLS_PRIVATE_KEY_FILE="$keys/seb/tpp-key.pem"
        export PISGATE__BANKS__SEB__TLS_CA_FILE="$keys/seb/ca.pem"
        export PISGATE__BANKS__SEB__PSU_IP_FALLBACK=127.0.0.1
        export PISGATE__BANKS__SEB__BANKID_APP_URL="http://127.0.0.1:$seb_app_port/test-bankid"
    fi
    # The bank `op` (FI): OP's strict FAPI simulator over mutual TLS, with its own throwaway
    # test PKI (the TPP certificate is both the QWAC and the QSealC that signs the request
    # objects). The shopper approves on the simulator's authorization page and comes back to
    # pisgate's /v1/callbacks/oidc, registered there. PISGATE_LOCAL_BANKS leaves it out.
    if [[ ",${PISGATE_LOCAL_BANKS:-nordea,berlin,seb,op}," == *,op,* ]]; then
        [ -s "$keys/op/server-cert.pem" ] || "$bin" keys test-pki --out "$keys/op" >&2
        export PISGATE__SANDBOX_OP__LISTEN="127.0.0.1:$op_sandbox_port"
        export PISGATE__SANDBOX_OP__APP_LISTEN="127.0.0.1:$op_app_port"
        export PISGATE__SANDBOX_OP__TLS_CERTIFICATE_FILE="$keys/op/server-cert.pem"
        export PISGATE__SANDBOX_OP__TLS_PRIVATE_KEY_FILE="$keys/op/server-key.pem"
        export PISGATE__SANDBOX_OP__TPP_CA_FILE="$keys/op/ca.pem"
        export PISGATE__SANDBOX_OP__TPP_SIGNING_CERTIFICATE_FILE="$keys/op/tpp-cert.pem"
        export PISGATE__SANDBOX_OP__TPP_SIGNING_KEY_ID=local-qsealc
        export PISGATE__SANDBOX_OP__CLIENT_ID=local-op-client
        export PISGATE__SANDBOX_OP__CLIENT_SECRET=local-op-secret
        export PISGATE__SANDBOX_OP__API_KEY=local-op-api-key
        export PISGATE__SANDBOX_OP__REDIRECT_URIS="$PISGATE__SERVER__PUBLIC_URL/v1/callbacks/oidc"
        export PISGATE__BANKS__OP__PROTOCOL=op
        export PISGATE__BANKS__OP__NAME=OP
        export PISGATE__BANKS__OP__COUNTRIES=FI
        export PISGATE__BANKS__OP__ENVIRONMENT=sandbox
        export PISGATE__BANKS__OP__BASE_URL="https://127.0.0.1:$op_sandbox_port"
        export PISGATE__BANKS__OP__AUTHORIZE_URL="http://127.0.0.1:$op_app_port/oauth/authorize"
        export PISGATE__BANKS__OP__ISSUER="http://127.0.0.1:$op_app_port"
        export PISGATE__BANKS__OP__JWKS_URL="http://127.0.0.1:$op_app_port/oauth/jwks"
        export PISGATE__BANKS__OP__PAYMENTS_JWKS_URL="http://127.0.0.1:$op_app_port/jwks/payments"
        export PISGATE__BANKS__OP__CLIENT_ID=local-op-client
        export PISGATE__BANKS__OP__CLIENT_SECRET=local-op-secret
        export PISGATE__BANKS__OP__API_KEY=local-op-api-key
        export PISGATE__BANKS__OP__TLS_CERTIFICATE_FILE="$keys/op/tpp-cert.pem"
        export PISGATE__BANKS__OP__TLS_PRIVATE_KEY_FILE="$keys/op/tpp-key.pem"
        export PISGATE__BANKS__OP__TLS_CA_FILE="$keys/op/ca.pem"
        export PISGATE__BANKS__OP__PRIVATE_KEY_FILE="$keys/op/tpp-key.pem"
        export PISGATE__BANKS__OP__CERTIFICATE_FILE="$keys/op/tpp-cert.pem"
        export PISGATE__BANKS__OP__SIGNING_KEY_ID=local-qsealc
    fi
    export PISGATE__TOKENS__ENCRYPTION_KEY_FILE="$local_state/token-key"
    export PISGATE__LEDGER__KEY_FILE="$local_state/ledger-key"
}
