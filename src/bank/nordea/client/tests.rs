//! The client against a mock server: what it sends (signed exactly as Nordea checks it) and
//! how it reads faults the real sandbox will also produce (error bodies, 429, 5xx, slow or
//! absent servers). The sandbox simulator's integration tests come on top of these.

use super::*;
use crate::bank::nordea::convert::tests::sample_payment;
use crate::bank::nordea::signing::{
    BodyHeaders, HEADERS_WITH_BODY, HEADERS_WITHOUT_BODY, digest_header, parse_public_key,
    parse_signature_header, signing_string, verify,
};
use crate::bank::{Account, AccountType};
use crate::domain::PaymentStatus;
use serde_json::json;
use wiremock::matchers::{body_string, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KAT_PRIVATE: &str = include_str!("../../../../tests/fixtures/nordea/kat-private.pem");
const KAT_PUBLIC: &str = include_str!("../../../../tests/fixtures/nordea/kat-public.pem");
const CLIENT_ID: &str = "test-client-id";
const CLIENT_SECRET: &str = "test-client-secret";
const PAYMENT_ID: &str = "b084d0ac-a708-43a1-bdc9-c90939a150be";

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_backoff: Duration::from_millis(1),
    }
}

fn config(server: &MockServer) -> NordeaConfig {
    let mut config = NordeaConfig::new(
        format!("{}/personal", server.uri()),
        CLIENT_ID,
        SecretString::from(CLIENT_SECRET),
        SigningKey::from_text(KAT_PRIVATE).unwrap(),
    );
    config.read_retries = fast_retries();
    config.connect_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(2);
    config
}

fn client(server: &MockServer) -> NordeaClient {
    NordeaClient::new(config(server)).unwrap()
}

fn id() -> BankPaymentId {
    BankPaymentId::parse(PAYMENT_ID).unwrap()
}

fn rid() -> BankRef {
    BankRef::id_only(id())
}

fn token() -> SecretString {
    SecretString::from("shopper-access-token")
}

fn psu() -> PsuContext {
    PsuContext {
        ip: Some("203.0.113.7".parse().unwrap()),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)".into()),
    }
}

fn envelope(http_code: u16, response: serde_json::Value) -> serde_json::Value {
    json!({
        "group_header": {"message_identification": "m1", "creation_date_time": "2025-03-27T15:59:39Z", "http_code": http_code},
        "response": response
    })
}

fn initiation_answer() -> serde_json::Value {
    envelope(
        201,
        json!({"_links": [
            {"rel": "redirect", "href": "https://signing.example/ssca/sign?client_id=x&state=y"},
            {"rel": "status", "href": format!("/v2/single-sca-payments/{PAYMENT_ID}/status")},
            {"rel": "details", "href": format!("/v2/single-sca-payments/{PAYMENT_ID}")}
        ]}),
    )
}

fn status_answer(status: &str) -> serde_json::Value {
    envelope(200, json!({"payment_id": PAYMENT_ID, "status": status}))
}

fn details_answer() -> serde_json::Value {
    envelope(
        200,
        json!({
            "payment_id": PAYMENT_ID, "external_id": "ext-1", "amount": "14.24", "currency": "DKK",
            "debtor": {"account": {"type": "IBAN", "value": "DK6120301544118028", "currency": "DKK"}},
            "creditor": {"account": {"type": "IBAN", "value": "DK1053930000412656"}, "message": "Creditor Message"},
            "status": "Paid", "requested_execution_date": "2024-09-23", "planned_execution_date": "2024-09-23"
        }),
    )
}

fn nordea_error(http_code: u16, code: &str) -> serde_json::Value {
    json!({
        "group_header": {"http_code": http_code},
        "error": {"request": {"url": "/v2"}, "failures": [{"code": code, "description": "d", "path": "p", "type": "t"}]}
    })
}

fn token_answer() -> serde_json::Value {
    json!({"access_token": "new-access", "refresh_token": "new-refresh", "expires_in": 3599, "token_type": "Bearer"})
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

fn header_of<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request.headers.get(name).map(|v| v.to_str().unwrap())
}

