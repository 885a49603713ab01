//! The mutual-TLS API: `POST /oauth/token`, `POST /oauth/revoke` and
//! `/paymentsapi/v2/sepa-payments` (create, read, revoke, submissions). Every request must
//! come with the registered client's certificate (`FORBIDDEN_CLIENT` otherwise), every
//! `/paymentsapi` call with a live bearer and the client's `x-api-key`, every POST there
//! with an `x-idempotency-key`. Every 2xx `/paymentsapi` answer is signed in
//! `x-jws-signature`. It must never submit a payment that is not authorized, with a token of
//! another authorization, or twice for one key.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use super::state::{CreateRecord, Grant, Payment, Refresh, Scenario, Status, SubmitRefusal, Token};
use super::{OpSim, Refused, app, validate};
use crate::sandbox::seb::tls::{CloseWithoutAnswer, PeerCertificates};

pub(super) fn routes(sim: Arc<OpSim>) -> Router {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke_token))
        .route("/paymentsapi/v2/sepa-payments", post(create))
        .route(
            "/paymentsapi/v2/sepa-payments/{id}",
            get(read).delete(revoke),
        )
        .route(
            "/paymentsapi/v2/sepa-payments/{id}/submissions",
            post(submit),
        )
        .fallback(|uri: axum::http::Uri| async move {
            error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "unknown-path",
                format!("no such API path: {}", uri.path()),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            registered_client,
        ))
        .with_state(sim)
}

/// A business error `{"code","message"}`, recorded as a refusal by `check`.
pub(crate) fn error(
    status: StatusCode,
    code: &'static str,
    check: &'static str,
    message: impl Into<String>,
) -> Response {
    let message = message.into();
    let mut resp = (status, Json(json!({"code": code, "message": message}))).into_response();
    resp.extensions_mut().insert(Refused {
        check,
        code: Some(code.to_owned()),
        detail: message,
    });
    resp
}

/// An OAuth error (RFC 6749 §5.2) `{"error","error_description"}`.
fn oauth_error(
    status: StatusCode,
    error: &'static str,
    check: &'static str,
    description: impl Into<String>,
) -> Response {
    let description = description.into();
    let mut resp = (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    resp.extensions_mut().insert(Refused {
        check,
        code: Some(error.to_owned()),
        detail: description,
    });
    resp
}

/// Refuses a client whose mutual-TLS certificate is not the registered client's.
async fn registered_client(State(sim): State<Arc<OpSim>>, req: Request, next: Next) -> Response {
    let leaf = req
        .extensions()
        .get::<PeerCertificates>()
        .and_then(|p| p.0.first().map(|c| c.as_ref().to_vec()));
    if leaf.as_deref() != Some(sim.client_certificate_der.as_slice()) {
        let message = "the client certificate is not the registered client's certificate";
        let mut resp = (
            StatusCode::FORBIDDEN,
            Json(json!({
                "code": "FORBIDDEN_CLIENT",
                "message": message,
                "error": "invalid_client",
                "error_description": format!("FORBIDDEN_CLIENT: {message}"),
            })),
        )
            .into_response();
        resp.extensions_mut().insert(Refused {
            check: "mtls-registered-client",
            code: Some("FORBIDDEN_CLIENT".into()),
            detail: message.into(),
        });
        return resp;
    }
    let interaction = req.headers().get("x-fapi-interaction-id").cloned();
    let mut resp = next.run(req).await;
    if let Some(id) = interaction {
        resp.headers_mut().insert("x-fapi-interaction-id", id);
    }
    resp
}

/// A signed 2xx answer: the JSON body and its detached JWS in `x-jws-signature`.
fn signed(sim: &OpSim, status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).expect("JSON");
    let signature = sim.answer_key.detached(&bytes);
    let mut resp = (status, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "x-jws-signature",
        HeaderValue::from_str(&signature).expect("base64url"),
    );
    resp
}

fn form(body: &[u8]) -> Result<HashMap<String, String>, Box<Response>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
        Box::new(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token-form",
            "the body must be application/x-www-form-urlencoded",
        ))
    })?;
    let mut map = HashMap::new();
    for (k, v) in pairs {
        if map.insert(k.clone(), v).is_some() {
            return Err(Box::new(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "token-form",
                format!("parameter {k} is repeated"),
            )));
        }
    }
    Ok(map)
}

