//! The SEB client against a mock server: what it sends (paths, headers, bodies), how it
//! reads SEB's answers (amounts as JSON numbers, BankID progress, problem+json), and that
//! only reads are retried. The strict simulator comes on top (`sim_tests`).

use super::*;
use crate::bank::BankIdState;
use crate::bank::seb::convert::tests::sek_payment;
use crate::domain::PaymentStatus;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const PIS: &str = "/tpp/pis/private/v1/identified2";
const PRODUCT: &str = "private-se-domestic-credit-transfers";
const PAYMENT_ID: &str = "STOHYD01180208082256128737000001";
const TOKEN: &str = "shopper-access-token-secret";

fn config(server: &MockServer) -> SebConfig {
    let mut config = SebConfig::new(
        "seb",
        server.uri(),
        "pisgate-client",
        SecretString::from("client-secret-value"),
        "198.51.100.4".parse().unwrap(),
    );
    config.read_retries = RetryPolicy {
        max_attempts: 3,
        base_backoff: Duration::from_millis(1),
    };
    config.connect_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(2);
    config
}

fn client(server: &MockServer) -> SebClient {
    SebClient::new(config(server)).unwrap()
}

fn token() -> SecretString {
    SecretString::from(TOKEN)
}

fn shopper() -> PsuContext {
    PsuContext {
        ip: Some("203.0.113.7".parse().unwrap()),
        user_agent: Some("Mozilla/5.0".into()),
    }
}

fn payment_ref() -> BankRef {
    let base = format!("/payments/{PRODUCT}/{PAYMENT_ID}");
    BankRef {
        id: BankPaymentId::parse(PAYMENT_ID).unwrap(),
        links: BankLinks(BTreeMap::from([
            ("self".to_owned(), base.clone()),
            ("status".to_owned(), format!("{base}/status")),
        ])),
    }
}

fn payment_path() -> String {
    format!("{PIS}/payments/{PRODUCT}/{PAYMENT_ID}")
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

fn header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request.headers.get(name).map(|v| v.to_str().unwrap())
}

fn body_of(request: &Request) -> serde_json::Value {
    serde_json::from_slice(&request.body).unwrap()
}

fn problem(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "type": format!("https://berlingroup.com/error-codes/{code}"),
        "title": "refused", "status": status, "code": code, "detail": "refused"
    }))
}

fn assert_request_id(request: &Request) {
    let id = header(request, "x-request-id").expect("x-request-id");
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().to_string(), id);
}

#[tokio::test]
async fn seb_identification_starts_with_our_client_and_the_shoppers_address_then_reads_the_qr() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/auth/v4/authorizations"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"auth_req_id": "0b6c1a52-8d2c-4a55-9d62-5e7a1c9d3f10"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(
            "/auth/v4/authorizations/0b6c1a52-8d2c-4a55-9d62-5e7a1c9d3f10",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "PENDING", "hint_code": "outstandingTransaction", "poll_delay": 1000,
            "qr_token": "bankid.67df3917.0.dc69358e", "autostart_token": "7c40b5c9-fa74-49cf-b98c-bfe651f9a7c6"
        })))
        .mount(&server)
        .await;
    let order = client(&server)
        .start_identification(Some(&shopper()))
        .await
        .unwrap();
    assert_eq!(order.id, "0b6c1a52-8d2c-4a55-9d62-5e7a1c9d3f10");
    assert_eq!(order.progress.state, BankIdState::Pending);
    assert_eq!(
        order.progress.qr_data.as_deref(),
        Some("bankid.67df3917.0.dc69358e")
    );
    assert_eq!(
        order.progress.autostart_token.as_deref(),
        Some("7c40b5c9-fa74-49cf-b98c-bfe651f9a7c6")
    );
    let sent = requests(&server).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(
        body_of(&sent[0]),
        json!({"client_id": "pisgate-client", "scope": "psd2_payments", "start_mode": "qr"})
    );
    for r in &sent {
        assert_eq!(header(r, "psu-ip-address"), Some("203.0.113.7"));
        assert_request_id(r);
        assert!(header(r, "authorization").is_none());
    }
    // Without the shopper's address: the fallback.
    client(&server).start_identification(None).await.unwrap();
    let sent = requests(&server).await;
    assert_eq!(header(&sent[2], "psu-ip-address"), Some("198.51.100.4"));
}

