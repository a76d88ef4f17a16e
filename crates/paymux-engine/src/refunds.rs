//! Refunds: make one at the payment's channel, read and list them.
//!
//! The amount is reserved on the payment in the transaction that writes the refund, before the
//! channel is called, so concurrent refunds can never take a payment past its amount. Only a
//! definite refusal fails a refund; an unknown outcome leaves it pending for the sweeper.

use paymux_core::{
    ChannelError, ChannelOrderNo, ChannelRefund, Money, PaymentId, RefundId, RefundRequest,
    RefundStatus,
};
use paymux_store::{RefundFilter, RefundRecord, StoreError};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::apply::apply_refund;
use crate::endpoints::Caller;
use crate::engine::{Engine, payment_ref};
use crate::error::EngineError;
use crate::objects::{Page, Refund};
use crate::payments::{duplicate_number, page, parse_amount};

/// A request to refund a payment (`POST /v1/payments/{id}/refunds`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefundRequest {
    /// Minor units (fen); all that is left to refund when absent.
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub amount: Option<Value>,
    /// The merchant's own refund number, unique per merchant.
    #[schema(value_type = String, required = true)]
    pub merchant_refund_no: Option<String>,
    pub reason: Option<String>,
}

/// Which refunds to list (`GET /v1/refunds`, `GET /v1/payments/{id}/refunds`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RefundListQuery {
    pub merchant_refund_no: Option<String>,
    /// The last id of the previous page.
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> EngineError {
    EngineError::InvalidInput { field, message: message.into() }
}

