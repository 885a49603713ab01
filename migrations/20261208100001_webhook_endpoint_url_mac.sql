-- A webhook endpoint's URL is bound to the ledger key: url_mac = HMAC-SHA256(ledger
-- key[url_mac_key_id], the endpoint, its merchant and its URL), see src/ledger/binding.rs.
-- The endpoint's signing secret is bound to the merchant and the endpoint only, so an
-- insider could point an endpoint at a server of theirs in SQL and receive every event,
-- signed with the merchant's real secret (what the merchant would have trusted). The
-- dispatcher checks the MAC before it signs and sends; `ledger verify` reports an endpoint
-- that fails it. The process that applies this migration seals the URLs already written
-- (src/ledger/seal.rs).
ALTER TABLE webhook_endpoints
    ADD COLUMN url_mac        bytea,
    ADD COLUMN url_mac_key_id text;
