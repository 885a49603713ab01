use super::*;
use serde_json::json;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 3, 27).unwrap()
}

fn fi() -> Value {
    json!({
        "amount": "10.50",
        "currency": "EUR",
        "creditor": {
            "account": {"type": "IBAN", "value": "FI1450000120236228"},
            "name": "Test Name",
            "message": "Order 1",
            "reference": {"type": "RF", "value": "RF18539007547034"}
        },
        "debtor": {"account": {"type": "IBAN", "value": "FI7473834510057469"}},
        "return_url": "https://shop.example/thanks"
    })
}

fn dk() -> Value {
    json!({
        "amount": "14.24",
        "currency": "DKK",
        "creditor": {"account": {"type": "BBAN_DK", "value": "23001546147254"}, "message": "1831653108"},
        "debtor": {"account": {"type": "BBAN_DK", "value": "23001546139529"}},
        "return_url": "https://shop.example/thanks"
    })
}

fn se() -> Value {
    json!({
        "amount": "12.24",
        "currency": "SEK",
        "creditor": {
            "account": {"type": "BGNR", "value": "3300308"},
            "name": "Beneficiary name",
            "reference": {"type": "OCR", "value": "12345678903"}
        },
        "debtor": {"account": {"type": "IBAN", "value": "SE1730000000031412034086"}},
        "return_url": "https://shop.example/thanks"
    })
}

fn no() -> Value {
    json!({
        "amount": "1.00",
        "currency": "NOK",
        "creditor": {
            "account": {"type": "BBAN_NO", "value": "60391598838"},
            "name": "Test Name",
            "reference": {"type": "OCR", "value": "12345674"}
        },
        "debtor": {"account": {"type": "BBAN_NO", "value": "60010503178"}},
        "return_url": "https://shop.example/thanks"
    })
}

/// Sets a dotted path, creating objects on the way.
fn set(mut v: Value, path: &str, value: Value) -> Value {
    let mut cur = &mut v;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        cur = cur
            .as_object_mut()
            .unwrap()
            .entry(p.to_string())
            .or_insert_with(|| json!({}));
    }
    cur.as_object_mut()
        .unwrap()
        .insert(parts[parts.len() - 1].to_string(), value);
    v
}

fn remove(mut v: Value, path: &str) -> Value {
    let mut cur = &mut v;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        cur = cur.get_mut(*p).unwrap();
    }
    cur.as_object_mut().unwrap().remove(parts[parts.len() - 1]);
    v
}

fn parse_in(v: Value, env: Environment) -> Result<PaymentRequest, ValidationErrors> {
    let input: PaymentRequestInput = serde_json::from_value(v).expect("any object deserialises");
    PaymentRequest::parse(&input, today(), env)
}

fn parse(v: Value) -> Result<PaymentRequest, ValidationErrors> {
    parse_in(v, Environment::Production)
}

fn valid(v: Value) -> PaymentRequest {
    parse(v).unwrap_or_else(|e| panic!("should be valid: {e:#?}"))
}

#[track_caller]
fn refused(v: Value, field: &str, code: &str) -> ValidationErrors {
    let errors = match parse(v) {
        Ok(r) => panic!("should be refused with {field} {code}, got {r:?}"),
        Err(e) => e,
    };
    assert!(
        errors.has(field, code),
        "expected {field}: {code}, got {:#?}",
        errors.errors()
    );
    errors
}

