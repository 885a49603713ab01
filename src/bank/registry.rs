//! The configured banks (`[banks.<id>]`): which bank a payment goes to, and its client.
//!
//! A payment records its bank's id; every later call for it (status, cancel, authorisation)
//! goes to that bank's client through [`Banks::client`]. A payment whose bank has since been
//! removed from the settings gets a client that refuses every call with a configuration
//! error, so the payment stays as it is (the poller backs off and an operator sees the error)
//! instead of being sent to another bank.
//!
//! Never: pick a bank for an existing payment other than the one it recorded.

use super::{
    Bank, BankError, BankRef, BankTraits, CancelOutcome, FundsAvailability, Initiated,
    PaymentDetails, PaymentInitiation, PsuContext, StatusReport, TokenSet,
};
use crate::domain::Country;
use async_trait::async_trait;
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One configured bank.
pub struct BankEntry {
    /// The id in the settings and on payments (`nordea`, `berlin`, …).
    pub id: String,
    /// What the shopper sees.
    pub name: String,
    /// The debtor countries it serves.
    pub countries: Vec<Country>,
    pub client: Arc<dyn Bank>,
}

impl std::fmt::Debug for BankEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankEntry")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("countries", &self.countries)
            .field("protocol", &self.client.traits().protocol)
            .finish()
    }
}

/// Every configured bank, by id.
#[derive(Debug, Default)]
pub struct Banks {
    entries: BTreeMap<String, Arc<BankEntry>>,
}

impl Banks {
    pub fn new(entries: impl IntoIterator<Item = BankEntry>) -> Banks {
        Banks {
            entries: entries
                .into_iter()
                .map(|e| (e.id.clone(), Arc::new(e)))
                .collect(),
        }
    }

    /// A single bank serving every country (tests, and the old single-bank settings).
    pub fn one(id: &str, name: &str, client: Arc<dyn Bank>) -> Banks {
        Banks::new([BankEntry {
            id: id.to_owned(),
            name: name.to_owned(),
            countries: Country::ALL.to_vec(),
            client,
        }])
    }

    /// These banks and `entry` (replacing a bank of the same id): tests add a bank of their
    /// own (a fake of a protocol) beside the configured ones.
    pub fn with(mut self, entry: BankEntry) -> Banks {
        self.entries.insert(entry.id.clone(), Arc::new(entry));
        self
    }

    pub fn get(&self, id: &str) -> Option<&Arc<BankEntry>> {
        self.entries.get(id)
    }

    /// The client of the bank `id`; for a bank no longer configured, one that refuses every
    /// call with a configuration error.
    pub fn client(&self, id: &str) -> Arc<dyn Bank> {
        match self.entries.get(id) {
            Some(e) => e.client.clone(),
            None => Arc::new(Unconfigured { id: id.to_owned() }),
        }
    }

