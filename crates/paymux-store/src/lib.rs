//! Persistence for paymux: the store traits, one per aggregate, and two backends with the same
//! schema: SQLite ([`SqliteStore`], one file, the embedded default for one node) and PostgreSQL
//! ([`PgStore`], for several gateway instances on one database).
//!
//! Every write that moves money is one transaction with the event that reports it. State changes
//! are compare-and-set on the current status, so two writers that race (a notification and a sync,
//! say) change the row once, and the loser learns it lost. Background work is claimed with
//! leases, so any instance can die at any time and another takes its work over. The rules that
//! are not SQL (event routing, idempotency decisions, refund reservations) live in one
//! backend-neutral module; a backend holds SQL and row mapping only.
//!
//! [`open`] picks the backend from its argument:
//!
//! ```no_run
//! # async fn demo() -> Result<(), paymux_store::StoreError> {
//! use paymux_store::prelude::*;
//!
//! // `postgres://...` opens PostgreSQL; `sqlite://paymux.db` or a plain path, SQLite.
//! let store = paymux_store::open("paymux.db").await?;
//! let merchant = store.create_merchant("Acme").await?;
//! # let _ = merchant; Ok(()) }
//! ```

mod codec;
mod error;
mod postgres;
mod records;
mod rules;
mod sqlite;
mod traits;

use std::sync::Arc;

pub use error::{Corruption, DbError, StoreError, StoreResult};
pub use postgres::PgStore;
pub use records::*;
pub use sqlite::SqliteStore;
pub use traits::*;

/// The store traits, for calling store methods: `use paymux_store::prelude::*;`.
pub mod prelude {
    pub use crate::traits::{
        AccountStore, Health, IdempotencyStore, InboundStore, MerchantStore, OperatorStore,
        OutboxStore, PaymentStore, RefundStore, SettlementStore, Store, WorkQueue,
    };
}

/// Opens the store `url_or_path` names: `postgres://` or `postgresql://` connects to PostgreSQL;
/// `sqlite://<path>` or a plain path opens (creating if needed) a SQLite file. Migrations run
/// either way.
pub async fn open(url_or_path: &str) -> StoreResult<Arc<dyn Store>> {
    if url_or_path.starts_with("postgres://") || url_or_path.starts_with("postgresql://") {
        return Ok(Arc::new(PgStore::connect(url_or_path).await?));
    }
    let path = url_or_path.strip_prefix("sqlite://").unwrap_or(url_or_path);
    Ok(Arc::new(SqliteStore::open(path).await?))
}
