//! The simulator's admin paths (no authentication, no signature: test networks only),
//! plain JSON. Mirrors the Nordea sandbox's admin API and the independent Python ASPSP's.
//!
//! | call | body / answer |
//! |---|---|
//! | `GET /admin/health` | `{"status": "ok"}` |
//! | `GET /admin/requests[?operation=initiatePayment][&refused=true]` | every API call, oldest first: method, path, operation, headers, body, status, response headers and body, `code` |
//! | `DELETE /admin/requests` | clears the log |
//! | `GET /admin/selfcheck` | `{"failures": [...]}`: the simulator's own answers that violated the OpenAPI (empty when healthy) |
//! | `GET /admin/payments[/{id}]` | payment states (transactionStatus, scenario, approach, authorisations with scaStatus) |
//! | `GET /admin/scenarios` | the scenario table |
//! | `POST /admin/sca/{authorisationId}` | `{"approve": true|false}`: the shopper's decision without a browser; answers `{"scaStatus", "location"}` (where the browser would go: the TPP's redirect URI, or for OAuth the redirect with `code`); 404 unknown, 409 when it cannot be decided |
//! | `POST /admin/sca/{authorisationId}/open` | the shopper opens the SCA page (ends "404 until opened") |
//! | `POST /admin/decoupled/{authorisationId}` | `{"approve": …}`, as `/admin/sca/…` (the Python ASPSP's path) |
//! | `POST /admin/clock/advance` | `{"seconds": 2}` and/or `{"millis": 500}` moves the simulator clock |
//! | `GET /admin/faults` | `{"rules": [rule…], "counters": {"initiate": {"received", "faulted"}, …}}` |
//! | `PUT /admin/faults` | `{"rules": [rule…]}` replaces every rule: the Nordea sandbox's rules ([`crate::sandbox::faults`]), `sca_status` targeting the SCA status reads alone; `[]` switches faults off |
//! | `POST /admin/reset` | forgets everything (the faults too) |

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::state::{Approach, DecideError};
use super::{BgSandbox, pages, scenarios};
use crate::sandbox::faults::FaultSwitch;

pub(super) fn routes(sb: Arc<BgSandbox>) -> Router {
    Router::new()
        .route(
            "/admin/health",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route("/admin/requests", get(requests).delete(clear_requests))
        .route("/admin/selfcheck", get(selfcheck))
        .route("/admin/payments", get(payments))
        .route("/admin/payments/{id}", get(payment))
        .route(
            "/admin/scenarios",
            get(|| async { Json(json!(scenarios::ALL)) }),
        )
        .route("/admin/sca/{aid}", post(decide))
        .route("/admin/sca/{aid}/open", post(open))
        .route("/admin/decoupled/{aid}", post(decide))
        .route("/admin/clock/advance", post(advance))
        .route("/admin/reset", post(reset))
        .with_state(sb.clone())
        .merge(FaultSwitch::admin_routes(sb.faults().clone()))
}

#[derive(Deserialize)]
struct RequestFilter {
    /// Only this operationId (e.g. `initiatePayment`).
    operation: Option<String>,
    /// `true`: only the refused ones (status 400 and above).
    refused: Option<bool>,
}

async fn requests(State(sb): State<Arc<BgSandbox>>, Query(f): Query<RequestFilter>) -> Response {
    let list: Vec<_> = sb
        .requests()
        .into_iter()
        .filter(|e| {
            f.operation
                .as_deref()
                .is_none_or(|o| e.operation == Some(o))
        })
        .filter(|e| f.refused != Some(true) || e.status >= 400)
        .collect();
    Json(list).into_response()
}

async fn clear_requests(State(sb): State<Arc<BgSandbox>>) -> StatusCode {
    sb.clear_requests();
    StatusCode::NO_CONTENT
}

async fn selfcheck(State(sb): State<Arc<BgSandbox>>) -> Response {
    Json(json!({ "failures": sb.selfcheck_failures() })).into_response()
}

async fn payments(State(sb): State<Arc<BgSandbox>>) -> Response {
    Json(sb.payments()).into_response()
}

async fn payment(State(sb): State<Arc<BgSandbox>>, Path(id): Path<String>) -> Response {
    match sb.payment(&id) {
        Some(p) => Json(p).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize)]
struct Decision {
    approve: bool,
}

async fn decide(
    State(sb): State<Arc<BgSandbox>>,
    Path(aid): Path<String>,
    Json(d): Json<Decision>,
) -> Response {
    let oauth = {
        let bank = sb.bank();
        bank.auths
            .get(&aid)
            .map(|a| (a.approach == Approach::OAuth, a.authorize_request.clone()))
    };
    let result = match oauth {
        None => Err(DecideError::Unknown),
        Some((true, request)) => {
            let (redirect, state) = request.unwrap_or_default();
            pages::oauth_decide(&sb, &aid, d.approve, &redirect, &state).map(Some)
        }
        Some((false, _)) => sb.decide(&aid, d.approve).map(|x| x.location),
    };
    match result {
        Ok(location) => {
            let sca = sb
                .bank()
                .auths
                .get(&aid)
                .map(|a| a.sca_status.code())
                .unwrap_or("");
            Json(json!({ "scaStatus": sca, "location": location })).into_response()
        }
        Err(DecideError::Unknown) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown authorisation"})),
        )
            .into_response(),
        Err(DecideError::Conflict(why)) => {
            (StatusCode::CONFLICT, Json(json!({"error": why}))).into_response()
        }
    }
}

async fn open(State(sb): State<Arc<BgSandbox>>, Path(aid): Path<String>) -> StatusCode {
    if sb.open(&aid) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

#[derive(Deserialize)]
struct Advance {
    #[serde(default)]
    seconds: u64,
    #[serde(default)]
    millis: u64,
}

async fn advance(State(sb): State<Arc<BgSandbox>>, Json(a): Json<Advance>) -> Response {
    sb.advance_clock(Duration::from_secs(a.seconds) + Duration::from_millis(a.millis));
    Json(json!({ "now": sb.now() })).into_response()
}

async fn reset(State(sb): State<Arc<BgSandbox>>) -> StatusCode {
    sb.reset();
    StatusCode::NO_CONTENT
}