/// The client's credentials (form `client_id`/`client_secret`, or HTTP Basic).
fn authenticate(
    sim: &OpSim,
    headers: &HeaderMap,
    f: &HashMap<String, String>,
) -> Result<(), Box<Response>> {
    let (id, secret) = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        Some(b) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .unwrap_or_default();
            let (i, s) = decoded.split_once(':').unwrap_or(("", ""));
            (Some(i.to_owned()), Some(s.to_owned()))
        }
        None => (f.get("client_id").cloned(), f.get("client_secret").cloned()),
    };
    let Some(id) = id.filter(|i| !i.is_empty()) else {
        return Err(Box::new(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client-id",
            "client_id is missing",
        )));
    };
    if id != sim.config.client_id {
        return Err(Box::new(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client-id",
            "client_id is not a registered client",
        )));
    }
    if secret.as_deref() != Some(sim.config.client_secret.expose_secret()) {
        return Err(Box::new(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client-secret",
            "client_secret is missing or wrong",
        )));
    }
    Ok(())
}

fn random_token(prefix: &str) -> String {
    use rand::Rng as _;
    let bytes: [u8; 24] = rand::thread_rng().r#gen();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

async fn token(State(sim): State<Arc<OpSim>>, headers: HeaderMap, body: Bytes) -> Response {
    let f = match form(&body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    if let Err(r) = authenticate(&sim, &headers, &f) {
        return *r;
    }
    let now = sim.now();
    match f.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            let scope = f.get("scope").map(String::as_str).unwrap_or("");
            let scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
            if !scopes.contains(&"payments") || scopes.iter().any(|s| *s != "payments") {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "token-scope",
                    "scope must be payments",
                );
            }
            let access = random_token("op-cc-");
            let lifetime = sim.config.client_token_lifetime;
            sim.bank().tokens.insert(
                access.clone(),
                Token {
                    grant: Grant::ClientCredentials,
                    expires: now + chrono::Duration::from_std(lifetime).unwrap_or_default(),
                    revoked: false,
                },
            );
            Json(json!({
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": lifetime.as_secs(),
                "scope": "payments",
            }))
            .into_response()
        }
        Some("authorization_code") => {
            let (Some(code), Some(redirect_uri)) = (f.get("code"), f.get("redirect_uri")) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "token-form",
                    "code and redirect_uri are required",
                );
            };
            let mut bank = sim.bank();
            let Some(c) = bank.codes.get_mut(code) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "code-unknown",
                    "the code is unknown",
                );
            };
            if c.used {
                let revoked = bank.revoke_code_tokens(code);
                drop(bank);
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "code-reused",
                    format!(
                        "the code was already used; the {revoked} token(s) issued for it are revoked"
                    ),
                );
            }
            c.used = true;
            let lifetime = chrono::Duration::from_std(sim.config.code_lifetime).unwrap_or_default();
            if now - c.issued > lifetime {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "code-expired",
                    "the code has expired",
                );
            }
            if &c.redirect_uri != redirect_uri {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "code-redirect-uri",
                    "redirect_uri is not the one of the authorization request",
                );
            }
            let (authorization_id, nonce) = (c.authorization_id.clone(), c.nonce.clone());
            issue_authorization_tokens(&sim, &mut bank, &authorization_id, code, &nonce, now)
        }
        Some("refresh_token") => {
            let Some(rt) = f.get("refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "token-form",
                    "refresh_token is required",
                );
            };
            let mut bank = sim.bank();
            let Some(r) = bank.refresh.get_mut(rt).filter(|r| r.live) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "refresh-token",
                    "the refresh token is unknown, used or revoked",
                );
            };
            r.live = false;
            let (authorization_id, code, nonce) =
                (r.authorization_id.clone(), r.code.clone(), r.nonce.clone());
            issue_authorization_tokens(&sim, &mut bank, &authorization_id, &code, &nonce, now)
        }
        Some(other) => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant-type",
            format!("grant_type {other:?} is not supported"),
        ),
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant-type",
            "grant_type is required",
        ),
    }
}

/// An access token, a refresh token and an ID token for an authorization.
fn issue_authorization_tokens(
    sim: &OpSim,
    bank: &mut super::state::Bank,
    authorization_id: &str,
    code: &str,
    nonce: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Response {
    let access = random_token("op-at-");
    let refresh = random_token("op-rt-");
    let lifetime = sim.config.authorization_token_lifetime;
    bank.tokens.insert(
        access.clone(),
        Token {
            grant: Grant::Authorization {
                authorization_id: authorization_id.to_owned(),
                code: code.to_owned(),
            },
            expires: now + chrono::Duration::from_std(lifetime).unwrap_or_default(),
            revoked: false,
        },
    );
    bank.refresh.insert(
        refresh.clone(),
        Refresh {
            authorization_id: authorization_id.to_owned(),
            code: code.to_owned(),
            nonce: nonce.to_owned(),
            live: true,
        },
    );
    let mut claims = app::id_token_claims(sim, authorization_id, nonce, now);
    claims["at_hash"] = json!(super::keys::half_hash(&access));
    Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "refresh_token": refresh,
        "id_token": sim.id_key.jwt(&claims),
        "scope": "openid payments",
    }))
    .into_response()
}

