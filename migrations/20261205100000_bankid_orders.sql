-- SEB (issue 25): payments at a bank that needs the shopper's own token for every call
-- (BankTraits.shopper_token_required) wait for the shopper to identify with BankID on
-- pisgate's BankID page before anything is sent to the bank.
--
-- * initiation gains `awaiting_shopper_identification`.
-- * bankid_orders: the BankID orders of a payment's page, one row per purpose (`identify`:
--   the decoupled authorization for the shopper's token; `sign`: the signing order). Each
--   row is the claim of its one start per shopper action (`start_claimed_at`, a lease; `starts`
--   counts the orders started), the current order's id at the bank (never logged), its
--   last known state and hint code, the page's read debounce (`polled_at`), and for an
--   identification the claim of the one token fetch (`tokens_claimed_at`: the bank gives
--   the tokens once) and the shopper key the tokens were stored under (`psu_key`).
--   Never stored here: tokens, QR data, autostart tokens.
ALTER TABLE payments DROP CONSTRAINT payments_initiation_check;
ALTER TABLE payments ADD CONSTRAINT payments_initiation_check
    CHECK (initiation IN ('pending', 'initiated', 'outcome_unknown', 'not_created', 'refused',
                          'awaiting_bank_choice', 'awaiting_debtor_account',
                          'awaiting_shopper_identification'));

CREATE TABLE bankid_orders (
    payment_id uuid NOT NULL REFERENCES payments (id) ON DELETE CASCADE,
    purpose text NOT NULL CHECK (purpose IN ('identify', 'sign')),
    starts integer NOT NULL DEFAULT 0,
    start_claimed_at timestamptz,
    order_id text,
    state text NOT NULL DEFAULT 'none'
        CHECK (state IN ('none', 'pending', 'complete', 'failed')),
    hint_code text,
    bank_status text,
    polled_at timestamptz,
    tokens_claimed_at timestamptz,
    psu_key text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (payment_id, purpose)
);
