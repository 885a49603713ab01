//! Nordea's single-SCA API under `/personal`, and the gateway every call passes through:
//! request log → counters and faults → authentication → the call itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use chrono::Utc;
use serde_json::{Value, json};

use super::auth::{self, bearer_token, media_type};
use super::faults::Fault;
use super::payments::{BankState, Payment};
use super::record::RequestEntry;
use super::validation::{Endpoint, validate};
use super::wire::{ApiError, Failure, ok, random_hex, random_uuid};
use super::{Operation, Sandbox, lock};

const MAX_BODY: usize = 1024 * 1024;

/// Marks a response that must not be sent: the accept loop closes the connection instead.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

pub(crate) fn routes(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route(
            "/personal/v2/payments/authorization/sepa-credit-transfer",
            post(initiate_sepa),
        )
        .route(
            "/personal/v2/payments/authorization/domestic-credit-transfer",
            post(initiate_domestic),
        )
        .route("/personal/v2/single-sca-payments", delete(cancel))
        // The seed writes the bulk delete URL both with and without the trailing slash.
        .route("/personal/v2/single-sca-payments/", delete(cancel))
        .route("/personal/v2/single-sca-payments/{id}", get(details_v2))
        .route("/personal/v2/single-sca-payments/{id}/status", get(status))
        .route("/personal/v3/single-sca-payments/{id}", get(details_v3))
        .route("/personal/v5/authorize/token", post(token))
        .route("/personal/v5/authorize/token/revoke", post(revoke))
        .fallback(unknown_path)
        .layer(middleware::from_fn_with_state(sandbox.clone(), gateway))
        .with_state(sandbox)
}

/// Which of Nordea's calls a request is.
pub(crate) fn classify(method: &Method, path: &str) -> Option<Operation> {
    // No call has more than six segments: a longer path is none of them.
    let mut segments = [""; 6];
    let mut len = 0;
    for segment in path.trim_end_matches('/').split('/').skip(1) {
        let slot = segments.get_mut(len)?;
        *slot = segment;
        len += 1;
    }
    match (method, &segments[..len]) {
        (
            &Method::POST,
            [
                "personal",
                "v2",
                "payments",
                "authorization",
                "sepa-credit-transfer",
            ]
            | [
                "personal",
                "v2",
                "payments",
                "authorization",
                "domestic-credit-transfer",
            ],
        ) => Some(Operation::Initiate),
        (&Method::GET, ["personal", "v2", "single-sca-payments", _, "status"]) => {
            Some(Operation::Status)
        }
        (&Method::GET, ["personal", "v2", "single-sca-payments", _]) => Some(Operation::Details),
        (&Method::GET, ["personal", "v3", "single-sca-payments", _]) => Some(Operation::Funds),
        (&Method::DELETE, ["personal", "v2", "single-sca-payments"]) => Some(Operation::Cancel),
        (&Method::POST, ["personal", "v5", "authorize", "token"]) => Some(Operation::Token),
        (&Method::POST, ["personal", "v5", "authorize", "token", "revoke"]) => {
            Some(Operation::Revoke)
        }
        _ => None,
    }
}

