//! Extractors whose rejections are our problem+json, never axum's plain text.
//!
//! `ApiJson` reads the body itself so that a type or shape error can name the exact field
//! (`creditor.account.value`) instead of a generic message.

use crate::api::error::{ApiError, FieldError};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// A JSON body. Wrong content type → 415; too large → 413; not JSON → 400; JSON of the wrong
/// shape, or a number beyond a 64-bit float (`1e400`) → 422 naming the field.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(not_json());
        }
        parse_json(&read_body(req, state).await?).map(ApiJson)
    }
}

/// A JSON body that may be left out: no body at all is `None`; a body follows the rules of
/// [`ApiJson`].
pub struct OptionalApiJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(&req);
        let bytes = read_body(req, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalApiJson(None));
        }
        if !json {
            return Err(not_json());
        }
        parse_json(&bytes).map(|v| OptionalApiJson(Some(v)))
    }
}

/// A JSON value whose objects' keys are each given once: a repeated key is refused (422
/// `duplicate_field` naming it), never read as its last value, which another reader of the
/// same bytes (a proxy, a WAF, the merchant's own log) may read as its first. Typed bodies
/// get the same refusal from serde's derive.
#[derive(Debug, Clone, PartialEq)]
pub struct StrictValue(pub serde_json::Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate field `{key}`"
                )));
            }
            let StrictValue(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(serde_json::Value::Object(object))
    }
}

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

fn not_json() -> ApiError {
    ApiError::UnsupportedMediaType("send the body as application/json".into())
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(format!("cannot read the request body: {rejection}"))
        }
    })
}

/// Parses JSON into `T`, telling syntax errors (400) from shape errors (422 naming the field).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let path = e.path().to_string();
                let field = if path == "." { String::new() } else { path };
                let message = strip_position(&inner.to_string());
                let code = if message.starts_with("missing field") {
                    "required"
                } else if message.starts_with("unknown field") {
                    "unknown_field"
                } else if message.starts_with("duplicate field") {
                    "duplicate_field"
                } else {
                    "invalid_type"
                };
                // A missing or repeated field is named by its own path, not its object's.
                let named = message
                    .strip_prefix("missing field `")
                    .or_else(|| message.strip_prefix("duplicate field `"));
                let field = match (field.is_empty(), named) {
                    (_, Some(rest)) => {
                        let name = rest.split('`').next().unwrap_or_default();
                        if field.is_empty() {
                            name.to_owned()
                        } else {
                            format!("{field}.{name}")
                        }
                    }
                    (true, None) => "body".to_owned(),
                    (false, None) => field,
                };
                ApiError::Validation(vec![FieldError::new(field, code, message)])
            }
            // Well-formed JSON whose number no 64-bit float holds (`1e400`): the value is
            // wrong, not the syntax, so it is named like any other wrong value.
            serde_json::error::Category::Syntax
                if inner.to_string().starts_with("number out of range") =>
            {
                let path = e.path().to_string();
                ApiError::Validation(vec![FieldError::new(
                    if path == "." { "body".to_owned() } else { path },
                    "out_of_range",
                    "must be a number a 64-bit float can hold",
                )])
            }
            // Well-formed JSON nested past what the parser reads (128 levels): named by the
            // top-level field it is nested in, like metadata past its own limit.
            serde_json::error::Category::Syntax
                if inner.to_string().starts_with("recursion limit exceeded") =>
            {
                let path = e.path().to_string();
                let top = path
                    .split(['.', '['])
                    .next()
                    .filter(|f| !f.is_empty())
                    .unwrap_or("body");
                ApiError::Validation(vec![FieldError::new(
                    top,
                    "too_deep",
                    "is nested too deeply to be read",
                )])
            }
            _ => ApiError::MalformedJson(inner.to_string()),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
}

/// serde_json appends " at line 1 column 12"; useful for syntax errors, noise for data errors.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// For optional fields where `null` must be told from absence: absent is `None` (through
/// `#[serde(default)]`), present is `Some(value)` and `null` is `Some(None)`.
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// A field read with [`present`] that may be left out but not be `null`: its value if
/// given; `null` is pushed to `errors` as [`not_nullable`].
pub fn non_null<T>(
    field: &str,
    value: Option<Option<T>>,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    match value {
        Some(None) => {
            errors.push(not_nullable(field));
            None
        }
        other => other.flatten(),
    }
}

