-- The poller's schedule in its own narrow table (issue 12). A poll that changes nothing
-- rewrites one small row here instead of the wide payments row (whose every UPDATE touched
-- indexed columns, so none was HOT). One row per payment still followed; it is deleted when
-- the payment becomes final. A claim moves next_poll_at to the end of the lease and names
-- the owner, so a crashed replica's claims simply become due again.
CREATE TABLE payment_polls (
    payment_id      uuid PRIMARY KEY REFERENCES payments (id),
    next_poll_at    timestamptz NOT NULL,
    poll_owner      text,
    poll_failures   integer NOT NULL DEFAULT 0 CHECK (poll_failures >= 0),
    polls           integer NOT NULL DEFAULT 0 CHECK (polls >= 0),
    last_polled_at  timestamptz
) WITH (fillfactor = 70);

CREATE INDEX payment_polls_due ON payment_polls (next_poll_at);

INSERT INTO payment_polls (payment_id, next_poll_at, poll_owner, poll_failures, polls, last_polled_at)
    SELECT id, next_poll_at, poll_owner, poll_failures, polls, last_polled_at
    FROM payments WHERE next_poll_at IS NOT NULL;

DROP INDEX payments_poll_due;
ALTER TABLE payments
    DROP COLUMN next_poll_at,
    DROP COLUMN poll_owner,
    DROP COLUMN poll_failures,
    DROP COLUMN polls,
    DROP COLUMN last_polled_at;
