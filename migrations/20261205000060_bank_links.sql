-- The links a bank handed out for a payment (Berlin Group `_links`: name -> href). pisgate
-- follows them for status reads, authorisations and cancellation, never rebuilding paths.
-- Empty for Nordea, whose paths are fixed.
ALTER TABLE payments ADD COLUMN bank_links jsonb NOT NULL DEFAULT '{}'::jsonb;