#[tokio::test]
async fn seb_identification_tokens_are_asked_once_and_a_used_order_is_a_validation() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/auth/v4/tokens"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "at-1", "refresh_token": "rt-1", "expires_in": 1800,
            "token_type": "Bearer", "scope": "psd2_payments"
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/auth/v4/tokens"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "type": "https://authorize.sebgroup.com/problems/invalid-auth-req-id",
            "title": "Invalid parameter value", "status": 400, "detail": "already used"
        })))
        .mount(&server)
        .await;
    let seb = client(&server);
    let tokens = seb.identification_tokens("order-1").await.unwrap();
    assert_eq!(tokens.access_token.expose_secret(), "at-1");
    assert_eq!(
        tokens.refresh_token.as_ref().unwrap().expose_secret(),
        "rt-1"
    );
    assert_eq!(tokens.expires_in, Duration::from_secs(1800));
    assert_eq!(
        body_of(&requests(&server).await[0]),
        json!({"client_id": "pisgate-client", "client_secret": "client-secret-value",
               "auth_req_id": "order-1", "redirect_uri": "https://localhost/pisgate/seb"})
    );
    let BankError::Validation { failures } =
        seb.identification_tokens("order-1").await.unwrap_err()
    else {
        panic!("not a validation")
    };
    assert_eq!(failures[0].code, "invalid-auth-req-id");
}

#[tokio::test]
async fn seb_refresh_sends_the_refresh_grant_and_a_refused_refresh_token_is_dead() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/auth/v4/tokens"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "type": "https://authorize.sebgroup.com/problems/invalid-refresh-token",
            "title": "Invalid parameter value", "status": 400,
            "detail": "The provided refresh token is invalid", "instance": "/auth/v4/tokens"
        })))
        .mount(&server)
        .await;
    let err = client(&server)
        .refresh(&SecretString::from("rt-old"))
        .await
        .unwrap_err();
    assert_eq!(err, BankError::TokenRejected);
    let sent = requests(&server).await;
    assert_eq!(sent.len(), 1);
    let body = body_of(&sent[0]);
    assert_eq!(body["grant_type"], "refresh_token");
    assert_eq!(body["refresh_token"], "rt-old");
    assert_eq!(body["client_id"], "pisgate-client");
}

#[tokio::test]
async fn seb_a_bad_client_is_a_configuration_fault() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/auth/v4/authorizations"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "type": "https://authorize.sebgroup.com/problems/invalid-client",
            "title": "Invalid parameter value", "status": 400, "detail": "unknown client"
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/auth/v4/tokens"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "type": "https://authorize.sebgroup.com/problems/invalid-client",
            "title": "Invalid parameter value", "status": 400
        })))
        .mount(&server)
        .await;
    let err = client(&server)
        .start_identification(None)
        .await
        .unwrap_err();
    assert!(err.is_configuration_fault(), "{err:?}");
    // `pisgate check`'s probe fails on it too.
    assert_eq!(
        client(&server).probe().await,
        Err(BankError::BadCredentials {
            code: "invalid-client".into()
        })
    );
}

