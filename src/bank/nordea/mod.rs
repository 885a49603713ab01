//! The Nordea adapter of the bank port: single-SCA payment initiation (PIS v2/v3) and the
//! shopper's tokens, in Nordea's personal API.
//!
//! - `signing`: the digest, signing string, `Signature` header and RSA keys;
//! - `wire`: Nordea's JSON as serde types (shared with the sandbox simulator);
//! - `status`: Nordea's statuses and their merchant meaning;
//! - `convert`: between the port's neutral types and the wire types;
//! - `errors`: HTTP answers and transport failures to [`BankError`](crate::bank::BankError);
//! - `client`: [`NordeaClient`], the [`Bank`](crate::bank::Bank) implementation.
//!
//! Facts come from `nordea-pis.md` and the seed; where they are uncertain the code is
//! tolerant or configurable and says so. Nothing here touches the database or decides a
//! payment's status.

pub mod certificate;
pub mod client;
pub mod convert;
pub mod errors;
pub mod signing;
pub mod status;
pub mod wire;

pub use client::{NordeaClient, NordeaConfig, NordeaConfigError, RetryPolicy};
pub use signing::{DeleteSigning, KeyError, SigningKey, generate_key_pair, write_key_pair};
pub use status::{NordeaStatus, map_status};
