-- A merchant's API key is bound to the ledger key: key_mac = HMAC-SHA256(ledger
-- key[key_mac_key_id], the key's public id, its merchant and the hash of its secret), see
-- src/ledger/binding.rs. Only the hash of a key's secret is stored, so whoever can write
-- this table could otherwise add a key of their own (or move one to another merchant) and
-- use the merchant's API. Authentication checks the MAC; `ledger verify` reports a key that
-- fails it. The process that applies this migration seals the keys already written
-- (src/ledger/seal.rs).
ALTER TABLE api_keys
    ADD COLUMN key_mac        bytea,
    ADD COLUMN key_mac_key_id text;
