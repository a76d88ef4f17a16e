//! Merchant webhooks: the endpoints API, event reads and redelivery. The dispatcher that
//! delivers the outbox is the engine's (`paymux_engine::dispatcher`).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use paymux_core::{EventId, EventType};
use paymux_crypto::random_alphanumeric;
use paymux_store::{DeliveryRecord, SecretRotation, StoreError, WebhookEndpointRecord};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::auth::Merchant;
use crate::error::ApiError;
use crate::extract::ApiJson;
use paymux_engine::Engine;
use paymux_engine::objects::{self, rfc3339};
use paymux_engine::outbound;

/// How long a replaced secret keeps signing after a rotation.
const SECRET_OVERLAP: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointBody {
    url: Option<String>,
    events: Option<Vec<String>>,
}

fn new_secret() -> String {
    format!("whsec_{}", random_alphanumeric(32))
}

fn endpoint_object(ep: &WebhookEndpointRecord, with_secret: bool) -> Value {
    let mut v = json!({
        "id": ep.id,
        "object": "webhook_endpoint",
        "url": ep.url,
        "events": ep.events.as_ref().map(|e| e.iter().map(|t| t.as_str()).collect::<Vec<_>>()),
        "livemode": ep.livemode,
        "created_at": rfc3339(ep.created_at),
    });
    if with_secret {
        v["secret"] = json!(ep.secret);
    }
    v
}

pub async fn create_endpoint(
    State(state): State<Engine>,
    merchant: Merchant,
    ApiJson(body): ApiJson<CreateEndpointBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let url = body.url.ok_or_else(|| ApiError::invalid_param("url", "url is required"))?;
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| ApiError::invalid_param("url", format!("url is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || url.len() > 512 {
        return Err(ApiError::invalid_param(
            "url",
            "url must be an http(s) URL of at most 512 characters",
        ));
    }
    if !state.config.webhooks.allow_private_urls
        && let Err(e) = outbound::check_url(&parsed).await
    {
        return Err(ApiError::invalid_param(
            "url",
            format!("url must reach a globally routable address: {e}"),
        ));
    }
    let events = body
        .events
        .map(|list| {
            if list.is_empty() {
                return Err(ApiError::invalid_param(
                    "events",
                    "events must not be empty; omit it for all",
                ));
            }
            list.iter()
                .map(|t| t.parse::<EventType>().map_err(|e| ApiError::invalid_param("events", e)))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let ep = WebhookEndpointRecord {
        id: format!("we_{}", uuid::Uuid::now_v7().simple()),
        merchant_id: merchant.id,
        url,
        secret: new_secret(),
        events,
        livemode: merchant.livemode,
        created_at: OffsetDateTime::now_utc(),
    };
    state.store.create_webhook_endpoint(&ep).await?;
    Ok((StatusCode::CREATED, Json(endpoint_object(&ep, true))))
}

pub async fn list_endpoints(
    State(state): State<Engine>,
    merchant: Merchant,
) -> Result<Json<Value>, ApiError> {
    let eps = state.store.webhook_endpoints(merchant.id, merchant.livemode).await?;
    Ok(Json(json!({
        "object": "list",
        "data": eps.iter().map(|e| endpoint_object(e, false)).collect::<Vec<_>>(),
        "has_more": false,
    })))
}

/// A new secret; every secret replaced within the overlap keeps signing until its own overlap
/// ends. With an `Idempotency-Key`, a retried rotation hands back the secret its first run made,
/// even once the idempotency layer's stored answer is gone (its first run died after the commit,
/// or the answer is older than the retention).
pub async fn rotate_secret(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    own_endpoint(&state, merchant, &id).await?;
    let secret = new_secret();
    let now = OffsetDateTime::now_utc();
    let rotation = SecretRotation {
        secret: &secret,
        old_expires_at: now + SECRET_OVERLAP,
        now,
        idempotency_key: headers.get(crate::idempotency::HEADER).and_then(|v| v.to_str().ok()),
    };
    let Some(secret) = state.store.rotate_webhook_secret(merchant.id, &id, &rotation).await? else {
        return Err(ApiError::not_found("webhook endpoint"));
    };
    let mut ep = state
        .store
        .webhook_endpoint(merchant.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    ep.secret = secret;
    Ok(Json(endpoint_object(&ep, true)))
}

pub async fn delete_endpoint(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    own_endpoint(&state, merchant, &id).await?;
    if !state.store.delete_webhook_endpoint(merchant.id, &id).await? {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    Ok(Json(json!({"id": id, "object": "webhook_endpoint", "deleted": true})))
}

/// The merchant's endpoint of the key's mode, or a 404.
async fn own_endpoint(
    state: &Engine,
    merchant: Merchant,
    id: &str,
) -> Result<WebhookEndpointRecord, ApiError> {
    state
        .store
        .webhook_endpoint(merchant.id, id)
        .await?
        .filter(|ep| merchant.sees(ep.livemode))
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

/// The merchant's event of the key's mode, or a 404.
async fn own_event(
    state: &Engine,
    merchant: Merchant,
    id: EventId,
) -> Result<paymux_store::EventRecord, ApiError> {
    state
        .store
        .event(merchant.id, id)
        .await?
        .filter(|e| merchant.sees(e.livemode))
        .ok_or_else(|| ApiError::not_found("event"))
}

fn delivery_object(d: &DeliveryRecord) -> Value {
    json!({
        "id": d.id,
        "endpoint_id": d.endpoint_id,
        "url": d.url,
        "status": d.status,
        "next_attempt_at": d.next_attempt_at.map(rfc3339),
        "delivered_at": d.delivered_at.map(rfc3339),
        "attempts": d.attempts.iter().map(|a| json!({
            "at": rfc3339(a.at),
            "status_code": a.status_code,
            "latency_ms": a.latency_ms,
            "error": a.error,
        })).collect::<Vec<_>>(),
    })
}

pub async fn get_event(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: EventId = id.parse().map_err(|_| ApiError::not_found("event"))?;
    let e = own_event(&state, merchant, id).await?;
    let deliveries = state.store.deliveries_for_event(merchant.id, id).await?;
    let mut v = objects::event(&e);
    v["deliveries"] = deliveries.iter().map(delivery_object).collect();
    Ok(Json(v))
}

pub async fn redeliver(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: EventId = id.parse().map_err(|_| ApiError::not_found("event"))?;
    own_event(&state, merchant, id).await?;
    match state.store.redeliver_event(merchant.id, id, OffsetDateTime::now_utc()).await {
        Ok(n) => Ok(Json(json!({"id": id.to_string(), "object": "event", "redelivering_to": n}))),
        Err(StoreError::NotFound) => Err(ApiError::not_found("event")),
        Err(e) => Err(e.into()),
    }
}
