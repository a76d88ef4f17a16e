//! Refunds: `POST /v1/payments/{id}/refunds`, `GET /v1/refunds/{id}`, and the lists
//! `GET /v1/refunds` and `GET /v1/payments/{id}/refunds`, as HTTP over the engine.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use paymux_engine::objects::{Page, Refund};
use paymux_engine::{CreateRefundRequest, Engine, RefundListQuery};

use crate::auth::Merchant;
use crate::error::{ApiError, ErrorResponse};
use crate::extract::{ApiJson, ApiQuery};
use crate::idempotency::IdempotencyKey;

/// Refunds part or all of a succeeded payment.
#[utoipa::path(post, path = "/v1/payments/{id}/refunds", operation_id = "create_refund", tag = "refunds",
    params(("id" = String, Path, description = "The payment's id (`pay_...`).")),
    request_body = CreateRefundRequest,
    responses(
        (status = 201, description = "The refund: succeeded, or pending until the channel says.", body = Refund),
        (status = 422, description = "channel_declined: the channel refused; nothing moved (`channel_code` is its code).", body = ErrorResponse),
        (status = 502, description = "channel_unavailable: the channel's answer could not be used; the outcome is unknown and is settled later (`object_id`).", body = ErrorResponse),
        (status = 504, description = "channel_timeout: the channel did not answer in time; the outcome is unknown and is settled later (`object_id`).", body = ErrorResponse),
    ))]
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

/// A refund.
#[utoipa::path(get, path = "/v1/refunds/{id}", operation_id = "get_refund", tag = "refunds",
    params(("id" = String, Path, description = "The refund's id (`re_...`).")),
    responses((status = 200, description = "The refund.", body = Refund)))]
pub async fn get(
    State(engine): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Refund>, ApiError> {
    Ok(Json(engine.refund(merchant.caller(), &id).await?))
}

/// The merchant's refunds, newest first.
#[utoipa::path(get, path = "/v1/refunds", operation_id = "list_refunds", tag = "refunds",
    params(RefundListQuery),
    responses((status = 200, description = "A page of refunds.", body = Page<Refund>)))]
pub async fn list(
    State(engine): State<Engine>,
    merchant: Merchant,
    ApiQuery(q): ApiQuery<RefundListQuery>,
) -> Result<Json<Page<Refund>>, ApiError> {
    Ok(Json(engine.list_refunds(merchant.caller(), None, q).await?))
}

/// One payment's refunds, newest first.
#[utoipa::path(get, path = "/v1/payments/{id}/refunds", operation_id = "list_payment_refunds", tag = "refunds",
    params(("id" = String, Path, description = "The payment's id (`pay_...`)."), RefundListQuery),
    responses((status = 200, description = "A page of the payment's refunds.", body = Page<Refund>)))]
pub async fn list_for_payment(
    State(engine): State<Engine>,
    merchant: Merchant,
    Path(payment_id): Path<String>,
    ApiQuery(q): ApiQuery<RefundListQuery>,
) -> Result<Json<Page<Refund>>, ApiError> {
    Ok(Json(engine.list_refunds(merchant.caller(), Some(&payment_id), q).await?))
}