impl Engine {
    /// Refunds the caller's payment `payment_id` at its channel; returns the refund as the
    /// channel's answer left it (succeeded, or pending while the channel processes it).
    pub async fn create_refund(
        &self,
        caller: Caller,
        payment_id: &str,
        request: CreateRefundRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Refund, EngineError> {
        let payment = self.payment_record(caller, payment_id).await?;
        if self.store.settlement(payment.id).await?.is_some_and(|s| {
            matches!(
                s.status,
                paymux_core::SettlementStatus::Settling | paymux_core::SettlementStatus::Failed
            )
        }) {
            return Err(settlement_busy());
        }
        let merchant_refund_no = match request.merchant_refund_no {
            Some(n)
                if !n.trim().is_empty() && n.len() <= 64 && !n.chars().any(char::is_control) =>
            {
                n
            }
            Some(_) => {
                return Err(invalid(
                    "merchant_refund_no",
                    "merchant_refund_no must be 1 to 64 characters",
                ));
            }
            None => return Err(invalid("merchant_refund_no", "merchant_refund_no is required")),
        };
        let amount = match request.amount {
            Some(v) => parse_amount(&v, payment.amount.currency(), "amount")?,
            None => {
                let left = payment.amount.minor() - payment.amount_reserved;
                Money::new(left, payment.amount.currency())
                    .map_err(|_| invalid("amount", "nothing is left to refund on this payment"))?
            }
        };
        let reason = match request.reason {
            Some(r) if r.chars().count() > 80 => {
                return Err(invalid("reason", "reason must be at most 80 characters"));
            }
            r => r,
        };
        let now = crate::engine::now_ms();
        let record = RefundRecord {
            id: RefundId::new(),
            merchant_id: caller.merchant,
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
            attempt_id: None,
        };
        // A misconfigured account is found before anything is reserved.
        let (adapter, attempt) = self.adapter_and_attempt(&payment).await?;
        // The amount is reserved atomically before the channel is called.
        let first_check = now + self.config.sweeper.first_check_after;
        match self.store.insert_refund(&record, first_check, idempotency_key).await {
            Ok(()) => {}
            Err(StoreError::Duplicate(_)) => {
                let no = &record.merchant_refund_no;
                let existing = self.store.refund_by_merchant_refund_no(caller.merchant, no).await?;
                return Err(duplicate_number(
                    caller,
                    "merchant_refund_no",
                    no,
                    existing.map(|r| (r.id.to_string(), r.livemode)),
                ));
            }
            Err(StoreError::RefundExceedsAmount { requested, available }) => {
                return Err(EngineError::Rejected {
                    code: "refund_exceeds_payment",
                    field: Some("amount"),
                    message: format!(
                        "a refund of {requested} fen exceeds the {available} fen left to refund \
                         on this payment"
                    ),
                });
            }
            Err(StoreError::SettlementBusy(_)) => return Err(settlement_busy()),
            Err(StoreError::PaymentNotRefundable(status)) => {
                return Err(EngineError::Rejected {
                    code: "payment_not_refundable",
                    field: None,
                    message: format!(
                        "the payment is {status}; only a succeeded payment can be refunded"
                    ),
                });
            }
            Err(e) => return Err(e.into()),
        }
        let call = RefundRequest {
            payment: payment_ref(&payment, &attempt),
            channel_refund_no: record.channel_refund_no.clone(),
            amount,
            reason,
            notify_url: self.notify_url(payment.channel, payment.account_id),
            created_at: now,
        };
        // From the channel call to the commit of its answer runs on its own task: a caller that
        // goes away cannot cut it in the middle.
        let refund_id = record.id;
        let engine = self.clone();
        let task = tokio::spawn(async move {
            let outcome = adapter.refund(&call).await;
            crate::failpoint::hit(crate::failpoint::AFTER_CHANNEL_REFUND).await;
            let object = record.id.to_string();
            let after_channel =
                |source| EngineError::StoreAfterChannel { source, object: object.clone() };
            let report = match outcome {
                Ok(report) => report,
                Err(e @ (ChannelError::Declined { .. } | ChannelError::Invalid { .. })) => {
                    // A definite refusal: nothing moved, so the refund failed and its amount is
                    // free again.
                    let (code, message) = match &e {
                        ChannelError::Declined { code, message } => (code.clone(), message.clone()),
                        other => ("invalid_request".to_owned(), other.to_string()),
                    };
                    let failed = ChannelRefund::Failed { code, message };
                    apply_refund(&*engine.store, &record, &failed).await.map_err(after_channel)?;
                    return Err(EngineError::ChannelCall { source: e, object });
                }
                Err(e) => {
                    tracing::warn!(refund = %record.id, error = %e, "refund outcome unknown; refund stays pending");
                    return Err(EngineError::ChannelCall { source: e, object });
                }
            };
            apply_refund(&*engine.store, &record, &report).await.map_err(after_channel)?;
            engine
                .store
                .refund(caller.merchant, record.id)
                .await
                .map_err(after_channel)?
                .ok_or(EngineError::NotFound { what: "refund" })
        });
        let after = task
            .await
            .map_err(|_| EngineError::Interrupted { object: refund_id.to_string() })??;
        Ok(Refund::from(&after))
    }

    /// The caller's refund of its mode.
    pub async fn refund(&self, caller: Caller, id: &str) -> Result<Refund, EngineError> {
        let not_found = || EngineError::NotFound { what: "refund" };
        let id: RefundId = id.parse().map_err(|_| not_found())?;
        let r = self
            .store
            .refund(caller.merchant, id)
            .await?
            .filter(|r| caller.sees(r.livemode))
            .ok_or_else(not_found)?;
        Ok(Refund::from(&r))
    }

    /// The caller's refunds of its mode, newest first; of one payment when `payment_id` is given.
    pub async fn list_refunds(
        &self,
        caller: Caller,
        payment_id: Option<&str>,
        q: RefundListQuery,
    ) -> Result<Page<Refund>, EngineError> {
        let payment_id: Option<PaymentId> = match payment_id {
            Some(id) => Some(self.payment_record(caller, id).await?.id),
            None => None,
        };
        let before =
            q.cursor.map(|c| c.parse::<RefundId>()).transpose().map_err(|_| {
                invalid("cursor", "cursor must be a refund id from a previous page")
            })?;
        let limit = q.limit.unwrap_or(20).clamp(1, 100);
        let filter = RefundFilter {
            livemode: caller.livemode,
            payment_id,
            merchant_refund_no: q.merchant_refund_no,
            before,
            limit,
        };
        let rows = self.store.list_refunds(caller.merchant, &filter).await?;
        Ok(page(rows.iter().map(Refund::from).collect(), limit, |r| r.id.clone()))
    }
}

/// The held amount is being split (a settlement `settling`, or `failed` with part of it paid
/// out): a refund now could take money a share call moves, or leave the splits planned on an
/// amount no longer held. The store checks it again in the refund's own transaction.
fn settlement_busy() -> EngineError {
    EngineError::Rejected {
        code: "settlement_in_progress",
        field: None,
        message: "the payment's held funds are being split (its settlement is settling or \
                  failed); settle it to the end before refunding"
            .into(),
    }
}
