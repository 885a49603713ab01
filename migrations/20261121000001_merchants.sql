-- Merchants and their API keys. The key itself is never stored: only a public key id
-- (to find the row) and the SHA-256 of the secret part (compared in constant time).

CREATE OR REPLACE FUNCTION pisgate_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE merchants (
    id              uuid PRIMARY KEY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    api_key_id      text NOT NULL UNIQUE,
    api_key_hash    bytea NOT NULL CHECK (length(api_key_hash) = 32),
    return_origins  text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    disabled_at     timestamptz
);

CREATE TRIGGER merchants_touch_updated_at
    BEFORE UPDATE ON merchants
    FOR EACH ROW EXECUTE FUNCTION pisgate_touch_updated_at();
