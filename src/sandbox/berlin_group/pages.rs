//! The shopper's side: the SCA page a `scaRedirect` points to (also the "bank app" of a
//! decoupled SCA), and the OAuth authorisation server of the OAuth scenario (RFC 8414
//! metadata, an authorize page, a token endpoint that requires PKCE S256 with one verifier
//! per authorisation). Plain HTML forms, no JavaScript.
//!
//! After a redirect SCA the browser goes back to `TPP-Redirect-URI` (approve) or
//! `TPP-Nok-Redirect-URI` (refuse; the redirect URI when none was given) with no
//! parameters: the Berlin Group return is only a trigger for the TPP to read the status.
//! OAuth's return carries `code` and `state` (or `error=access_denied`), as RFC 6749 says.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::BgSandbox;
use super::state::{Approach, AuthKind, DecideError, OAuthCode, new_id};

/// How long an OAuth code can be exchanged.
const CODE_LIFETIME_SECS: i64 = 600;

pub(super) fn routes(sb: Arc<BgSandbox>) -> Router {
    Router::new()
        .route("/sca/{aid}", get(sca_page).post(sca_decide))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route(
            "/oauth/authorize",
            get(authorize_page).post(authorize_decide),
        )
        .route("/oauth/token", post(token))
        .with_state(sb)
}

fn page(title: &str, body: Markup) -> Markup {
    sim_page(
        title,
        "Berlin Group sandbox bank",
        "A simulated bank for tests. Never enter real credentials.",
        body,
    )
}

/// A simulator's HTML page: `title` (with `simulator` after it in the window's title),
/// `body`, and `footer` warning that it is a simulation. SEB's test BankID app shares it.
pub(crate) fn sim_page(title: &str, simulator: &str, footer: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " – " (simulator) }
            }
            body {
                main {
                    h1 { (title) }
                    (body)
                    p { small { (footer) } }
                }
            }
        }
    }
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    (
        status,
        Html(page(title, html! { p { (text) } }).into_string()),
    )
        .into_response()
}

/// The payment summary and the two buttons.
fn decision_form(
    sb: &BgSandbox,
    aid: &str,
    action: &str,
    hidden: &[(&str, &str)],
) -> Option<Markup> {
    let bank = sb.bank();
    let auth = bank.auths.get(aid)?;
    let p = bank.payments.get(&auth.payment_id)?;
    let amount = format!(
        "{} {}",
        p.body["instructedAmount"]["amount"].as_str().unwrap_or(""),
        p.body["instructedAmount"]["currency"]
            .as_str()
            .unwrap_or("")
    );
    let what = match auth.kind {
        AuthKind::Payment => "Approve this payment?",
        AuthKind::Cancellation => "Approve cancelling this payment?",
    };
    Some(html! {
        p { (what) }
        dl {
            dt { "Amount" } dd { (amount) }
            dt { "To" } dd { (p.body["creditorName"].as_str().unwrap_or("")) }
            dt { "Scenario" } dd { (p.scenario) }
        }
        form method="post" action=(action) {
            @for (name, value) in hidden {
                input type="hidden" name=(name) value=(value);
            }
            button type="submit" name="decision" value="approve" { "Approve" }
            " "
            button type="submit" name="decision" value="refuse" { "Refuse" }
        }
    })
}

async fn sca_page(State(sb): State<Arc<BgSandbox>>, Path(aid): Path<String>) -> Response {
    let approach = sb
        .bank()
        .auths
        .get(&aid)
        .map(|a| (a.approach, a.sca_status));
    match approach {
        None => message(
            StatusCode::NOT_FOUND,
            "Unknown authorisation",
            "This link is not valid.",
        ),
        Some((Approach::OAuth, _)) => message(
            StatusCode::CONFLICT,
            "Use your bank's login",
            "This payment is authorised through OAuth: the shop sends you to the authorize page.",
        ),
        Some((_, s)) if s.is_final() => message(
            StatusCode::CONFLICT,
            "Already decided",
            &format!("This authorisation is {}.", s.code()),
        ),
        Some(_) => {
            sb.open(&aid);
            match decision_form(&sb, &aid, &format!("/sca/{aid}"), &[]) {
                Some(form) => Html(page("Your bank", form).into_string()).into_response(),
                None => message(
                    StatusCode::NOT_FOUND,
                    "Unknown authorisation",
                    "This link is not valid.",
                ),
            }
        }
    }
}

#[derive(Deserialize)]
struct Decision {
    decision: String,
}