/// Checks a request the way Nordea does: credentials, host, date, digest, and the signature
/// over the rebuilt signing string, verified with the public key.
fn assert_signed(server: &MockServer, request: &Request) {
    let h = |name: &str| header_of(request, name).unwrap_or_else(|| panic!("missing {name}"));
    assert_eq!(h("x-ibm-client-id"), CLIENT_ID);
    assert_eq!(h("x-ibm-client-secret"), CLIENT_SECRET);
    assert_eq!(h("accept"), "application/json");
    let port = server.address().port();
    assert_eq!(h("x-nordea-originating-host"), format!("127.0.0.1:{port}"));
    assert!(httpdate::parse_http_date(h("x-nordea-originating-date")).is_ok());
    assert!(trace::is_valid(h("traceparent")), "{}", h("traceparent"));

    let parsed = parse_signature_header(h("signature")).unwrap();
    assert_eq!(parsed.key_id, CLIENT_ID);
    assert_eq!(parsed.algorithm, "rsa-sha256");
    let path_and_query = match request.url.query() {
        Some(q) => format!("{}?{q}", request.url.path()),
        None => request.url.path().to_owned(),
    };
    let three_header_delete =
        request.method.as_str() == "DELETE" && parsed.headers == HEADERS_WITHOUT_BODY;
    let body = if request.body.is_empty() || three_header_delete {
        assert_eq!(parsed.headers, HEADERS_WITHOUT_BODY);
        assert!(header_of(request, "digest").is_none());
        None
    } else {
        assert_eq!(parsed.headers, HEADERS_WITH_BODY);
        assert_eq!(h("digest"), digest_header(&request.body));
        Some(BodyHeaders {
            content_type: h("content-type"),
            digest: h("digest"),
        })
    };
    let text = signing_string(
        request.method.as_str(),
        &path_and_query,
        h("x-nordea-originating-host"),
        h("x-nordea-originating-date"),
        body,
    );
    let public = parse_public_key(KAT_PUBLIC).unwrap();
    assert!(
        verify(&public, text.as_bytes(), &parsed.signature),
        "signature does not verify over:\n{text}"
    );
}

// --- what is sent ---------------------------------------------------------------------

#[tokio::test]
async fn initiating_a_finnish_payment_posts_a_signed_json_body_to_the_sepa_endpoint() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/personal/v2/payments/authorization/sepa-credit-transfer",
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(initiation_answer()))
        .expect(1)
        .mount(&server)
        .await;
    let payment = sample_payment(Country::Fi);

    let initiated = client(&server)
        .initiate(&payment, Some(&psu()))
        .await
        .unwrap();

    assert_eq!(initiated.bank_payment_id, id());
    assert!(
        initiated
            .authorization_url()
            .unwrap()
            .starts_with("https://signing.example/")
    );
    assert_eq!(initiated.status.bank_status, "PendingUserApproval");
    assert_eq!(
        initiated.status.status,
        Some(PaymentStatus::AwaitingAuthorization)
    );
    let sent = &requests(&server).await[0];
    assert_signed(&server, sent);
    assert_eq!(header_of(sent, "content-type"), Some("application/json"));
    assert_eq!(
        header_of(sent, "x-nordea-originating-user-ip"),
        Some("203.0.113.7")
    );
    assert_eq!(
        header_of(sent, "x-nordea-originating-user-agent"),
        Some("Mozilla/5.0 (X11; Linux x86_64)")
    );
    assert!(header_of(sent, "authorization").is_none());
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        body,
        serde_json::to_value(convert::initiation_request(&payment)).unwrap()
    );
    assert_eq!(body["payment"]["amount"], "10.05");
}