#[test]
fn a_full_finnish_request_parses_with_every_field() {
    let v = fi();
    let v = set(v, "country", json!("FI"));
    let v = set(v, "execution_date", json!("2025-04-01"));
    let v = set(v, "urgency", json!("standard"));
    let v = set(
        v,
        "recurring",
        json!({"count": 3, "recurrence_type": "MONTHLY_SAME_DAY"}),
    );
    let v = set(v, "own_account_transfer", json!(false));
    let v = set(v, "reference", json!("order-42"));
    let v = set(v, "psu_id", json!("shopper-7"));
    let v = set(v, "language", json!("fi"));
    let v = set(v, "authentication_method", json!("MTA"));
    let v = set(v, "metadata", json!({"cart": "c-1"}));
    let v = set(v, "debtor.message", json!("own note"));
    let r = valid(v);
    assert_eq!(r.amount().minor(), 1050);
    assert_eq!(r.currency(), Currency::Eur);
    assert_eq!(r.country(), Country::Fi);
    assert_eq!(r.creditor().account().value(), "FI1450000120236228");
    assert_eq!(r.creditor().name(), Some("Test Name"));
    assert_eq!(r.creditor().message(), Some("Order 1"));
    assert_eq!(
        r.creditor().reference().unwrap().value(),
        "RF18539007547034"
    );
    assert_eq!(r.debtor().unwrap().message(), Some("own note"));
    assert_eq!(r.execution_date(), NaiveDate::from_ymd_opt(2025, 4, 1));
    assert_eq!(r.urgency(), Urgency::Standard);
    let rec = r.recurring().unwrap();
    assert_eq!(
        (rec.count().get(), rec.recurrence_type()),
        (3, RecurrenceType::MonthlySameDay)
    );
    assert!(!r.own_account_transfer());
    assert_eq!(r.merchant_reference(), Some("order-42"));
    assert_eq!(r.return_url().origin().origin(), "https://shop.example");
    assert_eq!(r.psu_id(), Some("shopper-7"));
    assert_eq!(r.language(), Some(Language::Fi));
    assert_eq!(r.authentication_method(), Some(AuthenticationMethod::Mta));
    assert_eq!(r.metadata().unwrap()["cart"], "c-1");
}

#[test]
fn the_seed_examples_of_each_country_parse() {
    assert_eq!(valid(dk()).country(), Country::Dk);
    assert_eq!(valid(se()).country(), Country::Se);
    assert_eq!(valid(no()).country(), Country::No);
}

#[test]
fn country_is_derived_from_the_currency_when_absent() {
    assert_eq!(valid(fi()).country(), Country::Fi);
    assert_eq!(
        valid(set(se(), "country", json!("SE"))).country(),
        Country::Se
    );
}

#[test]
fn a_minimal_request_defaults_to_standard_now_and_no_extras() {
    let r = valid(dk());
    assert_eq!(r.urgency(), Urgency::Standard);
    assert_eq!(r.execution_date(), None);
    assert_eq!(r.recurring(), None);
    assert!(!r.own_account_transfer());
    assert_eq!(r.creditor().name(), None);
}

#[test]
fn an_empty_body_reports_every_required_field_at_once() {
    let errors = parse(json!({})).unwrap_err();
    for field in ["amount", "currency", "creditor", "return_url"] {
        assert!(errors.has(field, "required"), "{field}: {errors:#?}");
    }
    assert_eq!(errors.len(), 4);
}

#[test]
fn missing_nested_fields_are_named_by_their_path() {
    refused(
        remove(fi(), "creditor.account"),
        "creditor.account",
        "required",
    );
    refused(
        remove(fi(), "creditor.account.type"),
        "creditor.account.type",
        "required",
    );
    refused(
        remove(fi(), "creditor.account.value"),
        "creditor.account.value",
        "required",
    );
    refused(remove(fi(), "debtor.account"), "debtor.account", "required");
    refused(
        remove(fi(), "creditor.reference.value"),
        "creditor.reference.value",
        "required",
    );
}

#[test]
fn wrong_json_types_are_reported_not_rejected_wholesale() {
    let v = set(fi(), "amount", json!(10.5));
    let v = set(v, "own_account_transfer", json!("yes"));
    let v = set(
        v,
        "recurring",
        json!({"count": "3", "recurrence_type": "MONTHLY_SAME_DAY"}),
    );
    let v = set(v, "debtor", json!("me"));
    let errors = parse(v).unwrap_err();
    for field in [
        "amount",
        "own_account_transfer",
        "recurring.count",
        "debtor",
    ] {
        assert!(errors.has(field, "invalid_type"), "{field}: {errors:#?}");
    }
    refused(set(fi(), "creditor", json!([])), "creditor", "invalid_type");
}

