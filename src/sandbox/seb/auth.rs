//! SEB's decoupled authorization v4 (`/auth/v4`): the shopper identifies with BankID and the
//! TPP takes the shopper's tokens once; refresh rotates the pair. Also the header checks the
//! other APIs share (`psu-ip-address`, `X-Request-ID`, the bearer token).
//!
//! | call | rules |
//! |---|---|
//! | `POST /auth/v4/authorizations` | `psu-ip-address` a valid IP; body `{client_id, scope, start_mode, lang?}`: our client id (`invalid-client`), scope contains `psd2_payments`, `start_mode` `qr`/`ast`, `lang` `sv`/`en`; unknown fields refused → 200 `{auth_req_id}` |
//! | `GET /auth/v4/authorizations/{id}` | `psu-ip-address`; 404 unknown → `{status, hint_code, poll_delay, qr_token?, autostart_token?}` |
//! | `POST /auth/v4/tokens` | `{client_id, client_secret, auth_req_id, redirect_uri}` (an absolute URL; one of `redirect_uris` when configured) once per COMPLETE order; or `grant_type: refresh_token` with `refresh_token`: a new pair, the old refresh token refused |

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};

use super::SebSim;
use super::problem::Problem;
use super::state::OrderState;

pub(super) fn routes(sim: Arc<SebSim>) -> Router {
    Router::new()
        .route("/auth/v4/authorizations", post(start))
        .route("/auth/v4/authorizations/{id}", get(progress))
        .route("/auth/v4/tokens", post(tokens))
        .with_state(sim)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `psu-ip-address`: required, a valid IP.
pub(super) fn psu_ip(
    headers: &HeaderMap,
    problem: fn(&'static str, &str, String) -> Problem,
) -> Result<IpAddr, Problem> {
    match header(headers, "psu-ip-address") {
        None | Some("") => Err(problem(
            "psu-ip-address",
            "PSU-IP-Address",
            "the header is required".into(),
        )),
        Some(v) => v.parse::<IpAddr>().map_err(|_| {
            problem(
                "psu-ip-address",
                "PSU-IP-Address",
                format!("{v:?} is not an IP address"),
            )
        }),
    }
}

fn auth_bad_request(rule: &'static str, path: &str, detail: String) -> Problem {
    let mut p = Problem::auth(
        StatusCode::BAD_REQUEST,
        "invalid-request",
        rule,
        format!("{path}: {detail}"),
    );
    p.path = Some(path.to_owned());
    p
}

/// `X-Request-ID`: required, a UUID.
pub(super) fn request_id(headers: &HeaderMap) -> Result<(), Problem> {
    match header(headers, "x-request-id") {
        None | Some("") => Err(Problem::format(
            "x-request-id",
            "X-Request-ID",
            "the header is required",
        )),
        Some(v) => uuid::Uuid::parse_str(v).map(|_| ()).map_err(|_| {
            Problem::format(
                "x-request-id",
                "X-Request-ID",
                format!("{v:?} is not a UUID"),
            )
        }),
    }
}

/// The shopper of a live access token (`Authorization: Bearer`); 401 otherwise.
pub(super) fn shopper(sim: &SebSim, headers: &HeaderMap) -> Result<String, Problem> {
    let invalid = |detail: &str| {
        Problem::pis(
            StatusCode::UNAUTHORIZED,
            "TOKEN_INVALID",
            "bearer-token",
            detail.to_owned(),
        )
    };
    let value =
        header(headers, "authorization").ok_or_else(|| invalid("Authorization is required"))?;
    let token = match value.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            t.trim()
        }
        _ => return Err(invalid("Authorization must be Bearer <access token>")),
    };
    let now = sim.now();
    let bank = sim.bank();
    let t = bank
        .access
        .get(token)
        .ok_or_else(|| invalid("unknown access token"))?;
    if now >= t.expires_at {
        return Err(Problem::pis(
            StatusCode::UNAUTHORIZED,
            "TOKEN_EXPIRED",
            "bearer-token-expired",
            "the access token has expired",
        ));
    }
    Ok(t.shopper.clone())
}

