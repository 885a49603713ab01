-- PostgreSQL's CPU per payment (issue 28): the CHECK constraints and the updated_at trigger of
-- the creation path, same meaning, cheaper to run. docs/perf/postgres.md has the figures.
--
-- PostgreSQL 15 does not cache a table's CHECK constraints compiled: every execution of a
-- statement that writes a table reads each CHECK's stored node text again (stringToNode),
-- plans it (expression_planner) and compiles it. A list of text constants
-- (`status IN ('awaiting_authorization', ...)`) is stored as one node per constant with every
-- byte of the value spelled out, and is folded into an array on every execution: the five
-- such CHECKs of payments cost more than the rest of a small row's insert (measured: the 5
-- lists add ~23 µs to a one-row insert in its own transaction, ~11 µs as calls of the
-- functions below). payments is written twice per payment (the insert, the bank's answer);
-- with the trigger below, the two statements of a payment's creation cost the backend 9-10%
-- less CPU (scripts/pg-cost.sh PG_COST_BACKEND=1).
--
-- 1. Each list CHECK of payments becomes a call of an IMMUTABLE STRICT PL/pgSQL function
--    holding the same list. Same constraint names, same values allowed, same error
--    (`new row for relation "payments" violates check constraint "payments_status_check"`,
--    SQLSTATE 23514); a NULL passes exactly as before (STRICT: NULL in, NULL out, and a CHECK
--    passes on NULL; the NOT NULL columns keep their NOT NULL). PL/pgSQL compiles a
--    function once per connection, so what is left per statement is a call.
--    Changing a list later: CREATE OR REPLACE the function to allow more values; to allow
--    fewer, also drop and add the constraint again so that the existing rows are checked.
--    (A domain per column would be cheaper still, its CHECK is cached per connection, but
--    PostgreSQL then types every parameter bound to the column as the domain, which sqlx's
--    compile-time checks refuse: every query that binds a status would need a cast.)
-- 2. payments_touch_updated_at: its WHEN compared fifteen columns of the old and new row
--    (a 6.6 KB expression read and planned on every UPDATE of payments, even those that set
--    updated_at themselves and so never call the function). The WHEN keeps only its first
--    test (the statement left updated_at as it was); the fifteen columns move into the
--    function, which sets updated_at only when one of them changed. Same columns, same
--    result: updated_at becomes now() exactly when the statement did not change it and a
--    column a merchant sees changed.

-- 1. The lists of payments.
CREATE FUNCTION pisgate_is_payment_status(v text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN v IN ('awaiting_authorization', 'authorized', 'paid', 'rejected',
                 'authorization_failed', 'cancelled', 'expired', 'failed');
END;
$$;
CREATE FUNCTION pisgate_is_payment_initiation(v text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN v IN ('pending', 'initiated', 'outcome_unknown', 'not_created', 'refused',
                 'awaiting_bank_choice', 'awaiting_debtor_account',
                 'awaiting_shopper_identification');
END;
$$;
CREATE FUNCTION pisgate_is_payment_currency(v text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN v IN ('EUR', 'DKK', 'SEK', 'NOK');
END;
$$;
CREATE FUNCTION pisgate_is_payment_country(v text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN v IN ('DK', 'FI', 'NO', 'SE');
END;
$$;
CREATE FUNCTION pisgate_is_cancel_requester(v text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN v IN ('merchant', 'shopper');
END;
$$;

ALTER TABLE payments
    DROP CONSTRAINT payments_status_check,
    ADD CONSTRAINT payments_status_check CHECK (pisgate_is_payment_status(status)),
    DROP CONSTRAINT payments_initiation_check,
    ADD CONSTRAINT payments_initiation_check CHECK (pisgate_is_payment_initiation(initiation)),
    DROP CONSTRAINT payments_currency_check,
    ADD CONSTRAINT payments_currency_check CHECK (pisgate_is_payment_currency(currency)),
    DROP CONSTRAINT payments_country_check,
    ADD CONSTRAINT payments_country_check CHECK (pisgate_is_payment_country(country)),
    DROP CONSTRAINT payments_cancel_requested_by_check,
    ADD CONSTRAINT payments_cancel_requested_by_check
        CHECK (pisgate_is_cancel_requester(cancel_requested_by));

-- 2. updated_at.
CREATE OR REPLACE FUNCTION pisgate_touch_payment() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at
       AND (OLD.status, OLD.bank_status, OLD.bank_payment_id, OLD.authorization_url,
            OLD.authorize_url, OLD.initiation, OLD.cancel_requested_at, OLD.expires_at,
            OLD.failure_code, OLD.failure_detail, OLD.recurring_remaining,
            OLD.recurring_executions, OLD.metadata, OLD.psu_id, OLD.return_url)
           IS DISTINCT FROM
           (NEW.status, NEW.bank_status, NEW.bank_payment_id, NEW.authorization_url,
            NEW.authorize_url, NEW.initiation, NEW.cancel_requested_at, NEW.expires_at,
            NEW.failure_code, NEW.failure_detail, NEW.recurring_remaining,
            NEW.recurring_executions, NEW.metadata, NEW.psu_id, NEW.return_url) THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;
DROP TRIGGER payments_touch_updated_at ON payments;
CREATE TRIGGER payments_touch_updated_at
    BEFORE UPDATE ON payments
    FOR EACH ROW
    WHEN (OLD.updated_at IS NOT DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION pisgate_touch_payment();