#[test]
fn unknown_fields_are_reported_with_their_path() {
    let v = set(fi(), "excution_date", json!("2025-04-01"));
    let v = set(v, "creditor.nmae", json!("x"));
    let v = set(v, "creditor.account.currency", json!("EUR"));
    let errors = parse(v).unwrap_err();
    for field in [
        "excution_date",
        "creditor.nmae",
        "creditor.account.currency",
    ] {
        assert!(errors.has(field, "unknown_field"), "{field}: {errors:#?}");
    }
}

#[test]
fn null_is_refused_naming_the_field_not_taken_as_absent() {
    // The documented types are not nullable: a null is a client bug worth reporting.
    let v = set(dk(), "execution_date", Value::Null);
    let v = set(v, "debtor", Value::Null);
    let errors = parse(v).unwrap_err();
    assert!(errors.has("execution_date", "not_nullable"), "{errors:#?}");
    assert!(errors.has("debtor", "not_nullable"), "{errors:#?}");
    refused(set(dk(), "amount", Value::Null), "amount", "not_nullable");
}

#[test]
fn amount_errors_carry_the_money_error_code() {
    let cases = [
        ("", "empty"),
        ("0", "zero_amount"),
        ("-1.00", "negative_amount"),
        ("+1", "sign_not_allowed"),
        ("1e3", "exponent_not_allowed"),
        (" 1", "whitespace_not_allowed"),
        ("10,50", "decimal_comma_not_allowed"),
        ("ten", "invalid_characters"),
        (".5", "malformed_amount"),
        ("1.001", "too_many_decimals"),
        ("123456789012", "amount_too_large"),
    ];
    for (amount, code) in cases {
        refused(set(fi(), "amount", json!(amount)), "amount", code);
    }
}

#[test]
fn amounts_are_bounded_by_the_banks_field_width_per_country() {
    refused(
        set(dk(), "amount", json!("10000000.00")),
        "amount",
        "amount_too_large",
    );
    refused(
        set(no(), "amount", json!("10000000")),
        "amount",
        "amount_too_large",
    );
    valid(set(dk(), "amount", json!("9999999.99")));
    valid(set(fi(), "amount", json!("999999999.99")));
    refused(
        set(fi(), "amount", json!("1000000000")),
        "amount",
        "amount_too_large",
    );
    valid(set(se(), "amount", json!("99999999999.99")));
}

#[test]
fn currency_and_country_must_be_supported_and_agree() {
    refused(
        set(fi(), "currency", json!("USD")),
        "currency",
        "unsupported_currency",
    );
    refused(
        set(fi(), "currency", json!("eur")),
        "currency",
        "unsupported_currency",
    );
    refused(
        set(fi(), "country", json!("DE")),
        "country",
        "unsupported_country",
    );
    refused(
        set(fi(), "country", json!("SE")),
        "currency",
        "currency_country_mismatch",
    );
}

#[test]
fn account_types_must_be_known_and_allowed_for_the_country() {
    refused(
        set(fi(), "creditor.account.type", json!("iban")),
        "creditor.account.type",
        "unknown_account_type",
    );
    refused(
        set(
            fi(),
            "creditor.account",
            json!({"type": "BBAN_DK", "value": "23001546147254"}),
        ),
        "creditor.account.type",
        "account_type_not_allowed",
    );
    refused(
        set(
            dk(),
            "creditor.account",
            json!({"type": "BGNR", "value": "3300308"}),
        ),
        "creditor.account.type",
        "account_type_not_allowed",
    );
    refused(
        set(
            se(),
            "debtor.account",
            json!({"type": "BGNR", "value": "50501055"}),
        ),
        "debtor.account.type",
        "account_type_not_allowed",
    );
}

#[test]
fn account_numbers_are_checked_with_their_check_digits() {
    refused(
        set(fi(), "creditor.account.value", json!("FI1450000120236229")),
        "creditor.account.value",
        "invalid_checksum",
    );
    refused(
        set(fi(), "creditor.account.value", json!("FI145000012023622")),
        "creditor.account.value",
        "invalid_length",
    );
    refused(
        set(no(), "creditor.account.value", json!("60391598839")),
        "creditor.account.value",
        "invalid_checksum",
    );
    refused(
        set(se(), "creditor.account.value", json!("3300309")),
        "creditor.account.value",
        "invalid_checksum",
    );
    refused(
        set(dk(), "debtor.account.value", json!("2300")),
        "debtor.account.value",
        "invalid_length",
    );
}