#[tokio::test]
async fn danish_swedish_and_norwegian_payments_use_the_domestic_endpoint() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/personal/v2/payments/authorization/domestic-credit-transfer",
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(initiation_answer()))
        .expect(3)
        .mount(&server)
        .await;
    let client = client(&server);
    for country in [Country::Dk, Country::Se, Country::No] {
        let mut payment = sample_payment(country);
        payment.creditor.account = Account {
            kind: AccountType::BbanSe,
            value: "43951000887".into(),
        };
        client.initiate(&payment, None).await.unwrap();
    }
    for (sent, currency) in requests(&server).await.iter().zip(["DKK", "SEK", "NOK"]) {
        assert_signed(&server, sent);
        let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(body["payment"]["currency"], currency);
        assert!(header_of(sent, "x-nordea-originating-user-ip").is_none());
    }
}

#[tokio::test]
async fn status_is_signed_without_a_body_and_without_a_bearer() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/personal/v2/single-sca-payments/{PAYMENT_ID}/status"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(status_answer("Confirmed")))
        .expect(1)
        .mount(&server)
        .await;

    let report = client(&server).status(&rid(), None).await.unwrap();

    assert_eq!(report.bank_status, "Confirmed");
    assert_eq!(report.status, Some(PaymentStatus::Authorized));
    let sent = &requests(&server).await[0];
    assert_signed(&server, sent);
    assert!(header_of(sent, "authorization").is_none());
    assert!(header_of(sent, "content-type").is_none());
}

#[tokio::test]
async fn an_unrecognised_bank_status_changes_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(status_answer("Unknown")))
        .mount(&server)
        .await;
    let report = client(&server).status(&rid(), None).await.unwrap();
    assert_eq!(report.bank_status, "Unknown");
    assert_eq!(report.status, None);
}

#[tokio::test]
async fn details_send_the_shoppers_bearer_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/personal/v2/single-sca-payments/{PAYMENT_ID}"
        )))
        .and(header("authorization", "Bearer shopper-access-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(details_answer()))
        .expect(1)
        .mount(&server)
        .await;

    let details = client(&server)
        .details(&rid(), Some(&token()), None)
        .await
        .unwrap();

    assert_eq!(details.status.status, Some(PaymentStatus::Paid));
    assert_eq!(details.amount.unwrap().to_decimal_string(), "14.24");
    assert_eq!(details.external_id.as_deref(), Some("ext-1"));
    assert_signed(&server, &requests(&server).await[0]);
}

#[tokio::test]
async fn the_funds_check_calls_v3_and_signs_the_query_string() {
    let server = MockServer::start().await;
    let mut answer = details_answer();
    answer["response"]["availability_of_funds"] = json!("true");
    answer["response"]["status"] = json!("Confirmed");
    Mock::given(method("GET"))
        .and(path(format!(
            "/personal/v3/single-sca-payments/{PAYMENT_ID}"
        )))
        .and(query_param("request_availability_of_funds", "true"))
        .and(header("authorization", "Bearer shopper-access-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .expect(1)
        .mount(&server)
        .await;

    let funds = client(&server).funds(&id(), &token(), None).await.unwrap();

    assert_eq!(funds.available, Some(true));
    assert_eq!(funds.details.status.status, Some(PaymentStatus::Authorized));
    let sent = &requests(&server).await[0];
    assert_eq!(sent.url.query(), Some("request_availability_of_funds=true"));
    assert_signed(&server, sent);
}

#[tokio::test]
async fn cancel_sends_a_signed_bulk_delete_with_a_body_and_reports_per_id_errors() {
    let server = MockServer::start().await;
    let other = BankPaymentId::parse("5e6e2d6f-e2dd-4c71-b232-9dfbb88ba866").unwrap();
    Mock::given(method("DELETE"))
        .and(path("/personal/v2/single-sca-payments"))
        .and(body_string(format!(
            r#"{{"payments":[{{"payment_id":"{PAYMENT_ID}"}},{{"payment_id":"{other}"}}]}}"#
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "group_header": {"http_code": 200},
            "response": [PAYMENT_ID],
            "errors": [{"payment_id": other.as_str(), "code": "NotDeletable", "description": "Paid"}]
        })))
        .expect(1)
        .mount(&server)
        .await;

    let outcome = client(&server)
        .cancel(
            &[rid(), BankRef::id_only(other.clone())],
            Some(&token()),
            None,
        )
        .await
        .unwrap();

    assert_eq!(outcome.deleted, vec![id()]);
    assert_eq!(outcome.errors.len(), 1);
    assert_eq!(
        outcome.errors[0].bank_payment_id.as_deref(),
        Some(other.as_str())
    );
    assert_eq!(outcome.errors[0].code.as_deref(), Some("NotDeletable"));
    let sent = &requests(&server).await[0];
    assert_signed(&server, sent);
    // The default profile: the three base headers, no Digest (Nordea's eIDAS article).
    assert_eq!(
        parse_signature_header(header_of(sent, "signature").unwrap())
            .unwrap()
            .headers,
        HEADERS_WITHOUT_BODY
    );
    assert!(header_of(sent, "digest").is_none());
    assert_eq!(header_of(sent, "content-type"), Some("application/json"));
    assert_eq!(
        header_of(sent, "authorization"),
        Some("Bearer shopper-access-token")
    );
}

#[tokio::test]
async fn cancel_with_the_digest_profile_signs_content_type_and_digest() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/personal/v2/single-sca-payments"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "group_header": {"http_code": 200}, "response": [PAYMENT_ID], "errors": []
        })))
        .expect(1)
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.delete_signing = crate::bank::nordea::DeleteSigning::WithDigest;
    let client = NordeaClient::new(config).unwrap();
    let outcome = client.cancel(&[rid()], Some(&token()), None).await.unwrap();
    assert_eq!(outcome.deleted, vec![id()]);
    let sent = &requests(&server).await[0];
    assert_signed(&server, sent);
    assert_eq!(
        parse_signature_header(header_of(sent, "signature").unwrap())
            .unwrap()
            .headers,
        HEADERS_WITH_BODY
    );
    assert_eq!(
        header_of(sent, "digest"),
        Some(digest_header(&sent.body).as_str())
    );
}

