//! Postgres persistence. All SQL of pisgate lives below this module.
//!
//! Queries are compile-time checked (`sqlx::query!`) against the committed offline data in
//! `.sqlx/`, so building needs no database. Nothing here calls the network or holds a
//! transaction across anything but the database.

pub mod api_keys;
pub mod canonical;
pub mod checkpoints;
pub mod crypto;
pub mod events;
pub mod health;
pub mod idempotency;
pub mod keys;
pub mod merchants;
pub mod operators;
pub mod payments;
pub mod polls;
pub mod tokens;
pub mod verify;
pub mod view;
pub mod webhook_events;
pub mod webhooks;

use crate::config::DatabaseSettings;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

/// The schema migrations compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Opens the pool and proves the database answers.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    use anyhow::Context as _;
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect(settings.url())
        .await
        .map_err(redact_connect_error)
        .context("cannot connect to the database (PISGATE__DATABASE__URL)")?;
    Ok(pool)
}

/// sqlx's connect errors can quote the URL, password included; keep only the kind.
fn redact_connect_error(e: sqlx::Error) -> anyhow::Error {
    match e {
        sqlx::Error::Configuration(_) => anyhow::anyhow!("the database URL is malformed"),
        other => anyhow::Error::new(other),
    }
}

/// Versions of migrations compiled into this binary that the database has not applied.
pub async fn pending_migrations(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
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

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
