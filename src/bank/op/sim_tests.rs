//! pisgate's OP client against the strict OP simulator (`crate::sandbox::op`, started
//! in-process) over real mutual TLS, built to the same contract: the whole journey
//! (client token → create → the authorization page opened with the signed request object →
//! Approve → the hybrid-flow fragment → both ID tokens checked → code exchange → submit →
//! Debited, every answer's signature checked), the submission scenarios, the shopper's
//! refusal, revoke rules, a reused code, and a client without its certificate.

use super::client::AUTHORIZATION_ID;
use super::{OpClient, OpConfig};
use crate::bank::op::convert::tests::eur_payment;
use crate::bank::{Bank, BankError, BankRef, Initiated, PaymentInitiation};
use crate::domain::{Currency, Money, PaymentStatus};
use crate::sandbox::op::{OpSandbox, OpSandboxConfig, spawn};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::time::Duration;

const REDIRECT: &str = "https://pisgate.example/v1/callbacks/oidc";

async fn simulator() -> OpSandbox {
    let config = OpSandboxConfig::new(
        "pisgate-client",
        "pisgate-client-secret",
        "pisgate-api-key",
        vec![REDIRECT.to_owned()],
    );
    spawn(config).await.expect("the OP simulator starts")
}

fn config_for(sim: &OpSandbox, identity: bool) -> OpConfig {
    let mut c = OpConfig::new(
        "op",
        &sim.api_url,
        sim.authorize_url(),
        sim.issuer(),
        sim.jwks_url(),
        sim.client_id(),
        sim.client_secret().clone(),
        sim.api_key().clone(),
        SecretString::from(sim.pki.tpp_key_pem.clone()),
        sim.signing_key_id(),
    );
    c.payments_jwks_url = Some(sim.payments_jwks_url());
    if identity {
        c.tls_identity_pem = Some(SecretString::from(format!(
            "{}\n{}\n",
            sim.pki.tpp_cert_pem.trim_end(),
            sim.pki.tpp_key_pem.trim_end()
        )));
    }
    c.tls_ca_pem = Some(sim.pki.ca_pem.clone());
    c.request_timeout = Duration::from_secs(10);
    c.read_retries.max_attempts = 1;
    c
}

fn client_for(sim: &OpSandbox) -> OpClient {
    OpClient::new(config_for(sim, true)).expect("the client builds")
}

fn payment(minor: i64) -> PaymentInitiation {
    let mut p = eur_payment();
    p.amount = Money::from_minor(minor, Currency::Eur).unwrap();
    p.external_id = uuid::Uuid::new_v4().to_string();
    p.authentication.state = format!("state-{}", uuid::Uuid::new_v4());
    p.authentication.redirect_uri = REDIRECT.to_owned();
    p
}

/// The shopper's browser opens OP's page (the simulator checks the request object).
async fn open_page(initiated: &Initiated) {
    let answer = reqwest::get(initiated.authorization_url().unwrap())
        .await
        .unwrap();
    let status = answer.status();
    assert!(
        status.is_success(),
        "the page refused the request object: {}",
        answer.text().await.unwrap_or_default()
    );
}

/// The page's Approve/Reject button: the redirect's fragment as key → value.
async fn decide(sim: &OpSandbox, initiated: &Initiated, action: &str) -> BTreeMap<String, String> {
    let authorization_id = initiated.links.get(AUTHORIZATION_ID).unwrap();
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/admin/{action}/{authorization_id}", sim.app_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let location = answer["location"].as_str().expect("a redirect").to_owned();
    assert!(location.starts_with(REDIRECT), "{location}");
    let fragment = location
        .split_once('#')
        .expect("the answer in the fragment")
        .1;
    form_urlencoded::parse(fragment.as_bytes())
        .into_owned()
        .collect()
}

/// Create, open, approve, exchange: the payment and its token.
async fn authorized(sim: &OpSandbox, op: &OpClient, minor: i64) -> (BankRef, SecretString) {
    let p = payment(minor);
    let initiated = op.initiate(&p, None).await.unwrap();
    assert_eq!(initiated.status.bank_status, "Unauthorized");
    open_page(&initiated).await;
    let answer = decide(sim, &initiated, "approve").await;
    assert_eq!(answer["state"], p.authentication.state);
    let payment = initiated.bank_ref();
    let tokens = op
        .exchange_code_for(
            &payment,
            &SecretString::from(answer["code"].clone()),
            REDIRECT,
            &SecretString::from(p.authentication.state.clone()),
            Some(&answer["id_token"]),
        )
        .await
        .unwrap();
    let status = op.status(&payment, None).await.unwrap();
    assert_eq!(status.bank_status, "Authorized");
    assert!(op.needs_submission(&status));
    (payment, tokens.access_token)
}

