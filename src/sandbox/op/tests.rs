//! The OP simulator over real mutual TLS: one test per rule and per scenario.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde_json::{Value, json};

use super::*;

const REDIRECT: &str = "https://shop.example/v1/callbacks/oidc";

async fn sandbox() -> OpSandbox {
    let config = OpSandboxConfig::new(
        "op-client",
        "op-secret",
        "op-api-key",
        vec![REDIRECT.to_owned()],
    );
    spawn(config).await.expect("OP simulator")
}

/// A client for the plain-HTTP listener that does not follow redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn cc_token(sb: &OpSandbox) -> String {
    let resp = sb
        .tpp_client()
        .post(format!("{}/oauth/token", sb.api_url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "payments"),
            ("client_id", "op-client"),
            ("client_secret", "op-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    v["access_token"].as_str().unwrap().to_owned()
}

fn body(amount: &str) -> Value {
    json!({
        "amount": amount,
        "currency": "EUR",
        "creditor": {"name": "Shop Oy", "iban": "FI2112345600000785"},
        "reference": "RF18539007547034",
        "endToEndId": "pay_123",
    })
}

async fn post_payment(
    sb: &OpSandbox,
    token: &str,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut req = sb
        .tpp_client()
        .post(format!("{}/paymentsapi/v2/sepa-payments", sb.api_url))
        .bearer_auth(token)
        .header("x-api-key", "op-api-key")
        .header("x-fapi-interaction-id", uuid::Uuid::new_v4().to_string())
        .json(body);
    if let Some(k) = key {
        req = req.header("x-idempotency-key", k);
    }
    req.send().await.unwrap()
}

/// Verifies the answer's `x-jws-signature` against `/jwks/payments` and returns the body.
async fn signed_json(sb: &OpSandbox, resp: reqwest::Response) -> Value {
    let sig = resp
        .headers()
        .get("x-jws-signature")
        .expect("x-jws-signature on a 2xx answer")
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = resp.bytes().await.unwrap();
    let (h, rest) = sig.split_once("..").expect("detached JWS");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    let jwks: Value = browser()
        .get(sb.payments_jwks_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the kid is in /jwks/payments");
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let input = format!("{h}.{}", URL_SAFE_NO_PAD.encode(&bytes));
    assert!(
        jsonwebtoken::crypto::verify(rest, input.as_bytes(), &key, Algorithm::RS256).unwrap(),
        "x-jws-signature verifies over the body"
    );
    serde_json::from_slice(&bytes).unwrap()
}

async fn create(sb: &OpSandbox, amount: &str) -> (String, String) {
    let token = cc_token(sb).await;
    let key = uuid::Uuid::new_v4().to_string();
    let resp = post_payment(sb, &token, Some(&key), &body(amount)).await;
    assert_eq!(resp.status(), 201);
    let v = signed_json(sb, resp).await;
    assert_eq!(v["status"], "Unauthorized");
    (
        v["paymentId"].as_str().unwrap().to_owned(),
        v["authorizationId"].as_str().unwrap().to_owned(),
    )
}

fn claims(sb: &OpSandbox, authorization_id: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": "op-client", "aud": sb.audience(), "client_id": "op-client",
        "response_type": "code id_token", "redirect_uri": REDIRECT,
        "scope": "openid payments", "state": "state-abc", "nonce": "nonce-xyz",
        "max_age": 86400, "iat": now, "nbf": now, "exp": now + 600,
        "jti": uuid::Uuid::new_v4().to_string(),
        "claims": {
            "userinfo": {"authorizationId": {"value": authorization_id, "essential": true}},
            "id_token": {
                "authorizationId": {"value": authorization_id, "essential": true},
                "acr": {"essential": true, "values": ["urn:openbanking:psd2:sca"]}
            }
        }
    })
}

/// A compact JWS over `claims` with `header`, signed by `key_pem` (alg from the header;
/// `none` leaves the signature empty).
fn jws(header: &Value, claims: &Value, key_pem: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = match header["alg"].as_str().unwrap() {
        "RS256" => jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap(),
            Algorithm::RS256,
        )
        .unwrap(),
        "PS256" => jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap(),
            Algorithm::PS256,
        )
        .unwrap(),
        "HS256" => jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(b"op-secret").unwrap(),
            Algorithm::HS256,
        )
        .unwrap(),
        _ => String::new(),
    };
    format!("{input}.{sig}")
}

fn request_object(sb: &OpSandbox, claims: &Value) -> String {
    jws(
        &json!({"alg": "RS256", "typ": "JWT", "kid": sb.signing_key_id()}),
        claims,
        &sb.pki.tpp_key_pem,
    )
}

async fn open_page(sb: &OpSandbox, request: &str, query: &[(&str, &str)]) -> reqwest::Response {
    let mut q: Vec<(&str, &str)> = vec![
        ("request", request),
        ("response_type", "code id_token"),
        ("client_id", "op-client"),
        ("scope", "openid payments"),
    ];
    for (k, v) in query {
        q.retain(|(name, _)| name != k);
        q.push((k, v));
    }
    let mut url = url::Url::parse(&sb.authorize_url()).unwrap();
    url.query_pairs_mut().extend_pairs(q);
    browser().get(url).send().await.unwrap()
}

fn fragment(location: &str) -> std::collections::HashMap<String, String> {
    let (_, f) = location.split_once('#').expect("answer in the fragment");
    form_urlencoded::parse(f.as_bytes()).into_owned().collect()
}

