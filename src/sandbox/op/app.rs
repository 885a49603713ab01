//! The plain-HTTP side: OP's authorization page (`GET /oauth/authorize` with a signed
//! request object, checked claim by claim as contract §4 lists; Approve/Reject as HTML forms
//! without JavaScript; the answer in the redirect's fragment), the JWKS of ID tokens
//! (`/oauth/jwks`) and of signed answers (`/jwks/payments`), and the OIDC discovery document.
//! A bad request object gets a 400 page naming the check, never a redirect. It must never
//! accept an unsigned or HMAC-signed request object, or one signed by another key.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::{Code, Session, Status};
use super::{OpSim, Refused, keys};
use crate::sandbox::berlin_group::pages::sim_page;

/// The PSD2 SCA `acr` value OP's request objects ask for and its ID tokens carry.
pub const ACR_SCA: &str = "urn:openbanking:psd2:sca";

/// The pseudonymous shopper id (`sub`) of the simulated shopper.
pub const SANDBOX_SUB: &str = "op-sandbox-shopper-1";

/// How far `nbf`/`iat` may be in the future (clock skew between TPP and bank).
const SKEW_SECS: i64 = 5;

pub(super) fn routes(sim: Arc<OpSim>) -> Router {
    Router::new()
        .route("/oauth/authorize", get(authorize))
        .route("/oauth/authorize/decision", post(decision))
        .route(
            "/oauth/jwks",
            get(|State(sim): State<Arc<OpSim>>| async move { Json(sim.id_key.jwks()) }),
        )
        .route(
            "/jwks/payments",
            get(|State(sim): State<Arc<OpSim>>| async move { Json(sim.answer_key.jwks()) }),
        )
        .route(
            "/.well-known/openid-configuration",
            get(|State(sim): State<Arc<OpSim>>| async move { Json(sim.discovery()) }),
        )
        .with_state(sim)
}

fn page(title: &str, body: Markup) -> Markup {
    sim_page(
        title,
        "OP sandbox",
        "A simulated OP authorization page for tests. Never use real credentials.",
        body,
    )
}

/// A refused authorization request: 400 page naming the check, recorded.
fn refusal(status: StatusCode, check: &'static str, detail: impl Into<String>) -> Response {
    let detail = detail.into();
    let mut resp = (
        status,
        Html(
            page(
                "Authorization refused",
                html! { p id="error" { "Refused (" span id="check" { (check) } "): " (detail) } },
            )
            .into_string(),
        ),
    )
        .into_response();
    resp.extensions_mut().insert(Refused {
        check,
        code: None,
        detail,
    });
    resp
}

/// The claims of an ID token for an authorization (without `c_hash`/`s_hash`/`at_hash`).
pub(crate) fn id_token_claims(
    sim: &OpSim,
    authorization_id: &str,
    nonce: &str,
    now: DateTime<Utc>,
) -> Value {
    json!({
        "iss": sim.issuer,
        "sub": SANDBOX_SUB,
        "aud": sim.config.client_id,
        "iat": now.timestamp(),
        "exp": now.timestamp() + 600,
        "auth_time": now.timestamp(),
        "nonce": nonce,
        "acr": ACR_SCA,
        "authorizationId": authorization_id,
    })
}

fn str_claim<'a>(claims: &'a Value, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

