//! The banks (`[banks.<id>]`, i.e. `PISGATE__BANKS__<ID>__…`): any number, each with an id,
//! a protocol, what the shopper sees, the debtor countries it serves and its protocol's
//! settings. The id in a variable is the bank's id in lower case
//! (`PISGATE__BANKS__TESTBANK__PROTOCOL` is the bank `testbank`). The `[nordea]` section is
//! the bank `nordea`, as before.
//!
//! Never: a default that makes a bank report money as moved on a status that does not say
//! so (`ACSP` is never "paid" unless an operator configures it for that bank).

use super::{
    BankEnvironment, NordeaSettings, RawNordea, SettingsError, choice, positive, required,
    required_secret, secs, validate_nordea_at,
};
use crate::domain::{Country, Currency};
use secrecy::SecretString;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One configured bank.
#[derive(Debug, Clone)]
pub struct BankSettings {
    /// Lower case, `[a-z0-9_-]`, at most 32 characters: it is stored on every payment.
    pub id: String,
    /// What the shopper sees on pisgate's pages.
    pub name: String,
    pub countries: Vec<Country>,
    pub protocol: BankProtocolSettings,
    /// `[banks.<id>] needs_debtor_account` (default false): the bank needs the shopper's
    /// account before initiation; without one from the merchant, pisgate asks the shopper
    /// for their IBAN on its page. For a Nordea-protocol bank it is this setting (the
    /// `[nordea]` bank never); for Berlin Group, the protocol's own setting.
    pub needs_debtor_account: bool,
}

#[derive(Debug, Clone)]
pub enum BankProtocolSettings {
    Nordea(Box<NordeaSettings>),
    BerlinGroup(Box<BerlinGroupSettings>),
    Seb(Box<SebSettings>),
    Op(Box<OpSettings>),
}

impl BankProtocolSettings {
    pub fn name(&self) -> &'static str {
        match self {
            BankProtocolSettings::Nordea(_) => "nordea",
            BankProtocolSettings::BerlinGroup(_) => "berlin-group",
            BankProtocolSettings::Seb(_) => "seb",
            BankProtocolSettings::Op(_) => "op",
        }
    }

    /// The time one call to this bank may take.
    pub fn request_timeout(&self) -> Duration {
        match self {
            BankProtocolSettings::Nordea(n) => n.request_timeout,
            BankProtocolSettings::BerlinGroup(b) => b.request_timeout,
            BankProtocolSettings::Seb(b) => b.request_timeout,
            BankProtocolSettings::Op(b) => b.request_timeout,
        }
    }

    /// Production or the bank's sandbox.
    pub fn environment(&self) -> BankEnvironment {
        match self {
            BankProtocolSettings::Nordea(n) => n.environment,
            BankProtocolSettings::BerlinGroup(b) => b.environment,
            BankProtocolSettings::Seb(b) => b.environment,
            BankProtocolSettings::Op(b) => b.environment,
        }
    }
}

/// How pisgate prefers the shopper to sign at a Berlin Group bank (the bank decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaApproach {
    /// Implicit redirect: the bank's 201 carries `scaRedirect`.
    Redirect,
    /// Explicit: pisgate starts the authorisation, then redirects.
    ExplicitRedirect,
    /// The shopper approves in the bank's app (needs the shopper's PSU-ID).
    Decoupled,
    /// OAuth SCA (`scaOAuth`).
    OAuth,
}

/// A Berlin Group NextGenPSD2 bank (`protocol = "berlin-group"`).
#[derive(Debug, Clone)]
pub struct BerlinGroupSettings {
    /// pisgate appends `/v1/{payment-service}/{payment-product}`.
    pub base_url: String,
    /// The QSealC's private key (PEM), `PISGATE__BANKS__<ID>__PRIVATE_KEY_FILE`.
    pub private_key: Option<SecretString>,
    /// The QSealC (PEM), `PISGATE__BANKS__<ID>__CERTIFICATE_FILE`.
    pub certificate: Option<String>,
    /// Sign every request (HTTP signature with Digest); banks that sign nothing turn it off.
    pub sign_requests: bool,
    /// The payment product per currency (`EUR:sepa-credit-transfers,…`).
    pub products: BTreeMap<Currency, String>,
    /// The product of standing orders, when it differs from the currency's.
    pub periodic_product: Option<String>,
    /// The transaction statuses that mean the money moved (default `ACSC,ACCC`).
    pub paid_statuses: Vec<String>,
    pub needs_debtor_account: bool,
    pub sca_approach: ScaApproach,
    /// `PSU-ID-Type`, when the bank wants one.
    pub psu_id_type: Option<String>,
    /// The bank takes a structured reference or a message, not both.
    pub remittance_exclusive: bool,
    /// The `PSU-IP-Address` sent when the shopper's own address is not known (a payment
    /// initiated by the merchant's API call): the framework makes the header mandatory on
    /// initiation. Required.
    pub psu_ip_fallback: std::net::IpAddr,
    /// OAuth SCA's `client_id` at the bank's authorisation server (default `pisgate`).
    pub oauth_client_id: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub read_attempts: u32,
    pub environment: BankEnvironment,
}

/// SEB's private or corporate PIS API (`api`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SebApiSetting {
    Private,
    /// Needs `psu_corporate_id` (sent as `PSU-Corporate-ID`).
    Corporate {
        psu_corporate_id: String,
    },
}

/// SEB (`protocol = "seb"`): decoupled BankID authorization for the shopper's token, PIS v1,
/// the Signing External API, mutual TLS with the QWAC (docs/banks/seb.md).
#[derive(Debug, Clone)]
pub struct SebSettings {
    /// The host (`https://api-sandbox.sebgroup.com`); pisgate appends `/auth/v4`,
    /// `/tpp/pis/{private|corporate}/v1/identified2` and `/tpp/signing/v1`.
    pub base_url: String,
    pub api: SebApiSetting,
    pub client_id: String,
    pub client_secret: SecretString,
    /// The QWAC (PEM), `…__TLS_CERTIFICATE_FILE`.
    pub tls_certificate: String,
    /// The QWAC's private key (PEM), `…__TLS_PRIVATE_KEY_FILE`.
    pub tls_private_key: SecretString,
    /// An extra root CA (PEM) for SEB's server certificate, `…__TLS_CA_FILE` (the
    /// simulator's test CA); without it the platform's roots only.
    pub tls_ca: Option<String>,
    /// The payment product per currency (default
    /// `SEK:private-se-domestic-credit-transfers,EUR:sepa-credit-transfers`).
    pub products: BTreeMap<Currency, String>,
    /// Default `ACSC`; `ACSP` only when configured.
    pub paid_statuses: Vec<String>,
    pub psu_ip_fallback: std::net::IpAddr,
    /// The "open BankID on this device" link's base (default `bankid:///`): the link is
    /// `{bankid_app_url}?autostarttoken=<token>&redirect=null`.
    pub bankid_app_url: String,
    /// The `redirect_uri` SEB's `/tokens` requires (default `https://localhost/pisgate/seb`;
    /// ASSUMED: the one registered with SEB for the client).
    pub redirect_uri: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub read_attempts: u32,
    /// SEB's time for the shopper to sign a payment (default 300 s: ASSUMED).
    pub approval_timeout: Duration,
    pub environment: BankEnvironment,
}

