//! The log of requests received under `/personal`, so tests can check what the client really
//! sent. `X-IBM-Client-Secret` is left out and the bearer token masked; bodies are kept as
//! received (they only ever hold sandbox data). The log keeps the latest 10,000 entries.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Operation;

/// One request as received and how it was answered.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    /// Position in the sandbox's life (1 for the first request).
    pub seq: u64,
    pub received_at: DateTime<Utc>,
    pub method: String,
    /// Path and query as received, with the `/personal` prefix.
    pub path: String,
    /// `None` for a path that is not one of Nordea's calls.
    pub operation: Option<Operation>,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
    /// The HTTP status answered; `None` when the connection was dropped.
    pub status: Option<u16>,
    /// The injected fault, if any (`latency` included).
    pub fault: Option<String>,
}

impl RecordedRequest {
    /// The value of a recorded header (names are compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Headers minus secrets.
pub(crate) fn safe_headers(headers: &axum::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str() != "x-ibm-client-secret")
        .map(|(name, value)| {
            let value = if name.as_str() == "authorization" {
                let scheme = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.split_whitespace().next())
                    .unwrap_or("");
                format!("{scheme} <redacted>")
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_owned(), value)
        })
        .collect()
}

#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: VecDeque<RecordedRequest>,
    next_seq: u64,
    capacity: usize,
}

impl RequestLog {
    pub fn with_capacity(capacity: usize) -> RequestLog {
        RequestLog {
            capacity: capacity.max(1),
            ..RequestLog::default()
        }
    }

    pub fn push(&mut self, mut entry: RecordedRequest) {
        self.next_seq += 1;
        entry.seq = self.next_seq;
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    pub fn entries(&self) -> Vec<RecordedRequest> {
        self.entries.iter().cloned().collect()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
