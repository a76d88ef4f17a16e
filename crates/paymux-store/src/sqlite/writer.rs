//! Group commit on the one SQLite writer.
//!
//! SQLite has one writer, and with `synchronous=FULL` every commit waits for an fsync: committed
//! one by one, a busy gateway spends most of its writer time waiting for the disk. Here each of the
//! store's transactions is a savepoint inside a shared outer transaction, and one `COMMIT` (one
//! fsync) makes a whole batch durable. A caller's `commit` returns only after the outer `COMMIT`
//! that holds its changes succeeded, so nothing is acknowledged before it is on disk, exactly as
//! with one transaction each: durability is unchanged, only the fsyncs are shared.
//!
//! - Transactions still run one at a time (a fair mutex over the one connection), so a read and the
//!   write after it inside one transaction stay atomic, as before.
//! - A transaction that fails or is dropped rolls back to its own savepoint: the others in its
//!   batch keep their changes.
//! - If the outer `COMMIT` fails, every transaction of that batch gets the error, and none of them
//!   is reported committed.
//! - The committer is a task that commits as soon as the writer is free: transactions that queued
//!   up while the previous batch was being flushed form the next batch. There is no timer: a lone
//!   request is committed at once.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Weak};

use sqlx::query::Query;
use sqlx::sqlite::SqliteQueryResult;
use sqlx::{Executor, IntoArguments, Sqlite, SqliteConnection};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, oneshot};

/// The one writer connection and its batch.
#[derive(Debug)]
struct State {
    conn: SqliteConnection,
    /// An outer transaction is open (`BEGIN IMMEDIATE` ran, `COMMIT` has not).
    open: bool,
    /// A transaction's savepoint is open: it is running, or it was dropped without its commit and
    /// must be rolled back before anything else uses the connection.
    savepoint: bool,
    /// Those whose savepoints were released into the open outer transaction, waiting for its
    /// `COMMIT`.
    waiting: Vec<oneshot::Sender<Result<(), String>>>,
}

#[derive(Debug)]
struct Shared {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Lets the committer see that the store is gone and end.
        self.wake.notify_one();
    }
}

/// The writer: cheap to clone, one connection behind it.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    shared: Arc<Shared>,
}

impl Writer {
    /// Takes over `conn` (which must not be in a transaction) and starts its committer.
    pub(super) fn new(conn: SqliteConnection) -> Self {
        let state = Arc::new(Mutex::new(State {
            conn,
            open: false,
            savepoint: false,
            waiting: Vec::new(),
        }));
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared { state, wake: Arc::clone(&wake) });
        tokio::spawn(committer(Arc::downgrade(&shared), wake));
        Self { shared }
    }

    /// Begins one transaction: waits for the writer, then opens a savepoint in the current batch.
    pub(super) async fn begin(&self) -> Result<WriteTx, sqlx::Error> {
        let mut state = Arc::clone(&self.shared.state).lock_owned().await;
        state.settle().await?;
        if !state.open {
            // IMMEDIATE takes the write lock now: another process writing the same file (an
            // operator's CLI) makes this wait out the busy timeout instead of failing later.
            state.conn.execute("BEGIN IMMEDIATE").await?;
            state.open = true;
        }
        state.conn.execute("SAVEPOINT paymux_tx").await?;
        state.savepoint = true;
        Ok(WriteTx { state, wake: Arc::clone(&self.shared.wake) })
    }
}

impl State {
    /// Rolls back a transaction that was dropped without committing. If that is impossible, the
    /// outer transaction is beyond saving: it is rolled back and its batch told so.
    async fn settle(&mut self) -> Result<(), sqlx::Error> {
        if !self.savepoint {
            return Ok(());
        }
        let undone = match self.conn.execute("ROLLBACK TO paymux_tx").await {
            Ok(_) => self.conn.execute("RELEASE paymux_tx").await.map(|_| ()),
            Err(e) => Err(e),
        };
        self.savepoint = false;
        if let Err(e) = undone {
            tracing::error!(error = %e, "could not roll back a savepoint; abandoning the batch");
            self.abandon(&e.to_string()).await;
            return Err(e);
        }
        Ok(())
    }

