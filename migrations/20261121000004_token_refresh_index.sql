-- The token refresher looks for live, refreshable tokens about to expire: find them by
-- their expiry instead of reading every token ever stored.
CREATE INDEX psu_tokens_refresh_due ON psu_tokens (access_expires_at)
    WHERE status = 'live' AND refresh_token IS NOT NULL;
