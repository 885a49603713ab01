//! The OpenAPI 3.1 description of the merchant API and of the webhooks it sends, generated
//! from the code with utoipa: each handler carries its `#[utoipa::path]` (operation id, tag,
//! parameters, body, its own answers), each view and request body derives `ToSchema`, and
//! this module adds what every operation shares by rule:
//!
//! - every `/v1` operation can answer 401 (no or a bad key), 429 (rate limited), 500 and 503
//!   (the database is unreachable, or the request ran past the server's deadline); one that
//!   takes a body also 400 (not JSON), 413 (too large) and 415 (not JSON);
//! - every answer carries `X-Request-Id`, every answer past authentication the
//!   `X-RateLimit-*` headers, a 429 and a 503 `Retry-After`, and every answer of an
//!   operation that takes an `Idempotency-Key` (except 401, 429 and 500) may be a replay
//!   (`Idempotent-Replayed`).
//!
//! Served at `/openapi.json`; `pisgate openapi` prints it, and the committed `openapi.json`
//! at the repository root (for SDK generators) is checked to equal it.

use crate::api::error::Problem;
pub use crate::domain::schema::{AccountType, Urgency};
use crate::ledger::view::{Creditor, Debtor, Recurring};
use chrono::NaiveDate;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::LazyLock;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

/// The answer to a request that broke a rule.
pub const INVALID: &str = "Validation failed: one entry per invalid field in `errors`";
/// The answer for an id that is not the merchant's.
pub const NOT_FOUND: &str = "Not found (or another merchant's)";

/// The answer to a key in its rotation grace on an operation it may not use.
pub const KEY_IN_GRACE: &str = "key_in_grace: the API key was rotated away and is in its grace period; it may only create and read payments. Use the merchant's current key";

/// `application/problem+json`, the content type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pisgate",
        version = "1",
        description = "Account-to-account payments from shoppers' bank accounts in DK, FI, NO and SE (Nordea, and banks speaking the Berlin Group NextGenPSD2 API) with one strong customer authentication. Every /v1 call authenticates with `Authorization: Bearer <api key>`. Errors are RFC 9457 problem documents with a stable `code` and the `request_id`. Amounts are decimal strings with the currency's two decimals; never floats.",
        license(name = "Proprietary", identifier = "LicenseRef-Proprietary"),
    ),
    servers((url = "/")),
    security(("apiKey" = [])),
    paths(
        crate::api::merchant::get_merchant,
        crate::api::merchant::update_merchant,
        crate::api::banks::list_banks,
        crate::api::payments::create_payment,
        crate::api::payments::list_payments,
        crate::api::payments::get_payment,
        crate::api::payments::payment_events,
        crate::api::payments::cancel_payment,
        crate::api::payments::payment_funds,
        crate::api::webhooks::create_endpoint,
        crate::api::webhooks::list_endpoints,
        crate::api::webhooks::get_endpoint,
        crate::api::webhooks::delete_endpoint,
        crate::api::webhooks::update_endpoint,
        crate::api::webhooks::rotate_secret,
        crate::api::webhooks::enable_endpoint,
        crate::api::webhooks::list_deliveries,
        crate::api::webhooks::replay_delivery,
        crate::api::webhooks::replay_dead,
        crate::api::events::list_events,
        crate::api::events::get_event,
        crate::api::api_keys::list_keys,
        crate::api::api_keys::create_key,
        crate::api::api_keys::revoke_key,
    ),
    components(schemas(
        Problem,
        crate::ledger::merchants::Merchant,
        crate::ledger::view::Account,
        PaymentCreate,
        crate::ledger::view::PaymentView,
        crate::ledger::events::StoredEvent,
        crate::api::webhooks::EndpointView,
        crate::api::webhooks::DeliveryView,
        WebhookEvent,
        crate::api::api_keys::KeyView,
    )),
    tags(
        (name = "Payments", description = "Account-to-account payments: create, read, list and search, cancel"),
        (name = "Events", description = "Every event that is or would be sent as a webhook, for reconciliation"),
        (name = "Webhook endpoints", description = "Where events are delivered, their signing secrets and deliveries"),
        (name = "API keys", description = "The merchant's API keys"),
        (name = "Merchant", description = "The calling merchant's profile"),
        (name = "Banks", description = "The banks payments can go to, and what each needs"),
    ),
    modifiers(&Shared),
)]
struct ApiDoc;

