-- The links a bank handed out for a payment (`bank_links`) are bound to the ledger key:
-- bank_links_mac = HMAC-SHA256(ledger key[bank_links_mac_key_id], the payment, its bank
-- payment id and the canonical links), see src/ledger/binding.rs. pisgate follows those
-- links for the shopper (an OAuth authorisation server, a start of the authorisation) and
-- for the bank's word (status, SCA status, cancel), so links edited in SQL (a phishing
-- authorisation server, another payment's status) are never followed: every use checks the
-- MAC first and `ledger verify` reports a row that fails it. Every payment with a bank id
-- has one, empty links (`{}`, Nordea) included, so that links emptied in SQL are seen too.
-- The process that applies this migration seals the links already written
-- (src/ledger/seal.rs). No CHECK on them: every write of `payments` pays for each CHECK
-- (20261205400000), and a malformed MAC fails the check at use like a wrong one.
ALTER TABLE payments
    ADD COLUMN bank_links_mac        bytea,
    ADD COLUMN bank_links_mac_key_id text;
