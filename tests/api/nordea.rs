//! The real Nordea client against the real Nordea sandbox simulator, in process over real
//! sockets (issue 3, acceptance 2–4): every call of the single-SCA flow in each country, the
//! refusals the bank gives, and the faults it can have.
//!
//! Each test gets its own `pisgate::sandbox` on 127.0.0.1:0 and a `NordeaClient` pointed at
//! `http://127.0.0.1:PORT/personal`, signing with the committed test key
//! (`tests/fixtures/nordea/kat-private.pem`) whose public half the sandbox has registered.
//! The shopper's part (opening the signing link, approving) is done over HTTP like a browser.
//! What the sandbox received and answered is read back from `Sandbox::requests()`. No
//! database is needed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{Days, Utc};
use pisgate::bank::nordea::signing::{self, BodyHeaders};
use pisgate::bank::nordea::{
    DeleteSigning, NordeaClient, NordeaConfig, RetryPolicy, SigningKey, convert,
};
use pisgate::bank::{
    Account, AccountType, Authentication, Bank, BankError, BankPaymentId, BankRef, Creditor,
    Debtor, Initiated, PaymentDetails, PaymentInitiation, Recurring, Reference, StatusReport,
    Urgency,
};
use pisgate::domain::{Country, Currency, Money, PaymentStatus};
use pisgate::sandbox::{
    self, BankStatus, Fault, FaultRule, FaultTarget, Operation, Sandbox, SandboxConfig,
};
use reqwest::header::LOCATION;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const CLIENT_ID: &str = "pisgate-it-client";
const CLIENT_SECRET: &str = "pisgate-it-secret";
const REDIRECT_URI: &str = "https://shop.example/nordea/callback";
const REGISTERED_KEY: &str = include_str!("../fixtures/nordea/kat-private.pem");
const REGISTERED_PUBLIC_KEY: &str = include_str!("../fixtures/nordea/kat-public.pem");
/// A valid 2048-bit key the sandbox has never heard of.
const UNREGISTERED_KEY: &str = include_str!("../fixtures/nordea/unregistered-private.pem");
/// From the shopper's approval to Confirmed; tests move the sandbox clock by it.
const CONFIRM_DELAY: Duration = Duration::from_secs(2);
/// The client's request timeout in the fault tests.
const FAULT_TIMEOUT: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// The bench: a sandbox, a client pointed at it, and a browser for the shopper.

/// The client settings a test may change.
struct ClientSetup {
    secret: &'static str,
    key: &'static str,
    request_timeout: Duration,
    delete_signing: DeleteSigning,
}

impl Default for ClientSetup {
    fn default() -> Self {
        ClientSetup {
            secret: CLIENT_SECRET,
            key: REGISTERED_KEY,
            request_timeout: Duration::from_secs(10),
            delete_signing: DeleteSigning::ThreeHeaders,
        }
    }
}

struct Bench {
    sandbox: Arc<Sandbox>,
    /// `http://127.0.0.1:PORT`
    base: String,
    /// `127.0.0.1:PORT`: the originating host the sandbox insists on.
    host: String,
    client: NordeaClient,
    /// Follows no redirects: the redirect_uri is not a real host.
    browser: reqwest::Client,
    /// Dropping it stops the sandbox.
    _shutdown: oneshot::Sender<()>,
}

/// A payment the shopper has signed, with the code from the redirect.
struct Signed {
    sent: PaymentInitiation,
    initiated: Initiated,
    code: SecretString,
}

async fn bench() -> Bench {
    bench_with(ClientSetup::default()).await
}

async fn bench_for_faults() -> Bench {
    bench_with(ClientSetup {
        request_timeout: FAULT_TIMEOUT,
        ..ClientSetup::default()
    })
    .await
}

async fn bench_with(setup: ClientSetup) -> Bench {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let base = format!("http://{addr}");
    let host = addr.to_string();
    let mut config = SandboxConfig::new(
        CLIENT_ID,
        SecretString::from(CLIENT_SECRET),
        REGISTERED_PUBLIC_KEY,
        base.clone(),
    );
    config.expected_originating_host = Some(host.clone());
    config.confirm_delay = CONFIRM_DELAY;
    // Nothing becomes Paid by itself during a test; Paid is forced where a test needs it.
    config.paid_delay = Duration::from_secs(24 * 3600);
    let sandbox = Sandbox::new(config).expect("sandbox");
    let (shutdown, stop) = oneshot::channel::<()>();
    tokio::spawn(sandbox::serve(listener, sandbox.clone(), async {
        let _ = stop.await;
    }));

    let key = SigningKey::from_text(setup.key).expect("a test key");
    let mut config = NordeaConfig::new(
        format!("{base}/personal"),
        CLIENT_ID,
        SecretString::from(setup.secret),
        key,
    );
    config.request_timeout = setup.request_timeout;
    config.delete_signing = setup.delete_signing;
    config.read_retries = RetryPolicy {
        max_attempts: 3,
        base_backoff: Duration::from_millis(20),
    };
    let client = NordeaClient::new(config).expect("client");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("browser");
    Bench {
        sandbox,
        base,
        host,
        client,
        browser,
        _shutdown: shutdown,
    }
}

impl Bench {
    /// Opens the signing link like a browser; returns the action of the page's form.
    async fn open_signing_page(&self, url: &str) -> String {
        let page = self
            .browser
            .get(url)
            .send()
            .await
            .expect("GET signing page");
        assert_eq!(page.status(), StatusCode::OK, "signing page");
        form_action(&page.text().await.expect("signing page body"))
    }

