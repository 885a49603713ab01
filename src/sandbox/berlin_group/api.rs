//! The PIS API under the base path: one handler that parses the path into the spec's
//! operation, runs the strict checks in a fixed order, dispatches to
//! [`super::operations`], then echoes `X-Request-ID`, self-checks the answer against the
//! OpenAPI and records the exchange.
//!
//! Order of checks: path (404 RESOURCE_UNKNOWN) and method (405 SERVICE_INVALID),
//! `X-Request-ID`, the other header parameters, `Accept` (406), the signature
//! ([`super::verify`]), a reused `X-Request-ID`, `payment-service` (400
//! PARAMETER_NOT_SUPPORTED) and `payment-product` (404 PRODUCT_UNKNOWN), `Content-Type`
//! (415), the body, then the operation's own rules.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::refusal::Refusal;
use super::state::Replay;
use super::verify::{self, Policy};
use super::{BgSandbox, Exchange, SelfCheckFailure, lock, operations, spec};
use crate::sandbox::{Fault, Operation};
use sha2::Digest as _;

pub(super) fn routes(sb: Arc<BgSandbox>) -> Router {
    let base = sb.config.base_path.clone();
    Router::new()
        .route(&format!("{base}/v1/{{*rest}}"), any(handle))
        .fallback(unknown_path)
        .with_state(sb)
}

/// The spec's PIS operations (operationIds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Initiate,
    Get,
    Cancel,
    Status,
    StartAuth,
    ListAuth,
    ScaStatus,
    UpdatePsu,
    StartCancelAuth,
    ListCancelAuth,
    CancelScaStatus,
    UpdateCancelPsu,
}

impl Op {
    fn operation_id(self) -> &'static str {
        match self {
            Op::Initiate => "initiatePayment",
            Op::Get => "getPaymentInformation",
            Op::Cancel => "cancelPayment",
            Op::Status => "getPaymentInitiationStatus",
            Op::StartAuth => "startPaymentAuthorisation",
            Op::ListAuth => "getPaymentInitiationAuthorisation",
            Op::ScaStatus => "getPaymentInitiationScaStatus",
            Op::UpdatePsu => "updatePaymentPsuData",
            Op::StartCancelAuth => "startPaymentInitiationCancellationAuthorisation",
            Op::ListCancelAuth => "getPaymentInitiationCancellationAuthorisationInformation",
            Op::CancelScaStatus => "getPaymentCancellationScaStatus",
            Op::UpdateCancelPsu => "updatePaymentCancellationPsuData",
        }
    }

    /// The spec's path template and method of the operation.
    fn spec_path(self) -> (&'static str, &'static str) {
        const ROOT: &str = "/v1/{payment-service}/{payment-product}";
        const ID: &str = "/v1/{payment-service}/{payment-product}/{paymentId}";
        const STATUS: &str = "/v1/{payment-service}/{payment-product}/{paymentId}/status";
        const AUTHS: &str = "/v1/{payment-service}/{payment-product}/{paymentId}/authorisations";
        const AUTH: &str =
            "/v1/{payment-service}/{payment-product}/{paymentId}/authorisations/{authorisationId}";
        const CAUTHS: &str =
            "/v1/{payment-service}/{payment-product}/{paymentId}/cancellation-authorisations";
        const CAUTH: &str = "/v1/{payment-service}/{payment-product}/{paymentId}/cancellation-authorisations/{authorisationId}";
        match self {
            Op::Initiate => (ROOT, "post"),
            Op::Get => (ID, "get"),
            Op::Cancel => (ID, "delete"),
            Op::Status => (STATUS, "get"),
            Op::StartAuth => (AUTHS, "post"),
            Op::ListAuth => (AUTHS, "get"),
            Op::ScaStatus => (AUTH, "get"),
            Op::UpdatePsu => (AUTH, "put"),
            Op::StartCancelAuth => (CAUTHS, "post"),
            Op::ListCancelAuth => (CAUTHS, "get"),
            Op::CancelScaStatus => (CAUTH, "get"),
            Op::UpdateCancelPsu => (CAUTH, "put"),
        }
    }

    /// The operation's name in the fault rules (shared with the Nordea sandbox).
    fn fault_operation(self) -> Operation {
        match self {
            Op::Initiate => Operation::Initiate,
            Op::Get => Operation::Details,
            Op::Status => Operation::Status,
            Op::ScaStatus => Operation::ScaStatus,
            Op::Cancel
            | Op::StartCancelAuth
            | Op::ListCancelAuth
            | Op::CancelScaStatus
            | Op::UpdateCancelPsu => Operation::Cancel,
            Op::StartAuth | Op::ListAuth | Op::UpdatePsu => Operation::Authorise,
        }
    }

    pub(super) fn has_body(self) -> bool {
        matches!(
            self,
            Op::Initiate
                | Op::StartAuth
                | Op::UpdatePsu
                | Op::StartCancelAuth
                | Op::UpdateCancelPsu
        )
    }
}

