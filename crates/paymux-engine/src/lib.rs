//! The paymux engine: the application's use cases with no HTTP in them.
//!
//! It holds the store, the channel registry and the configuration ([`Engine`]); applies a
//! channel's report about one attempt of a payment, or about a refund, each change a
//! compare-and-set with its event in one transaction ([`apply_attempt`], [`apply_refund`]); handles a channel's notification from the
//! raw request to the channel's reply ([`Engine::handle_notification`]); and runs the background
//! workers: the sweeper, which settles what the channels never told us, and the webhook
//! dispatcher, which delivers the outbox; and it holds the operators' use cases behind the admin
//! page ([`operator`]). The HTTP gateway and the CLI are doors onto it; it depends on no web
//! framework.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use paymux_engine::{Engine, GatewayConfig};
//!
//! let store = Arc::new(paymux_store::SqliteStore::open("paymux.db").await?);
//! let engine = Engine::new(store, GatewayConfig::new("https://pay.example.com"));
//! let workers = engine.start_workers()?;
//! // One pass now, with no stop requested.
//! paymux_engine::sweeper::sweep_once(&engine, &Default::default()).await?;
//! // Finish what is in hand, release the rest, stop.
//! workers.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod access;
pub mod admin;
mod apply;
mod attempts;
mod barcode;
mod close;
mod config;
pub mod dispatcher;
mod endpoints;
mod engine;
mod error;
pub mod failpoint;
mod notifications;
pub mod objects;
pub mod operator;
pub mod outbound;
mod payments;
mod refunds;
mod registry;
mod schema;
pub mod settlement;
mod sharing;
pub mod sweeper;
pub mod telemetry;
#[cfg(test)]
mod testdata;

pub use access::{CallerCache, Created};
pub use admin::new_api_key;
pub use apply::{Applied, DUPLICATE_REFUND_REASON, apply_attempt, apply_refund};
pub use attempts::{Cashier, CreateAttemptRequest};
pub use config::{BarcodeConfig, GatewayConfig, SweeperConfig, WebhookConfig};
pub use endpoints::Caller;
pub use engine::{Engine, Workers, payment_ref};
pub use error::EngineError;
pub use notifications::NotificationReply;
pub use payments::{CreatePaymentRequest, Payer, PaymentListQuery, parse_amount};
pub use refunds::{CreateRefundRequest, RefundListQuery};
pub use registry::{ChannelFactory, ChannelRegistry, ConfigError};