    /// Approves on the signing page as `psu`; checks that our state comes back on the
    /// redirect and returns its code.
    async fn approve(&self, action: &str, psu: &str, state: &str) -> SecretString {
        let answer = self
            .browser
            .post(action)
            .form(&[("decision", "approve"), ("psu_id", psu)])
            .send()
            .await
            .expect("POST approval");
        assert_eq!(answer.status(), StatusCode::SEE_OTHER, "approval answer");
        let location = answer
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .expect("a Location header");
        let target = url::Url::parse(location).expect("an absolute redirect");
        assert_eq!(
            format!(
                "{}://{}{}",
                target.scheme(),
                target.host_str().unwrap_or(""),
                target.path()
            ),
            REDIRECT_URI
        );
        let query: HashMap<String, String> = target.query_pairs().into_owned().collect();
        assert_eq!(query.get("state").map(String::as_str), Some(state), "state");
        SecretString::from(query.get("code").expect("a code").clone())
    }

    /// Initiates a payment of `case`, opens its link and approves it as `psu`.
    async fn signed_payment(&self, case: &CountryCase, psu: &str) -> Signed {
        let sent = payment(case);
        let initiated = self.client.initiate(&sent, None).await.expect("initiate");
        let action = self
            .open_signing_page(initiated.authorization_url().unwrap())
            .await;
        let code = self.approve(&action, psu, &sent.authentication.state).await;
        Signed {
            sent,
            initiated,
            code,
        }
    }

    /// Every call the sandbox received and the HTTP status it answered (`None`: connection
    /// dropped), oldest first.
    fn answers(&self) -> Vec<(Operation, Option<u16>)> {
        self.sandbox
            .requests()
            .iter()
            .map(|r| (r.operation.expect("one of Nordea's calls"), r.status))
            .collect()
    }

    /// How many calls of `operation` the sandbox received (answered or not yet).
    fn received(&self, operation: Operation) -> u64 {
        self.sandbox
            .counters()
            .get(&operation)
            .map_or(0, |c| c.received)
    }
}

fn form_action(html: &str) -> String {
    let start = html.find("action=\"").expect("a form with an action") + "action=\"".len();
    let end = start + html[start..].find('"').expect("a closed action");
    html[start..end].replace("&amp;", "&")
}

// ---------------------------------------------------------------------------------------------
// Payments: one per country, as a merchant would ask for it.

