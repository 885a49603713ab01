//! pisgate's BankID page (banks that sign by Mobilt BankID, such as SEB): where a shopper of
//! a bank whose every call needs the shopper's own token (`BankTraits.shopper_token_required`)
//! identifies with Mobilt BankID and signs the payment with it. [`flow`] holds the routes and
//! the steps (identify → the shopper's token → initiation → signing → the merchant's return
//! URL); [`page`] and [`text`] the page's rendering and words (pure: no database, no bank).

pub mod flow;
pub mod page;
pub mod text;

pub use flow::{router, url, uses_bankid_page};
