//! Stopping on a signal: SIGTERM (what a service manager or an orchestrator sends) or Ctrl-C.

use std::future::Future;
use std::time::Duration;

/// How long `paymux serve` and `paymux up` wait for work in flight after a signal, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Installs the handlers now, so a signal that arrives while the server starts is not the
/// default one (which ends the process on the spot), and returns a future that resolves at the
/// first SIGTERM or Ctrl-C.
pub fn signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(
                signal = name,
                "stopping: no new connections; finishing the work in hand"
            );
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("stopping: no new connections; finishing the work in hand");
            } else {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// The work in flight outlived the grace period; what was cut off is not lost.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped after {}s with work still in flight; its leases run out and whichever instance \
     runs next takes it over",
    .0.as_secs()
)]
pub struct GraceExceeded(pub Duration);

/// Waits for `stopping` (a server told to stop) for at most `grace`.
pub async fn within<T>(
    grace: Duration,
    stopping: impl Future<Output = T>,
) -> Result<T, GraceExceeded> {
    tokio::time::timeout(grace, stopping).await.map_err(|_| GraceExceeded(grace))
}
