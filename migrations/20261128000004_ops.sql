-- Operations (issue 13): traces that follow a payment, and API keys that can be rotated.

-- The W3C traceparent of the request that created a payment (only ids and flags). Polls,
-- the callback and webhook deliveries of that payment link their spans to it.
ALTER TABLE payments ADD COLUMN trace_parent text;
-- Copied from the payment when the event is enqueued, so the dispatcher needs no join.
ALTER TABLE webhook_events ADD COLUMN trace_parent text;

-- A merchant may hold several keys: after `pisgate merchant rotate-key` the old ones keep
-- working until their expires_at (the grace period), the new one has none. Only the SHA-256
-- of a key's secret is stored, as before.
CREATE TABLE api_keys (
    key_id       text PRIMARY KEY,
    merchant_id  uuid NOT NULL REFERENCES merchants (id),
    key_hash     bytea NOT NULL CHECK (length(key_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz
);
CREATE INDEX api_keys_merchant ON api_keys (merchant_id);

INSERT INTO api_keys (key_id, merchant_id, key_hash, created_at)
SELECT api_key_id, id, api_key_hash, created_at FROM merchants;

-- The key columns of merchants are no longer written or read (a later migration drops
-- them, once no older binary runs against this database).
ALTER TABLE merchants ALTER COLUMN api_key_id DROP NOT NULL;
ALTER TABLE merchants ALTER COLUMN api_key_hash DROP NOT NULL;
