//! `GET /metrics`: the Prometheus text of every series the gateway and the engine write, and the
//! layer that counts and times each HTTP request by its route template.
//!
//! The `metrics` facade has one recorder per process: the first router built installs a Prometheus
//! recorder, and every later one (several gateways in one test process) reads the same.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const HTTP_REQUESTS: &str = "paymux_http_requests_total";
const HTTP_REQUEST_DURATION: &str = "paymux_http_request_duration_seconds";

/// Histogram buckets of every `*_seconds` series: from a fast local answer to a channel timeout,
/// and on to the hours a notification may lag.
const BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0];

/// How often histogram samples are folded into their buckets when nobody scrapes.
pub(crate) const UPKEEP: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, installed on first use.
pub(crate) fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "histogram buckets refused; summaries instead");
                PrometheusBuilder::new()
            });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            // Whoever embeds the gateway installed their own: the series go there, not here.
            tracing::warn!(error = %e, "a metrics recorder was already installed; /metrics shows nothing");
        }
        describe();
        paymux_engine::telemetry::describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "How long the gateway took to answer, by route template."
    );
}

pub(crate) async fn render() -> Response {
    let handle = handle();
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}

/// Counts and times each request under the route it matched (`/v1/payments/{id}`, never the raw
/// path, so the label's values are the router's routes and no more).
pub(crate) async fn track(req: Request, next: Next) -> Response {
    let route = match req.extensions().get::<MatchedPath>() {
        Some(path) => path.as_str().to_owned(),
        None => "unmatched".to_owned(),
    };
    // A client may send any method name; only the standard ones become label values.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let res = next.run(req).await;
    histogram!(HTTP_REQUEST_DURATION, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    let status = res.status().as_u16().to_string();
    counter!(HTTP_REQUESTS, "route" => route, "method" => method, "status" => status).increment(1);
    res
}
