//! Pure domain types and rules: money, accounts, the payment request, the status machine.
//!
//! Nothing in here does I/O or knows about HTTP, SQL or a particular bank's wire format.
//! Values are built valid through their constructors ("parse, don't validate").

pub mod checks;
pub mod money;
pub mod status;

pub use money::{Country, Currency, Money, MoneyError};
pub use status::PaymentStatus;
