//! Escrow and profit sharing over HTTP: receivers, settling a held payment, the ledger and the
//! balances.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use paymux_engine::Engine;
use paymux_engine::objects::Payment;
use paymux_engine::settlement::{
    Balance, CreateReceiverRequest, LedgerEntry, LedgerQuery, List, Receiver,
};

use crate::auth::Merchant;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};

/// Registers a receiver of splits.
#[utoipa::path(post, path = "/v1/receivers", operation_id = "create_receiver", tag = "settlement",
    request_body = CreateReceiverRequest,
    responses((status = 201, description = "The receiver.", body = Receiver)))]
pub async fn create_receiver(
    State(engine): State<Engine>,
    merchant: Merchant,
    ApiJson(body): ApiJson<CreateReceiverRequest>,
) -> Result<(StatusCode, Json<Receiver>), ApiError> {
    Ok((StatusCode::CREATED, Json(engine.create_receiver(merchant.caller(), body).await?)))
}

/// The merchant's receivers, oldest first.
#[utoipa::path(get, path = "/v1/receivers", operation_id = "list_receivers", tag = "settlement",
    responses((status = 200, description = "The receivers.", body = List<Receiver>)))]
pub async fn list_receivers(
    State(engine): State<Engine>,
    merchant: Merchant,
) -> Result<Json<List<Receiver>>, ApiError> {
    Ok(Json(engine.list_receivers(merchant.caller()).await?))
}

/// A receiver.
#[utoipa::path(get, path = "/v1/receivers/{id}", operation_id = "get_receiver", tag = "settlement",
    params(("id" = String, Path, description = "The receiver's id (`rcv_...`).")),
    responses((status = 200, description = "The receiver.", body = Receiver)))]
pub async fn get_receiver(
    State(engine): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Receiver>, ApiError> {
    Ok(Json(engine.receiver(merchant.caller(), &id).await?))
}

/// Deletes a receiver; splits already made to it keep naming it.
#[utoipa::path(delete, path = "/v1/receivers/{id}", operation_id = "delete_receiver", tag = "settlement",
    params(("id" = String, Path, description = "The receiver's id (`rcv_...`).")),
    responses((status = 200, description = "The receiver as it was.", body = Receiver)))]
pub async fn delete_receiver(
    State(engine): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Receiver>, ApiError> {
    Ok(Json(engine.delete_receiver(merchant.caller(), &id).await?))
}

/// Settles a held payment: each receiver gets its share of what is still held, the merchant the
/// rest. Settling a settled payment answers it as it is.
#[utoipa::path(post, path = "/v1/payments/{id}/settle", operation_id = "settle_payment", tag = "settlement",
    params(("id" = String, Path, description = "The payment's id (`pay_...`).")),
    responses((status = 200, description = "The payment with its settlement.", body = Payment)))]
pub async fn settle(
    State(engine): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Payment>, ApiError> {
    Ok(Json(engine.settle(merchant.caller(), &id).await?))
}

/// The ledger: every movement of money, oldest first.
#[utoipa::path(get, path = "/v1/ledger", operation_id = "list_ledger", tag = "settlement",
    params(LedgerQuery),
    responses((status = 200, description = "Ledger entries.", body = List<LedgerEntry>)))]
pub async fn ledger(
    State(engine): State<Engine>,
    merchant: Merchant,
    ApiQuery(q): ApiQuery<LedgerQuery>,
) -> Result<Json<List<LedgerEntry>>, ApiError> {
    Ok(Json(engine.ledger(merchant.caller(), q).await?))
}

/// Each account's held and settled balance (the merchant and each receiver), in fen.
#[utoipa::path(get, path = "/v1/balances", operation_id = "list_balances", tag = "settlement",
    responses((status = 200, description = "Balances.", body = List<Balance>)))]
pub async fn balances(
    State(engine): State<Engine>,
    merchant: Merchant,
) -> Result<Json<List<Balance>>, ApiError> {
    Ok(Json(engine.balances(merchant.caller()).await?))
}
