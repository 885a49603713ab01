//! The Berlin Group client against the independent strict ASPSP (`tests/bg-aspsp/aspsp.py`,
//! written in Python from the OpenAPI without pisgate's code): it checks our signature,
//! Digest, Date, certificate and keyId, validates every request and every answer against
//! the Berlin Group OpenAPI 1.3.12, and plays the scenarios (amounts 77.01–77.06). Each test
//! starts its own ASPSP process with a fresh test PKI and ends by asking its self-check,
//! which must be empty.
//!
//! The ASPSP runs in the venv `~/.cache/pisgate/venv-bgaspsp` that `scripts/bg-aspsp-check.sh`
//! creates; without that venv these tests say so on stderr and pass without running.

use super::{BerlinGroupClient, BerlinGroupConfig, ScaApproach};
use crate::bank::nordea::RetryPolicy;
use crate::bank::nordea::certificate::EidasCertificate;
use crate::bank::nordea::signing::SigningKey;
use crate::bank::{
    AuthorisationRequest, Bank, BankError, BankRef, Initiated, PaymentInitiation, Recurring,
    ScaState, ScaStep,
};
use crate::domain::{Currency, Money, PaymentStatus};
use std::time::Duration;

#[path = "../../../tests/api/bg_aspsp.rs"]
mod bg_aspsp;
use bg_aspsp::Aspsp;

impl Aspsp {
    fn config(&self, approach: ScaApproach) -> BerlinGroupConfig {
        let mut config = BerlinGroupConfig::new(
            "aspsp",
            self.base.clone(),
            Some(SigningKey::from_text(&self.key_pem).unwrap()),
            Some(EidasCertificate::from_text(&self.cert_pem).unwrap()),
        );
        config.sca_approach = approach;
        config.psu_ip_fallback = Some("203.0.113.9".parse().unwrap());
        config.read_retries = RetryPolicy {
            max_attempts: 2,
            base_backoff: Duration::from_millis(10),
        };
        config
    }

    fn client(&self, approach: ScaApproach) -> BerlinGroupClient {
        BerlinGroupClient::new(self.config(approach)).unwrap()
    }
}

fn payment(minor: i64) -> PaymentInitiation {
    let mut p = super::convert::tests::sample_payment();
    p.amount = Money::from_minor(minor, Currency::Eur).unwrap();
    p.external_id = uuid::Uuid::new_v4().to_string();
    p
}

fn redirect_url(initiated: &Initiated) -> String {
    match &initiated.next {
        ScaStep::Redirect { url } => url.clone(),
        other => panic!("not a redirect: {other:?}"),
    }
}

async fn statuses(client: &BerlinGroupClient, r: &BankRef, n: usize) -> Vec<Option<PaymentStatus>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(client.status(r, None).await.unwrap().status);
    }
    out
}

use PaymentStatus::*;

#[tokio::test]
async fn berlin_group_aspsp_redirect_payments_end_as_the_bank_says() {
    let Some(bank) = Aspsp::start().await else {
        return;
    };
    let client = bank.client(ScaApproach::Redirect);
    // Our keyId is the one the independent bank computes from the certificate.
    assert_eq!(client.key_id(), Some(bank.key_id.as_str()));

    // ACSC after ACSP: paid only at ACSC.
    let p = client.initiate(&payment(1250), None).await.unwrap();
    assert_eq!(p.status.bank_status, "RCVD");
    assert_eq!(p.status.status, Some(AwaitingAuthorization));
    assert!(p.links.get("status").is_some() && p.links.get("self").is_some());
    assert_eq!(
        client.status(&p.bank_ref(), None).await.unwrap().status,
        Some(AwaitingAuthorization)
    );
    let back = bank.decide(&redirect_url(&p), "approve").await;
    assert!(
        back.starts_with("https://pisgate.example/v1/callbacks/berlin?state=state-123"),
        "{back}"
    );
    assert!(!back.contains("error="), "{back}");
    assert_eq!(
        statuses(&client, &p.bank_ref(), 3).await,
        [Some(Authorized), Some(Paid), Some(Paid)]
    );

    // ACSP for good: never paid.
    let p = client.initiate(&payment(7702), None).await.unwrap();
    bank.decide(&redirect_url(&p), "approve").await;
    assert_eq!(
        statuses(&client, &p.bank_ref(), 4).await,
        [Some(Authorized); 4]
    );

    // ACSP then RJCT: rejected (the SCA was finalised).
    let p = client.initiate(&payment(7701), None).await.unwrap();
    bank.decide(&redirect_url(&p), "approve").await;
    assert_eq!(
        statuses(&client, &p.bank_ref(), 2).await,
        [Some(Authorized), Some(Rejected)]
    );

    // Refused SCA: RJCT with scaStatus failed is authorization_failed.
    let p = client.initiate(&payment(1300), None).await.unwrap();
    let back = bank.decide(&redirect_url(&p), "refuse").await;
    assert!(
        back.contains("state=state-123") && back.contains("error=access_denied"),
        "{back}"
    );
    let report = client.status(&p.bank_ref(), None).await.unwrap();
    assert_eq!(
        (report.bank_status.as_str(), report.status),
        ("RJCT", Some(AuthorizationFailed))
    );

    // PDNG then ACSC: not final, then paid.
    let p = client.initiate(&payment(7703), None).await.unwrap();
    bank.decide(&redirect_url(&p), "approve").await;
    let first = client.status(&p.bank_ref(), None).await.unwrap();
    assert_eq!(
        (first.bank_status.as_str(), first.status),
        ("PDNG", Some(Authorized))
    );
    assert_eq!(statuses(&client, &p.bank_ref(), 1).await, [Some(Paid)]);

    // 404 before the shopper opens the page: NotFound, not a failure; then paid.
    let p = client.initiate(&payment(7704), None).await.unwrap();
    assert_eq!(
        client.status(&p.bank_ref(), None).await,
        Err(BankError::NotFound)
    );
    bank.decide(&redirect_url(&p), "approve").await;
    assert_eq!(
        statuses(&client, &p.bank_ref(), 2).await,
        [Some(Authorized), Some(Paid)]
    );

    // Details read at the payment's own link, with its status mapped.
    let details = client.details(&p.bank_ref(), None, None).await.unwrap();
    assert_eq!(details.amount, Money::from_minor(7704, Currency::Eur));
    assert_eq!(details.status.status, Some(Paid));

    bank.assert_selfcheck_empty().await;
}

