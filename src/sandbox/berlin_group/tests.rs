//! End-to-end tests of the Berlin Group simulator over real sockets: a simulator bound to
//! 127.0.0.1:0 trusting a test CA generated once per test binary, and a small test-only TPP
//! signer of our own (never pisgate's adapter's signer). Every test ends by checking that
//! none of the simulator's answers violated the OpenAPI (`/admin/selfcheck` empty).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::{Method, StatusCode};
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::signature::{SignatureEncoding, Signer as _};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use x509_cert::Certificate;
use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};
use x509_cert::der::{Decode, Encode, EncodePem};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

use super::*;

const REDIRECT: &str = "https://tpp.example/return";
const NOK_REDIRECT: &str = "https://tpp.example/nok";
const CA_DN: &str = "CN=Test QTSP CA 1,O=Test Trust Services,C=FI";
const SCT: &str = "/psd2/v1/payments/sepa-credit-transfers";

fn new_key() -> RsaPrivateKey {
    RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("key")
}

fn spki(key: &RsaPrivateKey) -> SubjectPublicKeyInfoOwned {
    let der = key.to_public_key().to_public_key_der().expect("spki");
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).expect("spki")
}

fn issue(
    profile: Profile,
    serial: u64,
    subject: &str,
    subject_key: &RsaPrivateKey,
    issuer_key: &RsaPrivateKey,
    validity: Validity,
) -> Certificate {
    let signer = SigningKey::<Sha256>::new(issuer_key.clone());
    let subject = subject.parse::<Name>().expect("name");
    CertificateBuilder::new(
        profile,
        SerialNumber::from(serial),
        validity,
        subject,
        spki(subject_key),
        &signer,
    )
    .expect("builder")
    .build::<rsa::pkcs1v15::Signature>()
    .expect("certificate")
}

/// The test PKI: a CA, the TPP's QSealC-like certificate, a second TPP, an expired
/// certificate and one from a rogue CA that copies the real CA's name.
struct Pki {
    ca_pem: String,
    tpp_key: RsaPrivateKey,
    tpp_der: Vec<u8>,
    other_key: RsaPrivateKey,
    other_der: Vec<u8>,
    expired_der: Vec<u8>,
    rogue_der: Vec<u8>,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca_key = new_key();
        let tpp_key = new_key();
        let other_key = new_key();
        let year = Validity::from_now(Duration::from_secs(365 * 86_400)).expect("validity");
        let ca = issue(Profile::Root, 1, CA_DN, &ca_key, &ca_key, year);
        let ca_name: Name = CA_DN.parse().expect("name");
        let leaf = || Profile::Leaf {
            issuer: ca_name.clone(),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        };
        // 0x9fa1c3: a serial whose hex has letters, written lower-case in the keyId.
        let tpp = issue(
            leaf(),
            0x9fa1c3,
            "CN=Test TPP,O=Shop Payments Oy,C=FI",
            &tpp_key,
            &ca_key,
            year,
        );
        let other = issue(
            leaf(),
            0x77,
            "CN=Other TPP,O=Other Oy,C=FI",
            &other_key,
            &ca_key,
            year,
        );
        let past = SystemTime::now() - Duration::from_secs(10 * 86_400);
        let expired_validity = Validity {
            not_before: x509_cert::time::Time::try_from(past - Duration::from_secs(86_400))
                .unwrap(),
            not_after: x509_cert::time::Time::try_from(past).unwrap(),
        };
        let expired = issue(
            leaf(),
            0x1234,
            "CN=Test TPP,O=Shop Payments Oy,C=FI",
            &tpp_key,
            &ca_key,
            expired_validity,
        );
        let rogue = issue(
            leaf(),
            0x9fa1c3,
            "CN=Test TPP,O=Shop Payments Oy,C=FI",
            &tpp_key,
            &other_key,
            year,
        );
        Pki {
            ca_pem: ca.to_pem(x509_cert::der::pem::LineEnding::LF).expect("pem"),
            tpp_key,
            tpp_der: tpp.to_der().expect("der"),
            other_key,
            other_der: other.to_der().expect("der"),
            expired_der: expired.to_der().expect("der"),
            rogue_der: rogue.to_der().expect("der"),
        }
    })
}

fn key_id(der: &[u8]) -> String {
    verify::expected_key_id(&Certificate::from_der(der).expect("cert"))
}

struct Sim {
    url: String,
    sb: Arc<BgSandbox>,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn spawn() -> Sim {
    spawn_with(|_| {}).await
}

async fn spawn_with(tune: impl FnOnce(&mut BgSandboxConfig)) -> Sim {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let cas = verify::parse_cas(&pki().ca_pem).expect("ca");
    let mut cfg = BgSandboxConfig::new(url.clone(), cas);
    cfg.status_step = Duration::from_secs(1);
    tune(&mut cfg);
    let sb = BgSandbox::new(cfg).expect("simulator");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, sb.clone(), async {
        let _ = rx.await;
    }));
    Sim {
        url,
        sb,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        _stop: tx,
    }
}

/// One API call of the test TPP, correct unless a field says otherwise.
#[derive(Clone)]
struct Call {
    method: Method,
    /// Path (with the base path) or an absolute URL from `_links`.
    target: String,
    body: Option<Vec<u8>>,
    headers: Vec<(String, String)>,
    /// Headers left out after signing (by lower-case name).
    omit: Vec<&'static str>,
    unsigned: bool,
    key_id: Option<String>,
    algorithm: Option<String>,
    signed_list: Option<String>,
    date: Option<String>,
    digest: Option<String>,
    cert: Option<Vec<u8>>,
    key: Option<RsaPrivateKey>,
    /// Sent instead of the body that was digested.
    sent_body: Option<Vec<u8>>,
    request_id: Option<String>,
}

impl Call {
    fn new(method: Method, target: impl Into<String>) -> Call {
        Call {
            method,
            target: target.into(),
            body: None,
            headers: Vec::new(),
            omit: Vec::new(),
            unsigned: false,
            key_id: None,
            algorithm: None,
            signed_list: None,
            date: None,
            digest: None,
            cert: None,
            key: None,
            sent_body: None,
            request_id: None,
        }
    }

    fn get(target: impl Into<String>) -> Call {
        Call::new(Method::GET, target)
    }

    fn json(mut self, body: &Value) -> Call {
        self.body = Some(serde_json::to_vec(body).unwrap());
        self.headers
            .push(("Content-Type".into(), "application/json".into()));
        self
    }

    fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn omit(mut self, name: &'static str) -> Call {
        self.omit.push(name);
        self
    }
}

fn imf_now() -> String {
    httpdate::fmt_http_date(SystemTime::now())
}

impl Sim {
    fn abs(&self, target: &str) -> String {
        if target.starts_with("http") {
            target.to_owned()
        } else {
            format!("{}{target}", self.url)
        }
    }

