-- OAuth SCA at a Berlin Group bank: the authorisation's PKCE verifier, sealed with the token
-- key (AES-256-GCM, bound to the payment), kept until the shopper's code comes back.
ALTER TABLE payments ADD COLUMN sca_pkce_verifier bytea, ADD COLUMN sca_pkce_key_id text;