#[tokio::test]
async fn berlin_group_aspsp_cancellations_delete_or_need_authorisation() {
    let Some(bank) = Aspsp::start().await else {
        return;
    };
    let client = bank.client(ScaApproach::Redirect);

    // An unsigned payment the shopper opened: DELETE 204, then CANC.
    let p = client.initiate(&payment(2000), None).await.unwrap();
    bank.open(&redirect_url(&p)).await;
    let outcome = client.cancel(&[p.bank_ref()], None, None).await.unwrap();
    assert_eq!(outcome.deleted, vec![p.bank_payment_id.clone()]);
    assert!(outcome.errors.is_empty() && outcome.needs_authorisation.is_empty());
    assert_eq!(
        client.status(&p.bank_ref(), None).await.unwrap().status,
        Some(Cancelled)
    );
    // A second DELETE of the now final payment is the bank's refusal, per payment.
    let again = client.cancel(&[p.bank_ref()], None, None).await.unwrap();
    assert_eq!(again.errors[0].code.as_deref(), Some("RESOURCE_BLOCKED"));

    // A cancellation that needs the PSU's authorisation: 202, not cancelled yet.
    let p = client.initiate(&payment(7706), None).await.unwrap();
    let outcome = client.cancel(&[p.bank_ref()], None, None).await.unwrap();
    assert_eq!(outcome.needs_authorisation, vec![p.bank_payment_id.clone()]);
    assert!(outcome.deleted.is_empty());
    assert_eq!(
        client.status(&p.bank_ref(), None).await.unwrap().status,
        Some(AwaitingAuthorization)
    );

    bank.assert_selfcheck_empty().await;
}

#[tokio::test]
async fn berlin_group_aspsp_decoupled_sca_is_started_with_the_psu_id_and_polled() {
    let Some(bank) = Aspsp::start().await else {
        return;
    };
    let client = bank.client(ScaApproach::Decoupled);
    let request = |p: &PaymentInitiation| AuthorisationRequest {
        authentication: p.authentication.clone(),
        psu_id: Some("PSU-4711".into()),
    };

    // Approved in the bank's app.
    let pi = payment(3000);
    let p = client.initiate(&pi, None).await.unwrap();
    assert_eq!(p.next, ScaStep::StartAuthorisation);
    let auth = client
        .start_authorisation(&p.bank_ref(), &request(&pi), None)
        .await
        .unwrap();
    assert!(
        matches!(auth.next, ScaStep::Decoupled { .. }),
        "{:?}",
        auth.next
    );
    assert_eq!(auth.sca.state, ScaState::Open);
    let sca_link = auth.links.get("scaStatus").unwrap().to_owned();
    assert_eq!(
        client.sca_status(&sca_link, None).await.unwrap().state,
        ScaState::Open
    );
    bank.decoupled(&auth.id, true).await;
    let sca = client.sca_status(&sca_link, None).await.unwrap();
    assert_eq!(
        (sca.bank_sca_status.as_str(), sca.state),
        ("finalised", ScaState::Finalised)
    );
    let payment_ref = BankRef {
        id: p.bank_payment_id.clone(),
        links: p.links.merged(&auth.links),
    };
    assert_eq!(
        statuses(&client, &payment_ref, 2).await,
        [Some(Authorized), Some(Paid)]
    );

    // Refused in the app: the SCA failed, and the payment is authorization_failed.
    let pi = payment(3100);
    let p = client.initiate(&pi, None).await.unwrap();
    let auth = client
        .start_authorisation(&p.bank_ref(), &request(&pi), None)
        .await
        .unwrap();
    bank.decoupled(&auth.id, false).await;
    let sca = client
        .sca_status(auth.links.get("scaStatus").unwrap(), None)
        .await
        .unwrap();
    assert_eq!(sca.state, ScaState::Failed);
    let payment_ref = BankRef {
        id: p.bank_payment_id.clone(),
        links: p.links.merged(&auth.links),
    };
    assert_eq!(
        client.status(&payment_ref, None).await.unwrap().status,
        Some(AuthorizationFailed)
    );

    bank.assert_selfcheck_empty().await;
}

