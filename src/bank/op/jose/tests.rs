//! The JOSE checks with real RSA keys (the repository's test fixtures) and a JWKS served
//! by a local mock: every refusal of an ID token names its claim; detached answer
//! signatures verify only over the exact body.

use super::*;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// OP's ID-token key (kid `op-1`) in these tests.
pub(crate) const OP_KEY: &str = include_str!("../../../../tests/fixtures/nordea/kat-private.pem");
/// Another key: pisgate's QSealC key in these tests, and a forger's.
pub(crate) const OTHER_KEY: &str =
    include_str!("../../../../tests/fixtures/nordea/unregistered-private.pem");
pub(crate) const KID: &str = "op-1";
pub(crate) const ISSUER: &str = "https://authorize.psd2-sandbox.op.fi";
pub(crate) const CLIENT: &str = "pisgate-client";

fn rsa_of(pem: &str) -> rsa::RsaPrivateKey {
    rsa::RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
        .unwrap()
}

/// The JWKS of `pem`'s public key under `kid`.
pub(crate) fn jwks_of(pem: &str, kid: &str) -> Value {
    let key = rsa_of(pem).to_public_key();
    json!({"keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": B64.encode(key.n().to_bytes_be()), "e": B64.encode(key.e().to_bytes_be())
    }]})
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Signs `claims` as OP would (RS256, `kid`).
pub(crate) fn op_sign(pem: &str, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A front-channel ID token's claims for `code`/`state`/`authorization_id`.
pub(crate) fn front_claims(code: &str, state: &str, authorization_id: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": "op-shopper-7", "aud": CLIENT, "exp": now() + 300,
        "iat": now(), "auth_time": now(), "nonce": nonce_for(state),
        "acr": ACR_SCA, "authorizationId": authorization_id,
        "c_hash": half_hash(code), "s_hash": half_hash(state)
    })
}

pub(crate) async fn jwks_server(jwks: Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks))
        .mount(&server)
        .await;
    server
}

fn jwks_at(server: &MockServer) -> Jwks {
    Jwks::new(
        format!("{}/jwks", server.uri()).parse().unwrap(),
        reqwest::Client::new(),
    )
}

fn expect<'a>(code: &'a str, state: &'a str, nonce: &'a str) -> IdTokenExpectations<'a> {
    IdTokenExpectations {
        which: "front-channel",
        issuer: ISSUER,
        client_id: CLIENT,
        nonce,
        authorization_id: "auth-1",
        code: Some(code),
        state: Some(state),
    }
}

fn refused_claim(e: BankError) -> String {
    match e {
        BankError::Validation { failures } => {
            assert_eq!(failures[0].code, "ID_TOKEN_INVALID");
            failures[0].path.clone().unwrap()
        }
        other => panic!("not an ID-token refusal: {other:?}"),
    }
}

#[test]
fn op_nonce_is_derived_from_the_state_and_hashes_are_the_left_half() {
    assert_eq!(
        nonce_for("state-abc"),
        "LWU1_gOVjSqRzhOfCuHdLHLJNW9wt4GWGnpU-sA_Uds"
    );
    assert_eq!(half_hash("code-123"), "HhEbClBuyon2V7dfErY5BQ");
    assert_ne!(nonce_for("state-abd"), nonce_for("state-abc"));
}

#[test]
fn op_request_object_has_the_contract_claims_and_header_and_verifies_with_our_key() {
    for (alg, name) in [
        (RequestObjectAlg::Rs256, "RS256"),
        (RequestObjectAlg::Ps256, "PS256"),
    ] {
        let signer = RequestSigner::from_pem(OTHER_KEY.as_bytes(), "qseal-1", alg).unwrap();
        let claims = RequestObject::new(
            CLIENT,
            "https://mtls-apis.psd2-sandbox.op.fi",
            "https://pisgate.example/v1/callbacks/oidc",
            "state-abc",
            "auth-1",
            1_700_000_000,
        );
        let jwt = signer.sign(&claims).unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(format!("{:?}", header.alg), name);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(header.kid.as_deref(), Some("qseal-1"));
        let public = rsa_of(OTHER_KEY).to_public_key();
        let key = DecodingKey::from_rsa_components(
            &B64.encode(public.n().to_bytes_be()),
            &B64.encode(public.e().to_bytes_be()),
        )
        .unwrap();
        let mut v = Validation::new(header.alg);
        v.validate_exp = false;
        v.set_audience(&["https://mtls-apis.psd2-sandbox.op.fi"]);
        let body: Value = jsonwebtoken::decode(&jwt, &key, &v).unwrap().claims;
        let jti = body["jti"].as_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&jti).is_ok());
        assert_eq!(
            body,
            json!({
                "iss": CLIENT, "aud": "https://mtls-apis.psd2-sandbox.op.fi", "client_id": CLIENT,
                "response_type": "code id_token",
                "redirect_uri": "https://pisgate.example/v1/callbacks/oidc",
                "scope": "openid payments", "state": "state-abc",
                "nonce": "LWU1_gOVjSqRzhOfCuHdLHLJNW9wt4GWGnpU-sA_Uds", "max_age": 86400,
                "iat": 1_700_000_000, "nbf": 1_700_000_000, "exp": 1_700_000_600, "jti": jti,
                "claims": {
                    "userinfo": {"authorizationId": {"value": "auth-1", "essential": true}},
                    "id_token": {"authorizationId": {"value": "auth-1", "essential": true},
                                 "acr": {"essential": true, "values": ["urn:openbanking:psd2:sca"]}}
                }
            })
        );
    }
    assert!(RequestSigner::from_pem(b"not a key", "k", RequestObjectAlg::Rs256).is_err());
    assert_eq!(
        RequestObjectAlg::parse("ps256"),
        Some(RequestObjectAlg::Ps256)
    );
    for bad in ["none", "HS256", "ES256", ""] {
        assert_eq!(RequestObjectAlg::parse(bad), None, "{bad}");
    }
}

