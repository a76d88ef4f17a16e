//! Merchant webhooks: the endpoints API, event reads and redelivery, as HTTP over the engine
//! (`paymux_engine::Engine::create_webhook_endpoint` and its siblings). The dispatcher that
//! delivers the outbox is the engine's (`paymux_engine::dispatcher`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use paymux_core::EventId;
use paymux_engine::Engine;
use paymux_engine::objects::{Delivery, Event, EventWithDeliveries, Page, WebhookEndpoint};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Merchant;
use crate::error::ApiError;
use crate::extract::ApiJson;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointBody {
    url: Option<String>,
    events: Option<Vec<String>>,
}

pub async fn create_endpoint(
    State(state): State<Engine>,
    merchant: Merchant,
    ApiJson(body): ApiJson<CreateEndpointBody>,
) -> Result<(StatusCode, Json<WebhookEndpoint>), ApiError> {
    let ep = state.create_webhook_endpoint(merchant.caller(), body.url, body.events).await?;
    Ok((StatusCode::CREATED, Json(WebhookEndpoint::new(&ep, true))))
}

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

pub async fn delete_endpoint(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.delete_webhook_endpoint(merchant.caller(), &id).await?;
    Ok(Json(json!({"id": id, "object": "webhook_endpoint", "deleted": true})))
}

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

pub async fn redeliver(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: EventId = id.parse().map_err(|_| ApiError::not_found("event"))?;
    let n = state.redeliver_event(merchant.caller(), id).await?;
    Ok(Json(json!({"id": id.to_string(), "object": "event", "redelivering_to": n})))
}
