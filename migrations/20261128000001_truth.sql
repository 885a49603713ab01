-- Truth first: a payment's final status comes from the bank's evidence.
--
-- * expires_at: pisgate's signing window. Past it the authorization hop no longer leads new
--   shoppers to the bank; it never ends the payment by itself.
-- * sign_horizon_at: the late-signing horizon. Past it, with the bank still showing nothing
--   signed, the payment is expired. The OAuth state lives as long (a late callback within the
--   horizon is handled normally).
-- * authorize_token / authorize_url: the hop, `{public_url}/authorize/{id}?t=…`, the only
--   authorization link merchants ever see. authorization_url keeps the bank's own link.
-- * hop_opened_at: when a shopper first went through the hop to the bank's page.
-- * initiation: where the bank call stands. `pending` while an attempt runs (or if its
--   replica died), `initiated` once the bank's answer is recorded, `outcome_unknown` after a
--   timeout, a dropped connection or an unreadable answer, `not_created` when the bank
--   provably did not run it (429, 503, connection refused), `refused` after an explicit
--   refusal. Every attempt is in the ledger.
-- * cancel_requested_at: the merchant asked to cancel; the hop stops leading to the bank.
-- * callback_claimed_until: one callback at a time runs the code exchange for a payment.
ALTER TABLE payments
    ADD COLUMN expires_at              timestamptz,
    ADD COLUMN sign_horizon_at         timestamptz,
    ADD COLUMN authorize_token         text,
    ADD COLUMN authorize_url           text,
    ADD COLUMN hop_opened_at           timestamptz,
    ADD COLUMN initiation              text NOT NULL DEFAULT 'initiated'
        CHECK (initiation IN ('pending', 'initiated', 'outcome_unknown', 'not_created', 'refused')),
    ADD COLUMN initiation_attempts     integer NOT NULL DEFAULT 1 CHECK (initiation_attempts >= 0),
    ADD COLUMN cancel_requested_at     timestamptz,
    ADD COLUMN callback_claimed_until  timestamptz;

-- Payments from before the hop handed the bank's link to merchants directly: as far as we
-- know, a shopper may have opened it.
UPDATE payments
SET expires_at = state_expires_at,
    sign_horizon_at = state_expires_at,
    hop_opened_at = CASE WHEN authorization_url IS NOT NULL THEN created_at END,
    initiation = CASE WHEN bank_payment_id IS NULL AND status = 'awaiting_authorization'
                      THEN 'pending' ELSE 'initiated' END;

-- The in-flight marker of an idempotency key is bounded by the request's own deadline: past
-- locked_until a retry with the same key may resume the payment.
ALTER TABLE idempotency_keys ADD COLUMN locked_until timestamptz;
UPDATE idempotency_keys SET locked_until = created_at + interval '60 seconds'
    WHERE completed_at IS NULL;

-- Shopper serialisation without a session: a lease row per (bank, shopper key). Code
-- exchanges and refreshes for one shopper take it for the length of their bank call; no
-- database connection or transaction is held across that call.
CREATE TABLE psu_locks (
    bank          text NOT NULL,
    psu_key       text NOT NULL,
    holder        uuid NOT NULL,
    locked_until  timestamptz NOT NULL,
    PRIMARY KEY (bank, psu_key)
);

-- The bank's issue time of a token when its answer says so (id_token `iat`): tokens of one
-- shopper are ordered by it across every lock key.
ALTER TABLE psu_tokens ADD COLUMN issued_at timestamptz;