impl SebSettings {
    /// The "open BankID on this device" link for an autostart token:
    /// `{bankid_app_url}?autostarttoken=<token>&redirect=null` (the token URL-encoded).
    pub fn autostart_link(&self, autostart_token: &str) -> String {
        let token: String = form_urlencoded::byte_serialize(autostart_token.as_bytes()).collect();
        format!(
            "{}?autostarttoken={token}&redirect=null",
            self.bankid_app_url
        )
    }
}

/// OP (`protocol = "op"`): OP's own PSD2 PIS API V2 (FAPI: mutual TLS with the QWAC, request
/// objects signed with the QSealC key, ID tokens checked against OP's JWKS, submit after
/// authorization), docs/banks/op.md. Defaults in brackets.
#[derive(Debug, Clone)]
pub struct OpSettings {
    /// The mutual-TLS host of the business APIs and the token endpoint
    /// (`https://mtls-apis.psd2-sandbox.op.fi`); pisgate appends `/oauth/token` and
    /// `/paymentsapi/v2/sepa-payments`.
    pub base_url: String,
    /// OP's authorization endpoint, front channel
    /// (`https://authorize.psd2-sandbox.op.fi/oauth/authorize`).
    pub authorize_url: String,
    /// The ID tokens' issuer (`iss`).
    pub issuer: String,
    /// The JWKS of OP's ID-token keys
    /// (`https://authorize.psd2-sandbox.op.fi/oauth/jwks/PSD2_OIDC`).
    pub jwks_url: String,
    /// The JWKS of OP's payment-answer signatures; when set, every answer must be signed
    /// [none: answers are not checked].
    pub payments_jwks_url: Option<String>,
    pub client_id: String,
    pub client_secret: SecretString,
    /// OP Developer's app API key (`x-api-key`).
    pub api_key: SecretString,
    /// The QWAC (PEM), `…__TLS_CERTIFICATE_FILE`.
    pub tls_certificate: String,
    /// The QWAC's private key (PEM), `…__TLS_PRIVATE_KEY_FILE`.
    pub tls_private_key: SecretString,
    /// An extra root CA (PEM) for OP's server certificates, `…__TLS_CA_FILE` [none].
    pub tls_ca: Option<String>,
    /// The QSealC's RSA private key (PEM), `…__PRIVATE_KEY_FILE`: signs request objects.
    pub private_key: SecretString,
    /// The QSealC (PEM), `…__CERTIFICATE_FILE`: must hold the private key's public key.
    pub certificate: String,
    /// The request object's `kid` (the QSealC key's id in the JWKS registered at OP).
    pub signing_key_id: String,
    /// `RS256` or `PS256` [`RS256`, as OP's own example].
    pub request_object_alg: crate::bank::op::jose::RequestObjectAlg,
    /// The request object's `aud` [the origin of `base_url`].
    pub request_object_audience: Option<String>,
    /// OP statuses that mean paid [`Debited`]; `Accepted` only by agreement with OP.
    pub paid_statuses: Vec<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub read_attempts: u32,
    pub environment: BankEnvironment,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawBank {
    protocol: Option<String>,
    name: Option<String>,
    countries: Option<String>,
    base_url: Option<String>,
    private_key: Option<SecretString>,
    certificate: Option<String>,
    sign_requests: Option<bool>,
    products: Option<String>,
    periodic_product: Option<String>,
    paid_statuses: Option<String>,
    needs_debtor_account: Option<bool>,
    sca_approach: Option<String>,
    psu_id_type: Option<String>,
    remittance_exclusive: Option<bool>,
    psu_ip_fallback: Option<String>,
    oauth_client_id: Option<String>,
    connect_timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    read_attempts: Option<u32>,
    environment: Option<String>,
    // Nordea's own settings, for a `[banks.<id>]` with `protocol = "nordea"`.
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    token_path: Option<String>,
    delete_signing_profile: Option<String>,
    approval_timeout_secs: Option<u64>,
    // SEB's own settings, for a `[banks.<id>]` with `protocol = "seb"`.
    api: Option<String>,
    psu_corporate_id: Option<String>,
    tls_certificate: Option<String>,
    tls_private_key: Option<SecretString>,
    tls_ca: Option<String>,
    bankid_app_url: Option<String>,
    redirect_uri: Option<String>,
    // OP's own settings, for a `[banks.<id>]` with `protocol = "op"`.
    authorize_url: Option<String>,
    issuer: Option<String>,
    jwks_url: Option<String>,
    payments_jwks_url: Option<String>,
    api_key: Option<SecretString>,
    signing_key_id: Option<String>,
    request_object_alg: Option<String>,
    request_object_audience: Option<String>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `FI` or `FI,SE` → the countries; each must be one pisgate serves.
pub(super) fn countries(key: &str, text: Option<&str>) -> Result<Vec<Country>, SettingsError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Err(SettingsError::missing(key));
    };
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let c = Country::from_code(&part.to_ascii_uppercase()).ok_or_else(|| {
            SettingsError::invalid(
                key,
                format!("{part:?} is not one of DK, FI, NO, SE (comma separated)"),
            )
        })?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err(SettingsError::missing(key));
    }
    Ok(out)
}

/// `EUR:sepa-credit-transfers,SEK:…` → per currency.
fn products_of(key: &str, text: &str) -> Result<BTreeMap<Currency, String>, SettingsError> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (currency, product) = part.split_once(':').ok_or_else(|| {
            SettingsError::invalid(key, format!("{part:?} is not CURRENCY:product"))
        })?;
        let currency =
            Currency::from_code(&currency.trim().to_ascii_uppercase()).ok_or_else(|| {
                SettingsError::invalid(key, format!("{currency:?} is not a currency"))
            })?;
        let product = product.trim();
        let plain = !product.is_empty()
            && product
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !plain {
            return Err(SettingsError::invalid(
                key,
                format!("{product:?} is not a payment product name"),
            ));
        }
        out.insert(currency, product.to_owned());
    }
    Ok(out)
}

