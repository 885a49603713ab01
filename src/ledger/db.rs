//! The handle every query goes through: a pool that knows what sits behind its URL.
//!
//! Behind a pooler in transaction mode (PgBouncer `pool_mode = transaction`, `database.pooler
//! = "transaction"`) a server connection is ours only between `BEGIN` and `COMMIT`; between
//! two transactions PgBouncer may hand it to another client and give us another. sqlx's
//! extended-protocol queries are two exchanges (Parse + Describe, then Bind + Execute, each
//! ending in Sync), so outside a transaction the second half can land on a server that never
//! saw the first. And sqlx names its prepared statements per client connection (`sqlx_s_1`,
//! …), so a statement left on a server collides with another client's of the same name.
//! PgBouncer only learned protocol-level prepared statements in 1.21; Debian 12 ships 1.18.
//!
//! So, in that mode:
//! - every query through [`Db`] as an executor runs in its own transaction, and its answer
//!   is handed over only once `COMMIT` succeeded (nothing is reported written that was not);
//! - [`Db::begin`] and [`Db::acquire`] open a transaction too (`acquire`'s is rolled back when
//!   dropped: it serves reads and sequence draws);
//! - every transaction starts with `DEALLOCATE ALL` (in the `BEGIN` exchange), so it never
//!   meets a statement a previous transaction on that server left behind, and the pool keeps
//!   no statement cache (`statement_cache_capacity(0)`): no name is reused across transactions;
//! - nothing takes session state: no session advisory locks (shopper serialisation is a lease
//!   row, `ledger::tokens`), no `SET`, and LISTEN goes over `database.direct_url`
//!   (`ledger::listener::Listener`), migrations too.
//!
//! Behind a pooler that keeps protocol-level prepared statements (PgBouncer >= 1.21 with
//! `max_prepared_statements` > 0, `database.pooler = "transaction-prepared"`) the pooler
//! itself tracks each client's named statements and prepares them on whichever server
//! connection it lends (under names of its own), so the statement cache is on, a single
//! query runs as an autocommit statement (one exchange once its statement is cached; the
//! pooler keeps both halves of a first run apart safely), and a transaction opens with a
//! plain `BEGIN`. Still no session state (the same rules as above). That mode is only
//! safe where the pooler really does this: behind one that passes statement names through
//! (PgBouncer 1.18, or `max_prepared_statements = 0`) a client's `sqlx_s_3` could meet
//! another client's `sqlx_s_3` on a server; `ledger::resolve_pooler` proves it at start
//! (`ledger::pooler::keeps_prepared_statements`) and refuses to start otherwise.
//!
//! Without a pooler (or with one in session mode) a [`Db`] is a plain pool: one exchange per
//! query, cached statements, no extra round trips.
//!
//! A single statement through [`Db`] (not behind a pooler that needs each in a transaction)
//! runs on a connection the handle keeps between statements ([`Parked`]) rather than one it
//! gives back to sqlx each time: sqlx 0.8 pings every connection given back (a round trip
//! for PostgreSQL and a task for us, on every statement) and offers no switch. A connection
//! is kept only after its statement ran to its end and answered Ok, so it is idle and clean;
//! any other way out (an error, a caller dropped mid-statement) gives it back to sqlx, whose
//! ping then flushes or closes it as before. Transactions and reads start on a kept
//! connection too, so none is stranded while the pool is short.

use crate::config::{DatabaseSettings, Pooler};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{
    PgConnectOptions, PgPoolOptions, PgQueryResult, PgRow, PgStatement, PgTypeInfo,
};
use sqlx::{Describe, Either, Execute, Executor, PgConnection, PgPool, Postgres, Transaction};
use std::borrow::Cow;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a transaction starts behind a transaction pooler: one simple-query exchange.
const POOLED_BEGIN: &str = "BEGIN; DEALLOCATE ALL";

/// How many acquires from sqlx's pool run at once for the callers waiting on a full pool
/// ([`Db::pump`]).
const MAX_PUMPS: usize = 4;

