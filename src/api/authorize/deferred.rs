//! Deferred initiation at the hop: the shopper chooses the bank and/or gives their IBAN on
//! pisgate's page, and pisgate initiates at that bank then (see [`initiation`]).
//!
//! Each submit is checked like the hop (token, open, within the signing window, not
//! cancelled): a closed payment gets the closed page instead of the forms. The choice is
//! recorded once (`bank_chosen`, `debtor_account_given`, guarded in SQL); the initiation
//! runs under a lease, so a double click, Back or a second tab never starts a second bank
//! call while one runs, and only the current attempt's answer is the payment's. After it,
//! the shopper is sent to the hop, which shows the consent page, whose button leads to the
//! bank (also for `consent: "merchant"`, see the parent module).
//!
//! Never: call a bank for an IBAN that fails its check digits or country/length rules, log
//! the IBAN in full (only masked), or offer a bank that does not serve the payment's country.

use super::{closed, closed_kind, see_other};
use crate::api::AppState;
use crate::api::consent::choice::{self, IbanError, Page};
use crate::api::consent::{self, Closed};
use crate::api::initiation::{self, Recorded, ShopperInitiation};
use crate::api::payments::{
    AWAITING_BANK_CHOICE, AWAITING_DEBTOR_ACCOUNT, AWAITING_SHOPPER_IDENTIFICATION,
};
use crate::domain::{Account, AccountError, AccountType, Country, Language, PaymentStatus};
use crate::ledger::merchants;
use crate::ledger::payments::{self, HopClosed, PaymentRecord};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use maud::Markup;

/// Why the forms are not offered (the hop's closed pages), or `None`.
fn closed_reason(p: &PaymentRecord) -> Option<HopClosed> {
    let status = p.status();
    if status != PaymentStatus::AwaitingAuthorization || p.psu_key.is_some() {
        Some(HopClosed::Done(status))
    } else if p.cancel_requested_at.is_some() {
        Some(HopClosed::CancelRequested)
    } else if p.expires_at.is_some_and(|t| t <= Utc::now()) {
        Some(HopClosed::WindowPassed)
    } else {
        None
    }
}

/// What the shopper has to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    ChooseBank,
    GiveAccount,
    Initiate,
}

fn needs_account(state: &AppState, bank: &str, p: &PaymentRecord) -> bool {
    state.banks.client(bank).traits().needs_debtor_account
        && p.request.get("debtor").is_none_or(|d| d.is_null())
        && p.shopper_debtor_account.is_none()
}

fn step(state: &AppState, p: &PaymentRecord) -> Step {
    if p.bank == payments::NO_BANK_YET {
        Step::ChooseBank
    } else if needs_account(state, &p.bank, p) {
        Step::GiveAccount
    } else {
        Step::Initiate
    }
}

fn hop(state: &AppState, p: &PaymentRecord) -> String {
    super::url_of(state, p)
}

/// The banks the shopper may choose, by name: those serving the payment's country whose own
/// rules can carry this payment ([`crate::bank::Bank::check`], as creation runs for a bank
/// the merchant names). A bank that would refuse it is not offered, so a payment never
/// fails after the shopper's choice (for SEB, after their BankID) for what was known here.
async fn banks_for(state: &AppState, p: &PaymentRecord) -> anyhow::Result<Vec<(String, String)>> {
    let Some(country) = Country::from_code(&p.country) else {
        return Ok(Vec::new());
    };
    let merchant = merchants::get(&state.pool, p.merchant_id)
        .await?
        .map(|m| m.name)
        .unwrap_or_default();
    let initiation = crate::api::initiation::stored_initiation(state, p, &merchant, String::new())?;
    Ok(state
        .banks
        .for_country(country)
        .iter()
        .filter(|b| match b.client.check(&initiation) {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(bank = %b.id, error = %e, "a bank not offered: it cannot carry this payment");
                false
            }
        })
        .map(|b| (b.id.clone(), b.name.clone()))
        .collect())
}