/// RFC 7009 revocation of an access or refresh token (always 200).
async fn revoke_token(State(sim): State<Arc<OpSim>>, headers: HeaderMap, body: Bytes) -> Response {
    let f = match form(&body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    if let Err(r) = authenticate(&sim, &headers, &f) {
        return *r;
    }
    let Some(t) = f.get("token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token-form",
            "token is required",
        );
    };
    let mut bank = sim.bank();
    if let Some(r) = bank.refresh.get_mut(t) {
        r.live = false;
    }
    if let Some(a) = bank.tokens.get_mut(t) {
        a.revoked = true;
    }
    StatusCode::OK.into_response()
}

/// The bearer's grant, after the `x-api-key` and token checks.
fn business_auth(sim: &OpSim, headers: &HeaderMap) -> Result<Grant, Box<Response>> {
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if api_key != Some(sim.config.api_key.expose_secret()) {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "api-key",
            "x-api-key is missing or wrong",
        )));
    }
    let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "bearer-token",
            "Authorization: Bearer is missing",
        )));
    };
    let now = sim.now();
    let bank = sim.bank();
    match bank.tokens.get(bearer.trim()) {
        None => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "bearer-token",
            "the access token is unknown",
        ))),
        Some(t) if t.revoked => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "bearer-token",
            "the access token is revoked",
        ))),
        Some(t) if t.expires <= now => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "bearer-token",
            "the access token has expired",
        ))),
        Some(t) => Ok(t.grant.clone()),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, Box<Response>> {
    match headers
        .get("x-idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        Some(k) if !k.is_empty() && k.len() <= 128 => Ok(k.to_owned()),
        Some(_) => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "MISSING_IDEMPOTENCY_KEY",
            "idempotency-key",
            "x-idempotency-key must be 1 to 128 characters",
        ))),
        None => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "MISSING_IDEMPOTENCY_KEY",
            "idempotency-key",
            "x-idempotency-key is required on POST",
        ))),
    }
}

async fn create(State(sim): State<Arc<OpSim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = business_auth(&sim, &headers) {
        return *r;
    }
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let Ok(body): Result<Value, _> = serde_json::from_slice(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "body-schema",
            "body: not a JSON document",
        );
    };
    let mut bank = sim.bank();
    if let Some(rec) = bank.creates.get(&key) {
        if rec.body == body {
            let answer = rec.answer.clone();
            return signed(&sim, StatusCode::CREATED, &answer);
        }
        return error(
            StatusCode::CONFLICT,
            "IDEMPOTENCY_KEY_REUSED",
            "idempotency-key",
            "x-idempotency-key was used for another body",
        );
    }
    let valid = match validate::create_body(&body) {
        Ok(v) => v,
        Err(e) => {
            let check = if e.code == "INVALID_REQUEST" {
                "body-schema"
            } else {
                "body-value"
            };
            return error(StatusCode::BAD_REQUEST, e.code, check, e.message());
        }
    };
    let scenario = Scenario::of(valid.amount_cents);
    let (amount_cents, amount, made) = if scenario == Scenario::OtherAmount {
        // 77.06: OP makes it with 1.00 EUR more than it was sent, and echoes that.
        let cents = valid.amount_cents + 100;
        let text = format!("{}.{:02}", cents / 100, cents % 100);
        let mut made = body.clone();
        made["amount"] = json!(text);
        (cents, text, made)
    } else {
        (valid.amount_cents, valid.amount, body.clone())
    };
    let payment = Payment {
        id: uuid::Uuid::new_v4().to_string(),
        authorization_id: uuid::Uuid::new_v4().to_string(),
        status: Status::Unauthorized,
        scenario,
        amount_cents,
        amount,
        creditor_name: valid.creditor_name,
        creditor_iban: valid.creditor_iban,
        body: made,
        created: sim.now(),
        accepted_at: None,
        submission_keys: Vec::new(),
        submission_answers: HashMap::new(),
        answer_lost: false,
    };
    let answer = payment.view();
    bank.by_authorization
        .insert(payment.authorization_id.clone(), payment.id.clone());
    bank.payments.insert(payment.id.clone(), payment);
    bank.creates.insert(
        key,
        CreateRecord {
            body,
            answer: answer.clone(),
        },
    );
    drop(bank);
    signed(&sim, StatusCode::CREATED, &answer)
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "PAYMENT_NOT_FOUND",
        "payment-unknown",
        format!("no payment {id}"),
    )
}