pub(super) struct Target<'a> {
    pub(super) op: Op,
    pub(super) service: &'a str,
    pub(super) product: &'a str,
    pub(super) payment_id: Option<&'a str>,
    pub(super) authorisation_id: Option<&'a str>,
}

fn parse_path<'a>(method: &Method, rest: &'a str) -> Result<Target<'a>, Refusal> {
    let segs: Vec<&str> = rest.split('/').collect();
    let unknown = || {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "RESOURCE_UNKNOWN",
            None,
            "not a payment initiation path of this ASPSP",
        )
    };
    if segs.len() < 2 || segs.iter().any(|s| s.is_empty()) {
        return Err(unknown());
    }
    let wrong_method = || {
        Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "SERVICE_INVALID",
            None,
            format!("{method} is not offered on this path"),
        )
    };
    let m = method.clone();
    let op = match (&segs[2..], m) {
        ([], Method::POST) => Op::Initiate,
        ([], _) => return Err(wrong_method()),
        ([_], Method::GET) => Op::Get,
        ([_], Method::DELETE) => Op::Cancel,
        ([_], _) => return Err(wrong_method()),
        ([_, "status"], Method::GET) => Op::Status,
        ([_, "authorisations"], Method::POST) => Op::StartAuth,
        ([_, "authorisations"], Method::GET) => Op::ListAuth,
        ([_, "authorisations", _], Method::GET) => Op::ScaStatus,
        ([_, "authorisations", _], Method::PUT) => Op::UpdatePsu,
        ([_, "cancellation-authorisations"], Method::POST) => Op::StartCancelAuth,
        ([_, "cancellation-authorisations"], Method::GET) => Op::ListCancelAuth,
        ([_, "cancellation-authorisations", _], Method::GET) => Op::CancelScaStatus,
        ([_, "cancellation-authorisations", _], Method::PUT) => Op::UpdateCancelPsu,
        (
            [_, "status"]
            | [_, "authorisations" | "cancellation-authorisations"]
            | [_, "authorisations" | "cancellation-authorisations", _],
            _,
        ) => return Err(wrong_method()),
        _ => return Err(unknown()),
    };
    Ok(Target {
        op,
        service: segs[0],
        product: segs[1],
        payment_id: segs.get(2).copied(),
        authorisation_id: segs.get(4).copied(),
    })
}

/// What an operation answers before the common headers are added.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: Option<Value>,
    /// The spec schema the body must satisfy.
    pub(super) schema: Option<&'static str>,
}

impl Answer {
    pub(super) fn json(status: StatusCode, schema: &'static str, body: Value) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Some(body),
            schema: Some(schema),
        }
    }
}

pub(super) fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn valid_request_id(v: &str) -> bool {
    v.len() == 36 && uuid::Uuid::parse_str(v).is_ok()
}

async fn unknown_path(
    State(sb): State<Arc<BgSandbox>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let refusal = Refusal::new(
        StatusCode::NOT_FOUND,
        "RESOURCE_UNKNOWN",
        None,
        format!("no resource at {}", uri.path()),
    );
    finish(
        &sb,
        &method,
        &uri,
        &headers,
        &body,
        None,
        Err(refusal),
        None,
    )
}