#[tokio::test]
async fn berlin_group_aspsp_explicit_redirect_and_periodic_payments() {
    let Some(bank) = Aspsp::start().await else {
        return;
    };
    let client = bank.client(ScaApproach::ExplicitRedirect);
    let pi = payment(4000);
    let p = client.initiate(&pi, None).await.unwrap();
    assert_eq!(p.next, ScaStep::StartAuthorisation);
    let auth = client
        .start_authorisation(
            &p.bank_ref(),
            &AuthorisationRequest {
                authentication: pi.authentication.clone(),
                psu_id: None,
            },
            None,
        )
        .await
        .unwrap();
    let ScaStep::Redirect { url } = &auth.next else {
        panic!("{:?}", auth.next)
    };
    bank.decide(url, "approve").await;
    let payment_ref = BankRef {
        id: p.bank_payment_id.clone(),
        links: p.links.merged(&auth.links),
    };
    assert_eq!(
        statuses(&client, &payment_ref, 2).await,
        [Some(Authorized), Some(Paid)]
    );

    // A standing order: periodic-payments with startDate, frequency and dayOfExecution.
    let client = bank.client(ScaApproach::Redirect);
    let mut pi = payment(4100);
    pi.requested_execution_date = Some(chrono::Utc::now().date_naive() + chrono::Days::new(3));
    pi.recurring = Some(Recurring {
        count: 6,
        recurrence_type: "MONTHLY_SAME_DAY".into(),
    });
    let p = client.initiate(&pi, None).await.unwrap();
    assert!(
        p.links.get("self").unwrap().contains("/periodic-payments/"),
        "{:?}",
        p.links
    );
    let details = client.details(&p.bank_ref(), None, None).await.unwrap();
    assert_eq!(details.status.bank_status, "RCVD");

    bank.assert_selfcheck_empty().await;
}

#[tokio::test]
async fn berlin_group_aspsp_decoupled_timeout_ends_authorization_failed() {
    let Some(bank) = Aspsp::start_with(1).await else {
        return;
    };
    let client = bank.client(ScaApproach::Decoupled);
    let pi = payment(7705);
    let p = client.initiate(&pi, None).await.unwrap();
    let auth = client
        .start_authorisation(
            &p.bank_ref(),
            &AuthorisationRequest {
                authentication: pi.authentication.clone(),
                psu_id: Some("PSU-4712".into()),
            },
            None,
        )
        .await
        .unwrap();
    let link = auth.links.get("scaStatus").unwrap().to_owned();
    let mut state = client.sca_status(&link, None).await.unwrap().state;
    for _ in 0..50 {
        if state != ScaState::Open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = client.sca_status(&link, None).await.unwrap().state;
    }
    assert_eq!(state, ScaState::Failed);
    let payment_ref = BankRef {
        id: p.bank_payment_id.clone(),
        links: p.links.merged(&auth.links),
    };
    let report = client.status(&payment_ref, None).await.unwrap();
    assert_eq!(
        (report.bank_status.as_str(), report.status),
        ("RJCT", Some(AuthorizationFailed))
    );
    bank.assert_selfcheck_empty().await;
}

#[tokio::test]
async fn berlin_group_aspsp_probe_passes_with_our_certificate_and_names_a_foreign_one() {
    let Some(bank) = Aspsp::start().await else {
        return;
    };
    // A signed status read of an id nobody has: 404 after every check passed.
    assert_eq!(bank.client(ScaApproach::Redirect).probe().await, Ok(()));
    // A certificate the bank's CA did not issue: a configuration fault, named.
    let mut config = bank.config(ScaApproach::Redirect);
    config.signing_key = Some(SigningKey::from_text(super::signing::tests::KAT_PRIVATE).unwrap());
    config.certificate = Some(
        EidasCertificate::from_text(&super::signing::tests::test_certificate_pem(
            "CN=Rogue CA,O=Nobody,C=FI",
        ))
        .unwrap(),
    );
    let rogue = BerlinGroupClient::new(config).unwrap();
    assert_eq!(
        rogue.probe().await,
        Err(BankError::BadCredentials {
            code: "CERTIFICATE_INVALID".into()
        })
    );
    assert!(
        rogue
            .initiate(&payment(1000), None)
            .await
            .unwrap_err()
            .is_configuration_fault()
    );
    bank.assert_selfcheck_empty().await;
}
