//! Builds the running service: pool, migrations check, state, routers, the public and the
//! admin listener; and stops it gracefully (readiness fails, the public listener stops
//! accepting, in-flight requests finish within a bound, workers hand back their leases, the
//! admin listener closes last, the pool closes).

use crate::api::{self, AppState};
use crate::bank::nordea::{NordeaClient, NordeaConfig, SigningKey};
use crate::bank::{Bank, Banks};
use crate::config::{Settings, SettingsError};
use crate::ledger;
use crate::ledger::Db;
use crate::ledger::crypto::TokenCipher;
use crate::ledger::health::DbHealth;
use crate::ledger::keys::LedgerKeys;
use crate::workers::{WorkerContext, Workers};
use anyhow::Context as _;
use secrecy::{ExposeSecret, SecretString};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How often the database is probed; an outage is answered `503` at once within this.
const DB_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Time for a bank exchange's commit after its bank calls (and a code exchange's second
/// shopper lease, up to 10 s), at shutdown.
const FINISH_MARGIN: Duration = Duration::from_secs(15);

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    admin_listener: TcpListener,
    admin_router: axum::Router,
    state: AppState,
    pool: Db,
    shutdown_timeout: Duration,
    workers: WorkerContext,
    db_health: DbHealth,
    auth_cache: std::sync::Arc<crate::api::auth::AuthCache>,
    /// When the eIDAS certificate expires, if one is configured.
    certificate_not_after: Option<std::time::SystemTime>,
}

