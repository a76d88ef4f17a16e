//! What a store call can fail with.

use paymux_core::{MoneyError, PaymentStatus};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was hit: the named field already has this value.
    #[error("{0} already exists")]
    Duplicate(&'static str),
    #[error("not found")]
    NotFound,
    /// The refund would take the payment's refunds past its amount.
    #[error("refund of {requested} exceeds the {available} still refundable")]
    RefundExceedsAmount { requested: i64, available: i64 },
    #[error("payment is {0}, only a succeeded payment can be refunded")]
    PaymentNotRefundable(PaymentStatus),
    /// The payment's held funds are being split (its settlement is settling or failed): no
    /// refund now.
    #[error("the payment's settlement is {0}; no refund while its held funds are being split")]
    SettlementBusy(paymux_core::SettlementStatus),
    /// Attempts are added only to a pending payment.
    #[error("payment is {0}, only a pending payment takes another attempt")]
    PaymentNotPending(PaymentStatus),
    /// A row held something the code cannot read back (a bug or a hand edit).
    #[error("corrupt row: {0}")]
    Corrupt(#[source] Corruption),
    /// The database could not be reached or failed (a refused connection, an exhausted pool, a
    /// failed statement or migration).
    #[error("store unavailable: {0}")]
    Unavailable(#[source] DbError),
}

/// A failure of the database itself, from either backend's driver.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The group commit holding this transaction failed: none of its batch is committed.
    #[error("the batch holding this transaction was not committed: {0}")]
    BatchNotCommitted(#[source] std::sync::Arc<DbError>),
    /// The embedded writer did not answer: its thread is gone (the store is shutting down), or
    /// this transaction panicked (a bug) and its batch was rolled back.
    #[error("the SQLite writer did not answer (it stopped, or the transaction panicked)")]
    WriterStopped,
    #[error("could not start the SQLite writer: {0}")]
    WriterStart(#[source] std::io::Error),
    /// A transaction on the embedded writer panicked (a bug): its batch was rolled back.
    #[error("a transaction in the same batch panicked")]
    Panicked,
}

/// Why a stored value does not read back.
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    /// The column is missing or holds a type the code does not expect.
    #[error("column {column}: {source}")]
    Column {
        column: &'static str,
        #[source]
        source: DbError,
    },
    /// The column holds a value outside its domain (an unknown status, a malformed id).
    #[error("{what} {value:?} is not valid")]
    Value { what: &'static str, value: String },
    #[error("{what} is not valid JSON: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("time {0} ms is out of range")]
    Time(i64),
    #[error("amount: {0}")]
    Amount(#[source] MoneyError),
}

impl From<Corruption> for StoreError {
    fn from(c: Corruption) -> Self {
        StoreError::Corrupt(c)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Every database failure that is not a uniqueness violation: the store cannot answer now.
pub(crate) fn unavailable(e: impl Into<DbError>) -> StoreError {
    StoreError::Unavailable(e.into())
}

/// Maps a UNIQUE violation to `Duplicate(what)`, anything else to `Unavailable`.
pub(crate) fn unique_or(e: sqlx::Error, what: &'static str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate(what),
        _ => unavailable(e),
    }
}

/// The same for the embedded backend's driver: a UNIQUE or PRIMARY KEY violation is a duplicate.
pub(crate) fn sqlite_unique_or(e: rusqlite::Error, what: &'static str) -> StoreError {
    use rusqlite::ffi;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Duplicate(what)
        }
        _ => unavailable(e),
    }
}
