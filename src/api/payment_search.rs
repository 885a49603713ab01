//! The query of `GET /v1/payments`: pagination, filters and search, every violation named.
//!
//! Parameters (each at most once; anything else is a 422 naming it):
//! - `limit`, `cursor`: see [`crate::api::pagination`] (an empty `cursor` is the start).
//! - `status`: one of the merchant-visible statuses.
//! - `created_gte`, `created_lt`: RFC 3339 date-times (four-digit years, as PostgreSQL holds).
//! - `reference` (the merchant's own), `psu_id`: exact match, 1 to 128 characters, no
//!   control characters (a payment cannot have them, and PostgreSQL refuses NUL in text).
//! - `metadata[KEY]=VALUE`: the payment's metadata holds KEY with exactly the string VALUE
//!   (numbers or booleans in metadata are not matched); at most 10 such filters, all must hold.
//!   Neither KEY nor VALUE may hold NUL (U+0000), which no payment's metadata holds (jsonb
//!   cannot); other control characters are matched as given, as metadata may hold them.
//! - `amount_gte`, `amount_lte`: decimal strings as the `amount` of a payment (`10`, `10.5`,
//!   `10.50`), never minor units or floats; both bounds are inclusive. They are read in
//!   `currency`'s decimals when it is given, else in two (every supported currency has two);
//!   without `currency` they compare amounts of every currency.
//! - `currency`: EUR, DKK, SEK or NOK.

use crate::api::error::{ApiError, FieldError};
use crate::api::pagination;
use crate::domain::PaymentStatus;
use crate::domain::money::{Currency, Money, MoneyError};
use crate::ledger::payments::ListFilter;
use chrono::{DateTime, Utc};

const MAX_TEXT_CHARS: usize = 128;
const MAX_METADATA_FILTERS: usize = 10;
const MAX_METADATA_VALUE_CHARS: usize = 500;

/// The parameters [`parse`] reads, as the API description lists them (the parser reads
/// the raw pairs itself to name every duplicate and unknown one).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SearchParams {
    #[param(inline, nullable = false)]
    status: Option<PaymentStatus>,
    #[param(nullable = false)]
    created_gte: Option<DateTime<Utc>>,
    #[param(nullable = false)]
    created_lt: Option<DateTime<Utc>>,
    /// The merchant's own reference, exactly
    #[param(nullable = false, min_length = 1, max_length = 128)]
    reference: Option<String>,
    /// The merchant's id for the shopper, exactly
    #[param(nullable = false, min_length = 1, max_length = 128)]
    psu_id: Option<String>,
    /// `metadata[KEY]=VALUE`: the payment's metadata holds KEY with exactly the string VALUE (numbers and booleans are not matched); all given must hold
    #[param(value_type = MetadataFilter, inline, required = false, style = DeepObject, explode)]
    metadata: Option<std::collections::HashMap<String, String>>,
    /// At least this amount (inclusive), a decimal string like `amount` (never minor units), read in `currency`'s decimals (two for every supported currency)
    #[param(nullable = false, pattern = r"^(0|[1-9][0-9]{0,10})(\.[0-9]{1,2})?$")]
    amount_gte: Option<String>,
    /// At most this amount (inclusive), a decimal string like `amount`
    #[param(nullable = false, pattern = r"^(0|[1-9][0-9]{0,10})(\.[0-9]{1,2})?$")]
    amount_lte: Option<String>,
    /// Only payments in this currency
    #[param(inline, nullable = false)]
    currency: Option<crate::api::openapi::Currency>,
}

/// `metadata[KEY]=VALUE` filters: at most [`MAX_METADATA_FILTERS`], each value at most
/// [`MAX_METADATA_VALUE_CHARS`].
pub struct MetadataFilter;

impl utoipa::PartialSchema for MetadataFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(AdditionalProperties::RefOr(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(MAX_METADATA_VALUE_CHARS))
                    .into(),
            )))
            .max_properties(Some(MAX_METADATA_FILTERS))
            .into()
    }
}

impl utoipa::ToSchema for MetadataFilter {}

/// A list request that passed every rule.
#[derive(Debug)]
pub struct Search {
    pub limit: i64,
    pub filter: ListFilter,
}

