-- Two functions for reading what an insider may have edited without letting it stop a reader.
--
-- pisgate_readable_time: a time as pisgate's readers can hold it. PostgreSQL takes
-- 'infinity', '-infinity' and years up to 294276; chrono (through sqlx) panics on reading
-- the infinities and years past its own range (262142). One such value written into a
-- payment row in SQL stopped every replica's poller in turn (the claim read it) and
-- `ledger verify` (which should name the row instead). The
-- poller's claim, its wait for the next due poll and `ledger verify` read the times they
-- hold through this: between 1970 and 9999 a time is itself; beyond, the nearest end (a
-- horizon or a window "for ever" stays in the far future; a date before 1970 is long past).
-- NULL stays NULL. One CASE, neither STRICT nor volatile, so that PostgreSQL inlines it
-- into the query instead of calling a function per value.
CREATE FUNCTION pisgate_readable_time(t timestamptz) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN t < '1970-01-01 00:00:00+00'::timestamptz
                      THEN '1970-01-01 00:00:00+00'::timestamptz
                      WHEN t > '9999-12-31 00:00:00+00'::timestamptz
                      THEN '9999-12-31 00:00:00+00'::timestamptz
                      ELSE t END $$;

-- pisgate_ledger_horizon: the late-signing horizon the payment's ledger recorded last: the
-- `field` of the newest event of one of `kinds` that has it (src/ledger/binding.rs:
-- HORIZON_FIELD and HORIZON_EVENT_KINDS, passed in by the callers so that the rule lives in
-- one place). NULL when the ledger recorded none (a payment written before the horizon was
-- bound) or when the recorded text is not a time (an event inserted in SQL; `ledger verify`
-- names it by its hash). PARALLEL UNSAFE: its EXCEPTION block starts a subtransaction, which
-- PostgreSQL refuses inside a parallel plan ("cannot start subtransactions during a parallel
-- operation"); marked safe, the frozen-schedule count failed on a large table.
CREATE FUNCTION pisgate_ledger_horizon(payment uuid, field text, kinds text[])
    RETURNS timestamptz
    LANGUAGE plpgsql STABLE PARALLEL UNSAFE
    AS $$
DECLARE
    recorded text;
BEGIN
    SELECT e.detail ->> field INTO recorded
    FROM payment_events e
    WHERE e.payment_id = payment AND e.kind = ANY (kinds) AND e.detail ? field
    ORDER BY e.seq DESC
    LIMIT 1;
    RETURN pisgate_readable_time(recorded::timestamptz);
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;
