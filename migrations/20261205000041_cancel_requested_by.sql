-- Who asked to cancel a payment that a shopper may be signing: the merchant (its API) or the
-- shopper (the consent page's cancel). Only the merchant's request deletes a payment the
-- shopper then signs; the shopper's own cancel never does (they signed after pressing it,
-- in another tab). NULL where cancel_requested_at is NULL, and for requests recorded before
-- this column (all of them then followed the merchant's rule).
ALTER TABLE payments ADD COLUMN cancel_requested_by text
    CHECK (cancel_requested_by IN ('merchant', 'shopper'));