#[tokio::test]
async fn seb_probe_passes_when_seb_accepts_our_client_and_refuses_the_unknown_order() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/auth/v4/tokens"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "type": "https://authorize.sebgroup.com/problems/invalid-auth-req-id",
            "title": "Invalid parameter value", "status": 400
        })))
        .mount(&server)
        .await;
    assert_eq!(client(&server).probe().await, Ok(()));
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn seb_initiation_carries_the_shoppers_token_request_id_and_address_and_reads_the_number_amount()
 {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{PIS}/payments/{PRODUCT}")))
        .respond_with(ResponseTemplate::new(201).set_body_string(format!(
            r#"{{"paymentId":"{PAYMENT_ID}","transactionStatus":"RCVD",
                "instructedAmount":{{"amount":345.5,"currency":"SEK"}},
                "_links":{{"self":{{"href":"/payments/{PRODUCT}/{PAYMENT_ID}"}},
                           "status":{{"href":"/payments/{PRODUCT}/{PAYMENT_ID}/status"}}}}}}"#
        )))
        .mount(&server)
        .await;
    let initiated = client(&server)
        .initiate_with_token(&sek_payment(), &token(), None)
        .await
        .unwrap();
    assert_eq!(initiated.bank_payment_id.as_str(), PAYMENT_ID);
    assert_eq!(initiated.next, ScaStep::BankIdSigning);
    assert_eq!(
        initiated.status.status,
        Some(PaymentStatus::AwaitingAuthorization)
    );
    assert_eq!(
        initiated.links.get("status"),
        Some(format!("/payments/{PRODUCT}/{PAYMENT_ID}/status").as_str())
    );
    let sent = requests(&server).await;
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert_eq!(
        header(r, "authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_request_id(r);
    assert_eq!(header(r, "psu-ip-address"), Some("198.51.100.4"));
    assert_eq!(header(r, "content-type"), Some("application/json"));
    assert!(header(r, "psu-corporate-id").is_none());
    let body = body_of(r);
    assert_eq!(
        body["instructedAmount"],
        json!({"currency": "SEK", "amount": "345.50"})
    );
    assert_eq!(body["creditorAccount"], json!({"bgnr": "5678-1234"}));
    assert!(
        initiated.echo_mismatch.is_empty(),
        "345.5 SEK is what was sent"
    );
}

/// SEB's 201 echoes `instructedAmount`: another amount, another currency, or an amount that
/// cannot be read exactly in its currency is a contradiction the caller must act on (the
/// payment exists at SEB, so the answer is still the payment's).
#[tokio::test]
async fn seb_an_initiation_echoing_another_amount_or_currency_is_a_mismatch() {
    for (echo, mismatch) in [
        (r#"{"amount":346.5,"currency":"SEK"}"#, vec!["amount"]),
        (r#"{"amount":"345.50","currency":"SEK"}"#, vec![]),
        (r#"{"amount":345.5,"currency":"EUR"}"#, vec!["currency"]),
        (r#"{"amount":345.505,"currency":"SEK"}"#, vec!["amount"]),
        // The same value spelled with an exponent or trailing zeros is no mismatch.
        (r#"{"amount":3.455e2,"currency":"SEK"}"#, vec![]),
        (r#"{"amount":345.5000,"currency":"SEK"}"#, vec![]),
        (r#"{"amount":3.465e2,"currency":"SEK"}"#, vec!["amount"]),
        (
            r#"{"amount":1,"currency":"XXX"}"#,
            vec!["amount", "currency"],
        ),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(format!("{PIS}/payments/{PRODUCT}")))
            .respond_with(ResponseTemplate::new(201).set_body_string(format!(
                r#"{{"paymentId":"{PAYMENT_ID}","transactionStatus":"RCVD",
                    "instructedAmount":{echo},
                    "_links":{{"status":{{"href":"/payments/{PRODUCT}/{PAYMENT_ID}/status"}}}}}}"#
            )))
            .mount(&server)
            .await;
        let initiated = client(&server)
            .initiate_with_token(&sek_payment(), &token(), None)
            .await
            .unwrap();
        assert_eq!(initiated.bank_payment_id.as_str(), PAYMENT_ID, "{echo}");
        assert_eq!(initiated.echo_mismatch, mismatch, "{echo}");
    }
}

#[tokio::test]
async fn seb_corporate_api_has_its_own_path_and_psu_corporate_id() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/tpp/pis/corporate/v1/identified2/payments/{PRODUCT}/{PAYMENT_ID}/status"
        )))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"transactionStatus": "ACSC"})),
        )
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.api = SebApi::Corporate {
        psu_corporate_id: "40073144970009".into(),
    };
    let seb = SebClient::new(config).unwrap();
    let report = seb
        .status_with_token(&payment_ref(), Some(&token()), None)
        .await
        .unwrap();
    assert_eq!(report.status, Some(PaymentStatus::Paid));
    assert_eq!(
        header(&requests(&server).await[0], "psu-corporate-id"),
        Some("40073144970009")
    );
}

