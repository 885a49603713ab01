//! OP (Finland): its own PSD2 payment API V2 (OAuth2/OIDC under FAPI, mutual TLS, signed
//! request objects, submit after authorization). Every OP fact relied on here, with its
//! source or marked ASSUMED, is in `docs/banks/op.md`; the wire is the one of the OP
//! contract (docs/banks/op-wire.md §2–§3), which the simulator implements too.
//!
//! - `wire`: OP's JSON as serde types (amounts as decimal strings);
//! - `convert`: the status table (contract §1), exact amounts, the creation body, details;
//! - `errors`: OP's `{"code","message"}` and OAuth errors as [`BankError`](crate::bank::BankError);
//! - `jose`: the request object (signed with the QSealC key), ID-token validation, detached
//!   answer signatures, JWKS caching;
//! - `client`: [`OpClient`], the [`Bank`](crate::bank::Bank) implementation.
//!
//! Money moved only on OP's word: `Debited` is the only paid status unless an operator adds
//! `Accepted` (`paid_statuses`). Nothing here touches the database or decides a payment's
//! status; nothing here logs a token, code, ID token, state, nonce, the client secret, the
//! API key, a key or a full account number.

pub mod client;
pub mod convert;
pub mod errors;
pub mod jose;
pub mod wire;

#[cfg(test)]
mod sim_tests;

pub use client::{OpClient, OpConfig, OpConfigError};
