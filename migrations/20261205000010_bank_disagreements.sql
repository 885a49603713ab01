-- Truth at the horizon (issue 22, item 1).
--
-- A final status that a later bank read contradicts (pisgate says expired, the bank says
-- Paid) is kept as it is; the bank's word is kept beside it, here, one row per payment and
-- bank status, so that it survives restarts and the operator console can show it.
CREATE TABLE bank_disagreements (
    id             bigserial PRIMARY KEY,
    payment_id     uuid NOT NULL REFERENCES payments (id),
    -- pisgate's final status when the bank first contradicted it (it never changes).
    status         text NOT NULL,
    -- What the bank said, as the bank spells it.
    bank_status    text NOT NULL,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    seen           integer NOT NULL DEFAULT 1 CHECK (seen >= 1),
    UNIQUE (payment_id, bank_status)
);

CREATE INDEX bank_disagreements_first_seen ON bank_disagreements (first_seen_at);

-- A payment that ends expired or cancelled while someone may hold its signing link keeps
-- its row on the poll schedule for this many more bank reads, so that a bank that later
-- says otherwise is seen at all.
ALTER TABLE payment_polls
    ADD COLUMN final_reads_left integer NOT NULL DEFAULT 0 CHECK (final_reads_left >= 0);
