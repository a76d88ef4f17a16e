//! The pieces behind the `paymux` command, as a library so the end-to-end tests start exactly what
//! `paymux up` starts.
//!
//! [`sandbox::start`] opens (or creates) a data directory, keeps the sandbox's keys and identity in
//! it across restarts, starts the Alipay and WeChat Pay mocks and the gateway on the embedded
//! SQLite store, wires a sandbox merchant to the mocks, and writes `sandbox.json`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let options = paymux_cli::sandbox::SandboxOptions::new("./paymux-data");
//! let sandbox = paymux_cli::sandbox::start(options).await?;
//! println!("gateway at {}", sandbox.manifest.gateway_url);
//! # Ok(()) }
//! ```

pub mod sandbox;