#[tokio::test]
async fn seb_initiation_signing_start_and_cancel_are_never_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_json(
            json!({"type": "about:blank", "status": 503, "code": "SERVICE_UNAVAILABLE"}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let seb = client(&server);
    let err = seb
        .initiate_with_token(&sek_payment(), &token(), None)
        .await
        .unwrap_err();
    assert!(err.provably_not_processed(), "{err:?}");
    assert_eq!(requests(&server).await.len(), 1);
    assert!(matches!(
        seb.start_signing(&payment_ref(), &token(), None).await,
        Err(BankError::Unavailable { .. })
    ));
    assert_eq!(requests(&server).await.len(), 2);
    assert!(matches!(
        seb.start_identification(None).await,
        Err(BankError::Unavailable { .. })
    ));
    assert!(matches!(
        seb.identification_tokens("o").await,
        Err(BankError::Unavailable { .. })
    ));
    assert_eq!(requests(&server).await.len(), 4);
    let err = seb
        .cancel(&[payment_ref()], Some(&token()), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BankError::Unavailable {
                retry_safe: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(requests(&server).await.len(), 5);
}

#[tokio::test]
async fn seb_reads_are_retried_when_seb_is_unavailable() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{}/status", payment_path())))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{}/status", payment_path())))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"transactionStatus": "ACSP"})),
        )
        .mount(&server)
        .await;
    let report = client(&server)
        .status_with_token(&payment_ref(), Some(&token()), Some(&shopper()))
        .await
        .unwrap();
    assert_eq!(report.bank_status, "ACSP");
    assert_eq!(
        report.status,
        Some(PaymentStatus::Authorized),
        "ACSP is never paid by default"
    );
    let sent = requests(&server).await;
    assert_eq!(sent.len(), 3);
    let ids: std::collections::BTreeSet<_> = sent
        .iter()
        .map(|r| header(r, "x-request-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "a fresh X-Request-ID per attempt");
    assert_eq!(header(&sent[0], "psu-ip-address"), Some("203.0.113.7"));
}

#[tokio::test]
async fn seb_without_the_shoppers_token_nothing_is_sent_and_a_refused_token_is_dead() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(
                json!({"type": "about:blank", "title": "Unauthorized", "status": 401}),
            ),
        )
        .mount(&server)
        .await;
    let seb = client(&server);
    assert_eq!(
        seb.status(&payment_ref(), None).await,
        Err(BankError::TokenRejected)
    );
    assert_eq!(
        seb.initiate(&sek_payment(), None).await.unwrap_err(),
        BankError::TokenRejected
    );
    assert_eq!(
        seb.status_with_token(&payment_ref(), None, None).await,
        Err(BankError::TokenRejected)
    );
    assert_eq!(
        seb.details(&payment_ref(), None, None).await.unwrap_err(),
        BankError::TokenRejected
    );
    assert_eq!(
        seb.cancel(&[payment_ref()], None, None).await.unwrap_err(),
        BankError::TokenRejected
    );
    assert!(requests(&server).await.is_empty());
    assert_eq!(
        seb.status_with_token(&payment_ref(), Some(&token()), None)
            .await,
        Err(BankError::TokenRejected)
    );
    assert_eq!(
        seb.signing_progress("auth-1", &token(), None).await,
        Err(BankError::TokenRejected)
    );
    assert_eq!(requests(&server).await.len(), 2, "a 401 is not retried");
}

