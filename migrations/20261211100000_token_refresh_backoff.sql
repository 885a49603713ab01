-- A token whose refresh failed (the bank down, a garbled answer) is tried again only after a
-- backoff that grows with its consecutive failures (issue 28's workers review: 100 failing
-- tokens of one bank held every round's batch, and no other shopper's token was refreshed).
-- A stored pair starts again at 0.
ALTER TABLE psu_tokens
    ADD COLUMN refresh_failures integer NOT NULL DEFAULT 0,
    ADD COLUMN refresh_not_before timestamptz;