#[test]
fn ibans_must_be_sepa_for_finland_and_domestic_elsewhere() {
    valid(set(
        fi(),
        "creditor.account.value",
        json!("DE89370400440532013000"),
    ));
    refused(
        set(
            fi(),
            "creditor.account.value",
            json!("TR330006100519786457841326"),
        ),
        "creditor.account.value",
        "iban_country_not_allowed",
    );
    refused(
        set(
            dk(),
            "creditor.account",
            json!({"type": "IBAN", "value": "FI1450000120236228"}),
        ),
        "creditor.account.value",
        "iban_country_not_allowed",
    );
    refused(
        set(
            fi(),
            "debtor.account.value",
            json!("DE89370400440532013000"),
        ),
        "debtor.account.value",
        "iban_country_not_allowed",
    );
    valid(set(
        dk(),
        "creditor.account",
        json!({"type": "IBAN", "value": "DK2023001546147386"}),
    ));
}

#[test]
fn the_debtor_account_may_not_be_the_creditor_account() {
    refused(
        set(dk(), "debtor.account.value", json!("23001546147254")),
        "debtor.account.value",
        "same_as_creditor",
    );
}

#[test]
fn creditor_name_is_required_in_finland_and_at_most_70_characters() {
    refused(remove(fi(), "creditor.name"), "creditor.name", "required");
    refused(
        set(fi(), "creditor.name", json!("   ")),
        "creditor.name",
        "empty",
    );
    refused(
        set(fi(), "creditor.name", json!("a".repeat(71))),
        "creditor.name",
        "too_long",
    );
    refused(
        set(fi(), "creditor.name", json!("Shop\u{7}")),
        "creditor.name",
        "invalid_characters",
    );
    assert_eq!(
        valid(set(fi(), "creditor.name", json!("ä".repeat(70))))
            .creditor()
            .name(),
        Some("ä".repeat(70).as_str())
    );
    assert_eq!(
        valid(set(fi(), "creditor.name", json!("  Shop  ")))
            .creditor()
            .name(),
        Some("Shop")
    );
    valid(remove(se(), "creditor.name"));
}

#[test]
fn creditor_message_length_depends_on_country_and_account_kind() {
    refused(
        set(dk(), "creditor.message", json!("m".repeat(41))),
        "creditor.message",
        "too_long",
    );
    valid(set(dk(), "creditor.message", json!("m".repeat(40))));
    valid(set(se(), "creditor.message", json!("m".repeat(150))));
    refused(
        set(se(), "creditor.message", json!("m".repeat(151))),
        "creditor.message",
        "too_long",
    );
    let bban_se = set(
        se(),
        "creditor.account",
        json!({"type": "BBAN_SE", "value": "41351300039"}),
    );
    let bban_se = remove(bban_se, "creditor.reference");
    valid(set(
        bban_se.clone(),
        "creditor.message",
        json!("m".repeat(12)),
    ));
    refused(
        set(bban_se, "creditor.message", json!("m".repeat(13))),
        "creditor.message",
        "too_long",
    );
    let pg = set(
        se(),
        "creditor.account",
        json!({"type": "PGNR", "value": "44875"}),
    );
    refused(
        set(pg, "creditor.message", json!("m".repeat(26))),
        "creditor.message",
        "too_long",
    );
    refused(
        set(fi(), "creditor.message", json!("m".repeat(141))),
        "creditor.message",
        "too_long",
    );
    assert_eq!(
        valid(set(fi(), "creditor.message", json!("")))
            .creditor()
            .message(),
        None
    );
}

#[test]
fn debtor_message_is_at_most_20_characters() {
    valid(set(dk(), "debtor.message", json!("d".repeat(20))));
    refused(
        set(dk(), "debtor.message", json!("d".repeat(21))),
        "debtor.message",
        "too_long",
    );
}