pub(super) fn validate_banks(
    raw: BTreeMap<String, RawBank>,
    nordea: Option<(&NordeaSettings, Option<String>, Option<String>)>,
) -> Result<Vec<BankSettings>, SettingsError> {
    let mut banks = Vec::new();
    if let Some((n, name, list)) = nordea {
        banks.push(BankSettings {
            id: "nordea".into(),
            name: name
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| "Nordea".into()),
            countries: match list.as_deref().filter(|l| !l.trim().is_empty()) {
                None => Country::ALL.to_vec(),
                some => countries("nordea.countries", some)?,
            },
            protocol: BankProtocolSettings::Nordea(Box::new(n.clone())),
            needs_debtor_account: false,
        });
    }
    for (id, b) in raw {
        let prefix = format!("banks.{id}");
        let key = |k: &str| format!("{prefix}.{k}");
        if !valid_id(&id) {
            return Err(SettingsError::invalid(
                &key("protocol"),
                format!("the bank id {id:?} must be 1-32 of a-z, 0-9, - and _"),
            ));
        }
        if banks.iter().any(|e: &BankSettings| e.id == id) {
            return Err(SettingsError::invalid(
                &key("protocol"),
                format!(
                    "the bank {id:?} is configured twice (the [nordea] section is the bank \"nordea\")"
                ),
            ));
        }
        let protocol = required(&key("protocol"), b.protocol.clone())?;
        let name = required(&key("name"), b.name.clone())?;
        let is_seb = protocol.trim().eq_ignore_ascii_case("seb");
        let is_op = protocol.trim().eq_ignore_ascii_case("op");
        let countries = match b.countries.as_deref() {
            // SEB serves Sweden unless told otherwise, OP Finland.
            None if is_seb => vec![Country::Se],
            None if is_op => vec![Country::Fi],
            list => countries(&key("countries"), list)?,
        };
        let needs_debtor_account = b.needs_debtor_account.unwrap_or(false);
        let protocol = match protocol.trim().to_ascii_lowercase().as_str() {
            "nordea" => {
                // The defaults of `[nordea]` in default.toml, but the base URL: a second
                // Nordea-protocol bank is somewhere else by definition.
                let raw = RawNordea {
                    base_url: b.base_url,
                    client_id: b.client_id,
                    client_secret: b.client_secret,
                    private_key: b.private_key,
                    token_path: b.token_path.or(Some("/v5/authorize/token".into())),
                    connect_timeout_secs: b.connect_timeout_secs.or(Some(5)),
                    request_timeout_secs: b.request_timeout_secs.or(Some(30)),
                    read_attempts: b.read_attempts.or(Some(3)),
                    environment: b.environment.or(Some("production".into())),
                    delete_signing_profile: b.delete_signing_profile,
                    approval_timeout_secs: b.approval_timeout_secs,
                    certificate: b.certificate,
                    name: None,
                    countries: None,
                };
                BankProtocolSettings::Nordea(Box::new(validate_nordea_at(&prefix, raw)?))
            }
            "berlin-group" => {
                BankProtocolSettings::BerlinGroup(Box::new(validate_berlin_group(&prefix, b)?))
            }
            "seb" => BankProtocolSettings::Seb(Box::new(validate_seb(&prefix, b)?)),
            "op" => BankProtocolSettings::Op(Box::new(validate_op(&prefix, b)?)),
            other => {
                return Err(SettingsError::invalid(
                    &key("protocol"),
                    format!("{other:?} is not one of nordea, berlin-group, seb, op"),
                ));
            }
        };
        banks.push(BankSettings {
            id,
            name: name.trim().to_owned(),
            countries,
            protocol,
            needs_debtor_account,
        });
    }
    Ok(banks)
}

/// `base_url` (absolute http(s), https in production) and `environment` of a bank.
fn base_url_and_environment(
    prefix: &str,
    base_url: Option<String>,
    environment: Option<String>,
) -> Result<(String, BankEnvironment), SettingsError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let base_url = required(&key("base_url"), base_url)?
        .trim()
        .trim_end_matches('/')
        .to_owned();
    if url::Url::parse(&base_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .is_none()
    {
        return Err(SettingsError::invalid(
            &key("base_url"),
            format!("{base_url:?} is not an absolute http(s) URL"),
        ));
    }
    let environment = match environment.filter(|e| !e.trim().is_empty()) {
        None => BankEnvironment::Production,
        Some(e) => choice(
            &e,
            &[
                ("production", BankEnvironment::Production),
                ("sandbox", BankEnvironment::Sandbox),
            ],
        )
        .map_err(|e| SettingsError::invalid(&key("environment"), e))?,
    };
    if environment == BankEnvironment::Production && !base_url.starts_with("https://") {
        return Err(SettingsError::invalid(
            &key("base_url"),
            "a production bank is reached over https only",
        ));
    }
    Ok((base_url, environment))
}

/// `paid_statuses`: ACSC required, ACCC and ACSP allowed.
fn paid_statuses_of(key: &str, text: &str) -> Result<Vec<String>, SettingsError> {
    let paid_statuses: Vec<String> = text
        .split(',')
        .map(|s| s.trim().to_ascii_uppercase())
        .filter(|s| !s.is_empty())
        .collect();
    const SETTLED_OR_ACCEPTED: [&str; 3] = ["ACSC", "ACCC", "ACSP"];
    if !paid_statuses.iter().any(|s| s == "ACSC")
        || paid_statuses
            .iter()
            .any(|s| !SETTLED_OR_ACCEPTED.contains(&s.as_str()))
    {
        return Err(SettingsError::invalid(
            key,
            "a comma list of ACSC (required), ACCC and (only by agreement with the bank) ACSP",
        ));
    }
    Ok(paid_statuses)
}

/// `psu_ip_fallback`: required, an IP address.
fn psu_ip_fallback_of(key: &str, value: Option<String>) -> Result<std::net::IpAddr, SettingsError> {
    let text = required(key, value)?;
    text.trim()
        .parse()
        .map_err(|_| SettingsError::invalid(key, format!("{text:?} is not an IP address")))
}

/// A PEM setting read from its `_FILE` variable: the error names that variable.
fn required_file(key: &str, value: Option<String>) -> Result<String, SettingsError> {
    required(key, value).map_err(|_| SettingsError::Missing {
        key: key.to_owned(),
        env: format!("{}_FILE", super::env_name(key)),
    })
}

fn pem_check(key: &str, text: &str, label: &str) -> Result<(), SettingsError> {
    if !text.contains("-----BEGIN ") {
        return Err(SettingsError::invalid(
            &format!("{key}_file"),
            format!("is not PEM (no -----BEGIN {label}----- block)"),
        ));
    }
    Ok(())
}