#[tokio::test]
async fn cancelling_nothing_asks_nothing_of_the_bank() {
    let server = MockServer::start().await;
    let outcome = client(&server)
        .cancel(&[], Some(&token()), None)
        .await
        .unwrap();
    assert_eq!(outcome, CancelOutcome::default());
    assert!(requests(&server).await.is_empty());
}

#[tokio::test]
async fn the_code_exchange_posts_a_sorted_signed_form_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/personal/v5/authorize/token"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string(
            "code=the-code&grant_type=authorization_code&redirect_uri=https://pisgate.example/v1/callbacks/nordea",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_answer()))
        .expect(1)
        .mount(&server)
        .await;

    let tokens = client(&server)
        .exchange_code(
            &SecretString::from("the-code"),
            "https://pisgate.example/v1/callbacks/nordea",
        )
        .await
        .unwrap();

    assert_eq!(tokens.access_token.expose_secret(), "new-access");
    assert_eq!(tokens.refresh_token.unwrap().expose_secret(), "new-refresh");
    assert_eq!(tokens.expires_in, Duration::from_secs(3599));
    assert_signed(&server, &requests(&server).await[0]);
}

#[tokio::test]
async fn refresh_uses_the_configured_token_path() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/personal/v4/single-sca/token"))
        .and(body_string(
            "grant_type=refresh_token&refresh_token=old-refresh",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(envelope(200, token_answer())))
        .expect(1)
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.token_path = "/v4/single-sca/token/".into();

    let tokens = NordeaClient::new(config)
        .unwrap()
        .refresh(&SecretString::from("old-refresh"))
        .await
        .unwrap();

    assert_eq!(tokens.refresh_token.unwrap().expose_secret(), "new-refresh");
    assert_signed(&server, &requests(&server).await[0]);
}

