//! pisgate's BankID page (banks that sign by Mobilt BankID, such as SEB): the page and its
//! words here; the routes that read the bank and show it live beside them.

pub mod page;
pub mod text;
