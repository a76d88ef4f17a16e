//! The router: every layer, and every route outside the merchant API, on one screen. The `/v1`
//! routes are listed in `openapi::v1`, one line each, where their document is built from the
//! same list.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::{admin, callbacks, cashier, idempotency, metrics, openapi};
use paymux_engine::Engine;

/// Bodies larger than this are refused before they are read.
const MAX_BODY: usize = 64 * 1024;

pub fn router(state: Engine) -> Router {
    // Installed before the first request, so the first scrape already lists every series.
    metrics::handle();
    // The merchant API's routes (`openapi::v1`: every `/v1` route, listed there) and its
    // document come from one list.
    let (v1, doc) = openapi::v1().split_for_parts();
    let doc = Arc::new(openapi::finish(doc));
    v1.route("/openapi.json", get(move || async move { Json(doc.as_ref().clone()) }))
        .route("/callbacks/{channel}/{account_id}", post(callbacks::receive))
        .route("/pay/{payment_id}", get(cashier::show).post(cashier::pick))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .merge(admin::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), idempotency::layer))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(middleware::from_fn(metrics::track))
        .layer(middleware::from_fn(request_id))
        // The path, never the query: the admin sign-in link carries an operator token there.
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            tracing::debug_span!("http", method = %req.method(), path = %req.uri().path())
        }))
        .with_state(state)
}

/// Serves the gateway on `listener`, with its background workers (the sweeper and the webhook
/// dispatcher), until `shutdown` resolves. Then it stops accepting connections and, at the same
/// time, lets the requests in flight finish and stops the workers (each finishes what it has in
/// hand and releases the leases on what it claimed but did not start); it returns once all of
/// that is done. Bound the wait with a timeout around this future: dropping it aborts whatever
/// is still running.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let workers = state.start_workers().map_err(std::io::Error::other)?;
    let stopping = CancellationToken::new();
    let signal = {
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            stopping.cancel();
        }
    };
    let server = async {
        let served = axum::serve(listener, router(state)).with_graceful_shutdown(signal).await;
        // A server that ended by itself takes the workers with it.
        stopping.cancel();
        served
    };
    let workers_stopped = async {
        stopping.cancelled().await;
        workers.shutdown().await;
    };
    let upkeep = async {
        let mut tick = tokio::time::interval(metrics::UPKEEP);
        loop {
            tokio::select! {
                () = stopping.cancelled() => return,
                _ = tick.tick() => metrics::handle().run_upkeep(),
            }
        }
    };
    let (served, (), ()) = tokio::join!(server, workers_stopped, upkeep);
    served
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Engine>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => "ready".into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response(),
    }
}

async fn not_found() -> crate::error::ApiError {
    crate::error::ApiError::not_found("route")
}

/// Gives every request an id: `Request-Id` on the answer, `request_id` in error bodies and logs.
async fn request_id(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let id = format!("req_{}", uuid::Uuid::now_v7().simple());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut res = crate::error::REQUEST_ID.scope(id.clone(), next.run(req).instrument(span)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("request-id", v);
    }
    res
}
