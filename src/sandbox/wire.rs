//! Nordea's response envelopes: `group_header` + `response`, and the error body with
//! `failures`. Every answer under `/personal` goes through here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{SecondsFormat, Utc};
use rand::Rng;
use serde::Serialize;

/// Random lower-case hex of `bytes` random bytes (ids, tokens, message identifications).
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill(buf.as_mut_slice());
    hex::encode(buf)
}

/// A random version-4 UUID from the thread's generator (no system call per id, unlike
/// `Uuid::new_v4`, which asks the kernel for every one).
pub(crate) fn random_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// Nordea's `group_header`, serialized straight into the answer (no intermediate JSON tree).
/// Fields in alphabetical order, as the sandbox has always written them.
#[derive(Serialize)]
pub(crate) struct GroupHeader {
    creation_date_time: String,
    http_code: u16,
    message_identification: MessageId,
}

/// 16 random bytes as 32 lower-case hex digits, kept on the stack.
struct MessageId([u8; 32]);

impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(&self.0).unwrap_or_default())
    }
}

pub(crate) fn group_header(status: StatusCode) -> GroupHeader {
    let random: [u8; 16] = rand::random();
    let mut id = [0u8; 32];
    // Cannot fail: the output is exactly twice the input.
    let _ = hex::encode_to_slice(random, &mut id);
    GroupHeader {
        creation_date_time: Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true),
        http_code: status.as_u16(),
        message_identification: MessageId(id),
    }
}

/// A JSON answer wrapped in Nordea's envelope.
pub(crate) fn ok<T: Serialize + ?Sized>(status: StatusCode, response: &T) -> Response {
    #[derive(Serialize)]
    struct Envelope<'a, T: ?Sized> {
        group_header: GroupHeader,
        response: &'a T,
    }
    json_response(
        status,
        &Envelope {
            group_header: group_header(status),
            response,
        },
    )
}

/// `body` as an `application/json` answer, serialized once into the buffer that is sent.
pub(crate) fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    // Room for the usual answer (an envelope and a few links) without growing.
    let mut bytes = Vec::with_capacity(512);
    if serde_json::to_writer(&mut bytes, body).is_err() {
        bytes = b"{}".to_vec();
    }
    let mut resp = Response::new(axum::body::Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// One entry of Nordea's `failures` list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Failure {
    pub code: String,
    pub description: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl Failure {
    pub fn new(code: &str, description: impl Into<String>, path: &str, kind: &str) -> Failure {
        Failure {
            code: code.to_owned(),
            description: description.into(),
            path: path.to_owned(),
            kind: kind.to_owned(),
        }
    }
}

/// The validator-like `type` of a failure, as in Nordea's examples (`NotNull`): missing
/// things are `NotNull`, malformed ones `Pattern`, too long ones `Size`, everything else
/// (a wrong value, a refused credential) `Valid`.
pub(crate) fn validator_type(code: &str, description: &str) -> &'static str {
    if code.ends_with(".required") || code.ends_with(".missing") || description.contains("missing")
    {
        "NotNull"
    } else if code.ends_with(".format") || description.contains("not an RFC") {
        "Pattern"
    } else if code.ends_with(".creditor_name") || description.contains("too large") {
        "Size"
    } else {
        "Valid"
    }
}

/// An error answer: a status and its failures; rendered with the request's URL.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub failures: Vec<Failure>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// One failure; its `type` is validator-like ([`validator_type`]).
    pub fn new(status: StatusCode, code: &str, description: impl Into<String>, path: &str) -> Self {
        let description = description.into();
        let kind = validator_type(code, &description);
        ApiError {
            status,
            failures: vec![Failure::new(code, description, path, kind)],
            retry_after: None,
        }
    }

    pub fn validation(failures: Vec<Failure>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            failures,
            retry_after: None,
        }
    }

    pub fn unauthorized(code: &str, description: impl Into<String>, path: &str) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, code, description, path)
    }

    pub fn signature(description: impl Into<String>) -> Self {
        ApiError::unauthorized("error.signature.invalid", description, "Signature")
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "error.resource.not_found",
            format!("{what} not found"),
            "paymentId",
        )
    }

    pub fn token(description: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            description,
            "grant_type",
        )
    }

    /// The error body for a request to `path` (the `/personal` prefix is left out, as in
    /// Nordea's examples).
    pub fn render(&self, path: &str) -> Response {
        let url = path.strip_prefix("/personal").unwrap_or(path);
        #[derive(Serialize)]
        struct Request<'a> {
            url: &'a str,
        }
        #[derive(Serialize)]
        struct Error<'a> {
            failures: &'a [Failure],
            request: Request<'a>,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            error: Error<'a>,
            group_header: GroupHeader,
        }
        let body = Body {
            error: Error {
                failures: &self.failures,
                request: Request { url },
            },
            group_header: group_header(self.status),
        };
        let mut resp = json_response(self.status, &body);
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// Amounts as Nordea echoes them: no trailing zeros (`1000` minor → `"10"`, `1420` → `"14.2"`).
pub(crate) fn nordea_amount(minor: i64) -> String {
    let whole = minor / 100;
    let cents = minor % 100;
    match cents {
        0 => whole.to_string(),
        c if c % 10 == 0 => format!("{whole}.{}", c / 10),
        c => format!("{whole}.{c:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_echoed_without_trailing_zeros_like_the_seed_examples() {
        assert_eq!(nordea_amount(1000), "10");
        assert_eq!(nordea_amount(400), "4");
        assert_eq!(nordea_amount(1424), "14.24");
        assert_eq!(nordea_amount(1420), "14.2");
        assert_eq!(nordea_amount(1), "0.01");
        assert_eq!(nordea_amount(138), "1.38");
    }
}
