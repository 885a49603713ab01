//! The OP client against a local fake OP (plain HTTP, no TLS files): what it sends (paths,
//! headers, forms, bodies, the request object), how it reads OP's answers, the ID-token
//! checks around the code exchange, the client-token cache, signed answers, and that only
//! reads are retried. The strict simulator comes on top (`sim_tests`, when merged).

use super::*;
use crate::bank::op::convert::tests::eur_payment;
use crate::bank::op::jose::tests::{
    CLIENT, ISSUER, KID, OP_KEY, OTHER_KEY, detached, front_claims, jwks_of, now, op_sign,
};
use crate::domain::PaymentStatus;
use base64::Engine as _;
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const PAYMENT_ID: &str = "pay-0001";
const AUTH_ID: &str = "auth-0001";
const CC_TOKEN: &str = "CLIENT-TOKEN-SECRET";

async fn op_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks_of(OP_KEY, KID)))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": CC_TOKEN, "token_type": "Bearer", "expires_in": 3600
        })))
        .mount(&server)
        .await;
    server
}

fn config(server: &MockServer) -> OpConfig {
    let mut c = OpConfig::new(
        "op",
        server.uri(),
        "https://authorize.psd2-sandbox.op.fi/oauth/authorize",
        ISSUER,
        format!("{}/jwks", server.uri()),
        CLIENT,
        SecretString::from("CLIENT-SECRET-VALUE"),
        SecretString::from("API-KEY-VALUE"),
        SecretString::from(OTHER_KEY),
        "qseal-1",
    );
    c.read_retries = RetryPolicy {
        max_attempts: 3,
        base_backoff: Duration::from_millis(1),
    };
    c.connect_timeout = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(2);
    c
}

fn client(server: &MockServer) -> OpClient {
    OpClient::new(config(server)).unwrap()
}

fn payment_ref() -> BankRef {
    BankRef {
        id: BankPaymentId::parse(PAYMENT_ID).unwrap(),
        links: BankLinks(BTreeMap::from([(
            AUTHORIZATION_ID.to_owned(),
            AUTH_ID.to_owned(),
        )])),
    }
}

fn shopper() -> PsuContext {
    PsuContext {
        ip: Some("203.0.113.7".parse().unwrap()),
        user_agent: None,
    }
}

fn payment_json(status: &str) -> Value {
    json!({
        "paymentId": PAYMENT_ID, "authorizationId": AUTH_ID, "status": status,
        "amount": "12.34", "currency": "EUR",
        "creditor": {"name": "Shop Oy", "iban": "FI2112345600000785"},
        "reference": "RF18539007547034", "endToEndId": "3f0c1c9e-7d7a-4c55-9a57-8f1d2f7c0a11",
        "created": "2026-12-05T09:00:00Z"
    })
}

async fn sent(server: &MockServer, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == p)
        .collect()
}

fn header<'r>(r: &'r Request, name: &str) -> Option<&'r str> {
    r.headers.get(name).map(|v| v.to_str().unwrap())
}

fn form(r: &Request) -> BTreeMap<String, String> {
    form_urlencoded::parse(&r.body).into_owned().collect()
}

fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn query_of(url: &str) -> BTreeMap<String, String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn op_initiation_creates_with_the_client_token_and_key_and_redirects_with_a_signed_request_object()
 {
    let server = op_server().await;
    Mock::given(method("POST"))
        .and(path(PAYMENTS))
        .respond_with(ResponseTemplate::new(201).set_body_json(payment_json("Unauthorized")))
        .mount(&server)
        .await;
    let op = client(&server);
    let payment = eur_payment();
    let initiated = op.initiate(&payment, Some(&shopper())).await.unwrap();
    assert_eq!(initiated.bank_payment_id.as_str(), PAYMENT_ID);
    assert!(
        initiated.echo_mismatch.is_empty(),
        "OP echoed what was sent"
    );
    assert_eq!(initiated.links.get(AUTHORIZATION_ID), Some(AUTH_ID));
    assert_eq!(
        initiated.status.status,
        Some(PaymentStatus::AwaitingAuthorization)
    );
    let url = initiated.authorization_url().unwrap();
    assert!(url.starts_with("https://authorize.psd2-sandbox.op.fi/oauth/authorize?request="));
    assert!(url.contains(
        "&response_type=code%20id_token&client_id=pisgate-client&scope=openid%20payments"
    ));
    let query = query_of(url);
    let claims = claims_of(&query["request"]);
    assert_eq!(claims["state"], "state-abc");
    assert_eq!(claims["nonce"], jose::nonce_for("state-abc"));
    assert_eq!(
        claims["aud"],
        server.uri(),
        "the origin of base_url by default"
    );
    assert_eq!(claims["redirect_uri"], payment.authentication.redirect_uri);
    assert_eq!(
        claims["claims"]["id_token"]["authorizationId"]["value"],
        AUTH_ID
    );
    let jwt_header = jsonwebtoken::decode_header(&query["request"]).unwrap();
    assert_eq!(jwt_header.kid.as_deref(), Some("qseal-1"));

    let token = sent(&server, "/oauth/token").await;
    assert_eq!(token.len(), 1);
    assert_eq!(
        form(&token[0]),
        BTreeMap::from([
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("scope".to_owned(), "payments".to_owned()),
            ("client_id".to_owned(), CLIENT.to_owned()),
            ("client_secret".to_owned(), "CLIENT-SECRET-VALUE".to_owned()),
        ])
    );
    let create = &sent(&server, PAYMENTS).await[0];
    assert_eq!(
        header(create, "authorization"),
        Some("Bearer CLIENT-TOKEN-SECRET")
    );
    assert_eq!(header(create, "x-api-key"), Some("API-KEY-VALUE"));
    assert_eq!(
        header(create, "x-idempotency-key"),
        Some(payment.external_id.as_str())
    );
    assert_eq!(
        header(create, "x-fapi-customer-ip-address"),
        Some("203.0.113.7")
    );
    let interaction = header(create, "x-fapi-interaction-id").unwrap();
    assert!(uuid::Uuid::parse_str(interaction).is_ok());
    let body: Value = serde_json::from_slice(&create.body).unwrap();
    assert_eq!(body["amount"], "12.34");
    assert_eq!(body["endToEndId"], payment.external_id);

    // The client token is cached: a second creation asks for none.
    op.initiate(&payment, None).await.unwrap();
    assert_eq!(sent(&server, "/oauth/token").await.len(), 1);
    let second = &sent(&server, PAYMENTS).await[1];
    assert!(header(second, "x-fapi-customer-ip-address").is_none());
    assert_ne!(header(second, "x-fapi-interaction-id"), Some(interaction));
}

/// OP's answer to a creation echoes the amount, currency and creditor: another amount (or
/// one that cannot be read exactly), another currency or another creditor IBAN is a
/// contradiction the caller must act on (the payment exists at OP, so the answer is still
/// the payment's, with its id and authorization).
#[tokio::test]
async fn op_a_creation_answer_echoing_other_terms_is_a_mismatch() {
    let cases: [(&str, Value, Vec<&str>); 7] = [
        ("amount", json!("12.35"), vec!["amount"]),
        ("amount", json!("12.340"), vec![]),
        ("amount", json!("1.234e1"), vec!["amount"]),
        ("currency", json!("SEK"), vec!["currency"]),
        (
            "creditor",
            json!({"name": "Shop Oy", "iban": "fi21 1234 5600 0007 85"}),
            vec![],
        ),
        (
            "creditor",
            json!({"name": "Shop Oy", "iban": "FI4950009420028730"}),
            vec!["creditor_account"],
        ),
        ("reference", json!("RF18539007547034"), vec![]),
    ];
    for (field, value, mismatch) in cases {
        let server = op_server().await;
        let mut answer = payment_json("Unauthorized");
        answer[field] = value.clone();
        Mock::given(method("POST"))
            .and(path(PAYMENTS))
            .respond_with(ResponseTemplate::new(201).set_body_json(answer))
            .mount(&server)
            .await;
        let initiated = client(&server)
            .initiate(&eur_payment(), None)
            .await
            .unwrap();
        assert_eq!(initiated.bank_payment_id.as_str(), PAYMENT_ID);
        assert_eq!(initiated.echo_mismatch, mismatch, "{field}: {value}");
    }
}

