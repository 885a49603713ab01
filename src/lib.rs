//! pisgate: payment orchestration for PSD2 account-to-account payments (Nordea, single SCA).
//!
//! The binary in `main.rs` only parses the command line and calls into this library, so
//! everything here can be exercised from tests.

pub mod bank;
pub mod domain;
pub mod sandbox;
