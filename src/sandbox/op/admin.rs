//! The simulator's admin paths on the plain-HTTP listener (no authentication: test networks
//! only), plain JSON.
//!
//! | call | answer |
//! |---|---|
//! | `GET /admin/health` | `{"status": "ok"}` |
//! | `GET /admin/payments` | every payment's admin view, oldest first |
//! | `GET /admin/payments/{paymentId}` | `{"paymentId","authorizationId","status","submissions","submission_keys","amount","creditor"}`; 404 unknown |
//! | `POST /admin/payments/{paymentId}/status/{Status}` | moves a payment to an OP status (e.g. `Cancelled`: the shopper cancelled at OP) |
//! | `POST /admin/hold-submissions` | `{"hold": true|false}`: held submissions wait until released, then are performed even if the client went away |
//! | `GET /admin/refusals` / `DELETE /admin/refusals` | every refusal with its check (the mutual-TLS handshake included) / clears them |
//! | `POST /admin/approve/{authorizationId}` / `POST /admin/reject/{authorizationId}` | the page's buttons, answering `{"location": …}`; 409 when the page was not opened |
//! | `GET /admin/redirect-uris` / `PUT /admin/redirect-uris` | the registered redirect URIs / replaces them (`{"uris": [...]}`) |
//! | `POST /admin/clock/advance` | `{"seconds": n}` moves the simulator's clock |

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::OpSim;
use super::state::Status;

pub(super) fn routes(sim: Arc<OpSim>) -> Router {
    Router::new()
        .route(
            "/admin/health",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route(
            "/admin/payments",
            get(|State(sim): State<Arc<OpSim>>| async move { Json(sim.payments()) }),
        )
        .route("/admin/payments/{id}", get(payment))
        .route("/admin/payments/{id}/status/{status}", post(force_status))
        .route("/admin/hold-submissions", post(hold))
        .route("/admin/refusals", get(refusals).delete(clear_refusals))
        .route("/admin/approve/{authorization_id}", post(approve))
        .route("/admin/reject/{authorization_id}", post(reject))
        .route(
            "/admin/redirect-uris",
            get(|State(sim): State<Arc<OpSim>>| async move {
                Json(json!({"uris": sim.redirect_uris()}))
            })
            .put(set_redirect_uris),
        )
        .route("/admin/clock/advance", post(advance))
        .with_state(sim)
}

async fn payment(State(sim): State<Arc<OpSim>>, Path(id): Path<String>) -> Response {
    match sim.payment(&id) {
        Some(v) => Json(v).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no payment {id}")})),
        )
            .into_response(),
    }
}

async fn force_status(
    State(sim): State<Arc<OpSim>>,
    Path((id, status)): Path<(String, String)>,
) -> Response {
    let all = [
        Status::Unauthorized,
        Status::Authorizing,
        Status::Authorized,
        Status::SubmissionPending,
        Status::Accepted,
        Status::Debited,
        Status::Rejected,
        Status::Revoked,
        Status::Cancelled,
    ];
    let Some(s) = all.into_iter().find(|s| s.as_str() == status) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("unknown status {status}")})),
        )
            .into_response();
    };
    if sim.force_status(&id, s) {
        Json(sim.payment(&id)).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no payment {id}")})),
        )
            .into_response()
    }
}

#[derive(Deserialize)]
struct Hold {
    hold: bool,
}

async fn hold(State(sim): State<Arc<OpSim>>, Json(h): Json<Hold>) -> Json<serde_json::Value> {
    sim.set_hold_submissions(h.hold);
    Json(json!({"hold": sim.hold_submissions()}))
}

async fn refusals(State(sim): State<Arc<OpSim>>) -> Json<serde_json::Value> {
    Json(json!(sim.refusals()))
}

async fn clear_refusals(State(sim): State<Arc<OpSim>>) -> StatusCode {
    sim.clear_refusals();
    StatusCode::NO_CONTENT
}

fn decision(sim: &OpSim, authorization_id: &str, approve: bool) -> Response {
    match super::app::decide(sim, authorization_id, None, approve) {
        Ok(location) => Json(json!({"location": location})).into_response(),
        Err(e) => (StatusCode::CONFLICT, Json(json!({"error": e.to_string()}))).into_response(),
    }
}

async fn approve(State(sim): State<Arc<OpSim>>, Path(a): Path<String>) -> Response {
    decision(&sim, &a, true)
}

async fn reject(State(sim): State<Arc<OpSim>>, Path(a): Path<String>) -> Response {
    decision(&sim, &a, false)
}

#[derive(Deserialize)]
struct Advance {
    #[serde(default)]
    seconds: u64,
}

async fn advance(State(sim): State<Arc<OpSim>>, Json(a): Json<Advance>) -> Json<serde_json::Value> {
    sim.advance_clock(Duration::from_secs(a.seconds));
    Json(json!({"now": sim.now()}))
}

#[derive(Deserialize)]
struct RedirectUris {
    uris: Vec<String>,
}

async fn set_redirect_uris(State(sim): State<Arc<OpSim>>, Json(r): Json<RedirectUris>) -> Response {
    for u in &r.uris {
        let ok = url::Url::parse(u)
            .map(|p| matches!(p.scheme(), "http" | "https") && p.fragment().is_none())
            .unwrap_or(false);
        if !ok {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("uris: {u:?} is not an absolute http(s) URL without a fragment")})),
            )
                .into_response();
        }
    }
    sim.set_redirect_uris(r.uris);
    Json(json!({"uris": sim.redirect_uris()})).into_response()
}