async fn handle(
    State(sb): State<Arc<BgSandbox>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prefix = format!("{}/v1/", sb.config.base_path);
    let rest = uri.path().strip_prefix(&prefix).unwrap_or("").to_owned();
    let target = parse_path(&method, &rest);
    let op = target.as_ref().ok().map(|t| t.op);
    let plan = op
        .map(|op| sb.faults().plan(op.fault_operation()))
        .unwrap_or_default();
    if plan.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(plan.latency_ms)).await;
    }
    let fault = plan.fault.as_ref();
    // Faults that answer instead of the bank: nothing happens at the bank.
    let injected = match plan.fault {
        Some(Fault::Http500) => Some(injected_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the bank failed (injected fault)",
        )),
        Some(Fault::Http503) => Some(injected_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the bank is unavailable (injected fault)",
        )),
        Some(Fault::Http429 { retry_after_secs }) => {
            let mut answer = injected_error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests (injected fault)",
            );
            answer
                .headers
                .push(("Retry-After", retry_after_secs.to_string()));
            Some(answer)
        }
        Some(Fault::DropConnection) => {
            sb.record(exchange(
                &method,
                &uri,
                &headers,
                &body,
                op,
                0,
                Vec::new(),
                None,
                fault.map(Fault::name),
            ));
            return dropped();
        }
        _ => None,
    };
    if let Some(answer) = injected {
        return finish(&sb, &method, &uri, &headers, &body, op, Ok(answer), fault);
    }
    let result = match target {
        Ok(t) => process(&sb, &method, &uri, &headers, &body, &t),
        Err(r) => Err(r),
    };
    let response = finish(&sb, &method, &uri, &headers, &body, op, result, fault);
    // Faults that let the bank act, then lose, garble or delay its answer.
    match plan.fault {
        Some(Fault::MalformedJson) => crate::sandbox::handlers::truncate_body(response).await,
        Some(Fault::DropAfterProcessing) => dropped(),
        Some(Fault::DelayAnswer { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            response
        }
        _ => response,
    }
}

/// An injected error answer in the `tppMessages` shape.
fn injected_error(status: StatusCode, text: &str) -> Answer {
    let code = status
        .canonical_reason()
        .unwrap_or("ERROR")
        .to_ascii_uppercase()
        .replace(' ', "_");
    Answer {
        status,
        headers: Vec::new(),
        body: Some(serde_json::json!({
            "tppMessages": [{ "category": "ERROR", "code": code, "text": text }]
        })),
        schema: None,
    }
}

/// A response the accept loop turns into a closed connection with no answer.
fn dropped() -> Response {
    let mut resp = Response::new(axum::body::Body::empty());
    resp.extensions_mut()
        .insert(crate::sandbox::handlers::DropConnection);
    resp
}

