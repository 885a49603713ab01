//! Keyset pagination shared by every list of the merchant API: newest first, `limit` 1 to
//! 100 (default 20), and an opaque `cursor` naming the last row of the previous page as
//! `(created_at, id)`. An empty `cursor` means "from the start", as no cursor does.

use crate::api::error::FieldError;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A keyset position: `(created_at, id)` of the last row of the previous page.
pub type Cursor = (DateTime<Utc>, Uuid);

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

pub fn encode_cursor((created_at, id): Cursor) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        created_at.to_rfc3339(),
        id
    ))
}

pub fn decode_cursor(cursor: &str) -> Option<Cursor> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (ts, id) = text.split_once('|')?;
    Some((
        DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc),
        id.parse().ok()?,
    ))
}

/// The page size and the position to continue after; violations are pushed to `errors`.
pub fn limit_and_cursor(
    limit: Option<i64>,
    cursor: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> (i64, Option<Cursor>) {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        errors.push(FieldError::new("limit", "out_of_range", "must be 1 to 100"));
    }
    let after = match cursor.filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            let after = decode_cursor(c);
            if after.is_none() {
                errors.push(FieldError::new(
                    "cursor",
                    "invalid",
                    "not a cursor this API gave",
                ));
            }
            after
        }
    };
    (limit, after)
}

/// One page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    /// Give it as `cursor` for the next page; `null` on the last one.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The pagination parameters of every list, as the API description lists them.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    #[param(nullable = false, minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page; empty or absent: from the newest
    #[param(nullable = false)]
    cursor: Option<String>,
}

/// Cuts the extra row fetched to learn whether there is more (callers fetch `limit + 1`),
/// makes the cursor from the last row kept, and turns the rows into views.
pub fn page<R, T>(rows: Vec<R>, limit: i64, key: impl Fn(&R) -> Cursor) -> Page<T>
where
    T: for<'a> From<&'a R>,
{
    page_with(rows, limit, key, |r| T::from(r))
}

/// As [`page`], each row shown by `show`.
pub fn page_with<R, T>(
    mut rows: Vec<R>,
    limit: i64,
    key: impl Fn(&R) -> Cursor,
    show: impl Fn(&R) -> T,
) -> Page<T> {
    let has_more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next_cursor = if has_more {
        rows.last().map(|r| encode_cursor(key(r)))
    } else {
        None
    };
    Page {
        data: rows.iter().map(show).collect(),
        has_more,
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_an_empty_one_starts_from_the_beginning() {
        let at = DateTime::from_timestamp_millis(1_764_000_000_123).unwrap();
        let id = Uuid::now_v7();
        let mut errors = Vec::new();
        let c = encode_cursor((at, id));
        assert_eq!(
            limit_and_cursor(None, Some(&c), &mut errors),
            (DEFAULT_LIMIT, Some((at, id)))
        );
        assert_eq!(limit_and_cursor(Some(5), Some(""), &mut errors), (5, None));
        assert!(errors.is_empty(), "{errors:?}");
        limit_and_cursor(Some(0), Some("nope"), &mut errors);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["limit", "cursor"]);
    }
}
