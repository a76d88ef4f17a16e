//! `/v1/payments`: create, read, list, sync with the channel, close, as HTTP over the engine.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Json};
use paymux_engine::objects::{Page, Payment};
use paymux_engine::{CreateAttemptRequest, CreatePaymentRequest, Engine, PaymentListQuery};

use crate::auth::Merchant;
use crate::error::{ApiError, ErrorResponse};
use crate::extract::{ApiJson, ApiQuery};
use crate::idempotency::{self, IdempotencyKey};

/// Creates a payment and asks the channel for it; the answer carries what the payer does next.
#[utoipa::path(post, path = "/v1/payments", operation_id = "create_payment", tag = "payments",
    request_body = CreatePaymentRequest,
    responses(
        (status = 201, description = "The payment, pending, with its action.", body = Payment),
        (status = 422, description = "channel_declined: the channel refused; nothing moved (`channel_code` is its code).", body = ErrorResponse),
        (status = 502, description = "channel_unavailable: the channel's answer could not be used; the outcome is unknown and is settled later (`object_id`).", body = ErrorResponse),
        (status = 504, description = "channel_timeout: the channel did not answer in time; the outcome is unknown and is settled later (`object_id`).", body = ErrorResponse),
    ))]
pub async fn create(
    State(engine): State<Engine>,
    merchant: Merchant,
    idempotency_key: Option<Extension<IdempotencyKey>>,
    ApiJson(body): ApiJson<CreatePaymentRequest>,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::of(&idempotency_key);
    Ok(idempotency::created(engine.create_payment(merchant.caller(), body, key).await?))
}

/// A payment.
#[utoipa::path(get, path = "/v1/payments/{id}", operation_id = "get_payment", tag = "payments",
    params(("id" = String, Path, description = "The payment's id (`pay_...`).")),
    responses((status = 200, description = "The payment.", body = Payment)))]
pub async fn get(
    State(engine): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Payment>, ApiError> {
    Ok(Json(engine.payment(merchant.caller(), &id).await?))
}

/// The merchant's payments, newest first.
#[utoipa::path(get, path = "/v1/payments", operation_id = "list_payments", tag = "payments",
    params(PaymentListQuery),
    responses((status = 200, description = "A page of payments.", body = Page<Payment>)))]
pub async fn list(
    State(engine): State<Engine>,
    merchant: Merchant,
    ApiQuery(q): ApiQuery<PaymentListQuery>,
) -> Result<Json<Page<Payment>>, ApiError> {
    Ok(Json(engine.list_payments(merchant.caller(), q).await?))
}

/// Asks the channel now and applies its answer.
#[utoipa::path(post, path = "/v1/payments/{id}/sync", operation_id = "sync_payment", tag = "payments",
    params(("id" = String, Path, description = "The payment's id (`pay_...`).")),
    responses(
        (status = 200, description = "The payment as the channel's truth left it.", body = Payment),
        (status = 422, description = "channel_declined: the channel refused; nothing moved (`channel_code` is its code).", body = ErrorResponse),
        (status = 502, description = "channel_unavailable: the channel's answer could not be used; the outcome is unknown and is settled later (`object_id`).", body = ErrorResponse),
        (status = 504, description = "channel_timeout: the channel did not answer in time; the outcome is unknown and is settled later (`object_id`).", body = ErrorResponse),
    ))]
pub async fn sync(
    State(engine): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Payment>, ApiError> {
    Ok(Json(engine.sync(merchant.caller(), &id).await?))
}

/// Closes an unpaid payment at its channel, so nobody can pay it any more.
#[utoipa::path(post, path = "/v1/payments/{id}/close", operation_id = "close_payment", tag = "payments",
    params(("id" = String, Path, description = "The payment's id (`pay_...`).")),
    responses(
        (status = 200, description = "The payment, closed.", body = Payment),
        (status = 422, description = "channel_declined: the channel refused; nothing moved (`channel_code` is its code).", body = ErrorResponse),
        (status = 502, description = "channel_unavailable: the channel's answer could not be used; the outcome is unknown and is settled later (`object_id`).", body = ErrorResponse),
        (status = 504, description = "channel_timeout: the channel did not answer in time; the outcome is unknown and is settled later (`object_id`).", body = ErrorResponse),
    ))]
pub async fn close(
    State(engine): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Payment>, ApiError> {
    Ok(Json(engine.close(merchant.caller(), &id).await?))
}

/// Adds another way to pay a pending payment (the payer switched channels): a new attempt with
/// its own channel order number. The payment then shows it; the first attempt the payer pays
/// wins, and the others are closed at their channels.
#[utoipa::path(post, path = "/v1/payments/{id}/attempts", operation_id = "create_attempt", tag = "payments",
    params(("id" = String, Path, description = "The payment's id (`pay_...`).")),
    request_body = CreateAttemptRequest,
    responses(
        (status = 201, description = "The payment, showing the new attempt and its action.", body = Payment),
        (status = 422, description = "channel_declined: the channel refused the attempt; nothing moved (`channel_code` is its code).", body = ErrorResponse),
        (status = 502, description = "channel_unavailable: the channel's answer could not be used; the attempt's outcome is unknown and is settled later (`object_id`).", body = ErrorResponse),
        (status = 504, description = "channel_timeout: the channel did not answer in time; the attempt's outcome is unknown and is settled later (`object_id`).", body = ErrorResponse),
    ))]
pub async fn create_attempt(
    State(engine): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
    idempotency_key: Option<Extension<IdempotencyKey>>,
    ApiJson(body): ApiJson<CreateAttemptRequest>,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::of(&idempotency_key);
    Ok(idempotency::created(engine.create_attempt(merchant.caller(), &id, body, key).await?))
}
