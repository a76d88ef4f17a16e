//! The backend for several gateway instances on one PostgreSQL database.
//!
//! Every instance may run every worker, so what SQLite gets from its one writer is done here
//! with row locks, and the same rules (`crate::rules`) decide:
//! - work-queue claims select due rows `FOR UPDATE SKIP LOCKED` and write the lease in the same
//!   transaction: concurrent claims never get the same row, and a lease that runs out (its holder
//!   died) makes the row due again for any instance;
//! - a refund's reservation reads its payment `FOR UPDATE` before checking and writing it, so
//!   refunds from different instances queue on the payment and never reserve past its amount;
//! - an idempotency key is claimed with `INSERT ... ON CONFLICT DO NOTHING` and, when it exists,
//!   read `FOR UPDATE`: of two instances racing on one key, exactly one is told to run it.
//!
//! The dialect differences from the SQLite backend are these, and only these: `$n` placeholders;
//! the row locks above; `seq` in place of SQLite's rowid for events in commit order, with a
//! per-merchant advisory lock held by the transaction that writes events (`outbox.rs`); one pool
//! for reads and writes. The schema's own differences are listed at the top of
//! `migrations/postgres/0001_schema.sql`. Durability is PostgreSQL's default (`fsync` and
//! `synchronous_commit` on), which nothing here changes: a commit returns once it is on disk.

mod idempotency;
mod inbound;
mod merchants;
mod operators;
mod outbox;
mod payments;
mod queue;
mod refunds;
mod settlement;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Transaction};

use crate::codec::{Columns, column};
use crate::error::unavailable;
use crate::{Health, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a call waits for a connection before the store answers `Unavailable`: an outage
/// should answer the merchant (503) quickly, not hang its request.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

type Tx = Transaction<'static, Postgres>;

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`) and runs the
    /// migrations. Several instances may connect at once: the migrations take a lock.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(unavailable)?;
        MIGRATOR.run(&pool).await.map_err(|e| unavailable(sqlx::Error::from(e)))?;
        Ok(Self { pool })
    }

    async fn begin(&self) -> StoreResult<Tx> {
        self.pool.begin().await.map_err(unavailable)
    }
}

impl Columns for PgRow {
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
impl Health for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(unavailable)?;
        Ok(())
    }
}
