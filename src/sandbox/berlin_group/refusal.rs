//! A refusal in the Berlin Group's `tppMessages` shape (`Error4xx_NG_PIS`): an HTTP status
//! and one or more `{category: ERROR, code, path, text}` messages. `path` names the header
//! or the JSON pointer of the field at fault.

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TppMessage {
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub text: String,
}

/// Why a request is refused. Built with the constructors below; the answer is made by the
/// API layer (which adds `X-Request-ID`).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    /// Empty for the statuses whose answer the spec defines without a body (406, 415).
    pub messages: Vec<TppMessage>,
}

impl Refusal {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        path: Option<&str>,
        text: impl Into<String>,
    ) -> Refusal {
        let mut text = text.into();
        if text.chars().count() > 500 {
            text = text.chars().take(497).collect::<String>() + "...";
        }
        Refusal {
            status,
            messages: vec![TppMessage {
                code,
                path: path.map(str::to_owned),
                text,
            }],
        }
    }

    /// 400 FORMAT_ERROR naming the header or field.
    pub fn format(path: &str, text: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "FORMAT_ERROR", Some(path), text)
    }

    pub fn unauthorized(code: &'static str, path: &str, text: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::UNAUTHORIZED, code, Some(path), text)
    }

    /// A status without a body (406, 415: the spec defines no content for them).
    pub fn bare(status: StatusCode) -> Refusal {
        Refusal {
            status,
            messages: Vec::new(),
        }
    }

    /// Several messages under one status (every violation of a body, not only the first).
    pub fn many(status: StatusCode, messages: Vec<TppMessage>) -> Refusal {
        Refusal { status, messages }
    }

    /// The first message's code (for logs and tests).
    pub fn code(&self) -> Option<&'static str> {
        self.messages.first().map(|m| m.code)
    }

    pub fn body(&self) -> Option<Value> {
        if self.messages.is_empty() {
            return None;
        }
        let messages: Vec<Value> = self
            .messages
            .iter()
            .map(|m| {
                let mut v = json!({"category": "ERROR", "code": m.code, "text": m.text});
                if let Some(p) = &m.path {
                    v["path"] = json!(p);
                }
                v
            })
            .collect();
        Some(json!({ "tppMessages": messages }))
    }
}
