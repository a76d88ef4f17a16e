//! `GET /v1/events`: the outbox as the merchant sees it, oldest first.

use axum::Json;
use axum::extract::State;
use paymux_engine::Engine;
use paymux_engine::objects::{Event, Page};
use serde::Deserialize;

use crate::auth::Merchant;
use crate::error::ApiError;
use crate::extract::ApiQuery;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Events after this one.
    after: Option<String>,
    limit: Option<u32>,
}

pub async fn list(
    State(engine): State<Engine>,
    merchant: Merchant,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Event>>, ApiError> {
    Ok(Json(engine.list_events(merchant.caller(), q.after.as_deref(), q.limit).await?))
}