/// Logs the request, applies faults, authenticates, then runs the call.
async fn gateway(State(sandbox): State<Arc<Sandbox>>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/personal/") {
        return next.run(req).await;
    }
    let received_at = Utc::now();
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    let operation = classify(&parts.method, parts.uri.path());
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            let resp = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "error.request.too_large",
                "The request body is too large.",
                "",
            )
            .render(path);
            let mut entry = RequestEntry::new(
                received_at,
                &parts.method,
                path,
                operation,
                &parts.headers,
                b"",
            );
            entry.status = Some(resp.status().as_u16());
            lock(&sandbox.log).push(entry);
            return resp;
        }
    };
    // The log keeps its own compact copy (one allocation); the request goes on whole.
    let mut entry = RequestEntry::new(
        received_at,
        &parts.method,
        path,
        operation,
        &parts.headers,
        &bytes,
    );
    let path = path.to_owned();

    let plan = operation
        .map(|op| sandbox.faults.plan(op))
        .unwrap_or_default();
    if plan.latency_ms > 0 {
        entry.fault = Some("latency");
        tokio::time::sleep(Duration::from_millis(plan.latency_ms)).await;
    }
    let injected = |status: StatusCode, code: &str, description: &str| {
        ApiError::new(status, code, description, "").render(&path)
    };
    let response = match &plan.fault {
        Some(Fault::Http500) => injected(
            StatusCode::INTERNAL_SERVER_ERROR,
            "error.internal",
            "Internal server error.",
        ),
        Some(Fault::Http503) => injected(
            StatusCode::SERVICE_UNAVAILABLE,
            "error.service.unavailable",
            "The service is temporarily unavailable.",
        ),
        Some(Fault::Http429 { retry_after_secs }) => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "error.rate_limit.exceeded",
                "Too many requests.",
                "",
            );
            e.retry_after = Some(*retry_after_secs);
            e.render(&path)
        }
        Some(Fault::DropConnection) => {
            let mut resp = Response::new(Body::empty());
            resp.extensions_mut().insert(DropConnection);
            resp
        }
        Some(
            Fault::MalformedJson
            | Fault::Latency { .. }
            | Fault::DelayAnswer { .. }
            | Fault::DropAfterProcessing,
        )
        | None => {
            // These faults let the call run: its effect happens at the bank.
            let verified =
                auth::verify_request(&sandbox, &parts.method, &parts.uri, &parts.headers, &bytes);
            let resp = match verified {
                Err(e) => e.render(&path),
                Ok(()) => {
                    next.run(Request::from_parts(parts, Body::from(bytes)))
                        .await
                }
            };
            match plan.fault {
                Some(Fault::MalformedJson) => truncate_body(resp).await,
                Some(Fault::DropAfterProcessing) => {
                    drop(resp);
                    let mut marked = Response::new(Body::empty());
                    marked.extensions_mut().insert(DropConnection);
                    marked
                }
                _ => resp,
            }
        }
    };
    if response.extensions().get::<DropConnection>().is_none() {
        entry.status = Some(response.status().as_u16());
    }
    if let Some(f) = &plan.fault {
        entry.fault = Some(f.name());
    }
    let mut response = response;
    if let Some(date) = sandbox.date_header() {
        response.headers_mut().insert(header::DATE, date);
    }
    // Logged before a delayed answer is sent: the call has happened, and the client may
    // give up (and hang up) before the wait is over.
    lock(&sandbox.log).push(entry);
    if let Some(Fault::DelayAnswer { ms }) = plan.fault {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    response
}

/// Keeps the status and headers, sends only the first half of the body.
pub(crate) async fn truncate_body(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = to_bytes(body, MAX_BODY).await.unwrap_or_default();
    let cut = if bytes.len() < 2 {
        Bytes::from_static(b"{\"group_header\":")
    } else {
        bytes.slice(..bytes.len() / 2)
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(cut))
}

async fn unknown_path(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "error.resource.not_found",
        format!("No such resource: {method} {}", uri.path()),
        "",
    )
    .render(uri.path())
}

fn require_media_type(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    let actual = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media_type)
        .unwrap_or_default();
    if actual == expected {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "error.content_type.unsupported",
            format!("Content-Type must be {expected}."),
            "Content-Type",
        ))
    }
}

fn parse_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::validation(vec![Failure::new(
            "error.validation.format",
            format!("The body is not valid JSON: {e}."),
            "",
            "Pattern",
        )])
    })
}

async fn initiate_sepa(State(sandbox): State<Arc<Sandbox>>, request: Request) -> Response {
    initiate_request(&sandbox, Endpoint::SepaCreditTransfer, request).await
}

async fn initiate_domestic(State(sandbox): State<Arc<Sandbox>>, request: Request) -> Response {
    initiate_request(&sandbox, Endpoint::DomesticCreditTransfer, request).await
}

/// An initiation read from the request's own parts: axum's `HeaderMap` and `Uri` extractors
/// would copy them (the header map's table and every value) on every initiation.
async fn initiate_request(sandbox: &Sandbox, endpoint: Endpoint, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // The gateway has read the body whole (at most MAX_BODY) and put it back as one buffer:
    // this takes that buffer, it copies nothing.
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "error.request.too_large",
                "The request body is too large.",
                "",
            )
            .render(parts.uri.path());
        }
    };
    initiate(sandbox, endpoint, &parts.headers, &body)
        .unwrap_or_else(|e| e.render(parts.uri.path()))
}

