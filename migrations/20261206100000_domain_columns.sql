-- PostgreSQL's CPU per payment (issue 28): the single-column CHECK constraints of the four
-- tables a payment's creation writes (payments, payment_events, payment_polls,
-- idempotency_keys) become the columns' types: domains. Same values allowed and refused,
-- same SQLSTATE (23514, check_violation); docs/perf/postgres.md has the figures.
--
-- Why: PostgreSQL 15 keeps no compiled form of a table's CHECK constraints. Every execution
-- of a statement that writes a table reads each CHECK's stored node text again
-- (stringToNode), plans it (expression_planner) and compiles it: ExecConstraints was 12% of
-- PostgreSQL's CPU in the e2e benchmark at 32 connections, for 20 CHECKs read on each of
-- the two statements of a payment. A domain's constraints are compiled once per connection
-- (the type cache) and only evaluated per row.
--
-- What an error says: a value a domain refuses fails with SQLSTATE 23514 naming the
-- constraint (the list domains keep the CHECKs' names, payments_status_check and so on) and
-- the domain as its data type, instead of the table. Nothing in pisgate reads either: every
-- value is checked in Rust before it is written; these are the database's own guard.
--
-- For the queries: PostgreSQL types a parameter bound straight to such a column (an INSERT's
-- value, an UPDATE's SET) as the domain, which sqlx's compile-time checks do not map to a
-- Rust type; those parameters say `$n::text` (or `::integer`, `::bigint`, `::bytea`,
-- `::smallint`): the value is then coerced into the domain and checked. Columns read back
-- are described as the domain's base type, so reading is unchanged.
--
-- How: each domain is created without its constraint, the column's type changed to it (a
-- domain over the same base type: no table rewrite; indexes on the column are kept or
-- rebuilt), the table's CHECK dropped, and then the domain's constraint added, which checks
-- every existing row of every column of that type (under a SHARE lock on the tables: writes
-- wait for the scan; the old CHECKs held the same rule, so it cannot fail).
--
-- Kept as table CHECKs (they read two columns): payments_ledger_head_with_seq,
-- payment_events_key_id_by_version, payment_events_check (seq 1 has no prev_hash).
--
-- Changing a list later: ALTER DOMAIN ... DROP CONSTRAINT, then ADD CONSTRAINT with the new
-- list (which checks the existing rows).

CREATE DOMAIN pisgate_payment_status AS text;
CREATE DOMAIN pisgate_payment_initiation AS text;
CREATE DOMAIN pisgate_currency AS text;
CREATE DOMAIN pisgate_country AS text;
CREATE DOMAIN pisgate_cancel_requester AS text;
CREATE DOMAIN pisgate_amount_minor AS bigint;
CREATE DOMAIN pisgate_count AS integer;
CREATE DOMAIN pisgate_sha256 AS bytea;
CREATE DOMAIN pisgate_event_seq AS integer;
CREATE DOMAIN pisgate_hash_version AS smallint;
CREATE DOMAIN pisgate_idempotency_key AS text;

ALTER TABLE payments
    DROP CONSTRAINT payments_status_check,
    DROP CONSTRAINT payments_initiation_check,
    DROP CONSTRAINT payments_currency_check,
    DROP CONSTRAINT payments_country_check,
    DROP CONSTRAINT payments_cancel_requested_by_check,
    DROP CONSTRAINT payments_amount_minor_check,
    DROP CONSTRAINT payments_initiation_attempts_check,
    DROP CONSTRAINT payments_ledger_seq_check,
    DROP CONSTRAINT payments_recurring_executions_check,
    DROP CONSTRAINT payments_ledger_head_check,
    ALTER COLUMN status TYPE pisgate_payment_status,
    ALTER COLUMN initiation TYPE pisgate_payment_initiation,
    ALTER COLUMN currency TYPE pisgate_currency,
    ALTER COLUMN country TYPE pisgate_country,
    ALTER COLUMN cancel_requested_by TYPE pisgate_cancel_requester,
    ALTER COLUMN amount_minor TYPE pisgate_amount_minor,
    ALTER COLUMN initiation_attempts TYPE pisgate_count,
    ALTER COLUMN ledger_seq TYPE pisgate_count,
    ALTER COLUMN recurring_executions TYPE pisgate_count,
    ALTER COLUMN ledger_head TYPE pisgate_sha256;

ALTER TABLE payment_events
    DROP CONSTRAINT payment_events_seq_check,
    DROP CONSTRAINT payment_events_hash_check,
    DROP CONSTRAINT payment_events_hash_version_check,
    ALTER COLUMN seq TYPE pisgate_event_seq,
    ALTER COLUMN hash TYPE pisgate_sha256,
    ALTER COLUMN hash_version TYPE pisgate_hash_version;

ALTER TABLE payment_polls
    DROP CONSTRAINT payment_polls_polls_check,
    DROP CONSTRAINT payment_polls_final_reads_left_check,
    DROP CONSTRAINT payment_polls_poll_failures_check,
    ALTER COLUMN polls TYPE pisgate_count,
    ALTER COLUMN final_reads_left TYPE pisgate_count,
    ALTER COLUMN poll_failures TYPE pisgate_count;

ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_key_check,
    ALTER COLUMN key TYPE pisgate_idempotency_key;

ALTER DOMAIN pisgate_payment_status ADD CONSTRAINT payments_status_check
    CHECK (VALUE IN ('awaiting_authorization', 'authorized', 'paid', 'rejected',
                     'authorization_failed', 'cancelled', 'expired', 'failed'));
ALTER DOMAIN pisgate_payment_initiation ADD CONSTRAINT payments_initiation_check
    CHECK (VALUE IN ('pending', 'initiated', 'outcome_unknown', 'not_created', 'refused',
                     'awaiting_bank_choice', 'awaiting_debtor_account',
                     'awaiting_shopper_identification'));
ALTER DOMAIN pisgate_currency ADD CONSTRAINT payments_currency_check
    CHECK (VALUE IN ('EUR', 'DKK', 'SEK', 'NOK'));
ALTER DOMAIN pisgate_country ADD CONSTRAINT payments_country_check
    CHECK (VALUE IN ('DK', 'FI', 'NO', 'SE'));
ALTER DOMAIN pisgate_cancel_requester ADD CONSTRAINT payments_cancel_requested_by_check
    CHECK (VALUE IN ('merchant', 'shopper'));
ALTER DOMAIN pisgate_amount_minor ADD CONSTRAINT payments_amount_minor_check
    CHECK (VALUE > 0);
ALTER DOMAIN pisgate_count ADD CONSTRAINT pisgate_count_check CHECK (VALUE >= 0);
ALTER DOMAIN pisgate_sha256 ADD CONSTRAINT pisgate_sha256_check CHECK (length(VALUE) = 32);
ALTER DOMAIN pisgate_event_seq ADD CONSTRAINT payment_events_seq_check CHECK (VALUE >= 1);
ALTER DOMAIN pisgate_hash_version ADD CONSTRAINT payment_events_hash_version_check
    CHECK (VALUE IN (1, 2));
ALTER DOMAIN pisgate_idempotency_key ADD CONSTRAINT idempotency_keys_key_check
    CHECK (length(VALUE) BETWEEN 1 AND 255);

-- The list functions of 20261205400000 are no longer called.
DROP FUNCTION pisgate_is_payment_status(text);
DROP FUNCTION pisgate_is_payment_initiation(text);
DROP FUNCTION pisgate_is_payment_currency(text);
DROP FUNCTION pisgate_is_payment_country(text);
DROP FUNCTION pisgate_is_cancel_requester(text);