async fn sca_decide(
    State(sb): State<Arc<BgSandbox>>,
    Path(aid): Path<String>,
    Form(form): Form<Decision>,
) -> Response {
    let approve = match form.decision.as_str() {
        "approve" => true,
        "refuse" => false,
        _ => return message(StatusCode::BAD_REQUEST, "Choose", "Approve or refuse."),
    };
    if sb.bank().auths.get(&aid).map(|a| a.approach) == Some(Approach::OAuth) {
        return message(
            StatusCode::CONFLICT,
            "Use your bank's login",
            "This authorisation goes through OAuth.",
        );
    }
    match sb.decide(&aid, approve) {
        Ok(d) => match d.location {
            Some(to) => (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response(),
            None => message(
                StatusCode::OK,
                if approve { "Approved" } else { "Refused" },
                "You can go back to the shop now.",
            ),
        },
        Err(DecideError::Unknown) => message(
            StatusCode::NOT_FOUND,
            "Unknown authorisation",
            "This link is not valid.",
        ),
        Err(DecideError::Conflict(why)) => message(StatusCode::CONFLICT, "Cannot decide", &why),
    }
}

/// A fault rule on `token` answers the authorisation server's metadata or token call
/// (500, 503 with an OAuth error body, 429) instead of it, after its latency.
async fn oauth_fault(sb: &BgSandbox) -> Option<Response> {
    let plan = sb.faults().plan(crate::sandbox::Operation::Token);
    if plan.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(plan.latency_ms)).await;
    }
    let status = match plan.fault? {
        crate::sandbox::Fault::Http500 => StatusCode::INTERNAL_SERVER_ERROR,
        crate::sandbox::Fault::Http503 => StatusCode::SERVICE_UNAVAILABLE,
        crate::sandbox::Fault::Http429 { .. } => StatusCode::TOO_MANY_REQUESTS,
        _ => return None,
    };
    Some(
        (
            status,
            Json(json!({
                "error": "temporarily_unavailable",
                "error_description": "the authorisation server is unavailable (injected fault)"
            })),
        )
            .into_response(),
    )
}