#[test]
fn creditor_references_are_checked_for_the_country() {
    refused(
        set(fi(), "creditor.reference.type", json!("KID")),
        "creditor.reference.type",
        "unknown_reference_type",
    );
    refused(
        set(
            se(),
            "creditor.reference",
            json!({"type": "RF", "value": "RF18539007547034"}),
        ),
        "creditor.reference.type",
        "reference_type_not_allowed",
    );
    refused(
        set(
            dk(),
            "creditor.reference",
            json!({"type": "OCR", "value": "12345678903"}),
        ),
        "creditor.reference.type",
        "reference_type_not_allowed",
    );
    refused(
        set(fi(), "creditor.reference.value", json!("RF19539007547034")),
        "creditor.reference.value",
        "invalid_checksum",
    );
    refused(
        set(no(), "creditor.reference.value", json!("12345675")),
        "creditor.reference.value",
        "invalid_checksum",
    );
    refused(
        set(se(), "creditor.reference.value", json!("12345678904")),
        "creditor.reference.value",
        "invalid_checksum",
    );
    let finnish = set(
        fi(),
        "creditor.reference",
        json!({"type": "OCR", "value": "1232"}),
    );
    assert_eq!(
        valid(finnish).creditor().reference().unwrap().value(),
        "1232"
    );
    refused(
        set(
            fi(),
            "creditor.reference",
            json!({"type": "OCR", "value": "1233"}),
        ),
        "creditor.reference.value",
        "invalid_checksum",
    );
}

#[test]
fn execution_date_is_a_real_date_not_in_the_past() {
    refused(
        set(dk(), "execution_date", json!("2025-13-01")),
        "execution_date",
        "invalid_date",
    );
    refused(
        set(dk(), "execution_date", json!("2025-02-30")),
        "execution_date",
        "invalid_date",
    );
    refused(
        set(dk(), "execution_date", json!("27.03.2025")),
        "execution_date",
        "invalid_date",
    );
    refused(
        set(dk(), "execution_date", json!("2025-3-27")),
        "execution_date",
        "invalid_date",
    );
    refused(
        set(dk(), "execution_date", json!("2025-03-26")),
        "execution_date",
        "date_in_past",
    );
    valid(set(dk(), "execution_date", json!("2025-03-27")));
    valid(set(dk(), "execution_date", json!("2026-01-02")));
}

#[test]
fn urgency_is_standard_or_express() {
    refused(
        set(fi(), "urgency", json!("fast")),
        "urgency",
        "unknown_urgency",
    );
    refused(
        set(fi(), "urgency", json!("sameday")),
        "urgency",
        "unknown_urgency",
    );
}

#[test]
fn express_is_finnish_only() {
    refused(
        set(se(), "urgency", json!("express")),
        "urgency",
        "express_not_allowed",
    );
    refused(
        set(dk(), "urgency", json!("express")),
        "urgency",
        "express_not_allowed",
    );
    assert_eq!(
        valid(set(fi(), "urgency", json!("express"))).urgency(),
        Urgency::Express
    );
}

#[test]
fn express_never_has_a_future_execution_date() {
    let v = set(fi(), "urgency", json!("express"));
    refused(
        set(v.clone(), "execution_date", json!("2025-03-28")),
        "urgency",
        "express_with_future_date",
    );
    valid(set(v, "execution_date", json!("2025-03-27")));
}

#[test]
fn own_account_transfers_are_not_available_in_finland() {
    refused(
        set(fi(), "own_account_transfer", json!(true)),
        "own_account_transfer",
        "not_allowed_in_country",
    );
}

#[test]
fn own_account_transfers_need_the_debtor_account() {
    let v = set(remove(dk(), "debtor"), "own_account_transfer", json!(true));
    refused(v, "debtor.account", "required");
    assert!(valid(set(dk(), "own_account_transfer", json!(true))).own_account_transfer());
}

#[test]
fn own_account_transfers_cannot_go_to_a_giro_number() {
    let v = set(se(), "own_account_transfer", json!(true));
    refused(v, "creditor.account.type", "account_type_not_allowed");
}