#[tokio::test]
async fn op_a_configured_audience_and_ps256_go_into_the_request_object() {
    let server = op_server().await;
    let mut c = config(&server);
    c.request_object_audience = Some("https://mtls-apis.psd2-sandbox.op.fi".into());
    c.request_object_alg = RequestObjectAlg::Ps256;
    let op = OpClient::new(c).unwrap();
    let url = op
        .authorization_url("https://pisgate.example/v1/callbacks/oidc", "s", "a")
        .unwrap();
    let request = &query_of(&url)["request"];
    assert_eq!(
        claims_of(request)["aud"],
        "https://mtls-apis.psd2-sandbox.op.fi"
    );
    assert_eq!(
        jsonwebtoken::decode_header(request).unwrap().alg,
        jsonwebtoken::Algorithm::PS256
    );
}

#[tokio::test]
async fn op_a_refused_client_token_is_renewed_once_then_the_call_is_provably_not_processed() {
    let server = op_server().await;
    Mock::given(method("POST"))
        .and(path(PAYMENTS))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"code": "UNAUTHORIZED", "message": "expired"})),
        )
        .mount(&server)
        .await;
    let err = client(&server)
        .initiate(&eur_payment(), None)
        .await
        .unwrap_err();
    assert!(err.provably_not_processed(), "{err:?}");
    assert_eq!(
        sent(&server, PAYMENTS).await.len(),
        2,
        "one retry after the 401"
    );
    assert_eq!(
        sent(&server, "/oauth/token").await.len(),
        2,
        "a new token for it"
    );
}

#[tokio::test]
async fn op_after_one_401_the_read_succeeds_with_a_new_token() {
    let server = op_server().await;
    let read = format!("{PAYMENTS}/{PAYMENT_ID}");
    Mock::given(method("GET"))
        .and(path(read.clone()))
        .respond_with(ResponseTemplate::new(401))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(read.clone()))
        .respond_with(ResponseTemplate::new(200).set_body_json(payment_json("Debited")))
        .mount(&server)
        .await;
    let report = client(&server).status(&payment_ref(), None).await.unwrap();
    assert_eq!(report.status, Some(PaymentStatus::Paid));
    assert_eq!(sent(&server, &read).await.len(), 2);
}

#[tokio::test]
async fn op_reads_map_statuses_read_amounts_exactly_and_are_retried_when_op_is_unavailable() {
    let server = op_server().await;
    let read = format!("{PAYMENTS}/{PAYMENT_ID}");
    Mock::given(method("GET"))
        .and(path(read.clone()))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(read.clone()))
        .respond_with(ResponseTemplate::new(200).set_body_json(payment_json("SubmissionPending")))
        .mount(&server)
        .await;
    let op = client(&server);
    let details = op.details(&payment_ref(), None, None).await.unwrap();
    assert_eq!(details.status.bank_status, "SubmissionPending");
    assert_eq!(details.status.status, Some(PaymentStatus::Authorized));
    assert!(op.needs_submission(&details.status));
    assert_eq!(
        details.amount,
        Some(crate::domain::Money::from_minor(1234, crate::domain::Currency::Eur).unwrap())
    );
    assert_eq!(details.creditor_name.as_deref(), Some("Shop Oy"));
    assert_eq!(sent(&server, &read).await.len(), 3);
    // An unknown payment is NotFound.
    let unknown = BankRef::id_only(BankPaymentId::parse("nobody").unwrap());
    Mock::given(method("GET"))
        .and(path(format!("{PAYMENTS}/nobody")))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"code": "PAYMENT_NOT_FOUND", "message": "x"})),
        )
        .mount(&server)
        .await;
    assert_eq!(
        op.status(&unknown, None).await.unwrap_err(),
        BankError::NotFound
    );
}

