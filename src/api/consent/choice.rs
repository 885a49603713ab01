//! The deferred-initiation pages at the authorization hop: the shopper chooses the bank
//! (one button per bank serving the payment's country, by its configured name) or gives the
//! IBAN of the account they pay from. Plain HTML forms: no JavaScript, no tracking, the
//! consent page's layout, stylesheet, provider line and headers.
//!
//! Never shown: another payment's data, the bank's link; the IBAN field keeps what the
//! shopper typed only on the page that answers their own submit.

use super::choice_text::{ChoiceText, choice_text};
use super::{amount, layout, text};
use crate::config::ProviderSettings;
use crate::domain::Language;
use crate::ledger::payments::PaymentRecord;
use maud::{Markup, html};

/// What every deferred page needs.
pub struct Page<'a> {
    pub payment: &'a PaymentRecord,
    pub merchant: &'a str,
    pub token: &'a str,
    pub provider: &'a ProviderSettings,
    /// `{public_url}/authorize/{id}`: the forms post to it and its sub-paths.
    pub action: &'a str,
}

fn summary(c: &Page<'_>, lang: Language) -> Markup {
    let t = text(lang);
    html! {
        p.to { (t.shop) ": " strong { (c.merchant) } }
        p.amount { (amount(c.payment, lang)) }
    }
}

fn cancel_form(c: &Page<'_>, lang: Language) -> Markup {
    let t = text(lang);
    html! {
        form method="post" action={ (c.action) "/cancel" } {
            input type="hidden" name="t" value=(c.token);
            button.link type="submit" { (t.cancel) }
        }
    }
}

/// The bank choice: one submit button per bank (`banks`: id and name).
pub fn bank_choice_page(c: &Page<'_>, banks: &[(String, String)], lang: Language) -> Markup {
    let t = text(lang);
    let ct = choice_text(lang);
    layout(
        t,
        lang,
        c.provider,
        ct.choose_title,
        html! {
            h1 { (ct.choose_title) }
            (summary(c, lang))
            form method="post" action={ (c.action) "/bank" } {
                input type="hidden" name="t" value=(c.token);
                fieldset {
                    legend { (ct.choose_intro) }
                    @for (id, name) in banks {
                        p.bank {
                            button.go type="submit" name="bank" value=(id) { (name) }
                        }
                    }
                }
            }
            (cancel_form(c, lang))
        },
    )
}

/// Why the IBAN the shopper typed was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IbanError {
    Empty,
    Characters,
    Country,
    Length,
    Checksum,
    /// Not of the payment's country (creation's rule for a debtor account).
    NotPaymentCountry,
    /// The creditor's own account.
    SameAsCreditor,
}

impl IbanError {
    fn message(self, ct: &ChoiceText) -> &'static str {
        match self {
            IbanError::Empty => ct.iban_empty,
            IbanError::Characters => ct.iban_characters,
            IbanError::Country => ct.iban_country,
            IbanError::Length => ct.iban_length,
            IbanError::Checksum => ct.iban_checksum,
            IbanError::NotPaymentCountry => ct.iban_not_payment_country,
            IbanError::SameAsCreditor => ct.iban_same_as_creditor,
        }
    }

    /// The stable code (for logs and metrics; never the IBAN).
    pub fn code(self) -> &'static str {
        match self {
            IbanError::Empty => "empty",
            IbanError::Characters => "invalid_characters",
            IbanError::Country => "invalid_country",
            IbanError::Length => "invalid_length",
            IbanError::Checksum => "invalid_checksum",
            IbanError::NotPaymentCountry => "iban_country_not_allowed",
            IbanError::SameAsCreditor => "same_as_creditor",
        }
    }
}

/// The IBAN form; after a refused submit, the error (named at the field and in a summary)
/// and the value as typed.
pub fn iban_page(
    c: &Page<'_>,
    bank_name: &str,
    refused: Option<(IbanError, &str)>,
    lang: Language,
) -> Markup {
    let t = text(lang);
    let ct = choice_text(lang);
    let value = refused.map(|(_, v)| v).unwrap_or("");
    let described = if refused.is_some() {
        "iban-error iban-hint"
    } else {
        "iban-hint"
    };
    layout(
        t,
        lang,
        c.provider,
        ct.iban_title,
        html! {
            @if let Some((e, _)) = refused {
                div.summary role="alert" {
                    h2 { (ct.error_heading) }
                    p { a href="#iban" { (ct.iban_label) ": " (e.message(ct)) } }
                }
            }
            h1 { (ct.iban_title) }
            (summary(c, lang))
            p { (ct.iban_intro) " " strong { (bank_name) } "." }
            form method="post" action={ (c.action) "/account" } novalidate {
                input type="hidden" name="t" value=(c.token);
                label for="iban" { (ct.iban_label) }
                @if let Some((e, _)) = refused {
                    p.error id="iban-error" { (e.message(ct)) }
                }
                input.field type="text" id="iban" name="iban" value=(value)
                    autocomplete="off" spellcheck="false" autocapitalize="characters"
                    aria-describedby=(described)
                    aria-invalid=[refused.map(|_| "true")];
                p.hint id="iban-hint" { (ct.iban_hint) }
                button.go type="submit" { (ct.continue_label) }
            }
            (cancel_form(c, lang))
        },
    )
}

/// After a bank call with no usable answer at a bank that may execute a payment without the
/// shopper (an SCA exemption): the payment may have been made there, so no second bank call
/// is offered; the shopper checks with their bank, or goes back to the shop.
pub fn unresolved_page(c: &Page<'_>, lang: Language) -> Markup {
    notice_page(c, lang, choice_text(lang).unresolved, None)
}

/// After a bank call with no usable answer (`busy`: another submit's call still runs): the
/// same submit again, never a second bank payment while one may be signable.
pub fn retry_page(c: &Page<'_>, busy: bool, lang: Language) -> Markup {
    let ct = choice_text(lang);
    let words = if busy { ct.busy } else { ct.retry };
    let again = html! {
        form method="post" action={ (c.action) "/initiate" } {
            input type="hidden" name="t" value=(c.token);
            button.go type="submit" { (ct.try_again) }
        }
    };
    notice_page(c, lang, words, Some(again))
}

/// A page with a title, the payment's summary, a message, then `action` (if any) and the
/// shopper's cancel.
fn notice_page(
    c: &Page<'_>,
    lang: Language,
    (title, message): (&str, &str),
    action: Option<Markup>,
) -> Markup {
    layout(
        text(lang),
        lang,
        c.provider,
        title,
        html! {
            h1 { (title) }
            (summary(c, lang))
            p { (message) }
            @if let Some(action) = action { (action) }
            (cancel_form(c, lang))
        },
    )
}