#[tokio::test]
async fn seb_format_errors_name_the_path_and_unknown_products_are_validation() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{PIS}/payments/{PRODUCT}")))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "type": "https://berlingroup.com/error-codes/FORMAT_ERROR", "title": "Format error",
            "status": 400, "code": "FORMAT_ERROR", "detail": "the OCR reference's check digit is wrong",
            "path": "remittanceInformationStructured.reference"
        })))
        .mount(&server)
        .await;
    let BankError::Validation { failures } = client(&server)
        .initiate_with_token(&sek_payment(), &token(), None)
        .await
        .unwrap_err()
    else {
        panic!("not a validation")
    };
    assert_eq!(failures[0].code, "FORMAT_ERROR");
    assert_eq!(
        failures[0].path.as_deref(),
        Some("remittanceInformationStructured.reference")
    );
    // A currency without a product is refused before any call.
    let mut p = sek_payment();
    p.amount = crate::domain::Money::from_minor(100, crate::domain::Currency::Nok).unwrap();
    let BankError::Validation { failures } = client(&server)
        .initiate_with_token(&p, &token(), None)
        .await
        .unwrap_err()
    else {
        panic!("not a validation")
    };
    assert_eq!(failures[0].path.as_deref(), Some("amount.currency"));
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn seb_signing_starts_for_the_payment_and_already_in_progress_is_a_failed_order() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tpp/signing/v1/signing-orders"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "authorisationId": "13c853a9-ed7d-4aa1-83a4-44e1b10a46f2", "scaStatus": "started",
            "scaMethod": {"authenticationType": "PHOTO_OTP", "authenticationMethodId": "bankIdQr",
                "name": "Mobilt BankId with QR-code", "methodType": "DECOUPLED"},
            "psuMessage": "Starta BankID-appen", "orderIds": [PAYMENT_ID],
            "qrData": "bankid.a.0.b", "autoStartToken": "ast-1", "hintCode": "outstandingTransaction",
            "tppMessages": [], "_links": {"self": {"href": "/signing-orders/13c853a9-ed7d-4aa1-83a4-44e1b10a46f2"}}
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/tpp/signing/v1/signing-orders"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "authorisationId": "0f0e", "scaStatus": "failed", "orderIds": [PAYMENT_ID],
            "tppMessages": [{"category": "ERROR", "code": "ALREADY_IN_PROGRESS", "text": "A BankID signing transaction was already in progress for the PSU."}],
            "_links": {}
        })))
        .mount(&server)
        .await;
    let seb = client(&server);
    let order = seb
        .start_signing(&payment_ref(), &token(), Some(&shopper()))
        .await
        .unwrap();
    assert_eq!(order.id, "13c853a9-ed7d-4aa1-83a4-44e1b10a46f2");
    assert_eq!(order.progress.state, BankIdState::Pending);
    assert_eq!(order.progress.autostart_token.as_deref(), Some("ast-1"));
    let sent = requests(&server).await;
    assert_eq!(
        body_of(&sent[0]),
        json!({"orderIds": [PAYMENT_ID], "authenticationMethodId": "bankIdQr"})
    );
    assert_eq!(
        header(&sent[0], "authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(header(&sent[0], "psu-ip-address"), Some("203.0.113.7"));
    assert_request_id(&sent[0]);
    let again = seb
        .start_signing(&payment_ref(), &token(), None)
        .await
        .unwrap();
    assert_eq!(again.progress.state, BankIdState::Failed);
    assert_eq!(
        again.progress.hint_code.as_deref(),
        Some("ALREADY_IN_PROGRESS")
    );
}

#[tokio::test]
async fn seb_signing_progress_is_read_and_an_unknown_order_is_not_found() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/tpp/signing/v1/signing-orders/auth-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "authorisationId": "auth-1", "scaStatus": "failed", "hintCode": "userCancel", "tppMessages": []
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/tpp/signing/v1/signing-orders/gone"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "type": "https://sign.seb.se/error-codes/RESOURCE_UNKNOWN",
            "title": "The addressed resource is unknown relative to the API Client.",
            "detail": "The provided authorisationId is unknown", "status": 404, "code": "RESOURCE_UNKNOWN"
        })))
        .mount(&server)
        .await;
    let seb = client(&server);
    let progress = seb
        .signing_progress("auth-1", &token(), None)
        .await
        .unwrap();
    assert_eq!(progress.state, BankIdState::Failed);
    assert_eq!(progress.hint_code.as_deref(), Some("userCancel"));
    assert_eq!(
        seb.signing_progress("gone", &token(), None).await,
        Err(BankError::NotFound)
    );
    // An id that is not URL-safe is refused before any call: nothing was sent.
    assert!(matches!(
        seb.signing_progress("../payments", &token(), None).await,
        Err(BankError::NotSent { .. })
    ));
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn seb_details_read_the_amount_exactly_and_cancel_reports_each_payment() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(payment_path()))
        .respond_with(ResponseTemplate::new(200).set_body_string(
            r#"{"transactionStatus":"ACTC","instructedAmount":{"amount":0.3,"currency":"SEK"},
               "creditorAccount":{"bgnr":"5678-1234"},"creditorName":"Butiken AB",
               "endToEndIdentification":"5a3f726e1bd94d7fa3e97c9c7e24e092"}"#,
        ))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(payment_path()))
        .respond_with(ResponseTemplate::new(204))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(payment_path()))
        .respond_with(problem(400, "CANCELLATION_INVALID"))
        .mount(&server)
        .await;
    let seb = client(&server);
    let details = seb
        .details(&payment_ref(), Some(&token()), None)
        .await
        .unwrap();
    assert_eq!(details.amount.map(|m| m.minor()), Some(30));
    assert_eq!(details.status.status, Some(PaymentStatus::Authorized));
    assert_eq!(
        details.creditor_account.map(|a| a.kind),
        Some(crate::bank::AccountType::Bgnr)
    );
    let outcome = seb
        .cancel(&[payment_ref()], Some(&token()), None)
        .await
        .unwrap();
    assert_eq!(outcome.deleted.len(), 1);
    let outcome = seb
        .cancel(&[payment_ref()], Some(&token()), None)
        .await
        .unwrap();
    assert_eq!(
        outcome.errors[0].code.as_deref(),
        Some("CANCELLATION_INVALID")
    );
}

