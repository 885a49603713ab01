//! Typed settings, loaded and validated once at start.
//!
//! Layers, later ones winning: `config/default.toml`, `config/$PISGATE_ENV.toml`, then
//! environment variables `PISGATE__SECTION__KEY`. A secret may also be given as
//! `PISGATE__SECTION__KEY_FILE=/path`, whose file content (without the trailing newline)
//! becomes the value; giving both forms is an error rather than a silent choice.
//!
//! Every failure names the setting in its environment-variable spelling, so one line tells
//! an operator what to fix. Secrets are [`SecretString`]s: they never print.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    pub nordea: NordeaSettings,
    pub tokens: TokenSettings,
    pub ledger: LedgerSettings,
    pub payments: PaymentSettings,
    pub callback: CallbackSettings,
    pub poller: PollerSettings,
    pub refresher: RefresherSettings,
    pub webhooks: WebhookSettings,
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
    /// Bank calls per second, per replica.
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
}

pub use crate::domain::Environment as BankEnvironment;

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
}

/// The admin listener (`[admin]`): health, readiness, metrics and operator endpoints, never
/// exposed to the internet.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout: Duration,
    pub migrate_on_start: bool,
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

/// The raw shape of the layered sources. Everything is optional here so that a missing
/// value is reported by its setting name instead of serde's "missing field".
#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default)]
    nordea: RawNordea,
    #[serde(default)]
    tokens: RawTokens,
    #[serde(default)]
    ledger: RawLedger,
    #[serde(default)]
    payments: RawPayments,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    rate_limit: RawRateLimit,
    #[serde(default)]
    telemetry: RawTelemetry,
    #[serde(default)]
    callback: RawCallback,
    #[serde(default)]
    poller: RawPoller,
    #[serde(default)]
    refresher: RawRefresher,
    #[serde(default)]
    webhooks: RawWebhooks,
}