/// Opens the page with a valid request object and presses a button (the HTML form).
async fn press(sb: &OpSandbox, authorization_id: &str, button: &str) -> String {
    let resp = open_page(sb, &request_object(sb, &claims(sb, authorization_id)), &[]).await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    let session = page
        .split("name=\"session\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the session field")
        .to_owned();
    let resp = browser()
        .post(format!("{}/oauth/authorize/decision", sb.app_url))
        .form(&[
            ("session", session.as_str()),
            ("authorization_id", authorization_id),
            ("decision", button),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    resp.headers()["location"].to_str().unwrap().to_owned()
}

async fn exchange(sb: &OpSandbox, code: &str) -> reqwest::Response {
    sb.tpp_client()
        .post(format!("{}/oauth/token", sb.api_url))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", "op-client"),
            ("client_secret", "op-secret"),
        ])
        .send()
        .await
        .unwrap()
}

/// Create, approve, exchange: (paymentId, authorization token, token answer).
async fn authorized(sb: &OpSandbox, amount: &str) -> (String, String, Value) {
    let (payment, authorization) = create(sb, amount).await;
    let location = press(sb, &authorization, "approve").await;
    let f = fragment(&location);
    let resp = exchange(sb, &f["code"]).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    (payment, v["access_token"].as_str().unwrap().to_owned(), v)
}

async fn submit(sb: &OpSandbox, payment: &str, token: &str, key: &str) -> reqwest::Response {
    sb.tpp_client()
        .post(format!(
            "{}/paymentsapi/v2/sepa-payments/{payment}/submissions",
            sb.api_url
        ))
        .bearer_auth(token)
        .header("x-api-key", "op-api-key")
        .header("x-idempotency-key", key)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
}