impl Application {
    /// Connects to the database, refuses to go on with unapplied migrations (or applies
    /// them when `database.migrate_on_start` is set), and binds the listen address.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = bind(settings.server.listen, "PISGATE__SERVER__LISTEN").await?;
        Application::build_on(settings, listener).await
    }

    /// As [`Application::build`], on a listener the caller bound (tests bind first so they
    /// know the public URL before the settings are made). The admin listener is bound here.
    pub async fn build_on(
        settings: Settings,
        listener: TcpListener,
    ) -> anyhow::Result<Application> {
        Application::build_on_with_banks(settings, listener, Vec::new()).await
    }

    /// As [`Application::build_on`], with `extra` banks beside the configured ones (tests:
    /// a bank of their own, e.g. a fake of a protocol whose simulator is not at hand).
    pub async fn build_on_with_banks(
        settings: Settings,
        listener: TcpListener,
        extra: Vec<crate::bank::BankEntry>,
    ) -> anyhow::Result<Application> {
        let admin_listener = bind(settings.admin.listen, "PISGATE__ADMIN__LISTEN").await?;
        let mut settings = settings;
        ledger::resolve_pooler(&mut settings.database).await?;
        let pool = ledger::connect(&settings.database).await?;
        let pending = ledger::pending_migrations(&pool)
            .await
            .context("cannot read the migration state of the database")?;
        if !pending.is_empty() {
            if settings.database.migrate_on_start {
                tracing::info!(count = pending.len(), "applying database migrations");
                let session = ledger::connect_session(&settings.database).await?;
                let applied = ledger::migrate(&session).await;
                let sealed = match applied {
                    Ok(()) if ledger::seal::binds(&pending) => {
                        let keys = ledger_keys(&settings.ledger)?;
                        Some(ledger::seal::seal_newly_bound(&session, &keys, &pending).await)
                    }
                    _ => None,
                };
                session.close().await;
                applied.context("applying database migrations failed")?;
                if let Some(sealed) = sealed {
                    let sealed =
                        sealed.context("sealing the rows written before binding failed")?;
                    sealed.log("sealed the rows written before they were bound to the ledger key");
                }
            } else {
                anyhow::bail!(
                    "the database has {} unapplied migration(s); run `pisgate migrate` first \
                     (or `pisgate serve --migrate`)",
                    pending.len()
                );
            }
        }
        let shutdown_timeout = settings.server.shutdown_timeout;
        let certificate = check_certificate(&settings, std::time::SystemTime::now())?;
        // Every event this process appends is signed with this ring.
        ledger::keys::install(ledger_keys(&settings.ledger)?);
        let banks = Arc::new(extra.into_iter().fold(banks(&settings)?, Banks::with));
        let cipher = Arc::new(token_cipher(&settings)?);
        let replica = ledger::connect_read(&settings.database)?;
        let read_max_lag = settings.database.read_max_lag;
        let mut state = AppState::new(
            pool.clone(),
            settings,
            crate::telemetry::metrics_handle(),
            banks,
            cipher,
        );
        if let Some(replica) = replica {
            state = state.with_reads(Arc::new(ledger::Reads::new(
                pool.clone(),
                Some(replica),
                read_max_lag,
            )));
        }
        let mut workers = WorkerContext::new(
            pool.clone(),
            state.settings.clone(),
            state.banks.clone(),
            state.cipher.clone(),
        );
        workers.listener = state.listener.clone();
        workers.finishing = state.finishing.clone();
        let db_health = state.db_health.clone();
        let auth_cache = state.auth_cache.clone();
        Ok(Application {
            db_health,
            auth_cache,
            listener,
            router: api::router(state.clone()),
            admin_listener,
            admin_router: api::admin_router(state.clone()),
            state,
            pool,
            shutdown_timeout,
            workers,
            certificate_not_after: certificate.map(|c| c.not_after),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where `/healthz`, `/readyz` and `/metrics` answer.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn pool(&self) -> &Db {
        &self.pool
    }

    /// The name this replica's workers write on the leases they hold.
    pub fn worker_owner(&self) -> &str {
        &self.workers.owner
    }

    /// Serves (and runs the workers the settings switch on) until `shutdown` completes, then
    /// gives in-flight requests and workers up to the shutdown timeout; workers hand back
    /// their leases as they stop. Closes the pool either way.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let admin = self.admin_addr();
        tracing::info!(%addr, %admin, "pisgate is listening");
        let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
        let state = self.state.clone();
        let signal = async move {
            shutdown.await;
            state.start_draining();
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
            let _ = stopping_tx.send(true);
        };
        // The admin listener outlives the public one: probes see the drain (readiness 503)
        // and Prometheus can scrape until the end.
        let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
        // With the peer's address: the console's sign-in throttle counts by it.
        let admin_serve = axum::serve(
            self.admin_listener,
            self.admin_router
                .into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = admin_stop_rx.await;
        });
        let admin_server = tokio::spawn(async move { admin_serve.await });
        // Workers stop with the HTTP server: on the signal, or when the server ends early
        // (which drops the signal and its sender).
        let (workers_stop_tx, workers_stop_rx) = tokio::sync::watch::channel(false);
        let mut told = stopping_rx.clone();
        let forward = tokio::spawn(async move {
            let _ = told.wait_for(|stopping| *stopping).await;
            let _ = workers_stop_tx.send(true);
            tokio::time::Instant::now()
        });
        tokio::spawn(self.db_health.clone().watch(
            self.pool.clone(),
            DB_PROBE_INTERVAL,
            workers_stop_rx.clone(),
        ));
        self.state.listener.spawn(workers_stop_rx.clone());
        tokio::spawn(self.state.reads.clone().watch(workers_stop_rx.clone()));
        tokio::spawn(crate::api::auth::follow_invalidations(
            self.auth_cache.clone(),
            self.state.listener.clone(),
            workers_stop_rx.clone(),
        ));
        let finishing = self.workers.finishing.clone();
        // The longest a bank exchange under way at the stop can take: one bank call, or a
        // shopper's code exchange with its retries.
        let longest_exchange = self
            .workers
            .settings
            .longest_bank_call()
            .max(self.workers.settings.callback.exchange_deadline);
        let workers = Workers::spawn(self.workers, workers_stop_rx);
        let certificate_watch = self
            .certificate_not_after
            .map(|not_after| tokio::spawn(watch_certificate(not_after)));
        // With the peer's address: the shopper's IP told to the bank (`api::client_ip`).
        let serve = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(signal);
        let deadline = async {
            let _ = stopping_rx.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(self.shutdown_timeout).await;
        };
        let result = tokio::select! {
            r = serve => r.context("the HTTP server failed"),
            () = deadline => {
                tracing::warn!(timeout = ?self.shutdown_timeout, "in-flight requests did not finish in time; stopping anyway");
                Ok(())
            }
        };
        // The drain is over: no bank exchange begins from now on (one that would is refused
        // before its bank call, so its code or refresh token stays good).
        finishing.close();
        // Workers stopped alongside the HTTP drain: they get what is left of the same bound.
        let stop_began = forward
            .await
            .unwrap_or_else(|_| tokio::time::Instant::now());
        let left = self
            .shutdown_timeout
            .saturating_sub(stop_began.elapsed())
            .max(Duration::from_secs(1));
        workers.join(left).await;
        // A bank exchange that used up a single-use token (a refresh, a shopper's code) runs
        // to its commit: up to the longest exchange (and the commit) from the stop, past the
        // drain if need be (the manifests' grace period allows for it).
        if finishing.running() > 0 {
            tracing::info!(
                running = finishing.running(),
                "waiting for bank exchanges to be stored"
            );
        }
        let bound = (longest_exchange + FINISH_MARGIN)
            .saturating_sub(stop_began.elapsed())
            .max(Duration::from_secs(1));
        if !finishing.wait(bound).await {
            tracing::warn!(
                running = finishing.running(),
                "bank exchanges still running at the end of the shutdown; stopping anyway"
            );
        }
        if let Some(watch) = certificate_watch {
            watch.abort();
        }
        let _ = admin_stop_tx.send(());
        match tokio::time::timeout(Duration::from_secs(2), admin_server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the admin listener failed"),
            Ok(_) => {}
            Err(_) => tracing::warn!("the admin listener did not stop in time"),
        }
        self.pool.close().await;
        tracing::info!("stopped");
        result
    }
}