#[tokio::test]
async fn op_the_whole_journey_over_mutual_tls_ends_debited_with_every_answer_signed() {
    let sim = simulator().await;
    let op = client_for(&sim);
    let (payment, token) = authorized(&sim, &op, 1234).await;
    let report = op.submit(&payment, &token, "submit-1", None).await.unwrap();
    assert_eq!(report.bank_status, "Debited");
    assert_eq!(report.status, Some(PaymentStatus::Paid));
    // A replay of the same key answers the recorded result, no second submission.
    let again = op.submit(&payment, &token, "submit-1", None).await.unwrap();
    assert_eq!(again.bank_status, "Debited");
    let admin = sim.sim.payment(payment.id.as_str()).unwrap();
    assert_eq!(admin["submissions"], 1, "{admin}");
    let details = op.details(&payment, None, None).await.unwrap();
    assert_eq!(details.status.status, Some(PaymentStatus::Paid));
    assert_eq!(
        details.amount,
        Some(Money::from_minor(1234, Currency::Eur).unwrap())
    );
    assert!(!op.needs_submission(&details.status));
    assert!(sim.sim.refusals().is_empty(), "{:?}", sim.sim.refusals());
}

#[tokio::test]
async fn op_submission_pending_asks_for_another_submission_with_a_new_key() {
    let sim = simulator().await;
    let op = client_for(&sim);
    let (payment, token) = authorized(&sim, &op, 7701).await;
    let first = op.submit(&payment, &token, "key-1", None).await.unwrap();
    assert_eq!(first.bank_status, "SubmissionPending");
    assert_eq!(first.status, Some(PaymentStatus::Authorized), "never final");
    assert!(op.needs_submission(&first));
    let second = op.submit(&payment, &token, "key-2", None).await.unwrap();
    assert_eq!(second.status, Some(PaymentStatus::Paid));
    // After Debited a new key is refused (never submitted twice).
    let BankError::Validation { failures } = op
        .submit(&payment, &token, "key-3", None)
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert_eq!(failures[0].code, "ALREADY_SUBMITTED");
}

#[tokio::test]
async fn op_rejected_at_submission_and_the_shoppers_refusal_are_rejected() {
    let sim = simulator().await;
    let op = client_for(&sim);
    let (payment, token) = authorized(&sim, &op, 7702).await;
    let report = op.submit(&payment, &token, "key-1", None).await.unwrap();
    assert_eq!(report.status, Some(PaymentStatus::Rejected));

    let p = payment_for_refusal();
    let initiated = op.initiate(&p, None).await.unwrap();
    open_page(&initiated).await;
    let answer = decide(&sim, &initiated, "reject").await;
    assert_eq!(answer["error"], "access_denied");
    let status = op.status(&initiated.bank_ref(), None).await.unwrap();
    assert_eq!(status.bank_status, "Rejected");
    assert_eq!(status.status, Some(PaymentStatus::Rejected));
}

fn payment_for_refusal() -> PaymentInitiation {
    payment(555)
}

#[tokio::test]
async fn op_revoke_ends_an_unsigned_payment_and_is_refused_for_a_signed_one() {
    let sim = simulator().await;
    let op = client_for(&sim);
    let unsigned = op.initiate(&payment(7705), None).await.unwrap().bank_ref();
    let (signed, _) = authorized(&sim, &op, 999).await;
    let outcome = op
        .cancel(&[unsigned.clone(), signed.clone()], None, None)
        .await
        .unwrap();
    assert_eq!(outcome.deleted, vec![unsigned.id.clone()]);
    assert_eq!(
        outcome.errors[0].code.as_deref(),
        Some("REVOKE_NOT_ALLOWED")
    );
    let status = op.status(&unsigned, None).await.unwrap();
    assert_eq!(status.bank_status, "Revoked");
    assert_eq!(status.status, Some(PaymentStatus::Cancelled));
}

#[tokio::test]
async fn op_a_reused_code_is_refused_and_a_forged_front_token_spends_no_code() {
    let sim = simulator().await;
    let op = client_for(&sim);
    let p = payment(1000);
    let initiated = op.initiate(&p, None).await.unwrap();
    open_page(&initiated).await;
    let answer = decide(&sim, &initiated, "approve").await;
    let state = SecretString::from(p.authentication.state.clone());
    let code = SecretString::from(answer["code"].clone());
    let payment = initiated.bank_ref();
    // Another state: the ID token's nonce and s_hash do not match; the code stays unspent.
    let err = op
        .exchange_code_for(
            &payment,
            &code,
            REDIRECT,
            &SecretString::from("other"),
            Some(&answer["id_token"]),
        )
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("ID_TOKEN_INVALID"), "{err:?}");
    let tokens = op
        .exchange_code_for(&payment, &code, REDIRECT, &state, Some(&answer["id_token"]))
        .await
        .unwrap();
    assert!(!tokens.access_token.expose_secret().is_empty());
    let BankError::Validation { failures } = op
        .exchange_code_for(&payment, &code, REDIRECT, &state, Some(&answer["id_token"]))
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert_eq!(failures[0].code, "invalid_grant");
}

#[tokio::test]
async fn op_without_the_client_certificate_nothing_gets_through() {
    let sim = simulator().await;
    let op = OpClient::new(config_for(&sim, false)).unwrap();
    let err = op.probe().await.unwrap_err();
    assert!(matches!(err, BankError::Unavailable { .. }), "{err:?}");
    client_for(&sim).probe().await.unwrap();
}
