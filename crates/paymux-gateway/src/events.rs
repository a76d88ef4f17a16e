//! `GET /v1/events`, `GET /v1/events/{id}`: the outbox as the merchant sees it.

use axum::Json;
use axum::extract::State;
use paymux_core::EventId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Merchant;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use paymux_engine::Engine;
use paymux_engine::objects;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Events after this one (oldest first).
    after: Option<String>,
    limit: Option<u32>,
}

pub async fn list(
    State(state): State<Engine>,
    merchant: Merchant,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let after = q
        .after
        .map(|a| a.parse::<EventId>())
        .transpose()
        .map_err(|_| ApiError::invalid_param("after", "after must be an event id"))?;
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let rows = state.store.events(merchant.id, merchant.livemode, after, limit).await?;
    Ok(Json(json!({
        "object": "list",
        "data": rows.iter().map(objects::event).collect::<Vec<_>>(),
        "has_more": rows.len() == limit as usize,
    })))
}