async fn read(sb: &OpSandbox, payment: &str) -> Value {
    let token = cc_token(sb).await;
    let resp = sb
        .tpp_client()
        .get(format!(
            "{}/paymentsapi/v2/sepa-payments/{payment}",
            sb.api_url
        ))
        .bearer_auth(token)
        .header("x-api-key", "op-api-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    signed_json(sb, resp).await
}

async fn code_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Verifies an ID token against `/oauth/jwks` (issuer, audience, signature) and returns its
/// claims.
async fn verified_id_token(sb: &OpSandbox, token: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let jwks: Value = browser()
        .get(sb.jwks_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
        .expect("the ID token's kid is in /oauth/jwks");
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&["op-client"]);
    v.set_issuer(&[sb.issuer()]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .expect("the ID token verifies against /oauth/jwks")
        .claims
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_in_the_handshake() {
    let sb = sandbox().await;
    let client = tls::client(&sb.pki, false).unwrap();
    let err = client
        .post(format!("{}/oauth/token", sb.api_url))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        sb.sim
            .refusals()
            .iter()
            .any(|r| r.check == "mtls-client-certificate")
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_in_the_handshake() {
    let sb = sandbox().await;
    let other = crate::sandbox::berlin_group::test_pki::generate("CN=Intruder,O=X,C=FI").unwrap();
    let pem = format!("{}\n{}", other.tpp_cert_pem, other.tpp_key_pem);
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(sb.pki.ca_pem.as_bytes()).unwrap()])
        .identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let result = client
        .post(format!("{}/oauth/token", sb.api_url))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await;
    assert!(result.is_err(), "{result:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refusals = sb.sim.refusals();
    assert!(
        refusals
            .iter()
            .any(|r| r.check == "mtls-client-certificate"),
        "{refusals:?}"
    );
}

#[tokio::test]
async fn a_certificate_of_the_ca_that_is_not_the_registered_clients_is_forbidden_client() {
    let sb = sandbox().await;
    let (cert, key) = sb
        .issue_client_certificate("CN=Another TPP,O=Other Oy,C=FI")
        .unwrap();
    let pem = format!("{cert}\n{key}");
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(sb.pki.ca_pem.as_bytes()).unwrap()])
        .identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let resp = client
        .post(format!("{}/oauth/token", sb.api_url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "payments"),
            ("client_id", "op-client"),
            ("client_secret", "op-secret"),
        ])
        .send()
        .await
        .unwrap();
    let (status, v) = code_of(resp).await;
    assert_eq!(status, 403);
    assert_eq!(v["code"], "FORBIDDEN_CLIENT");
    let resp = client
        .get(format!("{}/paymentsapi/v2/sepa-payments/x", sb.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(resp).await.1["code"], "FORBIDDEN_CLIENT");
}

#[tokio::test]
async fn the_token_endpoint_checks_the_client_secret_grant_and_scope() {
    let sb = sandbox().await;
    let post = |form: Vec<(&'static str, &'static str)>| {
        sb.tpp_client()
            .post(format!("{}/oauth/token", sb.api_url))
            .form(&form)
            .send()
    };
    let (s, v) = code_of(
        post(vec![
            ("grant_type", "client_credentials"),
            ("scope", "payments"),
            ("client_id", "op-client"),
            ("client_secret", "wrong"),
        ])
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    let (s, v) = code_of(
        post(vec![
            ("grant_type", "client_credentials"),
            ("scope", "payments"),
            ("client_id", "someone-else"),
            ("client_secret", "op-secret"),
        ])
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    let (s, v) = code_of(
        post(vec![
            ("grant_type", "client_credentials"),
            ("scope", "accounts"),
            ("client_id", "op-client"),
            ("client_secret", "op-secret"),
        ])
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_scope")));
    let (s, v) = code_of(
        post(vec![
            ("grant_type", "password"),
            ("client_id", "op-client"),
            ("client_secret", "op-secret"),
        ])
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    assert!(!cc_token(&sb).await.is_empty());
}

#[tokio::test]
async fn business_calls_need_the_api_key_a_live_bearer_and_an_idempotency_key() {
    let sb = sandbox().await;
    let token = cc_token(&sb).await;
    let resp = sb
        .tpp_client()
        .post(format!("{}/paymentsapi/v2/sepa-payments", sb.api_url))
        .bearer_auth(&token)
        .header("x-idempotency-key", "k1")
        .json(&body("10.00"))
        .send()
        .await
        .unwrap();
    let (s, v) = code_of(resp).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("UNAUTHORIZED")));
    assert!(v["message"].as_str().unwrap().contains("x-api-key"));
    let resp = post_payment(&sb, "not-a-token", Some("k1"), &body("10.00")).await;
    let (s, v) = code_of(resp).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("UNAUTHORIZED")));
    let resp = post_payment(&sb, &token, None, &body("10.00")).await;
    let (s, v) = code_of(resp).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("MISSING_IDEMPOTENCY_KEY"))
    );
    // An expired token.
    sb.sim.advance_clock(Duration::from_secs(3601));
    let resp = post_payment(&sb, &token, Some("k2"), &body("10.00")).await;
    let (s, v) = code_of(resp).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("UNAUTHORIZED")));
    assert!(v["message"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn the_creation_body_is_strict_and_every_refusal_names_the_field() {
    let sb = sandbox().await;
    let token = cc_token(&sb).await;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = body("10.00");
        f(&mut b);
        b
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (with(&|b| b["extra"] = json!(1)), "INVALID_REQUEST", "extra"),
        (
            with(&|b| b["creditor"]["bic"] = json!("OKOYFIHH")),
            "INVALID_REQUEST",
            "creditor.bic",
        ),
        (
            with(&|b| b["amount"] = json!(10.0)),
            "INVALID_AMOUNT",
            "amount",
        ),
        (
            with(&|b| b["amount"] = json!("10.0")),
            "INVALID_AMOUNT",
            "amount",
        ),
        (
            with(&|b| b["amount"] = json!("10")),
            "INVALID_AMOUNT",
            "amount",
        ),
        (
            with(&|b| b["amount"] = json!("0.00")),
            "INVALID_AMOUNT",
            "amount",
        ),
        (
            with(&|b| b["amount"] = json!("-1.00")),
            "INVALID_AMOUNT",
            "amount",
        ),
        (
            with(&|b| b["currency"] = json!("SEK")),
            "UNSUPPORTED_CURRENCY",
            "currency",
        ),
        (
            with(&|b| b["creditor"]["iban"] = json!("FI2112345600000786")),
            "INVALID_IBAN",
            "creditor.iban",
        ),
        (
            with(&|b| b["debtor"] = json!({"iban": "FI00"})),
            "INVALID_IBAN",
            "debtor.iban",
        ),
        (
            with(&|b| b["creditor"]["name"] = json!("x".repeat(71))),
            "INVALID_REQUEST",
            "creditor.name",
        ),
        (
            with(&|b| b["message"] = json!("hello")),
            "INVALID_REQUEST",
            "reference",
        ),
        (
            with(&|b| b["reference"] = json!("1233")),
            "INVALID_REQUEST",
            "reference",
        ),
        (
            with(&|b| b["reference"] = json!("RF19539007547034")),
            "INVALID_REQUEST",
            "reference",
        ),
        (
            with(&|b| {
                b.as_object_mut().unwrap().remove("reference");
                b["message"] = json!("m".repeat(141));
            }),
            "INVALID_REQUEST",
            "message",
        ),
        (
            with(&|b| {
                b.as_object_mut().unwrap().remove("creditor");
            }),
            "INVALID_REQUEST",
            "creditor",
        ),
    ];
    for (i, (b, code, field)) in cases.iter().enumerate() {
        let resp = post_payment(&sb, &token, Some(&format!("bad-{i}")), b).await;
        assert!(resp.headers().get("x-jws-signature").is_none());
        let (s, v) = code_of(resp).await;
        assert_eq!((s, v["code"].as_str()), (400, Some(*code)), "case {i}: {v}");
        let message = v["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{field}:")),
            "case {i}: {message}"
        );
    }
    // The valid forms: a Finnish reference, a message, a debtor.
    for (i, b) in [
        with(&|b| b["reference"] = json!("12345672")),
        with(&|b| {
            b.as_object_mut().unwrap().remove("reference");
            b["message"] = json!("Order 1234");
            b["debtor"] = json!({"iban": "FI2112345600000785"});
        }),
    ]
    .iter()
    .enumerate()
    {
        let resp = post_payment(&sb, &token, Some(&format!("good-{i}")), b).await;
        assert_eq!(resp.status(), 201, "{i}");
    }
}

#[tokio::test]
async fn creation_is_idempotent_per_key_and_a_key_cannot_be_reused_for_another_body() {
    let sb = sandbox().await;
    let token = cc_token(&sb).await;
    let first = signed_json(
        &sb,
        post_payment(&sb, &token, Some("k"), &body("10.00")).await,
    )
    .await;
    let again = post_payment(&sb, &token, Some("k"), &body("10.00")).await;
    assert_eq!(again.status(), 201);
    let again = signed_json(&sb, again).await;
    assert_eq!(first, again);
    assert_eq!(sb.sim.payments().len(), 1);
    let (s, v) = code_of(post_payment(&sb, &token, Some("k"), &body("11.00")).await).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("IDEMPOTENCY_KEY_REUSED"))
    );
}