fn validate_seb(prefix: &str, b: RawBank) -> Result<SebSettings, SettingsError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let (base_url, environment) = base_url_and_environment(prefix, b.base_url, b.environment)?;
    let api = match b.api.filter(|a| !a.trim().is_empty()) {
        None => "private".to_owned(),
        Some(a) => a.trim().to_ascii_lowercase(),
    };
    let api = match api.as_str() {
        "private" => SebApiSetting::Private,
        "corporate" => {
            let id = required(&key("psu_corporate_id"), b.psu_corporate_id).map_err(|_| {
                SettingsError::invalid(
                    &key("psu_corporate_id"),
                    "the corporate API needs the PSU's corporate id",
                )
            })?;
            let id = id.trim().to_owned();
            if !id.bytes().all(|c| c.is_ascii_graphic()) {
                return Err(SettingsError::invalid(
                    &key("psu_corporate_id"),
                    "must be visible ASCII without spaces",
                ));
            }
            SebApiSetting::Corporate {
                psu_corporate_id: id,
            }
        }
        other => {
            return Err(SettingsError::invalid(
                &key("api"),
                format!("{other:?} is not one of private, corporate"),
            ));
        }
    };
    let client_id = required(&key("client_id"), b.client_id)?.trim().to_owned();
    let client_secret = required_secret(&key("client_secret"), b.client_secret)?;
    let tls_certificate = required_file(&key("tls_certificate"), b.tls_certificate)?;
    pem_check(&key("tls_certificate"), &tls_certificate, "CERTIFICATE")?;
    let tls_private_key =
        required_secret(&key("tls_private_key"), b.tls_private_key).map_err(|_| {
            SettingsError::Missing {
                key: key("tls_private_key"),
                env: format!("{}_FILE", super::env_name(&key("tls_private_key"))),
            }
        })?;
    {
        use secrecy::ExposeSecret;
        pem_check(
            &key("tls_private_key"),
            tls_private_key.expose_secret(),
            "PRIVATE KEY",
        )?;
    }
    let tls_ca = b.tls_ca.filter(|c| !c.trim().is_empty());
    if let Some(ca) = &tls_ca {
        pem_check(&key("tls_ca"), ca, "CERTIFICATE")?;
    }
    let products = products_of(
        &key("products"),
        b.products
            .as_deref()
            .unwrap_or("SEK:private-se-domestic-credit-transfers,EUR:sepa-credit-transfers"),
    )?;
    if products.is_empty() {
        return Err(SettingsError::missing(&key("products")));
    }
    let paid_statuses = paid_statuses_of(
        &key("paid_statuses"),
        b.paid_statuses.as_deref().unwrap_or("ACSC"),
    )?;
    let psu_ip_fallback = psu_ip_fallback_of(&key("psu_ip_fallback"), b.psu_ip_fallback)?;
    let bankid_app_url = b
        .bankid_app_url
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "bankid:///".to_owned());
    let app_ok = url::Url::parse(&bankid_app_url)
        .ok()
        .filter(|u| {
            matches!(u.scheme(), "bankid" | "http" | "https")
                && u.query().is_none()
                && u.fragment().is_none()
        })
        .is_some();
    if !app_ok {
        return Err(SettingsError::invalid(
            &key("bankid_app_url"),
            format!("{bankid_app_url:?} is not a bankid:, http or https URL without a query"),
        ));
    }
    let redirect_uri = b
        .redirect_uri
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "https://localhost/pisgate/seb".to_owned());
    if url::Url::parse(&redirect_uri).is_err() {
        return Err(SettingsError::invalid(
            &key("redirect_uri"),
            format!("{redirect_uri:?} is not an absolute URL"),
        ));
    }
    Ok(SebSettings {
        base_url,
        api,
        client_id,
        client_secret,
        tls_certificate,
        tls_private_key,
        tls_ca,
        products,
        paid_statuses,
        psu_ip_fallback,
        bankid_app_url,
        redirect_uri,
        connect_timeout: secs(
            &key("connect_timeout_secs"),
            Some(b.connect_timeout_secs.unwrap_or(5)),
        )?,
        request_timeout: secs(
            &key("request_timeout_secs"),
            Some(b.request_timeout_secs.unwrap_or(30)),
        )?,
        read_attempts: positive(&key("read_attempts"), Some(b.read_attempts.unwrap_or(3)))?,
        approval_timeout: secs(
            &key("approval_timeout_secs"),
            Some(b.approval_timeout_secs.unwrap_or(300)),
        )?,
        environment,
    })
}

/// An absolute http(s) URL without query, user or fragment (`name` is the setting).
fn op_url(
    key: &str,
    value: Option<String>,
    required_: bool,
) -> Result<Option<String>, SettingsError> {
    let Some(text) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return if required_ {
            Err(SettingsError::missing(key))
        } else {
            Ok(None)
        };
    };
    let ok = url::Url::parse(&text)
        .ok()
        .filter(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.query().is_none()
                && u.fragment().is_none()
                && u.username().is_empty()
                && u.password().is_none()
        })
        .is_some();
    if !ok {
        return Err(SettingsError::invalid(
            key,
            format!("{text:?} is not an absolute http(s) URL without a query"),
        ));
    }
    Ok(Some(text))
}

/// A PEM secret read from its `_FILE` variable: the error names that variable.
fn required_secret_file(
    key: &str,
    value: Option<SecretString>,
) -> Result<SecretString, SettingsError> {
    required_secret(key, value).map_err(|_| SettingsError::Missing {
        key: key.to_owned(),
        env: format!("{}_FILE", super::env_name(key)),
    })
}

fn validate_op(prefix: &str, b: RawBank) -> Result<OpSettings, SettingsError> {
    use crate::bank::op::jose::RequestObjectAlg;
    use secrecy::ExposeSecret;
    let key = |k: &str| format!("{prefix}.{k}");
    let (base_url, environment) = base_url_and_environment(prefix, b.base_url, b.environment)?;
    let authorize_url = op_url(&key("authorize_url"), b.authorize_url, true)?.unwrap_or_default();
    let jwks_url = op_url(&key("jwks_url"), b.jwks_url, true)?.unwrap_or_default();
    let payments_jwks_url = op_url(&key("payments_jwks_url"), b.payments_jwks_url, false)?;
    if environment == BankEnvironment::Production {
        for (name, url) in [
            ("authorize_url", Some(&authorize_url)),
            ("jwks_url", Some(&jwks_url)),
            ("payments_jwks_url", payments_jwks_url.as_ref()),
        ] {
            if url.is_some_and(|u| !u.starts_with("https://")) {
                return Err(SettingsError::invalid(
                    &key(name),
                    "a production bank is reached over https only",
                ));
            }
        }
    }
    let issuer = required(&key("issuer"), b.issuer)?.trim().to_owned();
    let client_id = required(&key("client_id"), b.client_id)?.trim().to_owned();
    let client_secret = required_secret(&key("client_secret"), b.client_secret)?;
    let api_key = required_secret(&key("api_key"), b.api_key)?;
    if !api_key
        .expose_secret()
        .trim()
        .bytes()
        .all(|c| c.is_ascii_graphic())
    {
        return Err(SettingsError::invalid(
            &key("api_key"),
            "must be visible ASCII without spaces",
        ));
    }
    let tls_certificate = required_file(&key("tls_certificate"), b.tls_certificate)?;
    pem_check(&key("tls_certificate"), &tls_certificate, "CERTIFICATE")?;
    let tls_private_key = required_secret_file(&key("tls_private_key"), b.tls_private_key)?;
    pem_check(
        &key("tls_private_key"),
        tls_private_key.expose_secret(),
        "PRIVATE KEY",
    )?;
    let tls_ca = b.tls_ca.filter(|c| !c.trim().is_empty());
    if let Some(ca) = &tls_ca {
        pem_check(&key("tls_ca"), ca, "CERTIFICATE")?;
    }
    let private_key = required_secret_file(&key("private_key"), b.private_key)?;
    let certificate = required_file(&key("certificate"), b.certificate)?;
    qseal_matches(
        &key("private_key"),
        &key("certificate"),
        &private_key,
        &certificate,
    )?;
    let signing_key_id = required(&key("signing_key_id"), b.signing_key_id)?
        .trim()
        .to_owned();
    if !signing_key_id.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(SettingsError::invalid(
            &key("signing_key_id"),
            "must be visible ASCII without spaces",
        ));
    }
    let request_object_alg = match b.request_object_alg.filter(|a| !a.trim().is_empty()) {
        None => RequestObjectAlg::Rs256,
        Some(a) => RequestObjectAlg::parse(&a).ok_or_else(|| {
            SettingsError::invalid(
                &key("request_object_alg"),
                format!("{a:?} is not one of RS256, PS256"),
            )
        })?,
    };
    let request_object_audience = b
        .request_object_audience
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty());
    let paid_statuses: Vec<String> = b
        .paid_statuses
        .as_deref()
        .unwrap_or("Debited")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if !paid_statuses.iter().any(|s| s == "Debited")
        || paid_statuses
            .iter()
            .any(|s| !crate::bank::op::convert::PAYABLE.contains(&s.as_str()))
    {
        return Err(SettingsError::invalid(
            &key("paid_statuses"),
            "a comma list of Debited (required) and (only by agreement with OP) Accepted",
        ));
    }
    Ok(OpSettings {
        base_url,
        authorize_url,
        issuer,
        jwks_url,
        payments_jwks_url,
        client_id,
        client_secret,
        api_key,
        tls_certificate,
        tls_private_key,
        tls_ca,
        private_key,
        certificate,
        signing_key_id,
        request_object_alg,
        request_object_audience,
        paid_statuses,
        connect_timeout: secs(
            &key("connect_timeout_secs"),
            Some(b.connect_timeout_secs.unwrap_or(5)),
        )?,
        request_timeout: secs(
            &key("request_timeout_secs"),
            Some(b.request_timeout_secs.unwrap_or(30)),
        )?,
        read_attempts: positive(&key("read_attempts"), Some(b.read_attempts.unwrap_or(3)))?,
        environment,
    })
}

