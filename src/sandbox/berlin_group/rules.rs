//! What the schema cannot say about an initiation body (run after the schema passed):
//! IBANs by their check digits and country length (`domain::account`), the amount's value
//! and decimals by currency, the currency a product allows, execution and periodic dates.
//! Every violation is collected, each naming its field; all are 400 FORMAT_ERROR except a
//! `requestedExecutionDate` in the past (400 EXECUTION_DATE_INVALID).

use chrono::NaiveDate;
use serde_json::Value;

use super::refusal::TppMessage;
use crate::domain::account::{Account, AccountType};

/// Products whose only currency is the euro.
fn euro_only(product: &str) -> bool {
    matches!(
        product,
        "sepa-credit-transfers" | "instant-sepa-credit-transfers"
    )
}

/// Decimals of a currency's minor unit (ISO 4217) for the currencies a Nordic or euro
/// payment uses; `None` for a code this ASPSP does not know.
fn decimals(currency: &str) -> Option<usize> {
    match currency {
        "EUR" | "SEK" | "DKK" | "NOK" | "GBP" | "USD" | "CHF" | "PLN" | "CZK" | "HUF" | "ISK" => {
            Some(if currency == "ISK" { 0 } else { 2 })
        }
        "JPY" => Some(0),
        _ => None,
    }
}

fn fmt(path: &str, text: impl Into<String>) -> TppMessage {
    TppMessage {
        code: "FORMAT_ERROR",
        path: Some(path.to_owned()),
        text: text.into(),
    }
}

pub fn check_initiation(
    product: &str,
    periodic: bool,
    body: &Value,
    today: NaiveDate,
) -> Vec<TppMessage> {
    let mut out = Vec::new();
    for field in ["debtorAccount", "creditorAccount"] {
        let account = &body[field];
        match account.get("iban").and_then(Value::as_str) {
            None => out.push(fmt(
                &format!("/{field}"),
                format!("{field} must be given as an IBAN at this ASPSP"),
            )),
            Some(iban) => {
                if let Err(e) = Account::parse(AccountType::Iban, iban) {
                    out.push(fmt(
                        &format!("/{field}/iban"),
                        format!("not a valid IBAN ({e})"),
                    ));
                }
            }
        }
        if let Some(cur) = account.get("currency").and_then(Value::as_str)
            && euro_only(product)
            && cur != "EUR"
        {
            out.push(fmt(
                &format!("/{field}/currency"),
                format!("{product} is in EUR only"),
            ));
        }
    }
    let currency = body["instructedAmount"]["currency"].as_str().unwrap_or("");
    let amount = body["instructedAmount"]["amount"].as_str().unwrap_or("");
    match decimals(currency) {
        None => out.push(fmt(
            "/instructedAmount/currency",
            format!("{currency} is not a currency this ASPSP knows"),
        )),
        Some(places) => {
            if euro_only(product) && currency != "EUR" {
                out.push(fmt(
                    "/instructedAmount/currency",
                    format!("{product} is in EUR only"),
                ));
            }
            let fraction = amount.split_once('.').map(|(_, f)| f.len()).unwrap_or(0);
            if fraction > places {
                out.push(fmt(
                    "/instructedAmount/amount",
                    format!("{currency} has {places} decimals; the amount has {fraction}"),
                ));
            }
        }
    }
    let positive =
        amount.chars().any(|c| c.is_ascii_digit() && c != '0') && !amount.starts_with('-');
    if !positive {
        out.push(fmt(
            "/instructedAmount/amount",
            "the amount must be greater than zero",
        ));
    }
    let date = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
    };
    if let Some(d) = date("requestedExecutionDate")
        && d < today
    {
        out.push(TppMessage {
            code: "EXECUTION_DATE_INVALID",
            path: Some("/requestedExecutionDate".into()),
            text: format!("requestedExecutionDate {d} is in the past"),
        });
    }
    if periodic {
        let start = date("startDate");
        if let Some(s) = start
            && s < today
        {
            out.push(fmt("/startDate", format!("startDate {s} is in the past")));
        }
        if let (Some(s), Some(e)) = (start, date("endDate"))
            && e < s
        {
            out.push(fmt("/endDate", "endDate is before startDate"));
        }
        let variable = body["frequency"].as_str() == Some("MonthlyVariable");
        match body.get("monthsOfExecution").and_then(Value::as_array) {
            Some(_) if !variable => out.push(fmt(
                "/monthsOfExecution",
                "monthsOfExecution is allowed only with frequency MonthlyVariable",
            )),
            None if variable => out.push(fmt(
                "/monthsOfExecution",
                "frequency MonthlyVariable needs monthsOfExecution",
            )),
            Some(months) => {
                let mut distinct: Vec<&str> = months.iter().filter_map(Value::as_str).collect();
                distinct.sort_unstable();
                distinct.dedup();
                if distinct.len() != months.len() {
                    out.push(fmt(
                        "/monthsOfExecution",
                        "monthsOfExecution must not repeat a month",
                    ));
                }
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> Value {
        json!({
            "instructedAmount": {"currency": "EUR", "amount": "12.30"},
            "debtorAccount": {"iban": "FI7473834510057469"},
            "creditorName": "Shop",
            "creditorAccount": {"iban": "FI1450000120236228"}
        })
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 5).unwrap()
    }

    #[test]
    fn a_good_body_passes() {
        assert_eq!(
            check_initiation("sepa-credit-transfers", false, &body(), today()),
            vec![]
        );
    }

    #[test]
    fn bad_iban_amount_currency_and_past_dates_are_each_named() {
        let mut b = body();
        b["creditorAccount"]["iban"] = json!("FI1450000120236229");
        b["instructedAmount"] = json!({"currency": "SEK", "amount": "0.001"});
        b["requestedExecutionDate"] = json!("2026-12-04");
        let found = check_initiation("sepa-credit-transfers", false, &b, today());
        let paths: Vec<_> = found
            .iter()
            .map(|m| (m.code, m.path.clone().unwrap()))
            .collect();
        assert!(
            paths.contains(&("FORMAT_ERROR", "/creditorAccount/iban".into())),
            "{paths:?}"
        );
        assert!(
            paths.contains(&("FORMAT_ERROR", "/instructedAmount/currency".into())),
            "{paths:?}"
        );
        assert!(
            paths.contains(&("FORMAT_ERROR", "/instructedAmount/amount".into())),
            "{paths:?}"
        );
        assert!(
            paths.contains(&("EXECUTION_DATE_INVALID", "/requestedExecutionDate".into())),
            "{paths:?}"
        );
    }
}