    /// Rolls the outer transaction back and fails everyone waiting on it.
    async fn abandon(&mut self, why: &str) {
        // SQLite may already have rolled it back itself (after an I/O error, say): then this
        // ROLLBACK fails harmlessly.
        if self.open
            && let Err(e) = self.conn.execute("ROLLBACK").await
        {
            tracing::warn!(error = %e, "rolling back the writer's transaction");
        }
        self.open = false;
        for waiter in self.waiting.drain(..) {
            let _ = waiter.send(Err(why.to_owned()));
        }
    }

    /// Commits the batch: one fsync for every transaction in it.
    async fn commit_batch(&mut self) {
        if let Err(e) = self.settle().await {
            tracing::error!(error = %e, "writer could not settle before its commit");
            return;
        }
        if !self.open {
            return;
        }
        match self.conn.execute("COMMIT").await {
            Ok(_) => {
                self.open = false;
                for waiter in self.waiting.drain(..) {
                    let _ = waiter.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = self.waiting.len(), "group commit failed");
                self.abandon(&e.to_string()).await;
            }
        }
    }
}

async fn committer(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(shared) = shared.upgrade() else { return };
        // The mutex is fair: transactions already queued for the writer run first and join this
        // batch; those that arrive during the COMMIT's fsync form the next one.
        let mut state = shared.state.lock().await;
        state.commit_batch().await;
    }
}

/// One transaction on the writer. Dropped without [`WriteTx::commit`], its changes are rolled back
/// (before the writer's next use) and nothing else of its batch is lost.
#[derive(Debug)]
pub(super) struct WriteTx {
    state: OwnedMutexGuard<State>,
    wake: Arc<Notify>,
}

impl WriteTx {
    /// Ends the transaction and waits until the batch holding it is durably committed.
    pub(super) async fn commit(mut self) -> Result<(), sqlx::Error> {
        let (tell, told) = oneshot::channel();
        self.state.conn.execute("RELEASE paymux_tx").await?;
        self.state.savepoint = false;
        self.state.waiting.push(tell);
        // Frees the writer for the next transaction and wakes the committer.
        drop(self);
        match told.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(sqlx::Error::Io(std::io::Error::other(format!(
                "the batch holding this transaction was not committed: {why}"
            )))),
            Err(_) => Err(sqlx::Error::PoolClosed),
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        // Committed or not, the writer is free once the guard goes. An uncommitted transaction
        // leaves its savepoint marked open, to be rolled back before the writer's next use; the
        // committer wakes so the rest of the batch is not held up.
        self.wake.notify_one();
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.state.conn
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.state.conn
    }
}

/// A single statement run as a transaction of its own on the writer.
pub(super) trait ExecuteAlone {
    async fn execute_alone(self, writer: &Writer) -> Result<SqliteQueryResult, sqlx::Error>;
}