    async fn send(&self, c: Call) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let (status, h, text) = self.send_raw(c).await.expect("send");
        let v = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, h, v)
    }

    /// [`Sim::send`] with the body as text, and a connection closed with no answer as `Err`.
    async fn send_raw(
        &self,
        c: Call,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, String), reqwest::Error> {
        let url = self.abs(&c.target);
        let body = c.body.clone().unwrap_or_default();
        let mut headers: Vec<(String, String)> = c
            .headers
            .iter()
            .filter(|(n, _)| !c.omit.iter().any(|o| o.eq_ignore_ascii_case(n)))
            .cloned()
            .collect();
        headers.push((
            "X-Request-ID".into(),
            c.request_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        ));
        if !c.unsigned {
            let p = pki();
            let digest = c
                .digest
                .clone()
                .unwrap_or_else(|| format!("SHA-256={}", STANDARD.encode(Sha256::digest(&body))));
            headers.push(("Digest".into(), digest));
            headers.push(("Date".into(), c.date.clone().unwrap_or_else(imf_now)));
            let cert = c.cert.clone().unwrap_or_else(|| p.tpp_der.clone());
            headers.push(("TPP-Signature-Certificate".into(), STANDARD.encode(&cert)));
            let mut list = vec!["digest", "x-request-id", "date"];
            for opt in ["psu-id", "psu-corporate-id", "tpp-redirect-uri"] {
                if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(opt)) {
                    list.push(opt);
                }
            }
            let list = c.signed_list.clone().unwrap_or_else(|| list.join(" "));
            let lines: Vec<String> = list
                .split_whitespace()
                .map(|name| {
                    let v = headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    format!("{name}: {v}")
                })
                .collect();
            let key = c.key.clone().unwrap_or_else(|| p.tpp_key.clone());
            let sig = SigningKey::<Sha256>::new(key).sign(lines.join("\n").as_bytes());
            headers.push((
                "Signature".into(),
                format!(
                    "keyId=\"{}\",algorithm=\"{}\",headers=\"{list}\",signature=\"{}\"",
                    c.key_id.clone().unwrap_or_else(|| key_id(&cert)),
                    c.algorithm.clone().unwrap_or_else(|| "rsa-sha256".into()),
                    STANDARD.encode(sig.to_bytes())
                ),
            ));
        }
        let mut req = self.client.request(c.method.clone(), url);
        for (n, v) in &headers {
            if !c.omit.iter().any(|o| o.eq_ignore_ascii_case(n)) {
                req = req.header(n, v);
            }
        }
        let sent = c.sent_body.clone().unwrap_or(body);
        if !sent.is_empty() {
            req = req.body(sent);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let h = resp.headers().clone();
        let text = resp.text().await?;
        Ok((status, h, text))
    }

    /// Replaces the fault rules.
    async fn faults(&self, rules: Value) {
        let (s, v) = self
            .admin(
                Method::PUT,
                "/admin/faults",
                Some(json!({ "rules": rules })),
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    }

    /// Sends and checks a refusal's status and first code, and that X-Request-ID is echoed.
    async fn refused(&self, c: Call, status: StatusCode, code: &str) -> Value {
        let rid = c.request_id.clone();
        let (s, h, v) = self.send(c).await;
        assert_eq!(s, status, "answer: {v}");
        if !code.is_empty() {
            assert_eq!(v["tppMessages"][0]["code"], code, "answer: {v}");
            assert_eq!(v["tppMessages"][0]["category"], "ERROR");
        }
        let echoed = h
            .get("x-request-id")
            .and_then(|x| x.to_str().ok())
            .unwrap_or("");
        assert_eq!(echoed.len(), 36, "X-Request-ID echoed on every answer");
        if let Some(rid) = rid {
            assert_eq!(echoed, rid);
        }
        v
    }

    fn initiation(&self, body: &Value) -> Call {
        self.initiation_at(SCT, body)
    }

    fn initiation_at(&self, path: &str, body: &Value) -> Call {
        Call::new(Method::POST, path)
            .json(body)
            .header("PSU-IP-Address", "192.0.2.10")
            .header("TPP-Redirect-URI", REDIRECT)
    }

    async fn initiate(&self, c: Call) -> Value {
        let (s, h, v) = self.send(c).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert!(h.contains_key("location"));
        assert!(h.contains_key("aspsp-sca-approach"));
        assert_eq!(v["transactionStatus"], "RCVD");
        v
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self.client.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("admin");
        let s = resp.status();
        (s, resp.json().await.unwrap_or(Value::Null))
    }

    async fn decide(&self, aid: &str, approve: bool) -> (StatusCode, Value) {
        self.admin(
            Method::POST,
            &format!("/admin/sca/{aid}"),
            Some(json!({"approve": approve})),
        )
        .await
    }

    async fn status_of(&self, payment: &Value) -> String {
        let (s, _, v) = self.send(Call::get(link(payment, "status"))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["transactionStatus"].as_str().unwrap().to_owned()
    }

    async fn sca_status(&self, href: &str) -> String {
        let (s, _, v) = self.send(Call::get(href)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["scaStatus"].as_str().unwrap().to_owned()
    }

    fn advance(&self, secs: u64) {
        self.sb.advance_clock(Duration::from_secs(secs));
    }

    /// No answer of the simulator violated the OpenAPI.
    async fn assert_selfcheck_clean(&self) {
        let (s, v) = self.admin(Method::GET, "/admin/selfcheck", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["failures"], json!([]), "self-check failures: {v}");
    }
}

fn link(v: &Value, name: &str) -> String {
    v["_links"][name]["href"]
        .as_str()
        .unwrap_or_else(|| panic!("no _links.{name} in {v}"))
        .to_owned()
}

fn aid_of(href: &str) -> String {
    href.rsplit('/').next().unwrap().to_owned()
}

/// A change to an otherwise good body.
type Change = Box<dyn Fn(&mut Value)>;

fn payment(amount: &str) -> Value {
    json!({
        "endToEndIdentification": "e2e-1",
        "debtorAccount": {"iban": "FI7473834510057469", "currency": "EUR"},
        "instructedAmount": {"currency": "EUR", "amount": amount},
        "creditorAccount": {"iban": "FI1450000120236228"},
        "creditorName": "Shop Oy",
        "creditorAddress": {"streetName": "Kauppakatu", "buildingNumber": "1", "townName": "Helsinki", "postCode": "00100", "country": "FI"},
        "remittanceInformationUnstructured": "Order 42"
    })
}

fn periodic(amount: &str) -> Value {
    let mut b = payment(amount);
    let start = (chrono::Utc::now() + chrono::Duration::days(2)).date_naive();
    b["startDate"] = json!(start.to_string());
    b["frequency"] = json!("Monthly");
    b["dayOfExecution"] = json!("5");
    b
}

// ----- a correct request and the links ---------------------------------------------------

#[tokio::test]
async fn berlin_group_a_correctly_signed_initiation_is_accepted_with_absolute_links_that_carry_the_product()
 {
    let sim = spawn().await;
    let v = sim.initiate(sim.initiation(&payment("10.00"))).await;
    let prefix = format!("{}{SCT}/", sim.url);
    for name in ["self", "status", "scaStatus"] {
        assert!(link(&v, name).starts_with(&prefix), "{name}: {v}");
    }
    assert!(link(&v, "scaRedirect").starts_with(&format!("{}/sca/", sim.url)));
    // A client that rebuilds the scaStatus link the spec's examples' way (no product)
    // instead of following it does not find the authorisation.
    let pid = v["paymentId"].as_str().unwrap();
    let aid = aid_of(&link(&v, "scaStatus"));
    sim.refused(
        Call::get(format!("/psd2/v1/payments/{pid}/authorisations/{aid}")),
        StatusCode::NOT_FOUND,
        "RESOURCE_UNKNOWN",
    )
    .await;
    assert_eq!(sim.sca_status(&link(&v, "scaStatus")).await, "received");
    let (s, _, details) = sim.send(Call::get(link(&v, "self"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(details["transactionStatus"], "RCVD");
    assert_eq!(details["instructedAmount"]["amount"], "10.00");
    let (_, log) = sim.admin(Method::GET, "/admin/requests", None).await;
    let ops: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["operation"].as_str())
        .collect();
    assert!(
        ops.contains(&"initiatePayment") && ops.contains(&"getPaymentInformation"),
        "{ops:?}"
    );
    assert!(
        log[0]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "signature")
    );
    let (_, refused) = sim
        .admin(Method::GET, "/admin/requests?refused=true", None)
        .await;
    assert_eq!(refused.as_array().unwrap().len(), 1, "{refused}");
    assert_eq!(refused[0]["code"], "RESOURCE_UNKNOWN");
    let (_, only) = sim
        .admin(
            Method::GET,
            "/admin/requests?operation=initiatePayment",
            None,
        )
        .await;
    assert_eq!(only.as_array().unwrap().len(), 1);
    sim.assert_selfcheck_clean().await;
}

// ----- header refusals -------------------------------------------------------------------

#[tokio::test]
async fn berlin_group_refuses_a_missing_or_malformed_x_request_id() {
    let sim = spawn().await;
    let v = sim
        .refused(
            sim.initiation(&payment("1.00")).omit("x-request-id"),
            StatusCode::BAD_REQUEST,
            "FORMAT_ERROR",
        )
        .await;
    assert_eq!(v["tppMessages"][0]["path"], "X-Request-ID");
    let mut c = sim.initiation(&payment("1.00"));
    c.request_id = Some("not-a-uuid".into());
    let (s, h, v) = sim.send(c).await;
    assert_eq!(
        (s, v["tppMessages"][0]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("FORMAT_ERROR"))
    );
    assert_eq!(h["x-request-id"].len(), 36);
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_refuses_an_initiation_without_a_valid_psu_ip_address() {
    let sim = spawn().await;
    let v = sim
        .refused(
            sim.initiation(&payment("1.00")).omit("psu-ip-address"),
            StatusCode::BAD_REQUEST,
            "FORMAT_ERROR",
        )
        .await;
    assert_eq!(v["tppMessages"][0]["path"], "PSU-IP-Address");
    let c = Call::new(Method::POST, SCT)
        .json(&payment("1.00"))
        .header("PSU-IP-Address", "300.1.1.1")
        .header("TPP-Redirect-URI", REDIRECT);
    sim.refused(c, StatusCode::BAD_REQUEST, "FORMAT_ERROR")
        .await;
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_refuses_redirect_sca_without_a_tpp_redirect_uri() {
    let sim = spawn().await;
    let c = sim
        .initiation(&payment("1.00"))
        .omit("tpp-redirect-uri")
        .header("TPP-Redirect-Preferred", "true");
    let v = sim
        .refused(c, StatusCode::BAD_REQUEST, "FORMAT_ERROR")
        .await;
    assert_eq!(v["tppMessages"][0]["path"], "TPP-Redirect-URI");
    sim.refused(
        sim.initiation(&payment("1.00")).omit("tpp-redirect-uri"),
        StatusCode::BAD_REQUEST,
        "FORMAT_ERROR",
    )
    .await;
    for (name, value) in [
        ("PSU-Geo-Location", "Berlin"),
        ("PSU-Http-Method", "FETCH"),
        ("TPP-Redirect-URI", "/relative"),
    ] {
        let mut c = Call::new(Method::POST, SCT)
            .json(&payment("1.00"))
            .header("PSU-IP-Address", "192.0.2.10")
            .header(name, value);
        if name != "TPP-Redirect-URI" {
            c = c.header("TPP-Redirect-URI", REDIRECT);
        }
        let v = sim
            .refused(c, StatusCode::BAD_REQUEST, "FORMAT_ERROR")
            .await;
        assert_eq!(v["tppMessages"][0]["path"], name, "{v}");
        assert!(
            v["tppMessages"][0]["text"].as_str().unwrap().contains(name),
            "{v}"
        );
    }
    sim.refused(
        sim.initiation(&payment("1.00"))
            .header("TPP-Redirect-Preferred", "yes"),
        StatusCode::BAD_REQUEST,
        "FORMAT_ERROR",
    )
    .await;
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_refuses_unsupported_media_types_and_accept_headers() {
    let sim = spawn().await;
    let mut c = sim.initiation(&payment("1.00"));
    c.headers.retain(|(n, _)| n != "Content-Type");
    c = c.header("Content-Type", "text/plain");
    let (s, _, _) = sim.send(c).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _, _) = sim
        .send(
            sim.initiation(&payment("1.00"))
                .header("Accept", "application/xml"),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_ACCEPTABLE);
    sim.assert_selfcheck_clean().await;
}

// ----- signature refusals ----------------------------------------------------------------

#[tokio::test]
async fn berlin_group_refuses_an_unsigned_request_with_signature_missing() {
    let sim = spawn().await;
    let mut c = sim.initiation(&payment("1.00"));
    c.unsigned = true;
    sim.refused(c, StatusCode::UNAUTHORIZED, "SIGNATURE_MISSING")
        .await;
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_refuses_a_signature_without_digest_or_date() {
    let sim = spawn().await;
    let v = sim
        .refused(
            sim.initiation(&payment("1.00")).omit("digest"),
            StatusCode::BAD_REQUEST,
            "FORMAT_ERROR",
        )
        .await;
    assert_eq!(v["tppMessages"][0]["path"], "Digest");
    let v = sim
        .refused(
            sim.initiation(&payment("1.00")).omit("date"),
            StatusCode::BAD_REQUEST,
            "FORMAT_ERROR",
        )
        .await;
    assert_eq!(v["tppMessages"][0]["path"], "Date");
    // Digest on every request: a GET without one is refused too.
    let created = sim.initiate(sim.initiation(&payment("1.00"))).await;
    sim.refused(
        Call::get(link(&created, "status")).omit("digest"),
        StatusCode::BAD_REQUEST,
        "FORMAT_ERROR",
    )
    .await;
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_refuses_a_stale_or_malformed_date() {
    let sim = spawn().await;
    let mut c = sim.initiation(&payment("1.00"));
    c.date = Some(httpdate::fmt_http_date(
        SystemTime::now() - Duration::from_secs(121),
    ));
    sim.refused(c, StatusCode::BAD_REQUEST, "TIMESTAMP_INVALID")
        .await;
    let mut c = sim.initiation(&payment("1.00"));
    c.date = Some(httpdate::fmt_http_date(
        SystemTime::now() + Duration::from_secs(300),
    ));
    sim.refused(c, StatusCode::BAD_REQUEST, "TIMESTAMP_INVALID")
        .await;
    let mut c = sim.initiation(&payment("1.00"));
    c.date = Some("2026-12-05T03:00:00Z".into());
    sim.refused(c, StatusCode::BAD_REQUEST, "FORMAT_ERROR")
        .await;
    // Within the window (setting, 120 s by default) passes.
    let mut c = sim.initiation(&payment("1.00"));
    c.date = Some(httpdate::fmt_http_date(
        SystemTime::now() - Duration::from_secs(100),
    ));
    sim.initiate(c).await;
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_refuses_missing_foreign_garbled_and_expired_certificates() {
    let sim = spawn().await;
    let p = pki();
    sim.refused(
        sim.initiation(&payment("1.00"))
            .omit("tpp-signature-certificate"),
        StatusCode::UNAUTHORIZED,
        "CERTIFICATE_MISSING",
    )
    .await;
    let mut c = sim.initiation(&payment("1.00"));
    c.cert = Some(b"not a certificate".to_vec());
    c.key_id = Some(key_id(&p.tpp_der));
    sim.refused(c, StatusCode::UNAUTHORIZED, "CERTIFICATE_INVALID")
        .await;
    // Issued by a rogue CA that copies the trusted CA's name: the issuer's signature fails.
    let mut c = sim.initiation(&payment("1.00"));
    c.cert = Some(p.rogue_der.clone());
    sim.refused(c, StatusCode::UNAUTHORIZED, "CERTIFICATE_INVALID")
        .await;
    let mut c = sim.initiation(&payment("1.00"));
    c.cert = Some(p.expired_der.clone());
    sim.refused(c, StatusCode::UNAUTHORIZED, "CERTIFICATE_EXPIRED")
        .await;
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_refuses_a_key_id_that_is_not_the_certificates_lower_case_serial_and_issuer() {
    let sim = spawn().await;
    let good = key_id(&pki().tpp_der);
    assert_eq!(
        good,
        "SN=9fa1c3,CA=CN=Test%20QTSP%20CA%201,O=Test%20Trust%20Services,C=FI"
    );
    for wrong in [
        "SN=9FA1C3,CA=CN=Test%20QTSP%20CA%201,O=Test%20Trust%20Services,C=FI".to_owned(),
        "SN=009fa1c3,CA=CN=Test%20QTSP%20CA%201,O=Test%20Trust%20Services,C=FI".to_owned(),
        "SN=9fa1c4,CA=CN=Test%20QTSP%20CA%201,O=Test%20Trust%20Services,C=FI".to_owned(),
        "SN=9fa1c3,CA=CN=Other%20CA,O=Test%20Trust%20Services,C=FI".to_owned(),
        "test-client-id".to_owned(),
    ] {
        let mut c = sim.initiation(&payment("1.00"));
        c.key_id = Some(wrong.clone());
        sim.refused(c, StatusCode::UNAUTHORIZED, "SIGNATURE_INVALID")
            .await;
    }
    // The same issuer in another RFC 4514 spelling is the same name.
    let mut c = sim.initiation(&payment("1.00"));
    c.key_id =
        Some("SN=9fa1c3,CA=2.5.4.3=Test%20QTSP%20CA%201,O=Test%20Trust%20Services,C=FI".into());
    sim.initiate(c).await;
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_refuses_another_algorithm_a_short_header_list_and_a_bad_signature() {
    let sim = spawn().await;
    let mut c = sim.initiation(&payment("1.00"));
    c.algorithm = Some("SHA256withRSA".into());
    sim.refused(c, StatusCode::UNAUTHORIZED, "SIGNATURE_INVALID")
        .await;
    for list in [
        "x-request-id date",
        "digest date",
        "digest x-request-id",
        "digest x-request-id date",
    ] {
        // The last one leaves out tpp-redirect-uri, which the request carries.
        let mut c = sim.initiation(&payment("1.00"));
        c.signed_list = Some(list.into());
        sim.refused(c, StatusCode::UNAUTHORIZED, "SIGNATURE_INVALID")
            .await;
    }
    let mut c = sim.initiation(&payment("1.00")).header("PSU-ID", "psu-1");
    c.signed_list = Some("digest x-request-id date tpp-redirect-uri".into());
    sim.refused(c, StatusCode::UNAUTHORIZED, "SIGNATURE_INVALID")
        .await;
    // Signed by another key than the certificate's.
    let mut c = sim.initiation(&payment("1.00"));
    c.key = Some(pki().other_key.clone());
    sim.refused(c, StatusCode::UNAUTHORIZED, "SIGNATURE_INVALID")
        .await;
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_refuses_a_digest_that_does_not_match_the_exact_body() {
    let sim = spawn().await;
    let mut c = sim.initiation(&payment("1.00"));
    let mut other = serde_json::to_vec(&payment("1.00")).unwrap();
    other.push(b' ');
    c.sent_body = Some(other);
    sim.refused(c, StatusCode::BAD_REQUEST, "FORMAT_ERROR")
        .await;
    let body = serde_json::to_vec(&payment("1.00")).unwrap();
    let mut c = sim.initiation(&payment("1.00"));
    c.digest = Some(format!(
        "sha-256={}",
        STANDARD.encode(Sha256::digest(&body))
    ));
    sim.refused(c, StatusCode::BAD_REQUEST, "FORMAT_ERROR")
        .await;
    let mut c = sim.initiation(&payment("1.00"));
    c.digest = Some(format!("MD5={}", STANDARD.encode(Sha256::digest(&body))));
    sim.refused(c, StatusCode::BAD_REQUEST, "FORMAT_ERROR")
        .await;
    // SHA-512 is allowed.
    let mut c = sim.initiation(&payment("1.00"));
    c.digest = Some(format!(
        "SHA-512={}",
        STANDARD.encode(sha2::Sha512::digest(&body))
    ));
    sim.initiate(c).await;
    // A GET's digest is the empty string's.
    let created = sim.initiate(sim.initiation(&payment("1.00"))).await;
    let mut c = Call::get(link(&created, "status"));
    c.digest = Some("SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".into());
    let (s, _, _) = sim.send(c).await;
    assert_eq!(s, StatusCode::OK);
    let mut c = Call::get(link(&created, "status"));
    c.digest = Some(format!(
        "SHA-256={}",
        STANDARD.encode(Sha256::digest(b"{}"))
    ));
    sim.refused(c, StatusCode::BAD_REQUEST, "FORMAT_ERROR")
        .await;
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_refuses_a_reused_x_request_id_unless_replay_is_allowed() {
    let sim = spawn().await;
    let rid = uuid::Uuid::new_v4().to_string();
    let mut c = sim.initiation(&payment("1.00"));
    c.request_id = Some(rid.clone());
    sim.initiate(c.clone()).await;
    sim.refused(c, StatusCode::BAD_REQUEST, "FORMAT_ERROR")
        .await;
    // Allowed: the same request replays the first answer (no second payment); another
    // request under the same id is refused.
    let lenient = spawn_with(|c| c.allow_request_id_reuse = true).await;
    let mut c = lenient.initiation(&payment("1.00"));
    c.request_id = Some(rid.clone());
    let first = lenient.initiate(c.clone()).await;
    let again = lenient.initiate(c).await;
    assert_eq!(first["paymentId"], again["paymentId"]);
    assert_eq!(lenient.sb.payments().len(), 1);
    let mut other = lenient.initiation(&payment("2.00"));
    other.request_id = Some(rid);
    lenient
        .refused(other, StatusCode::BAD_REQUEST, "FORMAT_ERROR")
        .await;
    lenient.assert_selfcheck_clean().await;
    sim.assert_selfcheck_clean().await;
}

// ----- paths, products, services ----------------------------------------------------------

#[tokio::test]
async fn berlin_group_refuses_unknown_services_products_ids_and_methods() {
    let sim = spawn().await;
    sim.refused(
        sim.initiation_at(
            "/psd2/v1/bulk-payments/sepa-credit-transfers",
            &payment("1.00"),
        ),
        StatusCode::BAD_REQUEST,
        "PARAMETER_NOT_SUPPORTED",
    )
    .await;
    sim.refused(
        sim.initiation_at("/psd2/v1/payments/target-2-payments", &payment("1.00")),
        StatusCode::NOT_FOUND,
        "PRODUCT_UNKNOWN",
    )
    .await;
    sim.refused(
        Call::get(format!("{SCT}/nosuchpayment/status")),
        StatusCode::NOT_FOUND,
        "RESOURCE_UNKNOWN",
    )
    .await;
    sim.refused(
        Call::get("/psd2/v2/whatever"),
        StatusCode::NOT_FOUND,
        "RESOURCE_UNKNOWN",
    )
    .await;
    let created = sim.initiate(sim.initiation(&payment("1.00"))).await;
    let pid = created["paymentId"].as_str().unwrap();
    sim.refused(
        Call::get(format!(
            "/psd2/v1/payments/instant-sepa-credit-transfers/{pid}"
        )),
        StatusCode::FORBIDDEN,
        "PRODUCT_INVALID",
    )
    .await;
    sim.refused(
        Call::get(format!(
            "/psd2/v1/periodic-payments/sepa-credit-transfers/{pid}"
        )),
        StatusCode::METHOD_NOT_ALLOWED,
        "SERVICE_INVALID",
    )
    .await;
    sim.refused(
        Call::new(Method::PATCH, format!("{SCT}/{pid}")),
        StatusCode::METHOD_NOT_ALLOWED,
        "SERVICE_INVALID",
    )
    .await;
    sim.refused(
        Call::get(format!("{SCT}/{pid}/authorisations/nosuchauth")),
        StatusCode::NOT_FOUND,
        "RESOURCE_UNKNOWN",
    )
    .await;
    // Another TPP's payment.
    let mut c = Call::get(link(&created, "status"));
    c.cert = Some(pki().other_der.clone());
    c.key = Some(pki().other_key.clone());
    sim.refused(c, StatusCode::FORBIDDEN, "RESOURCE_UNKNOWN")
        .await;
    sim.assert_selfcheck_clean().await;
}

// ----- bodies ------------------------------------------------------------------------------

#[tokio::test]
async fn berlin_group_refuses_bodies_that_break_the_schema_naming_the_field() {
    let sim = spawn().await;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|b| b["colour"] = json!("blue")), ""),
        (
            Box::new(|b| b["creditorAccount"]["bic"] = json!("NDEAFIHH")),
            "/creditorAccount",
        ),
        (
            Box::new(|b| b["instructedAmount"]["amount"] = json!(10.5)),
            "/instructedAmount/amount",
        ),
        (
            Box::new(|b| b["instructedAmount"]["amount"] = json!("10,50")),
            "/instructedAmount/amount",
        ),
        (
            Box::new(|b| b["creditorName"] = json!("x".repeat(71))),
            "/creditorName",
        ),
        (
            Box::new(|b| b["endToEndIdentification"] = json!("x".repeat(36))),
            "/endToEndIdentification",
        ),
        (
            Box::new(|b| b["remittanceInformationUnstructured"] = json!("x".repeat(141))),
            "/remittanceInformationUnstructured",
        ),
        (
            Box::new(|b| {
                b["creditorAddress"]
                    .as_object_mut()
                    .unwrap()
                    .remove("country");
            }),
            "/creditorAddress",
        ),
        (
            Box::new(|b| b["creditorAddress"]["country"] = json!("Finland")),
            "/creditorAddress/country",
        ),
        (
            Box::new(|b| {
                b.as_object_mut().unwrap().remove("creditorName");
            }),
            "",
        ),
        (
            Box::new(|b| b["creditorAgent"] = json!("not a bic")),
            "/creditorAgent",
        ),
        (
            Box::new(|b| b["requestedExecutionDate"] = json!("tomorrow")),
            "/requestedExecutionDate",
        ),
    ];
    for (change, path) in cases {
        let mut b = payment("1.00");
        change(&mut b);
        let v = sim
            .refused(sim.initiation(&b), StatusCode::BAD_REQUEST, "FORMAT_ERROR")
            .await;
        if !path.is_empty() {
            let paths: Vec<&str> = v["tppMessages"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|m| m["path"].as_str())
                .collect();
            assert!(paths.contains(&path), "{path} not in {v}");
        }
    }
    let mut c = sim.initiation(&payment("1.00"));
    c.body = Some(b"{\"creditorName\": ".to_vec());
    sim.refused(c, StatusCode::BAD_REQUEST, "FORMAT_ERROR")
        .await;
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_refuses_bad_ibans_amounts_currencies_and_past_execution_dates() {
    let sim = spawn().await;
    let cases: Vec<(Change, &str, &str)> = vec![
        (
            Box::new(|b| b["creditorAccount"]["iban"] = json!("FI1450000120236229")),
            "/creditorAccount/iban",
            "FORMAT_ERROR",
        ),
        (
            Box::new(|b| b["debtorAccount"]["iban"] = json!("FI74738345100574")),
            "/debtorAccount/iban",
            "FORMAT_ERROR",
        ),
        (
            Box::new(|b| b["creditorAccount"] = json!({"bban": "50000120236228"})),
            "/creditorAccount",
            "FORMAT_ERROR",
        ),
        (
            Box::new(|b| b["instructedAmount"]["amount"] = json!("10.001")),
            "/instructedAmount/amount",
            "FORMAT_ERROR",
        ),
        (
            Box::new(|b| b["instructedAmount"]["amount"] = json!("0.00")),
            "/instructedAmount/amount",
            "FORMAT_ERROR",
        ),
        (
            Box::new(|b| b["instructedAmount"]["amount"] = json!("-5.00")),
            "/instructedAmount/amount",
            "FORMAT_ERROR",
        ),
        (
            Box::new(|b| b["instructedAmount"]["currency"] = json!("SEK")),
            "/instructedAmount/currency",
            "FORMAT_ERROR",
        ),
        (
            Box::new(|b| b["debtorAccount"]["currency"] = json!("SEK")),
            "/debtorAccount/currency",
            "FORMAT_ERROR",
        ),
        (
            Box::new(|b| b["requestedExecutionDate"] = json!("2020-01-01")),
            "/requestedExecutionDate",
            "EXECUTION_DATE_INVALID",
        ),
    ];
    for (change, path, code) in cases {
        let mut b = payment("1.00");
        change(&mut b);
        let v = sim
            .refused(sim.initiation(&b), StatusCode::BAD_REQUEST, code)
            .await;
        assert_eq!(v["tppMessages"][0]["path"], path, "{v}");
    }
    let mut b = payment("1.00");
    b["requestedExecutionDate"] = json!(chrono::Utc::now().date_naive().to_string());
    sim.initiate(sim.initiation(&b)).await;
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_refuses_periodic_payments_that_break_the_periodic_rules() {
    let sim = spawn().await;
    let at = "/psd2/v1/periodic-payments/sepa-credit-transfers";
    let created = sim.initiate(sim.initiation_at(at, &periodic("5.00"))).await;
    let (s, _, details) = sim.send(Call::get(link(&created, "self"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(details["frequency"], "Monthly");
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|b| b["startDate"] = json!("2020-01-01")),
            "/startDate",
        ),
        (Box::new(|b| b["endDate"] = json!("2020-01-01")), "/endDate"),
        (
            Box::new(|b| b["dayOfExecution"] = json!("01")),
            "/dayOfExecution",
        ),
        (
            Box::new(|b| b["dayOfExecution"] = json!("32")),
            "/dayOfExecution",
        ),
        (
            Box::new(|b| b["frequency"] = json!("monthly")),
            "/frequency",
        ),
        (
            Box::new(|b| b["monthsOfExecution"] = json!(["1", "7"])),
            "/monthsOfExecution",
        ),
        (
            Box::new(|b| b["frequency"] = json!("MonthlyVariable")),
            "/monthsOfExecution",
        ),
        (
            Box::new(|b| b["executionRule"] = json!("nearest")),
            "/executionRule",
        ),
    ];
    for (change, path) in cases {
        let mut b = periodic("5.00");
        change(&mut b);
        let v = sim
            .refused(
                sim.initiation_at(at, &b),
                StatusCode::BAD_REQUEST,
                "FORMAT_ERROR",
            )
            .await;
        let paths: Vec<&str> = v["tppMessages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["path"].as_str())
            .collect();
        assert!(paths.contains(&path), "{path} not in {v}");
    }
    let mut b = periodic("5.00");
    b["frequency"] = json!("MonthlyVariable");
    b["monthsOfExecution"] = json!(["1", "7"]);
    sim.initiate(sim.initiation_at(at, &b)).await;
    sim.assert_selfcheck_clean().await;
}

// ----- scenarios ----------------------------------------------------------------------------

#[tokio::test]
async fn berlin_group_default_redirect_goes_rcvd_actc_acsp_acsc_and_returns_the_browser_without_parameters()
 {
    let sim = spawn().await;
    let v = sim
        .initiate(
            sim.initiation(&payment("12.30"))
                .header("TPP-Nok-Redirect-URI", NOK_REDIRECT),
        )
        .await;
    let sca = link(&v, "scaStatus");
    assert_eq!(v["scaStatus"], "received");
    let page = sim
        .client
        .get(link(&v, "scaRedirect"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("value=\"approve\"")
            && html.contains("value=\"refuse\"")
            && !html.contains("<script")
    );
    assert_eq!(sim.sca_status(&sca).await, "started");
    let back = sim
        .client
        .post(link(&v, "scaRedirect"))
        .form(&[("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        back.headers()["location"],
        REDIRECT,
        "no code, no parameters"
    );
    assert_eq!(sim.sca_status(&sca).await, "finalised");
    assert_eq!(sim.status_of(&v).await, "ACTC");
    sim.advance(1);
    assert_eq!(sim.status_of(&v).await, "ACSP");
    sim.advance(1);
    assert_eq!(sim.status_of(&v).await, "ACSC");
    // A final payment cannot be cancelled, nor authorised again.
    sim.refused(
        Call::new(Method::DELETE, link(&v, "self")),
        StatusCode::BAD_REQUEST,
        "RESOURCE_BLOCKED",
    )
    .await;
    sim.refused(
        Call::new(Method::POST, format!("{}/authorisations", link(&v, "self"))).json(&json!({})),
        StatusCode::CONFLICT,
        "STATUS_INVALID",
    )
    .await;
    let (s, auths) = sim
        .admin(
            Method::GET,
            &format!("/admin/payments/{}", v["paymentId"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(auths["transactionStatus"], "ACSC");
    sim.assert_selfcheck_clean().await;
}

async fn approved(sim: &Sim, amount: &str) -> Value {
    let v = sim.initiate(sim.initiation(&payment(amount))).await;
    let (s, d) = sim.decide(&aid_of(&link(&v, "scaStatus")), true).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["location"], REDIRECT);
    v
}

#[tokio::test]
async fn berlin_group_scenario_acsp_then_rjct() {
    let sim = spawn().await;
    let v = approved(&sim, "77.01").await;
    assert_eq!(sim.status_of(&v).await, "ACSP");
    sim.advance(1);
    assert_eq!(sim.status_of(&v).await, "RJCT");
    assert_eq!(sim.sca_status(&link(&v, "scaStatus")).await, "finalised");
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_scenario_acsp_forever() {
    let sim = spawn().await;
    let v = approved(&sim, "77.02").await;
    assert_eq!(sim.status_of(&v).await, "ACSP");
    sim.advance(3600);
    assert_eq!(sim.status_of(&v).await, "ACSP");
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_scenario_pdng_then_acsc() {
    let sim = spawn().await;
    let v = approved(&sim, "77.03").await;
    assert_eq!(sim.status_of(&v).await, "PDNG");
    sim.advance(1);
    assert_eq!(sim.status_of(&v).await, "PDNG");
    sim.advance(1);
    assert_eq!(sim.status_of(&v).await, "ACSC");
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_scenario_status_is_404_until_the_shopper_opens_the_page() {
    let sim = spawn().await;
    let v = sim.initiate(sim.initiation(&payment("77.04"))).await;
    sim.refused(
        Call::get(link(&v, "status")),
        StatusCode::NOT_FOUND,
        "RESOURCE_UNKNOWN",
    )
    .await;
    sim.refused(
        Call::get(link(&v, "self")),
        StatusCode::NOT_FOUND,
        "RESOURCE_UNKNOWN",
    )
    .await;
    sim.refused(
        Call::get(link(&v, "scaStatus")),
        StatusCode::NOT_FOUND,
        "RESOURCE_UNKNOWN",
    )
    .await;
    let page = sim
        .client
        .get(link(&v, "scaRedirect"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(sim.status_of(&v).await, "RCVD");
    sim.decide(&aid_of(&link(&v, "scaStatus")), true).await;
    sim.advance(2);
    assert_eq!(sim.status_of(&v).await, "ACSC");
    // With an explicit start the payment is still unknown to reads, but the SCA can start.
    let v = sim
        .initiate(
            sim.initiation(&payment("77.04"))
                .header("TPP-Explicit-Authorisation-Preferred", "true"),
        )
        .await;
    let start = link(&v, "startAuthorisation");
    sim.refused(
        Call::get(start.clone()),
        StatusCode::NOT_FOUND,
        "RESOURCE_UNKNOWN",
    )
    .await;
    sim.refused(
        Call::new(Method::DELETE, link(&v, "self")),
        StatusCode::NOT_FOUND,
        "RESOURCE_UNKNOWN",
    )
    .await;
    let (s, _, a) = sim
        .send(Call::new(Method::POST, start).json(&json!({})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    sim.client
        .get(link(&a, "scaRedirect"))
        .send()
        .await
        .unwrap();
    assert_eq!(sim.status_of(&v).await, "RCVD");
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_refused_sca_ends_rjct_with_sca_failed_and_returns_to_the_nok_uri() {
    let sim = spawn().await;
    let v = sim
        .initiate(
            sim.initiation(&payment("12.30"))
                .header("TPP-Nok-Redirect-URI", NOK_REDIRECT),
        )
        .await;
    sim.client
        .get(link(&v, "scaRedirect"))
        .send()
        .await
        .unwrap();
    let back = sim
        .client
        .post(link(&v, "scaRedirect"))
        .form(&[("decision", "refuse")])
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    assert_eq!(back.headers()["location"], NOK_REDIRECT);
    assert_eq!(sim.status_of(&v).await, "RJCT");
    assert_eq!(sim.sca_status(&link(&v, "scaStatus")).await, "failed");
    // A second decision is refused.
    let again = sim
        .client
        .post(link(&v, "scaRedirect"))
        .form(&[("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    // Without a Nok URI the refusal returns to the redirect URI.
    let v = sim.initiate(sim.initiation(&payment("12.30"))).await;
    let (_, d) = sim.decide(&aid_of(&link(&v, "scaStatus")), false).await;
    assert_eq!(d["location"], REDIRECT);
    assert_eq!(d["scaStatus"], "failed");
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_explicit_authorisation_starts_with_post_authorisations() {
    let sim = spawn().await;
    let v = sim
        .initiate(
            sim.initiation(&payment("12.30"))
                .header("TPP-Explicit-Authorisation-Preferred", "true"),
        )
        .await;
    assert!(v["_links"].get("scaRedirect").is_none());
    let start = link(&v, "startAuthorisation");
    let (s, h, a) = sim
        .send(Call::new(Method::POST, start.clone()).json(&json!({})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(h["aspsp-sca-approach"], "REDIRECT");
    assert_eq!(a["scaStatus"], "received");
    let aid = a["authorisationId"].as_str().unwrap();
    assert!(link(&a, "scaRedirect").ends_with(&format!("/sca/{aid}")));
    let (_, _, list) = sim.send(Call::get(start.clone())).await;
    assert_eq!(list["authorisationIds"], json!([aid]));
    // A second start while one is open; embedded PSU data is not offered.
    sim.refused(
        Call::new(Method::POST, start.clone()).json(&json!({})),
        StatusCode::CONFLICT,
        "STATUS_INVALID",
    )
    .await;
    sim.refused(
        Call::new(Method::POST, start).json(&json!({"psuData": {"password": "x"}})),
        StatusCode::BAD_REQUEST,
        "FORMAT_ERROR",
    )
    .await;
    sim.decide(aid, true).await;
    assert_eq!(sim.sca_status(&link(&a, "scaStatus")).await, "finalised");
    assert_eq!(sim.status_of(&v).await, "ACTC");
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_decoupled_sca_is_approved_in_the_app_after_psu_identification() {
    let sim = spawn().await;
    let c = sim
        .initiation(&payment("12.30"))
        .omit("tpp-redirect-uri")
        .header("TPP-Redirect-Preferred", "false");
    let (s, h, v) = sim.send(c).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(h["aspsp-sca-approach"], "DECOUPLED");
    let start = link(&v, "startAuthorisationWithPsuIdentification");
    // With PSU-ID the SCA starts at once.
    let (s, _, a) = sim
        .send(
            Call::new(Method::POST, start.clone())
                .json(&json!({}))
                .header("PSU-ID", "psu-1"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["scaStatus"], "started");
    assert!(a["psuMessage"].as_str().is_some());
    let (s, d) = sim
        .decide(a["authorisationId"].as_str().unwrap(), true)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d["location"], Value::Null);
    assert_eq!(sim.sca_status(&link(&a, "scaStatus")).await, "finalised");
    assert_eq!(sim.status_of(&v).await, "ACTC");

    // Without PSU-ID: received, then PUT {} with PSU-ID identifies the PSU (scenario 77.07
    // chooses decoupled whatever the TPP prefers).
    let v = sim.initiate(sim.initiation(&payment("77.07"))).await;
    let start = link(&v, "startAuthorisationWithPsuIdentification");
    let (_, _, a) = sim
        .send(Call::new(Method::POST, start).json(&json!({})))
        .await;
    assert_eq!(a["scaStatus"], "received");
    let update = link(&a, "updatePsuIdentification");
    let (s, _) = sim
        .decide(a["authorisationId"].as_str().unwrap(), true)
        .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "nobody to approve before the PSU is identified"
    );
    sim.refused(
        Call::new(Method::PUT, update.clone()).json(&json!({})),
        StatusCode::BAD_REQUEST,
        "FORMAT_ERROR",
    )
    .await;
    let (s, _, u) = sim
        .send(
            Call::new(Method::PUT, update.clone())
                .json(&json!({}))
                .header("PSU-ID", "psu-2"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["scaStatus"], "started");
    sim.refused(
        Call::new(Method::PUT, update.clone())
            .json(&json!({}))
            .header("PSU-ID", "psu-2"),
        StatusCode::CONFLICT,
        "STATUS_INVALID",
    )
    .await;
    sim.refused(
        Call::new(Method::PUT, update).json(&json!({"confirmationCode": "123"})),
        StatusCode::CONFLICT,
        "STATUS_INVALID",
    )
    .await;
    // The "bank app" page approves too (no browser redirect for decoupled).
    let page = format!("{}/sca/{}", sim.url, a["authorisationId"].as_str().unwrap());
    let done = sim
        .client
        .post(page)
        .form(&[("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(sim.status_of(&v).await, "ACTC");
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_decoupled_sca_fails_after_the_timeout() {
    let sim = spawn().await;
    let v = sim.initiate(sim.initiation(&payment("77.05"))).await;
    let start = link(&v, "startAuthorisationWithPsuIdentification");
    let (_, _, a) = sim
        .send(
            Call::new(Method::POST, start)
                .json(&json!({}))
                .header("PSU-ID", "psu-1"),
        )
        .await;
    let aid = a["authorisationId"].as_str().unwrap();
    let (s, _) = sim.decide(aid, true).await;
    assert_eq!(s, StatusCode::CONFLICT, "this shopper never approves");
    sim.advance(29);
    assert_eq!(sim.sca_status(&link(&a, "scaStatus")).await, "started");
    assert_eq!(sim.status_of(&v).await, "RCVD");
    sim.advance(2);
    assert_eq!(sim.sca_status(&link(&a, "scaStatus")).await, "failed");
    assert_eq!(sim.status_of(&v).await, "RJCT");
    sim.assert_selfcheck_clean().await;
}

fn with_query(base: &str, pairs: &[(&str, String)]) -> String {
    let mut u = url::Url::parse(base).unwrap();
    u.query_pairs_mut()
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    u.into()
}

fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

#[tokio::test]
async fn berlin_group_oauth_sca_needs_pkce_s256_with_one_verifier_per_authorisation() {
    let sim = spawn().await;
    let v = sim.initiate(sim.initiation(&payment("77.08"))).await;
    let pid = v["paymentId"].as_str().unwrap();
    let meta_url = link(&v, "scaOAuth");
    assert!(meta_url.ends_with("/.well-known/oauth-authorization-server"));
    let meta: Value = sim
        .client
        .get(&meta_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    let authorize = meta["authorization_endpoint"].as_str().unwrap().to_owned();
    let token = meta["token_endpoint"].as_str().unwrap().to_owned();
    let (verifier, challenge) = pkce();
    let query = |challenge: &str, method: &str| {
        vec![
            ("response_type", "code".to_owned()),
            ("client_id", "tpp".to_owned()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("scope", format!("PIS:{pid}")),
            ("state", "st-1".to_owned()),
            ("code_challenge", challenge.to_owned()),
            ("code_challenge_method", method.to_owned()),
        ]
    };
    let plain = sim
        .client
        .get(with_query(&authorize, &query(&verifier, "plain")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        plain.status(),
        StatusCode::BAD_REQUEST,
        "PKCE plain is refused"
    );
    let page = sim
        .client
        .get(with_query(&authorize, &query(&challenge, "S256")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(sim.sca_status(&link(&v, "scaStatus")).await, "started");
    let aid = aid_of(&link(&v, "scaStatus"));
    let back = sim
        .client
        .post(&authorize)
        .form(&[
            ("authorisation", aid.as_str()),
            ("redirect_uri", REDIRECT),
            ("state", "st-1"),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    let location = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    let params: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(params["state"], "st-1");
    let code = params["code"].clone();
    // Approved on the page, but finalised only by the token exchange.
    assert_eq!(sim.sca_status(&link(&v, "scaStatus")).await, "started");
    let exchange = |verifier: String| {
        let form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.clone()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("client_id", "tpp".to_owned()),
            ("code_verifier", verifier),
        ];
        sim.client.post(&token).form(&form).send()
    };
    let wrong = exchange(pkce().0).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let ok = exchange(verifier.clone()).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.json::<Value>().await.unwrap()["token_type"], "Bearer");
    let again = exchange(verifier).await.unwrap();
    assert_eq!(
        again.status(),
        StatusCode::BAD_REQUEST,
        "a code is single use"
    );
    assert_eq!(sim.sca_status(&link(&v, "scaStatus")).await, "finalised");
    assert_eq!(sim.status_of(&v).await, "ACTC");
    sim.advance(2);
    assert_eq!(sim.status_of(&v).await, "ACSC");

    // A second authorisation with the same challenge (a process-wide verifier) is refused.
    let v2 = sim.initiate(sim.initiation(&payment("77.08"))).await;
    let pid2 = v2["paymentId"].as_str().unwrap();
    let mut q = query(&challenge, "S256");
    q[3].1 = format!("PIS:{pid2}");
    let reused = sim
        .client
        .get(with_query(&authorize, &q))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    assert!(reused.text().await.unwrap().contains("own code_verifier"));
    // Refusing on the page: access_denied, RJCT and failed.
    let (_, challenge2) = pkce();
    q[5].1 = challenge2;
    assert_eq!(
        sim.client
            .get(with_query(&authorize, &q))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let (s, d) = sim.decide(&aid_of(&link(&v2, "scaStatus")), false).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        d["location"]
            .as_str()
            .unwrap()
            .contains("error=access_denied")
    );
    assert_eq!(sim.status_of(&v2).await, "RJCT");
    assert_eq!(sim.sca_status(&link(&v2, "scaStatus")).await, "failed");
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_cancelling_an_unsigned_payment_answers_204_and_cancels_it() {
    let sim = spawn().await;
    let v = sim.initiate(sim.initiation(&payment("12.30"))).await;
    sim.client
        .get(link(&v, "scaRedirect"))
        .send()
        .await
        .unwrap();
    let (s, _, _) = sim.send(Call::new(Method::DELETE, link(&v, "self"))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(sim.status_of(&v).await, "CANC");
    assert_eq!(sim.sca_status(&link(&v, "scaStatus")).await, "failed");
    let (s, _) = sim.decide(&aid_of(&link(&v, "scaStatus")), true).await;
    assert_eq!(s, StatusCode::CONFLICT);
    sim.refused(
        Call::new(Method::DELETE, link(&v, "self")),
        StatusCode::BAD_REQUEST,
        "RESOURCE_BLOCKED",
    )
    .await;
    sim.assert_selfcheck_clean().await;
}

#[tokio::test]
async fn berlin_group_cancelling_with_sca_answers_202_and_the_approved_cancellation_is_canc() {
    let sim = spawn().await;
    // Scenario 77.06: even the unsigned payment's cancellation needs SCA.
    let v = sim.initiate(sim.initiation(&payment("77.06"))).await;
    let cancel_start = format!("{}/cancellation-authorisations", link(&v, "self"));
    sim.refused(
        Call::new(Method::POST, cancel_start.clone()).json(&json!({})),
        StatusCode::CONFLICT,
        "STATUS_INVALID",
    )
    .await;
    let (s, _, c) = sim.send(Call::new(Method::DELETE, link(&v, "self"))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{c}");
    assert_eq!(c["transactionStatus"], "RCVD");
    let (s, _, a) = sim
        .send(Call::new(Method::POST, link(&c, "startAuthorisation")).json(&json!({})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let (_, _, list) = sim.send(Call::get(cancel_start)).await;
    assert_eq!(list["authorisationIds"], json!([a["authorisationId"]]));
    let back = sim
        .client
        .post(link(&a, "scaRedirect"))
        .form(&[("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    assert_eq!(sim.sca_status(&link(&a, "scaStatus")).await, "finalised");
    assert_eq!(sim.status_of(&v).await, "CANC");

    // A cancellation approved only after the payment became final changes nothing.
    let v = approved(&sim, "12.30").await;
    let (s, _, c) = sim.send(Call::new(Method::DELETE, link(&v, "self"))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (_, _, a) = sim
        .send(Call::new(Method::POST, link(&c, "startAuthorisation")).json(&json!({})))
        .await;
    sim.advance(2);
    let (s, _) = sim
        .decide(a["authorisationId"].as_str().unwrap(), true)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(sim.status_of(&v).await, "ACSC");

    // A signed, not yet final payment: 202 too; a signed instant payment cannot be cancelled.
    let v = approved(&sim, "77.02").await;
    let (s, _, c) = sim.send(Call::new(Method::DELETE, link(&v, "self"))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(c["transactionStatus"], "ACSP");
    let instant = sim
        .initiate(sim.initiation_at(
            "/psd2/v1/payments/instant-sepa-credit-transfers",
            &payment("77.02"),
        ))
        .await;
    sim.decide(&aid_of(&link(&instant, "scaStatus")), true)
        .await;
    sim.refused(
        Call::new(Method::DELETE, link(&instant, "self")),
        StatusCode::METHOD_NOT_ALLOWED,
        "CANCELLATION_INVALID",
    )
    .await;
    sim.assert_selfcheck_clean().await;
}

// ----- the verifier against an independent signer ---------------------------------------------

fn openssl(args: &[&str], dir: &std::path::Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA, a TPP certificate and the request signature all made by the `openssl` command line
/// (no code of this crate signs), and the simulator accepts the request.
#[tokio::test]
async fn berlin_group_accepts_a_request_signed_by_openssl_with_a_ca_made_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/C=FI/O=OpenSSL Test QTSP/CN=OpenSSL Test CA",
        ],
        d,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "tpp.key",
            "-out",
            "tpp.csr",
            "-subj",
            "/C=FI/O=Shop/CN=Shop TPP",
        ],
        d,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "tpp.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "0x0AbC123",
            "-days",
            "2",
            "-out",
            "tpp.pem",
            "-sha256",
        ],
        d,
    );
    openssl(
        &[
            "x509", "-in", "tpp.pem", "-outform", "DER", "-out", "tpp.der",
        ],
        d,
    );
    let serial = openssl(&["x509", "-in", "tpp.pem", "-noout", "-serial"], d);
    let issuer = openssl(
        &[
            "x509", "-in", "tpp.pem", "-noout", "-issuer", "-nameopt", "RFC2253",
        ],
        d,
    );
    let serial = serial
        .trim()
        .trim_start_matches("serial=")
        .trim_start_matches('0')
        .to_ascii_lowercase();
    let issuer = issuer
        .trim()
        .trim_start_matches("issuer=")
        .replace(' ', "%20");
    let key_id = format!("SN={serial},CA={issuer}");
    assert_eq!(
        key_id,
        "SN=abc123,CA=CN=OpenSSL%20Test%20CA,O=OpenSSL%20Test%20QTSP,C=FI"
    );

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cas = verify::parse_cas(&std::fs::read_to_string(d.join("ca.pem")).unwrap()).unwrap();
    let sb = BgSandbox::new(BgSandboxConfig::new(url.clone(), cas)).unwrap();
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, sb.clone(), async {
        let _ = rx.await;
    }));

    let body = serde_json::to_vec(&payment("10.00")).unwrap();
    std::fs::write(d.join("body.json"), &body).unwrap();
    let digest_b64 = {
        openssl(
            &[
                "dgst",
                "-sha256",
                "-binary",
                "-out",
                "body.sha256",
                "body.json",
            ],
            d,
        );
        STANDARD.encode(std::fs::read(d.join("body.sha256")).unwrap())
    };
    let rid = uuid::Uuid::new_v4().to_string();
    let date = imf_now();
    let digest = format!("SHA-256={digest_b64}");
    let signing = format!(
        "digest: {digest}\nx-request-id: {rid}\ndate: {date}\ntpp-redirect-uri: {REDIRECT}"
    );
    std::fs::write(d.join("signing.txt"), signing).unwrap();
    openssl(
        &[
            "dgst",
            "-sha256",
            "-sign",
            "tpp.key",
            "-out",
            "sig.bin",
            "signing.txt",
        ],
        d,
    );
    let sig = STANDARD.encode(std::fs::read(d.join("sig.bin")).unwrap());
    let cert = STANDARD.encode(std::fs::read(d.join("tpp.der")).unwrap());
    let resp = reqwest::Client::new()
        .post(format!("{url}{SCT}"))
        .header("Content-Type", "application/json")
        .header("X-Request-ID", &rid)
        .header("PSU-IP-Address", "192.0.2.1")
        .header("TPP-Redirect-URI", REDIRECT)
        .header("Digest", &digest)
        .header("Date", &date)
        .header("TPP-Signature-Certificate", cert)
        .header(
            "Signature",
            format!("keyId=\"{key_id}\",algorithm=\"rsa-sha256\",headers=\"digest x-request-id date tpp-redirect-uri\",signature=\"{sig}\""),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert!(sb.selfcheck_failures().is_empty());
}

#[tokio::test]
async fn berlin_group_a_tpp_of_the_generated_test_pki_is_accepted() {
    use rsa::pkcs8::DecodePrivateKey;
    let generated = test_pki::generate("CN=Shop TPP,O=Shop Oy,C=FI").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cas = verify::parse_cas(&generated.ca_pem).unwrap();
    let sb = BgSandbox::new(BgSandboxConfig::new(url.clone(), cas)).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, sb.clone(), async {
        let _ = rx.await;
    }));
    let sim = Sim {
        url,
        sb,
        client: reqwest::Client::new(),
        _stop: tx,
    };
    let cert = verify::parse_certificate_pem(&generated.tpp_cert_pem).unwrap();
    let mut c = sim.initiation(&payment("10.00"));
    c.cert = Some(cert.to_der().unwrap());
    c.key = Some(RsaPrivateKey::from_pkcs8_pem(&generated.tpp_key_pem).unwrap());
    c.key_id = Some(generated.key_id.clone());
    sim.initiate(c).await;
    sim.assert_selfcheck_clean().await;
}

/// Faults with the Nordea sandbox's rules (`PUT /admin/faults`): a 503, a 429 and a dropped
/// connection answer before the bank acts (nothing is created); a dropped answer, a garbled
/// one and a late one come after it acted (the payment exists). Each is counted and named in
/// the log, and none is taken for the simulator's own violation of the OpenAPI.
#[tokio::test]
async fn berlin_group_injected_faults_answer_before_the_bank_acts_or_lose_its_answer_after() {
    let sim = spawn().await;
    let at_bank = || sim.sb.payments().len();

    sim.faults(json!([{"operation": "initiate", "kind": "http503", "times": 1}]))
        .await;
    let v = sim
        .refused(
            sim.initiation(&payment("10.00")),
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
        )
        .await;
    assert!(v["tppMessages"][0]["text"].is_string());
    assert_eq!(at_bank(), 0, "a 503 answers before the bank acts");
    let first = sim.initiate(sim.initiation(&payment("10.00"))).await;
    assert_eq!(at_bank(), 1, "the rule fired once");

    sim.faults(json!([{"operation": "status", "kind": "http429", "retry_after_secs": 3}]))
        .await;
    let (s, h, _) = sim.send(Call::get(link(&first, "status"))).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["retry-after"], "3");
    let (s, _, _) = sim.send(Call::get(link(&first, "self"))).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "reading the payment is not a status call"
    );

    let sim = &sim;
    let unanswered = |rule: Value| async move {
        sim.faults(json!([rule])).await;
        sim.send_raw(sim.initiation(&payment("10.00")))
            .await
            .is_err()
    };
    assert!(
        unanswered(json!({"operation": "all", "kind": "drop_connection", "times": 1})).await,
        "no answer"
    );
    assert_eq!(at_bank(), 1, "a dropped connection reaches no bank");
    assert!(
        unanswered(json!({"operation": "initiate", "kind": "drop_after_processing", "times": 1}))
            .await,
        "no answer"
    );
    assert_eq!(
        at_bank(),
        2,
        "the bank created the payment whose answer was lost"
    );

    sim.faults(json!([{"operation": "initiate", "kind": "malformed_json", "times": 1}]))
        .await;
    let (s, _, text) = sim
        .send_raw(sim.initiation(&payment("10.00")))
        .await
        .expect("an answer");
    assert_eq!(s, StatusCode::CREATED);
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "garbled: {text}"
    );
    assert_eq!(at_bank(), 3);

    sim.faults(json!([{"operation": "initiate", "kind": "delay_answer", "ms": 600, "times": 1}]))
        .await;
    let started = std::time::Instant::now();
    sim.initiate(sim.initiation(&payment("10.00"))).await;
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!(at_bank(), 4);

    let (_, f) = sim.admin(Method::GET, "/admin/faults", None).await;
    assert_eq!(f["counters"]["initiate"]["received"], 6, "{f}");
    assert_eq!(f["counters"]["details"]["faulted"], 0, "{f}");
    assert_eq!(f["counters"]["initiate"]["faulted"], 5, "{f}");
    assert_eq!(f["counters"]["status"]["faulted"], 1, "{f}");
    let named: Vec<Option<&str>> = sim
        .sb
        .requests()
        .iter()
        .filter(|e| e.operation == Some("initiatePayment"))
        .map(|e| e.fault)
        .collect();
    assert_eq!(
        named,
        [
            Some("http503"),
            None,
            Some("drop_connection"),
            Some("drop_after_processing"),
            Some("malformed_json"),
            Some("delay_answer"),
        ]
    );
    sim.assert_selfcheck_clean().await;

    sim.faults(json!([])).await;
    sim.status_of(&first).await;
}