/// A JSON object body, or 400 naming what is wrong.
pub(super) fn json_object(
    body: &[u8],
    bad: fn(&'static str, &str, String) -> Problem,
) -> Result<Map<String, Value>, Problem> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("json-body", "body", "must be a JSON object".into())),
        Err(e) => Err(bad("json-body", "body", format!("not JSON: {e}"))),
    }
}

pub(super) fn only_fields(
    m: &Map<String, Value>,
    allowed: &[&str],
    prefix: &str,
    bad: fn(&'static str, &str, String) -> Problem,
) -> Result<(), Problem> {
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        return Err(bad("unknown-field", &path, "unknown field".into()));
    }
    Ok(())
}

fn string_field<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    bad: fn(&'static str, &str, String) -> Problem,
) -> Result<&'a str, Problem> {
    match m.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) | None => Err(bad("required-field", key, "is required".into())),
        Some(_) => Err(bad("field-type", key, "must be a string".into())),
    }
}

/// `redirect_uri`: required, an absolute http(s) URL, and one of the registered ones when
/// any are configured (SEB answers 400 for an invalid redirect URI).
fn redirect_uri(sim: &SebSim, m: &Map<String, Value>) -> Result<(), Problem> {
    let uri = string_field(m, "redirect_uri", auth_bad_request)?;
    let absolute = url::Url::parse(uri)
        .ok()
        .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
    let registered = &sim.config.redirect_uris;
    if !absolute || (!registered.is_empty() && !registered.iter().any(|r| r == uri)) {
        let mut p = Problem::auth(
            StatusCode::BAD_REQUEST,
            "invalid-redirect-uri",
            "redirect-uri",
            format!("redirect_uri: {uri:?} is not a registered redirect URI"),
        );
        p.path = Some("redirect_uri".into());
        return Err(p);
    }
    Ok(())
}

fn invalid_client(detail: &str) -> Problem {
    Problem::auth(
        StatusCode::BAD_REQUEST,
        "invalid-client",
        "client-id",
        detail.to_owned(),
    )
}

async fn start(State(sim): State<Arc<SebSim>>, headers: HeaderMap, body: Bytes) -> Response {
    match start_inner(&sim, &headers, &body) {
        Ok(v) => Json(v).into_response(),
        Err(p) => p.into_response(),
    }
}

fn start_inner(sim: &SebSim, headers: &HeaderMap, body: &[u8]) -> Result<Value, Problem> {
    psu_ip(headers, auth_bad_request)?;
    let m = json_object(body, auth_bad_request)?;
    only_fields(
        &m,
        &["client_id", "scope", "start_mode", "lang"],
        "",
        auth_bad_request,
    )?;
    let client_id = string_field(&m, "client_id", auth_bad_request)?;
    if client_id != sim.config.client_id {
        return Err(invalid_client("client_id is not a registered client"));
    }
    let scope = string_field(&m, "scope", auth_bad_request)?;
    if !scope.split_whitespace().any(|s| s == "psd2_payments") {
        return Err(auth_bad_request(
            "scope",
            "scope",
            format!("{scope:?} does not contain psd2_payments"),
        ));
    }
    let start_mode = string_field(&m, "start_mode", auth_bad_request)?;
    if !matches!(start_mode, "qr" | "ast") {
        return Err(auth_bad_request(
            "start-mode",
            "start_mode",
            format!("{start_mode:?} is not qr or ast"),
        ));
    }
    match m.get("lang") {
        None => {}
        Some(Value::String(l)) if matches!(l.as_str(), "sv" | "en") => {}
        Some(other) => {
            return Err(auth_bad_request(
                "lang",
                "lang",
                format!("{other} is not sv or en"),
            ));
        }
    }
    let now = sim.now();
    let id = sim
        .bank()
        .start_identification(now, scope.to_owned(), start_mode.to_owned());
    Ok(json!({ "auth_req_id": id }))
}