/// The checks of contract §4 on the query and its request object; the session on success.
fn check_request(
    sim: &OpSim,
    q: &HashMap<String, String>,
    now: DateTime<Utc>,
) -> Result<(Session, Value), Box<Response>> {
    let bad = |check: &'static str, detail: &str| {
        Box::new(refusal(StatusCode::BAD_REQUEST, check, detail))
    };
    let request = q
        .get("request")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| bad("request-object-present", "the request parameter is missing"))?;
    let jws = keys::split_compact(request).map_err(|e| bad("request-object-format", &e))?;
    let alg = str_claim(&jws.header, "alg").unwrap_or("");
    if alg != "RS256" && alg != "PS256" {
        return Err(bad(
            "request-object-alg",
            &format!("alg {alg:?} is not allowed (RS256 or PS256)"),
        ));
    }
    let kid = str_claim(&jws.header, "kid");
    if kid != Some(sim.config.tpp_signing_key_id.as_str()) {
        return Err(bad(
            "request-object-kid",
            &format!("kid {kid:?} is not the registered signing key id"),
        ));
    }
    if !keys::verify_rsa(alg, &jws.signing_input, &jws.signature, &sim.signing_key) {
        return Err(bad(
            "request-object-signature",
            "the signature does not verify with the registered signing certificate",
        ));
    }
    let c = &jws.claims;
    for name in ["client_id", "response_type", "scope"] {
        if q.get(name).map(String::as_str) != str_claim(c, name) {
            return Err(bad(
                "query-matches-request-object",
                &format!("the query's {name} is not the request object's"),
            ));
        }
    }
    if str_claim(c, "client_id") != Some(sim.config.client_id.as_str()) {
        return Err(bad("client-id", "client_id is not the registered client"));
    }
    if str_claim(c, "iss") != Some(sim.config.client_id.as_str()) {
        return Err(bad("request-object-iss", "iss must be the client_id"));
    }
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == &sim.audience,
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(sim.audience.as_str())),
        _ => false,
    };
    if !aud_ok {
        return Err(bad(
            "request-object-aud",
            &format!("aud must be {}", sim.audience),
        ));
    }
    let t = now.timestamp();
    let num = |name: &str| c.get(name).and_then(Value::as_i64);
    let exp = num("exp").ok_or_else(|| bad("request-object-exp", "exp is missing"))?;
    if exp <= t {
        return Err(bad("request-object-exp", "the request object has expired"));
    }
    let iat = num("iat").ok_or_else(|| bad("request-object-iat", "iat is missing"))?;
    if iat > t + SKEW_SECS {
        return Err(bad("request-object-iat", "iat is in the future"));
    }
    if exp - iat > 3600 {
        return Err(bad(
            "request-object-lifetime",
            "exp - iat must be at most 3600 seconds",
        ));
    }
    let nbf = num("nbf").ok_or_else(|| bad("request-object-nbf", "nbf is missing"))?;
    if nbf > t + SKEW_SECS {
        return Err(bad("request-object-nbf", "nbf is in the future"));
    }
    if str_claim(c, "response_type") != Some("code id_token") {
        return Err(bad(
            "response-type",
            "response_type must be \"code id_token\"",
        ));
    }
    let scope: Vec<&str> = str_claim(c, "scope").unwrap_or("").split(' ').collect();
    if !scope.contains(&"openid") || !scope.contains(&"payments") {
        return Err(bad("scope", "scope must include openid and payments"));
    }
    let redirect_uri = str_claim(c, "redirect_uri").unwrap_or("");
    if !sim.redirect_uris().iter().any(|u| u == redirect_uri) {
        return Err(bad(
            "redirect-uri",
            &format!("redirect_uri {redirect_uri:?} is not registered"),
        ));
    }
    let nonce = str_claim(c, "nonce")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("nonce", "nonce is missing"))?;
    let state = str_claim(c, "state")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("state", "state is missing"))?;
    let id_token_claims = c.pointer("/claims/id_token");
    let authorization_id = id_token_claims
        .and_then(|v| v.pointer("/authorizationId/value"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            bad(
                "authorization-id",
                "claims.id_token.authorizationId.value is missing",
            )
        })?;
    let acr = id_token_claims.and_then(|v| v.get("acr"));
    let acr_ok = acr.and_then(|a| a.get("essential")) == Some(&Value::Bool(true))
        && acr
            .and_then(|a| a.get("values"))
            .and_then(Value::as_array)
            .is_some_and(|v| v.iter().any(|x| x.as_str() == Some(ACR_SCA)));
    if !acr_ok {
        return Err(bad(
            "acr",
            &format!("claims.id_token.acr must be essential with the value {ACR_SCA}"),
        ));
    }
    let session = Session {
        id: uuid::Uuid::new_v4().to_string(),
        authorization_id: authorization_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        state: state.to_owned(),
        nonce: nonce.to_owned(),
    };
    Ok((session, c.clone()))
}

