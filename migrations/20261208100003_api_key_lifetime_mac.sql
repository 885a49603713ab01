-- An API key's end is bound to the ledger key: lifetime_mac = HMAC-SHA256(ledger
-- key[lifetime_mac_key_id], the key's public id, expires_at and rotated_away_at), see
-- src/ledger/binding.rs, written with the key and again by each rotation. Authentication
-- checks it; `ledger verify` reports a key that fails it. Without it, whoever can write
-- this table could give a key rotated away after a leak (payments only, until its grace
-- ends) or an expiring key its full life back. The process that applies this migration
-- seals the keys already written (src/ledger/seal.rs).
ALTER TABLE api_keys
    ADD COLUMN lifetime_mac        bytea,
    ADD COLUMN lifetime_mac_key_id text;

-- A revoked key is dead for good: the hash of its secret is overwritten with the hash of a
-- random value (no key anybody holds), and its MACs go, so clearing `revoked_at` in SQL
-- gives back nothing. Revoking does the same from now on.
UPDATE api_keys
   SET key_hash = sha256(convert_to(gen_random_uuid()::text, 'UTF8')),
       key_mac = NULL, key_mac_key_id = NULL
 WHERE revoked_at IS NOT NULL;
