//! SEB's payment initiation v1 (`/tpp/pis/private/v1/identified2`, and the corporate path
//! `/tpp/pis/corporate/v1/identified2` with `PSU-Corporate-ID`): products, body rules,
//! statuses and cancellation, every call with the shopper's bearer token, every payment
//! bound to the shopper whose token made it (another shopper's token: 404
//! `RESOURCE_UNKNOWN`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::SebSim;
use super::auth::{json_object, only_fields, psu_ip, request_id, shopper};
use super::problem::Problem;
use super::state::{Bank, Payment, TxStatus, new_id};

pub const PRIVATE_BASE: &str = "/tpp/pis/private/v1/identified2";
pub const CORPORATE_BASE: &str = "/tpp/pis/corporate/v1/identified2";

/// Products and their currency.
pub const PRODUCTS: &[(&str, &str)] = &[
    ("private-se-domestic-credit-transfers", "SEK"),
    ("sepa-credit-transfers", "EUR"),
];

pub(super) fn routes(sim: Arc<SebSim>) -> Router {
    let mut r = Router::new();
    for (base, api) in [(PRIVATE_BASE, "private"), (CORPORATE_BASE, "corporate")] {
        r = r
            .route(
                &format!("{base}/payments/{{product}}"),
                post(move |s, p, h, b| create(s, p, h, b, api)),
            )
            .route(
                &format!("{base}/payments/{{product}}/{{id}}"),
                get(move |s, p, h| read(s, p, h, api, false))
                    .delete(move |s, p, h| cancel(s, p, h, api)),
            )
            .route(
                &format!("{base}/payments/{{product}}/{{id}}/status"),
                get(move |s, p, h| read(s, p, h, api, true)),
            );
    }
    r.with_state(sim)
}

pub(super) fn bad(rule: &'static str, path: &str, detail: String) -> Problem {
    Problem::format(rule, path, detail)
}

/// The checks every PIS call shares: bearer → shopper, X-Request-ID, corporate id.
fn common(sim: &SebSim, headers: &HeaderMap, api: &str) -> Result<String, Problem> {
    let who = shopper(sim, headers)?;
    request_id(headers)?;
    if api == "corporate" {
        let ok = headers
            .get("psu-corporate-id")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().is_empty());
        if !ok {
            return Err(bad(
                "psu-corporate-id",
                "PSU-Corporate-ID",
                "the header is required on the corporate API".into(),
            ));
        }
    }
    Ok(who)
}

fn product_currency(product: &str) -> Result<&'static str, Problem> {
    PRODUCTS
        .iter()
        .find(|(p, _)| *p == product)
        .map(|(_, c)| *c)
        .ok_or_else(|| {
            Problem::pis(
                StatusCode::NOT_FOUND,
                "PRODUCT_UNKNOWN",
                "product",
                format!("payment product {product:?} is not offered"),
            )
        })
}

async fn create(
    State(sim): State<Arc<SebSim>>,
    Path(product): Path<String>,
    headers: HeaderMap,
    body: Bytes,
    api: &'static str,
) -> Response {
    match create_inner(&sim, &product, &headers, &body, api) {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(p) => p.into_response(),
    }
}

fn create_inner(
    sim: &SebSim,
    product: &str,
    headers: &HeaderMap,
    body: &[u8],
    api: &'static str,
) -> Result<Value, Problem> {
    let who = common(sim, headers, api)?;
    psu_ip(headers, bad)?;
    let currency = product_currency(product)?;
    let m = json_object(body, bad)?;
    let today = sim.now().date_naive();
    let (amount, cur) = validate(&m, product, currency, today)?;
    let scenario = Bank::scenario_for(&cur, &amount);
    // 66.07: SEB makes the payment with another amount than it was sent (and says so).
    let amount = scenario.made_amount.map_or(amount, str::to_owned);
    let now = sim.now();
    let id = new_id();
    let payment = Payment {
        id: id.clone(),
        product: product.to_owned(),
        api,
        shopper: who,
        body: Value::Object(m),
        currency: cur.clone(),
        amount: amount.clone(),
        created_at: now,
        scenario: scenario.id,
        scenario_ref: scenario,
        signed_at: None,
        cancelled: false,
        forced: None,
        already_in_progress_done: false,
    };
    sim.bank().payments.insert(id.clone(), payment);
    Ok(json!({
        "paymentId": id,
        "transactionStatus": "RCVD",
        "instructedAmount": {"amount": amount_number(&amount), "currency": cur},
        "_links": {
            "self": {"href": format!("/payments/{product}/{id}")},
            "status": {"href": format!("/payments/{product}/{id}/status")},
        },
    }))
}

