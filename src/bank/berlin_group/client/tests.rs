//! The Berlin Group client against a mock server: what it sends (headers, Digest and the
//! signature, verified here with the certificate's key), where it sends it (links followed,
//! foreign links refused), how it reads every error the framework defines, and that only
//! reads are retried. The independent strict ASPSP (`aspsp_tests`) comes on top.

use super::*;
use crate::bank::berlin_group::convert::tests::sample_payment;
use crate::bank::berlin_group::signing::tests::{KAT_PRIVATE, test_certificate_pem};
use crate::bank::berlin_group::signing::{parse_signature_params, signing_string};
use crate::bank::nordea::signing::verify;
use crate::domain::PaymentStatus;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const PAYMENT_ID: &str = "1234-wertiq-983";

fn config(server: &MockServer) -> BerlinGroupConfig {
    let mut config = BerlinGroupConfig::new(
        "testbank",
        format!("{}/psd2", server.uri()),
        Some(SigningKey::from_text(KAT_PRIVATE).unwrap()),
        Some(
            EidasCertificate::from_text(&test_certificate_pem("CN=Test CA,O=Pisgate Test,C=FI"))
                .unwrap(),
        ),
    );
    config.read_retries = RetryPolicy {
        max_attempts: 3,
        base_backoff: Duration::from_millis(1),
    };
    config.connect_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(2);
    config.psu_ip_fallback = Some("198.51.100.4".parse().unwrap());
    config
}

fn client(server: &MockServer) -> BerlinGroupClient {
    BerlinGroupClient::new(config(server)).unwrap()
}

pub(crate) fn test_client(server: &MockServer) -> BerlinGroupClient {
    client(server)
}

fn payment_links() -> BankLinks {
    let base = format!("/psd2/v1/payments/sepa-credit-transfers/{PAYMENT_ID}");
    BankLinks(BTreeMap::from([
        ("self".to_owned(), base.clone()),
        ("status".to_owned(), format!("{base}/status")),
        (
            "scaStatus".to_owned(),
            format!("{base}/authorisations/auth-1"),
        ),
    ]))
}

fn payment_ref() -> BankRef {
    BankRef {
        id: BankPaymentId::parse(PAYMENT_ID).unwrap(),
        links: payment_links(),
    }
}

fn status_path() -> String {
    format!("/psd2/v1/payments/sepa-credit-transfers/{PAYMENT_ID}/status")
}

fn sca_path() -> String {
    format!("/psd2/v1/payments/sepa-credit-transfers/{PAYMENT_ID}/authorisations/auth-1")
}

fn initiation_answer(links: serde_json::Value) -> serde_json::Value {
    json!({"transactionStatus": "RCVD", "paymentId": PAYMENT_ID, "_links": links})
}

fn redirect_links() -> serde_json::Value {
    json!({
        "scaRedirect": {"href": "https://sca.bank.example/sca/auth-1"},
        "self": {"href": format!("/psd2/v1/payments/sepa-credit-transfers/{PAYMENT_ID}")},
        "status": {"href": status_path()},
        "scaStatus": {"href": sca_path()}
    })
}

fn tpp_error(code: &str, path: &str) -> serde_json::Value {
    json!({"tppMessages": [{"category": "ERROR", "code": code, "path": path, "text": "refused"}]})
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

fn header_of<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request.headers.get(name).map(|v| v.to_str().unwrap())
}

/// Checks a request the way a Berlin Group bank does: X-Request-ID, Date, Digest of the
/// exact body, the certificate, the keyId, the signed header list and the signature.
fn assert_signed(request: &Request, expected_headers: &str) {
    let request_id = header_of(request, "x-request-id").expect("x-request-id");
    assert_eq!(
        uuid::Uuid::parse_str(request_id).unwrap().to_string(),
        request_id
    );
    let date = header_of(request, "date").expect("date");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    assert_eq!(
        header_of(request, "digest"),
        Some(digest_header(&request.body).as_str())
    );
    let cert_b64 = header_of(request, "tpp-signature-certificate").expect("certificate");
    let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, cert_b64).unwrap();
    let cert = <x509_cert::Certificate as x509_cert::der::Decode>::from_der(&der).unwrap();
    let params = parse_signature_params(header_of(request, "signature").unwrap()).unwrap();
    assert_eq!(params["algorithm"], "rsa-sha256");
    assert_eq!(params["keyId"], super::super::signing::key_id(&cert));
    assert!(params["keyId"].starts_with("SN="), "{}", params["keyId"]);
    assert!(params["keyId"].contains(",CA=CN=Test%20CA,O=Pisgate%20Test,C=FI"));
    assert_eq!(params["headers"], expected_headers);
    let lines: Vec<(&str, &str)> = params["headers"]
        .split(' ')
        .map(|name| (name, header_of(request, name).unwrap()))
        .collect();
    let key = SigningKey::from_text(KAT_PRIVATE).unwrap();
    assert!(verify(
        key.public_key(),
        signing_string(&lines).as_bytes(),
        &params["signature"]
    ));
}