async fn render(
    state: &AppState,
    p: &PaymentRecord,
    token: &str,
    status: StatusCode,
    page: impl FnOnce(&Page<'_>) -> Markup,
) -> anyhow::Result<Response> {
    let merchant = merchants::get(&state.pool, p.merchant_id)
        .await?
        .map(|m| m.name)
        .unwrap_or_default();
    let action = format!("{}/authorize/{}", state.settings.server.public_url, p.id);
    let markup = page(&Page {
        payment: p,
        merchant: &merchant,
        token,
        provider: &state.settings.provider,
        action: &action,
    });
    let targets: Vec<String> = consent::origin_of(&action)
        .into_iter()
        .chain(consent::origin_of(&p.return_url))
        .collect();
    Ok(consent::respond(status, markup, &targets))
}

fn bank_name(state: &AppState, bank: &str) -> String {
    state
        .banks
        .get(bank)
        .map(|b| b.name.clone())
        .unwrap_or_else(|| consent::bank_name(bank))
}

/// `GET` of a deferred payment's hop before its bank's answer: the form of the next step.
pub(super) async fn show(
    state: &AppState,
    p: &PaymentRecord,
    token: &str,
    lang: Language,
) -> anyhow::Result<Response> {
    if let Some(c) = closed_reason(p) {
        return Ok(closed(state, closed_kind(c), lang, Some(p)));
    }
    match step(state, p) {
        Step::ChooseBank => {
            let banks = banks_for(state, p).await?;
            render(state, p, token, StatusCode::OK, |c| {
                choice::bank_choice_page(c, &banks, lang)
            })
            .await
        }
        Step::GiveAccount => {
            let name = bank_name(state, &p.bank);
            render(state, p, token, StatusCode::OK, |c| {
                choice::iban_page(c, &name, None, lang)
            })
            .await
        }
        Step::Initiate => {
            let busy = p.initiation == "pending"
                && p.initiation_lease_until.is_some_and(|t| t > Utc::now());
            if !busy && unresolved(state, p) {
                return render(state, p, token, StatusCode::OK, |c| {
                    choice::unresolved_page(c, lang)
                })
                .await;
            }
            render(state, p, token, StatusCode::OK, |c| {
                choice::retry_page(c, busy, lang)
            })
            .await
        }
    }
}

/// `POST …/bank`: records the shopper's bank (once), then goes on.
pub(super) async fn choose_bank(
    state: &AppState,
    p: &PaymentRecord,
    token: &str,
    lang: Language,
    bank: &str,
) -> anyhow::Result<Response> {
    if let Some(c) = closed_reason(p) {
        return Ok(closed(state, closed_kind(c), lang, Some(p)));
    }
    if !p.deferred || p.bank != payments::NO_BANK_YET {
        // Chosen already (another tab, Back): the recorded choice stands.
        return proceed(state, p, token, lang).await;
    }
    let banks = banks_for(state, p).await?;
    if !banks.iter().any(|(id, _)| id == bank) {
        tracing::warn!("a bank choice that is not one of the payment's country's banks");
        return render(state, p, token, StatusCode::UNPROCESSABLE_ENTITY, |c| {
            choice::bank_choice_page(c, &banks, lang)
        })
        .await;
    }
    let then = if crate::api::bankid::uses_bankid_page(state, bank) {
        AWAITING_SHOPPER_IDENTIFICATION
    } else if needs_account(state, bank, p) {
        AWAITING_DEBTOR_ACCOUNT
    } else {
        AWAITING_BANK_CHOICE
    };
    let mut tx = state.pool.begin().await?;
    let recorded = payments::record_bank_choice(&mut tx, p.id, bank, then).await?;
    tx.commit().await?;
    if recorded {
        tracing::info!(bank, "the shopper chose the bank");
        metrics::counter!("pisgate_bank_choices_total", "bank" => bank.to_owned()).increment(1);
    }
    let Some(now) = payments::get(&mut *state.pool.read_conn().await?, p.id).await? else {
        return Ok(closed(state, Closed::Unknown, lang, None));
    };
    proceed(state, &now, token, lang).await
}

/// The IBAN as typed, checked before any bank call: an IBAN of a SEPA country, of that
/// country's length, with good check digits; then creation's own rules for a debtor account
/// the merchant names: of the payment's country, and not the account being paid.
fn check_debtor_iban(typed: &str, p: &PaymentRecord) -> Result<Account, IbanError> {
    let account = check_iban(typed)?;
    if account.iban_country() != Some(p.country.as_str()) {
        return Err(IbanError::NotPaymentCountry);
    }
    let creditor = &p.request["creditor"]["account"];
    let paid = creditor["type"]
        .as_str()
        .and_then(AccountType::parse)
        .zip(creditor["value"].as_str())
        .and_then(|(kind, value)| Account::parse(kind, value).ok());
    if paid.as_ref() == Some(&account) {
        return Err(IbanError::SameAsCreditor);
    }
    Ok(account)
}

fn check_iban(typed: &str) -> Result<Account, IbanError> {
    if typed.trim().is_empty() {
        return Err(IbanError::Empty);
    }
    let account = Account::parse(AccountType::Iban, typed).map_err(|e| match e {
        AccountError::Empty => IbanError::Empty,
        AccountError::UnknownIbanCountry => IbanError::Country,
        AccountError::InvalidLength => IbanError::Length,
        AccountError::InvalidChecksum => IbanError::Checksum,
        AccountError::InvalidCharacters | AccountError::InvalidBankCode => IbanError::Characters,
    })?;
    if !account
        .iban_country()
        .is_some_and(crate::domain::account::is_sepa_country)
    {
        return Err(IbanError::Country);
    }
    Ok(account)
}

/// `POST …/account`: checks the IBAN (the form again, with the error, if it fails), records
/// it (once), then goes on.
pub(super) async fn give_account(
    state: &AppState,
    p: &PaymentRecord,
    token: &str,
    lang: Language,
    typed: &str,
) -> anyhow::Result<Response> {
    if let Some(c) = closed_reason(p) {
        return Ok(closed(state, closed_kind(c), lang, Some(p)));
    }
    if step(state, p) != Step::GiveAccount {
        return proceed(state, p, token, lang).await;
    }
    // What the form keeps: as typed, bounded.
    let kept: String = typed.chars().take(64).collect();
    let account = match check_debtor_iban(&kept, p) {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(
                reason = e.code(),
                "the shopper's IBAN was refused on the page"
            );
            metrics::counter!("pisgate_debtor_account_refused_total", "reason" => e.code())
                .increment(1);
            let name = bank_name(state, &p.bank);
            return render(state, p, token, StatusCode::UNPROCESSABLE_ENTITY, |c| {
                choice::iban_page(c, &name, Some((e, &kept)), lang)
            })
            .await;
        }
    };
    let mut tx = state.pool.begin().await?;
    let recorded = payments::record_debtor_account(&mut tx, p.id, &account).await?;
    tx.commit().await?;
    if recorded {
        tracing::info!(bank = %p.bank, debtor = %account.masked(), "the shopper gave the debtor account");
    }
    let Some(now) = payments::get(&mut *state.pool.read_conn().await?, p.id).await? else {
        return Ok(closed(state, Closed::Unknown, lang, None));
    };
    proceed(state, &now, token, lang).await
}

