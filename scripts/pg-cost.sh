#!/usr/bin/env bash
# Where PostgreSQL's cost per payment creation goes: each index, trigger, foreign key and JSON
# column of the tables a creation writes, measured by taking it away.
#
#   scripts/pg-cost.sh                 # every variant, 4,000 payments each
#   PG_COST_PAYMENTS=10000 scripts/pg-cost.sh
#   PG_COST_ONLY="baseline idx:payments_metadata" scripts/pg-cost.sh
#   PG_COST_ROUNDS=10 PG_COST_ONLY="baseline proposal:" scripts/pg-cost.sh   # taking turns
#   PG_COST_BACKEND=1 PG_COST_PAYMENTS=20000 PG_COST_ROUNDS=10 PG_COST_ONLY="baseline proposal:" scripts/pg-cost.sh
#
# A throwaway cluster (fsync and full_page_writes on like scripts/bench.sh e2e, but
# synchronous_commit off so that the figure is PostgreSQL's CPU, not the disk's flush), every
# migration applied to a template database with one merchant. For each variant: a copy of the
# template, the variant's change (an index, trigger or foreign key dropped, a JSON column
# emptied, ...), 2,000 payments to warm it up, then PG_COST_PAYMENTS payments by pgbench at 4
# clients, each payment the two statements pisgate sends on the creation path
# (payments::create_with_key, then payments::record_first_answer: see src/ledger/payments.rs),
# with the sizes of scripts/bench.sh e2e's payment. Printed per variant: WAL bytes per
# payment (pg_current_wal_insert_lsn), WAL records and full-page images per payment
# (pg_stat_wal), PostgreSQL's CPU per payment (every process of the cluster, /proc), and
# what the variant saves against the baseline. CPU figures on a shared box are noisy
# (±10-20%); WAL figures are exact.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh
source scripts/lib/env.sh
PAYMENTS=${PG_COST_PAYMENTS:-4000}
CLIENTS=${PG_COST_CLIENTS:-4}
cluster="pg-cost-$$"
trap 'pg_destroy "$cluster"' EXIT
PG_DURABILITY="-c fsync=on -c synchronous_commit=off" PG_EXTRA_OPTIONS="-c max_wal_size=4GB" \
    pg_start "$cluster"
bindir=$(pg_bindir)
PGBENCH="$bindir/pgbench"
q() { psql -X -q -tA -v ON_ERROR_STOP=1 "$@"; }