#[tokio::test]
async fn berlin_group_initiation_is_signed_and_carries_the_redirect_and_psu_headers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/psd2/v1/payments/sepa-credit-transfers"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(initiation_answer(redirect_links()))
                .insert_header("aspsp-sca-approach", "REDIRECT"),
        )
        .mount(&server)
        .await;
    let initiated = client(&server)
        .initiate(&sample_payment(), None)
        .await
        .unwrap();
    assert_eq!(
        initiated.next,
        ScaStep::Redirect {
            url: "https://sca.bank.example/sca/auth-1".into()
        }
    );
    assert_eq!(initiated.bank_payment_id.as_str(), PAYMENT_ID);
    assert_eq!(initiated.links.get("status"), Some(status_path().as_str()));
    assert_eq!(initiated.links.0.len(), 4);
    assert_eq!(
        initiated.status.status,
        Some(PaymentStatus::AwaitingAuthorization)
    );

    let sent = &requests(&server).await[0];
    assert_signed(sent, "digest x-request-id tpp-redirect-uri date");
    assert_eq!(header_of(sent, "content-type"), Some("application/json"));
    assert_eq!(header_of(sent, "psu-ip-address"), Some("198.51.100.4"));
    assert_eq!(
        header_of(sent, "tpp-redirect-uri"),
        Some("https://pisgate.example/v1/callbacks/berlin?state=state-123")
    );
    assert_eq!(
        header_of(sent, "tpp-nok-redirect-uri"),
        Some("https://pisgate.example/v1/callbacks/berlin?state=state-123&error=access_denied")
    );
    assert_eq!(header_of(sent, "tpp-redirect-preferred"), Some("true"));
    assert!(header_of(sent, "tpp-explicit-authorisation-preferred").is_none());
    assert!(header_of(sent, "traceparent").is_some());
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        body["instructedAmount"],
        json!({"currency": "EUR", "amount": "123.50"})
    );
}

#[tokio::test]
async fn berlin_group_uses_the_shoppers_own_ip_and_signs_the_psu_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/psd2/v1/payments/sepa-credit-transfers/{PAYMENT_ID}/authorisations"
        )))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "scaStatus": "started", "authorisationId": "auth-9", "psuMessage": "Open your bank app",
            "_links": {"scaStatus": {"href": sca_path()}}
        })))
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.sca_approach = ScaApproach::Decoupled;
    config.psu_id_type = Some("PRIVATE".into());
    let client = BerlinGroupClient::new(config).unwrap();
    let mut payment = payment_ref();
    payment.links.0.insert(
        "startAuthorisationWithPsuIdentification".into(),
        format!("/psd2/v1/payments/sepa-credit-transfers/{PAYMENT_ID}/authorisations"),
    );
    let psu = PsuContext {
        ip: Some("203.0.113.7".parse().unwrap()),
        user_agent: Some("Mozilla/5.0".into()),
    };
    let auth = client
        .start_authorisation(
            &payment,
            &AuthorisationRequest {
                authentication: sample_payment().authentication,
                psu_id: Some("PSU-1".into()),
            },
            Some(&psu),
        )
        .await
        .unwrap();
    assert_eq!(
        auth.next,
        ScaStep::Decoupled {
            psu_message: Some("Open your bank app".into())
        }
    );
    assert_eq!(auth.id, "auth-9");
    assert_eq!(auth.sca.state, ScaState::Open);
    let sent = &requests(&server).await[0];
    assert_signed(sent, "digest x-request-id psu-id tpp-redirect-uri date");
    assert_eq!(sent.body, b"{}");
    assert_eq!(header_of(sent, "psu-id"), Some("PSU-1"));
    assert_eq!(header_of(sent, "psu-id-type"), Some("PRIVATE"));
    assert_eq!(header_of(sent, "psu-ip-address"), Some("203.0.113.7"));
    assert_eq!(header_of(sent, "psu-user-agent"), Some("Mozilla/5.0"));
    assert_eq!(header_of(sent, "tpp-redirect-preferred"), Some("false"));
    assert_eq!(header_of(sent, "tpp-decoupled-preferred"), Some("true"));
}