fn initiate(
    sandbox: &Sandbox,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    require_media_type(headers, "application/json")?;
    // Read borrowing from the body: validation needs no tree of its own.
    let value: super::json::Json = parse_json(body)?;
    let cfg = sandbox.config();
    let now = sandbox.now();
    let valid = validate(
        &value,
        endpoint,
        now.date_naive(),
        &cfg.allowed_redirect_uris,
    )
    .map_err(ApiError::validation)?;
    let id = random_uuid().to_string();
    let signing_token = random_hex(24);
    let link = sandbox.signing_link(&signing_token);
    let status_link = format!("/v2/single-sca-payments/{id}/status");
    let details_link = &status_link[..status_link.len() - "/status".len()];
    let response = Initiated {
        links: [
            Link {
                href: &link,
                rel: "redirect",
            },
            Link {
                href: &status_link,
                rel: "status",
            },
            Link {
                href: details_link,
                rel: "details",
            },
        ],
        payment_id: cfg.echo_payment_id_on_initiation.then_some(id.as_str()),
        payment_status: cfg
            .echo_payment_id_on_initiation
            .then_some("PendingUserApproval"),
    };
    let answer = ok(StatusCode::CREATED, &response);
    {
        let mut bank = lock(&sandbox.bank);
        bank.by_signing_token
            .insert(signing_token.clone(), id.clone());
        let payment = Payment::new(id.clone(), endpoint, valid, signing_token, now);
        bank.payments.insert(id, Box::new(payment));
    }
    Ok(answer)
}

/// The initiation answer (fields in alphabetical order, as the sandbox has always written
/// them).
#[derive(serde::Serialize)]
struct Initiated<'a> {
    #[serde(rename = "_links")]
    links: [Link<'a>; 3],
    #[serde(skip_serializing_if = "Option::is_none")]
    payment_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payment_status: Option<&'static str>,
}

#[derive(serde::Serialize)]
struct Link<'a> {
    href: &'a str,
    rel: &'static str,
}

/// A payment the API may show: it exists (the link was opened).
fn existing<'a>(bank: &'a BankState, id: &str) -> Result<&'a Payment, ApiError> {
    bank.payments
        .get(id)
        .map(|p| &**p)
        .filter(|p| p.exists_at_bank())
        .ok_or_else(|| ApiError::not_found("Payment"))
}

/// A payment the PSU may see: it exists and was not signed by another PSU.
fn owned<'a>(bank: &'a BankState, id: &str, psu: &str) -> Result<&'a Payment, ApiError> {
    let p = existing(bank, id)?;
    match &p.owner {
        Some(owner) if owner != psu => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "error.resource.denied",
            "The access token does not give access to this payment.",
            "paymentId",
        )),
        _ => Ok(p),
    }
}

fn psu_of(sandbox: &Sandbox, headers: &HeaderMap) -> Result<String, ApiError> {
    let token = bearer_token(headers)?;
    lock(&sandbox.bank).bearer_psu(&token, sandbox.now())
}

async fn status(State(sandbox): State<Arc<Sandbox>>, Path(id): Path<String>, uri: Uri) -> Response {
    let now = sandbox.now();
    let bank = lock(&sandbox.bank);
    match existing(&bank, &id) {
        Ok(p) => {
            let snap = p.snapshot(now, sandbox.config());
            #[derive(serde::Serialize)]
            struct Status<'a> {
                payment_id: &'a str,
                status: super::payments::BankStatus,
            }
            ok(
                StatusCode::OK,
                &Status {
                    payment_id: &p.id,
                    status: snap.status,
                },
            )
        }
        Err(e) => e.render(uri.path()),
    }
}

fn details(
    sandbox: &Sandbox,
    id: &str,
    headers: &HeaderMap,
    v3: bool,
    funds: bool,
) -> Result<Response, ApiError> {
    let psu = psu_of(sandbox, headers)?;
    let now = sandbox.now();
    let bank = lock(&sandbox.bank);
    let p = owned(&bank, id, &psu)?;
    Ok(ok(
        StatusCode::OK,
        &p.details_json(now, sandbox.config(), v3, funds),
    ))
}

async fn details_v2(
    State(sandbox): State<Arc<Sandbox>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    details(&sandbox, &id, &headers, false, false).unwrap_or_else(|e| e.render(uri.path()))
}

async fn details_v3(
    State(sandbox): State<Arc<Sandbox>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let funds = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .any(|(k, v)| k == "request_availability_of_funds" && v == "true");
    details(&sandbox, &id, &headers, true, funds).unwrap_or_else(|e| e.render(uri.path()))
}

async fn cancel(
    State(sandbox): State<Arc<Sandbox>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    cancel_inner(&sandbox, &headers, &body).unwrap_or_else(|e| e.render(uri.path()))
}