q -d postgres -c "CREATE DATABASE tmpl"
# The proposal (by default the latest change's migration) is left out of the template: it is
# a variant of its own. PG_COST_PROPOSAL=migrations/20261205300000_payment_write_cost.sql
# measures the earlier one (with its fillfactor variants) against the schema before it (leave
# the later migrations out of migrations/ for that run).
proposal=${PG_COST_PROPOSAL:-migrations/20261206100000_domain_columns.sql}
for f in migrations/*.sql; do
    case "$f" in *.down.sql | "$proposal") continue ;; esac
    q -d tmpl -f "$f" >/dev/null
done
merchant=00000000-0000-4000-8000-000000000001
q -d tmpl -c "INSERT INTO merchants (id, name, api_key_id, api_key_hash)
              VALUES ('$merchant', 'Shop', 'pk_cost', sha256('x'))"

# The payment of scripts/bench.sh e2e as pisgate stores it, its events, and its key's
# answer (sizes as written by the real creation path).
request='{"amount":"10.50","amount_minor":1050,"currency":"EUR","country":"FI","creditor":{"account":{"type":"IBAN","value":"FI1410093000123458"},"name":"Kauppa Oy"},"return_url":"https://shop.example/done"}'
work=$(mktemp -d)
trap 'pg_destroy "$cluster"; rm -rf "$work"' EXIT
cat >"$work/create.sql" <<SQL
\\set n random(1, 9000000000000000000)
WITH k AS (
    INSERT INTO idempotency_keys
        (merchant_id, key, request_hash, expires_at, payment_id, locked_until, body_hash)
    VALUES ('$merchant', 'cost-' || :n, sha256(:n::text::bytea), now() + interval '1 day',
            md5(:n::text)::uuid, now() + interval '15 seconds', sha256(('b' || :n)::bytea))
    ON CONFLICT (merchant_id, key) DO UPDATE
        SET request_hash = EXCLUDED.request_hash, payment_id = EXCLUDED.payment_id,
            body_hash = EXCLUDED.body_hash, response_status = NULL, response_body = NULL,
            completed_at = NULL, created_at = now(), expires_at = EXCLUDED.expires_at,
            locked_until = EXCLUDED.locked_until
        WHERE idempotency_keys.expires_at < now()
    RETURNING 1
), p AS (
    INSERT INTO payments
        (id, merchant_id, status, amount_minor, currency, country, request,
         merchant_reference, psu_id, return_url, metadata, state_hash,
         state_expires_at, expires_at, sign_horizon_at,
         authorize_token, authorize_url, initiation, initiation_attempts,
         created_at, updated_at, ledger_seq, ledger_head, trace_parent, bank, deferred)
    SELECT md5(:n::text)::uuid, '$merchant', 'awaiting_authorization', 1050, 'EUR', 'FI',
           '$request'::jsonb, NULL, NULL, 'https://shop.example/done', '{}'::jsonb,
           sha256(('s' || :n)::bytea), now() + interval '1 hour', now() + interval '1 day',
           now() + interval '1 hour', encode(sha256(('t' || :n)::bytea), 'base64'),
           'https://pay.example/authorize/' || encode(sha256(('t' || :n)::bytea), 'hex'),
           'pending', 1, now(), now(), 2, sha256(('h2' || :n)::bytea),
           '00-' || md5(:n::text) || '-' || left(md5(('x' || :n)::text), 16) || '-01', 'nordea', false
    FROM k
    RETURNING id
), s AS (
    INSERT INTO payment_polls (payment_id, next_poll_at)
    SELECT id, now() + interval '2 seconds' FROM p
), e AS (
    INSERT INTO payment_events
        (payment_id, seq, kind, old_status, new_status, bank_status, detail,
         created_at, prev_hash, hash, hash_version, key_id)
    SELECT p.id, ev.seq, ev.kind, NULL, ev.new_status, NULL, ev.detail, now(),
           ev.prev_hash, ev.hash, 2, 'ledger-2026-12'
    FROM p, (VALUES
        (1, 'created', 'awaiting_authorization',
         jsonb_build_object('amount_minor', 1050, 'currency', 'EUR', 'country', 'FI',
                            'facts', encode(sha256(('f' || :n)::bytea), 'hex')),
         NULL::bytea, sha256(('h1' || :n)::bytea)),
        (2, 'initiation_attempt', NULL, '{"attempt": 1}'::jsonb,
         sha256(('h1' || :n)::bytea), sha256(('h2' || :n)::bytea))
    ) AS ev(seq, kind, new_status, detail, prev_hash, hash)
    RETURNING 1
)
SELECT count(*) FROM e;
WITH u AS (
    UPDATE payments
    SET bank_payment_id = 'bp-' || md5(:n::text), authorization_url = 'https://bank.example/sign/' || md5(:n::text),
        bank_status = 'PendingUserApproval', initiation = 'initiated', updated_at = now(),
        ledger_seq = 3, ledger_head = sha256(('h3' || :n)::bytea),
        bank_links = jsonb_build_object('signing', 'https://bank.example/sign/' || md5(:n::text))
    WHERE id = md5(:n::text)::uuid AND ledger_seq = 2 AND ledger_head = sha256(('h2' || :n)::bytea)
      AND initiation_attempts = 1 AND initiation = 'pending'
      AND bank_payment_id IS NULL AND status = 'awaiting_authorization'
    RETURNING id, merchant_id
), s AS (
    UPDATE payment_polls SET next_poll_at = now() + interval '2 seconds', poll_failures = 0
    FROM u WHERE payment_polls.payment_id = u.id
      AND NOT (payment_polls.next_poll_at <= now() + interval '2 seconds'
               AND payment_polls.next_poll_at > now() + interval '1 second'
               AND payment_polls.poll_owner IS NULL AND payment_polls.poll_failures = 0)
), e AS (
    INSERT INTO payment_events
        (payment_id, seq, kind, old_status, new_status, bank_status, detail,
         created_at, prev_hash, hash, hash_version, key_id)
    SELECT u.id, 3, 'initiated', NULL, NULL, 'PendingUserApproval',
           jsonb_build_object('attempt', 1, 'bank_payment_id', 'bp-' || md5(:n::text)), now(),
           sha256(('h2' || :n)::bytea), sha256(('h3' || :n)::bytea), 2, 'ledger-2026-12'
    FROM u
    RETURNING 1
), k AS (
    UPDATE idempotency_keys
    SET response_status = 201, response_body = :body::jsonb, completed_at = now()
    FROM u
    WHERE idempotency_keys.merchant_id = u.merchant_id
      AND idempotency_keys.key = 'cost-' || :n AND idempotency_keys.payment_id = u.id
    RETURNING 1
)
SELECT (SELECT count(*) FROM e) + (SELECT count(*) FROM k);
SQL
# The key's answer: the payment's view as POST /v1/payments answers it (about 900 bytes).
body=$(python3 - <<'PY'
import json
print(json.dumps({
    "id": "0b6d8a52-94f5-4c41-9b0a-6f0f2f7c9d11", "object": "payment",
    "status": "awaiting_authorization", "bank": "nordea", "bank_status": "PendingUserApproval",
    "amount": "10.50", "amount_minor": 1050, "currency": "EUR", "country": "FI",
    "creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "Kauppa Oy"},
    "reference": None, "psu_id": None, "metadata": {},
    "authorization_url": "https://pay.example/authorize/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "return_url": "https://shop.example/done", "failure": None,
    "created_at": "2026-12-05T14:40:00.123456Z", "updated_at": "2026-12-05T14:40:00.223456Z",
    "expires_at": "2026-12-06T14:40:00.123456Z", "recurring": None,
    "links": {"self": "/v1/payments/0b6d8a52-94f5-4c41-9b0a-6f0f2f7c9d11",
              "events": "/v1/payments/0b6d8a52-94f5-4c41-9b0a-6f0f2f7c9d11/events"},
}, separators=(",", ":")))
PY
)

# PG_COST_SCRIPT_OUT=dir: keep the pgbench script and the key's answer there (to profile).
if [ -n "${PG_COST_SCRIPT_OUT:-}" ]; then
    cp "$work/create.sql" "$PG_COST_SCRIPT_OUT/create.sql"
    printf '%s' "$body" >"$PG_COST_SCRIPT_OUT/body.json"
fi

# Variants: name, then the SQL that makes it from the template.
variants=(
    "baseline|SELECT 1"
)
for i in $(q -d tmpl -c "SELECT indexrelid::regclass FROM pg_index
                          WHERE indrelid IN ('payments'::regclass, 'idempotency_keys'::regclass,
                                             'payment_events'::regclass, 'payment_polls'::regclass)
                            AND NOT indisprimary ORDER BY 1::text"); do
    c=$(q -d tmpl -c "SELECT conname FROM pg_constraint WHERE conindid = '$i'::regclass AND contype = 'u'")
    if [ -n "$c" ]; then
        t=$(q -d tmpl -c "SELECT indrelid::regclass FROM pg_index WHERE indexrelid = '$i'::regclass")
        variants+=("idx:$i|ALTER TABLE $t DROP CONSTRAINT $c")
    else
        variants+=("idx:$i|DROP INDEX $i")
    fi
done
variants+=(
    "all search indexes (7)|DROP INDEX payments_merchant_created, payments_merchant_status_created, payments_merchant_currency_created, payments_merchant_amount, payments_merchant_reference_created, payments_merchant_psu_created, payments_metadata"
    "trigger:payments_touch_updated_at|DROP TRIGGER payments_touch_updated_at ON payments"
    "fk:payments->merchants|ALTER TABLE payments DROP CONSTRAINT payments_merchant_id_fkey"
    "fk:idempotency_keys->merchants,payments|ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_merchant_id_fkey, DROP CONSTRAINT idempotency_keys_payment_id_fkey"
    "fk:payment_events->payments|ALTER TABLE payment_events DROP CONSTRAINT payment_events_payment_id_fkey"
    "fk:payment_polls->payments|ALTER TABLE payment_polls DROP CONSTRAINT payment_polls_payment_id_fkey"
    "json:request as '{}'|CREATE FUNCTION cost_empty() RETURNS trigger LANGUAGE plpgsql AS \$\$BEGIN NEW.request := '{}'; RETURN NEW; END\$\$; CREATE TRIGGER cost_empty BEFORE INSERT ON payments FOR EACH ROW EXECUTE FUNCTION cost_empty()"
    "json:no key answer body|CREATE FUNCTION cost_nobody() RETURNS trigger LANGUAGE plpgsql AS \$\$BEGIN NEW.response_body := NULL; RETURN NEW; END\$\$; CREATE TRIGGER cost_nobody BEFORE UPDATE ON idempotency_keys FOR EACH ROW EXECUTE FUNCTION cost_nobody()"
    "fillfactor 80 on payments|ALTER TABLE payments SET (fillfactor = 80)"
    "trigger:payments_bank_payment_id_* (3, and payment_bank_ids' row)|DROP TRIGGER payments_bank_payment_id_insert ON payments; DROP TRIGGER payments_bank_payment_id_update ON payments; DROP TRIGGER payments_bank_payment_id_delete ON payments"
    "checks:every CHECK of the four tables|DO \$\$ DECLARE c record; BEGIN FOR c IN SELECT conrelid::regclass AS t, conname FROM pg_constraint WHERE contype = 'c' AND conrelid IN ('payments'::regclass, 'idempotency_keys'::regclass, 'payment_events'::regclass, 'payment_polls'::regclass) LOOP EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.t, c.conname); END LOOP; END \$\$"
)
# The value lists of payments (20261205400000): without them (the floor of any cheaper form),
# and as domain columns (their CHECK cached per connection), which 20261206100000 made them,
# with the other single-column CHECKs (PG_COST_PROPOSAL=migrations/20261205400000_... and
# that migration taken out of migrations/ to measure these two).
lists="payments_status_check payments_initiation_check payments_currency_check payments_country_check payments_cancel_requested_by_check"
drop_lists="ALTER TABLE payments $(for c in $lists; do printf 'DROP CONSTRAINT %s,' "$c"; done | sed 's/,$//')"
as_domains="CREATE DOMAIN cost_status AS text CHECK (VALUE IN ('awaiting_authorization', 'authorized', 'paid', 'rejected', 'authorization_failed', 'cancelled', 'expired', 'failed'));
CREATE DOMAIN cost_initiation AS text CHECK (VALUE IN ('pending', 'initiated', 'outcome_unknown', 'not_created', 'refused', 'awaiting_bank_choice', 'awaiting_debtor_account', 'awaiting_shopper_identification'));
CREATE DOMAIN cost_currency AS text CHECK (VALUE IN ('EUR', 'DKK', 'SEK', 'NOK'));
CREATE DOMAIN cost_country AS text CHECK (VALUE IN ('DK', 'FI', 'NO', 'SE'));
CREATE DOMAIN cost_cancel_requested_by AS text CHECK (VALUE IN ('merchant', 'shopper'));
$drop_lists;
ALTER TABLE payments ALTER COLUMN status TYPE cost_status, ALTER COLUMN initiation TYPE cost_initiation,
    ALTER COLUMN currency TYPE cost_currency, ALTER COLUMN country TYPE cost_country,
    ALTER COLUMN cancel_requested_by TYPE cost_cancel_requested_by"
if [ -f "$proposal" ]; then
    variants+=("proposal: $(basename "$proposal")|$(cat "$proposal")")
    case "$proposal" in
    *20261205300000*)
        variants+=("proposal, fillfactor 70|$(cat "$proposal"); ALTER TABLE payments SET (fillfactor = 70)")
        variants+=("proposal, fillfactor 90|$(cat "$proposal"); ALTER TABLE payments SET (fillfactor = 90)")
        variants+=("proposal, fillfactor 100|$(cat "$proposal"); ALTER TABLE payments SET (fillfactor = 100)")
        ;;
    *20261205400000*)
        variants+=("proposal, without the value lists of payments|$(cat "$proposal"); $drop_lists")
        variants+=("proposal, the value lists as domain columns|$(cat "$proposal"); $as_domains")
        ;;
    *20261206100000*)
        # The domains with no constraint at all: what their checks still cost.
        variants+=("proposal, its domains without their constraints|$(cat "$proposal");
            DO \$\$ DECLARE c record; BEGIN FOR c IN SELECT t.typname, n.conname FROM pg_constraint n JOIN pg_type t ON t.oid = n.contypid WHERE t.typname LIKE 'pisgate\\_%' LOOP EXECUTE format('ALTER DOMAIN %I DROP CONSTRAINT %I', c.typname, c.conname); END LOOP; END \$\$")
        ;;
    esac
fi

cluster_ticks() {
    # utime + stime of the postmaster and every child (backends, walwriter, checkpointer, ...).
    local pm
    pm=$(head -1 "$(q -d postgres -c 'SHOW data_directory')/postmaster.pid" 2>/dev/null \
        || pg_as_owner head -1 "$(q -d postgres -c 'SHOW data_directory')/postmaster.pid")
    {
        echo "$pm"
        cat "/proc/$pm/task/$pm/children" 2>/dev/null | tr ' ' '\n'
    } | while read -r pid; do
        [ -n "$pid" ] && awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || true
    done | awk '{s += $1} END {print s + 0}'
}

run_pgbench() { # db, payments
    "$PGBENCH" -n -M prepared -c "$CLIENTS" -j 2 -t $(($2 / CLIENTS)) -D body="$body" -f "$work/create.sql" "$1" \
        >"$work/pgbench.out" 2>&1 || { cat "$work/pgbench.out" >&2; return 1; }
}

clk=$(getconf CLK_TCK)
# PG_COST_ROUNDS=N: every selected variant gets a database of its own first (and its warm-up),
# then the PG_COST_PAYMENTS payments of each are run in N bursts, the variants taking turns
# (burst 1 of each, burst 2 of each, ...), so that what else runs on the box weighs on every
# variant alike; the CPU of each burst is printed too. Default 1: one variant after the other.
ROUNDS=${PG_COST_ROUNDS:-1}
selected=()
for v in "${variants[@]}"; do
    name=${v%%|*}
    if [ -n "${PG_COST_ONLY:-}" ] && ! grep -qwF -- "${name%% *}" <<<"$PG_COST_ONLY"; then continue; fi
    selected+=("$v")
done
declare -A wal_sum records_sum fpi_sum ticks_sum done_sum cpu_rounds
for i in "${!selected[@]}"; do
    q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS cost$i" -c "CREATE DATABASE cost$i TEMPLATE tmpl"
    q -d "cost$i" -c "${selected[$i]#*|}" >/dev/null
    run_pgbench "cost$i" 2000
    wal_sum[$i]=0 records_sum[$i]=0 fpi_sum[$i]=0 ticks_sum[$i]=0 done_sum[$i]=0 cpu_rounds[$i]=""
done
# PG_COST_BACKEND=1: each burst runs inside one backend instead (a procedure running the two
# statements, each committed, as pgbench would send them), and the CPU is that backend's own
# (/proc/self/schedstat, nanoseconds): PostgreSQL's work for the statements alone, without the
# network, the WAL writer or the sampling of exiting backends, so that a difference of a few
# percent shows through the noise of a shared box.
if [ -n "${PG_COST_BACKEND:-}" ]; then
    {
        echo 'CREATE PROCEDURE cost_run(pk_first bigint, pk_count int, pk_body jsonb) LANGUAGE plpgsql AS $cost$'
        echo 'DECLARE pk_n bigint; pk_x bigint; pk_t0 bigint;'
        echo 'BEGIN'
        echo "  pk_t0 := split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint;"
        echo '  FOR pk_i IN 0 .. pk_count - 1 LOOP'
        echo '    pk_n := pk_first + pk_i;'
        # The pgbench script's two statements, each followed by its COMMIT.
        sed -e '/^\\set/d' -e 's/:body::jsonb/pk_body/g' -e 's/:n\b/pk_n/g' \
            -e 's/^SELECT count(\*) FROM e;/SELECT count(*) INTO pk_x FROM e; COMMIT;/' \
            -e 's/^SELECT (SELECT count(\*) FROM e) + (SELECT count(\*) FROM k);/SELECT (SELECT count(*) FROM e) + (SELECT count(*) FROM k) INTO pk_x; COMMIT;/' \
            "$work/create.sql"
        echo '  END LOOP;'
        echo "  RAISE NOTICE 'cost_cpu_ns %', split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint - pk_t0;"
        echo 'END $cost$;'
    } >"$work/proc.sql"
    for i in "${!selected[@]}"; do q -d "cost$i" -f "$work/proc.sql" >/dev/null; done
    clk=1000000000
fi
next_n=100000000000
for ((r = 1; r <= ROUNDS; r++)); do
    for i in "${!selected[@]}"; do
        name=${selected[$i]%%|*}
        q -d postgres -c "SELECT pg_stat_reset_shared('wal')" >/dev/null
        lsn=$(q -d postgres -c "SELECT pg_current_wal_insert_lsn()")
        if [ -n "${PG_COST_BACKEND:-}" ]; then
            burst=$((PAYMENTS / ROUNDS))
            ns=$(echo "CALL cost_run($next_n, $burst, :'body')" \
                | psql -X -q -v ON_ERROR_STOP=1 -d "cost$i" -v body="$body" 2>&1 | tee "$work/proc.out" \
                | sed -n 's/.*cost_cpu_ns //p' | tail -1 || true)
            [ -n "$ns" ] || { cat "$work/proc.out" >&2; exit 1; }
            next_n=$((next_n + burst))
            # Nanoseconds are the ticks of this mode (clk is set to 1e9 below).
            t0=0
            last=$ns
            printf 'number of transactions actually processed: %s\n' "$burst" >"$work/pgbench.out"
        else
            t0=$(cluster_ticks)
            "$PGBENCH" -n -M prepared -c "$CLIENTS" -j 2 -t $((PAYMENTS / CLIENTS / ROUNDS)) -D body="$body" -f "$work/create.sql" "cost$i" \
                >"$work/pgbench.out" 2>&1 &
            pb=$!
            # Backends exit when pgbench ends: sample the cluster's ticks until then.
            last=$t0
            while kill -0 "$pb" 2>/dev/null; do
                now=$(cluster_ticks)
                [ "$now" -gt "$last" ] && last=$now
                sleep 0.05
            done
            wait "$pb" || { cat "$work/pgbench.out" >&2; exit 1; }
        fi
        wal=$(q -d postgres -c "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$lsn')")
        if [ -n "${PG_COST_WALDUMP:-}" ]; then
            # What the WAL of this variant is made of, by record type (PG_COST_WALDUMP=1).
            end=$(q -d postgres -c "SELECT pg_current_wal_insert_lsn()")
            q -d postgres -c "SELECT pg_switch_wal()" >/dev/null
            "$bindir/pg_waldump" -p "$(q -d postgres -c 'SHOW data_directory')/pg_wal" \
                -s "$lsn" -e "$end" --stats=record 2>/dev/null | sed "s/^/    [$name] /" >&2 || true
        fi
        read -r records fpi < <(q -F ' ' -d postgres -c "SELECT wal_records, wal_fpi FROM pg_stat_wal")
        done_n=$(sed -n 's/.*number of transactions actually processed: \([0-9]*\).*/\1/p' "$work/pgbench.out")
        wal_sum[$i]=$((${wal_sum[$i]} + ${wal%.*}))
        records_sum[$i]=$((${records_sum[$i]} + records))
        fpi_sum[$i]=$((${fpi_sum[$i]} + fpi))
        ticks_sum[$i]=$((${ticks_sum[$i]} + last - t0))
        done_sum[$i]=$((${done_sum[$i]} + done_n))
        cpu_rounds[$i]+=" $(awk -v t="$((last - t0))" -v n="$done_n" -v c="$clk" 'BEGIN {printf "%.0f", t / c * 1e6 / n}')"
    done
done
printf '%-58s %12s %9s %7s %13s %14s\n' "variant (taken away or changed)" "WAL B/paymt" "records" "FPI" "CPU µs/paymt" "WAL saved"
base_wal=""
for i in "${!selected[@]}"; do
    name=${selected[$i]%%|*}
    n=${done_sum[$i]}
    per=$(awk -v w="${wal_sum[$i]}" -v n="$n" 'BEGIN {printf "%.0f", w / n}')
    [ -z "$base_wal" ] && base_wal=$per
    printf '%-58s %12s %9.1f %7.2f %13.0f %14s' "$name" "$per" \
        "$(awk -v a="${records_sum[$i]}" -v n="$n" 'BEGIN {print a / n}')" \
        "$(awk -v a="${fpi_sum[$i]}" -v n="$n" 'BEGIN {print a / n}')" \
        "$(awk -v a="${ticks_sum[$i]}" -v n="$n" -v c="$clk" 'BEGIN {print a / c * 1e6 / n}')" \
        "$((base_wal - per))"
    if [ "$ROUNDS" -gt 1 ]; then printf '   bursts:%s' "${cpu_rounds[$i]}"; fi
    printf '\n'
done