#[tokio::test]
async fn berlin_group_reads_digest_the_empty_body_and_follow_the_status_link() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(status_path()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"transactionStatus": "ACSC", "newField": 1})),
        )
        .mount(&server)
        .await;
    let report = client(&server).status(&payment_ref(), None).await.unwrap();
    assert_eq!(report.bank_status, "ACSC");
    assert_eq!(report.status, Some(PaymentStatus::Paid));
    let sent = &requests(&server).await[0];
    assert_signed(sent, "digest x-request-id date");
    assert_eq!(
        header_of(sent, "digest"),
        Some("SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
    );
    assert!(header_of(sent, "content-type").is_none());
    assert!(header_of(sent, "psu-ip-address").is_none());
}

#[tokio::test]
async fn berlin_group_rjct_reads_the_sca_status_to_tell_a_refusal_from_a_rejection() {
    for (sca, expected) in [
        ("failed", PaymentStatus::AuthorizationFailed),
        ("finalised", PaymentStatus::Rejected),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(status_path()))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"transactionStatus": "RJCT"})),
            )
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(sca_path()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"scaStatus": sca})))
            .mount(&server)
            .await;
        let report = client(&server).status(&payment_ref(), None).await.unwrap();
        assert_eq!(report.status, Some(expected), "{sca}");
        assert_eq!(requests(&server).await.len(), 2);
    }
    // Without a scaStatus link: rejected.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(status_path()))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"transactionStatus": "RJCT"})),
        )
        .mount(&server)
        .await;
    let mut payment = payment_ref();
    payment.links.0.remove("scaStatus");
    let report = client(&server).status(&payment, None).await.unwrap();
    assert_eq!(report.status, Some(PaymentStatus::Rejected));
}

/// An SCA status the bank will not give (SEB answered 400 `RESOURCE_EXPIRED` once the SCA was
/// over, berlin-group-pis.md §6.1; a 403, a 5xx after the retries, a garbled answer) is an
/// unknown SCA, as a 404 is: the bank's `RJCT` is still its final word (`rejected`), and a
/// `PDNG` is still no status. Before, any such failure failed the whole status read, so the
/// `RJCT` was never applied and the payment was polled with backoff for ever.
#[tokio::test]
async fn berlin_group_an_sca_status_that_cannot_be_read_leaves_the_transaction_status_in_force() {
    let answers: [(&str, ResponseTemplate); 5] = [
        (
            "400 RESOURCE_EXPIRED",
            ResponseTemplate::new(400).set_body_json(tpp_error("RESOURCE_EXPIRED", "")),
        ),
        (
            "403 RESOURCE_EXPIRED",
            ResponseTemplate::new(403).set_body_json(tpp_error("RESOURCE_EXPIRED", "")),
        ),
        ("500", ResponseTemplate::new(500)),
        (
            "garbled",
            ResponseTemplate::new(200).set_body_string("{\"scaStatus\": "),
        ),
        (
            "404",
            ResponseTemplate::new(404).set_body_json(tpp_error("RESOURCE_UNKNOWN", "")),
        ),
    ];
    for (what, sca_answer) in answers {
        for (code, expected) in [("RJCT", Some(PaymentStatus::Rejected)), ("PDNG", None)] {
            let server = MockServer::start().await;
            Mock::given(method("GET"))
                .and(path(status_path()))
                .respond_with(
                    ResponseTemplate::new(200).set_body_json(json!({"transactionStatus": code})),
                )
                .mount(&server)
                .await;
            Mock::given(method("GET"))
                .and(path(sca_path()))
                .respond_with(sca_answer.clone())
                .mount(&server)
                .await;
            let client = client(&server);
            let report = client
                .status(&payment_ref(), None)
                .await
                .unwrap_or_else(|e| panic!("{code} with the SCA read {what}: {e}"));
            assert_eq!(
                (report.bank_status.as_str(), report.status),
                (code, expected),
                "{code} with the SCA read {what}"
            );
            let details_answer = json!({
                "transactionStatus": code,
                "instructedAmount": {"currency": "EUR", "amount": "10.00"},
                "debtorAccount": {"iban": "FI2112345600000785"},
                "creditorAccount": {"iban": "FI1410093000123458"},
                "creditorName": "Kauppa Oy"
            });
            Mock::given(method("GET"))
                .and(path(format!(
                    "/psd2/v1/payments/sepa-credit-transfers/{PAYMENT_ID}"
                )))
                .respond_with(ResponseTemplate::new(200).set_body_json(details_answer))
                .mount(&server)
                .await;
            let details = client
                .details(&payment_ref(), None, None)
                .await
                .unwrap_or_else(|e| panic!("details, {code} with the SCA read {what}: {e}"));
            assert_eq!(
                details.status.status, expected,
                "details: {code}, SCA read {what}"
            );
        }
    }
}