async fn read(
    State(sim): State<Arc<OpSim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = business_auth(&sim, &headers) {
        return *r;
    }
    let now = sim.now();
    let view = sim.bank().payment_mut(&id, now).map(|p| p.view());
    match view {
        Some(v) => signed(&sim, StatusCode::OK, &v),
        None => not_found(&id),
    }
}

async fn revoke(
    State(sim): State<Arc<OpSim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = business_auth(&sim, &headers) {
        return *r;
    }
    let now = sim.now();
    let mut bank = sim.bank();
    let Some(p) = bank.payment_mut(&id, now) else {
        return not_found(&id);
    };
    match p.status {
        Status::Unauthorized | Status::Authorizing => {
            p.status = Status::Revoked;
            let answer = json!({"paymentId": p.id, "status": "Revoked"});
            drop(bank);
            signed(&sim, StatusCode::OK, &answer)
        }
        other => error(
            StatusCode::CONFLICT,
            "REVOKE_NOT_ALLOWED",
            "revoke-status",
            format!("a {} payment cannot be revoked", other.as_str()),
        ),
    }
}

async fn submit(
    State(sim): State<Arc<OpSim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let grant = match business_auth(&sim, &headers) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(o)) if o.is_empty() => {}
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "body-schema",
                "body: must be the empty JSON object {}",
            );
        }
    }
    let now = sim.now();
    let authorization_id = match sim.bank().payment_mut(&id, now) {
        // Before authorization no token can be this payment's: say why plainly.
        Some(p) if matches!(p.status, Status::Unauthorized | Status::Authorizing) => {
            return error(
                StatusCode::CONFLICT,
                "PAYMENT_NOT_AUTHORIZED",
                "submission-status",
                format!("the payment is {} (not authorized)", p.status.as_str()),
            );
        }
        Some(p) => p.authorization_id.clone(),
        None => return not_found(&id),
    };
    match grant {
        Grant::Authorization {
            authorization_id: a,
            ..
        } if a == authorization_id => {}
        Grant::Authorization { .. } => {
            return error(
                StatusCode::FORBIDDEN,
                "TOKEN_NOT_FOR_PAYMENT",
                "submission-token",
                "the access token was issued for another authorization",
            );
        }
        Grant::ClientCredentials => {
            return error(
                StatusCode::FORBIDDEN,
                "TOKEN_NOT_FOR_PAYMENT",
                "submission-token",
                "a submission needs the authorization-code token of this payment's authorization",
            );
        }
    }
    // Performed in its own task: a held submission (the crash drill) is performed once
    // released even if the client has gone away and this handler was dropped.
    let task_sim = sim.clone();
    let task_id = id.clone();
    let performed = tokio::spawn(async move {
        task_sim.wait_unheld().await;
        let now = task_sim.now();
        task_sim.bank().submit(&task_id, &key, now)
    })
    .await;
    let outcome = match performed {
        Ok(o) => o,
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "internal",
                "the submission task failed",
            );
        }
    };
    match outcome {
        Ok(done) => {
            let mut resp = signed(
                &sim,
                StatusCode::CREATED,
                &json!({"paymentId": id, "status": done.status.as_str()}),
            );
            if done.lose_answer {
                tracing::info!(payment = %id, "OP sandbox performed a submission and drops its answer (77.04)");
                resp.extensions_mut().insert(CloseWithoutAnswer);
            }
            resp
        }
        Err(SubmitRefusal::NotFound) => not_found(&id),
        Err(SubmitRefusal::NotAuthorized(s)) => error(
            StatusCode::CONFLICT,
            "PAYMENT_NOT_AUTHORIZED",
            "submission-status",
            format!("the payment is {} (not authorized)", s.as_str()),
        ),
        Err(SubmitRefusal::AlreadySubmitted(s)) => error(
            StatusCode::CONFLICT,
            "ALREADY_SUBMITTED",
            "submission-status",
            format!("the payment was already submitted ({})", s.as_str()),
        ),
    }
}