/// Adds `X-Request-ID`, self-checks (unless a fault answered instead of the bank), records
/// (with the fault's name) and answers.
#[allow(clippy::too_many_arguments)]
fn finish(
    sb: &BgSandbox,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    op: Option<Op>,
    result: Result<Answer, Refusal>,
    fault: Option<&Fault>,
) -> Response {
    let answer = match result {
        Ok(a) => a,
        Err(r) => {
            let schema = r.body().and(error_schema(r.status));
            Answer {
                status: r.status,
                headers: Vec::new(),
                body: r.body(),
                schema,
            }
        }
    };
    let request_id = header(headers, "x-request-id")
        .filter(|v| valid_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut problems = Vec::new();
    let mut schema_name = String::new();
    if let (Some(b), Some(s)) = (&answer.body, answer.schema) {
        schema_name = s.to_owned();
        problems.extend(
            spec::validate(s, b)
                .into_iter()
                .map(|v| format!("{}: {}", v.path, v.message)),
        );
    }
    if let Some(op) = op.filter(|_| !fault.is_some_and(Fault::replaces_the_call)) {
        let (template, spec_method) = op.spec_path();
        let sent: Vec<(&str, &str)> = std::iter::once(("X-Request-ID", request_id.as_str()))
            .chain(answer.headers.iter().map(|(n, v)| (*n, v.as_str())))
            .collect();
        match spec::response_headers(template, spec_method, answer.status.as_u16()) {
            None => problems.push(format!(
                "{} declares no {} answer",
                op.operation_id(),
                answer.status.as_u16()
            )),
            Some(declared) => {
                for d in declared.iter().filter(|d| d.required) {
                    if !sent.iter().any(|(n, _)| n.eq_ignore_ascii_case(&d.name)) {
                        problems.push(format!("header {} is required", d.name));
                    }
                }
                for (name, value) in &sent {
                    match declared.iter().find(|d| d.name.eq_ignore_ascii_case(name)) {
                        None => problems.push(format!("header {name} is not declared")),
                        Some(d) => problems.extend(spec::check_header(d, value)),
                    }
                }
            }
        }
        if answer.status == StatusCode::CREATED
            && !answer
                .headers
                .iter()
                .any(|(n, _)| *n == "ASPSP-SCA-Approach")
        {
            problems.push("a 201 without ASPSP-SCA-Approach".into());
        }
    }
    if !problems.is_empty() {
        tracing::error!(
            method = %method, path = uri.path(), status = answer.status.as_u16(),
            schema = %schema_name, violations = ?problems,
            "the Berlin Group simulator's answer violates the OpenAPI"
        );
        lock(&sb.selfcheck).push(SelfCheckFailure {
            at: sb.now(),
            method: method.to_string(),
            path: uri.path().to_owned(),
            status: answer.status.as_u16(),
            schema: schema_name,
            violations: problems,
        });
    }
    let mut response_headers: Vec<(String, String)> = vec![("X-Request-ID".into(), request_id)];
    for (n, v) in &answer.headers {
        response_headers.push(((*n).to_owned(), v.clone()));
    }
    let code = answer
        .body
        .as_ref()
        .and_then(|b| b.pointer("/tppMessages/0/code"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut exchange = exchange(
        method,
        uri,
        headers,
        body,
        op,
        answer.status.as_u16(),
        response_headers.clone(),
        answer.body.clone(),
        fault.map(Fault::name),
    );
    exchange.code = code;
    sb.record(exchange);
    let mut resp = match &answer.body {
        Some(b) => (answer.status, axum::Json(b.clone())).into_response(),
        None => answer.status.into_response(),
    };
    for (n, v) in response_headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(n.as_str()),
            HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp
}

/// One call for the log (`seq` and `received_at` are set when it is recorded).
#[allow(clippy::too_many_arguments)]
fn exchange(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    op: Option<Op>,
    status: u16,
    response_headers: Vec<(String, String)>,
    response_body: Option<Value>,
    fault: Option<&'static str>,
) -> Exchange {
    Exchange {
        seq: 0,
        received_at: DateTime::<Utc>::MIN_UTC,
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        operation: op.map(Op::operation_id),
        headers: safe_headers(headers),
        body: String::from_utf8_lossy(body).into_owned(),
        status,
        response_headers,
        response_body,
        code: None,
        fault,
    }
}

/// The spec's `tppMessages` error schema for a status.
fn error_schema(status: StatusCode) -> Option<&'static str> {
    match status.as_u16() {
        400 => Some("Error400_NG_PIS"),
        401 => Some("Error401_NG_PIS"),
        403 => Some("Error403_NG_PIS"),
        404 => Some("Error404_NG_PIS"),
        405 => Some("Error405_NG_PIS"),
        406 => Some("Error406_NG_PIS"),
        409 => Some("Error409_NG_PIS"),
        _ => None,
    }
}

fn safe_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            let value = if n.as_str() == "authorization" {
                "<redacted>".to_owned()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (n.as_str().to_owned(), value)
        })
        .collect()
}

const BOOLEAN_HEADERS: [&str; 4] = [
    "TPP-Redirect-Preferred",
    "TPP-Decoupled-Preferred",
    "TPP-Explicit-Authorisation-Preferred",
    "TPP-Rejection-NoFunds-Preferred",
];