struct CountryCase {
    country: Country,
    amount_minor: i64,
    creditor: (AccountType, &'static str),
    /// `(type, value)`, e.g. a Swedish OCR or a Norwegian KID (type `OCR`).
    reference: Option<(&'static str, &'static str)>,
    debtor: (AccountType, &'static str),
    authentication_method: &'static str,
    psu: &'static str,
}

const FINLAND: CountryCase = CountryCase {
    country: Country::Fi,
    amount_minor: 10_50,
    creditor: (AccountType::Iban, "FI1450000120236228"),
    reference: None,
    debtor: (AccountType::Iban, "FI7473834510057469"),
    authentication_method: "MTA",
    psu: "psu-fi",
};

const DENMARK: CountryCase = CountryCase {
    country: Country::Dk,
    amount_minor: 14_24,
    creditor: (AccountType::BbanDk, "23001546147254"),
    reference: None,
    debtor: (AccountType::BbanDk, "23001546139529"),
    authentication_method: "MTA",
    psu: "psu-dk",
};

const SWEDEN: CountryCase = CountryCase {
    country: Country::Se,
    amount_minor: 12_24,
    creditor: (AccountType::Bgnr, "3300308"),
    reference: Some(("OCR", "1831653108")),
    debtor: (AccountType::Iban, "SE1730000000031412034086"),
    authentication_method: "MTA",
    psu: "psu-se",
};

const NORWAY: CountryCase = CountryCase {
    country: Country::No,
    // The sandbox echoes "249.9": the client must still read 249.90 exactly.
    amount_minor: 24_990,
    creditor: (AccountType::BbanNo, "60391627641"),
    reference: Some(("OCR", "2345678903")),
    debtor: (AccountType::BbanNo, "60010503178"),
    authentication_method: "BANKID_NO",
    psu: "psu-no",
};

fn account((kind, value): (AccountType, &str)) -> Account {
    Account {
        kind,
        value: value.to_owned(),
    }
}

/// A fresh payment of `case` (new external id and state).
fn payment(case: &CountryCase) -> PaymentInitiation {
    PaymentInitiation {
        country: case.country,
        amount: Money::from_minor(case.amount_minor, case.country.currency()).expect("positive"),
        creditor: Creditor {
            account: account(case.creditor),
            name: Some("Kenkäkauppa Nordic AB".to_owned()),
            message: Some("Order 4711".to_owned()),
            reference: case.reference.map(|(kind, value)| Reference {
                kind: kind.to_owned(),
                value: value.to_owned(),
            }),
        },
        debtor: Some(Debtor {
            account: Some(account(case.debtor)),
            message: Some("Shoe shop".to_owned()),
        }),
        external_id: uuid::Uuid::new_v4().to_string(),
        merchant_name: Some("Shoe shop".to_owned()),
        urgency: Urgency::Standard,
        requested_execution_date: None,
        recurring: None,
        own_account_transfer: false,
        authentication: Authentication {
            state: uuid::Uuid::new_v4().simple().to_string(),
            redirect_uri: REDIRECT_URI.to_owned(),
            language: Some("en".to_owned()),
            authentication_method: Some(case.authentication_method.to_owned()),
        },
    }
}

fn assert_status(report: &StatusReport, bank_status: &str, mapped: PaymentStatus) {
    assert_eq!(report.bank_status, bank_status);
    assert_eq!(
        report.status,
        Some(mapped),
        "{bank_status} maps to {mapped}"
    );
}

fn assert_details(d: &PaymentDetails, sent: &PaymentInitiation, id: &BankPaymentId, status: &str) {
    assert_eq!(&d.bank_payment_id, id);
    assert_eq!(d.external_id.as_deref(), Some(sent.external_id.as_str()));
    assert_eq!(d.amount, Some(sent.amount), "the amount sent comes back");
    assert_eq!(d.creditor_account.as_ref(), Some(&sent.creditor.account));
    assert_eq!(d.creditor_name, sent.creditor.name);
    assert_eq!(d.creditor_message, sent.creditor.message);
    assert_eq!(
        d.debtor_account,
        sent.debtor.as_ref().and_then(|x| x.account.clone())
    );
    assert_eq!(d.status.bank_status, status);
    assert_eq!(d.recurring, None);
}

// ---------------------------------------------------------------------------------------------
// Acceptance 2: every call, in every country.

/// initiate → status (404 before the link is opened) → open and approve in the browser →
/// status → exchange → details → funds (true, then false under FundsNotAvailable) → refresh
/// → cancel (with a Paid payment refused) → revoke; then what the sandbox saw.
async fn goes_through_every_call(case: &CountryCase) {
    for profile in [DeleteSigning::ThreeHeaders, DeleteSigning::WithDigest] {
        goes_through_every_call_signing_deletes(case, profile).await;
    }
}

/// The whole life of a payment, with the bulk DELETE signed per `profile`: the sandbox
/// accepts both, and checks the digest when the client sends one.
async fn goes_through_every_call_signing_deletes(case: &CountryCase, profile: DeleteSigning) {
    let b = bench_with(ClientSetup {
        delete_signing: profile,
        ..ClientSetup::default()
    })
    .await;
    let sent = payment(case);

    let initiated = b.client.initiate(&sent, None).await.expect("initiate");
    let id = initiated.bank_payment_id.clone();
    assert_status(
        &initiated.status,
        "PendingUserApproval",
        PaymentStatus::AwaitingAuthorization,
    );
    assert!(
        initiated
            .authorization_url()
            .unwrap()
            .starts_with(&format!("{}/sandbox/sign/", b.base)),
        "{:?}",
        initiated.authorization_url()
    );
    let at_bank = b.sandbox.payment(id.as_str()).expect("the sandbox has it");
    assert_eq!(at_bank.country, case.country);
    assert_eq!(at_bank.currency, case.country.currency());
    assert_eq!(at_bank.amount_minor, case.amount_minor);
    assert_eq!(
        at_bank.external_id.as_deref(),
        Some(sent.external_id.as_str())
    );
    assert_eq!(
        at_bank.authentication_method.as_deref(),
        Some(case.authentication_method)
    );

    // Before the shopper opens the link the payment does not exist at the bank.
    assert_eq!(
        b.client.status(&BankRef::id_only(id.clone()), None).await,
        Err(BankError::NotFound)
    );

    let action = b
        .open_signing_page(initiated.authorization_url().unwrap())
        .await;
    let report = b
        .client
        .status(&BankRef::id_only(id.clone()), None)
        .await
        .expect("status");
    assert_status(
        &report,
        "PendingUserApproval",
        PaymentStatus::AwaitingAuthorization,
    );

    let code = b
        .approve(&action, case.psu, &sent.authentication.state)
        .await;
    b.sandbox.advance_clock(CONFIRM_DELAY);
    let report = b
        .client
        .status(&BankRef::id_only(id.clone()), None)
        .await
        .expect("status");
    assert_status(&report, "Confirmed", PaymentStatus::Authorized);

    let tokens = b
        .client
        .exchange_code(&code, REDIRECT_URI)
        .await
        .expect("exchange the code");
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, Duration::from_secs(3600));

    let details = b
        .client
        .details(
            &BankRef::id_only(id.clone()),
            Some(&tokens.access_token),
            None,
        )
        .await
        .expect("details");
    assert_details(&details, &sent, &id, "Confirmed");

    let funds = b
        .client
        .funds(&id, &tokens.access_token, None)
        .await
        .expect("funds");
    assert_eq!(funds.available, Some(true));
    assert_details(&funds.details, &sent, &id, "Confirmed");
    assert!(b.sandbox.set_funds_not_available(id.as_str(), true));
    let funds = b
        .client
        .funds(&id, &tokens.access_token, None)
        .await
        .expect("funds");
    assert_eq!(funds.available, Some(false), "FundsNotAvailable scenario");

    // A refresh gives a new pair; the old refresh token is spent, the old access token dead.
    let fresh = b
        .client
        .refresh(tokens.refresh_token.as_ref().unwrap())
        .await
        .expect("refresh");
    assert_ne!(
        fresh.access_token.expose_secret(),
        tokens.access_token.expose_secret()
    );
    assert_ne!(
        fresh.refresh_token.as_ref().unwrap().expose_secret(),
        tokens.refresh_token.as_ref().unwrap().expose_secret()
    );
    assert_eq!(
        b.client
            .refresh(tokens.refresh_token.as_ref().unwrap())
            .await
            .err(),
        Some(BankError::TokenRejected)
    );
    assert_eq!(
        b.client
            .details(
                &BankRef::id_only(id.clone()),
                Some(&tokens.access_token),
                None
            )
            .await
            .err(),
        Some(BankError::TokenRejected)
    );
    b.client
        .details(
            &BankRef::id_only(id.clone()),
            Some(&fresh.access_token),
            None,
        )
        .await
        .expect("the new access token works");

    // Bulk delete: ours goes; one the bank has already paid is refused on its own.
    let paid = b
        .client
        .initiate(&payment(case), None)
        .await
        .expect("initiate");
    b.open_signing_page(paid.authorization_url().unwrap()).await;
    assert!(
        b.sandbox
            .force_status(paid.bank_payment_id.as_str(), Some(BankStatus::Paid))
    );
    let outcome = b
        .client
        .cancel(
            &[
                BankRef::id_only(id.clone()),
                BankRef::id_only(paid.bank_payment_id.clone()),
            ],
            Some(&fresh.access_token),
            None,
        )
        .await
        .expect("cancel");
    assert_eq!(outcome.deleted, vec![id.clone()]);
    assert_eq!(outcome.errors.len(), 1, "{:?}", outcome.errors);
    let refused = &outcome.errors[0];
    assert_eq!(
        refused.bank_payment_id.as_deref(),
        Some(paid.bank_payment_id.as_str())
    );
    assert_eq!(refused.code.as_deref(), Some("error.payment.not_deletable"));
    let report = b
        .client
        .status(&BankRef::id_only(id.clone()), None)
        .await
        .expect("status");
    assert_status(&report, "Cancelled", PaymentStatus::Cancelled);

    // Revoking kills the pair.
    b.client
        .revoke(fresh.refresh_token.as_ref().unwrap())
        .await
        .expect("revoke");
    assert_eq!(
        b.client
            .refresh(fresh.refresh_token.as_ref().unwrap())
            .await
            .err(),
        Some(BankError::TokenRejected)
    );
    assert_eq!(
        b.client
            .details(
                &BankRef::id_only(id.clone()),
                Some(&fresh.access_token),
                None
            )
            .await
            .err(),
        Some(BankError::TokenRejected)
    );

    // Each call reached the bank exactly once, answered as expected.
    use Operation::*;
    assert_eq!(
        b.answers(),
        [
            (Initiate, Some(201)),
            (Status, Some(404)),
            (Status, Some(200)),
            (Status, Some(200)),
            (Token, Some(200)),
            (Details, Some(200)),
            (Funds, Some(200)),
            (Funds, Some(200)),
            (Token, Some(200)),
            (Token, Some(400)),
            (Details, Some(401)),
            (Details, Some(200)),
            (Initiate, Some(201)),
            (Cancel, Some(200)),
            (Status, Some(200)),
            (Revoke, Some(200)),
            (Token, Some(400)),
            (Details, Some(401)),
        ]
    );
}

#[tokio::test]
async fn a_finnish_sepa_payment_goes_through_every_call_against_the_sandbox() {
    goes_through_every_call(&FINLAND).await;
}

#[tokio::test]
async fn a_danish_bban_payment_goes_through_every_call_against_the_sandbox() {
    goes_through_every_call(&DENMARK).await;
}

#[tokio::test]
async fn a_swedish_bankgiro_payment_with_ocr_goes_through_every_call_against_the_sandbox() {
    goes_through_every_call(&SWEDEN).await;
}

#[tokio::test]
async fn a_norwegian_bban_payment_with_kid_goes_through_every_call_against_the_sandbox() {
    goes_through_every_call(&NORWAY).await;
}

// ---------------------------------------------------------------------------------------------
// Acceptance 3: refusals.

#[tokio::test]
async fn a_wrong_client_secret_is_refused_as_bad_credentials() {
    let b = bench_with(ClientSetup {
        secret: "not-our-secret",
        ..ClientSetup::default()
    })
    .await;
    let result = b.client.initiate(&payment(&FINLAND), None).await;
    assert_eq!(
        result.err(),
        Some(BankError::BadCredentials {
            code: "unauthorized".into()
        })
    );
    assert_eq!(b.answers(), [(Operation::Initiate, Some(401))]);
}

#[tokio::test]
async fn a_client_signing_with_an_unregistered_key_is_refused_as_a_bad_signature() {
    let b = bench_with(ClientSetup {
        key: UNREGISTERED_KEY,
        ..ClientSetup::default()
    })
    .await;
    let bad_signature = BankError::BadSignature {
        code: "error.signature.invalid".into(),
    };
    let result = b.client.initiate(&payment(&FINLAND), None).await;
    assert_eq!(result.err(), Some(bad_signature.clone()));
    // A read is refused the same way, and not retried.
    let id = BankPaymentId::parse("5a3f726e-1bd9-4d7f-a3e9-7c9c7e24e092").expect("an id");
    assert_eq!(
        b.client.status(&BankRef::id_only(id.clone()), None).await,
        Err(bad_signature)
    );
    assert_eq!(
        b.answers(),
        [
            (Operation::Initiate, Some(401)),
            (Operation::Status, Some(401))
        ]
    );
}

#[tokio::test]
async fn a_reused_authorization_code_is_refused_as_invalid_grant() {
    let b = bench().await;
    let signed = b.signed_payment(&FINLAND, "psu-reuse").await;
    b.client
        .exchange_code(&signed.code, REDIRECT_URI)
        .await
        .expect("the first exchange");
    let error = b
        .client
        .exchange_code(&signed.code, REDIRECT_URI)
        .await
        .expect_err("the second exchange is refused");
    let BankError::Validation { failures } = error else {
        panic!("expected a validation error, got {error:?}");
    };
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].code, "invalid_grant");
    assert!(
        failures[0]
            .description
            .as_deref()
            .is_some_and(|d| d.contains("already been used")),
        "{failures:?}"
    );
    assert_eq!(
        b.answers()[1..],
        [(Operation::Token, Some(200)), (Operation::Token, Some(400))]
    );
}

