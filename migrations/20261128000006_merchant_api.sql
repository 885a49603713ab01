-- The merchant API of issue 14.

-- GET /v1/events: a merchant's events newest first, all of them or of one type (by payment
-- it is webhook_events_payment). Events are never deleted, so they stay retrievable.
CREATE INDEX webhook_events_merchant_created
    ON webhook_events (merchant_id, created_at DESC, id DESC);
CREATE INDEX webhook_events_merchant_type_created
    ON webhook_events (merchant_id, event_type, created_at DESC, id DESC);
