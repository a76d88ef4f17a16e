//! The embedded backend's connections: one writer thread with group commit, and readers on the
//! caller's thread.
//!
//! SQLite has one writer, and with `synchronous=FULL` every commit waits for an fsync. The writer
//! is a thread of its own that owns the one write connection; a store call hands it its whole
//! transaction as one closure, so the statements of a transaction run back to back, with no
//! hand-off between threads per statement.
//!
//! Group commit: the writer runs each closure in a savepoint inside an outer transaction, takes
//! the closures that queued up meanwhile into the same transaction, and makes them all durable
//! with one `COMMIT` (one fsync). A caller gets its result only after the `COMMIT` that holds its
//! changes succeeded, so nothing is acknowledged before it is on disk, exactly as with one
//! transaction each: durability is unchanged, only the fsyncs are shared.
//! - Transactions run one at a time on the one connection, so a read and the write after it
//!   inside one closure stay atomic.
//! - A closure that fails (or asks to roll back) is rolled back to its own savepoint: the others
//!   in its batch keep their changes.
//! - If the outer `COMMIT` fails, every transaction of that batch gets the error, and none of them
//!   is reported committed.
//! - There is no timer: a lone transaction is committed at once; those that arrive during a
//!   `COMMIT`'s fsync form the next round (an unsynced batch, then a durable one: below).
//! - A transaction handed over runs to its end even if its caller stops waiting (a client that
//!   hung up): what it leaves is what a crash right after its commit leaves, which recovery
//!   already handles (a payment recorded before its channel call, a claimed idempotency key
//!   whose lock runs out).
//! - A transaction that nothing durable rests on (an idempotency key's claim) may be handed over
//!   as unsynced: it waits for no fsync. Those waiting when the writer begins a round run first,
//!   as a batch of their own that commits with `synchronous=OFF` and no checkpoint, ahead of the
//!   durable ones waiting with them (their callers are concurrent, so the order among them is
//!   free); one that queues while a durable batch runs joins that batch and its fsync. An
//!   unsynced batch takes no durable transaction: SQLite sets durability per connection, and
//!   only between transactions. The WAL is written in commit order, so the next durable
//!   commit's fsync covers unsynced ones too: a power cut can lose only unsynced transactions
//!   after the last durable commit, never one before it. A process that dies loses nothing: the
//!   WAL is in the operating system's cache.
//!
//! Reads run on a small pool of read-only connections, on the thread that asks (the store sends
//! reads that may go over many rows to a blocking thread first). In WAL mode a reader never
//! waits for the writer.

use std::cell::Cell;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Params, Row};
use tokio::sync::oneshot;

use crate::StoreResult;
use crate::codec::Columns;
use crate::error::{Corruption, DbError, sqlite_unique_or, unavailable};

/// A batch stops taking transactions from the queue once this many share its commit (and an
/// unsynced batch once it set this many durable ones aside): a bound on how long the first of a
/// batch, and a durable one waiting behind an unsynced batch, waits.
const MAX_BATCH: usize = 512;

/// Prepared statements kept per connection: every statement the store uses, with room to spare.
const STATEMENT_CACHE: usize = 256;

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a connection with the store's settings: WAL, `synchronous=FULL` (nothing acknowledged
/// may be lost to a power cut: FULL, never NORMAL), foreign keys, a busy timeout for another
/// process (an operator's CLI) holding the write lock.
fn connect(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "foreign_keys", true)?;
    // Each transaction is a savepoint in its batch, and a savepoint's undo log (the statement
    // journal) is a temporary file unless temporary storage is in memory: created and deleted per
    // transaction otherwise. It is not durable state: the WAL is.
    conn.pragma_update(None, "temp_store", "memory")?;
    // The page cache stays at SQLite's default size (2 MiB): a connection drops its whole cache
    // whenever the file changed under it, which for a reader is nearly every read, and dropping a
    // bigger cache costs more (a 64 MiB cache made that a twentieth of the callback path).
    if !read_only {
        conn.pragma_update(None, "journal_mode", "wal")?;
        conn.pragma_update(None, "synchronous", "full")?;
    }
    Ok(conn)
}

/// What a transaction's closure left for the writer to do after running it.
enum Step {
    /// Its savepoint was ended (released, or rolled back): tell the caller once the batch
    /// commits.
    Wait(Box<dyn FnOnce(Result<(), Arc<DbError>>) + Send>),
    /// The caller has been told already (its savepoint could not even begin).
    Done,
    /// Its savepoint could not be ended: the whole batch must be rolled back.
    Abandon(Arc<DbError>),
}

