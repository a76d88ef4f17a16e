//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! Writes go through exactly one connection, owned by the writer's thread (`db.rs`): SQLite allows
//! one writer at a time, and one writer turns what would be lock contention (and `SQLITE_BUSY` on
//! upgrade) into a queue. Each store call hands the writer its whole transaction as one closure,
//! which runs its statements back to back. That single writer is also what makes a read-then-write
//! inside one of its transactions atomic here, where PostgreSQL needs row locks, and what lets
//! transactions queued behind each other share one fsync (group commit). Reads run on read-only
//! connections and never wait for writes (WAL): point lookups on the caller's thread, reads that
//! may go over many rows (reports, backlogs, filtered pages) on a blocking thread.
//!
//! The driver is `rusqlite` (synchronous, no hand-off per statement); the migrations still run
//! through `sqlx`'s migrator, the same one the PostgreSQL backend uses.

mod db;
mod idempotency;
mod inbound;
mod merchants;
mod operators;
mod outbox;
mod payments;
mod queue;
mod refunds;
mod settlement;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use db::{Readers, Sql, Tx, Writer};

use crate::error::{DbError, unavailable};
use crate::{Health, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Readers>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs the migrations.
    pub async fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref();
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let migrating = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        MIGRATOR.run(&migrating).await.map_err(|e| unavailable(sqlx::Error::from(e)))?;
        migrating.close().await;
        let writer = Writer::open(path)?;
        let readers = Arc::new(Readers::new(path)?);
        Ok(Self { writer, readers })
    }

    /// Runs `work` as one transaction on the writer; returns once it is durably committed.
    async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.writer.write(work).await
    }

    /// [`SqliteStore::write`] without an fsync of its own, for a transaction that nothing durable
    /// rests on until a later durable commit (which the WAL orders after it, and makes durable with
    /// it): an idempotency key's claim.
    async fn write_unsynced<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.writer.write_unsynced(work).await
    }

    /// Runs `read` on a read-only connection, on this thread: for point lookups and short pages,
    /// which take microseconds.
    fn read<T>(&self, read: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        self.readers.read(read)
    }

    /// Runs a read that may go over many rows (reports, filtered pages, backlogs) on a blocking
    /// thread, so it never holds up the async workers serving requests.
    async fn scan<T, F>(&self, read: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.read(read))
            .await
            .map_err(|_| unavailable(DbError::Panicked))?
    }
}

#[async_trait]
impl Health for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| c.one("SELECT 1", [], |_| Ok(())).map(drop))
    }
}