/// How long a direct connection may sit idle and still be handed out without a ping.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// How long a kept connection may sit unused before it goes back to sqlx's pool (which
/// closes it when idle long enough, or hands it to whoever waits there).
const KEEP_IDLE_AT_MOST: Duration = Duration::from_secs(10);

/// How long a connection may be kept in turn after turn before it goes back to sqlx's pool
/// (which closes it past the pool's `max_lifetime`, 30 minutes).
const KEEP_AT_MOST: Duration = Duration::from_secs(300);

/// A connection kept between single statements: when it was kept first and last.
struct Kept {
    conn: PoolConnection<Postgres>,
    first: Instant,
    since: Instant,
}

/// The connections a [`Db`] keeps between single statements, the most recently used last,
/// and the callers waiting for one while every connection is in use, first come first.
/// sqlx counts the kept ones as in use: [`Db::checkout`] takes from here before the pool, so
/// that none sits here while a transaction waits for the pool.
#[derive(Default)]
struct Parked {
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    kept: Vec<Kept>,
    /// A connection kept while someone waits goes to the one who waited longest, never to
    /// a caller who came later (sqlx's queue does not see the kept ones, so a waiter waits
    /// for this and for sqlx's pool at once).
    waiting: std::collections::VecDeque<tokio::sync::oneshot::Sender<Kept>>,
    /// How many [`Db::pump`]s run: acquires from sqlx's pool on behalf of the waiters.
    pumps: usize,
}

/// Where [`Db::take`] gets its connection.
enum Next {
    Kept(Kept),
    Pool,
    Wait(tokio::sync::oneshot::Receiver<Kept>),
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kept, waiting) = self
            .slots
            .lock()
            .map(|s| (s.kept.len(), s.waiting.len()))
            .unwrap_or((0, 0));
        f.debug_struct("Parked")
            .field("kept", &kept)
            .field("waiting", &waiting)
            .finish()
    }
}

/// The check of a direct connection on its way out of the pool: a ping (one round trip)
/// when it sat idle longer than [`PING_WHEN_IDLE_FOR`], nothing otherwise. An error closes
/// the connection and the pool hands out another (or opens one).
async fn ping_if_idle(conn: &mut PgConnection, idle_for: Duration) -> Result<bool, sqlx::Error> {
    if idle_for > PING_WHEN_IDLE_FOR {
        sqlx::Connection::ping(conn).await?;
    }
    Ok(true)
}

/// How a [`Db`] uses its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Each connection is a session.
    Session,
    /// Behind a transaction pooler that knows nothing of prepared statements: every query
    /// in a transaction, `DEALLOCATE ALL` first, no statement cache.
    Wrapped,
    /// Behind a transaction pooler that keeps prepared statements: cached statements,
    /// autocommit single queries, no session state.
    Prepared,
}

impl Mode {
    fn of(pooler: Pooler) -> Mode {
        match pooler {
            Pooler::None => Mode::Session,
            Pooler::TransactionPrepared => Mode::Prepared,
            // "auto" is settled before a pool is made (`ledger::resolve_pooler`); were it
            // not, the mode that is safe behind any pooler.
            Pooler::Transaction | Pooler::Auto => Mode::Wrapped,
        }
    }
}

/// A connection pool and the mode it runs in. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
    mode: Mode,
    parked: Arc<Parked>,
}

impl Db {
    /// A pool on `url`, in the mode `pooler` says.
    pub async fn connect(settings: &DatabaseSettings, url: &str) -> Result<Db, sqlx::Error> {
        let (options, connect, mode) = Db::options(settings, url)?;
        let pool = options
            .min_connections(settings.min_connections)
            .connect_with(connect)
            .await?;
        Ok(Db::new(pool, mode))
    }

    fn new(pool: PgPool, mode: Mode) -> Db {
        Db {
            pool,
            mode,
            parked: Arc::default(),
        }
    }

    /// As [`Db::connect`], without connecting yet: the first use does (a replica that is
    /// down at start must not stop the start).
    pub fn connect_lazy(settings: &DatabaseSettings, url: &str) -> Result<Db, sqlx::Error> {
        let (options, connect, mode) = Db::options(settings, url)?;
        let pool = options.min_connections(0).connect_lazy_with(connect);
        Ok(Db::new(pool, mode))
    }