#[tokio::test]
async fn an_older_access_token_is_rejected_once_the_shopper_has_a_newer_one() {
    let b = bench().await;
    let first = b.signed_payment(&DENMARK, "psu-twice").await;
    let older = b
        .client
        .exchange_code(&first.code, REDIRECT_URI)
        .await
        .expect("first exchange");
    let second = b.signed_payment(&DENMARK, "psu-twice").await;
    let newer = b
        .client
        .exchange_code(&second.code, REDIRECT_URI)
        .await
        .expect("second exchange");
    let id = &first.initiated.bank_payment_id;

    assert_eq!(
        b.client
            .details(
                &BankRef::id_only(id.clone()),
                Some(&older.access_token),
                None
            )
            .await,
        Err(BankError::TokenRejected)
    );
    assert_eq!(b.answers().last(), Some(&(Operation::Details, Some(401))));
    // The newer token serves all of the shopper's payments, the first one included.
    let details = b
        .client
        .details(
            &BankRef::id_only(id.clone()),
            Some(&newer.access_token),
            None,
        )
        .await
        .expect("details with the newer token");
    assert_eq!(details.amount, Some(first.sent.amount));
}

#[tokio::test]
async fn a_bearer_call_refused_for_its_date_is_a_clock_fault_and_the_token_still_works() {
    let b = bench().await;
    let signed = b.signed_payment(&DENMARK, "psu-clock").await;
    let tokens = b
        .client
        .exchange_code(&signed.code, REDIRECT_URI)
        .await
        .expect("exchange");
    let id = &signed.initiated.bank_payment_id;
    // The bank's clock is ten minutes ahead of ours: our dates look stale.
    b.sandbox.set_gateway_clock_offset(600);
    let refused = b
        .client
        .details(
            &BankRef::id_only(id.clone()),
            Some(&tokens.access_token),
            None,
        )
        .await;
    assert_eq!(
        refused,
        Err(BankError::ClockRejected {
            code: "error.date.invalid".into()
        })
    );
    assert!(refused.unwrap_err().is_configuration_fault());
    assert_eq!(b.answers().last(), Some(&(Operation::Details, Some(401))));
    // Nothing was wrong with the token: once the clocks agree it works as before.
    b.sandbox.set_gateway_clock_offset(0);
    b.client
        .details(
            &BankRef::id_only(id.clone()),
            Some(&tokens.access_token),
            None,
        )
        .await
        .expect("the same token works once the clock is right");
}

