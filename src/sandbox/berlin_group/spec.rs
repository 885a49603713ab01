//! The vendored Berlin Group OpenAPI (1.3.12, `specs/berlin-group/`, CC BY 4.0), compiled into
//! JSON Schema validators for the schemas the simulator reads and writes.
//!
//! The document's schema objects are OpenAPI 3.0 (a JSON Schema draft 4 dialect); they are
//! validated as draft 4 with formats checked, against `#/components/schemas/<name>` of the
//! unchanged document. One thing is added, in memory only: every object schema that lists
//! `properties` and says nothing about `additionalProperties` (and is not a composition)
//! gets `additionalProperties: false`, so a field the spec does not define is refused (the
//! request schemas have no compositions; `_links` schemas allow extra links explicitly and
//! are left alone). And every `pattern` is anchored (`^(?:…)$`): JSON Schema patterns match
//! anywhere in the string, so the spec's unanchored amount pattern would let `"10,50"`
//! through, which no ASPSP means. The spec's examples are never used: some contradict their
//! own schemas.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value, json};

/// The JSON form of the vendored YAML (converted once, content unchanged).
const SPEC_JSON: &str =
    include_str!("../../../specs/berlin-group/psd2-api_v1.3.12-2022-07-06.json");

/// One way a value breaks its schema: the JSON pointer of the value and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

/// The unchanged document (for paths and parameters).
fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| serde_json::from_str(SPEC_JSON).expect("the vendored spec is JSON"))
}

/// A header parameter the spec defines for an operation.
#[derive(Debug, Clone)]
pub struct HeaderParam {
    pub name: String,
    pub required: bool,
    schema: Value,
}

/// The header parameters of `paths[template][method]` (method in lower case), `$ref`s
/// resolved.
pub fn header_params(template: &str, method: &str) -> Vec<HeaderParam> {
    let doc = document();
    let Some(params) = doc
        .get("paths")
        .and_then(|p| p.get(template))
        .and_then(|p| p.get(method))
        .and_then(|o| o.get("parameters"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    params
        .iter()
        .filter_map(|p| match p.get("$ref").and_then(Value::as_str) {
            Some(r) => doc.pointer(r.trim_start_matches('#')),
            None => Some(p),
        })
        .filter(|p| p.get("in").and_then(Value::as_str) == Some("header"))
        .map(|p| HeaderParam {
            name: p["name"].as_str().unwrap_or_default().to_owned(),
            required: p["required"].as_bool().unwrap_or(false),
            schema: p.get("schema").cloned().unwrap_or(Value::Null),
        })
        .collect()
}

/// Follows `$ref`s within the document.
fn resolve(mut v: &'static Value) -> &'static Value {
    for _ in 0..8 {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => match document().pointer(r.trim_start_matches('#')) {
                Some(next) => v = next,
                None => break,
            },
            None => break,
        }
    }
    v
}

/// The headers the spec declares for an operation's answer with `status`; `None` when the
/// operation declares no such status.
pub fn response_headers(template: &str, method: &str, status: u16) -> Option<Vec<HeaderParam>> {
    let response = document()
        .get("paths")?
        .get(template)?
        .get(method)?
        .get("responses")?
        .get(status.to_string())?;
    let response = resolve(response);
    let Some(Value::Object(headers)) = response.get("headers") else {
        return Some(Vec::new());
    };
    Some(
        headers
            .iter()
            .map(|(name, h)| {
                let h = resolve(h);
                HeaderParam {
                    name: name.clone(),
                    required: h["required"].as_bool().unwrap_or(false),
                    schema: h.get("schema").cloned().unwrap_or(Value::Null),
                }
            })
            .collect(),
    )
}

/// What is wrong with a header value under its parameter's schema (booleans must be `true`
/// or `false`, integers digits). `None` when it fits.
pub fn check_header(param: &HeaderParam, value: &str) -> Option<String> {
    let instance = match param.schema.get("type").and_then(Value::as_str) {
        Some("boolean") => match value {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Some(format!("{} must be true or false", param.name)),
        },
        Some("integer") => match value.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => return Some(format!("{} must be an integer", param.name)),
        },
        _ => Value::String(value.to_owned()),
    };
    let v = header_validator(param)?;
    v.iter_errors(&instance)
        .next()
        .map(|e| format!("{}: {e}", param.name))
}

/// The compiled schema of a header parameter (parameters are shared components: one per
/// name).
fn header_validator(param: &HeaderParam) -> Option<std::sync::Arc<jsonschema::Validator>> {
    static CACHE: OnceLock<Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&param.name)
    {
        return Some(v.clone());
    }
    let mut schema = param.schema.clone();
    close_objects(&mut schema);
    let mut root = match schemas() {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    if let Value::Object(m) = schema {
        root.extend(m);
    }
    let compiled = std::sync::Arc::new(
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(true)
            .build(&Value::Object(root))
            .map_err(|e| tracing::error!(header = %param.name, error = %e, "cannot compile a header schema"))
            .ok()?,
    );
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(param.name.clone(), compiled.clone());
    Some(compiled)
}

fn schemas() -> &'static Value {
    static STRICT: OnceLock<Value> = OnceLock::new();
    STRICT.get_or_init(|| {
        let mut doc: Value = serde_json::from_str(SPEC_JSON).expect("the vendored spec is JSON");
        let mut schemas = doc
            .pointer_mut("/components/schemas")
            .map(Value::take)
            .expect("the spec has components.schemas");
        if let Value::Object(map) = &mut schemas {
            for schema in map.values_mut() {
                close_objects(schema);
            }
        }
        json!({ "components": { "schemas": schemas } })
    })
}

