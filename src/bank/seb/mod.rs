//! The SEB (Sweden) adapter of the bank port: SEB's decoupled authorization for the
//! shopper's token (Mobilt BankID), its PSD2 payment initiation v1 (a Berlin Group profile:
//! same statuses and error codes, own products and body fields, the shopper's token on every
//! call) and its Signing External API 1.0.0 (signing orders signed with Mobilt BankID), over
//! mutual TLS with the QWAC. Every SEB fact relied on here, with its source or marked
//! ASSUMED, is in `docs/banks/seb.md`.
//!
//! - `wire`: SEB's JSON as serde types (amounts answered as JSON numbers, read exactly);
//! - `convert`: the initiation body (bgnr/pgnr, OCR, account messages), details, and BankID
//!   progress (identification and signing) as [`BankIdProgress`](crate::bank::BankIdProgress);
//! - `errors`: problem+json and `tppMessages` as [`BankError`](crate::bank::BankError);
//! - `client`: [`SebClient`], the [`Bank`](crate::bank::Bank) implementation.
//!
//! Statuses are the Berlin Group's ([`crate::bank::berlin_group::status`]), with SEB's paid
//! set (default `ACSC`). Nothing here touches the database or decides a payment's status;
//! nothing here logs a token, autostart token, QR data, `auth_req_id`, the client secret or
//! a full account number.

pub mod client;
pub mod convert;
pub mod errors;
pub mod wire;

#[cfg(test)]
mod sim_tests;

pub use client::{SebApi, SebClient, SebConfig, SebConfigError};
