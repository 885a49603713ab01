-- OP (issue 26): the submit step after authorization (BankTraits.submit_after_authorization).
--
-- * payment_submissions: one row per submission attempt of a payment, written (with its
--   idempotency key and the ledger event `submission_started`) BEFORE the bank is called.
--   `outcome`: `in_flight` (sent or about to be; a holder that crashed leaves it so, and the
--   next claim turns it into `outcome_unknown`), `answered` (the bank's status came back;
--   `needs_resubmit` says whether that status still asks for a submission, e.g. OP's
--   `SubmissionPending`, which takes a new key after a backoff), `refused` (the bank said no
--   before acting), `outcome_unknown` (timeout, drop, unreadable answer: retried with the
--   SAME key while the bank still asks for a submission).
-- * payments.submission_claimed_until / submission_claim: the one claim of the submit step
--   (taken under the row lock; a lease, so a crashed holder's claim expires).
CREATE TABLE payment_submissions (
    payment_id uuid NOT NULL REFERENCES payments (id) ON DELETE CASCADE,
    attempt integer NOT NULL CHECK (attempt > 0),
    idempotency_key text NOT NULL,
    outcome text NOT NULL DEFAULT 'in_flight'
        CHECK (outcome IN ('in_flight', 'answered', 'refused', 'outcome_unknown')),
    needs_resubmit boolean NOT NULL DEFAULT false,
    bank_status text,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (payment_id, attempt)
);

ALTER TABLE payments
    ADD COLUMN submission_claimed_until timestamptz,
    ADD COLUMN submission_claim uuid;
