//! Refusals as RFC 9457 problem+json (`{"type","title","status","detail","code","instance"}`; a refusal of a body field also names it in `path`), and the middleware that
//! records every refusal with its rule for `GET /admin/refusals`.
//!
//! Problem types follow SEB's published examples: the authorization server's
//! `https://authorize.sebgroup.com/problems/<name>`, the PIS API's Berlin Group
//! `https://berlingroup.com/error-codes/<CODE>`, the signing API's
//! `https://sign.seb.se/error-codes/<CODE>`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiRequest, RefusalRecord, SebSim};

const AUTH_BASE: &str = "https://authorize.sebgroup.com/problems/";
const PIS_BASE: &str = "https://berlingroup.com/error-codes/";
const SIGN_BASE: &str = "https://sign.seb.se/error-codes/";

/// Why a request is refused: the answer and the rule (for the refusal log). The problem's
/// `type` is `base` + `name`, its `code` is `name`, its `title` is made from `name`.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub base: &'static str,
    pub name: &'static str,
    pub detail: String,
    /// The body field or header at fault, when there is one.
    pub path: Option<String>,
    pub rule: &'static str,
}

/// What the recording middleware reads off a refused answer.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    pub rule: &'static str,
    pub code: Option<String>,
    pub detail: String,
}

impl Problem {
    /// An authorization-server problem (`…/problems/<name>`).
    pub fn auth(
        status: StatusCode,
        name: &'static str,
        rule: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            base: AUTH_BASE,
            name,
            detail: detail.into(),
            path: None,
            rule,
        }
    }

    /// A PIS problem with a Berlin Group code.
    pub fn pis(
        status: StatusCode,
        code: &'static str,
        rule: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            base: PIS_BASE,
            name: code,
            detail: detail.into(),
            path: None,
            rule,
        }
    }

    /// A signing-API problem.
    pub fn sign(
        status: StatusCode,
        code: &'static str,
        rule: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            base: SIGN_BASE,
            ..Problem::pis(status, code, rule, detail)
        }
    }

    /// 400 FORMAT_ERROR naming the field (`path`) in the detail and in `path`.
    pub fn format(rule: &'static str, path: &str, detail: impl Into<String>) -> Problem {
        let detail = format!("{path}: {}", detail.into());
        Problem {
            path: Some(path.to_owned()),
            ..Problem::pis(StatusCode::BAD_REQUEST, "FORMAT_ERROR", rule, detail)
        }
    }

    /// The same problem under the signing API's type base.
    pub fn in_signing(mut self) -> Problem {
        if self.base == PIS_BASE {
            self.base = SIGN_BASE;
        }
        self
    }

    pub fn body(&self) -> Value {
        let mut v = json!({
            "type": format!("{}{}", self.base, self.name),
            "title": title_of(self.name),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.name,
        });
        if let Some(p) = &self.path {
            v["path"] = json!(p);
        }
        v
    }
}

fn title_of(name: &str) -> String {
    match name {
        "FORMAT_ERROR" => "Format error".into(),
        "TOKEN_INVALID" => "Token invalid".into(),
        "TOKEN_EXPIRED" => "Token expired".into(),
        "RESOURCE_UNKNOWN" => "Resource unknown".into(),
        "PRODUCT_UNKNOWN" => "Product unknown".into(),
        "STATUS_INVALID" => "Status invalid".into(),
        "CANCELLATION_INVALID" => "Cancellation invalid".into(),
        other => {
            let words = other.replace(['-', '_'], " ").to_lowercase();
            let mut c = words.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut resp = (self.status, body.to_string()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp.extensions_mut().insert(Refused {
            rule: self.rule,
            code: Some(self.name.to_owned()),
            detail: self.detail,
        });
        resp
    }
}

/// Records every answer that carries a [`Refused`] mark, and gives a problem+json answer
/// its `instance` (the request path, as SEB's v4 examples do).
pub(crate) async fn record_refusals(
    State((sim, listener)): State<(Arc<SebSim>, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    // The request's headers for the API log (the bearer token masked).
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            let value = if *k == header::AUTHORIZATION {
                "Bearer ***".to_owned()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (k.as_str().to_owned(), value)
        })
        .collect();
    let resp = next.run(req).await;
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/problem+json");
    let resp = if is_problem {
        let (mut parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 64 * 1024)
            .await
            .unwrap_or_default();
        let body = match serde_json::from_slice::<Value>(&bytes) {
            Ok(mut v) => {
                v["instance"] = json!(path);
                v.to_string().into_bytes()
            }
            Err(_) => bytes.to_vec(),
        };
        parts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(parts, axum::body::Body::from(body))
    } else {
        resp
    };
    let refused = resp.extensions().get::<Refused>().cloned();
    if listener == "api" {
        let fault = resp
            .extensions()
            .get::<super::faults::Injected>()
            .map(|f| f.0);
        sim.record_request(ApiRequest {
            seq: 0,
            at: sim.now(),
            method: method.clone(),
            path: path.clone(),
            headers,
            status: if fault == Some("drop_connection") {
                0
            } else {
                resp.status().as_u16()
            },
            rule: refused.as_ref().map(|r| r.rule),
            fault,
        });
    }
    if let Some(r) = refused {
        sim.record_refusal(RefusalRecord {
            seq: 0,
            at: sim.now(),
            listener,
            method,
            path,
            status: resp.status().as_u16(),
            rule: r.rule,
            code: r.code,
            detail: r.detail,
        });
    }
    resp
}