#[tokio::test]
async fn op_cancel_revokes_and_revoke_not_allowed_is_that_payments_refusal() {
    let server = op_server().await;
    Mock::given(method("DELETE"))
        .and(path(format!("{PAYMENTS}/{PAYMENT_ID}")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"paymentId": PAYMENT_ID, "status": "Revoked"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("{PAYMENTS}/pay-signed")))
        .respond_with(ResponseTemplate::new(409).set_body_json(
            json!({"code": "REVOKE_NOT_ALLOWED", "message": "the payment is Authorized"}),
        ))
        .mount(&server)
        .await;
    let signed = BankRef::id_only(BankPaymentId::parse("pay-signed").unwrap());
    let outcome = client(&server)
        .cancel(&[payment_ref(), signed], None, None)
        .await
        .unwrap();
    assert_eq!(outcome.deleted, vec![payment_ref().id]);
    assert_eq!(outcome.errors.len(), 1);
    assert_eq!(
        outcome.errors[0].code.as_deref(),
        Some("REVOKE_NOT_ALLOWED")
    );
    assert_eq!(
        outcome.errors[0].bank_payment_id.as_deref(),
        Some("pay-signed")
    );
    let deletes = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .count();
    assert_eq!(deletes, 2, "each revoke sent once");
}

async fn mount_code_exchange(server: &MockServer, id_token_claims: Value) {
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=authorization_code"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "PAYMENT-TOKEN-SECRET", "token_type": "Bearer", "expires_in": 600,
            "refresh_token": "REFRESH-SECRET", "scope": "openid payments",
            "id_token": op_sign(OP_KEY, KID, &id_token_claims)
        })))
        .mount(server)
        .await;
}

fn back_claims(state: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": "op-shopper-7", "aud": CLIENT, "exp": now() + 300,
        "iat": 1_764_925_200, "nonce": jose::nonce_for(state), "acr": jose::ACR_SCA,
        "authorizationId": AUTH_ID
    })
}

#[tokio::test]
async fn op_code_exchange_checks_both_id_tokens_and_keeps_the_shoppers_pseudonym() {
    let server = op_server().await;
    mount_code_exchange(&server, back_claims("state-1")).await;
    let op = client(&server);
    let code = SecretString::from("CODE-SECRET");
    let state = SecretString::from("state-1");
    let front = op_sign(
        OP_KEY,
        KID,
        &front_claims("CODE-SECRET", "state-1", AUTH_ID),
    );
    let tokens = op
        .exchange_code_for(
            &payment_ref(),
            &code,
            "https://pisgate.example/v1/callbacks/oidc",
            &state,
            Some(&front),
        )
        .await
        .unwrap();
    assert_eq!(tokens.access_token.expose_secret(), "PAYMENT-TOKEN-SECRET");
    assert_eq!(
        tokens.refresh_token.unwrap().expose_secret(),
        "REFRESH-SECRET"
    );
    assert_eq!(tokens.expires_in, Duration::from_secs(600));
    assert_eq!(tokens.shopper_id.as_deref(), Some("op-shopper-7"));
    assert_eq!(tokens.issued_at.unwrap().timestamp(), 1_764_925_200);
    let exchange = sent(&server, "/oauth/token").await;
    assert_eq!(exchange.len(), 1);
    assert_eq!(
        form(&exchange[0]),
        BTreeMap::from([
            ("grant_type".to_owned(), "authorization_code".to_owned()),
            ("code".to_owned(), "CODE-SECRET".to_owned()),
            (
                "redirect_uri".to_owned(),
                "https://pisgate.example/v1/callbacks/oidc".to_owned()
            ),
            ("client_id".to_owned(), CLIENT.to_owned()),
            ("client_secret".to_owned(), "CLIENT-SECRET-VALUE".to_owned()),
        ])
    );
}

fn refused_claim(e: BankError) -> String {
    match e {
        BankError::Validation { failures } if failures[0].code == "ID_TOKEN_INVALID" => {
            failures[0].path.clone().unwrap()
        }
        other => panic!("not an ID-token refusal: {other:?}"),
    }
}

