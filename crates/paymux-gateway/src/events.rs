//! `GET /v1/events`: the outbox as the merchant sees it, oldest first.

use axum::Json;
use axum::extract::State;
use paymux_engine::Engine;
use paymux_engine::objects::{Event, Page};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Merchant;
use crate::error::ApiError;
use crate::extract::ApiQuery;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Events after this one.
    after: Option<String>,
    limit: Option<u32>,
}

/// The merchant's events of the key's mode, oldest first.
#[utoipa::path(get, path = "/v1/events", operation_id = "list_events", tag = "events",
    params(ListQuery),
    responses((status = 200, description = "A page of events.", body = Page<Event>)))]
pub async fn list(
    State(engine): State<Engine>,
    merchant: Merchant,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Event>>, ApiError> {
    Ok(Json(engine.list_events(merchant.caller(), q.after.as_deref(), q.limit).await?))
}