/// A transaction handed to the writer: run on its connection, or told why it cannot be.
/// A transaction handed to the writer.
struct Job {
    /// Whether its answer must wait for an fsync (see [`Writer::write_unsynced`]).
    durable: bool,
    run: Run,
}

/// A transaction's closure as the writer runs it: on the batch's connection, or told why the
/// batch could not begin.
type Run = Box<dyn FnOnce(Result<&Connection, &Arc<DbError>>) -> Step + Send>;

/// The one writer: cheap to clone, one thread and one connection behind it.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Opens the write connection and starts its thread, which ends when the last clone of the
    /// writer is dropped.
    pub(super) fn open(path: &Path) -> StoreResult<Self> {
        let conn = connect(path, false).map_err(unavailable)?;
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("paymux-sqlite-writer".into())
            .spawn(move || {
                if !run(&conn, &queue) {
                    // Never closed: the next start recovers the WAL, as after a crash.
                    std::mem::forget(conn);
                }
            })
            .map_err(|e| unavailable(DbError::WriterStart(e)))?;
        Ok(Self { jobs })
    }

    /// Runs `work` as one transaction on the writer and returns its result once the transaction
    /// is durably committed. An error from `work`, or [`Tx::roll_back`], undoes its changes.
    pub(super) async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.submit(true, work).await
    }

    /// [`Writer::write`] for a transaction whose loss in a crash is harmless, so long as anything
    /// that rests on it is lost with it: it is committed without an fsync of its own, and reaches
    /// the disk with the next durable commit, which the WAL orders after it. What a crash loses is
    /// only ever a tail of such transactions, never one before a durable commit.
    pub(super) async fn write_unsynced<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.submit(false, work).await
    }

    async fn submit<T, F>(&self, durable: bool, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (tell, told) = oneshot::channel::<StoreResult<T>>();
        let run = Box::new(move |conn: Result<&Connection, &Arc<DbError>>| match conn {
            Ok(conn) => in_savepoint(conn, work, tell),
            Err(e) => {
                let _ = tell.send(Err(unavailable(DbError::BatchNotCommitted(Arc::clone(e)))));
                Step::Done
            }
        });
        self.jobs.send(Job { durable, run }).map_err(|_| unavailable(DbError::WriterStopped))?;
        told.await.map_err(|_| unavailable(DbError::WriterStopped))?
    }
}