#[tokio::test]
async fn berlin_group_unknown_transaction_status_changes_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(status_path()))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"transactionStatus": "ZZZZ"})),
        )
        .mount(&server)
        .await;
    let report = client(&server).status(&payment_ref(), None).await.unwrap();
    assert_eq!((report.bank_status.as_str(), report.status), ("ZZZZ", None));
}

#[tokio::test]
async fn berlin_group_links_resolve_on_the_base_origin_and_foreign_links_are_refused() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(status_path()))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"transactionStatus": "ACSP"})),
        )
        .mount(&server)
        .await;
    let client = client(&server);
    // Absolute on the same origin: followed.
    let mut payment = payment_ref();
    payment.links.0.insert(
        "status".into(),
        format!("{}{}", server.uri(), status_path()),
    );
    assert_eq!(
        client.status(&payment, None).await.unwrap().status,
        Some(PaymentStatus::Authorized)
    );
    // Elsewhere: refused before anything is sent.
    let other_port = {
        let uri = Url::parse(&server.uri()).unwrap();
        format!("http://127.0.0.1:{}", uri.port().unwrap() + 1)
    };
    for href in [
        format!("https://evil.example{}", status_path()),
        format!("//evil.example{}", status_path()),
        format!("{other_port}{}", status_path()),
        format!("https://127.0.0.1{}", status_path()),
    ] {
        payment.links.0.insert("status".into(), href.clone());
        let err = client.status(&payment, None).await.unwrap_err();
        assert!(
            matches!(err, BankError::NotSent { .. }) && err.provably_not_processed(),
            "{href}: {err:?}"
        );
    }
    assert_eq!(requests(&server).await.len(), 1);
    // No link at all: refused, never rebuilt.
    payment.links.0.remove("status");
    assert!(matches!(
        client.status(&payment, None).await,
        Err(BankError::NotSent { .. })
    ));
}

#[tokio::test]
async fn berlin_group_next_step_follows_the_links_of_the_201() {
    let cases = [
        (
            json!({"scaOAuth": {"href": "/psd2/.well-known/oauth-authorization-server"}, "self": {"href": "/x"}}),
            None,
            "oauth",
        ),
        (
            json!({"startAuthorisation": {"href": "/psd2/v1/payments/sepa-credit-transfers/p/authorisations"}}),
            None,
            "start",
        ),
        (
            json!({"startAuthorisationWithPsuIdentification": {"href": "/a"}}),
            Some("DECOUPLED"),
            "start",
        ),
        (
            json!({"self": {"href": "/x"}}),
            Some("DECOUPLED"),
            "decoupled",
        ),
    ];
    for (links, approach, expected) in cases {
        let server = MockServer::start().await;
        let mut answer = ResponseTemplate::new(201).set_body_json(initiation_answer(links.clone()));
        if let Some(approach) = approach {
            answer = answer.insert_header("aspsp-sca-approach", approach);
        }
        Mock::given(method("POST"))
            .respond_with(answer)
            .mount(&server)
            .await;
        let initiated = client(&server)
            .initiate(&sample_payment(), None)
            .await
            .unwrap();
        let got = match &initiated.next {
            ScaStep::OAuth { metadata_url } => {
                assert_eq!(
                    *metadata_url,
                    format!(
                        "{}/psd2/.well-known/oauth-authorization-server",
                        server.uri()
                    )
                );
                "oauth"
            }
            ScaStep::StartAuthorisation => "start",
            ScaStep::BankIdSigning => "bankid",
            ScaStep::Exempted => "exempted",
            ScaStep::Decoupled { .. } => "decoupled",
            ScaStep::Redirect { .. } => "redirect",
        };
        assert_eq!(got, expected, "{links}");
    }
    // No step for the shopper at all (an SCA exemption): the bank made the payment, so its
    // id is kept and the bank may act without the hop (an error here lost the id, and a
    // retry made a second payment).
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(initiation_answer(
            json!({"self": {"href": "/x"}, "status": {"href": "/x/status"}}),
        )))
        .mount(&server)
        .await;
    let initiated = client(&server)
        .initiate(&sample_payment(), None)
        .await
        .expect("an answer with no SCA step is a made payment");
    assert_eq!(initiated.next, ScaStep::Exempted);
    assert!(initiated.bank_may_act_without_hop());
    assert_eq!(initiated.authorization_url(), None);
    assert!(initiated.links.get("status").is_some());

    // A step link no browser may be sent to (an app's own scheme) is not used, and never
    // fails the initiation (before: an error, the id lost, and a retry made a second
    // payment): the next usable step, or none.
    for (links, expected) in [
        (
            json!({"scaRedirect": {"href": "bankapp://sca/p1"}, "self": {"href": "/x"}, "status": {"href": "/x/status"}}),
            ScaStep::Exempted,
        ),
        (
            json!({"scaRedirect": {"href": "javascript:alert(1)"}, "startAuthorisation": {"href": "/psd2/v1/payments/sepa-credit-transfers/p/authorisations"}, "self": {"href": "/x"}}),
            ScaStep::StartAuthorisation,
        ),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(201).set_body_json(initiation_answer(links.clone())),
            )
            .mount(&server)
            .await;
        let initiated = client(&server)
            .initiate(&sample_payment(), None)
            .await
            .unwrap_or_else(|e| panic!("{links}: the made payment was lost: {e}"));
        assert_eq!(initiated.next, expected, "{links}");
        assert_eq!(initiated.authorization_url(), None, "{links}");
        assert!(!initiated.bank_payment_id.as_str().is_empty());
    }
}