    fn options(
        settings: &DatabaseSettings,
        url: &str,
    ) -> Result<(PgPoolOptions, PgConnectOptions, Mode), sqlx::Error> {
        let mode = Mode::of(settings.pooler);
        let mut connect = PgConnectOptions::from_str(url)?;
        if mode == Mode::Wrapped {
            connect = connect.statement_cache_capacity(0);
        }
        let options = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            // sqlx pings (an empty Sync, one round trip) every connection it hands out unless
            // told not to. That was a third of the nine exchanges a payment creation cost
            // (scripts/roundtrips.sh) and 11.6% of serve's CPU (docs/perf/README.md), for a
            // connection it had handed back a few milliseconds before, answered then by its
            // release ping (sqlx pings every connection given back, which cannot be turned
            // off: a connection that broke while in use never reaches the idle queue).
            // So only a connection that sat idle is tested on the way out
            // (`ping_if_idle`): the one that may have lost its server meanwhile (a failover,
            // a restarted PostgreSQL); a failed ping closes it and the pool opens another.
            // Behind a pooler the ping proves only that the pooler is up and makes PgBouncer
            // lend a server connection to answer it, so there it is off altogether: a pooler
            // connection that did die (the pooler restarted) fails its first query instead,
            // answered 503 (`ledger::health::is_unavailable`), and sqlx drops it.
            .test_before_acquire(false);
        let options = if mode == Mode::Session {
            options.before_acquire(|conn, meta| Box::pin(ping_if_idle(conn, meta.idle_for)))
        } else {
            options
        };
        Ok((options, connect, mode))
    }

    /// A pool that is a session per connection (tests, tools).
    pub fn direct(pool: PgPool) -> Db {
        Db::new(pool, Mode::Session)
    }

    /// Whether this pool is behind a transaction pooler (either kind).
    pub fn pooled(&self) -> bool {
        self.mode != Mode::Session
    }

    /// Whether every query runs in a transaction of its own, opened with `DEALLOCATE ALL`
    /// (`database.pooler = "transaction"`).
    pub fn wraps_queries(&self) -> bool {
        self.mode == Mode::Wrapped
    }