/// The amount as a JSON number, as SEB's examples answer it (`345.50` → `345.5`).
fn amount_number(amount: &str) -> Value {
    amount
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn get_str<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, Problem> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad("field-type", path, "must be a string".into())),
    }
}

fn get_obj<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, Problem> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(bad("field-type", path, "must be an object".into())),
    }
}

fn max_len(s: &str, max: usize, rule: &'static str, path: &str) -> Result<(), Problem> {
    let n = s.chars().count();
    if n > max {
        return Err(bad(rule, path, format!("{n} characters, at most {max}")));
    }
    Ok(())
}

/// Luhn (mod 10) check digit valid.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, c) in digits.chars().rev().enumerate() {
        let Some(mut d) = c.to_digit(10) else {
            return false;
        };
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

fn iban_valid(iban: &str) -> bool {
    let s: String = iban.chars().filter(|c| !c.is_whitespace()).collect();
    if s.len() < 15 || s.len() > 34 || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    let b = s.as_bytes();
    if !b[0].is_ascii_uppercase()
        || !b[1].is_ascii_uppercase()
        || !b[2].is_ascii_digit()
        || !b[3].is_ascii_digit()
    {
        return false;
    }
    let rearranged = format!("{}{}", &s[4..], &s[..4]);
    let mut rem: u32 = 0;
    for c in rearranged.chars() {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        if v >= 10 {
            rem = (rem * 100 + v) % 97;
        } else {
            rem = (rem * 10 + v) % 97;
        }
    }
    rem == 1
}

