-- Operations (issue 13): traces that follow a payment.

-- The W3C traceparent of the request that created a payment (only ids and flags). Polls,
-- the callback and webhook deliveries of that payment link their spans to it.
ALTER TABLE payments ADD COLUMN trace_parent text;
-- Copied from the payment when the event is enqueued, so the dispatcher needs no join.
ALTER TABLE webhook_events ADD COLUMN trace_parent text;