/// `null` given for a field that cannot be null.
fn not_nullable(field: &str) -> FieldError {
    FieldError::new(
        field,
        "not_nullable",
        "must not be null; leave it out instead",
    )
}

/// Query parameters, with a 400 naming the parameter on failure.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let field = e.path().to_string();
                let message = e.inner().to_string();
                // A parameter given twice is named, as `GET /v1/payments` names it.
                if let Some(name) = duplicated(&message) {
                    return ApiError::Validation(vec![FieldError::new(
                        name,
                        "duplicate",
                        "give it at most once",
                    )]);
                }
                ApiError::Validation(vec![FieldError::new(
                    if field == "." {
                        "query".to_owned()
                    } else {
                        field
                    },
                    "invalid_query",
                    message,
                )])
            })
    }
}

/// The parameter serde names in "duplicate field `limit`", if that is the error.
fn duplicated(message: &str) -> Option<&str> {
    message
        .strip_prefix("duplicate field `")?
        .split_once('`')
        .map(|(name, _)| name)
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

/// A path parameter; a value of the wrong shape (e.g. not a UUID) answers 404 for the
/// resource, as a lookup of something that cannot exist.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|_| ApiError::NotFound("resource"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The (field, code) pairs `parse_json` refuses `body` with; panics on anything else.
    fn field_codes<T: DeserializeOwned + std::fmt::Debug>(body: &[u8]) -> Vec<(String, String)> {
        match parse_json::<T>(body) {
            Err(ApiError::Validation(errors)) => {
                errors.into_iter().map(|e| (e.field, e.code)).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_number_beyond_a_float_is_named_by_its_path_and_bad_syntax_is_still_malformed() {
        let named = field_codes::<serde_json::Value>;
        assert_eq!(
            named(br#"{"metadata": {"n": 1e400}}"#),
            [("metadata.n".to_owned(), "out_of_range".to_owned())]
        );
        assert_eq!(
            named(br#"{"a": [1, -1e400]}"#),
            [("a[1]".to_owned(), "out_of_range".to_owned())]
        );
        assert_eq!(
            named(b"1e400"),
            [("body".to_owned(), "out_of_range".to_owned())]
        );
        assert!(matches!(
            parse_json::<serde_json::Value>(br#"{"n": 1e}"#),
            Err(ApiError::MalformedJson(_))
        ));
    }

    #[test]
    fn json_nested_past_the_parsers_limit_is_named_by_its_top_level_field() {
        let named = field_codes::<StrictValue>;
        let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
        let too_deep = |f: &str| vec![(f.to_owned(), "too_deep".to_owned())];
        assert_eq!(
            named(format!(r#"{{"metadata": {{"a": {}}}}}"#, deep(300)).as_bytes()),
            too_deep("metadata")
        );
        assert_eq!(named(deep(300).as_bytes()), too_deep("body"));
        // Within the limit it parses; unbalanced nesting is still bad syntax.
        assert!(parse_json::<StrictValue>(deep(100).as_bytes()).is_ok());
        assert!(matches!(
            parse_json::<StrictValue>("[".repeat(50).as_bytes()),
            Err(ApiError::MalformedJson(_))
        ));
    }

    #[test]
    fn a_repeated_key_is_refused_by_its_path_never_read_as_its_last_value() {
        let named = field_codes::<StrictValue>;
        let dup = |f: &str| vec![(f.to_owned(), "duplicate_field".to_owned())];
        assert_eq!(
            named(br#"{"amount": "1.00", "amount": "9999.00"}"#),
            dup("amount")
        );
        assert_eq!(
            named(br#"{"creditor": {"name": "A", "account": {"value": "x", "value": "y"}}}"#),
            dup("creditor.account.value")
        );
        assert_eq!(
            named(br#"{"a": [{"k": 1}, {"k": 1, "k": 2}]}"#),
            dup("a[1].k")
        );
        // The same bytes without a repeat read as serde_json reads them.
        let body =
            br#"{"a": [1, 2.5, -3, null, true, "s"], "b": {"c": {}}, "n": 18446744073709551615}"#;
        assert_eq!(
            parse_json::<StrictValue>(body).unwrap().0,
            serde_json::from_slice::<serde_json::Value>(body).unwrap()
        );
    }
}