    /// The pool itself, for what needs a session and knows it has one (migrations on a
    /// direct URL) and for its gauges.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.open(if self.wraps_queries() {
            Some(Cow::Borrowed(POOLED_BEGIN))
        } else {
            None
        })
        .await
    }

    /// A transaction opened with `statement` (e.g. `BEGIN ISOLATION LEVEL REPEATABLE READ`:
    /// behind a transaction pooler `SET TRANSACTION` would come too late, after the
    /// `DEALLOCATE ALL` that opens every transaction there).
    pub async fn begin_with(
        &self,
        statement: &'static str,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.open(Some(if self.wraps_queries() {
            Cow::Owned(format!("{statement}; DEALLOCATE ALL"))
        } else {
            Cow::Borrowed(statement)
        }))
        .await
    }

    /// Opens a transaction on a task of its own, so that a caller dropped meanwhile (a
    /// deadline, a client gone) cannot leave the connection inside it: sqlx 0.8 only rolls
    /// back transactions whose BEGIN it has seen answered, so a BEGIN cut off in flight
    /// would go back to the pool still open: the next autocommit write on that connection
    /// would then not be committed when it answers, and behind PgBouncer the server
    /// connection would stay pinned. Finished on its own task, an abandoned transaction is
    /// dropped whole and rolled back.
    async fn open(
        &self,
        statement: Option<Cow<'static, str>>,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let db = self.clone();
        let opening = tokio::spawn(async move {
            let conn = db.checkout().await?;
            Transaction::begin(conn, statement).await
        });
        // The pool hands out connections without a ping (behind a pooler never, straight to
        // PostgreSQL only after a second idle: see `options`), so during an outage the BEGIN
        // itself is what waits: at the pooler, for a server it cannot log in to, or on a
        // connection to a server that hangs. Bound it like the ping was, by the acquire
        // timeout (acquiring included), so that the caller hears "unavailable" (503 with
        // Retry-After) at once instead of at the request's deadline. The opening task
        // finishes on its own; a transaction it opens late is dropped, and so rolled back.
        let bound = self.pool.options().get_acquire_timeout();
        let joined = match tokio::time::timeout(bound, opening).await {
            Ok(joined) => joined,
            Err(_) => return Err(sqlx::Error::PoolTimedOut),
        };
        match joined {
            Ok(tx) => tx,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(sqlx::Error::PoolClosed),
        }
    }

    /// A connection for a few reads (and sequence draws): the pool's own, or (behind a
    /// transaction pooler without prepared statements) one inside a transaction that is
    /// ROLLED BACK when it is dropped. Never write through it: writes go through the pool
    /// itself or [`Db::begin`]. Each read on it is a statement of its own: no snapshot, no
    /// session state is shared between two of them (behind a transaction pooler that keeps
    /// prepared statements, two reads may be served by two server connections).
    pub async fn read_conn(&self) -> Result<Conn, sqlx::Error> {
        if self.wraps_queries() {
            Ok(Conn::InTransaction(self.begin().await?))
        } else {
            Ok(Conn::Session(self.checkout().await?))
        }
    }

    /// A connection for one statement or a transaction: the most recently kept one (pinged
    /// first, straight to PostgreSQL, when it sat unused over [`PING_WHEN_IDLE_FOR`], as the
    /// pool does with its own), else one from the pool.
    async fn checkout(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        Ok(self.take().await?.0)
    }

    /// As [`Db::checkout`], with when the connection was first kept (`None`: from the pool).
    async fn take(&self) -> Result<(PoolConnection<Postgres>, Option<Instant>), sqlx::Error> {
        let deadline = tokio::time::Instant::now() + self.pool.options().get_acquire_timeout();
        loop {
            if self.pool.is_closed() {
                return Err(sqlx::Error::PoolClosed);
            }
            let next = {
                let mut slots = self.parked.slots.lock().expect("parked");
                match slots.kept.pop() {
                    Some(kept) => Next::Kept(kept),
                    None => {
                        // None kept. While the pool can open one, the pool's: that acquire
                        // is never dropped midway (a connection being opened would be lost).
                        // At its size, in line for the next one kept as well, even with one
                        // idle in the pool: another caller may take that one first, and
                        // then a caller waiting only in sqlx's queue waits for a connection
                        // to go back there, which a kept one never does while in use (it
                        // timed out after the acquire timeout, under load: 503s).
                        let max = self.pool.options().get_max_connections();
                        if self.pool.size() < max {
                            Next::Pool
                        } else {
                            // All in use: in line for the next one kept, or given back to
                            // sqlx's pool (the pump takes that one and keeps it for the
                            // first in line).
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            slots.waiting.retain(|w| !w.is_closed());
                            slots.waiting.push_back(tx);
                            if slots.pumps < slots.waiting.len().min(MAX_PUMPS) {
                                slots.pumps += 1;
                                self.pump();
                            }
                            Next::Wait(rx)
                        }
                    }
                }
            };
            let mut kept = match next {
                Next::Kept(kept) => kept,
                Next::Pool => return Ok((self.acquire_whole().await?, None)),
                // One kept meanwhile, or one given back to sqlx's pool (by a transaction)
                // that the pump took, whichever comes first.
                Next::Wait(mut handed) => tokio::select! {
                    biased;
                    kept = &mut handed => match kept {
                        Ok(kept) => kept,
                        Err(_) => continue, // closing: the pool says so
                    },
                    () = tokio::time::sleep_until(deadline) => {
                        handed.close();
                        match handed.try_recv() {
                            Ok(kept) => kept,
                            Err(_) => return Err(sqlx::Error::PoolTimedOut),
                        }
                    }
                },
            };
            if self.mode == Mode::Session && kept.since.elapsed() > PING_WHEN_IDLE_FOR {
                if let Err(e) = sqlx::Connection::ping(&mut *kept.conn).await {
                    tracing::debug!(error = %e, "a kept database connection failed its ping; closing it");
                    kept.conn.close_on_drop();
                    continue;
                }
            }
            return Ok((kept.conn, Some(kept.first)));
        }
    }

    /// sqlx's acquire, never cut off midway: the pool pings a connection that sat idle over a
    /// second before handing it out (or opens one), and an acquire dropped during that ping
    /// closes the connection, during the connect loses it. It runs in the caller's future
    /// (its first poll takes the pool's place for a new connection at once, as a plain
    /// acquire does); a caller gone meanwhile (a client that hung up, a deadline) leaves it
    /// to finish on a task of its own, and the connection is kept for the next caller.
    fn acquire_whole(&self) -> Whole {
        Whole {
            db: self.clone(),
            acquiring: Some(Box::pin(self.pool.acquire())),
        }
    }

    /// While callers wait for a kept connection, takes connections given back to sqlx's
    /// pool (by transactions, by reads) and keeps them for the first in line. Up to
    /// [`MAX_PUMPS`] run, each an acquire on a task of its own that is never cut off: the
    /// pool pings a connection that sat idle before handing it out (and may be opening one),
    /// and an acquire dropped midway closes that connection. (Each waiter used to race an
    /// acquire of its own against the kept ones and drop it when a kept one came first:
    /// under a burst after an idle spell that closed a third of the pool, and the
    /// benchmark's 128-connection run met 5 s waits and 503s.) More than one, so that one
    /// held up (a ping to a server gone silent, a connection being opened) does not hold up
    /// the rest; a few only, so that no pile of acquires waits in sqlx's queue.
    fn pump(&self) {
        /// Gives the pump's place back however its task ends (a panic, a runtime shutting
        /// down), so that the next waiter starts another.
        struct Leave(Db);
        impl Drop for Leave {
            fn drop(&mut self) {
                if let Ok(mut slots) = self.0.parked.slots.lock() {
                    slots.pumps = slots.pumps.saturating_sub(1);
                }
            }
        }
        let db = self.clone();
        tokio::spawn(async move {
            let _leave = Leave(db.clone());
            let mut pause = Duration::from_millis(10);
            loop {
                match db.pool.acquire().await {
                    Ok(conn) => {
                        db.park(conn, None);
                        pause = Duration::from_millis(10);
                    }
                    // Nobody gave one back in time: look again while callers wait.
                    Err(sqlx::Error::PoolTimedOut) => {}
                    // Closing (checked below), or the server refusing a new connection at
                    // once: not again at once.
                    Err(e) => {
                        if db.pool.is_closed() {
                            return;
                        }
                        tracing::debug!(error = %e, "the pool could not hand out a connection for the callers waiting");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(250));
                    }
                }
                let mut slots = db.parked.slots.lock().expect("parked");
                slots.waiting.retain(|w| !w.is_closed());
                if slots.waiting.is_empty() || db.pool.is_closed() {
                    return;
                }
            }
        });
    }

    /// Keeps `conn`, whose statement ran to its end and answered Ok, for the next one; gives
    /// back to the pool the least recently used when it sat unused too long, and `conn`
    /// itself when it was kept turn after turn for too long (so that the pool's lifetime
    /// still applies) or the pool is closing.
    fn park(&self, conn: PoolConnection<Postgres>, first: Option<Instant>) {
        let now = Instant::now();
        let first = first.unwrap_or(now);
        if self.pool.is_closed() || now.duration_since(first) > KEEP_AT_MOST {
            return; // dropped: back to sqlx's pool
        }
        self.keep(Kept {
            conn,
            first,
            since: now,
        });
    }

    /// Hands `kept` to the caller who has waited longest, or keeps it when nobody waits.
    fn keep(&self, mut kept: Kept) {
        let stale = {
            let mut slots = self.parked.slots.lock().expect("parked");
            while let Some(waiter) = slots.waiting.pop_front() {
                match waiter.send(kept) {
                    Ok(()) => return,
                    Err(back) => kept = back, // that caller gave up
                }
            }
            slots.kept.push(kept);
            let now = Instant::now();
            if slots
                .kept
                .first()
                .is_some_and(|k| now.duration_since(k.since) > KEEP_IDLE_AT_MOST)
            {
                Some(slots.kept.remove(0))
            } else {
                None
            }
        };
        drop(stale); // outside the lock: sqlx's drop spawns the return
    }

    pub async fn close(&self) {
        let slots = std::mem::take(&mut *self.parked.slots.lock().expect("parked"));
        drop(slots);
        self.pool.close().await
    }

    pub fn size(&self) -> u32 {
        self.pool.size()
    }

    /// Idle connections: the pool's and the ones kept between statements.
    pub fn num_idle(&self) -> usize {
        self.pool.num_idle() + self.parked.slots.lock().map(|s| s.kept.len()).unwrap_or(0)
    }
}