/// An initiation signed by hand with the client's public signing helpers, so that a test
/// can get exactly one thing wrong.
struct HandSigned {
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// `date`: the originating date to sign and send. `list_body_headers`: whether the
/// signature covers `content-type` and `digest` (Nordea requires it on a request with a
/// body).
fn hand_signed_initiation(b: &Bench, date: SystemTime, list_body_headers: bool) -> HandSigned {
    let key = SigningKey::from_text(REGISTERED_KEY).expect("test key");
    let path = "/personal/v2/payments/authorization/sepa-credit-transfer";
    let body = serde_json::to_vec(&convert::initiation_request(&payment(&FINLAND))).expect("json");
    let content_type = "application/json";
    let date = signing::originating_date(date);
    let digest = signing::digest_header(&body);
    let (list, signed_body) = if list_body_headers {
        let headers = BodyHeaders {
            content_type,
            digest: &digest,
        };
        (signing::HEADERS_WITH_BODY, Some(headers))
    } else {
        (signing::HEADERS_WITHOUT_BODY, None)
    };
    let text = signing::signing_string("POST", path, &b.host, &date, signed_body);
    let signature = B64.encode(key.sign(text.as_bytes()).expect("sign"));
    HandSigned {
        url: format!("{}{path}", b.base),
        headers: vec![
            ("x-ibm-client-id", CLIENT_ID.to_owned()),
            ("x-ibm-client-secret", CLIENT_SECRET.to_owned()),
            ("x-nordea-originating-host", b.host.clone()),
            ("x-nordea-originating-date", date),
            ("content-type", content_type.to_owned()),
            ("digest", digest),
            (
                "signature",
                signing::signature_header(CLIENT_ID, list, &signature),
            ),
        ],
        body,
    }
}

impl HandSigned {
    /// Sends it; returns the HTTP status and the JSON answer.
    async fn send(self, b: &Bench) -> (u16, Value) {
        let mut request = b.browser.request(Method::POST, &self.url).body(self.body);
        for (name, value) in self.headers {
            request = request.header(name, value);
        }
        let answer = request.send().await.expect("send");
        let status = answer.status().as_u16();
        (status, answer.json().await.expect("a JSON answer"))
    }

