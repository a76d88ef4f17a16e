//! The paymux gateway: one HTTP API for merchants in front of every payment channel.
//!
//! It authenticates merchants by API key, validates requests, replays idempotent answers, turns
//! the channels' callbacks into calls on the engine, and maps the engine's errors to the API's
//! one error shape. What the requests do lives in `paymux_engine`; this crate is HTTP only.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use paymux_engine::{Engine, GatewayConfig};
//!
//! let store = Arc::new(paymux_store::SqliteStore::open("paymux.db").await.map_err(std::io::Error::other)?);
//! let config = GatewayConfig::new("http://127.0.0.1:8080");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let ctrl_c = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! paymux_gateway::serve(listener, Engine::new(store, config), ctrl_c).await
//! # }
//! ```

mod admin;
mod app;
mod auth;
mod callbacks;
mod cashier;
mod error;
mod events;
mod extract;
mod idempotency;
mod metrics;
mod openapi;
mod payments;
mod refunds;
mod settlement;
mod webhooks;

pub use app::{router, serve};
pub use error::{ApiError, ErrorBody, ErrorResponse};
pub use openapi::document as openapi_document;