#[tokio::test]
async fn the_whole_happy_path_ends_debited_with_verified_id_tokens_and_signed_answers() {
    let sb = sandbox().await;
    let (payment, authorization) = create(&sb, "12.34").await;
    // The page shows the amount and the creditor, and moves the payment to Authorizing.
    let resp = open_page(&sb, &request_object(&sb, &claims(&sb, &authorization)), &[]).await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("12.34 EUR") && page.contains("Shop Oy"),
        "{page}"
    );
    assert!(page.contains("Approve") && page.contains("Reject"));
    assert!(!page.contains("<script"));
    assert_eq!(read(&sb, &payment).await["status"], "Authorizing");
    let location = press(&sb, &authorization, "approve").await;
    assert!(location.starts_with(&format!("{REDIRECT}#")), "{location}");
    let f = fragment(&location);
    assert_eq!(f["state"], "state-abc");
    let front = verified_id_token(&sb, &f["id_token"]).await;
    assert_eq!(front["nonce"], "nonce-xyz");
    assert_eq!(front["authorizationId"], authorization.as_str());
    assert_eq!(front["acr"], "urn:openbanking:psd2:sca");
    assert_eq!(front["sub"], app::SANDBOX_SUB);
    assert_eq!(front["c_hash"], keys::half_hash(&f["code"]).as_str());
    assert_eq!(front["s_hash"], keys::half_hash("state-abc").as_str());
    assert_eq!(read(&sb, &payment).await["status"], "Authorized");

    let resp = exchange(&sb, &f["code"]).await;
    assert_eq!(resp.status(), 200);
    let tokens: Value = resp.json().await.unwrap();
    assert_eq!(tokens["scope"], "openid payments");
    assert_eq!(tokens["expires_in"], 600);
    let back = verified_id_token(&sb, tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(back["nonce"], "nonce-xyz");
    assert_eq!(back["authorizationId"], authorization.as_str());
    let token = tokens["access_token"].as_str().unwrap();

    let resp = submit(&sb, &payment, token, "s1").await;
    assert_eq!(resp.status(), 201);
    let v = signed_json(&sb, resp).await;
    assert_eq!(v["status"], "Debited");
    assert_eq!(read(&sb, &payment).await["status"], "Debited");
    let admin: Value = browser()
        .get(format!("{}/admin/payments/{payment}", sb.app_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(admin["status"], "Debited");
    assert_eq!(admin["submissions"], 1);
    assert_eq!(admin["submission_keys"], json!(["s1"]));
    assert_eq!(admin["authorizationId"], authorization.as_str());
}

#[tokio::test]
async fn a_ps256_request_object_is_accepted() {
    let sb = sandbox().await;
    let (_, authorization) = create(&sb, "10.00").await;
    let ro = jws(
        &json!({"alg": "PS256", "typ": "JWT", "kid": sb.signing_key_id()}),
        &claims(&sb, &authorization),
        &sb.pki.tpp_key_pem,
    );
    assert_eq!(open_page(&sb, &ro, &[]).await.status(), 200);
}

#[tokio::test]
async fn bad_request_objects_get_a_400_page_naming_the_check_and_are_recorded() {
    let sb = sandbox().await;
    let (_, authorization) = create(&sb, "10.00").await;
    let other_key = {
        use rsa::pkcs8::EncodePrivateKey as _;
        rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
            .unwrap()
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string()
    };
    let good_header = json!({"alg": "RS256", "typ": "JWT", "kid": sb.signing_key_id()});
    let key = sb.pki.tpp_key_pem.clone();
    let c = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(&sb, &authorization);
        f(&mut c);
        c
    };
    let now = chrono::Utc::now().timestamp();
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            "request-object-alg",
            jws(
                &json!({"alg": "none", "typ": "JWT", "kid": sb.signing_key_id()}),
                &c(&|_| {}),
                &key,
            ),
            vec![],
        ),
        (
            "request-object-alg",
            jws(
                &json!({"alg": "HS256", "typ": "JWT", "kid": sb.signing_key_id()}),
                &c(&|_| {}),
                &key,
            ),
            vec![],
        ),
        (
            "request-object-signature",
            jws(&good_header, &c(&|_| {}), &other_key),
            vec![],
        ),
        (
            "request-object-kid",
            jws(
                &json!({"alg": "RS256", "typ": "JWT", "kid": "other-kid"}),
                &c(&|_| {}),
                &key,
            ),
            vec![],
        ),
        (
            "request-object-aud",
            jws(
                &good_header,
                &c(&|c| c["aud"] = json!("https://other.example")),
                &key,
            ),
            vec![],
        ),
        (
            "request-object-exp",
            jws(
                &good_header,
                &c(&|c| {
                    c["iat"] = json!(now - 700);
                    c["nbf"] = json!(now - 700);
                    c["exp"] = json!(now - 100);
                }),
                &key,
            ),
            vec![],
        ),
        (
            "request-object-lifetime",
            jws(&good_header, &c(&|c| c["exp"] = json!(now + 3700)), &key),
            vec![],
        ),
        (
            "request-object-nbf",
            jws(&good_header, &c(&|c| c["nbf"] = json!(now + 120)), &key),
            vec![],
        ),
        (
            "request-object-iss",
            jws(&good_header, &c(&|c| c["iss"] = json!("someone")), &key),
            vec![],
        ),
        (
            "redirect-uri",
            jws(
                &good_header,
                &c(&|c| c["redirect_uri"] = json!("https://evil.example/cb")),
                &key,
            ),
            vec![],
        ),
        (
            "query-matches-request-object",
            jws(&good_header, &c(&|_| {}), &key),
            vec![("scope", "openid")],
        ),
        (
            "client-id",
            jws(
                &good_header,
                &c(&|c| c["client_id"] = json!("someone")),
                &key,
            ),
            vec![("client_id", "someone")],
        ),
        (
            "response-type",
            jws(
                &good_header,
                &c(&|c| c["response_type"] = json!("code")),
                &key,
            ),
            vec![("response_type", "code")],
        ),
        (
            "scope",
            jws(&good_header, &c(&|c| c["scope"] = json!("openid")), &key),
            vec![("scope", "openid")],
        ),
        (
            "nonce",
            jws(
                &good_header,
                &c(&|c| {
                    c.as_object_mut().unwrap().remove("nonce");
                }),
                &key,
            ),
            vec![],
        ),
        (
            "state",
            jws(
                &good_header,
                &c(&|c| {
                    c.as_object_mut().unwrap().remove("state");
                }),
                &key,
            ),
            vec![],
        ),
        (
            "authorization-id",
            jws(
                &good_header,
                &c(&|c| {
                    c["claims"]["id_token"]["authorizationId"]["value"] = json!("unknown");
                }),
                &key,
            ),
            vec![],
        ),
        (
            "acr",
            jws(
                &good_header,
                &c(&|c| {
                    c["claims"]["id_token"]["acr"] =
                        json!({"essential": false, "values": ["urn:openbanking:psd2:sca"]});
                }),
                &key,
            ),
            vec![],
        ),
        ("request-object-format", "not-a-jwt".to_owned(), vec![]),
    ];
    for (check, request, query) in &cases {
        sb.sim.clear_refusals();
        let resp = open_page(&sb, request, query).await;
        assert_eq!(resp.status(), 400, "{check}");
        let page = resp.text().await.unwrap();
        assert!(
            page.contains(&format!("<span id=\"check\">{check}</span>")),
            "{check}: {page}"
        );
        let refusals = sb.sim.refusals();
        assert_eq!(refusals.len(), 1, "{check}");
        assert_eq!(refusals[0].check, *check);
        assert_eq!(refusals[0].listener, "app");
        assert_eq!(refusals[0].path, "/oauth/authorize");
    }
    // None of them moved the payment.
    assert_eq!(sb.sim.payments()[0]["status"], "Unauthorized");
}

