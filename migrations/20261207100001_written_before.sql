-- Whether a row written at `written` predates migration `migration` (its `installed_on` in
-- sqlx's own table; false when that migration is unknown). Rows written before a binding
-- migration may lack the MAC it introduced: the idempotency answers' (20261206200000) and
-- the webhook events' (20261205000030). One definition for every query that applies such a
-- cut-over. A plain SQL function: inlined, its lookup runs once per statement.
CREATE FUNCTION pisgate_written_before(written timestamptz, migration bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(written < (SELECT installed_on FROM _sqlx_migrations
                               WHERE version = migration), false)
$$;
