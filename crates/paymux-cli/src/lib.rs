//! The pieces behind the `paymux` command, as a library so the end-to-end tests start exactly what
//! `paymux up` and `paymux serve` start.
//!
//! [`sandbox::start`] opens (or creates) a data directory, keeps the sandbox's keys and identity in
//! it across restarts, starts the Alipay, WeChat Pay and UnionPay mocks and the gateway on the
//! embedded SQLite store, wires a sandbox merchant to the mocks, and writes `sandbox.json`.
//! [`config`] is `paymux serve`'s configuration: a TOML file, environment variables and flags.
//! [`open_store`] is the one place the command opens a store.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let options = paymux_cli::sandbox::SandboxOptions::new("./paymux-data");
//! let sandbox = paymux_cli::sandbox::start(options).await?;
//! println!("gateway at {}", sandbox.manifest.gateway_url);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use paymux_store::{Store, StoreResult};

pub mod bench;
pub mod config;
pub mod sandbox;
pub mod shutdown;

/// Opens the store named by `url_or_path` and brings its schema up to date (the migrations run
/// on every open): `postgres://` (or `postgresql://`) is PostgreSQL; a path or a `sqlite://` URL
/// is the embedded SQLite store.
pub async fn open_store(url_or_path: &str) -> StoreResult<Arc<dyn Store>> {
    let sqlite_short = url_or_path.strip_prefix("sqlite:").filter(|rest| !rest.starts_with("//"));
    match sqlite_short {
        Some(path) => paymux_store::open(path).await,
        None => paymux_store::open(url_or_path).await,
    }
}