#[tokio::test]
async fn a_reused_code_is_refused_and_the_tokens_issued_for_it_are_revoked() {
    let sb = sandbox().await;
    let (payment, authorization) = create(&sb, "10.00").await;
    let f = fragment(&press(&sb, &authorization, "approve").await);
    let first: Value = exchange(&sb, &f["code"]).await.json().await.unwrap();
    let (s, v) = code_of(exchange(&sb, &f["code"]).await).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    // The access token and the refresh token of the first exchange are dead.
    let (s, v) =
        code_of(submit(&sb, &payment, first["access_token"].as_str().unwrap(), "s").await).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("UNAUTHORIZED")));
    let resp = sb
        .tpp_client()
        .post(format!("{}/oauth/token", sb.api_url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", first["refresh_token"].as_str().unwrap()),
            ("client_id", "op-client"),
            ("client_secret", "op-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(resp).await.1["error"], "invalid_grant");
    assert!(sb.sim.refusals().iter().any(|r| r.check == "code-reused"));
}

#[tokio::test]
async fn a_code_lives_60_seconds_and_must_come_with_its_redirect_uri() {
    let sb = sandbox().await;
    let (_, authorization) = create(&sb, "10.00").await;
    let f = fragment(&press(&sb, &authorization, "approve").await);
    sb.sim.advance_clock(Duration::from_secs(61));
    let (s, v) = code_of(exchange(&sb, &f["code"]).await).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    assert!(v["error_description"].as_str().unwrap().contains("expired"));

    let (_, authorization) = create(&sb, "10.00").await;
    let f = fragment(&press(&sb, &authorization, "approve").await);
    let resp = sb
        .tpp_client()
        .post(format!("{}/oauth/token", sb.api_url))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", f["code"].as_str()),
            ("redirect_uri", "https://shop.example/other"),
            ("client_id", "op-client"),
            ("client_secret", "op-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(resp).await.1["error"], "invalid_grant");
}

#[tokio::test]
async fn a_refresh_rotates_the_refresh_token_and_the_old_one_dies() {
    let sb = sandbox().await;
    let (payment, _, tokens) = authorized(&sb, "10.00").await;
    let refresh = |rt: String| {
        sb.tpp_client()
            .post(format!("{}/oauth/token", sb.api_url))
            .form(&[
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", rt),
                ("client_id", "op-client".to_owned()),
                ("client_secret", "op-secret".to_owned()),
            ])
            .send()
    };
    let old = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (s, new) = code_of(refresh(old.clone()).await.unwrap()).await;
    assert_eq!(s, 200);
    assert_ne!(new["refresh_token"].as_str().unwrap(), old);
    verified_id_token(&sb, new["id_token"].as_str().unwrap()).await;
    let (s, v) = code_of(refresh(old).await.unwrap()).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    // The refreshed token can submit.
    let resp = submit(&sb, &payment, new["access_token"].as_str().unwrap(), "s").await;
    assert_eq!(resp.status(), 201);
}

#[tokio::test]
async fn a_submission_before_authorization_is_refused() {
    let sb = sandbox().await;
    let (_, _, tokens) = authorized(&sb, "10.00").await;
    let (other, _) = create(&sb, "10.00").await;
    let (s, v) =
        code_of(submit(&sb, &other, tokens["access_token"].as_str().unwrap(), "s").await).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("PAYMENT_NOT_AUTHORIZED"))
    );
    let cc = cc_token(&sb).await;
    let (s, v) = code_of(submit(&sb, &other, &cc, "s").await).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("PAYMENT_NOT_AUTHORIZED"))
    );
    assert_eq!(sb.sim.payment(&other).unwrap()["submissions"], 0);
}