#[tokio::test]
async fn op_a_valid_front_channel_id_token_is_accepted() {
    let server = jwks_server(jwks_of(OP_KEY, KID)).await;
    let jwks = jwks_at(&server);
    let token = op_sign(OP_KEY, KID, &front_claims("code-1", "state-1", "auth-1"));
    let nonce = nonce_for("state-1");
    let claims = validate_id_token(&jwks, &token, &expect("code-1", "state-1", &nonce))
        .await
        .unwrap();
    assert_eq!(claims.sub.as_deref(), Some("op-shopper-7"));
    // An array audience holding our client is accepted too.
    let mut array_aud = front_claims("code-1", "state-1", "auth-1");
    array_aud["aud"] = json!([CLIENT, "another"]);
    let token = op_sign(OP_KEY, KID, &array_aud);
    assert!(
        validate_id_token(&jwks, &token, &expect("code-1", "state-1", &nonce))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn op_every_id_token_refusal_names_its_claim() {
    let server = jwks_server(jwks_of(OP_KEY, KID)).await;
    let jwks = jwks_at(&server);
    let nonce = nonce_for("state-1");
    let good = || front_claims("code-1", "state-1", "auth-1");
    let with = |key: &str, value: Value| {
        let mut c = good();
        c[key] = value;
        c
    };
    let without = |key: &str| {
        let mut c = good();
        c.as_object_mut().unwrap().remove(key);
        c
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "id_token.iss",
            op_sign(OP_KEY, KID, &with("iss", json!("https://evil.example"))),
        ),
        (
            "id_token.aud",
            op_sign(OP_KEY, KID, &with("aud", json!("someone-else"))),
        ),
        (
            "id_token.nonce",
            op_sign(OP_KEY, KID, &with("nonce", json!(nonce_for("other")))),
        ),
        ("id_token.nonce", op_sign(OP_KEY, KID, &without("nonce"))),
        (
            "id_token.exp",
            op_sign(OP_KEY, KID, &with("exp", json!(now() - 120))),
        ),
        ("id_token.exp", op_sign(OP_KEY, KID, &without("exp"))),
        ("id_token.iss", op_sign(OP_KEY, KID, &without("iss"))),
        (
            "id_token.c_hash",
            op_sign(OP_KEY, KID, &with("c_hash", json!(half_hash("code-2")))),
        ),
        ("id_token.c_hash", op_sign(OP_KEY, KID, &without("c_hash"))),
        (
            "id_token.s_hash",
            op_sign(OP_KEY, KID, &with("s_hash", json!(half_hash("state-2")))),
        ),
        ("id_token.s_hash", op_sign(OP_KEY, KID, &without("s_hash"))),
        (
            "id_token.authorizationId",
            op_sign(OP_KEY, KID, &with("authorizationId", json!("auth-2"))),
        ),
        (
            "id_token.authorizationId",
            op_sign(OP_KEY, KID, &without("authorizationId")),
        ),
        // Signed by another key under OP's kid: the signature.
        ("id_token.signature", op_sign(OTHER_KEY, KID, &good())),
        // A kid OP's JWKS does not hold.
        ("id_token.kid", op_sign(OTHER_KEY, "forged", &good())),
    ];
    for (claim, token) in cases {
        let err = validate_id_token(&jwks, &token, &expect("code-1", "state-1", &nonce))
            .await
            .unwrap_err();
        assert_eq!(refused_claim(err.clone()), claim);
        assert!(!err.to_string().contains(&token), "{err}");
    }
    // alg none: header {"alg":"none"} with the good claims and no signature.
    let none = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT","kid":"op-1"}"#),
        B64.encode(serde_json::to_vec(&good()).unwrap())
    );
    // HS256 with the public modulus as the secret: the classic key-confusion forgery.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(KID.into());
    let hs256 =
        jsonwebtoken::encode(&hs, &good(), &EncodingKey::from_secret(b"op-1").unwrap()).unwrap();
    for token in [none, hs256, "not.a.jwt".to_owned(), String::new()] {
        let err = validate_id_token(&jwks, &token, &expect("code-1", "state-1", &nonce))
            .await
            .unwrap_err();
        assert_eq!(refused_claim(err), "id_token.alg");
    }
}

