//! The Berlin Group NextGenPSD2 (XS2A) adapter of the bank port: payment initiation
//! (single and periodic), status, details, cancellation (incl. 202 cancellation
//! authorisations), start authorisation and SCA status, per the OpenAPI 1.3.12 and
//! `berlin-group-pis.md`.
//!
//! - `signing`: the Berlin Group HTTP signature (keyId `SN=…,CA=…`, Digest on every request,
//!   `Date`, `X-Request-ID`, `TPP-Signature-Certificate`), on the Nordea module's key and
//!   digest primitives;
//! - `wire`: the Berlin Group JSON as serde types;
//! - `status`: `transactionStatus` and `scaStatus` and their merchant meaning;
//! - `convert`: between the port's neutral types and the wire types;
//! - `errors`: HTTP answers (`tppMessages` and problem+json) and transport failures to
//!   [`BankError`](crate::bank::BankError);
//! - `client`: [`BerlinGroupClient`], the [`Bank`](crate::bank::Bank) implementation;
//! - `oauth`: OAuth SCA building blocks (RFC 8414 metadata, PKCE S256, code exchange), not
//!   yet wired into the port.
//!
//! Nothing here touches the database or decides a payment's status; nothing here logs a
//! token, key, state, redirect URI or full account number.

pub mod client;
pub mod convert;
pub mod errors;
pub mod oauth;
pub mod signing;
pub mod status;
pub mod wire;

#[cfg(test)]
mod aspsp_tests;

pub use client::{BerlinGroupClient, BerlinGroupConfig, BerlinGroupConfigError, ScaApproach};
pub use signing::{BgSigner, key_id};
pub use status::{map_transaction_status, sca_state};
