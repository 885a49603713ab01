//! OP (Finland): its own PSD2 payment API (OAuth2/OIDC under FAPI, mutual TLS, signed request
//! objects, submit after authorization). See docs/banks/op.md.
