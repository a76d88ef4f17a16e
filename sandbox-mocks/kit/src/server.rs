//! Serving a mock's router, and the HTTP client its notifications go out with.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Serves `router` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

/// Serves `router` on `listener` in the background: the address it is bound to (port 0 picks
/// one) and the task, which ends only on an I/O error or when aborted.
pub fn start(
    listener: TcpListener,
    router: Router,
) -> std::io::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let addr = listener.local_addr()?;
    Ok((addr, tokio::spawn(serve(listener, router))))
}

/// The client notifications are posted with; `timeout` bounds one send.
pub fn http_client(timeout: Option<Duration>) -> reqwest::Client {
    let builder = reqwest::Client::builder();
    let builder = match timeout {
        Some(t) => builder.timeout(t),
        None => builder,
    };
    // Building fails only when the TLS backend cannot start, and then the default client fails
    // the same way; there is no configuration here that could be wrong.
    builder.build().unwrap_or_default()
}
