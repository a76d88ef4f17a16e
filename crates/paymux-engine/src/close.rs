//! Closing a pending payment at its channels.

use paymux_core::{
    ALREADY_PAID, AttemptStatus, ChannelError, ChannelPayment, PaymentStatus, ReportSource,
};
use paymux_store::PaymentRecord;

use crate::engine::{Engine, payment_ref};
use crate::error::EngineError;

impl Engine {
    /// Closes `p` at its channels (every attempt still open) so nobody can pay it any more;
    /// returns it closed. A closed payment is returned as it is. A payer who paid first wins: the
    /// payment is succeeded and the close is refused with [`EngineError::PaidBeforeClose`].
    pub async fn close_payment(&self, p: &PaymentRecord) -> Result<PaymentRecord, EngineError> {
        match p.status {
            PaymentStatus::Closed => return Ok(p.clone()),
            PaymentStatus::Succeeded => return Err(EngineError::PaymentSucceeded),
            PaymentStatus::Failed => return Err(EngineError::PaymentFailed),
            PaymentStatus::Pending => {}
        }
        if p.method == paymux_core::PaymentMethod::Barcode {
            return crate::barcode::close(self, p).await;
        }
        let open: Vec<_> = self
            .store
            .attempts(p.id)
            .await?
            .into_iter()
            .filter(|a| a.status == AttemptStatus::Pending)
            .collect();
        for attempt in &open {
            let adapter = self.attempt_adapter(attempt).await?;
            match adapter.close(&payment_ref(p, attempt)).await {
                Ok(()) => {
                    self.apply_report(p, attempt, &ChannelPayment::Closed, ReportSource::OurClose)
                        .await?;
                }
                Err(ChannelError::Declined { code, message }) if code == ALREADY_PAID => {
                    // The channel refused the close as paid: take its truth from a query, and
                    // say "paid" only if that is what the payment is now. The refusal alone
                    // does not make it so (WeChat's ORDERPAID does not pin the order's state).
                    let after = self.sync_payment(p).await?;
                    if after.status == PaymentStatus::Succeeded {
                        return Err(EngineError::PaidBeforeClose {
                            payment: after.id,
                            at_channel: true,
                        });
                    }
                    tracing::warn!(payment = %p.id, %message, "close refused as paid, but the channel's query does not show it paid");
                    return Err(EngineError::ChannelCall {
                        source: ChannelError::unknown(format!(
                            "the channel refused the close as already paid ({message}), but its \
                             query says the payment is {}; it stays {} and is settled later",
                            after.status, after.status
                        )),
                        object: p.id.to_string(),
                    });
                }
                Err(e) => {
                    return Err(EngineError::ChannelCall { source: e, object: p.id.to_string() });
                }
            }
        }
        let after = self
            .store
            .payment(p.merchant_id, p.id)
            .await?
            .ok_or(EngineError::NotFound { what: "payment" })?;
        if after.status == PaymentStatus::Succeeded {
            // A notification of payment won the race with the close.
            return Err(EngineError::PaidBeforeClose { payment: after.id, at_channel: false });
        }
        Ok(after)
    }
}