/// The document as served, generated once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let mut text = serde_json::to_string_pretty(&document()).expect("the document serialises");
    text.push('\n');
    text
});

/// The document as served at `/openapi.json` and printed by `pisgate openapi`.
pub fn json() -> &'static str {
    &DOCUMENT
}

/// The document as a JSON value: utoipa's, with what OpenAPI 3.1 has and utoipa 5 does not
/// model (reusable headers, a header's `required`, webhooks).
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    doc["components"]["headers"] = headers();
    refer_to_page_items(&mut doc["components"]["schemas"]);
    for item in doc["paths"].as_object_mut().expect("paths").values_mut() {
        for op in item.as_object_mut().expect("a path item").values_mut() {
            declare_headers(op);
            body_is_never_null(op);
        }
    }
    let mut webhook =
        serde_json::to_value(<__path_payment_event_webhook as utoipa::Path>::operation())
            .expect("the webhook serialises");
    // What `OpenApi` does for the paths it lists.
    webhook["tags"] = json!(<__path_payment_event_webhook as utoipa::__dev::Tags>::tags());
    doc["webhooks"] = json!({ "payment-event": { "post": webhook } });
    doc
}

/// utoipa 5 inlines a generic's type parameter (`Page<Payment>`'s items are a copy of
/// `Payment`; juhaku/utoipa#1586): each `Page_X`'s items refer to `X` instead, so SDKs see
/// one `Payment` type.
fn refer_to_page_items(schemas: &mut Value) {
    let names: Vec<String> = schemas
        .as_object()
        .expect("schemas")
        .keys()
        .cloned()
        .collect();
    for name in names {
        let Some(item) = name.strip_prefix("Page_") else {
            continue;
        };
        assert!(
            schemas[item].is_object(),
            "{name} lists {item}, not a schema"
        );
        schemas[&name]["properties"]["data"]["items"] =
            json!({ "$ref": format!("#/components/schemas/{item}") });
    }
}

/// The headers answers carry, declared once under `components.headers`.
fn headers() -> Value {
    let integer =
        |description: &str| json!({ "description": description, "schema": { "type": "integer" } });
    json!({
        "X-Request-Id": {
            "description": "The request's id (also in every problem's `request_id` and in our logs)",
            "required": true,
            "schema": { "type": "string" }
        },
        "X-RateLimit-Limit": integer("Requests allowed per window for this merchant"),
        "X-RateLimit-Remaining": integer("Requests left in the current window"),
        "X-RateLimit-Reset": integer("Seconds until the window resets"),
        "Retry-After": integer("Seconds to wait before retrying"),
        "Idempotent-Replayed": {
            "description": "`true` when this is the saved answer to an earlier request with the same Idempotency-Key",
            "schema": { "type": "string", "enum": ["true"] }
        }
    })
}

/// The headers of each answer of an operation, by the rules in the module doc; a header an
/// operation declares itself is kept as it declares it.
fn declare_headers(op: &mut Value) {
    let idempotent = op["parameters"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["name"] == "Idempotency-Key"));
    for (status, response) in op["responses"].as_object_mut().expect("responses") {
        let mut names = vec!["X-Request-Id"];
        if status != "401" {
            names.extend([
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
            ]);
        }
        if status == "429" || status == "503" {
            names.push("Retry-After");
        }
        if idempotent && !["401", "429", "500"].contains(&status.as_str()) {
            names.push("Idempotent-Replayed");
        }
        let headers = response
            .as_object_mut()
            .expect("a response")
            .entry("headers")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("headers");
        for name in names {
            headers
                .entry(name)
                .or_insert_with(|| json!({ "$ref": format!("#/components/headers/{name}") }));
        }
    }
}