#[tokio::test]
async fn revoke_posts_the_refresh_token_as_json() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/personal/v5/authorize/token/revoke"))
        .and(body_string(r#"{"token":"old-refresh"}"#))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let revoked = client(&server)
        .revoke(&SecretString::from("old-refresh"))
        .await
        .unwrap();
    assert_eq!(revoked, crate::bank::Revocation::Revoked);
    assert_signed(&server, &requests(&server).await[0]);
}

// --- how answers are read ----------------------------------------------------------------

async fn status_error(response: ResponseTemplate) -> BankError {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(response)
        .mount(&server)
        .await;
    client(&server).status(&rid(), None).await.unwrap_err()
}

#[tokio::test]
async fn bank_error_bodies_become_typed_errors() {
    assert_eq!(
        status_error(
            ResponseTemplate::new(401).set_body_json(nordea_error(401, "error.signature.invalid"))
        )
        .await,
        BankError::BadSignature {
            code: "error.signature.invalid".into()
        }
    );
    assert_eq!(
        status_error(ResponseTemplate::new(401).set_body_json(nordea_error(401, "unauthorized")))
            .await,
        BankError::BadCredentials {
            code: "unauthorized".into()
        }
    );
    assert_eq!(
        status_error(
            ResponseTemplate::new(403).set_body_json(nordea_error(403, "error.apikey.missing"))
        )
        .await,
        BankError::BadCredentials {
            code: "error.apikey.missing".into()
        }
    );
    assert_eq!(
        status_error(ResponseTemplate::new(404)).await,
        BankError::NotFound
    );
    assert_eq!(
        status_error(ResponseTemplate::new(429).insert_header("Retry-After", "7")).await,
        BankError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    let validation = status_error(ResponseTemplate::new(400).set_body_json(json!({
        "tpp_messages": [{"category": "ERROR", "code": "AM04", "text": "Insufficient funds"}]
    })))
    .await;
    assert_eq!(validation.kind(), "validation");
}

#[tokio::test]
async fn a_401_on_a_bearer_call_means_the_token_is_dead() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let client = client(&server);
    assert_eq!(
        client
            .details(&rid(), Some(&token()), None)
            .await
            .unwrap_err(),
        BankError::TokenRejected
    );
    assert_eq!(
        client.funds(&id(), &token(), None).await.unwrap_err(),
        BankError::TokenRejected
    );
}

#[tokio::test]
async fn a_refused_refresh_token_is_dead_but_a_refused_code_is_a_validation_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"error": "invalid_grant", "error_description": "used"})),
        )
        .mount(&server)
        .await;
    let client = client(&server);
    assert_eq!(
        client
            .refresh(&SecretString::from("old"))
            .await
            .unwrap_err(),
        BankError::TokenRejected
    );
    let BankError::Validation { failures } = client
        .exchange_code(&SecretString::from("code"), "https://x.example/cb")
        .await
        .unwrap_err()
    else {
        panic!("expected a validation error")
    };
    assert_eq!(failures[0].code, "invalid_grant");
}

#[tokio::test]
async fn an_unreadable_answer_is_unexpected_and_does_not_quote_the_body() {
    let error = status_error(
        ResponseTemplate::new(200)
            .set_body_string(r#"{"response": {"status": 12, "iban": "FI1450000120236228"}}"#),
    )
    .await;
    let BankError::Unexpected { status, detail } = &error else {
        panic!("expected unexpected, got {error:?}")
    };
    assert_eq!(*status, Some(200));
    assert!(!detail.contains("FI14"), "{detail}");
}

// --- retries, timeouts, transport ------------------------------------------------------------

#[tokio::test]
async fn reads_are_retried_while_the_bank_is_unavailable() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(status_answer("Paid")))
        .mount(&server)
        .await;

    let report = client(&server).status(&rid(), None).await.unwrap();

    assert_eq!(report.status, Some(PaymentStatus::Paid));
    let sent = requests(&server).await;
    assert_eq!(sent.len(), 3);
    for request in &sent {
        assert_signed(&server, request);
    }
}

#[tokio::test]
async fn reads_give_up_after_the_configured_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&server)
        .await;
    let client = client(&server);
    assert_eq!(
        client.status(&rid(), None).await.unwrap_err().kind(),
        "unavailable"
    );
    assert_eq!(requests(&server).await.len(), 3);
    assert_eq!(
        client
            .details(&rid(), Some(&token()), None)
            .await
            .unwrap_err()
            .kind(),
        "unavailable"
    );
    assert_eq!(requests(&server).await.len(), 6);
}