/// Reads the query's `(name, value)` pairs, in order.
pub fn parse(pairs: Vec<(String, String)>) -> Result<Search, ApiError> {
    let mut errors = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let mut raw = Raw::default();
    for (name, value) in pairs {
        if seen.contains(&name) {
            errors.push(FieldError::new(&name, "duplicate", "give it at most once"));
            continue;
        }
        seen.push(name.clone());
        let slot = match name.as_str() {
            "limit" => &mut raw.limit,
            "cursor" => &mut raw.cursor,
            "status" => &mut raw.status,
            "created_gte" => &mut raw.created_gte,
            "created_lt" => &mut raw.created_lt,
            "reference" => &mut raw.reference,
            "psu_id" => &mut raw.psu_id,
            "amount_gte" => &mut raw.amount_gte,
            "amount_lte" => &mut raw.amount_lte,
            "currency" => &mut raw.currency,
            _ => {
                match metadata_key(&name) {
                    Some(key) => raw.metadata.push((key.to_owned(), value)),
                    None => errors.push(FieldError::new(
                        &name,
                        "unknown_field",
                        "is not a parameter of this list",
                    )),
                }
                continue;
            }
        };
        *slot = Some(value);
    }
    let filter = raw.validate(&mut errors);
    let (limit, after) = pagination::limit_and_cursor(
        raw.limit
            .as_deref()
            .and_then(|l| integer("limit", l, &mut errors)),
        raw.cursor.as_deref(),
        &mut errors,
    );
    if errors.is_empty() {
        Ok(Search {
            limit,
            filter: ListFilter { after, ..filter },
        })
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// `metadata[KEY]` → KEY (non-empty, at most 128 characters).
fn metadata_key(name: &str) -> Option<&str> {
    let key = name.strip_prefix("metadata[")?.strip_suffix(']')?;
    (!key.is_empty() && key.chars().count() <= MAX_TEXT_CHARS).then_some(key)
}

fn integer(field: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    value
        .parse()
        .map_err(|_| errors.push(FieldError::new(field, "invalid_type", "must be an integer")))
        .ok()
}

/// The parameters as given, before any rule.
#[derive(Debug, Default)]
struct Raw {
    limit: Option<String>,
    cursor: Option<String>,
    status: Option<String>,
    created_gte: Option<String>,
    created_lt: Option<String>,
    reference: Option<String>,
    psu_id: Option<String>,
    amount_gte: Option<String>,
    amount_lte: Option<String>,
    currency: Option<String>,
    metadata: Vec<(String, String)>,
}

impl Raw {
    /// Every filter, each violation pushed to `errors` (the cursor is left to the caller).
    fn validate(&self, errors: &mut Vec<FieldError>) -> ListFilter {
        let status = self.status.clone().filter(|s| {
            let ok = PaymentStatus::parse(s).is_some();
            if !ok {
                errors.push(FieldError::new(
                    "status",
                    "invalid",
                    format!(
                        "must be one of {}",
                        PaymentStatus::ALL.map(|s| s.as_str()).join(", ")
                    ),
                ));
            }
            ok
        });
        let currency = self.currency.as_deref().and_then(|c| {
            let found = Currency::from_code(c);
            if found.is_none() {
                errors.push(FieldError::new(
                    "currency",
                    "unsupported_currency",
                    "must be one of EUR, DKK, SEK, NOK",
                ));
            }
            found
        });
        let amount = |field: &str, errors: &mut Vec<FieldError>, value: &Option<String>| {
            let value = value.as_deref()?;
            match Money::parse(value, currency.unwrap_or(Currency::Eur)) {
                Ok(m) => Some(m.minor()),
                // No payment is of zero, but a bound may be (`amount_gte=0`: from nothing),
                // as the published pattern says.
                Err(MoneyError::Zero) => Some(0),
                Err(e) => {
                    errors.push(FieldError::new(field, e.code(), e.to_string()));
                    None
                }
            }
        };
        let amount_gte = amount("amount_gte", errors, &self.amount_gte);
        let amount_lte = amount("amount_lte", errors, &self.amount_lte);
        if let (Some(low), Some(high)) = (amount_gte, amount_lte)
            && low > high
        {
            errors.push(FieldError::new(
                "amount_lte",
                "below_amount_gte",
                "must not be below amount_gte",
            ));
        }
        if self.metadata.len() > MAX_METADATA_FILTERS {
            errors.push(FieldError::new(
                "metadata",
                "too_many",
                format!("at most {MAX_METADATA_FILTERS} metadata filters"),
            ));
        }
        for (key, value) in &self.metadata {
            if key.contains('\0') || value.contains('\0') {
                // PostgreSQL's jsonb cannot hold U+0000: refused as creation refuses it.
                errors.push(FieldError::new(
                    format!("metadata[{key}]"),
                    "invalid_characters",
                    "must not contain the NUL character (U+0000)",
                ));
            } else if value.chars().count() > MAX_METADATA_VALUE_CHARS {
                errors.push(FieldError::new(
                    format!("metadata[{key}]"),
                    "too_long",
                    format!("must be at most {MAX_METADATA_VALUE_CHARS} characters"),
                ));
            }
        }
        ListFilter {
            status,
            created_gte: date_time("created_gte", &self.created_gte, errors),
            created_lt: date_time("created_lt", &self.created_lt, errors),
            reference: text("reference", &self.reference, errors),
            psu_id: text("psu_id", &self.psu_id, errors),
            metadata: self.metadata.clone(),
            amount_gte,
            amount_lte,
            currency: currency.map(|c| c.code().to_owned()),
            after: None,
        }
    }
}

/// An RFC 3339 date-time with a four-digit year (chrono's own parser, strict), so always
/// within PostgreSQL's range; anything else is pushed to `errors` naming `field`. Every
/// date-time filter of the merchant API is read with it (`GET /v1/events` too).
pub(crate) fn date_time(
    field: &str,
    value: &Option<String>,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    let value = value.as_deref()?;
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            errors.push(FieldError::new(
                field,
                "invalid_type",
                "must be an RFC 3339 date-time such as 2026-11-28T12:00:00Z",
            ))
        })
        .ok()
}

