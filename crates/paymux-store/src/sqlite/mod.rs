//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! Writes go through exactly one connection (`writer.rs`): SQLite allows one writer at a time, and
//! one writer connection turns what would be lock contention (and `SQLITE_BUSY` on upgrade) into a
//! queue. That single writer is also what makes a read-then-write inside one of its transactions
//! atomic here, where PostgreSQL needs row locks, and what lets transactions queued behind each
//! other share one fsync (group commit). Reads use their own pool and never wait for writes (WAL).

mod idempotency;
mod inbound;
mod merchants;
mod operators;
mod outbox;
mod payments;
mod queue;
mod refunds;
mod settlement;
mod writer;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Connection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};

use writer::{WriteTx, Writer};

use crate::codec::{Columns, column};
use crate::error::unavailable;
use crate::{Health, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
}

type Tx = WriteTx;

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs the migrations.
    pub async fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Nothing acknowledged may be lost to a power cut: FULL, never NORMAL.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let migrating = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        MIGRATOR.run(&migrating).await.map_err(|e| unavailable(e.into()))?;
        migrating.close().await;
        let conn = SqliteConnection::connect_with(&options).await.map_err(unavailable)?;
        let writer = Writer::new(conn);
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(unavailable)?;
        Ok(Self { writer, reader })
    }

    async fn begin(&self) -> StoreResult<Tx> {
        self.writer.begin().await.map_err(unavailable)
    }
}

impl Columns for SqliteRow {
    fn text(&self, c: &'static str) -> StoreResult<String> {
        column(self, c)
    }
    fn opt_text(&self, c: &'static str) -> StoreResult<Option<String>> {
        column(self, c)
    }
    fn int(&self, c: &'static str) -> StoreResult<i64> {
        column(self, c)
    }
    fn opt_int(&self, c: &'static str) -> StoreResult<Option<i64>> {
        column(self, c)
    }
    fn flag(&self, c: &'static str) -> StoreResult<bool> {
        column(self, c)
    }
    fn opt_bytes(&self, c: &'static str) -> StoreResult<Option<Vec<u8>>> {
        column(self, c)
    }
}

#[async_trait]
impl Health for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map_err(unavailable)?;
        Ok(())
    }
}
