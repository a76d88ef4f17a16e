//! `/v1/payments`: create, read, list, sync with the channel, close, as HTTP over the engine.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use paymux_engine::objects::{Page, Payment};
use paymux_engine::{CreatePaymentRequest, Engine, PaymentListQuery};

use crate::auth::Merchant;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::idempotency::IdempotencyKey;

pub async fn create(
    State(engine): State<Engine>,
    merchant: Merchant,
    idempotency_key: Option<Extension<IdempotencyKey>>,
    ApiJson(body): ApiJson<CreatePaymentRequest>,
) -> Result<(StatusCode, Json<Payment>), ApiError> {
    let key = IdempotencyKey::of(&idempotency_key);
    let payment = engine.create_payment(merchant.caller(), body, key).await?;
    Ok((StatusCode::CREATED, Json(payment)))
}

pub async fn get(
    State(engine): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Payment>, ApiError> {
    Ok(Json(engine.payment(merchant.caller(), &id).await?))
}

pub async fn list(
    State(engine): State<Engine>,
    merchant: Merchant,
    ApiQuery(q): ApiQuery<PaymentListQuery>,
) -> Result<Json<Page<Payment>>, ApiError> {
    Ok(Json(engine.list_payments(merchant.caller(), q).await?))
}

pub async fn sync(
    State(engine): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Payment>, ApiError> {
    Ok(Json(engine.sync(merchant.caller(), &id).await?))
}

pub async fn close(
    State(engine): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Payment>, ApiError> {
    Ok(Json(engine.close(merchant.caller(), &id).await?))
}