async fn authorize(
    State(sim): State<Arc<OpSim>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let now = sim.now();
    let session = match check_request(&sim, &q, now) {
        Ok((s, _)) => s,
        Err(r) => return *r,
    };
    let mut bank = sim.bank();
    let Some(p) = bank.payment_by_authorization(&session.authorization_id, now) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "authorization-id",
            "claims.id_token.authorizationId.value is not a known authorization",
        );
    };
    if !matches!(p.status, Status::Unauthorized | Status::Authorizing) {
        let detail = format!("the payment is {} (not authorizable)", p.status.as_str());
        return refusal(StatusCode::BAD_REQUEST, "payment-status", detail);
    }
    p.status = Status::Authorizing;
    let amount = p.amount.clone();
    let creditor = p.creditor_name.clone();
    let iban = p.creditor_iban.clone();
    bank.sessions
        .insert(session.authorization_id.clone(), session.clone());
    drop(bank);
    let body = html! {
        p { "Pay " strong id="amount" { (amount) " EUR" } " to " strong id="creditor" { (creditor) } " (" (iban) ")." }
        form method="post" action="/oauth/authorize/decision" {
            input type="hidden" name="session" value=(session.id);
            input type="hidden" name="authorization_id" value=(session.authorization_id);
            button type="submit" name="decision" value="approve" id="approve" { "Approve" }
            " "
            button type="submit" name="decision" value="reject" id="reject" { "Reject" }
        }
    };
    let mut resp = Html(page("Approve the payment", body).into_string()).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// Why a decision cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    #[error("the authorization page of this authorization was not opened (or already answered)")]
    NoSession,
    #[error("the payment is {0} (not authorizable)")]
    NotAuthorizable(&'static str),
}

/// Approve or Reject an opened authorization: the redirect location (answer in the
/// fragment).
pub(crate) fn decide(
    sim: &OpSim,
    authorization_id: &str,
    session_id: Option<&str>,
    approve: bool,
) -> Result<String, DecisionError> {
    let now = sim.now();
    let mut bank = sim.bank();
    let session = bank
        .sessions
        .get(authorization_id)
        .filter(|s| session_id.is_none_or(|id| id == s.id))
        .cloned()
        .ok_or(DecisionError::NoSession)?;
    let p = bank
        .payment_by_authorization(authorization_id, now)
        .ok_or(DecisionError::NoSession)?;
    if p.status != Status::Authorizing {
        return Err(DecisionError::NotAuthorizable(p.status.as_str()));
    }
    bank.sessions.remove(authorization_id);
    let mut fragment = form_urlencoded::Serializer::new(String::new());
    if approve {
        if let Some(p) = bank.payment_by_authorization(authorization_id, now) {
            p.status = Status::Authorized;
        }
        let code = format!("op-code-{}", uuid::Uuid::new_v4().simple());
        bank.codes.insert(
            code.clone(),
            Code {
                authorization_id: authorization_id.to_owned(),
                redirect_uri: session.redirect_uri.clone(),
                nonce: session.nonce.clone(),
                issued: now,
                used: false,
            },
        );
        drop(bank);
        let mut claims = id_token_claims(sim, authorization_id, &session.nonce, now);
        claims["c_hash"] = json!(keys::half_hash(&code));
        claims["s_hash"] = json!(keys::half_hash(&session.state));
        fragment
            .append_pair("code", &code)
            .append_pair("id_token", &sim.id_key.jwt(&claims))
            .append_pair("state", &session.state);
    } else {
        if let Some(p) = bank.payment_by_authorization(authorization_id, now) {
            p.status = Status::Rejected;
        }
        drop(bank);
        fragment
            .append_pair("error", "access_denied")
            .append_pair("error_description", "the user rejected the payment")
            .append_pair("state", &session.state);
    }
    Ok(format!("{}#{}", session.redirect_uri, fragment.finish()))
}

#[derive(Deserialize)]
struct DecisionForm {
    session: String,
    authorization_id: String,
    decision: String,
}

async fn decision(State(sim): State<Arc<OpSim>>, Form(f): Form<DecisionForm>) -> Response {
    let approve = match f.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "decision",
                "decision is approve or reject",
            );
        }
    };
    match decide(&sim, &f.authorization_id, Some(&f.session), approve) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(e) => refusal(StatusCode::CONFLICT, "decision-session", e.to_string()),
    }
}
