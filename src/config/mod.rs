//! Typed settings, loaded and validated once at start.
//!
//! Layers, later ones winning: `config/default.toml`, `config/$PISGATE_ENV.toml`, then
//! environment variables `PISGATE__SECTION__KEY`. A secret may also be given as
//! `PISGATE__SECTION__KEY_FILE=/path`, whose file content (without the trailing newline)
//! becomes the value; giving both forms is an error rather than a silent choice
//! ([`sources`]).
//!
//! The layers are deserialized with serde into a raw shape whose fields are typed (numbers,
//! booleans, humantime-style durations such as `5s` or `1h 30m`, listen addresses; see
//! [`values`]) but all optional, so that a missing value is reported by its setting's name
//! rather than serde's "missing field"; [`Settings::validate`] then checks presence, bounds
//! and the rules between settings, once. Every failure names the setting in its
//! environment-variable spelling, so one line tells an operator what to fix. Secrets are
//! [`SecretString`]s from the moment they are read: they never print.

mod banks;
mod sandbox;
mod sandbox_berlin_group;
mod sandbox_op;
mod sandbox_seb;
mod sources;
pub mod values;

pub use banks::{BankProtocolSettings, BankSettings, BerlinGroupSettings, ScaApproach};
pub use banks::{OpSettings, SebApiSetting, SebSettings};
pub use sandbox::{DEFAULT_SANDBOX_APPROVAL_TIMEOUT, SandboxSettings};
pub use sandbox_berlin_group::SandboxBerlinGroupSettings;
pub use sandbox_op::SandboxOpSettings;
pub use sandbox_seb::SandboxSebSettings;
pub use sources::Sources;
pub use values::parse_duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use values::{CidrList, Dur, DurList, Listen, choice, parsed};

const PREFIX: &str = "PISGATE";
const SEPARATOR: &str = "__";

/// Why the settings could not be loaded. The message is meant to be printed as is.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("missing required setting {env} ({key})")]
    Missing { key: String, env: String },
    #[error("invalid setting {env} ({key}): {reason}")]
    Invalid {
        key: String,
        env: String,
        reason: String,
    },
    #[error("cannot read {var}: {source}")]
    SecretFile {
        var: String,
        #[source]
        source: std::io::Error,
    },
    #[error("both {var} and {var}_FILE are set; give only one")]
    Ambiguous { var: String },
    #[error("cannot load settings: {0}")]
    Load(String),
    #[error(
        "no bank is configured: give Nordea's credentials (PISGATE__NORDEA__CLIENT_ID, \
         PISGATE__NORDEA__CLIENT_SECRET, PISGATE__NORDEA__PRIVATE_KEY_FILE) or another bank \
         (PISGATE__BANKS__<ID>__PROTOCOL and its settings)"
    )]
    NoBank,
    #[error(
        "config folder not found: {} has no default.toml (working directory: {}); run pisgate \
         from the folder that holds config/, or set PISGATE_CONFIG_DIR (or pass --config-dir) \
         to the config folder, e.g. PISGATE_CONFIG_DIR=/path/to/pisgate/config",
        dir.display(),
        cwd.display()
    )]
    NoConfigDir { dir: PathBuf, cwd: PathBuf },
}

impl SettingsError {
    fn invalid(key: &str, reason: impl Into<String>) -> Self {
        SettingsError::Invalid {
            key: key.to_owned(),
            env: env_name(key),
            reason: reason.into(),
        }
    }

    fn missing(key: &str) -> Self {
        SettingsError::Missing {
            key: key.to_owned(),
            env: env_name(key),
        }
    }
}

/// `database.url` → `PISGATE__DATABASE__URL`.
pub fn env_name(key: &str) -> String {
    format!(
        "{PREFIX}{SEPARATOR}{}",
        key.to_uppercase().replace('.', SEPARATOR)
    )
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub admin: AdminSettings,
    pub database: DatabaseSettings,
    pub rate_limit: RateLimitSettings,
    pub telemetry: TelemetrySettings,
    /// The `[nordea]` bank, when its credentials are given (see [`Settings::load_from`]); a
    /// deployment of Berlin Group banks only has none.
    pub nordea: Option<NordeaSettings>,
    /// Every bank, `nordea` (the `[nordea]` section) first, then `[banks.<id>]` by id.
    pub banks: Vec<BankSettings>,
    pub tokens: TokenSettings,
    pub ledger: LedgerSettings,
    pub payments: PaymentSettings,
    pub callback: CallbackSettings,
    pub poller: PollerSettings,
    pub refresher: RefresherSettings,
    pub webhooks: WebhookSettings,
    pub provider: ProviderSettings,
}

/// Who runs the shopper's pages (`[provider]`): the payment initiation service provider
/// (the TPP), named on every page a shopper sees, as PSD2 asks the shopper to be told.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// The TPP's legal name, e.g. `Example Payments Oy`.
    pub legal_name: String,
    /// Its licence as a shopper can check it, e.g. `FIN-FSA, payment institution 1234567-8`.
    pub licence: String,
}

/// The status poller (`[poller]`): follows every payment to a final state.
#[derive(Debug, Clone)]
pub struct PollerSettings {
    /// Run the poller in this replica.
    pub enabled: bool,
    /// Between polls while the shopper signs.
    pub signing_interval: Duration,
    /// Between polls past the signing window, until the bank reports a final status or the
    /// late-signing horizon passes.
    pub late_signing_interval: Duration,
    /// Between the few bank reads after a payment ended `expired` or `cancelled` while
    /// someone may hold its bank link (a later bank word that contradicts it is recorded as
    /// a disagreement, never applied).
    pub after_final_interval: Duration,
    /// Between polls once authorized and the execution date has come.
    pub authorized_interval: Duration,
    /// Between polls once authorized while the execution date is still ahead.
    pub scheduled_interval: Duration,
    /// How long a claim is held; a crashed replica's claims come due again after it.
    pub lease: Duration,
    /// Payments claimed at once.
    pub batch_size: u32,
    /// Polls in flight at once.
    pub concurrency: usize,
    /// Bank calls per second, per replica, to each bank.
    pub rate_per_sec: u32,
    /// Ceiling of the backoff after 5xx and timeouts.
    pub max_backoff: Duration,
    /// An idle poller looks for due work at least this often.
    pub idle_wait: Duration,
}

/// The token refresher (`[refresher]`).
#[derive(Debug, Clone)]
pub struct RefresherSettings {
    pub enabled: bool,
    /// How often to look for tokens about to expire.
    pub interval: Duration,
    /// Refresh an access token this long before it expires.
    pub refresh_before: Duration,
}

/// The webhook dispatcher (`[webhooks]`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub enabled: bool,
    /// Bound of one delivery attempt.
    pub request_timeout: Duration,
    /// Waits between attempts; after the last one a delivery is dead.
    pub retry_schedule: Vec<Duration>,
    pub lease: Duration,
    pub batch_size: u32,
    pub concurrency: usize,
    pub idle_wait: Duration,
    /// Accept `http://` and private-network endpoint URLs (local development and tests).
    pub allow_insecure_urls: bool,
    /// Deliveries of one endpoint in flight at once.
    pub per_endpoint_concurrency: u32,
    /// Deliveries of one merchant's endpoints, together, in flight at once.
    pub per_merchant_concurrency: u32,
    /// The only proxy webhooks go through (the environment's proxy variables are ignored).
    pub proxy: Option<String>,
}