/// A body that may be left out is declared `Option<Body>`, which utoipa also makes nullable;
/// but a body is left out, never `null` (`null` is a 422).
fn body_is_never_null(op: &mut Value) {
    let Some(content) = op
        .pointer_mut("/requestBody/content")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for media in content.values_mut() {
        let Some(schema) = media.get_mut("schema") else {
            continue;
        };
        if let Some(Value::Array(one_of)) = schema.get_mut("oneOf") {
            one_of.retain(|s| s != &json!({ "type": "null" }));
            if let [only] = one_of.as_slice() {
                *schema = only.clone();
            }
        }
    }
}

/// The security scheme, and the answers every operation shares.
struct Shared;

impl Modify for Shared {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`pgk_…` API key from `pisgate merchant create`"))
                    .build(),
            ),
        );
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                add_shared_answers(op);
            }
        }
    }
}

fn add_shared_answers(op: &mut Operation) {
    let mut shared = vec![
        ("401", "Missing or invalid API key"),
        ("429", "Rate limited; see Retry-After"),
        (
            "500",
            "Internal error (details in the logs under the request_id)",
        ),
        (
            "503",
            "database_unavailable (the database cannot be reached) or deadline_exceeded (the request ran past the server's deadline; a payment creation resumes with the same Idempotency-Key): retry after Retry-After",
        ),
    ];
    if op.request_body.is_some() {
        shared.extend([
            ("400", "The body is not valid JSON"),
            ("413", "The body is larger than the limit"),
            ("415", "The body is not application/json"),
        ]);
    }
    for (status, description) in shared {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| problem(description));
    }
    // Every error answer is a problem document.
    for (status, response) in op.responses.responses.iter_mut() {
        if let RefOr::T(response) = response
            && (status.starts_with('4') || status.starts_with('5'))
            && response.content.is_empty()
        {
            *response = match problem(&response.description) {
                RefOr::T(mut problem) => {
                    problem.headers = std::mem::take(&mut response.headers);
                    problem
                }
                RefOr::Ref(_) => unreachable!("problem() builds the response"),
            };
        }
    }
}

/// A problem+json answer.
pub fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

// The handler validates the JSON itself (every violated field named at once, in
// `domain::payment`); this type only describes it.
/// The body of `POST /v1/payments`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "amount": "10.50",
    "currency": "EUR",
    "creditor": {
        "account": { "type": "IBAN", "value": "FI1410093000123458" },
        "name": "Demo shop",
        "message": "Order 1042"
    },
    "return_url": "https://shop.example/checkout/done",
    "psu_id": "shopper-1",
    "reference": "order-1042"
}))]
pub struct PaymentCreate {
    /// Decimal string, at most the currency's two decimals
    #[schema(examples("10.50"))]
    pub amount: String,
    #[schema(inline)]
    pub currency: Currency,
    #[serde(default)]
    #[schema(inline)]
    pub country: Country,
    #[schema(inline)]
    pub creditor: Creditor,
    #[serde(default)]
    #[schema(inline)]
    pub debtor: Debtor,
    #[serde(default)]
    pub execution_date: NaiveDate,
    #[serde(default)]
    #[schema(inline)]
    pub urgency: Urgency,
    #[serde(default)]
    #[schema(inline)]
    pub recurring: Recurring,
    #[serde(default)]
    pub own_account_transfer: bool,
    /// The merchant's own reference
    #[serde(default)]
    pub reference: String,
    /// Must be on one of the merchant's return_origins
    #[schema(format = "uri")]
    pub return_url: String,
    /// The merchant's stable id for the shopper
    #[serde(default)]
    pub psu_id: String,
    /// The bank's id from `GET /v1/banks`. Without it, the country's only bank; where several
    /// serve the country, the shopper chooses on pisgate's page.
    #[serde(default)]
    #[schema(examples("nordea"))]
    pub bank: String,
    #[serde(default)]
    #[schema(inline)]
    pub language: crate::domain::schema::Language,
    #[serde(default)]
    #[schema(inline)]
    pub authentication_method: crate::domain::schema::AuthenticationMethod,
    #[serde(default)]
    #[schema(value_type = std::collections::HashMap<String, serde_json::Value>)]
    pub metadata: Value,
    #[serde(default)]
    #[schema(inline)]
    pub consent: Consent,
}