    /// Sends it, expecting a refusal; returns the HTTP status and the first failure's code
    /// and description.
    async fn refused(self, b: &Bench) -> (u16, String, String) {
        let (status, body) = self.send(b).await;
        let failure = &body["error"]["failures"][0];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        (
            status,
            text(&failure["code"]),
            text(&failure["description"]),
        )
    }
}

#[tokio::test]
async fn a_request_signed_by_hand_with_the_public_helpers_is_accepted() {
    // The control for the refusals below: only their one change makes them fail.
    let b = bench().await;
    let (status, body) = hand_signed_initiation(&b, SystemTime::now(), true)
        .send(&b)
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(b.answers(), [(Operation::Initiate, Some(201))]);
}

#[tokio::test]
async fn a_request_dated_ten_minutes_ago_is_refused_as_an_invalid_date() {
    let b = bench().await;
    let ten_minutes_ago = SystemTime::now() - Duration::from_secs(600);
    let (status, code, description) = hand_signed_initiation(&b, ten_minutes_ago, true)
        .refused(&b)
        .await;
    assert_eq!((status, code.as_str()), (401, "error.date.invalid"));
    assert!(
        description.contains("behind the server time"),
        "{description}"
    );
    assert_eq!(b.answers(), [(Operation::Initiate, Some(401))]);
}

#[tokio::test]
async fn a_body_that_does_not_match_its_digest_is_refused_as_an_invalid_digest() {
    let b = bench().await;
    let mut request = hand_signed_initiation(&b, SystemTime::now(), true);
    let signed = String::from_utf8(request.body).expect("utf-8");
    let tampered = signed.replace("\"10.50\"", "\"1050.00\"");
    assert_ne!(tampered, signed, "the amount was changed");
    request.body = tampered.into_bytes();
    let (status, code, description) = request.refused(&b).await;
    assert_eq!((status, code.as_str()), (401, "error.digest.invalid"));
    assert!(description.contains("does not match"), "{description}");
    assert_eq!(b.answers(), [(Operation::Initiate, Some(401))]);
    assert!(b.sandbox.payments().is_empty(), "nothing was created");
}

#[tokio::test]
async fn a_signature_whose_header_list_leaves_out_the_body_headers_is_refused() {
    let b = bench().await;
    let (status, code, description) = hand_signed_initiation(&b, SystemTime::now(), false)
        .refused(&b)
        .await;
    assert_eq!((status, code.as_str()), (401, "error.signature.invalid"));
    assert!(
        description.contains("Signed headers must be"),
        "{description}"
    );
    assert_eq!(b.answers(), [(Operation::Initiate, Some(401))]);
}

#[tokio::test]
async fn a_signed_header_missing_from_the_request_is_refused() {
    let b = bench().await;
    let mut request = hand_signed_initiation(&b, SystemTime::now(), true);
    request.headers.retain(|(name, _)| *name != "content-type");
    let (status, code, description) = request.refused(&b).await;
    assert_eq!((status, code.as_str()), (401, "error.signature.invalid"));
    assert!(
        description.contains("content-type is listed in the signature but missing"),
        "{description}"
    );
    assert_eq!(b.answers(), [(Operation::Initiate, Some(401))]);
}

#[tokio::test]
async fn each_seed_validation_rule_comes_back_as_a_validation_error_with_its_path() {
    type Change = fn(&mut PaymentInitiation);
    let rules: [(&str, &CountryCase, Change, &str); 8] = [
        (
            "a currency other than the country's",
            &FINLAND,
            |p| p.amount = Money::from_minor(10_00, Currency::Sek).expect("positive"),
            "payment.currency",
        ),
        (
            "an account type the country does not have",
            &DENMARK,
            |p| p.creditor.account = account((AccountType::Bgnr, "3300308")),
            "payment.creditor.account.type",
        ),
        (
            "a creditor name over 70 characters",
            &SWEDEN,
            |p| p.creditor.name = Some("N".repeat(71)),
            "payment.creditor.name",
        ),
        (
            "express outside Finland",
            &NORWAY,
            |p| p.urgency = Urgency::Express,
            "payment.urgency",
        ),
        (
            "express with a future execution date",
            &FINLAND,
            |p| {
                p.urgency = Urgency::Express;
                p.requested_execution_date = Some(Utc::now().date_naive() + Days::new(7));
            },
            "payment.urgency",
        ),
        (
            "an own-account transfer in Finland",
            &FINLAND,
            |p| p.own_account_transfer = true,
            "payment.is_own_account_transfer",
        ),
        (
            "a recurring count of 1",
            &DENMARK,
            |p| p.recurring = Some(monthly(1)),
            "payment.recurring.count",
        ),
        (
            "a recurring count of 99",
            &SWEDEN,
            |p| p.recurring = Some(monthly(99)),
            "payment.recurring.count",
        ),
    ];
    let b = bench().await;
    for (n, (rule, case, change, path)) in rules.into_iter().enumerate() {
        let mut p = payment(case);
        change(&mut p);
        let error = b.client.initiate(&p, None).await.err();
        let Some(BankError::Validation { failures }) = error else {
            panic!("{rule}: expected a validation error, got {error:?}");
        };
        let paths: Vec<_> = failures.iter().map(|f| f.path.as_deref()).collect();
        assert_eq!(paths, [Some(path)], "{rule}: {failures:?}");
        assert!(
            failures[0].code.starts_with("error.validation"),
            "{rule}: {failures:?}"
        );
        let answers = b.answers();
        assert_eq!(answers.len(), n + 1, "{rule}: sent once");
        assert_eq!(answers[n], (Operation::Initiate, Some(400)), "{rule}");
    }
    assert!(b.sandbox.payments().is_empty(), "nothing was created");
}

fn monthly(count: u32) -> Recurring {
    Recurring {
        count,
        recurrence_type: "MONTHLY_SAME_DAY".to_owned(),
    }
}

#[tokio::test]
async fn the_sandbox_only_recurrence_is_accepted_by_the_sandbox() {
    let b = bench().await;
    let mut p = payment(&NORWAY);
    p.recurring = Some(Recurring {
        count: 3,
        recurrence_type: "EVERY_MINUTE_SANDBOX_ONLY".to_owned(),
    });
    let initiated = b.client.initiate(&p, None).await.expect("accepted");
    let at_bank = b
        .sandbox
        .payment(initiated.bank_payment_id.as_str())
        .expect("the sandbox has it");
    let recurring = at_bank.recurring.expect("recurring");
    assert_eq!(
        (recurring.count, recurring.recurrence_type.as_str()),
        (3, "EVERY_MINUTE_SANDBOX_ONLY")
    );
}

// ---------------------------------------------------------------------------------------------
// Acceptance 4: faults, switched on at run time.

/// Initiates once with `fault` on every initiation; returns the bench, the outcome and how
/// long the client took.
async fn initiate_under(fault: Fault) -> (Bench, Result<Initiated, BankError>, Duration) {
    let b = bench_for_faults().await;
    b.sandbox
        .add_fault(FaultRule::always(FaultTarget::Initiate, fault));
    let started = Instant::now();
    let result = b.client.initiate(&payment(&FINLAND), None).await;
    (b, result, started.elapsed())
}

fn assert_quick(elapsed: Duration) {
    assert!(
        elapsed < FAULT_TIMEOUT,
        "answered in {elapsed:?}, within the {FAULT_TIMEOUT:?} timeout"
    );
}

#[tokio::test]
async fn a_500_from_the_bank_is_unavailable() {
    let (b, result, elapsed) = initiate_under(Fault::Http500).await;
    assert_eq!(
        result,
        Err(BankError::Unavailable {
            detail: "HTTP 500".into(),
            retry_safe: false,
        })
    );
    assert_quick(elapsed);
    assert_eq!(b.answers(), [(Operation::Initiate, Some(500))]);
}

#[tokio::test]
async fn a_503_from_the_bank_is_unavailable() {
    let (b, result, elapsed) = initiate_under(Fault::Http503).await;
    assert_eq!(
        result,
        Err(BankError::Unavailable {
            detail: "HTTP 503".into(),
            retry_safe: true,
        })
    );
    assert_quick(elapsed);
    assert_eq!(b.answers(), [(Operation::Initiate, Some(503))]);
}

#[tokio::test]
async fn a_429_with_retry_after_is_rate_limited_for_that_long() {
    let (b, result, elapsed) = initiate_under(Fault::Http429 {
        retry_after_secs: 7,
    })
    .await;
    assert_eq!(
        result,
        Err(BankError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        })
    );
    assert_quick(elapsed);
    assert_eq!(b.answers(), [(Operation::Initiate, Some(429))]);
}

