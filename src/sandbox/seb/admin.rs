//! The simulator's admin paths on the plain-HTTP listener (no authentication: test networks
//! only), plain JSON.
//!
//! | call | answer |
//! |---|---|
//! | `GET /admin/health` | `{"status": "ok"}` |
//! | `POST /admin/bankid/{autostart_token}/{open,approve,reject}[?shopper=…]` | the order after the action; 404 unknown, 409 when it cannot be done (ended, or the scenario's app does not open it). `shopper` names who approves an identification (default: a fresh shopper per order) |
//! | `POST /admin/bankid/{autostart_token}/hint/{code}` | puts a pending order on a BankID hint code: `outstandingTransaction`, `noClient`, `started`, `userSign` keep it pending; `userCancel`, `expiredTransaction`, `certificateErr`, `startFailed`, `cancelled`, `sebTimeout` end it (400 for another code) |
//! | `GET /admin/orders` | every BankID order (identify and sign) with its state, hint code, autostart token and current `qr_data` |
//! | `GET /admin/payments` | every payment with its `transactionStatus` now, shopper and scenario |
//! | `POST /admin/payments/{id}/status/{STATUS}` | moves a payment to RCVD/ACTC/ACSP/ACSC/RJCT/CANC from now on |
//! | `GET /admin/scenarios` | the scenario table |
//! | `GET /admin/refusals` / `DELETE /admin/refusals` | every refused request with its rule (the mutual-TLS handshake included) / clears it |
//! | `GET /admin/requests` / `DELETE /admin/requests` | every API request past the handshake: method, path, headers (the bearer masked), status, refusal rule / clears it |
//! | `POST /admin/clock/advance` | `{"seconds": n}` and/or `{"millis": n}` moves the simulator clock |
//! | `GET /admin/faults` | `{"rules": [rule…], "counters": {"initiate": {"received", "faulted"}, …}}` |
//! | `PUT /admin/faults` | `{"rules": [rule…]}` replaces every rule (the counters go on): the Nordea sandbox's rules ([`crate::sandbox::faults`]) on SEB's calls as [`super::faults`] names them; `[]` switches faults off |

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::state::{AppError, TxStatus};
use super::{SebSim, scenarios};
use crate::sandbox::faults::FaultSwitch;

pub(super) fn routes(sim: Arc<SebSim>) -> Router {
    Router::new()
        .route(
            "/admin/health",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route("/admin/bankid/{token}/{action}", post(bankid_action))
        .route("/admin/bankid/{token}/hint/{code}", post(bankid_hint))
        .route("/admin/orders", get(orders))
        .route("/admin/payments", get(payments))
        .route("/admin/payments/{id}/status/{status}", post(force_status))
        .route(
            "/admin/scenarios",
            get(|| async { Json(json!(scenarios::ALL)) }),
        )
        .route("/admin/refusals", get(refusals).delete(clear_refusals))
        .route("/admin/requests", get(requests).delete(clear_requests))
        .route("/admin/clock/advance", post(advance))
        .with_state(sim.clone())
        .merge(FaultSwitch::admin_routes(sim.faults().clone()))
}

#[derive(Deserialize)]
struct ShopperQuery {
    shopper: Option<String>,
}

fn app_error_json(e: &AppError) -> Response {
    let status = match e {
        AppError::Unknown => StatusCode::NOT_FOUND,
        _ => StatusCode::CONFLICT,
    };
    (status, Json(json!({"error": e.to_string()}))).into_response()
}

async fn bankid_action(
    State(sim): State<Arc<SebSim>>,
    Path((token, action)): Path<(String, String)>,
    Query(q): Query<ShopperQuery>,
) -> Response {
    let result = match action.as_str() {
        "open" => sim.open(&token),
        "approve" => sim.approve(&token, q.shopper.as_deref()),
        "reject" => sim.reject(&token),
        _ => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "action is open, approve or reject"})),
            )
                .into_response();
        }
    };
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => app_error_json(&e),
    }
}

async fn bankid_hint(
    State(sim): State<Arc<SebSim>>,
    Path((token, code)): Path<(String, String)>,
) -> Response {
    match sim.set_hint(&token, &code) {
        Ok(v) => Json(v).into_response(),
        Err(e @ AppError::UnknownHint(_)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
        Err(e) => app_error_json(&e),
    }
}

async fn orders(State(sim): State<Arc<SebSim>>) -> Response {
    Json(sim.orders()).into_response()
}

async fn payments(State(sim): State<Arc<SebSim>>) -> Response {
    Json(sim.payments()).into_response()
}

async fn force_status(
    State(sim): State<Arc<SebSim>>,
    Path((id, status)): Path<(String, String)>,
) -> Response {
    let Some(s) = TxStatus::parse(&status) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "status is one of RCVD ACTC ACSP ACSC RJCT CANC"})),
        )
            .into_response();
    };
    if !sim.force_status(&id, s) {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(sim.payment(&id)).into_response()
}

async fn requests(State(sim): State<Arc<SebSim>>) -> Response {
    Json(sim.requests()).into_response()
}

async fn clear_requests(State(sim): State<Arc<SebSim>>) -> StatusCode {
    sim.clear_requests();
    StatusCode::NO_CONTENT
}

async fn refusals(State(sim): State<Arc<SebSim>>) -> Response {
    Json(sim.refusals()).into_response()
}

async fn clear_refusals(State(sim): State<Arc<SebSim>>) -> StatusCode {
    sim.clear_refusals();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Advance {
    seconds: Option<u64>,
    millis: Option<u64>,
}

async fn advance(State(sim): State<Arc<SebSim>>, Json(a): Json<Advance>) -> Response {
    let by =
        Duration::from_secs(a.seconds.unwrap_or(0)) + Duration::from_millis(a.millis.unwrap_or(0));
    sim.advance_clock(by);
    Json(json!({"now": sim.now()})).into_response()
}
