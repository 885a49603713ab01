//! Builds the running service: pool, migrations check, state, router, listener; and stops
//! it gracefully (stop accepting, let in-flight requests finish within a bound, close the
//! pool).

use crate::api::{self, AppState};
use crate::bank::Bank;
use crate::bank::nordea::{NordeaClient, NordeaConfig, SigningKey};
use crate::config::{Settings, SettingsError};
use crate::ledger;
use crate::ledger::crypto::TokenCipher;
use crate::ledger::keys::LedgerKeys;
use crate::workers::{WorkerContext, Workers};
use anyhow::Context as _;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    pool: PgPool,
    shutdown_timeout: Duration,
    workers: WorkerContext,
}

impl Application {
    /// Connects to the database, refuses to go on with unapplied migrations (or applies
    /// them when `database.migrate_on_start` is set), and binds the listen address.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(settings.server.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (PISGATE__SERVER__LISTEN)",
                    settings.server.listen
                )
            })?;
        Application::build_on(settings, listener).await
    }

    /// As [`Application::build`], on a listener the caller bound (tests bind first so they
    /// know the public URL before the settings are made).
    pub async fn build_on(
        settings: Settings,
        listener: TcpListener,
    ) -> anyhow::Result<Application> {
        let pool = ledger::connect(&settings.database).await?;
        let pending = ledger::pending_migrations(&pool)
            .await
            .context("cannot read the migration state of the database")?;
        if !pending.is_empty() {
            if settings.database.migrate_on_start {
                tracing::info!(count = pending.len(), "applying database migrations");
                ledger::migrate(&pool)
                    .await
                    .context("applying database migrations failed")?;
            } else {
                anyhow::bail!(
                    "the database has {} unapplied migration(s); run `pisgate migrate` first \
                     (or `pisgate serve --migrate`)",
                    pending.len()
                );
            }
        }
        let shutdown_timeout = settings.server.shutdown_timeout;
        // Every event this process appends is signed with this ring.
        ledger::keys::install(ledger_keys(&settings)?);
        let bank = nordea_client(&settings)?;
        let cipher = Arc::new(token_cipher(&settings)?);
        let state = AppState::new(
            pool.clone(),
            settings,
            crate::telemetry::metrics_handle(),
            bank,
            cipher,
        );
        let workers = WorkerContext::new(
            pool.clone(),
            state.settings.clone(),
            state.bank.clone(),
            state.cipher.clone(),
        );
        Ok(Application {
            listener,
            router: api::router(state),
            pool,
            shutdown_timeout,
            workers,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn pool(&self) -> &PgPool {
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
        tracing::info!(%addr, "pisgate is listening");
        let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
            let _ = stopping_tx.send(true);
        };
        // Workers stop with the HTTP server: on the signal, or when the server ends early
        // (which drops the signal and its sender).
        let (workers_stop_tx, workers_stop_rx) = tokio::sync::watch::channel(false);
        let mut told = stopping_rx.clone();
        let forward = tokio::spawn(async move {
            let _ = told.wait_for(|stopping| *stopping).await;
            let _ = workers_stop_tx.send(true);
            tokio::time::Instant::now()
        });
        let workers = Workers::spawn(self.workers, workers_stop_rx);
        let serve = axum::serve(self.listener, self.router).with_graceful_shutdown(signal);
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
        // Workers stopped alongside the HTTP drain: they get what is left of the same bound.
        let stop_began = forward
            .await
            .unwrap_or_else(|_| tokio::time::Instant::now());
        let left = self
            .shutdown_timeout
            .saturating_sub(stop_began.elapsed())
            .max(Duration::from_secs(1));
        workers.join(left).await;
        self.pool.close().await;
        tracing::info!("stopped");
        result
    }
}

/// The Nordea client from the settings; a bad key or URL names its setting.
pub fn nordea_client(settings: &Settings) -> anyhow::Result<Arc<dyn Bank>> {
    let n = &settings.nordea;
    let key = SigningKey::from_text(n.private_key.expose_secret()).map_err(|e| {
        SettingsError::Load(format!(
            "invalid setting PISGATE__NORDEA__PRIVATE_KEY_FILE: {e}"
        ))
    })?;
    let mut config = NordeaConfig::new(&n.base_url, &n.client_id, n.client_secret.clone(), key);
    config.token_path = n.token_path.clone();
    config.connect_timeout = n.connect_timeout;
    config.request_timeout = n.request_timeout;
    config.read_retries.max_attempts = n.read_attempts;
    let client = NordeaClient::new(config).map_err(|e| {
        SettingsError::Load(format!("invalid setting PISGATE__NORDEA__BASE_URL: {e}"))
    })?;
    Ok(Arc::new(client))
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

/// The ledger key ring: `ledger.key` under `ledger.key_id` plus `ledger.previous_keys`. A
/// missing or malformed key is a settings error naming the variable.
pub fn ledger_keys(settings: &Settings) -> Result<LedgerKeys, SettingsError> {
    let l = &settings.ledger;
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
    LedgerKeys::parse(&l.key_id, key, &l.previous_keys).map_err(|e| SettingsError::Invalid {
        key: "ledger.previous_keys".into(),
        env: "PISGATE__LEDGER__PREVIOUS_KEYS".into(),
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