#[tokio::test]
async fn a_submission_needs_the_token_of_the_payments_own_authorization() {
    let sb = sandbox().await;
    let (a, token_a, _) = authorized(&sb, "10.00").await;
    let (b, _, _) = authorized(&sb, "10.00").await;
    let (s, v) = code_of(submit(&sb, &b, &token_a, "s").await).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (403, Some("TOKEN_NOT_FOR_PAYMENT"))
    );
    let cc = cc_token(&sb).await;
    let (s, v) = code_of(submit(&sb, &a, &cc, "s").await).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (403, Some("TOKEN_NOT_FOR_PAYMENT"))
    );
    assert_eq!(sb.sim.payment(&b).unwrap()["submissions"], 0);
    // Without a key.
    let resp = sb
        .tpp_client()
        .post(format!(
            "{}/paymentsapi/v2/sepa-payments/{a}/submissions",
            sb.api_url
        ))
        .bearer_auth(&token_a)
        .header("x-api-key", "op-api-key")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(resp).await.1["code"], "MISSING_IDEMPOTENCY_KEY");
    // With a body that is not {}.
    let resp = sb
        .tpp_client()
        .post(format!(
            "{}/paymentsapi/v2/sepa-payments/{a}/submissions",
            sb.api_url
        ))
        .bearer_auth(&token_a)
        .header("x-api-key", "op-api-key")
        .header("x-idempotency-key", "s")
        .json(&json!({"amount": "1.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(resp).await.1["code"], "INVALID_REQUEST");
}

#[tokio::test]
async fn a_submission_is_idempotent_per_key_and_a_new_key_after_debited_is_already_submitted() {
    let sb = sandbox().await;
    let (payment, token, _) = authorized(&sb, "10.00").await;
    let first = signed_json(&sb, submit(&sb, &payment, &token, "s1").await).await;
    let again = submit(&sb, &payment, &token, "s1").await;
    assert_eq!(again.status(), 201);
    assert_eq!(signed_json(&sb, again).await, first);
    assert_eq!(sb.sim.payment(&payment).unwrap()["submissions"], 1);
    let (s, v) = code_of(submit(&sb, &payment, &token, "s2").await).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("ALREADY_SUBMITTED")));
    assert_eq!(sb.sim.payment(&payment).unwrap()["submissions"], 1);
}

#[tokio::test]
async fn the_shopper_rejecting_answers_access_denied_in_the_fragment_and_nothing_can_be_submitted()
{
    let sb = sandbox().await;
    let (payment, authorization) = create(&sb, "10.00").await;
    let f = fragment(&press(&sb, &authorization, "reject").await);
    assert_eq!(f["error"], "access_denied");
    assert_eq!(f["state"], "state-abc");
    assert!(!f.contains_key("code"));
    assert_eq!(read(&sb, &payment).await["status"], "Rejected");
    // The page cannot be opened again.
    let resp = open_page(&sb, &request_object(&sb, &claims(&sb, &authorization)), &[]).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("payment-status"));
}

/// 77.06: OP makes the payment with 1.00 EUR more than it was sent, and its answer (and
/// every read) echoes that amount; a replay of the creation answers the same.
#[tokio::test]
async fn scenario_77_06_makes_and_echoes_another_amount() {
    let sb = sandbox().await;
    let token = cc_token(&sb).await;
    let key = uuid::Uuid::new_v4().to_string();
    let resp = post_payment(&sb, &token, Some(&key), &body("77.06")).await;
    assert_eq!(resp.status(), 201);
    let v = signed_json(&sb, resp).await;
    assert_eq!(v["amount"], "78.06", "{v}");
    let id = v["paymentId"].as_str().unwrap().to_owned();
    assert_eq!(read(&sb, &id).await["amount"], "78.06");
    assert_eq!(sb.sim.payment(&id).unwrap()["amount"], "78.06");
    let replay = post_payment(&sb, &token, Some(&key), &body("77.06")).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(signed_json(&sb, replay).await["amount"], "78.06");
}