fn cancel_inner(sandbox: &Sandbox, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let psu = psu_of(sandbox, headers)?;
    require_media_type(headers, "application/json")?;
    let value: Value = parse_json(body)?;
    let ids: Option<Vec<String>> = value
        .get("payments")
        .and_then(Value::as_array)
        .filter(|list| !list.is_empty())
        .and_then(|list| {
            list.iter()
                .map(|p| {
                    p.get("payment_id")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect()
        });
    let Some(ids) = ids else {
        return Err(ApiError::validation(vec![Failure::new(
            "error.validation.format",
            "The body must be {\"payments\":[{\"payment_id\":\"…\"}, …]} with at least one payment.",
            "payments",
            "Pattern",
        )]));
    };
    let now = sandbox.now();
    let cfg = sandbox.config();
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    let mut bank = lock(&sandbox.bank);
    for id in ids {
        // A payment whose link nobody has opened yet exists at the bank (it has an id and a
        // link) though status and details answer 404: it can be deleted, and its link then
        // refuses. One signed a moment ago whose confirmation is still running (it still
        // shows PendingUserApproval) is being processed and cannot be deleted.
        let unopened = bank
            .payments
            .get(&id)
            .filter(|p| !p.exists_at_bank())
            .map(|_| ());
        let verdict = unopened
            .map(Ok)
            .unwrap_or_else(|| owned(&bank, &id, &psu).and_then(|p| deletable(p, now, cfg)));
        match verdict {
            Ok(()) => {
                if let Some(p) = bank.payments.get_mut(&id) {
                    p.cancelled_at = Some(now);
                }
                deleted.push(id);
            }
            Err(e) => {
                let f = &e.failures[0];
                errors.push(json!({
                    "payment_id": id,
                    "code": f.code,
                    "description": f.description,
                }));
            }
        }
    }
    drop(bank);
    let status = StatusCode::OK;
    Ok(super::wire::json_response(
        status,
        &json!({
            "group_header": super::wire::group_header(status),
            "response": deleted,
            "errors": errors,
        }),
    ))
}

/// Whether the bulk delete may delete this (opened) payment now.
fn deletable(
    p: &super::payments::Payment,
    now: chrono::DateTime<chrono::Utc>,
    cfg: &super::SandboxConfig,
) -> Result<(), ApiError> {
    let status = p.snapshot(now, cfg).status;
    let confirming = matches!(p.decision, Some(super::payments::Decision::Approved { .. }))
        && status == super::payments::BankStatus::PendingUserApproval;
    if confirming {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "error.payment.not_deletable",
            "The payment is signed and being confirmed; it cannot be deleted.",
            "payment_id",
        ));
    }
    if status.is_deletable() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "error.payment.not_deletable",
            format!("A payment in status {status:?} cannot be deleted."),
            "payment_id",
        ))
    }
}

fn oauth_error(code: &str, description: impl Into<String>, path: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, description, path)
}

async fn token(
    State(sandbox): State<Arc<Sandbox>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token_inner(&sandbox, &headers, &body).unwrap_or_else(|e| e.render(uri.path()))
}

fn token_inner(sandbox: &Sandbox, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    require_media_type(headers, "application/x-www-form-urlencoded")?;
    let mut params = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if params
            .insert(k.clone().into_owned(), v.into_owned())
            .is_some()
        {
            return Err(oauth_error(
                "invalid_request",
                format!("Parameter {k} is given twice."),
                &k,
            ));
        }
    }
    let param = |name: &str| {
        params
            .get(name)
            .filter(|v| !v.is_empty())
            .map(String::as_str)
            .ok_or_else(|| {
                oauth_error(
                    "invalid_request",
                    format!("Parameter {name} is required."),
                    name,
                )
            })
    };
    let now = sandbox.now();
    let cfg = sandbox.config();
    let identity = sandbox.token_identity();
    let pair = match param("grant_type")? {
        "authorization_code" => {
            let code = param("code")?;
            let redirect_uri = param("redirect_uri")?;
            lock(&sandbox.bank).exchange_code(code, redirect_uri, now, cfg, identity)?
        }
        "refresh_token" => {
            let refresh = param("refresh_token")?;
            lock(&sandbox.bank).refresh(refresh, now, cfg, identity)?
        }
        other => {
            return Err(oauth_error(
                "unsupported_grant_type",
                format!("grant_type {other} is not supported."),
                "grant_type",
            ));
        }
    };
    // Nordea's token answer is bare: no group_header envelope (ia-v5 schema).
    Ok(super::wire::json_response(StatusCode::OK, &pair))
}

async fn revoke(
    State(sandbox): State<Arc<Sandbox>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    revoke_inner(&sandbox, &headers, &body).unwrap_or_else(|e| e.render(uri.path()))
}

fn revoke_inner(sandbox: &Sandbox, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    require_media_type(headers, "application/json")?;
    let value: Value = parse_json(body)?;
    let token = value
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| oauth_error("invalid_request", "Field token is required.", "token"))?;
    lock(&sandbox.bank).revoke(token);
    // Nordea's revoke answers a bare string (ia-v5 schema).
    Ok(super::wire::json_response(
        StatusCode::OK,
        &json!("Token revoked"),
    ))
}
