-- Console operators (issue 22): an operator can be disabled (`pisgate operator disable`):
-- they cannot sign in and their sessions are gone. The lock-out columns of 20261128000007
-- are now written before the password check (see src/ledger/operators.rs).
ALTER TABLE operators ADD COLUMN disabled_at timestamptz;