/// The payment's bank may execute a payment without the shopper
/// ([`crate::bank::BankTraits::acts_without_hop`]).
fn acts_without_hop(state: &AppState, p: &PaymentRecord) -> bool {
    state.banks.client(&p.bank).traits().acts_without_hop
}

/// An attempt's answer was lost at a bank that may execute it without the shopper: no
/// further attempt starts ([`payments::begin_shopper_attempt`]), so no retry is offered.
fn unresolved(state: &AppState, p: &PaymentRecord) -> bool {
    p.answer_unrecorded() && acts_without_hop(state, p)
}

/// Initiates once everything is known (`POST …/initiate` is the retry), then sends the
/// shopper to the hop; an unanswered bank call shows the page to try again.
pub(super) async fn proceed(
    state: &AppState,
    p: &PaymentRecord,
    token: &str,
    lang: Language,
) -> anyhow::Result<Response> {
    if p.is_initiated() || !p.deferred {
        return Ok(see_other(hop(state, p)));
    }
    if crate::api::bankid::uses_bankid_page(state, &p.bank) {
        // The shopper identifies first (BankID page); pisgate initiates from there.
        return Ok(see_other(crate::api::bankid::url(state, p)));
    }
    if let Some(c) = closed_reason(p) {
        return Ok(closed(state, closed_kind(c), lang, Some(p)));
    }
    if step(state, p) != Step::Initiate {
        return Ok(see_other(hop(state, p)));
    }
    match initiation::initiate_for_shopper(state, p).await? {
        ShopperInitiation::Ran(Recorded::Unanswered { not_created })
            if !not_created && acts_without_hop(state, p) =>
        {
            render(state, p, token, StatusCode::BAD_GATEWAY, |c| {
                choice::unresolved_page(c, lang)
            })
            .await
        }
        ShopperInitiation::Ran(Recorded::Unanswered { .. }) => {
            render(state, p, token, StatusCode::SERVICE_UNAVAILABLE, |c| {
                choice::retry_page(c, false, lang)
            })
            .await
        }
        ShopperInitiation::Ran(_) => Ok(see_other(hop(state, p))),
        ShopperInitiation::NotStarted => {
            let Some(now) = payments::get(&mut *state.pool.read_conn().await?, p.id).await? else {
                return Ok(closed(state, Closed::Unknown, lang, None));
            };
            if now.is_initiated() || closed_reason(&now).is_some() {
                return Ok(see_other(hop(state, &now)));
            }
            let busy = now.initiation == "pending"
                && now.initiation_lease_until.is_some_and(|t| t > Utc::now());
            if !busy && unresolved(state, &now) {
                return render(state, &now, token, StatusCode::OK, |c| {
                    choice::unresolved_page(c, lang)
                })
                .await;
            }
            // Another submit's bank call is running.
            render(state, &now, token, StatusCode::CONFLICT, |c| {
                choice::retry_page(c, true, lang)
            })
            .await
        }
    }
}