impl<'q, A> ExecuteAlone for Query<'q, Sqlite, A>
where
    A: Send + IntoArguments<Sqlite> + 'q,
{
    async fn execute_alone(self, writer: &Writer) -> Result<SqliteQueryResult, sqlx::Error> {
        let mut tx = writer.begin().await?;
        let done = self.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::Connection;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

    use super::*;

    struct Db {
        _dir: tempfile::TempDir,
        options: SqliteConnectOptions,
    }

    impl Db {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let path = dir.path().join("w.db");
            let options = SqliteConnectOptions::from_str("sqlite://")
                .expect("options")
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .pragma("wal_autocheckpoint", "0");
            Self { _dir: dir, options }
        }

        async fn writer(&self) -> Writer {
            let mut conn = SqliteConnection::connect_with(&self.options).await.expect("connect");
            conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)").await.expect("create");
            Writer::new(conn)
        }

        /// What another connection sees: only what was committed.
        async fn committed(&self) -> Vec<i64> {
            let mut conn = SqliteConnection::connect_with(&self.options).await.expect("connect");
            sqlx::query_scalar("SELECT k FROM t ORDER BY k")
                .fetch_all(&mut conn)
                .await
                .expect("select")
        }

        /// Frames in the WAL, from its size (nothing checkpoints it here): every commit appends at
        /// least one.
        fn wal_frames(&self) -> u64 {
            const HEADER: u64 = 32;
            const FRAME: u64 = 24 + 4096;
            let wal = self._dir.path().join("w.db-wal");
            let len = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
            len.saturating_sub(HEADER) / FRAME
        }
    }

    async fn insert(writer: Writer, k: i64) -> Result<(), sqlx::Error> {
        let mut tx = writer.begin().await?;
        sqlx::query("INSERT INTO t (k) VALUES (?)").bind(k).execute(&mut *tx).await?;
        tx.commit().await
    }

    /// Holds the writer with one open transaction while `keys` queue up behind it, then commits
    /// it: on this single-threaded runtime the queued ones run before the committer, in one batch.
    async fn queue_behind_one(writer: &Writer, keys: &[i64]) -> Vec<Result<(), sqlx::Error>> {
        let mut first = writer.begin().await.expect("begin");
        sqlx::query("INSERT INTO t (k) VALUES (0)").execute(&mut *first).await.expect("insert");
        let tasks: Vec<_> = keys.iter().map(|k| tokio::spawn(insert(writer.clone(), *k))).collect();
        tokio::task::yield_now().await;
        first.commit().await.expect("the first commits");
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("task"));
        }
        results
    }

    #[tokio::test(flavor = "current_thread")]
    async fn queued_transactions_share_one_commit() {
        let db = Db::new();
        let writer = db.writer().await;
        let before = db.wal_frames();
        let keys: Vec<i64> = (1..=20).collect();
        let results = queue_behind_one(&writer, &keys).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(db.committed().await, (0..=20).collect::<Vec<_>>());
        let frames = db.wal_frames() - before;
        // One commit each would append at least 21 frames; one batch touches one table page.
        assert!(frames <= 3, "21 transactions appended {frames} WAL frames");
        // The measure itself: the same number committed one after another append one frame each.
        let before = db.wal_frames();
        for k in 21..=41 {
            insert(writer.clone(), k).await.expect("commit");
        }
        let frames = db.wal_frames() - before;
        assert!(frames >= 21, "21 separate commits appended only {frames} WAL frames");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_transaction_keeps_the_rest_of_its_batch() {
        let db = Db::new();
        let writer = db.writer().await;
        // 0 is taken by the transaction they queue behind: those two fail, the rest commit.
        let keys = [1, 0, 2, 0, 3];
        let results = queue_behind_one(&writer, &keys).await;
        let failed: Vec<i64> =
            keys.iter().zip(&results).filter(|(_, r)| r.is_err()).map(|(k, _)| *k).collect();
        assert_eq!(failed, vec![0, 0]);
        assert_eq!(db.committed().await, vec![0, 1, 2, 3]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_transaction_rolls_back_only_itself() {
        let db = Db::new();
        let writer = db.writer().await;
        insert(writer.clone(), 1).await.expect("1 commits");
        {
            let mut tx = writer.begin().await.expect("begin");
            sqlx::query("INSERT INTO t (k) VALUES (2)").execute(&mut *tx).await.expect("insert");
            // Dropped: never committed.
        }
        insert(writer.clone(), 3).await.expect("3 commits");
        assert_eq!(db.committed().await, vec![1, 3]);
        // And the writer's view agrees: 2 is not hiding in an open transaction.
        let mut tx = writer.begin().await.expect("begin");
        let seen: Vec<i64> = sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(&mut *tx)
            .await
            .expect("select");
        assert_eq!(seen, vec![1, 3]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_all_land() {
        let db = Db::new();
        let writer = db.writer().await;
        let tasks: Vec<_> = (1..=200).map(|k| tokio::spawn(insert(writer.clone(), k))).collect();
        for t in tasks {
            t.await.expect("task").expect("commit");
        }
        assert_eq!(db.committed().await, (1..=200).collect::<Vec<_>>());
    }
}