/// Runs one transaction's closure inside its own savepoint of the open batch.
fn in_savepoint<T, F>(conn: &Connection, work: F, tell: oneshot::Sender<StoreResult<T>>) -> Step
where
    T: Send + 'static,
    F: FnOnce(&Tx<'_>) -> StoreResult<T>,
{
    if let Err(e) = conn.execute_batch("SAVEPOINT paymux_tx") {
        let _ = tell.send(Err(unavailable(e)));
        return Step::Done;
    }
    let tx = Tx { conn, undo: Cell::new(false) };
    let result = work(&tx);
    let keep = result.is_ok() && !tx.undo.get();
    let ended = if keep {
        conn.execute_batch("RELEASE paymux_tx")
    } else {
        conn.execute_batch("ROLLBACK TO paymux_tx; RELEASE paymux_tx")
    };
    match (ended, result) {
        (Err(e), _) => {
            let e = Arc::new(DbError::from(e));
            let _ = tell.send(Err(unavailable(DbError::BatchNotCommitted(Arc::clone(&e)))));
            Step::Abandon(e)
        }
        // Even an answer that changed nothing waits for the batch: it may rest on what earlier
        // transactions of the batch wrote, which is not on disk until the COMMIT. If that fails,
        // the answer is the failure.
        (Ok(()), result) => Step::Wait(Box::new(move |committed| {
            let _ = tell.send(match committed {
                Ok(()) => result,
                Err(e) => Err(unavailable(DbError::BatchNotCommitted(e))),
            });
        })),
    }
}

/// The writer thread. Each round takes the transactions waiting (up to [`MAX_BATCH`]): their callers are concurrent
/// (a caller waits for its transaction's answer before it hands over one that rests on it), so
/// their order among themselves is free. The unsynced ones run first, as one batch that waits for
/// no fsync, then the durable ones, in their order, as one batch. A batch also takes what queues
/// while it runs: a durable batch both kinds; an unsynced one only unsynced ones, setting the
/// durable ones aside for the durable batch after it (SQLite sets durability per connection, and
/// only between transactions). Returns whether the
/// connection may be closed: not if it could not be made durable again, since closing it would
/// checkpoint without an fsync.
fn run(conn: &Connection, queue: &mpsc::Receiver<Job>) -> bool {
    let mut waiting: Vec<Job> = Vec::new();
    loop {
        if waiting.is_empty() {
            match queue.recv() {
                Ok(job) => waiting.push(job),
                Err(_) => return true,
            }
        }
        while waiting.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => waiting.push(job),
                Err(_) => break,
            }
        }
        let (unsynced, durable): (Vec<Job>, Vec<Job>) =
            waiting.drain(..).partition(|job| !job.durable);
        waiting = durable;
        if !unsynced.is_empty() {
            // Best effort: if this fails, the batch commits with an fsync all the same.
            if let Err(e) = relax(conn) {
                tracing::warn!(error = %e, "the SQLite writer commits an unsynced batch durably");
            }
            batch(conn, queue, unsynced, false, &mut waiting);
            if let Err(e) = durable_again(conn) {
                // Every later transaction fails (the store is unavailable) rather than commit
                // without an fsync; the connection is left open.
                tracing::error!(error = %e, "the SQLite writer could not restore synchronous=FULL, and stops");
                let e = Arc::new(DbError::from(e));
                for job in waiting.drain(..).chain(queue.iter()) {
                    (job.run)(Err(&e));
                }
                return false;
            }
        }
        if !waiting.is_empty() {
            let durable = std::mem::take(&mut waiting);
            batch(conn, queue, durable, true, &mut waiting);
        }
    }
}

/// Runs `jobs` as one batch under one `COMMIT`, with the transactions that queue meanwhile up
/// to [`MAX_BATCH`]: any of them in a durable batch; in an unsynced batch only unsynced ones,
/// the durable ones being set aside in `later`.
fn batch(
    conn: &Connection,
    queue: &mpsc::Receiver<Job>,
    jobs: Vec<Job>,
    durable: bool,
    later: &mut Vec<Job>,
) {
    // A failed ROLLBACK after a failed batch may have left a transaction open: end it, or every
    // BEGIN from now on would fail.
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::error!(error = %e, "the SQLite writer could not end a broken transaction");
    }
    // IMMEDIATE takes the write lock now: another process writing the same file makes this wait
    // out the busy timeout instead of failing later.
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        // Everything waiting fails with it (the durable transactions set aside too): none waits
        // out a second busy timeout behind this one.
        tracing::error!(error = %e, "the SQLite writer could not begin a transaction");
        let e = Arc::new(DbError::from(e));
        let queued = std::iter::from_fn(|| queue.try_recv().ok());
        for job in jobs.into_iter().chain(later.drain(..)).chain(queued) {
            (job.run)(Err(&e));
        }
        return;
    }
    let mut waiting = Vec::new();
    let mut broken = None;
    let mut jobs = jobs.into_iter();
    loop {
        let next = match jobs.next() {
            Some(job) => job,
            None if waiting.len() < MAX_BATCH && later.len() < MAX_BATCH => {
                match queue.try_recv() {
                    // A durable batch takes unsynced transactions too: they share its fsync.
                    Ok(job) if durable || !job.durable => job,
                    // Set aside, in order, for the durable batch that follows.
                    Ok(job) => {
                        later.push(job);
                        continue;
                    }
                    Err(_) => break,
                }
            }
            None => break,
        };
        // A panic (a bug) leaves its savepoint open: the batch is rolled back, the thread goes on
        // serving the next one.
        let step = catch_unwind(AssertUnwindSafe(|| (next.run)(Ok(conn))))
            .unwrap_or_else(|_| Step::Abandon(Arc::new(DbError::Panicked)));
        match step {
            Step::Wait(tell) => waiting.push(tell),
            Step::Done => {}
            Step::Abandon(e) => {
                broken = Some(e);
                break;
            }
        }
    }
    // A batch abandoned part way leaves the rest of its jobs to the next batch: after an unsynced
    // one, the durable batch that follows (they are fsynced with it).
    later.extend(jobs);
    let outcome = match broken {
        Some(e) => Err(e),
        None => conn.execute_batch("COMMIT").map_err(|e| Arc::new(DbError::from(e))),
    };
    if let Err(e) = &outcome {
        tracing::error!(error = %e, batch = waiting.len(), "group commit failed");
        // SQLite may already have rolled it back itself (after an I/O error, say): then this
        // ROLLBACK fails harmlessly.
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "rolling back the writer's transaction");
        }
    }
    for tell in waiting {
        tell(outcome.clone());
    }
}

