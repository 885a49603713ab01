//! Closed sets that the OpenAPI document describes as enums where the code keeps a string
//! (the payment view stores what was validated). Only descriptions: nothing parses into
//! these; the domain types with the same names do.

use serde::Serialize;
use utoipa::ToSchema;

/// The kind of an account number.
#[derive(Serialize, ToSchema)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum AccountType {
    IBAN,
    BBAN_DK,
    BBAN_SE,
    BBAN_NO,
    BGNR,
    PGNR,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    Standard,
    Express,
}
