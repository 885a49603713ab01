//! The log of requests received under `/personal`, so tests can check what the client really
//! sent. `X-IBM-Client-Secret` is left out and the bearer token masked; bodies are kept as
//! received (they only ever hold sandbox data). The log keeps the latest 10,000 entries.

use std::collections::VecDeque;

use axum::http::{HeaderMap, HeaderValue, Method, header};
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

/// One request as the log keeps it: the path, the headers (minus secrets) and the body in
/// one buffer, so that recording costs one allocation per request instead of one per header
/// name, value, path and body. [`RecordedRequest`]s are made from it only when read.
#[derive(Debug)]
pub(crate) struct RequestEntry {
    seq: u64,
    received_at: DateTime<Utc>,
    method: Method,
    operation: Option<Operation>,
    pub status: Option<u16>,
    pub fault: Option<&'static str>,
    /// The path and query, then each kept header as `name:value\n`, then the body.
    text: Box<[u8]>,
    path_end: usize,
    body_start: usize,
}

/// The bearer token is masked: only the scheme is kept.
fn masked_authorization(value: &HeaderValue) -> &str {
    value
        .to_str()
        .ok()
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("")
}

const REDACTED: &[u8] = b" <redacted>";

impl RequestEntry {
    /// Records a request; `x-ibm-client-secret` is left out and the bearer token masked.
    pub fn new(
        received_at: DateTime<Utc>,
        method: &Method,
        path: &str,
        operation: Option<Operation>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> RequestEntry {
        let kept = || {
            headers
                .iter()
                .filter(|(name, _)| *name != "x-ibm-client-secret")
        };
        let headers_len: usize = kept()
            .map(|(name, value)| {
                let value_len = if name == header::AUTHORIZATION {
                    masked_authorization(value).len() + REDACTED.len()
                } else {
                    value.len()
                };
                name.as_str().len() + value_len + 2
            })
            .sum();
        let mut text = Vec::with_capacity(path.len() + headers_len + body.len());
        text.extend_from_slice(path.as_bytes());
        let path_end = text.len();
        for (name, value) in kept() {
            text.extend_from_slice(name.as_str().as_bytes());
            text.push(b':');
            if name == header::AUTHORIZATION {
                text.extend_from_slice(masked_authorization(value).as_bytes());
                text.extend_from_slice(REDACTED);
            } else {
                // Header values never hold a line feed (hyper refuses control characters).
                text.extend_from_slice(value.as_bytes());
            }
            text.push(b'\n');
        }
        let body_start = text.len();
        text.extend_from_slice(body);
        RequestEntry {
            seq: 0,
            received_at,
            method: method.clone(),
            operation,
            status: None,
            fault: None,
            text: text.into_boxed_slice(),
            path_end,
            body_start,
        }
    }

    fn to_recorded(&self) -> RecordedRequest {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let headers = self.text[self.path_end..self.body_start]
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                // Header names hold no colon: the first one ends the name.
                let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                let value = line.get(colon + 1..).unwrap_or_default();
                (lossy(&line[..colon]), lossy(value))
            })
            .collect();
        RecordedRequest {
            seq: self.seq,
            received_at: self.received_at,
            method: self.method.as_str().to_owned(),
            path: lossy(&self.text[..self.path_end]),
            operation: self.operation,
            headers,
            body: lossy(&self.text[self.body_start..]),
            status: self.status,
            fault: self.fault.map(str::to_owned),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: VecDeque<RequestEntry>,
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

    pub fn push(&mut self, mut entry: RequestEntry) {
        self.next_seq += 1;
        entry.seq = self.next_seq;
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    pub fn entries(&self) -> Vec<RecordedRequest> {
        self.entries.iter().map(RequestEntry::to_recorded).collect()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_request_reads_back_as_received_without_its_secrets() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ibm-client-id", HeaderValue::from_static("app"));
        headers.insert("x-ibm-client-secret", HeaderValue::from_static("s3cret"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer token-value"),
        );
        headers.append("x-multi", HeaderValue::from_static("one: 1"));
        headers.append("x-multi", HeaderValue::from_static(""));
        headers.insert(
            "x-latin",
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is allowed"),
        );
        let at = Utc::now();
        let mut log = RequestLog::with_capacity(2);
        let mut entry = RequestEntry::new(
            at,
            &Method::POST,
            "/personal/v5/authorize/token?x=1",
            Some(Operation::Token),
            &headers,
            "a=1\nb=\u{e9}".as_bytes(),
        );
        entry.status = Some(201);
        entry.fault = Some("latency");
        log.push(entry);
        let got = log.entries().remove(0);
        assert_eq!(got.seq, 1);
        assert_eq!(got.received_at, at);
        assert_eq!(got.method, "POST");
        assert_eq!(got.path, "/personal/v5/authorize/token?x=1");
        assert_eq!(got.operation, Some(Operation::Token));
        assert_eq!(got.body, "a=1\nb=\u{e9}");
        assert_eq!(got.status, Some(201));
        assert_eq!(got.fault.as_deref(), Some("latency"));
        let expected: Vec<(String, String)> = [
            ("x-ibm-client-id", "app"),
            ("authorization", "Bearer <redacted>"),
            ("x-multi", "one: 1"),
            ("x-multi", ""),
            ("x-latin", "caf\u{fffd}"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        assert_eq!(got.headers, expected);
        assert!(got.header("X-IBM-Client-Secret").is_none());
    }

    #[test]
    fn the_log_keeps_only_its_capacity_and_numbers_every_request() {
        let mut log = RequestLog::with_capacity(2);
        for path in ["/a", "/b", "/c"] {
            log.push(RequestEntry::new(
                Utc::now(),
                &Method::GET,
                path,
                None,
                &HeaderMap::new(),
                b"",
            ));
        }
        let got = log.entries();
        assert_eq!(
            got.iter()
                .map(|r| (r.seq, r.path.as_str()))
                .collect::<Vec<_>>(),
            [(2, "/b"), (3, "/c")]
        );
    }
}
