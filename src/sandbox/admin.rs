//! The sandbox's admin API (no authentication: test networks only). Every endpoint speaks
//! plain JSON, not Nordea's envelope.
//!
//! | call | body / answer |
//! |---|---|
//! | `GET /sandbox/admin/faults` | `{"rules": [rule…], "counters": {"status": {"received", "faulted"}, …}}` |
//! | `PUT /sandbox/admin/faults` | `{"rules": [rule…]}` replaces all rules (see [`super::faults`] for a rule) |
//! | `POST /sandbox/admin/faults` | one rule, appended |
//! | `DELETE /sandbox/admin/faults` | removes every rule |
//! | `GET` / `DELETE /sandbox/admin/counters` | the counters / reset them |
//! | `GET /sandbox/admin/requests[?operation=status]` | `[recorded request…]`, oldest first |
//! | `DELETE /sandbox/admin/requests` | clears the log |
//! | `GET /sandbox/admin/payments[/{id}]` | payment views (status, PSU, count, scenario…) |
//! | `PUT /sandbox/admin/payments/{id}/scenario` | `{"funds_not_available": true}` |
//! | `PUT /sandbox/admin/payments/{id}/status` | `{"status": "Rejected"}` forces a status; `{"status": null}` undoes it |
//! | `PUT /sandbox/admin/token-identity` | `{"on": true}` makes token answers carry an `id_token` (`sub`, `iat`); `{"on": false}` stops it |
//! | `POST /sandbox/admin/clock/advance` | `{"seconds": 60}` and/or `{"millis": 500}` moves the sandbox clock |
//! | `GET /sandbox/admin/health` | `{"status": "ok"}` |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{BankStatus, FaultRule, Operation, Sandbox};

pub(crate) fn routes(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route(
            "/sandbox/admin/health",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route(
            "/sandbox/admin/faults",
            get(get_faults)
                .put(put_faults)
                .post(post_fault)
                .delete(delete_faults),
        )
        .route(
            "/sandbox/admin/counters",
            get(get_counters).delete(delete_counters),
        )
        .route(
            "/sandbox/admin/requests",
            get(get_requests).delete(delete_requests),
        )
        .route("/sandbox/admin/payments", get(get_payments))
        .route("/sandbox/admin/payments/{id}", get(get_payment))
        .route("/sandbox/admin/payments/{id}/scenario", put(put_scenario))
        .route("/sandbox/admin/payments/{id}/status", put(put_status))
        .route("/sandbox/admin/token-identity", put(put_token_identity))
        .route("/sandbox/admin/clock/advance", post(advance_clock))
        .route("/sandbox/admin/gateway-clock", put(put_gateway_clock))
        .with_state(sandbox)
}

async fn get_faults(State(sb): State<Arc<Sandbox>>) -> Json<serde_json::Value> {
    Json(json!({ "rules": sb.faults(), "counters": sb.counters() }))
}

#[derive(Deserialize)]
struct Rules {
    rules: Vec<FaultRule>,
}

async fn put_faults(State(sb): State<Arc<Sandbox>>, Json(body): Json<Rules>) -> StatusCode {
    sb.set_faults(body.rules);
    StatusCode::NO_CONTENT
}

async fn post_fault(State(sb): State<Arc<Sandbox>>, Json(rule): Json<FaultRule>) -> StatusCode {
    sb.add_fault(rule);
    StatusCode::NO_CONTENT
}

async fn delete_faults(State(sb): State<Arc<Sandbox>>) -> StatusCode {
    sb.clear_faults();
    StatusCode::NO_CONTENT
}

async fn get_counters(State(sb): State<Arc<Sandbox>>) -> Json<serde_json::Value> {
    Json(json!(sb.counters()))
}

async fn delete_counters(State(sb): State<Arc<Sandbox>>) -> StatusCode {
    sb.reset_counters();
    StatusCode::NO_CONTENT
}

async fn get_requests(
    State(sb): State<Arc<Sandbox>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let wanted: Option<Operation> = match q.get("operation") {
        None => None,
        Some(op) => match serde_json::from_value(json!(op)) {
            Ok(op) => Some(op),
            Err(_) => {
                return (StatusCode::BAD_REQUEST, format!("unknown operation {op}"))
                    .into_response();
            }
        },
    };
    let list: Vec<_> = sb
        .requests()
        .into_iter()
        .filter(|r| wanted.is_none() || r.operation == wanted)
        .collect();
    Json(list).into_response()
}

async fn delete_requests(State(sb): State<Arc<Sandbox>>) -> StatusCode {
    sb.clear_requests();
    StatusCode::NO_CONTENT
}

async fn get_payments(State(sb): State<Arc<Sandbox>>) -> Response {
    Json(sb.payments()).into_response()
}

async fn get_payment(State(sb): State<Arc<Sandbox>>, Path(id): Path<String>) -> Response {
    match sb.payment(&id) {
        Some(p) => Json(p).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize)]
struct Scenario {
    funds_not_available: bool,
}

async fn put_scenario(
    State(sb): State<Arc<Sandbox>>,
    Path(id): Path<String>,
    Json(body): Json<Scenario>,
) -> StatusCode {
    if sb.set_funds_not_available(&id, body.funds_not_available) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

#[derive(Deserialize)]
struct ForcedStatus {
    status: Option<BankStatus>,
}

async fn put_status(
    State(sb): State<Arc<Sandbox>>,
    Path(id): Path<String>,
    Json(body): Json<ForcedStatus>,
) -> StatusCode {
    if sb.force_status(&id, body.status) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

#[derive(Deserialize)]
struct TokenIdentity {
    on: bool,
}

async fn put_token_identity(
    State(sb): State<Arc<Sandbox>>,
    Json(body): Json<TokenIdentity>,
) -> StatusCode {
    sb.set_token_identity(body.on);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Advance {
    #[serde(default)]
    seconds: u64,
    #[serde(default)]
    millis: u64,
}

async fn advance_clock(State(sb): State<Arc<Sandbox>>, Json(body): Json<Advance>) -> Response {
    sb.advance_clock(Duration::from_secs(body.seconds) + Duration::from_millis(body.millis));
    Json(json!({ "now": sb.now() })).into_response()
}

#[derive(Deserialize)]
struct GatewayClock {
    offset_secs: i64,
}

/// Moves the API gateway's clock (the originating-date check and the `Date` header) by
/// `offset_secs` from the real time, standing for a client whose clock is off.
async fn put_gateway_clock(
    State(sb): State<Arc<Sandbox>>,
    Json(body): Json<GatewayClock>,
) -> StatusCode {
    sb.set_gateway_clock_offset(body.offset_secs);
    StatusCode::NO_CONTENT
}
