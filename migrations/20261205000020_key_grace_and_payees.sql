-- Keys in a rotation's grace period, and the creditor accounts a merchant may pay.

-- Set when `rotate-key` ends a key's life: the key still works until expires_at, but only
-- for payments (it may not manage keys or webhook endpoints; see api/auth.rs).
ALTER TABLE api_keys ADD COLUMN rotated_away_at timestamptz;

-- 'open': any valid creditor; 'registered': only the accounts in merchant_payees.
ALTER TABLE merchants ADD COLUMN payees text NOT NULL DEFAULT 'open'
    CHECK (payees IN ('open', 'registered'));

-- Registered by an operator (console or CLI), never by the merchant's API key. `account` is
-- the domain's normalised form (Account::parse), so formatting does not matter.
CREATE TABLE merchant_payees (
    merchant_id   uuid NOT NULL REFERENCES merchants (id),
    account_type  text NOT NULL,
    account       text NOT NULL,
    label         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, account_type, account)
);
