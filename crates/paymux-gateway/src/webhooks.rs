//! Merchant webhooks: the endpoints API, event reads and redelivery, as HTTP over the engine
//! (`paymux_engine::Engine::create_webhook_endpoint` and its siblings). The dispatcher that
//! delivers the outbox is the engine's (`paymux_engine::dispatcher`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use paymux_core::EventId;
use paymux_engine::Engine;
use paymux_engine::objects::{Delivery, Event, EventWithDeliveries, Page, WebhookEndpoint};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Merchant;
use crate::error::ApiError;
use crate::extract::ApiJson;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointBody {
    /// Where events are POSTed: https, on a public address.
    #[schema(value_type = String, required = true)]
    url: Option<String>,
    /// The event types to receive; omitted or `null` for all.
    events: Option<Vec<String>>,
}

/// The answer to a deletion.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedEndpoint {
    id: String,
    /// Always `"webhook_endpoint"`.
    object: &'static str,
    deleted: bool,
}

/// The answer to a redelivery request.
#[derive(Debug, Serialize, ToSchema)]
pub struct Redelivery {
    id: String,
    /// Always `"event"`.
    object: &'static str,
    /// How many endpoints the event is being delivered to again.
    redelivering_to: u64,
}

/// A new endpoint; its signing secret is shown in this answer only.
#[utoipa::path(post, path = "/v1/webhook_endpoints", operation_id = "create_webhook_endpoint", tag = "webhook_endpoints",
    request_body = CreateEndpointBody,
    responses((status = 201, description = "The endpoint, with its secret.", body = WebhookEndpoint)))]
pub async fn create_endpoint(
    State(state): State<Engine>,
    merchant: Merchant,
    ApiJson(body): ApiJson<CreateEndpointBody>,
) -> Result<(StatusCode, Json<WebhookEndpoint>), ApiError> {
    let ep = state.create_webhook_endpoint(merchant.caller(), body.url, body.events).await?;
    Ok((StatusCode::CREATED, Json(WebhookEndpoint::new(&ep, true))))
}

/// The merchant's endpoints of the key's mode (without their secrets).
#[utoipa::path(get, path = "/v1/webhook_endpoints", operation_id = "list_webhook_endpoints", tag = "webhook_endpoints",
    responses((status = 200, description = "Every endpoint, on one page.", body = Page<WebhookEndpoint>)))]
pub async fn list_endpoints(
    State(state): State<Engine>,
    merchant: Merchant,
) -> Result<Json<Page<WebhookEndpoint>>, ApiError> {
    let eps = state.webhook_endpoints(merchant.caller()).await?;
    let data = eps.iter().map(|e| WebhookEndpoint::new(e, false)).collect();
    Ok(Json(Page::new(data, false, None)))
}

/// A new secret. With an `Idempotency-Key`, a retried rotation hands back the secret its first
/// run made (the engine binds the rotation to the key).
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/rotate_secret", operation_id = "rotate_webhook_secret", tag = "webhook_endpoints",
    params(("id" = String, Path, description = "The endpoint's id (`we_...`).")),
    responses((status = 200, description = "The endpoint, with its new secret; the old one keeps signing alongside for a while.", body = WebhookEndpoint)))]
pub async fn rotate_secret(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    let key = headers.get(crate::idempotency::HEADER).and_then(|v| v.to_str().ok());
    let ep = state.rotate_webhook_secret(merchant.caller(), &id, key).await?;
    Ok(Json(WebhookEndpoint::new(&ep, true)))
}

/// Deletes an endpoint; nothing more is delivered to it.
#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", operation_id = "delete_webhook_endpoint", tag = "webhook_endpoints",
    params(("id" = String, Path, description = "The endpoint's id (`we_...`).")),
    responses((status = 200, description = "Deleted.", body = DeletedEndpoint)))]
pub async fn delete_endpoint(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<DeletedEndpoint>, ApiError> {
    state.delete_webhook_endpoint(merchant.caller(), &id).await?;
    Ok(Json(DeletedEndpoint { id, object: "webhook_endpoint", deleted: true }))
}

/// An event, with its deliveries and their attempts.
#[utoipa::path(get, path = "/v1/events/{id}", operation_id = "get_event", tag = "events",
    params(("id" = String, Path, description = "The event's id (`evt_...`).")),
    responses((status = 200, description = "The event and its deliveries.", body = EventWithDeliveries)))]
pub async fn get_event(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<EventWithDeliveries>, ApiError> {
    let id: EventId = id.parse().map_err(|_| ApiError::not_found("event"))?;
    let (e, deliveries) = state.event_with_deliveries(merchant.caller(), id).await?;
    Ok(Json(EventWithDeliveries {
        event: Event::from(&e),
        deliveries: deliveries.iter().map(Delivery::from).collect(),
    }))
}

/// Delivers an event again to every endpoint subscribed to it, now, with a fresh retry window.
#[utoipa::path(post, path = "/v1/events/{id}/redeliver", operation_id = "redeliver_event", tag = "events",
    params(("id" = String, Path, description = "The event's id (`evt_...`).")),
    responses((status = 200, description = "How many endpoints it goes to.", body = Redelivery)))]
pub async fn redeliver(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Redelivery>, ApiError> {
    let id: EventId = id.parse().map_err(|_| ApiError::not_found("event"))?;
    let n = state.redeliver_event(merchant.caller(), id).await?;
    Ok(Json(Redelivery { id: id.to_string(), object: "event", redelivering_to: n }))
}