#[derive(Serialize, ToSchema)]
pub enum Currency {
    EUR,
    DKK,
    SEK,
    NOK,
}

/// Derived from the currency when absent
#[derive(Serialize, ToSchema)]
pub enum Country {
    FI,
    DK,
    SE,
    NO,
}

/// pisgate: the authorization_url shows the shopper pisgate's consent page (what is paid,
/// to whom, in the shopper's language) before the bank; merchant: you showed your own, and
/// the authorization_url goes straight to the bank
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(default = "pisgate")]
pub enum Consent {
    Pisgate,
    Merchant,
}

// `ledger::webhooks::EVENT_TYPES`, which a test holds this to.
/// An event's type.
#[derive(Serialize, ToSchema)]
pub enum EventType {
    #[serde(rename = "payment.authorized")]
    Authorized,
    #[serde(rename = "payment.paid")]
    Paid,
    #[serde(rename = "payment.rejected")]
    Rejected,
    #[serde(rename = "payment.authorization_failed")]
    AuthorizationFailed,
    #[serde(rename = "payment.cancelled")]
    Cancelled,
    #[serde(rename = "payment.expired")]
    Expired,
    #[serde(rename = "payment.failed")]
    Failed,
    #[serde(rename = "payment.occurrence_paid")]
    OccurrencePaid,
}

// Built by the ledger when the event is written (`ledger::webhooks`).
/// A webhook's body, as `GET /v1/events` also answers it.
#[derive(Serialize, ToSchema)]
pub struct WebhookEvent {
    /// Same as the webhook-id header
    pub id: String,
    #[serde(rename = "type")]
    #[schema(inline)]
    pub kind: EventType,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    #[schema(inline)]
    pub data: WebhookEventData,
}

/// The payment as it was when the event happened, and what the event adds.
#[derive(Serialize, ToSchema)]
pub struct WebhookEventData {
    #[serde(flatten)]
    pub payment: crate::ledger::view::PaymentView,
    #[serde(default)]
    pub previous_status: String,
    #[serde(default)]
    pub ledger_seq: i64,
    #[serde(default)]
    pub occurrence: i32,
    #[serde(default)]
    pub remaining_count: i32,
}

/// What a merchant's endpoint receives.
#[utoipa::path(
    post,
    path = "payment-event",
    operation_id = "paymentEvent",
    tags = ["Events"],
    summary = "A payment event",
    description = "Sent to every enabled endpoint subscribed to its type; at least once, possibly out of order (order by `data.ledger_seq`). Answer 2xx within the timeout; anything else is retried for about three days; 410 disables the endpoint.",
    params(
        ("webhook-id" = String, Header),
        ("webhook-timestamp" = String, Header),
        ("webhook-signature" = String, Header),
    ),
    request_body = WebhookEvent,
    responses((status = 200, description = "Received")),
)]
#[allow(dead_code)]
fn payment_event_webhook() {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::webhooks::EVENT_TYPES;

    #[test]
    fn every_event_type_is_described() {
        let doc = document();
        let described = &doc["components"]["schemas"]["WebhookEvent"]["properties"]["type"]["enum"];
        assert_eq!(described, &json!(EVENT_TYPES));
    }
}