fn text(field: &str, value: &Option<String>, errors: &mut Vec<FieldError>) -> Option<String> {
    let value = value.as_deref()?;
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_TEXT_CHARS {
        errors.push(FieldError::new(
            field,
            "invalid_length",
            format!("must be 1 to {MAX_TEXT_CHARS} characters"),
        ));
        return None;
    }
    if value.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            "invalid_characters",
            "must not contain control characters",
        ));
        return None;
    }
    Some(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &[(&str, &str)]) -> Result<Search, ApiError> {
        parse(
            q.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn fields(q: &[(&str, &str)]) -> Vec<(String, String)> {
        match query(q) {
            Err(ApiError::Validation(errors)) => {
                errors.into_iter().map(|e| (e.field, e.code)).collect()
            }
            other => panic!("{:?}", other.map(|s| s.filter)),
        }
    }

    #[test]
    fn every_filter_is_read_and_amounts_are_decimal_strings_in_minor_units() {
        let s = query(&[
            ("reference", "order-1"),
            ("psu_id", "shopper-9"),
            ("metadata[order_id]", "o-1"),
            ("metadata[channel]", "web"),
            ("amount_gte", "10.5"),
            ("amount_lte", "100"),
            ("currency", "SEK"),
            ("status", "paid"),
            ("created_gte", "2026-11-01T00:00:00Z"),
            ("cursor", ""),
            ("limit", "5"),
        ])
        .unwrap();
        let f = s.filter;
        assert_eq!(s.limit, 5);
        assert_eq!(f.reference.as_deref(), Some("order-1"));
        assert_eq!(f.psu_id.as_deref(), Some("shopper-9"));
        assert_eq!(
            f.metadata,
            [
                ("order_id".to_owned(), "o-1".to_owned()),
                ("channel".to_owned(), "web".to_owned())
            ]
        );
        assert_eq!((f.amount_gte, f.amount_lte), (Some(1050), Some(10000)));
        assert_eq!(f.currency.as_deref(), Some("SEK"));
        assert!(f.after.is_none());
    }

    #[test]
    fn every_violation_is_named() {
        assert_eq!(
            fields(&[
                ("amount_gte", "10.505"),
                ("amount_lte", "-1"),
                ("currency", "USD"),
                ("reference", ""),
                ("metadata[]", "x"),
                ("colour", "red"),
                ("limit", "ten"),
                ("status", "paid"),
                ("status", "failed"),
            ]),
            [
                ("metadata[]", "unknown_field"),
                ("colour", "unknown_field"),
                ("status", "duplicate"),
                ("currency", "unsupported_currency"),
                ("amount_gte", "too_many_decimals"),
                ("amount_lte", "negative_amount"),
                ("reference", "invalid_length"),
                ("limit", "invalid_type"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!(
            fields(&[("amount_gte", "20"), ("amount_lte", "10")]),
            [("amount_lte".to_owned(), "below_amount_gte".to_owned())]
        );
    }

    #[test]
    fn a_bound_of_zero_is_a_bound_as_the_pattern_says() {
        for zero in ["0", "0.0", "0.00"] {
            let s = query(&[("amount_gte", zero), ("amount_lte", zero)]).unwrap();
            assert_eq!(
                (s.filter.amount_gte, s.filter.amount_lte),
                (Some(0), Some(0))
            );
        }
    }

    #[test]
    fn a_date_time_has_a_four_digit_year() {
        // chrono's lenient parse (serde's) takes all three; PostgreSQL refuses the first.
        for far in [
            "-5000-01-01T00:00:00Z",
            "+262142-01-01T00:00:00Z",
            "+10000-01-01T00:00:00Z",
        ] {
            let mut errors = Vec::new();
            assert_eq!(
                date_time("created_gte", &Some(far.into()), &mut errors),
                None
            );
            assert_eq!(errors.len(), 1, "{far}");
        }
    }

    #[test]
    fn text_filters_have_no_control_character_and_metadata_no_nul() {
        assert_eq!(
            fields(&[
                ("reference", "a\0b"),
                ("psu_id", "tab\there"),
                ("metadata[order]", "\0"),
                ("metadata[\0]", "x"),
            ]),
            [
                ("metadata[order]", "invalid_characters"),
                ("metadata[\0]", "invalid_characters"),
                ("reference", "invalid_characters"),
                ("psu_id", "invalid_characters"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        let s = query(&[("metadata[note]", "line\nbreak")]).unwrap();
        assert_eq!(
            s.filter.metadata[0].1, "line\nbreak",
            "metadata may hold it"
        );
    }
}