/// Only SEB's 204 proves a deletion. A 202 is the Berlin Group's "the cancellation needs
/// the shopper's authorisation": not deleted (the payment's status decides). Any other 2xx
/// proves nothing and is an unexpected answer, never a deletion.
#[tokio::test]
async fn seb_a_delete_answered_202_is_not_a_deletion_and_another_2xx_proves_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path(payment_path()))
        .respond_with(ResponseTemplate::new(202).set_body_string(r#"{"transactionStatus":"RCVD"}"#))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(payment_path()))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(payment_path()))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let seb = client(&server);
    let outcome = seb
        .cancel(&[payment_ref()], Some(&token()), None)
        .await
        .unwrap();
    assert!(outcome.deleted.is_empty(), "a 202 deleted nothing");
    assert_eq!(outcome.needs_authorisation, vec![payment_ref().id]);
    assert!(outcome.errors.is_empty());
    let err = seb
        .cancel(&[payment_ref()], Some(&token()), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BankError::Unexpected {
                status: Some(200),
                ..
            }
        ),
        "{err:?}"
    );
    let outcome = seb
        .cancel(&[payment_ref()], Some(&token()), None)
        .await
        .unwrap();
    assert_eq!(outcome.deleted, vec![payment_ref().id]);
    assert!(outcome.needs_authorisation.is_empty());
    assert_eq!(requests(&server).await.len(), 3, "each DELETE sent once");
}

#[tokio::test]
async fn seb_links_away_from_the_pis_base_are_refused_before_the_token_leaves() {
    let server = MockServer::start().await;
    let seb = client(&server);
    for href in [
        "https://evil.example/payments/x/y/status",
        "/../../auth/v4/tokens",
        "http://127.0.0.1:1/tpp/pis/private/v1/identified2/payments/x/y/status",
    ] {
        let mut payment = payment_ref();
        payment.links.0.insert("status".into(), href.into());
        assert!(
            matches!(
                seb.status_with_token(&payment, Some(&token()), None).await,
                Err(BankError::NotSent { .. })
            ),
            "{href}"
        );
    }
    assert!(requests(&server).await.is_empty());
    // A link with the whole PIS path, or an absolute one on SEB's origin, is followed.
    assert!(seb.resolve(&format!("{}/status", payment_path())).is_ok());
    assert!(
        seb.resolve(&format!("{}{}/status", server.uri(), payment_path()))
            .is_ok()
    );
}

/// SEB made the payment but its answer's links point away from the PIS base: before, the
/// initiation failed `NotSent` ("nothing reached the bank"), the payment ended `failed` and
/// its id was lost while SEB held it. Now the payment is kept, with its standard path under
/// the configured base, which the token may follow.
#[tokio::test]
async fn seb_a_made_payment_whose_links_point_elsewhere_is_kept_with_its_standard_path() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{PIS}/payments/{PRODUCT}")))
        .respond_with(ResponseTemplate::new(201).set_body_string(format!(
            r#"{{"paymentId":"{PAYMENT_ID}","transactionStatus":"RCVD",
                "_links":{{"self":{{"href":"https://evil.example/payments/{PRODUCT}/{PAYMENT_ID}"}},
                           "status":{{"href":"https://evil.example/payments/{PRODUCT}/{PAYMENT_ID}/status"}}}}}}"#
        )))
        .mount(&server)
        .await;
    let seb = client(&server);
    let initiated = seb
        .initiate_with_token(&sek_payment(), &token(), None)
        .await
        .expect("the payment SEB made is kept");
    assert_eq!(initiated.bank_payment_id.as_str(), PAYMENT_ID);
    let standard = format!("/payments/{PRODUCT}/{PAYMENT_ID}");
    assert_eq!(initiated.links.get("self"), Some(standard.as_str()));
    assert_eq!(
        initiated.links.get("status"),
        Some(format!("{standard}/status").as_str())
    );
    assert_eq!(
        seb.resolve(initiated.links.get("status").unwrap())
            .unwrap()
            .path(),
        format!("{}/status", payment_path())
    );
}