#[tokio::test]
async fn op_a_bad_front_channel_id_token_is_refused_before_the_code_is_spent() {
    let server = op_server().await;
    mount_code_exchange(&server, back_claims("state-1")).await;
    let op = client(&server);
    let code = SecretString::from("CODE-SECRET");
    let state = SecretString::from("state-1");
    let good = front_claims("CODE-SECRET", "state-1", AUTH_ID);
    let mut wrong_issuer = good.clone();
    wrong_issuer["iss"] = json!("https://evil.example");
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("another-client");
    let cases = [
        ("id_token.missing", None),
        ("id_token.iss", Some(op_sign(OP_KEY, KID, &wrong_issuer))),
        ("id_token.aud", Some(op_sign(OP_KEY, KID, &wrong_aud))),
        ("id_token.signature", Some(op_sign(OTHER_KEY, KID, &good))),
        // Another payment's authorization, or another state (its nonce and s_hash).
        (
            "id_token.authorizationId",
            Some(op_sign(
                OP_KEY,
                KID,
                &front_claims("CODE-SECRET", "state-1", "auth-other"),
            )),
        ),
        (
            "id_token.nonce",
            Some(op_sign(
                OP_KEY,
                KID,
                &front_claims("CODE-SECRET", "state-2", AUTH_ID),
            )),
        ),
        (
            "id_token.c_hash",
            Some(op_sign(
                OP_KEY,
                KID,
                &front_claims("OTHER-CODE", "state-1", AUTH_ID),
            )),
        ),
    ];
    for (claim, front) in cases {
        let err = op
            .exchange_code_for(&payment_ref(), &code, "https://r", &state, front.as_deref())
            .await
            .unwrap_err();
        assert_eq!(refused_claim(err), claim);
    }
    assert!(
        sent(&server, "/oauth/token").await.is_empty(),
        "no code was spent"
    );
}

#[tokio::test]
async fn op_a_bad_token_endpoint_id_token_is_refused() {
    let server = op_server().await;
    let mut wrong_nonce = back_claims("state-1");
    wrong_nonce["nonce"] = json!(jose::nonce_for("someone-else"));
    mount_code_exchange(&server, wrong_nonce).await;
    let front = op_sign(
        OP_KEY,
        KID,
        &front_claims("CODE-SECRET", "state-1", AUTH_ID),
    );
    let err = client(&server)
        .exchange_code_for(
            &payment_ref(),
            &SecretString::from("CODE-SECRET"),
            "https://r",
            &SecretString::from("state-1"),
            Some(&front),
        )
        .await
        .unwrap_err();
    assert_eq!(refused_claim(err), "id_token.nonce");
}

#[tokio::test]
async fn op_a_reused_code_is_a_refusal_and_exchange_without_the_payment_sends_nothing() {
    let server = op_server().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=authorization_code"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"})))
        .mount(&server)
        .await;
    let op = client(&server);
    let front = op_sign(
        OP_KEY,
        KID,
        &front_claims("CODE-SECRET", "state-1", AUTH_ID),
    );
    let err = op
        .exchange_code_for(
            &payment_ref(),
            &SecretString::from("CODE-SECRET"),
            "https://r",
            &SecretString::from("state-1"),
            Some(&front),
        )
        .await
        .unwrap_err();
    let BankError::Validation { failures } = err else {
        panic!("{err:?}")
    };
    assert_eq!(failures[0].code, "invalid_grant");
    let before = server.received_requests().await.unwrap().len();
    let err = op
        .exchange_code(&SecretString::from("CODE-SECRET"), "https://r")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exchange_code_for"), "{err}");
    assert_eq!(server.received_requests().await.unwrap().len(), before);
}

#[tokio::test]
async fn op_submit_carries_the_payments_token_and_key_and_is_sent_once() {
    let server = op_server().await;
    let submissions = format!("{PAYMENTS}/{PAYMENT_ID}/submissions");
    Mock::given(method("POST"))
        .and(path(submissions.clone()))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(submissions.clone()))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"paymentId": PAYMENT_ID, "status": "Debited"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(submissions.clone()))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"code": "UNAUTHORIZED", "message": "revoked"})),
        )
        .mount(&server)
        .await;
    let op = client(&server);
    let token = SecretString::from("PAYMENT-TOKEN-SECRET");
    let err = op
        .submit(&payment_ref(), &token, "key-1", Some(&shopper()))
        .await
        .unwrap_err();
    assert!(matches!(err, BankError::Unavailable { .. }), "{err:?}");
    assert_eq!(
        sent(&server, &submissions).await.len(),
        1,
        "a write is never retried"
    );
    let report = op
        .submit(&payment_ref(), &token, "key-1", None)
        .await
        .unwrap();
    assert_eq!(report.status, Some(PaymentStatus::Paid));
    assert!(!op.needs_submission(&report));
    let all = sent(&server, &submissions).await;
    for r in &all {
        assert_eq!(
            header(r, "authorization"),
            Some("Bearer PAYMENT-TOKEN-SECRET")
        );
        assert_eq!(header(r, "x-idempotency-key"), Some("key-1"));
        assert_eq!(header(r, "x-api-key"), Some("API-KEY-VALUE"));
        assert_eq!(r.body, b"{}");
    }
    assert!(
        sent(&server, "/oauth/token").await.is_empty(),
        "no client token for a submit"
    );
    assert_eq!(
        op.submit(&payment_ref(), &token, "key-2", None)
            .await
            .unwrap_err(),
        BankError::TokenRejected
    );
    assert_eq!(sent(&server, &submissions).await.len(), 3);
}

