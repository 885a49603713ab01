-- The dispatcher claims and schedules per endpoint (at most `per_endpoint_concurrency` of
-- one endpoint and `per_merchant_concurrency` of one merchant in flight): it walks each
-- enabled endpoint's own pending deliveries, oldest first, instead of ranking every due
-- delivery of every endpoint. One endpoint's backlog (its receiver down for a day) then
-- costs a claim nothing beyond that endpoint's few slots, and the next due time skips an
-- endpoint with no free slot rather than waking the dispatcher for it ten times a second.
CREATE INDEX webhook_deliveries_endpoint_due
    ON webhook_deliveries (endpoint_id, next_attempt_at) WHERE status = 'pending';
-- Replaced: every query that used it now reads the index above.
DROP INDEX webhook_deliveries_due;