#[test]
fn recurring_count_is_two_to_ninety_eight_or_9999() {
    let rec = |count: i64| {
        set(
            dk(),
            "recurring",
            json!({"count": count, "recurrence_type": "MONTHLY_SAME_DAY"}),
        )
    };
    refused(rec(1), "recurring.count", "invalid_count");
    refused(rec(99), "recurring.count", "invalid_count");
    refused(rec(0), "recurring.count", "invalid_count");
    valid(rec(2));
    valid(rec(98));
    assert!(
        valid(rec(9999))
            .recurring()
            .unwrap()
            .count()
            .is_until_deleted()
    );
}

#[test]
fn recurring_needs_a_known_recurrence_type() {
    refused(
        set(
            dk(),
            "recurring",
            json!({"count": 3, "recurrence_type": "FORTNIGHTLY"}),
        ),
        "recurring.recurrence_type",
        "unknown_recurrence_type",
    );
    refused(
        set(dk(), "recurring", json!({"count": 3})),
        "recurring.recurrence_type",
        "required",
    );
    valid(set(
        dk(),
        "recurring",
        json!({"count": 3, "recurrence_type": "BIWEEKLY"}),
    ));
}

#[test]
fn every_minute_recurrence_is_refused_in_production_and_accepted_in_the_sandbox() {
    let v = set(
        dk(),
        "recurring",
        json!({"count": 3, "recurrence_type": "EVERY_MINUTE_SANDBOX_ONLY"}),
    );
    refused(v.clone(), "recurring.recurrence_type", "sandbox_only");
    assert!(parse_in(v, Environment::Sandbox).is_ok());
}

#[test]
fn norwegian_biweekly_needs_an_own_account_transfer() {
    let v = set(
        no(),
        "recurring",
        json!({"count": 3, "recurrence_type": "BIWEEKLY"}),
    );
    refused(
        v.clone(),
        "recurring.recurrence_type",
        "recurrence_type_not_allowed",
    );
    let own = remove(
        set(v, "own_account_transfer", json!(true)),
        "creditor.reference",
    );
    valid(own);
}

#[test]
fn swedish_monthly_same_day_is_refused_for_own_account_transfers() {
    let v = set(
        se(),
        "creditor.account",
        json!({"type": "BBAN_SE", "value": "41351300039"}),
    );
    let v = remove(v, "creditor.reference");
    let v = set(v, "own_account_transfer", json!(true));
    let v = set(
        v,
        "recurring",
        json!({"count": 3, "recurrence_type": "MONTHLY_SAME_DAY"}),
    );
    refused(
        v,
        "recurring.recurrence_type",
        "recurrence_type_not_allowed",
    );
}

#[test]
fn return_url_is_required_and_must_be_https_unless_local() {
    refused(remove(fi(), "return_url"), "return_url", "required");
    refused(
        set(fi(), "return_url", json!("http://shop.example/")),
        "return_url",
        "https_required",
    );
    refused(
        set(fi(), "return_url", json!("/thanks")),
        "return_url",
        "not_absolute",
    );
    refused(
        set(fi(), "return_url", json!("https://a@b.example/")),
        "return_url",
        "userinfo_not_allowed",
    );
    let r = valid(set(fi(), "return_url", json!("http://localhost:3000/done")));
    assert_eq!(r.return_url().origin().origin(), "http://localhost:3000");
}

#[test]
fn merchant_reference_and_psu_id_are_bounded_text() {
    refused(
        set(fi(), "reference", json!("r".repeat(129))),
        "reference",
        "too_long",
    );
    refused(set(fi(), "reference", json!("")), "reference", "empty");
    refused(
        set(fi(), "psu_id", json!("p".repeat(129))),
        "psu_id",
        "too_long",
    );
    refused(
        set(fi(), "psu_id", json!("a\nb")),
        "psu_id",
        "invalid_characters",
    );
    valid(set(fi(), "psu_id", json!("p".repeat(128))));
}

#[test]
fn language_must_be_one_of_the_nordic_languages_or_english() {
    refused(
        set(fi(), "language", json!("de")),
        "language",
        "unknown_language",
    );
    for l in ["en", "fi", "sv", "da", "no"] {
        valid(set(fi(), "language", json!(l)));
    }
}