#[tokio::test]
async fn writes_and_token_calls_are_never_retried() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let client = client(&server);
    let secret = SecretString::from("x");
    let results = [
        client
            .initiate(&sample_payment(Country::Fi), None)
            .await
            .map(|_| ()),
        client
            .cancel(&[rid()], Some(&token()), None)
            .await
            .map(|_| ()),
        client
            .exchange_code(&secret, "https://x.example/cb")
            .await
            .map(|_| ()),
        client.refresh(&secret).await.map(|_| ()),
        client.revoke(&secret).await.map(|_| ()),
    ];
    for result in results {
        assert_eq!(result.unwrap_err().kind(), "unavailable");
    }
    assert_eq!(requests(&server).await.len(), 5);
}

#[tokio::test]
async fn rate_limited_reads_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429))
        .mount(&server)
        .await;
    let error = client(&server).status(&rid(), None).await.unwrap_err();
    assert_eq!(error, BankError::RateLimited { retry_after: None });
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn a_slow_bank_times_out_as_unavailable() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(status_answer("Paid"))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.request_timeout = Duration::from_millis(200);
    config.read_retries.max_attempts = 2;
    let started = Instant::now();

    let error = NordeaClient::new(config)
        .unwrap()
        .status(&rid(), None)
        .await
        .unwrap_err();

    let BankError::Unavailable { detail, retry_safe } = &error else {
        panic!("expected unavailable, got {error:?}")
    };
    assert!(detail.starts_with("timed out"), "{detail}");
    // The request was sent: the bank may have acted on it.
    assert!(!retry_safe, "a timeout after sending is not retry-safe");
    assert!(!error.provably_not_processed());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn an_unreachable_bank_is_unavailable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut config = NordeaConfig::new(
        format!("http://127.0.0.1:{port}/personal"),
        CLIENT_ID,
        SecretString::from(CLIENT_SECRET),
        SigningKey::from_text(KAT_PRIVATE).unwrap(),
    );
    config.read_retries = fast_retries();
    let error = NordeaClient::new(config)
        .unwrap()
        .status(&rid(), None)
        .await
        .unwrap_err();
    let BankError::Unavailable { detail, retry_safe } = &error else {
        panic!("expected unavailable, got {error:?}")
    };
    assert!(detail.starts_with("connection failed"), "{detail}");
    // Nothing was ever sent: the bank cannot have processed it.
    assert!(retry_safe, "a refused connection is retry-safe");
    assert!(error.provably_not_processed());
}

#[tokio::test]
async fn a_connection_dropped_after_sending_is_not_retry_safe() {
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Reads the whole request, then closes the connection without answering.
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            drop(stream);
        }
    });
    let mut config = NordeaConfig::new(
        format!("http://{addr}/personal"),
        CLIENT_ID,
        SecretString::from(CLIENT_SECRET),
        SigningKey::from_text(KAT_PRIVATE).unwrap(),
    );
    config.read_retries = RetryPolicy {
        max_attempts: 1,
        base_backoff: Duration::from_millis(1),
    };
    let error = NordeaClient::new(config)
        .unwrap()
        .status(&rid(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            BankError::Unavailable {
                retry_safe: false,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.provably_not_processed());
}

#[tokio::test]
async fn the_banks_own_503_is_retry_safe_and_a_502_is_not() {
    let bank_error = json!({
        "group_header": {"http_code": 503},
        "error": {"failures": [{"code": "error.service.unavailable", "description": "down"}]}
    });
    for (status, safe) in [(503, true), (502, false), (500, false), (504, false)] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_json(&bank_error))
            .mount(&server)
            .await;
        let error = client(&server)
            .initiate(&sample_payment(Country::Fi), None)
            .await
            .unwrap_err();
        assert_eq!(
            error,
            BankError::Unavailable {
                detail: format!("HTTP {status}"),
                retry_safe: safe,
            }
        );
        assert_eq!(error.provably_not_processed(), safe, "{status}");
        assert_eq!(requests(&server).await.len(), 1, "{status}: sent once");
    }
}

