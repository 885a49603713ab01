-- Console operators and their sessions are bound to the ledger key:
-- operators.mac = HMAC-SHA256(ledger key[mac_key_id], the operator's id, email, password hash
-- and whether it is disabled) and operator_sessions.mac = HMAC-SHA256(ledger key[mac_key_id], the session's token
-- hash, operator, CSRF token and end), see src/ledger/binding.rs. A console session is an
-- operator's power: registering payees, opening a merchant's payee policy, rotating keys,
-- all sealed by the ledger key the console holds. Whoever could write these tables could
-- otherwise insert an operator with a password of theirs, set a known password's hash on an
-- operator, re-enable a disabled one, or insert a session, and act through the console
-- without the key. Signing in and every console request now trust only rows whose MAC holds;
-- `ledger verify` reports the operators that fail. The process that applies this migration
-- seals the operators already there, in their state (src/ledger/seal.rs; `ledger seal`
-- never does); the sessions opened before it end here (operators sign in again).
ALTER TABLE operators
    ADD COLUMN mac        bytea,
    ADD COLUMN mac_key_id text;
ALTER TABLE operator_sessions
    ADD COLUMN mac        bytea,
    ADD COLUMN mac_key_id text;
DELETE FROM operator_sessions;
