//! pisgate's SEB client against the strict SEB simulator (`crate::sandbox::seb`, started
//! in-process) over real mutual TLS: the whole journey (identification → tokens →
//! initiation → BankID signing approved in the simulator's app → ACSC) and the refusals
//! the simulator makes as SEB would (no client certificate, another shopper's token, a bad
//! OCR check digit, a used order, a rotated refresh token, a refused signature, an order
//! already in progress, a signed payment's cancellation).

use super::{SebClient, SebConfig};
use crate::bank::{
    Account, AccountType, Bank, BankError, BankIdState, BankRef, PsuContext, Reference,
};
use crate::domain::{Currency, Money, PaymentStatus};
use crate::sandbox::seb::{SebSandbox, SebSandboxConfig, spawn};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

const CLIENT_ID: &str = "pisgate-client";
const CLIENT_SECRET: &str = "pisgate-client-secret";

async fn simulator() -> SebSandbox {
    let mut config = SebSandboxConfig::new(CLIENT_ID, CLIENT_SECRET);
    config.status_step = Duration::from_millis(50);
    spawn(config).await.expect("the SEB simulator starts")
}

fn config_for(sim: &SebSandbox) -> SebConfig {
    let mut config = SebConfig::new(
        "seb",
        &sim.api_url,
        CLIENT_ID,
        SecretString::from(CLIENT_SECRET),
        "198.51.100.4".parse().unwrap(),
    );
    config.tls_identity_pem = Some(SecretString::from(format!(
        "{}\n{}\n",
        sim.pki.tpp_cert_pem.trim_end(),
        sim.pki.tpp_key_pem.trim_end()
    )));
    config.tls_ca_pem = Some(sim.pki.ca_pem.clone());
    config.connect_timeout = Duration::from_secs(5);
    config.request_timeout = Duration::from_secs(10);
    config.read_retries.max_attempts = 1;
    config
}

fn client_for(sim: &SebSandbox) -> SebClient {
    SebClient::new(config_for(sim)).expect("the client builds")
}

fn shopper() -> PsuContext {
    PsuContext {
        ip: Some("203.0.113.7".parse().unwrap()),
        user_agent: None,
    }
}

/// The simulator's admin: `POST /admin/bankid/{autostart_token}/{action}`.
async fn app(sim: &SebSandbox, autostart_token: &str, action: &str) {
    let answer = reqwest::Client::new()
        .post(format!(
            "{}/admin/bankid/{autostart_token}/{action}",
            sim.app_url
        ))
        .send()
        .await
        .unwrap();
    assert!(
        answer.status().is_success(),
        "{action}: {}",
        answer.text().await.unwrap_or_default()
    );
}

/// A shopper identifies in the simulator's app and pisgate takes their tokens.
async fn identified(sim: &SebSandbox, seb: &SebClient) -> crate::bank::TokenSet {
    let order = seb.start_identification(Some(&shopper())).await.unwrap();
    assert_eq!(order.progress.state, BankIdState::Pending);
    assert!(
        order
            .progress
            .qr_data
            .as_deref()
            .is_some_and(|q| q.starts_with("bankid.")),
        "a QR code from the first read"
    );
    let ast = order
        .progress
        .autostart_token
        .clone()
        .expect("an autostart token");
    app(sim, &ast, "open").await;
    app(sim, &ast, "approve").await;
    let progress = seb
        .identification_progress(&order.id, Some(&shopper()))
        .await
        .unwrap();
    assert_eq!(progress.state, BankIdState::Complete, "{progress:?}");
    let tokens = seb.identification_tokens(&order.id).await.unwrap();
    // The tokens are given once per order.
    let again = seb.identification_tokens(&order.id).await.unwrap_err();
    assert!(matches!(again, BankError::Validation { .. }), "{again:?}");
    tokens
}

fn payment(amount_minor: i64) -> crate::bank::PaymentInitiation {
    let mut p = super::convert::tests::sek_payment();
    p.amount = Money::from_minor(amount_minor, Currency::Sek).unwrap();
    p.creditor.account = Account {
        kind: AccountType::Bgnr,
        value: "56781234".into(),
    };
    p.creditor.reference = Some(Reference {
        kind: "OCR".into(),
        value: "1993112196394".into(),
    });
    p
}