#[test]
fn consent_is_pisgate_or_merchant_and_only_merchant_is_stored() {
    refused(
        set(fi(), "consent", json!("shop")),
        "consent",
        "unknown_consent",
    );
    refused(set(fi(), "consent", json!(true)), "consent", "invalid_type");
    let default = valid(fi());
    assert_eq!(default.consent(), Consent::Pisgate);
    let explicit = valid(set(fi(), "consent", json!("pisgate")));
    assert_eq!(explicit.canonical_json(), default.canonical_json());
    assert!(!default.canonical_json().contains("consent"));
    let merchant = valid(set(fi(), "consent", json!("merchant")));
    assert_eq!(merchant.consent(), Consent::Merchant);
    let stored: Value = serde_json::from_str(&merchant.canonical_json()).unwrap();
    assert_eq!(stored["consent"], "merchant");
}

#[test]
fn authentication_method_must_be_known_and_norwegian_methods_only_in_norway() {
    refused(
        set(fi(), "authentication_method", json!("BANKID")),
        "authentication_method",
        "unknown_authentication_method",
    );
    refused(
        set(se(), "authentication_method", json!("BANKID_NO")),
        "authentication_method",
        "authentication_method_not_allowed",
    );
    for m in ["BANKID_NO", "BANKIDM_NO", "MTA_NO"] {
        valid(set(no(), "authentication_method", json!(m)));
    }
    valid(set(se(), "authentication_method", json!("QR_RDR")));
    // The v5 enum's national methods: Swedish BankID in SE, NemID in DK, nowhere else.
    valid(set(se(), "authentication_method", json!("BANKID_SE")));
    refused(
        set(no(), "authentication_method", json!("BANKID_SE")),
        "authentication_method",
        "authentication_method_not_allowed",
    );
    refused(
        set(se(), "authentication_method", json!("NEMID_2F")),
        "authentication_method",
        "authentication_method_not_allowed",
    );
}

#[test]
fn metadata_is_a_bounded_json_object() {
    refused(
        set(fi(), "metadata", json!(["a"])),
        "metadata",
        "invalid_type",
    );
    let many: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
    refused(
        set(fi(), "metadata", Value::Object(many)),
        "metadata",
        "too_many_keys",
    );
    refused(
        set(fi(), "metadata", json!({"blob": "x".repeat(5000)})),
        "metadata",
        "too_large",
    );
    valid(set(fi(), "metadata", json!({"nested": {"ok": [1, 2, 3]}})));
}