/// `wal_autocheckpoint` as SQLite sets it by default (pages), restored after an unsynced batch.
const AUTOCHECKPOINT: i64 = 1000;

/// Sets the connection up for an unsynced batch: its `COMMIT` runs with `synchronous=OFF` and
/// without a checkpoint. A checkpoint copies the WAL into the database file and lets the WAL be
/// written over, which is only safe after an fsync: the next durable commit runs it instead.
fn relax(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "synchronous", "off")
}

/// Sets the connection back to durable after an unsynced batch: `synchronous` first, then the
/// checkpoints.
fn durable_again(conn: &Connection) -> rusqlite::Result<()> {
    // A batch whose COMMIT and then ROLLBACK failed leaves its transaction open, and SQLite
    // changes `synchronous` only outside one.
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK")?;
    }
    conn.pragma_update(None, "synchronous", "full")?;
    conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT)
}

/// One transaction on the writer, as its closure sees it: the connection, and a way to undo the
/// transaction's changes while still returning a value.
pub(super) struct Tx<'c> {
    conn: &'c Connection,
    undo: Cell<bool>,
}

impl Tx<'_> {
    /// Undoes this transaction's changes when its closure returns (the rest of its batch keeps
    /// theirs).
    pub(super) fn roll_back(&self) {
        self.undo.set(true);
    }
}

impl Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// The read-only connections, used on the caller's thread.
#[derive(Debug)]
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// Idle readers kept open; more are opened when more read at once, and closed after.
const IDLE_READERS: usize = 8;

impl Readers {
    pub(super) fn new(path: &Path) -> StoreResult<Self> {
        let first = connect(path, true).map_err(unavailable)?;
        Ok(Self { path: path.to_owned(), idle: Mutex::new(vec![first]) })
    }