#[tokio::test]
async fn berlin_group_explicit_preference_asks_for_an_explicit_authorisation() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(initiation_answer(
            json!({"startAuthorisation": {"href": "/psd2/v1/payments/sepa-credit-transfers/p/authorisations"}}),
        )))
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.sca_approach = ScaApproach::ExplicitRedirect;
    BerlinGroupClient::new(config)
        .unwrap()
        .initiate(&sample_payment(), None)
        .await
        .unwrap();
    let sent = &requests(&server).await[0];
    assert_eq!(
        header_of(sent, "tpp-explicit-authorisation-preferred"),
        Some("true")
    );
    assert_eq!(header_of(sent, "tpp-redirect-preferred"), Some("true"));
}

#[tokio::test]
async fn berlin_group_error_answers_map_to_typed_bank_errors() {
    type Check = fn(&BankError) -> bool;
    let cases: Vec<(ResponseTemplate, Check)> = vec![
        (
            ResponseTemplate::new(400).set_body_json(tpp_error("FORMAT_ERROR", "creditorName")),
            |e| matches!(e, BankError::Validation { failures } if failures[0].path.as_deref() == Some("creditorName") && failures[0].code == "FORMAT_ERROR"),
        ),
        (
            ResponseTemplate::new(401).set_body_json(tpp_error("SIGNATURE_INVALID", "Signature")),
            |e| {
                *e == BankError::BadSignature {
                    code: "SIGNATURE_INVALID".into(),
                }
            },
        ),
        (
            ResponseTemplate::new(401).set_body_json(tpp_error("CERTIFICATE_EXPIRED", "")),
            |e| {
                *e == BankError::BadCredentials {
                    code: "CERTIFICATE_EXPIRED".into(),
                }
            },
        ),
        (
            ResponseTemplate::new(400).set_body_json(tpp_error("TIMESTAMP_INVALID", "Date")),
            |e| {
                *e == BankError::ClockRejected {
                    code: "TIMESTAMP_INVALID".into(),
                }
            },
        ),
        (
            ResponseTemplate::new(404).set_body_json(tpp_error("RESOURCE_UNKNOWN", "paymentId")),
            |e| *e == BankError::NotFound,
        ),
        (
            ResponseTemplate::new(429).insert_header("retry-after", "17"),
            |e| {
                *e == BankError::RateLimited {
                    retry_after: Some(Duration::from_secs(17)),
                }
            },
        ),
        (
            ResponseTemplate::new(503).set_body_json(tpp_error("SERVICE_UNAVAILABLE", "")),
            |e| {
                matches!(
                    e,
                    BankError::Unavailable {
                        retry_safe: true,
                        ..
                    }
                )
            },
        ),
        (
            ResponseTemplate::new(502).set_body_string("<html>bad gateway</html>"),
            |e| {
                matches!(
                    e,
                    BankError::Unavailable {
                        retry_safe: false,
                        ..
                    }
                )
            },
        ),
        (ResponseTemplate::new(504), |e| {
            matches!(
                e,
                BankError::Unavailable {
                    retry_safe: false,
                    ..
                }
            )
        }),
        (
            ResponseTemplate::new(200).set_body_json(json!({"psuMessage": "no status"})),
            |e| {
                matches!(
                    e,
                    BankError::Unexpected {
                        status: Some(200),
                        ..
                    }
                )
            },
        ),
    ];
    for (answer, check) in cases {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(answer)
            .mount(&server)
            .await;
        let mut config = config(&server);
        config.read_retries.max_attempts = 1;
        let err = BerlinGroupClient::new(config)
            .unwrap()
            .status(&payment_ref(), None)
            .await
            .unwrap_err();
        assert!(check(&err), "{err:?}");
    }
}