/// Where and how to reach Nordea. The private key is PEM or bare base64 text, usually
/// given as `PISGATE__NORDEA__PRIVATE_KEY_FILE=/path/to/key.pem`.
#[derive(Debug, Clone)]
pub struct NordeaSettings {
    pub base_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub private_key: SecretString,
    pub token_path: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub read_attempts: u32,
    /// `nordea.delete_signing_profile`: how the bulk DELETE (a DELETE with a body) is
    /// signed, `three_headers` (default) or `with_digest`.
    pub delete_signing: crate::bank::nordea::DeleteSigning,
    /// `nordea.certificate` (usually `PISGATE__NORDEA__CERTIFICATE_FILE`): the app's eIDAS
    /// QSealC, PEM or the bare base64 body the developer portal takes. Checked at start
    /// in production (see `bank::nordea::certificate`).
    pub certificate: Option<String>,
    /// `production` or `sandbox`: sandbox-only features (e.g. `EVERY_MINUTE_SANDBOX_ONLY`)
    /// are refused in production.
    pub environment: BankEnvironment,
    /// `nordea.approval_timeout_secs`: the time the bank gives a shopper to sign, counted
    /// from its answer to the initiation (default 1800 s; `0`: unknown). Nordea shows no
    /// payment whose link nobody opened (404) and never reports such a payment's timeout:
    /// past the late-signing horizon and this, a link handed out that the bank still does
    /// not show is expired (it no longer opens). Set it at or above the bank's own.
    pub approval_timeout: Option<Duration>,
}

pub use crate::domain::Environment as BankEnvironment;

/// `nordea.approval_timeout_secs` when it is not set: 30 minutes.
pub const DEFAULT_BANK_APPROVAL_TIMEOUT: Duration = Duration::from_secs(1800);

/// Encryption of shoppers' tokens at rest: AES-256-GCM with a 32-byte key given as base64;
/// `key_id` is stored beside each ciphertext; `previous_keys` (`id:base64,id:base64`) still
/// decrypt after a rotation.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub encryption_key: SecretString,
    pub key_id: String,
    pub previous_keys: SecretString,
}

/// The ledger (`[ledger]`): the HMAC key that chains payment events and signs checkpoints
/// (base64 of 32 bytes, usually `PISGATE__LEDGER__KEY_FILE`), its id (stored beside every
/// event and checkpoint), previous keys (`id:base64,id:base64`) that still verify old chains
/// after a rotation, and the checkpoint worker.
///
/// The key is optional here because only `serve` and `ledger verify`/`checkpoint` need it;
/// they refuse to start without it ([`LedgerSettings::required_key`]).
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    pub key: Option<SecretString>,
    pub key_id: String,
    pub previous_keys: SecretString,
    /// Ids (`id,id`) of previous keys that verify history only: no live row sealed under
    /// them is trusted (see [`crate::ledger::keys`]).
    pub retired_key_ids: String,
    /// Run the checkpoint worker in this replica.
    pub checkpoint_enabled: bool,
    /// Between checkpoints (the first one at start).
    pub checkpoint_interval: Duration,
}

