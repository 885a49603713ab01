//! Postgres persistence. All SQL of pisgate lives below this module.
//!
//! Queries are compile-time checked (`sqlx::query!`) against the committed offline data in
//! `.sqlx/`, so building needs no database. Nothing here calls the network or holds a
//! transaction across anything but the database.

pub mod api_keys;
pub mod bankid;
pub mod binding;
pub mod canonical;
pub mod checkpoints;
pub mod crypto;
pub mod db;
pub mod disagreements;
pub mod events;
pub mod health;
pub mod idempotency;
pub mod keys;
pub mod listener;
pub mod merchants;
pub mod operators;
pub mod payees;
pub mod payments;
pub mod polls;
pub mod pooler;
pub mod reseal;
pub mod sca;
pub mod seal;
pub mod submissions;
pub mod tokens;
pub mod verify;
pub mod view;
pub mod webhook_events;
pub mod webhooks;

pub use db::{Conn, Db, Reads};

use crate::config::DatabaseSettings;
use anyhow::Context as _;
use sqlx::migrate::Migrator;

/// The schema migrations compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Settles `database.pooler` before anything connects or asks for
/// [`DatabaseSettings::session_url`]:
/// - `"auto"` probes `database.url` ([`pooler::detect`]): a session gives "none"; a
///   transaction pooler gives "transaction-prepared" when it keeps prepared statements
///   ([`pooler::keeps_prepared_statements`], PgBouncer >= 1.21 with
///   `max_prepared_statements` > 0), "transaction" otherwise (PgBouncer 1.18);
/// - `"transaction-prepared"` is proved: behind a transaction pooler that passes statement
///   names through, it is an error (statements of two clients could meet on one server
///   connection), not a start;
/// - `"none"` and `"transaction"` are taken as given.
pub async fn resolve_pooler(settings: &mut DatabaseSettings) -> anyhow::Result<()> {
    use crate::config::Pooler;
    let unreachable = |e: pooler::ProbeError| match e {
        pooler::ProbeError::Database(e) => redact_connect_error(e).context(format!(
            "cannot connect to the database (PISGATE__DATABASE__URL) to see what pooler is in \
             front of it (database.pooler = \"{}\"; \"none\" or \"transaction\" skip the probe)",
            settings.pooler.as_str()
        )),
        pooler::ProbeError::Unusable(why) => anyhow::anyhow!(why),
    };
    match settings.pooler {
        Pooler::None | Pooler::Transaction => Ok(()),
        Pooler::Auto => {
            let found = pooler::detect(settings.url(), settings.acquire_timeout)
                .await
                .map_err(unreachable)?;
            let (pooler, evidence) = if found.pooler == Pooler::Transaction {
                // Any doubt settles on "transaction", which is safe behind every pooler.
                let prepared =
                    pooler::keeps_prepared_statements(settings.url(), settings.acquire_timeout)
                        .await
                        .unwrap_or_else(|e| pooler::PreparedCheck {
                            renamed: false,
                            evidence: format!("the prepared-statement probe failed ({e})"),
                        });
                if prepared.renamed {
                    (
                        Pooler::TransactionPrepared,
                        format!("{}; {}", found.evidence, prepared.evidence),
                    )
                } else {
                    (
                        Pooler::Transaction,
                        format!("{}; {}", found.evidence, prepared.evidence),
                    )
                }
            } else {
                (found.pooler, found.evidence)
            };
            tracing::info!(
                pooler = pooler.as_str(),
                evidence = %evidence,
                "database.pooler is auto: detected"
            );
            settings.pooler = pooler;
            Ok(())
        }
        Pooler::TransactionPrepared => {
            let prepared =
                pooler::keeps_prepared_statements(settings.url(), settings.acquire_timeout)
                    .await
                    .map_err(unreachable)?;
            if prepared.renamed {
                tracing::info!(evidence = %prepared.evidence, "database.pooler is transaction-prepared: confirmed");
                return Ok(());
            }
            // Names passed through: fine on a session (PostgreSQL itself, a session pooler),
            // fatal behind a transaction pooler.
            let found = pooler::detect(settings.url(), settings.acquire_timeout)
                .await
                .map_err(unreachable)?;
            if found.pooler == Pooler::None {
                tracing::info!(
                    evidence = %found.evidence,
                    "database.pooler is transaction-prepared and database.url is a session: \
                     works as it is"
                );
                return Ok(());
            }
            anyhow::bail!(
                "database.pooler (PISGATE__DATABASE__POOLER) is \"transaction-prepared\", but the \
                 transaction pooler at database.url does not keep prepared statements across \
                 server connections ({}; {}): that needs PgBouncer 1.21 or later with \
                 max_prepared_statements > 0. Set max_prepared_statements, or use \
                 database.pooler = \"transaction\"",
                found.evidence,
                prepared.evidence
            )
        }
    }
}

/// Opens the pool and proves the database answers.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Db> {
    Db::connect(settings, settings.url())
        .await
        .map_err(redact_connect_error)
        .context("cannot connect to the database (PISGATE__DATABASE__URL)")
}

/// The replica pool, when `database.read_url` is set; it connects on first use (the lag
/// probe), so a replica that is down does not stop the start.
pub fn connect_read(settings: &DatabaseSettings) -> anyhow::Result<Option<Db>> {
    let Some(url) = &settings.read_url else {
        return Ok(None);
    };
    use secrecy::ExposeSecret as _;
    Db::connect_lazy(settings, url.expose_secret())
        .map(Some)
        .map_err(redact_connect_error)
        .context("cannot use the read replica's URL (PISGATE__DATABASE__READ_URL)")
}

/// A pool that is a session per connection, for migrations: on `database.direct_url`, or on
/// `database.url` unless that is a transaction pooler (the migrator holds a session advisory
/// lock while it works, which a transaction pooler would leave on some server connection).
pub async fn connect_session(settings: &DatabaseSettings) -> anyhow::Result<sqlx::PgPool> {
    let Some(url) = settings.session_url() else {
        anyhow::bail!(
            "migrations need a database session, and database.pooler is \"{}\": \
             set PISGATE__DATABASE__DIRECT_URL to the primary (not through the pooler)",
            settings.pooler.as_str()
        );
    };
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(settings.acquire_timeout)
        .connect(url)
        .await
        .map_err(redact_connect_error)
        .context("cannot connect to the database for migrations (PISGATE__DATABASE__DIRECT_URL or PISGATE__DATABASE__URL)")
}

/// sqlx's connect errors can quote the URL, password included; keep only the kind.
fn redact_connect_error(e: sqlx::Error) -> anyhow::Error {
    match e {
        sqlx::Error::Configuration(_) => anyhow::anyhow!("the database URL is malformed"),
        other => anyhow::Error::new(other),
    }
}

/// Versions of migrations compiled into this binary that the database has not applied.
pub async fn pending_migrations(pool: &Db) -> Result<Vec<i64>, sqlx::Error> {
    let table_exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    let applied: Vec<i64> = if table_exists {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    Ok(MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .map(|m| m.version)
        .collect())
}

pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
