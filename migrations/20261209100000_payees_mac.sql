-- A merchant's payee policy and its registered payees are bound to the ledger key:
-- merchants.payees_mac = HMAC-SHA256(ledger key[payees_mac_key_id], the merchant and its
-- policy) and merchant_payees.mac = HMAC-SHA256(ledger key[mac_key_id], the merchant and the
-- account), see src/ledger/binding.rs. The policy is what keeps a stolen API key from
-- sending the shoppers' money elsewhere; whoever could write these tables could otherwise
-- register an account of theirs, or set the policy back to 'open', in SQL. Creating a
-- payment trusts only a policy and payees whose MAC holds (a policy whose MAC does not is
-- taken as 'registered'); `ledger verify` reports those that fail. The process that applies
-- this migration seals the policies and payees already written (src/ledger/seal.rs).
ALTER TABLE merchants
    ADD COLUMN payees_mac        bytea,
    ADD COLUMN payees_mac_key_id text;
ALTER TABLE merchant_payees
    ADD COLUMN mac        bytea,
    ADD COLUMN mac_key_id text;
