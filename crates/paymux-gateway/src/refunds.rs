//! Refunds: `POST /v1/payments/{id}/refunds`, `GET /v1/refunds/{id}`, and the lists
//! `GET /v1/refunds` and `GET /v1/payments/{id}/refunds`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use paymux_core::{
    ChannelError, ChannelOrderNo, ChannelRefund, RefundId, RefundRequest, RefundStatus,
};
use paymux_store::{RefundFilter, RefundRecord, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::auth::Merchant;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::idempotency::IdempotencyKey;
use crate::payments::parse_amount;
use paymux_engine::Engine;
use paymux_engine::apply_refund;
use paymux_engine::objects;
use paymux_engine::payment_ref;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRefundBody {
    amount: Option<Value>,
    merchant_refund_no: Option<String>,
    reason: Option<String>,
}

pub async fn create(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(payment_id): Path<String>,
    idempotency_key: Option<Extension<IdempotencyKey>>,
    ApiJson(body): ApiJson<CreateRefundBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let payment_id = payment_id.parse().map_err(|_| ApiError::not_found("payment"))?;
    let payment = state
        .store
        .payment(merchant.id, payment_id)
        .await?
        .filter(|p| merchant.sees(p.livemode))
        .ok_or_else(|| ApiError::not_found("payment"))?;
    let merchant_refund_no = match body.merchant_refund_no {
        Some(n) if !n.trim().is_empty() && n.len() <= 64 && !n.chars().any(char::is_control) => n,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "merchant_refund_no",
                "merchant_refund_no must be 1 to 64 characters",
            ));
        }
        None => {
            return Err(ApiError::invalid_param(
                "merchant_refund_no",
                "merchant_refund_no is required",
            ));
        }
    };
    let amount = match body.amount {
        Some(v) => parse_amount(&v, payment.amount.currency(), "amount")?,
        None => {
            let left = payment.amount.minor() - payment.amount_reserved;
            paymux_core::Money::new(left, payment.amount.currency()).map_err(|_| {
                ApiError::invalid_param("amount", "nothing is left to refund on this payment")
            })?
        }
    };
    let reason = match body.reason {
        Some(r) if r.chars().count() > 80 => {
            return Err(ApiError::invalid_param("reason", "reason must be at most 80 characters"));
        }
        r => r,
    };
    let now = OffsetDateTime::now_utc();
    let record = RefundRecord {
        id: RefundId::new(),
        merchant_id: merchant.id,
        payment_id: payment.id,
        merchant_refund_no,
        channel_refund_no: ChannelOrderNo::generate(),
        amount,
        status: RefundStatus::Pending,
        reason: reason.clone(),
        channel_refund_id: None,
        failure_code: None,
        failure_message: None,
        created_at: now,
        succeeded_at: None,
        updated_at: now,
        check_count: 0,
        livemode: payment.livemode,
        resend_declined_code: None,
        action_required_at: None,
    };
    // A misconfigured account is found before anything is reserved.
    let (adapter, attempt) = state.adapter_and_attempt(&payment).await?;
    // The amount is reserved atomically before the channel is called.
    let first_check = now + state.config.sweeper.first_check_after;
    let key = IdempotencyKey::of(&idempotency_key);
    match state.store.insert_refund(&record, first_check, key).await {
        Ok(()) => {}
        Err(StoreError::Duplicate(_)) => {
            let mut err = ApiError::conflict(
                "duplicate_merchant_refund_no",
                format!(
                    "a refund with merchant_refund_no {:?} already exists",
                    record.merchant_refund_no
                ),
            )
            .with_param("merchant_refund_no");
            // The merchant whose first call was lost finds what it created.
            if let Some(existing) = state
                .store
                .refund_by_merchant_refund_no(merchant.id, &record.merchant_refund_no)
                .await?
            {
                // Numbers are unique per merchant across modes; another mode's object stays unseen.
                if merchant.sees(existing.livemode) {
                    err = err.with_object(existing.id);
                } else {
                    err.body.message = format!(
                        "merchant_refund_no {:?} is used by a refund made with a {} key; refund \
                         numbers are unique across test and live",
                        record.merchant_refund_no,
                        if existing.livemode { "live" } else { "test" }
                    );
                }
            }
            return Err(err);
        }
        Err(StoreError::RefundExceedsAmount { requested, available }) => {
            return Err(ApiError::invalid(
                "refund_exceeds_payment",
                format!("a refund of {requested} fen exceeds the {available} fen left to refund on this payment"),
            )
            .with_param("amount"));
        }
        Err(StoreError::PaymentNotRefundable(status)) => {
            return Err(ApiError::invalid(
                "payment_not_refundable",
                format!("the payment is {status}; only a succeeded payment can be refunded"),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let call = RefundRequest {
        payment: payment_ref(&payment, &attempt),
        channel_refund_no: record.channel_refund_no.clone(),
        amount,
        reason,
        notify_url: state.notify_url(payment.channel, payment.account_id),
        created_at: now,
    };
    // From the channel call to the commit of its answer runs on its own task: a client that
    // hangs up cannot cut it in the middle.
    let refund_id = record.id;
    let task = tokio::spawn(async move {
        let outcome = adapter.refund(&call).await;
        paymux_engine::failpoint::hit(paymux_engine::failpoint::AFTER_CHANNEL_REFUND).await;
        let report = match outcome {
            Ok(report) => report,
            Err(e @ (ChannelError::Declined { .. } | ChannelError::Invalid { .. })) => {
                // A definite refusal: nothing moved, so the refund failed and its amount is free.
                let (code, message) = match &e {
                    ChannelError::Declined { code, message } => (code.clone(), message.clone()),
                    other => ("invalid_request".to_owned(), other.to_string()),
                };
                apply_refund(&*state.store, &record, &ChannelRefund::Failed { code, message })
                    .await
                    .map_err(|s| ApiError::store_after_channel(s, record.id))?;
                return Err(ApiError::channel(e).with_object(record.id));
            }
            Err(e) => {
                tracing::warn!(refund = %record.id, error = %e, "refund outcome unknown; refund stays pending");
                return Err(ApiError::channel(e).with_object(record.id));
            }
        };
        apply_refund(&*state.store, &record, &report)
            .await
            .map_err(|s| ApiError::store_after_channel(s, record.id))?;
        state
            .store
            .refund(merchant.id, record.id)
            .await
            .map_err(|s| ApiError::store_after_channel(s, record.id))?
            .ok_or_else(|| ApiError::not_found("refund"))
    });
    let after = task.await.map_err(|_| {
        ApiError::internal(format!("refund {refund_id} was interrupted; it stays pending"))
    })??;
    Ok((StatusCode::CREATED, Json(objects::refund(&after))))
}

pub async fn get(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: RefundId = id.parse().map_err(|_| ApiError::not_found("refund"))?;
    let r = state
        .store
        .refund(merchant.id, id)
        .await?
        .filter(|r| merchant.sees(r.livemode))
        .ok_or_else(|| ApiError::not_found("refund"))?;
    Ok(Json(objects::refund(&r)))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    merchant_refund_no: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

async fn list_page(
    state: &Engine,
    merchant: Merchant,
    payment_id: Option<paymux_core::PaymentId>,
    q: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let before = q.cursor.map(|c| c.parse::<RefundId>()).transpose().map_err(|_| {
        ApiError::invalid_param("cursor", "cursor must be a refund id from a previous page")
    })?;
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let filter = RefundFilter {
        livemode: merchant.livemode,
        payment_id,
        merchant_refund_no: q.merchant_refund_no,
        before,
        limit,
    };
    let rows = state.store.list_refunds(merchant.id, &filter).await?;
    let next =
        (rows.len() == limit as usize).then(|| rows.last().map(|r| r.id.to_string())).flatten();
    Ok(Json(json!({
        "object": "list",
        "data": rows.iter().map(objects::refund).collect::<Vec<_>>(),
        "has_more": next.is_some(),
        "next_cursor": next,
    })))
}

/// `GET /v1/refunds?merchant_refund_no=&cursor=&limit=`: the merchant's refunds, newest first.
pub async fn list(
    State(state): State<Engine>,
    merchant: Merchant,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    list_page(&state, merchant, None, q).await
}

/// `GET /v1/payments/{id}/refunds`: one payment's refunds, newest first.
pub async fn list_for_payment(
    State(state): State<Engine>,
    merchant: Merchant,
    Path(payment_id): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let payment_id = payment_id.parse().map_err(|_| ApiError::not_found("payment"))?;
    let payment = state
        .store
        .payment(merchant.id, payment_id)
        .await?
        .filter(|p| merchant.sees(p.livemode))
        .ok_or_else(|| ApiError::not_found("payment"))?;
    list_page(&state, merchant, Some(payment.id), q).await
}