/// Binds `addr`; a failure names the setting it came from.
async fn bind(addr: SocketAddr, setting: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({setting})"))
}

/// Below this much time left, a warning line is logged once a day.
pub const CERTIFICATE_WARN_BEFORE: Duration = Duration::from_secs(30 * 86_400);

fn certificate_seconds_left(not_after: std::time::SystemTime) -> f64 {
    match not_after.duration_since(std::time::SystemTime::now()) {
        Ok(left) => left.as_secs_f64(),
        Err(past) => -past.duration().as_secs_f64(),
    }
}

/// Keeps `pisgate_nordea_certificate_expiry_seconds` current (every minute) and logs a
/// warning once a day while less than 30 days are left.
async fn watch_certificate(not_after: std::time::SystemTime) {
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let left = certificate_seconds_left(not_after);
        metrics::gauge!("pisgate_nordea_certificate_expiry_seconds").set(left);
        let due = last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(86_400));
        if left < CERTIFICATE_WARN_BEFORE.as_secs_f64() && due {
            tracing::warn!(
                days_left = (left / 86_400.0).floor(),
                not_after = %httpdate::fmt_http_date(not_after),
                "the eIDAS certificate expires soon: renew it and register it at Nordea"
            );
            last_warning = Some(tokio::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

/// Checks the eIDAS certificate (`PISGATE__NORDEA__CERTIFICATE_FILE`) against the signing key
/// and `now`: unreadable, for another key, expired or not yet valid refuses the start; a
/// missing qcStatements extension is a warning. In production a missing certificate is a
/// warning (nothing to check). Sets the expiry gauge.
pub fn check_certificate(
    settings: &Settings,
    now: std::time::SystemTime,
) -> anyhow::Result<Option<crate::bank::nordea::certificate::CertificateCheck>> {
    use crate::bank::nordea::certificate::EidasCertificate;
    let Some(n) = settings.nordea.as_ref() else {
        return Ok(None);
    };
    let Some(text) = &n.certificate else {
        if n.environment == crate::config::BankEnvironment::Production {
            tracing::warn!(
                "no eIDAS certificate configured (PISGATE__NORDEA__CERTIFICATE_FILE): its match with the signing key and its expiry are not checked"
            );
        }
        return Ok(None);
    };
    let invalid = |e: &dyn std::fmt::Display| {
        SettingsError::Load(format!(
            "invalid setting PISGATE__NORDEA__CERTIFICATE_FILE: {e}"
        ))
    };
    let key = SigningKey::from_text(n.private_key.expose_secret()).map_err(|e| {
        SettingsError::Load(format!(
            "invalid setting PISGATE__NORDEA__PRIVATE_KEY_FILE: {e}"
        ))
    })?;
    let certificate = EidasCertificate::from_text(text).map_err(|e| invalid(&e))?;
    let check = certificate.check(&key, now).map_err(|e| invalid(&e))?;
    metrics::gauge!("pisgate_nordea_certificate_expiry_seconds")
        .set(check.expires_in.as_secs_f64());
    if !check.qc_statements {
        tracing::warn!(
            subject = %check.subject,
            "the eIDAS certificate has no qcStatements extension: Nordea's PSD2 APIs need a QSealC"
        );
    }
    if check.expires_in < CERTIFICATE_WARN_BEFORE {
        tracing::warn!(
            days_left = check.expires_in.as_secs() / 86_400,
            "the eIDAS certificate expires soon: renew it and register it at Nordea"
        );
    }
    tracing::info!(subject = %check.subject, days_left = check.expires_in.as_secs() / 86_400, "eIDAS certificate checked");
    Ok(Some(check))
}

/// Every configured bank from the settings; a bad key or URL names its setting.
pub fn banks(settings: &Settings) -> anyhow::Result<Banks> {
    use crate::config::BankProtocolSettings;
    let mut entries = Vec::new();
    for b in &settings.banks {
        let client: Arc<dyn Bank> = match &b.protocol {
            BankProtocolSettings::Nordea(n) => {
                let env = if b.id == "nordea" {
                    "PISGATE__NORDEA".to_owned()
                } else {
                    format!("PISGATE__BANKS__{}", b.id.to_uppercase())
                };
                Arc::new(
                    nordea_client_from(n, &b.id, &env)?
                        .with_needs_debtor_account(b.needs_debtor_account),
                )
            }
            BankProtocolSettings::BerlinGroup(bg) => Arc::new(berlin_group_client(&b.id, bg)?),
            BankProtocolSettings::Seb(s) => Arc::new(crate::bank::registry::seb_client(&b.id, s)?),
            BankProtocolSettings::Op(s) => Arc::new(crate::bank::registry::op_client(&b.id, s)?),
        };
        entries.push(crate::bank::BankEntry {
            id: b.id.clone(),
            name: b.name.clone(),
            countries: b.countries.clone(),
            client,
        });
    }
    Ok(Banks::new(entries))
}

/// A Berlin Group client from one bank's settings; a bad key, certificate or URL names its
/// variable.
pub fn berlin_group_client(
    id: &str,
    bg: &crate::config::BerlinGroupSettings,
) -> anyhow::Result<crate::bank::berlin_group::BerlinGroupClient> {
    use crate::bank::berlin_group::{BerlinGroupClient, BerlinGroupConfig, ScaApproach};
    use crate::bank::nordea::certificate::EidasCertificate;
    use crate::config::ScaApproach as Approach;
    let env = format!("PISGATE__BANKS__{}", id.to_uppercase());
    let key = bg
        .private_key
        .as_ref()
        .map(|k| SigningKey::from_text(k.expose_secret()))
        .transpose()
        .map_err(|e| {
            SettingsError::Load(format!("invalid setting {env}__PRIVATE_KEY_FILE: {e}"))
        })?;
    let certificate = bg
        .certificate
        .as_deref()
        .map(EidasCertificate::from_text)
        .transpose()
        .map_err(|e| {
            SettingsError::Load(format!("invalid setting {env}__CERTIFICATE_FILE: {e}"))
        })?;
    let mut config = BerlinGroupConfig::new(id, &bg.base_url, key, certificate);
    config.sign_requests = bg.sign_requests;
    config.products = bg
        .products
        .iter()
        .map(|(c, p)| (c.code().to_owned(), p.clone()))
        .collect();
    config.periodic_product = bg.periodic_product.clone();
    config.paid_statuses = bg.paid_statuses.clone();
    config.needs_debtor_account = bg.needs_debtor_account;
    config.sca_approach = match bg.sca_approach {
        Approach::Redirect => ScaApproach::Redirect,
        Approach::ExplicitRedirect => ScaApproach::ExplicitRedirect,
        Approach::Decoupled => ScaApproach::Decoupled,
        Approach::OAuth => ScaApproach::OAuth,
    };
    config.remittance_exclusive = bg.remittance_exclusive;
    config.connect_timeout = bg.connect_timeout;
    config.request_timeout = bg.request_timeout;
    config.read_retries.max_attempts = bg.read_attempts;
    config.psu_id_type = bg.psu_id_type.clone();
    config.psu_ip_fallback = Some(bg.psu_ip_fallback);
    config.oauth_client_id = bg.oauth_client_id.clone();
    BerlinGroupClient::new(config)
        .map_err(|e| SettingsError::Load(format!("invalid settings {env}__*: {e}")).into())
}

/// The `[nordea]` bank's client as the concrete type (`pisgate check` uses its probe); a bad
/// key or URL names its setting.
pub fn nordea_client_concrete(
    nordea: &crate::config::NordeaSettings,
) -> anyhow::Result<NordeaClient> {
    nordea_client_from(nordea, "nordea", "PISGATE__NORDEA")
}

/// A Nordea client from one bank's settings; `env` is the prefix of its variables.
fn nordea_client_from(
    n: &crate::config::NordeaSettings,
    bank_id: &str,
    env: &str,
) -> anyhow::Result<NordeaClient> {
    let key = SigningKey::from_text(n.private_key.expose_secret()).map_err(|e| {
        SettingsError::Load(format!("invalid setting {env}__PRIVATE_KEY_FILE: {e}"))
    })?;
    let mut config = NordeaConfig::new(&n.base_url, &n.client_id, n.client_secret.clone(), key);
    config.token_path = n.token_path.clone();
    config.connect_timeout = n.connect_timeout;
    config.request_timeout = n.request_timeout;
    config.read_retries.max_attempts = n.read_attempts;
    config.delete_signing = n.delete_signing;
    config.bank_id = bank_id.to_owned();
    let client = NordeaClient::new(config)
        .map_err(|e| SettingsError::Load(format!("invalid setting {env}__BASE_URL: {e}")))?;
    Ok(client)
}

/// The token cipher: the current key plus any previous ones (`id:base64,id:base64`).
pub fn token_cipher(settings: &Settings) -> anyhow::Result<TokenCipher> {
    let t = &settings.tokens;
    let invalid = |var: &str, e: &dyn std::fmt::Display| {
        SettingsError::Load(format!("invalid setting {var}: {e}"))
    };
    let mut cipher = TokenCipher::from_base64(&t.key_id, &t.encryption_key)
        .map_err(|e| invalid("PISGATE__TOKENS__ENCRYPTION_KEY", &e))?;
    for entry in t
        .previous_keys
        .expose_secret()
        .split(',')
        .filter(|e| !e.trim().is_empty())
    {
        let (id, key) = entry.trim().split_once(':').ok_or_else(|| {
            invalid(
                "PISGATE__TOKENS__PREVIOUS_KEYS",
                &"expected id:base64 entries",
            )
        })?;
        cipher = cipher
            .with_previous_key(id, &SecretString::from(key.to_owned()))
            .map_err(|e| invalid("PISGATE__TOKENS__PREVIOUS_KEYS", &e))?;
    }
    Ok(cipher)
}

/// The ledger key ring: `ledger.key` under `ledger.key_id` plus `ledger.previous_keys`, with
/// `ledger.retired_key_ids` retired. A missing or malformed key, or a retired id that is not
/// a previous key, is a settings error naming the variable.
pub fn ledger_keys(l: &crate::config::LedgerSettings) -> Result<LedgerKeys, SettingsError> {
    let key = l.required_key()?;
    LedgerKeys::new(&l.key_id, key).map_err(|e| {
        let key = if matches!(e, crate::ledger::keys::KeyError::BadId) {
            "ledger.key_id"
        } else {
            "ledger.key"
        };
        SettingsError::Invalid {
            key: key.into(),
            env: crate::config::env_name(key),
            reason: e.to_string(),
        }
    })?;
    LedgerKeys::parse(&l.key_id, key, &l.previous_keys)
        .map_err(|e| SettingsError::Invalid {
            key: "ledger.previous_keys".into(),
            env: "PISGATE__LEDGER__PREVIOUS_KEYS".into(),
            reason: e.to_string(),
        })?
        .with_retired(&l.retired_key_ids)
        .map_err(|e| SettingsError::Invalid {
            key: "ledger.retired_key_ids".into(),
            env: "PISGATE__LEDGER__RETIRED_KEY_IDS".into(),
            reason: e.to_string(),
        })
}

/// Completes on SIGTERM (Kubernetes) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