#[tokio::test]
async fn revoke_is_allowed_only_before_authorization() {
    let sb = sandbox().await;
    let cc = cc_token(&sb).await;
    let delete = |id: String| {
        sb.tpp_client()
            .delete(format!("{}/paymentsapi/v2/sepa-payments/{id}", sb.api_url))
            .bearer_auth(&cc)
            .header("x-api-key", "op-api-key")
            .send()
    };
    // 77.05: abandoned, never opened; the horizon revokes it.
    let (abandoned, _) = create(&sb, "77.05").await;
    let resp = delete(abandoned.clone()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(signed_json(&sb, resp).await["status"], "Revoked");
    assert_eq!(read(&sb, &abandoned).await["status"], "Revoked");
    // Authorizing (page opened) can be revoked too.
    let (opened, authorization) = create(&sb, "10.00").await;
    open_page(&sb, &request_object(&sb, &claims(&sb, &authorization)), &[]).await;
    assert_eq!(delete(opened).await.unwrap().status(), 200);
    // Authorized cannot.
    let (payment, token, _) = authorized(&sb, "10.00").await;
    let (s, v) = code_of(delete(payment.clone()).await.unwrap()).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("REVOKE_NOT_ALLOWED")));
    assert_eq!(submit(&sb, &payment, &token, "s").await.status(), 201);
    let (s, v) = code_of(delete("nope".into()).await.unwrap()).await;
    assert_eq!((s, v["code"].as_str()), (404, Some("PAYMENT_NOT_FOUND")));
}

#[tokio::test]
async fn scenario_77_01_submission_pending_then_debited_with_a_new_key() {
    let sb = sandbox().await;
    let (payment, token, _) = authorized(&sb, "77.01").await;
    let v = signed_json(&sb, submit(&sb, &payment, &token, "s1").await).await;
    assert_eq!(v["status"], "SubmissionPending");
    assert_eq!(read(&sb, &payment).await["status"], "SubmissionPending");
    let v = signed_json(&sb, submit(&sb, &payment, &token, "s1").await).await;
    assert_eq!(
        v["status"], "SubmissionPending",
        "a replay answers the recorded result"
    );
    let v = signed_json(&sb, submit(&sb, &payment, &token, "s2").await).await;
    assert_eq!(v["status"], "Debited");
    let admin = sb.sim.payment(&payment).unwrap();
    assert_eq!(admin["submissions"], 2);
    assert_eq!(admin["submission_keys"], json!(["s1", "s2"]));
}

#[tokio::test]
async fn scenario_77_02_rejected_at_submission() {
    let sb = sandbox().await;
    let (payment, token, _) = authorized(&sb, "77.02").await;
    let v = signed_json(&sb, submit(&sb, &payment, &token, "s1").await).await;
    assert_eq!(v["status"], "Rejected");
    assert_eq!(read(&sb, &payment).await["status"], "Rejected");
    let (s, v) = code_of(submit(&sb, &payment, &token, "s2").await).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("ALREADY_SUBMITTED")));
}

#[tokio::test]
async fn scenario_77_03_accepted_then_debited_two_seconds_later() {
    let sb = sandbox().await;
    let (payment, token, _) = authorized(&sb, "77.03").await;
    let v = signed_json(&sb, submit(&sb, &payment, &token, "s1").await).await;
    assert_eq!(v["status"], "Accepted");
    assert_eq!(read(&sb, &payment).await["status"], "Accepted");
    sb.sim.advance_clock(Duration::from_secs(2));
    assert_eq!(read(&sb, &payment).await["status"], "Debited");
    let (s, _) = code_of(submit(&sb, &payment, &token, "s2").await).await;
    assert_eq!(s, 409);
}

#[tokio::test]
async fn scenario_77_04_the_first_answer_is_lost_after_the_submission_and_a_replay_answers_it() {
    let sb = sandbox().await;
    let (payment, token, _) = authorized(&sb, "77.04").await;
    let err = sb
        .tpp_client()
        .post(format!(
            "{}/paymentsapi/v2/sepa-payments/{payment}/submissions",
            sb.api_url
        ))
        .bearer_auth(&token)
        .header("x-api-key", "op-api-key")
        .header("x-idempotency-key", "s1")
        .json(&json!({}))
        .send()
        .await
        .expect_err("the connection is dropped without an answer");
    assert!(!err.is_status(), "{err:?}");
    let admin = sb.sim.payment(&payment).unwrap();
    assert_eq!(
        admin["status"], "Debited",
        "performed before the answer was lost"
    );
    assert_eq!(admin["submissions"], 1);
    let v = signed_json(&sb, submit(&sb, &payment, &token, "s1").await).await;
    assert_eq!(v["status"], "Debited");
    assert_eq!(sb.sim.payment(&payment).unwrap()["submissions"], 1);
}