async fn status_until(
    seb: &SebClient,
    payment: &BankRef,
    token: &SecretString,
    wanted: &str,
) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        let report = seb
            .status_with_token(payment, Some(token), Some(&shopper()))
            .await
            .unwrap();
        last = report.bank_status.clone();
        if last == wanted {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

#[tokio::test]
async fn seb_simulator_journey_identify_initiate_sign_in_the_app_and_paid_at_acsc() {
    let sim = simulator().await;
    let seb = client_for(&sim);
    let tokens = identified(&sim, &seb).await;
    let token = tokens.access_token.clone();

    let initiated = seb
        .initiate_with_token(&payment(6601), &token, Some(&shopper()))
        .await
        .unwrap();
    assert_eq!(initiated.status.bank_status, "RCVD");
    assert_eq!(
        initiated.status.status,
        Some(PaymentStatus::AwaitingAuthorization)
    );
    let payment_ref = initiated.bank_ref();
    // SEB answers the amount as a JSON number: read back exactly.
    let details = seb
        .details(&payment_ref, Some(&token), Some(&shopper()))
        .await
        .unwrap();
    assert_eq!(details.amount.map(|m| m.minor()), Some(6601));

    let order = seb
        .start_signing(&payment_ref, &token, Some(&shopper()))
        .await
        .unwrap();
    assert_eq!(
        order.progress.state,
        BankIdState::Pending,
        "{:?}",
        order.progress
    );
    let ast = order
        .progress
        .autostart_token
        .clone()
        .expect("an autostart token");
    app(&sim, &ast, "open").await;
    app(&sim, &ast, "approve").await;
    let progress = seb
        .signing_progress(&order.id, &token, Some(&shopper()))
        .await
        .unwrap();
    assert_eq!(progress.state, BankIdState::Complete, "{progress:?}");
    assert_eq!(
        status_until(&seb, &payment_ref, &token, "ACSC").await,
        "ACSC"
    );
    let report = seb
        .status_with_token(&payment_ref, Some(&token), None)
        .await
        .unwrap();
    assert_eq!(report.status, Some(PaymentStatus::Paid));

    // A signed payment cannot be cancelled.
    let outcome = seb
        .cancel(std::slice::from_ref(&payment_ref), Some(&token), None)
        .await
        .unwrap();
    assert!(outcome.deleted.is_empty(), "{outcome:?}");
    assert_eq!(outcome.errors.len(), 1, "{outcome:?}");

    // The refresh token rotates: the old one is then dead.
    let old = tokens.refresh_token.clone().expect("a refresh token");
    let fresh = seb.refresh(&old).await.unwrap();
    assert_ne!(fresh.access_token.expose_secret(), token.expose_secret());
    assert_eq!(
        seb.refresh(&old).await.unwrap_err(),
        BankError::TokenRejected
    );
    // The new access token reads the payment.
    assert!(
        seb.status_with_token(&payment_ref, Some(&fresh.access_token), None)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn seb_simulator_refuses_a_client_without_our_certificate_and_foreign_tokens() {
    let sim = simulator().await;
    // No client certificate: the handshake is refused; nothing reached the bank.
    let mut bare = config_for(&sim);
    bare.tls_identity_pem = None;
    let bare = SebClient::new(bare).unwrap();
    let err = bare.start_identification(None).await.unwrap_err();
    assert!(matches!(err, BankError::Unavailable { .. }), "{err:?}");
    // `pisgate check`'s probe passes with the certificate, fails without it.
    assert_eq!(client_for(&sim).probe().await, Ok(()));
    assert!(bare.probe().await.is_err());
    // A wrong client secret is a configuration fault.
    let mut wrong = config_for(&sim);
    wrong.client_secret = SecretString::from("not-the-secret");
    let err = SebClient::new(wrong).unwrap().probe().await.unwrap_err();
    assert!(err.is_configuration_fault(), "{err:?}");

    let seb = client_for(&sim);
    let alice = identified(&sim, &seb).await.access_token;
    let bob = identified(&sim, &seb).await.access_token;
    let initiated = seb
        .initiate_with_token(&payment(12_000), &alice, None)
        .await
        .unwrap();
    // Another shopper's token does not see the payment.
    assert_eq!(
        seb.status_with_token(&initiated.bank_ref(), Some(&bob), None)
            .await,
        Err(BankError::NotFound)
    );
    // A token SEB never issued is dead.
    assert_eq!(
        seb.status_with_token(
            &initiated.bank_ref(),
            Some(&SecretString::from("no-such-token")),
            None
        )
        .await,
        Err(BankError::TokenRejected)
    );
    // An unsigned payment is cancelled with the shopper's token.
    let outcome = seb
        .cancel(&[initiated.bank_ref()], Some(&alice), None)
        .await
        .unwrap();
    assert_eq!(outcome.deleted, vec![initiated.bank_payment_id.clone()]);
    assert_eq!(
        status_until(&seb, &initiated.bank_ref(), &alice, "CANC").await,
        "CANC"
    );
}

#[tokio::test]
async fn seb_simulator_refusals_come_back_as_the_port_says() {
    let sim = simulator().await;
    let seb = client_for(&sim);
    let token = identified(&sim, &seb).await.access_token;

    // An OCR reference with a wrong check digit: FORMAT_ERROR naming the field.
    let mut bad_ocr = payment(12_000);
    bad_ocr.creditor.reference = Some(Reference {
        kind: "OCR".into(),
        value: "1993112196395".into(),
    });
    let BankError::Validation { failures } = seb
        .initiate_with_token(&bad_ocr, &token, None)
        .await
        .unwrap_err()
    else {
        panic!("not a validation")
    };
    assert_eq!(failures[0].code, "FORMAT_ERROR", "{failures:?}");
    assert_eq!(
        failures[0].path.as_deref(),
        Some("remittanceInformationStructured.reference")
    );

    // 66.02: refused in the app: the signing order fails userCancel.
    let refused = seb
        .initiate_with_token(&payment(6602), &token, None)
        .await
        .unwrap();
    let order = seb
        .start_signing(&refused.bank_ref(), &token, None)
        .await
        .unwrap();
    let ast = order.progress.autostart_token.clone().unwrap();
    app(&sim, &ast, "open").await;
    let progress = seb.signing_progress(&order.id, &token, None).await.unwrap();
    assert_eq!(progress.state, BankIdState::Failed, "{progress:?}");
    assert_eq!(progress.hint_code.as_deref(), Some("userCancel"));
    // A failed signing order does not end the payment: SEB's status does.
    let report = seb
        .status_with_token(&refused.bank_ref(), Some(&token), None)
        .await
        .unwrap();
    assert_eq!(report.bank_status, "RCVD");

    // 66.04: an order already in progress: failed, ALREADY_IN_PROGRESS.
    let busy = seb
        .initiate_with_token(&payment(6604), &token, None)
        .await
        .unwrap();
    let order = seb
        .start_signing(&busy.bank_ref(), &token, None)
        .await
        .unwrap();
    assert_eq!(
        order.progress.state,
        BankIdState::Failed,
        "{:?}",
        order.progress
    );
    assert_eq!(
        order.progress.hint_code.as_deref(),
        Some("ALREADY_IN_PROGRESS")
    );

    // An unknown signing order.
    assert_eq!(
        seb.signing_progress("no-such-order", &token, None).await,
        Err(BankError::NotFound)
    );
}

#[tokio::test]
async fn seb_simulator_corporate_api_and_products_per_currency() {
    let sim = simulator().await;
    let mut corporate = config_for(&sim);
    corporate.api = super::SebApi::Corporate {
        psu_corporate_id: "40073144970009".into(),
    };
    let corporate = SebClient::new(corporate).unwrap();
    let token = identified(&sim, &corporate).await.access_token;
    let initiated = corporate
        .initiate_with_token(&payment(12_000), &token, None)
        .await
        .unwrap();
    assert_eq!(
        corporate
            .status_with_token(&initiated.bank_ref(), Some(&token), None)
            .await
            .unwrap()
            .bank_status,
        "RCVD"
    );

    // SEPA in EUR: an IBAN creditor.
    let seb = client_for(&sim);
    let mut sepa = payment(100);
    sepa.amount = Money::from_minor(2_500, Currency::Eur).unwrap();
    sepa.creditor.account = Account {
        kind: AccountType::Iban,
        value: "DE89370400440532013000".into(),
    };
    sepa.creditor.reference = None;
    sepa.creditor.message = Some("Order 42".into());
    let initiated = seb.initiate_with_token(&sepa, &token, None).await.unwrap();
    let details = seb
        .details(&initiated.bank_ref(), Some(&token), None)
        .await
        .unwrap();
    assert_eq!(
        details.amount,
        Some(Money::from_minor(2_500, Currency::Eur).unwrap())
    );

    // A product SEB does not offer (a configuration fault of `products`): a validation.
    let mut odd = config_for(&sim);
    odd.products.insert(
        "SEK".into(),
        "swedish-domestic-private-credit-transfers".into(),
    );
    let err = SebClient::new(odd)
        .unwrap()
        .initiate_with_token(&payment(12_000), &token, None)
        .await
        .unwrap_err();
    let BankError::Validation { failures } = err else {
        panic!("not a validation: {err:?}")
    };
    assert_eq!(failures[0].code, "PRODUCT_UNKNOWN");
}

#[tokio::test]
async fn seb_simulator_every_bankid_hint_code_reaches_the_port_with_its_state() {
    let sim = simulator().await;
    let seb = client_for(&sim);
    let token = identified(&sim, &seb).await.access_token;
    let pending = ["outstandingTransaction", "noClient", "started", "userSign"];
    let ending = [
        "userCancel",
        "expiredTransaction",
        "certificateErr",
        "startFailed",
        "cancelled",
        "sebTimeout",
    ];
    for (i, code) in pending.iter().chain(ending.iter()).enumerate() {
        // A payment per order: an order already running would cancel both.
        let payment_ref = seb
            .initiate_with_token(&payment(20_000 + i as i64), &token, None)
            .await
            .unwrap()
            .bank_ref();
        let order = seb.start_signing(&payment_ref, &token, None).await.unwrap();
        let ast = order.progress.autostart_token.clone().unwrap();
        app(&sim, &ast, &format!("hint/{code}")).await;
        let progress = seb.signing_progress(&order.id, &token, None).await.unwrap();
        assert_eq!(progress.hint_code.as_deref(), Some(*code), "{progress:?}");
        let expected = if pending.contains(code) {
            BankIdState::Pending
        } else {
            BankIdState::Failed
        };
        assert_eq!(progress.state, expected, "{code}: {progress:?}");
        if expected == BankIdState::Pending {
            assert!(progress.qr_data.is_some(), "{code}: QR data while pending");
            // End it, so that the next order is not "already in progress".
            app(&sim, &ast, "reject").await;
        } else {
            assert_eq!(progress.qr_data, None, "{code}: no QR data once ended");
        }
    }
    // The identification order reads the same hint codes.
    let order = seb.start_identification(None).await.unwrap();
    let ast = order.progress.autostart_token.clone().unwrap();
    app(&sim, &ast, "hint/sebTimeout").await;
    let progress = seb.identification_progress(&order.id, None).await.unwrap();
    assert_eq!(progress.state, BankIdState::Failed);
    assert_eq!(progress.hint_code.as_deref(), Some("sebTimeout"));
}

#[tokio::test]
async fn seb_simulator_an_expired_access_token_is_rejected_and_a_refresh_revives_the_shopper() {
    let sim = simulator().await;
    let seb = client_for(&sim);
    let tokens = identified(&sim, &seb).await;
    let payment_ref = seb
        .initiate_with_token(&payment(12_000), &tokens.access_token, None)
        .await
        .unwrap()
        .bank_ref();
    sim.sim
        .advance_clock(tokens.expires_in + Duration::from_secs(1));
    assert_eq!(
        seb.status_with_token(&payment_ref, Some(&tokens.access_token), None)
            .await,
        Err(BankError::TokenRejected)
    );
    let fresh = seb
        .refresh(tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap();
    // The fresh token reads the payment: unsigned for 30 minutes, SEB rejected it.
    let report = seb
        .status_with_token(&payment_ref, Some(&fresh.access_token), None)
        .await
        .unwrap();
    assert_eq!(report.bank_status, "RJCT");
    assert_eq!(report.status, Some(PaymentStatus::Rejected));
}

#[tokio::test]
async fn seb_simulator_sees_a_request_id_the_shoppers_address_and_the_bearer_on_every_call() {
    let sim = simulator().await;
    let seb = client_for(&sim);
    let token = identified(&sim, &seb).await.access_token;
    let payment_ref = seb
        .initiate_with_token(&payment(6601), &token, Some(&shopper()))
        .await
        .unwrap()
        .bank_ref();
    let order = seb
        .start_signing(&payment_ref, &token, Some(&shopper()))
        .await
        .unwrap();
    seb.signing_progress(&order.id, &token, Some(&shopper()))
        .await
        .unwrap();
    seb.status_with_token(&payment_ref, Some(&token), Some(&shopper()))
        .await
        .unwrap();
    let requests = sim.sim.requests();
    // The identification's second tokens call is refused on purpose ("given once").
    let refused: Vec<_> = requests.iter().filter(|r| r.status >= 400).collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].path, "/auth/v4/tokens");
    let mut ids = std::collections::BTreeSet::new();
    for r in &requests {
        let header = |name: &str| {
            r.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let id = header("x-request-id").unwrap_or_else(|| panic!("{r:?}"));
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{r:?}");
        assert!(
            ids.insert(id.to_owned()),
            "a fresh X-Request-ID per call: {r:?}"
        );
        // The port's token calls carry no shopper context: the fallback address.
        let ip = if r.path == "/auth/v4/tokens" {
            "198.51.100.4"
        } else {
            "203.0.113.7"
        };
        assert_eq!(header("psu-ip-address"), Some(ip), "{r:?}");
        if r.path.starts_with("/tpp/") {
            assert!(
                header("authorization").is_some_and(|v| v.starts_with("Bearer ")),
                "{r:?}"
            );
        } else {
            assert_eq!(header("authorization"), None, "{r:?}");
        }
    }
    assert!(
        requests
            .iter()
            .any(|r| r.path.starts_with("/tpp/signing/v1/"))
    );
}
