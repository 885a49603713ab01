-- Background workers: the status poller's schedule and leases, the progress of standing
-- orders, merchants' webhook endpoints, the webhook outbox and its deliveries.

-- The poller's schedule. next_poll_at is NULL once a payment is final (nothing to poll).
-- A claim moves next_poll_at to the end of the lease and names the owner, so a crashed
-- replica's claims simply become due again when their lease runs out.
ALTER TABLE payments
    ADD COLUMN next_poll_at         timestamptz,
    ADD COLUMN poll_owner           text,
    ADD COLUMN poll_failures        integer NOT NULL DEFAULT 0 CHECK (poll_failures >= 0),
    ADD COLUMN polls                integer NOT NULL DEFAULT 0 CHECK (polls >= 0),
    ADD COLUMN last_polled_at       timestamptz,
    -- Standing orders: executions still to come as the bank counts them, and how many we
    -- have seen executed.
    ADD COLUMN recurring_remaining  integer,
    ADD COLUMN recurring_executions integer NOT NULL DEFAULT 0 CHECK (recurring_executions >= 0);

UPDATE payments SET next_poll_at = now()
    WHERE status IN ('awaiting_authorization', 'authorized');

-- updated_at tells merchants when their payment last changed: the poller's own bookkeeping
-- (every claim and every poll) does not count as a change.
DROP TRIGGER payments_touch_updated_at ON payments;
CREATE TRIGGER payments_touch_updated_at
    BEFORE UPDATE ON payments
    FOR EACH ROW
    WHEN ((to_jsonb(OLD) - '{next_poll_at,poll_owner,poll_failures,polls,last_polled_at,updated_at}'::text[])
          IS DISTINCT FROM
          (to_jsonb(NEW) - '{next_poll_at,poll_owner,poll_failures,polls,last_polled_at,updated_at}'::text[]))
    EXECUTE FUNCTION pisgate_touch_updated_at();

CREATE INDEX payments_poll_due ON payments (next_poll_at) WHERE next_poll_at IS NOT NULL;
CREATE INDEX payments_poll_owner ON payments (poll_owner) WHERE poll_owner IS NOT NULL;
-- The token refresher asks whether a shopper still has payments in flight.
CREATE INDEX payments_psu_key_active ON payments (psu_key)
    WHERE psu_key IS NOT NULL AND status IN ('awaiting_authorization', 'authorized');

-- Where a merchant wants to hear about its payments. The signing secret is encrypted at
-- rest with the token key (AES-256-GCM, key_id names the key); it is shown once.
CREATE TABLE webhook_endpoints (
    id               uuid PRIMARY KEY,
    merchant_id      uuid NOT NULL REFERENCES merchants (id),
    url              text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description      text,
    -- Empty: every event type.
    event_types      text[] NOT NULL DEFAULT '{}',
    key_id           text NOT NULL,
    secret           bytea NOT NULL,
    status           text NOT NULL DEFAULT 'enabled'
                         CHECK (status IN ('enabled', 'disabled', 'deleted')),
    disabled_reason  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id, created_at DESC, id DESC);

CREATE TRIGGER webhook_endpoints_touch_updated_at
    BEFORE UPDATE ON webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION pisgate_touch_updated_at();

-- The outbox: one row per event, written in the transaction of the change it reports.
-- Its id is the `webhook-id` every delivery of it carries.
CREATE TABLE webhook_events (
    id           uuid PRIMARY KEY,
    merchant_id  uuid NOT NULL REFERENCES merchants (id),
    payment_id   uuid REFERENCES payments (id),
    event_type   text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_events_payment ON webhook_events (payment_id, created_at);

-- One delivery per event and endpoint. Claimed like the poller claims payments:
-- next_attempt_at moves to the end of the lease, so a crashed dispatcher's claims come due.
CREATE TABLE webhook_deliveries (
    endpoint_id           uuid NOT NULL REFERENCES webhook_endpoints (id),
    event_id              uuid NOT NULL REFERENCES webhook_events (id),
    status                text NOT NULL DEFAULT 'pending'
                              CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts              integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at       timestamptz,
    owner                 text,
    last_attempt_at       timestamptz,
    last_response_status  integer,
    last_error            text,
    delivered_at          timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint_id, event_id),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, status, created_at DESC, event_id DESC);
CREATE INDEX webhook_deliveries_owner ON webhook_deliveries (owner) WHERE owner IS NOT NULL;

CREATE TRIGGER webhook_deliveries_touch_updated_at
    BEFORE UPDATE ON webhook_deliveries
    FOR EACH ROW EXECUTE FUNCTION pisgate_touch_updated_at();