#[tokio::test]
async fn a_held_submission_is_performed_once_released_even_if_the_client_went_away() {
    let sb = sandbox().await;
    let (payment, token, _) = authorized(&sb, "10.00").await;
    let resp = browser()
        .post(format!("{}/admin/hold-submissions", sb.app_url))
        .json(&json!({"hold": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["hold"], true);
    let gone = tokio::time::timeout(
        Duration::from_millis(500),
        submit(&sb, &payment, &token, "s1"),
    )
    .await;
    assert!(gone.is_err(), "the held submission does not answer");
    assert_eq!(sb.sim.payment(&payment).unwrap()["submissions"], 0);
    browser()
        .post(format!("{}/admin/hold-submissions", sb.app_url))
        .json(&json!({"hold": false}))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let admin = sb.sim.payment(&payment).unwrap();
    assert_eq!(admin["submissions"], 1);
    assert_eq!(admin["status"], "Debited");
}

#[tokio::test]
async fn the_admin_buttons_answer_the_location_and_need_an_opened_page() {
    let sb = sandbox().await;
    let (payment, authorization) = create(&sb, "10.00").await;
    let url = format!("{}/admin/approve/{authorization}", sb.app_url);
    let resp = browser().post(&url).send().await.unwrap();
    assert_eq!(resp.status(), 409);
    open_page(&sb, &request_object(&sb, &claims(&sb, &authorization)), &[]).await;
    let v: Value = browser()
        .post(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let f = fragment(v["location"].as_str().unwrap());
    assert!(f.contains_key("code") && f.contains_key("id_token"));
    assert_eq!(sb.sim.payment(&payment).unwrap()["status"], "Authorized");
    // Answered once.
    assert_eq!(browser().post(&url).send().await.unwrap().status(), 409);
}

#[tokio::test]
async fn discovery_and_jwks_describe_the_simulator() {
    let sb = sandbox().await;
    let d: Value = browser()
        .get(format!("{}/.well-known/openid-configuration", sb.app_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], sb.issuer());
    assert_eq!(sb.issuer(), sb.app_url);
    assert_eq!(sb.audience(), sb.api_url);
    assert_eq!(d["jwks_uri"], sb.jwks_url());
    assert_eq!(d["authorization_endpoint"], sb.authorize_url());
    assert_eq!(d["token_endpoint"], format!("{}/oauth/token", sb.api_url));
    let ids: Value = browser()
        .get(sb.jwks_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answers: Value = browser()
        .get(sb.payments_jwks_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(ids["keys"][0]["kid"], answers["keys"][0]["kid"]);
    assert_ne!(ids["keys"][0]["n"], answers["keys"][0]["n"]);
}

#[tokio::test]
async fn redirect_uris_can_be_registered_after_the_start() {
    let sb = sandbox().await;
    let (_, authorization) = create(&sb, "10.00").await;
    let late = "http://127.0.0.1:45678/v1/callbacks/oidc";
    let mut c = claims(&sb, &authorization);
    c["redirect_uri"] = json!(late);
    let resp = open_page(&sb, &request_object(&sb, &c), &[]).await;
    assert_eq!(resp.status(), 400);
    sb.sim.register_redirect_uri(late);
    assert_eq!(
        open_page(&sb, &request_object(&sb, &c), &[]).await.status(),
        200
    );
    let resp = browser()
        .put(format!("{}/admin/redirect-uris", sb.app_url))
        .json(&json!({"uris": ["not a url"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = browser()
        .put(format!("{}/admin/redirect-uris", sb.app_url))
        .json(&json!({"uris": [REDIRECT]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sb.sim.redirect_uris(), [REDIRECT]);
}

#[tokio::test]
async fn a_revoked_refresh_token_cannot_refresh_and_the_interaction_id_is_echoed() {
    let sb = sandbox().await;
    let (payment, _, tokens) = authorized(&sb, "10.00").await;
    let rt = tokens["refresh_token"].as_str().unwrap();
    let resp = sb
        .tpp_client()
        .post(format!("{}/oauth/revoke", sb.api_url))
        .form(&[
            ("token", rt),
            ("client_id", "op-client"),
            ("client_secret", "op-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = sb
        .tpp_client()
        .post(format!("{}/oauth/token", sb.api_url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", "op-client"),
            ("client_secret", "op-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(resp).await.1["error"], "invalid_grant");
    let cc = cc_token(&sb).await;
    let resp = sb
        .tpp_client()
        .get(format!(
            "{}/paymentsapi/v2/sepa-payments/{payment}",
            sb.api_url
        ))
        .bearer_auth(&cc)
        .header("x-api-key", "op-api-key")
        .header(
            "x-fapi-interaction-id",
            "3f1c1a52-1111-4222-8333-944444444444",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["x-fapi-interaction-id"],
        "3f1c1a52-1111-4222-8333-944444444444"
    );
}

#[test]
fn a_bad_signing_certificate_or_key_file_is_refused_naming_the_setting() {
    let config = OpSandboxConfig {
        tpp_signing_certificate_pem: "not a pem".into(),
        ..OpSandboxConfig::default()
    };
    let err = OpSim::new(config, "https://127.0.0.1:1", "http://127.0.0.1:2")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tpp_signing_certificate_file"), "{err}");
    let pki = crate::sandbox::berlin_group::test_pki::generate("CN=T,O=T,C=FI").unwrap();
    let config = OpSandboxConfig {
        tpp_signing_certificate_pem: pki.tpp_cert_pem.clone(),
        id_token_key_pem: Some("garbage".into()),
        ..OpSandboxConfig::default()
    };
    let err = OpSim::new(config, "https://127.0.0.1:1", "http://127.0.0.1:2")
        .unwrap_err()
        .to_string();
    assert!(err.contains("id_token_key_file"), "{err}");
    // A key file is used as given: its public half is in the JWKS.
    let config = OpSandboxConfig {
        tpp_signing_certificate_pem: pki.tpp_cert_pem.clone(),
        answer_key_pem: Some(pki.tpp_key_pem.clone()),
        ..OpSandboxConfig::default()
    };
    let sim = OpSim::new(config, "https://127.0.0.1:1", "http://127.0.0.1:2").unwrap();
    let (key, _) = keys::certificate_rsa_key(&pki.tpp_cert_pem).unwrap();
    let sig = sim.answer_key.detached(b"{}");
    let (h, s) = sig.split_once("..").unwrap();
    let input = format!("{h}.{}", URL_SAFE_NO_PAD.encode(b"{}"));
    assert!(keys::verify_rsa("RS256", &input, s, &key));
    assert_eq!(sim.issuer(), "http://127.0.0.1:2");
    assert_eq!(sim.audience(), "https://127.0.0.1:1");
}
