//! Refunds: `POST /v1/payments/{id}/refunds`, `GET /v1/refunds/{id}`, and the lists
//! `GET /v1/refunds` and `GET /v1/payments/{id}/refunds`, as HTTP over the engine.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use paymux_engine::objects::{Page, Refund};
use paymux_engine::{CreateRefundRequest, Engine, RefundListQuery};

use crate::auth::Merchant;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::idempotency::IdempotencyKey;

pub async fn create(
    State(engine): State<Engine>,
    merchant: Merchant,
    Path(payment_id): Path<String>,
    idempotency_key: Option<Extension<IdempotencyKey>>,
    ApiJson(body): ApiJson<CreateRefundRequest>,
) -> Result<(StatusCode, Json<Refund>), ApiError> {
    let key = IdempotencyKey::of(&idempotency_key);
    let refund = engine.create_refund(merchant.caller(), &payment_id, body, key).await?;
    Ok((StatusCode::CREATED, Json(refund)))
}

pub async fn get(
    State(engine): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Refund>, ApiError> {
    Ok(Json(engine.refund(merchant.caller(), &id).await?))
}

/// `GET /v1/refunds?merchant_refund_no=&cursor=&limit=`: the merchant's refunds, newest first.
pub async fn list(
    State(engine): State<Engine>,
    merchant: Merchant,
    ApiQuery(q): ApiQuery<RefundListQuery>,
) -> Result<Json<Page<Refund>>, ApiError> {
    Ok(Json(engine.list_refunds(merchant.caller(), None, q).await?))
}

/// `GET /v1/payments/{id}/refunds`: one payment's refunds, newest first.
pub async fn list_for_payment(
    State(engine): State<Engine>,
    merchant: Merchant,
    Path(payment_id): Path<String>,
    ApiQuery(q): ApiQuery<RefundListQuery>,
) -> Result<Json<Page<Refund>>, ApiError> {
    Ok(Json(engine.list_refunds(merchant.caller(), Some(&payment_id), q).await?))
}