impl LedgerSettings {
    /// The key, or the setting's name when it is missing.
    pub fn required_key(&self) -> Result<&SecretString, SettingsError> {
        self.key.as_ref().ok_or_else(|| SettingsError::Missing {
            key: "ledger.key".into(),
            env: "PISGATE__LEDGER__KEY_FILE".into(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct PaymentSettings {
    /// How long the authorization hop leads new shoppers to the bank. It never ends a
    /// payment by itself: the bank's word (or the horizon) does.
    pub signing_window: Duration,
    /// From initiation: past it, with the bank still showing nothing signed, the payment is
    /// expired. A callback within it is handled normally (the OAuth state lives as long).
    /// At least the signing window; keep it above the bank's own approval timeout.
    pub late_signing_horizon: Duration,
    /// The in-flight bound of an idempotency key: a request's bank call ends before it, and
    /// past it a retry with the same key resumes the payment (a crashed replica's key within
    /// seconds). Below `server.request_timeout_secs`, so the merchant always gets an answer.
    pub idempotency_stale_after: Duration,
    /// How long an Idempotency-Key and its answer are kept (at least 24 hours); a worker
    /// purges them after that every `idempotency_purge_interval`.
    pub idempotency_retention: Duration,
    pub idempotency_purge_interval: Duration,
}

impl PaymentSettings {
    /// How long the initiation's bank call may take: the in-flight bound less a margin to
    /// record the answer, so that no two attempts for one key are ever live at once.
    pub fn initiation_budget(&self) -> Duration {
        let margin = (self.idempotency_stale_after / 5)
            .clamp(Duration::from_millis(500), Duration::from_secs(3));
        self.idempotency_stale_after.saturating_sub(margin)
    }
}

/// The shopper's return from the bank (`[callback]`).
#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// The shopper is redirected to the merchant within this bound, whatever the bank does;
    /// the code exchange and status read finish in the background if they need longer.
    pub redirect_timeout: Duration,
    /// The code exchange, retries included (429 within the bound, 503, connection refused),
    /// gives up after this.
    pub exchange_deadline: Duration,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// How the shopper's browser reaches us, without a trailing slash.
    pub public_url: String,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub body_limit_bytes: usize,
    /// Reverse proxies whose `X-Forwarded-For` is believed (`server.trusted_proxies`, CIDRs;
    /// empty by default): from any other peer the header is ignored and the peer's own
    /// address is the shopper's IP that pisgate tells the bank.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// The admin listener (`[admin]`): health, readiness, metrics and operator endpoints, never
/// exposed to the internet.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// The console's cookies carry `Secure` (`admin.console_secure_cookie`, default on; off
    /// only for plain-HTTP local development, as `config/sandbox.toml` does).
    pub console_secure_cookie: bool,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// Where the pool connects: PostgreSQL itself, or a pooler in front of it.
    pub url: SecretString,
    /// What sits behind `url` (`database.pooler`): with `Transaction`, nothing may rely on a
    /// session (see `ledger::db`).
    pub pooler: Pooler,
    /// A session connection to the primary (`database.direct_url`): LISTEN (one connection
    /// per replica) and migrations. Without it LISTEN uses a pool connection, unless the pool
    /// is transaction-pooled: then the workers fall back to their timers.
    pub direct_url: Option<SecretString>,
    /// A streaming replica for merchant list reads that tolerate staleness
    /// (`database.read_url`), used while its lag is at most `read_max_lag`.
    pub read_url: Option<SecretString>,
    pub read_max_lag: Duration,
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout: Duration,
    pub migrate_on_start: bool,
}

/// What `database.url` points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooler {
    /// PostgreSQL itself, or a pooler in session mode: a connection is a session.
    None,
    /// A pooler in transaction mode (PgBouncer `pool_mode = transaction`): a server
    /// connection is ours only inside a transaction.
    Transaction,
    /// A pooler in transaction mode that keeps protocol-level prepared statements across
    /// server connections (PgBouncer >= 1.21 with `max_prepared_statements` > 0): no session
    /// state either, but sqlx's statement cache works and single queries need no
    /// transaction of their own. `ledger::resolve_pooler` proves the pooler does that at
    /// start, and refuses to start when it does not.
    #[serde(rename = "transaction-prepared")]
    TransactionPrepared,
    /// Not said: `ledger::resolve_pooler` probes `url` at start and settles on one of the
    /// three. Until then it is treated as the safe one, `Transaction`.
    Auto,
}

impl Pooler {
    pub fn as_str(self) -> &'static str {
        match self {
            Pooler::None => "none",
            Pooler::Transaction => "transaction",
            Pooler::TransactionPrepared => "transaction-prepared",
            Pooler::Auto => "auto",
        }
    }

    /// Whether a connection of the pool is a session (no transaction pooler in between).
    pub fn is_session(self) -> bool {
        self == Pooler::None
    }
}

#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub requests_per_window: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    pub log_level: String,
    pub service_name: String,
}

/// The raw shape of the layered sources: typed, all optional (see the module docs).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    nordea: RawNordea,
    banks: std::collections::BTreeMap<String, banks::RawBank>,
    tokens: RawTokens,
    ledger: RawLedger,
    payments: RawPayments,
    server: RawServer,
    admin: RawAdmin,
    database: RawDatabase,
    rate_limit: RawRateLimit,
    telemetry: RawTelemetry,
    callback: RawCallback,
    poller: RawPoller,
    refresher: RawRefresher,
    webhooks: RawWebhooks,
    provider: RawProvider,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawProvider {
    legal_name: Option<String>,
    licence: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPoller {
    enabled: Option<bool>,
    #[serde(deserialize_with = "parsed")]
    signing_interval: Option<Dur>,
    #[serde(deserialize_with = "parsed")]
    late_signing_interval: Option<Dur>,
    #[serde(default, deserialize_with = "parsed")]
    after_final_interval: Option<Dur>,
    #[serde(deserialize_with = "parsed")]
    authorized_interval: Option<Dur>,
    #[serde(deserialize_with = "parsed")]
    scheduled_interval: Option<Dur>,
    #[serde(deserialize_with = "parsed")]
    lease: Option<Dur>,
    batch_size: Option<u32>,
    concurrency: Option<usize>,
    rate_per_sec: Option<u32>,
    #[serde(deserialize_with = "parsed")]
    max_backoff: Option<Dur>,
    #[serde(deserialize_with = "parsed")]
    idle_wait: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRefresher {
    enabled: Option<bool>,
    #[serde(deserialize_with = "parsed")]
    interval: Option<Dur>,
    #[serde(deserialize_with = "parsed")]
    refresh_before: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawWebhooks {
    enabled: Option<bool>,
    #[serde(deserialize_with = "parsed")]
    request_timeout: Option<Dur>,
    #[serde(deserialize_with = "parsed")]
    retry_schedule: Option<DurList>,
    #[serde(deserialize_with = "parsed")]
    lease: Option<Dur>,
    batch_size: Option<u32>,
    concurrency: Option<usize>,
    #[serde(deserialize_with = "parsed")]
    idle_wait: Option<Dur>,
    allow_insecure_urls: Option<bool>,
    per_endpoint_concurrency: Option<u32>,
    per_merchant_concurrency: Option<u32>,
    proxy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawNordea {
    /// What the shopper sees (default `Nordea`).
    name: Option<String>,
    /// The debtor countries it serves (default all four).
    countries: Option<String>,
    base_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    private_key: Option<SecretString>,
    token_path: Option<String>,
    connect_timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    read_attempts: Option<u32>,
    environment: Option<String>,
    delete_signing_profile: Option<String>,
    certificate: Option<String>,
    approval_timeout_secs: Option<u64>,
}

impl RawNordea {
    /// Whether any of the credentials that make `[nordea]` a bank is given.
    fn has_credentials(&self) -> bool {
        let secret = |v: &Option<SecretString>| {
            v.as_ref()
                .is_some_and(|v| !v.expose_secret().trim().is_empty())
        };
        self.client_id.as_ref().is_some_and(|v| !v.is_blank())
            || secret(&self.client_secret)
            || secret(&self.private_key)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawTokens {
    encryption_key: Option<SecretString>,
    key_id: Option<String>,
    previous_keys: Option<SecretString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawLedger {
    key: Option<SecretString>,
    key_id: Option<String>,
    previous_keys: Option<SecretString>,
    retired_key_ids: Option<String>,
    checkpoint_enabled: Option<bool>,
    #[serde(deserialize_with = "parsed")]
    checkpoint_interval: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPayments {
    signing_window_secs: Option<u64>,
    late_signing_horizon_secs: Option<u64>,
    idempotency_stale_after_secs: Option<u64>,
    #[serde(deserialize_with = "parsed")]
    idempotency_retention: Option<Dur>,
    #[serde(deserialize_with = "parsed")]
    idempotency_purge_interval: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCallback {
    #[serde(deserialize_with = "parsed")]
    redirect_timeout: Option<Dur>,
    #[serde(deserialize_with = "parsed")]
    exchange_deadline: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawServer {
    #[serde(deserialize_with = "parsed")]
    listen: Option<Listen>,
    public_url: Option<String>,
    request_timeout_secs: Option<u64>,
    shutdown_timeout_secs: Option<u64>,
    body_limit_bytes: Option<usize>,
    #[serde(deserialize_with = "parsed")]
    trusted_proxies: Option<CidrList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawAdmin {
    #[serde(deserialize_with = "parsed")]
    listen: Option<Listen>,
    console_secure_cookie: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDatabase {
    url: Option<SecretString>,
    pooler: Option<String>,
    direct_url: Option<SecretString>,
    read_url: Option<SecretString>,
    #[serde(deserialize_with = "parsed")]
    read_max_lag: Option<Dur>,
    max_connections: Option<u32>,
    min_connections: Option<u32>,
    acquire_timeout_secs: Option<u64>,
    migrate_on_start: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRateLimit {
    requests_per_window: Option<u32>,
    window_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawTelemetry {
    log_format: Option<String>,
    log_level: Option<String>,
    service_name: Option<String>,
}

impl Settings {
    /// Loads and validates the settings of the running process.
    pub fn load() -> Result<Settings, SettingsError> {
        Settings::load_from(&Sources::from_process())
    }

    pub fn load_from(sources: &Sources) -> Result<Settings, SettingsError> {
        Settings::validate(sources.read()?)
    }

    /// The environment whose payment rules apply (Nordea's sandbox-only recurrence): the
    /// `[nordea]` bank's, production without one.
    pub fn payment_rules_environment(&self) -> BankEnvironment {
        self.nordea
            .as_ref()
            .map_or(BankEnvironment::Production, |n| n.environment)
    }

    /// The longest time one call to any configured bank may take: what a lease covering a
    /// bank call must outlast.
    pub fn longest_bank_call(&self) -> Duration {
        self.banks
            .iter()
            .map(|b| b.protocol.request_timeout())
            .max()
            .unwrap_or(Duration::from_secs(30))
    }

    /// Presence, bounds and the rules between settings, checked once.
    fn validate(raw: Raw) -> Result<Settings, SettingsError> {
        let public_url = required("server.public_url", raw.server.public_url)?;
        let public_url = public_url.trim().trim_end_matches('/').to_owned();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://"))
            || public_url.len() <= "https://".len()
        {
            return Err(SettingsError::invalid(
                "server.public_url",
                format!("{public_url:?} is not an absolute http(s) URL"),
            ));
        }
        let server = ServerSettings {
            listen: required("server.listen", raw.server.listen)?.0,
            public_url,
            request_timeout: secs(
                "server.request_timeout_secs",
                raw.server.request_timeout_secs,
            )?,
            shutdown_timeout: secs(
                "server.shutdown_timeout_secs",
                raw.server.shutdown_timeout_secs,
            )?,
            body_limit_bytes: positive("server.body_limit_bytes", raw.server.body_limit_bytes)?,
            trusted_proxies: raw.server.trusted_proxies.unwrap_or_default().0,
        };
        let admin = AdminSettings {
            listen: required("admin.listen", raw.admin.listen)?.0,
            console_secure_cookie: required(
                "admin.console_secure_cookie",
                raw.admin.console_secure_cookie,
            )?,
        };

        let database = validate_database(raw.database)?;

        let rate_limit = RateLimitSettings {
            requests_per_window: positive(
                "rate_limit.requests_per_window",
                raw.rate_limit.requests_per_window,
            )?,
            window: secs("rate_limit.window_secs", raw.rate_limit.window_secs)?,
        };

        let log_format = choice(
            &required("telemetry.log_format", raw.telemetry.log_format)?,
            &[
                ("auto", LogFormat::Auto),
                ("json", LogFormat::Json),
                ("pretty", LogFormat::Pretty),
            ],
        )
        .map_err(|e| SettingsError::invalid("telemetry.log_format", e))?;
        let telemetry = TelemetrySettings {
            log_format,
            log_level: required("telemetry.log_level", raw.telemetry.log_level)?,
            service_name: required("telemetry.service_name", raw.telemetry.service_name)?,
        };

        let (nordea_name, nordea_countries) =
            (raw.nordea.name.clone(), raw.nordea.countries.clone());
        // `[nordea]` is a bank when any of its credentials is given (then all of them must
        // be); without any, the deployment has only its `[banks.<id>]`, and at least one.
        let nordea = if raw.nordea.has_credentials() {
            Some(validate_nordea_at("nordea", raw.nordea)?)
        } else {
            None
        };
        let banks = banks::validate_banks(
            raw.banks,
            nordea.as_ref().map(|n| (n, nordea_name, nordea_countries)),
        )?;
        if banks.is_empty() {
            return Err(SettingsError::NoBank);
        }
        let tokens = TokenSettings {
            encryption_key: required_secret("tokens.encryption_key", raw.tokens.encryption_key)?,
            key_id: required("tokens.key_id", raw.tokens.key_id)?,
            previous_keys: raw.tokens.previous_keys.unwrap_or_default(),
        };
        let ledger = validate_ledger(raw.ledger)?;
        let p = raw.payments;
        let payments = PaymentSettings {
            signing_window: secs("payments.signing_window_secs", p.signing_window_secs)?,
            late_signing_horizon: secs(
                "payments.late_signing_horizon_secs",
                p.late_signing_horizon_secs,
            )?,
            idempotency_stale_after: secs(
                "payments.idempotency_stale_after_secs",
                p.idempotency_stale_after_secs,
            )?,
            idempotency_retention: duration(
                "payments.idempotency_retention",
                p.idempotency_retention,
            )?,
            idempotency_purge_interval: duration(
                "payments.idempotency_purge_interval",
                p.idempotency_purge_interval,
            )?,
        };
        if payments.idempotency_retention < crate::ledger::idempotency::MIN_RETENTION {
            return Err(SettingsError::invalid(
                "payments.idempotency_retention",
                "must be at least 24h (merchants retry for a day)",
            ));
        }
        const MONTH: Duration = Duration::from_secs(30 * 24 * 3600);
        if payments.late_signing_horizon > MONTH {
            return Err(SettingsError::invalid(
                "payments.late_signing_horizon_secs",
                "must be at most 30 days",
            ));
        }
        if payments.late_signing_horizon < payments.signing_window {
            return Err(SettingsError::invalid(
                "payments.late_signing_horizon_secs",
                "must be at least payments.signing_window_secs",
            ));
        }
        if payments.idempotency_stale_after >= server.request_timeout {
            return Err(SettingsError::invalid(
                "payments.idempotency_stale_after_secs",
                "must be below server.request_timeout_secs (a payment request must answer before the server cuts it)",
            ));
        }
        let callback = CallbackSettings {
            redirect_timeout: duration("callback.redirect_timeout", raw.callback.redirect_timeout)?,
            exchange_deadline: duration(
                "callback.exchange_deadline",
                raw.callback.exchange_deadline,
            )?,
        };
        if callback.exchange_deadline > Duration::from_secs(3600) {
            return Err(SettingsError::invalid(
                "callback.exchange_deadline",
                "must be at most an hour (a bank's authorization code lives minutes)",
            ));
        }
        if callback.redirect_timeout >= server.request_timeout {
            return Err(SettingsError::invalid(
                "callback.redirect_timeout",
                "must be below server.request_timeout_secs",
            ));
        }
        let p = raw.poller;
        let poller = PollerSettings {
            enabled: required("poller.enabled", p.enabled)?,
            signing_interval: duration("poller.signing_interval", p.signing_interval)?,
            late_signing_interval: duration(
                "poller.late_signing_interval",
                p.late_signing_interval,
            )?,
            after_final_interval: duration(
                "poller.after_final_interval",
                p.after_final_interval
                    .or(Some(Dur(Duration::from_secs(600)))),
            )?,
            authorized_interval: duration("poller.authorized_interval", p.authorized_interval)?,
            scheduled_interval: duration("poller.scheduled_interval", p.scheduled_interval)?,
            lease: duration("poller.lease", p.lease)?,
            batch_size: positive("poller.batch_size", p.batch_size)?,
            concurrency: positive("poller.concurrency", p.concurrency)?,
            rate_per_sec: positive("poller.rate_per_sec", p.rate_per_sec)?,
            max_backoff: duration("poller.max_backoff", p.max_backoff)?,
            idle_wait: duration("poller.idle_wait", p.idle_wait)?,
        };
        let r = raw.refresher;
        let refresher = RefresherSettings {
            enabled: required("refresher.enabled", r.enabled)?,
            interval: duration("refresher.interval", r.interval)?,
            refresh_before: duration("refresher.refresh_before", r.refresh_before)?,
        };
        let w = raw.webhooks;
        let webhooks = WebhookSettings {
            enabled: required("webhooks.enabled", w.enabled)?,
            request_timeout: duration("webhooks.request_timeout", w.request_timeout)?,
            retry_schedule: required("webhooks.retry_schedule", w.retry_schedule)?.0,
            lease: duration("webhooks.lease", w.lease)?,
            batch_size: positive("webhooks.batch_size", w.batch_size)?,
            concurrency: positive("webhooks.concurrency", w.concurrency)?,
            idle_wait: duration("webhooks.idle_wait", w.idle_wait)?,
            allow_insecure_urls: required("webhooks.allow_insecure_urls", w.allow_insecure_urls)?,
            per_endpoint_concurrency: positive(
                "webhooks.per_endpoint_concurrency",
                w.per_endpoint_concurrency,
            )?,
            per_merchant_concurrency: positive(
                "webhooks.per_merchant_concurrency",
                w.per_merchant_concurrency,
            )?,
            proxy: w.proxy.filter(|p| !p.trim().is_empty()),
        };
        if webhooks.lease <= webhooks.request_timeout {
            return Err(SettingsError::invalid(
                "webhooks.lease",
                "must be longer than webhooks.request_timeout",
            ));
        }
        let provider = ProviderSettings {
            legal_name: shown_text("provider.legal_name", raw.provider.legal_name)?,
            licence: shown_text("provider.licence", raw.provider.licence)?,
        };
        Ok(Settings {
            provider,
            server,
            admin,
            database,
            rate_limit,
            telemetry,
            nordea,
            banks,
            tokens,
            ledger,
            payments,
            callback,
            poller,
            refresher,
            webhooks,
        })
    }
}

fn validate_nordea_at(prefix: &str, n: RawNordea) -> Result<NordeaSettings, SettingsError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let base_url = required(&key("base_url"), n.base_url)?
        .trim()
        .trim_end_matches('/')
        .to_owned();
    if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
        return Err(SettingsError::invalid(
            &key("base_url"),
            format!("{base_url:?} is not an absolute http(s) URL"),
        ));
    }
    let environment = choice(
        &required(&key("environment"), n.environment)?,
        &[
            ("production", BankEnvironment::Production),
            ("sandbox", BankEnvironment::Sandbox),
        ],
    )
    .map_err(|e| SettingsError::invalid(&key("environment"), e))?;
    let token_path = required(&key("token_path"), n.token_path)?;
    if !token_path.starts_with('/') {
        return Err(SettingsError::invalid(
            &key("token_path"),
            "must start with /",
        ));
    }
    use crate::bank::nordea::DeleteSigning;
    let delete_signing = match n.delete_signing_profile.filter(|t| !t.trim().is_empty()) {
        None => DeleteSigning::default(),
        Some(text) => choice(
            &text,
            &[
                ("three_headers", DeleteSigning::ThreeHeaders),
                ("with_digest", DeleteSigning::WithDigest),
            ],
        )
        .map_err(|e| SettingsError::invalid(&key("delete_signing_profile"), e))?,
    };
    Ok(NordeaSettings {
        base_url,
        client_id: required(&key("client_id"), n.client_id)?,
        client_secret: required_secret(&key("client_secret"), n.client_secret)?,
        // The variable operators set is PISGATE__NORDEA__PRIVATE_KEY_FILE.
        private_key: required_secret(&key("private_key"), n.private_key).map_err(|_| {
            SettingsError::Missing {
                key: key("private_key"),
                env: format!("{}_FILE", env_name(&key("private_key"))),
            }
        })?,
        token_path,
        connect_timeout: secs(&key("connect_timeout_secs"), n.connect_timeout_secs)?,
        request_timeout: secs(&key("request_timeout_secs"), n.request_timeout_secs)?,
        read_attempts: positive(&key("read_attempts"), n.read_attempts)?,
        delete_signing,
        certificate: n.certificate.filter(|c| !c.trim().is_empty()),
        environment,
        approval_timeout: match n.approval_timeout_secs {
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
            None => Some(DEFAULT_BANK_APPROVAL_TIMEOUT),
        },
    })
}

impl DatabaseSettings {
    pub fn url(&self) -> &str {
        self.url.expose_secret()
    }

    /// Where sessions go (LISTEN, migrations): the direct URL, or `url` when nothing in
    /// between pools transactions. `None`: no session is to be had.
    pub fn session_url(&self) -> Option<&str> {
        match (&self.direct_url, self.pooler) {
            (Some(direct), _) => Some(direct.expose_secret()),
            (None, Pooler::None) => Some(self.url()),
            (None, Pooler::Transaction | Pooler::TransactionPrepared | Pooler::Auto) => None,
        }
    }
}

/// A value that may be present but empty (text), which counts as missing.
trait Blank {
    fn is_blank(&self) -> bool {
        false
    }
}

impl Blank for String {
    fn is_blank(&self) -> bool {
        self.trim().is_empty()
    }
}
impl Blank for bool {}
impl Blank for u32 {}
impl Blank for u64 {}
impl Blank for usize {}
impl Blank for Dur {}
impl Blank for DurList {}
impl Blank for Listen {}

/// The value, or the setting's name when it is missing (or blank text).
fn required<T: Blank>(key: &str, value: Option<T>) -> Result<T, SettingsError> {
    value
        .filter(|v| !v.is_blank())
        .ok_or_else(|| SettingsError::missing(key))
}

/// Text shown to shoppers as it is: there, at most 200 characters, on one line.
fn shown_text(key: &str, value: Option<String>) -> Result<String, SettingsError> {
    let value = required(key, value)?.trim().to_owned();
    if value.chars().count() > 200 {
        return Err(SettingsError::invalid(
            key,
            "must be at most 200 characters",
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(SettingsError::invalid(
            key,
            "must be one line without control characters",
        ));
    }
    Ok(value)
}

/// A secret that must be there (and not blank).
fn required_secret(key: &str, value: Option<SecretString>) -> Result<SecretString, SettingsError> {
    value
        .filter(|v| !v.expose_secret().trim().is_empty())
        .ok_or_else(|| SettingsError::missing(key))
}

/// `value`, if it is at least `min`.
fn at_least<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
) -> Result<T, SettingsError> {
    if value < min {
        return Err(SettingsError::invalid(
            key,
            format!("must be at least {min}"),
        ));
    }
    Ok(value)
}

/// A count that must be there and be at least 1.
fn positive<T: Blank + PartialOrd + std::fmt::Display + From<u8>>(
    key: &str,
    value: Option<T>,
) -> Result<T, SettingsError> {
    at_least(key, required(key, value)?, T::from(1))
}

/// A whole number of seconds, at least 1 (the `*_secs` settings).
fn secs(key: &str, value: Option<u64>) -> Result<Duration, SettingsError> {
    positive(key, value).map(Duration::from_secs)
}

/// A duration that must be there and be more than zero.
fn duration(key: &str, value: Option<Dur>) -> Result<Duration, SettingsError> {
    let d = required(key, value)?.0;
    if d.is_zero() {
        return Err(SettingsError::invalid(key, "must be more than zero"));
    }
    Ok(d)
}

/// A PostgreSQL URL; the value may hold a password, so it is never echoed.
fn postgres_url(key: &str, url: SecretString) -> Result<SecretString, SettingsError> {
    if !(url.expose_secret().starts_with("postgres://")
        || url.expose_secret().starts_with("postgresql://"))
    {
        return Err(SettingsError::invalid(
            key,
            "must be a postgres:// or postgresql:// URL",
        ));
    }
    Ok(url)
}

/// An optional URL: blank counts as not set.
fn optional_postgres_url(
    key: &str,
    url: Option<SecretString>,
) -> Result<Option<SecretString>, SettingsError> {
    url.filter(|u| !u.expose_secret().trim().is_empty())
        .map(|u| postgres_url(key, u))
        .transpose()
}

fn validate_database(raw: RawDatabase) -> Result<DatabaseSettings, SettingsError> {
    let url = postgres_url("database.url", required_secret("database.url", raw.url)?)?;
    let pooler = match required("database.pooler", raw.pooler)?.trim() {
        "none" => Pooler::None,
        "transaction" => Pooler::Transaction,
        "transaction-prepared" => Pooler::TransactionPrepared,
        "auto" => Pooler::Auto,
        other => {
            return Err(SettingsError::invalid(
                "database.pooler",
                format!(
                    "{other:?} is not one of \"auto\", \"none\", \"transaction\", \
                     \"transaction-prepared\""
                ),
            ));
        }
    };
    let max_connections = positive("database.max_connections", raw.max_connections)?;
    let min_connections = required("database.min_connections", raw.min_connections)?;
    if min_connections > max_connections {
        return Err(SettingsError::invalid(
            "database.min_connections",
            format!("{min_connections} is more than database.max_connections ({max_connections})"),
        ));
    }
    Ok(DatabaseSettings {
        url,
        pooler,
        direct_url: optional_postgres_url("database.direct_url", raw.direct_url)?,
        read_url: optional_postgres_url("database.read_url", raw.read_url)?,
        read_max_lag: duration("database.read_max_lag", raw.read_max_lag)?,
        max_connections,
        min_connections,
        acquire_timeout: secs("database.acquire_timeout_secs", raw.acquire_timeout_secs)?,
        migrate_on_start: required("database.migrate_on_start", raw.migrate_on_start)?,
    })
}

fn validate_ledger(l: RawLedger) -> Result<LedgerSettings, SettingsError> {
    Ok(LedgerSettings {
        key: l.key.filter(|k| !k.expose_secret().trim().is_empty()),
        key_id: required("ledger.key_id", l.key_id)?,
        previous_keys: l.previous_keys.unwrap_or_default(),
        retired_key_ids: l.retired_key_ids.unwrap_or_default(),
        checkpoint_enabled: required("ledger.checkpoint_enabled", l.checkpoint_enabled)?,
        checkpoint_interval: duration("ledger.checkpoint_interval", l.checkpoint_interval)?,
    })
}

/// What the operator commands (`migrate`, `merchant`, `ledger`) need, and nothing more:
/// the database, and for the ledger commands the ledger key. They never ask for the bank's
/// credentials, the signing key or the token key.
#[derive(Debug, Clone)]
pub struct ToolSettings {
    pub database: DatabaseSettings,
    pub ledger: LedgerSettings,
}

/// The sections the operator commands read; the others are not even parsed, so a setting
/// only `serve` uses can never stop them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawTool {
    database: RawDatabase,
    ledger: RawLedger,
}

impl ToolSettings {
    pub fn load() -> Result<ToolSettings, SettingsError> {
        ToolSettings::load_from(&Sources::from_process())
    }

    pub fn load_from(sources: &Sources) -> Result<ToolSettings, SettingsError> {
        let raw: RawTool = sources.read()?;
        Ok(ToolSettings {
            database: validate_database(raw.database)?,
            ledger: validate_ledger(raw.ledger)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bare_sources(vars: &[(&str, &str)]) -> Sources {
        Sources {
            config_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config"),
            environment: None,
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    const DB: (&str, &str) = ("PISGATE__DATABASE__URL", "postgres://u:p@localhost/db");

    fn sources(vars: &[(&str, &str)]) -> Sources {
        let mut all: Vec<(&str, &str)> = vec![
            ("PISGATE__NORDEA__CLIENT_ID", "client"),
            ("PISGATE__NORDEA__CLIENT_SECRET", "secret"),
            (
                "PISGATE__NORDEA__PRIVATE_KEY",
                "-----BEGIN PRIVATE KEY-----",
            ),
            ("PISGATE__TOKENS__ENCRYPTION_KEY", "AAAA"),
        ];
        all.extend_from_slice(vars);
        bare_sources(&all)
    }

    #[test]
    fn defaults_plus_a_database_url_are_enough() {
        let s = Settings::load_from(&sources(&[DB])).unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.admin.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(s.database.max_connections, 20);
        assert_eq!(s.database.url(), "postgres://u:p@localhost/db");
    }

    #[test]
    fn a_config_folder_without_default_toml_says_so_and_how_to_point_at_it() {
        let mut s = sources(&[DB]);
        s.config_dir = PathBuf::from("/nonexistent/config");
        let err = Settings::load_from(&s).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/config has no default.toml")
                && err.contains("PISGATE_CONFIG_DIR")
                && err.contains("--config-dir"),
            "{err}"
        );
    }

    #[test]
    fn values_are_typed_once_and_every_error_quotes_the_value_under_its_variable() {
        let s = Settings::load_from(&sources(&[
            DB,
            ("PISGATE__POLLER__LEASE", "1h 30m"),
            ("PISGATE__POLLER__IDLE_WAIT", "90"),
            ("PISGATE__POLLER__ENABLED", "no"),
            ("PISGATE__WEBHOOKS__RETRY_SCHEDULE", "5s, 1m,2h"),
            ("PISGATE__TELEMETRY__LOG_FORMAT", "JSON"),
            ("PISGATE__ADMIN__LISTEN", "0.0.0.0:9100"),
        ]))
        .unwrap();
        assert_eq!(s.poller.lease, Duration::from_secs(5400));
        assert_eq!(s.poller.idle_wait, Duration::from_secs(90));
        assert!(!s.poller.enabled);
        assert_eq!(
            s.webhooks.retry_schedule,
            [5, 60, 7200].map(Duration::from_secs)
        );
        assert_eq!(s.telemetry.log_format, LogFormat::Json);
        assert_eq!(s.admin.listen.port(), 9100);
        for (var, value, reason) in [
            (
                "PISGATE__POLLER__ENABLED",
                "maybe",
                "\"maybe\" is not true or false",
            ),
            (
                "PISGATE__POLLER__LEASE",
                "soon",
                "\"soon\" is not a duration",
            ),
            ("PISGATE__POLLER__LEASE", "0s", "must be more than zero"),
            ("PISGATE__POLLER__BATCH_SIZE", "0", "must be at least 1"),
            (
                "PISGATE__POLLER__BATCH_SIZE",
                "-3",
                "\"-3\" is not a whole number",
            ),
            (
                "PISGATE__WEBHOOKS__RETRY_SCHEDULE",
                "5s,x",
                "\"x\" is not a duration",
            ),
            (
                "PISGATE__NORDEA__ENVIRONMENT",
                "staging",
                "is not one of production, sandbox",
            ),
        ] {
            let err = Settings::load_from(&sources(&[DB, (var, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("invalid setting {var} (")) && err.contains(reason),
                "{var}={value}: {err}"
            );
        }
    }

    #[test]
    fn the_operator_commands_never_parse_the_sections_they_do_not_use() {
        let s = ToolSettings::load_from(&bare_sources(&[
            DB,
            ("PISGATE__POLLER__LEASE", "not a duration"),
            ("PISGATE__SERVER__LISTEN", "nowhere"),
        ]))
        .unwrap();
        assert_eq!(s.database.max_connections, 20);
    }

    #[test]
    fn a_missing_database_url_names_the_variable() {
        let err = Settings::load_from(&sources(&[])).unwrap_err().to_string();
        assert!(err.contains("PISGATE__DATABASE__URL"), "{err}");
    }

    #[test]
    fn a_malformed_number_names_the_variable() {
        let err = Settings::load_from(&sources(&[
            DB,
            ("PISGATE__DATABASE__MAX_CONNECTIONS", "many"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("PISGATE__DATABASE__MAX_CONNECTIONS"), "{err}");
        assert!(err.contains("many"), "{err}");
    }

    #[test]
    fn transaction_prepared_is_a_pooler_mode_without_sessions_and_a_misspelling_is_named() {
        let s = Settings::load_from(&sources(&[
            DB,
            ("PISGATE__DATABASE__POOLER", "transaction-prepared"),
        ]))
        .unwrap();
        assert_eq!(s.database.pooler, Pooler::TransactionPrepared);
        assert_eq!(s.database.pooler.as_str(), "transaction-prepared");
        assert!(!s.database.pooler.is_session());
        // As with "transaction": no session through the pooler, only over the direct URL.
        assert_eq!(s.database.session_url(), None);
        let s = Settings::load_from(&sources(&[
            DB,
            ("PISGATE__DATABASE__POOLER", " transaction-prepared "),
            ("PISGATE__DATABASE__DIRECT_URL", "postgres://u:p@primary/db"),
        ]))
        .unwrap();
        assert_eq!(s.database.pooler, Pooler::TransactionPrepared);
        assert_eq!(s.database.session_url(), Some("postgres://u:p@primary/db"));

        for wrong in ["transaction_prepared", "prepared", "Transaction-Prepared"] {
            let err = Settings::load_from(&sources(&[DB, ("PISGATE__DATABASE__POOLER", wrong)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("PISGATE__DATABASE__POOLER"), "{err}");
            assert!(err.contains("\"transaction-prepared\""), "{err}");
        }
    }

    #[test]
    fn the_pooler_and_the_extra_database_urls_are_checked_and_named() {
        // Unsaid, the pooler is probed at start; until then there is no session to assume.
        let s = Settings::load_from(&sources(&[DB])).unwrap();
        assert_eq!(s.database.pooler, Pooler::Auto);
        assert_eq!(s.database.session_url(), None);
        assert!(s.database.read_url.is_none());

        let s =
            Settings::load_from(&sources(&[DB, ("PISGATE__DATABASE__POOLER", "none")])).unwrap();
        assert_eq!(s.database.pooler, Pooler::None);
        assert_eq!(
            s.database.session_url(),
            Some("postgres://u:p@localhost/db")
        );

        let s = Settings::load_from(&sources(&[
            DB,
            ("PISGATE__DATABASE__POOLER", "transaction"),
        ]))
        .unwrap();
        assert_eq!(s.database.pooler, Pooler::Transaction);
        // Behind a transaction pooler there is no session without the direct URL.
        assert_eq!(s.database.session_url(), None);
        let s = Settings::load_from(&sources(&[
            DB,
            ("PISGATE__DATABASE__POOLER", "transaction"),
            ("PISGATE__DATABASE__DIRECT_URL", "postgres://u:p@primary/db"),
            ("PISGATE__DATABASE__READ_URL", "postgres://u:p@replica/db"),
            ("PISGATE__DATABASE__READ_MAX_LAG", "2s"),
        ]))
        .unwrap();
        assert_eq!(s.database.session_url(), Some("postgres://u:p@primary/db"));
        assert_eq!(s.database.read_max_lag, Duration::from_secs(2));

        // An empty read URL (the production overlay's "no replica") is no replica.
        let s = Settings::load_from(&sources(&[DB, ("PISGATE__DATABASE__READ_URL", "")])).unwrap();
        assert!(s.database.read_url.is_none());

        let err = Settings::load_from(&sources(&[DB, ("PISGATE__DATABASE__POOLER", "statement")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("PISGATE__DATABASE__POOLER"), "{err}");
        for key in [
            "PISGATE__DATABASE__DIRECT_URL",
            "PISGATE__DATABASE__READ_URL",
        ] {
            let err = Settings::load_from(&sources(&[DB, (key, "mysql://u:secret@h/db")]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
            assert!(!err.contains("secret"), "the URL is not echoed: {err}");
        }
    }

    #[test]
    fn a_malformed_listen_address_names_the_variable() {
        let err = Settings::load_from(&sources(&[DB, ("PISGATE__SERVER__LISTEN", "localhost")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("PISGATE__SERVER__LISTEN"), "{err}");
        let err = Settings::load_from(&sources(&[DB, ("PISGATE__ADMIN__LISTEN", ":9090")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("PISGATE__ADMIN__LISTEN"), "{err}");
    }

    #[test]
    fn an_invalid_database_url_is_refused_without_echoing_it() {
        let err = Settings::load_from(&sources(&[(
            "PISGATE__DATABASE__URL",
            "mysql://u:hunter2@x/db",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("PISGATE__DATABASE__URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db-url");
        std::fs::write(&file, "postgres://from-file/db\n").unwrap();
        let s = Settings::load_from(&sources(&[(
            "PISGATE__DATABASE__URL_FILE",
            file.to_str().unwrap(),
        )]))
        .unwrap();
        assert_eq!(s.database.url(), "postgres://from-file/db");
    }

    #[test]
    fn a_value_and_its_file_variant_together_are_ambiguous() {
        let err = Settings::load_from(&sources(&[DB, ("PISGATE__DATABASE__URL_FILE", "/nope")]))
            .unwrap_err();
        assert!(matches!(err, SettingsError::Ambiguous { .. }), "{err}");
    }

    #[test]
    fn an_unreadable_secret_file_names_the_variable() {
        let err = Settings::load_from(&sources(&[(
            "PISGATE__DATABASE__URL_FILE",
            "/definitely/not/here",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("PISGATE__DATABASE__URL_FILE"), "{err}");
    }

    #[test]
    fn environment_variables_override_files() {
        let s = Settings::load_from(&sources(&[
            DB,
            ("PISGATE__RATE_LIMIT__REQUESTS_PER_WINDOW", "7"),
        ]))
        .unwrap();
        assert_eq!(s.rate_limit.requests_per_window, 7);
    }

    #[test]
    fn the_banks_time_to_sign_is_thirty_minutes_by_default_and_zero_means_unknown() {
        let nordea = |extra: &[(&'static str, &'static str)]| {
            let mut vars = vec![DB];
            vars.extend_from_slice(extra);
            Settings::load_from(&sources(&vars))
                .unwrap()
                .nordea
                .unwrap()
        };
        assert_eq!(
            nordea(&[]).approval_timeout,
            Some(Duration::from_secs(1800))
        );
        let n = nordea(&[("PISGATE__NORDEA__APPROVAL_TIMEOUT_SECS", "0")]);
        assert_eq!(n.approval_timeout, None);
        let n = nordea(&[("PISGATE__NORDEA__APPROVAL_TIMEOUT_SECS", "45")]);
        assert_eq!(n.approval_timeout, Some(Duration::from_secs(45)));
    }

    #[test]
    fn a_missing_nordea_key_names_the_file_variable() {
        let err = Settings::load_from(&bare_sources(&[
            DB,
            ("PISGATE__NORDEA__CLIENT_ID", "c"),
            ("PISGATE__NORDEA__CLIENT_SECRET", "s"),
            ("PISGATE__TOKENS__ENCRYPTION_KEY", "k"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("PISGATE__NORDEA__PRIVATE_KEY_FILE"), "{err}");
    }

    /// A `[banks.berlin]` Berlin Group bank, as an operator without Nordea gives it.
    const BERLIN: [(&str, &str); 6] = [
        ("PISGATE__BANKS__BERLIN__PROTOCOL", "berlin-group"),
        ("PISGATE__BANKS__BERLIN__NAME", "Berlin Bank"),
        ("PISGATE__BANKS__BERLIN__COUNTRIES", "FI"),
        (
            "PISGATE__BANKS__BERLIN__BASE_URL",
            "https://bank.example/psd2",
        ),
        ("PISGATE__BANKS__BERLIN__SIGN_REQUESTS", "false"),
        ("PISGATE__BANKS__BERLIN__PSU_IP_FALLBACK", "203.0.113.9"),
    ];

    #[test]
    fn without_nordea_credentials_the_other_banks_are_the_deployment() {
        let mut vars = vec![DB, ("PISGATE__TOKENS__ENCRYPTION_KEY", "k")];
        vars.extend_from_slice(&BERLIN);
        vars.push(("PISGATE__BANKS__BERLIN__REQUEST_TIMEOUT_SECS", "7"));
        let s = Settings::load_from(&bare_sources(&vars)).unwrap();
        assert!(s.nordea.is_none());
        let ids: Vec<&str> = s.banks.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, ["berlin"]);
        // Nordea's sandbox-only rules do not apply without Nordea; leases cover the
        // configured banks' calls.
        assert_eq!(s.payment_rules_environment(), BankEnvironment::Production);
        assert_eq!(s.longest_bank_call(), Duration::from_secs(7));
        // With Nordea, the longest of all.
        let mut with_nordea = vars.clone();
        with_nordea.push(("PISGATE__NORDEA__REQUEST_TIMEOUT_SECS", "11"));
        let s = Settings::load_from(&sources(&with_nordea)).unwrap();
        let ids: Vec<&str> = s.banks.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, ["nordea", "berlin"]);
        assert_eq!(s.longest_bank_call(), Duration::from_secs(11));
    }

    #[test]
    fn no_bank_at_all_is_refused_naming_both_ways_to_configure_one() {
        let err = Settings::load_from(&bare_sources(&[
            DB,
            ("PISGATE__TOKENS__ENCRYPTION_KEY", "k"),
            // Blank is unset.
            ("PISGATE__NORDEA__CLIENT_ID", " "),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("no bank is configured")
                && err.contains("PISGATE__NORDEA__CLIENT_ID")
                && err.contains("PISGATE__NORDEA__PRIVATE_KEY_FILE")
                && err.contains("PISGATE__BANKS__<ID>__PROTOCOL"),
            "{err}"
        );
    }

    #[test]
    fn half_of_nordeas_credentials_is_an_error_not_a_deployment_without_nordea() {
        let mut vars = vec![
            DB,
            ("PISGATE__TOKENS__ENCRYPTION_KEY", "k"),
            ("PISGATE__NORDEA__CLIENT_ID", "c"),
        ];
        vars.extend_from_slice(&BERLIN);
        let err = Settings::load_from(&bare_sources(&vars))
            .unwrap_err()
            .to_string();
        assert!(err.contains("PISGATE__NORDEA__CLIENT_SECRET"), "{err}");
    }

    #[test]
    fn the_sandbox_times_out_unsigned_payments_by_default_and_zero_switches_it_off() {
        let sandbox = |extra: &[(&'static str, &'static str)]| {
            let mut vars = vec![
                ("PISGATE__SANDBOX__CLIENT_ID", "c"),
                ("PISGATE__SANDBOX__CLIENT_SECRET", "s"),
                ("PISGATE__SANDBOX__PUBLIC_KEY", "a key"),
            ];
            vars.extend_from_slice(extra);
            SandboxSettings::load_from(&bare_sources(&vars))
        };
        let s = sandbox(&[]).unwrap();
        assert_eq!(s.approval_timeout, Some(Duration::from_secs(1800)));
        assert!(!s.token_identity);
        let s = sandbox(&[
            ("PISGATE__SANDBOX__APPROVAL_TIMEOUT_SECS", "0"),
            ("PISGATE__SANDBOX__TOKEN_IDENTITY", "true"),
        ])
        .unwrap();
        assert_eq!(s.approval_timeout, None);
        assert!(s.token_identity);
        let s = sandbox(&[("PISGATE__SANDBOX__APPROVAL_TIMEOUT_SECS", "90")]).unwrap();
        assert_eq!(s.approval_timeout, Some(Duration::from_secs(90)));
        let err = sandbox(&[("PISGATE__SANDBOX__TOKEN_IDENTITY", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("PISGATE__SANDBOX__TOKEN_IDENTITY"), "{err}");
    }

    #[test]
    fn settings_that_would_break_the_truth_rule_are_refused_at_start() {
        let refused = |k: &str, v: &str| {
            let e = Settings::load_from(&sources(&[DB, (k, v)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        };
        // A horizon before the window would expire payments a shopper may still sign.
        refused("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "60");
        // A key held longer than the server lets a request run: the merchant gets no answer.
        refused("PISGATE__PAYMENTS__IDEMPOTENCY_STALE_AFTER_SECS", "30");
        refused("PISGATE__CALLBACK__REDIRECT_TIMEOUT", "30s");
        refused("PISGATE__CALLBACK__EXCHANGE_DEADLINE", "2h");
    }

    #[test]
    fn the_ledger_key_is_needed_only_by_those_who_ask_for_it() {
        let s = Settings::load_from(&sources(&[DB])).unwrap();
        assert_eq!(s.ledger.key_id, "l1");
        assert!(s.ledger.checkpoint_enabled);
        assert_eq!(s.ledger.checkpoint_interval, Duration::from_secs(3600));
        let err = s.ledger.required_key().unwrap_err().to_string();
        assert!(err.contains("PISGATE__LEDGER__KEY_FILE"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ledger-key");
        std::fs::write(&file, "bGVkZ2Vy\n").unwrap();
        let s = Settings::load_from(&sources(&[
            DB,
            ("PISGATE__LEDGER__KEY_FILE", file.to_str().unwrap()),
            ("PISGATE__LEDGER__KEY_ID", "l2"),
            ("PISGATE__LEDGER__CHECKPOINT_ENABLED", "false"),
            ("PISGATE__LEDGER__CHECKPOINT_INTERVAL", "10m"),
        ]))
        .unwrap();
        assert_eq!(s.ledger.required_key().unwrap().expose_secret(), "bGVkZ2Vy");
        assert_eq!(s.ledger.key_id, "l2");
        assert!(!s.ledger.checkpoint_enabled);
        assert_eq!(s.ledger.checkpoint_interval, Duration::from_secs(600));
        assert!(!format!("{s:?}").contains("bGVkZ2Vy"));
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Settings::load_from(&sources(&[DB])).unwrap();
        assert!(!format!("{s:?}").contains("u:p@"));
    }

    #[test]
    fn the_provider_named_to_shoppers_has_sandbox_defaults_and_can_be_set() {
        let s = Settings::load_from(&sources(&[DB])).unwrap();
        assert_eq!(s.provider.legal_name, "pisgate demo TPP (sandbox)");
        assert!(!s.provider.licence.is_empty());
        let s = Settings::load_from(&sources(&[
            DB,
            ("PISGATE__PROVIDER__LEGAL_NAME", " Example Payments Oy "),
            ("PISGATE__PROVIDER__LICENCE", "FIN-FSA 1234567-8"),
        ]))
        .unwrap();
        assert_eq!(s.provider.legal_name, "Example Payments Oy");
        assert_eq!(s.provider.licence, "FIN-FSA 1234567-8");
    }

    #[test]
    fn a_blank_long_or_multi_line_provider_setting_is_refused_by_name() {
        let long = "x".repeat(201);
        for (key, value) in [
            ("PISGATE__PROVIDER__LEGAL_NAME", " "),
            ("PISGATE__PROVIDER__LICENCE", long.as_str()),
            ("PISGATE__PROVIDER__LEGAL_NAME", "Example\nPayments"),
        ] {
            let err = Settings::load_from(&sources(&[DB, (key, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
