//! The operator console at `/console`, on the admin listener only (never the public one):
//! sign-in for operators made with `pisgate operator create`, payment search, and one
//! payment's timeline (ledger events, webhook deliveries with their attempts, the chain's
//! verification), a "needs attention" list, merchants, and actions (replay a dead delivery,
//! re-enable an endpoint, disable or enable a merchant, rotate or revoke all of a merchant's
//! API keys, register or remove its payees and set its payee policy, reconcile a lost
//! initiation: [`unresolved`]), each confirmed on a
//! second page and recorded in the append-only audit log in the same transaction (an action
//! whose audit row cannot be written is not done). A confirmation names the merchant by name
//! and id, and a destructive action (disable, rotate or revoke keys, remove a payee, end a
//! payment as not made at the bank) has the
//! danger style. The search's status and bank-status filters are the closed sets (the
//! merchant-visible statuses, Nordea's statuses) or "any": any other value is refused with a
//! 400 naming the field, never answered with a silently empty list.
//!
//! Sessions live in Postgres; the cookie holds a 256-bit token (only its SHA-256 is stored),
//! HttpOnly, SameSite=Strict, Path=/console, and Secure (unless `admin.console_secure_cookie`
//! is off, for plain-HTTP local development). Every form carries a CSRF token: the session's, or before sign-in a random one
//! that must match its own cookie. Five sign-in attempts in a row that do not succeed lock an
//! account for 15 minutes: each attempt is counted in the database before its password is
//! checked ([`operators::admit`]), so parallel guesses cannot outrun the lock, and a locked
//! or disabled account is refused without a check. A flood over many emails from one
//! address is refused before any check ([`throttle`]). Password checks run under a small
//! semaphore on blocking threads ([`password::verify_limited`]). Every sign-in, failure,
//! refusal, lock-out and sign-out is audited; "sign out everywhere" ends every session of
//! the operator. Pages are server-rendered with no JavaScript and a strict CSP.
//!
//! Never logged: passwords, session tokens, CSRF tokens.

pub mod password;
pub mod throttle;
pub mod unresolved;
mod view;

use crate::api::AppState;
use crate::api::consent::{html_page, style_hash};
use crate::domain::PaymentStatus;
use crate::ledger::operators::{self, Gate, Search, Session};
use crate::ledger::{events, keys, merchants, payees, verify, webhooks};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use chrono::{NaiveDate, Utc};
use rand::RngCore;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use std::collections::HashMap;
use std::sync::LazyLock;
use uuid::Uuid;

const SESSION_COOKIE: &str = "pisgate_console";
const LOGIN_CSRF_COOKIE: &str = "pisgate_console_login";
/// Failed sign-ins in a row that lock an account, and for how long.
pub const MAX_FAILURES: i32 = 5;
const LOCK_MINUTES: i64 = 15;
const SESSION_HOURS: i64 = 8;
const SEARCH_LIMIT: i64 = 100;
/// How long a merchant's current keys keep working after the console rotates them.
const KEY_GRACE_HOURS: u64 = 24;

static POLICY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; style-src {}; img-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'",
        style_hash(view::CSS)
    )
});

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { see_other("/console/payments") }))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", axum::routing::post(logout))
        .route("/console/payments", get(payments))
        .route("/console/payments/{id}", get(payment))
        .route("/console/attention", get(attention))
        .route("/console/merchants", get(merchants_page))
        .route("/console/merchants/{id}/payees", get(payees_page))
        .route("/console/audit", get(audit_page))
        .route("/console/actions", axum::routing::post(action))
}

fn page(status: StatusCode, markup: maud::Markup) -> Response {
    html_page(status, markup, &POLICY)
}

/// Where an action's page goes back to: the form's `back` when it is a console path (no
/// other origin, no `//`, no control characters, which a `Location` header cannot carry:
/// a 500 after the action was done), else the attention page.
pub(super) fn safe_back(form: &HashMap<String, String>) -> &str {
    form.get("back")
        .filter(|b| {
            b.starts_with("/console/")
                && !b.contains("//")
                && b.chars().all(|c| c.is_ascii_graphic())
        })
        .map_or("/console/attention", String::as_str)
}

fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location.to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A console cookie; `Secure` unless `admin.console_secure_cookie` is off (plain-HTTP local
/// development only). Never decided by the request's Host: behind a reverse proxy that
/// forwards `Host: localhost:9090` (nginx's default for `proxy_pass http://localhost:9090`)
/// a session cookie would otherwise lose `Secure` and could be sent over plain HTTP.
fn set_cookie(secure: bool, name: &str, value: &str, max_age: i64) -> String {
    format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console request failed");
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        view::message("Something went wrong", "See the service's log."),
    )
}

/// The signed-in operator, or a redirect to the sign-in page.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Session, Response> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Err(see_other("/console/login"));
    };
    match operators::session(&state.pool, &token_hash(token)).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(see_other("/console/login")),
        Err(e) => Err(internal(e)),
    }
}