#[tokio::test]
async fn op_signed_answers_are_checked_when_the_payments_jwks_is_configured() {
    let server = op_server().await;
    let body = serde_json::to_vec(&payment_json("Unauthorized")).unwrap();
    Mock::given(method("POST"))
        .and(path(PAYMENTS))
        .and(body_string_contains("\"amount\":\"12.34\""))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header(
                    "x-jws-signature",
                    detached(OP_KEY, KID, "RS256", &body).as_str(),
                )
                .set_body_raw(body.clone(), "application/json"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(PAYMENTS))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header(
                    "x-jws-signature",
                    detached(OTHER_KEY, KID, "RS256", &body).as_str(),
                )
                .set_body_raw(body.clone(), "application/json"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(PAYMENTS))
        .respond_with(ResponseTemplate::new(201).set_body_raw(body.clone(), "application/json"))
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.payments_jwks_url = Some(format!("{}/jwks", server.uri()));
    let op = OpClient::new(c).unwrap();
    assert!(op.initiate(&eur_payment(), None).await.is_ok());
    for expected in ["does not verify", "carries no x-jws-signature"] {
        let err = op.initiate(&eur_payment(), None).await.unwrap_err();
        let BankError::Unexpected { status, detail } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*status, Some(201));
        assert!(detail.contains(expected), "{detail}");
        assert!(
            !err.provably_not_processed(),
            "an unknown outcome, never a refusal"
        );
    }
    // Without the setting, an unsigned answer is taken.
    assert!(client(&server).initiate(&eur_payment(), None).await.is_ok());
}