/// Adds `additionalProperties: false` to every plain object schema with `properties`, and
/// anchors every `pattern` at both ends.
fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(p)) = map.get_mut("pattern")
                && !(p.starts_with('^') && p.ends_with('$'))
            {
                *p = format!("^(?:{p})$");
            }
            let composed = ["allOf", "oneOf", "anyOf"]
                .iter()
                .any(|k| map.contains_key(*k));
            if map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !composed
            {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (key, value) in map.iter_mut() {
                // `properties` maps names to schemas; every other keyword holds a schema or
                // a list of them (or a plain value, which the recursion leaves alone).
                if key == "properties" {
                    if let Value::Object(props) = value {
                        props.values_mut().for_each(close_objects);
                    }
                } else if key != "example" && key != "enum" {
                    close_objects(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// Whether the document defines `#/components/schemas/<name>`.
pub fn has_schema(name: &str) -> bool {
    schemas()
        .pointer(&format!("/components/schemas/{name}"))
        .is_some()
}

fn validator(name: &str) -> Option<std::sync::Arc<jsonschema::Validator>> {
    static CACHE: OnceLock<Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
        return Some(v.clone());
    }
    if !has_schema(name) {
        return None;
    }
    let mut root: Map<String, Value> = match schemas() {
        Value::Object(m) => m.clone(),
        _ => return None,
    };
    root.insert(
        "$ref".into(),
        Value::String(format!("#/components/schemas/{name}")),
    );
    let compiled = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .build(&Value::Object(root))
        .map_err(|e| tracing::error!(schema = name, error = %e, "cannot compile a spec schema"))
        .ok()?;
    let compiled = std::sync::Arc::new(compiled);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_owned(), compiled.clone());
    Some(compiled)
}

/// Every violation of `#/components/schemas/<name>` by `value` (a schema the document does
/// not have is itself reported).
pub fn validate(name: &str, value: &Value) -> Vec<Violation> {
    let Some(v) = validator(name) else {
        return vec![Violation {
            path: String::new(),
            message: format!("the spec has no schema {name}"),
        }];
    };
    let mut found: Vec<Violation> = v
        .iter_errors(value)
        .map(|e| Violation {
            path: e.instance_path().to_string(),
            message: e.to_string(),
        })
        .collect();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example_single_payment_passes_and_unknown_or_wrong_fields_do_not() {
        let good = json!({
            "instructedAmount": {"currency": "EUR", "amount": "123.50"},
            "debtorAccount": {"iban": "DE40100100103307118608"},
            "creditorName": "Merchant123",
            "creditorAccount": {"iban": "DE02100100109307118603"},
            "remittanceInformationUnstructured": "Ref Number Merchant"
        });
        assert_eq!(validate("paymentInitiation_json", &good), vec![]);
        let mut bad = good.clone();
        bad["instructedAmount"]["amount"] = json!(123.5);
        bad["debtorAccount"]["iban"] = json!("DE40 1001 0010 3307 1186 08");
        bad["creditorAccount"]["colour"] = json!("blue");
        bad["creditorName"] = json!("x".repeat(71));
        let paths: Vec<String> = validate("paymentInitiation_json", &bad)
            .into_iter()
            .map(|v| v.path)
            .collect();
        assert!(
            paths.contains(&"/instructedAmount/amount".to_owned()),
            "{paths:?}"
        );
        assert!(paths.contains(&"/creditorAccount".to_owned()), "{paths:?}");
        assert!(paths.contains(&"/creditorName".to_owned()), "{paths:?}");
        assert!(
            paths.contains(&"/debtorAccount/iban".to_owned()),
            "{paths:?}"
        );
        let mut comma = good.clone();
        comma["instructedAmount"]["amount"] = json!("10,50");
        assert_eq!(
            validate("paymentInitiation_json", &comma)[0].path,
            "/instructedAmount/amount"
        );
    }

    #[test]
    fn an_answer_missing_required_fields_or_with_a_bad_status_is_a_violation() {
        assert_eq!(
            validate(
                "paymentInitiationRequestResponse-201",
                &json!({"transactionStatus": "RCVD", "paymentId": "p1", "_links": {}})
            ),
            vec![]
        );
        assert!(
            !validate(
                "paymentInitiationRequestResponse-201",
                &json!({"transactionStatus": "RCVD"})
            )
            .is_empty()
        );
        assert!(!validate("scaStatusResponse", &json!({"scaStatus": "finalized"})).is_empty());
        assert!(
            !validate(
                "paymentInitiationStatusResponse-200_json",
                &json!({"transactionStatus": "PAID"})
            )
            .is_empty()
        );
        assert!(!has_schema("noSuchSchema"));
        assert_eq!(validate("noSuchSchema", &json!({})).len(), 1);
    }

    #[test]
    fn header_parameters_come_from_the_operation_and_are_checked_by_their_schema() {
        let params = header_params("/v1/{payment-service}/{payment-product}", "post");
        let find = |n: &str| params.iter().find(|p| p.name == n).unwrap().clone();
        assert!(find("X-Request-ID").required);
        assert!(find("PSU-IP-Address").required);
        assert!(!find("PSU-ID").required);
        assert_eq!(check_header(&find("TPP-Redirect-Preferred"), "true"), None);
        assert!(check_header(&find("TPP-Redirect-Preferred"), "yes").is_some());
        assert_eq!(check_header(&find("PSU-Http-Method"), "GET"), None);
        assert!(check_header(&find("PSU-Http-Method"), "FETCH").is_some());
        assert_eq!(
            check_header(&find("PSU-Geo-Location"), "GEO:52.506931;13.144558"),
            None
        );
        assert!(check_header(&find("PSU-Geo-Location"), "Berlin").is_some());
        let status = header_params(
            "/v1/{payment-service}/{payment-product}/{paymentId}/status",
            "get",
        );
        assert!(
            !status
                .iter()
                .any(|p| p.name == "PSU-IP-Address" && p.required)
        );
    }

    #[test]
    fn answers_declare_their_headers() {
        let created =
            response_headers("/v1/{payment-service}/{payment-product}", "post", 201).unwrap();
        assert!(
            created
                .iter()
                .any(|h| h.name == "X-Request-ID" && h.required)
        );
        assert!(created.iter().any(|h| h.name == "ASPSP-SCA-Approach"));
        let started = response_headers(
            "/v1/{payment-service}/{payment-product}/{paymentId}/authorisations",
            "post",
            201,
        )
        .unwrap();
        assert!(!started.iter().any(|h| h.name == "Location"));
        assert!(response_headers("/v1/{payment-service}/{payment-product}", "post", 299).is_none());
    }

    #[test]
    fn dates_are_checked_as_dates_and_day_of_execution_has_no_leading_zero() {
        let body = json!({
            "instructedAmount": {"currency": "EUR", "amount": "1"},
            "debtorAccount": {"iban": "DE40100100103307118608"},
            "creditorName": "M",
            "creditorAccount": {"iban": "DE02100100109307118603"},
            "startDate": "2026-13-45", "frequency": "Monthly", "dayOfExecution": "01"
        });
        let paths: Vec<String> = validate("periodicPaymentInitiation_json", &body)
            .into_iter()
            .map(|v| v.path)
            .collect();
        assert!(paths.contains(&"/startDate".to_owned()), "{paths:?}");
        assert!(paths.contains(&"/dayOfExecution".to_owned()), "{paths:?}");
    }
}
