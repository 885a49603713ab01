//! Fault injection on the simulator's API (the mutual-TLS listener), with the Nordea
//! sandbox's rules ([`crate::sandbox::faults`]; `PUT /admin/faults` on the app listener).
//!
//! SEB's calls are mapped onto the rules' operation names:
//!
//! | call | operation |
//! |---|---|
//! | `POST {pis}/payments/{product}` | `initiate` |
//! | `GET {pis}/payments/{product}/{id}` | `details` |
//! | `GET {pis}/payments/{product}/{id}/status` | `status` |
//! | `DELETE {pis}/payments/{product}/{id}` | `cancel` |
//! | `POST /auth/v4/tokens` (the code, or a refresh) | `token` |
//! | `POST /auth/v4/authorizations`, `GET /auth/v4/authorizations/{id}` (identification) and `POST /tpp/signing/v1/signing-orders`, `GET …/{id}` (signing): the shopper's BankID orders | `authorise` |
//!
//! 500, 503 and 429 answer as SEB does (problem+json, `code` `INTERNAL_SERVER_ERROR`,
//! `SERVICE_UNAVAILABLE`, `TOO_MANY_REQUESTS`; the 429 with `Retry-After`) without running
//! the call; `drop_connection` closes the connection without running it;
//! `malformed_json`, `delay_answer` and `drop_after_processing` run the call (a payment is
//! made, an order started, tokens handed out once) and then garble, delay or lose its answer.
//! Each call is in `GET /admin/requests` with the fault that hit it (`fault`); a connection
//! closed before the call shows status 0. An injected answer is not a refusal: it is not in
//! `GET /admin/refusals`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::SebSim;
use super::tls::CloseWithoutAnswer;
use crate::sandbox::{Fault, Operation};

/// The fault that answered or changed a response, for the request log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Injected(pub &'static str);

/// The operation a call of SEB's API is, for the fault rules; `None` for a path the API does
/// not have (its 404 is never faulted).
pub(crate) fn operation(method: &Method, path: &str) -> Option<Operation> {
    if path.starts_with("/auth/v4/authorizations") || path.starts_with("/tpp/signing/v1/") {
        return Some(Operation::Authorise);
    }
    if path == "/auth/v4/tokens" {
        return Some(Operation::Token);
    }
    let rest = [super::pis::PRIVATE_BASE, super::pis::CORPORATE_BASE]
        .iter()
        .find_map(|base| path.strip_prefix(base))?
        .strip_prefix("/payments/")?;
    // {product}, {product}/{id} or {product}/{id}/status
    match (method, rest.split('/').count()) {
        (&Method::POST, 1) => Some(Operation::Initiate),
        (&Method::GET, 2) => Some(Operation::Details),
        (&Method::DELETE, 2) => Some(Operation::Cancel),
        (&Method::GET, 3) if rest.ends_with("/status") => Some(Operation::Status),
        _ => None,
    }
}

/// The middleware: applies the rules to each API call it can name.
pub(crate) async fn inject(State(sim): State<Arc<SebSim>>, req: Request, next: Next) -> Response {
    let Some(op) = operation(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let plan = sim.faults().plan(op);
    if plan.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(plan.latency_ms)).await;
    }
    let Some(fault) = plan.fault else {
        return next.run(req).await;
    };
    let name = fault.name();
    let mut resp = match fault {
        Fault::Latency { .. } => next.run(req).await,
        Fault::Http500 => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            None,
        ),
        Fault::Http503 => problem(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", None),
        Fault::Http429 { retry_after_secs } => problem(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            Some(retry_after_secs),
        ),
        Fault::DropConnection => {
            let mut resp = StatusCode::SERVICE_UNAVAILABLE.into_response();
            resp.extensions_mut().insert(CloseWithoutAnswer);
            resp
        }
        Fault::MalformedJson => crate::sandbox::handlers::truncate_body(next.run(req).await).await,
        Fault::DelayAnswer { ms } => {
            let resp = next.run(req).await;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            resp
        }
        Fault::DropAfterProcessing => {
            let mut resp = next.run(req).await;
            resp.extensions_mut().insert(CloseWithoutAnswer);
            resp
        }
    };
    resp.extensions_mut().insert(Injected(name));
    resp
}

/// An injected error in SEB's problem+json shape (not a refusal: no rule is recorded).
fn problem(status: StatusCode, code: &'static str, retry_after_secs: Option<u64>) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": "injected fault",
        "code": code,
    });
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(secs) = retry_after_secs
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_call_is_named_as_the_rules_name_it() {
        let p = super::super::pis::PRIVATE_BASE;
        let c = super::super::pis::CORPORATE_BASE;
        let product = "private-se-domestic-credit-transfers";
        let cases = [
            (
                Method::POST,
                format!("{p}/payments/{product}"),
                Some(Operation::Initiate),
            ),
            (
                Method::POST,
                format!("{c}/payments/{product}"),
                Some(Operation::Initiate),
            ),
            (
                Method::GET,
                format!("{p}/payments/{product}/abc"),
                Some(Operation::Details),
            ),
            (
                Method::GET,
                format!("{p}/payments/{product}/abc/status"),
                Some(Operation::Status),
            ),
            (
                Method::DELETE,
                format!("{c}/payments/{product}/abc"),
                Some(Operation::Cancel),
            ),
            (
                Method::POST,
                "/auth/v4/tokens".to_owned(),
                Some(Operation::Token),
            ),
            (
                Method::POST,
                "/auth/v4/authorizations".to_owned(),
                Some(Operation::Authorise),
            ),
            (
                Method::GET,
                "/auth/v4/authorizations/x".to_owned(),
                Some(Operation::Authorise),
            ),
            (
                Method::POST,
                "/tpp/signing/v1/signing-orders".to_owned(),
                Some(Operation::Authorise),
            ),
            (
                Method::GET,
                "/tpp/signing/v1/signing-orders/x".to_owned(),
                Some(Operation::Authorise),
            ),
            (
                Method::GET,
                format!("{p}/payments/{product}/abc/other"),
                None,
            ),
            (Method::PUT, format!("{p}/payments/{product}/abc"), None),
            (Method::GET, "/nothing/here".to_owned(), None),
        ];
        for (method, path, want) in cases {
            assert_eq!(operation(&method, &path), want, "{method} {path}");
        }
    }
}