#[test]
fn seb_client_debug_shows_no_secret() {
    let mut c = SebConfig::new(
        "seb",
        "https://api-sandbox.sebgroup.com",
        "id",
        SecretString::from("client-secret-value"),
        "192.0.2.1".parse().unwrap(),
    );
    c.tls_identity_pem = Some(SecretString::from("-----BEGIN PRIVATE KEY----- secret-key"));
    let shown = format!("{c:?}");
    assert!(!shown.contains("secret"), "{shown}");
    let client = SebClient::new(SebConfig {
        tls_identity_pem: None,
        ..c
    })
    .unwrap();
    assert!(!format!("{client:?}").contains("secret"));
}

/// Collects everything written by the tracing subscriber.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn seb_logs_name_no_token_autostart_token_qr_data_order_id_secret_or_account() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = MockServer::start().await;
    let order_id = "0b6c1a52-ORDER-ID-SECRET";
    Mock::given(method("POST"))
        .and(path("/auth/v4/authorizations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"auth_req_id": order_id})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/auth/v4/authorizations/{order_id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "PENDING", "hint_code": "outstandingTransaction", "poll_delay": 1000,
            "qr_token": "bankid.QR-DATA-SECRET.0.ab", "autostart_token": "AUTOSTART-SECRET"
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/auth/v4/tokens"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "ACCESS-SECRET", "refresh_token": "REFRESH-SECRET", "expires_in": 1800
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{PIS}/payments/{PRODUCT}")))
        .respond_with(problem(400, "FORMAT_ERROR"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/tpp/signing/v1/signing-orders"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "authorisationId": "SIGNING-ORDER-ID", "scaStatus": "started",
            "qrData": "bankid.QR-DATA-SECRET.1.cd", "autoStartToken": "AUTOSTART-SECRET", "tppMessages": []
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let seb = client(&server);
    let order = seb.start_identification(Some(&shopper())).await.unwrap();
    let tokens = seb.identification_tokens(&order.id).await.unwrap();
    let payment = sek_payment();
    assert!(
        seb.initiate_with_token(&payment, &tokens.access_token, None)
            .await
            .is_err()
    );
    let signing = seb
        .start_signing(&payment_ref(), &tokens.access_token, None)
        .await
        .unwrap();
    assert!(
        seb.signing_progress(&signing.id, &tokens.access_token, None)
            .await
            .is_err()
    );
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("bank call failed"), "{logs}");
    assert!(logs.contains("retrying the read"), "{logs}");
    for secret in [
        order_id,
        "QR-DATA-SECRET",
        "AUTOSTART-SECRET",
        "ACCESS-SECRET",
        "REFRESH-SECRET",
        "client-secret-value",
        "SIGNING-ORDER-ID",
        payment.creditor.account.value.as_str(),
        "5678-1234",
        "1993112196394",
    ] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
}

#[tokio::test]
async fn seb_a_timeout_is_unavailable_with_an_unknown_outcome_reads_retried_initiation_not() {
    let server = MockServer::start().await;
    let slow = ResponseTemplate::new(200)
        .set_body_json(json!({"transactionStatus": "ACSC"}))
        .set_delay(Duration::from_millis(1500));
    Mock::given(method("GET"))
        .respond_with(slow.clone())
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(slow)
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.request_timeout = Duration::from_millis(300);
    let seb = SebClient::new(config).unwrap();
    let err = seb
        .initiate_with_token(&sek_payment(), &token(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BankError::Unavailable {
                retry_safe: false,
                ..
            }
        ),
        "the bank may have made the payment: {err:?}"
    );
    assert!(!err.provably_not_processed());
    assert_eq!(requests(&server).await.len(), 1);
    let err = seb
        .status_with_token(&payment_ref(), Some(&token()), None)
        .await
        .unwrap_err();
    assert!(matches!(err, BankError::Unavailable { .. }), "{err:?}");
    assert_eq!(requests(&server).await.len(), 4, "a read is tried 3 times");
}