/// Validates an initiation body; answers the amount string and currency.
fn validate(
    m: &Map<String, Value>,
    product: &str,
    currency: &str,
    today: chrono::NaiveDate,
) -> Result<(String, String), Problem> {
    only_fields(
        m,
        &[
            "instructedAmount",
            "creditorAccount",
            "creditorName",
            "debtorAccount",
            "remittanceInformationUnstructured",
            "remittanceInformationStructured",
            "debtorAccountMessage",
            "creditorAccountMessage",
            "requestedExecutionDate",
            "endToEndIdentification",
        ],
        "",
        bad,
    )?;
    // instructedAmount
    let ia = get_obj(m, "instructedAmount", "instructedAmount")?
        .ok_or_else(|| bad("required-field", "instructedAmount", "is required".into()))?;
    only_fields(ia, &["currency", "amount"], "instructedAmount", bad)?;
    let cur = get_str(ia, "currency", "instructedAmount.currency")?.ok_or_else(|| {
        bad(
            "required-field",
            "instructedAmount.currency",
            "is required".into(),
        )
    })?;
    if cur != currency {
        return Err(bad(
            "currency",
            "instructedAmount.currency",
            format!("{cur:?}: product {product} takes {currency}"),
        ));
    }
    let amount = match ia.get("amount") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Null) | None => {
            return Err(bad(
                "required-field",
                "instructedAmount.amount",
                "is required".into(),
            ));
        }
        Some(_) => {
            return Err(bad(
                "amount",
                "instructedAmount.amount",
                "must be a string such as \"345.50\"".into(),
            ));
        }
    };
    let (whole, frac) = match amount.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (amount, None),
    };
    let shape_ok = !whole.is_empty()
        && whole.len() <= 14
        && whole.chars().all(|c| c.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()));
    if !shape_ok {
        return Err(bad(
            "amount",
            "instructedAmount.amount",
            format!("{amount:?} is not a decimal amount"),
        ));
    }
    if frac.is_some_and(|f| f.len() > 2) {
        return Err(bad(
            "amount-decimals",
            "instructedAmount.amount",
            format!("{amount:?} has more than 2 decimals"),
        ));
    }
    if amount.chars().all(|c| c == '0' || c == '.') {
        return Err(bad(
            "amount",
            "instructedAmount.amount",
            "must be more than 0".into(),
        ));
    }
    // creditorAccount
    let ca = get_obj(m, "creditorAccount", "creditorAccount")?
        .ok_or_else(|| bad("required-field", "creditorAccount", "is required".into()))?;
    only_fields(
        ca,
        &["iban", "bban", "bgnr", "pgnr"],
        "creditorAccount",
        bad,
    )?;
    let kinds: Vec<&String> = ca.keys().collect();
    if kinds.len() != 1 {
        return Err(bad(
            "creditor-account",
            "creditorAccount",
            "must hold exactly one of iban, bban, bgnr, pgnr".into(),
        ));
    }
    let kind = kinds[0].as_str();
    let path = format!("creditorAccount.{kind}");
    let value = get_str(ca, kind, &path)?.unwrap_or_default();
    if product == "sepa-credit-transfers" && kind != "iban" {
        return Err(bad(
            "creditor-account",
            &path,
            "a SEPA credit transfer takes an iban only".into(),
        ));
    }
    let valid = match kind {
        "iban" => iban_valid(value),
        "bban" => {
            let d: String = value.chars().filter(|c| !c.is_whitespace()).collect();
            (6..=20).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit())
        }
        "bgnr" => {
            let parts: Vec<&str> = value.split('-').collect();
            parts.len() == 2
                && (3..=4).contains(&parts[0].len())
                && parts[1].len() == 4
                && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit()))
        }
        _ => {
            // pgnr: 2–8 digits, optionally a dash before the check digit.
            let digits: String = value.chars().filter(|c| *c != '-').collect();
            let dash_ok = match value.find('-') {
                None => true,
                Some(i) => i == value.len() - 2 && value.matches('-').count() == 1,
            };
            dash_ok && (2..=8).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit())
        }
    };
    if !valid {
        return Err(bad(
            "creditor-account",
            &path,
            format!("{value:?} is not a valid {kind}"),
        ));
    }
    // creditorName
    let name = get_str(m, "creditorName", "creditorName")?;
    if matches!(kind, "iban" | "bban") && name.is_none_or(|n| n.trim().is_empty()) {
        return Err(bad(
            "required-field",
            "creditorName",
            format!("is required for a creditor {kind}"),
        ));
    }
    if let Some(n) = name {
        max_len(n, 70, "creditor-name", "creditorName")?;
    }
    // debtorAccount
    if let Some(da) = get_obj(m, "debtorAccount", "debtorAccount")? {
        only_fields(da, &["iban", "bban"], "debtorAccount", bad)?;
        if da.len() != 1 {
            return Err(bad(
                "debtor-account",
                "debtorAccount",
                "must hold exactly one of iban, bban".into(),
            ));
        }
        if let Some(iban) = get_str(da, "iban", "debtorAccount.iban")? {
            if !iban_valid(iban) {
                return Err(bad(
                    "debtor-account",
                    "debtorAccount.iban",
                    format!("{iban:?} is not a valid IBAN"),
                ));
            }
        }
    }
    // remittance
    let unstructured = get_str(
        m,
        "remittanceInformationUnstructured",
        "remittanceInformationUnstructured",
    )?;
    let structured = get_obj(
        m,
        "remittanceInformationStructured",
        "remittanceInformationStructured",
    )?;
    if unstructured.is_some() && structured.is_some() {
        return Err(bad(
            "remittance",
            "remittanceInformationStructured",
            "give remittanceInformationUnstructured or remittanceInformationStructured, not both"
                .into(),
        ));
    }
    if let Some(u) = unstructured {
        max_len(u, 140, "remittance", "remittanceInformationUnstructured")?;
    }
    if let Some(s) = structured {
        only_fields(
            s,
            &["reference", "referenceType"],
            "remittanceInformationStructured",
            bad,
        )?;
        let t = get_str(
            s,
            "referenceType",
            "remittanceInformationStructured.referenceType",
        )?;
        if t != Some("OCR") {
            return Err(bad(
                "ocr",
                "remittanceInformationStructured.referenceType",
                "must be \"OCR\"".into(),
            ));
        }
        let r = get_str(s, "reference", "remittanceInformationStructured.reference")?
            .unwrap_or_default();
        if !(2..=25).contains(&r.len()) || !r.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad(
                "ocr",
                "remittanceInformationStructured.reference",
                format!("{r:?}: an OCR reference is 2 to 25 digits"),
            ));
        }
        if !luhn_valid(r) {
            return Err(bad(
                "ocr-check-digit",
                "remittanceInformationStructured.reference",
                format!("{r:?}: the OCR check digit (mod 10) is wrong"),
            ));
        }
    }
    for key in ["debtorAccountMessage", "creditorAccountMessage"] {
        if let Some(v) = get_str(m, key, key)? {
            max_len(v, 12, "account-message", key)?;
        }
    }
    if let Some(e) = get_str(m, "endToEndIdentification", "endToEndIdentification")? {
        max_len(e, 35, "end-to-end-id", "endToEndIdentification")?;
    }
    if let Some(d) = get_str(m, "requestedExecutionDate", "requestedExecutionDate")? {
        let date = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
            bad(
                "execution-date",
                "requestedExecutionDate",
                format!("{d:?} is not a date YYYY-MM-DD"),
            )
        })?;
        if date < today {
            return Err(bad(
                "execution-date",
                "requestedExecutionDate",
                format!("{d} is in the past"),
            ));
        }
    }
    Ok((amount.to_owned(), cur.to_owned()))
}

