-- Webhook payloads are bound to the ledger key: payload_mac = HMAC-SHA256(ledger key
-- [mac_key_id], the event's id, merchant, payment, type, time and canonical payload), see
-- src/ledger/binding.rs. Events written before this have neither; `ledger verify` counts
-- them as unbound instead of failing.
ALTER TABLE webhook_events
    ADD COLUMN payload_mac bytea CHECK (length(payload_mac) = 32),
    ADD COLUMN mac_key_id  text,
    ADD CONSTRAINT webhook_events_mac_with_key CHECK ((payload_mac IS NULL) = (mac_key_id IS NULL));