fn check_headers(op: Op, headers: &HeaderMap) -> Result<(), Refusal> {
    match header(headers, "x-request-id") {
        None => return Err(Refusal::format("X-Request-ID", "X-Request-ID is required")),
        Some(v) if !valid_request_id(v) => {
            return Err(Refusal::format(
                "X-Request-ID",
                "X-Request-ID must be a UUID (36 characters)",
            ));
        }
        Some(_) => {}
    }
    match header(headers, "psu-ip-address") {
        None if op == Op::Initiate => {
            return Err(Refusal::format(
                "PSU-IP-Address",
                "PSU-IP-Address is required on a payment initiation",
            ));
        }
        Some(v) if v.parse::<IpAddr>().is_err() => {
            return Err(Refusal::format(
                "PSU-IP-Address",
                "PSU-IP-Address must be an IP address",
            ));
        }
        _ => {}
    }
    for name in BOOLEAN_HEADERS {
        if let Some(v) = headers.get(name)
            && v != "true"
            && v != "false"
        {
            return Err(Refusal::format(
                name,
                format!("{name} must be true or false"),
            ));
        }
    }
    for name in ["TPP-Redirect-URI", "TPP-Nok-Redirect-URI"] {
        if headers.contains_key(name) {
            let ok = header(headers, name)
                .and_then(|v| url::Url::parse(v).ok())
                .is_some_and(|u| u.has_host());
            if !ok {
                return Err(Refusal::format(
                    name,
                    format!("{name} must be an absolute URI"),
                ));
            }
        }
    }
    // Every other header parameter the spec defines for the operation, by its schema.
    // PSU-IP-Address was checked above (IPv6 accepted although the schema says ipv4); the
    // signature headers are the signature check's.
    let (template, spec_method) = op.spec_path();
    for param in spec::header_params(template, spec_method) {
        if matches!(
            param.name.as_str(),
            "X-Request-ID"
                | "PSU-IP-Address"
                | "Signature"
                | "Digest"
                | "TPP-Signature-Certificate"
        ) {
            continue;
        }
        match headers.get(param.name.as_str()) {
            None if param.required => {
                return Err(Refusal::format(
                    &param.name,
                    format!("{} is required", param.name),
                ));
            }
            None => {}
            Some(v) => {
                let Ok(v) = v.to_str() else {
                    return Err(Refusal::format(
                        &param.name,
                        format!("{} is not visible ASCII", param.name),
                    ));
                };
                if let Some(why) = spec::check_header(&param, v) {
                    return Err(Refusal::format(&param.name, why));
                }
            }
        }
    }
    if header(headers, "tpp-redirect-preferred") == Some("true")
        && !headers.contains_key("tpp-redirect-uri")
    {
        return Err(Refusal::format(
            "TPP-Redirect-URI",
            "TPP-Redirect-Preferred: true needs TPP-Redirect-URI",
        ));
    }
    if let Some(accept) = header(headers, "accept") {
        let ok = accept.split(',').any(|a| {
            let a = a.split(';').next().unwrap_or("").trim();
            matches!(a, "application/json" | "application/*" | "*/*")
        });
        if !ok {
            return Err(Refusal::bare(StatusCode::NOT_ACCEPTABLE));
        }
    }
    Ok(())
}

fn process(
    sb: &BgSandbox,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    raw: &[u8],
    t: &Target<'_>,
) -> Result<Answer, Refusal> {
    check_headers(t.op, headers)?;
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let signer = verify::verify(
        method,
        path_and_query,
        headers,
        raw,
        &Policy {
            cas: &sb.config.tpp_cas,
            max_clock_skew: sb.config.max_clock_skew,
            now: SystemTime::now(),
        },
        sb.config.signature_required,
    )?;
    let owner = signer
        .map(|s| s.fingerprint)
        .unwrap_or_else(|| "unsigned".into());
    let request_id = header(headers, "x-request-id")
        .unwrap_or_default()
        .to_owned();
    let fingerprint = format!(
        "{method} {path_and_query} {} {owner}",
        hex::encode(sha2::Sha256::digest(raw))
    );
    {
        let mut bank = sb.bank();
        if !bank.seen_request_ids.insert(request_id.clone()) {
            if !sb.config.allow_request_id_reuse {
                return Err(Refusal::format(
                    "X-Request-ID",
                    "this X-Request-ID was already used: every call needs a new one",
                ));
            }
            if let Some(r) = bank.replays.get(&request_id) {
                if r.fingerprint != fingerprint {
                    return Err(Refusal::format(
                        "X-Request-ID",
                        "this X-Request-ID was used for a different request",
                    ));
                }
                return Ok(Answer {
                    status: StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
                    headers: r.headers.clone(),
                    body: r.body.clone(),
                    schema: r.schema,
                });
            }
        }
    }
    let answer = operations::operate(sb, method, headers, raw, t, owner)?;
    if sb.config.allow_request_id_reuse {
        sb.bank().replays.insert(
            request_id,
            Replay {
                fingerprint,
                status: answer.status.as_u16(),
                headers: answer.headers.clone(),
                body: answer.body.clone(),
                schema: answer.schema,
            },
        );
    }
    Ok(answer)
}
