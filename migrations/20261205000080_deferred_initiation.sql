-- Deferred initiation (issue 24): a payment whose bank the shopper chooses on pisgate's page,
-- or whose debtor account (IBAN) the shopper gives there, is created without a bank call.
--
-- * initiation gains `awaiting_bank_choice` and `awaiting_debtor_account`.
-- * bank is '' until the shopper chooses (the `created` event binds '' and the `bank_chosen`
--   event binds the choice, so `ledger verify` still catches an edited bank).
-- * deferred: the payment's initiation is driven by the shopper's page, never resumed by a
--   merchant's retry with the same Idempotency-Key.
-- * shopper_debtor_account: the IBAN the shopper typed (bound by the `debtor_account_given`
--   event's digest).
-- * initiation_lease_until: a shopper's submit holds the initiation until then, so a double
--   click, Back or a second tab never starts a second bank call while one runs.
ALTER TABLE payments DROP CONSTRAINT payments_initiation_check;
ALTER TABLE payments ADD CONSTRAINT payments_initiation_check
    CHECK (initiation IN ('pending', 'initiated', 'outcome_unknown', 'not_created', 'refused',
                          'awaiting_bank_choice', 'awaiting_debtor_account'));
ALTER TABLE payments
    ADD COLUMN deferred boolean NOT NULL DEFAULT false,
    ADD COLUMN shopper_debtor_account text,
    ADD COLUMN initiation_lease_until timestamptz;