#[derive(Debug, Default, Deserialize)]
struct RawPoller {
    enabled: Option<String>,
    signing_interval: Option<String>,
    late_signing_interval: Option<String>,
    authorized_interval: Option<String>,
    scheduled_interval: Option<String>,
    lease: Option<String>,
    batch_size: Option<String>,
    concurrency: Option<String>,
    rate_per_sec: Option<String>,
    max_backoff: Option<String>,
    idle_wait: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRefresher {
    enabled: Option<String>,
    interval: Option<String>,
    refresh_before: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawWebhooks {
    enabled: Option<String>,
    request_timeout: Option<String>,
    retry_schedule: Option<String>,
    lease: Option<String>,
    batch_size: Option<String>,
    concurrency: Option<String>,
    idle_wait: Option<String>,
    allow_insecure_urls: Option<String>,
    per_endpoint_concurrency: Option<String>,
    proxy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawNordea {
    base_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    private_key: Option<String>,
    token_path: Option<String>,
    connect_timeout_secs: Option<String>,
    request_timeout_secs: Option<String>,
    read_attempts: Option<String>,
    environment: Option<String>,
    delete_signing_profile: Option<String>,
    certificate: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawTokens {
    encryption_key: Option<String>,
    key_id: Option<String>,
    previous_keys: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawLedger {
    key: Option<String>,
    key_id: Option<String>,
    previous_keys: Option<String>,
    checkpoint_enabled: Option<String>,
    checkpoint_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawPayments {
    signing_window_secs: Option<String>,
    late_signing_horizon_secs: Option<String>,
    idempotency_stale_after_secs: Option<String>,
    idempotency_retention: Option<String>,
    idempotency_purge_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawCallback {
    redirect_timeout: Option<String>,
    exchange_deadline: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawServer {
    listen: Option<String>,
    public_url: Option<String>,
    request_timeout_secs: Option<String>,
    shutdown_timeout_secs: Option<String>,
    body_limit_bytes: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawAdmin {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawDatabase {
    url: Option<String>,
    max_connections: Option<String>,
    min_connections: Option<String>,
    acquire_timeout_secs: Option<String>,
    migrate_on_start: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRateLimit {
    requests_per_window: Option<String>,
    window_secs: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawTelemetry {
    log_format: Option<String>,
    log_level: Option<String>,
    service_name: Option<String>,
}

/// Where to read the layered sources from. [`Sources::from_process`] is what the binary
/// uses; tests build one by hand.
#[derive(Debug, Clone)]
pub struct Sources {
    pub config_dir: PathBuf,
    pub environment: Option<String>,
    pub vars: HashMap<String, String>,
}

impl Sources {
    /// The process environment; the config directory is `PISGATE_CONFIG_DIR` or `./config`.
    pub fn from_process() -> Sources {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Sources {
            config_dir: vars
                .get("PISGATE_CONFIG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("config")),
            environment: vars.get("PISGATE_ENV").cloned().filter(|e| !e.is_empty()),
            vars,
        }
    }

    /// Reads the layers into one `config::Config`: files, then `PISGATE__*` variables with
    /// `*_FILE` secrets resolved.
    pub fn layered(&self) -> Result<config::Config, SettingsError> {
        let defaults = self.config_dir.join("default.toml");
        if !defaults.is_file() {
            return Err(SettingsError::NoConfigDir {
                dir: self.config_dir.clone(),
                cwd: std::env::current_dir().unwrap_or_default(),
            });
        }
        let mut builder = config::Config::builder().add_source(
            config::File::from(defaults)
                .format(config::FileFormat::Toml)
                .required(true),
        );
        if let Some(env) = &self.environment {
            let path = self.config_dir.join(format!("{env}.toml"));
            if !path.exists() {
                return Err(SettingsError::Load(format!(
                    "PISGATE_ENV={env} but {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let vars = resolve_file_variants(&self.vars)?;
        builder = builder.add_source(
            config::Environment::with_prefix(PREFIX)
                .prefix_separator(SEPARATOR)
                .separator(SEPARATOR)
                .source(Some(vars)),
        );
        builder
            .build()
            .map_err(|e| SettingsError::Load(e.to_string()))
    }
}

/// Replaces every `PISGATE__X_FILE=path` by `PISGATE__X=<file content>`.
fn resolve_file_variants(
    vars: &HashMap<String, String>,
) -> Result<config::Map<String, String>, SettingsError> {
    let mut out = config::Map::new();
    for (name, value) in vars {
        if !name.starts_with(&format!("{PREFIX}{SEPARATOR}")) {
            continue;
        }
        match name.strip_suffix("_FILE") {
            Some(base) => {
                if vars.contains_key(base) {
                    return Err(SettingsError::Ambiguous {
                        var: base.to_owned(),
                    });
                }
                let content =
                    std::fs::read_to_string(value).map_err(|source| SettingsError::SecretFile {
                        var: name.clone(),
                        source,
                    })?;
                let content = content.strip_suffix('\n').unwrap_or(&content);
                let content = content.strip_suffix('\r').unwrap_or(content);
                out.insert(base.to_owned(), content.to_owned());
            }
            None => {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    Ok(out)
}

impl Settings {
    /// Loads and validates the settings of the running process.
    pub fn load() -> Result<Settings, SettingsError> {
        Settings::load_from(&Sources::from_process())
    }

    pub fn load_from(sources: &Sources) -> Result<Settings, SettingsError> {
        let raw: Raw = sources
            .layered()?
            .try_deserialize()
            .map_err(|e| SettingsError::Load(e.to_string()))?;
        Settings::validate(raw)
    }

    fn validate(raw: Raw) -> Result<Settings, SettingsError> {
        let listen = socket_address("server.listen", raw.server.listen, "127.0.0.1:8080")?;
        let admin = AdminSettings {
            listen: socket_address("admin.listen", raw.admin.listen, "127.0.0.1:9090")?,
        };
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
            listen,
            public_url,
            request_timeout: secs(
                "server.request_timeout_secs",
                raw.server.request_timeout_secs,
            )?,
            shutdown_timeout: secs(
                "server.shutdown_timeout_secs",
                raw.server.shutdown_timeout_secs,
            )?,
            body_limit_bytes: number("server.body_limit_bytes", raw.server.body_limit_bytes, 1)?,
        };

        let database = validate_database(raw.database)?;

        let rate_limit = RateLimitSettings {
            requests_per_window: number(
                "rate_limit.requests_per_window",
                raw.rate_limit.requests_per_window,
                1,
            )?,
            window: secs("rate_limit.window_secs", raw.rate_limit.window_secs)?,
        };

        let log_format = match required("telemetry.log_format", raw.telemetry.log_format)?
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "auto" => LogFormat::Auto,
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                return Err(SettingsError::invalid(
                    "telemetry.log_format",
                    format!("{other:?} is not one of auto, json, pretty"),
                ));
            }
        };
        let telemetry = TelemetrySettings {
            log_format,
            log_level: required("telemetry.log_level", raw.telemetry.log_level)?,
            service_name: required("telemetry.service_name", raw.telemetry.service_name)?,
        };

        let base_url = required("nordea.base_url", raw.nordea.base_url)?
            .trim()
            .trim_end_matches('/')
            .to_owned();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(SettingsError::invalid(
                "nordea.base_url",
                format!("{base_url:?} is not an absolute http(s) URL"),
            ));
        }
        let environment = match required("nordea.environment", raw.nordea.environment)?
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "production" => BankEnvironment::Production,
            "sandbox" => BankEnvironment::Sandbox,
            other => {
                return Err(SettingsError::invalid(
                    "nordea.environment",
                    format!("{other:?} is not production or sandbox"),
                ));
            }
        };
        let token_path = required("nordea.token_path", raw.nordea.token_path)?;
        if !token_path.starts_with('/') {
            return Err(SettingsError::invalid(
                "nordea.token_path",
                "must start with /",
            ));
        }
        let nordea = NordeaSettings {
            base_url,
            client_id: required("nordea.client_id", raw.nordea.client_id)?,
            client_secret: SecretString::from(required(
                "nordea.client_secret",
                raw.nordea.client_secret,
            )?),
            // The variable operators set is PISGATE__NORDEA__PRIVATE_KEY_FILE.
            private_key: SecretString::from(
                raw.nordea
                    .private_key
                    .filter(|k| !k.trim().is_empty())
                    .ok_or_else(|| SettingsError::Missing {
                        key: "nordea.private_key".into(),
                        env: "PISGATE__NORDEA__PRIVATE_KEY_FILE".into(),
                    })?,
            ),
            token_path,
            connect_timeout: secs(
                "nordea.connect_timeout_secs",
                raw.nordea.connect_timeout_secs,
            )?,
            request_timeout: secs(
                "nordea.request_timeout_secs",
                raw.nordea.request_timeout_secs,
            )?,
            read_attempts: number("nordea.read_attempts", raw.nordea.read_attempts, 1)?,
            delete_signing: match raw.nordea.delete_signing_profile.as_deref().map(str::trim) {
                None | Some("") => crate::bank::nordea::DeleteSigning::default(),
                Some(text) => crate::bank::nordea::DeleteSigning::parse(text).ok_or_else(|| {
                    SettingsError::invalid(
                        "nordea.delete_signing_profile",
                        format!("{text:?} is not three_headers or with_digest"),
                    )
                })?,
            },
            certificate: raw.nordea.certificate.filter(|c| !c.trim().is_empty()),
            environment,
        };
        let tokens = TokenSettings {
            encryption_key: SecretString::from(required(
                "tokens.encryption_key",
                raw.tokens.encryption_key,
            )?),
            key_id: required("tokens.key_id", raw.tokens.key_id)?,
            previous_keys: SecretString::from(raw.tokens.previous_keys.unwrap_or_default()),
        };
        let ledger = validate_ledger(raw.ledger)?;
        let payments = PaymentSettings {
            signing_window: secs(
                "payments.signing_window_secs",
                raw.payments.signing_window_secs,
            )?,
            late_signing_horizon: secs(
                "payments.late_signing_horizon_secs",
                raw.payments.late_signing_horizon_secs,
            )?,
            idempotency_stale_after: secs(
                "payments.idempotency_stale_after_secs",
                raw.payments.idempotency_stale_after_secs,
            )?,
            idempotency_retention: duration(
                "payments.idempotency_retention",
                raw.payments.idempotency_retention,
            )?,
            idempotency_purge_interval: duration(
                "payments.idempotency_purge_interval",
                raw.payments.idempotency_purge_interval,
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
            enabled: boolean("poller.enabled", p.enabled)?,
            signing_interval: duration("poller.signing_interval", p.signing_interval)?,
            late_signing_interval: duration(
                "poller.late_signing_interval",
                p.late_signing_interval,
            )?,
            authorized_interval: duration("poller.authorized_interval", p.authorized_interval)?,
            scheduled_interval: duration("poller.scheduled_interval", p.scheduled_interval)?,
            lease: duration("poller.lease", p.lease)?,
            batch_size: number("poller.batch_size", p.batch_size, 1)?,
            concurrency: number("poller.concurrency", p.concurrency, 1)?,
            rate_per_sec: number("poller.rate_per_sec", p.rate_per_sec, 1)?,
            max_backoff: duration("poller.max_backoff", p.max_backoff)?,
            idle_wait: duration("poller.idle_wait", p.idle_wait)?,
        };
        let r = raw.refresher;
        let refresher = RefresherSettings {
            enabled: boolean("refresher.enabled", r.enabled)?,
            interval: duration("refresher.interval", r.interval)?,
            refresh_before: duration("refresher.refresh_before", r.refresh_before)?,
        };
        let w = raw.webhooks;
        let retry_key = "webhooks.retry_schedule";
        let retry_schedule = required(retry_key, w.retry_schedule)?
            .split(',')
            .map(|d| parse_duration(d).map_err(|e| SettingsError::invalid(retry_key, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let webhooks = WebhookSettings {
            enabled: boolean("webhooks.enabled", w.enabled)?,
            request_timeout: duration("webhooks.request_timeout", w.request_timeout)?,
            retry_schedule,
            lease: duration("webhooks.lease", w.lease)?,
            batch_size: number("webhooks.batch_size", w.batch_size, 1)?,
            concurrency: number("webhooks.concurrency", w.concurrency, 1)?,
            idle_wait: duration("webhooks.idle_wait", w.idle_wait)?,
            allow_insecure_urls: boolean("webhooks.allow_insecure_urls", w.allow_insecure_urls)?,
            per_endpoint_concurrency: number(
                "webhooks.per_endpoint_concurrency",
                w.per_endpoint_concurrency,
                1,
            )?,
            proxy: w.proxy.filter(|p| !p.trim().is_empty()),
        };
        if webhooks.lease <= webhooks.request_timeout {
            return Err(SettingsError::invalid(
                "webhooks.lease",
                "must be longer than webhooks.request_timeout",
            ));
        }
        Ok(Settings {
            server,
            admin,
            database,
            rate_limit,
            telemetry,
            nordea,
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

impl DatabaseSettings {
    pub fn url(&self) -> &str {
        self.url.expose_secret()
    }
}

fn socket_address(
    key: &str,
    value: Option<String>,
    example: &str,
) -> Result<SocketAddr, SettingsError> {
    let text = required(key, value)?;
    text.trim().parse().map_err(|_| {
        SettingsError::invalid(
            key,
            format!("{text:?} is not a socket address such as {example}"),
        )
    })
}

fn required(key: &str, value: Option<String>) -> Result<String, SettingsError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(SettingsError::missing(key)),
    }
}

/// A whole number of at least `min`.
fn number<T>(key: &str, value: Option<String>, min: T) -> Result<T, SettingsError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let v = required(key, value)?;
    let n: T = v
        .trim()
        .parse()
        .map_err(|_| SettingsError::invalid(key, format!("{v:?} is not a whole number")))?;
    if n < min {
        return Err(SettingsError::invalid(
            key,
            format!("must be at least {min}"),
        ));
    }
    Ok(n)
}

fn validate_database(raw: RawDatabase) -> Result<DatabaseSettings, SettingsError> {
    let url = required("database.url", raw.url)?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        // The value may hold a password: never echo it.
        return Err(SettingsError::invalid(
            "database.url",
            "must be a postgres:// or postgresql:// URL",
        ));
    }
    let max_connections = number("database.max_connections", raw.max_connections, 1)?;
    let min_connections = number("database.min_connections", raw.min_connections, 0)?;
    if min_connections > max_connections {
        return Err(SettingsError::invalid(
            "database.min_connections",
            format!("{min_connections} is more than database.max_connections ({max_connections})"),
        ));
    }
    Ok(DatabaseSettings {
        url: SecretString::from(url),
        max_connections,
        min_connections,
        acquire_timeout: secs("database.acquire_timeout_secs", raw.acquire_timeout_secs)?,
        migrate_on_start: boolean("database.migrate_on_start", raw.migrate_on_start)?,
    })
}

fn validate_ledger(l: RawLedger) -> Result<LedgerSettings, SettingsError> {
    Ok(LedgerSettings {
        key: l
            .key
            .filter(|k| !k.trim().is_empty())
            .map(SecretString::from),
        key_id: required("ledger.key_id", l.key_id)?,
        previous_keys: SecretString::from(l.previous_keys.unwrap_or_default()),
        checkpoint_enabled: boolean("ledger.checkpoint_enabled", l.checkpoint_enabled)?,
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

impl ToolSettings {
    pub fn load() -> Result<ToolSettings, SettingsError> {
        ToolSettings::load_from(&Sources::from_process())
    }

    pub fn load_from(sources: &Sources) -> Result<ToolSettings, SettingsError> {
        let raw: Raw = sources
            .layered()?
            .try_deserialize()
            .map_err(|e| SettingsError::Load(e.to_string()))?;
        Ok(ToolSettings {
            database: validate_database(raw.database)?,
            ledger: validate_ledger(raw.ledger)?,
        })
    }
}

fn secs(key: &str, value: Option<String>) -> Result<Duration, SettingsError> {
    number::<u64>(key, value, 1).map(Duration::from_secs)
}

/// A duration such as `250ms`, `5s`, `10m`, `2h` or `3d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 250ms, 5s, 10m, 2h or 3d"))?;
    let per_unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{text:?} is not a duration such as 250ms, 5s, 10m, 2h or 3d"
            ));
        }
    };
    n.checked_mul(per_unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

fn duration(key: &str, value: Option<String>) -> Result<Duration, SettingsError> {
    let v = required(key, value)?;
    let d = parse_duration(&v).map_err(|e| SettingsError::invalid(key, e))?;
    if d.is_zero() {
        return Err(SettingsError::invalid(key, "must be more than zero"));
    }
    Ok(d)
}

fn boolean(key: &str, value: Option<String>) -> Result<bool, SettingsError> {
    let v = required(key, value)?;
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(SettingsError::invalid(
            key,
            format!("{v:?} is not true or false"),
        )),
    }
}

/// The sandbox's approval timeout when `sandbox.approval_timeout_secs` is not set.
pub const DEFAULT_SANDBOX_APPROVAL_TIMEOUT: Duration = Duration::from_secs(1800);

/// Settings of `pisgate sandbox` (the Nordea simulator): section `[sandbox]`.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub listen: SocketAddr,
    /// How a browser reaches the sandbox; signing links are built on it.
    pub public_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// PEM (SPKI or PKCS#1) or bare base64 of the public key registered for the app.
    pub public_key_pem: String,
    pub confirm_delay: Duration,
    pub paid_delay: Duration,
    pub recurring_interval: Duration,
    /// `sandbox.approval_timeout_secs`: how long after initiation an opened but unsigned
    /// payment becomes UserApprovalTimeout. Absent: 1800 s (30 minutes, as a real bank times
    /// out unsigned payments); `0`: never.
    pub approval_timeout: Option<Duration>,
    pub access_token_lifetime: Duration,
    /// `sandbox.token_identity`: token answers carry an unsigned `id_token` with the PSU
    /// (`sub`) and the issue time (`iat`). Default false (Nordea's schema has no `id_token`).
    pub token_identity: bool,
    /// Fault rules active from the start, as the admin API's JSON list.
    pub faults_json: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawSandbox {
    listen: Option<String>,
    public_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    public_key_file: Option<String>,
    public_key: Option<String>,
    confirm_delay_ms: Option<String>,
    paid_delay_ms: Option<String>,
    recurring_interval_secs: Option<String>,
    approval_timeout_secs: Option<String>,
    access_token_lifetime_secs: Option<String>,
    token_identity: Option<String>,
    faults: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawSandboxRoot {
    #[serde(default)]
    sandbox: RawSandbox,
}

impl SandboxSettings {
    pub fn load() -> Result<SandboxSettings, SettingsError> {
        SandboxSettings::load_from(&Sources::from_process())
    }

    pub fn load_from(sources: &Sources) -> Result<SandboxSettings, SettingsError> {
        let raw: RawSandboxRoot = sources
            .layered()?
            .try_deserialize()
            .map_err(|e| SettingsError::Load(e.to_string()))?;
        let raw = raw.sandbox;
        let listen = socket_address("sandbox.listen", raw.listen, "127.0.0.1:8090")?;
        let public_url = raw
            .public_url
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| format!("http://{listen}"));
        let public_key_pem = match (raw.public_key, raw.public_key_file) {
            (Some(k), _) if !k.trim().is_empty() => k,
            (_, Some(path)) if !path.trim().is_empty() => std::fs::read_to_string(path.trim())
                .map_err(|e| {
                    SettingsError::invalid(
                        "sandbox.public_key_file",
                        format!("cannot read {path:?}: {e}"),
                    )
                })?,
            _ => return Err(SettingsError::missing("sandbox.public_key_file")),
        };
        let millis =
            |key: &str, v: Option<String>| number::<u64>(key, v, 0).map(Duration::from_millis);
        let approval_timeout = match raw.approval_timeout_secs {
            Some(v) if !v.trim().is_empty() => {
                match number::<u64>("sandbox.approval_timeout_secs", Some(v), 0)? {
                    0 => None,
                    n => Some(Duration::from_secs(n)),
                }
            }
            _ => Some(DEFAULT_SANDBOX_APPROVAL_TIMEOUT),
        };
        let token_identity = match raw.token_identity {
            Some(v) if !v.trim().is_empty() => boolean("sandbox.token_identity", Some(v))?,
            _ => false,
        };
        Ok(SandboxSettings {
            listen,
            public_url: public_url.trim_end_matches('/').to_owned(),
            client_id: required("sandbox.client_id", raw.client_id)?,
            client_secret: SecretString::from(required(
                "sandbox.client_secret",
                raw.client_secret,
            )?),
            public_key_pem,
            confirm_delay: millis("sandbox.confirm_delay_ms", raw.confirm_delay_ms)?,
            paid_delay: millis("sandbox.paid_delay_ms", raw.paid_delay_ms)?,
            recurring_interval: secs(
                "sandbox.recurring_interval_secs",
                raw.recurring_interval_secs,
            )?,
            approval_timeout,
            access_token_lifetime: secs(
                "sandbox.access_token_lifetime_secs",
                raw.access_token_lifetime_secs,
            )?,
            token_identity,
            faults_json: raw.faults.filter(|f| !f.trim().is_empty()),
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
}