/// An acquire from sqlx's pool that finishes even when its caller is dropped
/// ([`Db::acquire_whole`]).
struct Whole {
    db: Db,
    acquiring: Option<BoxFuture<'static, Result<PoolConnection<Postgres>, sqlx::Error>>>,
}

impl std::future::Future for Whole {
    type Output = Result<PoolConnection<Postgres>, sqlx::Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let acquiring = self.acquiring.as_mut().expect("polled after it answered");
        let answer = std::task::ready!(acquiring.as_mut().poll(cx));
        self.acquiring = None;
        std::task::Poll::Ready(answer)
    }
}

impl Drop for Whole {
    fn drop(&mut self) {
        let Some(acquiring) = self.acquiring.take() else {
            return;
        };
        // No runtime left (shutting down): nothing to keep the connection for.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let db = self.db.clone();
        runtime.spawn(async move {
            if let Ok(conn) = acquiring.await {
                db.park(conn, None);
            }
        });
    }
}

impl From<PgPool> for Db {
    fn from(pool: PgPool) -> Db {
        Db::direct(pool)
    }
}

/// A connection from [`Db::acquire`].
pub enum Conn {
    Session(PoolConnection<Postgres>),
    InTransaction(Transaction<'static, Postgres>),
}

impl Deref for Conn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Conn::Session(c) => c,
            Conn::InTransaction(t) => t,
        }
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Conn::Session(c) => c,
            Conn::InTransaction(t) => t,
        }
    }
}