#[tokio::test]
async fn berlin_group_timeouts_are_not_retry_safe_and_refused_connections_are() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(initiation_answer(redirect_links()))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let mut first = config(&server);
    first.request_timeout = Duration::from_millis(300);
    let err = BerlinGroupClient::new(first)
        .unwrap()
        .initiate(&sample_payment(), None)
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
    assert_eq!(requests(&server).await.len(), 1);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut config = self::config(&server);
    config.base_url = format!("http://127.0.0.1:{port}/psd2");
    let err = BerlinGroupClient::new(config)
        .unwrap()
        .initiate(&sample_payment(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BankError::Unavailable {
                retry_safe: true,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn berlin_group_reads_are_retried_with_fresh_request_ids_and_initiation_never() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"transactionStatus": "ACSP"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(503).set_body_json(tpp_error("SERVICE_UNAVAILABLE", "")),
        )
        .mount(&server)
        .await;
    let client = client(&server);
    let report = client.status(&payment_ref(), None).await.unwrap();
    assert_eq!(report.status, Some(PaymentStatus::Authorized));
    let sent = requests(&server).await;
    assert_eq!(sent.len(), 2);
    assert_ne!(
        header_of(&sent[0], "x-request-id"),
        header_of(&sent[1], "x-request-id")
    );
    assert!(client.initiate(&sample_payment(), None).await.is_err());
    let posts = requests(&server)
        .await
        .into_iter()
        .filter(|r| r.method == wiremock::http::Method::POST)
        .count();
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn berlin_group_cancel_deletes_at_the_self_link_and_reads_204_202_and_refusals() {
    let server = MockServer::start().await;
    let self_path = format!("/psd2/v1/payments/sepa-credit-transfers/{PAYMENT_ID}");
    Mock::given(method("DELETE"))
        .and(path(self_path.clone()))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/psd2/v1/payments/sepa-credit-transfers/p202"))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({
            "transactionStatus": "ACSP", "_links": {"startAuthorisation": {"href": "/psd2/v1/payments/sepa-credit-transfers/p202/cancellation-authorisations"}}
        })))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/psd2/v1/payments/sepa-credit-transfers/p405"))
        .respond_with(
            ResponseTemplate::new(405).set_body_json(tpp_error("CANCELLATION_INVALID", "")),
        )
        .mount(&server)
        .await;
    let other = |id: &str| BankRef {
        id: BankPaymentId::parse(id).unwrap(),
        links: BankLinks(BTreeMap::from([(
            "self".to_owned(),
            format!("/psd2/v1/payments/sepa-credit-transfers/{id}"),
        )])),
    };
    let outcome = client(&server)
        .cancel(&[payment_ref(), other("p202"), other("p405")], None, None)
        .await
        .unwrap();
    assert_eq!(outcome.deleted, vec![payment_ref().id]);
    assert_eq!(outcome.needs_authorisation, vec![other("p202").id]);
    assert_eq!(outcome.errors.len(), 1);
    assert_eq!(
        outcome.errors[0].code.as_deref(),
        Some("CANCELLATION_INVALID")
    );
    assert_eq!(outcome.errors[0].bank_payment_id.as_deref(), Some("p405"));
    let sent = requests(&server).await;
    assert_eq!(sent.len(), 3);
    assert_signed(&sent[0], "digest x-request-id date");
    assert!(sent[0].body.is_empty());
}