#[tokio::test]
async fn a_dropped_connection_is_unavailable() {
    let (b, result, elapsed) = initiate_under(Fault::DropConnection).await;
    let error = result.expect_err("the fault makes the call fail");
    // The request was sent: from the client's side the bank may have processed it.
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
    assert_quick(elapsed);
    assert_eq!(b.answers(), [(Operation::Initiate, None)]);
}

#[tokio::test]
async fn a_connection_dropped_after_the_bank_acted_is_unavailable_and_not_retry_safe() {
    let b = bench_for_faults().await;
    b.sandbox.add_fault(FaultRule::always(
        FaultTarget::Initiate,
        Fault::DropAfterProcessing,
    ));
    let sent = payment(&FINLAND);
    let started = Instant::now();
    let error = b
        .client
        .initiate(&sent, None)
        .await
        .expect_err("no answer comes back");
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
    assert_quick(started.elapsed());
    assert_eq!(b.answers(), [(Operation::Initiate, None)]);
    // Yet the bank holds the payment: exactly one for our external id.
    let held = b.sandbox.payment_by_external_id(&sent.external_id);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].status, BankStatus::PendingUserApproval);
    assert!(b.sandbox.payment_by_external_id("someone-else").is_empty());

    // On the token endpoint the code is spent although the client never got the tokens.
    b.sandbox.clear_faults();
    let signed = b.signed_payment(&NORWAY, "psu-dropped").await;
    b.sandbox
        .add_fault(FaultRule::always(FaultTarget::Token, Fault::DropAfterProcessing).times(1));
    let error = b
        .client
        .exchange_code(&signed.code, REDIRECT_URI)
        .await
        .expect_err("no answer comes back");
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
    let again = b
        .client
        .exchange_code(&signed.code, REDIRECT_URI)
        .await
        .expect_err("the code was used by the lost exchange");
    assert!(
        matches!(&again, BankError::Validation { failures } if failures[0].code == "invalid_grant"),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_delayed_answer_arrives_late_but_the_bank_already_holds_the_payment() {
    const DELAY: Duration = Duration::from_millis(800);
    let b = bench().await;
    b.sandbox.add_fault(
        FaultRule::always(
            FaultTarget::Initiate,
            Fault::DelayAnswer {
                ms: u64::try_from(DELAY.as_millis()).expect("small"),
            },
        )
        .times(1),
    );
    let sent = payment(&SWEDEN);
    let started = Instant::now();
    let watch = async {
        // Well before the answer is sent, the payment exists at the bank.
        tokio::time::sleep(DELAY / 2).await;
        b.sandbox.payment_by_external_id(&sent.external_id)
    };
    let (answer, held_early) = tokio::join!(b.client.initiate(&sent, None), watch);
    let elapsed = started.elapsed();
    let initiated = answer.expect("the answer comes, late");
    assert!(elapsed >= DELAY, "answered after {elapsed:?}");
    assert_eq!(held_early.len(), 1, "{held_early:?}");
    assert_eq!(
        held_early[0].payment_id,
        initiated.bank_payment_id.as_str(),
        "the payment held early is the one answered late"
    );
    assert_eq!(b.answers(), [(Operation::Initiate, Some(201))]);
    assert_eq!(b.sandbox.payment_by_external_id(&sent.external_id).len(), 1);
}

#[tokio::test]
async fn a_delayed_answer_past_the_timeout_is_not_retry_safe_though_the_bank_acted() {
    let (b, result, elapsed) = initiate_under(Fault::DelayAnswer { ms: 1_500 }).await;
    let error = result.expect_err("the client gives up first");
    assert!(
        matches!(&error, BankError::Unavailable { detail, retry_safe: false } if detail.starts_with("timed out")),
        "{error:?}"
    );
    assert!(
        elapsed < FAULT_TIMEOUT + Duration::from_millis(400),
        "{elapsed:?}"
    );
    assert_eq!(b.sandbox.payments().len(), 1, "the payment was created");
}

#[tokio::test]
async fn the_sandbox_id_token_gives_the_client_the_shopper_and_the_issue_time() {
    let b = bench().await;
    let signed = b.signed_payment(&FINLAND, "psu-identity").await;
    let plain = b
        .client
        .exchange_code(&signed.code, REDIRECT_URI)
        .await
        .expect("exchange");
    assert_eq!(
        (plain.shopper_id, plain.issued_at),
        (None, None),
        "off by default"
    );

    b.sandbox.set_token_identity(true);
    let signed = b.signed_payment(&FINLAND, "psu-identity").await;
    let before = b.sandbox.now();
    let tokens = b
        .client
        .exchange_code(&signed.code, REDIRECT_URI)
        .await
        .expect("exchange");
    let after = b.sandbox.now();
    assert_eq!(tokens.shopper_id.as_deref(), Some("psu-identity"));
    let issued = tokens.issued_at.expect("an issue time");
    let micros = |t: chrono::DateTime<Utc>| t.timestamp_micros();
    assert!(
        micros(before) <= micros(issued) && micros(issued) <= micros(after),
        "{before} <= {issued} <= {after}"
    );
    // A refresh says so too, with a later issue time on the sandbox clock.
    b.sandbox.advance_clock(Duration::from_secs(5));
    let refreshed = b
        .client
        .refresh(tokens.refresh_token.as_ref().unwrap())
        .await
        .expect("refresh");
    assert_eq!(refreshed.shopper_id.as_deref(), Some("psu-identity"));
    assert!(refreshed.issued_at.expect("an issue time") >= issued + chrono::Duration::seconds(5));
}

#[tokio::test]
async fn a_malformed_json_answer_is_unexpected() {
    let (b, result, elapsed) = initiate_under(Fault::MalformedJson).await;
    let error = result.expect_err("the fault makes the call fail");
    assert!(
        matches!(
            error,
            BankError::Unexpected {
                status: Some(201),
                ..
            }
        ),
        "{error:?}"
    );
    assert_quick(elapsed);
    assert_eq!(b.answers(), [(Operation::Initiate, Some(201))]);
    // The call ran at the bank: the outcome is unknown to us, not "nothing happened".
    assert_eq!(b.sandbox.payments().len(), 1);
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_unavailable() {
    let (b, result, elapsed) = initiate_under(Fault::Latency { ms: 1_500 }).await;
    let error = result.expect_err("the fault makes the call fail");
    assert!(
        matches!(&error, BankError::Unavailable { detail, retry_safe: false } if detail.starts_with("timed out")),
        "{error:?}"
    );
    assert!(
        elapsed >= FAULT_TIMEOUT && elapsed < FAULT_TIMEOUT + Duration::from_millis(400),
        "gave up after {elapsed:?}"
    );
    // Sent once; the sandbox was still sleeping on it when the client gave up.
    assert_eq!(b.received(Operation::Initiate), 1);
}

/// A payment whose link is opened, so that status calls find it.
async fn opened_payment(b: &Bench) -> BankPaymentId {
    let initiated = b
        .client
        .initiate(&payment(&SWEDEN), None)
        .await
        .expect("initiate");
    b.open_signing_page(initiated.authorization_url().unwrap())
        .await;
    initiated.bank_payment_id
}

#[tokio::test]
async fn a_status_read_is_retried_until_the_bank_answers() {
    let b = bench_for_faults().await;
    let id = opened_payment(&b).await;
    b.sandbox.clear_requests();
    b.sandbox
        .add_fault(FaultRule::always(FaultTarget::Status, Fault::Http503).times(2));
    let started = Instant::now();
    let report = b
        .client
        .status(&BankRef::id_only(id.clone()), None)
        .await
        .expect("the third attempt");
    assert_quick(started.elapsed());
    assert_status(
        &report,
        "PendingUserApproval",
        PaymentStatus::AwaitingAuthorization,
    );
    assert_eq!(
        b.answers(),
        [
            (Operation::Status, Some(503)),
            (Operation::Status, Some(503)),
            (Operation::Status, Some(200)),
        ]
    );
}

#[tokio::test]
async fn a_status_read_gives_up_after_its_attempts() {
    let b = bench_for_faults().await;
    let id = opened_payment(&b).await;
    b.sandbox.clear_requests();
    b.sandbox
        .add_fault(FaultRule::always(FaultTarget::Status, Fault::Http500));
    let started = Instant::now();
    assert_eq!(
        b.client.status(&BankRef::id_only(id.clone()), None).await,
        Err(BankError::Unavailable {
            detail: "HTTP 500".into(),
            retry_safe: false,
        })
    );
    assert_quick(started.elapsed());
    assert_eq!(b.answers(), [(Operation::Status, Some(500)); 3]);
}

#[tokio::test]
async fn a_rate_limited_read_is_not_retried() {
    let b = bench_for_faults().await;
    let id = opened_payment(&b).await;
    b.sandbox.clear_requests();
    b.sandbox.add_fault(FaultRule::always(
        FaultTarget::Status,
        Fault::Http429 {
            retry_after_secs: 7,
        },
    ));
    assert_eq!(
        b.client.status(&BankRef::id_only(id.clone()), None).await,
        Err(BankError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        })
    );
    assert_eq!(b.answers(), [(Operation::Status, Some(429))]);
}

#[tokio::test]
async fn an_initiation_is_sent_once_even_when_the_bank_is_unavailable() {
    let b = bench_for_faults().await;
    b.sandbox
        .add_fault(FaultRule::always(FaultTarget::Initiate, Fault::Http503).times(2));
    assert_eq!(
        b.client.initiate(&payment(&FINLAND), None).await,
        Err(BankError::Unavailable {
            detail: "HTTP 503".into(),
            retry_safe: true,
        })
    );
    assert_eq!(b.answers(), [(Operation::Initiate, Some(503))]);
}

#[tokio::test]
async fn a_code_exchange_is_sent_once_even_when_the_bank_is_unavailable() {
    let b = bench_for_faults().await;
    let signed = b.signed_payment(&NORWAY, "psu-503").await;
    b.sandbox.clear_requests();
    b.sandbox
        .add_fault(FaultRule::always(FaultTarget::Token, Fault::Http503).times(2));
    let result = b.client.exchange_code(&signed.code, REDIRECT_URI).await;
    assert_eq!(
        result.err(),
        Some(BankError::Unavailable {
            detail: "HTTP 503".into(),
            retry_safe: true,
        })
    );
    assert_eq!(b.answers(), [(Operation::Token, Some(503))]);

    // A 503 did nothing at the bank: once it is healthy again the same code still works.
    b.sandbox.clear_faults();
    b.client
        .exchange_code(&signed.code, REDIRECT_URI)
        .await
        .expect("the code was not spent");
    assert_eq!(
        b.answers(),
        [(Operation::Token, Some(503)), (Operation::Token, Some(200))]
    );
}
