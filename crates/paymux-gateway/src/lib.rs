//! The paymux gateway: one HTTP API for merchants in front of every payment channel.
//!
//! It authenticates merchants by API key, validates requests, writes each payment before calling
//! its channel, maps the channel's answer to the four outcome classes of `paymux_core::Channel`,
//! receives the channels' notifications, and applies every state change with its event in one
//! transaction.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use paymux_gateway::{AppState, GatewayConfig};
//!
//! let store = Arc::new(paymux_store::SqliteStore::open("paymux.db").await.map_err(std::io::Error::other)?);
//! let config = GatewayConfig::new("http://127.0.0.1:8080");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! paymux_gateway::serve(listener, AppState::new(store, config)).await
//! # }
//! ```

mod app;
mod apply;
mod auth;
mod callbacks;
mod error;
mod events;
mod extract;
pub mod failpoint;
mod idempotency;
mod objects;
mod outbound;
mod payments;
mod refunds;
mod state;
pub mod sweeper;
pub mod webhooks;

pub use app::{router, serve};
pub use apply::{Applied, apply_payment, apply_refund};
pub use auth::new_api_key;
pub use error::{ApiError, ErrorBody};
pub use state::{AppState, ChannelRegistry, GatewayConfig, SweeperConfig, WebhookConfig};