impl<'p> Executor<'p> for &'p Db {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if !self.wraps_queries() {
            // On a kept connection, the whole answer read first: every caller collects it
            // anyway (`fetch_all`), and a stream cut off midway would leave the connection
            // half-read. Nothing streams through a `Db`; a large read pages.
            return stream::once(async move {
                let (mut conn, first) = self.take().await?;
                let items: Vec<_> = (&mut *conn).fetch_many(query).try_collect().await?;
                self.park(conn, first);
                Ok::<_, sqlx::Error>(stream::iter(items.into_iter().map(Ok)))
            })
            .try_flatten()
            .boxed();
        }
        let db = self.clone();
        // Whole answer first, then COMMIT, then hand it over.
        stream::once(async move {
            let mut tx = db.begin().await?;
            let items: Vec<_> = (&mut *tx).fetch_many(query).try_collect().await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(stream::iter(items.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }

    fn execute<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<PgQueryResult, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if self.wraps_queries() {
            return Box::pin(self.execute_many(query).try_collect());
        }
        Box::pin(async move {
            let (mut conn, first) = self.take().await?;
            let done = (&mut *conn).execute(query).await?;
            self.park(conn, first);
            Ok(done)
        })
    }

    fn fetch_all<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Vec<PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if self.wraps_queries() {
            return Box::pin(self.fetch(query).try_collect());
        }
        Box::pin(async move {
            let (mut conn, first) = self.take().await?;
            let rows = (&mut *conn).fetch_all(query).await?;
            self.park(conn, first);
            Ok(rows)
        })
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if !self.wraps_queries() {
            return Box::pin(async move {
                let (mut conn, first) = self.take().await?;
                let row = (&mut *conn).fetch_optional(query).await?;
                self.park(conn, first);
                Ok(row)
            });
        }
        let db = self.clone();
        Box::pin(async move {
            let mut tx = db.begin().await?;
            let row = (&mut *tx).fetch_optional(query).await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        // A prepared statement object outlives any transaction: only where it is a session
        // (or the pooler keeps prepared statements).
        (&self.pool).prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'p: 'e,
    {
        (&self.pool).describe(sql)
    }
}

/// Where merchant list reads go: a streaming replica (`database.read_url`) while it is at
/// most `database.read_max_lag` behind the primary, the primary otherwise. Only reads that
/// tolerate that much staleness use it (payment lists, events); idempotency, callbacks,
/// workers and reads of a just-made write never do.
#[derive(Debug)]
pub struct Reads {
    primary: Db,
    replica: Option<Db>,
    max_lag: std::time::Duration,
    usable: std::sync::atomic::AtomicBool,
}

/// How often the replica's lag is measured.
pub const REPLICA_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Reads {
    pub fn new(primary: Db, replica: Option<Db>, max_lag: std::time::Duration) -> Reads {
        Reads {
            primary,
            replica,
            max_lag,
            usable: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Reads go to the primary only.
    pub fn primary_only(primary: Db) -> Reads {
        Reads::new(primary, None, std::time::Duration::ZERO)
    }

    /// The pool for a staleness-tolerant read now.
    pub fn db(&self) -> &Db {
        match &self.replica {
            Some(r) if self.usable.load(std::sync::atomic::Ordering::Relaxed) => r,
            _ => &self.primary,
        }
    }

    /// The primary, for a read that must see the latest writes.
    pub fn primary(&self) -> &Db {
        &self.primary
    }

    /// Whether the last probe found the replica within `max_lag`.
    pub fn replica_in_use(&self) -> bool {
        self.replica.is_some() && self.usable.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How far the replica is behind: bytes of WAL it has not replayed that the primary had
    /// written when asked, and seconds since the last transaction it replayed when it is
    /// behind at all (0 when it has replayed everything the primary had).
    pub async fn measure_lag(&self) -> Result<Option<(f64, f64)>, sqlx::Error> {
        let Some(replica) = &self.replica else {
            return Ok(None);
        };
        let primary_lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&self.primary)
            .await?;
        let (bytes, seconds): (f64, f64) = sqlx::query_as(
            "SELECT CASE WHEN pg_is_in_recovery()
                         THEN greatest(pg_wal_lsn_diff($1::pg_lsn,
                                 coalesce(pg_last_wal_replay_lsn(), '0/0'::pg_lsn)), 0)::float8
                         ELSE 0::float8 END,
                    CASE WHEN NOT pg_is_in_recovery() THEN 0::float8
                         WHEN pg_wal_lsn_diff($1::pg_lsn,
                                 coalesce(pg_last_wal_replay_lsn(), '0/0'::pg_lsn)) <= 0 THEN 0::float8
                         ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8,
                                       'Infinity'::float8) END",
        )
        .bind(&primary_lsn)
        .fetch_one(replica)
        .await?;
        Ok(Some((bytes, seconds)))
    }

    /// Measures the lag every [`REPLICA_PROBE_EVERY`] and switches reads accordingly, until
    /// `stop`. Does nothing without a replica.
    pub async fn watch(self: std::sync::Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        use std::sync::atomic::Ordering;
        if self.replica.is_none() {
            return;
        }
        loop {
            let usable = match self.measure_lag().await {
                Ok(Some((bytes, seconds))) => {
                    metrics::gauge!("pisgate_database_replica_lag_seconds").set(seconds);
                    metrics::gauge!("pisgate_database_replica_lag_bytes").set(bytes);
                    seconds <= self.max_lag.as_secs_f64()
                }
                Ok(None) => false,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot measure the read replica's lag");
                    false
                }
            };
            let was = self.usable.swap(usable, Ordering::Relaxed);
            if was != usable {
                if usable {
                    tracing::info!("list reads go to the read replica");
                } else {
                    tracing::warn!(
                        max_lag = ?self.max_lag,
                        "the read replica is unreachable or too far behind: list reads go to the primary"
                    );
                }
            }
            metrics::gauge!("pisgate_database_replica_in_use").set(if usable { 1.0 } else { 0.0 });
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(REPLICA_PROBE_EVERY) => {}
            }
        }
    }
}