/// The signed-in operator who posted `form`, if it carries their session's CSRF token.
async fn posted_by(
    state: &AppState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Session, Response> {
    let session = signed_in(state, headers).await?;
    let given = form.get("csrf").map(String::as_str).unwrap_or("");
    if !same(given, &session.csrf_token) {
        return Err(csrf_refused());
    }
    Ok(session)
}

async fn login_form(State(state): State<AppState>) -> Response {
    login_page(&state, StatusCode::OK, None)
}

fn login_page(state: &AppState, status: StatusCode, error: Option<&str>) -> Response {
    let csrf = random_token();
    let mut r = page(status, view::login(&csrf, error));
    let secure = state.settings.admin.console_secure_cookie;
    if let Ok(v) = set_cookie(secure, LOGIN_CSRF_COOKIE, &csrf, 3600).parse() {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

fn csrf_refused() -> Response {
    page(
        StatusCode::FORBIDDEN,
        view::message(
            "Form refused",
            "The form's security token is missing or stale. Go back, reload and try again.",
        ),
    )
}

#[tracing::instrument(skip_all)]
async fn login(
    State(state): State<AppState>,
    peer: crate::api::client_ip::Peer,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let given = form.get("csrf").map(String::as_str).unwrap_or("");
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    if expected.is_empty() || !same(given, expected) {
        return csrf_refused();
    }
    let client =
        crate::api::client_ip::client_ip(peer, &headers, &state.settings.server.trusted_proxies);
    // Counted before the database or any password check (parallel attempts count as many);
    // a flood from one address is refused. Loopback (port-forward) is never throttled.
    let source = client
        .filter(|ip| !ip.is_loopback())
        .map(throttle::Source::of);
    if let Some(source) = source {
        match state
            .sign_in_throttle
            .begin(source, std::time::Instant::now())
        {
            Err(wait) => return throttled(&state, wait),
            Ok(false) => {}
            Ok(true) => {
                tracing::warn!(
                    attempts = throttle::FAILURES_PER_SOURCE,
                    "console sign-ins from one address refused for a while: too many that did not succeed"
                );
                let target = format!("{source:?}");
                if let Err(e) = operators::audit(
                    &state.pool,
                    None,
                    "",
                    "sign_in_throttled",
                    Some(&target),
                    serde_json::json!({ "attempts": throttle::FAILURES_PER_SOURCE, "window_secs": throttle::WINDOW.as_secs() }),
                )
                .await
                {
                    return internal(e);
                }
            }
        }
    }
    let response = sign_in_checked(&state, &form).await;
    if let Some(source) = source
        && response.status() == StatusCode::SEE_OTHER
    {
        state.sign_in_throttle.succeeded(source);
    }
    response
}

/// `429` with `Retry-After`: too many failed sign-ins from this address.
fn throttled(state: &AppState, wait: std::time::Duration) -> Response {
    let minutes = wait.as_secs().div_ceil(60).max(1);
    let mut r = login_page(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        Some(&format!(
            "Too many failed sign-ins from your address: try again in {minutes} minute(s)."
        )),
    );
    if let Ok(v) = wait.as_secs().max(1).to_string().parse() {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The sign-in itself, once the form's CSRF token and the source's throttle allow it.
async fn sign_in_checked(state: &AppState, form: &HashMap<String, String>) -> Response {
    let email = form
        .get("email")
        .map(|e| e.trim().to_lowercase())
        .unwrap_or_default();
    let password = form.get("password").map(String::as_str).unwrap_or("");
    let refused = |state: &AppState| {
        login_page(
            state,
            StatusCode::UNAUTHORIZED,
            Some("Wrong email or password, or the account is locked for a while."),
        )
    };
    // The attempt is counted (and a locked or disabled account refused) before any password
    // is checked, in one transaction: N parallel guesses count as N.
    // No operator's email holds NUL (a command-line argument cannot), and PostgreSQL text
    // cannot: such an email is unknown without asking the database.
    let gate = if email.contains('\0') {
        Ok(Gate::Unknown)
    } else {
        operators::admit(
            &state.pool,
            &email,
            MAX_FAILURES,
            chrono::Duration::minutes(LOCK_MINUTES),
        )
        .await
    };
    let (id, email, admitted) = match gate {
        Err(e) => return internal(e),
        Ok(Gate::Unknown) => {
            // Spend the same time as a real check, so timing does not tell who exists.
            password::verify_limited(password, &password::DUMMY_HASH).await;
            // An audit row per unknown email, cut so that a flood cannot bloat it.
            // NUL shown as U+FFFD: the audit row is text.
            let typed: String = email
                .chars()
                .map(|c| {
                    if c == '\0' {
                        char::REPLACEMENT_CHARACTER
                    } else {
                        c
                    }
                })
                .take(254)
                .collect();
            if let Err(e) = operators::record_failure(&state.pool, None, &typed, false, 0).await {
                return internal(e);
            }
            return refused(state);
        }
        // Refused without checking the password, but after the same time as a check: a
        // fast refusal would tell that the email is an operator's (locked or disabled).
        Ok(Gate::Locked { id, .. }) => {
            password::verify_limited(password, &password::DUMMY_HASH).await;
            tracing::warn!(operator_id = %id, "sign-in to a locked account refused");
            return refused(state);
        }
        Ok(Gate::Disabled { id, .. }) => {
            password::verify_limited(password, &password::DUMMY_HASH).await;
            tracing::warn!(operator_id = %id, "sign-in to a disabled account refused");
            return refused(state);
        }
        // Logged at error where it was judged (`operators::admit`).
        Ok(Gate::Unsealed { .. }) => {
            password::verify_limited(password, &password::DUMMY_HASH).await;
            return refused(state);
        }
        Ok(Gate::Admitted {
            id,
            email,
            password_hash,
            locks,
            settled_before,
            ..
        }) => {
            if !password::verify_limited(password, &password_hash).await {
                tracing::warn!(operator_id = %id, locked = locks, "wrong password");
                if let Err(e) =
                    operators::record_failure(&state.pool, Some(id), &email, locks, LOCK_MINUTES)
                        .await
                {
                    return internal(e);
                }
                return refused(state);
            }
            (
                id,
                email,
                operators::Admission {
                    settled_before,
                    locks,
                    password_hash,
                },
            )
        }
    };
    let token = random_token();
    let csrf = random_token();
    let expires = Utc::now() + chrono::Duration::hours(SESSION_HOURS);
    let locks = admitted.locks;
    match operators::sign_in(
        &state.pool,
        id,
        &email,
        &token_hash(&token),
        &csrf,
        expires,
        &admitted,
    )
    .await
    {
        Err(e) => return internal(e),
        Ok(false) => return refused(state),
        Ok(true) => {}
    }
    tracing::info!(operator_id = %id, reached_limit = locks, "operator signed in");
    let mut r = see_other("/console/payments");
    let secure = state.settings.admin.console_secure_cookie;
    for c in [
        set_cookie(secure, SESSION_COOKIE, &token, SESSION_HOURS * 3600),
        set_cookie(secure, LOGIN_CSRF_COOKIE, "", 0),
    ] {
        if let Ok(v) = c.parse() {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// `POST /console/logout`: ends this session, or with `everywhere=yes` every session of the
/// operator ("sign out everywhere", e.g. after a laptop is lost), audited with it.
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = match posted_by(&state, &headers, &form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let everywhere = form.get("everywhere").map(String::as_str) == Some("yes");
    let token = cookie(&headers, SESSION_COOKIE).unwrap_or("");
    match operators::sign_out(&state.pool, &session, &token_hash(token), everywhere).await {
        Err(e) => return internal(e),
        Ok(ended) => {
            tracing::info!(operator_id = %session.operator_id, everywhere, ended, "operator signed out")
        }
    }
    let mut r = see_other("/console/login");
    let secure = state.settings.admin.console_secure_cookie;
    if let Ok(v) = set_cookie(secure, SESSION_COOKIE, "", 0).parse() {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The search form's fields, as typed; bad values are reported, not ignored.
fn parse_search(q: &HashMap<String, String>) -> (Search, Vec<String>) {
    let mut s = Search::default();
    let mut errors = Vec::new();
    let field = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let uuid = |k: &str, errors: &mut Vec<String>| {
        field(k).and_then(|v| {
            v.parse::<Uuid>()
                .map_err(|_| errors.push(format!("{k}: not a payment or merchant id")))
                .ok()
        })
    };
    s.id = uuid("id", &mut errors);
    s.merchant_id = uuid("merchant", &mut errors);
    // No payment's reference or PSU id holds a control character (creation refuses them),
    // and PostgreSQL refuses NUL in text: refused naming the field, never a failed search.
    let text = |k: &str, errors: &mut Vec<String>| {
        field(k).and_then(|v| {
            if v.chars().any(char::is_control) {
                errors.push(format!("{k}: must not contain control characters"));
                None
            } else {
                Some(v.to_owned())
            }
        })
    };
    s.reference = text("reference", &mut errors);
    s.psu_id = text("psu_id", &mut errors);
    // Selects offer the closed sets and "any" (empty or `any`); anything else is refused
    // naming it, so a typo or the bank's spelling never silently finds nothing.
    let chosen = |k: &str| field(k).filter(|v| *v != "any");
    s.status = chosen("status").and_then(|v| {
        PaymentStatus::parse(v)
            .map(|p| p.as_str().to_owned())
            .or_else(|| {
                errors.push(format!(
                    "status: {v:?} is not a payment status; choose one of {} (or any)",
                    PaymentStatus::ALL.map(PaymentStatus::as_str).join(", ")
                ));
                None
            })
    });
    s.bank_status = chosen("bank_status").and_then(|v| {
        let known = view::bank_statuses();
        known
            .iter()
            .find(|n| **n == v)
            .map(|n| (*n).to_owned())
            .or_else(|| {
                errors.push(format!(
                    "bank_status: {v:?} is not a Nordea or Berlin Group status; choose one of {} (or any)",
                    known.join(", ")
                ));
                None
            })
    });
    // Exactly YYYY-MM-DD: chrono's own parse takes any signed year it can hold, such as
    // `-5000` (PostgreSQL refuses it: a 500) and `+262142` (whose last day chrono cannot add
    // a day to: a panic). `to` is the day after, added checked all the same.
    let date = |k: &str, days: u64, errors: &mut Vec<String>| {
        field(k).and_then(|v| {
            let shaped = v.len() == 10
                && v.bytes().enumerate().all(|(i, b)| {
                    if i == 4 || i == 7 {
                        b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                });
            shaped
                .then(|| v.parse::<NaiveDate>().ok())
                .flatten()
                .and_then(|d| d.checked_add_days(chrono::Days::new(days)))
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
                .or_else(|| {
                    errors.push(format!("{k}: a date as YYYY-MM-DD"));
                    None
                })
        })
    };
    s.from = date("from", 0, &mut errors);
    s.to = date("to", 1, &mut errors);
    (s, errors)
}

async fn payments(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (search, errors) = parse_search(&q);
    let rows = if errors.is_empty() {
        match operators::search(&state.pool, &search, SEARCH_LIMIT).await {
            Ok(rows) => rows,
            Err(e) => return internal(e),
        }
    } else {
        Vec::new()
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    page(status, view::payments(&session, &q, &errors, &rows))
}

async fn payment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(id) = id.parse::<Uuid>() else {
        return page(
            StatusCode::NOT_FOUND,
            view::message("Not found", "No such payment."),
        );
    };
    let found = async {
        let row = operators::search(
            &state.pool,
            &Search {
                id: Some(id),
                ..Search::default()
            },
            1,
        )
        .await?;
        let events = events::list(&state.pool, id).await?;
        let deliveries = operators::deliveries(&state.pool, id).await?;
        // An unresolved initiation: the end-to-end id to ask the bank about, and whether it
        // waits for an operator (or its answer may still come).
        let unresolved = {
            let mut conn = state.pool.read_conn().await?;
            match crate::ledger::payments::get(&mut conn, id).await? {
                Some(p) => match unresolved::standing(&state, &mut conn, &p).await? {
                    unresolved::Standing::Resolved => None,
                    s => Some((
                        unresolved::end_to_end_id(p.id),
                        s == unresolved::Standing::Waiting,
                    )),
                },
                None => None,
            }
        };
        let verified = match keys::installed() {
            Some(k) => Some(verify::verify_payment(&state.pool, &k, id).await?),
            None => None,
        };
        Ok::<_, sqlx::Error>((row, events, deliveries, verified, unresolved))
    }
    .await;
    match found {
        Err(e) => internal(e),
        Ok((row, ..)) if row.is_empty() => page(
            StatusCode::NOT_FOUND,
            view::message("Not found", "No such payment."),
        ),
        Ok((row, events, deliveries, verified, unresolved)) => page(
            StatusCode::OK,
            view::payment(
                &session,
                &row[0],
                &events,
                &deliveries,
                verified.as_ref(),
                unresolved
                    .as_ref()
                    .map(|(e2e, waiting)| (e2e.as_str(), *waiting)),
            ),
        ),
    }
}

async fn attention(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let found = async {
        Ok::<_, sqlx::Error>((
            operators::attention_payments(&state.pool, SEARCH_LIMIT).await?,
            operators::dead_deliveries(&state.pool, SEARCH_LIMIT).await?,
            operators::disabled_endpoints(&state.pool, SEARCH_LIMIT).await?,
        ))
    }
    .await;
    match found {
        Ok((payments, dead, disabled)) => page(
            StatusCode::OK,
            view::attention(&session, &certificate(&state), &payments, &dead, &disabled),
        ),
        Err(e) => internal(e),
    }
}

/// The eIDAS certificate's expiry, in words, and whether it needs renewing (under 30 days).
fn certificate(state: &AppState) -> (String, bool) {
    use crate::bank::nordea::certificate::EidasCertificate;
    let Some(nordea) = state.settings.nordea.as_ref() else {
        return ("No Nordea bank is configured.".into(), false);
    };
    let Some(text) = nordea.certificate.as_deref() else {
        return (
            "No eIDAS certificate is configured (sandbox).".into(),
            false,
        );
    };
    match EidasCertificate::from_text(text) {
        Err(e) => (format!("The eIDAS certificate cannot be read: {e}"), true),
        Ok(c) => {
            let not_after: chrono::DateTime<Utc> = c.not_after().into();
            let days = (not_after - Utc::now()).num_days();
            (
                format!(
                    "The eIDAS certificate expires on {} (in {days} days).",
                    not_after.format("%Y-%m-%d %H:%M UTC")
                ),
                days < 30,
            )
        }
    }
}

async fn merchants_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let found = async {
        Ok::<_, sqlx::Error>((
            merchants::list(&state.pool).await?,
            operators::usage(&state.pool).await?,
            operators::webhook_health(&state.pool).await?,
        ))
    }
    .await;
    match found {
        Ok((list, usage, health)) => page(
            StatusCode::OK,
            view::merchants(&session, &list, &usage, &health),
        ),
        Err(e) => internal(e),
    }
}

/// One merchant's payee policy and payees, with the forms that change them.
async fn payees_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let found = async {
        let Some(merchant) = merchants::get(&state.pool, id).await? else {
            return Ok(None);
        };
        let policy = payees::policy_state(&state.pool, id)
            .await?
            .unwrap_or(payees::PolicyState {
                stored: payees::Policy::Open,
                problem: None,
            });
        Ok::<_, sqlx::Error>(Some((
            merchant,
            policy,
            payees::list(&state.pool, id).await?,
        )))
    }
    .await;
    match found {
        Ok(Some((merchant, policy, list))) => page(
            StatusCode::OK,
            view::payees(&session, &merchant, policy, &list),
        ),
        Ok(None) => page(
            StatusCode::NOT_FOUND,
            view::message("Not found", "No such merchant."),
        ),
        Err(e) => internal(e),
    }
}

async fn audit_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match operators::recent_audit(&state.pool, 200).await {
        Ok(list) => page(StatusCode::OK, view::audit(&session, &list)),
        Err(e) => internal(e),
    }
}

/// What an action form asks for; `target` names it in the audit log.
enum Action {
    ReplayDelivery {
        endpoint: Uuid,
        event: Uuid,
    },
    EnableEndpoint {
        endpoint: Uuid,
    },
    DisableMerchant {
        merchant: Uuid,
    },
    EnableMerchant {
        merchant: Uuid,
    },
    /// A new API key, shown once; the current keys work for a day more.
    RotateKey {
        merchant: Uuid,
    },
    /// Every key of the merchant refused at once (a leaked key); no new one.
    RevokeAllKeys {
        merchant: Uuid,
    },
    SetPayees {
        merchant: Uuid,
        policy: payees::Policy,
    },
    /// The account as the operator typed it; parsed when run.
    AddPayee {
        merchant: Uuid,
        account_type: String,
        account: String,
        label: Option<String>,
    },
    RemovePayee {
        merchant: Uuid,
        account_type: String,
        account: String,
    },
    /// The bank's payment id an operator got from the bank, for a payment whose initiation
    /// answer was lost ([`unresolved`]); `found` once the bank's payment was read and matched.
    AttachBankPayment {
        payment: Uuid,
        bank_payment_id: String,
        evidence: String,
        found: Option<unresolved::Found>,
    },
    /// Such a payment ended as `failed` on the bank's word that it made none.
    EndUnresolved {
        payment: Uuid,
        evidence: String,
    },
}

/// An account as an operator typed it, normalised as the API would; `Err` with a sentence.
fn payee_account(account_type: &str, account: &str) -> Result<crate::domain::Account, String> {
    no_control_characters(account_type, account)?;
    let t = crate::domain::AccountType::parse(account_type.trim())
        .ok_or_else(|| format!("{account_type:?} is not an account type."))?;
    crate::domain::Account::parse(t, account).map_err(|e| format!("The account is not valid: {e}."))
}

/// A payee form's account type and account hold no control character (PostgreSQL cannot
/// store a NUL; no account needs any); `Err` with a sentence.
fn no_control_characters(account_type: &str, account: &str) -> Result<(), String> {
    if (account_type.chars().chain(account.chars())).any(char::is_control) {
        return Err("The account and its type must not contain control characters.".into());
    }
    Ok(())
}

impl Action {
    fn parse(form: &HashMap<String, String>) -> Option<Action> {
        let id = |k: &str| form.get(k).and_then(|v| v.parse::<Uuid>().ok());
        Some(match form.get("action")?.as_str() {
            "replay_delivery" => Action::ReplayDelivery {
                endpoint: id("endpoint")?,
                event: id("event")?,
            },
            "enable_endpoint" => Action::EnableEndpoint {
                endpoint: id("endpoint")?,
            },
            "disable_merchant" => Action::DisableMerchant {
                merchant: id("merchant")?,
            },
            "enable_merchant" => Action::EnableMerchant {
                merchant: id("merchant")?,
            },
            "rotate_key" => Action::RotateKey {
                merchant: id("merchant")?,
            },
            "revoke_all_keys" => Action::RevokeAllKeys {
                merchant: id("merchant")?,
            },
            "set_payees" => Action::SetPayees {
                merchant: id("merchant")?,
                policy: payees::Policy::parse(form.get("policy")?)?,
            },
            "add_payee" => Action::AddPayee {
                merchant: id("merchant")?,
                account_type: form.get("account_type")?.clone(),
                account: form.get("account")?.clone(),
                label: form
                    .get("label")
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty()),
            },
            "remove_payee" => Action::RemovePayee {
                merchant: id("merchant")?,
                account_type: form.get("account_type")?.clone(),
                account: form.get("account")?.clone(),
            },
            "attach_bank_payment" => Action::AttachBankPayment {
                payment: id("payment")?,
                bank_payment_id: form.get("bank_payment_id")?.trim().to_owned(),
                evidence: form.get("evidence")?.clone(),
                found: None,
            },
            "end_unresolved" => Action::EndUnresolved {
                payment: id("payment")?,
                evidence: form.get("evidence")?.clone(),
            },
            _ => return None,
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Action::ReplayDelivery { .. } => "replay_delivery",
            Action::EnableEndpoint { .. } => "enable_endpoint",
            Action::DisableMerchant { .. } => "disable_merchant",
            Action::EnableMerchant { .. } => "enable_merchant",
            Action::RotateKey { .. } => "rotate_key",
            Action::RevokeAllKeys { .. } => "revoke_all_keys",
            Action::SetPayees { .. } => "set_payees",
            Action::AddPayee { .. } => "add_payee",
            Action::RemovePayee { .. } => "remove_payee",
            Action::AttachBankPayment { .. } => "attach_bank_payment",
            Action::EndUnresolved { .. } => "end_unresolved",
        }
    }

    /// Whether it takes something away (a merchant's service, keys, a payee): such actions
    /// get the danger style, on their button and on their confirmation.
    fn is_destructive(&self) -> bool {
        view::is_destructive(self.name())
    }

    /// The merchant it acts on (for an endpoint or a delivery, the endpoint's merchant), so
    /// that the confirmation names them; `None` when there is no such merchant.
    async fn merchant(&self, state: &AppState) -> Result<Option<merchants::Merchant>, sqlx::Error> {
        let id = match *self {
            Action::ReplayDelivery { endpoint, .. } | Action::EnableEndpoint { endpoint } => {
                operators::endpoint_merchant(&state.pool, endpoint).await?
            }
            Action::DisableMerchant { merchant }
            | Action::EnableMerchant { merchant }
            | Action::RotateKey { merchant }
            | Action::RevokeAllKeys { merchant }
            | Action::SetPayees { merchant, .. }
            | Action::AddPayee { merchant, .. }
            | Action::RemovePayee { merchant, .. } => Some(merchant),
            Action::AttachBankPayment { payment, .. } | Action::EndUnresolved { payment, .. } => {
                let mut conn = state.pool.read_conn().await?;
                crate::ledger::payments::get(&mut conn, payment)
                    .await?
                    .map(|p| p.merchant_id)
            }
        };
        match id {
            Some(id) => merchants::get(&state.pool, id).await,
            None => Ok(None),
        }
    }

    fn target(&self) -> String {
        match self {
            Action::ReplayDelivery { endpoint, event } => format!("delivery {event} to {endpoint}"),
            Action::EnableEndpoint { endpoint } => format!("endpoint {endpoint}"),
            Action::DisableMerchant { merchant }
            | Action::EnableMerchant { merchant }
            | Action::RotateKey { merchant }
            | Action::RevokeAllKeys { merchant } => {
                format!("merchant {merchant}")
            }
            Action::SetPayees { merchant, policy } => {
                format!("merchant {merchant}: payees {}", policy.as_str())
            }
            // Masked: the audit log and the confirmation never show a full account number.
            Action::AddPayee {
                merchant,
                account_type,
                account,
                ..
            }
            | Action::RemovePayee {
                merchant,
                account_type,
                account,
            } => match payee_account(account_type, account) {
                Ok(a) => format!("payee {} of merchant {merchant}", a.masked()),
                Err(_) => format!(
                    "payee {} (not a valid account) of merchant {merchant}",
                    payees::masked_stored(account_type, account)
                ),
            },
            Action::AttachBankPayment {
                payment,
                bank_payment_id,
                ..
            } => format!("payment {payment}: bank payment {bank_payment_id}"),
            Action::EndUnresolved { payment, .. } => {
                format!("payment {payment}: not made at the bank")
            }
        }
    }

    /// Does it in the caller's transaction (its audit row joins it); `Ok(Some(secret))` when
    /// the operator must see something once (a new key), `Err` with a sentence for the
    /// operator when it cannot be done.
    async fn run(
        &self,
        tx: &mut PgConnection,
        state: &AppState,
        operator: &str,
    ) -> anyhow::Result<Result<Option<String>, String>> {
        if let Action::RotateKey { merchant } = *self {
            let grace = std::time::Duration::from_secs(KEY_GRACE_HOURS * 3600);
            return Ok(merchants::rotate_key_in(tx, merchant, grace)
                .await?
                .map(|k| Some(k.api_key.expose_secret().to_owned()))
                .ok_or_else(|| "No such merchant.".into()));
        }
        Ok(match *self {
            Action::ReplayDelivery { endpoint, event } => {
                match webhooks::replay_delivery_in(tx, endpoint, event).await? {
                    webhooks::Replay::Queued(_) => Ok(None),
                    webhooks::Replay::AlreadyPending => Err("It is already pending.".into()),
                    webhooks::Replay::EndpointNotEnabled => {
                        Err("Its endpoint is not enabled: enable it first.".into())
                    }
                    webhooks::Replay::NotFound => Err("No such delivery.".into()),
                }
            }
            Action::EnableEndpoint { endpoint } => {
                let Some(merchant) = operators::endpoint_merchant(&mut *tx, endpoint).await? else {
                    return Ok(Err("No such endpoint.".into()));
                };
                match webhooks::enable_endpoint_in(
                    tx,
                    merchant,
                    endpoint,
                    crate::api::webhooks::MAX_ENABLED_ENDPOINTS,
                )
                .await?
                {
                    Some(webhooks::CapOutcome::Done(_)) => Ok(None),
                    Some(webhooks::CapOutcome::TooMany { limit }) => Err(format!(
                        "The merchant already has {limit} enabled endpoints."
                    )),
                    None => Err("The endpoint is deleted.".into()),
                }
            }
            Action::DisableMerchant { merchant } => merchants::disable(&mut *tx, merchant)
                .await?
                .map(|_| None)
                .ok_or_else(|| "No such merchant.".into()),
            Action::EnableMerchant { merchant } => merchants::enable(&mut *tx, merchant)
                .await?
                .map(|_| None)
                .ok_or_else(|| "No such merchant.".into()),
            Action::RotateKey { .. } => Ok(None),
            Action::RevokeAllKeys { merchant } => {
                // Every replica forgets them when the notification arrives at commit (this
                // one too: `run_audited` clears its cache right after the commit).
                match merchants::revoke_all_keys(tx, merchant).await? {
                    Some(_) => Ok(None),
                    None => Err("No such merchant.".into()),
                }
            }
            Action::SetPayees { merchant, policy } => {
                if payees::set_policy(tx, merchant, policy).await? {
                    Ok(None)
                } else {
                    Err("No such merchant.".into())
                }
            }
            Action::AddPayee {
                merchant,
                ref account_type,
                ref account,
                ref label,
            } => {
                let account = match payee_account(account_type, account) {
                    Ok(a) => a,
                    Err(why) => return Ok(Err(why)),
                };
                if label.as_ref().is_some_and(|l| l.chars().count() > 200) {
                    return Ok(Err("The label is longer than 200 characters.".into()));
                }
                // PostgreSQL refuses NUL in text; no label needs any control character.
                if label
                    .as_ref()
                    .is_some_and(|l| l.chars().any(char::is_control))
                {
                    return Ok(Err("The label must not contain control characters.".into()));
                }
                match payees::add(tx, merchant, &account, label.as_deref()).await? {
                    payees::Added::Added | payees::Added::Vouched => Ok(None),
                    payees::Added::AlreadyRegistered => {
                        Err("That account is registered already.".into())
                    }
                    payees::Added::UnknownMerchant => Err("No such merchant.".into()),
                }
            }
            Action::RemovePayee {
                merchant,
                ref account_type,
                ref account,
            } => {
                if let Err(why) = no_control_characters(account_type, account) {
                    return Ok(Err(why));
                }
                // The payees page sends the row as stored (also one written outside
                // pisgate, which may not parse); a number typed in another form is matched
                // by its normalised one.
                if payees::remove_stored(tx, merchant, account_type, account).await? {
                    return Ok(Ok(None));
                }
                let account = match payee_account(account_type, account) {
                    Ok(a) => a,
                    Err(why) => return Ok(Err(why)),
                };
                if payees::remove(tx, merchant, &account).await? {
                    Ok(None)
                } else {
                    Err("That account is not a payee of this merchant.".into())
                }
            }
            Action::AttachBankPayment {
                ref evidence,
                ref found,
                ..
            } => {
                let evidence = match unresolved::evidence(evidence) {
                    Ok(e) => e,
                    Err(why) => return Ok(Err(why)),
                };
                let Some(found) = found else {
                    return Ok(Err("The bank's payment was not read.".into()));
                };
                unresolved::attach_in(tx, state, found, operator, &evidence)
                    .await?
                    .map(|()| None)
            }
            Action::EndUnresolved {
                payment,
                ref evidence,
            } => {
                let evidence = match unresolved::evidence(evidence) {
                    Ok(e) => e,
                    Err(why) => return Ok(Err(why)),
                };
                unresolved::end_in(tx, state, payment, operator, &evidence)
                    .await?
                    .map(|()| None)
            }
        })
    }
}

/// Runs `act` and writes its audit row in one transaction: both commit, or neither (a failed
/// audit insert undoes the action).
async fn run_audited(
    state: &AppState,
    session: &Session,
    act: &Action,
) -> anyhow::Result<Result<Option<String>, String>> {
    let mut tx = state.pool.begin().await?;
    // In a savepoint: a refused action leaves nothing of what it wrote before it was
    // refused; its audit row says why.
    let done = {
        let mut action = sqlx::Connection::begin(&mut *tx).await?;
        let done = act.run(&mut action, state, &session.email).await?;
        if done.is_ok() {
            action.commit().await?;
        } else {
            action.rollback().await?;
        }
        done
    };
    let outcome = match &done {
        Ok(_) => serde_json::json!({ "outcome": "done" }),
        Err(why) => serde_json::json!({ "outcome": "refused", "why": why }),
    };
    operators::audit_in(
        &mut tx,
        Some(session.operator_id),
        &session.email,
        act.name(),
        Some(&act.target()),
        outcome,
    )
    .await?;
    tx.commit().await?;
    if matches!(
        act,
        Action::RevokeAllKeys { .. } | Action::DisableMerchant { .. }
    ) {
        // This replica at once; the others when the commit's notification arrives.
        state.auth_cache.clear();
    }
    if let (Ok(_), Action::AttachBankPayment { found: Some(f), .. }) = (&done, act) {
        // A merchant's cancel that came while the answer was lost goes to the bank now.
        crate::api::initiation::follow_a_cancel(state, f.payment_id, &f.bank).await;
    }
    Ok(done)
}

/// `POST /console/actions`: without `confirm=yes`, the confirmation page (the same form
/// with a "Confirm" button); with it, the action, its audit entry, and back to `back`.
#[tracing::instrument(skip_all, fields(action = tracing::field::Empty))]
async fn action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = match posted_by(&state, &headers, &form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(mut act) = Action::parse(&form) else {
        return page(
            StatusCode::BAD_REQUEST,
            view::message(
                "Unknown action",
                "The form names no action the console knows.",
            ),
        );
    };
    tracing::Span::current().record("action", act.name());
    let back = safe_back(&form);
    // What the operator attests to and, for an attachment, the bank's payment as read now
    // (shown on the confirmation, read again when confirmed): refused before anything else.
    let mut facts = None;
    match &mut act {
        Action::AttachBankPayment {
            payment,
            bank_payment_id,
            evidence,
            found,
        } => {
            if let Err(why) = unresolved::evidence(evidence) {
                return page(StatusCode::CONFLICT, view::message("Not done", &why));
            }
            match unresolved::look_up(&state, *payment, bank_payment_id).await {
                Ok(Ok(f)) => {
                    facts = Some(f.summary.clone());
                    *found = Some(f);
                }
                Ok(Err(why)) => {
                    return page(StatusCode::CONFLICT, view::message("Not done", &why));
                }
                Err(e) => return internal(format!("{e:#}")),
            }
        }
        Action::EndUnresolved { payment, evidence } => {
            if let Err(why) = unresolved::evidence(evidence) {
                return page(StatusCode::CONFLICT, view::message("Not done", &why));
            }
            match unresolved::check(&state, *payment).await {
                Ok(Ok(_)) => {}
                Ok(Err(why)) => {
                    return page(StatusCode::CONFLICT, view::message("Not done", &why));
                }
                Err(e) => return internal(format!("{e:#}")),
            }
            facts = Some(
                "The payment ends failed (not_made_at_bank) and the merchant is told. Do it only when the bank has said it made no payment from this initiation: if it did, its money moves while pisgate says failed.".to_owned(),
            );
        }
        _ => {}
    }
    if form.get("confirm").map(String::as_str) != Some("yes") {
        let merchant = match act.merchant(&state).await {
            Ok(m) => m,
            Err(e) => return internal(e),
        };
        return page(
            StatusCode::OK,
            view::confirm(
                &session,
                act.name(),
                &act.target(),
                merchant.as_ref(),
                act.is_destructive(),
                facts.as_deref(),
                &form,
            ),
        );
    }
    let done = match run_audited(&state, &session, &act).await {
        Ok(done) => done,
        Err(e) => return internal(format!("{e:#}")),
    };
    match done {
        Ok(None) => {
            tracing::info!(operator_id = %session.operator_id, "operator action done");
            see_other(back)
        }
        Ok(Some(secret)) => {
            tracing::info!(operator_id = %session.operator_id, "operator action done");
            page(
                StatusCode::OK,
                view::shown_once(&session, &act.target(), &secret, back),
            )
        }
        Err(why) => page(StatusCode::CONFLICT, view::message("Not done", &why)),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_search;
    use std::collections::HashMap;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn any_or_nothing_filters_nothing_and_a_known_status_filters_by_it() {
        for any in ["", "any", "  "] {
            let (s, errors) = parse_search(&query(&[("status", any), ("bank_status", any)]));
            assert!(errors.is_empty(), "{any:?}: {errors:?}");
            assert_eq!((s.status, s.bank_status), (None, None));
        }
        let (s, errors) = parse_search(&query(&[("status", "paid"), ("bank_status", "Paid")]));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.status.as_deref(), Some("paid"));
        assert_eq!(s.bank_status.as_deref(), Some("Paid"));
    }

    #[test]
    fn a_value_outside_the_status_sets_is_refused_naming_the_field_and_the_value() {
        let (_, errors) = parse_search(&query(&[("status", "Paid"), ("bank_status", "paid")]));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with(r#"status: "Paid" is not a payment status"#));
        assert!(
            errors[0].contains("awaiting_authorization"),
            "lists the set"
        );
        assert!(
            errors[1].starts_with(r#"bank_status: "paid" is not a Nordea or Berlin Group status"#)
        );
        assert!(errors[1].contains("PendingUserApproval"), "lists the set");
    }

    #[test]
    fn a_date_is_exactly_yyyy_mm_dd_and_text_has_no_control_character() {
        let (s, errors) = parse_search(&query(&[("from", "2026-01-31"), ("to", "9999-12-31")]));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.from.unwrap().to_rfc3339(), "2026-01-31T00:00:00+00:00");
        assert_eq!(s.to.unwrap().to_rfc3339(), "+10000-01-01T00:00:00+00:00");
        for (k, v) in [
            ("to", "+262142-12-31"),
            ("to", "+262143-12-31"),
            ("from", "-5000-01-01"),
            ("from", "10000-01-01"),
            ("from", "2026-02-30"),
        ] {
            let (_, errors) = parse_search(&query(&[(k, v)]));
            assert_eq!(errors, [format!("{k}: a date as YYYY-MM-DD")], "{v}");
        }
        let (_, errors) = parse_search(&query(&[("reference", "a\0b"), ("psu_id", "\u{1b}")]));
        assert_eq!(
            errors,
            [
                "reference: must not contain control characters",
                "psu_id: must not contain control characters"
            ]
        );
    }
}