async fn progress(
    State(sim): State<Arc<SebSim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = psu_ip(&headers, auth_bad_request) {
        return p.into_response();
    }
    let now = sim.now();
    let bank = sim.bank();
    let Some(o) = bank
        .orders
        .get(&id)
        .filter(|o| o.purpose == super::state::Purpose::Identify)
    else {
        return Problem::auth(
            StatusCode::NOT_FOUND,
            "invalid-auth-req-id",
            "auth-req-id-unknown",
            "no authorization has this auth_req_id",
        )
        .into_response();
    };
    let status = match o.state {
        OrderState::Pending => "PENDING",
        OrderState::Complete => "COMPLETE",
        OrderState::Failed => "FAILED",
    };
    let mut v = json!({
        "status": status,
        "hint_code": o.hint_code,
        "poll_delay": 1000,
    });
    if o.state == OrderState::Pending {
        v["qr_token"] = json!(o.qr_data(now));
        v["autostart_token"] = json!(o.autostart_token);
    }
    Json(v).into_response()
}

async fn tokens(State(sim): State<Arc<SebSim>>, body: Bytes) -> Response {
    match tokens_inner(&sim, &body) {
        Ok(v) => Json(v).into_response(),
        Err(p) => p.into_response(),
    }
}

fn tokens_inner(sim: &SebSim, body: &[u8]) -> Result<Value, Problem> {
    let m = json_object(body, auth_bad_request)?;
    let client_id = string_field(&m, "client_id", auth_bad_request)?;
    let client_secret = string_field(&m, "client_secret", auth_bad_request)?;
    let secret_ok: bool = subtle::ConstantTimeEq::ct_eq(
        client_secret.as_bytes(),
        sim.config.client_secret.expose_secret().as_bytes(),
    )
    .into();
    if client_id != sim.config.client_id || !secret_ok {
        return Err(invalid_client("client_id or client_secret is wrong"));
    }
    let now = sim.now();
    match m.get("grant_type") {
        None => {
            only_fields(
                &m,
                &["client_id", "client_secret", "auth_req_id", "redirect_uri"],
                "",
                auth_bad_request,
            )?;
            redirect_uri(sim, &m)?;
            let id = string_field(&m, "auth_req_id", auth_bad_request)?;
            let invalid_id = |rule: &'static str, detail: &str| {
                Problem::auth(
                    StatusCode::BAD_REQUEST,
                    "invalid-auth-req-id",
                    rule,
                    detail.to_owned(),
                )
            };
            let mut bank = sim.bank();
            let o = bank
                .orders
                .get_mut(id)
                .filter(|o| o.purpose == super::state::Purpose::Identify)
                .ok_or_else(|| invalid_id("auth-req-id-unknown", "unknown auth_req_id"))?;
            if o.state != OrderState::Complete {
                return Err(invalid_id(
                    "auth-req-id-not-complete",
                    "the authorization is not COMPLETE",
                ));
            }
            if o.tokens_taken {
                return Err(invalid_id(
                    "auth-req-id-used",
                    "the auth_req_id was already used",
                ));
            }
            o.tokens_taken = true;
            let shopper = o.shopper.clone().unwrap_or_default();
            let scope = o.scope.clone().unwrap_or_else(|| "psd2_payments".into());
            Ok(bank.issue_tokens(&shopper, &scope, now, &sim.config))
        }
        Some(Value::String(g)) if g == "refresh_token" => {
            only_fields(
                &m,
                &[
                    "client_id",
                    "client_secret",
                    "grant_type",
                    "refresh_token",
                    "redirect_uri",
                ],
                "",
                auth_bad_request,
            )?;
            redirect_uri(sim, &m)?;
            let token = string_field(&m, "refresh_token", auth_bad_request)?;
            let mut bank = sim.bank();
            let invalid = |detail: &str| {
                Problem::auth(
                    StatusCode::BAD_REQUEST,
                    "invalid-refresh-token",
                    "refresh-token",
                    detail.to_owned(),
                )
            };
            let r = bank
                .refresh
                .get_mut(token)
                .ok_or_else(|| invalid("unknown refresh token"))?;
            if r.used {
                return Err(invalid("the refresh token was already used (rotated)"));
            }
            r.used = true;
            let (shopper, scope) = (r.shopper.clone(), r.scope.clone());
            Ok(bank.issue_tokens(&shopper, &scope, now, &sim.config))
        }
        Some(other) => Err(Problem::auth(
            StatusCode::BAD_REQUEST,
            "unsupported-grant-type",
            "grant-type",
            format!("grant_type {other} is not supported"),
        )),
    }
}
