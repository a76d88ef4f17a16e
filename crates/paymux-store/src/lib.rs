//! Persistence for paymux: the store traits, one per aggregate, and the SQLite backend.
//!
//! Every write that moves money is one transaction with the event that reports it. State changes
//! are compare-and-set on the current status, so two writers that race (a notification and a sync,
//! say) change the row once, and the loser learns it lost. The rules that are not SQL (event
//! routing, idempotency decisions, refund reservations) live in one backend-neutral module; a
//! backend holds SQL and row mapping only.
//!
//! ```no_run
//! # async fn demo() -> Result<(), paymux_store::StoreError> {
//! use paymux_store::SqliteStore;
//! use paymux_store::prelude::*;
//!
//! let store = SqliteStore::open("paymux.db").await?;
//! let merchant = store.create_merchant("Acme").await?;
//! # let _ = merchant; Ok(()) }
//! ```

mod codec;
mod error;
mod records;
mod rules;
mod sqlite;
mod traits;

pub use error::{Corruption, StoreError, StoreResult};
pub use records::*;
pub use sqlite::SqliteStore;
pub use traits::*;

/// The store traits, for calling store methods: `use paymux_store::prelude::*;`.
pub mod prelude {
    pub use crate::traits::{
        AccountStore, Health, IdempotencyStore, InboundStore, MerchantStore, OutboxStore,
        PaymentStore, RefundStore, Store, WorkQueue,
    };
}
