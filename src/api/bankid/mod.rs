//! pisgate's BankID page: where a shopper of a bank whose every call needs the shopper's own
//! token (SEB, `BankTraits.shopper_token_required`) identifies with Mobilt BankID, and signs
//! the payment with it. [`flow`] holds the routes and the steps (identify → the shopper's
//! token → initiation → signing → the merchant's return URL); the page's rendering (pure: no
//! database, no bank) is the page module's.

pub mod flow;

pub use flow::{router, url, uses_bankid_page};
