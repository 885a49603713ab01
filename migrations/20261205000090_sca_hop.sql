-- Explicit and decoupled SCA started at the authorization hop (src/api/sca.rs).
-- sca_started_at: the claim of the one start of an authorisation (a lease: while it is
--   younger than the lease no other request, tab or replica starts one; a start whose answer
--   was lost leaves it, and a shopper's retry after the lease starts again).
-- sca_authorisation_id: the authorisation the bank answered with (recorded once).
-- sca_state_hash: the hash of the state in the TPP-Redirect-URI sent with the start, for a
--   bank that returns the shopper to that URI rather than to the initiation's.
-- sca_psu_message: the bank's latest text for the shopper (shown on the waiting page).
-- sca_polled_at: the last SCA status read from the waiting page (a per-payment debounce that
--   holds across replicas).
ALTER TABLE payments
    ADD COLUMN sca_started_at timestamptz,
    ADD COLUMN sca_authorisation_id text,
    ADD COLUMN sca_state_hash bytea UNIQUE,
    ADD COLUMN sca_polled_at timestamptz,
    ADD COLUMN sca_psu_message text;