    /// Runs `read` on a read-only connection (a consistent snapshot for its statements when it
    /// opens a transaction of its own; each statement alone sees the latest commit).
    pub(super) fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let taken = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let conn = match taken {
            Some(conn) => conn,
            None => connect(&self.path, true).map_err(unavailable)?,
        };
        let result = read(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

/// Statements on a connection, with the store's errors, through the statement cache.
pub(super) trait Sql {
    /// Runs a statement; the number of rows it changed.
    fn exec(&self, sql: &str, params: impl Params) -> StoreResult<usize>;
    /// Runs a statement that may hit a UNIQUE rule: that is `Duplicate(what)`.
    fn exec_unique(&self, sql: &str, params: impl Params, what: &'static str)
    -> StoreResult<usize>;
    /// The first row, mapped.
    fn one<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnOnce(&Row<'_>) -> StoreResult<T>,
    ) -> StoreResult<Option<T>>;
    /// Every row, mapped.
    fn all<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnMut(&Row<'_>) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>>;
}

impl Sql for Connection {
    fn exec(&self, sql: &str, params: impl Params) -> StoreResult<usize> {
        self.prepare_cached(sql).and_then(|mut s| s.execute(params)).map_err(unavailable)
    }

    fn exec_unique(
        &self,
        sql: &str,
        params: impl Params,
        what: &'static str,
    ) -> StoreResult<usize> {
        let mut statement = self.prepare_cached(sql).map_err(unavailable)?;
        statement.execute(params).map_err(|e| sqlite_unique_or(e, what))
    }

    fn one<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnOnce(&Row<'_>) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let mut statement = self.prepare_cached(sql).map_err(unavailable)?;
        let mut rows = statement.query(params).map_err(unavailable)?;
        match rows.next().map_err(unavailable)? {
            Some(row) => map(row).map(Some),
            None => Ok(None),
        }
    }

    fn all<T>(
        &self,
        sql: &str,
        params: impl Params,
        mut map: impl FnMut(&Row<'_>) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let mut statement = self.prepare_cached(sql).map_err(unavailable)?;
        let mut rows = statement.query(params).map_err(unavailable)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(unavailable)? {
            out.push(map(row)?);
        }
        Ok(out)
    }
}

fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, column: &'static str) -> StoreResult<T> {
    Ok(row.get(column).map_err(|e| Corruption::Column { column, source: e.into() })?)
}

impl Columns for Row<'_> {
    fn text(&self, c: &'static str) -> StoreResult<String> {
        get(self, c)
    }
    fn opt_text(&self, c: &'static str) -> StoreResult<Option<String>> {
        get(self, c)
    }
    fn int(&self, c: &'static str) -> StoreResult<i64> {
        get(self, c)
    }
    fn opt_int(&self, c: &'static str) -> StoreResult<Option<i64>> {
        get(self, c)
    }
    fn flag(&self, c: &'static str) -> StoreResult<bool> {
        get(self, c)
    }
    fn opt_bytes(&self, c: &'static str) -> StoreResult<Option<Vec<u8>>> {
        get(self, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Db {
        dir: tempfile::TempDir,
    }

    impl Db {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let conn = Connection::open(dir.path().join("w.db")).expect("create");
            conn.pragma_update(None, "journal_mode", "wal").expect("pragma");
            conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)").expect("create");
            Self { dir }
        }

        fn path(&self) -> PathBuf {
            self.dir.path().join("w.db")
        }

        fn writer(&self) -> Writer {
            Writer::open(&self.path()).expect("writer")
        }

        /// What another connection sees: only what was committed.
        fn committed(&self) -> Vec<i64> {
            let readers = Readers::new(&self.path()).expect("readers");
            readers
                .read(|c| c.all("SELECT k FROM t ORDER BY k", [], |r| r.int("k")))
                .expect("select")
        }

        /// Frames in the WAL, from its size: every commit appends at least one.
        fn wal_frames(&self) -> u64 {
            const HEADER: u64 = 32;
            const FRAME: u64 = 24 + 4096;
            let len =
                std::fs::metadata(self.dir.path().join("w.db-wal")).map(|m| m.len()).unwrap_or(0);
            len.saturating_sub(HEADER) / FRAME
        }
    }

    async fn insert(writer: Writer, k: i64) -> StoreResult<()> {
        writer.write(move |tx| tx.exec("INSERT INTO t (k) VALUES (?)", [k]).map(drop)).await
    }

    /// Starts a first transaction that runs `work` (durable or not), then holds the writer's
    /// thread inside it until the returned sender releases it; returns once it is running.
    fn hold<T: Send + 'static>(
        writer: &Writer,
        durable: bool,
        work: impl FnOnce(&Tx<'_>) -> StoreResult<T> + Send + 'static,
    ) -> (tokio::task::JoinHandle<StoreResult<T>>, std::sync::mpsc::Sender<()>) {
        let (entered, wait_entered) = std::sync::mpsc::channel();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let writer = writer.clone();
        let first = tokio::spawn(async move {
            writer
                .submit(durable, move |tx| {
                    let value = work(tx)?;
                    entered.send(()).expect("the test waits");
                    held.recv().expect("the test releases");
                    Ok(value)
                })
                .await
        });
        wait_entered.recv().expect("the first transaction runs");
        (first, release)
    }

    /// Holds the writer thread inside a first transaction until `keys` are all queued behind it,
    /// so they form one batch with it.
    async fn queue_behind_one(writer: &Writer, keys: &[i64]) -> Vec<StoreResult<()>> {
        let (first, release) =
            hold(writer, true, |tx| tx.exec("INSERT INTO t (k) VALUES (0)", []).map(drop));
        let (sent, mut all_sent) = tokio::sync::mpsc::unbounded_channel();
        let tasks: Vec<_> = keys
            .iter()
            .map(|k| {
                let (writer, k, sent) = (writer.clone(), *k, sent.clone());
                tokio::spawn(insert_queued(writer, k, sent))
            })
            .collect();
        for _ in keys {
            all_sent.recv().await.expect("queued");
        }
        release.send(()).expect("release");
        first.await.expect("task").expect("the first commits");
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("task"));
        }
        results
    }

    /// `insert`, telling `sent` once the job is on the writer's queue.
    async fn insert_queued(
        writer: Writer,
        k: i64,
        sent: tokio::sync::mpsc::UnboundedSender<()>,
    ) -> StoreResult<()> {
        let pending =
            writer.write(move |tx| tx.exec("INSERT INTO t (k) VALUES (?)", [k]).map(drop));
        // `write` queues its job before its first await point: poll it once, then report.
        let mut pending = std::pin::pin!(pending);
        let first = futures_poll_once(pending.as_mut()).await;
        sent.send(()).expect("the test listens");
        match first {
            Some(done) => done,
            None => pending.await,
        }
    }

    /// Polls a future once: its output if it was ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = Some(f);
        std::future::poll_fn(move |cx| {
            let mut inner = f.take().expect("polled once");
            match std::pin::Pin::new(&mut inner).poll(cx) {
                std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
                std::task::Poll::Pending => std::task::Poll::Ready(None),
            }
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_transactions_share_one_commit() {
        let db = Db::new();
        let writer = db.writer();
        let before = db.wal_frames();
        let keys: Vec<i64> = (1..=20).collect();
        let results = queue_behind_one(&writer, &keys).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(db.committed(), (0..=20).collect::<Vec<_>>());
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_transaction_keeps_the_rest_of_its_batch() {
        let db = Db::new();
        let writer = db.writer();
        // 0 is taken by the transaction they queue behind: those two fail, the rest commit.
        let keys = [1, 0, 2, 0, 3];
        let results = queue_behind_one(&writer, &keys).await;
        let failed: Vec<i64> =
            keys.iter().zip(&results).filter(|(_, r)| r.is_err()).map(|(k, _)| *k).collect();
        assert_eq!(failed, vec![0, 0]);
        assert_eq!(db.committed(), vec![0, 1, 2, 3]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_rolled_back_transaction_undoes_only_itself_and_still_answers() {
        let db = Db::new();
        let writer = db.writer();
        insert(writer.clone(), 1).await.expect("1 commits");
        let answer = writer
            .write(|tx| {
                tx.exec("INSERT INTO t (k) VALUES (2)", [])?;
                tx.roll_back();
                Ok("rolled back")
            })
            .await
            .expect("a rollback is an answer, not an error");
        assert_eq!(answer, "rolled back");
        insert(writer.clone(), 3).await.expect("3 commits");
        assert_eq!(db.committed(), vec![1, 3]);
        // And the writer's view agrees: 2 is not hiding in an open transaction.
        let seen = writer
            .write(|tx| tx.all("SELECT k FROM t ORDER BY k", [], |r| r.int("k")))
            .await
            .expect("select");
        assert_eq!(seen, vec![1, 3]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_error_undoes_the_statements_before_it() {
        let db = Db::new();
        let writer = db.writer();
        let failed = writer
            .write(|tx| {
                tx.exec("INSERT INTO t (k) VALUES (5)", [])?;
                tx.exec("INSERT INTO t (k) VALUES (5)", [])?;
                Ok(())
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(db.committed(), Vec::<i64>::new());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_transaction_fails_its_batch_and_the_writer_goes_on() {
        let db = Db::new();
        let writer = db.writer();
        let panicked = writer
            .write(|tx| -> StoreResult<()> {
                tx.exec("INSERT INTO t (k) VALUES (7)", [])?;
                panic!("a bug in a transaction");
            })
            .await;
        assert!(panicked.is_err());
        insert(writer.clone(), 8).await.expect("the writer still serves");
        assert_eq!(db.committed(), vec![8]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_all_land() {
        let db = Db::new();
        let writer = db.writer();
        let tasks: Vec<_> = (1..=200).map(|k| tokio::spawn(insert(writer.clone(), k))).collect();
        for t in tasks {
            t.await.expect("task").expect("commit");
        }
        assert_eq!(db.committed(), (1..=200).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn unsynced_commits_skip_checkpoints_and_leave_the_writer_durable() {
        let db = Db::new();
        let writer = db.writer();
        // Past the autocheckpoint size in unsynced commits alone: no checkpoint may run (it would
        // let the WAL be written over without an fsync), so the WAL only grows, a frame a commit.
        let n = AUTOCHECKPOINT + 100;
        for k in 1..=n {
            writer
                .write_unsynced(move |tx| tx.exec("INSERT INTO t (k) VALUES (?)", [k]).map(drop))
                .await
                .expect("unsynced commit");
        }
        assert!(db.wal_frames() >= n as u64, "{} frames for {n} commits", db.wal_frames());
        assert_eq!(db.committed(), (1..=n).collect::<Vec<_>>());
        // The next transaction runs with the durable settings again.
        let (synchronous, autocheckpoint) = writer
            .write(|tx| {
                let synchronous =
                    tx.one("PRAGMA synchronous", [], |r| r.int("synchronous"))?.unwrap_or(-1);
                let autocheckpoint = tx
                    .one("PRAGMA wal_autocheckpoint", [], |r| r.int("wal_autocheckpoint"))?
                    .unwrap_or(-1);
                Ok((synchronous, autocheckpoint))
            })
            .await
            .expect("durable commit");
        assert_eq!(synchronous, 2, "synchronous=FULL");
        assert_eq!(autocheckpoint, AUTOCHECKPOINT);
    }

    /// What one transaction of the tests of mixed durabilities saw: the rows committed before it,
    /// and the connection's `synchronous` (0 off, 2 full).
    fn count_and_insert(tx: &Tx<'_>, k: i64) -> StoreResult<(i64, i64)> {
        let before = tx.one("SELECT count(*) AS n FROM t", [], |r| r.int("n"))?.unwrap_or(-1);
        let synchronous = tx.one("PRAGMA synchronous", [], |r| r.int("synchronous"))?.unwrap_or(-1);
        tx.exec("INSERT INTO t (k) VALUES (?)", [k])?;
        Ok((before, synchronous))
    }

    /// Hands the writer a transaction that counts and inserts `k`, and returns once it is on the
    /// writer's queue (the writer being held, it cannot have run).
    async fn enqueue(
        writer: &Writer,
        durable: bool,
        k: i64,
    ) -> tokio::task::JoinHandle<StoreResult<(i64, i64)>> {
        let writer = writer.clone();
        let mut pending =
            Box::pin(
                async move { writer.submit(durable, move |tx| count_and_insert(tx, k)).await },
            );
        let ready = futures_poll_once(pending.as_mut()).await;
        assert!(ready.is_none(), "the writer is held");
        tokio::spawn(pending)
    }

    async fn outcomes(
        tasks: Vec<tokio::task::JoinHandle<StoreResult<(i64, i64)>>>,
    ) -> Vec<(i64, i64)> {
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.expect("task").expect("commit"));
        }
        seen
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unsynced_batch_takes_the_unsynced_queued_behind_and_sets_durable_ones_aside() {
        let db = Db::new();
        let writer = db.writer();
        // An unsynced transaction holds the writer until three more are queued behind it:
        // durable, unsynced, durable.
        let (first, release) = hold(&writer, false, |tx| count_and_insert(tx, 1));
        let mut queued = Vec::new();
        for (k, durable) in [(2, true), (3, false), (4, true)] {
            queued.push(enqueue(&writer, durable, k).await);
        }
        release.send(()).expect("release");
        let mut seen = vec![first.await.expect("task").expect("commit")];
        seen.extend(outcomes(queued).await);
        // The unsynced batch ran without fsync and took the unsynced transaction queued behind
        // it, ahead of the durable one before it; the two durable ones ran after it, in their
        // order, durably.
        assert_eq!(seen, [(0, 0), (2, 2), (1, 0), (3, 2)]);
        assert_eq!(db.committed(), [1, 2, 3, 4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unsynced_transactions_waiting_when_a_round_begins_go_first() {
        let db = Db::new();
        let writer = db.writer();
        // A durable transaction holds the writer while durable ones fill its batch; three more
        // queued after them wait for the next round: durable, unsynced, durable.
        let (first, release) = hold(&writer, true, |tx| count_and_insert(tx, 0));
        let mut fill = Vec::new();
        for k in 1..MAX_BATCH as i64 {
            fill.push(enqueue(&writer, true, 1000 + k).await);
        }
        let mut queued = Vec::new();
        for (k, durable) in [(2, true), (3, false), (4, true)] {
            queued.push(enqueue(&writer, durable, k).await);
        }
        release.send(()).expect("release");
        first.await.expect("task").expect("commit");
        let filled = outcomes(fill).await;
        assert!(filled.iter().all(|&(_, synchronous)| synchronous == 2));
        // The full batch committed 512 rows. Of the three waiting then, the unsynced one ran
        // first, without fsync; the durable ones after it, in their order, durably.
        assert_eq!(outcomes(queued).await, [(513, 2), (512, 0), (514, 2)]);
    }
}
