-- Operators of the console on the admin listener (issue 15): Argon2id password hashes,
-- lock-out after repeated failures, sessions (only a SHA-256 of the cookie's token is kept)
-- with their CSRF token, and an append-only audit log of what operators did.
CREATE TABLE operators (
    id               uuid PRIMARY KEY,
    email            text NOT NULL UNIQUE CHECK (email = lower(email) AND email LIKE '%_@_%'),
    password_hash    text NOT NULL,
    failed_attempts  integer NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    locked_until     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE operator_sessions (
    token_hash   bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    operator_id  uuid NOT NULL REFERENCES operators (id),
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX operator_sessions_operator ON operator_sessions (operator_id);

CREATE TABLE operator_audit (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operator_id  uuid REFERENCES operators (id),
    email        text NOT NULL,
    action       text NOT NULL,
    target       text,
    detail       jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION pisgate_refuse_audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'operator_audit is append-only';
END;
$$;
CREATE TRIGGER operator_audit_append_only
    BEFORE UPDATE OR DELETE ON operator_audit
    FOR EACH ROW EXECUTE FUNCTION pisgate_refuse_audit_change();
CREATE TRIGGER operator_audit_no_truncate
    BEFORE TRUNCATE ON operator_audit
    FOR EACH STATEMENT EXECUTE FUNCTION pisgate_refuse_audit_change();