/// A 2xx other than 204 and 202 was taken as "deleted": a bank answering 200 with
/// `ACSP` and a link to authorise the cancellation had the payment recorded `cancelled`
/// while it executed. A 200 now counts as deleted only when it says `CANC`, as waiting for
/// the shopper when it links an authorisation, and otherwise as no proof (an error that
/// ends nothing).
#[tokio::test]
async fn berlin_group_cancel_reads_a_200_by_its_body_never_as_deleted_by_itself() {
    let server = MockServer::start().await;
    for (id, status, body) in [
        ("pcanc", 200, json!({"transactionStatus": "CANC"})),
        (
            "pauth",
            200,
            json!({"transactionStatus": "ACSP", "_links": {"startAuthorisationWithPsuAuthentication": {"href": "/psd2/v1/payments/sepa-credit-transfers/pauth/cancellation-authorisations"}}}),
        ),
        ("pacsp", 200, json!({"transactionStatus": "ACSP"})),
        ("pempty", 200, json!(null)),
        ("p201", 201, json!({})),
    ] {
        Mock::given(method("DELETE"))
            .and(path(format!(
                "/psd2/v1/payments/sepa-credit-transfers/{id}"
            )))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .mount(&server)
            .await;
    }
    let one = |id: &str| BankRef {
        id: BankPaymentId::parse(id).unwrap(),
        links: BankLinks(BTreeMap::from([(
            "self".to_owned(),
            format!("/psd2/v1/payments/sepa-credit-transfers/{id}"),
        )])),
    };
    let c = client(&server);
    let outcome = c
        .cancel(&[one("pcanc"), one("pauth")], None, None)
        .await
        .unwrap();
    assert_eq!(outcome.deleted, vec![one("pcanc").id]);
    assert_eq!(outcome.needs_authorisation, vec![one("pauth").id]);
    for (id, status) in [("pacsp", 200), ("pempty", 200), ("p201", 201)] {
        match c.cancel(&[one(id)], None, None).await {
            Err(BankError::Unexpected {
                status: Some(s),
                detail,
            }) => {
                assert_eq!(s, status, "{id}");
                assert!(
                    detail.contains("proves nothing deleted")
                        || detail.contains("no cancellation answer"),
                    "{id}: {detail}"
                );
            }
            other => panic!("{id}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn berlin_group_unsigned_banks_get_no_signature_headers() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"transactionStatus": "RCVD"})),
        )
        .mount(&server)
        .await;
    let mut config = BerlinGroupConfig::new("seb", format!("{}/psd2", server.uri()), None, None);
    config.sign_requests = false;
    BerlinGroupClient::new(config)
        .unwrap()
        .status(&payment_ref(), None)
        .await
        .unwrap();
    let sent = &requests(&server).await[0];
    for name in ["signature", "digest", "tpp-signature-certificate"] {
        assert!(header_of(sent, name).is_none(), "{name}");
    }
    assert!(header_of(sent, "x-request-id").is_some());
}

/// What cannot be sent is refused before anything is sent, as [`BankError::NotSent`]: the
/// bank provably processed nothing (before, no PSU-IP-Address answered `Unexpected`, which
/// the initiation took for an unknown outcome: 502 "retry", every retry failing the same way,
/// the payment open until its horizon). A currency the bank takes no payments in is a
/// refusal naming the field.
#[tokio::test]
async fn berlin_group_refuses_before_sending_what_it_cannot_send() {
    let server = MockServer::start().await;
    let mut config = config(&server);
    config.psu_ip_fallback = None;
    let client = BerlinGroupClient::new(config).unwrap();
    let Err(error) = client.initiate(&sample_payment(), None).await else {
        panic!("initiated without a PSU-IP-Address")
    };
    assert!(
        matches!(&error, BankError::NotSent { detail } if detail.contains("psu_ip_fallback")),
        "{error:?}"
    );
    assert!(error.provably_not_processed());
    assert_eq!(error.kind(), "not_sent");
    let mut sek = sample_payment();
    sek.amount = crate::domain::Money::from_minor(100, crate::domain::Currency::Sek).unwrap();
    let psu = PsuContext {
        ip: Some("203.0.113.7".parse().unwrap()),
        user_agent: None,
    };
    let Err(BankError::Validation { failures }) = client.initiate(&sek, Some(&psu)).await else {
        panic!("SEK accepted")
    };
    assert_eq!(failures[0].path.as_deref(), Some("amount.currency"));
    for call in [
        client
            .exchange_code(&SecretString::from("c"), "https://x")
            .await
            .err(),
        client.refresh(&SecretString::from("r")).await.err(),
    ] {
        assert!(matches!(call, Some(BankError::Unexpected { .. })));
    }
    // A header value HTTP cannot carry (a control character in a PSU-ID; pisgate's form
    // refuses those before, this is the client's own guard) never leaves pisgate either:
    // nothing was sent, so the authorisation may be started again at once.
    let mut payment = payment_ref();
    payment.links.0.insert(
        "startAuthorisationWithPsuIdentification".into(),
        format!("/psd2/v1/payments/sepa-credit-transfers/{PAYMENT_ID}/authorisations"),
    );
    let error = client
        .start_authorisation(
            &payment,
            &AuthorisationRequest {
                authentication: sample_payment().authentication,
                psu_id: Some("PSU\u{7f}1".into()),
            },
            Some(&psu),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, BankError::NotSent { detail } if detail.contains("psu-id")),
        "{error:?}"
    );
    assert!(error.provably_not_processed());
    assert!(
        requests(&server).await.is_empty(),
        "nothing reached the bank"
    );
}

#[tokio::test]
async fn berlin_group_config_refuses_unsafe_settings() {
    let server = MockServer::start().await;
    let refused = |edit: fn(&mut BerlinGroupConfig)| {
        let mut config = config(&server);
        edit(&mut config);
        BerlinGroupClient::new(config).is_err()
    };
    assert!(refused(|c| c.paid_statuses = vec!["ACSP".into()]));
    assert!(refused(
        |c| c.paid_statuses = vec!["ACSC".into(), "RJCT".into()]
    ));
    assert!(refused(|c| c.signing_key = None));
    assert!(refused(|c| c.base_url = "ftp://bank.example".into()));
    assert!(refused(|c| {
        c.products.insert("EUR".into(), "a/b".into());
    }));
    assert!(!refused(
        |c| c.paid_statuses = vec!["ACSC".into(), "ACCC".into(), "ACSP".into()]
    ));
    let shown = format!(
        "{:?} {:?}",
        config(&server),
        BerlinGroupClient::new(config(&server)).unwrap()
    );
    assert!(!shown.contains("BEGIN"), "{shown}");
    assert!(shown.contains("testbank"));
    let traits = client(&server).traits();
    assert_eq!(
        (
            traits.protocol,
            traits.return_carries_code,
            traits.needs_debtor_account
        ),
        ("berlin-group", false, true)
    );
}

/// Remembers each metric key registered, with its labels.
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
async fn berlin_group_every_attempt_is_counted_with_the_bank_and_config_faults_named() {
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
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"transactionStatus": "ACSC"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(tpp_error("CERTIFICATE_EXPIRED", "")),
        )
        .mount(&server)
        .await;
    let client = client(&server);
    client.status(&payment_ref(), None).await.unwrap();
    assert!(client.initiate(&sample_payment(), None).await.is_err());
    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            "pisgate_bank_requests_total{operation=status,outcome=unavailable,bank=testbank}",
            "pisgate_bank_request_duration_seconds{operation=status,outcome=unavailable,bank=testbank}",
            "pisgate_bank_requests_total{operation=status,outcome=ok,bank=testbank}",
            "pisgate_bank_request_duration_seconds{operation=status,outcome=ok,bank=testbank}",
            "pisgate_bank_requests_total{operation=initiate,outcome=bad_credentials,bank=testbank}",
            "pisgate_bank_request_duration_seconds{operation=initiate,outcome=bad_credentials,bank=testbank}",
            "pisgate_bank_config_errors_total{code=CERTIFICATE_EXPIRED,bank=testbank}",
        ]
    );
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
async fn berlin_group_logs_name_no_account_state_psu_id_or_key() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/psd2/v1/payments/sepa-credit-transfers"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(tpp_error("FORMAT_ERROR", "creditorAccount")),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let client = client(&server);
    let payment = sample_payment();
    assert!(client.initiate(&payment, None).await.is_err());
    let mut with_start = payment_ref();
    with_start
        .links
        .0
        .insert("startAuthorisation".into(), "/psd2/start".into());
    let _ = client
        .start_authorisation(
            &with_start,
            &AuthorisationRequest {
                authentication: payment.authentication.clone(),
                psu_id: Some("PSU-SECRET-ID".into()),
            },
            None,
        )
        .await;
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("bank call failed"), "{logs}");
    assert!(logs.contains("testbank"), "{logs}");
    for secret in [
        payment.creditor.account.value.as_str(),
        "DE89370400440532013000",
        "state-123",
        "PSU-SECRET-ID",
        "callbacks",
        "PRIVATE KEY",
    ] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
}