fn unknown(id: &str) -> Problem {
    Problem::pis(
        StatusCode::NOT_FOUND,
        "RESOURCE_UNKNOWN",
        "payment-unknown",
        format!("no payment {id} for this PSU"),
    )
}

/// The shopper's payment under this API and product, or 404 (another shopper's: 404 too,
/// rule `token-binding`).
fn owned<'a>(
    bank: &'a Bank,
    who: &str,
    api: &str,
    product: &str,
    id: &str,
) -> Result<&'a Payment, Problem> {
    let p = bank
        .payments
        .get(id)
        .filter(|p| p.api == api && p.product == product)
        .ok_or_else(|| unknown(id))?;
    if p.shopper != who {
        return Err(Problem {
            rule: "token-binding",
            ..unknown(id)
        });
    }
    Ok(p)
}

async fn read(
    State(sim): State<Arc<SebSim>>,
    Path((product, id)): Path<(String, String)>,
    headers: HeaderMap,
    api: &'static str,
    status_only: bool,
) -> Response {
    let result = (|| {
        let who = common(&sim, &headers, api)?;
        product_currency(&product)?;
        let now = sim.now();
        let bank = sim.bank();
        let p = owned(&bank, &who, api, &product, &id)?;
        let status = p.status(now, &sim.config).code();
        if status_only {
            return Ok(json!({ "transactionStatus": status }));
        }
        let mut v = p.body.clone();
        v["paymentId"] = json!(p.id);
        v["transactionStatus"] = json!(status);
        v["instructedAmount"] = json!({"amount": amount_number(&p.amount), "currency": p.currency});
        Ok::<Value, Problem>(v)
    })();
    match result {
        Ok(v) => Json(v).into_response(),
        Err(p) => p.into_response(),
    }
}

async fn cancel(
    State(sim): State<Arc<SebSim>>,
    Path((product, id)): Path<(String, String)>,
    headers: HeaderMap,
    api: &'static str,
) -> Response {
    let result = (|| {
        let who = common(&sim, &headers, api)?;
        product_currency(&product)?;
        let now = sim.now();
        let mut bank = sim.bank();
        let payment = owned(&bank, &who, api, &product, &id)?;
        let status = payment.status(now, &sim.config);
        let needs_authorisation = payment.scenario_ref.delete_needs_authorisation;
        if status != TxStatus::Rcvd {
            return Err(Problem::pis(
                StatusCode::BAD_REQUEST,
                "CANCELLATION_INVALID",
                "cancellation-invalid",
                format!(
                    "the payment is {} and can no longer be cancelled",
                    status.code()
                ),
            ));
        }
        if needs_authorisation {
            // 66.08: accepted, but nothing is cancelled until an authorisation nobody starts.
            return Ok(false);
        }
        if let Some(p) = bank.payments.get_mut(&id) {
            p.cancelled = true;
        }
        // A signing order still running for it ends.
        for o in bank.orders.values_mut() {
            if o.state == super::state::OrderState::Pending && o.payment_ids.contains(&id) {
                o.state = super::state::OrderState::Failed;
                o.hint_code = "cancelled";
                o.ended_at = Some(now);
            }
        }
        Ok::<bool, Problem>(true)
    })();
    match result {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => (
            StatusCode::ACCEPTED,
            Json(json!({ "transactionStatus": "RCVD" })),
        )
            .into_response(),
        Err(p) => p.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_iban_checks_accept_valid_and_refuse_altered_numbers() {
        assert!(luhn_valid("1234566"));
        assert!(!luhn_valid("1234567"));
        assert!(luhn_valid("79927398713"));
        assert!(iban_valid("SE4550000000058398257466"));
        assert!(!iban_valid("SE4550000000058398257467"));
        assert!(iban_valid("DE89370400440532013000"));
    }
}
