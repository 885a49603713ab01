//! SEB's Signing External API 1.0.0 (`/tpp/signing/v1`): a BankID signing order over the
//! shopper's payments, its progress (scaStatus, hint code, QR data new every second,
//! autostart token), and BankID's rule that a second order for the same person while one
//! runs answers 200 `failed` `ALREADY_IN_PROGRESS` and cancels both.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::SebSim;
use super::auth::{json_object, only_fields, psu_ip, request_id, shopper};
use super::bankid::psu_message;
use super::problem::Problem;
use super::state::{Order, OrderState, Purpose, TxStatus};

pub const BASE: &str = "/tpp/signing/v1";

pub(super) fn routes(sim: Arc<SebSim>) -> Router {
    Router::new()
        .route(&format!("{BASE}/signing-orders"), post(start))
        .route(&format!("{BASE}/signing-orders/{{id}}"), get(progress))
        .with_state(sim)
}

fn bad(rule: &'static str, path: &str, detail: String) -> Problem {
    Problem::format(rule, path, detail).in_signing()
}

fn common(sim: &SebSim, headers: &HeaderMap) -> Result<String, Problem> {
    let who = shopper(sim, headers).map_err(Problem::in_signing)?;
    request_id(headers).map_err(Problem::in_signing)?;
    psu_ip(headers, bad)?;
    Ok(who)
}

fn unknown(id: &str, rule: &'static str) -> Problem {
    Problem::sign(
        StatusCode::NOT_FOUND,
        "RESOURCE_UNKNOWN",
        rule,
        format!("{id} is unknown"),
    )
}

/// The signing order as the API answers it.
pub fn order_json(o: &Order, now: DateTime<Utc>) -> Value {
    let sca_status = match o.state {
        OrderState::Pending => "started",
        OrderState::Complete => "finalised",
        OrderState::Failed => "failed",
    };
    let method = o
        .authentication_method_id
        .clone()
        .unwrap_or_else(|| "bankIdQr".into());
    // bankIdQr's name and explanation as in SEB's release-note example; the same-device
    // wording is ours.
    let (name, explanation) = if method == "bankIdSameDevice" {
        (
            "Mobilt BankId on same device",
            "Mobilt BankId started on the same device",
        )
    } else {
        (
            "Mobilt BankId with QR-code",
            "Mobilt BankId with QR-code scanning",
        )
    };
    let tpp_messages = if o.already_in_progress {
        json!([{
            "category": "ERROR",
            "code": "ALREADY_IN_PROGRESS",
            "text": "A BankID signing transaction was already in progress for the PSU.",
        }])
    } else {
        json!([])
    };
    let psu_message = if o.already_in_progress {
        // SEB's example answer (Signing External API 1.0.0 release notes).
        "En identifiering eller underskrift pågår redan för ditt personnummer. Försök igen."
    } else if o.state == OrderState::Complete {
        psu_message("complete")
    } else {
        psu_message(o.hint_code)
    };
    // SEB's ALREADY_IN_PROGRESS example has empty `_links`.
    let links = if o.already_in_progress {
        json!({})
    } else {
        json!({"self": {"href": format!("/signing-orders/{}", o.id)}})
    };
    let mut v = json!({
        "authorisationId": o.id,
        "scaStatus": sca_status,
        "scaMethod": {
            "authenticationType": "PHOTO_OTP",
            "authenticationMethodId": method,
            "name": name,
            "explanation": explanation,
            "methodType": "DECOUPLED",
        },
        "psuMessage": psu_message,
        "orderIds": o.payment_ids,
        "hintCode": o.hint_code,
        "tppMessages": tpp_messages,
        "_links": links,
    });
    if o.state == OrderState::Pending {
        v["qrData"] = json!(o.qr_data(now));
        v["autoStartToken"] = json!(o.autostart_token);
    }
    v
}

async fn start(State(sim): State<Arc<SebSim>>, headers: HeaderMap, body: Bytes) -> Response {
    match start_inner(&sim, &headers, &body) {
        Ok((status, v)) => (status, Json(v)).into_response(),
        Err(p) => p.into_response(),
    }
}

fn start_inner(
    sim: &SebSim,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(StatusCode, Value), Problem> {
    let who = common(sim, headers)?;
    let m = json_object(body, bad)?;
    only_fields(&m, &["orderIds", "authenticationMethodId"], "", bad)?;
    let ids: Vec<String> = match m.get("orderIds") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                bad(
                    "order-ids",
                    "orderIds",
                    "must be payment ids (strings)".into(),
                )
            })?,
        Some(Value::Array(_)) | None => {
            return Err(bad(
                "order-ids",
                "orderIds",
                "at least one payment id is required".into(),
            ));
        }
        Some(_) => return Err(bad("order-ids", "orderIds", "must be an array".into())),
    };
    let method = match m.get("authenticationMethodId") {
        Some(Value::String(s)) if matches!(s.as_str(), "bankIdQr" | "bankIdSameDevice") => {
            s.clone()
        }
        Some(other) => {
            return Err(bad(
                "authentication-method",
                "authenticationMethodId",
                format!("{other} is not bankIdQr or bankIdSameDevice"),
            ));
        }
        None => {
            return Err(bad(
                "authentication-method",
                "authenticationMethodId",
                "is required".into(),
            ));
        }
    };
    let now = sim.now();
    let mut bank = sim.bank();
    for id in &ids {
        let p = bank
            .payments
            .get(id)
            .ok_or_else(|| unknown(id, "payment-unknown"))?;
        if p.shopper != who {
            return Err(unknown(id, "token-binding"));
        }
        let status = p.status(now, &sim.config);
        if status != TxStatus::Rcvd {
            return Err(Problem::sign(
                StatusCode::BAD_REQUEST,
                "STATUS_INVALID",
                "payment-not-rcvd",
                format!(
                    "payment {id} is {}: only RCVD payments can be signed",
                    status.code()
                ),
            ));
        }
    }
    let id = bank.start_signing(now, &who, ids, method);
    let o = &bank.orders[&id];
    let status = if o.already_in_progress {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, order_json(o, now)))
}

async fn progress(
    State(sim): State<Arc<SebSim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = (|| {
        let who = common(&sim, &headers)?;
        let now = sim.now();
        let bank = sim.bank();
        let o = bank
            .orders
            .get(&id)
            .filter(|o| o.purpose == Purpose::Sign)
            .ok_or_else(|| unknown(&id, "signing-order-unknown"))?;
        if o.shopper.as_deref() != Some(who.as_str()) {
            return Err(unknown(&id, "token-binding"));
        }
        Ok::<Value, Problem>(order_json(o, now))
    })();
    match result {
        Ok(v) => Json(v).into_response(),
        Err(p) => p.into_response(),
    }
}
