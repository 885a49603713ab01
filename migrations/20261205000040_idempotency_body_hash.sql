-- The SHA-256 of the request body as the merchant sent it (its canonical JSON), beside
-- request_hash (the hash of the validated, canonical request). A retry with the same body is
-- recognised by it whatever today's validation rules say, so a key that was answered is
-- replayed even if the same body would be refused today (issue 22, item 8). NULL for keys
-- written before this column: they are matched by request_hash alone.
ALTER TABLE idempotency_keys ADD COLUMN body_hash bytea;
