//! `database.pooler = "auto"`: finding out whether `database.url` reaches PostgreSQL as a
//! session or through a pooler in transaction mode, before the pool is built.
//!
//! The tell is the server process behind a client connection (`pg_backend_pid()`). A
//! session (PostgreSQL itself, or PgBouncer in session mode) keeps one server process for
//! the life of the client connection, and no two client connections ever share one. A
//! transaction pooler lends a server connection per transaction: a second client that opens
//! a transaction takes the idle server the first one just used (PgBouncer hands out the
//! most recently used one first), and the first client, asking again meanwhile, is served
//! by another process, or has to wait for one. So the probe:
//!
//! 1. client A asks for its server process (`a`);
//! 2. client B opens a transaction and asks for its own (`b`), keeping the transaction open;
//! 3. A asks again (`a'`).
//!
//! `b == a`, `a' != a`, or A waiting for a server, each proves a transaction pooler;
//! otherwise steps 2 and 3 are repeated with more clients, and three rounds without a
//! sign mean a session. Every query is a simple-protocol one (no prepared statement is
//! left anywhere), and the probe's transactions are rolled back.
//!
//! A pooler in statement mode refuses transactions, and pisgate cannot work without them:
//! that is an error that says so.
//!
//! Whether a transaction pooler keeps protocol-level prepared statements across server
//! connections (`database.pooler = "transaction-prepared"`, [`keeps_prepared_statements`])
//! shows in the name a statement gets on the server: PgBouncer >= 1.21 with
//! `max_prepared_statements` > 0 prepares a client's `sqlx_s_1` on each server connection
//! under a name of its own (`PGBOUNCER_…`) and maps it back; a pooler that passes names
//! through (PgBouncer 1.18, or `max_prepared_statements = 0`) leaves `sqlx_s_1` there, where
//! another client's `sqlx_s_1`, a different statement, would meet it.

use crate::config::Pooler;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, PgConnection, Row as _};
use std::str::FromStr as _;
use std::time::Duration;

/// How many extra clients the probe opens before it concludes "a session".
const ROUNDS: usize = 3;

/// How long client A may wait for an answer before the wait itself counts as the sign of a
/// pooler that had no idle server for it (PostgreSQL answers `SELECT pg_backend_pid()` at
/// once on a session).
const WAIT_FOR_SERVER: Duration = Duration::from_secs(2);

/// What the probe saw, for the log line and for `pisgate check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub pooler: Pooler,
    pub evidence: String,
}

/// Why the probe has no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The database (or the pooler) could not be reached, or dropped the probe.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A pooler that pisgate cannot work behind.
    #[error("{0}")]
    Unusable(String),
}

/// Probes `url` (see the module's documentation).
pub async fn detect(url: &str, connect_timeout: Duration) -> Result<Detection, ProbeError> {
    let options = PgConnectOptions::from_str(url)?
        .statement_cache_capacity(0)
        .application_name("pisgate pooler probe");
    let connect = || async {
        match tokio::time::timeout(connect_timeout, options.connect()).await {
            Ok(c) => c,
            Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {} s", connect_timeout.as_secs()),
            ))),
        }
    };
    let mut first = connect().await?;
    let a = backend_pid(&mut first, "SELECT pg_backend_pid()").await?;
    let mut holding: Vec<PgConnection> = Vec::with_capacity(ROUNDS);
    let mut verdict = None;
    for _ in 0..ROUNDS {
        let mut other = connect().await?;
        let b = match backend_pid(&mut other, "BEGIN; SELECT pg_backend_pid()").await {
            Ok(b) => b,
            Err(e) => {
                let _ = other.close().await;
                close_all(first, holding).await;
                return Err(statement_mode(e));
            }
        };
        holding.push(other);
        if b == a {
            verdict = Some(format!(
                "two client connections were served by one server process ({a})"
            ));
            break;
        }
        match tokio::time::timeout(
            WAIT_FOR_SERVER,
            backend_pid(&mut first, "SELECT pg_backend_pid()"),
        )
        .await
        {
            Err(_) => {
                // A's query is still queued at the pooler: drop that connection unused.
                drop(first);
                close_all_held(holding).await;
                return Ok(Detection {
                    pooler: Pooler::Transaction,
                    evidence: format!(
                        "a client connection waited more than {} s for a server process \
                         while another client held a transaction",
                        WAIT_FOR_SERVER.as_secs()
                    ),
                });
            }
            Ok(again) => {
                let again = again?;
                if again != a {
                    verdict = Some(format!(
                        "one client connection was served by server process {a}, then {again}"
                    ));
                    break;
                }
            }
        }
    }
    close_all(first, holding).await;
    Ok(match verdict {
        Some(evidence) => Detection {
            pooler: Pooler::Transaction,
            evidence,
        },
        None => Detection {
            pooler: Pooler::None,
            evidence: format!(
                "one client connection kept server process {a} while {ROUNDS} others held transactions"
            ),
        },
    })
}