async fn metadata(State(sb): State<Arc<BgSandbox>>) -> Response {
    if let Some(fault) = oauth_fault(&sb).await {
        return fault;
    }
    Json(json!({
        "issuer": sb.config.public_url,
        "authorization_endpoint": sb.link("/oauth/authorize"),
        "token_endpoint": sb.link("/oauth/token"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["PIS:<paymentId>"]
    }))
    .into_response()
}

/// The payment's open OAuth authorisation named by `scope=PIS:<paymentId>`.
fn oauth_authorisation(sb: &BgSandbox, scope: &str) -> Result<String, String> {
    let pid = scope
        .split_whitespace()
        .find_map(|s| s.strip_prefix("PIS:"))
        .ok_or("scope must be PIS:<paymentId>")?;
    let bank = sb.bank();
    let p = bank
        .payments
        .get(pid)
        .ok_or("scope names no payment of this bank")?;
    p.authorisations
        .iter()
        .rev()
        .filter_map(|a| bank.auths.get(a))
        .find(|a| a.approach == Approach::OAuth && !a.sca_status.is_final() && !a.approved)
        .map(|a| a.id.clone())
        .ok_or_else(|| "the payment has no OAuth authorisation waiting for the shopper".into())
}

fn valid_pkce(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

async fn authorize_page(
    State(sb): State<Arc<BgSandbox>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let bad = |why: &str| {
        message(
            StatusCode::BAD_REQUEST,
            "Invalid authorisation request",
            why,
        )
    };
    if get("response_type") != "code" {
        return bad("response_type must be code");
    }
    if get("client_id").is_empty() {
        return bad("client_id is required");
    }
    let redirect_ok = url::Url::parse(get("redirect_uri"))
        .ok()
        .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
    if !redirect_ok {
        return bad("redirect_uri must be an absolute http(s) URL");
    }
    if get("code_challenge_method") != "S256" {
        return bad("PKCE is required: code_challenge_method must be S256");
    }
    let challenge = get("code_challenge");
    if challenge.len() != 43 || URL_SAFE_NO_PAD.decode(challenge).is_err() {
        return bad(
            "code_challenge must be the base64url SHA-256 of the code_verifier (43 characters)",
        );
    }
    let aid = match oauth_authorisation(&sb, get("scope")) {
        Ok(a) => a,
        Err(why) => return bad(&why),
    };
    {
        let mut bank = sb.bank();
        let reused = bank.used_challenges.contains(challenge)
            && bank
                .auths
                .get(&aid)
                .and_then(|a| a.code_challenge.as_deref())
                != Some(challenge);
        if reused {
            return bad(
                "this code_challenge was already used for another authorisation: every authorisation needs its own code_verifier",
            );
        }
        bank.used_challenges.insert(challenge.to_owned());
        if let Some(a) = bank.auths.get_mut(&aid) {
            a.code_challenge = Some(challenge.to_owned());
            a.authorize_request = Some((get("redirect_uri").to_owned(), get("state").to_owned()));
        }
    }
    sb.open(&aid);
    let hidden = [
        ("authorisation", aid.as_str()),
        ("redirect_uri", get("redirect_uri")),
        ("state", get("state")),
    ];
    match decision_form(&sb, &aid, "/oauth/authorize", &hidden) {
        Some(form) => Html(page("Your bank", form).into_string()).into_response(),
        None => bad("unknown authorisation"),
    }
}

#[derive(Deserialize)]
struct AuthorizeForm {
    authorisation: String,
    redirect_uri: String,
    #[serde(default)]
    state: String,
    decision: String,
}

/// Where the browser goes after an OAuth decision: the code (approve) or
/// `error=access_denied` (refuse), with `state`.
pub(super) fn oauth_decide(
    sb: &BgSandbox,
    aid: &str,
    approve: bool,
    redirect_uri: &str,
    state: &str,
) -> Result<String, DecideError> {
    {
        let bank = sb.bank();
        let a = bank.auths.get(aid).ok_or(DecideError::Unknown)?;
        if a.code_challenge.is_none() {
            return Err(DecideError::Conflict(
                "the TPP has not sent the shopper to /oauth/authorize yet".into(),
            ));
        }
    }
    sb.decide(aid, approve)?;
    let mut url = url::Url::parse(redirect_uri)
        .map_err(|_| DecideError::Conflict("bad redirect_uri".into()))?;
    {
        let mut pairs = url.query_pairs_mut();
        if approve {
            let code = new_id();
            let now = sb.now();
            if let Some(a) = sb.bank().auths.get_mut(aid) {
                a.oauth_code = Some(OAuthCode {
                    code: code.clone(),
                    redirect_uri: redirect_uri.to_owned(),
                    issued_at: now,
                    used: false,
                });
            }
            pairs.append_pair("code", &code);
        } else {
            pairs.append_pair("error", "access_denied");
        }
        if !state.is_empty() {
            pairs.append_pair("state", state);
        }
    }
    Ok(url.into())
}

async fn authorize_decide(
    State(sb): State<Arc<BgSandbox>>,
    Form(form): Form<AuthorizeForm>,
) -> Response {
    let approve = form.decision == "approve";
    match oauth_decide(
        &sb,
        &form.authorisation,
        approve,
        &form.redirect_uri,
        &form.state,
    ) {
        Ok(to) => (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response(),
        Err(DecideError::Unknown) => message(
            StatusCode::NOT_FOUND,
            "Unknown authorisation",
            "This link is not valid.",
        ),
        Err(DecideError::Conflict(why)) => message(StatusCode::CONFLICT, "Cannot decide", &why),
    }
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

async fn token(
    State(sb): State<Arc<BgSandbox>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(fault) = oauth_fault(&sb).await {
        return fault;
    }
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if get("grant_type") != "authorization_code" {
        return oauth_error(
            "unsupported_grant_type",
            "only authorization_code is supported",
        );
    }
    let verifier = get("code_verifier");
    if verifier.is_empty() {
        return oauth_error("invalid_request", "code_verifier is required (PKCE S256)");
    }
    if !valid_pkce(verifier) {
        return oauth_error(
            "invalid_request",
            "code_verifier must be 43-128 unreserved characters",
        );
    }
    let now = sb.now();
    let mut bank = sb.bank();
    let found = bank
        .auths
        .values()
        .find(|a| a.oauth_code.as_ref().is_some_and(|c| c.code == get("code")))
        .map(|a| a.id.clone());
    let Some(aid) = found.filter(|_| !get("code").is_empty()) else {
        return oauth_error("invalid_grant", "unknown code");
    };
    let Some(auth) = bank.auths.get_mut(&aid) else {
        return oauth_error("invalid_grant", "unknown code");
    };
    let Some(code) = auth.oauth_code.as_mut() else {
        return oauth_error("invalid_grant", "unknown code");
    };
    if code.used {
        return oauth_error("invalid_grant", "the code was already used");
    }
    if (now - code.issued_at).num_seconds() > CODE_LIFETIME_SECS {
        return oauth_error("invalid_grant", "the code expired");
    }
    if code.redirect_uri != get("redirect_uri") {
        return oauth_error(
            "invalid_grant",
            "redirect_uri differs from the authorize request's",
        );
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if auth.code_challenge.as_deref() != Some(computed.as_str()) {
        return oauth_error(
            "invalid_grant",
            "code_verifier does not match the code_challenge (S256)",
        );
    }
    code.used = true;
    bank.finalise_oauth(&aid, now);
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "access_token": new_id(),
            "token_type": "Bearer",
            "expires_in": 3600
        })),
    )
        .into_response()
}
