//! The SEB simulator's rules, one test per rule and scenario: a reqwest client with the TPP
//! identity (mutual TLS) against a spawned simulator.

use std::time::Duration;

use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use super::{SebSandbox, SebSandboxConfig, spawn};

const IP: &str = "198.51.100.7";
const SEK: &str = "private-se-domestic-credit-transfers";

struct T {
    sb: SebSandbox,
    http: Client,
}

async fn start() -> T {
    start_with(SebSandboxConfig::default()).await
}

async fn start_with(config: SebSandboxConfig) -> T {
    let sb = spawn(config).await.expect("the SEB simulator starts");
    let http = sb.tpp_client();
    T { sb, http }
}

fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn json_of(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if status.is_client_error() {
        assert_eq!(ct, "application/problem+json", "{v}");
        assert_eq!(v["status"], json!(status.as_u16()), "{v}");
        assert!(v["type"].is_string() && v["title"].is_string() && v["detail"].is_string());
        assert!(
            v["instance"].as_str().is_some_and(|i| i.starts_with('/')),
            "{v}"
        );
    }
    (status, v)
}

impl T {
    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.sb.api_url)
    }

    fn app(&self, path: &str) -> String {
        format!("{}{path}", self.sb.app_url)
    }

    async fn start_auth(&self) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.api("/auth/v4/authorizations"))
            .header("psu-ip-address", IP)
            .json(&json!({"client_id": self.sb.client_id(), "scope": "psd2_payments", "start_mode": "qr", "lang": "sv"}))
            .send()
            .await
            .unwrap();
        json_of(r).await
    }

    async fn auth_progress(&self, id: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(self.api(&format!("/auth/v4/authorizations/{id}")))
            .header("psu-ip-address", IP)
            .send()
            .await
            .unwrap();
        json_of(r).await
    }

    async fn admin(&self, path: &str) -> (StatusCode, Value) {
        let r = reqwest::Client::new()
            .post(self.app(path))
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn take_tokens(&self, auth_req_id: &str) -> (StatusCode, Value) {
        let secret = secrecy::ExposeSecret::expose_secret(self.sb.client_secret()).to_owned();
        let r = self
            .http
            .post(self.api("/auth/v4/tokens"))
            .json(&json!({"client_id": self.sb.client_id(), "client_secret": secret, "auth_req_id": auth_req_id, "redirect_uri": "https://tpp.example/cb"}))
            .send()
            .await
            .unwrap();
        json_of(r).await
    }

    /// A shopper identifies in the app; answers (auth_req_id, tokens).
    async fn identify(&self, shopper: &str) -> (String, Value) {
        let (s, v) = self.start_auth().await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let id = v["auth_req_id"].as_str().unwrap().to_owned();
        let (_, p) = self.auth_progress(&id).await;
        let ast = p["autostart_token"].as_str().unwrap().to_owned();
        let (s, _) = self
            .admin(&format!("/admin/bankid/{ast}/approve?shopper={shopper}"))
            .await;
        assert_eq!(s, StatusCode::OK);
        let (s, tokens) = self.take_tokens(&id).await;
        assert_eq!(s, StatusCode::OK, "{tokens}");
        (id, tokens)
    }

    async fn token(&self, shopper: &str) -> String {
        self.identify(shopper).await.1["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn create_request(&self, token: &str, product: &str, body: &Value) -> RequestBuilder {
        self.http
            .post(self.api(&format!(
                "/tpp/pis/private/v1/identified2/payments/{product}"
            )))
            .bearer_auth(token)
            .header("X-Request-ID", rid())
            .header("PSU-IP-Address", IP)
            .json(body)
    }

    async fn create(&self, token: &str, product: &str, body: &Value) -> (StatusCode, Value) {
        json_of(
            self.create_request(token, product, body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// `GET …/payments/{SEK}/{id}`.
    fn read_request(&self, token: &str, id: &str) -> RequestBuilder {
        self.http
            .get(self.api(&format!(
                "/tpp/pis/private/v1/identified2/payments/{SEK}/{id}"
            )))
            .bearer_auth(token)
            .header("X-Request-ID", rid())
    }

    async fn pay(&self, token: &str, amount: &str) -> String {
        let (s, v) = self.create(token, SEK, &domestic(amount)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["paymentId"].as_str().unwrap().to_owned()
    }

    async fn status(&self, token: &str, id: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(self.api(&format!(
                "/tpp/pis/private/v1/identified2/payments/{SEK}/{id}/status"
            )))
            .bearer_auth(token)
            .header("X-Request-ID", rid())
            .send()
            .await
            .unwrap();
        json_of(r).await
    }

    async fn tx_status(&self, token: &str, id: &str) -> String {
        let (s, v) = self.status(token, id).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["transactionStatus"].as_str().unwrap().to_owned()
    }

    fn sign_request(&self, token: &str, ids: &[&str]) -> RequestBuilder {
        self.http
            .post(self.api("/tpp/signing/v1/signing-orders"))
            .bearer_auth(token)
            .header("X-Request-ID", rid())
            .header("PSU-IP-Address", IP)
            .json(&json!({"orderIds": ids, "authenticationMethodId": "bankIdQr"}))
    }

    async fn sign(&self, token: &str, ids: &[&str]) -> (StatusCode, Value) {
        json_of(self.sign_request(token, ids).send().await.unwrap()).await
    }

    async fn signing(&self, token: &str, id: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(self.api(&format!("/tpp/signing/v1/signing-orders/{id}")))
            .bearer_auth(token)
            .header("X-Request-ID", rid())
            .header("PSU-IP-Address", IP)
            .send()
            .await
            .unwrap();
        json_of(r).await
    }

    /// A JSON admin path of the app listener.
    async fn admin_json(&self, path: &str) -> Value {
        reqwest::get(self.app(path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn refusal_rules(&self) -> Vec<String> {
        self.admin_json("/admin/refusals")
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap().to_owned())
            .collect()
    }

    fn advance(&self, secs: u64) {
        self.sb.sim.advance_clock(Duration::from_secs(secs));
    }
}

fn domestic(amount: &str) -> Value {
    json!({
        "instructedAmount": {"currency": "SEK", "amount": amount},
        "creditorAccount": {"bgnr": "5050-1055"},
        "creditorName": "Shop AB",
        "remittanceInformationStructured": {"reference": "1234566", "referenceType": "OCR"},
        "debtorAccountMessage": "Shop AB",
    })
}

// --- mutual TLS -------------------------------------------------------------------------

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_in_the_tls_handshake() {
    let t = start().await;
    let bare = super::tls::client(&t.sb.pki, false).unwrap();
    let r = bare
        .post(t.api("/auth/v4/authorizations"))
        .header("psu-ip-address", IP)
        .json(&json!({}))
        .send()
        .await;
    assert!(r.is_err(), "answered without a client certificate: {r:?}");
    // The same request with the TPP's certificate gets an HTTP answer.
    let (s, _) = t.start_auth().await;
    assert_eq!(s, StatusCode::OK);
    // The server records the refused handshake (it may finish after the client gave up).
    let mut recorded = false;
    for _ in 0..40 {
        if t.refusal_rules()
            .await
            .contains(&"mtls-client-certificate".to_owned())
        {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recorded, "{:?}", t.refusal_rules().await);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_in_the_tls_handshake() {
    let t = start().await;
    let other =
        crate::sandbox::berlin_group::test_pki::generate("CN=Other TPP,O=Other,C=SE").unwrap();
    let ca = reqwest::Certificate::from_pem(t.sb.pki.ca_pem.as_bytes()).unwrap();
    let pem = format!("{}\n{}", other.tpp_cert_pem, other.tpp_key_pem);
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client
        .get(t.api("/auth/v4/authorizations/x"))
        .header("psu-ip-address", IP)
        .send()
        .await;
    assert!(r.is_err(), "answered a foreign client certificate: {r:?}");
}

#[tokio::test]
async fn the_app_listener_is_plain_http_and_the_api_is_not() {
    let t = start().await;
    assert!(t.sb.api_url.starts_with("https://127.0.0.1:"));
    let r = reqwest::get(t.app("/admin/health")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

// --- decoupled authorization ------------------------------------------------------------

#[tokio::test]
async fn an_authorization_without_psu_ip_address_is_refused_400() {
    let t = start().await;
    let r = t
        .http
        .post(t.api("/auth/v4/authorizations"))
        .json(&json!({"client_id": t.sb.client_id(), "scope": "psd2_payments", "start_mode": "qr"}))
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("PSU-IP-Address"));
    let r = t
        .http
        .post(t.api("/auth/v4/authorizations"))
        .header("psu-ip-address", "not-an-ip")
        .json(&json!({"client_id": t.sb.client_id(), "scope": "psd2_payments", "start_mode": "qr"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        t.refusal_rules().await,
        ["psu-ip-address", "psu-ip-address"]
    );
}

#[tokio::test]
async fn an_authorization_checks_client_scope_start_mode_and_lang() {
    let t = start().await;
    let cases = [
        (
            json!({"client_id": "someone-else", "scope": "psd2_payments", "start_mode": "qr"}),
            "invalid-client",
        ),
        (
            json!({"client_id": t.sb.client_id(), "scope": "accounts", "start_mode": "qr"}),
            "invalid-request",
        ),
        (
            json!({"client_id": t.sb.client_id(), "scope": "psd2_payments", "start_mode": "push"}),
            "invalid-request",
        ),
        (
            json!({"client_id": t.sb.client_id(), "scope": "psd2_payments", "start_mode": "ast", "lang": "fi"}),
            "invalid-request",
        ),
        (
            json!({"client_id": t.sb.client_id(), "scope": "psd2_payments", "start_mode": "ast", "extra": 1}),
            "invalid-request",
        ),
    ];
    for (body, code) in cases {
        let r = t
            .http
            .post(t.api("/auth/v4/authorizations"))
            .header("psu-ip-address", IP)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (s, v) = json_of(r).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} → {v}");
        assert!(
            v["type"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/problems/{code}")),
            "{v}"
        );
    }
    assert_eq!(
        t.refusal_rules().await,
        ["client-id", "scope", "start-mode", "lang", "unknown-field"]
    );
}

#[tokio::test]
async fn an_identification_goes_pending_to_complete_and_gives_tokens_once() {
    let t = start().await;
    let (_, v) = t.start_auth().await;
    let id = v["auth_req_id"].as_str().unwrap().to_owned();
    let (s, p) = t.auth_progress(&id).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["status"], "PENDING");
    assert_eq!(p["hint_code"], "outstandingTransaction");
    assert_eq!(p["poll_delay"], 1000);
    assert!(p["qr_token"].as_str().unwrap().starts_with("bankid."));
    let ast = p["autostart_token"].as_str().unwrap().to_owned();
    // Not complete yet: no tokens.
    let (s, v) = t.take_tokens(&id).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // The app opens it: userSign.
    let page = reqwest::get(t.app(&format!("/test-bankid?autostarttoken={ast}&redirect=null")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Identify"), "{page}");
    assert!(page.contains("Approve") && page.contains("Reject"));
    assert!(!page.contains("<script"));
    let (_, p) = t.auth_progress(&id).await;
    assert_eq!(p["hint_code"], "userSign");
    let r = reqwest::Client::new()
        .post(t.app("/test-bankid/approve"))
        .form(&[("autostarttoken", ast.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, p) = t.auth_progress(&id).await;
    assert_eq!(p["status"], "COMPLETE");
    assert!(p.get("qr_token").is_none() && p.get("autostart_token").is_none());
    let (s, tokens) = t.take_tokens(&id).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["expires_in"], 1800);
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["access_token"].is_string() && tokens["refresh_token"].is_string());
    // A second time: already used.
    let (s, v) = t.take_tokens(&id).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["type"]
            .as_str()
            .unwrap()
            .ends_with("/problems/invalid-auth-req-id")
    );
    assert!(v["detail"].as_str().unwrap().contains("already used"));
}

#[tokio::test]
async fn an_unknown_auth_req_id_is_404() {
    let t = start().await;
    let (s, _) = t.auth_progress(&rid()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tokens_with_a_wrong_client_secret_are_refused_invalid_client() {
    let t = start().await;
    let r = t
        .http
        .post(t.api("/auth/v4/tokens"))
        .json(&json!({"client_id": t.sb.client_id(), "client_secret": "wrong", "auth_req_id": rid(), "redirect_uri": "https://tpp.example/cb"}))
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["type"]
            .as_str()
            .unwrap()
            .ends_with("/problems/invalid-client")
    );
}

#[tokio::test]
async fn a_refresh_rotates_the_pair_and_the_old_refresh_token_is_refused() {
    let t = start().await;
    let (_, tokens) = t.identify("19121212-1212").await;
    let secret = secrecy::ExposeSecret::expose_secret(t.sb.client_secret()).to_owned();
    let refresh = |rt: String| {
        t.http
            .post(t.api("/auth/v4/tokens"))
            .json(&json!({"client_id": t.sb.client_id(), "client_secret": secret, "grant_type": "refresh_token", "refresh_token": rt, "redirect_uri": "https://tpp.example/cb"}))
            .send()
    };
    let old = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (s, new) = json_of(refresh(old.clone()).await.unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{new}");
    assert_ne!(new["refresh_token"], tokens["refresh_token"]);
    assert_ne!(new["access_token"], tokens["access_token"]);
    let (s, v) = json_of(refresh(old).await.unwrap()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["type"],
        "https://authorize.sebgroup.com/problems/invalid-refresh-token"
    );
    // The new pair's access token works for the same shopper.
    let token = new["access_token"].as_str().unwrap();
    let id = t.pay(token, "10.00").await;
    assert_eq!(t.tx_status(token, &id).await, "RCVD");
}

#[tokio::test]
async fn an_expired_or_unknown_access_token_is_401() {
    let t = start().await;
    let token = t.token("s1").await;
    let id = t.pay(&token, "10.00").await;
    let (s, v) = t.status("not-a-token", &id).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    t.advance(1800);
    let (s, v) = t.status(&token, &id).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["code"], "TOKEN_EXPIRED");
    let r = t
        .http
        .get(t.api(&format!(
            "/tpp/pis/private/v1/identified2/payments/{SEK}/{id}/status"
        )))
        .header("X-Request-ID", rid())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

// --- payments ---------------------------------------------------------------------------

#[tokio::test]
async fn a_payment_is_created_rcvd_with_relative_links_and_a_numeric_amount() {
    let t = start().await;
    let token = t.token("s1").await;
    let (s, v) = t.create(&token, SEK, &domestic("345.50")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["paymentId"].as_str().unwrap();
    assert_eq!(v["transactionStatus"], "RCVD");
    assert_eq!(v["instructedAmount"]["amount"], json!(345.5));
    assert_eq!(v["instructedAmount"]["currency"], "SEK");
    assert_eq!(v["_links"]["self"]["href"], format!("/payments/{SEK}/{id}"));
    assert_eq!(
        v["_links"]["status"]["href"],
        format!("/payments/{SEK}/{id}/status")
    );
    let r = t.read_request(&token, id).send().await.unwrap();
    let (s, p) = json_of(r).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["transactionStatus"], "RCVD");
    assert_eq!(p["instructedAmount"]["amount"], json!(345.5));
    assert_eq!(p["creditorAccount"]["bgnr"], "5050-1055");
}

#[tokio::test]
async fn another_shoppers_token_cannot_see_sign_or_cancel_the_payment() {
    let t = start().await;
    let alice = t.token("alice").await;
    let bob = t.token("bob").await;
    let id = t.pay(&alice, "10.00").await;
    let (s, v) = t.status(&bob, &id).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["code"], "RESOURCE_UNKNOWN");
    let (s, v) = t.sign(&bob, &[&id]).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(
        v["type"],
        "https://sign.seb.se/error-codes/RESOURCE_UNKNOWN"
    );
    let r = t
        .http
        .delete(t.api(&format!(
            "/tpp/pis/private/v1/identified2/payments/{SEK}/{id}"
        )))
        .bearer_auth(&bob)
        .header("X-Request-ID", rid())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(t.tx_status(&alice, &id).await, "RCVD");
    assert_eq!(
        t.refusal_rules().await,
        ["token-binding", "token-binding", "token-binding"]
    );
}

#[tokio::test]
async fn a_payment_call_without_a_uuid_request_id_is_400_format_error() {
    let t = start().await;
    let token = t.token("s1").await;
    for rid in [None, Some("not-a-uuid")] {
        let mut req = t
            .http
            .post(t.api(&format!("/tpp/pis/private/v1/identified2/payments/{SEK}")))
            .bearer_auth(&token)
            .header("PSU-IP-Address", IP)
            .json(&domestic("10.00"));
        if let Some(r) = rid {
            req = req.header("X-Request-ID", r);
        }
        let (s, v) = json_of(req.send().await.unwrap()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(v["code"], "FORMAT_ERROR");
        assert!(v["detail"].as_str().unwrap().contains("X-Request-ID"));
    }
}

#[tokio::test]
async fn a_payment_without_psu_ip_address_is_400() {
    let t = start().await;
    let token = t.token("s1").await;
    let r = t
        .http
        .post(t.api(&format!("/tpp/pis/private/v1/identified2/payments/{SEK}")))
        .bearer_auth(&token)
        .header("X-Request-ID", rid())
        .json(&domestic("10.00"))
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["path"], "PSU-IP-Address");
}

/// Each body and the path its refusal must name.
#[tokio::test]
async fn payment_bodies_are_refused_naming_the_path() {
    let t = start().await;
    let token = t.token("s1").await;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = domestic("10.00");
        f(&mut b);
        b
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            with(&|b| b["instructedAmount"]["amount"] = json!("10.005")),
            "instructedAmount.amount",
            "amount-decimals",
        ),
        (
            with(&|b| b["instructedAmount"]["amount"] = json!(10.5)),
            "instructedAmount.amount",
            "amount",
        ),
        (
            with(&|b| b["instructedAmount"]["amount"] = json!("0.00")),
            "instructedAmount.amount",
            "amount",
        ),
        (
            with(&|b| b["instructedAmount"]["currency"] = json!("EUR")),
            "instructedAmount.currency",
            "currency",
        ),
        (
            with(&|b| b["remittanceInformationStructured"]["reference"] = json!("1234567")),
            "remittanceInformationStructured.reference",
            "ocr-check-digit",
        ),
        (
            with(&|b| b["remittanceInformationStructured"]["reference"] = json!("12a4")),
            "remittanceInformationStructured.reference",
            "ocr",
        ),
        (
            with(&|b| b["remittanceInformationUnstructured"] = json!("both")),
            "remittanceInformationStructured",
            "remittance",
        ),
        (
            with(&|b| b["debtorAccountMessage"] = json!("thirteen char")),
            "debtorAccountMessage",
            "account-message",
        ),
        (
            with(&|b| b["creditorAccountMessage"] = json!("thirteen char")),
            "creditorAccountMessage",
            "account-message",
        ),
        (
            with(&|b| b["endToEndIdentification"] = json!("x".repeat(36))),
            "endToEndIdentification",
            "end-to-end-id",
        ),
        (
            with(&|b| b["requestedExecutionDate"] = json!("2020-01-01")),
            "requestedExecutionDate",
            "execution-date",
        ),
        (
            with(&|b| b["creditorAccount"] = json!({"bgnr": "5050-1055", "pgnr": "12345-6"})),
            "creditorAccount",
            "creditor-account",
        ),
        (
            with(&|b| b["creditorAccount"] = json!({"bgnr": "50501055"})),
            "creditorAccount.bgnr",
            "creditor-account",
        ),
        (
            with(&|b| b["creditorAccount"] = json!({"pgnr": "123456789"})),
            "creditorAccount.pgnr",
            "creditor-account",
        ),
        (
            with(&|b| b["creditorAccount"] = json!({"iban": "SE4550000000058398257467"})),
            "creditorAccount.iban",
            "creditor-account",
        ),
        (
            with(&|b| {
                b["creditorAccount"] = json!({"iban": "SE4550000000058398257466"});
                b.as_object_mut().unwrap().remove("creditorName");
            }),
            "creditorName",
            "required-field",
        ),
        (
            with(&|b| b["creditorName"] = json!("x".repeat(71))),
            "creditorName",
            "creditor-name",
        ),
        (
            with(&|b| b["ultimateCreditor"] = json!("x")),
            "ultimateCreditor",
            "unknown-field",
        ),
    ];
    for (body, path, rule) in &cases {
        let (s, v) = t.create(&token, SEK, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} → {v}");
        assert_eq!(v["code"], "FORMAT_ERROR", "{v}");
        assert_eq!(v["path"], json!(path), "{body} → {v}");
        assert!(v["detail"].as_str().unwrap().contains(path), "{v}");
        let _ = rule;
    }
    let rules = t.refusal_rules().await;
    let expected: Vec<&str> = cases.iter().map(|c| c.2).collect();
    assert_eq!(rules, expected);
    // Valid variants pass: pgnr with a dash, unstructured text, an iban with a name.
    for body in [
        with(&|b| b["creditorAccount"] = json!({"pgnr": "12345-6"})),
        with(&|b| {
            b.as_object_mut()
                .unwrap()
                .remove("remittanceInformationStructured");
            b["remittanceInformationUnstructured"] = json!("Order 42");
        }),
        with(&|b| b["creditorAccount"] = json!({"iban": "SE4550000000058398257466"})),
    ] {
        let (s, v) = t.create(&token, SEK, &body).await;
        assert_eq!(s, StatusCode::CREATED, "{body} → {v}");
    }
}

#[tokio::test]
async fn an_unknown_product_is_404_and_sepa_takes_eur_to_an_iban_only() {
    let t = start().await;
    let token = t.token("s1").await;
    let (s, v) = t
        .create(&token, "instant-sepa-credit-transfers", &domestic("1.00"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["code"], "PRODUCT_UNKNOWN");
    let mut sepa = json!({
        "instructedAmount": {"currency": "EUR", "amount": "12.30"},
        "creditorAccount": {"iban": "DE89370400440532013000"},
        "creditorName": "Shop GmbH",
        "remittanceInformationUnstructured": "Order 42",
    });
    let (s, v) = t.create(&token, "sepa-credit-transfers", &sepa).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    sepa["creditorAccount"] = json!({"bban": "50000000058398257466"});
    let (s, v) = t.create(&token, "sepa-credit-transfers", &sepa).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["path"], "creditorAccount.bban");
}

#[tokio::test]
async fn the_corporate_path_needs_psu_corporate_id() {
    let t = start().await;
    let token = t.token("s1").await;
    let url = t.api(&format!("/tpp/pis/corporate/v1/identified2/payments/{SEK}"));
    let send = |corp: Option<&'static str>| {
        let mut r = t
            .http
            .post(&url)
            .bearer_auth(&token)
            .header("X-Request-ID", rid())
            .header("PSU-IP-Address", IP)
            .json(&domestic("10.00"));
        if let Some(c) = corp {
            r = r.header("PSU-Corporate-ID", c);
        }
        r.send()
    };
    let (s, v) = json_of(send(None).await.unwrap()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["path"], "PSU-Corporate-ID");
    let (s, v) = json_of(send(Some("5566778899")).await.unwrap()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn an_unsigned_payment_can_be_deleted_once_and_a_signed_one_cannot() {
    let t = start().await;
    let token = t.token("s1").await;
    let del = |id: String| {
        t.http
            .delete(t.api(&format!(
                "/tpp/pis/private/v1/identified2/payments/{SEK}/{id}"
            )))
            .bearer_auth(&token)
            .header("X-Request-ID", rid())
            .send()
    };
    let id = t.pay(&token, "10.00").await;
    assert_eq!(
        del(id.clone()).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(t.tx_status(&token, &id).await, "CANC");
    let (s, v) = json_of(del(id.clone()).await.unwrap()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], "CANCELLATION_INVALID");
    let signed = t.pay(&token, "10.00").await;
    let (_, o) = t.sign(&token, &[&signed]).await;
    let ast = o["autoStartToken"].as_str().unwrap();
    t.admin(&format!("/admin/bankid/{ast}/approve")).await;
    let (s, v) = json_of(del(signed).await.unwrap()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], "CANCELLATION_INVALID");
}

// --- signing ----------------------------------------------------------------------------

#[tokio::test]
async fn a_signing_order_starts_with_qr_data_and_autostart_token_and_finalises_on_approval() {
    let t = start().await;
    let token = t.token("s1").await;
    let id = t.pay(&token, "10.00").await;
    let (s, o) = t.sign(&token, &[&id]).await;
    assert_eq!(s, StatusCode::CREATED, "{o}");
    assert_eq!(o["scaStatus"], "started");
    assert_eq!(o["hintCode"], "outstandingTransaction");
    assert_eq!(o["scaMethod"]["methodType"], "DECOUPLED");
    assert_eq!(o["scaMethod"]["authenticationType"], "PHOTO_OTP");
    assert_eq!(o["scaMethod"]["authenticationMethodId"], "bankIdQr");
    assert_eq!(o["orderIds"], json!([id]));
    assert_eq!(o["tppMessages"], json!([]));
    assert!(o["qrData"].as_str().unwrap().starts_with("bankid."));
    let aid = o["authorisationId"].as_str().unwrap().to_owned();
    assert_eq!(
        o["_links"]["self"]["href"],
        format!("/signing-orders/{aid}")
    );
    let ast = o["autoStartToken"].as_str().unwrap().to_owned();
    // The app page names the payment and opens the order.
    let page = reqwest::get(t.app(&format!("/test-bankid?autostarttoken={ast}&redirect=null")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("10.00 SEK to Shop AB"), "{page}");
    let (_, o) = t.signing(&token, &aid).await;
    assert_eq!(o["hintCode"], "userSign");
    assert_eq!(o["scaStatus"], "started");
    let r = reqwest::Client::new()
        .post(t.app("/test-bankid/approve"))
        .form(&[("autostarttoken", ast.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, o) = t.signing(&token, &aid).await;
    assert_eq!(o["scaStatus"], "finalised");
    assert!(o.get("qrData").is_none() && o.get("autoStartToken").is_none());
    assert_eq!(t.tx_status(&token, &id).await, "ACTC");
    t.advance(1);
    assert_eq!(t.tx_status(&token, &id).await, "ACSC");
    // Signed: a new order for it is STATUS_INVALID.
    let (s, v) = t.sign(&token, &[&id]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["type"], "https://sign.seb.se/error-codes/STATUS_INVALID");
}

#[tokio::test]
async fn the_qr_data_changes_every_second() {
    let t = start().await;
    let token = t.token("s1").await;
    let id = t.pay(&token, "10.00").await;
    let (_, o) = t.sign(&token, &[&id]).await;
    let aid = o["authorisationId"].as_str().unwrap();
    let first = o["qrData"].as_str().unwrap().to_owned();
    t.advance(1);
    let (_, o) = t.signing(&token, aid).await;
    let second = o["qrData"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let a: Vec<&str> = first.split('.').collect();
    let b: Vec<&str> = second.split('.').collect();
    assert_eq!(a[1], b[1], "the same qrStartToken");
    assert_eq!(
        b[2].parse::<i64>().unwrap(),
        a[2].parse::<i64>().unwrap() + 1
    );
}

#[tokio::test]
async fn a_scan_of_the_current_qr_opens_the_order_and_a_stale_or_foreign_one_is_refused() {
    let t = start().await;
    let token = t.token("s1").await;
    let id = t.pay(&token, "10.00").await;
    let (_, o) = t.sign(&token, &[&id]).await;
    let aid = o["authorisationId"].as_str().unwrap().to_owned();
    let stale = o["qrData"].as_str().unwrap().to_owned();
    t.advance(5);
    let scan = |qr: String| {
        reqwest::Client::new()
            .get(t.app(&format!("/test-bankid/scan?qr={qr}")))
            .send()
    };
    assert_eq!(scan(stale).await.unwrap().status(), StatusCode::BAD_REQUEST);
    let (_, o) = t.signing(&token, &aid).await;
    let current = o["qrData"].as_str().unwrap().to_owned();
    let mut forged: Vec<String> = current.split('.').map(str::to_owned).collect();
    forged[3] = "0".repeat(64);
    assert_eq!(
        scan(forged.join(".")).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let r = scan(current).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("Approve"));
    let (_, o) = t.signing(&token, &aid).await;
    assert_eq!(o["hintCode"], "userSign");
    assert_eq!(
        t.refusal_rules().await,
        ["qr-not-current", "qr-not-current"]
    );
}

#[tokio::test]
async fn a_qr_older_than_30_seconds_is_refused() {
    let t = start_with(SebSandboxConfig {
        order_timeout: Duration::from_secs(120),
        ..SebSandboxConfig::default()
    })
    .await;
    let token = t.token("s1").await;
    let id = t.pay(&token, "10.00").await;
    let (_, o) = t.sign(&token, &[&id]).await;
    let aid = o["authorisationId"].as_str().unwrap().to_owned();
    t.advance(31);
    let (_, o) = t.signing(&token, &aid).await;
    let qr = o["qrData"].as_str().unwrap().to_owned();
    let r = reqwest::Client::new()
        .get(t.app(&format!("/test-bankid/scan?qr={qr}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(t.refusal_rules().await, ["qr-stale"]);
}

#[tokio::test]
async fn a_second_signing_order_while_one_runs_fails_already_in_progress_and_cancels_both() {
    let t = start().await;
    let token = t.token("s1").await;
    let a = t.pay(&token, "10.00").await;
    let b = t.pay(&token, "11.00").await;
    let (s, first) = t.sign(&token, &[&a]).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, second) = t.sign(&token, &[&b]).await;
    assert_eq!(s, StatusCode::OK, "{second}");
    assert_eq!(second["scaStatus"], "failed");
    assert_eq!(second["tppMessages"][0]["code"], "ALREADY_IN_PROGRESS");
    assert_eq!(second["tppMessages"][0]["category"], "ERROR");
    assert_eq!(second["_links"], json!({}), "as SEB's example");
    assert!(second.get("qrData").is_none() && second.get("autoStartToken").is_none());
    let (_, first) = t
        .signing(&token, first["authorisationId"].as_str().unwrap())
        .await;
    assert_eq!(first["scaStatus"], "failed");
    assert_eq!(first["hintCode"], "cancelled");
    // Both payments are still RCVD (a failed order does not finalise them), and a new
    // order works.
    assert_eq!(t.tx_status(&token, &a).await, "RCVD");
    let (s, third) = t.sign(&token, &[&a]).await;
    assert_eq!(s, StatusCode::CREATED, "{third}");
}

#[tokio::test]
async fn a_signing_order_checks_its_body_and_headers() {
    let t = start().await;
    let token = t.token("s1").await;
    let id = t.pay(&token, "10.00").await;
    let post = |body: Value, ip: bool| {
        let mut r = t
            .http
            .post(t.api("/tpp/signing/v1/signing-orders"))
            .bearer_auth(&token)
            .header("X-Request-ID", rid())
            .json(&body);
        if ip {
            r = r.header("PSU-IP-Address", IP);
        }
        r.send()
    };
    for (body, ip, path) in [
        (
            json!({"orderIds": [id], "authenticationMethodId": "bankIdQr"}),
            false,
            "PSU-IP-Address",
        ),
        (
            json!({"orderIds": [], "authenticationMethodId": "bankIdQr"}),
            true,
            "orderIds",
        ),
        (
            json!({"orderIds": [id], "authenticationMethodId": "sms"}),
            true,
            "authenticationMethodId",
        ),
        (
            json!({"orderIds": [id], "authenticationMethodId": "bankIdQr", "x": 1}),
            true,
            "x",
        ),
    ] {
        let (s, v) = json_of(post(body, ip).await.unwrap()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["path"], path);
        assert!(
            v["type"]
                .as_str()
                .unwrap()
                .starts_with("https://sign.seb.se/error-codes/")
        );
    }
    let (s, v) = t.signing(&token, &rid()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["code"], "RESOURCE_UNKNOWN");
    assert_eq!(v["status"], 404);
}

#[tokio::test]
async fn another_shoppers_signing_order_is_404() {
    let t = start().await;
    let alice = t.token("alice").await;
    let bob = t.token("bob").await;
    let id = t.pay(&alice, "10.00").await;
    let (_, o) = t.sign(&alice, &[&id]).await;
    let (s, v) = t
        .signing(&bob, o["authorisationId"].as_str().unwrap())
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        v["type"],
        "https://sign.seb.se/error-codes/RESOURCE_UNKNOWN"
    );
}

#[tokio::test]
async fn a_rejected_order_fails_user_cancel_and_the_payment_stays_rcvd() {
    let t = start().await;
    let token = t.token("s1").await;
    let id = t.pay(&token, "10.00").await;
    let (_, o) = t.sign(&token, &[&id]).await;
    let ast = o["autoStartToken"].as_str().unwrap().to_owned();
    let r = reqwest::Client::new()
        .post(t.app("/test-bankid/reject"))
        .form(&[("autostarttoken", ast.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, o) = t
        .signing(&token, o["authorisationId"].as_str().unwrap())
        .await;
    assert_eq!(o["scaStatus"], "failed");
    assert_eq!(o["hintCode"], "userCancel");
    assert_eq!(t.tx_status(&token, &id).await, "RCVD");
    // An ended order cannot be approved.
    let (s, _) = t.admin(&format!("/admin/bankid/{ast}/approve")).await;
    assert_eq!(s, StatusCode::CONFLICT);
}

// --- scenarios --------------------------------------------------------------------------

async fn signed_order(t: &T, token: &str, amount: &str) -> (String, String, String) {
    let id = t.pay(token, amount).await;
    let (s, o) = t.sign(token, &[&id]).await;
    assert_eq!(s, StatusCode::CREATED, "{o}");
    (
        id,
        o["authorisationId"].as_str().unwrap().to_owned(),
        o["autoStartToken"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn scenario_66_01_signed_goes_actc_acsp_acsc() {
    let t = start().await;
    let token = t.token("s1").await;
    let (id, _, ast) = signed_order(&t, &token, "66.01").await;
    let (s, _) = t.admin(&format!("/admin/bankid/{ast}/approve")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t.tx_status(&token, &id).await, "ACTC");
    t.advance(1);
    assert_eq!(t.tx_status(&token, &id).await, "ACSP");
    t.advance(1);
    assert_eq!(t.tx_status(&token, &id).await, "ACSC");
}

#[tokio::test]
async fn scenario_66_02_opening_the_app_refuses_user_cancel() {
    let t = start().await;
    let token = t.token("s1").await;
    let (id, aid, ast) = signed_order(&t, &token, "66.02").await;
    let r = reqwest::get(t.app(&format!("/test-bankid?autostarttoken={ast}&redirect=null")))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, o) = t.signing(&token, &aid).await;
    assert_eq!(o["scaStatus"], "failed");
    assert_eq!(o["hintCode"], "userCancel");
    assert_eq!(t.tx_status(&token, &id).await, "RCVD");
}

#[tokio::test]
async fn scenario_66_03_never_opened_expires_the_order_then_rejects_the_payment() {
    let t = start().await;
    let token = t.token("s1").await;
    let (id, aid, ast) = signed_order(&t, &token, "66.03").await;
    let (s, _) = t.admin(&format!("/admin/bankid/{ast}/open")).await;
    assert_eq!(s, StatusCode::CONFLICT, "the app never opens it");
    t.advance(30);
    let (_, o) = t.signing(&token, &aid).await;
    assert_eq!(o["scaStatus"], "failed");
    assert_eq!(o["hintCode"], "expiredTransaction");
    assert_eq!(t.tx_status(&token, &id).await, "RCVD");
    t.advance(270);
    // The token expired meanwhile (1800 s is more than 300 s, so it is still valid).
    assert_eq!(t.tx_status(&token, &id).await, "RJCT");
}

#[tokio::test]
async fn scenario_66_04_the_first_start_answers_already_in_progress_and_a_retry_signs() {
    let t = start().await;
    let token = t.token("s1").await;
    let id = t.pay(&token, "66.04").await;
    let (s, o) = t.sign(&token, &[&id]).await;
    assert_eq!(s, StatusCode::OK, "{o}");
    assert_eq!(o["scaStatus"], "failed");
    assert_eq!(o["tppMessages"][0]["code"], "ALREADY_IN_PROGRESS");
    let (s, o) = t.sign(&token, &[&id]).await;
    assert_eq!(s, StatusCode::CREATED, "{o}");
    let ast = o["autoStartToken"].as_str().unwrap();
    t.admin(&format!("/admin/bankid/{ast}/approve")).await;
    t.advance(1);
    assert_eq!(t.tx_status(&token, &id).await, "ACSC");
}

#[tokio::test]
async fn scenario_66_05_is_rejected_after_acceptance() {
    let t = start().await;
    let token = t.token("s1").await;
    let (id, _, ast) = signed_order(&t, &token, "66.05").await;
    t.admin(&format!("/admin/bankid/{ast}/approve")).await;
    assert_eq!(t.tx_status(&token, &id).await, "ACTC");
    t.advance(1);
    assert_eq!(t.tx_status(&token, &id).await, "RJCT");
}

#[tokio::test]
async fn scenario_66_06_the_app_never_starts_and_the_order_fails_start_failed() {
    let t = start().await;
    let token = t.token("s1").await;
    let (id, aid, ast) = signed_order(&t, &token, "66.06").await;
    let r = reqwest::get(t.app(&format!("/test-bankid?autostarttoken={ast}&redirect=null")))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    t.advance(30);
    let (_, o) = t.signing(&token, &aid).await;
    assert_eq!(o["scaStatus"], "failed");
    assert_eq!(o["hintCode"], "startFailed");
    assert_eq!(t.tx_status(&token, &id).await, "RCVD");
}

#[tokio::test]
async fn scenario_66_07_makes_and_echoes_another_amount() {
    let t = start().await;
    let token = t.token("s1").await;
    let (s, v) = t.create(&token, SEK, &domestic("66.07")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["instructedAmount"],
        json!({"amount": 67.07, "currency": "SEK"})
    );
    let id = v["paymentId"].as_str().unwrap();
    let (s, d) = json_of(t.read_request(&token, id).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(
        d["instructedAmount"]["amount"],
        json!(67.07),
        "SEB keeps it so"
    );
}

#[tokio::test]
async fn scenario_66_08_a_delete_answers_202_and_cancels_nothing() {
    let t = start().await;
    let token = t.token("s1").await;
    let id = t.pay(&token, "66.08").await;
    let r = t
        .http
        .delete(t.api(&format!(
            "/tpp/pis/private/v1/identified2/payments/{SEK}/{id}"
        )))
        .bearer_auth(&token)
        .header("X-Request-ID", rid())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["transactionStatus"], "RCVD");
    assert_eq!(t.tx_status(&token, &id).await, "RCVD", "nothing cancelled");
}

#[tokio::test]
async fn an_identification_nobody_approves_fails_expired_transaction() {
    let t = start().await;
    let (_, v) = t.start_auth().await;
    let id = v["auth_req_id"].as_str().unwrap().to_owned();
    t.advance(30);
    let (_, p) = t.auth_progress(&id).await;
    assert_eq!(p["status"], "FAILED");
    assert_eq!(p["hint_code"], "expiredTransaction");
    let (s, _) = t.take_tokens(&id).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn admin_lists_scenarios_orders_payments_and_moves_a_payment() {
    let t = start().await;
    let token = t.token("s1").await;
    let id = t.pay(&token, "10.00").await;
    let scenarios: Value = reqwest::get(t.app("/admin/scenarios"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let amounts: Vec<&str> = scenarios
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["amount"].as_str())
        .collect();
    assert_eq!(
        amounts,
        [
            "66.01", "66.02", "66.03", "66.04", "66.05", "66.06", "66.07", "66.08"
        ]
    );
    let orders: Value = reqwest::get(t.app("/admin/orders"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(orders.as_array().unwrap().len(), 1, "the identification");
    let (s, p) = t.admin(&format!("/admin/payments/{id}/status/RJCT")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["transactionStatus"], "RJCT");
    assert_eq!(t.tx_status(&token, &id).await, "RJCT");
}

#[tokio::test]
async fn admin_puts_an_order_on_any_hint_code_and_a_failing_one_ends_it() {
    let t = start().await;
    let token = t.token("s1").await;
    let (_, aid, ast) = signed_order(&t, &token, "10.00").await;
    for code in ["noClient", "started", "userSign", "outstandingTransaction"] {
        let (s, _) = t.admin(&format!("/admin/bankid/{ast}/hint/{code}")).await;
        assert_eq!(s, StatusCode::OK);
        let (_, o) = t.signing(&token, &aid).await;
        assert_eq!(o["hintCode"], code);
        assert_eq!(o["scaStatus"], "started");
    }
    let (s, _) = t.admin(&format!("/admin/bankid/{ast}/hint/bogus")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = t
        .admin(&format!("/admin/bankid/{ast}/hint/certificateErr"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, o) = t.signing(&token, &aid).await;
    assert_eq!(o["hintCode"], "certificateErr");
    assert_eq!(o["scaStatus"], "failed");
}

#[tokio::test]
async fn a_signing_order_outliving_the_payments_time_to_sign_fails_seb_timeout() {
    let t = start_with(SebSandboxConfig {
        order_timeout: Duration::from_secs(600),
        signing_timeout: Duration::from_secs(60),
        ..SebSandboxConfig::default()
    })
    .await;
    let token = t.token("s1").await;
    let (id, aid, _) = signed_order(&t, &token, "10.00").await;
    t.advance(60);
    let (_, o) = t.signing(&token, &aid).await;
    assert_eq!(o["scaStatus"], "failed");
    assert_eq!(o["hintCode"], "sebTimeout");
    assert_eq!(t.tx_status(&token, &id).await, "RJCT");
}

#[tokio::test]
async fn a_later_token_of_the_same_shopper_reaches_the_payment_made_with_an_earlier_one() {
    let t = start().await;
    let first = t.token("19121212-1212").await;
    let id = t.pay(&first, "10.00").await;
    let second = t.token("19121212-1212").await;
    assert_ne!(first, second);
    assert_eq!(t.tx_status(&second, &id).await, "RCVD");
    let (s, o) = t.sign(&second, &[&id]).await;
    assert_eq!(s, StatusCode::CREATED, "{o}");
}

#[tokio::test]
async fn the_app_refuses_a_missing_or_unknown_autostart_token_and_an_unknown_grant_type() {
    let t = start().await;
    let r = reqwest::get(t.app("/test-bankid")).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = reqwest::get(t.app(&format!("/test-bankid?autostarttoken={}", rid())))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let secret = secrecy::ExposeSecret::expose_secret(t.sb.client_secret()).to_owned();
    let r = t
        .http
        .post(t.api("/auth/v4/tokens"))
        .json(&json!({"client_id": t.sb.client_id(), "client_secret": secret, "grant_type": "password", "redirect_uri": "https://tpp.example/cb"}))
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["type"]
            .as_str()
            .unwrap()
            .ends_with("/problems/unsupported-grant-type")
    );
    assert_eq!(
        t.refusal_rules().await,
        ["app-autostarttoken", "app-order-unknown", "grant-type"]
    );
}

#[tokio::test]
async fn write_pki_writes_the_ca_and_the_tpp_identity_with_a_private_key_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let t = start().await;
    let dir = tempfile::tempdir().unwrap();
    let files = t.sb.write_pki(dir.path()).unwrap();
    assert_eq!(std::fs::read_to_string(&files.ca).unwrap(), t.sb.pki.ca_pem);
    assert!(
        std::fs::read_to_string(&files.tpp_cert)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let mode = std::fs::metadata(&files.tpp_key)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn an_unknown_api_path_is_a_404_problem() {
    let t = start().await;
    let r = t
        .http
        .get(t.api("/tpp/pis/private/v2/payments"))
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["code"], "RESOURCE_UNKNOWN");
    assert_eq!(t.refusal_rules().await, ["unknown-path"]);
}

#[tokio::test]
async fn the_app_sends_the_browser_to_an_http_redirect_after_the_decision_and_stays_with_null() {
    let t = start().await;
    let token = t.token("s1").await;
    let (_, _, ast) = signed_order(&t, &token, "10.00").await;
    let page = reqwest::get(t.app(&format!(
        "/test-bankid?autostarttoken={ast}&redirect=https%3A%2F%2Fshop.example%2Fback"
    )))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(page.contains("https://shop.example/back"), "{page}");
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_follow
        .post(t.app("/test-bankid/approve"))
        .form(&[
            ("autostarttoken", ast.as_str()),
            ("redirect", "https://shop.example/back"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "https://shop.example/back");
    let (_, _, ast2) = signed_order(&t, &token, "11.00").await;
    let r = no_follow
        .post(t.app("/test-bankid/reject"))
        .form(&[("autostarttoken", ast2.as_str()), ("redirect", "null")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("Rejected"));
}

#[tokio::test]
async fn tokens_need_an_absolute_redirect_uri_and_a_registered_one_when_configured() {
    let t = start_with(SebSandboxConfig {
        redirect_uris: vec!["https://tpp.example/cb".into()],
        ..SebSandboxConfig::default()
    })
    .await;
    let (_, v) = t.start_auth().await;
    let id = v["auth_req_id"].as_str().unwrap().to_owned();
    let (_, p) = t.auth_progress(&id).await;
    t.sb.sim
        .approve(p["autostart_token"].as_str().unwrap(), None)
        .unwrap();
    let secret = secrecy::ExposeSecret::expose_secret(t.sb.client_secret()).to_owned();
    for uri in ["not a url", "https://elsewhere.example/cb"] {
        let r = t
            .http
            .post(t.api("/auth/v4/tokens"))
            .json(&json!({"client_id": t.sb.client_id(), "client_secret": secret, "auth_req_id": id, "redirect_uri": uri}))
            .send()
            .await
            .unwrap();
        let (s, v) = json_of(r).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(v["path"], "redirect_uri");
    }
    // The registered one works (and the refusals did not use the auth_req_id up).
    let (s, v) = t.take_tokens(&id).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn the_request_log_keeps_headers_with_the_bearer_masked() {
    let t = start().await;
    let token = t.token("s1").await;
    t.pay(&token, "10.00").await;
    let log: Value = reqwest::get(t.app("/admin/requests"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last = log.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["method"], "POST");
    assert_eq!(last["status"], 201);
    let headers = last["headers"].as_array().unwrap();
    let get = |name: &str| {
        headers
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_owned())
    };
    assert_eq!(get("authorization").as_deref(), Some("Bearer ***"));
    assert_eq!(get("psu-ip-address").as_deref(), Some(IP));
    assert!(!log.to_string().contains(&token), "the token never shows");
}

// --- injected faults (PUT /admin/faults) --------------------------------------------------

impl T {
    async fn put_faults(&self, rules: Value) {
        let r = reqwest::Client::new()
            .put(self.app("/admin/faults"))
            .json(&json!({ "rules": rules }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }

    async fn api_log(&self) -> Vec<Value> {
        self.admin_json("/admin/requests")
            .await
            .as_array()
            .unwrap()
            .clone()
    }
}

#[tokio::test]
async fn injected_faults_answer_before_the_bank_acts_or_lose_its_answer_after() {
    let t = start().await;
    let token = t.token("shopper-faults").await;
    let made = |t: &T| t.sb.sim.payments().len();

    // A 503 in SEB's own shape answers instead of the bank: nothing is made, and the rule's
    // `times` runs out after one call.
    t.put_faults(json!([{"operation": "initiate", "kind": "http503", "times": 1}]))
        .await;
    let (s, v) = t.create(&token, SEK, &domestic("10.00")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["code"], "SERVICE_UNAVAILABLE", "{v}");
    assert_eq!(made(&t), 0);
    let id = t.pay(&token, "10.00").await;
    assert_eq!(made(&t), 1);

    // A lost answer after the bank acted: the payment is made, the client hears nothing.
    t.put_faults(json!([{"operation": "initiate", "kind": "drop_after_processing"}]))
        .await;
    let lost = t
        .create_request(&token, SEK, &domestic("11.00"))
        .send()
        .await;
    assert!(lost.is_err(), "an answer came: {lost:?}");
    assert_eq!(made(&t), 2, "the bank acted before the answer was lost");

    // A connection dropped before the call: nothing runs. A garbled answer: the call ran.
    t.put_faults(json!([
        {"operation": "details", "kind": "drop_connection"},
        {"operation": "status", "kind": "malformed_json", "times": 1},
        {"operation": "authorise", "kind": "http429", "retry_after_secs": 7, "times": 1},
    ]))
    .await;
    let dropped = t.read_request(&token, &id).send().await;
    assert!(dropped.is_err(), "an answer came: {dropped:?}");
    let (s, garbled) = t.status(&token, &id).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(garbled, Value::Null, "the body should not parse");
    assert_eq!(t.tx_status(&token, &id).await, "RCVD");
    let r = t.sign_request(&token, &[&id]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "7");
    let (s, v) = json_of(r).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("TOO_MANY_REQUESTS"))
    );
    assert!(
        t.sb.sim.orders().iter().all(|o| o["purpose"] != "sign"),
        "no signing order"
    );
    let (s, v) = t.sign(&token, &[&id]).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // The request log names each fault (status 0: the connection closed before the call);
    // none of them is a refusal.
    let log = t.api_log().await;
    let faulted: Vec<(&str, u64)> = log
        .iter()
        .filter_map(|r| Some((r["fault"].as_str()?, r["status"].as_u64()?)))
        .collect();
    assert_eq!(
        faulted,
        [
            ("http503", 503),
            ("drop_after_processing", 201),
            ("drop_connection", 0),
            ("malformed_json", 200),
            ("http429", 429),
        ]
    );
    assert!(
        t.refusal_rules().await.is_empty(),
        "{:?}",
        t.refusal_rules().await
    );
    let v = t.admin_json("/admin/faults").await;
    assert_eq!(
        v["counters"]["initiate"],
        json!({"received": 3, "faulted": 2})
    );
    assert_eq!(
        v["counters"]["details"],
        json!({"received": 1, "faulted": 1})
    );
    assert_eq!(
        v["counters"]["status"],
        json!({"received": 2, "faulted": 1})
    );
    assert_eq!(v["rules"].as_array().unwrap().len(), 3);
}
