-- The merchant API of issue 14.

-- GET /v1/events: a merchant's events newest first, all of them or of one type (by payment
-- it is webhook_events_payment). Events are never deleted, so they stay retrievable.
CREATE INDEX webhook_events_merchant_created
    ON webhook_events (merchant_id, created_at DESC, id DESC);
CREATE INDEX webhook_events_merchant_type_created
    ON webhook_events (merchant_id, event_type, created_at DESC, id DESC);

-- Webhook secret rotation: the secret replaced by the last rotation keeps signing beside the
-- new one until previous_secret_expires_at (sealed like `secret`, with the same associated
-- data). A second rotation within the overlap drops the oldest secret.
ALTER TABLE webhook_endpoints
    ADD COLUMN previous_key_id             text,
    ADD COLUMN previous_secret             bytea,
    ADD COLUMN previous_secret_expires_at  timestamptz,
    ADD CONSTRAINT webhook_endpoints_previous_secret_whole CHECK (
        (previous_secret IS NULL) = (previous_key_id IS NULL)
        AND (previous_secret IS NULL) = (previous_secret_expires_at IS NULL));

-- API keys over the API: a name, when each was last used (written at most once a minute per
-- key), and revocation. A revoked key is refused like an unknown one; its row is kept.
ALTER TABLE api_keys
    ADD COLUMN name          text CHECK (name IS NULL OR length(name) BETWEEN 1 AND 100),
    ADD COLUMN last_used_at  timestamptz,
    ADD COLUMN revoked_at    timestamptz;
DROP INDEX api_keys_merchant;
CREATE INDEX api_keys_merchant ON api_keys (merchant_id, created_at DESC, key_id DESC)
    WHERE revoked_at IS NULL;

-- GET /v1/payments search: one index behind each filter, each ordered as the list is (newest
-- first) where the filter is an equality, so a page is read straight off the index. The
-- merchant's own columns are often empty: those indexes are partial. Metadata is matched
-- with containment (metadata @> '{"key": "value"}') through a jsonb_path_ops GIN index.
CREATE INDEX payments_merchant_reference_created
    ON payments (merchant_id, merchant_reference, created_at DESC, id DESC)
    WHERE merchant_reference IS NOT NULL;
CREATE INDEX payments_merchant_psu_created
    ON payments (merchant_id, psu_id, created_at DESC, id DESC)
    WHERE psu_id IS NOT NULL;
CREATE INDEX payments_merchant_currency_created
    ON payments (merchant_id, currency, created_at DESC, id DESC);
CREATE INDEX payments_merchant_amount
    ON payments (merchant_id, amount_minor);
CREATE INDEX payments_metadata ON payments USING gin (metadata jsonb_path_ops);