async fn backend_pid(conn: &mut PgConnection, sql: &'static str) -> Result<i32, sqlx::Error> {
    let row = sqlx::raw_sql(sql).fetch_one(&mut *conn).await?;
    row.try_get::<i32, _>(0)
}

/// PgBouncer in statement mode answers a `BEGIN` with an error of its own.
fn statement_mode(e: sqlx::Error) -> ProbeError {
    let text = e.to_string();
    if text.contains("statement pooling") || text.contains("transaction blocks not allowed") {
        ProbeError::Unusable(
            "database.url is a pooler in statement mode, which refuses transactions; pisgate \
             needs them: use pool_mode = transaction (database.pooler = \"transaction\") or session"
                .into(),
        )
    } else {
        ProbeError::Database(e)
    }
}

async fn close_all(first: PgConnection, holding: Vec<PgConnection>) {
    let _ = first.close().await;
    close_all_held(holding).await;
}

async fn close_all_held(holding: Vec<PgConnection>) {
    for mut c in holding {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut c).await;
        let _ = c.close().await;
    }
}

/// What [`keeps_prepared_statements`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedCheck {
    /// The pooler renames (and so tracks) the client's prepared statements.
    pub renamed: bool,
    pub evidence: String,
}

/// Prepares a named statement through `url` inside a transaction (so both exchanges and the
/// look-up reach one server connection) and asks the server under which name it holds it.
/// The transaction is rolled back; the connection closed.
pub async fn keeps_prepared_statements(
    url: &str,
    connect_timeout: Duration,
) -> Result<PreparedCheck, ProbeError> {
    // The statement cache on (sqlx's default): the probe statement is a named one.
    let options = PgConnectOptions::from_str(url)?.application_name("pisgate pooler probe");
    let mut conn = match tokio::time::timeout(connect_timeout, options.connect()).await {
        Ok(c) => c?,
        Err(_) => {
            return Err(ProbeError::Database(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {} s", connect_timeout.as_secs()),
            ))));
        }
    };
    let outcome = async {
        sqlx::raw_sql("BEGIN").execute(&mut conn).await?;
        let marker = format!("pisgate_prepared_probe_{}", uuid::Uuid::new_v4().simple());
        let probe = format!("SELECT $1::int4 AS {marker}");
        let prepared = async {
            sqlx::query_scalar::<_, i32>(&probe)
                .bind(1)
                .fetch_one(&mut conn)
                .await?;
            sqlx::query_scalar::<_, String>(
                "SELECT name FROM pg_prepared_statements WHERE strpos(statement, $1) > 0",
            )
            .bind(&marker)
            .fetch_all(&mut conn)
            .await
        }
        .await;
        let names = match prepared {
            Ok(names) => names,
            // Another client's `sqlx_s_1` (or `_2`) on the server connection we were lent:
            // names are passed through (a pisgate in "transaction" mode leaves its last
            // transaction's statements there until its next `BEGIN; DEALLOCATE ALL`).
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P05") => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if !names.iter().any(|n| n.starts_with("PGBOUNCER_")) {
            // Our statements sit on a server under sqlx's names, and no rollback removes
            // them: leave none behind for the next client of that server connection.
            sqlx::raw_sql("DEALLOCATE ALL").execute(&mut conn).await?;
        }
        Ok::<_, sqlx::Error>(Some(names))
    }
    .await;
    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut conn).await;
    let _ = conn.close().await;
    let Some(names) = outcome? else {
        return Ok(PreparedCheck {
            renamed: false,
            evidence: "preparing a statement through it met another client's statement of the \
                       same name (sqlx_s_…) on the server: statement names are passed through"
                .into(),
        });
    };
    Ok(match names.as_slice() {
        [] => PreparedCheck {
            renamed: false,
            evidence: "a statement prepared through it was not found on the server".into(),
        },
        [name, ..] if name.starts_with("sqlx_s_") => PreparedCheck {
            renamed: false,
            evidence: format!(
                "a statement prepared through it sits on the server under the client's own \
                 name ({name}): statement names are passed through"
            ),
        },
        [name, ..] => PreparedCheck {
            renamed: true,
            evidence: format!(
                "a statement prepared through it sits on the server as {name}: the pooler \
                 tracks prepared statements"
            ),
        },
    })
}
