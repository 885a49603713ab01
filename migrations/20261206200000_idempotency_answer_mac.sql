-- The answer an idempotency key replays is bound to the ledger key: response_mac =
-- HMAC-SHA256(ledger key[response_mac_key_id], the merchant, the key, the status and the
-- canonical answer), see src/ledger/binding.rs. A replay checks it first, so an answer
-- edited in SQL (another payment's id, a phishing authorization_url) is never handed to a
-- merchant. Keys answered before this migration have neither and are replayed as before
-- (they expire with their retention); a key answered after it without a MAC is refused.
ALTER TABLE idempotency_keys
    ADD COLUMN response_mac        bytea CHECK (length(response_mac) = 32),
    ADD COLUMN response_mac_key_id text,
    ADD CONSTRAINT idempotency_keys_mac_with_key
        CHECK ((response_mac IS NULL) = (response_mac_key_id IS NULL));