#[tokio::test]
async fn a_bare_503_to_an_initiation_leaves_its_outcome_unknown() {
    let html = "<html><head><title>503 Service Unavailable</title></head>\
                <body><h1>Service Unavailable</h1></body></html>";
    for body in ["", html] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(503).set_body_raw(body.as_bytes().to_vec(), "text/html"),
            )
            .mount(&server)
            .await;
        let error = client(&server)
            .initiate(&sample_payment(Country::Fi), None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                BankError::Unavailable {
                    retry_safe: false,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            !error.provably_not_processed(),
            "a gateway may have passed it on: {body:?}"
        );
        assert_eq!(requests(&server).await.len(), 1, "sent once");
    }
}

#[test]
fn backoff_grows_with_jitter_and_is_capped() {
    let policy = RetryPolicy {
        max_attempts: 10,
        base_backoff: Duration::from_millis(100),
    };
    for _ in 0..50 {
        let first = policy.backoff(1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let third = policy.backoff(3);
        assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
        assert!(policy.backoff(40) <= MAX_BACKOFF);
    }
}

// --- trace context --------------------------------------------------------------------------

#[tokio::test]
async fn the_traceparent_carries_the_current_spans_trace_id() {
    use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
    use tracing::Instrument as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(status_answer("Paid")))
        .mount(&server)
        .await;
    let client = client(&server);
    let span = tracing::info_span!("poll");
    let trace_id = span.context().span().span_context().trace_id();
    assert!(trace_id != opentelemetry::trace::TraceId::INVALID);

    client.status(&rid(), None).instrument(span).await.unwrap();

    let sent = &requests(&server).await[0];
    let tp = header_of(sent, "traceparent").unwrap();
    assert!(trace::is_valid(tp), "{tp}");
    assert_eq!(&tp[3..35], trace_id.to_string());
}

#[tokio::test]
async fn without_a_trace_context_a_fresh_valid_traceparent_is_sent_each_time() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(status_answer("Paid")))
        .mount(&server)
        .await;
    let client = client(&server);
    client.status(&rid(), None).await.unwrap();
    client.status(&rid(), None).await.unwrap();
    let sent = requests(&server).await;
    let a = header_of(&sent[0], "traceparent").unwrap();
    let b = header_of(&sent[1], "traceparent").unwrap();
    assert!(trace::is_valid(a) && trace::is_valid(b));
    assert_ne!(a, b);
}

// --- configuration ----------------------------------------------------------------------------

#[test]
fn the_originating_host_is_lower_case_with_a_port_only_when_not_default() {
    let host = |u: &str| originating_host(&Url::parse(u).unwrap()).unwrap();
    assert_eq!(
        host("https://API.NordeaOpenBanking.com/personal"),
        "api.nordeaopenbanking.com"
    );
    assert_eq!(
        host("https://api.nordeaopenbanking.com:443/personal"),
        "api.nordeaopenbanking.com"
    );
    assert_eq!(host("http://127.0.0.1:8089/personal"), "127.0.0.1:8089");
    assert_eq!(
        host("https://sandbox.example:8443/x"),
        "sandbox.example:8443"
    );
}