/// The QSealC's key is an RSA key and the QSealC holds its public key.
fn qseal_matches(
    key_name: &str,
    cert_name: &str,
    private_key: &SecretString,
    certificate: &str,
) -> Result<(), SettingsError> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    use secrecy::ExposeSecret;
    let pem = private_key.expose_secret();
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| {
            SettingsError::invalid(
                &format!("{key_name}_file"),
                "is not an RSA private key in PEM (PKCS#8 or PKCS#1)",
            )
        })?;
    let cert = crate::bank::nordea::certificate::EidasCertificate::from_text(certificate)
        .map_err(|e| SettingsError::invalid(&format!("{cert_name}_file"), e.to_string()))?;
    if !cert.matches(&key.to_public_key()) {
        return Err(SettingsError::invalid(
            &format!("{cert_name}_file"),
            "the QSealC does not hold the public key of private_key_file",
        ));
    }
    Ok(())
}

fn validate_berlin_group(prefix: &str, b: RawBank) -> Result<BerlinGroupSettings, SettingsError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let (base_url, environment) = base_url_and_environment(prefix, b.base_url, b.environment)?;
    let sign_requests = b.sign_requests.unwrap_or(true);
    let (private_key, certificate) = if sign_requests {
        let private_key = required_secret(&key("private_key"), b.private_key).map_err(|_| {
            SettingsError::Missing {
                key: key("private_key"),
                env: format!("{}_FILE", super::env_name(&key("private_key"))),
            }
        })?;
        let certificate =
            required(&key("certificate"), b.certificate).map_err(|_| SettingsError::Missing {
                key: key("certificate"),
                env: format!("{}_FILE", super::env_name(&key("certificate"))),
            })?;
        (Some(private_key), Some(certificate))
    } else {
        (
            b.private_key,
            b.certificate.filter(|c| !c.trim().is_empty()),
        )
    };
    let products = products_of(
        &key("products"),
        b.products.as_deref().unwrap_or("EUR:sepa-credit-transfers"),
    )?;
    if products.is_empty() {
        return Err(SettingsError::missing(&key("products")));
    }
    let periodic_product = match b.periodic_product.as_deref().map(str::trim) {
        Some(p) if !p.is_empty() => {
            // Checked with the same rule as the per-currency products.
            let one = products_of(&key("periodic_product"), &format!("EUR:{p}"))?;
            one.into_values().next()
        }
        _ => None,
    };
    let paid_statuses: Vec<String> = b
        .paid_statuses
        .as_deref()
        .unwrap_or("ACSC,ACCC")
        .split(',')
        .map(|s| s.trim().to_ascii_uppercase())
        .filter(|s| !s.is_empty())
        .collect();
    const SETTLED_OR_ACCEPTED: [&str; 3] = ["ACSC", "ACCC", "ACSP"];
    if !paid_statuses.iter().any(|s| s == "ACSC")
        || paid_statuses
            .iter()
            .any(|s| !SETTLED_OR_ACCEPTED.contains(&s.as_str()))
    {
        return Err(SettingsError::invalid(
            &key("paid_statuses"),
            "a comma list of ACSC (required), ACCC and (only by agreement with the bank) ACSP",
        ));
    }
    let psu_ip_fallback = required(&key("psu_ip_fallback"), b.psu_ip_fallback)?;
    let psu_ip_fallback = psu_ip_fallback.trim().parse().map_err(|_| {
        SettingsError::invalid(
            &key("psu_ip_fallback"),
            format!("{psu_ip_fallback:?} is not an IP address"),
        )
    })?;
    let sca_approach = match b.sca_approach.filter(|s| !s.trim().is_empty()) {
        None => ScaApproach::Redirect,
        Some(s) => choice(
            &s,
            &[
                ("redirect", ScaApproach::Redirect),
                ("explicit-redirect", ScaApproach::ExplicitRedirect),
                ("decoupled", ScaApproach::Decoupled),
                ("oauth", ScaApproach::OAuth),
            ],
        )
        .map_err(|e| SettingsError::invalid(&key("sca_approach"), e))?,
    };
    Ok(BerlinGroupSettings {
        base_url,
        private_key,
        certificate,
        sign_requests,
        products,
        periodic_product,
        paid_statuses,
        // The 1.3.12 schema requires debtorAccount: a bank says otherwise in its documentation.
        needs_debtor_account: b.needs_debtor_account.unwrap_or(true),
        sca_approach,
        psu_id_type: b.psu_id_type.filter(|t| !t.trim().is_empty()),
        remittance_exclusive: b.remittance_exclusive.unwrap_or(false),
        psu_ip_fallback,
        oauth_client_id: b
            .oauth_client_id
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "pisgate".to_owned()),
        connect_timeout: secs(
            &key("connect_timeout_secs"),
            Some(b.connect_timeout_secs.unwrap_or(5)),
        )?,
        request_timeout: secs(
            &key("request_timeout_secs"),
            Some(b.request_timeout_secs.unwrap_or(30)),
        )?,
        read_attempts: positive(&key("read_attempts"), Some(b.read_attempts.unwrap_or(3)))?,
        environment,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Settings, Sources};
    use super::*;
    use std::path::PathBuf;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let mut all: Vec<(&str, &str)> = vec![
            ("PISGATE__DATABASE__URL", "postgres://u:p@localhost/db"),
            ("PISGATE__NORDEA__CLIENT_ID", "client"),
            ("PISGATE__NORDEA__CLIENT_SECRET", "secret"),
            (
                "PISGATE__NORDEA__PRIVATE_KEY",
                "-----BEGIN PRIVATE KEY-----",
            ),
            ("PISGATE__TOKENS__ENCRYPTION_KEY", "AAAA"),
        ];
        all.extend_from_slice(vars);
        Settings::load_from(&Sources {
            config_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config"),
            environment: None,
            vars: all
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    const BERLIN: [(&str, &str); 7] = [
        ("PISGATE__BANKS__TESTBANK__PSU_IP_FALLBACK", "192.0.2.10"),
        ("PISGATE__BANKS__TESTBANK__PROTOCOL", "berlin-group"),
        ("PISGATE__BANKS__TESTBANK__NAME", "Test Bank"),
        ("PISGATE__BANKS__TESTBANK__COUNTRIES", "fi, SE"),
        (
            "PISGATE__BANKS__TESTBANK__BASE_URL",
            "https://api.testbank.example/psd2/",
        ),
        ("PISGATE__BANKS__TESTBANK__PRIVATE_KEY", "key pem"),
        ("PISGATE__BANKS__TESTBANK__CERTIFICATE", "cert pem"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = BERLIN.to_vec();
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn the_nordea_section_is_the_bank_nordea_and_a_variable_names_a_bank_in_lower_case() {
        let s = load(&BERLIN).unwrap();
        let ids: Vec<&str> = s.banks.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, ["nordea", "testbank"]);
        assert_eq!(s.banks[0].name, "Nordea");
        assert_eq!(s.banks[0].countries, Country::ALL.to_vec());
        let t = &s.banks[1];
        assert_eq!(t.name, "Test Bank");
        assert_eq!(t.countries, vec![Country::Fi, Country::Se]);
        let BankProtocolSettings::BerlinGroup(bg) = &t.protocol else {
            panic!("{t:?}")
        };
        assert_eq!(bg.base_url, "https://api.testbank.example/psd2");
        assert_eq!(
            bg.paid_statuses,
            ["ACSC", "ACCC"],
            "ACSP is never paid by default"
        );
        assert_eq!(
            bg.products.get(&Currency::Eur).map(String::as_str),
            Some("sepa-credit-transfers")
        );
        assert_eq!(bg.sca_approach, ScaApproach::Redirect);
        assert!(
            bg.sign_requests && bg.needs_debtor_account,
            "the 1.3.12 schema requires it"
        );
    }

    #[test]
    fn a_berlin_group_bank_reads_its_products_approach_and_what_means_paid() {
        let s = load(&with(&[
            (
                "PISGATE__BANKS__TESTBANK__PRODUCTS",
                "EUR:instant-sepa-credit-transfers,SEK:domestic",
            ),
            ("PISGATE__BANKS__TESTBANK__PAID_STATUSES", "acsc,ACSP"),
            ("PISGATE__BANKS__TESTBANK__SCA_APPROACH", "decoupled"),
            ("PISGATE__BANKS__TESTBANK__NEEDS_DEBTOR_ACCOUNT", "false"),
        ]))
        .unwrap();
        let BankProtocolSettings::BerlinGroup(bg) = &s.banks[1].protocol else {
            panic!()
        };
        assert_eq!(bg.products.len(), 2);
        assert_eq!(bg.periodic_product, None);
        assert_eq!(bg.paid_statuses, ["ACSC", "ACSP"]);
        assert_eq!(bg.sca_approach, ScaApproach::Decoupled);
        assert!(!bg.needs_debtor_account);
    }

    #[test]
    fn bad_bank_settings_name_the_variable_to_fix() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                with(&[("PISGATE__BANKS__TESTBANK__PROTOCOL", "swift")]),
                "PISGATE__BANKS__TESTBANK__PROTOCOL",
            ),
            (
                with(&[("PISGATE__BANKS__TESTBANK__COUNTRIES", "FI,DE")]),
                "PISGATE__BANKS__TESTBANK__COUNTRIES",
            ),
            (
                with(&[("PISGATE__BANKS__TESTBANK__PAID_STATUSES", "ACSC,RCVD")]),
                "PISGATE__BANKS__TESTBANK__PAID_STATUSES",
            ),
            (
                with(&[("PISGATE__BANKS__TESTBANK__PAID_STATUSES", "ACCC")]),
                "PISGATE__BANKS__TESTBANK__PAID_STATUSES",
            ),
            (
                with(&[("PISGATE__BANKS__TESTBANK__PSU_IP_FALLBACK", "localhost")]),
                "PISGATE__BANKS__TESTBANK__PSU_IP_FALLBACK",
            ),
            (
                with(&[("PISGATE__BANKS__TESTBANK__PRODUCTS", "EUR")]),
                "PISGATE__BANKS__TESTBANK__PRODUCTS",
            ),
            (
                with(&[("PISGATE__BANKS__TESTBANK__SCA_APPROACH", "embedded")]),
                "PISGATE__BANKS__TESTBANK__SCA_APPROACH",
            ),
            (
                with(&[(
                    "PISGATE__BANKS__TESTBANK__BASE_URL",
                    "http://api.testbank.example",
                )]),
                "PISGATE__BANKS__TESTBANK__BASE_URL",
            ),
            (
                BERLIN
                    .iter()
                    .copied()
                    .filter(|(k, _)| !k.ends_with("CERTIFICATE"))
                    .collect(),
                "PISGATE__BANKS__TESTBANK__CERTIFICATE_FILE",
            ),
            (
                BERLIN
                    .iter()
                    .copied()
                    .filter(|(k, _)| !k.ends_with("NAME"))
                    .collect(),
                "PISGATE__BANKS__TESTBANK__NAME",
            ),
            (
                vec![
                    ("PISGATE__BANKS__NORDEA__PROTOCOL", "nordea"),
                    ("PISGATE__BANKS__NORDEA__NAME", "Nordea again"),
                    ("PISGATE__BANKS__NORDEA__COUNTRIES", "FI"),
                ],
                "configured twice",
            ),
        ];
        for (vars, expected) in cases {
            let err = load(&vars).unwrap_err().to_string();
            assert!(err.contains(expected), "{vars:?}: {err}");
        }
    }

    #[test]
    fn a_sandbox_bank_may_use_http_and_a_bank_that_signs_nothing_needs_no_key() {
        let s = load(&[
            ("PISGATE__BANKS__BERLIN__PROTOCOL", "berlin-group"),
            ("PISGATE__BANKS__BERLIN__NAME", "Berlin"),
            ("PISGATE__BANKS__BERLIN__COUNTRIES", "FI"),
            (
                "PISGATE__BANKS__BERLIN__BASE_URL",
                "http://127.0.0.1:8091/psd2",
            ),
            ("PISGATE__BANKS__BERLIN__ENVIRONMENT", "sandbox"),
            ("PISGATE__BANKS__BERLIN__SIGN_REQUESTS", "false"),
            ("PISGATE__BANKS__BERLIN__PSU_IP_FALLBACK", "127.0.0.1"),
        ])
        .unwrap();
        assert_eq!(s.banks[1].id, "berlin");
    }

    const SEB: [(&str, &str); 8] = [
        ("PISGATE__BANKS__SEB__PROTOCOL", "seb"),
        ("PISGATE__BANKS__SEB__NAME", "SEB"),
        (
            "PISGATE__BANKS__SEB__BASE_URL",
            "https://api-sandbox.sebgroup.com/",
        ),
        ("PISGATE__BANKS__SEB__CLIENT_ID", "pisgate-client"),
        ("PISGATE__BANKS__SEB__CLIENT_SECRET", "seb-secret"),
        (
            "PISGATE__BANKS__SEB__TLS_CERTIFICATE",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        ),
        (
            "PISGATE__BANKS__SEB__TLS_PRIVATE_KEY",
            "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
        ),
        ("PISGATE__BANKS__SEB__PSU_IP_FALLBACK", "192.0.2.10"),
    ];

    fn seb_with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<(&str, &str)> = SEB
            .iter()
            .copied()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .collect();
        v.extend(extra.iter().copied().filter(|(_, v)| !v.is_empty()));
        v
    }

    fn seb_of(s: &Settings) -> &SebSettings {
        let b = s.banks.iter().find(|b| b.id == "seb").unwrap();
        let BankProtocolSettings::Seb(seb) = &b.protocol else {
            panic!("{b:?}")
        };
        seb
    }

    #[test]
    fn a_seb_bank_reads_its_settings_with_the_documented_defaults() {
        let s = load(&SEB).unwrap();
        let bank = s.banks.iter().find(|b| b.id == "seb").unwrap();
        assert_eq!(
            bank.countries,
            vec![Country::Se],
            "SEB serves SE by default"
        );
        assert_eq!(bank.protocol.name(), "seb");
        let seb = seb_of(&s);
        assert_eq!(seb.base_url, "https://api-sandbox.sebgroup.com");
        assert_eq!(seb.api, SebApiSetting::Private);
        assert_eq!(
            seb.products.get(&Currency::Sek).map(String::as_str),
            Some("private-se-domestic-credit-transfers")
        );
        assert_eq!(
            seb.products.get(&Currency::Eur).map(String::as_str),
            Some("sepa-credit-transfers")
        );
        assert_eq!(seb.paid_statuses, ["ACSC"], "ACSP is never paid by default");
        assert_eq!(seb.bankid_app_url, "bankid:///");
        assert_eq!(
            seb.autostart_link("7c40b5c9-fa74-49cf-b98c-bfe651f9a7c6"),
            "bankid:///?autostarttoken=7c40b5c9-fa74-49cf-b98c-bfe651f9a7c6&redirect=null"
        );
        assert_eq!(
            seb.autostart_link("a&b=c"),
            "bankid:///?autostarttoken=a%26b%3Dc&redirect=null"
        );
        assert_eq!(seb.approval_timeout, Duration::from_secs(300));
        assert_eq!(seb.tls_ca, None);
        assert_eq!(seb.environment, BankEnvironment::Production);
        let s = load(&seb_with(&[
            ("PISGATE__BANKS__SEB__API", "corporate"),
            ("PISGATE__BANKS__SEB__PSU_CORPORATE_ID", "40073144970009"),
            ("PISGATE__BANKS__SEB__PAID_STATUSES", "ACSC,ACSP"),
            (
                "PISGATE__BANKS__SEB__BANKID_APP_URL",
                "http://127.0.0.1:8093/test-bankid",
            ),
            ("PISGATE__BANKS__SEB__ENVIRONMENT", "sandbox"),
            ("PISGATE__BANKS__SEB__BASE_URL", "https://127.0.0.1:8092"),
            ("PISGATE__BANKS__SEB__COUNTRIES", "SE,FI"),
            ("PISGATE__BANKS__SEB__APPROVAL_TIMEOUT_SECS", "60"),
        ]))
        .unwrap();
        let seb = seb_of(&s);
        assert_eq!(
            seb.api,
            SebApiSetting::Corporate {
                psu_corporate_id: "40073144970009".into()
            }
        );
        assert_eq!(seb.paid_statuses, ["ACSC", "ACSP"]);
        assert_eq!(seb.bankid_app_url, "http://127.0.0.1:8093/test-bankid");
        assert_eq!(seb.approval_timeout, Duration::from_secs(60));
    }

    #[test]
    fn bad_seb_settings_name_the_variable_to_fix() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                seb_with(&[("PISGATE__BANKS__SEB__API", "retail")]),
                "PISGATE__BANKS__SEB__API",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__API", "corporate")]),
                "PISGATE__BANKS__SEB__PSU_CORPORATE_ID",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__CLIENT_ID", "")]),
                "PISGATE__BANKS__SEB__CLIENT_ID",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__CLIENT_SECRET", "")]),
                "PISGATE__BANKS__SEB__CLIENT_SECRET",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__TLS_CERTIFICATE", "")]),
                "PISGATE__BANKS__SEB__TLS_CERTIFICATE_FILE",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__TLS_PRIVATE_KEY", "")]),
                "PISGATE__BANKS__SEB__TLS_PRIVATE_KEY_FILE",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__TLS_PRIVATE_KEY", "not a pem")]),
                "PISGATE__BANKS__SEB__TLS_PRIVATE_KEY_FILE",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__TLS_CA", "not a pem")]),
                "PISGATE__BANKS__SEB__TLS_CA_FILE",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__PSU_IP_FALLBACK", "")]),
                "PISGATE__BANKS__SEB__PSU_IP_FALLBACK",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__PSU_IP_FALLBACK", "seb.se")]),
                "PISGATE__BANKS__SEB__PSU_IP_FALLBACK",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__PAID_STATUSES", "ACSP")]),
                "PISGATE__BANKS__SEB__PAID_STATUSES",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__PRODUCTS", "SEK")]),
                "PISGATE__BANKS__SEB__PRODUCTS",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__BANKID_APP_URL", "javascript:alert(1)")]),
                "PISGATE__BANKS__SEB__BANKID_APP_URL",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__BASE_URL", "http://api.sebgroup.com")]),
                "PISGATE__BANKS__SEB__BASE_URL",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__BASE_URL", "")]),
                "PISGATE__BANKS__SEB__BASE_URL",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__ENVIRONMENT", "test")]),
                "PISGATE__BANKS__SEB__ENVIRONMENT",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__COUNTRIES", "SE,DE")]),
                "PISGATE__BANKS__SEB__COUNTRIES",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__APPROVAL_TIMEOUT_SECS", "0")]),
                "PISGATE__BANKS__SEB__APPROVAL_TIMEOUT_SECS",
            ),
            (
                seb_with(&[("PISGATE__BANKS__SEB__REDIRECT_URI", "not a url")]),
                "PISGATE__BANKS__SEB__REDIRECT_URI",
            ),
        ];
        for (vars, expected) in cases {
            let err = load(&vars).unwrap_err().to_string();
            assert!(err.contains(expected), "{vars:?}: {err}");
            assert!(!err.contains("seb-secret"), "{err}");
        }
    }

    #[test]
    fn a_second_nordea_protocol_bank_takes_its_own_prefix() {
        let err = load(&[
            ("PISGATE__BANKS__NORDEA_DK__PROTOCOL", "nordea"),
            ("PISGATE__BANKS__NORDEA_DK__NAME", "Nordea DK"),
            ("PISGATE__BANKS__NORDEA_DK__COUNTRIES", "DK"),
            ("PISGATE__BANKS__NORDEA_DK__BASE_URL", "https://x.example"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("PISGATE__BANKS__NORDEA_DK__"), "{err}");
    }

    /// An OP bank's variables with a generated QSealC/QWAC (the test PKI).
    fn op_vars(
        pki: &crate::sandbox::berlin_group::test_pki::TestPki,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("PISGATE__BANKS__OP__PROTOCOL", "op".into()),
            ("PISGATE__BANKS__OP__NAME", "OP".into()),
            (
                "PISGATE__BANKS__OP__BASE_URL",
                "https://mtls-apis.psd2-sandbox.op.fi/".into(),
            ),
            (
                "PISGATE__BANKS__OP__AUTHORIZE_URL",
                "https://authorize.psd2-sandbox.op.fi/oauth/authorize".into(),
            ),
            (
                "PISGATE__BANKS__OP__ISSUER",
                "https://authorize.psd2-sandbox.op.fi".into(),
            ),
            (
                "PISGATE__BANKS__OP__JWKS_URL",
                "https://authorize.psd2-sandbox.op.fi/oauth/jwks/PSD2_OIDC".into(),
            ),
            ("PISGATE__BANKS__OP__CLIENT_ID", "pisgate-client".into()),
            ("PISGATE__BANKS__OP__CLIENT_SECRET", "op-secret".into()),
            ("PISGATE__BANKS__OP__API_KEY", "op-api-key".into()),
            (
                "PISGATE__BANKS__OP__TLS_CERTIFICATE",
                pki.tpp_cert_pem.clone(),
            ),
            (
                "PISGATE__BANKS__OP__TLS_PRIVATE_KEY",
                pki.tpp_key_pem.clone(),
            ),
            ("PISGATE__BANKS__OP__CERTIFICATE", pki.tpp_cert_pem.clone()),
            ("PISGATE__BANKS__OP__PRIVATE_KEY", pki.tpp_key_pem.clone()),
            ("PISGATE__BANKS__OP__SIGNING_KEY_ID", "qseal-1".into()),
        ]
    }

    fn op_load(
        vars: &[(&'static str, String)],
        extra: &[(&'static str, &'static str)],
    ) -> Result<Settings, SettingsError> {
        let mut v: Vec<(&str, &str)> = vars
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        v.extend(extra.iter().copied().filter(|(_, v)| !v.is_empty()));
        load(&v)
    }

    #[test]
    fn an_op_bank_reads_its_settings_with_the_documented_defaults_and_bad_ones_name_the_variable() {
        use crate::bank::op::jose::RequestObjectAlg;
        let pki = crate::sandbox::berlin_group::test_pki::generate("CN=pisgate TPP,C=FI").unwrap();
        let vars = op_vars(&pki);
        let s = op_load(&vars, &[]).unwrap();
        let bank = s.banks.iter().find(|b| b.id == "op").unwrap();
        assert_eq!(
            bank.countries,
            vec![Country::Fi],
            "OP serves Finland by default"
        );
        assert_eq!(bank.protocol.name(), "op");
        let BankProtocolSettings::Op(op) = &bank.protocol else {
            panic!()
        };
        assert_eq!(op.base_url, "https://mtls-apis.psd2-sandbox.op.fi");
        assert_eq!(
            op.paid_statuses,
            ["Debited"],
            "only Debited is paid by default"
        );
        assert_eq!(op.request_object_alg, RequestObjectAlg::Rs256);
        assert_eq!(op.request_object_audience, None);
        assert_eq!(op.payments_jwks_url, None);
        assert_eq!(op.tls_ca, None);
        assert_eq!(op.connect_timeout, Duration::from_secs(5));
        assert_eq!(op.request_timeout, Duration::from_secs(30));
        assert_eq!(op.read_attempts, 3);
        assert_eq!(op.environment, BankEnvironment::Production);
        // The settings build a client (registry).
        let client = crate::bank::registry::op_client("op", op).unwrap();
        assert_eq!(client.audience(), "https://mtls-apis.psd2-sandbox.op.fi");

        let s = op_load(
            &vars,
            &[
                ("PISGATE__BANKS__OP__REQUEST_OBJECT_ALG", "ps256"),
                ("PISGATE__BANKS__OP__PAID_STATUSES", "Debited,Accepted"),
                (
                    "PISGATE__BANKS__OP__PAYMENTS_JWKS_URL",
                    "https://sandbox.apis.op-palvelut.fi/psd2/sandbox/jwks/payments/jwks.json",
                ),
                (
                    "PISGATE__BANKS__OP__REQUEST_OBJECT_AUDIENCE",
                    "https://aud.example",
                ),
            ],
        )
        .unwrap();
        let BankProtocolSettings::Op(op) = &s.banks.iter().find(|b| b.id == "op").unwrap().protocol
        else {
            panic!()
        };
        assert_eq!(op.request_object_alg, RequestObjectAlg::Ps256);
        assert_eq!(op.paid_statuses, ["Debited", "Accepted"]);
        assert!(op.payments_jwks_url.is_some());
        assert_eq!(
            op.request_object_audience.as_deref(),
            Some("https://aud.example")
        );

        let other = crate::sandbox::berlin_group::test_pki::generate("CN=other,C=FI").unwrap();
        let cases: Vec<(Vec<(&'static str, &'static str)>, &str)> = vec![
            (
                vec![("PISGATE__BANKS__OP__AUTHORIZE_URL", "")],
                "PISGATE__BANKS__OP__AUTHORIZE_URL",
            ),
            (
                vec![(
                    "PISGATE__BANKS__OP__AUTHORIZE_URL",
                    "https://a.example/x?y=1",
                )],
                "PISGATE__BANKS__OP__AUTHORIZE_URL",
            ),
            (
                vec![("PISGATE__BANKS__OP__JWKS_URL", "http://a.example/jwks")],
                "PISGATE__BANKS__OP__JWKS_URL",
            ),
            (
                vec![("PISGATE__BANKS__OP__ISSUER", "")],
                "PISGATE__BANKS__OP__ISSUER",
            ),
            (
                vec![("PISGATE__BANKS__OP__API_KEY", "")],
                "PISGATE__BANKS__OP__API_KEY",
            ),
            (
                vec![("PISGATE__BANKS__OP__CLIENT_SECRET", "")],
                "PISGATE__BANKS__OP__CLIENT_SECRET",
            ),
            (
                vec![("PISGATE__BANKS__OP__SIGNING_KEY_ID", "")],
                "PISGATE__BANKS__OP__SIGNING_KEY_ID",
            ),
            (
                vec![("PISGATE__BANKS__OP__PRIVATE_KEY", "")],
                "PISGATE__BANKS__OP__PRIVATE_KEY_FILE",
            ),
            (
                vec![(
                    "PISGATE__BANKS__OP__PRIVATE_KEY",
                    "-----BEGIN PRIVATE KEY-----\nnope\n",
                )],
                "PISGATE__BANKS__OP__PRIVATE_KEY_FILE",
            ),
            (
                vec![("PISGATE__BANKS__OP__CERTIFICATE", "")],
                "PISGATE__BANKS__OP__CERTIFICATE_FILE",
            ),
            (
                vec![("PISGATE__BANKS__OP__TLS_CERTIFICATE", "")],
                "PISGATE__BANKS__OP__TLS_CERTIFICATE_FILE",
            ),
            (
                vec![("PISGATE__BANKS__OP__REQUEST_OBJECT_ALG", "none")],
                "PISGATE__BANKS__OP__REQUEST_OBJECT_ALG",
            ),
            (
                vec![("PISGATE__BANKS__OP__REQUEST_OBJECT_ALG", "HS256")],
                "PISGATE__BANKS__OP__REQUEST_OBJECT_ALG",
            ),
            (
                vec![("PISGATE__BANKS__OP__PAID_STATUSES", "Accepted")],
                "PISGATE__BANKS__OP__PAID_STATUSES",
            ),
            (
                vec![("PISGATE__BANKS__OP__PAID_STATUSES", "Debited,Authorized")],
                "PISGATE__BANKS__OP__PAID_STATUSES",
            ),
        ];
        for (extra, var) in cases {
            let err = op_load(&vars, &extra).unwrap_err().to_string();
            assert!(err.contains(var), "{var}: {err}");
            assert!(
                !err.contains("op-secret") && !err.contains("op-api-key"),
                "{err}"
            );
        }
        // A QSealC that does not hold the signing key's public key.
        let mut mismatched = vars.clone();
        for (k, v) in mismatched.iter_mut() {
            if *k == "PISGATE__BANKS__OP__CERTIFICATE" {
                *v = other.tpp_cert_pem.clone();
            }
        }
        let err = op_load(&mismatched, &[]).unwrap_err().to_string();
        assert!(
            err.contains("PISGATE__BANKS__OP__CERTIFICATE_FILE"),
            "{err}"
        );
        assert!(!err.contains("PRIVATE KEY"), "{err}");
    }
}
