//! Pure domain types and rules: money, accounts, references, the payment request, the
//! recurrence rules, the status machine and the order of the banks' own statuses.
//!
//! Nothing in here does I/O or knows about HTTP, SQL or a particular bank's wire format, and
//! nothing in here uses another pisgate module. Values are built valid through their
//! constructors ("parse, don't validate"); fields are private.

pub mod account;
pub mod bank_status;
pub mod display;
pub mod money;
pub mod origin;
pub mod payment;
pub mod recurrence;
pub mod reference;
pub mod schema;
pub mod status;

pub use account::{Account, AccountError, AccountType};
pub use money::{Country, Currency, Money, MoneyError};
pub use origin::{Origin, ReturnUrl, Scheme, UrlError};
pub use payment::{
    AuthenticationMethod, Consent, Creditor, Debtor, FieldError, Language, PaymentRequest,
    PaymentRequestInput, Urgency, ValidationErrors,
};
pub use recurrence::{RecurrenceError, RecurrenceType, Recurring, RecurringCount};
pub use reference::{Reference, ReferenceError, ReferenceType};
pub use status::{Evidence, PaymentStatus, Transition, TransitionError, Unsignable};

/// Which Nordea environment a payment is made in; some values are sandbox-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Production,
    Sandbox,
}
