-- Payments, their append-only ledger, idempotency records and shoppers' bank tokens.

CREATE TABLE payments (
    id                  uuid PRIMARY KEY,
    merchant_id         uuid NOT NULL REFERENCES merchants (id),
    status              text NOT NULL CHECK (status IN (
                            'awaiting_authorization', 'authorized', 'paid', 'rejected',
                            'authorization_failed', 'cancelled', 'expired', 'failed')),
    bank                text NOT NULL DEFAULT 'nordea',
    bank_status         text,
    bank_payment_id     text,
    authorization_url   text,
    amount_minor        bigint NOT NULL CHECK (amount_minor > 0),
    currency            text NOT NULL CHECK (currency IN ('EUR', 'DKK', 'SEK', 'NOK')),
    country             text NOT NULL CHECK (country IN ('DK', 'FI', 'NO', 'SE')),
    -- The validated request in its canonical form (creditor, debtor, dates, ...).
    request             jsonb NOT NULL,
    merchant_reference  text,
    psu_id              text,
    return_url          text NOT NULL,
    metadata            jsonb NOT NULL DEFAULT '{}',
    -- The OAuth state sent to the bank: only its SHA-256 is kept; single use; expires.
    state_hash          bytea UNIQUE,
    state_expires_at    timestamptz,
    state_used_at       timestamptz,
    failure_code        text,
    failure_detail      text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    authorized_at       timestamptz,
    finalized_at        timestamptz
);

CREATE UNIQUE INDEX payments_bank_payment_id ON payments (bank, bank_payment_id)
    WHERE bank_payment_id IS NOT NULL;
-- Listing a merchant's payments newest first, with a keyset cursor.
CREATE INDEX payments_merchant_created ON payments (merchant_id, created_at DESC, id DESC);
CREATE INDEX payments_merchant_status_created ON payments (merchant_id, status, created_at DESC, id DESC);

CREATE TRIGGER payments_touch_updated_at
    BEFORE UPDATE ON payments
    FOR EACH ROW EXECUTE FUNCTION pisgate_touch_updated_at();

-- The ledger: one row per transition or bank interaction, never changed once written.
-- hash = SHA-256(prev_hash || canonical event), so an edit anywhere breaks the chain.
CREATE TABLE payment_events (
    payment_id   uuid NOT NULL REFERENCES payments (id),
    seq          integer NOT NULL CHECK (seq >= 1),
    kind         text NOT NULL,
    old_status   text,
    new_status   text,
    bank_status  text,
    detail       jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL,
    prev_hash    bytea,
    hash         bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (payment_id, seq),
    CHECK ((seq = 1) = (prev_hash IS NULL))
);

CREATE FUNCTION pisgate_refuse_ledger_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'payment_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER payment_events_append_only
    BEFORE UPDATE OR DELETE ON payment_events
    FOR EACH ROW EXECUTE FUNCTION pisgate_refuse_ledger_change();
CREATE TRIGGER payment_events_no_truncate
    BEFORE TRUNCATE ON payment_events
    FOR EACH STATEMENT EXECUTE FUNCTION pisgate_refuse_ledger_change();

-- Idempotency: scoped to the merchant; the first answer is replayed for the same body.
CREATE TABLE idempotency_keys (
    merchant_id      uuid NOT NULL REFERENCES merchants (id),
    key              text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash     bytea NOT NULL,
    payment_id       uuid REFERENCES payments (id),
    response_status  integer,
    response_body    jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

-- One live token per shopper and bank. Encrypted at rest (AES-256-GCM); key_id names the
-- encryption key so keys can be rotated. issue_seq orders exchanges: a store only wins
-- over an older one.
CREATE SEQUENCE psu_token_issue_seq;

CREATE TABLE psu_tokens (
    bank                  text NOT NULL,
    psu_key               text NOT NULL,
    issue_seq             bigint NOT NULL,
    key_id                text NOT NULL,
    access_token          bytea NOT NULL,
    refresh_token         bytea,
    access_expires_at     timestamptz NOT NULL,
    status                text NOT NULL DEFAULT 'live' CHECK (status IN ('live', 'dead')),
    dead_reason           text,
    obtained_at           timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bank, psu_key)
);

CREATE TRIGGER psu_tokens_touch_updated_at
    BEFORE UPDATE ON psu_tokens
    FOR EACH ROW EXECUTE FUNCTION pisgate_touch_updated_at();

-- Which shopper key a payment's token lives under (known once the shopper signed).
ALTER TABLE payments ADD COLUMN psu_key text;