#[test]
fn refuses_unusable_configuration_and_never_prints_the_secret() {
    let key = || SigningKey::from_text(KAT_PRIVATE).unwrap();
    let secret = || SecretString::from(CLIENT_SECRET);
    for base in [
        "not a url",
        "ftp://x.example/personal",
        "https://u:p@x.example/p",
        "https://x.example/p?q=1",
    ] {
        let error = NordeaClient::new(NordeaConfig::new(base, CLIENT_ID, secret(), key()));
        assert!(matches!(error, Err(NordeaConfigError::BaseUrl)), "{base}");
    }
    let mut config = NordeaConfig::new("https://x.example/personal", CLIENT_ID, secret(), key());
    config.token_path = "v5/token".into();
    assert!(matches!(
        NordeaClient::new(config),
        Err(NordeaConfigError::TokenPath)
    ));
    let empty = NordeaConfig::new("https://x.example/personal", "", secret(), key());
    assert!(matches!(
        NordeaClient::new(empty),
        Err(NordeaConfigError::Credentials)
    ));

    let config = NordeaConfig::new("https://x.example/personal/", CLIENT_ID, secret(), key());
    assert!(!format!("{config:?}").contains(CLIENT_SECRET));
    let client = NordeaClient::new(config).unwrap();
    let shown = format!("{client:?}");
    assert!(!shown.contains(CLIENT_SECRET), "{shown}");
    assert!(shown.contains("https://x.example/personal\""), "{shown}");
}

// --- metrics ----------------------------------------------------------------------------------

/// Remembers every metric registration as `name{operation,outcome}`.
#[derive(Default)]
struct SeenMetrics(std::sync::Mutex<Vec<String>>);

impl SeenMetrics {
    fn note(&self, key: &metrics::Key) {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        self.0
            .lock()
            .unwrap()
            .push(format!("{}{{{}}}", key.name(), labels.join(",")));
    }
}

impl metrics::Recorder for SeenMetrics {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        self.note(key);
        metrics::Counter::noop()
    }

    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        self.note(key);
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        self.note(key);
        metrics::Histogram::noop()
    }
}

#[tokio::test]
async fn every_http_attempt_is_counted_and_timed_by_bank_operation_and_outcome() {
    let seen = SeenMetrics::default();
    let _guard = metrics::set_default_local_recorder(&seen);
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(status_answer("Paid")))
        .mount(&server)
        .await;

    client(&server).status(&rid(), None).await.unwrap();

    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            "pisgate_bank_requests_total{bank=nordea,operation=status,outcome=unavailable}",
            "pisgate_bank_request_duration_seconds{bank=nordea,operation=status,outcome=unavailable}",
            "pisgate_bank_requests_total{bank=nordea,operation=status,outcome=ok}",
            "pisgate_bank_request_duration_seconds{bank=nordea,operation=status,outcome=ok}",
        ]
    );
}

#[test]
fn a_request_url_is_the_one_parsing_the_base_and_the_path_together_gives() {
    let paths = [
        "/v2/payments/authorization/sepa-credit-transfer",
        "/v2/single-sca-payments/b084d0ac-a708-43a1-bdc9-c90939a150be/status",
        "/v3/single-sca-payments/abc_DEF-1?request_availability_of_funds=true",
        "/v5/authorize/token/revoke",
        "/v2/single-sca-payments/a?b=c&d=e",
        // Not plain: parsed whole, as before.
        "/v2/single-sca-payments/a%2Fb/status",
        "/v2/single-sca-payments/../status",
        "/v2/single-sca-payments/./x",
        "/v2/single-sca-payments/a#frag",
        "/v2/single-sca-payments/a b/status",
        "/v2/single-sca-payments/a?b?c",
        "/v2/single-sca-payments/ä/status",
        "/v2/single-sca-payments/a\\b",
        "",
    ];
    let bases = [
        "http://127.0.0.1:8089/personal",
        "https://api.nordeaopenbanking.com/personal/",
        "https://API.Nordeaopenbanking.com:443",
        "http://localhost:1/a/b/",
    ];
    for base in bases {
        let client = NordeaClient::new(NordeaConfig::new(
            base,
            CLIENT_ID,
            SecretString::from(CLIENT_SECRET),
            SigningKey::from_text(KAT_PRIVATE).unwrap(),
        ))
        .unwrap();
        for path in paths {
            let expected = Url::parse(&format!("{}{path}", client.base)).unwrap();
            let built = client.url_for(path).unwrap();
            assert_eq!(built, expected, "{base} + {path}");
            assert_eq!(built.as_str(), expected.as_str(), "{base} + {path}");
        }
    }
}