    /// The banks serving a debtor country, by id.
    pub fn for_country(&self, country: Country) -> Vec<&Arc<BankEntry>> {
        self.entries
            .values()
            .filter(|e| e.countries.contains(&country))
            .collect()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<BankEntry>> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// An SEB client from one bank's settings (`protocol = "seb"`); a QWAC, CA or URL that
/// cannot be used names its variable.
pub fn seb_client(
    id: &str,
    s: &crate::config::SebSettings,
) -> Result<super::seb::SebClient, crate::config::SettingsError> {
    use super::seb::{SebApi, SebClient, SebConfig};
    use crate::config::SebApiSetting;
    use secrecy::ExposeSecret;
    let env = format!("PISGATE__BANKS__{}", id.to_uppercase());
    let mut config = SebConfig::new(
        id,
        &s.base_url,
        &s.client_id,
        s.client_secret.clone(),
        s.psu_ip_fallback,
    );
    config.api = match &s.api {
        SebApiSetting::Private => SebApi::Private,
        SebApiSetting::Corporate { psu_corporate_id } => SebApi::Corporate {
            psu_corporate_id: psu_corporate_id.clone(),
        },
    };
    // reqwest reads the certificate chain and the key from one PEM.
    config.tls_identity_pem = Some(SecretString::from(format!(
        "{}\n{}\n",
        s.tls_certificate.trim_end(),
        s.tls_private_key.expose_secret().trim_end()
    )));
    config.tls_ca_pem = s.tls_ca.clone();
    config.products = s
        .products
        .iter()
        .map(|(c, p)| (c.code().to_owned(), p.clone()))
        .collect();
    config.paid_statuses = s.paid_statuses.clone();
    config.redirect_uri = s.redirect_uri.clone();
    config.connect_timeout = s.connect_timeout;
    config.request_timeout = s.request_timeout;
    config.read_retries.max_attempts = s.read_attempts;
    SebClient::new(config).map_err(|e| {
        use super::seb::SebConfigError as E;
        let var = match &e {
            E::Identity(..) => format!("{env}__TLS_CERTIFICATE_FILE / {env}__TLS_PRIVATE_KEY_FILE"),
            E::Ca(..) => format!("{env}__TLS_CA_FILE"),
            _ => format!("{env}__*"),
        };
        crate::config::SettingsError::Load(format!("invalid setting {var}: {e}"))
    })
}

/// An OP client from one bank's settings (`protocol = "op"`); a QWAC, CA, key or URL that
/// cannot be used names its variable.
pub fn op_client(
    id: &str,
    s: &crate::config::OpSettings,
) -> Result<super::op::OpClient, crate::config::SettingsError> {
    use super::op::{OpClient, OpConfig};
    use secrecy::ExposeSecret;
    let env = format!("PISGATE__BANKS__{}", id.to_uppercase());
    let mut config = OpConfig::new(
        id,
        &s.base_url,
        &s.authorize_url,
        &s.issuer,
        &s.jwks_url,
        &s.client_id,
        s.client_secret.clone(),
        s.api_key.clone(),
        s.private_key.clone(),
        &s.signing_key_id,
    );
    config.payments_jwks_url = s.payments_jwks_url.clone();
    // reqwest reads the certificate chain and the key from one PEM.
    config.tls_identity_pem = Some(SecretString::from(format!(
        "{}\n{}\n",
        s.tls_certificate.trim_end(),
        s.tls_private_key.expose_secret().trim_end()
    )));
    config.tls_ca_pem = s.tls_ca.clone();
    config.request_object_alg = s.request_object_alg;
    config.request_object_audience = s.request_object_audience.clone();
    config.paid_statuses = s.paid_statuses.clone();
    config.connect_timeout = s.connect_timeout;
    config.request_timeout = s.request_timeout;
    config.read_retries.max_attempts = s.read_attempts;
    OpClient::new(config).map_err(|e| {
        use super::op::OpConfigError as E;
        let var = match &e {
            E::Identity(..) => format!("{env}__TLS_CERTIFICATE_FILE / {env}__TLS_PRIVATE_KEY_FILE"),
            E::Ca(..) => format!("{env}__TLS_CA_FILE"),
            E::SigningKey(..) => format!("{env}__PRIVATE_KEY_FILE"),
            E::PaidStatuses(..) => format!("{env}__PAID_STATUSES"),
            E::Url(_, name) | E::Empty(_, name) => format!("{env}__{}", name.to_uppercase()),
            E::Http(..) => format!("{env}__*"),
        };
        crate::config::SettingsError::Load(format!("invalid setting {var}: {e}"))
    })
}

/// The client of a bank that payments name but the settings no longer have.
struct Unconfigured {
    id: String,
}

impl Unconfigured {
    fn refuse(&self) -> BankError {
        BankError::BadCredentials {
            code: format!("bank_not_configured:{}", self.id),
        }
    }
}

#[async_trait]
impl Bank for Unconfigured {
    fn traits(&self) -> BankTraits {
        BankTraits {
            protocol: "unconfigured",
            return_carries_code: false,
            needs_debtor_account: false,
            shopper_token_required: false,
            submit_after_authorization: false,
            token_per_payment: false,
            cancel_needs_shopper_token: false,
            deleted_status: "CANC",
            return_in_fragment: false,
            acts_without_hop: false,
        }
    }

    async fn initiate(
        &self,
        _: &PaymentInitiation,
        _: Option<&PsuContext>,
    ) -> Result<Initiated, BankError> {
        Err(self.refuse())
    }

    async fn status(&self, _: &BankRef, _: Option<&PsuContext>) -> Result<StatusReport, BankError> {
        Err(self.refuse())
    }

    async fn details(
        &self,
        _: &BankRef,
        _: Option<&SecretString>,
        _: Option<&PsuContext>,
    ) -> Result<PaymentDetails, BankError> {
        Err(self.refuse())
    }

    async fn funds(
        &self,
        _: &super::BankPaymentId,
        _: &SecretString,
        _: Option<&PsuContext>,
    ) -> Result<FundsAvailability, BankError> {
        Err(self.refuse())
    }

    async fn cancel(
        &self,
        _: &[BankRef],
        _: Option<&SecretString>,
        _: Option<&PsuContext>,
    ) -> Result<CancelOutcome, BankError> {
        Err(self.refuse())
    }

    async fn exchange_code(&self, _: &SecretString, _: &str) -> Result<TokenSet, BankError> {
        Err(self.refuse())
    }

    async fn refresh(&self, _: &SecretString) -> Result<TokenSet, BankError> {
        Err(self.refuse())
    }

    async fn revoke(&self, _: &SecretString) -> Result<crate::bank::Revocation, BankError> {
        Err(self.refuse())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_payment_whose_bank_is_no_longer_configured_is_refused_as_a_configuration_fault() {
        let banks = Banks::default();
        let id = super::super::BankPaymentId::parse("p1").unwrap();
        let err = banks
            .client("gone")
            .status(&BankRef::id_only(id), None)
            .await
            .unwrap_err();
        assert!(err.is_configuration_fault(), "{err:?}");
        assert!(err.to_string().contains("gone") || format!("{err:?}").contains("gone"));
    }
}

#[cfg(test)]
mod seb_tests {
    use super::*;
    use crate::config::{SebApiSetting, SebSettings};
    use crate::domain::Currency;
    use std::time::Duration;

    fn settings(certificate: String, key: String) -> SebSettings {
        SebSettings {
            base_url: "https://api-sandbox.sebgroup.com".into(),
            api: SebApiSetting::Private,
            client_id: "pisgate-client".into(),
            client_secret: SecretString::from("seb-secret"),
            tls_certificate: certificate,
            tls_private_key: SecretString::from(key),
            tls_ca: None,
            products: BTreeMap::from([(
                Currency::Sek,
                "private-se-domestic-credit-transfers".to_owned(),
            )]),
            paid_statuses: vec!["ACSC".into()],
            psu_ip_fallback: "192.0.2.10".parse().unwrap(),
            bankid_app_url: "bankid:///".into(),
            redirect_uri: "https://localhost/pisgate/seb".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            read_attempts: 3,
            approval_timeout: Duration::from_secs(300),
            environment: crate::config::BankEnvironment::Production,
        }
    }

    #[test]
    fn a_seb_bank_builds_a_client_that_needs_the_shoppers_token_and_a_bad_qwac_names_its_files() {
        let pki =
            crate::sandbox::berlin_group::test_pki::generate("CN=pisgate test TPP,C=SE").unwrap();
        let client = seb_client(
            "seb",
            &settings(pki.tpp_cert_pem.clone(), pki.tpp_key_pem.clone()),
        )
        .unwrap();
        let traits = client.traits();
        assert_eq!(traits.protocol, "seb");
        assert!(traits.shopper_token_required);
        let mut with_ca = settings(pki.tpp_cert_pem.clone(), pki.tpp_key_pem.clone());
        with_ca.tls_ca = Some(pki.ca_pem.clone());
        assert!(seb_client("seb", &with_ca).is_ok());

        let broken = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----";
        let err = seb_client(
            "seb",
            &settings(
                broken.into(),
                "-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----".into(),
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("PISGATE__BANKS__SEB__TLS_CERTIFICATE_FILE"),
            "{err}"
        );
        assert!(!err.contains("seb-secret"), "{err}");
        let mut bad_ca = settings(pki.tpp_cert_pem.clone(), pki.tpp_key_pem.clone());
        bad_ca.tls_ca = Some("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----".into());
        let err = seb_client("seb", &bad_ca).unwrap_err().to_string();
        assert!(err.contains("PISGATE__BANKS__SEB__TLS_CA_FILE"), "{err}");
    }
}
