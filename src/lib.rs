//! pisgate: payment orchestration for PSD2 account-to-account payments (Nordea, single SCA).
//!
//! The binary in `main.rs` only calls [`cli::main`]; everything lives here so tests can
//! drive it. Dependencies point one way: `api` uses `domain`, `ledger` and `bank`; `ledger`
//! and `bank` use `domain`; `domain` uses nothing of ours.

pub mod api;
pub mod app;
pub mod bank;
pub mod check;
pub mod cli;
pub mod config;
pub mod domain;
pub mod finishing;
pub mod ledger;
pub mod sandbox;
pub mod telemetry;
pub mod workers;