#[tokio::test]
async fn op_jwks_is_fetched_again_for_an_unknown_kid_at_most_once_a_minute() {
    let server = jwks_server(jwks_of(OP_KEY, KID)).await;
    let fetches = || async { server.received_requests().await.unwrap().len() };
    let jwks = jwks_at(&server);
    assert!(jwks.key(Some(KID)).await.unwrap().is_some());
    assert!(jwks.key(Some(KID)).await.unwrap().is_some());
    assert_eq!(fetches().await, 1, "a known kid is served from the cache");
    for _ in 0..5 {
        assert!(jwks.key(Some("forged")).await.unwrap().is_none());
    }
    assert_eq!(
        fetches().await,
        1,
        "an unknown kid within the minute fetches nothing"
    );
    let eager = jwks_at(&server).with_min_refetch(Duration::ZERO);
    assert!(eager.key(Some("forged")).await.unwrap().is_none());
    assert!(eager.key(Some("forged")).await.unwrap().is_none());
    assert_eq!(
        fetches().await,
        3,
        "past the interval an unknown kid fetches again"
    );
}

#[tokio::test]
async fn op_rotated_keys_are_found_after_a_refetch() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks_of(OP_KEY, KID)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks_of(OTHER_KEY, "op-2")))
        .mount(&server)
        .await;
    let jwks = jwks_at(&server).with_min_refetch(Duration::ZERO);
    assert!(jwks.key(Some(KID)).await.unwrap().is_some());
    assert!(jwks.key(Some("op-2")).await.unwrap().is_some());
    let broken = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&broken)
        .await;
    assert!(matches!(
        jwks_at(&broken).key(Some(KID)).await,
        Err(BankError::Unavailable { .. })
    ));
}

/// OP's detached signature of `body` (`<header>..<signature>`).
pub(crate) fn detached(pem: &str, kid: &str, alg: &str, body: &[u8]) -> String {
    let header = B64.encode(format!(r#"{{"alg":"{alg}","kid":"{kid}"}}"#));
    let algorithm = if alg == "PS256" {
        Algorithm::PS256
    } else {
        Algorithm::RS256
    };
    let message = format!("{header}.{}", B64.encode(body));
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        algorithm,
    )
    .unwrap();
    format!("{header}..{sig}")
}

#[tokio::test]
async fn op_detached_answer_signatures_verify_only_over_the_exact_body() {
    let server = jwks_server(jwks_of(OP_KEY, KID)).await;
    let jwks = jwks_at(&server);
    let body = br#"{"paymentId":"pay-1","status":"Debited"}"#;
    for alg in ["RS256", "PS256"] {
        let good = detached(OP_KEY, KID, alg, body);
        assert_eq!(
            verify_detached(&jwks, Some(&good), body).await.unwrap(),
            Ok(())
        );
        let tampered = br#"{"paymentId":"pay-1","status":"Debitec"}"#;
        assert_eq!(
            verify_detached(&jwks, Some(&good), tampered).await.unwrap(),
            Err(AnswerSignature::Invalid)
        );
    }
    assert_eq!(
        verify_detached(&jwks, None, body).await.unwrap(),
        Err(AnswerSignature::Missing)
    );
    assert_eq!(
        verify_detached(&jwks, Some(&detached(OTHER_KEY, KID, "RS256", body)), body)
            .await
            .unwrap(),
        Err(AnswerSignature::Invalid)
    );
    assert_eq!(
        verify_detached(
            &jwks,
            Some(&detached(OTHER_KEY, "forged", "RS256", body)),
            body
        )
        .await
        .unwrap(),
        Err(AnswerSignature::UnknownKey)
    );
    let none = format!("{}..", B64.encode(r#"{"alg":"none","kid":"op-1"}"#));
    assert_eq!(
        verify_detached(&jwks, Some(&none), body).await.unwrap(),
        Err(AnswerSignature::Algorithm)
    );
    // An attached payload (not detached) or garbage is malformed.
    let good = detached(OP_KEY, KID, "RS256", body);
    let attached = good.replacen("..", &format!(".{}.", B64.encode(body)), 1);
    for bad in [attached.as_str(), "garbage", "a.b", "!!!..sig"] {
        assert_eq!(
            verify_detached(&jwks, Some(bad), body).await.unwrap(),
            Err(AnswerSignature::Malformed),
            "{bad}"
        );
    }
}