#[tokio::test]
async fn op_refresh_rotates_and_a_refused_refresh_token_is_dead() {
    let server = op_server().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("refresh_token=RT-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "AT-2", "refresh_token": "RT-2", "expires_in": 600
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"})))
        .mount(&server)
        .await;
    let op = client(&server);
    let t = op.refresh(&SecretString::from("RT-1")).await.unwrap();
    assert_eq!(t.refresh_token.unwrap().expose_secret(), "RT-2");
    assert_eq!(
        op.refresh(&SecretString::from("RT-0")).await.unwrap_err(),
        BankError::TokenRejected
    );
    // OP documents no token revocation: nothing is sent, and the answer says so.
    let before = server.received_requests().await.unwrap().len();
    assert_eq!(
        op.revoke(&SecretString::from("RT-2")).await,
        Ok(Revocation::NotOffered)
    );
    assert_eq!(server.received_requests().await.unwrap().len(), before);
}

#[tokio::test]
async fn op_probe_asks_the_token_endpoint_and_a_bad_client_is_a_configuration_fault() {
    let server = op_server().await;
    client(&server).probe().await.unwrap();
    let bad = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": "invalid_client"})))
        .mount(&bad)
        .await;
    let err = client(&bad).probe().await.unwrap_err();
    assert!(err.is_configuration_fault(), "{err:?}");
}

#[test]
fn op_traits_ask_for_submission_per_payment_tokens_and_a_fragment_return() {
    let c = OpConfig::new(
        "op",
        "https://mtls-apis.psd2-sandbox.op.fi",
        "https://authorize.psd2-sandbox.op.fi/oauth/authorize",
        ISSUER,
        "https://authorize.psd2-sandbox.op.fi/oauth/jwks/PSD2_OIDC",
        CLIENT,
        SecretString::from("CLIENT-SECRET-VALUE"),
        SecretString::from("API-KEY-VALUE"),
        SecretString::from(OTHER_KEY),
        "qseal-1",
    );
    assert!(!format!("{c:?}").contains("SECRET"));
    assert!(!format!("{c:?}").contains("API-KEY"));
    let op = OpClient::new(c).unwrap();
    assert!(!format!("{op:?}").contains("SECRET"));
    assert_eq!(op.audience(), "https://mtls-apis.psd2-sandbox.op.fi");
    let t = op.traits();
    assert_eq!(t.protocol, "op");
    assert!(t.return_carries_code && t.submit_after_authorization);
    assert!(t.token_per_payment && t.return_in_fragment);
    assert!(!t.needs_debtor_account && !t.shopper_token_required);
    let bad = |f: fn(&mut OpConfig)| {
        let mut c = OpConfig::new(
            "op",
            "https://mtls-apis.psd2-sandbox.op.fi",
            "https://authorize.psd2-sandbox.op.fi/oauth/authorize",
            ISSUER,
            "https://authorize.psd2-sandbox.op.fi/oauth/jwks/PSD2_OIDC",
            CLIENT,
            SecretString::from("s"),
            SecretString::from("k"),
            SecretString::from(OTHER_KEY),
            "qseal-1",
        );
        f(&mut c);
        OpClient::new(c).unwrap_err().to_string()
    };
    assert!(bad(|c| c.paid_statuses = vec!["Accepted".into()]).contains("paid_statuses"));
    assert!(bad(|c| c.authorize_url = "not a url".into()).contains("authorize_url"));
    assert!(bad(|c| c.signing_key_pem = SecretString::from("nope")).contains("QSealC"));
    assert!(bad(|c| c.signing_key_id = " ".into()).contains("signing_key_id"));
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
async fn op_logs_name_no_token_code_id_token_secret_key_or_iban() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = op_server().await;
    mount_code_exchange(&server, back_claims("STATE-SECRET")).await;
    Mock::given(method("POST"))
        .and(path(PAYMENTS))
        .respond_with(ResponseTemplate::new(201).set_body_json(payment_json("Unauthorized")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{PAYMENTS}/{PAYMENT_ID}/submissions")))
        .respond_with(
            ResponseTemplate::new(409).set_body_json(
                json!({"code": "PAYMENT_NOT_AUTHORIZED", "message": "not authorized"}),
            ),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let op = client(&server);
    let mut payment = eur_payment();
    payment.authentication.state = "STATE-SECRET".into();
    let initiated = op.initiate(&payment, Some(&shopper())).await.unwrap();
    let front = op_sign(
        OP_KEY,
        KID,
        &front_claims("CODE-SECRET", "STATE-SECRET", AUTH_ID),
    );
    let tokens = op
        .exchange_code_for(
            &payment_ref(),
            &SecretString::from("CODE-SECRET"),
            "https://r",
            &SecretString::from("STATE-SECRET"),
            Some(&front),
        )
        .await
        .unwrap();
    assert!(
        op.submit(&payment_ref(), &tokens.access_token, "key-1", None)
            .await
            .is_err()
    );
    assert!(op.status(&payment_ref(), None).await.is_err());
    // A refused front token is logged by nobody here, but its error must not carry it.
    let err = op
        .exchange_code_for(
            &payment_ref(),
            &SecretString::from("CODE-SECRET"),
            "https://r",
            &SecretString::from("STATE-SECRET"),
            Some(&op_sign(
                OTHER_KEY,
                KID,
                &front_claims("CODE-SECRET", "STATE-SECRET", AUTH_ID),
            )),
        )
        .await
        .unwrap_err();
    tracing::warn!(error = %err, "refused");
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("bank call failed"), "{logs}");
    assert!(logs.contains("retrying the read"), "{logs}");
    let request = query_of(initiated.authorization_url().unwrap())["request"].clone();
    for secret in [
        CC_TOKEN,
        "PAYMENT-TOKEN-SECRET",
        "REFRESH-SECRET",
        "CODE-SECRET",
        "STATE-SECRET",
        jose::nonce_for("STATE-SECRET").as_str(),
        front.as_str(),
        request.as_str(),
        "CLIENT-SECRET-VALUE",
        "API-KEY-VALUE",
        "PRIVATE KEY",
        "FI2112345600000785",
    ] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
}