#[test]
fn every_violation_is_reported_together() {
    let v = set(fi(), "amount", json!("1,00"));
    let v = set(v, "creditor.account.value", json!("FI1450000120236229"));
    let v = set(v, "creditor.name", json!("n".repeat(71)));
    let v = set(v, "urgency", json!("express"));
    let v = set(v, "execution_date", json!("2025-03-30"));
    let v = set(v, "own_account_transfer", json!(true));
    let v = set(
        v,
        "recurring",
        json!({"count": 1, "recurrence_type": "EVERY_MINUTE_SANDBOX_ONLY"}),
    );
    let v = set(v, "return_url", json!("http://shop.example"));
    let v = set(v, "language", json!("xx"));
    let errors = parse(v).unwrap_err();
    let expected = [
        ("amount", "decimal_comma_not_allowed"),
        ("creditor.account.value", "invalid_checksum"),
        ("creditor.name", "too_long"),
        ("urgency", "express_with_future_date"),
        ("own_account_transfer", "not_allowed_in_country"),
        ("recurring.count", "invalid_count"),
        ("recurring.recurrence_type", "sandbox_only"),
        ("return_url", "https_required"),
        ("language", "unknown_language"),
    ];
    for (field, code) in expected {
        assert!(errors.has(field, code), "{field} {code}: {errors:#?}");
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for e in errors.errors() {
        assert!(
            e.code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{} is not snake_case",
            e.code
        );
        assert!(!e.message.is_empty());
    }
}

#[test]
fn validation_errors_serialise_as_field_code_message_objects() {
    let errors = parse(json!({"currency": "EUR"})).unwrap_err();
    let json = serde_json::to_value(&errors).unwrap();
    assert_eq!(json[0]["field"], "amount");
    assert_eq!(json[0]["code"], "required");
    assert!(json[0]["message"].is_string());
}

#[test]
fn equivalent_bodies_have_the_same_canonical_form() {
    let a = valid(fi());
    let b = set(fi(), "amount", json!("10.5"));
    let b = set(b, "creditor.account.value", json!("fi14 5000 0120 2362 28"));
    let b = set(b, "country", json!("FI"));
    let b = valid(b);
    assert_eq!(a.canonical_json(), b.canonical_json());
    let c = valid(set(fi(), "amount", json!("10.51")));
    assert_ne!(a.canonical_json(), c.canonical_json());
}

#[test]
fn the_canonical_form_is_normalised_and_sorted() {
    let v = set(fi(), "metadata", json!({"b": 1, "a": {"d": 2, "c": 3}}));
    let json = valid(v).canonical_json();
    assert!(json.starts_with(r#"{"amount":"10.50","currency":"EUR","country":"FI","creditor":{"account":{"type":"IBAN","value":"FI1450000120236228"}"#), "{json}");
    assert!(
        json.contains(r#""metadata":{"a":{"c":3,"d":2},"b":1}"#),
        "{json}"
    );
    assert!(
        json.contains(r#""return_url":"https://shop.example/thanks""#),
        "{json}"
    );
    assert!(json.contains(r#""urgency":"standard""#), "{json}");
}

#[test]
fn debug_of_a_request_does_not_print_full_account_numbers() {
    let r = valid(fi());
    let debug = format!("{r:?}");
    assert!(!debug.contains("FI1450000120236228"), "{debug}");
    assert!(!debug.contains("FI7473834510057469"), "{debug}");
}

#[test]
fn debug_of_the_raw_input_does_not_print_account_numbers() {
    let input: PaymentRequestInput = serde_json::from_value(fi()).unwrap();
    let debug = format!("{input:?}");
    assert!(!debug.contains("FI1450000120236228"), "{debug}");
    assert!(debug.contains("<redacted>"));
}

#[test]
fn the_input_round_trips_through_json() {
    let v = set(fi(), "amount", json!(10));
    let v = set(v, "extra", json!(true));
    let input: PaymentRequestInput = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(serde_json::to_value(&input).unwrap(), v);
}

/// Payments show the parts of their stored canonical request as typed views
/// (`ledger::view`): each part must read as its view and write back unchanged.
#[test]
fn the_canonical_parts_read_as_the_payment_views_unchanged() {
    use crate::ledger::view::{Creditor, Debtor, Recurring};
    use serde::{Serialize, de::DeserializeOwned};
    fn unchanged<T: Serialize + DeserializeOwned>(canonical: &Value, key: &str) {
        let part = &canonical[key];
        let view: T = serde_json::from_value(part.clone()).expect(key);
        assert_eq!(&serde_json::to_value(view).unwrap(), part, "{key}");
    }
    let v = set(fi(), "debtor.message", json!("own note"));
    let v = set(v, "execution_date", json!("2025-04-01"));
    let v = set(
        v,
        "recurring",
        json!({"count": 3, "recurrence_type": "MONTHLY_SAME_DAY"}),
    );
    let v = set(v, "language", json!("fi"));
    let v = set(v, "authentication_method", json!("MTA"));
    let canonical = serde_json::to_value(valid(v)).unwrap();
    unchanged::<Creditor>(&canonical, "creditor");
    unchanged::<Debtor>(&canonical, "debtor");
    unchanged::<Recurring>(&canonical, "recurring");
    unchanged::<NaiveDate>(&canonical, "execution_date");
    unchanged::<String>(&canonical, "urgency");
    unchanged::<bool>(&canonical, "own_account_transfer");
    unchanged::<String>(&canonical, "language");
    unchanged::<String>(&canonical, "authentication_method");
    // A minimal creditor (no name, message or reference) too.
    let canonical = serde_json::to_value(valid(dk())).unwrap();
    unchanged::<Creditor>(&canonical, "creditor");
}
